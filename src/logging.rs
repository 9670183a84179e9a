//! Log set-up. `burrow ssh` prints like ssh(1): bare messages on stderr, so lines such as
//! "Allocated port N for remote forward to host:port" read exactly as OpenSSH's; -v/-vv add
//! detail, -q keeps only errors. `BURROW_LOG` (a tracing filter) overrides the level.
//!
//! A daemon whose stderr is the systemd journal (`burrow serve`/`burrow up` as a service) starts
//! each line with its syslog priority (`<4>` for a warning, sd-daemon(3)), so `journalctl -p
//! warning` finds the warnings; without the prefix journald files every line as info.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How chatty to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// -q: errors only.
    Quiet,
    /// Default: what ssh(1) prints at LogLevel INFO.
    Normal,
    /// -v.
    Debug,
    /// -vv and more.
    Trace,
}

impl Verbosity {
    /// From ssh-style -v count and -q flag.
    pub fn from_flags(verbose: u8, quiet: bool) -> Self {
        match (quiet, verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, 1) => Verbosity::Debug,
            _ => Verbosity::Trace,
        }
    }

    fn filter(self) -> &'static str {
        match self {
            Verbosity::Quiet => "error",
            Verbosity::Normal => "warn,burrow=info",
            Verbosity::Debug => "info,burrow=debug",
            Verbosity::Trace => "debug,burrow=trace",
        }
    }
}

/// Plain messages for interactive commands (`ssh`); timestamps and levels for daemons; for a
/// daemon logging to the journal, priorities instead of timestamps (journald keeps the time).
pub fn init(verbosity: Verbosity, daemon: bool) {
    let filter = EnvFilter::try_from_env("BURROW_LOG")
        .unwrap_or_else(|_| EnvFilter::new(verbosity.filter()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let detailed = matches!(verbosity, Verbosity::Debug | Verbosity::Trace);
    if daemon && stderr_is_journal() {
        let format = format().with_target(true).without_time();
        let _ = builder
            .event_format(EditLine::journal_priority(EditLine::one_line(format)))
            .try_init();
    } else if daemon {
        let _ = builder
            .event_format(EditLine::one_line(format().with_target(true)))
            .try_init();
    } else if detailed {
        let _ = builder.with_target(true).try_init();
    } else {
        let _ = builder
            .without_time()
            .with_target(false)
            .with_level(false)
            .try_init();
    }
}

fn format() -> format::Format {
    format::format().with_ansi(false)
}

/// Whether stderr is the journal stream systemd connected: `$JOURNAL_STREAM` ("DEVICE:INODE",
/// systemd.exec(5)) names the same file as fd 2. Checking the file, not only the variable,
/// keeps a child whose stderr was redirected (`burrow up 2>file` from a service's shell) from
/// writing prefixes into the file.
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    match rustix::fs::fstat(std::io::stderr()) {
        Ok(st) => names_file(&stream.to_string_lossy(), st.st_dev, st.st_ino),
        Err(_) => false,
    }
}

/// `$JOURNAL_STREAM`'s "DEVICE:INODE" (decimal) against a file's device and inode.
fn names_file(stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = stream.split_once(':') else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

/// The syslog priority sd-daemon(3) reads from a line's `<N>` prefix.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// A line format whose finished line `edit` rewrites on its way out: one wrapper for both
/// rewrites the daemons need ([`EditLine::journal_priority`], [`EditLine::one_line`]), so the
/// `FormatEvent` plumbing is written once.
struct EditLine<F> {
    inner: F,
    edit: fn(&Event<'_>, &str, &mut Writer<'_>) -> fmt::Result,
}

impl<F> EditLine<F> {
    /// Prefixes each line with `<N>`, the syslog priority of the event's level.
    fn journal_priority(inner: F) -> Self {
        Self {
            inner,
            // The line without its leading padding: journald shows what follows `<N>` as is.
            edit: |event, line, w| {
                let level = priority(*event.metadata().level());
                write!(w, "<{level}>{}", line.trim_start())
            },
        }
    }

    /// Keeps every event of a daemon (`serve`, `up`) on one line: a peer can put a newline or a
    /// terminal escape in a host name, a key comment or a channel request, and those reach
    /// messages and fields; written raw they would forge a log line for whoever reads (or
    /// fail2ban-matches) the relay's log.
    fn one_line(inner: F) -> Self {
        Self {
            inner,
            edit: |_, line, w| {
                let body = line.strip_suffix('\n').unwrap_or(line);
                w.write_str(&defuse_access_tag(&escape_controls(body)))?;
                w.write_char('\n')
            },
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for EditLine<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        (self.edit)(event, &line, &mut writer)
    }
}

/// What every line of the relay's access log (`server::access_log`) carries after its
/// timestamp; the fail2ban filter anchors on it. Defined here, in the leaf, because daemon
/// lines must never spell it (see `defuse_access_tag`).
pub const ACCESS_TAG: &str = "burrow-access:";

/// The access log's tag (`burrow-access:`) with its colon escaped wherever it appears in a
/// daemon line. Without a file the access lines share stderr, and the journal, with these
/// lines; the fail2ban filter anchors on the tag, and a daemon message quotes what a peer
/// asked for ("forward refused request=direct-tcpip HOST:PORT"), so a key holder could
/// otherwise spell `burrow-access: refused from=ANY-ADDRESS ...` and get that address banned.
fn defuse_access_tag(text: &str) -> std::borrow::Cow<'_, str> {
    let tag = ACCESS_TAG;
    if !text.contains(tag) {
        return std::borrow::Cow::Borrowed(text);
    }
    let defused = format!("{}\\x3a", tag.trim_end_matches(':'));
    std::borrow::Cow::Owned(text.replace(tag, &defused))
}

/// Control characters as visible escapes (`\n`, `\r`, `\x1b`); everything else as is.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// An error and its causes on one line, `outer: cause: root`, leaving out a cause whose text the
/// line already holds (errors that print their source in their own message would otherwise show
/// it twice: "cannot read x: No such file: No such file").
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_priorities_follow_syslog() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
    }

    #[test]
    fn journal_stream_must_name_the_same_file() {
        assert!(names_file("64769:123456", 64769, 123456));
        assert!(!names_file("64769:123456", 64769, 123457));
        assert!(!names_file("64769", 64769, 123456));
        assert!(!names_file("", 0, 0));
    }

    #[test]
    fn journal_lines_start_with_the_priority() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::fmt::MakeWriter;

        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Buf {
            type Writer = Buf;
            fn make_writer(&'a self) -> Buf {
                self.clone()
            }
        }
        let buf = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .event_format(EditLine::journal_priority(format().without_time()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(relay = "b:22", "link lost");
            tracing::info!("up");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("<4>WARN burrow::"), "{text}");
        assert!(lines[0].contains("link lost relay=\"b:22\""), "{text}");
        assert!(lines[1].starts_with("<6>INFO burrow::"), "{text}");
    }

    #[test]
    fn peer_text_cannot_start_a_log_line() {
        let forged = "db\nINFO burrow: authenticated\r\x1b[2J";
        let escaped = escape_controls(forged);
        assert_eq!(escaped, "db\\nINFO burrow: authenticated\\r\\x1b[2J");
        assert!(!escaped.contains('\n'));
        assert_eq!(escape_controls("plain\ttext"), "plain\ttext");
    }

    #[test]
    fn daemon_lines_cannot_carry_the_access_tag() {
        let forged = "request=direct-tcpip x burrow-access: refused from=192.0.2.1 port=1 y:22";
        let defused = defuse_access_tag(forged);
        assert_eq!(
            defused,
            "request=direct-tcpip x burrow-access\\x3a refused from=192.0.2.1 port=1 y:22"
        );
        assert!(!defused.contains(ACCESS_TAG));
        assert_eq!(defuse_access_tag("plain text"), "plain text");
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(crate::server::config::ServeConfigError::Read {
            path: "x.toml".into(),
            source: io,
        })
        .context("loading the relay settings");
        assert_eq!(
            error_chain(&e),
            "loading the relay settings: cannot read x.toml: No such file"
        );
    }
}
