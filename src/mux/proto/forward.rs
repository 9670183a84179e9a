//! Forwards in MUX_C_OPEN_FWD / MUX_C_CLOSE_FWD: listen host and port, connect host and port,
//! with mux.c's conventions (a path has port `PORT_STREAMLOCAL`; an empty listen host means
//! none was given; a reverse dynamic forward connects to `socks`:0).

use super::{Malformed, Reader, WireForward, Writer, PORT_STREAMLOCAL};
use crate::spec::{DynamicForward, Endpoint, Listen, LocalForward, RemoteForward};

/// Forward types.
pub(super) const FWD_LOCAL: u32 = 1;
pub(super) const FWD_REMOTE: u32 = 2;
pub(super) const FWD_DYNAMIC: u32 = 3;

/// Listen host as mux.c's client sends it: the path, "" when none was given, "*" for an empty
/// bind address, else the address.
fn listen_fields(listen: &Listen) -> (String, u32) {
    match listen {
        Listen::Unix(p) => (p.to_string_lossy().into_owned(), PORT_STREAMLOCAL),
        Listen::Tcp { bind: None, port } => (String::new(), u32::from(*port)),
        Listen::Tcp {
            bind: Some(b),
            port,
        } if b.is_empty() => ("*".into(), u32::from(*port)),
        Listen::Tcp {
            bind: Some(b),
            port,
        } => (b.clone(), u32::from(*port)),
    }
}

fn target_fields(target: &Endpoint) -> (String, u32) {
    match target {
        Endpoint::Unix(p) => (p.to_string_lossy().into_owned(), PORT_STREAMLOCAL),
        Endpoint::Tcp { host, port } => (host.clone(), u32::from(*port)),
    }
}

pub(super) fn encode_fwd(w: Writer, fwd: &Result<WireForward, &'static str>) -> Writer {
    let (kind, listen, target) = match fwd {
        Ok(WireForward::Local(f)) => (FWD_LOCAL, &f.listen, target_fields(&f.target)),
        Ok(WireForward::Dynamic(f)) => (FWD_DYNAMIC, &f.listen, ("socks".into(), 0)),
        Ok(WireForward::Remote(f)) => {
            let target = f
                .target
                .as_ref()
                .map_or_else(|| ("socks".into(), 0), target_fields);
            (FWD_REMOTE, &f.listen, target)
        }
        Err(_) => return w.u32(0),
    };
    let (lhost, lport) = listen_fields(listen);
    w.u32(kind)
        .string(&lhost)
        .u32(lport)
        .string(&target.0)
        .u32(target.1)
}

/// Reads a forward; a structurally valid message whose forward makes no sense is `Ok(Err)`,
/// answered with MUX_S_FAILURE "Invalid forwarding request" as mux.c does.
pub(super) fn decode_fwd(
    r: &mut Reader<'_>,
) -> Result<Result<WireForward, &'static str>, Malformed> {
    let kind = r.u32()?;
    let lhost = r.string()?;
    let lport = r.u32()?;
    let chost = r.string()?;
    let cport = r.u32()?;
    let port_ok = |p: u32| p == PORT_STREAMLOCAL || p <= 65535;
    if !port_ok(lport) || !port_ok(cport) {
        return Err(Malformed("port out of range"));
    }
    Ok(forward_from(kind, lhost, lport, chost, cport))
}

fn forward_from(
    kind: u32,
    lhost: String,
    lport: u32,
    chost: String,
    cport: u32,
) -> Result<WireForward, &'static str> {
    let listen = if lport == PORT_STREAMLOCAL {
        Listen::Unix(lhost.into())
    } else {
        Listen::Tcp {
            bind: (!lhost.is_empty()).then_some(lhost),
            port: u16::try_from(lport).map_err(|_| "invalid listen port")?,
        }
    };
    let target = || -> Result<Endpoint, &'static str> {
        if cport == PORT_STREAMLOCAL {
            return Ok(Endpoint::Unix(chost.clone().into()));
        }
        let port = u16::try_from(cport).ok().filter(|p| *p != 0);
        match (chost.is_empty(), port) {
            (false, Some(port)) => Ok(Endpoint::Tcp {
                host: chost.clone(),
                port,
            }),
            (true, _) => Err("missing connect host"),
            (false, None) => Err("invalid connect port"),
        }
    };
    match kind {
        FWD_LOCAL => Ok(WireForward::Local(LocalForward {
            listen,
            target: target()?,
        })),
        FWD_DYNAMIC if matches!(listen, Listen::Unix(_)) => {
            Err("streamlocal and dynamic forwards are mutually exclusive")
        }
        FWD_DYNAMIC => Ok(WireForward::Dynamic(DynamicForward { listen })),
        FWD_REMOTE if cport == 0 => Ok(WireForward::Remote(RemoteForward {
            listen,
            target: None,
        })),
        FWD_REMOTE => Ok(WireForward::Remote(RemoteForward {
            listen,
            target: Some(target()?),
        })),
        _ => Err("invalid forwarding type"),
    }
}
