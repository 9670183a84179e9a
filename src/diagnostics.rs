//! Resource counts on demand: on SIGUSR1, `burrow ssh` and `burrow serve` log one `stats` line
//! with the tokio tasks alive, the process's open file descriptors and the connections being
//! forwarded. An operator can check a long-running relay for leaks this way, and the load tests
//! use it to prove that finished connections leave no task behind (file descriptors they can
//! count from outside, tasks only the runtime knows).

use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pipe::Counters;

/// One reading of the process's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Tasks alive in the current tokio runtime (spawned and not yet finished).
    pub tasks: usize,
    /// Entries in /proc/self/fd (None where it cannot be read).
    pub fds: Option<usize>,
    /// Connections being pumped now.
    pub connections: u64,
}

/// Reads the counts now. Must run inside a tokio runtime.
pub fn snapshot(counters: &Counters) -> Snapshot {
    Snapshot {
        tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count()),
        connections: counters.active.load(Ordering::Relaxed),
    }
}

/// Logs a [`snapshot`] at info level.
pub fn log_snapshot(counters: &Counters) {
    log_snapshot_with(counters, 0);
}

/// Logs a [`snapshot`] at info level, counting `other_tasks` (alive on runtimes other than the
/// current one: the relay's session threads) as well.
pub fn log_snapshot_with(counters: &Counters, other_tasks: usize) {
    let mut s = snapshot(counters);
    s.tasks += other_tasks;
    tracing::info!(
        tasks = s.tasks,
        fds = s.fds.unwrap_or(0),
        connections = s.connections,
        "stats"
    );
}

/// Logs a snapshot on every SIGUSR1 until `cancel`; the task belongs to `tracker`.
pub fn log_on_sigusr1(
    tracker: &TaskTracker,
    cancel: CancellationToken,
    counters: std::sync::Arc<Counters>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = match signal(SignalKind::user_defined1()) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "no SIGUSR1 handler: stats on demand unavailable");
            return;
        }
    };
    tracker.spawn(async move {
        loop {
            tokio::select! {
                r = usr1.recv() => match r {
                    Some(()) => log_snapshot(&counters),
                    None => return,
                },
                () = cancel.cancelled() => return,
            }
        }
    });
}
