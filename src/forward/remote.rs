//! -R: ask the server to listen (`tcpip-forward` / `streamlocal-forward@openssh.com`) and connect
//! each `forwarded-tcpip` channel it opens to the forward's local target.

use std::sync::{Arc, Mutex};

use russh::client::Msg;
use russh::Channel;

use super::{ClientHandle, ClientSession, ForwardContext};
use crate::pipe::Counters;
use crate::spec::{Endpoint, Listen, RemoteForward};

/// Why a remote forward could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RemoteForwardError {
    /// The server refused the listen request.
    #[error("remote port forwarding failed for listen port {0}")]
    Port(u16),
    /// The server refused the unix socket listen request.
    #[error("remote port forwarding failed for listen path {0}")]
    Path(String),
    /// burrow ssh cannot do this kind of remote forward yet.
    #[error("{0}")]
    Unsupported(String),
}

/// One active server-side listener and where its connections go.
#[derive(Debug, Clone)]
struct Active {
    /// The bind address we sent ("localhost", "", or literal), or the socket path.
    listen_host: String,
    /// The port the server listens on (the allocated one for port 0); 0 for unix sockets.
    listen_port: u32,
    target: Endpoint,
    /// Where this forward's connections run and are counted.
    ctx: ForwardContext,
}

/// The live -R forwards of one session. The SSH handler consults it for every channel the server
/// opens, so only listeners we asked for are ever connected anywhere.
#[derive(Debug)]
pub struct RemoteForwards {
    active: Mutex<Vec<Active>>,
    ctx: ForwardContext,
}

/// The bind address OpenSSH sends for a -R listen spec: "localhost" when none was given, "" for
/// `*` or empty (all interfaces), else the literal (channels.c `channel_rfwd_bind_host`).
pub fn rfwd_bind_host(bind: &Option<String>) -> String {
    match bind.as_deref() {
        None => "localhost".to_string(),
        Some("") | Some("*") => String::new(),
        Some(h) => h.to_string(),
    }
}

impl RemoteForwards {
    /// An empty registry; `ctx` is the session's context (each forward gets its own counters).
    pub fn new(ctx: ForwardContext) -> Self {
        Self {
            active: Mutex::new(Vec::new()),
            ctx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests the forward on the server and registers it. Returns the port the server listens
    /// on (allocated when 0 was asked; 0 for unix sockets) and the counters of this forward's
    /// connections. Prints ssh(1)'s "Allocated port" message for port 0.
    pub async fn request<H: ClientSession>(
        &self,
        handle: &ClientHandle<H>,
        fwd: &RemoteForward,
    ) -> Result<(u32, Arc<Counters>), RemoteForwardError> {
        let ctx = self.ctx.for_forward();
        let counters = ctx.counters.clone();
        self.request_in(handle, fwd, ctx)
            .await
            .map(|port| (port, counters))
    }

    async fn request_in<H: ClientSession>(
        &self,
        handle: &ClientHandle<H>,
        fwd: &RemoteForward,
        ctx: ForwardContext,
    ) -> Result<u32, RemoteForwardError> {
        let Some(target) = fwd.target.clone() else {
            return Err(RemoteForwardError::Unsupported(
                "remote dynamic forwarding (-R without a target) is not supported yet".into(),
            ));
        };
        match &fwd.listen {
            Listen::Tcp { bind, port } => {
                let host = rfwd_bind_host(bind);
                let asked = u32::from(*port);
                let got = handle
                    .tcpip_forward(host.clone(), asked)
                    .await
                    .map_err(|_| RemoteForwardError::Port(*port))?;
                let listen_port = if asked == 0 { got } else { asked };
                // Registered before the port is announced: whoever connects as soon as they read
                // "Allocated port" must find the listener known here.
                self.lock().push(Active {
                    listen_host: host,
                    listen_port,
                    target: target.clone(),
                    ctx,
                });
                if asked == 0 {
                    tracing::info!("Allocated port {listen_port} for remote forward to {target}");
                }
                Ok(listen_port)
            }
            Listen::Unix(path) => {
                let p = path.to_string_lossy().to_string();
                handle
                    .streamlocal_forward(p.clone())
                    .await
                    .map_err(|_| RemoteForwardError::Path(p.clone()))?;
                self.lock().push(Active {
                    listen_host: p,
                    listen_port: 0,
                    target,
                    ctx,
                });
                Ok(0)
            }
        }
    }

    /// Finds the target for a connection the server accepted on `host:port`. The port decides;
    /// the address breaks ties, since servers report it in different spellings.
    fn target_for(&self, host: &str, port: u32) -> Option<(Endpoint, ForwardContext)> {
        let active = self.lock();
        let same_port: Vec<&Active> = active.iter().filter(|a| a.listen_port == port).collect();
        same_port
            .iter()
            .find(|a| a.listen_host == host)
            .or(same_port.first())
            .map(|a| (a.target.clone(), a.ctx.clone()))
    }

    fn target_for_path(&self, path: &str) -> Option<(Endpoint, ForwardContext)> {
        self.lock()
            .iter()
            .find(|a| a.listen_port == 0 && a.listen_host == path)
            .map(|a| (a.target.clone(), a.ctx.clone()))
    }

    /// Handles a `forwarded-tcpip` channel: dial the target in a task, then accept the channel
    /// and pump, or reject it with "connect failed" as ssh(1) does.
    pub fn dispatch(
        &self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        reply: russh::client::ChannelOpenHandle,
    ) {
        let found = self.target_for(host, port);
        if self.ctx.resume().is_some() {
            // A re-attaching stream may arrive before this session re-requested its listener.
            let (target, ctx) = match found {
                Some((target, ctx)) => (Some(target), ctx),
                None => (None, self.ctx.clone()),
            };
            ctx.accept_resumable(channel, target, reply, ());
            return;
        }
        let Some((target, ctx)) = found else {
            tracing::warn!("rejected forwarded connection for unknown listener {host}:{port}");
            drop(reply);
            return;
        };
        ctx.dial_then_pump(channel, target, reply, ());
    }

    /// Same as [`Self::dispatch`] for `forwarded-streamlocal@openssh.com`.
    pub fn dispatch_path(
        &self,
        channel: Channel<Msg>,
        path: &str,
        reply: russh::client::ChannelOpenHandle,
    ) {
        let Some((target, ctx)) = self.target_for_path(path) else {
            tracing::warn!("rejected forwarded connection for unknown listener {path}");
            drop(reply);
            return;
        };
        ctx.dial_then_pump(channel, target, reply, ());
    }
}

/// Shared registry handle.
pub type SharedRemoteForwards = Arc<RemoteForwards>;
