//! The client's side of resumable streams: asking the server for them (a standard sshd says no
//! and nothing changes), and opening `direct-tcpip` channels for streams that re-attach.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use russh::client::Msg;
use russh::{Channel, ChannelMsg};

use super::SshHandle;
use crate::resume::{self, BoxedIo, ChannelSpec, Opener, Registry};

/// How long the server may take to answer the subsystem request and the instance id.
const NEGOTIATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks for resumable streams; on success returns the control channel, which must stay open for
/// the session's lifetime, and what came on it after the answer (see [`run_control`]). `None`
/// means plain forwarding (any standard server).
/// `accepted` runs once the server has agreed and before it learns our instance id: from then on
/// it may re-open streams towards us, and they must find resumption on.
pub async fn negotiate(
    handle: &SshHandle,
    registry: &Registry,
    accepted: impl FnOnce(),
) -> Option<(Channel<Msg>, Vec<u8>)> {
    match tokio::time::timeout(NEGOTIATE_TIMEOUT, handshake(handle, registry, accepted)).await {
        Ok(Some(control)) => Some(control),
        Ok(None) => {
            tracing::debug!("server does not offer resumable streams");
            None
        }
        Err(_) => {
            tracing::debug!("no answer to the resumable streams request in time");
            None
        }
    }
}

async fn handshake(
    handle: &SshHandle,
    registry: &Registry,
    accepted: impl FnOnce(),
) -> Option<(Channel<Msg>, Vec<u8>)> {
    let mut channel = handle.channel_open_session().await.ok()?;
    channel
        .request_subsystem(true, resume::SUBSYSTEM)
        .await
        .ok()?;
    loop {
        match channel.wait().await? {
            ChannelMsg::Success => break,
            ChannelMsg::Failure | ChannelMsg::Close | ChannelMsg::Eof => return None,
            _ => {}
        }
    }
    // Before any stream can attach on this session (`accepted` lets new ones start).
    registry.set_peer_packet(channel.max_packet_size());
    accepted();
    let hello = resume::instance_message(&registry.instance());
    channel.data(hello.as_slice()).await.ok()?;
    let mut answer = Vec::new();
    while answer.len() < resume::CONTROL_OK.len() {
        match channel.wait().await? {
            ChannelMsg::Data { data } => answer.extend_from_slice(&data),
            ChannelMsg::Close | ChannelMsg::Eof => return None,
            _ => {}
        }
    }
    let leftover = answer.split_off(resume::CONTROL_OK.len());
    (answer == resume::CONTROL_OK).then_some((channel, leftover))
}

/// Carries the control channel after [`negotiate`]: the relay's acknowledgements go to
/// `registry`'s streams, theirs go out (see [`resume::control`]). Ends with the channel, or
/// when `stop` is cancelled (the session is dropped).
pub async fn run_control(
    registry: Arc<Registry>,
    channel: Channel<Msg>,
    leftover: Vec<u8>,
    stop: tokio_util::sync::CancellationToken,
) {
    tokio::select! {
        r = registry.run_control(channel.into_stream(), leftover) => {
            if let Err(e) = r {
                tracing::info!("resume control channel: {e}");
            }
        }
        () = stop.cancelled() => {}
    }
}

/// Opens `direct-tcpip` channels on one client session.
pub struct ClientOpener(pub SshHandle);

impl Opener for ClientOpener {
    fn open(
        &self,
        spec: ChannelSpec,
    ) -> futures::future::BoxFuture<'static, std::io::Result<BoxedIo>> {
        let handle = Arc::clone(&self.0);
        async move {
            match spec {
                ChannelSpec::Direct {
                    host,
                    port,
                    orig,
                    orig_port,
                } => handle
                    .channel_open_direct_tcpip(host, port, orig, orig_port)
                    .await
                    .map(|ch| Box::new(ch.into_stream()) as BoxedIo)
                    .map_err(|e| std::io::Error::other(e.to_string())),
                ChannelSpec::Forwarded { .. } => Err(std::io::Error::other(
                    "a client does not open forwarded-tcpip channels",
                )),
            }
        }
        .boxed()
    }
}
