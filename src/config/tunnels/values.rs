//! Checks of single values (servers, forward specs, times, paths, options): pure functions
//! that return the typed value or a message; the validation pass adds line, tunnel and field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawTarget;
use super::{HostKeyChecking, ServerAddr};
use crate::config::ssh_config::{self, ConfigError};
use crate::forward::proxy_header::ProxyProtocol;
use crate::spec::{self, Listen};

/// How `~` and relative paths in the file are resolved.
#[derive(Debug, Clone)]
pub(super) struct PathRules {
    /// What `~` means.
    home: PathBuf,
    /// The tunnels file's directory.
    base: PathBuf,
}

impl PathRules {
    /// The rules for a file at `file`.
    pub(super) fn new(home: &Path, file: &Path) -> Self {
        PathRules {
            home: home.to_path_buf(),
            base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        }
    }

    /// Each path of a list, resolved.
    pub(super) fn paths(&self, list: &[String]) -> Result<Vec<PathBuf>, String> {
        list.iter().map(|p| self.path(p)).collect()
    }

    /// `~` and `~/x` from the home directory, relative paths from the file's directory.
    pub(super) fn path(&self, p: &str) -> Result<PathBuf, String> {
        if p.is_empty() {
            return Err("the path is empty".to_string());
        }
        if p == "~" {
            return Ok(self.home.clone());
        }
        if let Some(rest) = p.strip_prefix("~/") {
            return Ok(self.home.join(rest.trim_start_matches('/')));
        }
        if p.starts_with('~') {
            return Err(format!(
                "{p:?}: only ~ and ~/ are expanded (~user is not); write the full path"
            ));
        }
        Ok(self.base.join(p))
    }
}

/// A time in OpenSSH's format, at least one second (0 would turn the thing off).
pub(super) fn time(text: &str) -> Result<Duration, String> {
    let secs = ssh_config::parse_time(text.trim()).ok_or_else(|| {
        format!("invalid time {text:?}: expected seconds or a time like 30s, 5m, 1h30m")
    })?;
    match secs {
        0 => Err("must be at least 1s".to_string()),
        s => Ok(Duration::from_secs(s)),
    }
}

/// At least one keepalive may go unanswered before the link counts as dead.
pub(super) fn keepalive_count(n: u32) -> Result<u32, String> {
    match n {
        0 => Err("must be at least 1 (keepalives are how a dead link is noticed)".to_string()),
        n => Ok(n),
    }
}

/// A login name with OpenSSH's rules.
pub(super) fn user(u: &str) -> Result<String, String> {
    // The destination parser holds OpenSSH's rules for user names (no shell metacharacters).
    spec::parse_destination(&format!("{u}@localhost"))
        .map(|_| u.to_owned())
        .map_err(|e| format!("invalid user {u:?}: {}", e.problem))
}

/// The known_hosts path, which must survive `-o` token expansion.
pub(super) fn known_hosts(rules: &PathRules, p: &str) -> Result<PathBuf, String> {
    // The path reaches the client as `-o UserKnownHostsFile=...`, where `${VAR}` is expanded.
    if p.contains("${") {
        return Err(format!("{p:?}: \"${{\" is not allowed in this path"));
    }
    rules.path(p)
}

/// `-F`: a path, or `none` for no config file at all.
pub(super) fn ssh_config_path(rules: &PathRules, p: &str) -> Result<PathBuf, String> {
    match p.eq_ignore_ascii_case("none") {
        true => Ok(PathBuf::from("none")),
        false => rules.path(p),
    }
}

/// StrictHostKeyChecking, limited to the values that never prompt or trust blindly.
pub(super) fn host_key_checking(v: &str) -> Result<HostKeyChecking, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" => Ok(HostKeyChecking::Yes),
        "accept-new" => Ok(HostKeyChecking::AcceptNew),
        "no" | "off" | "false" | "ask" => Err(format!(
            "{v:?} is not allowed: a tunnel runs unattended, so it can neither ask nor trust \
             any key; use \"yes\" (with the relay's key in known_hosts) or \"accept-new\""
        )),
        _ => Err(format!("{v:?}: expected \"yes\" or \"accept-new\"")),
    }
}

/// A ProxyJump chain (`none` included), kept as written.
pub(super) fn jump(j: &str) -> Result<String, String> {
    let j = j.trim();
    spec::parse_jump(j).map_err(|e| e.to_string())?;
    Ok(j.to_owned())
}

/// An explicit tunnel name: it shows in logs and `burrow status`.
pub(super) fn name(n: &str) -> Result<(), String> {
    if n.is_empty() {
        return Err("is empty; leave it out to get a derived name".to_string());
    }
    if n.trim() != n || n.chars().any(char::is_control) {
        return Err(format!(
            "{n:?}: no leading or trailing spaces, no control characters"
        ));
    }
    Ok(())
}

/// One relay: `[user@]host[:port]` (with `[v6]:port`) or `ssh://[user@]host[:port]`.
pub(super) fn server(s: &str) -> Result<ServerAddr, String> {
    let invalid = |why: &str| format!("invalid server {s:?}: {why}");
    if s.contains(',') {
        return Err(invalid(
            "one server per entry (relays in servers = [...], jump hosts in jump)",
        ));
    }
    if s.contains('#') || s.eq_ignore_ascii_case("none") {
        return Err(invalid("expected [user@]host[:port]"));
    }
    // A -J hop has exactly this syntax (and OpenSSH's host and user rules).
    let hops = spec::parse_jump(s).map_err(|e| invalid(&e.problem.to_string()))?;
    match hops.as_slice() {
        [hop] => Ok(ServerAddr {
            user: hop.user.clone(),
            host: hop.host.clone(),
            port: hop.port,
        }),
        _ => Err(invalid("expected [user@]host[:port]")),
    }
}

/// A `-L` spec; returns its listener.
pub(super) fn local_spec(s: &str) -> Result<Listen, String> {
    spec::parse_local(s)
        .map(|f| f.listen)
        .map_err(|e| e.to_string())
}

/// A `-R` spec with a target (the client does not do reverse dynamic forwarding yet).
pub(super) fn remote_spec(s: &str) -> Result<(), String> {
    let fwd = spec::parse_remote(s).map_err(|e| e.to_string())?;
    match fwd.target {
        Some(_) => Ok(()),
        None => Err(format!(
            "{s:?} has no target: reverse dynamic forwarding is not supported yet; \
             write [bind:]port:host:hostport"
        )),
    }
}

/// A `proxy_protocol` value: `"v1"`, `"v2"` or `"none"` (also `1`, `2`, `no`, as the
/// ProxyProtocol option takes them).
pub(super) fn proxy_protocol(v: &str) -> Result<Option<ProxyProtocol>, String> {
    ProxyProtocol::parse(v).ok_or_else(|| format!("{v:?}: expected \"v1\", \"v2\" or \"none\""))
}

/// A `-D` spec; returns its listener.
pub(super) fn dynamic_spec(s: &str) -> Result<Listen, String> {
    spec::parse_dynamic(s)
        .map(|f| f.listen)
        .map_err(|e| e.to_string())
}

/// `host/R<spec>` from the first server and the first forward (remote, else local, else
/// dynamic): readable in logs and `burrow status`, and free of spaces.
pub(super) fn derived_name(servers: &[ServerAddr], t: &RawTarget) -> String {
    let host = servers.first().map_or("", |s| s.host.as_str());
    let first = t
        .remote
        .first()
        .map(|r| format!("R{}", r.get_ref().forward))
        .or_else(|| {
            [("L", &t.local), ("D", &t.dynamic)]
                .into_iter()
                .find_map(|(flag, list)| list.first().map(|s| format!("{flag}{}", s.get_ref())))
        });
    format!("{host}/{}", first.unwrap_or_default())
}

/// ssh_config keys a tunnel sets from its own fields, with what to write instead.
const RESERVED_OPTIONS: &[(&str, &str)] = &[
    ("port", "set the port in server or servers"),
    ("hostname", "set the host in server or servers"),
    ("user", "set user, or user@ in server"),
    ("identityfile", "set identity"),
    ("proxyjump", "set jump"),
    ("proxycommand", "set jump"),
    ("localforward", "set local"),
    ("remoteforward", "set remote"),
    ("dynamicforward", "set dynamic"),
    ("clearallforwardings", "a tunnel's forwards are its own"),
    ("serveraliveinterval", "set keepalive_interval"),
    ("serveralivecountmax", "set keepalive_count"),
    ("connecttimeout", "set connect_timeout"),
    ("stricthostkeychecking", "set host_key_checking"),
    ("userknownhostsfile", "set known_hosts"),
    ("compression", "set compression"),
    ("batchmode", "burrow up always sets BatchMode=yes"),
    (
        "exitonforwardfailure",
        "burrow up always sets ExitOnForwardFailure=yes",
    ),
];

/// Keys the client reads that `ssh_config::KNOWN_KEYS` does not list (yet).
const MORE_KNOWN_OPTIONS: &[&str] = &["HashKnownHosts", "AddressFamily"];

/// One `-o`-style option: valid syntax, a key burrow knows, and not one of the tunnel's own.
pub(super) fn option(o: &str) -> Result<String, String> {
    let (key, _) = ssh_config::parse_option_line(o).map_err(|e| match e {
        ConfigError::Option { problem, .. } => format!("{o:?}: {problem}"),
        other => other.to_string(),
    })?;
    if let Some((_, instead)) = RESERVED_OPTIONS.iter().find(|(k, _)| *k == key) {
        return Err(format!("{o:?}: {instead}"));
    }
    let known = ssh_config::KNOWN_KEYS
        .iter()
        .chain(MORE_KNOWN_OPTIONS)
        .any(|k| k.eq_ignore_ascii_case(&key));
    match known {
        true => Ok(o.to_owned()),
        false => {
            let written = o.trim_start().split([' ', '\t', '=', '"']).next();
            Err(format!(
                "{o:?}: unknown option {:?}",
                written.unwrap_or(&key)
            ))
        }
    }
}
