//! `burrow up`: runs every tunnel of a tunnels file and keeps it up. Each tunnel is its own task
//! (see [`tunnel`]); this module owns them, reloads the file on SIGHUP or when it changes
//! (unchanged tunnels keep their connections), serves status and metrics, and talks to systemd.

pub mod backoff;
pub mod metrics;
pub mod notify;
pub mod reach;
pub mod status;
pub mod table;
pub mod tunnel;

/// Network change events (shared with `burrow ssh`'s roaming, which lives below this module).
pub use crate::netwatch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::tunnels::{self, TunnelSpec};
use crate::observe::ObserveConfig;
use status::{State, StatusBoard};
use tunnel::GaveUp;

/// How often the tunnels file is checked for changes.
const FILE_POLL: Duration = Duration::from_secs(2);

/// What `burrow up` was asked to do.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The tunnels file.
    pub file: PathBuf,
    /// The control socket for `burrow status`.
    pub control: PathBuf,
    /// Where to serve Prometheus metrics and the status page, if anywhere.
    pub metrics: Option<ObserveConfig>,
}

struct Running {
    fingerprint: String,
    cancel: CancellationToken,
}

/// The running tunnels and their tasks.
struct Supervisor {
    board: Arc<StatusBoard>,
    running: HashMap<String, Running>,
    tasks: JoinSet<(String, Result<(), GaveUp>)>,
    shutdown: CancellationToken,
    net: tokio::sync::watch::Receiver<u64>,
}

impl Supervisor {
    fn start(&mut self, spec: TunnelSpec) {
        let name = spec.name.clone();
        let status = self.board.tunnel(&name);
        let cancel = self.shutdown.child_token();
        self.running.insert(
            name.clone(),
            Running {
                fingerprint: spec.fingerprint(),
                cancel: cancel.clone(),
            },
        );
        tracing::info!(tunnel = %name, "starting tunnel");
        let net = self.net.clone();
        self.tasks
            .spawn(async move { (name, tunnel::run(spec, status, cancel, net).await) });
    }

    fn stop(&mut self, name: &str) {
        if let Some(r) = self.running.remove(name) {
            r.cancel.cancel();
        }
        self.board.remove(name);
    }

    /// Makes the running set match `specs`: new tunnels start, removed ones stop, changed ones
    /// restart, unchanged ones are left alone (their connections stay up).
    fn apply(&mut self, specs: Vec<TunnelSpec>) {
        let wanted: HashMap<String, TunnelSpec> =
            specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            tracing::info!(tunnel = %name, "removed from the file; stopping");
            self.stop(&name);
        }
        for (name, spec) in wanted {
            match self.running.get(&name) {
                Some(r) if r.fingerprint == spec.fingerprint() => {}
                Some(_) => {
                    tracing::info!(tunnel = %name, "changed in the file; restarting");
                    self.stop(&name);
                    self.start(spec);
                }
                None => self.start(spec),
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Runs until SIGINT/SIGTERM, or until a tunnel with `exit_after_failures` gives up (error).
pub async fn run(opts: UpOptions) -> anyhow::Result<()> {
    let file = tunnels::load(&opts.file)?;
    let shutdown = CancellationToken::new();
    let board = Arc::new(StatusBoard::default());
    let _control = status::serve_control(&opts.control, board.clone(), shutdown.clone())
        .with_context(|| format!("control socket {}", opts.control.display()))?;
    tracing::info!(control = %opts.control.display(), "status socket ready");
    let endpoint = match &opts.metrics {
        Some(config) => {
            let source: Arc<dyn crate::observe::Source> = board.clone();
            Some(crate::observe::start(config, source, shutdown.clone()).await?)
        }
        None => None,
    };
    let mut sup = Supervisor {
        board: board.clone(),
        running: HashMap::new(),
        tasks: JoinSet::new(),
        shutdown: shutdown.clone(),
        net: netwatch::spawn(shutdown.clone()),
    };
    sup.apply(file.tunnels);
    let result = supervise(&mut sup, &opts.file).await;
    notify::notify("STOPPING=1");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while sup.tasks.join_next().await.is_some() {}
        if let Some(e) = &endpoint {
            e.stopped().await;
        }
    })
    .await;
    result
}

async fn supervise(sup: &mut Supervisor, file: &Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut last_modified = modified(file);
    let mut poll = tokio::time::interval(FILE_POLL);
    let watchdog_every = notify::watchdog_interval();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let mut ready_sent = false;
    let mut readiness = tokio::time::interval(Duration::from_millis(200));
    let mut last_status = String::new();
    loop {
        tokio::select! {
            _ = hup.recv() => reload(sup, file, "SIGHUP", ready_sent),
            _ = poll.tick() => {
                let now = modified(file);
                if now != last_modified {
                    last_modified = now;
                    reload(sup, file, "file changed", ready_sent);
                }
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            Some(done) = sup.tasks.join_next() => match done {
                Ok((name, Err(gave_up))) => {
                    sup.running.remove(&name);
                    notify::notify(&format!("STATUS={gave_up}"));
                    return Err(gave_up.into());
                }
                Ok((name, Ok(()))) => tracing::debug!(tunnel = %name, "tunnel task finished"),
                Err(e) => tracing::error!(error = %e, "tunnel task failed"),
            },
            _ = watchdog.tick(), if watchdog_every.is_some() => notify::notify("WATCHDOG=1"),
            _ = readiness.tick() => {
                let all = sup.board.snapshot();
                let status = notify::status_line(&all, crate::observe::unix_secs());
                if status != last_status {
                    notify::notify(&format!("STATUS={status}"));
                    last_status = status;
                }
                if !ready_sent && !all.is_empty() && all.iter().all(|t| t.state == State::Up) {
                    ready_sent = true;
                    tracing::info!(tunnels = all.len(), "all tunnels up");
                    notify::notify("READY=1");
                }
            }
        }
    }
}

/// Re-reads the tunnels file. Once startup is over (READY sent), systemd hears RELOADING before
/// and READY after, so `systemctl reload` waits for it and `systemctl status` shows it.
fn reload(sup: &mut Supervisor, file: &Path, why: &str, ready_sent: bool) {
    if ready_sent {
        notify::notify(&notify::reloading_message());
    }
    match tunnels::load(file) {
        Ok(f) => {
            tracing::info!(reason = why, tunnels = f.tunnels.len(), "reloading tunnels");
            sup.apply(f.tunnels);
        }
        Err(e) => {
            tracing::error!(reason = why, error = %e, "reload failed; keeping the running tunnels")
        }
    }
    if ready_sent {
        notify::notify("READY=1");
    }
}
