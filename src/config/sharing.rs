//! Connection sharing settings, typed: ssh_config(5)'s `ControlMaster`, `ControlPath` and
//! `ControlPersist`, and ssh(1)'s `-O ctl_cmd`. The multiplexing itself is [`crate::mux`].

use std::path::PathBuf;
use std::time::Duration;

use super::error::OptionsError;
use super::ssh_config::{self, HostOptions};

/// `ControlMaster`: whether this client listens for others sharing its connection, and
/// whether it first looks for a master that is already running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlMaster {
    /// Use a running master if there is one, never become one (the default).
    #[default]
    No,
    /// Become the master (`-M`).
    Yes,
    /// Become the master and ask before each new use of the connection (`-MM`).
    Ask,
    /// Use a running master, else become one.
    Auto,
    /// `auto`, asking before each new use.
    AutoAsk,
}

impl ControlMaster {
    /// Parses a value as readconf.c does (`yes`/`true`, `no`/`false`, `ask`, `auto`,
    /// `autoask`).
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value.to_ascii_lowercase().as_str() {
            "yes" | "true" => Self::Yes,
            "no" | "false" => Self::No,
            "ask" => Self::Ask,
            "auto" => Self::Auto,
            "autoask" => Self::AutoAsk,
            _ => return None,
        })
    }

    /// The spelling `ssh -G` prints.
    pub fn dump_name(self) -> &'static str {
        match self {
            Self::No => "false",
            Self::Yes => "true",
            Self::Ask => "ask",
            Self::Auto => "auto",
            Self::AutoAsk => "autoask",
        }
    }

    /// Tries a running master before connecting itself (`no`, `auto`, `autoask`); `yes` and
    /// `ask` always make their own connection.
    pub fn tries_existing(self) -> bool {
        matches!(self, Self::No | Self::Auto | Self::AutoAsk)
    }

    /// Listens on the control socket once connected.
    pub fn listens(self) -> bool {
        !matches!(self, Self::No)
    }

    /// Asks the user (SSH_ASKPASS or the terminal) before each new use of the connection.
    pub fn asks(self) -> bool {
        matches!(self, Self::Ask | Self::AutoAsk)
    }
}

/// `ControlPersist`: how long a master outlives its own session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlPersist {
    /// The master ends with its own session (the default).
    #[default]
    No,
    /// The master goes to the background and stays until told to exit (`yes`, or a time of 0).
    Forever,
    /// The master goes to the background and exits after this long without clients.
    Idle(Duration),
}

impl ControlPersist {
    /// Parses `yes`/`no`/`true`/`false` or a time (readconf.c: a time of 0 means `yes`).
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "yes" | "true" => Some(Self::Forever),
            "no" | "false" => Some(Self::No),
            v => match ssh_config::parse_time(v)? {
                0 => Some(Self::Forever),
                secs => Some(Self::Idle(Duration::from_secs(secs))),
            },
        }
    }

    /// The value `ssh -G` prints: `no`, `yes`, or the idle time in seconds.
    pub fn dump_value(self) -> String {
        match self {
            Self::No => "no".into(),
            Self::Forever => "yes".into(),
            Self::Idle(d) => d.as_secs().to_string(),
        }
    }
}

/// `-O ctl_cmd`: a request to a running master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxCommand {
    /// `check`: is the master running (prints its pid).
    Check,
    /// `forward`: add the command line's forwards to the master.
    Forward,
    /// `cancel`: remove them again.
    Cancel,
    /// `exit`: end the master.
    Exit,
    /// `stop`: stop accepting new multiplexing clients.
    Stop,
    /// `proxy`: speak the SSH connection protocol over the control socket (not supported).
    Proxy,
}

impl MuxCommand {
    /// Parses the argument of `-O` (exact, lower-case words, as ssh.c compares them).
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "check" => Self::Check,
            "forward" => Self::Forward,
            "cancel" => Self::Cancel,
            "exit" => Self::Exit,
            "stop" => Self::Stop,
            "proxy" => Self::Proxy,
            _ => return None,
        })
    }
}

/// The connection sharing part of the effective options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlOptions {
    /// ControlMaster (or -M / -MM).
    pub master: ControlMaster,
    /// ControlPath (or -S) with `~`, `%` tokens and `${ENV}` expanded; None = `none`/unset.
    pub path: Option<PathBuf>,
    /// ControlPersist.
    pub persist: ControlPersist,
    /// `-O`: talk to a running master instead of connecting.
    pub command: Option<MuxCommand>,
}

/// Reads ControlMaster, ControlPath and ControlPersist from the merged options; `expand`
/// applies ControlPath's expansions (`~`, `%` tokens, `${ENV}`).
pub fn resolve(
    opts: &HostOptions,
    command: Option<MuxCommand>,
    expand: &dyn Fn(&str) -> Result<String, ssh_config::ConfigError>,
) -> Result<ControlOptions, OptionsError> {
    let master = match opts.first("controlmaster") {
        None => ControlMaster::No,
        Some(v) => ControlMaster::parse(v).ok_or_else(|| invalid("ControlMaster", v))?,
    };
    let persist = match opts.first("controlpersist") {
        None => ControlPersist::No,
        Some(v) => ControlPersist::parse(v).ok_or_else(|| invalid("ControlPersist", v))?,
    };
    let path = match opts.first("controlpath") {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("none") => None,
        Some(v) => Some(PathBuf::from(expand(v)?)),
    };
    Ok(ControlOptions {
        master,
        path,
        persist,
        command,
    })
}

fn invalid(option: &'static str, value: &str) -> OptionsError {
    OptionsError::Invalid {
        option,
        value: value.to_string(),
        reason: "not a valid value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_master_values_and_roles() {
        let cases = [
            ("yes", ControlMaster::Yes, "true", false, true),
            ("TRUE", ControlMaster::Yes, "true", false, true),
            ("no", ControlMaster::No, "false", true, false),
            ("ask", ControlMaster::Ask, "ask", false, true),
            ("auto", ControlMaster::Auto, "auto", true, true),
            ("autoask", ControlMaster::AutoAsk, "autoask", true, true),
        ];
        for (text, want, dump, tries, listens) in cases {
            let m = ControlMaster::parse(text).unwrap();
            assert_eq!(m, want, "{text}");
            assert_eq!(m.dump_name(), dump, "{text}");
            assert_eq!(m.tries_existing(), tries, "{text}");
            assert_eq!(m.listens(), listens, "{text}");
        }
        assert_eq!(ControlMaster::parse("sometimes"), None);
    }

    #[test]
    fn control_persist_values() {
        let cases = [
            ("no", ControlPersist::No, "no"),
            ("yes", ControlPersist::Forever, "yes"),
            ("0", ControlPersist::Forever, "yes"),
            ("10m", ControlPersist::Idle(Duration::from_secs(600)), "600"),
            ("30", ControlPersist::Idle(Duration::from_secs(30)), "30"),
        ];
        for (text, want, dump) in cases {
            let p = ControlPersist::parse(text).unwrap();
            assert_eq!(p, want, "{text}");
            assert_eq!(p.dump_value(), dump, "{text}");
        }
        assert_eq!(ControlPersist::parse("soon"), None);
    }

    #[test]
    fn mux_commands_are_exact_words() {
        assert_eq!(MuxCommand::parse("check"), Some(MuxCommand::Check));
        assert_eq!(MuxCommand::parse("forward"), Some(MuxCommand::Forward));
        assert_eq!(MuxCommand::parse("cancel"), Some(MuxCommand::Cancel));
        assert_eq!(MuxCommand::parse("exit"), Some(MuxCommand::Exit));
        assert_eq!(MuxCommand::parse("stop"), Some(MuxCommand::Stop));
        assert_eq!(MuxCommand::parse("Check"), None);
        assert_eq!(MuxCommand::parse("kill"), None);
    }
}
