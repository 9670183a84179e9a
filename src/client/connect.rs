//! Reaching the server: TCP with ConnectTimeout, then each ProxyJump hop in turn, where every next
//! hop's transport runs inside a `direct-tcpip` channel of the previous one.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use tokio::net::TcpStream;

use crate::client::auth;
use crate::client::handler::{ClientHandler, SessionEvents};
use crate::client::hostkey::HostKeyPolicy;
use crate::client::ClientError;
use crate::config::options::{AddressFamily, ClientOptions};
use crate::forward::remote::SharedRemoteForwards;
use crate::reason::io_reason;

/// An authenticated session to the final server, and the hop sessions that carry it.
pub struct Connected {
    /// The session to the destination.
    pub handle: Handle<ClientHandler>,
    /// Its events (end of session, host key refusal).
    pub events: Arc<SessionEvents>,
    /// Jump host sessions, first hop first; kept alive as long as the destination session.
    pub hops: Vec<(Handle<ClientHandler>, Arc<SessionEvents>)>,
}

/// russh settings derived from the options of one hop.
pub fn ssh_config(opts: &ClientOptions) -> client::Config {
    use russh::{compression, Preferred};
    let mut preferred = Preferred::default();
    if opts.compression {
        preferred.compression = std::borrow::Cow::Borrowed(&[
            compression::ZLIB_LEGACY,
            compression::ZLIB,
            compression::NONE,
        ]);
    } else {
        preferred.compression = std::borrow::Cow::Borrowed(&[compression::NONE]);
    }
    if let Some(ciphers) = &opts.ciphers {
        preferred.cipher = std::borrow::Cow::Owned(ciphers.clone());
    } else {
        preferred.cipher = std::borrow::Cow::Borrowed(crate::transport::CIPHERS);
    }
    prefer_known_host_key_algorithms(&mut preferred, opts);
    client::Config {
        preferred,
        keepalive_interval: opts.server_alive_interval,
        keepalive_max: opts.server_alive_count_max as usize,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    }
}

/// Offers the host key algorithms already in known_hosts first, as ssh(1) does, so a host known
/// by (say) its RSA key is not asked for an ed25519 key that would look like a changed key.
fn prefer_known_host_key_algorithms(preferred: &mut russh::Preferred, opts: &ClientOptions) {
    let files: Vec<_> = opts
        .user_known_hosts_files
        .iter()
        .chain(opts.global_known_hosts_files.iter())
        .cloned()
        .collect();
    let Ok(known) = crate::client::known_hosts::known_algorithms(&files, &opts.hostname, opts.port)
    else {
        return;
    };
    if known.is_empty() {
        return;
    }
    let mut order: Vec<russh::keys::Algorithm> = preferred
        .key
        .iter()
        .filter(|a| known.contains(a))
        .cloned()
        .collect();
    order.extend(preferred.key.iter().filter(|a| !known.contains(a)).cloned());
    preferred.key = std::borrow::Cow::Owned(order);
}

/// Connects through every jump host to the destination and authenticates on each.
pub async fn establish(
    opts: &ClientOptions,
    remote: SharedRemoteForwards,
) -> Result<Connected, ClientError> {
    let mut hops: Vec<(Handle<ClientHandler>, Arc<SessionEvents>)> = Vec::new();
    for hop in &opts.jump_hosts {
        let (h, ev) = match hops.last() {
            None => open_tcp(hop, None).await?,
            Some((prev, _)) => open_via(prev, hop, None).await?,
        };
        hops.push((h, ev));
    }
    let (handle, events) = match hops.last() {
        None => open_tcp(opts, Some(remote)).await?,
        Some((prev, _)) => open_via(prev, opts, Some(remote)).await?,
    };
    Ok(Connected {
        handle,
        events,
        hops,
    })
}

/// Connects to the destination over `transport`, a byte stream that already reaches it (the
/// roaming link's stream through a relay, see [`super::roam`]): no TCP, no jump hosts here.
pub async fn establish_over(
    opts: &ClientOptions,
    transport: crate::resume::BoxedIo,
    remote: SharedRemoteForwards,
) -> Result<Connected, ClientError> {
    let (handle, events) = handshake(opts, transport, Some(remote)).await?;
    Ok(Connected {
        handle,
        events,
        hops: Vec::new(),
    })
}

fn policy(opts: &ClientOptions) -> HostKeyPolicy {
    HostKeyPolicy {
        host: opts.hostname.clone(),
        port: opts.port,
        user_files: opts.user_known_hosts_files.clone(),
        global_files: opts.global_known_hosts_files.clone(),
        strict: opts.strict_host_key_checking,
        batch_mode: opts.batch_mode,
        hash: opts.hash_known_hosts,
        pinned: opts.pinned_host_key.clone(),
    }
}

async fn open_tcp(
    opts: &ClientOptions,
    remote: Option<SharedRemoteForwards>,
) -> Result<(Handle<ClientHandler>, Arc<SessionEvents>), ClientError> {
    let stream = tcp_connect(opts).await?;
    handshake(
        opts,
        crate::batched_reads::BatchedReads::new(stream),
        remote,
    )
    .await
}

async fn open_via(
    prev: &Handle<ClientHandler>,
    opts: &ClientOptions,
    remote: Option<SharedRemoteForwards>,
) -> Result<(Handle<ClientHandler>, Arc<SessionEvents>), ClientError> {
    let channel = prev
        .channel_open_direct_tcpip(opts.hostname.clone(), u32::from(opts.port), "127.0.0.1", 0)
        .await
        .map_err(|e| ClientError::Jump {
            host: opts.hostname.clone(),
            port: opts.port,
            reason: crate::reason::open_failure_text(&e),
        })?;
    handshake(opts, channel.into_stream(), remote).await
}

async fn handshake<S>(
    opts: &ClientOptions,
    stream: S,
    remote: Option<SharedRemoteForwards>,
) -> Result<(Handle<ClientHandler>, Arc<SessionEvents>), ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let events = Arc::new(SessionEvents::default());
    let handler = ClientHandler::new(policy(opts), remote, events.clone());
    let config = Arc::new(ssh_config(opts));
    let mut handle = client::connect_stream(config, stream, handler)
        .await
        .map_err(|e| {
            if events.host_key_rejected.load(Ordering::SeqCst) {
                ClientError::HostKeyVerification
            } else {
                ClientError::Handshake {
                    host: opts.hostname.clone(),
                    port: opts.port,
                    reason: e.to_string(),
                }
            }
        })?;
    auth::authenticate(&mut handle, opts).await?;
    Ok((handle, events))
}

/// Resolves and connects, trying each address in turn within ConnectTimeout, like ssh(1).
async fn tcp_connect(opts: &ClientOptions) -> Result<TcpStream, ClientError> {
    let host = opts.hostname.clone();
    let port = opts.port;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| ClientError::Resolve {
            host: host.clone(),
            reason: io_reason(&e),
        })?
        .filter(|a| match opts.address_family {
            AddressFamily::Any => true,
            AddressFamily::Inet => a.is_ipv4(),
            AddressFamily::Inet6 => a.is_ipv6(),
        })
        .collect();
    let mut last = None;
    for addr in &addrs {
        match connect_one(*addr, opts.connect_timeout).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(ClientError::Connect {
        host,
        port,
        reason: last.unwrap_or_else(|| "no address found".into()),
    })
}

async fn connect_one(addr: SocketAddr, timeout: Option<Duration>) -> Result<TcpStream, String> {
    let attempt = TcpStream::connect(addr);
    let stream = match timeout {
        Some(t) => tokio::time::timeout(t, attempt)
            .await
            .map_err(|_| "Connection timed out".to_string())?,
        None => attempt.await,
    }
    .map_err(|e| io_reason(&e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
