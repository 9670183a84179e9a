//! Log set-up. `burrow ssh` prints like ssh(1): bare messages on stderr, so lines such as
//! "Allocated port N for remote forward to host:port" read exactly as OpenSSH's; -v/-vv add
//! detail, -q keeps only errors. `BURROW_LOG` (a tracing filter) overrides the level.
//!
//! A daemon whose stderr is the journal (systemd sets `JOURNAL_STREAM` to that stream's
//! `device:inode`) starts each line with its syslog priority, `<4>` for a warning, which
//! journald reads as the line's PRIORITY (SyslogLevelPrefix=, on by default), and leaves out the
//! timestamp journald adds anyway; so `journalctl -u burrow-up -p warning` shows the failures
//! only. Through the stream rather than journald's native socket: the same lines reach the
//! journal under any journald and any sandboxing of the unit, with no socket to find.

use std::fmt;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
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

/// Plain messages for interactive commands (`ssh`); timestamps and levels for daemons, or
/// syslog priorities when stderr is the journal.
pub fn init(verbosity: Verbosity, daemon: bool) {
    let filter = EnvFilter::try_from_env("BURROW_LOG")
        .unwrap_or_else(|_| EnvFilter::new(verbosity.filter()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let detailed = daemon || matches!(verbosity, Verbosity::Debug | Verbosity::Trace);
    if daemon && stderr_is_journal() {
        let inner = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false)
            .with_target(true);
        let _ = builder.event_format(Journal(inner)).try_init();
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

/// Whether stderr is the stream systemd connected to the journal: `JOURNAL_STREAM` names it by
/// device and inode, and a stderr redirected elsewhere by a child no longer matches
/// (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    journal_stream_matches(&stream.to_string_lossy(), meta.dev(), meta.ino())
}

/// `JOURNAL_STREAM`'s `device:inode` (decimal) against a file's device and inode.
pub fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The syslog priority journald files a line of `level` under: error 3, warning 4,
/// info 6 (informational), debug and trace 7.
pub fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// A line format with the event's syslog priority in front (`<4>`), for the journal.
struct Journal<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journal<F>
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
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
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
    fn journal_priorities_keep_warnings_and_errors_apart_from_the_rest() {
        // `journalctl -p warning` shows priorities 0-4.
        assert_eq!(syslog_priority(&Level::ERROR), 3);
        assert_eq!(syslog_priority(&Level::WARN), 4);
        assert!(syslog_priority(&Level::INFO) > 4);
        assert!(syslog_priority(&Level::DEBUG) > 4);
        assert!(syslog_priority(&Level::TRACE) > 4);
    }

    #[test]
    fn journal_stream_is_matched_by_device_and_inode() {
        assert!(journal_stream_matches("8:1234", 8, 1234));
        assert!(journal_stream_matches("8:1234\n", 8, 1234));
        assert!(!journal_stream_matches("8:1235", 8, 1234));
        assert!(!journal_stream_matches("9:1234", 8, 1234));
        assert!(!journal_stream_matches("garbage", 8, 1234));
        assert!(!journal_stream_matches("", 8, 1234));
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
