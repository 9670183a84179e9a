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
use super::{open_failure_text, ClientHandle, ClientSession, ForwardContext, Stream};
use crate::resume::OpenError;
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
    let listeners = listen::bind(&fwd.listen, bind).await?;
    let bound = listeners.iter().map(|l| l.describe()).collect();
    let task_ctx = ctx.clone();
    listen::serve_until(listeners, ctx, stop, move |stream, peer| {
        proxy_one(handle.clone(), stream, peer, task_ctx.clone())
    });
    Ok(bound)
}

async fn proxy_one<H: ClientSession>(
    handle: ClientHandle<H>,
    mut stream: Stream,
    peer: Peer,
    ctx: ForwardContext,
) {
    let request = match tokio::time::timeout(HANDSHAKE_TIMEOUT, socks::accept(&mut stream)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::info!("dynamic forward: {e}");
            return;
        }
        Err(_) => {
            tracing::info!("dynamic forward: SOCKS handshake timed out");
            return;
        }
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
    let carrier = match ctx.carrier(channel.into_stream(), spec).await {
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
