//! Roaming: `burrow ssh` sessions through a burrow relay survive the loss of C's link to it.
//!
//! When the server that carries the invocation's stream is a burrow relay (`burrow serve`,
//! detected as `burrow up` does it: the resumable-streams subsystem is accepted), that stream is
//! a resumable stream ([`crate::resume`]):
//!
//! - `-W host:port` ([`Plan::Stdio`]): stdin/stdout is the stream's application end, so
//!   `ssh -o ProxyCommand='burrow ssh -W %h:%p c@relay' a-host` roams;
//! - `-J relay dest` ([`Plan::Jump`]): the last jump hop's channel to the destination; the
//!   destination session runs over an in-memory pipe whose far end the stream carries;
//! - `-N` with -L, -D or -R ([`Plan::Forwards`]): each forwarded connection, as under
//!   `burrow up`; the forwards are set up again on every new session.
//!
//! When the link breaks (the session ends, keepalives or our own probes go unanswered, or a
//! netlink address/route change finds the relay silent) burrow reconnects to the relay with
//! backoff, at once on the next network change, and the stream re-attaches: the SSH session
//! inside it sees a pause, never a reset. Against a plain sshd nothing is negotiated and
//! everything is ssh(1)'s: a dead link ends the session.
//!
//! A relay that stays unreachable for longer than [`GRACE`] ends the invocation with
//! [`RoamError::RelayGone`]; a relay that comes back but has expired the stream on its own
//! clock (its `resume_grace_secs`) ends -W and -J with [`RoamError::Forgotten`] at once (with
//! -N only that connection ends). Either way the exit status is 255 and nothing hangs: the
//! stream's application end is closed too.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{background, handler::EndReason, run_on, ClientError, Session};
use crate::config::options::ClientOptions;
use crate::config::tunnels::DEFAULT_RESUME_GRACE;
use crate::resume::{BoxedIo, ChannelSpec, FirstBytes, OpenError, Registry, ResumeConfig};

/// How long the stream waits for the relay to come back: the relay's own default grace, so
/// neither side gives up on a stream the other still keeps (with default settings).
pub const GRACE: Duration = DEFAULT_RESUME_GRACE;
/// After a network change, how long the relay has to answer before the link counts as dead.
const CHANGE_PROBE: Duration = Duration::from_secs(3);
/// Without ServerAliveInterval, how often the link is probed, and how long an answer may take
/// (a busy link queues the probe behind data).
const PROBE_EVERY: Duration = Duration::from_secs(10);
const PROBE_DEADLINE: Duration = Duration::from_secs(15);
/// Reconnect delays: doubling from the first, capped (the grace is short; a network change
/// cuts any delay short).
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(8);
/// One reconnect attempt (TCP, handshake, authentication) at most.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(20);
/// How long a finished invocation lets its stream deliver the last bytes (the inner session's
/// disconnect message) before the link is closed.
const DRAIN: Duration = Duration::from_secs(2);

/// Which stream of the invocation roams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// `-W`: stdin/stdout through the destination (the relay).
    Stdio,
    /// `-J`: the destination session's transport through the last jump host (the relay).
    Jump,
    /// `-N` with forwards: every forwarded connection through the destination (the relay).
    Forwards,
}

impl Plan {
    /// The plan for `opts`, None when nothing in the invocation can roam.
    pub fn for_options(opts: &ClientOptions) -> Option<Plan> {
        if opts.stdio_forward.is_some() {
            Some(Plan::Stdio)
        } else if !opts.jump_hosts.is_empty() {
            Some(Plan::Jump)
        } else if opts.no_command
            && !(opts.local_forwards.is_empty()
                && opts.dynamic_forwards.is_empty()
                && opts.remote_forwards.is_empty())
        {
            Some(Plan::Forwards)
        } else {
            None
        }
    }
}

/// Why a roaming invocation ended without finishing its work.
#[derive(Debug, thiserror::Error)]
pub enum RoamError {
    /// The relay could not be reached again within the grace period.
    #[error(
        "relay {relay}: unreachable for longer than the resume grace ({grace_s} s); lost \
         {target} (last error: {last})"
    )]
    RelayGone {
        /// The relay, `user@host:port`.
        relay: String,
        /// What the stream carried.
        target: String,
        /// The grace period.
        grace_s: u64,
        /// Why the last reconnect failed.
        last: String,
    },
    /// The relay came back without the stream: it expired there first.
    #[error(
        "relay {relay}: it no longer holds {target} (we were away longer than the relay's \
         resume grace); the connection is lost"
    )]
    Forgotten {
        /// The relay.
        relay: String,
        /// What the stream carried.
        target: String,
    },
    /// The relay refused us on reconnect (authentication, host key) or stopped offering
    /// resumable streams.
    #[error("relay {relay}: reconnect refused: {reason}; lost {target}")]
    Refused {
        /// The relay.
        relay: String,
        /// What the stream carried.
        target: String,
        /// Why.
        reason: String,
    },
}

/// Runs a `burrow ssh` invocation whose stream may roam; returns the exit status.
pub async fn run(
    opts: ClientOptions,
    plan: Plan,
    ready: background::Ready,
) -> Result<u8, ClientError> {
    match plan {
        Plan::Stdio => stdio(opts, ready).await,
        Plan::Jump => jump(opts, ready).await,
        Plan::Forwards => forwards(opts, ready).await,
    }
}

/// `-W`: the relay is the destination; stdin/stdout is the stream's application end.
async fn stdio(opts: ClientOptions, ready: background::Ready) -> Result<u8, ClientError> {
    let Some((host, port)) = opts.stdio_forward.clone() else {
        return Err(ClientError::Unsupported("-W without a target".into()));
    };
    let link = Link::connect(&opts, format!("the stream to {host}:{port}")).await?;
    if !link.resumable() {
        return run_on(link.into_session()?, &opts, ready).await;
    }
    let local = Box::new(tokio::io::join(tokio::io::stdin(), tokio::io::stdout()));
    // ssh(1)'s words for a -W target the server cannot reach.
    let mut ended = link
        .open(&host, port, local)
        .await
        .map_err(|e| ClientError::Forward(format!("{e}\nstdio forwarding failed")))?;
    link.carry(async {
        tokio::select! {
            _ = &mut ended => {}
            () = hangup() => {
                // ssh(1) sends its ProxyCommand SIGHUP as it exits, just before our stdin and
                // stdout close: let the stream finish (FIN, or ABORT for what can no longer be
                // delivered) so the relay closes its end now instead of after its grace.
                let _ = tokio::time::timeout(DRAIN, &mut ended).await;
            }
        }
        Ok(0)
    })
    .await
}

/// Resolves on SIGHUP or SIGTERM (never, if neither can be watched).
async fn hangup() {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::select! {
        () = one_signal(signal(SignalKind::hangup()).ok()) => {}
        () = one_signal(signal(SignalKind::terminate()).ok()) => {}
    }
}

async fn one_signal(signal: Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// `-J`: the last jump host is the relay; the destination session runs over its stream.
async fn jump(opts: ClientOptions, ready: background::Ready) -> Result<u8, ClientError> {
    let (relay, dest) = split_last_hop(&opts);
    let target = format!("the stream to {}:{}", dest.hostname, dest.port);
    let link = Link::connect(&relay, target).await?;
    if !link.resumable() {
        // ssh(1)'s -J: the destination's transport is the hop's channel, and dies with it.
        let channel = link.open_plain(&dest.hostname, dest.port).await?;
        let session =
            Session::establish_via(&dest, CancellationToken::new(), None, Some(channel)).await;
        let code = match session {
            Ok(session) => run_on(session, &dest, ready).await,
            Err(e) => Err(e),
        };
        link.close().await;
        return code;
    }
    let (near, far) = tokio::io::duplex(256 * 1024);
    let ended = link.open(&dest.hostname, dest.port, Box::new(far)).await?;
    link.carry(async {
        let session =
            Session::establish_via(&dest, CancellationToken::new(), None, Some(Box::new(near)))
                .await?;
        let code = run_on(session, &dest, ready).await;
        // The inner session's last bytes (its disconnect) still travel the stream.
        let _ = tokio::time::timeout(DRAIN, ended).await;
        code
    })
    .await
}

/// `-N` with forwards: the relay is the destination; each forwarded connection is a stream
/// (see [`crate::forward`]), and the forwards are set up again on each new session.
async fn forwards(opts: ClientOptions, mut ready: background::Ready) -> Result<u8, ClientError> {
    let mut link = Link::connect(&opts, "the forwarded connections".into()).await?;
    if !link.resumable() {
        return run_on(link.into_session()?, &opts, ready).await;
    }
    let session = link.session()?;
    session.log_stats_on_sigusr1();
    session.start_forwards(&opts).await?;
    link.forwards = true;
    ready.signal();
    link.carry(async {
        super::work::StopSignals::install().recv().await;
        Ok(super::EXIT_FAILURE)
    })
    .await
}

/// The options for the relay (the last jump host, reached through the hops before it) and for
/// the destination (no hops of its own: its transport is the relay's stream).
fn split_last_hop(opts: &ClientOptions) -> (ClientOptions, ClientOptions) {
    let mut hops = opts.jump_hosts.clone();
    let mut relay = hops.pop().unwrap_or_else(|| opts.clone());
    relay.jump_hosts = hops;
    let mut dest = opts.clone();
    dest.jump_hosts = Vec::new();
    (relay, dest)
}

/// The session to the relay, replaced by a new one whenever the link dies, and the stream
/// registry that outlives each of them.
struct Link {
    opts: ClientOptions,
    registry: Arc<Registry>,
    cancel: CancellationToken,
    session: Option<Session>,
    /// `user@host:port` of the relay, for messages.
    relay: String,
    /// What the stream carries, for messages.
    target: String,
    /// The invocation's forwards are set up on every new session, and a stream the relay
    /// forgot ends only its own connection.
    forwards: bool,
}

impl Link {
    /// Connects and authenticates to the relay and asks for resumable streams (a standard sshd
    /// refuses and the link stays a plain session).
    async fn connect(opts: &ClientOptions, target: String) -> Result<Link, ClientError> {
        let cancel = CancellationToken::new();
        let config = ResumeConfig {
            grace: GRACE,
            ..ResumeConfig::default()
        };
        let registry = Registry::new(config, cancel.child_token());
        let session =
            Session::establish_resumable(opts, CancellationToken::new(), Some(registry.clone()))
                .await?;
        // Reconnects must meet this relay again: its key, not whatever known_hosts and
        // StrictHostKeyChecking would let through (`no`, or a known_hosts of /dev/null,
        // accept any key), because a reconnect hands over the streams' re-attach secrets and
        // their bytes mid-session, unseen by the user.
        let mut opts = opts.clone();
        opts.pinned_host_key = session.host_key();
        let relay = format!("{}@{}:{}", opts.user, opts.hostname, opts.port);
        Ok(Link {
            opts,
            registry,
            cancel,
            session: Some(session),
            relay,
            target,
            forwards: false,
        })
    }

    fn resumable(&self) -> bool {
        self.session.as_ref().is_some_and(Session::resumable)
    }

    fn into_session(mut self) -> Result<Session, ClientError> {
        self.session
            .take()
            .ok_or_else(|| ClientError::Unsupported("no session to the relay".into()))
    }

    fn session(&self) -> Result<&Session, ClientError> {
        self.session
            .as_ref()
            .ok_or_else(|| ClientError::Unsupported("no session to the relay".into()))
    }

    /// A plain `direct-tcpip` channel to `host:port` (standard servers).
    async fn open_plain(&self, host: &str, port: u16) -> Result<BoxedIo, ClientError> {
        let channel = self
            .session()?
            .handle
            .channel_open_direct_tcpip(host.to_string(), u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| ClientError::Jump {
                host: host.to_string(),
                port,
                reason: crate::reason::open_failure_text(&e),
            })?;
        Ok(Box::new(channel.into_stream()))
    }

    /// Opens the resumable stream to `host:port` with `local` as its application end; the
    /// receiver completes when the stream has ended (done, failed or expired).
    async fn open(
        &self,
        host: &str,
        port: u16,
        local: BoxedIo,
    ) -> Result<oneshot::Receiver<()>, ClientError> {
        let session = self.session()?;
        let channel = self.open_plain(host, port).await?;
        let spec = ChannelSpec::Direct {
            host: host.to_string(),
            port: u32::from(port),
            orig: "127.0.0.1".into(),
            orig_port: 0,
        };
        let opened = self
            .registry
            // `-W`'s exit status and message say whether the target answered.
            .open(channel, spec, FirstBytes::AfterReply)
            .await
            .map_err(|e| ClientError::Jump {
                host: host.to_string(),
                port,
                reason: match e {
                    OpenError::ConnectFailed(reason) => format!("connect failed: {reason}"),
                    other => other.to_string(),
                },
            })?;
        let (ended_tx, ended_rx) = oneshot::channel::<()>();
        opened.run(local, session.counters(), ended_tx);
        Ok(ended_rx)
    }

    /// Runs `work` while keeping the link up; then closes the link. The work's result, unless
    /// the stream was lost (the relay stayed away, refused us, or forgot the stream).
    async fn carry(
        mut self,
        work: impl Future<Output = Result<u8, ClientError>>,
    ) -> Result<u8, ClientError> {
        let net = crate::netwatch::spawn(self.cancel.clone());
        let result = tokio::select! {
            r = work => r,
            e = self.keep(net) => Err(e.into()),
        };
        let stats = &self.registry.stats;
        let lost = if self.forwards {
            None
        } else if stats.forgotten.load(Ordering::Relaxed) > 0 {
            Some(RoamError::Forgotten {
                relay: self.relay.clone(),
                target: self.target.clone(),
            })
        } else if stats.expired.load(Ordering::Relaxed) > 0 {
            Some(RoamError::RelayGone {
                relay: self.relay.clone(),
                target: self.target.clone(),
                grace_s: GRACE.as_secs(),
                last: "the stream expired while waiting".into(),
            })
        } else {
            None
        };
        self.close().await;
        match (lost, result) {
            (_, Err(ClientError::Roam(e))) => Err(e.into()),
            (Some(e), _) => Err(e.into()),
            (None, r) => r,
        }
    }

    /// Holds the link: whenever it dies, reconnects (the streams re-attach on their own once
    /// the registry has the new session). Returns only when it gives up.
    async fn keep(&mut self, mut net: watch::Receiver<u64>) -> RoamError {
        loop {
            let why = match &self.session {
                Some(session) => {
                    lost(
                        session,
                        &mut net,
                        self.opts.server_alive_interval,
                        &self.relay,
                    )
                    .await
                }
                None => "no session".into(),
            };
            tracing::info!(relay = %self.relay, reason = %why, "link to the relay lost; reconnecting");
            self.registry.set_opener(None);
            if let Some(old) = self.session.take() {
                // Its transport may hang on a dead path: close it aside.
                tokio::spawn(old.close());
            }
            match self.reconnect(&mut net, why).await {
                Ok(session) => {
                    tracing::info!(relay = %self.relay, "reconnected to the relay; streams re-attach");
                    self.session = Some(session);
                }
                Err(e) => return e,
            }
        }
    }

    /// Reconnects within the grace period, with backoff; at once after a network change.
    async fn reconnect(
        &self,
        net: &mut watch::Receiver<u64>,
        mut last: String,
    ) -> Result<Session, RoamError> {
        let deadline = Instant::now() + GRACE;
        let mut delay = RETRY_FIRST;
        loop {
            if !self.forwards && self.registry.stats.forgotten.load(Ordering::Relaxed) > 0 {
                return Err(RoamError::Forgotten {
                    relay: self.relay.clone(),
                    target: self.target.clone(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RoamError::RelayGone {
                    relay: self.relay.clone(),
                    target: self.target.clone(),
                    grace_s: GRACE.as_secs(),
                    last,
                });
            }
            let attempt = Session::establish_resumable(
                &self.opts,
                CancellationToken::new(),
                Some(self.registry.clone()),
            );
            match tokio::time::timeout(ATTEMPT_LIMIT.min(left), attempt).await {
                Ok(Ok(session)) if session.resumable() => {
                    if !self.forwards {
                        return Ok(session);
                    }
                    session.log_stats_on_sigusr1();
                    match session.start_forwards(&self.opts).await {
                        Ok(_) => return Ok(session),
                        Err(e) => {
                            session.close().await;
                            return Err(self.refused(format!("forwards: {e}")));
                        }
                    }
                }
                Ok(Ok(session)) => {
                    session.close().await;
                    return Err(self.refused("it no longer offers resumable streams".into()));
                }
                Ok(Err(
                    e @ (ClientError::PermissionDenied { .. } | ClientError::HostKeyVerification),
                )) => return Err(self.refused(e.to_string())),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".into(),
            }
            tracing::debug!(relay = %self.relay, error = %last, retry_ms = delay.as_millis() as u64, "reconnect failed");
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                () = tokio::time::sleep(delay.min(left)) => {}
                // A new address or route may be the way back: try now.
                _ = net.changed() => {}
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    fn refused(&self, reason: String) -> RoamError {
        RoamError::Refused {
            relay: self.relay.clone(),
            target: self.target.clone(),
            reason,
        }
    }

    /// Ends the streams and the session to the relay.
    async fn close(mut self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(DRAIN, self.registry.wait()).await;
        let resumable = self.resumable();
        if let Some(session) = self.session.take() {
            if resumable {
                // A stream's last frame (its final ACK) may still be queued on the session:
                // one answered keepalive means the relay has read it, so its side of the
                // stream ends now instead of waiting out its grace.
                session.probe(DRAIN).await;
            }
            session.close().await;
        }
    }
}

/// Resolves with why the link to the relay is dead: the session ended (server gone,
/// ServerAliveInterval's keepalives), a network change found the relay silent, or (without
/// ServerAliveInterval) a periodic probe went unanswered.
async fn lost(
    session: &Session,
    net: &mut watch::Receiver<u64>,
    server_alive: Option<Duration>,
    relay: &str,
) -> String {
    let network = session.silent_after_network_change(net, CHANGE_PROBE, relay);
    let silent = async {
        if server_alive.is_some_and(|d| !d.is_zero()) {
            // russh's keepalives end the session: `ended` reports it.
            return std::future::pending::<()>().await;
        }
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            if !session.probe(PROBE_DEADLINE).await {
                return;
            }
        }
    };
    tokio::select! {
        reason = session.ended() => match reason {
            Some(EndReason::KeepaliveTimeout) => "keepalive timeout".into(),
            Some(EndReason::Disconnected(m)) => format!("disconnected by the relay: {m}"),
            Some(EndReason::Error(e)) => format!("connection lost: {e}"),
            Some(EndReason::Closed) => "connection closed by the relay".into(),
            None => "session ended".into(),
        },
        () = network => "network changed and the relay stopped answering".into(),
        () = silent => "the relay stopped answering probes".into(),
    }
}
