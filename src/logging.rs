//! Log set-up. `burrow ssh` prints like ssh(1): bare messages on stderr, so lines such as
//! "Allocated port N for remote forward to host:port" read exactly as OpenSSH's; -v/-vv add
//! detail, -q keeps only errors. `BURROW_LOG` (a tracing filter) overrides the level.

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

/// Plain messages for interactive commands (`ssh`); timestamps and levels for daemons.
pub fn init(verbosity: Verbosity, daemon: bool) {
    let filter = EnvFilter::try_from_env("BURROW_LOG")
        .unwrap_or_else(|_| EnvFilter::new(verbosity.filter()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let detailed = daemon || matches!(verbosity, Verbosity::Debug | Verbosity::Trace);
    if detailed {
        let _ = builder.with_target(true).try_init();
    } else {
        let _ = builder
            .without_time()
            .with_target(false)
            .with_level(false)
            .try_init();
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
