//! The relay's access log: one line per forwarded connection when it closes, and one per
//! forward request the relay refused, in a fixed `key=value` format that fail2ban and scripts
//! can match (the filter is in README.md and burrow-serve.toml(5)).
//!
//! ```text
//! 2026-12-06T07:40:01.123Z burrow-access: close from=203.0.113.5 port=51234 kind=forwarded session=3 key=SHA256:… comment="alice laptop" listener="0.0.0.0:8086" to="198.51.100.7:40022" up=1234 down=5678 secs=12.345 end=closed
//! 2026-12-06T07:40:02.456Z burrow-access: refused from=203.0.113.9 port=40100 kind=direct-tcpip session=4 key=SHA256:… comment="bob" to="a-ssh:22" reason="not in the key's permitopen"
//! ```
//!
//! Why it cannot be forged: the fields a peer chooses (key comments, host names, bind
//! addresses) come only after `from=` and are quoted with every `"`, `\`, control character
//! and non-ASCII byte escaped, so no peer text can end a line, start a new one, or put an
//! address where the filter reads `from=`.
//!
//! Where it goes: stderr by default (the journal under systemd, with a syslog priority prefix
//! as [`crate::logging`] writes), or the file `access_log` names in serve.toml, opened for
//! appending and reopened on SIGHUP so logrotate can move it away. Each line is one `write`
//! to an `O_APPEND` file under a lock: lines are never interleaved or split.

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::forward::ForwardContext;
use crate::pipe::Counters;

/// What every line carries after its timestamp; the fail2ban filter anchors on it. It lives
/// with the logging leaf, which must keep daemon messages from spelling it.
pub use crate::logging::ACCESS_TAG as TAG;

/// Bytes of one peer-chosen value kept in a line (an SSH string may be 32 KiB or more).
pub const MAX_FIELD: usize = 512;

/// Mode of a log file the relay creates: the operator's group (e.g. `adm`) may read it, as
/// logrotate's `create 0640 root adm` makes it; nobody else may.
pub const FILE_MODE: u32 = 0o640;

/// Why the access log cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The file could not be opened (or created) for appending.
    #[error("cannot open access log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

/// Where lines go.
#[derive(Debug)]
enum Sink {
    /// The process's stderr; `journal` adds sd-daemon(3) priority prefixes.
    Stderr { journal: bool },
    /// A file, reopened by [`AccessLog::reopen`].
    File { path: PathBuf, file: Mutex<File> },
}

/// The relay's access log.
#[derive(Debug)]
pub struct AccessLog {
    sink: Sink,
}

/// Priority of a closed connection's line (info) and of a refusal (notice), sd-daemon(3).
const INFO: u8 = 6;
const NOTICE: u8 = 5;

impl AccessLog {
    /// Lines to stderr (the journal when stderr is systemd's journal stream).
    pub fn stderr() -> Self {
        Self {
            sink: Sink::Stderr {
                journal: crate::logging::stderr_is_journal(),
            },
        }
    }

    /// Lines to `path` (appended; created [`FILE_MODE`] when missing), or to stderr for `None`.
    pub fn open(path: Option<&Path>) -> Result<Self, AccessLogError> {
        let Some(path) = path else {
            return Ok(Self::stderr());
        };
        Ok(Self {
            sink: Sink::File {
                path: path.to_path_buf(),
                file: Mutex::new(open_append(path)?),
            },
        })
    }

    /// The file lines go to, if any.
    pub fn path(&self) -> Option<&Path> {
        match &self.sink {
            Sink::File { path, .. } => Some(path),
            Sink::Stderr { .. } => None,
        }
    }

    /// Opens the file again by its name (SIGHUP after logrotate moved it): later lines go to
    /// the new file. Every line written before is complete in the old one. On error the old
    /// file stays in use. Nothing to do for stderr.
    pub fn reopen(&self) -> Result<(), AccessLogError> {
        let Sink::File { path, file } = &self.sink else {
            return Ok(());
        };
        let fresh = open_append(path)?;
        let mut current = file.lock().unwrap_or_else(|p| p.into_inner());
        *current = fresh;
        Ok(())
    }

    /// Logs a connection that ended.
    pub fn closed(&self, c: &Closed<'_>) {
        let mut line = Line::new("close", c.from);
        line.bare("kind", c.kind.label());
        c.who.write(&mut line);
        line.quoted("listener", c.listener);
        line.quoted("to", c.to);
        line.bare("up", &c.up.to_string());
        line.bare("down", &c.down.to_string());
        line.bare("secs", &format!("{:.3}", c.duration.as_secs_f64()));
        line.bare("end", &escape(c.end, false));
        self.emit(INFO, line);
    }

    /// Logs a forward request the relay refused (what fail2ban's filter matches).
    pub fn refused(&self, r: &Refused<'_>) {
        let mut line = Line::new("refused", r.from);
        line.bare("kind", r.kind.label());
        match r.who {
            Some(who) => who.write(&mut line),
            None => line.bare("key", "-"),
        }
        line.quoted("to", r.to);
        line.quoted("reason", r.reason);
        self.emit(NOTICE, line);
    }

    /// Logs a refused public key authentication from `from` with the key `fingerprint` (the
    /// brute-force case fail2ban is most often set up for).
    pub fn auth_refused(&self, from: SocketAddr, fingerprint: &str, reason: &str) {
        let mut line = Line::new("refused", from);
        line.bare("kind", Kind::Auth.label());
        line.bare("key", &escape(fingerprint, false));
        line.quoted("reason", reason);
        self.emit(NOTICE, line);
    }

    /// Logs a refused request described the way the session handler names it
    /// (`direct-tcpip host:port`, `tcpip-forward addr:port`, `session channel`).
    pub fn refused_request(&self, who: Option<&Who>, from: SocketAddr, what: &str, reason: &str) {
        let (kind, to) = Kind::of_request(what);
        self.refused(&Refused {
            who,
            from,
            kind,
            to,
            reason,
        });
    }

    fn emit(&self, priority: u8, line: Line) {
        let stamp = jiff::Timestamp::now();
        let text = format!("{stamp:.3} {}\n", line.0);
        match &self.sink {
            Sink::Stderr { journal } => {
                let text = if *journal {
                    format!("<{priority}>{text}")
                } else {
                    text
                };
                // One write_all under stderr's lock: tracing's lines cannot cut into it.
                let _ = io::stderr().lock().write_all(text.as_bytes());
            }
            Sink::File { path, file } => {
                let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = file.write_all(text.as_bytes()) {
                    tracing::error!(file = %path.display(), error = %e, "cannot write the access log");
                }
            }
        }
    }
}

/// Opens `path` for appending, creating it with [`FILE_MODE`].
fn open_append(path: &Path) -> Result<File, AccessLogError> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|source| AccessLogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// One line being built: fixed fields first, then peer-controlled ones, each escaped.
struct Line(String);

impl Line {
    /// `burrow-access: EVENT from=IP port=N`: the part the fail2ban filter matches, before any
    /// text a peer chose.
    fn new(event: &str, from: SocketAddr) -> Self {
        let ip: IpAddr = from.ip().to_canonical();
        Line(format!("{TAG} {event} from={ip} port={}", from.port()))
    }

    /// A field whose value the relay made up (numbers, fingerprints, fixed words).
    fn bare(&mut self, key: &str, value: &str) {
        self.0.push(' ');
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(value);
    }

    /// A field that may hold peer text: in quotes, escaped; past [`MAX_FIELD`] bytes cut, with
    /// the number of bytes left out after the closing quote (`to="aaa…"+1234`), so one huge
    /// host name cannot make a huge line.
    fn quoted(&mut self, key: &str, value: &str) {
        let bytes = value.as_bytes();
        let kept = bytes.get(..MAX_FIELD).unwrap_or(bytes);
        let mut text = format!("\"{}\"", escape_bytes(kept, true));
        if kept.len() < bytes.len() {
            text.push_str(&format!("+{}", bytes.len() - kept.len()));
        }
        self.bare(key, &text);
    }
}

/// `value` with `\`, `"`, `=`, control characters and everything outside printable ASCII as
/// `\xNN` (per UTF-8 byte); spaces too unless `spaces` (inside quotes). The result stays on
/// one line, reads back unambiguously, and cannot hold `from=` even for a filter that does
/// not anchor at the start of the line.
pub fn escape(value: &str, spaces: bool) -> String {
    escape_bytes(value.as_bytes(), spaces)
}

/// [`escape`] for bytes (a value cut at [`MAX_FIELD`] may end inside a UTF-8 sequence: every
/// non-ASCII byte is escaped on its own anyway).
fn escape_bytes(value: &[u8], spaces: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        let special = matches!(b, b'"' | b'\\' | b'=');
        let plain = (b.is_ascii_graphic() && !special) || (spaces && b == b' ');
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// What kind of connection or request a line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A connection to a -R listener (or alias), carried to its publisher.
    Forwarded,
    /// A -L/-W/-D channel the relay dialled for a client.
    DirectTcpip,
    /// A -R request (`tcpip-forward`).
    TcpipForward,
    /// A session channel (refused when the key is at its channel cap).
    Session,
    /// A public key authentication attempt.
    Auth,
}

impl Kind {
    /// The `kind=` value.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Forwarded => "forwarded",
            Kind::DirectTcpip => "direct-tcpip",
            Kind::TcpipForward => "tcpip-forward",
            Kind::Session => "session",
            Kind::Auth => "auth",
        }
    }

    /// The kind a request description starts with (`direct-tcpip host:port`, as the session
    /// handler names requests), and the rest.
    fn of_request(what: &str) -> (Self, &str) {
        let (word, rest) = what.split_once(' ').unwrap_or((what, ""));
        let kind = match word {
            "direct-tcpip" => Kind::DirectTcpip,
            "tcpip-forward" => Kind::TcpipForward,
            _ => Kind::Session,
        };
        (kind, rest)
    }
}

/// The session and key a line is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// Relay-wide session number (as in the relay's other logs and the status page).
    pub session: u64,
    /// SHA256 fingerprint of its key.
    pub fingerprint: String,
    /// The key's comment in authorized_keys (operator text, but logged escaped anyway: a
    /// shared authorized_keys may hold comments the owners wrote).
    pub comment: String,
}

impl Who {
    /// Session `session` authenticated with the key `fingerprint` whose comment is `comment`.
    pub fn new(session: u64, fingerprint: &str, comment: &str) -> Self {
        Self {
            session,
            fingerprint: fingerprint.to_string(),
            comment: comment.to_string(),
        }
    }

    fn write(&self, line: &mut Line) {
        line.bare("session", &self.session.to_string());
        line.bare("key", &escape(&self.fingerprint, false));
        line.quoted("comment", &self.comment);
    }
}

/// A connection that ended.
#[derive(Debug)]
pub struct Closed<'a> {
    /// Whose session carried it (for -R: the publisher).
    pub who: &'a Who,
    /// Forwarded (-R) or direct-tcpip (-L/-W/-D).
    pub kind: Kind,
    /// Who opened it: for -R the visitor that connected to the listener, for direct-tcpip the
    /// client of the session.
    pub from: SocketAddr,
    /// The -R listener (`addr:port` as requested) or alias it came in on; `-` for direct-tcpip.
    pub listener: &'a str,
    /// Where it went: for direct-tcpip the `host:port` asked for, for -R the publisher.
    pub to: &'a str,
    /// Bytes from `from` towards `to`.
    pub up: u64,
    /// Bytes from `to` back to `from`.
    pub down: u64,
    /// From accept (or channel open) to close.
    pub duration: Duration,
    /// Why it ended (see [`ending`]).
    pub end: &'a str,
}

/// A refused request.
#[derive(Debug)]
pub struct Refused<'a> {
    /// The key that asked (None before authentication).
    pub who: Option<&'a Who>,
    /// The client that asked.
    pub from: SocketAddr,
    /// direct-tcpip or tcpip-forward.
    pub kind: Kind,
    /// What was asked: `host:port` to connect to or `addr:port` to listen on.
    pub to: &'a str,
    /// Why it was refused.
    pub reason: &'a str,
}

/// The byte counts of one connection, taken from what its pump counted.
#[derive(Debug, Clone)]
pub enum Bytes {
    /// A [`Metered`] visitor stream: up = read from it, down = written to it.
    Meter(Arc<Meter>),
    /// The connection's own [`Counters`]; `a_to_b_is_up` says which way is up (the pump's
    /// side `a` is its local socket: the visitor for -R, the dialled target for -L).
    Counters {
        /// The counters.
        counters: Arc<Counters>,
        /// True when side `a` is `from`.
        a_to_b_is_up: bool,
    },
}

/// One forwarded connection while it lives: writes its line when dropped, which is when its
/// pump (or its resumable stream) ends, however it ends. Pass it (or hold it) where the
/// connection's other per-connection guards live.
pub struct Tracked {
    log: Arc<AccessLog>,
    who: Who,
    kind: Kind,
    from: SocketAddr,
    listener: String,
    to: String,
    bytes: Bytes,
    started: Instant,
    /// The session's token: cancelled when the session carrying the connection ended.
    session: CancellationToken,
    /// The relay's shutdown token.
    shutdown: CancellationToken,
    /// Set when the reason is known beforehand (e.g. the publisher refused the channel).
    end: Mutex<Option<String>>,
}

/// Everything a [`Tracked`] connection needs to describe itself.
pub struct Track {
    /// The session and key.
    pub who: Who,
    /// Forwarded or direct-tcpip.
    pub kind: Kind,
    /// Who opened it.
    pub from: SocketAddr,
    /// Listener or alias label (`-` for direct-tcpip).
    pub listener: String,
    /// Destination.
    pub to: String,
    /// Where its bytes are counted.
    pub bytes: Bytes,
    /// The carrying session's cancellation token.
    pub session: CancellationToken,
    /// The relay's shutdown token.
    pub shutdown: CancellationToken,
}

impl AccessLog {
    /// Starts tracking one connection; its line is written when the result is dropped.
    /// Tracks a -L/-W/-D (direct-tcpip) connection opened by `who` from `from` to `to`: call
    /// before [`ForwardContext::serve_channel`] with the context returned, and pass the
    /// result along with its guard, e.g. `(slot, tracked)`. Its bytes are counted in the
    /// returned context's own counters (still rolled up into the session's).
    pub fn track_direct(
        self: &Arc<Self>,
        who: Who,
        from: SocketAddr,
        to: &str,
        ctx: &ForwardContext,
        shutdown: CancellationToken,
    ) -> (ForwardContext, Tracked) {
        let ctx = ctx.for_forward();
        let tracked = self.track(Track {
            who,
            kind: Kind::DirectTcpip,
            from,
            listener: "-".to_string(),
            to: to.to_string(),
            bytes: Bytes::Counters {
                counters: ctx.counters.clone(),
                a_to_b_is_up: false,
            },
            session: ctx.cancel.clone(),
            shutdown,
        });
        (ctx, tracked)
    }

    /// Starts tracking one connection; its line is written when the result is dropped.
    pub fn track(self: &Arc<Self>, t: Track) -> Tracked {
        Tracked {
            log: self.clone(),
            who: t.who,
            kind: t.kind,
            from: t.from,
            listener: t.listener,
            to: t.to,
            bytes: t.bytes,
            started: Instant::now(),
            session: t.session,
            shutdown: t.shutdown,
            end: Mutex::new(None),
        }
    }
}

/// Why a connection ended, as `end=` says it (besides `error:TEXT`, an I/O error on the
/// visitor's socket).
pub mod ending {
    /// Both sides finished (EOF each way).
    pub const CLOSED: &str = "closed";
    /// The relay was shutting down.
    pub const SHUTDOWN: &str = "shutdown";
    /// The SSH session that carried it ended (or was cut: takeover, keepalives).
    pub const SESSION: &str = "session-ended";
    /// Ended otherwise (the channel failed, a resumable stream expired, ...).
    pub const ABORTED: &str = "aborted";
    /// The publisher refused the forwarded-tcpip channel.
    pub const PUBLISHER_REFUSED: &str = "publisher-refused";
    /// The relay dropped it: the key's open channel cap was reached.
    pub const CHANNEL_CAP: &str = "channel-cap";
    /// A reverse dynamic (`burrow-permitremoteopen`) listener refused its SOCKS request.
    pub const GATE_REFUSED: &str = "gate-refused";
    /// The relay could not connect to a direct-tcpip destination (the client got "connect
    /// failed").
    pub const CONNECT_FAILED: &str = "connect-failed";
}

/// Session `id` of key `fingerprint` as lines name it, and the address it connects from (the
/// `to` of its -R connections); from the relay's live sessions, `-` where unknown.
pub fn publisher(relay: &super::Relay, id: u64, fingerprint: &str) -> (Who, String) {
    let live = relay
        .stats
        .live_sessions()
        .into_iter()
        .find(|(s, _)| *s == id)
        .map(|(_, s)| s);
    let who = Who {
        session: id,
        fingerprint: fingerprint.to_string(),
        comment: live.as_ref().map(|s| s.comment.clone()).unwrap_or_default(),
    };
    let to = live.map_or_else(|| "-".to_string(), |s| s.peer.to_string());
    (who, to)
}

impl Tracked {
    /// Records why the connection ended, when known before it is dropped.
    pub fn ended(&self, why: &str) {
        let mut end = self.end.lock().unwrap_or_else(|p| p.into_inner());
        if end.is_none() {
            *end = Some(why.to_string());
        }
    }

    fn reason(&self) -> String {
        if let Some(why) = self.end.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return why;
        }
        if let Bytes::Meter(m) = &self.bytes {
            if let Some(e) = m.error.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return format!("error:{e}");
            }
            if m.eof.load(Ordering::Relaxed) && m.shut.load(Ordering::Relaxed) {
                return ending::CLOSED.to_string();
            }
        }
        if let Bytes::Counters { counters, .. } = &self.bytes {
            // Its pump never started: the destination did not answer.
            if counters.opened.load(Ordering::Relaxed) == 0 {
                return ending::CONNECT_FAILED.to_string();
            }
        }
        if self.shutdown.is_cancelled() {
            ending::SHUTDOWN.to_string()
        } else if self.session.is_cancelled() {
            ending::SESSION.to_string()
        } else if matches!(self.bytes, Bytes::Counters { .. }) {
            // Without a meter the pump's own end is not seen: it ended by itself.
            ending::CLOSED.to_string()
        } else {
            ending::ABORTED.to_string()
        }
    }

    fn totals(&self) -> (u64, u64) {
        match &self.bytes {
            Bytes::Meter(m) => (m.up.load(Ordering::Relaxed), m.down.load(Ordering::Relaxed)),
            Bytes::Counters {
                counters,
                a_to_b_is_up,
            } => {
                let a_to_b = counters.a_to_b.load(Ordering::Relaxed);
                let b_to_a = counters.b_to_a.load(Ordering::Relaxed);
                if *a_to_b_is_up {
                    (a_to_b, b_to_a)
                } else {
                    (b_to_a, a_to_b)
                }
            }
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let (up, down) = self.totals();
        let end = self.reason();
        self.log.closed(&Closed {
            who: &self.who,
            kind: self.kind,
            from: self.from,
            listener: &self.listener,
            to: &self.to,
            up,
            down,
            duration: self.started.elapsed(),
            end: &end,
        });
    }
}

/// What a [`Metered`] stream saw.
#[derive(Debug, Default)]
pub struct Meter {
    /// Bytes read from the stream.
    pub up: AtomicU64,
    /// Bytes written to it.
    pub down: AtomicU64,
    /// It sent EOF.
    eof: AtomicBool,
    /// Its write side was shut down (the other side's EOF was passed on).
    shut: AtomicBool,
    /// The first I/O error on it.
    error: Mutex<Option<String>>,
}

impl Meter {
    fn failed(&self, e: &io::Error) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(crate::reason::io_reason(e));
        }
    }

    fn note<T>(&self, r: &Poll<io::Result<T>>) {
        if let Poll::Ready(Err(e)) = r {
            self.failed(e);
        }
    }
}

/// A visitor's stream that counts its bytes and notes how it ended, for its access log line.
pub struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S> Metered<S> {
    /// Wraps `inner`; `meter` is what the [`Tracked`] connection reads.
    pub fn new(inner: S, meter: Arc<Meter>) -> Self {
        Self { inner, meter }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let n = buf.filled().len().saturating_sub(before);
            if n == 0 && buf.remaining() > 0 {
                self.meter.eof.store(true, Ordering::Relaxed);
            }
            self.meter.up.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.meter.note(&r);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.meter.down.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.meter.note(&r);
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.meter.note(&r);
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        match &r {
            Poll::Ready(Ok(())) => self.meter.shut.store(true, Ordering::Relaxed),
            other => self.meter.note(other),
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(comment: &str) -> Who {
        Who {
            session: 7,
            fingerprint: "SHA256:abc".into(),
            comment: comment.into(),
        }
    }

    fn read_lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn peer_text_cannot_make_lines_or_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(Some(&path)).unwrap();
        let evil = "x\" from=192.0.2.66 port=1\nburrow-access: refused from=192.0.2.66 port=2 \\ é";
        log.refused(&Refused {
            who: Some(&who(evil)),
            from: "[::ffff:203.0.113.5]:4000".parse().unwrap(),
            kind: Kind::DirectTcpip,
            to: evil,
            reason: "not in permitopen",
        });
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        // Only the relay's own `from=` is left: `=` in peer text is escaped.
        assert_eq!(line.matches("from=").count(), 1, "{line}");
        assert!(
            line.contains(" burrow-access: refused from=203.0.113.5 port=4000 kind=direct-tcpip session=7 key=SHA256:abc comment=\"x\\x22 from\\x3d192.0.2.66 port\\x3d1\\x0aburrow-access: refused from\\x3d192.0.2.66 port\\x3d2 \\x5c \\xc3\\xa9\" "),
            "{line}"
        );
        // Every quote in the line opens or closes a value.
        assert_eq!(line.matches('"').count(), 6, "{line}");
    }

    #[test]
    fn long_values_are_cut_and_say_how_much_was_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(Some(&path)).unwrap();
        let host = format!("{}\u{e9}:22", "h".repeat(MAX_FIELD - 1));
        log.refused_request(
            None,
            "127.0.0.1:9".parse().unwrap(),
            &format!("direct-tcpip {host}"),
            "no",
        );
        log.auth_refused(
            "[2001:db8::1]:7".parse().unwrap(),
            "SHA256:k",
            "not in authorized_keys",
        );
        let lines = read_lines(&path);
        let want = format!(" to=\"{}\\xc3\"+4 reason=\"no\"", "h".repeat(MAX_FIELD - 1));
        assert!(lines[0].ends_with(&want), "{}", lines[0]);
        assert!(
            lines[0].contains(" kind=direct-tcpip key=- to="),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with(" burrow-access: refused from=2001:db8::1 port=7 kind=auth key=SHA256:k reason=\"not in authorized_keys\""),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn reopen_moves_later_lines_to_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let moved = dir.path().join("access.log.1");
        let log = AccessLog::open(Some(&path)).unwrap();
        fn r(to: &str) -> Refused<'_> {
            Refused {
                who: None,
                from: "127.0.0.1:9".parse().unwrap(),
                kind: Kind::TcpipForward,
                to,
                reason: "r",
            }
        }
        log.refused(&r("one"));
        std::fs::rename(&path, &moved).unwrap();
        log.refused(&r("two"));
        log.reopen().unwrap();
        log.refused(&r("three"));
        let old = read_lines(&moved);
        let new = read_lines(&path);
        assert_eq!(old.len(), 2);
        assert!(old[1].contains("to=\"two\""));
        assert_eq!(new.len(), 1);
        assert!(new[0].contains("to=\"three\""));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !FILE_MODE, 0, "mode {mode:o}");
    }

    #[tokio::test]
    async fn a_tracked_connection_logs_bytes_and_end_when_dropped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = Arc::new(AccessLog::open(Some(&path)).unwrap());
        let meter = Arc::new(Meter::default());
        let tracked = log.track(Track {
            who: who("c"),
            kind: Kind::Forwarded,
            from: "127.0.0.1:5000".parse().unwrap(),
            listener: "localhost:8086".into(),
            to: "127.0.0.1:6000".into(),
            bytes: Bytes::Meter(meter.clone()),
            session: CancellationToken::new(),
            shutdown: CancellationToken::new(),
        });
        let (visitor, relay_side) = tokio::io::duplex(64);
        let mut metered = Metered::new(relay_side, meter);
        let (mut vr, mut vw) = tokio::io::split(visitor);
        vw.write_all(b"hello").await.unwrap();
        vw.shutdown().await.unwrap();
        let mut got = Vec::new();
        metered.read_to_end(&mut got).await.unwrap();
        metered.write_all(b"hi").await.unwrap();
        metered.shutdown().await.unwrap();
        vr.read_to_end(&mut Vec::new()).await.unwrap();
        drop(tracked);
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains(" burrow-access: close from=127.0.0.1 port=5000 kind=forwarded session=7 key=SHA256:abc comment=\"c\" listener=\"localhost:8086\" to=\"127.0.0.1:6000\" up=5 down=2 secs="),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with(" end=closed"), "{}", lines[0]);
    }
}
