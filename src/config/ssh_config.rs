//! OpenSSH client configuration (`ssh_config(5)`), read the way `ssh` reads it.
//!
//! burrow users already have `~/.ssh/config`; honouring it with OpenSSH's exact rules
//! (first obtained value wins, `Host`/`Match` blocks, `Include`, `%` tokens) means a host
//! that works with `ssh` works with `burrow ssh` without a second config language.
//! The reference is OpenSSH's `readconf.c` and `match.c`; behaviour that differs says so.

mod checks;
mod host_match;
mod include;
mod parse;
#[cfg(test)]
mod tests;
mod tokens;

pub use crate::pattern::match_pattern_list;
pub use checks::parse_time;
pub use tokens::{dollar_expand, expand_tokens, percent_expand, Tokens};

use host_match::{host_line_matches, match_line_matches};
use parse::{parse_config, parse_directive};

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The keys burrow interprets; any other key is kept verbatim (OpenSSH would reject it
/// unless listed in `IgnoreUnknown`, but burrow shares the file with `ssh` and must not).
pub const KNOWN_KEYS: &[&str] = &[
    "Port",
    "User",
    "HostName",
    "IdentityFile",
    "IdentitiesOnly",
    "ProxyJump",
    "ProxyCommand",
    "LocalForward",
    "RemoteForward",
    "DynamicForward",
    "GatewayPorts",
    "ExitOnForwardFailure",
    "ServerAliveInterval",
    "ServerAliveCountMax",
    "ConnectTimeout",
    "Compression",
    "StrictHostKeyChecking",
    "UserKnownHostsFile",
    "GlobalKnownHostsFile",
    "BatchMode",
    "ClearAllForwardings",
    "PermitRemoteOpen",
    "RequestTTY",
    "SendEnv",
    "SetEnv",
    "ControlMaster",
    "ControlPath",
    "ControlPersist",
    "StreamLocalBindUnlink",
    "StreamLocalBindMask",
    "PasswordAuthentication",
    "KbdInteractiveAuthentication",
    "PubkeyAuthentication",
    "PreferredAuthentications",
    "NumberOfPasswordPrompts",
    "Ciphers",
    "HostKeyAlias",
    "LogLevel",
    "EscapeChar",
    "ForwardAgent",
    "AddKeysToAgent",
    "IdentityAgent",
    // burrow's own (OpenSSH has no such option): PROXY protocol headers on -R connections.
    "ProxyProtocol",
];

/// Keys (lower-case) whose every occurrence applies, in order, instead of only the first.
/// `SetEnv` is not here: OpenSSH keeps only the first `SetEnv` line that applies (checked
/// with `ssh -G`), so it is single-valued with several arguments.
pub const MULTI_KEYS: &[&str] = &[
    "localforward",
    "remoteforward",
    "dynamicforward",
    "identityfile",
    "certificatefile",
    "sendenv",
];

/// Keys whose value is the rest of the line, unsplit and unquoted (a shell command).
const RAW_KEYS: &[&str] = &[
    "proxycommand",
    "remotecommand",
    "localcommand",
    "knownhostscommand",
];

/// OpenSSH's `READCONF_MAX_DEPTH`: bounds `Include` recursion (a file including itself).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Tokens a `Match exec` command may use (OpenSSH's list for that context, less `%j` and `%k`).
const EXEC_TOKENS: &str = "CLdhlnprui";
/// OpenSSH tokens burrow does not expand: `%j` (ProxyJump) and `%k` (HostKeyAlias) need
/// values [`Tokens`] does not carry. Naming them in errors beats silently expanding wrong.
const UNSUPPORTED_TOKENS: &str = "jk";
/// Tokens [`expand_tokens`] replaces (see [`Tokens::value`]).
const PATH_TOKENS: &str = "hnpruidlLC";

/// Why a configuration, a `-o` option or a token expansion was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A line `ssh` would reject too, located so the user can fix it.
    #[error("{} line {line}: {problem}", file.display())]
    Line {
        /// File holding the line.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, naming the keyword or value.
        problem: String,
    },
    /// A configuration file that could not be read (a missing top-level file included:
    /// see [`ConfigError::is_not_found`]).
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file named by `Include` that exists but could not be read.
    #[error("{} line {line}: cannot read included file {}: {source}", file.display(), path.display())]
    Include {
        /// File holding the `Include`.
        file: PathBuf,
        /// 1-based line number of the `Include`.
        line: usize,
        /// The included file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A command-line `-o` option that cannot be used.
    #[error("-o \"{option}\": {problem}")]
    Option {
        /// The option as given.
        option: String,
        /// What is wrong.
        problem: String,
    },
    /// A value whose `%` tokens, `${ENV}` or `~` cannot be expanded.
    #[error("cannot expand \"{input}\": {problem}")]
    Expand {
        /// The value as written.
        input: String,
        /// What is wrong, naming the token.
        problem: String,
    },
}

impl ConfigError {
    /// True when the top-level file itself does not exist, which callers treat as an empty
    /// config for `~/.ssh/config` (as ssh does) but as an error for an explicit `-F`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ConfigError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A parsed configuration: the lines of a file (and of the files it includes) kept in order,
/// because which values apply depends on the destination and is only known at lookup time.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    items: Vec<Item>,
}

/// One meaningful line of a configuration file.
#[derive(Debug, Clone)]
enum Item {
    /// `Host` patterns (whitespace-separated, each maybe `!`-negated).
    Host(Vec<String>),
    /// `Match` criteria, all of which must hold.
    Match(Vec<Criterion>),
    /// An option line, key in lower case.
    Opt { key: String, args: Vec<String> },
    /// The files one `Include` line resolved to, each parsed.
    Include(Vec<SshConfig>),
}

/// One `Match` criterion, possibly negated with `!`.
#[derive(Debug, Clone)]
struct Criterion {
    negate: bool,
    kind: CriterionKind,
}

#[derive(Debug, Clone)]
enum CriterionKind {
    All,
    /// `canonical` and `final`: burrow makes a single, non-canonical pass.
    LaterPass,
    Host(String),
    OriginalHost(String),
    User(String),
    LocalUser(String),
    Exec(String),
}

/// The destination being looked up, as ssh knows it before reading the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchContext {
    /// `Match host` subject: a HostName already fixed before the config is read (e.g. by
    /// `-o HostName=`), else the host as typed. A `HostName` obtained from the config earlier
    /// in the same lookup takes over when this equals `original_host`, as in ssh.
    pub host: String,
    /// The host as typed: what `Host` lines and `Match originalhost` test.
    pub original_host: String,
    /// Remote user from the command line (`-l`, `user@host`, `-o User=`), if any.
    pub user: Option<String>,
    /// The local user name (`Match localuser`, and `Match user` when no user is known).
    pub local_user: String,
}

impl SshConfig {
    /// Parse a file; Include is resolved (globs, ~ expansion, relative paths relative to
    /// `include_base`: `~/.ssh` for user files, `/etc/ssh` for system files), recursion depth
    /// limited to 16 as in OpenSSH. `Include` paths may use `~` and `${ENV}` but not `%` tokens.
    pub fn load(path: &Path, include_base: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse_config(&text, path, include_base, 0)
    }

    /// Parse configuration text as if read from `origin` (used in error messages).
    pub fn parse_str(text: &str, origin: &Path, include_base: &Path) -> Result<Self, ConfigError> {
        parse_config(text, origin, include_base, 0)
    }

    /// Effective options for a destination with ssh_config semantics: the first obtained
    /// value of each single-valued key wins; keys in [`MULTI_KEYS`] accumulate in order.
    /// `Match exec` commands run here (via `$SHELL -c`, else `/bin/sh -c`; exit 0 = match).
    pub fn lookup(&self, ctx: &MatchContext) -> HostOptions {
        self.lookup_onto(ctx, HostOptions::default())
    }

    /// Like [`SshConfig::lookup`], but starting from options already obtained (the `-o`
    /// options of the command line), which win and which `Match` sees as ssh does: e.g.
    /// `-o HostName=` for `Match host`, `-o Port=` for `%p` in `Match exec`.
    pub fn lookup_onto(&self, ctx: &MatchContext, command_line: HostOptions) -> HostOptions {
        let mut out = command_line;
        self.apply(ctx, true, &mut out);
        out
    }

    /// Walk the lines in order; `active` says whether option lines currently apply.
    /// An included file starts active (it is only read from an active spot) and its
    /// `Host`/`Match` lines do not leak into the including file, as in OpenSSH.
    fn apply(&self, ctx: &MatchContext, start_active: bool, out: &mut HostOptions) {
        let mut active = start_active;
        for item in &self.items {
            match item {
                Item::Host(patterns) => active = host_line_matches(&ctx.original_host, patterns),
                Item::Match(criteria) => active = match_line_matches(criteria, ctx, out),
                Item::Opt { key, args } if active => {
                    out.set_if_absent(key, args.clone(), is_multi(key));
                }
                Item::Opt { .. } => {}
                Item::Include(files) if active => {
                    for file in files {
                        file.apply(ctx, true, out);
                    }
                }
                Item::Include(_) => {}
            }
        }
    }
}

/// Ordered key/values; keys are case-insensitive (stored lower-case). Single-valued keys
/// hold their first value only; multi-valued keys hold every occurrence in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOptions {
    entries: Vec<(String, Vec<String>)>,
}

impl HostOptions {
    /// The arguments of the first (winning) occurrence of `key`.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        let key = key.to_ascii_lowercase();
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, args)| args.as_slice())
    }

    /// The first argument of `key`, for the many keys that take exactly one.
    pub fn first(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(|args| args.first())
            .map(String::as_str)
    }

    /// Every occurrence of a multi-valued key (e.g. `LocalForward`), in order.
    pub fn get_all(&self, key: &str) -> Vec<&[String]> {
        let key = key.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, args)| args.as_slice())
            .collect()
    }

    /// Record a value unless the key already has one (or always, for a multi-valued key).
    /// To layer `-o` options, add the command-line options first, then merge the config,
    /// so the command line wins as in ssh.
    pub fn set_if_absent(&mut self, key: &str, args: Vec<String>, multi: bool) {
        let key = key.to_ascii_lowercase();
        if multi || !self.entries.iter().any(|(k, _)| *k == key) {
            self.entries.push((key, args));
        }
    }

    /// Add the options of a later (lower-priority) source with the same first-wins rule.
    pub fn merge_from(&mut self, later: HostOptions) {
        for (key, args) in later.entries {
            let multi = is_multi(&key);
            self.set_if_absent(&key, args, multi);
        }
    }

    /// All stored options in the order they were obtained.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.entries.iter().map(|(k, a)| (k.as_str(), a.as_slice()))
    }
}

/// Whether every occurrence of `key` (any case) applies rather than only the first.
pub fn is_multi(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    MULTI_KEYS.contains(&key.as_str())
}

/// Parse one `-o` option: "Key=Value", "Key Value", "Key = Value", quoted args ("a b" stays
/// one arg), as ssh does. Returns the lower-case key and its arguments, validated like a
/// config line; `Host`, `Match` and `Include` are refused as ssh refuses them.
pub fn parse_option_line(s: &str) -> Result<(String, Vec<String>), ConfigError> {
    let fail = |problem: String| ConfigError::Option {
        option: s.to_string(),
        problem,
    };
    let directive = parse_directive(s)
        .map_err(fail)?
        .ok_or_else(|| fail("empty option".to_string()))?;
    if matches!(directive.key.as_str(), "host" | "match" | "include") {
        return Err(fail(format!(
            "{} is not supported as a command-line option",
            directive.name
        )));
    }
    Ok((directive.key, directive.args))
}
