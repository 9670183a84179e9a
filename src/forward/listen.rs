//! Binding local listeners with OpenSSH's address rules, and the accept loop every local listener
//! (-L, -D) runs.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::either::Either;

use super::{ForwardContext, Stream};
use crate::reason::io_reason;
use crate::spec::{bind_target, BindTarget, Listen, StreamLocalBind};

/// The client settings that decide where and how a local listener binds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// `-g` / GatewayPorts: TCP listeners without a bind address use all interfaces.
    pub gateway_ports: bool,
    /// StreamLocalBindUnlink / StreamLocalBindMask for unix socket listeners.
    pub unix: StreamLocalBind,
}

/// Why a listener could not be set up; the message names address and port like ssh(1).
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Binding one address failed.
    #[error("bind [{addr}]:{port}: {reason}")]
    Bind {
        /// The address.
        addr: String,
        /// The port.
        port: u16,
        /// The OS error text.
        reason: String,
    },
    /// The bind host did not resolve.
    #[error("bind {host}: cannot resolve: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// Binding a unix socket failed.
    #[error("unix_listener: cannot bind to path {path}: {reason}")]
    Unix {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One bound listener: TCP (possibly one of several addresses) or a unix socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix-domain socket, removed again on drop.
    Unix(UnixListener, UnixPathGuard),
}

/// Removes a unix socket path when its listener goes away.
#[derive(Debug)]
pub struct UnixPathGuard(PathBuf);

impl Drop for UnixPathGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Listener {
    /// The TCP address it listens on (None for a unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// The local address, for messages and tests.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            Listener::Unix(_, g) => g.0.display().to_string(),
        }
    }

    /// Accepts one connection and returns it with a peer label for logs.
    pub async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Either::Left(s), Peer::Tcp(peer)))
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept().await?;
                Ok((Either::Right(s), Peer::Unix))
            }
        }
    }
}

/// Who connected: the originator sent in direct-tcpip channel opens.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// A TCP client.
    Tcp(SocketAddr),
    /// A unix socket client (no address).
    Unix,
}

impl Peer {
    /// Originator address and port for RFC 4254 channel opens.
    pub fn originator(&self) -> (String, u32) {
        match self {
            Peer::Tcp(a) => (a.ip().to_string(), u32::from(a.port())),
            Peer::Unix => ("127.0.0.1".to_string(), 0),
        }
    }
}

/// Binds every address `listen` names. TCP: loopback (127.0.0.1 and ::1) unless the spec or
/// `gateway_ports` says otherwise; all interfaces for `*`/empty. Succeeds if at least one
/// address bound, as ssh(1) does; the error names the first address that failed otherwise.
pub async fn bind(listen: &Listen, opts: BindOptions) -> Result<Vec<Listener>, BindError> {
    match listen {
        Listen::Unix(path) => bind_unix(path, opts.unix).map(|l| vec![l]),
        Listen::Tcp { bind, port } => {
            let addrs = bind_addrs(&bind_target(bind, opts.gateway_ports), *port, None).await?;
            bind_tcp_all(&addrs, *port)
        }
    }
}

/// Resolves `host:port` as `tokio::net::lookup_host` does, but on `pool`'s blocking threads
/// when one is given: the relay resolves on one pool shared by all its sessions, not on the
/// small pool of the session thread a lookup comes from (`server::workers`). An address needs
/// no lookup and is answered on the spot.
pub async fn lookup_on(
    pool: Option<&tokio::runtime::Handle>,
    host: &str,
    port: u16,
) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let Some(pool) = pool else {
        return Ok(tokio::net::lookup_host((host, port)).await?.collect());
    };
    let name = host.to_owned();
    pool.spawn(async move {
        tokio::net::lookup_host((name.as_str(), port))
            .await
            .map(|a| a.collect::<Vec<_>>())
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(format!("the lookup did not finish: {e}"))))
}

/// The addresses a [`BindTarget`] stands for on `port` (a host name is resolved now, on
/// `pool` if given, see [`lookup_on`]).
pub async fn bind_addrs(
    target: &BindTarget,
    port: u16,
    pool: Option<&tokio::runtime::Handle>,
) -> Result<Vec<IpAddr>, BindError> {
    Ok(match target {
        BindTarget::Loopback => vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
        BindTarget::Any => vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ],
        BindTarget::Host(h) => {
            let found = lookup_on(pool, h, port)
                .await
                .map_err(|e| BindError::Resolve {
                    host: h.clone(),
                    reason: io_reason(&e),
                })?;
            let mut ips: Vec<IpAddr> = found.into_iter().map(|a| a.ip()).collect();
            ips.dedup();
            ips
        }
    })
}

/// Binds each address on the same port; with port 0 the first bind picks the port for the rest.
/// Succeeds if any address bound, as ssh(1) does.
pub fn bind_tcp_all(addrs: &[IpAddr], port: u16) -> Result<Vec<Listener>, BindError> {
    match bind_each(addrs, port) {
        (listeners, Some(e)) if listeners.is_empty() => Err(e),
        (listeners, _) => Ok(listeners),
    }
}

/// Binds each address on the same port (port 0: the first bind picks it for the rest); returns
/// what bound and the first failure, for callers that must know whether every address bound.
pub fn bind_each(addrs: &[IpAddr], port: u16) -> (Vec<Listener>, Option<BindError>) {
    let mut listeners = Vec::new();
    let mut first_err = None;
    let mut port = port;
    for ip in addrs {
        match bind_tcp(SocketAddr::new(*ip, port)) {
            Ok(l) => {
                if port == 0 {
                    port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                }
                listeners.push(Listener::Tcp(l));
            }
            Err(e) => {
                tracing::debug!(addr = %ip, port, error = %e, "bind failed");
                first_err.get_or_insert(BindError::Bind {
                    addr: ip.to_string(),
                    port,
                    reason: io_reason(&e),
                });
            }
        }
    }
    (listeners, first_err)
}

/// A TCP listener with SO_REUSEADDR and, for IPv6, V6ONLY so `0.0.0.0` and `::` can both bind.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn bind_unix(path: &Path, opts: StreamLocalBind) -> Result<Listener, BindError> {
    let err = |e: io::Error| BindError::Unix {
        path: path.to_path_buf(),
        reason: io_reason(&e),
    };
    if opts.unlink {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::error!("unlink({}): {}", path.display(), io_reason(&e));
            }
            _ => {}
        }
    }
    let std_listener = bind_unix_socket(path, opts.mask).map_err(err)?;
    let l = UnixListener::from_std(std_listener).map_err(err)?;
    Ok(Listener::Unix(l, UnixPathGuard(path.to_path_buf())))
}

/// Creates a listening unix socket at `path` whose mode is `0777 & !mask`, never visible with
/// another mode and never replacing an existing file: it is bound in a fresh private directory
/// next to `path`, chmod-ed, and hard-linked into place (as OpenSSH places its control socket),
/// so no process-wide umask is touched. An existing `path` fails as bind(2) would
/// ("Address already in use"). Non-blocking, ready for tokio.
pub fn bind_unix_socket(path: &Path, mask: u32) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let private = tempfile::Builder::new()
        .prefix(".burrow-bind-")
        .tempdir_in(parent)?;
    let staged = private.path().join("s");
    let listener = std::os::unix::net::UnixListener::bind(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o777 & !mask))?;
    std::fs::hard_link(&staged, path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => {
            io::Error::from_raw_os_error(nix::errno::Errno::EADDRINUSE as i32)
        }
        _ => e,
    })?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Runs an accept loop per listener in `ctx`'s tracker; each connection runs `handle` in its own
/// task. Accept errors (e.g. out of file descriptors) are logged and retried after a pause, so
/// one bad moment does not end the forward.
pub fn serve<F, Fut>(listeners: Vec<Listener>, ctx: &ForwardContext, handle: F)
where
    F: Fn(Stream, Peer) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    serve_until(listeners, ctx, ctx.cancel.clone(), handle);
}

/// Binds `listen` and serves it until `stop` (see [`serve_until`]); returns the bound
/// addresses. The start of every client-side forward (-L, -D) that accepts locally.
pub async fn bind_and_serve<F, Fut>(
    listen: &Listen,
    opts: BindOptions,
    ctx: &ForwardContext,
    stop: tokio_util::sync::CancellationToken,
    handle: F,
) -> Result<Vec<String>, BindError>
where
    F: Fn(Stream, Peer) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listeners = bind(listen, opts).await?;
    let bound = listeners.iter().map(|l| l.describe()).collect();
    serve_until(listeners, ctx, stop, handle);
    Ok(bound)
}

/// [`serve`] whose listeners also close when `stop` is cancelled, while the connections they
/// accepted keep going (`-O cancel` closes a forward's listener, as in OpenSSH, not its
/// connections).
pub fn serve_until<F, Fut>(
    listeners: Vec<Listener>,
    ctx: &ForwardContext,
    stop: tokio_util::sync::CancellationToken,
    handle: F,
) where
    F: Fn(Stream, Peer) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    for listener in listeners {
        let ctx2 = ctx.clone();
        let handle = handle.clone();
        let stop = stop.clone();
        ctx.tracker.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    () = ctx2.cancel.cancelled() => return,
                    () = stop.cancelled() => return,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        ctx2.tracker.spawn(handle(stream, peer));
                    }
                    Err(e) => {
                        tracing::warn!(listener = %listener.describe(), error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A current-thread runtime on its own thread with `blocking` blocking threads; dropped
    /// (and its thread ended) when the returned sender is.
    fn runtime_thread(blocking: usize) -> (tokio::runtime::Handle, std::sync::mpsc::Sender<()>) {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(blocking)
                .build()
                .expect("runtime");
            handle_tx.send(rt.handle().clone()).expect("handle");
            rt.block_on(async {
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            });
        });
        (handle_rx.recv().expect("handle"), stop_tx)
    }

    /// The relay's lookups run on the pool they are given, not on the caller's: with the
    /// caller's one blocking thread held, a lookup on another pool still finishes, and one on
    /// the full pool waits. Names come from /etc/hosts; nothing is sent anywhere.
    #[test]
    fn a_lookup_runs_on_the_pool_it_is_given() {
        let (full, hold_full) = runtime_thread(1); // its one blocking thread waits for `hold_full`
        let (shared, stop_shared) = runtime_thread(8);
        let caller = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        caller.block_on(async {
            let on_shared = tokio::time::timeout(
                Duration::from_secs(10),
                lookup_on(Some(&shared), "localhost", 22),
            )
            .await;
            let addrs = on_shared
                .expect("a lookup on a free pool finishes")
                .expect("localhost resolves");
            assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 22));
            let on_full = tokio::time::timeout(
                Duration::from_millis(300),
                lookup_on(Some(&full), "localhost", 22),
            )
            .await;
            assert!(on_full.is_err(), "a lookup on a full pool should wait");
            // An address is answered without any pool.
            let ip = lookup_on(Some(&full), "::1", 7).await.expect("an address");
            assert_eq!(ip, vec![SocketAddr::from((Ipv6Addr::LOCALHOST, 7))]);
        });
        drop((hold_full, stop_shared));
    }
}
