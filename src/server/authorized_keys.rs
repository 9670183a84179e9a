//! The relay's authorized_keys file: OpenSSH's format (sshd(8) "AUTHORIZED_KEYS FILE
//! FORMAT") plus a few `burrow-` options.
//!
//! This is a server's security configuration, so it fails loudly: a malformed line, an
//! unknown option or an option burrow cannot honour is an error naming file and line,
//! where sshd would skip the line at login time. Option names are case-insensitive and
//! applied left to right (so `restrict,port-forwarding` re-enables forwarding), as in
//! OpenSSH's auth-options.c `sshauthopt_parse`.
//!
//! burrow's own options: `burrow-privileged-ports`, `burrow-max-listeners=N`,
//! `burrow-max-channels=N` (values quoted or not; OpenSSH's value options must be quoted),
//! `burrow-permitremoteopen="host:port"` (repeatable; see [`super::socks_gate`]).
//! Refused as unsupported, because accepting them would silently weaken them:
//! `cert-authority`, `principals=` (sshd refuses it without `cert-authority` anyway).
//! FIDO keys follow sshd: a signature must show the user's touch unless the line has
//! `no-touch-required`, and the key's verification of the user with `verify-required`
//! ([`super::policy::security_key_problem`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use jiff::tz::TimeZone;
use russh::keys::PublicKey;

pub use super::policy::KeyOptions;
use super::policy::{add_key_permit_listen, add_key_permit_open, split_host_port, PermitOpen};
use crate::pattern::match_pattern;

/// One authorized key with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    /// The public key; its own comment is empty, see `comment`.
    pub key: PublicKey,
    /// The comment after the key on the line (often user@host), for log lines.
    pub comment: String,
    /// What this key may do.
    pub options: KeyOptions,
    /// 1-based line number, so logs and errors can point at the entry.
    pub line: usize,
}

/// All entries of one authorized_keys file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthorizedKeys {
    /// The entries; a key may appear on several lines with different options.
    pub keys: Vec<AuthorizedKey>,
}

/// Why an authorized_keys file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizedKeysError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file or a directory above it could be changed by someone other than root and the
    /// relay's user, who could then add keys (sshd's StrictModes; the message names the path,
    /// its owner and mode, and what is required).
    #[error(transparent)]
    Insecure(#[from] super::strict_modes::Insecure),
    /// One line is wrong.
    #[error("{} line {line}: {problem}", path.display())]
    Line {
        /// The file (or the origin given to [`AuthorizedKeys::parse`]).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: LineProblem,
    },
}

/// What is wrong with one authorized_keys line.
#[derive(Debug, thiserror::Error)]
pub enum LineProblem {
    /// Not an OpenSSH or burrow option.
    #[error("unknown option \"{0}\"")]
    UnknownOption(String),
    /// A real OpenSSH option that burrow cannot honour; accepting it would weaken it.
    #[error("option \"{option}\" is not supported: {why}")]
    Unsupported {
        /// The option.
        option: String,
        /// Why not.
        why: &'static str,
    },
    /// An option list with an empty entry (`,,`, a leading or trailing comma).
    #[error("empty option (stray comma)")]
    EmptyOption,
    /// A quoted value without its closing quote.
    #[error("option \"{0}\": missing end quote")]
    MissingEndQuote(String),
    /// A value option written without `="..."`.
    #[error("option \"{0}\" needs a quoted value, e.g. {0}=\"...\"")]
    NeedsValue(String),
    /// A flag option written with a value.
    #[error("option \"{0}\" takes no value")]
    TakesNoValue(String),
    /// Text between a closing quote and the next comma.
    #[error("option \"{0}\": unexpected text after the value")]
    TextAfterValue(String),
    /// An option that may appear only once appeared twice.
    #[error("option \"{0}\" given more than once")]
    Duplicate(String),
    /// A `permitopen`/`permitlisten` value that does not parse.
    #[error("option \"{option}\": {source}")]
    Permit {
        /// The option.
        option: &'static str,
        /// The parse error.
        source: super::policy::PolicyError,
    },
    /// A bad `from=` pattern list.
    #[error("option \"from\": {0}")]
    From(FromError),
    /// A bad `expiry-time=` value.
    #[error("option \"expiry-time\": \"{0}\" is not YYYYMMDD[HHMM[SS]][Z]")]
    Expiry(String),
    /// A value that should be a number.
    #[error("option \"{option}\": \"{value}\" is not a number")]
    Number {
        /// The option.
        option: String,
        /// What was given.
        value: String,
    },
    /// Some other malformed option value (environment=, tunnel=).
    #[error("option \"{option}\": invalid value \"{value}\"")]
    BadValue {
        /// The option.
        option: String,
        /// What was given.
        value: String,
    },
    /// Options but nothing after them.
    #[error("missing key after the options")]
    MissingKey,
    /// Base64 key data without the key type before it.
    #[error("missing key type before the base64 key data")]
    MissingKeyType,
    /// A key type without the base64 key data.
    #[error("missing base64 key data after \"{0}\"")]
    MissingKeyData(String),
    /// A key type this server does not know.
    #[error("unknown key type \"{0}\"")]
    UnknownKeyType(String),
    /// A certificate line; burrow authorizes plain keys only.
    #[error("certificates (\"{0}\") are not supported, list the plain key")]
    Certificate(String),
    /// Key data that does not decode or does not match its type.
    #[error("invalid {key_type} key: {source}")]
    BadKey {
        /// The type named on the line.
        key_type: String,
        /// The decoding error (boxed: it is large and rare).
        source: Box<russh::keys::ssh_key::Error>,
    },
}

/// A malformed `from=` entry (OpenSSH would refuse every login through this key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FromError {
    /// An empty entry, e.g. `a,,b` or a lone `!`.
    #[error("empty pattern in \"{0}\"")]
    Empty(String),
    /// A prefix length longer than the address.
    #[error("\"{0}\": prefix length too long")]
    BadPrefix(String),
    /// Bits set past the prefix, e.g. `10.0.0.1/8`; sshd rejects it (addr.c `addr_pton_cidr`).
    #[error("\"{0}\": address has bits set beyond the prefix length")]
    HostBits(String),
}

/// Why a key was refused at login. When several lines list the key, the reason is the
/// last line's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The key is on no line.
    #[error("key not in authorized_keys")]
    NotListed,
    /// `expiry-time` has passed.
    #[error("key expired (authorized_keys line {line})")]
    Expired {
        /// The line.
        line: usize,
    },
    /// The peer address is not allowed by the line's `from=`.
    #[error("source address not allowed by from= (authorized_keys line {line})")]
    FromNotAllowed {
        /// The line.
        line: usize,
    },
}

impl AuthorizedKeys {
    /// Reads and parses `path`. With `strict_modes` (serve.toml's default), refuses it unless
    /// it and every directory above it are owned by root or the relay's user and not writable
    /// by group or others, as sshd's StrictModes does ([`super::strict_modes`]). A bad line is
    /// reported before bad modes, so fixing one does not hide the other for long; neither
    /// lets a key in.
    pub fn load(path: &Path, strict_modes: bool) -> Result<Self, AuthorizedKeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthorizedKeysError::Read {
            path: path.to_owned(),
            source,
        })?;
        let keys = Self::parse(&text, path)?;
        if strict_modes {
            let trust = super::strict_modes::Trust::current();
            super::strict_modes::check_secure_path(path, &trust)?;
        }
        Ok(keys)
    }

    /// Parses file contents; `origin` names the file in errors. `expiry-time` is read in the
    /// relay's local time zone (`TZ`, else /etc/localtime), as sshd reads it; a changed zone
    /// applies from the next load (start or SIGHUP).
    pub fn parse(text: &str, origin: &Path) -> Result<Self, AuthorizedKeysError> {
        Self::parse_in(text, origin, &TimeZone::system())
    }

    /// [`AuthorizedKeys::parse`] with `expiry-time` read in `zone` (a test's zone, say).
    pub fn parse_in(
        text: &str,
        origin: &Path,
        zone: &TimeZone,
    ) -> Result<Self, AuthorizedKeysError> {
        let mut keys = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let parsed = parse_line(raw, zone).map_err(|problem| AuthorizedKeysError::Line {
                path: origin.to_owned(),
                line,
                problem,
            })?;
            if let Some((key, comment, options)) = parsed {
                keys.push(AuthorizedKey {
                    key,
                    comment,
                    options,
                    line,
                });
            }
        }
        Ok(Self { keys })
    }

    /// The first entry for this key (comparing key data, not comments); None if not listed.
    pub fn find(&self, key: &PublicKey) -> Option<&AuthorizedKey> {
        self.entries(key).next()
    }

    /// The entry that lets `key` in from `peer` at `now`. Like sshd, a line refused by
    /// `from=` or `expiry-time` does not end the search: a later line may still admit the key.
    pub fn authorize(
        &self,
        key: &PublicKey,
        peer: IpAddr,
        now: SystemTime,
    ) -> Result<&AuthorizedKey, Refusal> {
        let mut refusal = Refusal::NotListed;
        for entry in self.entries(key) {
            match entry.check(peer, now) {
                Ok(()) => return Ok(entry),
                Err(r) => refusal = r,
            }
        }
        Err(refusal)
    }

    fn entries<'a: 'k, 'k>(
        &'a self,
        key: &'k PublicKey,
    ) -> impl Iterator<Item = &'a AuthorizedKey> + 'k {
        self.keys
            .iter()
            .filter(move |entry| entry.key.key_data() == key.key_data())
    }
}

impl AuthorizedKey {
    /// Applies the login-time options: `expiry-time`, then `from=` (sshd's order).
    pub fn check(&self, peer: IpAddr, now: SystemTime) -> Result<(), Refusal> {
        let line = self.line;
        if self.options.expired_at(now) {
            return Err(Refusal::Expired { line });
        }
        match &self.options.from {
            Some(patterns) if !from_allows(patterns, peer) => Err(Refusal::FromNotAllowed { line }),
            _ => Ok(()),
        }
    }
}

type ParsedLine = (PublicKey, String, KeyOptions);

/// One line: blank/comment → None; else `[options] keytype base64 [comment]`.
fn parse_line(raw: &str, zone: &TimeZone) -> Result<Option<ParsedLine>, LineProblem> {
    let line = raw.trim_start_matches([' ', '\t']);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (first, rest) = split_options_field(line);
    if is_key_type(first) || looks_like_key_data(first) {
        let (key, comment) = parse_key(line)?;
        return Ok(Some((key, comment, KeyOptions::default())));
    }
    let options = parse_options(first, zone).map_err(|problem| match problem {
        // `ssh-foo AAAA...`: an unknown key type, not an unknown option.
        LineProblem::UnknownOption(_) if looks_like_key_data(rest) => {
            LineProblem::UnknownKeyType(first.to_owned())
        }
        other => other,
    })?;
    if rest.is_empty() {
        return Err(LineProblem::MissingKey);
    }
    let (key, comment) = parse_key(rest)?;
    Ok(Some((key, comment, options)))
}

/// Splits off the options field: up to the first space/tab outside quotes, where `\"`
/// does not toggle quoting (authfile.c `sshkey_advance_past_options`).
fn split_options_field(line: &str) -> (&str, &str) {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = line.get(i + 1..).is_some_and(|r| r.starts_with('"')),
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => {
                let (field, rest) = line.split_at(i);
                return (field, rest.trim_start_matches([' ', '\t']));
            }
            _ => {}
        }
    }
    (line, "")
}

/// The public key types a line may name (certificates are refused), so the docs test finds
/// key lines by the same list the parser accepts.
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

fn is_certificate_type(word: &str) -> bool {
    word.ends_with("-cert-v01@openssh.com")
}

fn is_key_type(word: &str) -> bool {
    KEY_TYPES.contains(&word) || is_certificate_type(word)
}

/// `keytype base64 [comment]`, tolerant of runs of spaces and tabs like sshd.
fn parse_key(text: &str) -> Result<(PublicKey, String), LineProblem> {
    let (key_type, rest) = split_word(text);
    if looks_like_key_data(key_type) {
        return Err(LineProblem::MissingKeyType);
    }
    if is_certificate_type(key_type) {
        return Err(LineProblem::Certificate(key_type.to_owned()));
    }
    if !KEY_TYPES.contains(&key_type) {
        return Err(LineProblem::UnknownKeyType(key_type.to_owned()));
    }
    let (data, comment) = split_word(rest);
    if data.is_empty() {
        return Err(LineProblem::MissingKeyData(key_type.to_owned()));
    }
    let key = PublicKey::from_openssh(&format!("{key_type} {data}")).map_err(|source| {
        LineProblem::BadKey {
            key_type: key_type.to_owned(),
            source: Box::new(source),
        }
    })?;
    Ok((key, comment.trim_end().to_owned()))
}

/// Base64 of an SSH key blob starts with the length of the type name: `AAAA`.
fn looks_like_key_data(text: &str) -> bool {
    text.starts_with("AAAA")
}

fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start_matches([' ', '\t']);
    let end = text.find([' ', '\t']).unwrap_or(text.len());
    let (word, rest) = text.split_at(end);
    (word, rest.trim_start_matches([' ', '\t']))
}

/// One option as written: its name and, after `=`, its value.
struct RawOption {
    name: String,
    value: Option<Value>,
}

struct Value {
    text: String,
    quoted: bool,
}

fn parse_options(field: &str, zone: &TimeZone) -> Result<KeyOptions, LineProblem> {
    let mut options = KeyOptions::default();
    for raw in split_options(field)? {
        apply_option(&mut options, raw, zone)?;
    }
    Ok(options)
}

/// Splits `name[=value],...`; quoted values may hold commas, spaces and `\"`.
fn split_options(field: &str) -> Result<Vec<RawOption>, LineProblem> {
    let mut out = Vec::new();
    let mut rest = field;
    loop {
        let end = rest.find(['=', ',']).unwrap_or(rest.len());
        let (name, after) = rest.split_at(end);
        if name.is_empty() {
            return Err(LineProblem::EmptyOption);
        }
        let (value, after) = match after.strip_prefix('=') {
            Some(v) => {
                let (value, after) = read_value(name, v)?;
                (Some(value), after)
            }
            None => (None, after),
        };
        out.push(RawOption {
            name: name.to_owned(),
            value,
        });
        if after.is_empty() {
            return Ok(out);
        }
        rest = after
            .strip_prefix(',')
            .ok_or_else(|| LineProblem::TextAfterValue(name.to_owned()))?;
    }
}

/// Reads a value after `=`: `"..."` with `\"` for a quote (misc.c `opt_dequote`), or bare
/// up to the next comma (accepted for burrow options only).
fn read_value<'a>(name: &str, s: &'a str) -> Result<(Value, &'a str), LineProblem> {
    let Some(body) = s.strip_prefix('"') else {
        let end = s.find(',').unwrap_or(s.len());
        let (text, after) = s.split_at(end);
        let value = Value {
            text: text.to_owned(),
            quoted: false,
        };
        return Ok((value, after));
    };
    let mut text = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        let rest = body.get(i + 1..).unwrap_or_default();
        match c {
            '\\' if rest.starts_with('"') => {
                text.push('"');
                chars.next();
            }
            '"' => return Ok((Value { text, quoted: true }, rest)),
            c => text.push(c),
        }
    }
    Err(LineProblem::MissingEndQuote(name.to_owned()))
}

const NO_CA: &str = "burrow authorizes plain keys only, not certificate authorities";

fn apply_option(o: &mut KeyOptions, raw: RawOption, zone: &TimeZone) -> Result<(), LineProblem> {
    let lower = raw.name.to_ascii_lowercase();
    match lower.as_str() {
        "restrict" => no_value(&raw).map(|()| o.port_forwarding = false),
        "port-forwarding" => no_value(&raw).map(|()| o.port_forwarding = true),
        "no-port-forwarding" => no_value(&raw).map(|()| o.port_forwarding = false),
        "burrow-privileged-ports" => no_value(&raw).map(|()| o.privileged_ports = true),
        // Session features a forwarding-only relay never offers.
        "pty"
        | "no-pty"
        | "agent-forwarding"
        | "no-agent-forwarding"
        | "x11-forwarding"
        | "no-x11-forwarding"
        | "user-rc"
        | "no-user-rc" => no_value(&raw),
        // FIDO flags, negatable as in sshd's auth-options.c.
        "touch-required" => no_value(&raw).map(|()| o.touch_required = true),
        "no-touch-required" => no_value(&raw).map(|()| o.touch_required = false),
        "verify-required" => no_value(&raw).map(|()| o.verify_required = true),
        "no-verify-required" => no_value(&raw).map(|()| o.verify_required = false),
        "cert-authority" => Err(unsupported(&raw, NO_CA)),
        "principals" => Err(unsupported(&raw, NO_CA)),
        "command" => set_once(&raw, &mut o.command, quoted(&raw)?),
        "from" => set_once(&raw, &mut o.from, parse_from(quoted(&raw)?)?),
        "expiry-time" => {
            let until = parse_expiry(&quoted(&raw)?, zone)?;
            o.expiry = Some(o.expiry.map_or(until, |old| old.min(until)));
            Ok(())
        }
        "permitopen" => add_key_permit_open(&mut o.permit_open, &quoted(&raw)?).map_err(|source| {
            LineProblem::Permit {
                option: "permitopen",
                source,
            }
        }),
        "permitlisten" => add_key_permit_listen(
            &mut o.permit_listen,
            &mut o.permit_listen_none,
            &quoted(&raw)?,
        )
        .map_err(|source| LineProblem::Permit {
            option: "permitlisten",
            source,
        }),
        "environment" => check_environment(&raw, &quoted(&raw)?),
        "tunnel" => check_tunnel(&raw, &quoted(&raw)?),
        "burrow-max-listeners" => set_once(&raw, &mut o.max_listeners, number(&raw)?),
        "burrow-max-channels" => set_once(&raw, &mut o.max_channels, number(&raw)?),
        "burrow-permitremoteopen" => {
            let entry = parse_key_permit_open(&quoted(&raw)?, "burrow-permitremoteopen")?;
            o.remote_open.push(entry);
            Ok(())
        }
        _ => Err(LineProblem::UnknownOption(raw.name)),
    }
}

fn unsupported(raw: &RawOption, why: &'static str) -> LineProblem {
    LineProblem::Unsupported {
        option: raw.name.clone(),
        why,
    }
}

fn no_value(raw: &RawOption) -> Result<(), LineProblem> {
    match raw.value {
        None => Ok(()),
        Some(_) => Err(LineProblem::TakesNoValue(raw.name.clone())),
    }
}

/// OpenSSH value options must be quoted; sshd rejects `from=x` too.
fn quoted(raw: &RawOption) -> Result<String, LineProblem> {
    match &raw.value {
        Some(v) if v.quoted => Ok(v.text.clone()),
        _ => Err(LineProblem::NeedsValue(raw.name.clone())),
    }
}

/// burrow's numeric options, quoted or not.
fn number(raw: &RawOption) -> Result<u32, LineProblem> {
    let value = raw
        .value
        .as_ref()
        .ok_or_else(|| LineProblem::NeedsValue(raw.name.clone()))?;
    let digits = !value.text.is_empty() && value.text.bytes().all(|b| b.is_ascii_digit());
    match value.text.parse() {
        Ok(n) if digits => Ok(n),
        _ => Err(LineProblem::Number {
            option: raw.name.clone(),
            value: value.text.clone(),
        }),
    }
}

fn set_once<T>(raw: &RawOption, slot: &mut Option<T>, value: T) -> Result<(), LineProblem> {
    if slot.is_some() {
        return Err(LineProblem::Duplicate(raw.name.clone()));
    }
    *slot = Some(value);
    Ok(())
}

/// `host:port` (or sshd's `host/port`), IPv6 in brackets; port may be `*`.
fn parse_key_permit_open(value: &str, option: &'static str) -> Result<PermitOpen, LineProblem> {
    let permit = |source| LineProblem::Permit { option, source };
    let (host, port) = split_host_port(value, true).map_err(permit)?;
    Ok(PermitOpen { host, port })
}

/// `NAME=value` with NAME of letters, digits and `_` (misc.c `valid_env_name`). Not stored:
/// the relay runs no commands.
fn check_environment(raw: &RawOption, value: &str) -> Result<(), LineProblem> {
    let valid = value.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    });
    bad_value_unless(valid, raw, value)
}

/// `any` or a device number (misc.c `a2tun`). Not stored: the relay offers no tunnel devices.
fn check_tunnel(raw: &RawOption, value: &str) -> Result<(), LineProblem> {
    let valid = value == "any" || value.parse::<u32>().is_ok();
    bad_value_unless(valid, raw, value)
}

fn bad_value_unless(valid: bool, raw: &RawOption, value: &str) -> Result<(), LineProblem> {
    if valid {
        return Ok(());
    }
    Err(LineProblem::BadValue {
        option: raw.name.clone(),
        value: value.to_owned(),
    })
}

/// `YYYYMMDD[HHMM[SS]]` in `zone` (the relay's local time zone), or in UTC when it ends in `Z`
/// or `UTC` (any case): sshd's misc.c `parse_absolute_time`.
///
/// A local time that a daylight-saving change skips or repeats is resolved by the
/// "compatible" rule of RFC 5545 and JavaScript's Temporal: a skipped time is read with the
/// offset before the change (02:30 in a 02:00 -> 03:00 gap expires at 03:30), a repeated one
/// at its first occurrence. sshd gives mktime(3) `tm_isdst = 0`, which glibc reads as
/// standard time even in summer, so its summer expiry falls an hour after the time written;
/// burrow reads the time as written.
fn parse_expiry(value: &str, zone: &TimeZone) -> Result<SystemTime, LineProblem> {
    let bad = || LineProblem::Expiry(value.to_owned());
    let lower = value.to_ascii_lowercase();
    let (digits, utc) = match (lower.strip_suffix('z'), lower.strip_suffix("utc")) {
        (Some(d), _) | (None, Some(d)) => (d, true),
        (None, None) => (lower.as_str(), false),
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let field = |from: usize, len: usize| -> Option<i16> {
        match digits.get(from..from + len) {
            Some(s) => s.parse().ok(),
            None => Some(0),
        }
    };
    let small = |v: Option<i16>| v.and_then(|v| i8::try_from(v).ok());
    let parts = (
        field(0, 4),
        small(field(4, 2)),
        small(field(6, 2)),
        small(field(8, 2)),
        small(field(10, 2)),
        small(field(12, 2)),
    );
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) = parts else {
        return Err(bad());
    };
    let civil = jiff::civil::DateTime::new(y, mo, d, h, mi, s, 0).map_err(|_| bad())?;
    let instant = if utc {
        TimeZone::UTC.to_timestamp(civil)
    } else {
        zone.to_timestamp(civil)
    }
    .map_err(|_| bad())?;
    // sshd refuses a time before the epoch (mktime < 0).
    let secs = u64::try_from(instant.as_second()).map_err(|_| bad())?;
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .ok_or_else(bad)
}

/// Checks a `from=` list at load time so a typo is an error, not a locked-out key.
fn parse_from(patterns: String) -> Result<String, LineProblem> {
    for entry in patterns.split(',') {
        let pattern = entry.strip_prefix('!').unwrap_or(entry);
        network(pattern, &patterns).map_err(LineProblem::From)?;
    }
    Ok(patterns)
}

/// `from=` semantics (match.c `match_host_and_ip`, addrmatch.c `addr_match_list`): a
/// comma list of address globs and CIDRs, `!` negates, a negated match refuses whatever
/// else matches, and at least one positive match is needed.
///
/// burrow does no reverse DNS, so patterns are matched against the peer's address text,
/// exactly as sshd does with its default `UseDNS no`: `192.168.1.*` and `*` work, while
/// host-name patterns like `*.example.com` never match. IPv4-mapped IPv6 peers are
/// treated as IPv4 (as sshd does). A malformed list matches nothing (fail closed).
pub fn from_allows(patterns: &str, peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    let text = peer.to_string();
    let mut allowed = false;
    for entry in patterns.split(',') {
        let (negated, pattern) = match entry.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, entry),
        };
        let Ok(net) = network(pattern, patterns) else {
            return false;
        };
        let hit = net.is_some_and(|(addr, len)| in_network(peer, addr, len))
            || match_pattern(&text, &pattern.to_ascii_lowercase());
        if hit && negated {
            return false;
        }
        allowed |= hit;
    }
    allowed
}

/// `addr[/len]` → Some(network); anything else is a glob (None). Mirrors addr.c
/// `addr_pton_cidr`: a bad prefix length or host bits past it are errors.
fn network(pattern: &str, list: &str) -> Result<Option<(IpAddr, u32)>, FromError> {
    if pattern.is_empty() {
        return Err(FromError::Empty(list.to_owned()));
    }
    let (addr, len) = match pattern.split_once('/') {
        Some((a, l)) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => (a, Some(l)),
        Some(_) => return Ok(None),
        None => (pattern, None),
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return Ok(None);
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len.map(str::parse::<u32>) {
        None => max,
        Some(Ok(l)) if l <= max => l,
        Some(_) => return Err(FromError::BadPrefix(pattern.to_owned())),
    };
    if masked(addr, len) != addr {
        return Err(FromError::HostBits(pattern.to_owned()));
    }
    Ok(Some((addr, len)))
}

/// Keeps the first `len` bits of `addr`.
fn masked(addr: IpAddr, len: u32) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// Same family and same first `len` bits; families never match each other.
fn in_network(peer: IpAddr, net: IpAddr, len: u32) -> bool {
    peer.is_ipv4() == net.is_ipv4() && masked(peer, len) == masked(net, len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmtULleTLm8Eb6nio0w3CORgH321ApT6Bm4IV5RrAwI";
    const ED2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiBTKPMTifnxbtLi/ZGoKw13cH+ZLGMrPuPvnMWRYTt";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBAnAzCqehzZ8HcayQx8sYRkEACd5CHVf4ao4IwP9dSty2MBEnghxdZ6Xziop6kUqr6ZgNJZ7KcdsinWlY95qAtI=";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDHu0lHV1i6xijomDm1fzpybojs2TFoG9WtJ1ajfZnFSkbQCxs2UaTt28HRLcwigajsCb87eokphojMZh8UMii1Aewdady2DqBNyIXxm2Cb9daPBOI1eY+4TAZ4KF1ZovtVT7BMy6igwoKiVuLKzkAqqDH05YdY3SYsFb7lLbzYyQ==";
    const ORIGIN: &str = "/etc/burrow/authorized_keys";

    /// Parsed with `expiry-time` in UTC, whatever zone the test machine is in.
    fn parse(text: &str) -> Result<AuthorizedKeys, String> {
        AuthorizedKeys::parse_in(text, Path::new(ORIGIN), &TimeZone::UTC).map_err(|e| e.to_string())
    }

    /// The options of a one-line file `<field> <ED>`.
    fn options(field: &str) -> Result<KeyOptions, String> {
        let keys = parse(&format!("{field} {ED} c"))?;
        Ok(keys.keys[0].options.clone())
    }

    fn public(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).unwrap()
    }

    fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8, s: i8) -> SystemTime {
        let civil = jiff::civil::DateTime::new(y, mo, d, h, mi, s, 0).unwrap();
        SystemTime::try_from(TimeZone::UTC.to_timestamp(civil).unwrap()).unwrap()
    }

    /// `expiry-time` of a one-line file parsed in `zone`.
    fn expiry_in(value: &str, zone: &TimeZone) -> Result<SystemTime, String> {
        let text = format!("expiry-time=\"{value}\" {ED}");
        let keys =
            AuthorizedKeys::parse_in(&text, Path::new(ORIGIN), zone).map_err(|e| e.to_string())?;
        Ok(keys.keys[0].options.expiry.unwrap())
    }

    /// Read in the relay's zone, as sshd (it used to be UTC whatever the zone); a `Z` or `UTC`
    /// suffix, in any case, still means UTC. Daylight saving is the zone's own: summer and
    /// winter times differ, a time skipped by the spring change reads with the offset before
    /// it, a repeated autumn time at its first occurrence.
    #[test]
    fn expiry_time_is_local_time_unless_it_says_utc() {
        let plus14 = TimeZone::posix("<+14>-14").unwrap();
        let minus5 = TimeZone::fixed(jiff::tz::offset(-5));
        let berlin = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        #[rustfmt::skip]
        let cases = [
            ("20300102",       &plus14, utc(2030, 1, 1, 10, 0, 0)),
            ("20300102",       &minus5, utc(2030, 1, 2, 5, 0, 0)),
            ("203001021234",   &minus5, utc(2030, 1, 2, 17, 34, 0)),
            ("20300102Z",      &plus14, utc(2030, 1, 2, 0, 0, 0)),
            ("20300102z",      &plus14, utc(2030, 1, 2, 0, 0, 0)),
            ("203001021234UTC", &plus14, utc(2030, 1, 2, 12, 34, 0)),
            ("203001021234utc", &minus5, utc(2030, 1, 2, 12, 34, 0)),
            ("203001011200",   &berlin, utc(2030, 1, 1, 11, 0, 0)),
            ("203007011200",   &berlin, utc(2030, 7, 1, 10, 0, 0)),
            // 2030-03-31 02:30 does not exist in Berlin (02:00 -> 03:00): read as 03:30 CEST.
            ("203003310230",   &berlin, utc(2030, 3, 31, 1, 30, 0)),
            // 2030-10-27 02:30 happens twice: the first one, still CEST.
            ("203010270230",   &berlin, utc(2030, 10, 27, 0, 30, 0)),
        ];
        for (value, zone, want) in cases {
            assert_eq!(expiry_in(value, zone), Ok(want), "{value} in {zone:?}");
        }
        // Before the epoch once read in the zone: refused, as sshd refuses mktime < 0.
        let err = expiry_in("19700101", &plus14).unwrap_err();
        assert!(err.ends_with("is not YYYYMMDD[HHMM[SS]][Z]"), "{err}");
        assert!(expiry_in("19700101", &minus5).is_ok());
    }

    #[test]
    fn options_apply_in_order() {
        let default = KeyOptions::default();
        let no_fwd = KeyOptions {
            port_forwarding: false,
            ..KeyOptions::default()
        };
        let sessiony = "no-pty,no-agent-forwarding,no-X11-forwarding,no-user-rc,pty,\
            agent-forwarding,X11-forwarding,user-rc";
        #[rustfmt::skip]
        let cases = [
            ("",                                      &default),
            ("restrict",                              &no_fwd),
            ("no-port-forwarding",                    &no_fwd),
            ("NO-PORT-FORWARDING",                    &no_fwd),
            ("restrict,port-forwarding",              &default),
            ("port-forwarding,restrict",              &no_fwd),
            ("no-port-forwarding,Port-Forwarding",    &default),
            (sessiony,                                &default),
            ("environment=\"A_1=x,y\",tunnel=\"any\"", &default),
            ("tunnel=\"3\"",                          &default),
        ];
        for (field, want) in cases {
            let field = if field.is_empty() {
                String::new()
            } else {
                format!("{field} ")
            };
            let keys = parse(&format!("{field}{ED}")).unwrap();
            assert_eq!(&keys.keys[0].options, want, "{field:?}");
        }
    }

    #[test]
    fn permit_options() {
        let o = options(
            "restrict,port-forwarding,permitopen=\"db:5432\",permitopen=\"[::1]:*\",\
             permitopen=\"*:443\",permitopen=\"cache/6379\",permitlisten=\"8080\",\
             permitlisten=\"localhost:*\",permitlisten=\"[::1]:2222\"",
        )
        .unwrap();
        assert!(o.port_forwarding);
        let open: Vec<String> = o
            .permit_open
            .iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        assert_eq!(open, ["db:5432", "[::1]:*", "*:443", "cache:6379"]);
        let listen: Vec<String> = o.permit_listen.iter().map(ToString::to_string).collect();
        assert_eq!(listen, ["8080", "localhost:*", "[::1]:2222"]);
    }

    #[test]
    fn value_options() {
        let o = options(
            "from=\"10.0.0.0/8,!10.0.0.5\",command=\"echo \\\"hi, there\\\"\",\
             burrow-privileged-ports,burrow-max-listeners=4,burrow-max-channels=\"16\"",
        )
        .unwrap();
        assert_eq!(o.from.as_deref(), Some("10.0.0.0/8,!10.0.0.5"));
        assert_eq!(o.command.as_deref(), Some("echo \"hi, there\""));
        assert!(o.privileged_ports);
        assert_eq!((o.max_listeners, o.max_channels), (Some(4), Some(16)));
        // A quoted value may hold spaces: the options field ends at an unquoted blank.
        let o = options("command=\"nc -l 1, 2\",restrict").unwrap();
        assert_eq!(o.command.as_deref(), Some("nc -l 1, 2"));
        assert!(!o.port_forwarding);
    }

    #[test]
    fn expiry_time() {
        #[rustfmt::skip]
        let cases = [
            ("expiry-time=\"20300102\"",               utc(2030, 1, 2, 0, 0, 0)),
            ("expiry-time=\"203001021234\"",           utc(2030, 1, 2, 12, 34, 0)),
            ("expiry-time=\"20300102123456\"",         utc(2030, 1, 2, 12, 34, 56)),
            ("expiry-time=\"20300102Z\"",              utc(2030, 1, 2, 0, 0, 0)),
            ("expiry-time=\"203001021234UTC\"",        utc(2030, 1, 2, 12, 34, 0)),
            ("expiry-time=\"20240229\"",               utc(2024, 2, 29, 0, 0, 0)),
            ("expiry-time=\"19700101000001\"",         SystemTime::UNIX_EPOCH + Duration::from_secs(1)),
            ("expiry-time=\"20310101\",expiry-time=\"20300101\"", utc(2030, 1, 1, 0, 0, 0)),
        ];
        for (field, want) in cases {
            assert_eq!(options(field).unwrap().expiry, Some(want), "{field}");
        }
        // 2000-03-01 is 11017 days after the epoch (checks the leap-year arithmetic).
        assert_eq!(
            utc(2000, 3, 1, 0, 0, 0),
            SystemTime::UNIX_EPOCH + Duration::from_secs(11017 * 86_400)
        );
        let o = options("expiry-time=\"20300102\"").unwrap();
        assert!(!o.expired_at(utc(2030, 1, 2, 0, 0, 0)));
        assert!(o.expired_at(utc(2030, 1, 2, 0, 0, 1)));
        assert!(!KeyOptions::default().expired_at(utc(2999, 1, 1, 0, 0, 0)));
        assert!(options("expiry-time=\"20200101\"").unwrap().is_expired());
        assert!(!options("expiry-time=\"29991231\"").unwrap().is_expired());
    }

    #[test]
    fn fido_touch_and_verify_options_negate_as_in_sshd() {
        let flags = |line: &str| {
            let o = options(line).unwrap();
            (o.touch_required, o.verify_required)
        };
        #[rustfmt::skip]
        let cases = [
            ("",                                      (true, false)),
            ("restrict",                              (true, false)),
            ("no-touch-required",                     (false, false)),
            ("no-touch-required,touch-required",      (true, false)),
            ("verify-required",                       (true, true)),
            ("verify-required,no-verify-required",    (true, false)),
            ("NO-TOUCH-REQUIRED,Verify-Required",     (false, true)),
        ];
        for (line, want) in cases {
            assert_eq!(flags(line), want, "{line}");
        }
    }

    #[test]
    fn option_errors_name_file_line_and_problem() {
        let at = |problem: &str| format!("{ORIGIN} line 1: {problem}");
        #[rustfmt::skip]
        let cases = [
            ("permitopn=\"db:1\"",          at("unknown option \"permitopn\"")),
            ("restrict,frobnicate",         at("unknown option \"frobnicate\"")),
            ("no-restrict",                 at("unknown option \"no-restrict\"")),
            ("cert-authority",              at("option \"cert-authority\" is not supported: burrow authorizes plain keys only, not certificate authorities")),
            ("principals=\"alice\"",        at("option \"principals\" is not supported: burrow authorizes plain keys only, not certificate authorities")),
            ("verify-required=\"yes\"",     at("option \"verify-required\" takes no value")),
            ("permitopen=db:1",             at("option \"permitopen\" needs a quoted value, e.g. permitopen=\"...\"")),
            ("from",                        at("option \"from\" needs a quoted value, e.g. from=\"...\"")),
            ("restrict=\"yes\"",            at("option \"restrict\" takes no value")),
            ("from=\"10.0.0.1\"x",          at("option \"from\": unexpected text after the value")),
            ("from=\"a\",from=\"b\"",       at("option \"from\" given more than once")),
            ("command=\"a\",command=\"b\"", at("option \"command\" given more than once")),
            ("restrict,",                   at("empty option (stray comma)")),
            (",restrict",                   at("empty option (stray comma)")),
            ("restrict,,pty",               at("empty option (stray comma)")),
            ("from=\"10.0.0.1",             at("option \"from\": missing end quote")),
            ("permitopen=\"db\"",           at("option \"permitopen\": \"db\": expected host:port (IPv6 in brackets, e.g. [::1]:22)")),
            ("permitopen=\"db:0\"",         at("option \"permitopen\": \"db:0\": invalid port (expected 1-65535 or *)")),
            ("permitopen=\"::1:22\"",       at("option \"permitopen\": \"::1:22\": empty host (use * for any host)")),
            ("permitlisten=\"http\"",       at("option \"permitlisten\": \"http\": invalid port (expected 1-65535 or *)")),
            ("permitlisten=\"lo/80\"",      at("option \"permitlisten\": \"lo/80\": invalid port (expected 1-65535 or *)")),
            ("from=\"10.0.0.1/8\"",         at("option \"from\": \"10.0.0.1/8\": address has bits set beyond the prefix length")),
            ("from=\"10.0.0.0/33\"",        at("option \"from\": \"10.0.0.0/33\": prefix length too long")),
            ("from=\"a,,b\"",               at("option \"from\": empty pattern in \"a,,b\"")),
            ("from=\"!\"",                  at("option \"from\": empty pattern in \"!\"")),
            ("expiry-time=\"2030\"",        at("option \"expiry-time\": \"2030\" is not YYYYMMDD[HHMM[SS]][Z]")),
            ("expiry-time=\"20301301\"",    at("option \"expiry-time\": \"20301301\" is not YYYYMMDD[HHMM[SS]][Z]")),
            ("expiry-time=\"20230229\"",    at("option \"expiry-time\": \"20230229\" is not YYYYMMDD[HHMM[SS]][Z]")),
            ("expiry-time=\"203001012400\"", at("option \"expiry-time\": \"203001012400\" is not YYYYMMDD[HHMM[SS]][Z]")),
            ("expiry-time=\"2030010112\"",  at("option \"expiry-time\": \"2030010112\" is not YYYYMMDD[HHMM[SS]][Z]")),
            ("expiry-time=\"19691231\"",    at("option \"expiry-time\": \"19691231\" is not YYYYMMDD[HHMM[SS]][Z]")),
            ("environment=\"=x\"",          at("option \"environment\": invalid value \"=x\"")),
            ("environment=\"NOVALUE\"",     at("option \"environment\": invalid value \"NOVALUE\"")),
            ("tunnel=\"tun0\"",             at("option \"tunnel\": invalid value \"tun0\"")),
            ("burrow-max-listeners=x",      at("option \"burrow-max-listeners\": \"x\" is not a number")),
            ("burrow-max-channels=\"-1\"",  at("option \"burrow-max-channels\": \"-1\" is not a number")),
            ("burrow-max-channels",         at("option \"burrow-max-channels\" needs a quoted value, e.g. burrow-max-channels=\"...\"")),
            ("burrow-max-listeners=1,burrow-max-listeners=2", at("option \"burrow-max-listeners\" given more than once")),
        ];
        for (field, want) in cases {
            assert_eq!(options(field).err(), Some(want), "{field}");
        }
    }

    #[test]
    fn line_layout() {
        #[rustfmt::skip]
        let cases = [
            (format!("{ED} alice@laptop"),                 "alice@laptop"),
            (ED.to_owned(),                                ""),
            (format!("  \t{ED}\t  two  words \t"),         "two  words"),
            (format!("restrict\t {ED}   c"),               "c"),
            (format!("from=\"1.2.3.4\",command=\"a b\" {ED} c d"), "c d"),
            (format!("{ED} crlf\r"),                       "crlf"),
            (format!("{ECDSA} ecdsa"),                     "ecdsa"),
            (format!("{RSA} rsa"),                         "rsa"),
        ];
        for (line, comment) in cases {
            let keys = parse(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(keys.keys.len(), 1, "{line:?}");
            assert_eq!(keys.keys[0].comment, comment, "{line:?}");
        }
        let text = format!("# comment\n\n   \n\t# indented comment\n{ED} one\r\n{ED2} two\n");
        let keys = parse(&text).unwrap();
        let lines: Vec<(usize, &str)> = keys
            .keys
            .iter()
            .map(|k| (k.line, k.comment.as_str()))
            .collect();
        assert_eq!(lines, [(5, "one"), (6, "two")]);
        assert!(parse("").unwrap().keys.is_empty());
    }

    #[test]
    fn malformed_key_lines_are_errors() {
        let ed_blob = ED.split_once(' ').unwrap().1;
        #[rustfmt::skip]
        let cases = [
            ("# ok\nssh-ed25519".to_owned(),                  "line 2: missing base64 key data after \"ssh-ed25519\""),
            ("restrict".to_owned(),                           "line 1: missing key after the options"),
            (format!("ssh-foo {ed_blob}"),                    "line 1: unknown key type \"ssh-foo\""),
            (format!("restrict ssh-foo {ed_blob}"),           "line 1: unknown key type \"ssh-foo\""),
            (format!("restrict {ed_blob}"),                   "line 1: missing key type before the base64 key data"),
            (ed_blob.to_owned(),                              "line 1: missing key type before the base64 key data"),
            (format!("ssh-ed25519-cert-v01@openssh.com {ed_blob}"), "line 1: certificates (\"ssh-ed25519-cert-v01@openssh.com\") are not supported, list the plain key"),
            ("ssh-ed25519 AAAA!!!!".to_owned(),                "line 1: invalid ssh-ed25519 key: "),
            (format!("ssh-rsa {ed_blob}"),                    "line 1: invalid ssh-rsa key: "),
            ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmt".to_owned(), "line 1: invalid ssh-ed25519 key: "),
            ("not a key line".to_owned(),                     "line 1: unknown option \"not\""),
        ];
        for (text, want) in cases {
            let err = parse(&text).err().unwrap_or_default();
            let want = format!("{ORIGIN} {want}");
            assert!(
                err.starts_with(&want),
                "{text:?}: {err:?} should start with {want:?}"
            );
        }
    }

    #[test]
    fn find_compares_key_data_not_comments() {
        let keys = parse(&format!("{ED} first\nrestrict {ED} again\n{ECDSA} e\n")).unwrap();
        let found = keys
            .find(&public(&format!("{ED} some other comment")))
            .map(|k| k.line);
        assert_eq!(found, Some(1));
        assert_eq!(keys.find(&public(ECDSA)).map(|k| k.line), Some(3));
        assert!(keys.find(&public(ED2)).is_none());
    }

    #[test]
    fn authorize_checks_from_and_expiry_line_by_line() {
        let text = format!(
            "from=\"10.0.0.0/8\" {ED} office\n\
             from=\"192.168.0.0/16\",expiry-time=\"20300101\" {ED} home\n\
             expiry-time=\"20200101\" {ED2} old\n"
        );
        let keys = parse(&text).unwrap();
        let before = utc(2025, 6, 1, 0, 0, 0);
        let after = utc(2031, 1, 1, 0, 0, 0);
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let (ed, ed2, ecdsa) = (public(ED), public(ED2), public(ECDSA));
        #[rustfmt::skip]
        let cases = [
            (&ed,    v4(10, 1, 2, 3),    before, Ok(1)),
            (&ed,    v4(192, 168, 1, 1), before, Ok(2)),
            (&ed,    v4(8, 8, 8, 8),     before, Err(Refusal::FromNotAllowed { line: 2 })),
            (&ed,    v4(192, 168, 1, 1), after,  Err(Refusal::Expired { line: 2 })),
            (&ed,    v4(10, 1, 2, 3),    after,  Ok(1)),
            (&ed2,   v4(10, 1, 2, 3),    before, Err(Refusal::Expired { line: 3 })),
            (&ecdsa, v4(10, 1, 2, 3),    before, Err(Refusal::NotListed)),
        ];
        for (key, peer, now, want) in cases {
            let got = keys.authorize(key, peer, now).map(|k| k.line);
            assert_eq!(got, want, "{peer} {now:?}");
        }
        let refusal = Refusal::FromNotAllowed { line: 2 }.to_string();
        assert_eq!(
            refusal,
            "source address not allowed by from= (authorized_keys line 2)"
        );
    }

    #[test]
    fn from_patterns() {
        let v6 = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
        let v4 = |s: &str| IpAddr::V4(s.parse::<Ipv4Addr>().unwrap());
        #[rustfmt::skip]
        let cases = [
            ("10.0.0.0/8",            v4("10.1.2.3"),        true),
            ("10.0.0.0/8",            v4("11.0.0.1"),        false),
            ("10.0.0.0/8,!10.0.0.5",  v4("10.0.0.5"),        false),
            ("10.0.0.0/8,!10.0.0.5",  v4("10.0.0.6"),        true),
            ("!10.0.0.5,10.0.0.0/8",  v4("10.0.0.5"),        false),
            ("!10.0.0.5",             v4("10.0.0.6"),        false),
            ("!192.168.*,*",          v4("192.168.0.1"),     false),
            ("!192.168.*,*",          v4("10.0.0.1"),        true),
            ("10.0.0.0/8,!*",         v4("10.0.0.1"),        false),
            ("192.168.1.*",           v4("192.168.1.77"),    true),
            ("192.168.1.*",           v4("192.168.2.1"),     false),
            ("1.2.3.?",               v4("1.2.3.4"),         true),
            ("*",                     v4("203.0.113.9"),     true),
            ("*",                     v6("2001:db8::1"),     true),
            ("*.example.com",         v4("1.2.3.4"),         false),
            ("host.example.com,1.2.3.4", v4("1.2.3.4"),      true),
            ("1.2.3.4",               v4("1.2.3.5"),         false),
            ("0.0.0.0/0",             v4("198.51.100.1"),    true),
            ("0.0.0.0/0",             v6("2001:db8::1"),     false),
            ("::/0",                  v6("2001:db8::1"),     true),
            ("::/0",                  v4("10.0.0.1"),        false),
            ("2001:db8::/32",         v6("2001:db8:1::1"),   true),
            ("2001:db8::/32",         v6("2001:db9::1"),     false),
            ("2001:DB8::*",           v6("2001:db8::1"),     true),
            ("2001:db8:0:0::1",       v6("2001:db8::1"),     true),
            ("!2001:db8::/32,*",      v6("2001:db8::5"),     false),
            ("::1",                   v6("::1"),             true),
            ("127.0.0.1",             v6("::ffff:127.0.0.1"), true),
            ("10.0.0.0/8",            v6("::ffff:10.9.9.9"), true),
            ("10.0.0.1/8",            v4("10.0.0.1"),        false),
            ("10.0.0.0/33",           v4("10.0.0.1"),        false),
            ("a,,10.0.0.1",           v4("10.0.0.1"),        false),
            ("10.0.0.1,",             v4("10.0.0.1"),        false),
            ("",                      v4("10.0.0.1"),        false),
        ];
        for (patterns, peer, want) in cases {
            assert_eq!(from_allows(patterns, peer), want, "{patterns:?} {peer}");
        }
    }

    #[test]
    fn load_reads_and_checks_permissions() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "# relay keys\nrestrict,port-forwarding,permitlisten=\"8080\" {ED} me"
        )
        .unwrap();
        let keys = AuthorizedKeys::load(file.path(), false).unwrap();
        assert_eq!(keys.keys.len(), 1);
        assert_eq!(keys.keys[0].line, 2);

        let missing = file.path().with_extension("missing");
        let err = AuthorizedKeys::load(&missing, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}: ", missing.display())),
            "{err}"
        );

        // The file itself is checked first (the directories above: strict_modes.rs tests).
        let perms = std::fs::Permissions::from_mode(0o664);
        std::fs::set_permissions(file.path(), perms).unwrap();
        let err = AuthorizedKeys::load(file.path(), true)
            .unwrap_err()
            .to_string();
        let want = format!(
            "bad ownership or modes for file {}: owner ",
            std::fs::canonicalize(file.path()).unwrap().display()
        );
        assert!(err.starts_with(&want), "{err}");
        assert!(
            err.contains(", mode 0664; it must be owned by root or "),
            "{err}"
        );
        assert!(
            AuthorizedKeys::load(file.path(), false).is_ok(),
            "strict_modes = false skips the check"
        );

        let mut bad = tempfile::NamedTempFile::new().unwrap();
        writeln!(bad, "{ED} ok\npermitopn=\"x:1\" {ED}").unwrap();
        let err = AuthorizedKeys::load(bad.path(), true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "{} line 2: unknown option \"permitopn\"",
                bad.path().display()
            )
        );
    }
}
