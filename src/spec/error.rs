//! Errors for forward and destination specifications: each names the input and the problem.

use std::fmt;

/// Which kind of specification failed, so the message says what the user was typing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecKind {
    /// `-L` / `LocalForward`.
    Local,
    /// `-R` / `RemoteForward`.
    Remote,
    /// `-D` / `DynamicForward`.
    Dynamic,
    /// `-W`.
    Stdio,
    /// `-J` / `ProxyJump`.
    Jump,
    /// The `[user@]host` destination argument.
    Destination,
}

impl fmt::Display for SpecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecKind::Local => "local forward spec",
            SpecKind::Remote => "remote forward spec",
            SpecKind::Dynamic => "dynamic forward spec",
            SpecKind::Stdio => "stdio forward spec",
            SpecKind::Jump => "jump host spec",
            SpecKind::Destination => "destination",
        })
    }
}

/// A rejected specification: which kind, the text as given, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {spec:?}: {problem}")]
pub struct SpecError {
    /// What was being parsed.
    pub kind: SpecKind,
    /// The input as the user wrote it.
    pub spec: String,
    /// The specific problem.
    pub problem: Problem,
}

/// The specific reason a specification was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Nothing but whitespace.
    #[error("it is empty")]
    Empty,
    /// Field count does not fit any accepted form.
    #[error("{got} ':'-separated field(s) given, expected {expected}")]
    FieldCount {
        /// Fields found.
        got: usize,
        /// The accepted forms.
        expected: &'static str,
    },
    /// More than four fields.
    #[error("too many ':'-separated fields (at most 4; bracket IPv6 addresses like [::1])")]
    TooManyFields,
    /// `[` without `]`.
    #[error("'[' in {0:?} has no matching ']'")]
    UnclosedBracket(String),
    /// `]` followed by something other than `:` or the end.
    #[error("']' in {0:?} must be followed by ':' or the end")]
    TextAfterBracket(String),
    /// A `\` with nothing after it.
    #[error("a trailing '\\' escapes nothing")]
    TrailingBackslash,
    /// Port field is not decimal digits.
    #[error("port {0:?} is not a number (service names are not supported)")]
    PortNotNumber(String),
    /// Port field is a number above 65535.
    #[error("port {0:?} is out of range 0-65535")]
    PortOutOfRange(String),
    /// Port 0 where OpenSSH forbids it.
    #[error("port 0 is not allowed for {0}")]
    ZeroPort(&'static str),
    /// A required host is empty.
    #[error("{0} is empty")]
    EmptyHost(&'static str),
    /// Whitespace or control characters in a host; such a name can never resolve.
    #[error("host {0:?} contains whitespace or control characters")]
    BadHostChars(String),
    /// Host longer than OpenSSH's limit.
    #[error("host name is {0} bytes long, the limit is 1024")]
    HostTooLong(usize),
    /// Path longer than a unix socket address can hold.
    #[error("unix socket path {0:?} is longer than 107 bytes")]
    PathTooLong(String),
    /// A path where a host is expected.
    #[error("{0:?} contains '/' so it reads as a unix socket path, but {1} is expected here")]
    UnexpectedPath(String, &'static str),
    /// `-R path` with no target: OpenSSH parses it but cannot serve it.
    #[error("reverse dynamic forwarding (SOCKS) needs a TCP listen port, not a unix socket path")]
    UnixReverseDynamic,
    /// `-W` to a unix socket path.
    #[error("stdio forwarding to a unix socket path is not supported; use host:port")]
    UnixStdio,
    /// `user@` with nothing before the `@`.
    #[error("user name is empty")]
    EmptyUser,
    /// Characters OpenSSH's `ssh_valid_ruser` refuses (shell metacharacters, controls).
    #[error("user name {0:?} contains characters that are not allowed")]
    BadUser(String),
    /// Characters OpenSSH's `ssh_valid_hostname`/`valid_domain` refuses.
    #[error("host name {0:?} contains characters that are not allowed")]
    BadHostName(String),
    /// `ssh://host/path`: paths make no sense for a login.
    #[error("an ssh:// URI must not have a path, found {0:?}")]
    UriPath(String),
    /// `%` not followed by two hex digits (or `%00`) in a URI user name.
    #[error("bad %-escape in user name {0:?}")]
    BadEscape(String),
}

impl Problem {
    pub(super) fn into_error(self, kind: SpecKind, spec: &str) -> SpecError {
        SpecError {
            kind,
            spec: spec.to_owned(),
            problem: self,
        }
    }
}
