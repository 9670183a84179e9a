//! Login destinations: `[user@]host`, `ssh://[user@]host[:port]` and `-J` jump lists, with
//! OpenSSH's rules (`parse_user_host_port`, `parse_uri`, `parse_jump`, `ssh_valid_hostname`,
//! `ssh_valid_ruser`, `valid_domain` in misc.c/readconf.c).

use super::fields::parse_port;
use super::{Problem, SpecError, SpecKind};
use std::net::Ipv6Addr;

/// One hop of a `-J` / ProxyJump chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JumpHost {
    /// Login user, if given.
    pub user: Option<String>,
    /// Host name or address (brackets removed).
    pub host: String,
    /// Port, if given (never 0).
    pub port: Option<u16>,
}

/// `(user, host, port)` as found in a destination.
type UserHostPort = (Option<String>, String, Option<u16>);

const URI_SCHEME: &str = "ssh://";

/// Parses `-J [user@]host[:port][,...]` or `ssh://` URIs; `none` (any case) means no jump.
/// Like OpenSSH, a `#` starts a comment and trailing whitespace is ignored.
pub fn parse_jump(spec: &str) -> Result<Vec<JumpHost>, SpecError> {
    if spec.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let uncommented = spec.split('#').next().unwrap_or_default().trim_end();
    uncommented
        .split(',')
        .map(|hop| jump_hop(hop).map_err(|p| p.into_error(SpecKind::Jump, spec)))
        .collect()
}

/// Parses the destination argument: `[user@]host` (the last `@` splits, so a user may contain
/// `@`; no port here, so bare IPv6 works) or `ssh://[user@]host[:port]`.
pub fn parse_destination(s: &str) -> Result<UserHostPort, SpecError> {
    destination(s).map_err(|p| p.into_error(SpecKind::Destination, s))
}

fn destination(s: &str) -> Result<UserHostPort, Problem> {
    let (user, host, port) = match s.strip_prefix(URI_SCHEME) {
        Some(rest) => ssh_uri(rest)?,
        None => match s.rsplit_once('@') {
            Some((user, host)) => (Some(user.to_owned()), host.to_owned(), None),
            None => (None, s.to_owned(), None),
        },
    };
    validate(user.as_deref(), &host)?;
    Ok((user, host, port))
}

fn jump_hop(hop: &str) -> Result<JumpHost, Problem> {
    let (user, host, port) = match hop.strip_prefix(URI_SCHEME) {
        Some(rest) => ssh_uri(rest)?,
        None => user_host_port(hop)?,
    };
    validate(user.as_deref(), &host)?;
    Ok(JumpHost { user, host, port })
}

/// `[user@]host[:port]` with the last `@` splitting and `[v6]` hosts (`parse_user_host_port`).
fn user_host_port(s: &str) -> Result<UserHostPort, Problem> {
    let (user, rest) = match s.rsplit_once('@') {
        Some((user, rest)) => (Some(user.to_owned()), rest),
        None => (None, s),
    };
    let (host, delim, tail) = split_host(rest)?;
    if delim == Some('/') {
        return Err(Problem::BadHostName(rest.to_owned()));
    }
    let port = optional_port(tail)?;
    Ok((user, host, port))
}

/// `[user[;params]@]host[:port][/]` after `ssh://` (`parse_uri`): the first `@` splits,
/// the user may be %-encoded, connection parameters are ignored, a path is refused.
fn ssh_uri(rest: &str) -> Result<UserHostPort, Problem> {
    let (user, hostport) = match rest.split_once('@') {
        Some((info, hostport)) => (Some(uri_user(info)?), hostport),
        None => (None, rest),
    };
    let (host, delim, tail) = split_host(hostport)?;
    check_domain(&host)?;
    let (port_text, path) = match delim {
        Some(':') => tail.split_once('/').unwrap_or((tail, "")),
        _ => ("", tail),
    };
    if !path.is_empty() {
        return Err(Problem::UriPath(path.to_owned()));
    }
    Ok((user, host, optional_port(port_text)?))
}

fn uri_user(info: &str) -> Result<String, Problem> {
    let user = info.split(';').next().unwrap_or_default();
    if user.is_empty() {
        return Err(Problem::EmptyUser);
    }
    url_decode(user).ok_or_else(|| Problem::BadEscape(user.to_owned()))
}

/// `+` is a space, `%XX` a byte (never NUL); the result must be UTF-8.
fn url_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex(bytes.next()?)?;
                let lo = hex(bytes.next()?)?;
                match hi << 4 | lo {
                    0 => return None,
                    byte => out.push(byte),
                }
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Splits `host` from what follows like `hpdelim2`: a `[...]` host or text up to the first
/// `:` or `/`. Returns the host without brackets, the delimiter seen, and the rest.
fn split_host(s: &str) -> Result<(String, Option<char>, &str), Problem> {
    let (host, after) = match s.strip_prefix('[') {
        Some(inner) => inner
            .split_once(']')
            .ok_or_else(|| Problem::UnclosedBracket(s.to_owned()))?,
        None => match s.find([':', '/']) {
            Some(i) => s.split_at(i),
            None => (s, ""),
        },
    };
    let mut rest = after.chars();
    let delim = rest.next();
    if !matches!(delim, None | Some(':') | Some('/')) {
        return Err(Problem::TextAfterBracket(s.to_owned()));
    }
    if host.is_empty() {
        return Err(Problem::EmptyHost("the host"));
    }
    Ok((host.to_owned(), delim, rest.as_str()))
}

fn optional_port(text: &str) -> Result<Option<u16>, Problem> {
    if text.is_empty() {
        return Ok(None);
    }
    match parse_port(text)? {
        0 => Err(Problem::ZeroPort("a login")),
        port => Ok(Some(port)),
    }
}

/// OpenSSH's `valid_domain` for URI hosts; bracketed IPv6 literals are accepted too
/// (OpenSSH refuses them there, which looks like an oversight rather than a rule).
fn check_domain(host: &str) -> Result<(), Problem> {
    if host.parse::<Ipv6Addr>().is_ok() {
        return Ok(());
    }
    let first_ok = host
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let chars_ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !first_ok || !chars_ok || host.contains("..") {
        return Err(Problem::BadHostName(host.to_owned()));
    }
    Ok(())
}

/// OpenSSH's `ssh_valid_hostname` and `ssh_valid_ruser`: these values end up in `%h`/`%r`
/// tokens and ProxyCommand lines, so shell metacharacters are refused early.
fn validate(user: Option<&str>, host: &str) -> Result<(), Problem> {
    if let Some(user) = user {
        if user.is_empty() {
            return Err(Problem::EmptyUser);
        }
        if !valid_user(user) {
            return Err(Problem::BadUser(user.to_owned()));
        }
    }
    if host.is_empty() {
        return Err(Problem::EmptyHost("the host"));
    }
    let bad = |c: char| "'`\"$\\;&<>|(){},".contains(c) || c.is_whitespace() || c.is_control();
    if host.starts_with('-') || host.chars().any(bad) {
        return Err(Problem::BadHostName(host.to_owned()));
    }
    Ok(())
}

fn valid_user(user: &str) -> bool {
    let forbidden = |c: char| c.is_control() || "'`\";&<>|(){}".contains(c);
    !user.starts_with('-')
        && !user.ends_with('\\')
        && !user.chars().any(forbidden)
        && !user
            .as_bytes()
            .windows(2)
            .any(|w| w.first().is_some_and(u8::is_ascii_whitespace) && w.get(1) == Some(&b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::{assert_rejects, not_number};

    #[test]
    fn jump_lists() {
        let hop = |user: Option<&str>, host: &str, port: Option<u16>| JumpHost {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        };
        let cases = vec![
            ("none", vec![]),
            ("NONE", vec![]),
            ("host", vec![hop(None, "host", None)]),
            ("host:", vec![hop(None, "host", None)]),
            (
                "user@host:2222",
                vec![hop(Some("user"), "host", Some(2222))],
            ),
            ("a@b@host", vec![hop(Some("a@b"), "host", None)]),
            (
                "u1@h1:22,h2,[::1]:2200",
                vec![
                    hop(Some("u1"), "h1", Some(22)),
                    hop(None, "h2", None),
                    hop(None, "::1", Some(2200)),
                ],
            ),
            (
                "ssh://user@host:2222",
                vec![hop(Some("user"), "host", Some(2222))],
            ),
            ("ssh://host/", vec![hop(None, "host", None)]),
            (
                "ssh://us%40er;fp=x@host",
                vec![hop(Some("us@er"), "host", None)],
            ),
            ("ssh://[::1]:22", vec![hop(None, "::1", Some(22))]),
            ("host # a comment", vec![hop(None, "host", None)]),
            ("host   ", vec![hop(None, "host", None)]),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_jump(spec), Ok(want), "{spec:?}");
        }
    }

    #[test]
    fn jump_rejects_malformed() {
        let cases: Vec<(&str, Problem)> = vec![
            ("", Problem::EmptyHost("the host")),
            ("a,,b", Problem::EmptyHost("the host")),
            ("@host", Problem::EmptyUser),
            ("host:0", Problem::ZeroPort("a login")),
            ("host:x", not_number("x")),
            ("host:22:33", not_number("22:33")),
            (
                "-oProxyCommand=x",
                Problem::BadHostName("-oProxyCommand=x".into()),
            ),
            ("u;rm@host", Problem::BadUser("u;rm".into())),
            ("a/b", Problem::BadHostName("a/b".into())),
            ("[::1", Problem::UnclosedBracket("[::1".into())),
            ("[::1]x", Problem::TextAfterBracket("[::1]x".into())),
            ("ssh://host/path", Problem::UriPath("path".into())),
            ("ssh://host:22/path", Problem::UriPath("path".into())),
            ("ssh://ho$t", Problem::BadHostName("ho$t".into())),
            ("ssh://a..b", Problem::BadHostName("a..b".into())),
            ("ssh://%zz@host", Problem::BadEscape("%zz".into())),
            ("ssh://%00@host", Problem::BadEscape("%00".into())),
            ("ssh://@host", Problem::EmptyUser),
        ];
        assert_rejects(parse_jump, &cases);
    }

    #[test]
    fn destinations() {
        let ok = [
            ("host", None, "host", None),
            ("user@host", Some("user"), "host", None),
            ("a@b@host", Some("a@b"), "host", None),
            ("::1", None, "::1", None),
            ("ssh://user@host:2222", Some("user"), "host", Some(2222)),
            ("ssh://[::1]:22", None, "::1", Some(22)),
        ];
        for (spec, user, host, port) in ok {
            let want = (user.map(str::to_owned), host.to_owned(), port);
            assert_eq!(parse_destination(spec), Ok(want), "{spec:?}");
        }
        let bad: Vec<(&str, Problem)> = vec![
            ("", Problem::EmptyHost("the host")),
            ("@host", Problem::EmptyUser),
            ("user@", Problem::EmptyHost("the host")),
            ("-host", Problem::BadHostName("-host".into())),
            ("ho;st", Problem::BadHostName("ho;st".into())),
            ("us`er@host", Problem::BadUser("us`er".into())),
            ("a -b@host", Problem::BadUser("a -b".into())),
            ("ssh://host:0", Problem::ZeroPort("a login")),
        ];
        assert_rejects(parse_destination, &bad);
    }
}
