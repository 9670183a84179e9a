//! -L: local listeners whose connections travel to a target through `direct-tcpip` (or
//! `direct-streamlocal@openssh.com` for a unix socket target) channels.

use tokio_util::sync::CancellationToken;

use super::listen::{self, BindError, BindOptions, Peer};
use super::{ClientHandle, ClientSession, ForwardContext, Stream};
use crate::reason::open_failure_text;
use crate::resume::{ChannelSpec, FirstBytes};
use crate::spec::{Endpoint, LocalForward};

/// Binds the forward's listeners and starts accepting until `stop` (or the session's
/// shutdown); returns the bound addresses.
pub async fn start<H: ClientSession>(
    handle: ClientHandle<H>,
    fwd: &LocalForward,
    bind: BindOptions,
    ctx: &ForwardContext,
    stop: CancellationToken,
) -> Result<Vec<String>, BindError> {
    let target = fwd.target.clone();
    let task_ctx = ctx.clone();
    listen::bind_and_serve(&fwd.listen, bind, ctx, stop, move |stream, peer| {
        forward_one(
            handle.clone(),
            target.clone(),
            stream,
            peer,
            task_ctx.clone(),
        )
    })
    .await
}

async fn forward_one<H: ClientSession>(
    handle: ClientHandle<H>,
    target: Endpoint,
    stream: Stream,
    peer: Peer,
    ctx: ForwardContext,
) {
    let channel = match open_channel(&handle, &target, &peer).await {
        Ok(channel) => channel,
        Err(e) => {
            tracing::info!(
                "channel: open failed: {}: forward to {target}",
                open_failure_text(&e)
            );
            return;
        }
    };
    match ctx
        .carrier(
            channel.into_stream(),
            resume_spec(&target, &peer),
            // The client is not answered either way: it learns of a refused target when its
            // connection closes, as with a plain channel.
            FirstBytes::WithHello,
        )
        .await
    {
        Ok(carrier) => ctx.carry(carrier, stream, &target.to_string(), ()).await,
        Err(e) => tracing::info!("channel: open failed: {e}: forward to {target}"),
    }
}

/// How a resumable stream to `target` re-opens its `direct-tcpip` channel (TCP targets only).
pub fn resume_spec(target: &Endpoint, peer: &Peer) -> Option<ChannelSpec> {
    let (orig, orig_port) = peer.originator();
    match target {
        Endpoint::Tcp { host, port } => Some(ChannelSpec::Direct {
            host: host.clone(),
            port: u32::from(*port),
            orig,
            orig_port,
        }),
        Endpoint::Unix(_) => None,
    }
}

/// Opens the channel that carries one -L connection to `target`.
pub async fn open_channel<H: ClientSession>(
    handle: &ClientHandle<H>,
    target: &Endpoint,
    peer: &Peer,
) -> Result<russh::Channel<russh::client::Msg>, russh::Error> {
    let (orig, orig_port) = peer.originator();
    match target {
        Endpoint::Tcp { host, port } => {
            handle
                .channel_open_direct_tcpip(host.clone(), u32::from(*port), orig, orig_port)
                .await
        }
        Endpoint::Unix(path) => {
            handle
                .channel_open_direct_streamlocal(path.to_string_lossy())
                .await
        }
    }
}
