//! OpenSSH client configuration (`ssh_config(5)`), read the way `ssh` reads it.
//!
//! burrow users already have `~/.ssh/config`; honouring it with OpenSSH's exact rules
//! (first obtained value wins, `Host`/`Match` blocks, `Include`, `%` tokens) means a host
//! that works with `ssh` works with `burrow ssh` without a second config language.
//! The reference is OpenSSH's `readconf.c` and `match.c`; behaviour that differs says so.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use sha1::{Digest, Sha1};

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

// ---------------------------------------------------------------------------------------
// Parsing

/// One parsed line: lower-case key, the keyword's display name, and its arguments.
struct Directive {
    key: String,
    name: String,
    args: Vec<String>,
}

/// Parse configuration text; `depth` counts enclosing `Include`s.
fn parse_config(
    text: &str,
    origin: &Path,
    include_base: &Path,
    depth: usize,
) -> Result<SshConfig, ConfigError> {
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let lineno = index + 1;
        let at = |problem: String| ConfigError::Line {
            file: origin.to_path_buf(),
            line: lineno,
            problem,
        };
        let Some(directive) = parse_directive(line).map_err(at)? else {
            continue;
        };
        let item = match directive.key.as_str() {
            "host" => Item::Host(parse_host_line(directive.args).map_err(at)?),
            "match" => Item::Match(parse_match_line(&directive.args).map_err(at)?),
            "include" => Item::Include(include_files(
                &directive.args,
                origin,
                lineno,
                include_base,
                depth,
            )?),
            _ => Item::Opt {
                key: directive.key,
                args: directive.args,
            },
        };
        items.push(item);
    }
    Ok(SshConfig { items })
}

/// Turn a line into a directive, or `None` for blank lines and comments. Errors are the
/// problems ssh reports for the line (missing argument, bad quotes, bad value).
fn parse_directive(line: &str) -> Result<Option<Directive>, String> {
    let Some((keyword, rest)) = split_keyword(line) else {
        return Ok(None);
    };
    let key = keyword.to_ascii_lowercase();
    let name = display_name(&key, keyword);
    if rest.is_empty() {
        return Err(format!("no argument after keyword \"{name}\""));
    }
    // ssh splits every line first, so even a raw command needs balanced quotes.
    let split = split_args(rest)?;
    let args = if RAW_KEYS.contains(&key.as_str()) {
        vec![rest.to_string()]
    } else {
        split
    };
    if let Some(rule) = rule_for(&key) {
        rule.check(&name, &args)?;
    }
    Ok(Some(Directive { key, name, args }))
}

/// The spelling used in messages: the documented one for known keys.
fn display_name(key: &str, as_written: &str) -> String {
    let known = KNOWN_KEYS
        .iter()
        .chain(["Host", "Match", "Include"].iter())
        .find(|k| k.eq_ignore_ascii_case(key));
    known.map_or_else(|| as_written.to_string(), |k| (*k).to_string())
}

const WHITESPACE: [char; 2] = [' ', '\t'];

/// Split a line into keyword and unparsed rest as OpenSSH's `strdelim` does: the keyword
/// ends at whitespace, a quote or `=`, and one `=` between keyword and value is skipped.
fn split_keyword(line: &str) -> Option<(&str, &str)> {
    let line = line
        .trim_end_matches([' ', '\t', '\r', '\n', '\x0c'])
        .trim_start_matches(WHITESPACE);
    if line.starts_with('#') {
        return None;
    }
    let end = line.find([' ', '\t', '=', '"']).unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    if keyword.is_empty() {
        return None;
    }
    let rest = rest.trim_start_matches(WHITESPACE);
    let rest = rest
        .strip_prefix('=')
        .map_or(rest, |r| r.trim_start_matches(WHITESPACE));
    Some((keyword, rest))
}

/// Split arguments like OpenSSH's `argv_split`: whitespace separates, `"` and `'` quote,
/// backslash escapes quotes, backslash and (outside quotes) space, and a `#` at the start
/// of an argument ends the line.
fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| WHITESPACE.contains(c)).is_some() {}
        match chars.peek() {
            None | Some('#') => break,
            Some(_) => {}
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let escaped = chars.next_if(|&n| {
                        n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ')
                    });
                    arg.push(escaped.unwrap_or('\\'));
                }
                ' ' | '\t' if quote.is_none() => break,
                '"' | '\'' if quote.is_none() => quote = Some(c),
                c if Some(c) == quote => quote = None,
                c => arg.push(c),
            }
        }
        if quote.is_some() {
            return Err("invalid quotes (unterminated quote)".to_string());
        }
        args.push(arg);
    }
    Ok(args)
}

/// `Host` patterns; an empty pattern (`""`) is an error in ssh.
fn parse_host_line(args: Vec<String>) -> Result<Vec<String>, String> {
    if args.iter().any(String::is_empty) {
        return Err("Host has an empty pattern".to_string());
    }
    Ok(args)
}

/// Parse `Match` criteria (`name arg` or `name=arg`, `!` negation); unknown or
/// unsupported criteria are errors so a config is never silently misread.
fn parse_match_line(args: &[String]) -> Result<Vec<Criterion>, String> {
    let mut criteria = Vec::new();
    let mut rest = args.iter();
    while let Some(word) = rest.next() {
        let (negate, word) = match word.strip_prefix('!') {
            Some(w) => (true, w),
            None => (false, word.as_str()),
        };
        let (name, inline) = match word.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v.to_string())),
            None => (word.to_ascii_lowercase(), None),
        };
        let kind = match name.as_str() {
            "all" => {
                if criteria.len() > 1 || rest.next().is_some() {
                    return Err("Match \"all\" cannot be combined with other criteria".into());
                }
                CriterionKind::All
            }
            "canonical" | "final" => CriterionKind::LaterPass,
            _ => {
                let arg = match inline {
                    Some(v) => v,
                    None => rest.next().cloned().unwrap_or_default(),
                };
                if arg.is_empty() {
                    return Err(format!("missing argument for Match criterion \"{name}\""));
                }
                criterion_with_arg(&name, arg)?
            }
        };
        criteria.push(Criterion { negate, kind });
    }
    if criteria.is_empty() {
        return Err("Match needs one or more criteria".to_string());
    }
    Ok(criteria)
}

/// Build a criterion that takes an argument.
fn criterion_with_arg(name: &str, arg: String) -> Result<CriterionKind, String> {
    Ok(match name {
        "host" => CriterionKind::Host(arg),
        "originalhost" => CriterionKind::OriginalHost(arg),
        "user" => CriterionKind::User(arg),
        "localuser" => CriterionKind::LocalUser(arg),
        "exec" => {
            check_tokens(&arg, EXEC_TOKENS)?;
            CriterionKind::Exec(arg)
        }
        "localnetwork" | "tagged" | "command" | "sessiontype" | "version" => {
            return Err(format!(
                "Match criterion \"{name}\" is not supported by burrow"
            ))
        }
        _ => return Err(format!("unknown Match criterion \"{name}\"")),
    })
}

// ---------------------------------------------------------------------------------------
// Value checks for the keys burrow interprets

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
struct Rule {
    min: usize,
    max: usize,
    check: Check,
}

const FLAG: &[&str] = &["yes", "no", "true", "false"];
const LOG_LEVELS: &[&str] = &[
    "quiet", "fatal", "error", "info", "verbose", "debug", "debug1", "debug2", "debug3",
];

/// The rule for a key burrow interprets (None: stored as-is).
fn rule_for(key: &str) -> Option<Rule> {
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
    fn check(&self, name: &str, args: &[String]) -> Result<(), String> {
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

// ---------------------------------------------------------------------------------------
// Include

/// Resolve and parse the files of one `Include` line. Globs that match nothing are fine
/// (ssh only logs them); an existing file that cannot be read is an error.
fn include_files(
    args: &[String],
    origin: &Path,
    lineno: usize,
    include_base: &Path,
    depth: usize,
) -> Result<Vec<SshConfig>, ConfigError> {
    let at = |problem: String| ConfigError::Line {
        file: origin.to_path_buf(),
        line: lineno,
        problem,
    };
    if depth + 1 > MAX_INCLUDE_DEPTH {
        return Err(at(format!(
            "too many nested Include levels (more than {MAX_INCLUDE_DEPTH}); does a file include itself?"
        )));
    }
    let mut files = Vec::new();
    for arg in args {
        let pattern = include_pattern(arg, include_base).map_err(at)?;
        for path in glob(&pattern) {
            let text = match fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(ConfigError::Include {
                        file: origin.to_path_buf(),
                        line: lineno,
                        path,
                        source,
                    })
                }
            };
            files.push(parse_config(&text, &path, include_base, depth + 1)?);
        }
    }
    Ok(files)
}

/// Expand `~` and `${ENV}` in an `Include` argument and anchor relative paths at the base.
fn include_pattern(arg: &str, include_base: &Path) -> Result<PathBuf, String> {
    if arg.contains('%') {
        return Err(format!(
            "Include \"{arg}\": % tokens in Include paths are not supported by burrow"
        ));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let (head, tail) = split_tilde(arg, home.as_deref())?;
    let tail = expand_with(tail, true, |_| None)?;
    Ok(match head {
        Some(dir) => join_home(&dir, &tail),
        None if Path::new(&tail).is_absolute() => PathBuf::from(tail),
        None => include_base.join(tail),
    })
}

/// Paths matching a glob (`*`, `?`, `[...]` per component), sorted like glob(3). Names
/// starting with `.` only match a pattern that starts with `.`.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for component in pattern.components() {
        let Component::Normal(name) = component else {
            found.iter_mut().for_each(|p| p.push(component));
            continue;
        };
        let name = name.to_string_lossy();
        if !name.contains(['*', '?', '[']) {
            found.iter_mut().for_each(|p| p.push(&*name));
            continue;
        }
        found = found
            .iter()
            .flat_map(|dir| matching_entries(dir, &name))
            .collect();
    }
    found.retain(|p| p.exists());
    found.sort();
    found
}

/// Entries of `dir` whose names match one glob component.
fn matching_entries(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    let readable = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = fs::read_dir(readable) else {
        return Vec::new();
    };
    let pat: Vec<char> = pattern.chars().collect();
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let hidden_ok = !name.starts_with('.') || pattern.starts_with('.');
            let text: Vec<char> = name.chars().collect();
            hidden_ok && wildmatch(&pat, &text, true)
        })
        .map(|e| dir.join(e.file_name()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Host / Match evaluation

/// A `Host` line applies when some pattern matches the typed host and no `!` pattern does.
/// Unlike `Match host`, this is case-sensitive and commas are literal (as ssh; see tests).
fn host_line_matches(host: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(negated) if match_pattern(host, negated) => return false,
            Some(_) => {}
            None => matched |= match_pattern(host, pattern),
        }
    }
    matched
}

/// Evaluate a `Match` line against the destination and the options obtained so far.
fn match_line_matches(criteria: &[Criterion], ctx: &MatchContext, so_far: &HostOptions) -> bool {
    let mut result = true;
    for criterion in criteria {
        let hit = match &criterion.kind {
            CriterionKind::All => true,
            CriterionKind::LaterPass => false,
            CriterionKind::Host(p) => match_host_list(&match_host(ctx, so_far), p),
            CriterionKind::OriginalHost(p) => match_host_list(&ctx.original_host, p),
            CriterionKind::User(p) => pattern_list(&remote_user(ctx, so_far), p, false).is_hit(),
            CriterionKind::LocalUser(p) => pattern_list(&ctx.local_user, p, false).is_hit(),
            // Like ssh, a command is not run once an earlier criterion has failed.
            CriterionKind::Exec(_) if !result => continue,
            CriterionKind::Exec(cmd) => run_exec(cmd, ctx, so_far),
        };
        if hit == criterion.negate {
            result = false;
        }
    }
    result
}

/// The name `Match host` tests: a HostName obtained so far (with `%h` expanded) replaces
/// the typed host, unless the caller already fixed the host name.
fn match_host(ctx: &MatchContext, so_far: &HostOptions) -> String {
    match so_far.first("hostname") {
        Some(name) if ctx.host == ctx.original_host => {
            let typed = || Some(ctx.original_host.clone());
            expand_with(name, false, |c| if c == 'h' { typed() } else { None })
                .unwrap_or_else(|_| name.to_string())
        }
        _ => ctx.host.clone(),
    }
}

/// The remote user as ssh knows it at this point of the config.
fn remote_user(ctx: &MatchContext, so_far: &HostOptions) -> String {
    ctx.user
        .clone()
        .or_else(|| so_far.first("user").map(str::to_string))
        .unwrap_or_else(|| ctx.local_user.clone())
}

/// Run a `Match exec` command with its tokens expanded; exit status 0 means a match.
fn run_exec(cmd: &str, ctx: &MatchContext, so_far: &HostOptions) -> bool {
    let host = match_host(ctx, so_far);
    let port = so_far
        .first("port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(22);
    let tokens = Tokens::new(
        &host,
        &ctx.original_host,
        port,
        &remote_user(ctx, so_far),
        &ctx.local_user,
    );
    let Ok(command) = expand_with(cmd, false, |c| tokens.value(c)) else {
        return false;
    };
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".to_string());
    Command::new(shell)
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

// ---------------------------------------------------------------------------------------
// Patterns (OpenSSH match.c)

/// Result of matching a comma-separated pattern list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListMatch {
    None,
    Positive,
    /// A `!pattern` matched: the list rejects the name whatever else matched.
    Negative,
}

impl ListMatch {
    fn is_hit(self) -> bool {
        self == ListMatch::Positive
    }
}

/// OpenSSH `match_pattern_list` for host names: true when some pattern of the comma list
/// matches and no `!`-negated one does; `*` and `?` are wildcards; case-insensitive.
pub fn match_pattern_list(name: &str, patterns: &str) -> bool {
    match_host_list(name, patterns)
}

/// Host-name list match (OpenSSH `match_hostname`): both sides lower-cased.
fn match_host_list(name: &str, patterns: &str) -> bool {
    pattern_list(&name.to_lowercase(), patterns, true).is_hit()
}

/// Match `name` against a comma-separated list, lower-casing the patterns if `fold`.
fn pattern_list(name: &str, patterns: &str, fold: bool) -> ListMatch {
    if patterns.is_empty() {
        return ListMatch::None;
    }
    // A trailing comma does not add an empty pattern (OpenSSH's loop stops at the end).
    let patterns = patterns.strip_suffix(',').unwrap_or(patterns);
    let mut result = ListMatch::None;
    for sub in patterns.split(',') {
        let (negated, sub) = match sub.strip_prefix('!') {
            Some(s) => (true, s),
            None => (false, sub),
        };
        let sub = if fold {
            sub.to_lowercase()
        } else {
            sub.to_string()
        };
        if match_pattern(name, &sub) {
            if negated {
                return ListMatch::Negative;
            }
            result = ListMatch::Positive;
        }
    }
    result
}

/// OpenSSH `match_pattern`: `*` matches any run, `?` any one character, all else literal.
fn match_pattern(s: &str, pattern: &str) -> bool {
    let pat: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = s.chars().collect();
    wildmatch(&pat, &text, false)
}

/// Wildcard match with single-star backtracking (linear per star, no exponential blowup).
/// With `classes`, `[...]` sets (ranges, `!`/`^` negation) are recognised as in glob(3).
fn wildmatch(pat: &[char], text: &[char], classes: bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        let step = match pat.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some('?') => Some(p + 1),
            Some('[') if classes => match_class(pat, p, c),
            Some(&pc) if pc == c => Some(p + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                star = Some((sp, st + 1));
                p = sp + 1;
                t = st + 1;
            }
            (None, None) => return false,
        }
    }
    pat.get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// Match `c` against the `[...]` set starting at `pat[start]`; returns the index after the
/// set on a match. An unterminated `[` is a literal.
fn match_class(pat: &[char], start: usize, c: char) -> Option<usize> {
    let mut i = start + 1;
    let negate = matches!(pat.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let Some(&lo) = pat.get(i) else {
            // No closing bracket: the `[` is an ordinary character.
            return (c == '[').then_some(start + 1);
        };
        if lo == ']' && !first {
            break;
        }
        first = false;
        match (pat.get(i + 1), pat.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                matched |= (lo..=hi).contains(&c);
                i += 3;
            }
            _ => {
                matched |= lo == c;
                i += 1;
            }
        }
    }
    (matched != negate).then_some(i + 1)
}

// ---------------------------------------------------------------------------------------
// Tokens

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
    fn value(&self, token: char) -> Option<String> {
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
fn check_tokens(s: &str, allowed: &str) -> Result<(), String> {
    expand_with(s, false, |c| allowed.contains(c).then(String::new)).map(|_| ())
}

/// Expand `%x` tokens via `lookup` and, if `env`, `${VAR}` from the environment, in one
/// left-to-right pass so replacement text is never re-expanded.
fn expand_with(
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
fn split_tilde<'a>(s: &'a str, home: Option<&Path>) -> Result<(Option<PathBuf>, &'a str), String> {
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
fn join_home(dir: &Path, rest: &str) -> PathBuf {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// What OpenSSH's `ssh -G` made of a config, when ssh is installed.
    enum Ssh {
        Missing,
        Rejected,
        Accepted(HashMap<String, Vec<String>>),
    }

    /// Run `ssh -G -F config [extra] host`; options as lower-case key → values in order.
    fn ssh_g(config: &Path, host: &str, extra: &[&str]) -> Ssh {
        let output = Command::new("ssh")
            .arg("-G")
            .arg("-F")
            .arg(config)
            .args(extra)
            .arg(host)
            .stdin(Stdio::null())
            .output();
        let Ok(output) = output else {
            println!("note: ssh not found; skipping the `ssh -G` cross-check");
            return Ssh::Missing;
        };
        if !output.status.success() {
            return Ssh::Rejected;
        }
        let mut options: HashMap<String, Vec<String>> = HashMap::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            options
                .entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
        Ssh::Accepted(options)
    }

    /// The local user name as ssh sees it (its default `user`), else `$USER`.
    fn local_user() -> String {
        if let Ssh::Accepted(o) = ssh_g(Path::new("/dev/null"), "h", &[]) {
            if let Some(user) = o.get("user").and_then(|v| v.first()) {
                return user.clone();
            }
        }
        std::env::var("USER").unwrap_or_else(|_| "root".to_string())
    }

    fn ctx(host: &str, user: Option<&str>) -> MatchContext {
        MatchContext {
            host: host.to_string(),
            original_host: host.to_string(),
            user: user.map(str::to_string),
            local_user: local_user(),
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, text).unwrap();
        path
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn split_args_like_argv_split() {
        #[rustfmt::skip]
        let cases: &[(&str, Result<&[&str], ()>)] = &[
            ("a b\tc", Ok(&["a", "b", "c"])),
            ("\"a b\" c", Ok(&["a b", "c"])),
            ("'a b'c", Ok(&["a bc"])),
            ("a\\ b", Ok(&["a b"])),
            ("\"a\\\"b\"", Ok(&["a\"b"])),
            ("a\\x", Ok(&["a\\x"])),
            ("a # comment", Ok(&["a"])),
            ("a#b", Ok(&["a#b"])),
            ("\"#x\" y", Ok(&["#x", "y"])),
            ("\"\"", Ok(&[""])),
            ("\"open", Err(())),
            ("a 'open", Err(())),
        ];
        for (input, want) in cases {
            let got = split_args(input).map_err(|_| ());
            assert_eq!(got, want.map(strings), "{input:?}");
        }
    }

    #[test]
    fn option_lines_like_ssh_o() {
        /// Input, and either the key and arguments or the error's problem text.
        type Case = (
            &'static str,
            Result<(&'static str, &'static [&'static str]), &'static str>,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("Port=22", Ok(("port", &["22"]))),
            ("Port 22", Ok(("port", &["22"]))),
            ("Port = 22", Ok(("port", &["22"]))),
            ("  PORT\t= \t22  ", Ok(("port", &["22"]))),
            ("Port==22", Err("Port \"=22\" is not a number")),
            ("User \"a b\"", Ok(("user", &["a b"]))),
            ("SetEnv \"A=x y\" B=2", Ok(("setenv", &["A=x y", "B=2"]))),
            ("LocalForward 8080 localhost:80", Ok(("localforward", &["8080", "localhost:80"]))),
            ("ProxyCommand ssh -W %h:%p \"jump host\" # not a comment", Ok(( "proxycommand", &["ssh -W %h:%p \"jump host\" # not a comment"], ))),
            ("SomeFutureOption=whatever 1 2", Ok(("somefutureoption", &["whatever", "1", "2"]))),
            ("Port", Err("no argument after keyword \"Port\"")),
            ("Port abc", Err("Port \"abc\" is not a number")),
            ("Port 1 2", Err("Port has extra arguments at end of line")),
            ("Compression maybe", Err("Compression \"maybe\" is not valid (expected yes, no)")),
            ("User \"open", Err("invalid quotes (unterminated quote)")),
            ("Host x", Err("Host is not supported as a command-line option")),
            ("match all", Err("Match is not supported as a command-line option")),
            ("Include x", Err("Include is not supported as a command-line option")),
            ("", Err("empty option")),
        ];
        for (input, want) in cases {
            let got = parse_option_line(input);
            match (got, want) {
                (Ok((key, args)), Ok((k, a))) => {
                    assert_eq!((key.as_str(), args), (*k, strings(a)), "{input:?}")
                }
                (Err(err), Err(problem)) => {
                    assert_eq!(err.to_string(), format!("-o \"{input}\": {problem}"))
                }
                (got, _) => panic!("{input:?}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn pattern_lists_like_match_c() {
        let cases: &[(&str, &str, bool)] = &[
            ("host", "host", true),
            ("host", "HOST", true),
            ("HOST", "host", true),
            ("host", "h*", true),
            ("host", "h?st", true),
            ("host", "h?t", false),
            ("host", "*", true),
            ("", "*", true),
            ("host", "", false),
            ("a.example.com", "*.example.com", true),
            ("example.com", "*.example.com", false),
            ("b", "a,b,c", true),
            ("b", "a,!b,*", false),
            ("b", "*,!b", false),
            ("c", "*,!b", true),
            ("b", "!b", false),
            ("c", "!b", false),
            ("x", "a,", false),
            ("aXbXc", "a*b*c", true),
            ("abcbd", "a*bd", true),
            ("ab", "a**b", true),
            (
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "*a*a*a*a*a*a*a*a*a*a*b",
                false,
            ),
            ("[h]:22", "[h]:2?", true),
        ];
        for (name, patterns, want) in cases {
            assert_eq!(
                match_pattern_list(name, patterns),
                *want,
                "{name:?} vs {patterns:?}"
            );
        }
        // Case-sensitive lists (Match user/localuser).
        assert!(!pattern_list("Bob", "bob", false).is_hit());
        assert_eq!(pattern_list("bob", "*,!bob", false), ListMatch::Negative);
    }

    #[test]
    fn glob_classes() {
        let cases: &[(&str, &str, bool)] = &[
            ("a1", "a[0-9]", true),
            ("ab", "a[0-9]", false),
            ("ab", "a[!0-9]", true),
            ("a]", "a[]]", true),
            ("a[", "a[", true),
            ("conf.d", "*.[cd]", true),
        ];
        for (name, pattern, want) in cases {
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = name.chars().collect();
            assert_eq!(wildmatch(&p, &t, true), *want, "{name:?} vs {pattern:?}");
        }
    }

    #[test]
    fn time_values_like_convtime() {
        let cases: &[(&str, Option<u64>)] = &[
            ("30", Some(30)),
            ("30s", Some(30)),
            ("5m", Some(300)),
            ("1h30m", Some(5400)),
            ("1H30", Some(3630)),
            ("2d", Some(172800)),
            ("1w", Some(604800)),
            ("", None),
            ("m", None),
            ("5x", None),
            ("-5", None),
            ("99999999999", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_time(input), *want, "{input:?}");
        }
    }

    /// Each line alone in a config: must burrow accept it, and does ssh agree?
    #[test]
    fn line_validation_agrees_with_ssh() {
        // (line, burrow accepts, ssh is expected to decide the same way)
        #[rustfmt::skip]
        let cases: &[(&str, bool, bool)] = &[
            ("Port 2222", true, true),
            ("Port=2222", true, true),
            ("Port abc", false, true),
            ("Port 0", false, true),
            ("Port 65536", false, true),
            ("Port 1 2", false, true),
            ("Port", false, true),
            ("Compression yes", true, true),
            ("Compression true", false, true),
            ("BatchMode TRUE", true, true),
            ("BatchMode maybe", false, true),
            ("StrictHostKeyChecking accept-new", true, true),
            ("StrictHostKeyChecking sometimes", false, true),
            ("PubkeyAuthentication host-bound", true, true),
            ("RequestTTY force", true, true),
            ("ControlMaster autoask", true, true),
            ("ServerAliveInterval 1h30m", true, true),
            ("ServerAliveInterval 5x", false, true),
            ("ConnectTimeout none", true, true),
            ("ServerAliveCountMax 3", true, true),
            ("ServerAliveCountMax -1", false, true),
            ("NumberOfPasswordPrompts x", false, true),
            ("ControlPersist 10m", true, true),
            ("ControlPersist yes", true, true),
            ("ControlPersist forever", false, true),
            ("StreamLocalBindMask 0177", true, true),
            ("StreamLocalBindMask 0999", false, false), // ssh keeps the octal prefix "0"
            ("EscapeChar ~", true, true),
            ("EscapeChar ^A", true, true),
            ("EscapeChar none", true, true),
            ("EscapeChar ab", false, true),
            ("LogLevel DEBUG3", true, true),
            ("LogLevel loud", false, true),
            ("SendEnv LANG LC_*", true, true),
            ("SendEnv A=1", false, true),
            ("SetEnv A=1 \"B=two words\"", true, true),
            ("SetEnv A", false, true),
            ("LocalForward 8080 localhost:80", true, true),
            ("LocalForward 8080", false, true),
            ("RemoteForward 8080", true, true),
            ("DynamicForward 1080", true, true),
            ("AddKeysToAgent confirm 5m", true, true),
            ("AddKeysToAgent 1h", true, true),
            ("AddKeysToAgent yes 5m", false, true),
            ("AddKeysToAgent maybe", false, true),
            ("ForwardAgent $SSH_AUTH_SOCK", true, true),
            ("User \"unterminated", false, true),
            ("ProxyCommand nc %h %p \"odd", false, true),
            ("ProxyCommand nc %h %p # kept", true, true),
            ("Host \"\"", false, true),
            ("Match all", true, true),
            ("Match all host x", false, true),
            ("Match host", false, true),
            ("Match", false, true),
            ("Match bogus x", false, true),
            ("Match exec \"echo %Z\"", false, true),
            ("Match !host=x user y", true, false), // ssh 9.2 predates `name=arg`
            ("Match localnetwork 10.0.0.0/8", false, false), // ssh supports it; burrow refuses
            ("SomeFutureOption x", true, false),   // ssh rejects unknown keys; burrow keeps them
        ];
        let dir = tempfile::tempdir().unwrap();
        for (line, accept, ssh_agrees) in cases {
            let path = write(dir.path(), "config", &format!("{line}\n"));
            let ours = SshConfig::load(&path, dir.path());
            assert_eq!(ours.is_ok(), *accept, "{line:?}: {ours:?}");
            if let Err(err) = ours {
                let msg = err.to_string();
                assert!(
                    msg.starts_with(&format!("{} line 1: ", path.display())),
                    "{msg}"
                );
            }
            if *ssh_agrees {
                match ssh_g(&path, "h", &[]) {
                    Ssh::Missing => {}
                    Ssh::Rejected => assert!(!accept, "ssh rejects {line:?}"),
                    Ssh::Accepted(_) => assert!(accept, "ssh accepts {line:?}"),
                }
            }
        }
    }

    #[test]
    fn error_names_file_line_and_problem() {
        let text = "# comment\nHost x\n  Port abc\n";
        let err = SshConfig::parse_str(text, Path::new("/home/u/.ssh/config"), Path::new("/"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/home/u/.ssh/config line 3: Port \"abc\" is not a number"
        );
        let err =
            SshConfig::parse_str("Match nope x\n", Path::new("/c"), Path::new("/")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/c line 1: unknown Match criterion \"nope\""
        );
        let err = SshConfig::load(Path::new("/nonexistent/config"), Path::new("/")).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    /// (config, host, -l user, expected first values; `None` = not set by the config).
    type LookupCase = (
        &'static str,
        &'static str,
        Option<&'static str>,
        &'static [(&'static str, Option<&'static str>)],
    );

    #[test]
    fn lookup_matches_ssh() {
        #[rustfmt::skip]
        let cases: &[LookupCase] = &[
            ("Host foo\n Port 1111\nHost *\n Port 2222\n User u\n", "foo", None, &[("port", Some("1111")), ("user", Some("u"))]),
            ("Host foo\n Port 1111\nHost *\n Port 2222\n", "bar", None, &[("port", Some("2222"))]),
            ("Port 12\nHost foo\n Port 13\n", "foo", None, &[("port", Some("12"))]),
            ("Host FOO\n Port 1111\nHost foo\n Port 2222\n", "foo", None, &[("port", Some("2222"))]),
            ("Host FOO\n Port 1111\nHost foo\n Port 2222\n", "FOO", None, &[("port", Some("1111"))]),
            ("Host * !bar\n Port 1\n", "foo", None, &[("port", Some("1"))]),
            ("Host * !bar\n Port 1\n", "bar", None, &[("port", None)]),
            ("Host !bar *\n Port 1\n", "bar", None, &[("port", None)]),
            ("Host a,b\n Port 5\n", "a", None, &[("port", None)]),
            ("Host a b\n Port 5\n", "b", None, &[("port", Some("5"))]),
            ("Host *.example.com ?x\n User w\n", "h.example.com", None, &[("user", Some("w"))]),
            ("Host *.example.com ?x\n User w\n", "ax", None, &[("user", Some("w"))]),
            ("Host *.example.com ?x\n User w\n", "abx", None, &[("user", None)]),
            ("Host alias\n HostName real.example.com\nMatch host *.example.com\n User bob\n", "alias", None, &[ ("hostname", Some("real.example.com")), ("user", Some("bob")), ]),
            ("Match host *.example.com\n User bob\nHost alias\n HostName real.example.com\n", "alias", None, &[("user", None)]),
            ("Host foo\n HostName %h.example.com\nMatch host foo.example.com\n Port 16\n", "foo", None, &[("port", Some("16"))]),
            ("Match originalhost ali*\n Port 7\n", "alias", None, &[("port", Some("7"))]),
            ("Match host FOO\n Port 15\n", "foo", None, &[("port", Some("15"))]),
            ("Match host \"!bad*,*.ex\"\n Port 10\n", "a.ex", None, &[("port", Some("10"))]),
            ("Match host \"!bad*,*.ex\"\n Port 10\n", "bad.ex", None, &[("port", None)]),
            ("Match !host foo\n Port 3\n", "foo", None, &[("port", None)]),
            ("Match !host foo\n Port 3\n", "bar", None, &[("port", Some("3"))]),
            ("Match all\n Port 4\n", "x", None, &[("port", Some("4"))]),
            ("Match user bob\n Port 9\n", "h", Some("bob"), &[("port", Some("9")), ("user", None)]),
            ("Match user bob\n Port 9\n", "h", Some("Bob"), &[("port", None)]),
            ("Host foo\n User alice\nMatch user alice\n Port 14\n", "foo", None, &[("port", Some("14"))]),
            ("Host foo\n User alice\nMatch user alice\n Port 14\n", "foo", Some("carol"), &[("port", None), ("user", Some("alice"))]),
            ("Match host foo user nobody-here\n Port 17\n", "foo", None, &[("port", None)]),
            ("Match canonical\n Port 5\nMatch !final\n Port 6\n", "x", None, &[("port", Some("6"))]),
            ("Match exec \"test %h = foo\"\n Port 8\n", "foo", None, &[("port", Some("8"))]),
            ("Match exec \"test %h = foo\"\n Port 8\n", "bar", None, &[("port", None)]),
            ("Match !exec false\n Port 18\n", "x", None, &[("port", Some("18"))]),
            ("Host foo\n Port 2200\nMatch exec \"test %p = 2200 && test %n = foo\"\n User e\n", "foo", None, &[("user", Some("e"))]),
            ("Host x\nPort 19\n", "y", None, &[("port", None)]),
        ];
        let local = local_user();
        let dir = tempfile::tempdir().unwrap();
        for (index, (text, host, user, wants)) in cases.iter().enumerate() {
            let path = write(dir.path(), &format!("config{index}"), text);
            let config = SshConfig::load(&path, dir.path()).unwrap();
            let mut context = ctx(host, *user);
            context.local_user.clone_from(&local);
            let got = config.lookup(&context);
            for (key, want) in *wants {
                assert_eq!(got.first(key), *want, "{text:?} for {host}: {key}");
            }
            let extra: Vec<&str> = user.map(|u| vec!["-l", u]).unwrap_or_default();
            let theirs = match ssh_g(&path, host, &extra) {
                Ssh::Missing => continue,
                Ssh::Rejected => panic!("ssh -G rejected {text:?}"),
                Ssh::Accepted(theirs) => theirs,
            };
            for (key, want) in *wants {
                // ssh -G shows effective values: skip raw %h values and the -l user.
                let from_command_line = *key == "user" && user.is_some();
                let Some(want) = want.filter(|w| !w.contains('%') && !from_command_line) else {
                    continue;
                };
                let theirs = theirs
                    .get(*key)
                    .and_then(|v| v.first())
                    .map(|v| v.to_lowercase());
                assert_eq!(
                    theirs.as_deref(),
                    Some(want.to_lowercase().as_str()),
                    "ssh -G: {text:?} for {host}: {key}"
                );
            }
        }
    }

    #[test]
    fn match_lines_also_see_users_across_local_user() {
        let config = SshConfig::parse_str(
            "Match localuser someone-else\n Port 1\nMatch user someone-else\n Port 2\nMatch localuser *\n Port 3\n",
            Path::new("/c"),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(config.lookup(&ctx("h", None)).first("port"), Some("3"));
    }

    #[test]
    fn exec_is_skipped_after_a_failed_criterion() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let text = format!(
            "Match host nomatch exec \"touch {0}\"\n Port 1\nMatch host h !exec \"touch {0}.2\"\n Port 2\n",
            marker.display()
        );
        let config = SshConfig::parse_str(&text, Path::new("/c"), dir.path()).unwrap();
        let got = config.lookup(&ctx("h", None));
        assert_eq!(got.first("port"), None, "touch succeeded, so !exec fails");
        assert!(!marker.exists(), "exec ran although host did not match");
        assert!(
            dir.path().join("ran.2").exists(),
            "exec should run when earlier criteria hold"
        );
    }

    #[test]
    fn multi_valued_keys_accumulate_like_ssh() {
        let text = "Host *\n IdentityFile /k/a\n IdentityFile /k/b\n LocalForward 1 h:2\n SetEnv A=1\n SendEnv X Y\nHost foo\n LocalForward 3 h:4\n SetEnv B=2\n SendEnv Z\n User first\n User second\n";
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "config", text);
        let got = SshConfig::load(&path, dir.path())
            .unwrap()
            .lookup(&ctx("foo", None));
        let all =
            |key| -> Vec<Vec<String>> { got.get_all(key).iter().map(|a| a.to_vec()).collect() };
        assert_eq!(
            all("identityfile"),
            vec![strings(&["/k/a"]), strings(&["/k/b"])]
        );
        assert_eq!(
            all("LocalForward"),
            vec![strings(&["1", "h:2"]), strings(&["3", "h:4"])]
        );
        assert_eq!(all("sendenv"), vec![strings(&["X", "Y"]), strings(&["Z"])]);
        assert_eq!(all("setenv"), vec![strings(&["A=1"])]);
        assert_eq!(all("user"), vec![strings(&["first"])]);
        if let Ssh::Accepted(theirs) = ssh_g(&path, "foo", &[]) {
            assert_eq!(theirs["identityfile"], strings(&["/k/a", "/k/b"]));
            assert_eq!(theirs["localforward"].len(), 2);
            assert_eq!(theirs["setenv"], strings(&["A=1"]));
            assert_eq!(theirs["sendenv"], strings(&["X", "Y", "Z"]));
            assert_eq!(theirs["user"], strings(&["first"]));
        }
    }

    #[test]
    fn command_line_options_are_seen_by_match() {
        let config = SshConfig::parse_str(
            "Match host real.example\n User m\nMatch exec \"test %p = 2200\"\n Port 1\n Compression yes\n",
            Path::new("/c"),
            Path::new("/"),
        )
        .unwrap();
        let mut command_line = HostOptions::default();
        for line in ["HostName=real.example", "Port=2200"] {
            let (key, args) = parse_option_line(line).unwrap();
            command_line.set_if_absent(&key, args, false);
        }
        let got = config.lookup_onto(&ctx("alias", None), command_line);
        assert_eq!(got.first("user"), Some("m"));
        assert_eq!(got.first("port"), Some("2200"));
        assert_eq!(got.first("compression"), Some("yes"));
        let plain = config.lookup(&ctx("alias", None));
        assert_eq!((plain.first("user"), plain.first("port")), (None, None));
    }

    #[test]
    fn command_line_options_win_over_config() {
        let config = SshConfig::parse_str(
            "Host *\n Port 2222\n User cfg\n LocalForward 1 h:1\n",
            Path::new("/c"),
            Path::new("/"),
        )
        .unwrap();
        let mut options = HostOptions::default();
        for line in ["port=3333", "LocalForward 9 h:9"] {
            let (key, args) = parse_option_line(line).unwrap();
            options.set_if_absent(&key, args, is_multi(&key));
        }
        options.merge_from(config.lookup(&ctx("h", None)));
        assert_eq!(options.first("Port"), Some("3333"));
        assert_eq!(options.first("user"), Some("cfg"));
        assert_eq!(options.get_all("localforward").len(), 2);
        assert_eq!(
            options.get_all("localforward")[0],
            strings(&["9", "h:9"]).as_slice()
        );
        let keys: Vec<&str> = options.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["port", "localforward", "user", "localforward"]);
    }

    /// Include semantics from OpenSSH's regress/cfginclude.sh, rebuilt with our own files.
    #[test]
    fn include_matches_ssh() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        write(
            dir.path(),
            "inc.d/1",
            "Host a\n HostName inc1-a\nHost b\n HostName inc1-b\nMatch host d\n HostName inc1-d\n",
        );
        write(
            dir.path(),
            "inc.d/2",
            "Host c\n HostName inc2-c\nMatch all\n HostName inc2-all\n",
        );
        write(dir.path(), "inc.d/.hidden", "HostName hidden\n");
        write(dir.path(), "leak", "Host nothing-matches-this\n");
        let main = write(
            dir.path(),
            "config",
            &format!(
                "Host a\n HostName main-a\n Include {d}/inc.d/*\nHost b\n Include {d}/inc.d/* # comment\n HostName main-b\nMatch host c\n Include {d}/inc.d/*\nHost d\n Include {d}/inc.d/*\nHost e\n Include {d}/leak {d}/none-*\n Port 99\nHost f\n Include {d}/leak\nHost g\n Include \"{d}/inc.d/[0-1]\"\n"
            ),
        );
        let config = SshConfig::load(&main, dir.path()).unwrap();
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("a", "hostname", Some("main-a")),
            ("b", "hostname", Some("inc1-b")),
            ("c", "hostname", Some("inc2-c")),
            ("d", "hostname", Some("inc1-d")),
            ("e", "port", Some("99")),
            ("f", "hostname", None),
            ("g", "hostname", None),
            ("x", "hostname", None),
        ];
        for (host, key, want) in cases {
            let got = config.lookup(&ctx(host, None));
            assert_eq!(got.first(key), *want, "host {host}");
            match (ssh_g(&main, host, &[]), want) {
                (Ssh::Rejected, _) => panic!("ssh -G rejected the include test config"),
                (Ssh::Accepted(theirs), Some(want)) => {
                    assert_eq!(theirs[*key], strings(&[want]), "ssh -G, host {host}")
                }
                _ => {}
            }
        }
    }

    #[test]
    fn include_paths_resolve_against_base_home_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let home = std::env::var("HOME").unwrap_or_default();
        let cases: &[(&str, String)] = &[
            (
                "conf.d/*",
                dir.path().join("conf.d/*").display().to_string(),
            ),
            ("/etc/ssh/x", "/etc/ssh/x".to_string()),
            ("~/x", format!("{home}/x")),
            ("${HOME}/y", format!("{home}/y")),
            ("~root/z", "/root/z".to_string()),
        ];
        for (arg, want) in cases {
            let got = include_pattern(arg, dir.path()).unwrap();
            assert_eq!(got, PathBuf::from(want), "{arg}");
        }
        for bad in [
            "%h.conf",
            "${NO_SUCH_VARIABLE_FOR_BURROW_TESTS}/x",
            "~no-such-user-here/x",
        ] {
            assert!(include_pattern(bad, dir.path()).is_err(), "{bad}");
        }
        write(dir.path(), "conf.d/one", "Port 4444\n");
        let config =
            SshConfig::parse_str("Include conf.d/*\n", Path::new("/c"), dir.path()).unwrap();
        assert_eq!(config.lookup(&ctx("h", None)).first("port"), Some("4444"));
    }

    #[test]
    fn include_errors() {
        let dir = tempfile::tempdir().unwrap();
        let looping = dir.path().join("loop");
        fs::write(&looping, format!("Include {}\n", looping.display())).unwrap();
        let err = SshConfig::load(&looping, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("too many nested Include levels"),
            "{err}"
        );
        if let Ssh::Accepted(_) = ssh_g(&looping, "h", &[]) {
            panic!("ssh accepted an Include loop");
        }

        fs::create_dir(dir.path().join("adir")).unwrap();
        let err = SshConfig::parse_str("Include adir\n", Path::new("/c"), dir.path()).unwrap_err();
        assert!(matches!(err, ConfigError::Include { line: 1, .. }), "{err}");

        write(dir.path(), "bad/inc", "HostName x\n Junk\n");
        let err = SshConfig::parse_str(
            "Host nomatch\n Include bad/*\n",
            Path::new("/c"),
            dir.path(),
        )
        .unwrap_err();
        let inc = dir.path().join("bad/inc");
        assert_eq!(
            err.to_string(),
            format!(
                "{} line 2: no argument after keyword \"Junk\"",
                inc.display()
            )
        );

        SshConfig::parse_str(
            "Include missing-* nothing-here\n",
            Path::new("/c"),
            dir.path(),
        )
        .unwrap();
    }

    #[test]
    fn expand_tokens_cases() {
        let mut t = Tokens::new("real.example", "Alias", 2222, "bob", "alice");
        t.home = PathBuf::from("/home/alice");
        t.uid = 1000;
        t.local_hostname = "box.lan".to_string();
        let home = std::env::var("HOME").unwrap_or_default();
        #[rustfmt::skip]
        let cases: &[(&str, Result<String, &str>)] = &[
            ("%h:%p", Ok("real.example:2222".into())),
            ("%r@%n %u %i %d", Ok("bob@Alias alice 1000 /home/alice".into())),
            ("%l %L.", Ok("box.lan box.".into())),
            ("%j", Err("token \"%j\" is not supported by burrow")),
            ("%k", Err("token \"%k\" is not supported by burrow")),
            ("100%%", Ok("100%".into())),
            ("~", Ok("/home/alice".into())),
            ("~/.ssh/id_%h", Ok("/home/alice/.ssh/id_real.example".into())),
            ("a~b", Ok("a~b".into())),
            ("${HOME}/x", Ok(format!("{home}/x"))),
            ("$HOME/x", Ok("$HOME/x".into())),
            ("%x", Err("unknown token \"%x\"")),
            ("50%", Err("a lone \"%\" at the end (write %% for a percent sign)")),
            ("${NO_SUCH_VARIABLE_FOR_BURROW_TESTS}", Err("environment variable \"NO_SUCH_VARIABLE_FOR_BURROW_TESTS\" is not set")),
            ("${HOME", Err("\"${\" without a closing \"}\"")),
        ];
        for (input, want) in cases {
            match (expand_tokens(input, &t), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{input:?}"),
                (Err(err), Err(problem)) => {
                    assert_eq!(
                        err.to_string(),
                        format!("cannot expand \"{input}\": {problem}")
                    )
                }
                (got, _) => panic!("{input:?}: unexpected {got:?}"),
            }
        }
        // %C vector computed independently: sha1("box.lan" "real.example" "2222" "bob").
        assert_eq!(
            t.connection_hash(),
            "ce520e2ebd3ca8efb9cbfd1d3b36975f8024794d"
        );
    }

    /// %C and the other tokens as `ssh -G` expands them in ControlPath.
    #[test]
    fn tokens_match_ssh_control_path() {
        let dir = tempfile::tempdir().unwrap();
        let config = write(dir.path(), "config", "");
        let pattern = "%C_%l_%L_%h_%p_%r_%u_%n_%i_%d";
        let extra = [
            "-o",
            &format!("ControlPath={pattern}"),
            "-p",
            "2222",
            "-l",
            "bob",
        ];
        let Ssh::Accepted(theirs) = ssh_g(&config, "Foo.Example", &extra) else {
            return;
        };
        let t = Tokens::new("foo.example", "Foo.Example", 2222, "bob", &local_user());
        assert_eq!(
            expand_tokens(pattern, &t).unwrap(),
            theirs["controlpath"][0]
        );
    }
}
