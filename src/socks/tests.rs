//! Byte-vector tests for the parsers and the driver (over `tokio::io::duplex`).

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Parser = fn(&[u8]) -> Result<Parsed<RawRequest>, SocksError>;

const GREETING: &[u8] = &[5, 1, 0];
const METHOD_OK: &[u8] = &[5, 0];
const V4_REJECTED: &[u8] = &[0, 0x5B, 0, 0, 0, 0, 0, 0];

fn v5_failure(code: u8) -> Vec<u8> {
    [METHOD_OK, &[5, code, 0, 1, 0, 0, 0, 0, 0, 0]].concat()
}

fn ip(addr: impl Into<std::net::IpAddr>, port: u16) -> TargetAddr {
    TargetAddr::Ip(SocketAddr::new(addr.into(), port))
}

fn domain(host: &str, port: u16) -> TargetAddr {
    TargetAddr::Domain(host.into(), port)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// (name, parser, one complete message, its version and target).
fn valid_messages() -> Vec<(&'static str, Parser, Vec<u8>, Version, TargetAddr)> {
    let v6 = Ipv6Addr::LOCALHOST.octets();
    vec![
        (
            "v4",
            parse_socks4,
            cat(&[&[4, 1, 0, 80, 10, 0, 0, 1], b"us\0"]),
            Version::V4,
            ip(Ipv4Addr::new(10, 0, 0, 1), 80),
        ),
        (
            "v4 no user",
            parse_socks4,
            vec![4, 1, 0x1f, 0x90, 127, 0, 0, 1, 0],
            Version::V4,
            ip(Ipv4Addr::LOCALHOST, 8080),
        ),
        (
            "v4 0.0.0.0",
            parse_socks4,
            vec![4, 1, 0, 80, 0, 0, 0, 0, 0],
            Version::V4,
            ip(Ipv4Addr::UNSPECIFIED, 80),
        ),
        (
            "v4a",
            parse_socks4,
            cat(&[&[4, 1, 0, 80, 0, 0, 0, 1], b"u\0example.com\0"]),
            Version::V4a,
            domain("example.com", 80),
        ),
        (
            "v5 ipv4",
            parse_socks5_request,
            vec![5, 1, 0, 1, 192, 168, 1, 2, 1, 187],
            Version::V5,
            ip(Ipv4Addr::new(192, 168, 1, 2), 443),
        ),
        (
            "v5 ipv6",
            parse_socks5_request,
            cat(&[&[5, 1, 0, 4], &v6, &[0, 22]]),
            Version::V5,
            ip(Ipv6Addr::LOCALHOST, 22),
        ),
        (
            "v5 domain",
            parse_socks5_request,
            cat(&[&[5, 1, 0, 3, 11], b"example.com", &[0, 80]]),
            Version::V5,
            domain("example.com", 80),
        ),
    ]
}

#[test]
fn parses_complete_messages_and_reports_length() {
    for (name, parse, bytes, version, target) in valid_messages() {
        let want = RawRequest {
            version,
            command: Command::Connect,
            target,
        };
        let with_app_data = cat(&[&bytes, b"GET /"]);
        let got = parse(&with_app_data).unwrap();
        assert_eq!(
            got,
            Parsed::Done {
                value: want,
                consumed: bytes.len()
            },
            "{name}"
        );
    }
}

/// Every prefix must ask for more, and never for more than the message still has: that is
/// what lets the driver read exactly and leave pipelined data alone.
#[test]
fn truncated_at_every_length_asks_for_no_more_than_remains() {
    type Need = Box<dyn Fn(&[u8]) -> usize>;
    let mut cases: Vec<(&str, Need, Vec<u8>)> = valid_messages()
        .into_iter()
        .map(|(name, parse, bytes, ..)| {
            (
                name,
                Box::new(move |b: &[u8]| need(parse(b))) as Need,
                bytes,
            )
        })
        .collect();
    cases.push((
        "greeting",
        Box::new(|b: &[u8]| need(parse_greeting(b))),
        vec![5, 3, 2, 1, 0],
    ));
    for (name, need_for, bytes) in cases {
        for len in 0..bytes.len() {
            let n = need_for(&bytes[..len]);
            assert!(
                n >= 1 && n <= bytes.len() - len,
                "{name} at {len}: need {n}"
            );
        }
    }
}

fn need<T: std::fmt::Debug>(parsed: Result<Parsed<T>, SocksError>) -> usize {
    match parsed {
        Ok(Parsed::NeedMore(n)) => n,
        other => panic!("a strict prefix gave {other:?}"),
    }
}

#[test]
fn parser_errors_name_the_problem() {
    let long_user = cat(&[&[4, 1, 0, 80, 1, 2, 3, 4], &[b'a'; 1025]]);
    let long_host = cat(&[&[4, 1, 0, 80, 0, 0, 0, 9, 0], &[b'h'; 256]]);
    let cases: Vec<(Parser, Vec<u8>, &str)> = vec![
        (parse_socks4, vec![5], "SOCKS4 request: version byte is 0x05, expected 0x04"),
        (parse_socks4, long_user, "SOCKS4 request: user id is longer than 1024 bytes"),
        (parse_socks4, long_host, "SOCKS4 request: SOCKS4a host name is longer than 255 bytes"),
        (parse_socks4, vec![4, 1, 0, 80, 0, 0, 0, 1, 0, 0], "SOCKS4 request: invalid host name \"\" (empty, not UTF-8, or has control characters)"),
        (parse_socks5_request, vec![4], "SOCKS5 request: version byte is 0x04, expected 0x05"),
        (parse_socks5_request, vec![5, 1, 1], "SOCKS5 request: reserved byte is 0x01, expected 0x00"),
        (parse_socks5_request, vec![5, 1, 0, 7], "SOCKS5 request: unsupported address type 0x07"),
        (parse_socks5_request, vec![5, 1, 0, 3, 0], "SOCKS5 request: invalid host name \"\" (empty, not UTF-8, or has control characters)"),
        (parse_socks5_request, vec![5, 1, 0, 3, 2, 0xff, 0xfe], "SOCKS5 request: invalid host name \"\u{fffd}\u{fffd}\" (empty, not UTF-8, or has control characters)"),
        (parse_socks5_request, vec![5, 1, 0, 3, 2, b'a', 0], "SOCKS5 request: invalid host name \"a\\0\" (empty, not UTF-8, or has control characters)"),
    ];
    for (parse, bytes, want) in cases {
        let err = parse(&bytes).unwrap_err();
        assert_eq!(err.to_string(), want, "{bytes:?}");
    }
    let err = parse_greeting(&[4]).unwrap_err().to_string();
    assert_eq!(err, "SOCKS5 greeting: version byte is 0x04, expected 0x05");
}

#[test]
fn caps_are_inclusive() {
    let user = cat(&[&[4, 1, 0, 80, 1, 2, 3, 4], &[b'u'; MAX_USERID_LEN], &[0]]);
    assert!(matches!(parse_socks4(&user), Ok(Parsed::Done { .. })));
    let host = [b'h'; MAX_HOSTNAME_LEN];
    let v4a = cat(&[&[4, 1, 0, 80, 0, 0, 0, 1, 0], &host, &[0]]);
    assert!(matches!(parse_socks4(&v4a), Ok(Parsed::Done { .. })));
}

/// Pseudo-random bytes through every parser: errors are fine, panics are not.
#[test]
fn garbage_never_panics() {
    let mut state: u32 = 0x2545_f491;
    for _ in 0..20_000 {
        let len = (next(&mut state) % 24) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next(&mut state) as u8).collect();
        if let Some(first) = bytes.first_mut() {
            *first = [4, 5][(*first % 2) as usize];
        }
        let _ = parse_socks4(&bytes);
        let _ = parse_greeting(&bytes);
        let _ = parse_socks5_request(&bytes);
    }
}

fn next(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
}

#[test]
fn replies_encode_per_version() {
    let v4 = SocketAddr::from((Ipv4Addr::new(1, 2, 3, 4), 80));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 22));
    let zero4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let cases: Vec<(Version, Result<SocketAddr, Failure>, Vec<u8>)> = vec![
        (Version::V4, Ok(v4), vec![0, 0x5A, 0, 80, 1, 2, 3, 4]),
        (Version::V4a, Ok(v6), vec![0, 0x5A, 0, 0, 0, 0, 0, 0]),
        (
            Version::V4,
            Err(Failure::ConnectionRefused),
            V4_REJECTED.to_vec(),
        ),
        (Version::V5, Ok(zero4), vec![5, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
        (
            Version::V5,
            Ok(v6),
            cat(&[&[5, 0, 0, 4], &Ipv6Addr::LOCALHOST.octets(), &[0, 22]]),
        ),
    ];
    for (version, outcome, want) in cases {
        assert_eq!(
            encode_reply(version, outcome),
            want,
            "{version:?} {outcome:?}"
        );
    }
    let failures = [
        (Failure::General, 1),
        (Failure::NotAllowed, 2),
        (Failure::NetworkUnreachable, 3),
        (Failure::HostUnreachable, 4),
        (Failure::ConnectionRefused, 5),
        (Failure::TtlExpired, 6),
        (Failure::CommandNotSupported, 7),
        (Failure::AddressTypeNotSupported, 8),
    ];
    for (failure, code) in failures {
        assert_eq!(
            encode_reply(Version::V5, Err(failure)),
            &v5_failure(code)[2..]
        );
        assert_eq!(encode_reply(Version::V4, Err(failure)), V4_REJECTED);
    }
}

#[test]
fn io_errors_map_to_failures() {
    let cases = [
        (io::ErrorKind::ConnectionRefused, Failure::ConnectionRefused),
        (io::ErrorKind::HostUnreachable, Failure::HostUnreachable),
        (
            io::ErrorKind::NetworkUnreachable,
            Failure::NetworkUnreachable,
        ),
        (io::ErrorKind::TimedOut, Failure::TtlExpired),
        (io::ErrorKind::PermissionDenied, Failure::NotAllowed),
        (io::ErrorKind::Other, Failure::General),
    ];
    for (kind, want) in cases {
        assert_eq!(
            Failure::from_io_error(&io::Error::from(kind)),
            want,
            "{kind:?}"
        );
    }
}

/// Runs `accept` on `input` (then EOF); returns its result, what the server wrote, and what
/// it left unread in the stream.
async fn run(input: &[u8]) -> (Result<Request, SocksError>, Vec<u8>, Vec<u8>) {
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    client.write_all(input).await.unwrap();
    client.shutdown().await.unwrap();
    let result = accept(&mut server).await;
    let mut unread = Vec::new();
    server.read_to_end(&mut unread).await.unwrap();
    drop(server);
    let mut wrote = Vec::new();
    client.read_to_end(&mut wrote).await.unwrap();
    (result, wrote, unread)
}

/// Application data sent right behind the request must still be in the stream afterwards.
#[tokio::test]
async fn accept_leaves_pipelined_data_unread() {
    let app = b"GET / HTTP/1.1\r\n\r\n";
    for (name, _, bytes, version, target) in valid_messages() {
        let greeting: &[u8] = if version == Version::V5 {
            GREETING
        } else {
            &[]
        };
        let (result, wrote, unread) = run(&cat(&[greeting, &bytes, app])).await;
        let want = Request { version, target };
        assert_eq!(result.unwrap(), want, "{name}");
        let method: &[u8] = if version == Version::V5 {
            METHOD_OK
        } else {
            &[]
        };
        assert_eq!(
            wrote, method,
            "{name}: only the method selection is written before reply()"
        );
        assert_eq!(unread, app, "{name}");
    }
}

#[tokio::test]
async fn accept_refuses_and_answers() {
    let bind = [5, 2, 0, 1, 1, 2, 3, 4, 0, 80];
    let udp = [5, 3, 0, 1, 1, 2, 3, 4, 0, 80];
    let long_user = cat(&[&[4, 1, 0, 80, 1, 2, 3, 4], &[b'a'; 2000]]);
    // (name, client bytes, error, bytes the server wrote, bytes left unread)
    type Case = (&'static str, Vec<u8>, &'static str, Vec<u8>, usize);
    let cases: Vec<Case> = vec![
        ("http", b"GET / HTTP/1.1\r\n".to_vec(), "SOCKS handshake: unsupported version byte 0x47 (expected 0x04 or 0x05)", vec![], 15),
        ("zero", vec![0, 1, 2], "SOCKS handshake: unsupported version byte 0x00 (expected 0x04 or 0x05)", vec![], 2),
        ("auth only", vec![5, 1, 2, 9], "SOCKS5 greeting: client offers methods [02] but only 0x00 (no authentication) is supported", vec![5, 0xFF], 1),
        ("no methods", vec![5, 0], "SOCKS5 greeting: client offers methods [] but only 0x00 (no authentication) is supported", vec![5, 0xFF], 0),
        ("v5 bind", cat(&[GREETING, &bind]), "SOCKS5 request: unsupported command 0x02 (BIND); only CONNECT is supported", v5_failure(7), 0),
        ("v5 udp", cat(&[GREETING, &udp]), "SOCKS5 request: unsupported command 0x03 (UDP ASSOCIATE); only CONNECT is supported", v5_failure(7), 0),
        ("v5 atyp", cat(&[GREETING, &[5, 1, 0, 7, 1, 2]]), "SOCKS5 request: unsupported address type 0x07", v5_failure(8), 2),
        ("v5 rsv", cat(&[GREETING, &[5, 1, 9, 1]]), "SOCKS5 request: reserved byte is 0x09, expected 0x00", v5_failure(1), 1),
        ("v4 bind", vec![4, 2, 0, 80, 1, 2, 3, 4, 0], "SOCKS4 request: unsupported command 0x02 (BIND); only CONNECT is supported", V4_REJECTED.to_vec(), 0),
        ("v4 user", long_user, "SOCKS4 request: user id is longer than 1024 bytes", V4_REJECTED.to_vec(), 2000 - 1025),
        ("empty", vec![], "SOCKS handshake: client closed the connection before the message was complete", vec![], 0),
    ];
    for (name, input, err, wrote_want, unread_len) in cases {
        let (result, wrote, unread) = run(&input).await;
        assert_eq!(result.unwrap_err().to_string(), err, "{name}");
        assert_eq!(wrote, wrote_want, "{name}");
        assert_eq!(
            unread.len(),
            unread_len,
            "{name}: read no further than the error"
        );
    }
}

#[tokio::test]
async fn accept_reports_truncation_at_every_length() {
    for (name, _, bytes, version, _) in valid_messages() {
        let greeting: &[u8] = if version == Version::V5 {
            GREETING
        } else {
            &[]
        };
        let full = cat(&[greeting, &bytes]);
        for len in 1..full.len() {
            let (result, _, unread) = run(&full[..len]).await;
            let err = result.unwrap_err();
            assert!(
                matches!(err, SocksError::Closed(_)),
                "{name} at {len}: {err}"
            );
            assert!(unread.is_empty(), "{name} at {len}");
        }
    }
}

#[tokio::test]
async fn reply_writes_encoded_bytes() {
    let (mut client, mut server) = tokio::io::duplex(64);
    let bound = SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3), 4321));
    reply(&mut server, Version::V5, Ok(bound)).await.unwrap();
    drop(server);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, [5, 0, 0, 1, 10, 1, 2, 3, 0x10, 0xE1]);
}

#[test]
fn targets_display_as_host_port() {
    let cases = [
        (ip(Ipv4Addr::LOCALHOST, 80), "127.0.0.1:80"),
        (ip(Ipv6Addr::LOCALHOST, 22), "[::1]:22"),
        (domain("example.com", 443), "example.com:443"),
        (domain("::1", 22), "[::1]:22"),
    ];
    for (target, want) in cases {
        assert_eq!(target.to_string(), want);
    }
}
