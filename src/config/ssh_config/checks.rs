//! Value checks for the keys burrow interprets, so a bad value fails at load naming its line.

use super::tokens::check_tokens;
use super::{PATH_TOKENS, UNSUPPORTED_TOKENS};

/// What a known key's arguments must look like.
#[derive(Clone, Copy)]
enum Check {
    Text,
    Port,
    Choice(&'static [&'static str]),
    Int,
    Time,
    Persist,
    Mask,
    Escape,
    LogLevel,
    EnvName,
    EnvAssign,
    AddKeys,
    /// A ProxyJump list, checked by the `-J` parser so a bad one names its file and line.
    Jump,
    /// A path burrow expands `%` tokens in: a token no ssh knows fails at load, naming the line.
    Path,
    /// The arguments of LocalForward / RemoteForward / DynamicForward, checked together by
    /// the parser the command line uses.
    Forward(ForwardKey),
}

/// Which forward key a [`Check::Forward`] is for.
#[derive(Clone, Copy)]
enum ForwardKey {
    Local,
    Remote,
    Dynamic,
}

/// Argument count bounds and value check for one key.
pub(super) struct Rule {
    min: usize,
    max: usize,
    check: Check,
}

const FLAG: &[&str] = &["yes", "no", "true", "false"];
const LOG_LEVELS: &[&str] = &[
    "quiet", "fatal", "error", "info", "verbose", "debug", "debug1", "debug2", "debug3",
];

/// The rule for a key burrow interprets (None: stored as-is).
pub(super) fn rule_for(key: &str) -> Option<Rule> {
    let one = |check| Rule {
        min: 1,
        max: 1,
        check,
    };
    let many = |check| Rule {
        min: 1,
        max: usize::MAX,
        check,
    };
    Some(match key {
        "port" => one(Check::Port),
        "proxyjump" => one(Check::Jump),
        "user"
        | "hostname"
        | "hostkeyalias"
        | "controlpath"
        | "preferredauthentications"
        | "ciphers"
        | "certificatefile"
        | "forwardagent" => one(Check::Text),
        "dynamicforward" => one(Check::Forward(ForwardKey::Dynamic)),
        "localforward" => Rule {
            min: 2,
            max: 2,
            check: Check::Forward(ForwardKey::Local),
        },
        "remoteforward" => Rule {
            min: 1,
            max: 2,
            check: Check::Forward(ForwardKey::Remote),
        },
        "gatewayports"
        | "exitonforwardfailure"
        | "batchmode"
        | "clearallforwardings"
        | "identitiesonly"
        | "passwordauthentication"
        | "kbdinteractiveauthentication"
        | "streamlocalbindunlink" => one(Check::Choice(FLAG)),
        "compression" => one(Check::Choice(&["yes", "no"])),
        "pubkeyauthentication" => one(Check::Choice(&[
            "yes",
            "no",
            "true",
            "false",
            "unbound",
            "host-bound",
        ])),
        "stricthostkeychecking" => one(Check::Choice(&[
            "yes",
            "no",
            "true",
            "false",
            "ask",
            "off",
            "accept-new",
        ])),
        "requesttty" => one(Check::Choice(&[
            "yes", "no", "true", "false", "force", "auto",
        ])),
        "controlmaster" => one(Check::Choice(&[
            "yes", "no", "true", "false", "ask", "auto", "autoask",
        ])),
        "serveraliveinterval" | "connecttimeout" => one(Check::Time),
        "serveralivecountmax" | "numberofpasswordprompts" => one(Check::Int),
        "controlpersist" => one(Check::Persist),
        "streamlocalbindmask" => one(Check::Mask),
        "escapechar" => one(Check::Escape),
        "loglevel" => one(Check::LogLevel),
        "sendenv" => many(Check::EnvName),
        "setenv" => many(Check::EnvAssign),
        "identityfile" | "identityagent" => one(Check::Path),
        "userknownhostsfile" | "globalknownhostsfile" => many(Check::Path),
        "permitremoteopen" => many(Check::Text),
        "addkeystoagent" => Rule {
            min: 1,
            max: 2,
            check: Check::AddKeys,
        },
        _ => return None,
    })
}

impl Rule {
    /// Check argument count and each value; the message names the key and the value.
    pub(super) fn check(&self, name: &str, args: &[String]) -> Result<(), String> {
        if args.len() < self.min {
            return Err(format!("{name} is missing an argument"));
        }
        if args.len() > self.max {
            return Err(format!("{name} has extra arguments at end of line"));
        }
        if let Check::AddKeys = self.check {
            return check_add_keys(name, args);
        }
        if let Check::Forward(key) = self.check {
            return check_forward(key, args);
        }
        args.iter()
            .try_for_each(|arg| check_value(self.check, name, arg))
    }
}

/// Check one argument against a value rule.
fn check_value(check: Check, name: &str, arg: &str) -> Result<(), String> {
    let ok = match check {
        Check::Text | Check::AddKeys | Check::Forward(_) => !arg.is_empty(),
        Check::Path => {
            let known = format!("{PATH_TOKENS}{UNSUPPORTED_TOKENS}");
            return check_tokens(arg, &known).map_err(|e| format!("{name} \"{arg}\": {e}"));
        }
        Check::Jump => {
            return crate::spec::parse_jump(arg)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Check::Port => return check_port(name, arg),
        Check::Choice(choices) => choices.iter().any(|c| c.eq_ignore_ascii_case(arg)),
        Check::Int => arg.parse::<u32>().is_ok_and(|v| v <= i32::MAX as u32),
        Check::Time => arg == "none" || parse_time(arg).is_some(),
        Check::Persist => {
            matches!(arg, "yes" | "no" | "true" | "false") || parse_time(arg).is_some()
        }
        Check::Mask => u32::from_str_radix(arg, 8).is_ok_and(|m| m <= 0o777),
        Check::Escape => valid_escape_char(arg),
        Check::LogLevel => LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(arg)),
        Check::EnvName => !arg.is_empty() && !arg.contains('='),
        Check::EnvAssign => arg.contains('='),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{name} \"{arg}\" is not valid{}", expected(check)))
    }
}

/// What a rule accepts, for error messages.
fn expected(check: Check) -> String {
    match check {
        Check::Choice(choices) => format!(" (expected {})", choices.join(", ")),
        Check::Int => " (expected a number)".to_string(),
        Check::Time => " (expected a time such as 30, 5m or 1h30m, or none)".to_string(),
        Check::Persist => " (expected yes, no or a time)".to_string(),
        Check::Mask => " (expected an octal mask such as 0177)".to_string(),
        Check::Escape => " (expected one character, ^X or none)".to_string(),
        Check::LogLevel => format!(" (expected one of {})", LOG_LEVELS.join(", ")),
        Check::EnvName => " (expected a variable name without \"=\")".to_string(),
        Check::EnvAssign => " (expected NAME=VALUE)".to_string(),
        Check::Text
        | Check::Port
        | Check::AddKeys
        | Check::Jump
        | Check::Path
        | Check::Forward(_) => String::new(),
    }
}

/// A port must be a number in 1..=65535.
fn check_port(name: &str, arg: &str) -> Result<(), String> {
    match arg.parse::<u32>() {
        Err(_) => Err(format!("{name} \"{arg}\" is not a number")),
        Ok(p) if p == 0 || p > 65535 => Err(format!("{name} \"{arg}\" is out of range 1-65535")),
        Ok(_) => Ok(()),
    }
}

/// `none`, one character, or `^` followed by a character in `@`..DEL (a control key).
fn valid_escape_char(arg: &str) -> bool {
    let mut chars = arg.chars();
    match (chars.next(), chars.next(), chars.next()) {
        _ if arg == "none" => true,
        (Some(_), None, _) => true,
        (Some('^'), Some(c), None) => ('@'..'\x7f').contains(&c),
        _ => false,
    }
}

/// A forward key's arguments, parsed as the client will parse them (so the error names the line).
fn check_forward(key: ForwardKey, args: &[String]) -> Result<(), String> {
    let arg = |i: usize| args.get(i).map(String::as_str);
    let parsed = match key {
        ForwardKey::Local => {
            crate::spec::parse_local_config(arg(0).unwrap_or(""), arg(1).unwrap_or("")).map(drop)
        }
        ForwardKey::Remote => {
            crate::spec::parse_remote_config(arg(0).unwrap_or(""), arg(1)).map(drop)
        }
        ForwardKey::Dynamic => crate::spec::parse_dynamic(arg(0).unwrap_or("")).map(drop),
    };
    parsed.map_err(|e| e.to_string())
}

/// `AddKeysToAgent yes|no|ask|confirm [time]` or a bare lifetime, as ssh accepts it.
fn check_add_keys(name: &str, args: &[String]) -> Result<(), String> {
    const STATES: &[&str] = &["yes", "no", "true", "false", "ask", "confirm"];
    let state = args.first().map(String::as_str).unwrap_or_default();
    let known = STATES.iter().any(|s| s.eq_ignore_ascii_case(state));
    let ok = match args.get(1) {
        None => known || parse_time(state).is_some(),
        Some(time) => state.eq_ignore_ascii_case("confirm") && parse_time(time).is_some(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name} \"{}\" is not valid (expected yes, no, ask, confirm [time] or a time)",
            args.join(" ")
        ))
    }
}

/// Parse an OpenSSH time value (`convtime`): digits with an optional unit s, m, h, d or w,
/// repeated (`1h30m`); a bare number is seconds. Returns seconds.
pub fn parse_time(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut value: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            let v = value
                .unwrap_or(0)
                .checked_mul(10)?
                .checked_add(u64::from(d))?;
            value = Some(v);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return None,
        };
        total = total.checked_add(value.take()?.checked_mul(unit)?)?;
    }
    if let Some(v) = value {
        total = total.checked_add(v)?;
    }
    (total <= i32::MAX as u64).then_some(total)
}
