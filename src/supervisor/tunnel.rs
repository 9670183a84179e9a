//! One tunnel's life: connect to the first reachable relay, set up its forwards, wait for the
//! session to end (keepalives notice a dead link within seconds), back off, and do it again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::backoff::Retry;
use super::reach;
use super::status::{LiveForward, State, TunnelStatus};
use crate::client::forwards::bind_options;
use crate::client::{ClientError, Session};
use crate::config::options::{ConfigPaths, OptionsError};
use crate::config::tunnels::{Forward, Plan, TunnelSpec};
use crate::pipe::Counters;
use crate::resume::{Registry, ResumeConfig};

/// How often a tunnel that fell back to a later relay checks whether the first one is back.
const PRIMARY_CHECK: Duration = Duration::from_secs(30);
/// After a network change, how long the relay has to answer a keepalive before we reconnect.
const CHANGE_PROBE: Duration = Duration::from_secs(3);

/// The tunnel stopped retrying (exit_after_failures reached).
#[derive(Debug, thiserror::Error)]
#[error("tunnel {name}: giving up after {failures} consecutive failures; last error: {last_error}")]
pub struct GaveUp {
    /// Tunnel name.
    pub name: String,
    /// Failures counted.
    pub failures: u64,
    /// The last error.
    pub last_error: String,
}

enum Attempt {
    /// Shutdown or reload stopped the tunnel.
    Cancelled,
    /// A session was up for `uptime` and then ended.
    Ended { uptime: Duration, reason: String },
    /// No session came up; `permanent` failures (authentication, host key, config) are not
    /// worth retrying soon.
    Failed { error: String, permanent: bool },
}

/// How waiting for the next attempt ended.
enum Waited {
    /// Relay `index` answered a probe: connect to it.
    Go(usize),
    /// Shutdown or reload.
    Cancelled,
    /// No relay answered and `exit_after_failures` was reached.
    GaveUp(GaveUp),
    /// Every relay closed its probe: an answered failure (the caller pauses).
    Refused(String),
}

/// Runs the tunnel until `cancel` (Ok) or until it gives up (Err).
pub async fn run(
    spec: TunnelSpec,
    status: Arc<TunnelStatus>,
    cancel: CancellationToken,
    mut net: watch::Receiver<u64>,
) -> Result<(), GaveUp> {
    let mut retry = Retry::new(spec.backoff_initial, spec.backoff_max);
    // One stream registry for the tunnel's whole life: streams outlive each session.
    let resume = spec.resume.then(|| {
        let config = ResumeConfig {
            grace: spec.resume_grace,
            ..ResumeConfig::default()
        };
        Registry::with_stats(config, cancel.child_token(), status.resume_stats())
    });
    let mut plans = Plans::new(&spec);
    let mut pause = Duration::ZERO;
    loop {
        let waited = wait(
            &spec, &mut plans, &status, &cancel, &mut net, &mut retry, pause,
        )
        .await;
        let outcome = match waited {
            Waited::Cancelled => Attempt::Cancelled,
            Waited::GaveUp(g) => return Err(g),
            Waited::Refused(error) => Attempt::Failed {
                error,
                permanent: false,
            },
            Waited::Go(index) => match plans.get(index) {
                Ok(plan) => {
                    let resume = resume.as_ref();
                    attempt(&spec, index, &plan, &status, &cancel, &mut net, resume).await
                }
                Err(e) => Attempt::Failed {
                    error: e.to_string(),
                    permanent: true,
                },
            },
        };
        pause = match outcome {
            Attempt::Cancelled => {
                status.set(State::Stopped);
                return Ok(());
            }
            Attempt::Ended { uptime, reason } => {
                tracing::warn!(tunnel = %spec.name, %reason, uptime_s = uptime.as_secs(), "tunnel down");
                status.down(&reason);
                retry.ended(uptime)
            }
            Attempt::Failed { error, permanent } => {
                tracing::warn!(tunnel = %spec.name, %error, permanent, "connection attempt failed");
                status.failed(&error);
                if let Some(g) = gave_up(&spec, &status, &error) {
                    return Err(g);
                }
                retry.failed(permanent)
            }
        };
        status.set(State::Backoff);
    }
}

/// `exit_after_failures` reached: the tunnel is marked failed.
fn gave_up(spec: &TunnelSpec, status: &TunnelStatus, error: &str) -> Option<GaveUp> {
    let failures = status.failures();
    if spec.exit_after_failures > 0 && failures >= u64::from(spec.exit_after_failures) {
        status.set(State::Failed);
        return Some(GaveUp {
            name: spec.name.clone(),
            failures,
            last_error: error.to_string(),
        });
    }
    None
}

/// The tunnel resolved for each relay, once: a relay's [`Plan`] is built the first time it is
/// needed and kept for the tunnel's life (a reload that changes the tunnel starts it afresh),
/// so no attempt parses options again. A relay whose resolution failed (a broken ssh_config,
/// say) is resolved again the next time, so fixing the file is enough.
struct Plans<'a> {
    spec: &'a TunnelSpec,
    paths: ConfigPaths,
    resolved: Vec<Option<Arc<Plan>>>,
}

impl<'a> Plans<'a> {
    fn new(spec: &'a TunnelSpec) -> Self {
        Self {
            spec,
            paths: ConfigPaths::for_args(spec.ssh_config.as_deref()),
            resolved: vec![None; spec.servers.len()],
        }
    }

    /// Relay `index`'s plan.
    fn get(&mut self, index: usize) -> Result<Arc<Plan>, OptionsError> {
        if let Some(Some(plan)) = self.resolved.get(index) {
            return Ok(plan.clone());
        }
        let plan = Arc::new(self.spec.plan(index, &self.paths)?);
        if let Some(slot) = self.resolved.get_mut(index) {
            *slot = Some(plan.clone());
        }
        Ok(plan)
    }
}

/// Waits `pause` (a network change cuts it short), then probes the relays until one answers
/// with its SSH banner (see [`reach`]). Each backoff step without an answer counts as a failed
/// attempt, so `burrow status` and `exit_after_failures` see an unreachable relay as before.
async fn wait(
    spec: &TunnelSpec,
    plans: &mut Plans<'_>,
    status: &TunnelStatus,
    cancel: &CancellationToken,
    net: &mut watch::Receiver<u64>,
    retry: &mut Retry,
    pause: Duration,
) -> Waited {
    if !pause.is_zero() {
        tracing::info!(tunnel = %spec.name, delay_ms = pause.as_millis() as u64, "reconnecting after a pause");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            // A new address or route may be the way back: probe now.
            _ = net.changed() => {}
            () = cancel.cancelled() => return Waited::Cancelled,
        }
    }
    let targets: Vec<(String, u16)> = (0..spec.servers.len())
        .map(|i| first_hop(spec, plans, i))
        .collect();
    let dial_targets = targets.clone();
    let mut prober = reach::Prober::new(
        targets.len(),
        move |i: usize| {
            let (host, port) = dial_targets.get(i).cloned().unwrap_or_default();
            reach::dial_tcp(host, port)
        },
        reach::read_banner,
    );
    let last_error = prober.last_error();
    let probing = prober.until_answer(net);
    let mut probing = std::pin::pin!(probing);
    let step = tokio::time::sleep(retry.unanswered());
    let mut step = std::pin::pin!(step);
    let answer = loop {
        tokio::select! {
            a = &mut probing => break a,
            () = &mut step => {
                let error = format!("relay not answering: {}", last_error.get());
                tracing::warn!(tunnel = %spec.name, %error, "still waiting for the relay");
                status.failed(&error);
                status.set(State::Backoff);
                if let Some(g) = gave_up(spec, status, &error) {
                    return Waited::GaveUp(g);
                }
                step.as_mut().reset(tokio::time::Instant::now() + retry.unanswered());
            }
            () = cancel.cancelled() => return Waited::Cancelled,
        }
    };
    match answer {
        reach::Answer::Banner(i) => {
            tracing::debug!(tunnel = %spec.name, server = %server_label(spec, i), "relay answers");
            Waited::Go(i)
        }
        reach::Answer::Closed(e) => Waited::Refused(e),
    }
}

/// Where a connection to relay `index` starts: the first jump host, or the relay itself, as
/// ssh_config resolves it (HostName, Port, ProxyJump). The relay as written if resolving fails
/// (the attempt then reports why).
fn first_hop(spec: &TunnelSpec, plans: &mut Plans<'_>, index: usize) -> (String, u16) {
    match plans.get(index) {
        Ok(plan) => {
            let opts = &plan.opts;
            let hop = opts.jump_hosts.first().unwrap_or(opts);
            (hop.hostname.clone(), hop.port)
        }
        Err(_) => {
            let s = spec.servers.get(index);
            (
                s.map(|s| s.host.clone()).unwrap_or_default(),
                s.and_then(|s| s.port).unwrap_or(22),
            )
        }
    }
}

/// Connects to relay `index` (the one that answered), and holds the session while it lasts.
async fn attempt(
    spec: &TunnelSpec,
    index: usize,
    plan: &Plan,
    status: &TunnelStatus,
    cancel: &CancellationToken,
    net: &mut watch::Receiver<u64>,
    resume: Option<&Arc<Registry>>,
) -> Attempt {
    let server = server_label(spec, index);
    status.connecting(&server);
    let connected = tokio::select! {
        r = connect(spec, plan, resume.cloned()) => r,
        () = cancel.cancelled() => return Attempt::Cancelled,
    };
    match connected {
        Ok(session) => hold(spec, index, session, status, cancel, net).await,
        Err(failure) => failure.into_attempt(),
    }
}

enum Failure {
    /// TCP or handshake trouble: try the next relay.
    Unreachable(String),
    /// The relay answered but refused us, or the config is wrong.
    Refused(String),
    /// Up but a forward could not be set up.
    Other(String),
}

impl Failure {
    fn into_attempt(self) -> Attempt {
        match self {
            Failure::Unreachable(error) | Failure::Other(error) => Attempt::Failed {
                error,
                permanent: false,
            },
            Failure::Refused(error) => Attempt::Failed {
                error,
                permanent: true,
            },
        }
    }
}

async fn connect(
    spec: &TunnelSpec,
    plan: &Plan,
    resume: Option<Arc<Registry>>,
) -> Result<(Session, Vec<LiveForward>), Failure> {
    let opts = &plan.opts;
    let deadline = spec.connect_timeout.saturating_mul(3) + Duration::from_secs(5);
    let session = match tokio::time::timeout(
        deadline,
        Session::establish_resumable(opts, CancellationToken::new(), resume),
    )
    .await
    {
        Err(_) => return Err(Failure::Unreachable("timed out connecting".into())),
        Ok(Err(e)) => return Err(classify(e)),
        Ok(Ok(s)) => s,
    };
    match start_forwards(&session, plan).await {
        Ok(up) => Ok((session, up)),
        Err(e) => {
            session.close().await;
            Err(Failure::Other(e))
        }
    }
}

/// Sets up every forward of `plan`, each reported with its own label and counters (a tunnel
/// runs with ExitOnForwardFailure: the first that fails ends the attempt). The label travels
/// with the forward, so a `LocalForward`/`RemoteForward`/`DynamicForward` that a matching
/// ssh_config Host block adds never shifts another forward's label or counters.
async fn start_forwards(session: &Session, plan: &Plan) -> Result<Vec<LiveForward>, String> {
    let bind = bind_options(&plan.opts);
    let mut up = Vec::with_capacity(plan.forwards.len());
    for planned in &plan.forwards {
        let forward = planned.forward.to_string();
        let listening = |(bound, c): (Vec<String>, Arc<Counters>)| {
            (format!("{forward} (listening on {})", bound.join(", ")), c)
        };
        let (spec, counters) = match &planned.forward {
            Forward::Local(f) => session
                .open_local(f, bind)
                .await
                .map(listening)
                .map_err(|e| e.to_string())?,
            Forward::Dynamic(f) => session
                .open_dynamic(f, bind)
                .await
                .map(listening)
                .map_err(|e| e.to_string())?,
            Forward::Remote(f) => {
                let (port, c) = session
                    .open_remote_proxied(f, planned.proxy_protocol)
                    .await
                    .map_err(|e| format!("Error: {e}"))?;
                match port {
                    0 => (forward.clone(), c),
                    port => (format!("{forward} (relay port {port})"), c),
                }
            }
        };
        up.push(LiveForward {
            forward,
            spec,
            counters,
        });
    }
    Ok(up)
}

fn classify(e: ClientError) -> Failure {
    match e {
        ClientError::PermissionDenied { .. } | ClientError::HostKeyVerification => {
            Failure::Refused(e.to_string())
        }
        ClientError::Unsupported(_) => Failure::Refused(e.to_string()),
        other => Failure::Unreachable(other.to_string()),
    }
}

/// Keeps an established session until it ends, shutdown, or (on a fallback relay) the first
/// relay is reachable again.
async fn hold(
    spec: &TunnelSpec,
    index: usize,
    (session, forwards): (Session, Vec<LiveForward>),
    status: &TunnelStatus,
    cancel: &CancellationToken,
    net: &mut watch::Receiver<u64>,
) -> Attempt {
    let labels: Vec<&str> = forwards.iter().map(|f| f.spec.as_str()).collect();
    tracing::info!(tunnel = %spec.name, server = %server_label(spec, index), forwards = ?labels, "tunnel up");
    status.up(session.counters(), forwards);
    let started = Instant::now();
    let primary_back = async {
        if index == 0 {
            return std::future::pending::<()>().await;
        }
        loop {
            tokio::time::sleep(PRIMARY_CHECK).await;
            if primary_reachable(spec).await {
                return;
            }
        }
    };
    let network_lost = session.silent_after_network_change(net, CHANGE_PROBE, &spec.name);
    let outcome = tokio::select! {
        () = network_lost => Attempt::Ended {
            uptime: started.elapsed(),
            reason: "network changed and the relay stopped answering".into(),
        },
        reason = session.ended() => Attempt::Ended {
            uptime: started.elapsed(),
            reason: match reason {
                Some(crate::client::handler::EndReason::KeepaliveTimeout) => "keepalive timeout: the relay stopped answering".into(),
                Some(crate::client::handler::EndReason::Disconnected(m)) => format!("disconnected by the relay: {m}"),
                Some(crate::client::handler::EndReason::Error(e)) => format!("connection lost: {e}"),
                Some(crate::client::handler::EndReason::Closed) => "the relay closed the connection".into(),
                None => "session ended".into(),
            },
        },
        () = cancel.cancelled() => Attempt::Cancelled,
        () = primary_back => Attempt::Ended {
            uptime: started.elapsed(),
            reason: "returning to the first relay".into(),
        },
    };
    session.close().await;
    outcome
}

/// `user@host:port` of relay `index`, for status and logs.
fn server_label(spec: &TunnelSpec, index: usize) -> String {
    spec.servers
        .get(index)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "-".into())
}

/// Whether the first relay accepts TCP connections again (a cheap check before moving back).
async fn primary_reachable(spec: &TunnelSpec) -> bool {
    let Some(s) = spec.servers.first() else {
        return false;
    };
    let dial = tokio::net::TcpStream::connect((s.host.as_str(), s.port.unwrap_or(22)));
    matches!(
        tokio::time::timeout(Duration::from_secs(3), dial).await,
        Ok(Ok(_))
    )
}
