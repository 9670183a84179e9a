//! The russh client handler: host key verification, channels the server opens for -R, and
//! noticing when the session ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use russh::client::{DisconnectReason, Msg, Session};
use russh::keys::PublicKeyOrCertificate;
use russh::Channel;
use tokio_util::sync::CancellationToken;

use crate::client::hostkey::HostKeyPolicy;
use crate::forward::remote::SharedRemoteForwards;

/// What the rest of the client learns about a session from its handler.
#[derive(Debug, Default)]
pub struct SessionEvents {
    /// Cancelled when the session has ended, for whatever reason.
    pub ended: CancellationToken,
    /// Why it ended, in ssh(1)'s words.
    reason: Mutex<Option<EndReason>>,
    /// The host key was refused (so a connect error means "Host key verification failed.").
    pub host_key_rejected: AtomicBool,
    /// The host key the server presented and this handler accepted.
    pub host_key: Mutex<Option<russh::keys::PublicKey>>,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// Keepalives went unanswered (ServerAliveCountMax).
    KeepaliveTimeout,
    /// The server sent SSH_MSG_DISCONNECT.
    Disconnected(String),
    /// The server closed the connection without a DISCONNECT (end of stream).
    Closed,
    /// The transport failed.
    Error(String),
}

impl SessionEvents {
    /// Records the reason (first one wins) and signals the end.
    pub fn end(&self, reason: EndReason) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        r.get_or_insert(reason);
        self.ended.cancel();
    }

    /// The recorded reason, if the session has ended.
    pub fn reason(&self) -> Option<EndReason> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One hop's handler.
pub struct ClientHandler {
    policy: HostKeyPolicy,
    remote: Option<SharedRemoteForwards>,
    events: Arc<SessionEvents>,
}

impl ClientHandler {
    /// A handler that verifies the host with `policy` and, for the final hop, serves -R channels.
    pub fn new(
        policy: HostKeyPolicy,
        remote: Option<SharedRemoteForwards>,
        events: Arc<SessionEvents>,
    ) -> Self {
        Self {
            policy,
            remote,
            events,
        }
    }
}

impl russh::client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(_) => {
                eprintln!("Host certificates are not supported; refusing the host certificate.");
                self.events.host_key_rejected.store(true, Ordering::SeqCst);
                return Ok(false);
            }
        };
        let policy = self.policy.clone();
        let checked = key.clone();
        let ok = tokio::task::spawn_blocking(move || policy.verify(&checked))
            .await
            .unwrap_or(false);
        if ok {
            *self
                .events
                .host_key
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(key);
        } else {
            self.events.host_key_rejected.store(true, Ordering::SeqCst);
        }
        Ok(ok)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        match &self.remote {
            Some(remote) => remote.dispatch(
                channel,
                (connected_address, connected_port),
                (originator_address, originator_port),
                reply,
            ),
            None => {
                tracing::warn!("server opened a forwarded channel on a jump host; rejected");
                drop(reply);
            }
        }
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        match &self.remote {
            Some(remote) => remote.dispatch_path(channel, socket_path, reply),
            None => drop(reply),
        }
        Ok(())
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let end = match reason {
            DisconnectReason::ReceivedDisconnect(info) => EndReason::Disconnected(info.message),
            DisconnectReason::Error(russh::Error::KeepaliveTimeout) => EndReason::KeepaliveTimeout,
            DisconnectReason::Error(russh::Error::IO(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                EndReason::Closed
            }
            DisconnectReason::Error(e) => EndReason::Error(e.to_string()),
        };
        self.events.end(end);
        Ok(())
    }
}
