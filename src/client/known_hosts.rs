//! Host key verification against OpenSSH `known_hosts` files, and recording new keys.
//!
//! burrow shares `~/.ssh/known_hosts` with `ssh`, so it reads and writes the same format
//! with the same meaning (OpenSSH `hostfile.c`, `sshconnect.c`): plain and hashed names,
//! `[host]:port` for non-22 ports, pattern lists with `*`, `?` and `!`, and `@revoked`.
//! Lines are parsed here rather than with `ssh_key::known_hosts`, which splits on single
//! spaces, drops line numbers and treats any `#` as a comment start.
//!
//! `@cert-authority` lines are ignored: burrow does not accept host certificates, so a
//! host known only through a CA is reported as [`Verdict::Unknown`].

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::{Algorithm, HashAlg};
use russh::keys::PublicKey;
use sha1::Sha1;

use crate::config::ssh_config::match_pattern_list;

/// SSH's default port: entries for it are written without the `[host]:port` form.
const DEFAULT_PORT: u16 = 22;
/// Salt length of hashed names (the SHA-1 HMAC key size OpenSSH uses).
const SALT_LEN: usize = 20;
/// Characters OpenSSH refuses to record in a host name (they would change its meaning).
/// `!`, comma and whitespace are added: they would turn the name into a pattern list.
const BAD_NAME_CHARS: &[char] = &[
    '@', '?', '*', '#', '[', ']', '|', '\'', '"', '\\', '!', ',', ' ', '\t',
];

/// Outcome of checking a host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A matching entry holds exactly this key.
    Known,
    /// No entry for this host holds any key: the host is new.
    Unknown,
    /// Entries for this host hold other keys only (OpenSSH's "REMOTE HOST IDENTIFICATION
    /// HAS CHANGED"); `path:line` is the offending entry ssh would name (the last one).
    Changed {
        /// File of the offending entry.
        path: PathBuf,
        /// 1-based line of the offending entry.
        line: usize,
    },
    /// The key is listed as `@revoked` for this host: always refused, even if also known.
    Revoked {
        /// File of the `@revoked` entry.
        path: PathBuf,
        /// 1-based line of the `@revoked` entry.
        line: usize,
    },
}

/// Why known_hosts could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    /// A file exists but cannot be read (a missing file is simply empty).
    #[error("{}: cannot read known hosts file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A new entry could not be recorded.
    #[error("{}: cannot add host key: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The host name cannot be recorded without changing its meaning.
    #[error("will not record host \"{host}\" in known hosts: the name is empty or contains one of @?*#[]|'\"\\!, comma or whitespace")]
    InvalidHost {
        /// The rejected name.
        host: String,
    },
    /// The key could not be serialised.
    #[error("cannot encode the {algorithm} host key: {reason}")]
    Encode {
        /// Key algorithm name.
        algorithm: String,
        /// Encoder message.
        reason: String,
    },
}

/// What a line's marker says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// One well-formed known_hosts line.
struct Entry<'a> {
    marker: Marker,
    hosts: &'a str,
    key: PublicKey,
}

/// Check `key` for `host` across several files (user files first, then global ones), as
/// ssh does: the name looked up is `host` for port 22 (or 0, e.g. with HostKeyAlias) and
/// `[host]:port` otherwise; if that finds nothing at all, a plain `host` entry holding this
/// very key is also accepted (ssh's "found matching key w/out port"). Names compare
/// case-insensitively. Malformed lines are skipped, as ssh does; missing files are empty.
///
/// A known key of another algorithm yields [`Verdict::Changed`], as with OpenSSH 9.2
/// (verified against a real sshd): accepting it as new would let a man in the middle pick
/// an algorithm we have no key for. To avoid needless failures, prefer the algorithms from
/// [`known_algorithms`] when negotiating, as ssh orders its HostKeyAlgorithms.
pub fn check(
    files: &[PathBuf],
    host: &str,
    port: u16,
    key: &PublicKey,
) -> Result<Verdict, KnownHostsError> {
    let verdict = check_name(files, &lookup_name(host, port), key)?;
    if verdict == Verdict::Unknown && port != 0 && port != DEFAULT_PORT {
        let plain = check_name(files, &host.to_lowercase(), key)?;
        if plain == Verdict::Known {
            return Ok(Verdict::Known);
        }
    }
    Ok(verdict)
}

/// Algorithms of the keys recorded for `host` (port as in [`check`]), in file order without
/// duplicates, so a caller can offer them first in key exchange as ssh does.
pub fn known_algorithms(
    files: &[PathBuf],
    host: &str,
    port: u16,
) -> Result<Vec<Algorithm>, KnownHostsError> {
    let name = lookup_name(host, port);
    let mut algorithms = Vec::new();
    for_each_match(files, &name, |entry, _, _| {
        let algorithm = entry.key.algorithm();
        if entry.marker == Marker::None && !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    })?;
    Ok(algorithms)
}

/// The verdict for one exact lookup name.
fn check_name(files: &[PathBuf], name: &str, key: &PublicKey) -> Result<Verdict, KnownHostsError> {
    let mut known = false;
    let mut changed = None;
    let mut revoked = None;
    for_each_match(files, name, |entry, path, line| {
        let same = entry.key.key_data() == key.key_data();
        match entry.marker {
            Marker::Revoked if same && revoked.is_none() => revoked = Some((path, line)),
            Marker::None if same => known = true,
            Marker::None => changed = Some((path, line)),
            Marker::Revoked | Marker::CertAuthority => {}
        }
    })?;
    Ok(match (revoked, known, changed) {
        (Some((path, line)), _, _) => Verdict::Revoked { path, line },
        (None, true, _) => Verdict::Known,
        (None, false, Some((path, line))) => Verdict::Changed { path, line },
        (None, false, None) => Verdict::Unknown,
    })
}

/// Call `visit` with each well-formed entry whose host field matches `name`, with its
/// file and 1-based line number.
fn for_each_match(
    files: &[PathBuf],
    name: &str,
    mut visit: impl FnMut(Entry<'_>, PathBuf, usize),
) -> Result<(), KnownHostsError> {
    for path in files {
        let Some(bytes) = read_if_exists(path)? else {
            continue;
        };
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let Ok(line) = std::str::from_utf8(raw) else {
                continue;
            };
            match parse_line(line) {
                Some(entry) if host_matches(name, entry.hosts) => {
                    visit(entry, path.clone(), index + 1);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// File contents, or None if it does not exist.
fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, KnownHostsError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KnownHostsError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parse `[@marker] hosts keytype base64 [comment]`; None for comments, blank and
/// malformed lines (unknown marker, truncated line, undecodable or mislabelled key).
fn parse_line(line: &str) -> Option<Entry<'_>> {
    let mut fields = line.split_ascii_whitespace();
    let mut first = fields.next()?;
    if first.starts_with('#') {
        return None;
    }
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        m if m.starts_with('@') => return None,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next()?;
    }
    let algorithm = fields.next()?;
    let blob = fields.next()?;
    let key = PublicKey::from_openssh(&format!("{algorithm} {blob}")).ok()?;
    Some(Entry {
        marker,
        hosts: first,
        key,
    })
}

/// Does a host field (a pattern list, or one `|1|salt|hash` name) match `name`?
fn host_matches(name: &str, hosts: &str) -> bool {
    if hosts.starts_with('|') {
        return hashed_matches(name, hosts);
    }
    match_pattern_list(name, hosts)
}

/// Compare `name` with a hashed entry `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
fn hashed_matches(name: &str, hosts: &str) -> bool {
    let Some((salt, hash)) = hosts
        .strip_prefix("|1|")
        .and_then(|rest| rest.split_once('|'))
    else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    salt.len() == SALT_LEN && hmac_sha1(&salt, name).is_some_and(|h| h == hash)
}

/// HMAC-SHA1 of `name` keyed with `salt`.
fn hmac_sha1(salt: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(salt).ok()?;
    mac.update(name.as_bytes());
    Some(mac.finalize().into_bytes().to_vec())
}

/// The name entries are recorded under: lower-case, `[host]:port` unless port 22 or 0.
fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_lowercase();
    if port == 0 || port == DEFAULT_PORT {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// Append an entry (creating the parent directory 0700 and the file 0600 if missing),
/// hashed when `hash` is true (HashKnownHosts), `[host]:port` form for non-22 ports. The
/// key is written without its comment, as ssh does.
pub fn append(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
    hash: bool,
) -> Result<(), KnownHostsError> {
    if host.is_empty() || host.contains(BAD_NAME_CHARS) {
        return Err(KnownHostsError::InvalidHost {
            host: host.to_string(),
        });
    }
    let name = lookup_name(host, port);
    let hosts = if hash { hash_name(&name) } else { name };
    let entry = format!("{hosts} {}\n", encode_key(key)?);
    write_entry(path, &entry).map_err(|source| KnownHostsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// `algorithm base64` of a key, without comment.
fn encode_key(key: &PublicKey) -> Result<String, KnownHostsError> {
    let blob = key.to_bytes().map_err(|e| KnownHostsError::Encode {
        algorithm: key.algorithm().to_string(),
        reason: e.to_string(),
    })?;
    Ok(format!(
        "{} {}",
        key.algorithm().as_str(),
        BASE64.encode(&blob)
    ))
}

/// A hashed host field for `name` with a fresh random salt.
fn hash_name(name: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt);
    // HMAC accepts keys of any length, so this cannot fail; fall back to plain if it did.
    match hmac_sha1(&salt, name) {
        Some(hash) => format!("|1|{}|{}", BASE64.encode(&salt), BASE64.encode(&hash)),
        None => name.to_string(),
    }
}

/// Append `entry` to the file, first adding a newline if the file does not end with one.
fn write_entry(path: &Path, entry: &str) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mut text = String::with_capacity(entry.len() + 1);
    if file.metadata()?.len() > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last != *b"\n" {
            text.push('\n');
        }
    }
    text.push_str(entry);
    file.write_all(text.as_bytes())?;
    file.flush()
}

/// OpenSSH-style fingerprint string for messages: "SHA256:..." (unpadded base64).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The key type as ssh names it in messages ("ED25519", "RSA", "ECDSA", ...), e.g. for
/// "No ED25519 host key is known for ...".
pub fn key_type(key: &PublicKey) -> String {
    type_name(&key.algorithm())
}

/// [`key_type`] for an algorithm.
fn type_name(algorithm: &Algorithm) -> String {
    match algorithm {
        Algorithm::Rsa { .. } => "RSA".to_string(),
        Algorithm::Ecdsa { .. } => "ECDSA".to_string(),
        Algorithm::Ed25519 => "ED25519".to_string(),
        Algorithm::Dsa => "DSA".to_string(),
        Algorithm::SkEcdsaSha2NistP256 => "ECDSA-SK".to_string(),
        Algorithm::SkEd25519 => "ED25519-SK".to_string(),
        other => other.as_str().to_uppercase(),
    }
}

/// The OpenSSH warning text for a changed key: the @@@@ banner, the fingerprint of the key
/// the server sent, the offending entry and "Host key verification failed.". The offending
/// key's type is read back from `path:line` (falling back to the sent key's type).
pub fn changed_key_warning(
    host_display: &str,
    key: &PublicKey,
    path: &Path,
    line: usize,
) -> String {
    let sent = type_name(&key.algorithm());
    let offending = offending_type(path, line).unwrap_or_else(|| sent.clone());
    let path = path.display();
    [
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@".to_string(),
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @".to_string(),
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@".to_string(),
        "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!".to_string(),
        "Someone could be eavesdropping on you right now (man-in-the-middle attack)!".to_string(),
        "It is also possible that a host key has just been changed.".to_string(),
        format!("The fingerprint for the {sent} key sent by the remote host is"),
        format!("{}.", fingerprint(key)),
        "Please contact your system administrator.".to_string(),
        format!("Add correct host key in {path} to get rid of this message."),
        format!("Offending {offending} key in {path}:{line}"),
        "  remove with:".to_string(),
        format!("  ssh-keygen -f \"{path}\" -R \"{host_display}\""),
        format!("Host key for {host_display} has changed and you have requested strict checking."),
        "Host key verification failed.".to_string(),
    ]
    .join("\n")
}

/// Type name of the key recorded at `path:line`, if that line still parses.
fn offending_type(path: &Path, line: usize) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    let raw = bytes.split(|&b| b == b'\n').nth(line.checked_sub(1)?)?;
    let entry = parse_line(std::str::from_utf8(raw).ok()?)?;
    Some(type_name(&entry.key.algorithm()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    const ED_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGkLrYcySm4L3KVqJO78+fhN9NCerkRxpyO9gWt9ufu8";
    const ED_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGToRD9aBG0169fQUJKbch/JN0JOETdFj1+hCwAZIJXk";
    const RSA_A: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDLLTNS0GzhkVhfT3a+aDGW0YVg5jditVXHtmBgLg0nO9zuITObicJDgG/VqsgZx7LrXC4v/1wbH+//pVt5Wt6iYl0zoVz6j88/32/jFoVCtE7Ydoy7yRWaMzjEGY59sjQU+xdt7qahz0vF6gIofqRZJ5xTu/PYflVfESe2USep8w==";
    const ECDSA_A: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPJb96wLxu8FAK8eebyjfFSrXlmaNDWrjObhKnlc2hSW5L8xpDd+shbyQ8QOdbVfjgQLT1J8O8QKaIpqAqAHSLw=";
    /// HMAC-SHA1 with salt 00 01 .. 13 over "example.com" and "[example.com]:2222",
    /// computed independently and confirmed with `ssh-keygen -F`.
    const HASHED_EXAMPLE: &str = "|1|AAECAwQFBgcICQoLDA0ODxAREhM=|nnUK16ANsXd3hL31YfAkGOluSjU=";
    const HASHED_EXAMPLE_2222: &str =
        "|1|AAECAwQFBgcICQoLDA0ODxAREhM=|Wgcx+Fm+LmaWwC7rQ80eIf2uHe0=";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    /// Write `text` (with `{ED_A}`-style placeholders replaced) to a file in `dir`.
    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let text = text
            .replace("{ED_A}", ED_A)
            .replace("{ED_B}", ED_B)
            .replace("{RSA_A}", RSA_A)
            .replace("{ECDSA_A}", ECDSA_A)
            .replace("{HASHED_EXAMPLE}", HASHED_EXAMPLE)
            .replace("{HASHED_EXAMPLE_2222}", HASHED_EXAMPLE_2222);
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    /// Expected verdicts; `Changed(n)`/`Revoked(n)` name a line of the single test file.
    #[derive(Debug)]
    enum Want {
        Known,
        Unknown,
        Changed(usize),
        Revoked(usize),
    }

    #[test]
    fn check_single_file_cases() {
        // One row a case: the rows look alike because they are a table (so do those of
        // check_across_files), not repeated logic.
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, u16, &str, Want)] = &[
            ("plain", "example.com {ED_A}\n", "example.com", 22, ED_A, Want::Known),
            ("same type, other key", "example.com {ED_B}\n", "example.com", 22, ED_A, Want::Changed(1)),
            ("other algorithm only", "example.com {RSA_A}\n", "example.com", 22, ED_A, Want::Changed(1)),
            ("other algorithm and ours", "example.com {RSA_A}\nexample.com {ED_A}\n", "example.com", 22, ED_A, Want::Known),
            ("ours then other", "example.com {ED_A}\nexample.com {ECDSA_A}\n", "example.com", 22, ED_A, Want::Known),
            ("last mismatch is offending", "example.com {ED_B}\n# c\nexample.com {RSA_A}\n", "example.com", 22, ED_A, Want::Changed(3)),
            ("no entry", "other.com {ED_A}\n", "example.com", 22, ED_A, Want::Unknown),
            ("empty file", "", "example.com", 22, ED_A, Want::Unknown),
            ("port form", "[example.com]:2222 {ED_A}\n", "example.com", 2222, ED_A, Want::Known),
            ("port form other port", "[example.com]:2222 {ED_A}\n", "example.com", 2223, ED_A, Want::Unknown),
            ("port form not for 22", "[example.com]:2222 {ED_A}\n", "example.com", 22, ED_A, Want::Unknown),
            ("explicit :22 form never looked up", "[example.com]:22 {ED_A}\n", "example.com", 22, ED_A, Want::Unknown),
            ("port 0 is plain", "example.com {ED_A}\n", "example.com", 0, ED_A, Want::Known),
            ("plain entry accepted for other port", "example.com {ED_A}\n", "example.com", 2222, ED_A, Want::Known),
            ("plain mismatch for other port is new", "example.com {ED_B}\n", "example.com", 2222, ED_A, Want::Unknown),
            ("port entry changed wins over plain", "[example.com]:2222 {ED_B}\nexample.com {ED_A}\n", "example.com", 2222, ED_A, Want::Changed(1)),
            ("glob star", "*.example.com {ED_A}\n", "a.example.com", 22, ED_A, Want::Known),
            ("glob question", "?.example.com {ED_A}\n", "ab.example.com", 22, ED_A, Want::Unknown),
            ("glob in port form", "[10.0.0.?]:22* {ED_A}\n", "10.0.0.7", 2222, ED_A, Want::Known),
            ("negation rejects", "!bad.example.com,*.example.com {ED_A}\n", "bad.example.com", 22, ED_A, Want::Unknown),
            ("negation passes others", "!bad.example.com,*.example.com {ED_A}\n", "good.example.com", 22, ED_A, Want::Known),
            ("negation hides a changed key", "!example.com,* {ED_B}\n", "example.com", 22, ED_A, Want::Unknown),
            ("comma list", "a.com,example.com,b.com {ED_A}\n", "example.com", 22, ED_A, Want::Known),
            ("case-insensitive", "EXAMPLE.com {ED_A}\n", "Example.COM", 22, ED_A, Want::Known),
            ("hashed", "{HASHED_EXAMPLE} {ED_A}\n", "example.com", 22, ED_A, Want::Known),
            ("hashed, changed", "{HASHED_EXAMPLE} {ED_B}\n", "example.com", 22, ED_A, Want::Changed(1)),
            ("hashed other name", "{HASHED_EXAMPLE} {ED_A}\n", "example.org", 22, ED_A, Want::Unknown),
            ("hashed port form", "{HASHED_EXAMPLE_2222} {ED_A}\n", "example.com", 2222, ED_A, Want::Known),
            ("hashed name is lower-cased first", "{HASHED_EXAMPLE} {ED_A}\n", "EXAMPLE.COM", 22, ED_A, Want::Known),
            ("bad hash skipped", "|1|AAAA|BBBB {ED_B}\n|2|x|y {ED_B}\nexample.com {ED_A}\n", "example.com", 22, ED_A, Want::Known),
            ("revoked wins over known", "example.com {ED_A}\n@revoked * {ED_A}\n", "example.com", 22, ED_A, Want::Revoked(2)),
            ("revoked must match host", "@revoked other.com {ED_A}\nexample.com {ED_A}\n", "example.com", 22, ED_A, Want::Known),
            ("revoked other key irrelevant", "@revoked * {ED_B}\nexample.com {ED_A}\n", "example.com", 22, ED_A, Want::Known),
            ("revoked alone", "@revoked example.com {ED_A}\n", "example.com", 22, ED_A, Want::Revoked(1)),
            ("cert-authority ignored", "@cert-authority *.example.com {ED_A}\n", "a.example.com", 22, ED_A, Want::Unknown),
            ("cert-authority not a mismatch", "@cert-authority * {ED_B}\n", "example.com", 22, ED_A, Want::Unknown),
            ("unknown marker skipped", "@bogus example.com {ED_B}\n", "example.com", 22, ED_A, Want::Unknown),
            ("malformed lines skipped, numbers kept", "garbage\n\n   # comment\nexample.com ssh-ed25519 notbase64\nexample.com\nexample.com ssh-rsa {ED_B}\nexample.com {ED_B}\n", "example.com", 22, ED_A, Want::Changed(7)),
            ("whitespace and comment", "  example.com\t  {ED_A}   a comment # here\n", "example.com", 22, ED_A, Want::Known),
            ("crlf", "# c\r\nexample.com {ED_B}\r\n", "example.com", 22, ED_A, Want::Changed(2)),
            ("no trailing newline", "example.com {ED_A}", "example.com", 22, ED_A, Want::Known),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (name, text, host, port, presented, want) in cases {
            let path = write(dir.path(), "known_hosts", text);
            let got = check(std::slice::from_ref(&path), host, *port, &key(presented)).unwrap();
            let expected = match want {
                Want::Known => Verdict::Known,
                Want::Unknown => Verdict::Unknown,
                Want::Changed(line) => Verdict::Changed {
                    path: path.clone(),
                    line: *line,
                },
                Want::Revoked(line) => Verdict::Revoked {
                    path: path.clone(),
                    line: *line,
                },
            };
            assert_eq!(got, expected, "case {name:?}");
        }
    }

    #[test]
    fn check_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let user = write(dir.path(), "user", "other.com {ED_A}\n");
        let global = write(dir.path(), "global", "example.com {ED_B}\n");
        let revoking = write(dir.path(), "revoking", "@revoked * {ED_A}\n");
        let knowing = write(dir.path(), "knowing", "example.com {ED_A}\n");
        let missing = dir.path().join("missing");
        let ed_a = key(ED_A);
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<PathBuf>, Verdict)> = vec![
            ("missing files are empty", vec![missing.clone()], Verdict::Unknown),
            ("global file is consulted", vec![user.clone(), global.clone()], Verdict::Changed { path: global.clone(), line: 1 }),
            ("known anywhere beats changed", vec![global.clone(), missing, knowing.clone()], Verdict::Known),
            ("revoked anywhere wins", vec![knowing, revoking.clone()], Verdict::Revoked { path: revoking, line: 1 }),
        ];
        for (name, files, want) in cases {
            assert_eq!(
                check(&files, "example.com", 22, &ed_a).unwrap(),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be read as a file, even by root (chmod 000 would not stop root).
        let err = check(&[dir.path().to_path_buf()], "example.com", 22, &key(ED_A)).unwrap_err();
        assert!(matches!(err, KnownHostsError::Read { .. }), "{err}");
        assert!(
            err.to_string().contains("cannot read known hosts file"),
            "{err}"
        );
    }

    #[test]
    fn append_then_check_round_trip() {
        let cases: &[(&str, u16, bool, &str)] = &[
            ("Example.COM", 22, false, "example.com ssh-ed25519 "),
            (
                "example.com",
                2222,
                false,
                "[example.com]:2222 ssh-ed25519 ",
            ),
            ("10.1.2.3", 22, true, "|1|"),
            ("example.com", 2222, true, "|1|"),
        ];
        for (host, port, hash, prefix) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("new/.ssh/known_hosts");
            append(&path, host, *port, &key(ED_A), *hash).unwrap();
            let text = fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with(prefix),
                "{host}:{port} hash={hash}: {text}"
            );
            assert!(
                text.ends_with(&format!("{ED_A}\n")),
                "key written without comment: {text}"
            );
            assert_eq!(text.lines().count(), 1);
            let files = [path.clone()];
            assert_eq!(
                check(&files, host, *port, &key(ED_A)).unwrap(),
                Verdict::Known
            );
            assert_eq!(
                check(&files, host, *port, &key(ED_B)).unwrap(),
                Verdict::Changed {
                    path: path.clone(),
                    line: 1
                }
            );
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
            if *hash {
                assert!(!text.contains("example.com") && !text.contains("10.1.2.3"));
                assert_eq!(
                    text.split('|').nth(2).map(str::len),
                    Some(28),
                    "20-byte salt"
                );
            }
        }
    }

    #[test]
    fn append_keeps_lines_apart_and_existing_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "known_hosts", "old.example {ED_B}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        append(&path, "example.com", 22, &key(RSA_A), false).unwrap();
        append(&path, "example.com", 22, &key(ED_A), true).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1], format!("example.com {RSA_A}"));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let files = [path];
        assert_eq!(
            check(&files, "example.com", 22, &key(ED_A)).unwrap(),
            Verdict::Known
        );
        assert_eq!(
            check(&files, "example.com", 22, &key(RSA_A)).unwrap(),
            Verdict::Known
        );
    }

    #[test]
    fn append_refuses_names_that_change_meaning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        for host in [
            "",
            "*.example.com",
            "a,b",
            "!x",
            "[h]:1",
            "|1|x",
            "a b",
            "u@h",
        ] {
            let err = append(&path, host, 22, &key(ED_A), false).unwrap_err();
            assert!(
                matches!(err, KnownHostsError::InvalidHost { .. }),
                "{host:?}"
            );
        }
        assert!(!path.exists());
        let err = append(dir.path(), "example.com", 22, &key(ED_A), false).unwrap_err();
        assert!(matches!(err, KnownHostsError::Write { .. }), "{err}");
    }

    #[test]
    fn known_algorithms_lists_recorded_types_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "kh",
            "example.com {RSA_A}\n@revoked * {ECDSA_A}\nexample.com {ED_A}\nexample.com {ED_B}\nother {ECDSA_A}\n",
        );
        let algorithms = known_algorithms(&[path], "example.com", 22).unwrap();
        assert_eq!(algorithms, vec![key(RSA_A).algorithm(), Algorithm::Ed25519]);
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        // Values printed by `ssh-keygen -lf` for these keys.
        let cases = [
            (ED_A, "SHA256:OjwpVH2hLgNxg4kfYLjFvHkdyPOXQyZmh4Sx7hsEFKU"),
            (RSA_A, "SHA256:+tCDOHEbLQHPW2+hvqbxLlSOr/ZsmYcQOCYBg2SnTEE"),
            (
                ECDSA_A,
                "SHA256:isQa59vHEYidy4/xHYfVnNuSJ9sXJxIGy4ao6Sja3Zk",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(fingerprint(&key(text)), want);
        }
    }

    #[test]
    fn changed_key_warning_reads_like_openssh() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "kh", "# c\n[h]:2222 {RSA_A}\n");
        let text = changed_key_warning("[h]:2222", &key(ED_A), &path, 2);
        let shown = path.display();
        for line in [
            "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
            "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!",
            "The fingerprint for the ED25519 key sent by the remote host is",
            "SHA256:OjwpVH2hLgNxg4kfYLjFvHkdyPOXQyZmh4Sx7hsEFKU.",
            &format!("Offending RSA key in {shown}:2"),
            &format!("  ssh-keygen -f \"{shown}\" -R \"[h]:2222\""),
            "Host key verification failed.",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let types: Vec<String> = [ED_A, RSA_A, ECDSA_A]
            .iter()
            .map(|k| key_type(&key(k)))
            .collect();
        assert_eq!(types, ["ED25519", "RSA", "ECDSA"]);
        let gone = changed_key_warning("h", &key(ED_A), &dir.path().join("gone"), 1);
        assert!(gone.contains("Offending ED25519 key in"), "{gone}");
    }

    /// Run a tool if installed; None (with a note) if not.
    fn run(tool: &str, args: &[&str]) -> Option<bool> {
        match Command::new(tool)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(status) => Some(status.success()),
            Err(_) => {
                println!("note: {tool} not found; skipping the OpenSSH cross-check");
                None
            }
        }
    }

    #[test]
    fn openssh_hashes_and_ours_agree() {
        let dir = tempfile::tempdir().unwrap();
        // ssh-keygen -H hashes our plain entries; we must still find them.
        let theirs = write(
            dir.path(),
            "theirs",
            "example.com {ED_A}\n[example.com]:2222 {ED_B}\n",
        );
        let theirs_s = theirs.to_str().unwrap();
        if run("ssh-keygen", &["-H", "-f", theirs_s]) == Some(true) {
            let text = fs::read_to_string(&theirs).unwrap();
            assert!(
                text.starts_with("|1|") && !text.contains("example.com"),
                "{text}"
            );
            let files = [theirs.clone()];
            assert_eq!(
                check(&files, "example.com", 22, &key(ED_A)).unwrap(),
                Verdict::Known
            );
            assert_eq!(
                check(&files, "example.com", 2222, &key(ED_B)).unwrap(),
                Verdict::Known
            );
            assert_eq!(
                check(&files, "example.com", 22, &key(ED_B)).unwrap(),
                Verdict::Changed {
                    path: theirs.clone(),
                    line: 1
                }
            );
        }
        // ...and ssh-keygen -F finds the hashed entries we write.
        let ours = dir.path().join("ours");
        append(&ours, "example.com", 2222, &key(ED_A), true).unwrap();
        let ours_s = ours.to_str().unwrap();
        if let Some(found) = run("ssh-keygen", &["-F", "[example.com]:2222", "-f", ours_s]) {
            assert!(found, "ssh-keygen -F did not find our hashed entry");
            assert_eq!(
                run("ssh-keygen", &["-F", "example.com", "-f", ours_s]),
                Some(false)
            );
        }
    }
}
