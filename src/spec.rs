//! Forward specifications for `-L`, `-R`, `-D` and `-W`, parsed the way OpenSSH's
//! `parse_forward`/`parse_fwd_field`/`a2port` (readconf.c, misc.c) accept them, so a command
//! line that works with `ssh` works with burrow. Pure functions: no I/O, no environment.
//!
//! Fields are separated by `:`; a field in `[...]` is taken literally (IPv6); `\` escapes the
//! next character; a field containing an unescaped `/` is a unix socket path.

mod dest;
mod error;
mod fields;
mod permit;
#[cfg(test)]
mod tests;

pub use dest::{parse_destination, parse_jump, JumpHost};
pub use error::{Problem, SpecError, SpecKind};
pub use permit::{permit_port, split_permit, PermitProblem};

use fields::{parse_port, split_fields, Field};

use std::fmt;
use std::path::PathBuf;

/// Longest host name OpenSSH accepts (`NI_MAXHOST` - 1); longer ones cannot be resolved anyway.
const MAX_HOST_LEN: usize = 1024;
/// Longest unix socket path: `sizeof(sun_path)` - 1 on Linux, the limit the kernel enforces.
const MAX_PATH_LEN: usize = 107;

/// Where a listener binds or a connection goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A host name or address literal (without brackets) and a port.
    Tcp {
        /// Host name or IP literal.
        host: String,
        /// Port, 1..=65535 for targets.
        port: u16,
    },
    /// A unix-domain socket path.
    Unix(PathBuf),
}

/// A listening side of a forward.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Listen {
    /// `bind` None = not given (caller applies default/-g), `Some("")`/`Some("*")` = all interfaces.
    Tcp {
        /// Bind address as written, brackets removed; see [`bind_target`].
        bind: Option<String>,
        /// Port; 0 (allocate) only for remote listeners.
        port: u16,
    },
    /// A unix-domain socket path to listen on.
    Unix(PathBuf),
}

impl Listen {
    /// Whether both name the same listener, with `*` and an empty bind address counted as equal
    /// (both mean all interfaces; `-O` sends the empty one as `*`).
    pub fn same_as(&self, other: &Listen) -> bool {
        fn all(bind: &Option<String>) -> Option<&str> {
            bind.as_deref().map(|h| if h.is_empty() { "*" } else { h })
        }
        match (self, other) {
            (Listen::Tcp { bind: a, port: p }, Listen::Tcp { bind: b, port: q }) => {
                p == q && all(a) == all(b)
            }
            (a, b) => a == b,
        }
    }
}

/// `-L`: listen locally, connect from the server side to `target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalForward {
    /// Local listener.
    pub listen: Listen,
    /// Where the server connects.
    pub target: Endpoint,
}

/// `-R`: the server listens, the client connects to `target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteForward {
    /// Server-side listener; port 0 asks the server to allocate one.
    pub listen: Listen,
    /// None = reverse dynamic forward (the client acts as a SOCKS proxy).
    pub target: Option<Endpoint>,
}

/// `-D`: a local SOCKS listener.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DynamicForward {
    /// Local listener (TCP or unix socket).
    pub listen: Listen,
}

/// The default `StreamLocalBindMask`: sockets only their owner can use (mode 0600).
pub const DEFAULT_BIND_MASK: u32 = 0o177;

/// How a client creates the unix socket of its own listener (-L/-D on a path): ssh_config's
/// `StreamLocalBindUnlink` and `StreamLocalBindMask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamLocalBind {
    /// Remove an existing socket file first.
    pub unlink: bool,
    /// The umask the new socket is created with.
    pub mask: u32,
}

impl Default for StreamLocalBind {
    fn default() -> Self {
        Self {
            unlink: false,
            mask: DEFAULT_BIND_MASK,
        }
    }
}

/// What addresses a listener binds, after applying OpenSSH's client-side rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindTarget {
    /// Loopback only (all address families).
    Loopback,
    /// All interfaces (wildcard).
    Any,
    /// This literal address or host name.
    Host(String),
}

/// Accepted forms, for the field-count error message.
const FORWARD_FORMS: &str =
    "[bind:]port:host:hostport, [bind:]port:path, path:host:hostport or path:path";
const DYNAMIC_FORMS: &str = "[bind:]port or a unix socket path";
/// Whether a listen port may be 0. `Some(name)` names the listener in the error; `None` allows 0.
/// OpenSSH allows 0 only for -R (the server allocates a port). burrow also allows it for -L and
/// -D, where the system picks a free port and burrow reports it as "Allocated port N for local
/// forward to ..." (a deliberate, documented extension: scripts and tests get a port without a
/// race).
type ZeroPort = Option<&'static str>;
const LOCAL_LISTENER: ZeroPort = None;
const DYNAMIC_LISTENER: ZeroPort = None;
const REMOTE_LISTENER: ZeroPort = None;

/// Parses `-L [bind:]port:host:hostport` (and the unix socket variants).
pub fn parse_local(spec: &str) -> Result<LocalForward, SpecError> {
    local(spec).map_err(|p| p.into_error(SpecKind::Local, spec))
}

/// Parses `-R [bind:]port:host:hostport`, its unix socket variants, or `-R [bind:]port`
/// (reverse dynamic). OpenSSH tries the forward form first, then the dynamic one.
pub fn parse_remote(spec: &str) -> Result<RemoteForward, SpecError> {
    remote(spec).map_err(|p| p.into_error(SpecKind::Remote, spec))
}

/// Parses `-D [bind:]port` or `-D path`.
pub fn parse_dynamic(spec: &str) -> Result<DynamicForward, SpecError> {
    let fields = split_fields(spec).map_err(|p| p.into_error(SpecKind::Dynamic, spec))?;
    let listen = dynamic_listen(&fields, DYNAMIC_LISTENER)
        .map_err(|p| p.into_error(SpecKind::Dynamic, spec))?;
    Ok(DynamicForward { listen })
}

/// Parses ssh_config's two-argument `LocalForward [bind:]port host:hostport`; OpenSSH joins
/// the two arguments with `:` and parses the result, so that is what happens here too.
pub fn parse_local_config(listen: &str, target: &str) -> Result<LocalForward, SpecError> {
    let shown = format!("{listen} {target}");
    if target.is_empty() {
        let problem = Problem::EmptyHost("the target argument");
        return Err(problem.into_error(SpecKind::Local, &shown));
    }
    local(&format!("{listen}:{target}")).map_err(|p| p.into_error(SpecKind::Local, &shown))
}

/// Parses ssh_config's `RemoteForward [bind:]port [host:hostport]`; a missing or empty
/// target means a reverse dynamic forward, as in OpenSSH.
pub fn parse_remote_config(listen: &str, target: Option<&str>) -> Result<RemoteForward, SpecError> {
    match target.filter(|t| !t.is_empty()) {
        None => reverse_dynamic(listen).map_err(|p| p.into_error(SpecKind::Remote, listen)),
        Some(t) => {
            let shown = format!("{listen} {t}");
            remote(&format!("{listen}:{t}")).map_err(|p| p.into_error(SpecKind::Remote, &shown))
        }
    }
}

/// Parses `-W host:port` (`[v6]:port` too). OpenSSH runs this through the dynamic-forward
/// parser, so the same bracket/escape rules apply and port 0 is refused.
pub fn parse_stdio(spec: &str) -> Result<(String, u16), SpecError> {
    stdio(spec).map_err(|p| p.into_error(SpecKind::Stdio, spec))
}

/// Decides what a client-side (-L/-D) listener binds, mirroring OpenSSH's
/// `channel_fwd_bind_addr` for clients: no address follows `-g`/GatewayPorts, `""`/`*` mean
/// all interfaces, `localhost` means loopback whatever `-g` says, anything else is literal.
pub fn bind_target(bind: &Option<String>, gateway_ports: bool) -> BindTarget {
    match bind.as_deref() {
        None if gateway_ports => BindTarget::Any,
        None | Some("localhost") => BindTarget::Loopback,
        Some("") | Some("*") => BindTarget::Any,
        Some(host) => BindTarget::Host(host.to_owned()),
    }
}

fn local(spec: &str) -> Result<LocalForward, Problem> {
    let fields = split_fields(spec)?;
    let (listen, target) = forward_fields(&fields, LOCAL_LISTENER)?;
    Ok(LocalForward { listen, target })
}

fn remote(spec: &str) -> Result<RemoteForward, Problem> {
    let fields = split_fields(spec)?;
    // `[bind:]port` with no path target is reverse dynamic, as when OpenSSH's second try wins.
    let dynamic = matches!(fields.as_slice(), [_] | [_, Field { path: false, .. }]);
    if dynamic {
        return dynamic_remote(&fields);
    }
    let (listen, target) = forward_fields(&fields, REMOTE_LISTENER)?;
    Ok(RemoteForward {
        listen,
        target: Some(target),
    })
}

fn reverse_dynamic(spec: &str) -> Result<RemoteForward, Problem> {
    dynamic_remote(&split_fields(spec)?)
}

fn dynamic_remote(fields: &[Field]) -> Result<RemoteForward, Problem> {
    if matches!(fields, [f] if f.path) {
        return Err(Problem::UnixReverseDynamic);
    }
    let listen = dynamic_listen(fields, REMOTE_LISTENER)?;
    Ok(RemoteForward {
        listen,
        target: None,
    })
}

fn stdio(spec: &str) -> Result<(String, u16), Problem> {
    match split_fields(spec)?.as_slice() {
        [f] if f.path => Err(Problem::UnixStdio),
        [host, port] => {
            let host = checked_host(host, "the target host")?;
            Ok((host, port_of(port, "a -W target")?))
        }
        fields => Err(Problem::FieldCount {
            got: fields.len(),
            expected: "host:port",
        }),
    }
}

/// Interprets 2-4 fields the way `parse_forward` does: which ones are paths decides the form.
fn forward_fields(fields: &[Field], zero: ZeroPort) -> Result<(Listen, Endpoint), Problem> {
    Ok(match fields {
        [a, b] if a.path && b.path => (unix_listen(a)?, Endpoint::Unix(unix_path(b)?)),
        [a, b] if b.path => (tcp_listen(None, a, zero)?, Endpoint::Unix(unix_path(b)?)),
        [a, b, c] if a.path => (unix_listen(a)?, tcp_target(b, c)?),
        [a, b, c] if c.path => (tcp_listen(Some(a), b, zero)?, Endpoint::Unix(unix_path(c)?)),
        [a, b, c] => (tcp_listen(None, a, zero)?, tcp_target(b, c)?),
        [a, b, c, d] => (tcp_listen(Some(a), b, zero)?, tcp_target(c, d)?),
        _ => {
            return Err(Problem::FieldCount {
                got: fields.len(),
                expected: FORWARD_FORMS,
            })
        }
    })
}

fn dynamic_listen(fields: &[Field], zero: ZeroPort) -> Result<Listen, Problem> {
    match fields {
        [a] if a.path => unix_listen(a),
        [a] => tcp_listen(None, a, zero),
        [a, b] => tcp_listen(Some(a), b, zero),
        _ => Err(Problem::FieldCount {
            got: fields.len(),
            expected: DYNAMIC_FORMS,
        }),
    }
}

fn unix_listen(field: &Field) -> Result<Listen, Problem> {
    Ok(Listen::Unix(unix_path(field)?))
}

fn unix_path(field: &Field) -> Result<PathBuf, Problem> {
    if field.text.len() > MAX_PATH_LEN {
        return Err(Problem::PathTooLong(field.text.clone()));
    }
    Ok(PathBuf::from(&field.text))
}

fn tcp_listen(bind: Option<&Field>, port: &Field, zero: ZeroPort) -> Result<Listen, Problem> {
    let bind = match bind {
        Some(b) if b.text.is_empty() => Some(String::new()),
        Some(b) => Some(checked_host(b, "the bind address")?),
        None => None,
    };
    let port = parse_port(&port.text)?;
    match zero {
        Some(listener) if port == 0 => Err(Problem::ZeroPort(listener)),
        _ => Ok(Listen::Tcp { bind, port }),
    }
}

fn tcp_target(host: &Field, port: &Field) -> Result<Endpoint, Problem> {
    let host = checked_host(host, "the target host")?;
    let port = port_of(port, "a forward target")?;
    Ok(Endpoint::Tcp { host, port })
}

/// A port that must be 1..=65535 (targets); `what` names it in the port-0 error.
fn port_of(field: &Field, what: &'static str) -> Result<u16, Problem> {
    match parse_port(&field.text)? {
        0 => Err(Problem::ZeroPort(what)),
        port => Ok(port),
    }
}

fn checked_host(field: &Field, what: &'static str) -> Result<String, Problem> {
    let host = &field.text;
    if host.is_empty() {
        return Err(Problem::EmptyHost(what));
    }
    if field.path {
        return Err(Problem::UnexpectedPath(host.clone(), "a host name"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Problem::BadHostChars(host.clone()));
    }
    if host.len() > MAX_HOST_LEN {
        return Err(Problem::HostTooLong(host.len()));
    }
    Ok(host.clone())
}

/// Writes `host:port`, bracketing hosts that contain `:` (IPv6) the way OpenSSH prints them.
fn write_host_port(f: &mut fmt::Formatter<'_>, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]:{port}")
    } else {
        write!(f, "{host}:{port}")
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write_host_port(f, host, *port),
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp { bind: None, port } => write!(f, "{port}"),
            Listen::Tcp {
                bind: Some(b),
                port,
            } if b.is_empty() => write!(f, "*:{port}"),
            Listen::Tcp {
                bind: Some(b),
                port,
            } => write_host_port(f, b, *port),
            Listen::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

impl fmt::Display for LocalForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.listen, self.target)
    }
}

impl fmt::Display for RemoteForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Some(target) => write!(f, "{}:{}", self.listen, target),
            None => write!(f, "{}", self.listen),
        }
    }
}

impl fmt::Display for DynamicForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.listen)
    }
}
