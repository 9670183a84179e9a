//! What every tunnel is doing, readable by `burrow status` over an owner-only unix socket and by
//! the metrics endpoint and status page. One source of truth: all of them read these counters.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::observe::events::{EventKind, EventLog};
use crate::pipe::Counters;
use crate::resume::ResumeStats;

pub use super::table::render_table;

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
    /// The forwards of the current (or last) session, where they listen and what they carried.
    #[serde(default)]
    pub forwards: Vec<ForwardSnapshot>,
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

/// One forward of a tunnel's current (or last) session; its counts start with that session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardSnapshot {
    /// The forward as configured, e.g. `-R 8087:localhost:22`: the same in every session, so
    /// metrics label its series with it.
    #[serde(default)]
    pub forward: String,
    /// The forward and where it is up, e.g. `-R 8087:localhost:22 (relay port 8087)`.
    pub spec: String,
    /// Connections open now.
    pub connections_active: u64,
    /// Connections in this session.
    pub connections_total: u64,
    /// Bytes sent towards the server in this session.
    pub bytes_out: u64,
    /// Bytes received from the server in this session.
    pub bytes_in: u64,
}

/// A forward that is up, as its tunnel reports it: label and counters travel together.
#[derive(Debug, Clone)]
pub struct LiveForward {
    /// The forward as configured (`-R 8087:localhost:22`).
    pub forward: String,
    /// The forward and where it is up (`-R 8087:localhost:22 (relay port 8087)`).
    pub spec: String,
    /// Its connections and bytes (also counted in the session's counters).
    pub counters: Arc<Counters>,
}

impl ForwardSnapshot {
    fn read(f: &LiveForward) -> Self {
        let c = &f.counters;
        Self {
            forward: f.forward.clone(),
            spec: f.spec.clone(),
            connections_active: c.active.load(Ordering::Relaxed),
            connections_total: c.opened.load(Ordering::Relaxed),
            bytes_out: c.a_to_b.load(Ordering::Relaxed),
            bytes_in: c.b_to_a.load(Ordering::Relaxed),
        }
    }
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
    forwards: Vec<LiveForward>,
}

/// The live status of one tunnel, updated by its task.
#[derive(Debug)]
pub struct TunnelStatus {
    name: String,
    inner: Mutex<Inner>,
    events: Arc<EventLog>,
    resume: Arc<ResumeStats>,
}

fn now() -> u64 {
    crate::observe::unix_secs()
}

impl TunnelStatus {
    /// A new tunnel, connecting, with an event log of its own.
    pub fn new(name: &str) -> Self {
        Self::with_events(name, Arc::default())
    }

    /// A new tunnel, connecting, reporting events to `events`.
    pub fn with_events(name: &str, events: Arc<EventLog>) -> Self {
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
                forwards: Vec::new(),
            }),
            events,
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

    /// Up with these `forwards`, counting through `counters`; a reconnect if it was up before.
    pub fn up(&self, counters: Arc<Counters>, forwards: Vec<LiveForward>) {
        let mut i = self.lock();
        if i.ever_up {
            i.reconnects += 1;
        }
        i.ever_up = true;
        i.failures = 0;
        i.current = Some(counters);
        i.forwards = forwards;
        let detail = format!(
            "up via {}{}",
            i.server.as_deref().unwrap_or("-"),
            match i.reconnects {
                0 => String::new(),
                n => format!(" (reconnect {n})"),
            }
        );
        drop(i);
        self.set(State::Up);
        self.events.push(EventKind::Connect, &self.name, &detail);
    }

    /// The session ended or an attempt failed with `error`.
    pub fn failed(&self, error: &str) {
        let mut i = self.lock();
        i.last_error = Some(error.to_string());
        i.failures += 1;
        Self::retire_counters(&mut i);
        let detail = format!("{}: {error}", i.server.as_deref().unwrap_or("-"));
        drop(i);
        self.events.push(EventKind::Failure, &self.name, &detail);
    }

    /// The session ended (keeps totals).
    pub fn down(&self, error: &str) {
        let mut i = self.lock();
        i.last_error = Some(error.to_string());
        Self::retire_counters(&mut i);
        drop(i);
        self.events.push(EventKind::Disconnect, &self.name, error);
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
            forwards: i.forwards.iter().map(ForwardSnapshot::read).collect(),
            streams_resumable: self.resume.streams.load(Ordering::Relaxed),
            streams_resumed: self.resume.resumed.load(Ordering::Relaxed),
            streams_expired: self.resume.expired.load(Ordering::Relaxed),
        }
    }
}

/// Every tunnel of a running `burrow up`, and their recent events.
#[derive(Debug, Default)]
pub struct StatusBoard {
    tunnels: Mutex<Vec<Arc<TunnelStatus>>>,
    /// Tunnels up, down, failing: the status page's event list.
    pub events: Arc<EventLog>,
}

impl StatusBoard {
    /// A new tunnel reporting to this board's event log, registered (replacing one of the same
    /// name).
    pub fn tunnel(&self, name: &str) -> Arc<TunnelStatus> {
        let t = Arc::new(TunnelStatus::with_events(name, self.events.clone()));
        self.insert(t.clone());
        t
    }

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

/// Serves snapshots on a unix socket only the owner can use. Each connection gets one JSON
/// document and is closed.
///
/// As OpenSSH places its mux socket (and as [`crate::mux`] does): the socket is bound in a
/// fresh private directory, chmod-ed to 0600 and linked into place, so it is never reachable
/// with a looser mode, whatever the umask or the directory it lands in; each client's uid is
/// checked (root or ours) because a mode is only as good as the directories above it. A
/// missing parent directory is created 0700. An existing socket nobody answers on (left by a
/// killed `burrow up`) is replaced; anything that is not a socket is never deleted.
pub fn serve_control(
    path: &Path,
    board: Arc<StatusBoard>,
    cancel: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; not replacing it",
                    path.display()
                ),
            ));
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{} is in use by another burrow up", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = crate::forward::listen::bind_unix_socket(path, 0o177)?;
    let listener = UnixListener::from_std(listener)?;
    // What we bound, so shutdown removes our socket and not whatever replaced it since.
    let bound = std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino()))?;
    let owned = path.to_path_buf();
    let me = nix::unistd::getuid().as_raw();
    Ok(tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = cancel.cancelled() => break,
            };
            let Ok((mut s, _)) = accepted else { continue };
            match s.peer_cred().map(|c| c.uid()) {
                Ok(uid) if uid == 0 || uid == me => {
                    let body = serde_json::to_vec(&board.snapshot()).unwrap_or_default();
                    let _ = s.write_all(&body).await;
                    let _ = s.shutdown().await;
                }
                Ok(uid) => tracing::warn!(
                    uid,
                    control = %owned.display(),
                    "control socket: refusing a client of another user"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: cannot read the client's uid")
                }
            }
        }
        let ours = std::fs::symlink_metadata(&owned).is_ok_and(|m| (m.dev(), m.ino()) == bound);
        if ours {
            let _ = std::fs::remove_file(&owned);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `--control` naming a file that is not a socket: refused with the path, the file kept
    /// (it used to be deleted when nothing answered on it).
    #[tokio::test]
    async fn a_file_at_the_control_path_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        for (name, make) in [("notes.txt", 0u8), ("dir", 1), ("link", 2)] {
            let path = dir.path().join(name);
            match make {
                0 => std::fs::write(&path, "precious\n").unwrap(),
                1 => std::fs::create_dir(&path).unwrap(),
                _ => std::os::unix::fs::symlink(dir.path().join("notes.txt"), &path).unwrap(),
            }
            let board = Arc::new(StatusBoard::default());
            let err = serve_control(&path, board, CancellationToken::new()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "{} exists and is not a socket; not replacing it",
                    path.display()
                )
            );
            assert!(
                std::fs::symlink_metadata(&path).is_ok(),
                "{name} was removed"
            );
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
            "precious\n"
        );
    }

    /// The socket is 0600 (bound in a private directory that is gone afterwards), a stale
    /// socket is replaced, a live one is not, and shutdown removes only our own socket.
    #[tokio::test]
    async fn the_control_socket_is_owner_only_and_replaces_only_a_stale_socket() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let board = Arc::new(StatusBoard::default());
        board.tunnel("t");
        let cancel = CancellationToken::new();
        let task = serve_control(&path, board.clone(), cancel.clone()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            ["up.sock"],
            "the private bind directory is left behind"
        );
        let snapshot = query(&path).await.unwrap();
        assert_eq!(snapshot.len(), 1);
        let err = serve_control(&path, board, CancellationToken::new()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        cancel.cancel();
        task.await.unwrap();
        assert!(!path.exists(), "our socket is removed at shutdown");
    }

    #[test]
    fn totals_survive_reconnects() {
        let t = TunnelStatus::new("t");
        let c1 = Arc::new(Counters::default());
        c1.a_to_b.store(10, Ordering::Relaxed);
        t.up(c1, Vec::new());
        t.down("link dropped");
        let c2 = Arc::new(Counters::default());
        c2.a_to_b.store(5, Ordering::Relaxed);
        let f = Arc::new(Counters::child_of(c2.clone()));
        let live = LiveForward {
            forward: "-L x".into(),
            spec: "-L x (listening on y)".into(),
            counters: f.clone(),
        };
        t.up(c2.clone(), vec![live]);
        f.b_to_a.store(7, Ordering::Relaxed);
        let s = t.snapshot();
        assert_eq!((s.bytes_out, s.reconnects, s.state), (15, 1, State::Up));
        assert_eq!(s.last_error.as_deref(), Some("link dropped"));
        assert_eq!(s.forwards.len(), 1);
        assert_eq!(
            (s.forwards[0].forward.as_str(), s.forwards[0].bytes_in),
            ("-L x", 7)
        );
        let kinds: Vec<EventKind> = t.events.recent().iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::Connect,
                EventKind::Disconnect,
                EventKind::Connect
            ]
        );
    }
}
