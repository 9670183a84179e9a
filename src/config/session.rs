//! Options for the session channel (a shell or a command): RequestTTY / `-t` / `-T`,
//! EscapeChar / `-e`, SendEnv and SetEnv, resolved with ssh(1)'s rules.

use super::error::OptionsError;
use super::ssh_config::{match_pattern_list, HostOptions};
use crate::cli::SshArgs;

/// RequestTTY as in ssh_config(5); `-t` is `Yes`, `-tt` is `Force`, `-T` is `No`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestTty {
    /// A terminal for a login session, none for a command (the default).
    #[default]
    Auto,
    /// Never.
    No,
    /// Always when standard input is a terminal.
    Yes,
    /// Always, even when standard input is not a terminal.
    Force,
}

/// Whether the session gets a pseudo-terminal, decided once the command and stdin are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtyDecision {
    /// Request a PTY and put the local terminal in raw mode.
    Allocate,
    /// No PTY.
    None,
    /// No PTY although one was wanted: ssh(1) says so on stderr.
    NotATerminal,
}

impl RequestTty {
    /// ssh(1)'s rule (ssh.c): a login session gets a terminal unless told not to; a command
    /// gets one only with `-t`; either way only when stdin is a terminal, unless forced.
    pub fn decide(self, has_command: bool, stdin_is_tty: bool) -> TtyDecision {
        let wanted = match self {
            RequestTty::No => false,
            RequestTty::Yes | RequestTty::Force => true,
            RequestTty::Auto => !has_command,
        };
        match (wanted, stdin_is_tty || self == RequestTty::Force) {
            (false, _) => TtyDecision::None,
            (true, true) => TtyDecision::Allocate,
            (true, false) => TtyDecision::NotATerminal,
        }
    }
}

/// Everything the session channel needs besides the command itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// RequestTTY after `-t`/`-T`.
    pub request_tty: RequestTty,
    /// The escape character; `None` for `-e none`.
    pub escape_char: Option<u8>,
    /// SendEnv patterns in order (a `-pattern` removes earlier ones).
    pub send_env: Vec<String>,
    /// SetEnv assignments, sent after SendEnv (ssh(1) sends SetEnv last, so it wins).
    pub set_env: Vec<(String, String)>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            request_tty: RequestTty::Auto,
            escape_char: Some(b'~'),
            send_env: Vec::new(),
            set_env: Vec::new(),
        }
    }
}

impl SessionOptions {
    /// The local environment variables SendEnv selects, then SetEnv's, in sending order.
    pub fn environment(
        &self,
        local: impl Iterator<Item = (String, String)>,
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = local.filter(|(name, _)| self.sends(name)).collect();
        out.sort();
        out.extend(self.set_env.iter().cloned());
        out
    }

    fn sends(&self, name: &str) -> bool {
        let mut selected = false;
        for pattern in &self.send_env {
            match pattern.strip_prefix('-') {
                Some(removed) if match_pattern_list(name, removed) => selected = false,
                Some(_) => {}
                None if match_pattern_list(name, pattern) => selected = true,
                None => {}
            }
        }
        selected
    }
}

/// Resolves the session options from the command line over the config (`-t`/`-T`/`-e` win).
pub fn resolve(args: &SshArgs, opts: &HostOptions) -> Result<SessionOptions, OptionsError> {
    let request_tty = match (args.no_tty, args.tty) {
        (true, _) => RequestTty::No,
        (false, 0) => match opts.get("requesttty").and_then(|a| a.first()) {
            Some(v) => parse_request_tty(v)?,
            None => RequestTty::Auto,
        },
        (false, 1) => RequestTty::Yes,
        (false, _) => RequestTty::Force,
    };
    let escape_char = match args.escape_char.as_deref().or_else(|| {
        opts.get("escapechar")
            .and_then(|a| a.first())
            .map(String::as_str)
    }) {
        Some(v) => parse_escape_char(v)?,
        None => Some(b'~'),
    };
    let send_env = opts
        .get_all("sendenv")
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let set_env = opts
        .get("setenv")
        .unwrap_or_default()
        .iter()
        .map(|a| parse_assignment(a))
        .collect::<Result<_, _>>()?;
    Ok(SessionOptions {
        request_tty,
        escape_char,
        send_env,
        set_env,
    })
}

fn parse_request_tty(v: &str) -> Result<RequestTty, OptionsError> {
    match v.to_ascii_lowercase().as_str() {
        "auto" => Ok(RequestTty::Auto),
        "no" | "false" => Ok(RequestTty::No),
        "yes" | "true" => Ok(RequestTty::Yes),
        "force" => Ok(RequestTty::Force),
        _ => Err(OptionsError::Invalid {
            option: "RequestTTY",
            value: v.to_string(),
            reason: "expected auto, no, yes or force",
        }),
    }
}

/// `~`, `^]` (a control character) or `none`, as ssh(1)'s `-e`.
pub fn parse_escape_char(v: &str) -> Result<Option<u8>, OptionsError> {
    let bytes = v.as_bytes();
    match bytes {
        _ if v.eq_ignore_ascii_case("none") => Ok(None),
        [c] if c.is_ascii() => Ok(Some(*c)),
        [b'^', c] if (b'@'..=b'_').contains(&c.to_ascii_uppercase()) => {
            Ok(Some(c.to_ascii_uppercase() & 0x1f))
        }
        _ => Err(OptionsError::Invalid {
            option: "EscapeChar",
            value: v.to_string(),
            reason: "expected a single character, ^ and a letter, or none",
        }),
    }
}

fn parse_assignment(a: &str) -> Result<(String, String), OptionsError> {
    match a.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(OptionsError::Invalid {
            option: "SetEnv",
            value: a.to_string(),
            reason: "expected NAME=VALUE",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tty_decisions_follow_ssh() {
        use RequestTty::*;
        use TtyDecision as D;
        let cases = [
            (Auto, false, true, D::Allocate),
            (Auto, true, true, D::None),
            (Auto, false, false, D::NotATerminal),
            (Yes, true, true, D::Allocate),
            (Yes, true, false, D::NotATerminal),
            (Force, true, false, D::Allocate),
            (No, false, true, D::None),
        ];
        for (req, cmd, tty, want) in cases {
            assert_eq!(
                req.decide(cmd, tty),
                want,
                "{req:?} command={cmd} tty={tty}"
            );
        }
    }

    #[test]
    fn escape_chars() {
        assert_eq!(parse_escape_char("~").unwrap(), Some(b'~'));
        assert_eq!(parse_escape_char("none").unwrap(), None);
        assert_eq!(parse_escape_char("^]").unwrap(), Some(0x1d));
        assert_eq!(parse_escape_char("^a").unwrap(), Some(0x01));
        for bad in ["", "ab", "^1", "é"] {
            let e = parse_escape_char(bad).unwrap_err().to_string();
            assert!(e.contains("EscapeChar"), "{e}");
        }
    }

    #[test]
    fn send_env_patterns_and_set_env_order() {
        let o = SessionOptions {
            send_env: vec!["LC_*".into(), "FOO".into(), "-LC_ALL".into()],
            set_env: vec![("FOO".into(), "set".into())],
            ..SessionOptions::default()
        };
        let local = [
            ("LC_ALL", "C"),
            ("LC_TIME", "x"),
            ("FOO", "local"),
            ("BAR", "b"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()));
        let env = o.environment(local.into_iter());
        let names: Vec<_> = env.iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(names, ["FOO=local", "LC_TIME=x", "FOO=set"]);
    }

    #[test]
    fn bad_set_env_names_the_option() {
        let e = parse_assignment("NOEQUALS").unwrap_err().to_string();
        assert!(e.contains("SetEnv") && e.contains("NOEQUALS"), "{e}");
    }
}
