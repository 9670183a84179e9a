//! What a process under test holds: file descriptors and resident memory from /proc/PID, and
//! tokio's live-task count from the `stats` line burrow logs on SIGUSR1 (src/diagnostics.rs).
//! Leak and memory tests compare these before and after a load.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::process::ChildGuard;

/// Entries in /proc/PID/fd (0 if the process is gone).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads in /proc/PID/task.
pub fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size (VmRSS) in KiB; 0 if the process is gone.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One `stats` line of a burrow process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeStats {
    /// tokio tasks alive.
    pub tasks: u64,
    /// Open file descriptors as the process counted them.
    pub fds: u64,
    /// Connections being forwarded.
    pub connections: u64,
}

fn field(line: &str, name: &str) -> Option<u64> {
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key.as_str()))
        .and_then(|v| v.parse().ok())
}

fn stats_lines(log: &str) -> Vec<RuntimeStats> {
    log.lines()
        .filter(|l| l.contains("stats tasks="))
        .filter_map(|l| {
            Some(RuntimeStats {
                tasks: field(l, "tasks")?,
                fds: field(l, "fds")?,
                connections: field(l, "connections")?,
            })
        })
        .collect()
}

/// Sends SIGUSR1 to a burrow process and returns the `stats` line it logs in answer.
pub async fn runtime_stats(child: &ChildGuard) -> RuntimeStats {
    let before = stats_lines(&child.stderr_text()).len();
    child.signal(Signal::SIGUSR1);
    child
        .stderr()
        .wait_until_async(Duration::from_secs(10), move |log| {
            let lines = stats_lines(log);
            lines.get(before).copied()
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{} logged no stats line after SIGUSR1:\n{}",
                child.name(),
                child.stderr_text()
            )
        })
}

/// Polls (every 200 ms, up to `timeout`) until the process's tasks and fds are back to
/// `baseline` or below and no connection is active; returns the last reading either way.
pub async fn settle(child: &ChildGuard, baseline: RuntimeStats, timeout: Duration) -> RuntimeStats {
    let deadline = Instant::now() + timeout;
    loop {
        let now = runtime_stats(child).await;
        let back = now.tasks <= baseline.tasks && now.fds <= baseline.fds && now.connections == 0;
        if back || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
