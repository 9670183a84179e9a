//! Reverse dynamic forwarding (`-R [bind_address:]port` without a target): the server's
//! listener carries SOCKS4/4a/5 clients to us over `forwarded-tcpip` channels; we accept the
//! channel, answer the handshake on it and connect from this machine — so one command on A lets
//! B reach into A's network through a SOCKS proxy on B.
//!
//! As with `-D`, the SOCKS client gets a real answer: success only once the connection is made,
//! otherwise "not allowed" (PermitRemoteOpen) or the reason the connection failed. (ssh(1)
//! answers success before connecting and closes the channel on failure.)

use std::sync::Arc;

use russh::client::Msg;
use russh::Channel;

use super::dynamic::{endpoint_of, HANDSHAKE_TIMEOUT};
use super::{connect_endpoint, ForwardContext};
use crate::reason::io_reason;
use crate::socks::{self, Failure};
use crate::spec::Endpoint;

/// Decides whether a reverse dynamic forward may connect to `host:port` (PermitRemoteOpen).
pub type OpenCheck = Arc<dyn Fn(&str, u16) -> bool + Send + Sync>;

/// Accepts the channel and serves one SOCKS request on it in a task of `ctx`.
pub fn serve(
    channel: Channel<Msg>,
    reply: russh::client::ChannelOpenHandle,
    ctx: &ForwardContext,
    permit: OpenCheck,
) {
    let ctx = ctx.clone();
    ctx.tracker.clone().spawn(async move {
        // OpenSSH confirms the channel before it has a connection: the SOCKS request only
        // arrives once the channel is open.
        reply.accept().await;
        serve_on(channel.into_stream(), &ctx, permit).await;
    });
}

/// Serves one SOCKS request on `stream` (a channel, or a resumable stream's local end) and
/// pumps to where it asked to go.
pub async fn serve_on<S>(mut stream: S, ctx: &ForwardContext, permit: OpenCheck)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, socks::accept(&mut stream));
    let request = tokio::select! {
        r = handshake => r,
        () = ctx.cancel.cancelled() => return,
    };
    let request = match request {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return tracing::info!("reverse dynamic forward: {e}"),
        Err(_) => return tracing::info!("reverse dynamic forward: SOCKS handshake timed out"),
    };
    let target = endpoint_of(&request.target);
    let Endpoint::Tcp { host, port } = &target else {
        return;
    };
    if !permit(host, *port) {
        tracing::info!("reverse dynamic forward to {target}: not permitted by PermitRemoteOpen");
        let _ = socks::reply(&mut stream, request.version, Err(Failure::NotAllowed)).await;
        return;
    }
    match connect_endpoint(&target, ctx.connect_timeout).await {
        Ok(local) => {
            let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
            if socks::reply(&mut stream, request.version, Ok(unspecified))
                .await
                .is_ok()
            {
                ctx.pump(stream, local, &target.to_string()).await;
            }
        }
        Err(e) => {
            tracing::info!("connect_to {target}: failed: {}", io_reason(&e));
            let failure = Failure::from_io_error(&e);
            let _ = socks::reply(&mut stream, request.version, Err(failure)).await;
        }
    }
}
