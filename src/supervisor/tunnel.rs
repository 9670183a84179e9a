//! One tunnel's life: connect to the first reachable relay, set up its forwards, wait for the
//! session to end (keepalives notice a dead link within seconds), back off, and do it again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::backoff::{Backoff, STABLE_AFTER};
use super::status::{State, TunnelStatus};
use crate::client::{ClientError, Established, Session};
use crate::config::options::{self, ConfigPaths};
use crate::config::tunnels::TunnelSpec;
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
    /// A session was up for `uptime` and then ended; `immediate` skips the backoff pause (the
    /// network changed: the old path is gone, a new one is likely there already).
    Ended {
        uptime: Duration,
        reason: String,
        immediate: bool,
    },
    /// No session came up; `permanent` failures (authentication, host key, config) are not
    /// worth retrying soon.
    Failed { error: String, permanent: bool },
}

/// Runs the tunnel until `cancel` (Ok) or until it gives up (Err).
pub async fn run(
    spec: TunnelSpec,
    status: Arc<TunnelStatus>,
    cancel: CancellationToken,
    mut net: watch::Receiver<u64>,
) -> Result<(), GaveUp> {
    let mut backoff = Backoff::new(spec.backoff_initial, spec.backoff_max);
    // One stream registry for the tunnel's whole life: streams outlive each session.
    let resume = spec.resume.then(|| {
        let config = ResumeConfig {
            grace: spec.resume_grace,
            ..ResumeConfig::default()
        };
        Registry::with_stats(config, cancel.child_token(), status.resume_stats())
    });
    loop {
        match attempt(&spec, &status, &cancel, &mut net, resume.as_ref()).await {
            Attempt::Cancelled => {
                status.set(State::Stopped);
                return Ok(());
            }
            Attempt::Ended {
                uptime,
                reason,
                immediate,
            } => {
                tracing::warn!(tunnel = %spec.name, %reason, uptime_s = uptime.as_secs(), "tunnel down");
                status.down(&reason);
                if uptime >= STABLE_AFTER {
                    backoff.reset();
                }
                if immediate {
                    continue;
                }
            }
            Attempt::Failed { error, permanent } => {
                tracing::warn!(tunnel = %spec.name, %error, permanent, "connection attempt failed");
                status.failed(&error);
                if permanent {
                    backoff.to_cap();
                }
                let failures = status.failures();
                if spec.exit_after_failures > 0 && failures >= u64::from(spec.exit_after_failures) {
                    status.set(State::Failed);
                    return Err(GaveUp {
                        name: spec.name.clone(),
                        failures,
                        last_error: error,
                    });
                }
            }
        }
        status.set(State::Backoff);
        let delay = backoff.next_delay();
        tracing::info!(tunnel = %spec.name, delay_ms = delay.as_millis() as u64, "reconnecting after a pause");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            // A new address or route may be the way back: try now.
            _ = net.changed() => {}
            () = cancel.cancelled() => {
                status.set(State::Stopped);
                return Ok(());
            }
        }
    }
}

/// Tries each relay in order; the first that works carries the tunnel.
async fn attempt(
    spec: &TunnelSpec,
    status: &TunnelStatus,
    cancel: &CancellationToken,
    net: &mut watch::Receiver<u64>,
    resume: Option<&Arc<Registry>>,
) -> Attempt {
    let mut last = Attempt::Failed {
        error: "no server configured".into(),
        permanent: true,
    };
    for index in 0..spec.servers.len() {
        let server = server_label(spec, index);
        status.connecting(&server);
        let connected = tokio::select! {
            r = connect(spec, index, resume.cloned()) => r,
            () = cancel.cancelled() => return Attempt::Cancelled,
        };
        match connected {
            Ok(session) => return hold(spec, index, session, status, cancel, net).await,
            Err(failure) => {
                let unreachable = matches!(failure, Failure::Unreachable(_));
                last = failure.into_attempt();
                if !unreachable {
                    return last;
                }
            }
        }
    }
    last
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
    index: usize,
    resume: Option<Arc<Registry>>,
) -> Result<(Session, Vec<String>), Failure> {
    let args = spec.ssh_args(index);
    let paths = ConfigPaths::for_args(args.config_file.as_deref());
    let opts = options::resolve(&args, &paths).map_err(|e| Failure::Refused(e.to_string()))?;
    let deadline = spec.connect_timeout.saturating_mul(3) + Duration::from_secs(5);
    let session = match tokio::time::timeout(
        deadline,
        Session::establish_resumable(&opts, CancellationToken::new(), resume),
    )
    .await
    {
        Err(_) => return Err(Failure::Unreachable("timed out connecting".into())),
        Ok(Err(e)) => return Err(classify(e)),
        Ok(Ok(s)) => s,
    };
    match session.start_forwards(&opts).await {
        Ok(up) => Ok((session, describe_forwards(&args, &up))),
        Err(e) => {
            session.close().await;
            Err(Failure::Other(e.to_string()))
        }
    }
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
    (session, forwards): (Session, Vec<String>),
    status: &TunnelStatus,
    cancel: &CancellationToken,
    net: &mut watch::Receiver<u64>,
) -> Attempt {
    tracing::info!(tunnel = %spec.name, server = %server_label(spec, index), ?forwards, "tunnel up");
    let per_forward = forwards
        .iter()
        .cloned()
        .zip(session.forward_counters())
        .collect();
    status.up(session.counters(), per_forward);
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
    net.borrow_and_update();
    let network_lost = async {
        loop {
            if net.changed().await.is_err() {
                return std::future::pending::<()>().await;
            }
            if !session.probe(CHANGE_PROBE).await {
                return;
            }
            tracing::info!(tunnel = %spec.name, "network changed; relay still answers");
        }
    };
    let outcome = tokio::select! {
        () = network_lost => Attempt::Ended {
            uptime: started.elapsed(),
            reason: "network changed and the relay stopped answering".into(),
            immediate: true,
        },
        reason = session.ended() => Attempt::Ended {
            immediate: false,
            uptime: started.elapsed(),
            reason: match reason {
                Some(crate::client::handler::EndReason::KeepaliveTimeout) => "keepalive timeout: the relay stopped answering".into(),
                Some(crate::client::handler::EndReason::Disconnected(m)) => format!("disconnected by the relay: {m}"),
                Some(crate::client::handler::EndReason::Error(e)) => format!("connection lost: {e}"),
                None => "session ended".into(),
            },
        },
        () = cancel.cancelled() => Attempt::Cancelled,
        () = primary_back => Attempt::Ended {
            uptime: started.elapsed(),
            reason: "returning to the first relay".into(),
            immediate: true,
        },
    };
    session.close().await;
    outcome
}

/// One line per forward for status and logs: the spec and where it is up. `up` is in the order
/// `start_forwards` reports (local, dynamic, remote); every forward is in it, since tunnels run
/// with ExitOnForwardFailure.
fn describe_forwards(args: &crate::cli::SshArgs, up: &[Established]) -> Vec<String> {
    let specs = args
        .local
        .iter()
        .map(|s| ("-L", s))
        .chain(args.dynamic.iter().map(|s| ("-D", s)))
        .chain(args.remote.iter().map(|s| ("-R", s)));
    specs
        .zip(up)
        .map(|((flag, spec), e)| match e {
            Established::Local { bound } => {
                format!("{flag} {spec} (listening on {})", bound.join(", "))
            }
            Established::Remote { port: 0 } => format!("{flag} {spec}"),
            Established::Remote { port } => format!("{flag} {spec} (relay port {port})"),
        })
        .collect()
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
