//! Forwarding decisions for `burrow serve`: pure functions, no I/O.
//!
//! The rules mirror OpenSSH's sshd so that an admin's intuition (and an existing
//! sshd_config / authorized_keys) carries over:
//! - `AllowTcpForwarding` and the key's `no-port-forwarding` are checked first
//!   (serverloop.c `server_request_direct_tcpip`, `server_input_global_request`);
//! - the server-wide list and the key's list must *both* allow a forward
//!   (channels.c `channel_connect_to_port`, `check_rfwd_permission`);
//! - `permitopen` hosts are literal (`*` alone is the only wildcard), while
//!   `permitlisten` hosts are glob patterns (channels.c `open_match`, `remote_open_match`);
//! - the permission check sees the listen address the client *asked for*; `GatewayPorts`
//!   then decides where the listener really binds (channels.c `channel_fwd_bind_addr`).

use std::fmt;
use std::str::FromStr;

use std::time::SystemTime;

use crate::pattern::match_pattern;
use crate::spec::{self, BindTarget, PermitProblem};

/// The options relevant to a forwarding-only server, after applying a line's option list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOptions {
    /// May forward at all; `restrict` and `no-port-forwarding` clear it, `port-forwarding`
    /// sets it again.
    pub port_forwarding: bool,
    /// `permitopen="host:port"` entries: `None` when the line has none (the server decides),
    /// `Some(empty)` for `permitopen="none"` (no -L/-W/-D at all for this key).
    pub permit_open: Option<Vec<PermitOpen>>,
    /// `permitlisten="[host:]port"` entries; empty means the key adds no limit (unless
    /// `permit_listen_none`).
    pub permit_listen: Vec<PermitListen>,
    /// `permitlisten="none"`: no -R at all for this key, port or alias, while -L/-W/-D stay as
    /// its `permitopen=` says (what a visitor's line needs: `port-forwarding` opens both).
    pub permit_listen_none: bool,
    /// `from="pattern-list"` as written (validated at load); check it with
    /// [`from_allows`](super::authorized_keys::from_allows).
    pub from: Option<String>,
    /// `burrow-privileged-ports`: may listen on ports below 1024.
    pub privileged_ports: bool,
    /// `burrow-max-listeners=N`: cap on concurrent `-R` listeners for this key.
    pub max_listeners: Option<u32>,
    /// `burrow-max-channels=N`: cap on concurrently open channels for this key.
    pub max_channels: Option<u32>,
    /// `burrow-permitremoteopen="host:port"` entries: every connection through this key's
    /// -R listeners must be a SOCKS request for one of them (reverse dynamic forwarding,
    /// checked by the relay in [`super::socks_gate`]); empty means no such limit.
    pub remote_open: Vec<PermitOpen>,
    /// `expiry-time="YYYYMMDD[HHMM[SS]][Z]"`: refused after this instant. Read in the relay's
    /// local time zone unless the value ends in `Z`/`UTC`, as sshd does. The earliest of
    /// several wins, as in sshd.
    pub expiry: Option<SystemTime>,
    /// A FIDO (`sk-*`) signature must show that the user touched the key; cleared by
    /// `no-touch-required`. sshd's default, so a stolen or unattended security key cannot
    /// sign logins silently.
    pub touch_required: bool,
    /// `verify-required`: a FIDO signature must show that the key verified the user (PIN or
    /// biometrics).
    pub verify_required: bool,
    /// `command="..."`, kept for completeness: the relay refuses sessions anyway.
    pub command: Option<String>,
}

impl Default for KeyOptions {
    /// A key line without options: forwarding allowed, no limits (sshd's defaults).
    fn default() -> Self {
        Self {
            port_forwarding: true,
            permit_open: None,
            permit_listen: Vec::new(),
            permit_listen_none: false,
            from: None,
            privileged_ports: false,
            max_listeners: None,
            max_channels: None,
            remote_open: Vec::new(),
            expiry: None,
            touch_required: true,
            verify_required: false,
            command: None,
        }
    }
}

/// Why a security-key (FIDO, `sk-*`) signature does not meet the key line's requirements, in
/// sshd's words; `None` when it does. `user_present`/`user_verified` are the signed
/// authenticator flags.
pub fn security_key_problem(
    options: &KeyOptions,
    user_present: bool,
    user_verified: bool,
) -> Option<&'static str> {
    if options.touch_required && !user_present {
        Some("user presence (authenticator touch) requirement not met")
    } else if options.verify_required && !user_verified {
        Some("user verification requirement not met")
    } else {
        None
    }
}

impl KeyOptions {
    /// True once the clock is past `expiry-time`.
    pub fn is_expired(&self) -> bool {
        self.expired_at(SystemTime::now())
    }

    /// True once `now` is past `expiry-time` (sshd: `valid_before < now`); for tests and
    /// callers that hold one clock reading.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        self.expiry.is_some_and(|until| now > until)
    }
}

/// One `PermitOpen` / `permitopen=` entry: a destination a `-L`/`-D`/`-W` forward may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermitOpen {
    /// Literal host name or address (IPv6 without brackets), or `*` for any host.
    /// Compared ASCII-case-insensitively; no name lookup, no other wildcards.
    pub host: String,
    /// Destination port; `None` means `*` (any port).
    pub port: Option<u16>,
}

/// One `PermitListen` / `permitlisten=` entry: an address/port a `-R` forward may listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermitListen {
    /// Glob pattern (`*`, `?`) for the listen address the client requests, IPv6 without
    /// brackets. `None` is the bare-port form (`permitlisten="8080"`), which sshd expands
    /// to `*:8080`: it matches any requested address, `GatewayPorts` still decides the bind.
    pub host: Option<String>,
    /// Listen port; `None` means `*` (any port, including 0 = "allocate one for me").
    pub port: Option<u16>,
}

/// sshd's `GatewayPorts`: may a `-R` listener bind to non-loopback addresses?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GatewayPorts {
    /// Listeners bind to loopback whatever the client asked (sshd's default).
    #[default]
    No,
    /// Listeners bind to the wildcard address whatever the client asked.
    Yes,
    /// The client chooses the address.
    ClientSpecified,
}

/// sshd's `AllowTcpForwarding`: which forwarding directions the server permits at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AllowTcpForwarding {
    /// Both directions (`yes` / `all`), sshd's default.
    #[default]
    Yes,
    /// Neither direction.
    No,
    /// Only `-L`/`-D`/`-W` (direct-tcpip).
    Local,
    /// Only `-R` (tcpip-forward).
    Remote,
}

impl AllowTcpForwarding {
    fn allows_local(self) -> bool {
        matches!(self, Self::Yes | Self::Local)
    }

    fn allows_remote(self) -> bool {
        matches!(self, Self::Yes | Self::Remote)
    }
}

/// The server-wide `permit_open` of serve.toml.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServerOpen {
    /// Not set.
    #[default]
    Unset,
    /// `["any"]`.
    Any,
    /// A list of `host:port` entries; empty for `["none"]`.
    Only(Vec<PermitOpen>),
}

/// Server-wide forwarding settings, the sshd_config subset that matters to a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPolicy {
    /// `GatewayPorts`.
    pub gateway_ports: GatewayPorts,
    /// `AllowTcpForwarding`.
    pub allow_tcp_forwarding: AllowTcpForwarding,
    /// `PermitOpen`.
    pub permit_open: ServerOpen,
    /// `PermitListen`: `None` = any (the default), `Some(empty)` = none.
    pub permit_listen: Option<Vec<PermitListen>>,
    /// `aliases` (default on): a one-label name is a private alias, never bound or resolved
    /// (see [`super::alias`]); off restores sshd's resolve-and-bind.
    pub aliases: bool,
}

impl Default for ServerPolicy {
    /// sshd's defaults, with aliases on.
    fn default() -> Self {
        Self {
            gateway_ports: GatewayPorts::default(),
            allow_tcp_forwarding: AllowTcpForwarding::default(),
            permit_open: ServerOpen::default(),
            permit_listen: None,
            aliases: true,
        }
    }
}

/// The answer to "may this key do this forward?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refuse, and log why.
    Deny(DenyReason),
}

/// Why a forward was refused; `Display` is the short phrase for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    /// `AllowTcpForwarding` excludes this direction.
    #[error("forwarding disabled by AllowTcpForwarding")]
    ServerForwardingDisabled,
    /// The key has `restrict` or `no-port-forwarding`.
    #[error("port forwarding disabled for this key")]
    KeyForwardingDisabled,
    /// The destination is not in the server-wide `PermitOpen`.
    #[error("not in PermitOpen")]
    NotInPermitOpen,
    /// The destination is not in the key's `permitopen=` list.
    #[error("not in the key's permitopen")]
    NotInKeyPermitOpen,
    /// The listen address/port is not in the server-wide `PermitListen`.
    #[error("not in PermitListen")]
    NotInPermitListen,
    /// The listen address/port is not in the key's `permitlisten=` list.
    #[error("not in the key's permitlisten")]
    NotInKeyPermitListen,
    /// A listen port below 1024 without the key option `burrow-privileged-ports`.
    #[error("privileged port needs burrow-privileged-ports")]
    PrivilegedPort,
    /// The default: -L/-W/-D reach only listeners published through this relay.
    #[error("not a listener published through this relay (permit_open in serve.toml or the key's permitopen opens more)")]
    NotPublished,
    /// The relay's own SSH or metrics address, not named explicitly in a permit_open list.
    #[error(
        "the relay's own SSH or metrics address (only an explicit permit_open entry opens it)"
    )]
    RelayAddress,
    /// An alias that neither the key's `permitopen=` nor the server's `permit_open` names.
    #[error("a private alias: not named in the key's permitopen or in permit_open")]
    AliasNotPermitted,
}

/// A malformed `PermitOpen`/`PermitListen`/`GatewayPorts`/`AllowTcpForwarding` value.
/// Callers add the file and line; the message quotes the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// No `:port` part (or an unclosed `[`).
    #[error("\"{0}\": expected host:port (IPv6 in brackets, e.g. [::1]:22)")]
    MissingPort(String),
    /// Empty host before the colon.
    #[error("\"{0}\": empty host (use * for any host)")]
    EmptyHost(String),
    /// Port not a number in 1..=65535 and not `*`.
    #[error("\"{0}\": invalid port (expected 1-65535 or *)")]
    BadPort(String),
    /// `any`/`none` mixed with other entries.
    #[error("\"{0}\" must appear alone")]
    KeywordNotAlone(String),
    /// `any`/`none` given to a single-entry parser.
    #[error("\"{0}\" is a list keyword, not a host:port entry")]
    KeywordAsEntry(String),
    /// An empty list.
    #[error("missing argument")]
    Empty,
    /// Not a known value for a keyword setting.
    #[error("\"{value}\": expected one of {expected}")]
    BadKeyword {
        /// What was given.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
}

impl FromStr for GatewayPorts {
    type Err = PolicyError;

    /// Parses sshd's spellings: `no`, `yes`, `clientspecified`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "no" => Ok(Self::No),
            "yes" => Ok(Self::Yes),
            "clientspecified" => Ok(Self::ClientSpecified),
            _ => Err(PolicyError::BadKeyword {
                value: s.to_owned(),
                expected: "no, yes, clientspecified",
            }),
        }
    }
}

impl FromStr for AllowTcpForwarding {
    type Err = PolicyError;

    /// Parses sshd's spellings: `yes`/`all`, `no`, `local`, `remote`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "yes" | "all" => Ok(Self::Yes),
            "no" => Ok(Self::No),
            "local" => Ok(Self::Local),
            "remote" => Ok(Self::Remote),
            _ => Err(PolicyError::BadKeyword {
                value: s.to_owned(),
                expected: "yes, all, no, local, remote",
            }),
        }
    }
}

/// Where a `-R` listener for `requested` binds (channels.c `channel_fwd_bind_addr`).
///
/// `No`: loopback, except that an explicit `127.0.0.1` or `::1` is honoured so a client
/// can pick one family (sshd does the same). `Yes`: wildcard. `ClientSpecified`: `""`/`*`
/// mean wildcard, `localhost` means loopback on all families, anything else is literal.
pub fn listen_addr(requested: &str, gateway: GatewayPorts) -> BindTarget {
    let explicit_loopback = requested == "127.0.0.1" || requested == "::1";
    match gateway {
        GatewayPorts::Yes => BindTarget::Any,
        GatewayPorts::No if explicit_loopback => BindTarget::Host(requested.to_owned()),
        GatewayPorts::No => BindTarget::Loopback,
        GatewayPorts::ClientSpecified => match requested {
            "" | "*" => BindTarget::Any,
            r if r.eq_ignore_ascii_case("localhost") => BindTarget::Loopback,
            r => BindTarget::Host(r.to_owned()),
        },
    }
}

/// How far a `-L`/`-D`/`-W` destination may reach, decided before its name is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Refused whatever the name resolves to.
    Deny(DenyReason),
    /// Only if it resolves to a listener published through this relay (-R); refused for
    /// this reason otherwise.
    Published(DenyReason),
    /// Allowed by `permit_open = ["any"]` or by a list entry. `explicit` when an entry names
    /// this very host and port (no `*`): only that opens the relay's own SSH and metrics
    /// addresses.
    Granted {
        /// Named literally by an entry.
        explicit: bool,
    },
}

/// `-L` / `-D` / `-W`: how far may this key's direct-tcpip channel to `host:port` reach?
///
/// Default-deny, unlike sshd: a key without `permitopen=` on a relay without `permit_open`
/// reaches only listeners published through the relay (the two-hop path), never the relay's
/// other services or network. `permit_open = ["any"]` or a list in serve.toml and the key's
/// `permitopen=` open more; where both are given both must allow (as in sshd, the key option
/// narrows). A server list leaves published listeners reachable; a key list does not.
pub fn check_open(policy: &ServerPolicy, key: &KeyOptions, host: &str, port: u16) -> Reach {
    let names = |list: &[PermitOpen]| {
        list.iter()
            .any(|p| p.host != "*" && p.port == Some(port) && p.host.eq_ignore_ascii_case(host))
    };
    if !policy.allow_tcp_forwarding.allows_local() {
        return Reach::Deny(DenyReason::ServerForwardingDisabled);
    }
    if !key.port_forwarding {
        return Reach::Deny(DenyReason::KeyForwardingDisabled);
    }
    if let Some(list) = &key.permit_open {
        if !permits(list, host, port) {
            return Reach::Deny(DenyReason::NotInKeyPermitOpen);
        }
    }
    let key_names = key.permit_open.as_deref().is_some_and(names);
    match (&policy.permit_open, &key.permit_open) {
        (ServerOpen::Only(list), _) if list.is_empty() => Reach::Deny(DenyReason::NotInPermitOpen),
        (ServerOpen::Unset, None) => Reach::Published(DenyReason::NotPublished),
        (ServerOpen::Unset, Some(_)) | (ServerOpen::Any, _) => Reach::Granted {
            explicit: key_names,
        },
        (ServerOpen::Only(list), _) if permits(list, host, port) => Reach::Granted {
            explicit: key_names || names(list),
        },
        (ServerOpen::Only(_), _) => Reach::Published(DenyReason::NotInPermitOpen),
    }
}

/// `-R`: may this key listen on (`requested_addr`, `port`)?
///
/// The address is the one the client sent (OpenSSH sends `localhost` when the user gave
/// none), checked before `GatewayPorts` rewrites it, as sshd does. Port 0 ("allocate")
/// only passes a list whose matching entry has port `*`, because sshd compares the
/// requested port, not the allocated one. Ports 1-1023 also need `burrow-privileged-ports`.
pub fn check_listen(
    policy: &ServerPolicy,
    key: &KeyOptions,
    requested_addr: &str,
    port: u16,
) -> Decision {
    let addr = requested_addr.to_ascii_lowercase();
    let matches = |p: &PermitListen| listen_match(p, &addr, port);
    let reason = if !policy.allow_tcp_forwarding.allows_remote() {
        Some(DenyReason::ServerForwardingDisabled)
    } else if !key.port_forwarding {
        Some(DenyReason::KeyForwardingDisabled)
    } else if port != 0 && port < 1024 && !key.privileged_ports {
        Some(DenyReason::PrivilegedPort)
    } else if !server_list_allows(policy.permit_listen.as_deref(), matches) {
        Some(DenyReason::NotInPermitListen)
    } else if key.permit_listen_none || !key_list_allows(&key.permit_listen, matches) {
        Some(DenyReason::NotInKeyPermitListen)
    } else {
        None
    };
    reason.map_or(Decision::Allow, Decision::Deny)
}

/// Server lists: `None` permits everything, `Some(empty)` nothing.
fn server_list_allows<T>(list: Option<&[T]>, matches: impl Fn(&T) -> bool) -> bool {
    list.is_none_or(|entries| entries.iter().any(matches))
}

/// Key lists: empty means the key adds no restriction.
fn key_list_allows<T>(list: &[T], matches: impl Fn(&T) -> bool) -> bool {
    list.is_empty() || list.iter().any(matches)
}

/// Whether `host:port` matches one of `list` (literal hosts, `*` for any host or port).
pub fn permits(list: &[PermitOpen], host: &str, port: u16) -> bool {
    list.iter().any(|p| open_match(p, host, port))
}

/// sshd compares the host with `strcmp`; burrow ignores ASCII case, since DNS does too.
fn open_match(p: &PermitOpen, host: &str, port: u16) -> bool {
    let port_ok = p.port.is_none_or(|want| want == port);
    let host_ok = p.host == "*" || p.host.eq_ignore_ascii_case(host);
    port_ok && host_ok
}

/// sshd lowercases only the request; burrow lowercases the pattern too. `addr` is lowercase.
fn listen_match(p: &PermitListen, addr: &str, port: u16) -> bool {
    let port_ok = p.port.is_none_or(|want| want == port);
    let host_ok = p
        .host
        .as_deref()
        .is_none_or(|pattern| match_pattern(addr, &pattern.to_ascii_lowercase()));
    port_ok && host_ok
}

/// Parses one `PermitOpen` entry, `host:port` (`[v6]:port`; `*` for either part).
pub fn parse_permit_open(s: &str) -> Result<PermitOpen, PolicyError> {
    reject_keyword(s)?;
    let (host, port) = split_host_port(s, false)?;
    Ok(PermitOpen { host, port })
}

/// Parses one `PermitListen` entry, `[host:]port`; a bare port means any host, as in sshd.
pub fn parse_permit_listen(s: &str) -> Result<PermitListen, PolicyError> {
    reject_keyword(s)?;
    if !s.contains(':') {
        return Ok(PermitListen {
            host: None,
            port: spec::permit_port(s).map_err(|_| PolicyError::BadPort(s.to_owned()))?,
        });
    }
    let (host, port) = split_host_port(s, false)?;
    Ok(PermitListen {
        host: Some(host),
        port,
    })
}

/// Adds one authorized_keys `permitopen="..."` value to a key's list: `host:port` (or sshd's
/// `host/port`), or `none`, which closes -L/-W/-D for the key and must stand alone. README,
/// SECURITY.md and the packaged authorized_keys recommend `permitopen="none"`: refusing it
/// would push an operator to delete the option and get a less restricted key.
pub fn add_key_permit_open(
    list: &mut Option<Vec<PermitOpen>>,
    value: &str,
) -> Result<(), PolicyError> {
    let not_alone = || PolicyError::KeywordNotAlone("none".to_owned());
    if value == "none" {
        return match list.get_or_insert_with(Vec::new).is_empty() {
            true => Ok(()),
            false => Err(not_alone()),
        };
    }
    reject_keyword(value)?;
    let (host, port) = split_host_port(value, true)?;
    match list {
        Some(entries) if entries.is_empty() => Err(not_alone()),
        _ => {
            list.get_or_insert_with(Vec::new)
                .push(PermitOpen { host, port });
            Ok(())
        }
    }
}

/// Adds one authorized_keys `permitlisten="..."` value to a key's list: `[host:]port`, or
/// `none` (sets `none`), which closes -R for the key, ports and aliases, and must stand alone,
/// as `permitopen="none"` does for -L. A visitor's line needs it: `port-forwarding` alone would
/// let the visitor publish, and so take an alias name while its publisher reconnects.
pub fn add_key_permit_listen(
    list: &mut Vec<PermitListen>,
    none: &mut bool,
    value: &str,
) -> Result<(), PolicyError> {
    let not_alone = || PolicyError::KeywordNotAlone("none".to_owned());
    if value == "none" {
        if !list.is_empty() {
            return Err(not_alone());
        }
        *none = true;
        return Ok(());
    }
    let entry = parse_permit_listen(value)?;
    if *none {
        return Err(not_alone());
    }
    list.push(entry);
    Ok(())
}

/// Parses the whitespace-separated arguments of one `PermitOpen` line:
/// `any` → `None` (no limit), `none` → `Some(vec![])`, else the entries.
pub fn parse_permit_open_list(args: &[&str]) -> Result<Option<Vec<PermitOpen>>, PolicyError> {
    parse_list(args, parse_permit_open)
}

/// Parses the arguments of one `PermitListen` line, with the same `any`/`none` keywords.
pub fn parse_permit_listen_list(args: &[&str]) -> Result<Option<Vec<PermitListen>>, PolicyError> {
    parse_list(args, parse_permit_listen)
}

fn parse_list<T>(
    args: &[&str],
    parse: fn(&str) -> Result<T, PolicyError>,
) -> Result<Option<Vec<T>>, PolicyError> {
    match args {
        [] => Err(PolicyError::Empty),
        ["any"] => Ok(None),
        ["none"] => Ok(Some(Vec::new())),
        _ => {
            if let Some(k) = args.iter().find(|a| is_keyword(a)) {
                return Err(PolicyError::KeywordNotAlone((*k).to_owned()));
            }
            args.iter()
                .map(|a| parse(a))
                .collect::<Result<_, _>>()
                .map(Some)
        }
    }
}

fn is_keyword(s: &str) -> bool {
    s == "any" || s == "none"
}

fn reject_keyword(s: &str) -> Result<(), PolicyError> {
    if is_keyword(s) {
        return Err(PolicyError::KeywordAsEntry(s.to_owned()));
    }
    Ok(())
}

/// Splits `host:port` or `[host]:port` by the rule the client's PermitRemoteOpen shares
/// ([`spec::split_permit`]). With `allow_slash`, `host/port` is accepted too, as in
/// authorized_keys `permitopen=`.
pub(crate) fn split_host_port(
    s: &str,
    allow_slash: bool,
) -> Result<(String, Option<u16>), PolicyError> {
    let (host, port) = spec::split_permit(s, allow_slash).map_err(|problem| match problem {
        PermitProblem::UnclosedBracket | PermitProblem::MissingPort => {
            PolicyError::MissingPort(s.to_owned())
        }
        PermitProblem::EmptyHost => PolicyError::EmptyHost(s.to_owned()),
        PermitProblem::BadPort => PolicyError::BadPort(s.to_owned()),
    })?;
    Ok((host.to_owned(), port))
}

fn fmt_host(f: &mut fmt::Formatter<'_>, host: &str) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]")
    } else {
        f.write_str(host)
    }
}

fn fmt_port(f: &mut fmt::Formatter<'_>, port: Option<u16>) -> fmt::Result {
    match port {
        Some(p) => write!(f, "{p}"),
        None => f.write_str("*"),
    }
}

impl fmt::Display for PermitOpen {
    /// The config spelling, `host:port`, so log lines can quote the rule.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_host(f, &self.host)?;
        f.write_str(":")?;
        fmt_port(f, self.port)
    }
}

impl fmt::Display for PermitListen {
    /// The config spelling, `[host:]port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(host) = &self.host {
            fmt_host(f, host)?;
            f.write_str(":")?;
        }
        fmt_port(f, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AllowTcpForwarding::{Local, Remote, Yes};
    use Decision::{Allow, Deny};
    use DenyReason::*;

    fn opens(specs: &[&str]) -> Vec<PermitOpen> {
        specs.iter().flat_map(|s| parse_permit_open(s)).collect()
    }

    fn listens(specs: &[&str]) -> Vec<PermitListen> {
        specs.iter().flat_map(|s| parse_permit_listen(s)).collect()
    }

    fn server(
        allow: AllowTcpForwarding,
        open: Option<&[&str]>,
        listen: Option<&[&str]>,
    ) -> ServerPolicy {
        ServerPolicy {
            gateway_ports: GatewayPorts::No,
            allow_tcp_forwarding: allow,
            permit_open: open.map_or(ServerOpen::Unset, |o| ServerOpen::Only(opens(o))),
            permit_listen: listen.map(listens),
            aliases: true,
        }
    }

    fn key(forwarding: bool, open: &[&str], listen: &[&str], privileged: bool) -> KeyOptions {
        KeyOptions {
            port_forwarding: forwarding,
            permit_open: (!open.is_empty()).then(|| opens(open)),
            permit_listen: listens(listen),
            privileged_ports: privileged,
            ..KeyOptions::default()
        }
    }

    #[test]
    fn security_key_signatures_need_touch_unless_waived_and_verification_when_asked() {
        let default = KeyOptions::default();
        let no_touch = KeyOptions {
            touch_required: false,
            ..KeyOptions::default()
        };
        let verify = KeyOptions {
            verify_required: true,
            ..KeyOptions::default()
        };
        let touch = Some("user presence (authenticator touch) requirement not met");
        let uv = Some("user verification requirement not met");
        #[rustfmt::skip]
        let cases = [
            // options,  present, verified, problem
            (&default,   true,    false,    None),
            (&default,   false,   false,    touch),
            (&default,   false,   true,     touch),
            (&no_touch,  false,   false,    None),
            (&verify,    true,    false,    uv),
            (&verify,    true,    true,     None),
            (&verify,    false,   true,     touch),
        ];
        for (options, present, verified, want) in cases {
            assert_eq!(
                security_key_problem(options, present, verified),
                want,
                "{options:?} present={present} verified={verified}"
            );
        }
    }

    #[test]
    fn listen_addr_follows_gateway_ports() {
        use BindTarget::{Any, Loopback};
        use GatewayPorts::{ClientSpecified as Client, No, Yes};
        let host = |s: &str| BindTarget::Host(s.to_owned());
        #[rustfmt::skip]
        let cases = [
            ("localhost",   No,     Loopback),
            ("",            No,     Loopback),
            ("*",           No,     Loopback),
            ("0.0.0.0",     No,     Loopback),
            ("192.168.1.5", No,     Loopback),
            ("127.0.0.1",   No,     host("127.0.0.1")),
            ("::1",         No,     host("::1")),
            ("localhost",   Yes,    Any),
            ("127.0.0.1",   Yes,    Any),
            ("192.168.1.5", Yes,    Any),
            ("",            Client, Any),
            ("*",           Client, Any),
            ("localhost",   Client, Loopback),
            ("LocalHost",   Client, Loopback),
            ("127.0.0.1",   Client, host("127.0.0.1")),
            ("0.0.0.0",     Client, host("0.0.0.0")),
            ("::",          Client, host("::")),
            ("192.168.1.5", Client, host("192.168.1.5")),
            ("relay.example.com", Client, host("relay.example.com")),
        ];
        for (requested, gateway, want) in cases {
            assert_eq!(
                listen_addr(requested, gateway),
                want,
                "{requested:?} {gateway:?}"
            );
        }
    }

    #[test]
    fn permit_open_parsing() {
        use PolicyError::{BadPort, EmptyHost, KeywordAsEntry, MissingPort};
        let ok = |h: &str, p| {
            Ok(PermitOpen {
                host: h.to_owned(),
                port: p,
            })
        };
        let err = |e: fn(String) -> PolicyError, s: &str| Err(e(s.to_owned()));
        #[rustfmt::skip]
        let cases = [
            ("db:5432",           ok("db", Some(5432))),
            ("DB.example.com:22", ok("DB.example.com", Some(22))),
            ("*:443",             ok("*", Some(443))),
            ("db:*",              ok("db", None)),
            ("*:*",               ok("*", None)),
            ("10.0.0.1:65535",    ok("10.0.0.1", Some(65535))),
            ("[::1]:22",          ok("::1", Some(22))),
            ("[2001:db8::1]:*",   ok("2001:db8::1", None)),
            ("db",                err(MissingPort, "db")),
            ("db/22",             err(MissingPort, "db/22")),
            ("[::1]",             err(MissingPort, "[::1]")),
            ("[::1:22",           err(MissingPort, "[::1:22")),
            ("::1:22",            err(EmptyHost, "::1:22")),
            (":22",               err(EmptyHost, ":22")),
            ("[]:22",             err(EmptyHost, "[]:22")),
            ("db:",               err(BadPort, "db:")),
            ("db:0",              err(BadPort, "db:0")),
            ("db:65536",          err(BadPort, "db:65536")),
            ("db:+22",            err(BadPort, "db:+22")),
            ("db:ssh",            err(BadPort, "db:ssh")),
            ("any",               err(KeywordAsEntry, "any")),
            ("none",              err(KeywordAsEntry, "none")),
        ];
        for (input, want) in cases {
            assert_eq!(parse_permit_open(input), want, "{input:?}");
        }
    }

    #[test]
    fn permit_listen_parsing() {
        use PolicyError::{BadPort, KeywordAsEntry, MissingPort};
        let ok = |h: Option<&str>, p| {
            Ok(PermitListen {
                host: h.map(str::to_owned),
                port: p,
            })
        };
        let err = |e: fn(String) -> PolicyError, s: &str| Err(e(s.to_owned()));
        #[rustfmt::skip]
        let cases = [
            ("8080",           ok(None, Some(8080))),
            ("*",              ok(None, None)),
            ("localhost:8080", ok(Some("localhost"), Some(8080))),
            ("*:*",            ok(Some("*"), None)),
            ("192.168.*:22",   ok(Some("192.168.*"), Some(22))),
            ("[::1]:2222",     ok(Some("::1"), Some(2222))),
            ("0",              err(BadPort, "0")),
            ("http",           err(BadPort, "http")),
            ("",               err(BadPort, "")),
            ("localhost:",     err(BadPort, "localhost:")),
            ("[::1]",          err(MissingPort, "[::1]")),
            ("none",           err(KeywordAsEntry, "none")),
        ];
        for (input, want) in cases {
            assert_eq!(parse_permit_listen(input), want, "{input:?}");
        }
    }

    #[test]
    fn permit_lists_and_keywords() {
        fn not_alone<T>(k: &str) -> Result<T, PolicyError> {
            Err(PolicyError::KeywordNotAlone(k.to_owned()))
        }
        assert_eq!(parse_permit_open_list(&["any"]), Ok(None));
        assert_eq!(parse_permit_open_list(&["none"]), Ok(Some(vec![])));
        let two = ["a:1", "[::1]:*"];
        assert_eq!(parse_permit_open_list(&two), Ok(Some(opens(&two))));
        assert_eq!(parse_permit_open_list(&["a:1", "any"]), not_alone("any"));
        assert_eq!(parse_permit_open_list(&[]), Err(PolicyError::Empty));
        assert_eq!(parse_permit_listen_list(&["none"]), Ok(Some(vec![])));
        let two = ["8080", "localhost:*"];
        assert_eq!(parse_permit_listen_list(&two), Ok(Some(listens(&two))));
        assert_eq!(
            parse_permit_listen_list(&["none", "8080"]),
            not_alone("none")
        );
    }

    #[test]
    fn key_permitopen_none_stands_alone() {
        let add = |values: &[&str]| {
            let mut list = None;
            for v in values {
                add_key_permit_open(&mut list, v)?;
            }
            Ok::<_, PolicyError>(list)
        };
        let not_alone = Err(PolicyError::KeywordNotAlone("none".to_owned()));
        assert_eq!(add(&["none"]), Ok(Some(vec![])));
        assert_eq!(add(&["none", "none"]), Ok(Some(vec![])));
        assert_eq!(add(&["db/5432"]), Ok(Some(opens(&["db:5432"]))));
        assert_eq!(add(&["none", "db:1"]), not_alone);
        assert_eq!(add(&["db:1", "none"]), not_alone);
        let any = Err(PolicyError::KeywordAsEntry("any".to_owned()));
        assert_eq!(add(&["any"]), any);
        let closed = KeyOptions {
            permit_open: Some(vec![]),
            ..KeyOptions::default()
        };
        let policy = server(Yes, None, None);
        assert_eq!(
            check_open(&policy, &closed, "localhost", 8087),
            Reach::Deny(NotInKeyPermitOpen)
        );
    }

    #[test]
    fn display_is_the_config_spelling() {
        for spec in ["db:5432", "*:*", "[::1]:22", "[2001:db8::1]:*"] {
            assert_eq!(opens(&[spec])[0].to_string(), spec);
        }
        for spec in ["8080", "*", "localhost:*", "[::1]:2222"] {
            assert_eq!(listens(&[spec])[0].to_string(), spec);
        }
    }

    #[test]
    fn keyword_settings_parse() {
        assert_eq!("no".parse(), Ok(GatewayPorts::No));
        assert_eq!("Yes".parse(), Ok(GatewayPorts::Yes));
        assert_eq!("clientspecified".parse(), Ok(GatewayPorts::ClientSpecified));
        assert!("maybe".parse::<GatewayPorts>().is_err());
        for (text, want) in [
            ("all", Yes),
            ("yes", Yes),
            ("local", Local),
            ("remote", Remote),
        ] {
            assert_eq!(text.parse(), Ok(want));
        }
        assert_eq!("no".parse(), Ok(AllowTcpForwarding::No));
        let err = "sideways"
            .parse::<AllowTcpForwarding>()
            .map_err(|e| e.to_string());
        let want = "\"sideways\": expected one of yes, all, no, local, remote";
        assert_eq!(err, Err(want.to_owned()));
    }

    #[test]
    fn check_open_rules() {
        use Reach::{Granted, Published};
        let unset = server(Yes, None, None);
        let any = ServerPolicy {
            permit_open: ServerOpen::Any,
            ..server(Yes, None, None)
        };
        let none = server(Yes, Some(&[]), None);
        let fwd_no = server(AllowTcpForwarding::No, None, None);
        let fwd_local = server(Local, None, None);
        let fwd_remote = server(Remote, None, None);
        let db = server(Yes, Some(&["db:5432"]), None);
        let a1 = server(Yes, Some(&["a:1"]), None);
        let a1b2 = server(Yes, Some(&["a:1", "b:2"]), None);
        let glob = server(Yes, Some(&["db*:1"]), None);
        let any_host = server(Yes, Some(&["*:443"]), None);
        let any_port = server(Yes, Some(&["db:*"]), None);
        let all = server(Yes, Some(&["*:*"]), None);
        let free = key(true, &[], &[], false);
        let restricted = key(false, &[], &[], false);
        let closed = KeyOptions {
            permit_open: Some(vec![]),
            ..KeyOptions::default()
        };
        let lh80 = key(true, &["localhost:80"], &[], false);
        let v6 = key(true, &["[::1]:22"], &[], false);
        let b1 = key(true, &["b:1"], &[], false);
        let star = key(true, &["*:*"], &[], false);
        let listen_only = key(true, &[], &["8080"], false);
        let (named, unnamed) = (Granted { explicit: true }, Granted { explicit: false });
        #[rustfmt::skip]
        let cases = [
            ("default",              &unset,      &free,        "db",        5432, Published(NotPublished)),
            ("any",                  &any,        &free,        "db",        5432, unnamed),
            ("AllowTcp no",          &fwd_no,     &free,        "db",        1,    Reach::Deny(ServerForwardingDisabled)),
            ("AllowTcp remote",      &fwd_remote, &free,        "db",        1,    Reach::Deny(ServerForwardingDisabled)),
            ("AllowTcp local",       &fwd_local,  &free,        "db",        1,    Published(NotPublished)),
            ("no-port-forwarding",   &any,        &restricted,  "db",        1,    Reach::Deny(KeyForwardingDisabled)),
            ("key none",             &any,        &closed,      "db",        1,    Reach::Deny(NotInKeyPermitOpen)),
            ("key none, default",    &unset,      &closed,      "localhost", 1,    Reach::Deny(NotInKeyPermitOpen)),
            ("PermitOpen none",      &none,       &free,        "db",        1,    Reach::Deny(NotInPermitOpen)),
            ("PermitOpen exact",     &db,         &free,        "db",        5432, named),
            ("host case",            &db,         &free,        "DB",        5432, named),
            ("other port",           &db,         &free,        "db",        5433, Published(NotInPermitOpen)),
            ("other host",           &db,         &free,        "web",       5432, Published(NotInPermitOpen)),
            ("host is literal",      &glob,       &free,        "db1",       1,    Published(NotInPermitOpen)),
            ("* host",               &any_host,   &free,        "x.org",     443,  unnamed),
            ("* port",               &any_port,   &free,        "db",        7,    unnamed),
            ("second entry",         &a1b2,       &free,        "b",         2,    named),
            ("key permitopen",       &any,        &lh80,        "localhost", 80,   named),
            ("key list, default",    &unset,      &lh80,        "localhost", 80,   named),
            ("key list narrows",     &unset,      &lh80,        "localhost", 81,   Reach::Deny(NotInKeyPermitOpen)),
            ("key * is not a name",  &unset,      &star,        "localhost", 22,   unnamed),
            ("no name lookup",       &any,        &lh80,        "127.0.0.1", 80,   Reach::Deny(NotInKeyPermitOpen)),
            ("IPv6",                 &any,        &v6,          "::1",       22,   named),
            ("IPv6 other",           &any,        &v6,          "::2",       22,   Reach::Deny(NotInKeyPermitOpen)),
            ("server refuses",       &a1,         &b1,          "b",         1,    Published(NotInPermitOpen)),
            ("key refuses",          &a1,         &b1,          "a",         1,    Reach::Deny(NotInKeyPermitOpen)),
            ("both allow",           &all,        &b1,          "b",         1,    named),
            ("permitlisten ignored", &any,        &listen_only, "db",        1,    unnamed),
        ];
        for (name, policy, key, host, port, want) in cases {
            assert_eq!(check_open(policy, key, host, port), want, "{name}");
        }
    }

    #[test]
    fn check_listen_rules() {
        let any = server(Yes, None, None);
        let none = server(Yes, None, Some(&[]));
        let fwd_no = server(AllowTcpForwarding::No, None, None);
        let fwd_local = server(Local, None, None);
        let fwd_remote = server(Remote, None, None);
        let lo = server(Yes, None, Some(&["localhost:*"]));
        let free = key(true, &[], &[], false);
        let restricted = key(false, &[], &[], false);
        let privileged = key(true, &[], &[], true);
        let privileged_443 = key(true, &[], &["443"], true);
        let open_only = key(true, &["db:1"], &[], false);
        let k = |listen: &[&str]| key(true, &[], listen, false);
        let (bare, lh, v4) = (k(&["8080"]), k(&["localhost:8080"]), k(&["127.0.0.1:8080"]));
        let (lh_any, star, v6) = (k(&["localhost:*"]), k(&["*"]), k(&["[::1]:2222"]));
        let (lan, qm, star_host) = (k(&["192.168.*:8080"]), k(&["10.0.0.?:80"]), k(&["*:8080"]));
        let p9000 = k(&["*:9000"]);
        #[rustfmt::skip]
        let cases = [
            ("defaults",             &any,        &free,           "localhost",  8080, Allow),
            ("allocate",             &any,        &free,           "localhost",  0,    Allow),
            ("AllowTcp no",          &fwd_no,     &free,           "",           8080, Deny(ServerForwardingDisabled)),
            ("AllowTcp local",       &fwd_local,  &free,           "",           8080, Deny(ServerForwardingDisabled)),
            ("AllowTcp remote",      &fwd_remote, &free,           "",           8080, Allow),
            ("no-port-forwarding",   &any,        &restricted,     "",           8080, Deny(KeyForwardingDisabled)),
            ("privileged port",      &any,        &free,           "",           80,   Deny(PrivilegedPort)),
            ("port 1023",            &any,        &free,           "",           1023, Deny(PrivilegedPort)),
            ("port 1024",            &any,        &free,           "",           1024, Allow),
            ("privileged allowed",   &any,        &privileged,     "",           80,   Allow),
            ("privileged, listed",   &any,        &privileged_443, "",           80,   Deny(NotInKeyPermitListen)),
            ("bare port, localhost", &any,        &bare,           "localhost",  8080, Allow),
            ("bare port, wildcard",  &any,        &bare,           "",           8080, Allow),
            ("bare port, address",   &any,        &bare,           "0.0.0.0",    8080, Allow),
            ("bare port, other",     &any,        &bare,           "localhost",  8081, Deny(NotInKeyPermitListen)),
            ("fixed port, allocate", &any,        &bare,           "localhost",  0,    Deny(NotInKeyPermitListen)),
            ("* port, allocate",     &any,        &lh_any,         "localhost",  0,    Allow),
            ("bare *, allocate",     &any,        &star,           "",           0,    Allow),
            ("host case",            &any,        &lh,             "LOCALHOST",  8080, Allow),
            ("localhost != v4",      &any,        &lh,             "127.0.0.1",  8080, Deny(NotInKeyPermitListen)),
            ("v4 != localhost",      &any,        &v4,             "localhost",  8080, Deny(NotInKeyPermitListen)),
            ("IPv6",                 &any,        &v6,             "::1",        2222, Allow),
            ("glob host",            &any,        &lan,            "192.168.1.9", 8080, Allow),
            ("glob miss",            &any,        &lan,            "10.0.0.1",   8080, Deny(NotInKeyPermitListen)),
            ("? in host",            &any,        &qm,             "10.0.0.7",   80,   Deny(PrivilegedPort)),
            ("* host",               &any,        &star_host,      "anything",   8080, Allow),
            ("PermitListen none",    &none,       &free,           "",           8080, Deny(NotInPermitListen)),
            ("PermitListen ok",      &lo,         &p9000,          "localhost",  9000, Allow),
            ("PermitListen refuses", &lo,         &p9000,          "0.0.0.0",    9000, Deny(NotInPermitListen)),
            ("key narrows",          &lo,         &p9000,          "localhost",  9001, Deny(NotInKeyPermitListen)),
            ("permitopen ignored",   &any,        &open_only,      "",           8080, Allow),
        ];
        for (name, policy, key, addr, port, want) in cases {
            assert_eq!(check_listen(policy, key, addr, port), want, "{name}");
        }
        let qm_privileged = key(true, &[], &["10.0.0.?:80"], true);
        assert_eq!(check_listen(&any, &qm_privileged, "10.0.0.7", 80), Allow);
        assert_eq!(
            check_listen(&any, &qm_privileged, "10.0.0.17", 80),
            Deny(NotInKeyPermitListen)
        );
    }

    #[test]
    fn deny_reasons_read_well_in_logs() {
        #[rustfmt::skip]
        let cases = [
            (KeyForwardingDisabled,    "port forwarding disabled for this key"),
            (NotInPermitOpen,          "not in PermitOpen"),
            (NotInKeyPermitOpen,       "not in the key's permitopen"),
            (NotInPermitListen,        "not in PermitListen"),
            (NotInKeyPermitListen,     "not in the key's permitlisten"),
            (PrivilegedPort,           "privileged port needs burrow-privileged-ports"),
            (ServerForwardingDisabled, "forwarding disabled by AllowTcpForwarding"),
            (RelayAddress,             "the relay's own SSH or metrics address (only an explicit permit_open entry opens it)"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }
}
