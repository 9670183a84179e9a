use super::forward::{FWD_DYNAMIC, FWD_LOCAL};
use super::*;
use crate::spec::{DynamicForward, Endpoint, Listen, LocalForward, RemoteForward};

fn body(framed: &[u8]) -> &[u8] {
    let len = u32::from_be_bytes(framed[..4].try_into().unwrap()) as usize;
    assert_eq!(len, framed.len() - 4, "length prefix");
    &framed[4..]
}

fn tcp(bind: Option<&str>, port: u16) -> Listen {
    Listen::Tcp {
        bind: bind.map(str::to_owned),
        port,
    }
}

#[test]
fn requests_round_trip() {
    let fwds = [
        WireForward::Local(LocalForward {
            listen: tcp(None, 8080),
            target: Endpoint::Tcp {
                host: "intranet".into(),
                port: 80,
            },
        }),
        WireForward::Local(LocalForward {
            listen: Listen::Unix("/tmp/l.sock".into()),
            target: Endpoint::Unix("/run/app.sock".into()),
        }),
        WireForward::Dynamic(DynamicForward {
            listen: tcp(Some("127.0.0.1"), 1080),
        }),
        WireForward::Remote(RemoteForward {
            listen: tcp(Some("*"), 0),
            target: Some(Endpoint::Tcp {
                host: "localhost".into(),
                port: 22,
            }),
        }),
        WireForward::Remote(RemoteForward {
            listen: tcp(None, 1081),
            target: None,
        }),
    ];
    let mut requests = vec![
        Request::Hello { version: VERSION },
        Request::AliveCheck { rid: 7 },
        Request::Terminate { rid: 8 },
        Request::StopListening { rid: 9 },
        Request::StdioForward {
            rid: 10,
            host: "db".into(),
            port: 5432,
        },
        Request::NewSession {
            rid: 11,
            want_tty: false,
            subsystem: false,
            term: "xterm".into(),
            command: "uname -a".into(),
            env: vec!["LANG=C".into()],
        },
    ];
    for (i, f) in fwds.into_iter().enumerate() {
        let rid = 100 + i as u32;
        requests.push(Request::OpenForward {
            rid,
            fwd: Ok(f.clone()),
        });
        requests.push(Request::CloseForward { rid, fwd: Ok(f) });
    }
    for req in requests {
        let framed = req.encode();
        assert_eq!(Request::decode(body(&framed)), Ok(req.clone()), "{req:?}");
    }
}

#[test]
fn replies_round_trip() {
    let replies = [
        Reply::Hello { version: 4 },
        Reply::Ok { rid: 1 },
        Reply::PermissionDenied {
            rid: 2,
            reason: "Permission denied".into(),
        },
        Reply::Failure {
            rid: 3,
            reason: "Port forwarding failed".into(),
        },
        Reply::Exit { sid: 4, status: 3 },
        Reply::Alive { rid: 5, pid: 4242 },
        Reply::SessionOpened { rid: 6, sid: 2 },
        Reply::RemotePort {
            rid: 7,
            port: 40000,
        },
        Reply::TtyAllocFail { sid: 2 },
    ];
    for reply in replies {
        let framed = reply.encode();
        assert_eq!(Reply::decode(body(&framed)), Ok(reply.clone()), "{reply:?}");
    }
}

/// Bytes as OpenSSH's mux_client_forward builds them for `-O forward -L 8080:h:80`.
#[test]
fn open_forward_matches_openssh_bytes() {
    let mut want = Vec::new();
    for v in [0x1000_0006u32, 0, 1] {
        want.extend_from_slice(&v.to_be_bytes());
    }
    want.extend_from_slice(&0u32.to_be_bytes()); // listen host "" (none given)
    want.extend_from_slice(&8080u32.to_be_bytes());
    want.extend_from_slice(&1u32.to_be_bytes());
    want.push(b'h');
    want.extend_from_slice(&80u32.to_be_bytes());
    let req = Request::decode(&want).unwrap();
    let Request::OpenForward { rid: 0, fwd: Ok(f) } = &req else {
        panic!("{req:?}")
    };
    assert_eq!(
        f,
        &WireForward::Local(LocalForward {
            listen: tcp(None, 8080),
            target: Endpoint::Tcp {
                host: "h".into(),
                port: 80
            },
        })
    );
    assert_eq!(body(&req.encode()), &want[..]);
}

#[test]
fn invalid_forwards_and_malformed_messages() {
    let fwd = |kind: u32, lhost: &str, lport: u32, chost: &str, cport: u32| {
        let mut b = Writer::default().u32(C_OPEN_FWD).u32(1).u32(kind);
        b = b.string(lhost).u32(lport).string(chost).u32(cport);
        Request::decode(&b.0)
    };
    let invalid = |r: Result<Request, Malformed>| match r {
        Ok(Request::OpenForward { fwd: Err(e), .. }) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(invalid(fwd(9, "", 1, "h", 2)), "invalid forwarding type");
    assert_eq!(
        invalid(fwd(FWD_LOCAL, "", 1, "", 2)),
        "missing connect host"
    );
    assert_eq!(
        invalid(fwd(FWD_LOCAL, "", 1, "h", 0)),
        "invalid connect port"
    );
    assert_eq!(
        invalid(fwd(FWD_DYNAMIC, "/s", PORT_STREAMLOCAL, "", 0)),
        "streamlocal and dynamic forwards are mutually exclusive"
    );
    assert!(fwd(FWD_LOCAL, "", 70000, "h", 2).is_err());
    assert!(Request::decode(&[0, 0]).is_err());
    assert!(Reply::decode(&[0x80, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 9, b'x']).is_err());
    // Truncated or lying string lengths never panic.
    for n in 0..20 {
        let framed = Request::NewSession {
            rid: 1,
            want_tty: true,
            subsystem: false,
            term: "t".into(),
            command: "c".into(),
            env: vec![],
        }
        .encode();
        let _ = Request::decode(&framed[4..(4 + n).min(framed.len())]);
    }
}
