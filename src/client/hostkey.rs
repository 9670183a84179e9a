//! Server host key verification against known_hosts, with OpenSSH's policies and messages.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use russh::keys::PublicKey;

use crate::client::known_hosts::{self, Verdict};
use crate::client::prompt;
use crate::config::options::StrictHostKeyChecking;

/// How one hop's host key is checked.
#[derive(Debug, Clone)]
pub struct HostKeyPolicy {
    /// Host name as written in known_hosts (HostName or alias).
    pub host: String,
    /// Port, for the `[host]:port` form.
    pub port: u16,
    /// User files (new keys go to the first).
    pub user_files: Vec<PathBuf>,
    /// System files (read only).
    pub global_files: Vec<PathBuf>,
    /// What to do with unknown and changed keys.
    pub strict: StrictHostKeyChecking,
    /// Never prompt.
    pub batch_mode: bool,
    /// Write new entries hashed.
    pub hash: bool,
    /// When set, the only key accepted (see `ClientOptions::pinned_host_key`).
    pub pinned: Option<PublicKey>,
}

impl HostKeyPolicy {
    /// `host` or `[host]:port`, as OpenSSH names hosts in its messages.
    pub fn display_host(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    /// Decides whether to trust `key`; prints OpenSSH's warnings on stderr. Blocking: may prompt.
    pub fn verify(&self, key: &PublicKey) -> bool {
        if let Some(pinned) = &self.pinned {
            if pinned.key_data() == key.key_data() {
                return true;
            }
            eprintln!(
                "The {} host key for {} is {}, not {} as earlier in this session: \
                 refusing to resume there.\nHost key verification failed.",
                known_hosts::key_type(key),
                self.display_host(),
                known_hosts::fingerprint(key),
                known_hosts::fingerprint(pinned),
            );
            return false;
        }
        let files: Vec<PathBuf> = self
            .user_files
            .iter()
            .chain(self.global_files.iter())
            .cloned()
            .collect();
        let verdict = match known_hosts::check(&files, &self.host, self.port, key) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{e}");
                return false;
            }
        };
        match verdict {
            Verdict::Known => true,
            Verdict::Revoked { path, line } => {
                eprintln!(
                    "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                     @       WARNING: REVOKED HOST KEY DETECTED!               @\n\
                     @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                     The {} host key for {} is marked as revoked ({}:{}).\n\
                     This could mean that a stolen key is being used to\n\
                     impersonate this host.",
                    key.algorithm().as_str(),
                    self.display_host(),
                    path.display(),
                    line
                );
                false
            }
            Verdict::Changed { path, line } => self.on_changed(key, &path, line),
            Verdict::Unknown => self.on_unknown(key),
        }
    }

    fn on_changed(&self, key: &PublicKey, path: &std::path::Path, line: usize) -> bool {
        eprintln!(
            "{}",
            known_hosts::changed_key_warning(&self.display_host(), key, path, line)
        );
        // OpenSSH refuses a changed key under every policy but `no`.
        self.strict == StrictHostKeyChecking::No
    }

    fn on_unknown(&self, key: &PublicKey) -> bool {
        match self.strict {
            StrictHostKeyChecking::Yes => {
                eprintln!(
                    "No {} host key is known for {} and you have requested strict checking.\n\
                     Host key verification failed.",
                    known_hosts::key_type(key),
                    self.display_host()
                );
                false
            }
            StrictHostKeyChecking::AcceptNew | StrictHostKeyChecking::No => self.remember(key),
            StrictHostKeyChecking::Ask => {
                if self.batch_mode || !self.ask(key) {
                    eprintln!("Host key verification failed.");
                    return false;
                }
                self.remember(key)
            }
        }
    }

    /// Asks "Are you sure you want to continue connecting" on the terminal.
    fn ask(&self, key: &PublicKey) -> bool {
        let fp = known_hosts::fingerprint(key);
        let question = format!(
            "The authenticity of host '{} ({})' can't be established.\n\
             {} key fingerprint is {}.\n\
             This key is not known by any other names.\n\
             Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
            self.display_host(),
            self.display_host(),
            known_hosts::key_type(key),
            fp
        );
        let Some(mut tty) = prompt::open_tty() else {
            return false;
        };
        let mut reader = match tty.try_clone() {
            Ok(r) => std::io::BufReader::new(r),
            Err(_) => return false,
        };
        let mut attempts = 0;
        let mut q = question;
        loop {
            attempts += 1;
            if tty
                .write_all(q.as_bytes())
                .and_then(|_| tty.flush())
                .is_err()
            {
                return false;
            }
            let mut answer = String::new();
            if reader.read_line(&mut answer).unwrap_or(0) == 0 {
                return false;
            }
            let answer = answer.trim();
            if answer.eq_ignore_ascii_case("yes") || answer == fp {
                return true;
            }
            if answer.eq_ignore_ascii_case("no") || attempts >= 5 {
                return false;
            }
            q = "Please type 'yes', 'no' or the fingerprint: ".to_string();
        }
    }

    fn remember(&self, key: &PublicKey) -> bool {
        let Some(file) = self.user_files.first() else {
            return true;
        };
        match known_hosts::append(file, &self.host, self.port, key, self.hash) {
            // An informational message in OpenSSH (`logit`): -q silences it, as there.
            Ok(()) if tracing::enabled!(tracing::Level::INFO) => eprintln!(
                "Warning: Permanently added '{}' ({}) to the list of known hosts.",
                self.display_host(),
                known_hosts::key_type(key)
            ),
            Ok(()) => {}
            Err(e) => eprintln!("Failed to add the host to the list of known hosts ({e})."),
        }
        true
    }
}
