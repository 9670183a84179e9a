//! -D: a local SOCKS4/4a/5 proxy; each CONNECT becomes a `direct-tcpip` channel, so names are
//! resolved and connections made on the server side.
//!
//! Unlike ssh(1), which answers "granted" before the server has tried to connect, burrow waits for
//! the channel open result and sends a real SOCKS error (e.g. "connection refused") when the
//! server could not connect, so SOCKS clients report the actual failure.

use std::time::Duration;

use russh::ChannelOpenFailure;
use tokio_util::sync::CancellationToken;

use super::listen::{self, BindError, BindOptions, Peer};
use super::{ClientHandle, ClientSession, ForwardContext, Stream};
use crate::reason::open_failure_text;
use crate::resume::{FirstBytes, OpenError};
use crate::socks::{self, Failure, TargetAddr};
use crate::spec::{DynamicForward, Endpoint};

/// How long a SOCKS client may take to send its request: a stalled client costs one task for
/// at most this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds the SOCKS listeners and starts accepting until `stop` (or the session's shutdown);
/// returns the bound addresses.
pub async fn start<H: ClientSession>(
    handle: ClientHandle<H>,
    fwd: &DynamicForward,
    bind: BindOptions,
    ctx: &ForwardContext,
    stop: CancellationToken,
) -> Result<Vec<String>, BindError> {
    let task_ctx = ctx.clone();
    listen::bind_and_serve(&fwd.listen, bind, ctx, stop, move |stream, peer| {
        proxy_one(handle.clone(), stream, peer, task_ctx.clone())
    })
    .await
}

async fn proxy_one<H: ClientSession>(
    handle: ClientHandle<H>,
    mut stream: Stream,
    peer: Peer,
    ctx: ForwardContext,
) {
    let Some(request) = handshake(&mut stream, HANDSHAKE_TIMEOUT, &ctx.cancel).await else {
        return;
    };
    let target = endpoint_of(&request.target);
    let channel = match super::local::open_channel(&handle, &target, &peer).await {
        Ok(channel) => channel,
        Err(e) => {
            tracing::info!(
                "channel: open failed: {}: dynamic forward to {target}",
                open_failure_text(&e)
            );
            let _ = socks::reply(&mut stream, request.version, Err(socks_failure(&e))).await;
            return;
        }
    };
    let spec = super::local::resume_spec(&target, &peer);
    let carrier = match ctx
        .carrier(channel.into_stream(), spec, FirstBytes::AfterReply)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::info!("channel: open failed: {e}: dynamic forward to {target}");
            let failure = match e {
                OpenError::ConnectFailed(_) => Failure::ConnectionRefused,
                OpenError::Handshake(_) => Failure::General,
            };
            let _ = socks::reply(&mut stream, request.version, Err(failure)).await;
            return;
        }
    };
    let bound = Ok(std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    if socks::reply(&mut stream, request.version, bound)
        .await
        .is_ok()
    {
        ctx.carry(carrier, stream, &target.to_string(), ()).await;
    }
}

/// Where a SOCKS request wants to go, as a forward target: an address literal in its usual
/// text form, or the name as sent (resolved by whoever dials).
pub fn endpoint_of(target: &TargetAddr) -> Endpoint {
    match target {
        TargetAddr::Ip(a) => Endpoint::Tcp {
            host: a.ip().to_string(),
            port: a.port(),
        },
        TargetAddr::Domain(h, p) => Endpoint::Tcp {
            host: h.clone(),
            port: *p,
        },
    }
}

/// Reads the SOCKS request within `timeout`: a client that sends garbage gets its error reply
/// (where the protocol has one) and is dropped at once; one that stalls mid-handshake is dropped
/// after `timeout`, or at shutdown. None = no usable request (the reason is logged).
async fn handshake<S>(
    stream: &mut S,
    timeout: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Option<socks::Request>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::select! {
        r = tokio::time::timeout(timeout, socks::accept(stream)) => match r {
            Ok(Ok(request)) => Some(request),
            Ok(Err(e)) => {
                tracing::info!("dynamic forward: {e}");
                None
            }
            Err(_) => {
                tracing::info!("dynamic forward: SOCKS handshake timed out after {timeout:?}");
                None
            }
        },
        () = cancel.cancelled() => None,
    }
}

fn socks_failure(e: &russh::Error) -> Failure {
    match e {
        russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed) => {
            Failure::ConnectionRefused
        }
        russh::Error::ChannelOpenFailure(ChannelOpenFailure::AdministrativelyProhibited) => {
            Failure::NotAllowed
        }
        _ => Failure::General,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stalls_mid_handshake_is_dropped_at_the_timeout() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        // A SOCKS5 greeting that promises two methods and sends one, then nothing.
        client.write_all(&[5, 2, 0]).await.unwrap();
        let start = tokio::time::Instant::now();
        let cancel = CancellationToken::new();
        let got = handshake(&mut server, HANDSHAKE_TIMEOUT, &cancel).await;
        assert!(got.is_none());
        assert_eq!(start.elapsed(), HANDSHAKE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn garbage_is_refused_at_once_and_shutdown_ends_a_stalled_handshake() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let start = tokio::time::Instant::now();
        let cancel = CancellationToken::new();
        assert!(handshake(&mut server, HANDSHAKE_TIMEOUT, &cancel)
            .await
            .is_none());
        assert_eq!(start.elapsed(), Duration::ZERO, "no waiting on garbage");

        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&[4, 1]).await.unwrap();
        let stopper = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            stopper.cancel();
        });
        assert!(handshake(&mut server, HANDSHAKE_TIMEOUT, &cancel)
            .await
            .is_none());
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        drop(server);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.is_empty(),
            "nothing sent to a half-finished SOCKS4 request"
        );
    }
}
