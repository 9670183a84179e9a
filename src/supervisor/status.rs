//! What every tunnel is doing, readable by `burrow status` over an owner-only unix socket and by
//! the metrics endpoint. One source of truth: both read these counters.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::pipe::Counters;
use crate::resume::ResumeStats;

/// A tunnel's life cycle: connecting → up → (down) → backoff → connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Dialling, authenticating, setting up forwards.
    Connecting,
    /// Connected with every forward up.
    Up,
    /// Waiting before the next attempt.
    Backoff,
    /// Gave up (exit_after_failures reached).
    Failed,
    /// Stopped by shutdown or reload.
    Stopped,
}

/// A point-in-time view of one tunnel (the `burrow status --json` format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSnapshot {
    /// Tunnel name.
    pub name: String,
    /// Current state.
    pub state: State,
    /// Unix time (seconds) the state began.
    pub since: u64,
    /// The relay it is (or was last) connected to.
    pub server: Option<String>,
    /// Times the tunnel came back up after being down.
    pub reconnects: u64,
    /// Consecutive failed attempts right now.
    pub failures: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Forwarded connections open now.
    pub connections_active: u64,
    /// Forwarded connections since start.
    pub connections_total: u64,
    /// Bytes sent towards the server since start.
    pub bytes_out: u64,
    /// Bytes received from the server since start.
    pub bytes_in: u64,
    /// Resumable streams alive now (attached, or waiting for the tunnel to come back).
    #[serde(default)]
    pub streams_resumable: u64,
    /// Streams that re-attached after a reconnect, since start.
    #[serde(default)]
    pub streams_resumed: u64,
    /// Streams closed because the tunnel did not come back within the grace period.
    #[serde(default)]
    pub streams_expired: u64,
}

#[derive(Debug)]
struct Inner {
    state: State,
    since: u64,
    server: Option<String>,
    reconnects: u64,
    failures: u64,
    last_error: Option<String>,
    ever_up: bool,
    current: Option<Arc<Counters>>,
    past: (u64, u64, u64),
}

/// The live status of one tunnel, updated by its task.
#[derive(Debug)]
pub struct TunnelStatus {
    name: String,
    inner: Mutex<Inner>,
    resume: Arc<ResumeStats>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TunnelStatus {
    /// A new tunnel, connecting.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            inner: Mutex::new(Inner {
                state: State::Connecting,
                since: now(),
                server: None,
                reconnects: 0,
                failures: 0,
                last_error: None,
                ever_up: false,
                current: None,
                past: (0, 0, 0),
            }),
            resume: Arc::default(),
        }
    }

    /// The counters of this tunnel's resumable streams (the tunnel's stream registry counts
    /// into them).
    pub fn resume_stats(&self) -> Arc<ResumeStats> {
        self.resume.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tunnel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves to `state` (no-op if already there, so `since` keeps its meaning).
    pub fn set(&self, state: State) {
        let mut i = self.lock();
        if i.state != state {
            i.state = state;
            i.since = now();
        }
    }

    /// Dialling `server`.
    pub fn connecting(&self, server: &str) {
        self.lock().server = Some(server.to_string());
        self.set(State::Connecting);
    }

    /// Up, counting through `counters`; a reconnect if it was up before.
    pub fn up(&self, counters: Arc<Counters>) {
        let mut i = self.lock();
        if i.ever_up {
            i.reconnects += 1;
        }
        i.ever_up = true;
        i.failures = 0;
        i.current = Some(counters);
        drop(i);
        self.set(State::Up);
    }

    /// The session ended or an attempt failed with `error`.
    pub fn failed(&self, error: &str) {
        let mut i = self.lock();
        i.last_error = Some(error.to_string());
        i.failures += 1;
        Self::retire_counters(&mut i);
    }

    /// The session ended (keeps totals).
    pub fn down(&self, error: &str) {
        let mut i = self.lock();
        i.last_error = Some(error.to_string());
        Self::retire_counters(&mut i);
    }

    fn retire_counters(i: &mut Inner) {
        if let Some(c) = i.current.take() {
            i.past.0 += c.a_to_b.load(Ordering::Relaxed);
            i.past.1 += c.b_to_a.load(Ordering::Relaxed);
            i.past.2 += c.opened.load(Ordering::Relaxed);
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u64 {
        self.lock().failures
    }

    /// The current view.
    pub fn snapshot(&self) -> TunnelSnapshot {
        let i = self.lock();
        let (out_now, in_now, opened_now, active) = match &i.current {
            Some(c) => (
                c.a_to_b.load(Ordering::Relaxed),
                c.b_to_a.load(Ordering::Relaxed),
                c.opened.load(Ordering::Relaxed),
                c.active.load(Ordering::Relaxed),
            ),
            None => (0, 0, 0, 0),
        };
        TunnelSnapshot {
            name: self.name.clone(),
            state: i.state,
            since: i.since,
            server: i.server.clone(),
            reconnects: i.reconnects,
            failures: i.failures,
            last_error: i.last_error.clone(),
            connections_active: active,
            connections_total: i.past.2 + opened_now,
            bytes_out: i.past.0 + out_now,
            bytes_in: i.past.1 + in_now,
            streams_resumable: self.resume.streams.load(Ordering::Relaxed),
            streams_resumed: self.resume.resumed.load(Ordering::Relaxed),
            streams_expired: self.resume.expired.load(Ordering::Relaxed),
        }
    }
}

/// Every tunnel of a running `burrow up`.
#[derive(Debug, Default)]
pub struct StatusBoard {
    tunnels: Mutex<Vec<Arc<TunnelStatus>>>,
}

impl StatusBoard {
    /// Registers a tunnel (replacing one of the same name).
    pub fn insert(&self, t: Arc<TunnelStatus>) {
        let mut v = self.tunnels.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|x| x.name() != t.name());
        v.push(t);
    }

    /// Forgets a tunnel (removed by a reload).
    pub fn remove(&self, name: &str) {
        let mut v = self.tunnels.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|x| x.name() != name);
    }

    /// Snapshots of all tunnels, by name.
    pub fn snapshot(&self) -> Vec<TunnelSnapshot> {
        let v = self.tunnels.lock().unwrap_or_else(|p| p.into_inner());
        let mut s: Vec<TunnelSnapshot> = v.iter().map(|t| t.snapshot()).collect();
        s.sort_by(|a, b| a.name.cmp(&b.name));
        s
    }
}

/// Where `burrow up` listens for `burrow status` by default: $XDG_RUNTIME_DIR/burrow/up.sock,
/// /run/burrow/up.sock as root, else ~/.local/state/burrow/up.sock.
pub fn default_control_path() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("burrow/up.sock");
    }
    if nix::unistd::getuid().is_root() {
        return PathBuf::from("/run/burrow/up.sock");
    }
    crate::config::options::home_dir().join(".local/state/burrow/up.sock")
}

/// Serves snapshots on a unix socket only the owner can use (directory 0700, socket 0600). Each
/// connection gets one JSON document and is closed.
pub fn serve_control(
    path: &Path,
    board: Arc<StatusBoard>,
    cancel: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if path.exists() {
        // A socket left by a previous run that nobody answers on.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another burrow up", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let owned = path.to_path_buf();
    Ok(tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = cancel.cancelled() => break,
            };
            if let Ok((mut s, _)) = accepted {
                let body = serde_json::to_vec(&board.snapshot()).unwrap_or_default();
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            }
        }
        let _ = std::fs::remove_file(&owned);
    }))
}

/// Reads the snapshots from a running `burrow up`.
pub async fn query(path: &Path) -> anyhow::Result<Vec<TunnelSnapshot>> {
    use anyhow::Context;
    let mut s = UnixStream::connect(path).await.with_context(|| {
        format!(
            "cannot reach burrow up at {} (is it running?)",
            path.display()
        )
    })?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    serde_json::from_slice(&buf).context("unreadable status reply")
}

/// A human-readable table of snapshots.
pub fn render_table(tunnels: &[TunnelSnapshot]) -> String {
    let mut out = format!(
        "{:<20} {:<10} {:>9} {:<24} {:>10} {:>6} {:>10} {:>10}  {}\n",
        "TUNNEL", "STATE", "FOR", "SERVER", "RECONNECTS", "CONNS", "IN", "OUT", "LAST ERROR"
    );
    let t_now = now();
    for t in tunnels {
        out.push_str(&format!(
            "{:<20} {:<10} {:>9} {:<24} {:>10} {:>6} {:>10} {:>10}  {}\n",
            t.name,
            format!("{:?}", t.state).to_lowercase(),
            human_duration(t_now.saturating_sub(t.since)),
            t.server.as_deref().unwrap_or("-"),
            t.reconnects,
            t.connections_active,
            human_bytes(t.bytes_in),
            human_bytes(t.bytes_out),
            t.last_error.as_deref().unwrap_or("-"),
        ));
    }
    out
}

fn human_duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS.get(u).copied().unwrap_or("B"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_survive_reconnects() {
        let t = TunnelStatus::new("t");
        let c1 = Arc::new(Counters::default());
        c1.a_to_b.store(10, Ordering::Relaxed);
        t.up(c1);
        t.down("link dropped");
        let c2 = Arc::new(Counters::default());
        c2.a_to_b.store(5, Ordering::Relaxed);
        t.up(c2);
        let s = t.snapshot();
        assert_eq!((s.bytes_out, s.reconnects, s.state), (15, 1, State::Up));
        assert_eq!(s.last_error.as_deref(), Some("link dropped"));
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(human_duration(3725), "1h2m");
    }
}
