//! Tokens: `%` letters, `~` and `${ENV}` in values, as ssh_config(5) "TOKENS" and
//! "ENVIRONMENT VARIABLES" describe them.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use super::{ConfigError, UNSUPPORTED_TOKENS};

/// Values for `%` tokens, as ssh computes them for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// `%h`: remote host name after HostName.
    pub host: String,
    /// `%n`: the host as typed.
    pub original_host: String,
    /// `%p`: remote port.
    pub port: u16,
    /// `%r`: remote user.
    pub remote_user: String,
    /// `%u`: local user.
    pub local_user: String,
    /// `%d` and `~`: local home directory.
    pub home: PathBuf,
    /// `%i`: local user id.
    pub uid: u32,
    /// `%l`: local host name (`%L`: up to the first dot).
    pub local_hostname: String,
}

impl Tokens {
    /// Tokens for a destination with the local facts (home from `$HOME`, uid and host name
    /// from `/proc`) filled in; callers that know them better may overwrite the fields.
    pub fn new(
        host: &str,
        original_host: &str,
        port: u16,
        remote_user: &str,
        local_user: &str,
    ) -> Self {
        Tokens {
            host: host.to_string(),
            original_host: original_host.to_string(),
            port,
            remote_user: remote_user.to_string(),
            local_user: local_user.to_string(),
            home: local_home(),
            uid: local_uid(),
            local_hostname: local_hostname(),
        }
    }

    /// `%C`: hex SHA-1 of `%l%h%p%r`, ssh's connection hash (used in ControlPath). OpenSSH
    /// 9.6+ also hashes the ProxyJump value (`%j`); without a ProxyJump both agree.
    pub fn connection_hash(&self) -> String {
        let mut sha = Sha1::new();
        sha.update(self.local_hostname.as_bytes());
        sha.update(self.host.as_bytes());
        sha.update(self.port.to_string().as_bytes());
        sha.update(self.remote_user.as_bytes());
        data_encoding::HEXLOWER.encode(&sha.finalize())
    }

    /// The replacement for one token letter, or None if unknown.
    pub(super) fn value(&self, token: char) -> Option<String> {
        Some(match token {
            'h' => self.host.clone(),
            'n' => self.original_host.clone(),
            'p' => self.port.to_string(),
            'r' => self.remote_user.clone(),
            'u' => self.local_user.clone(),
            'd' => self.home.to_string_lossy().into_owned(),
            'i' => self.uid.to_string(),
            'l' => self.local_hostname.clone(),
            'L' => self
                .local_hostname
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string(),
            'C' => self.connection_hash(),
            _ => return None,
        })
    }
}

/// Token expansion for paths and values: `%%` `%h` `%p` `%r` `%u` `%n` `%d` `%i` `%L` `%l`
/// `%C`, a leading `~` (or `~user`), and `${ENV}`; an unknown token (including `%j` and
/// `%k`, which burrow does not support) or an unset variable is an error naming it. Which keys take which expansions is the caller's choice
/// (ssh_config(5) "TOKENS" and "ENVIRONMENT VARIABLES").
pub fn expand_tokens(s: &str, t: &Tokens) -> Result<String, ConfigError> {
    let fail = |problem: String| ConfigError::Expand {
        input: s.to_string(),
        problem,
    };
    let (head, tail) = split_tilde(s, Some(&t.home)).map_err(fail)?;
    let tail = expand_with(tail, true, |c| t.value(c)).map_err(fail)?;
    Ok(match head {
        Some(dir) => join_home(&dir, &tail).to_string_lossy().into_owned(),
        None => tail,
    })
}

/// `%` tokens only, as OpenSSH's `default_client_percent_expand` (unix socket paths of
/// forwards): no `~`, and `${...}` is left as written.
pub fn percent_expand(s: &str, t: &Tokens) -> Result<String, ConfigError> {
    expand_with(s, false, |c| t.value(c)).map_err(|problem| ConfigError::Expand {
        input: s.to_string(),
        problem,
    })
}

/// `${ENV}` only, as OpenSSH's `dollar_expand` (whole forward specs, before they are split):
/// `%` and `~` are left as written; an unset variable is an error naming it.
pub fn dollar_expand(s: &str) -> Result<String, ConfigError> {
    let fail = |problem: String| ConfigError::Expand {
        input: s.to_string(),
        problem,
    };
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("${") {
        let (before, from) = rest.split_at(pos);
        out.push_str(before);
        let (value, remain) = env_var(from.get(2..).unwrap_or_default()).map_err(fail)?;
        out.push_str(&value);
        rest = remain;
    }
    out.push_str(rest);
    Ok(out)
}

/// Check that every `%` token in `s` is one of `allowed` (so errors surface at load time).
pub(super) fn check_tokens(s: &str, allowed: &str) -> Result<(), String> {
    expand_with(s, false, |c| allowed.contains(c).then(String::new)).map(|_| ())
}

/// Expand `%x` tokens via `lookup` and, if `env`, `${VAR}` from the environment, in one
/// left-to-right pass so replacement text is never re-expanded.
pub(super) fn expand_with(
    s: &str,
    env: bool,
    lookup: impl Fn(char) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find(['%', '$']) {
        let (before, from) = rest.split_at(pos);
        out.push_str(before);
        let mut chars = from.chars();
        let sigil = chars.next();
        let after = chars.as_str();
        if sigil == Some('$') {
            match after.strip_prefix('{') {
                Some(var_on) if env => {
                    let (value, remain) = env_var(var_on)?;
                    out.push_str(&value);
                    rest = remain;
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
            continue;
        }
        let mut tok = after.chars();
        match tok.next() {
            None => return Err("a lone \"%\" at the end (write %% for a percent sign)".into()),
            Some('%') => out.push('%'),
            Some(c) => match lookup(c) {
                Some(v) => out.push_str(&v),
                None if UNSUPPORTED_TOKENS.contains(c) => {
                    return Err(format!("token \"%{c}\" is not supported by burrow"))
                }
                None => return Err(format!("unknown token \"%{c}\"")),
            },
        }
        rest = tok.as_str();
    }
    out.push_str(rest);
    Ok(out)
}

/// Read `NAME}` at the start of `s`; returns the value and what follows the brace.
fn env_var(s: &str) -> Result<(String, &str), String> {
    let (name, remain) = s
        .split_once('}')
        .ok_or_else(|| "\"${\" without a closing \"}\"".to_string())?;
    if name.is_empty() {
        return Err("empty environment variable name \"${}\"".to_string());
    }
    let value =
        std::env::var(name).map_err(|_| format!("environment variable \"{name}\" is not set"))?;
    Ok((value, remain))
}

/// Split a leading `~` or `~user` off `s`: returns the home directory and the rest
/// (without its leading slashes), or `None` and `s` unchanged.
pub(super) fn split_tilde<'a>(
    s: &'a str,
    home: Option<&Path>,
) -> Result<(Option<PathBuf>, &'a str), String> {
    let Some(after) = s.strip_prefix('~') else {
        return Ok((None, s));
    };
    let (user, rest) = after.split_once('/').unwrap_or((after, ""));
    let dir = if user.is_empty() {
        home.map(Path::to_path_buf)
            .ok_or_else(|| "\"~\" used but the home directory is unknown".to_string())?
    } else {
        passwd_home(user).ok_or_else(|| format!("\"~{user}\": no such user"))?
    };
    Ok((Some(dir), rest.trim_start_matches('/')))
}

/// `dir/rest`, or `dir` alone for an empty rest (OpenSSH's `~` and `~/`).
pub(super) fn join_home(dir: &Path, rest: &str) -> PathBuf {
    if rest.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(rest)
    }
}

/// Home directory of a user from `/etc/passwd` (name:pw:uid:gid:gecos:dir:shell).
fn passwd_home(user: &str) -> Option<PathBuf> {
    passwd_field(|fields| fields.first() == Some(&user))
}

/// The home field of the first `/etc/passwd` entry accepted by `pick`.
fn passwd_field(pick: impl Fn(&[&str]) -> bool) -> Option<PathBuf> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| pick(fields))
        .and_then(|fields| fields.get(5).map(PathBuf::from))
}

/// Local home: `$HOME`, else the passwd entry of our uid, else `/`.
fn local_home() -> PathBuf {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let uid = local_uid().to_string();
    passwd_field(|f| f.get(2) == Some(&uid.as_str())).unwrap_or_else(|| PathBuf::from("/"))
}

/// Our uid, read as the owner of `/proc/self` (no libc call needed); 0 if unavailable.
fn local_uid() -> u32 {
    fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

/// The local host name (`gethostname`), from `/proc` or `/etc/hostname`.
fn local_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
