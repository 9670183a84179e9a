//! `burrow ssh`: the OpenSSH-compatible forwarding client.

pub mod auth;
pub mod background;
pub mod connect;
pub mod escape;
pub mod forwards;
pub mod handler;
pub mod hostkey;
pub mod known_hosts;
pub mod prompt;
pub mod resume;
pub mod roam;
pub mod session_channel;
pub mod tty;
pub mod work;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::options::ClientOptions;
use crate::config::session::TtyDecision;
use crate::forward::remote::RemoteForwards;
use crate::forward::{stdio, ForwardContext};
use handler::{ClientHandler, EndReason, SessionEvents};

/// A session handle shared by every forward task.
pub type SshHandle = Arc<russh::client::Handle<ClientHandler>>;

/// Exit status for connection, authentication and forward set-up errors, as ssh(1).
pub const EXIT_FAILURE: u8 = 255;

/// Why the client stopped. Messages follow ssh(1)'s wording where scripts may look for it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// DNS failed.
    #[error("Could not resolve hostname {host}: {reason}")]
    Resolve {
        /// Host name.
        host: String,
        /// Resolver message.
        reason: String,
    },
    /// TCP connect failed.
    #[error("connect to host {host} port {port}: {reason}")]
    Connect {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// OS message.
        reason: String,
    },
    /// The SSH handshake failed.
    #[error("ssh handshake with {host} port {port} failed: {reason}")]
    Handshake {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// What went wrong.
        reason: String,
    },
    /// The host key was refused (the reason was printed already).
    #[error("Host key verification failed.")]
    HostKeyVerification,
    /// No authentication method worked.
    #[error("{user}@{host}: Permission denied ({methods}).")]
    PermissionDenied {
        /// User.
        user: String,
        /// Host.
        host: String,
        /// Methods the server offered.
        methods: String,
    },
    /// A jump host could not reach the next hop.
    #[error("channel 0: open failed: {reason}: {host}:{port}")]
    Jump {
        /// Next hop host.
        host: String,
        /// Next hop port.
        port: u16,
        /// Why.
        reason: String,
    },
    /// A forward failed and ExitOnForwardFailure is set.
    #[error("{0}")]
    Forward(String),
    /// -W failed.
    #[error(transparent)]
    Stdio(#[from] stdio::StdioError),
    /// Something this client does not do (yet).
    #[error("{0}")]
    Unsupported(String),
    /// The SSH layer failed.
    #[error("{0}")]
    Ssh(#[from] russh::Error),
    /// A roaming invocation lost its stream: the relay stayed away, forgot it, or refused us
    /// (see [`roam`]).
    #[error(transparent)]
    Roam(#[from] roam::RoamError),
}

/// One established client session with its forwards; the unit `burrow ssh`, `burrow demo` and
/// (later) `burrow up` are built from.
pub struct Session {
    handle: SshHandle,
    events: Arc<SessionEvents>,
    hops: Vec<(russh::client::Handle<ClientHandler>, Arc<SessionEvents>)>,
    ctx: ForwardContext,
    remote: Arc<RemoteForwards>,
    listeners: forwards::LocalListeners,
    shutdown: CancellationToken,
    /// Stops the resume control channel's task (which keeps the channel open while resumable
    /// streams are on) when the session is dropped.
    _resume_control: Option<tokio_util::sync::DropGuard>,
}

/// A forward that is up, for messages and callers that need the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Established {
    /// -L or -D listening on these local addresses.
    Local {
        /// Bound addresses.
        bound: Vec<String>,
    },
    /// -R: the server listens on this port (allocated when 0 was asked).
    Remote {
        /// Server-side port (0 for unix sockets).
        port: u32,
    },
}

impl Session {
    /// `kill -USR1` logs this session's resource counts (tasks, fds, connections) until it ends:
    /// how the load tests and an operator see leaks without a debugger.
    pub(crate) fn log_stats_on_sigusr1(&self) {
        crate::diagnostics::log_on_sigusr1(
            &self.ctx.tracker,
            self.ctx.cancel.clone(),
            self.ctx.counters.clone(),
        );
    }

    /// Connects (through any jump hosts) and authenticates. Every task the session starts stops
    /// when `shutdown` is cancelled.
    pub async fn establish(
        opts: &ClientOptions,
        shutdown: CancellationToken,
    ) -> Result<Self, ClientError> {
        Self::establish_resumable(opts, shutdown, None).await
    }

    /// [`Session::establish`], then, with `resume`, asks the server for resumable streams: with
    /// a burrow relay the streams of `resume` (earlier sessions of the same tunnel) re-attach
    /// here, and new ones survive this session too.
    pub async fn establish_resumable(
        opts: &ClientOptions,
        shutdown: CancellationToken,
        resume: Option<Arc<crate::resume::Registry>>,
    ) -> Result<Self, ClientError> {
        Self::establish_via(opts, shutdown, resume, None).await
    }

    /// [`Session::establish_resumable`] over `transport` when given (a stream that reaches the
    /// destination already: see [`roam`]) instead of TCP and jump hosts.
    pub(crate) async fn establish_via(
        opts: &ClientOptions,
        shutdown: CancellationToken,
        resume: Option<Arc<crate::resume::Registry>>,
        transport: Option<crate::resume::BoxedIo>,
    ) -> Result<Self, ClientError> {
        let ctx = ForwardContext::new(shutdown.child_token());
        let remote = Arc::new(forwards::remote_registry(opts, &ctx));
        let connected = match transport {
            None => connect::establish(opts, remote.clone()).await?,
            Some(t) => connect::establish_over(opts, t, remote.clone()).await?,
        };
        let handle = Arc::new(connected.handle);
        let mut control = None;
        if let Some(registry) = resume {
            let negotiated =
                resume::negotiate(&handle, &registry, || ctx.enable_resume(registry.clone())).await;
            if let Some((channel, leftover)) = negotiated {
                tracing::info!("resumable streams on");
                registry.set_opener(Some(Arc::new(resume::ClientOpener(handle.clone()))));
                let stop = ctx.cancel.child_token();
                let run = resume::run_control(registry, channel, leftover, stop.clone());
                ctx.tracker.spawn(run);
                control = Some(stop.drop_guard());
            } else if ctx.resume().is_some() {
                // The server agreed, then never confirmed (the link went, or it stalled): a
                // transient failure, retried like any broken handshake.
                return Err(ClientError::Handshake {
                    host: opts.hostname.clone(),
                    port: opts.port,
                    reason: "resumable streams were accepted but not confirmed".into(),
                });
            }
        }
        Ok(Self {
            handle,
            events: connected.events,
            hops: connected.hops,
            ctx,
            remote,
            listeners: forwards::LocalListeners::default(),
            shutdown,
            _resume_control: control,
        })
    }

    /// The destination's host key, as accepted when the session was made.
    pub fn host_key(&self) -> Option<russh::keys::PublicKey> {
        self.events
            .host_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True when this session carries resumable streams.
    pub fn resumable(&self) -> bool {
        self.ctx.resume().is_some()
    }

    /// Sets up -L, -D and -R as ssh(1) does: failures are warnings, or fatal with
    /// ExitOnForwardFailure. Returns what is up, in the order local, dynamic, remote.
    pub async fn start_forwards(
        &self,
        opts: &ClientOptions,
    ) -> Result<Vec<Established>, ClientError> {
        let mut up = Vec::new();
        let mut local_failed = 0;
        for fwd in &opts.local_forwards {
            match self.open_local(fwd, forwards::bind_options(opts)).await {
                Ok((bound, _)) => {
                    tracing::debug!(?bound, target = %fwd.target, "local forward listening");
                    report_allocated(
                        &fwd.listen,
                        &bound,
                        &format!("local forward to {}", fwd.target),
                    );
                    up.push(Established::Local { bound });
                }
                Err(e) => {
                    tracing::error!("{e}");
                    tracing::error!(
                        "channel_setup_fwd_listener: cannot listen to {}",
                        fwd.listen
                    );
                    local_failed += 1;
                }
            }
        }
        for fwd in &opts.dynamic_forwards {
            match self.open_dynamic(fwd, forwards::bind_options(opts)).await {
                Ok((bound, _)) => {
                    tracing::debug!(?bound, "dynamic forward listening");
                    report_allocated(&fwd.listen, &bound, "dynamic forward");
                    up.push(Established::Local { bound });
                }
                Err(e) => {
                    tracing::error!("{e}");
                    local_failed += 1;
                }
            }
        }
        let local_total = opts.local_forwards.len() + opts.dynamic_forwards.len();
        if local_failed > 0 {
            if opts.exit_on_forward_failure {
                return Err(ClientError::Forward(
                    "Could not request local forwarding.".into(),
                ));
            }
            if local_failed == local_total {
                tracing::error!("Could not request local forwarding.");
            }
        }
        for fwd in &opts.remote_forwards {
            match self.remote.request(&self.handle, fwd).await {
                Ok((port, _)) => up.push(Established::Remote { port }),
                Err(e) if opts.exit_on_forward_failure => {
                    return Err(ClientError::Forward(format!("Error: {e}")))
                }
                Err(e) => tracing::warn!("Warning: {e}"),
            }
        }
        Ok(up)
    }

    /// Bytes and connections through this session's forwards (a_to_b = sent towards the server).
    pub fn counters(&self) -> Arc<crate::pipe::Counters> {
        self.ctx.counters.clone()
    }

    /// Asks the server for a keepalive reply; false when none comes within `deadline` (the link
    /// or the server is gone even if TCP has not noticed).
    pub async fn probe(&self, deadline: Duration) -> bool {
        matches!(
            tokio::time::timeout(deadline, self.handle.send_ping()).await,
            Ok(Ok(()))
        )
    }

    /// Resolves once a network change (see [`crate::netwatch`]) finds the server silent: no
    /// keepalive answer within `deadline`. Never, without a watcher. `link` names the session
    /// in the log of a change it survived.
    pub async fn silent_after_network_change(
        &self,
        net: &mut tokio::sync::watch::Receiver<u64>,
        deadline: Duration,
        link: &str,
    ) {
        net.borrow_and_update();
        loop {
            if net.changed().await.is_err() {
                return std::future::pending::<()>().await;
            }
            if !self.probe(deadline).await {
                return;
            }
            tracing::info!(link, "network changed; the server still answers");
        }
    }

    /// Runs -W to the end.
    pub async fn stdio(&self, host: &str, port: u16) -> Result<(), ClientError> {
        Ok(stdio::run(&self.handle, host, port, &self.ctx).await?)
    }

    /// Resolves when the session has ended (server gone, keepalive timeout) or shutdown was
    /// requested; tells which.
    pub async fn ended(&self) -> Option<EndReason> {
        tokio::select! {
            () = self.events.ended.cancelled() => self.events.reason(),
            () = self.shutdown.cancelled() => None,
        }
    }

    /// Stops every forward (waiting briefly for transfers to wind down) and disconnects.
    pub async fn close(self) {
        self.shutdown.cancel();
        self.ctx.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ctx.tracker.wait()).await;
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        drop(self.hops);
    }
}

/// Runs a `burrow ssh` invocation to the end; returns the exit status.
pub async fn run(opts: ClientOptions, ready: background::Ready) -> Result<u8, ClientError> {
    if let Some(plan) = roam::Plan::for_options(&opts) {
        return roam::run(opts, plan, ready).await;
    }
    let session = Session::establish(&opts, CancellationToken::new()).await?;
    run_on(session, &opts, ready).await
}

/// Runs the invocation's work (-W, a command, or forwards until the end) on an established
/// session, then closes it; returns the exit status.
pub(crate) async fn run_on(
    session: Session,
    opts: &ClientOptions,
    mut ready: background::Ready,
) -> Result<u8, ClientError> {
    session.log_stats_on_sigusr1();
    // -W carries stdin/stdout alone: no forwards, as ssh(1).
    if opts.stdio_forward.is_none() {
        session.start_forwards(opts).await?;
        ready.signal();
    }
    let code = match work::own_work(&session, opts).await? {
        Some(code) => code,
        None => wait_for_end(opts, &session).await,
    };
    session.close().await;
    Ok(code)
}

/// The session channel request for `opts`: ssh(1)'s PTY decision and the environment to send.
pub fn session_request(opts: &ClientOptions) -> session_channel::SessionRequest {
    let command = (!opts.command.is_empty()).then(|| opts.command.join(" "));
    let pty = match opts
        .session
        .request_tty
        .decide(command.is_some(), tty::stdin_is_tty())
    {
        TtyDecision::Allocate => true,
        TtyDecision::None => false,
        TtyDecision::NotATerminal => {
            tracing::info!(
                "Pseudo-terminal will not be allocated because stdin is not a terminal."
            );
            false
        }
    };
    session_channel::SessionRequest {
        command,
        pty,
        env: opts.session.environment(std::env::vars()),
        escape_char: opts.session.escape_char,
        host: opts.hostname.clone(),
    }
}

/// For a local listen port of 0, tells which port the system chose, in the words ssh(1) uses for
/// remote forwards (burrow extension: ssh prints nothing for `-L 0:...`).
fn report_allocated(listen: &crate::spec::Listen, bound: &[String], what: &str) {
    if !matches!(listen, crate::spec::Listen::Tcp { port: 0, .. }) {
        return;
    }
    let port = bound
        .first()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port());
    if let Some(port) = port {
        tracing::info!("Allocated port {port} for {what}");
    }
}

/// Prints ssh(1)'s message for a session the server side ended; returns the exit status.
pub fn report_end(opts: &ClientOptions, reason: Option<EndReason>) -> u8 {
    tracing::error!("{}", end_message(&opts.hostname, reason.as_ref()));
    EXIT_FAILURE
}

/// ssh(1)'s words for why a session ended. A transport error of our own (a protocol violation,
/// a failed decryption, a limit) names itself: "closed by remote host" for it sent the search
/// for a lost session to the wrong side.
fn end_message(host: &str, reason: Option<&EndReason>) -> String {
    match reason {
        Some(EndReason::KeepaliveTimeout) => format!("Timeout, server {host} not responding."),
        Some(EndReason::Error(e)) => format!("Connection to {host} lost: {e}"),
        Some(EndReason::Disconnected(_) | EndReason::Closed) | None => {
            format!("Connection to {host} closed by remote host.")
        }
    }
}

/// Waits for the session to end or a signal; prints ssh(1)'s message and returns the status.
async fn wait_for_end(opts: &ClientOptions, session: &Session) -> u8 {
    let mut stop = work::StopSignals::install();
    tokio::select! {
        reason = session.ended() => report_end(opts, reason),
        () = stop.recv() => EXIT_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_our_side_ended_names_the_error_not_the_server() {
        // What burrow ssh printed when russh ended the session over a rekey (see
        // tests/stress.rs): the error, not "closed by remote host".
        let lost = EndReason::Error("Pending buffer limit reached".into());
        assert_eq!(
            end_message("relay", Some(&lost)),
            "Connection to relay lost: Pending buffer limit reached"
        );
        for closed in [EndReason::Closed, EndReason::Disconnected("bye".into())] {
            assert_eq!(
                end_message("relay", Some(&closed)),
                "Connection to relay closed by remote host."
            );
        }
        assert_eq!(
            end_message("relay", Some(&EndReason::KeepaliveTimeout)),
            "Timeout, server relay not responding."
        );
    }
}
