//! The tunnels file of `burrow up`: named SSH connections and the forwards on each, declared in
//! TOML (see `examples/tunnels.toml`), validated once with errors that name the file, line,
//! tunnel and field.
//!
//! A tunnel is `burrow ssh -N` with its flags written down: [`TunnelSpec::plan`] resolves it
//! once into the same typed options the command line gets, `~/.ssh/config` included, plus the
//! list of its forwards, each carrying its own label. The file only adds what a daemon needs
//! (typed, in [`TunnelSpec::fixed`], never as `-o` text): batch mode, keepalives that notice a
//! dead link in seconds, host key checking that never prompts, and backoff.
//!
//! Precedence, highest first: the tunnel's own keys (`user@` in `server` before `user`), then
//! `[defaults]`, then ssh_config for what neither sets (user, identity, jump), then the
//! built-in defaults below. A list (`identity`, `options`) set in a tunnel replaces the one in
//! `[defaults]`. `~` means `$HOME`; relative paths are relative to the tunnels file.

mod plan;
mod raw;
#[cfg(test)]
mod tests;
mod validate;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::cli::SshArgs;
use crate::config::options::{ConfigPaths, Fixed, OptionsError, StrictHostKeyChecking};
use crate::forward::proxy_header::ProxyProtocol;

pub use plan::{Forward, Plan, PlannedForward};

/// Keepalive interval when none is set. As with ssh's ServerAliveInterval/CountMax, a dead link
/// is noticed (count + 1) x interval after the last sign of life (the first interval passes
/// before the first probe): 3 s x (4 + 1) = 15 s with the defaults.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
/// Unanswered keepalives before the connection is declared dead.
pub const DEFAULT_KEEPALIVE_COUNT: u32 = 4;
/// TCP connect timeout per address.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause after a failure.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest pause between attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long a resumable stream waits for the tunnel to come back.
pub const DEFAULT_RESUME_GRACE: Duration = Duration::from_secs(60);

/// A validated tunnels file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelsFile {
    /// The tunnels, in file order; names are unique.
    pub tunnels: Vec<TunnelSpec>,
    /// The file they came from.
    pub source: PathBuf,
}

/// One relay a tunnel can connect to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// Login user, if given as `user@`.
    pub user: Option<String>,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port, if given (never 0); otherwise ssh_config's Port or 22.
    pub port: Option<u16>,
}

/// StrictHostKeyChecking for an unattended tunnel: `ask` and `no` are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKeyChecking {
    /// The relay's key must already be in known_hosts.
    Yes,
    /// Trust and record a relay's key on first contact; a changed key still fails.
    AcceptNew,
}

/// One tunnel, validated and with every default applied. Nothing in it is secret (keys are
/// paths), so `Debug` prints it whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TunnelSpec {
    /// Unique name: as written, or derived as `host/R<spec>` from the first server and forward.
    pub name: String,
    /// Relays in order of preference (one when the file says `server`); never empty.
    pub servers: Vec<ServerAddr>,
    /// ProxyJump chain as written (`none` included: it overrides ssh_config).
    pub jump: Option<String>,
    /// `-L` specs, validated.
    pub local: Vec<String>,
    /// `-R` forwards, validated, each with its own `proxy_protocol`.
    pub remote: Vec<RemoteSpec>,
    /// `-D` specs, validated.
    pub dynamic: Vec<String>,
    /// Login user when the server entry has none; None = ssh_config's User or the local user.
    pub user: Option<String>,
    /// Private key files (`~` expanded); empty = ssh_config / agent / defaults.
    pub identity: Vec<PathBuf>,
    /// The known_hosts file to read and record keys in; None = ssh_config's or ~/.ssh/known_hosts.
    pub known_hosts: Option<PathBuf>,
    /// Host key policy.
    pub host_key_checking: HostKeyChecking,
    /// ServerAliveInterval.
    pub keepalive_interval: Duration,
    /// ServerAliveCountMax (at least 1).
    pub keepalive_count: u32,
    /// ConnectTimeout.
    pub connect_timeout: Duration,
    /// Negotiate compression.
    pub compression: bool,
    /// First pause after a failed or dropped connection.
    pub backoff_initial: Duration,
    /// Longest pause (at least `backoff_initial`).
    pub backoff_max: Duration,
    /// Give up (the process exits non-zero) after this many consecutive failures; 0 = never.
    pub exit_after_failures: u32,
    /// Resumable streams with a burrow relay: forwarded connections survive a reconnect.
    pub resume: bool,
    /// How long a stream waits for the tunnel to come back before it is closed.
    pub resume_grace: Duration,
    /// ssh_config file (`-F`): None = ~/.ssh/config and /etc/ssh/ssh_config, `none` = no file.
    pub ssh_config: Option<PathBuf>,
    /// Extra ssh_config options (`-o`), validated; none of them overrides a field above.
    pub options: Vec<String>,
    /// The PROXY protocol header of the tunnel's -R connections, where a forward says nothing
    /// itself: `Some(None)` = none; `None` = as `options` or ssh_config's ProxyProtocol say.
    pub proxy_protocol: Option<Option<ProxyProtocol>>,
}

/// One `remote` forward of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteSpec {
    /// The `-R` spec as written, validated.
    pub spec: String,
    /// This forward's own `proxy_protocol` (`Some(None)` = none), which wins over the
    /// tunnel's; `None` = as the tunnel.
    pub proxy_protocol: Option<Option<ProxyProtocol>>,
}

impl TunnelSpec {
    /// The `burrow ssh` arguments for connecting to `servers[server_index]` (an index past the
    /// end means the first server): `-N`, `-p`, `-l`, `-i`, `-J`, `-C`, `-F`, `-L`/`-R`/`-D`,
    /// and the tunnel's own `options` as `-o`. What a daemon fixes for itself is not in here
    /// but typed, in [`TunnelSpec::fixed`]; [`TunnelSpec::plan`] resolves the two together.
    pub fn ssh_args(&self, server_index: usize) -> SshArgs {
        let server = self
            .servers
            .get(server_index)
            .or_else(|| self.servers.first());
        SshArgs {
            local: self.local.clone(),
            remote: self.remote.iter().map(|r| r.spec.clone()).collect(),
            dynamic: self.dynamic.clone(),
            jump: self.jump.clone(),
            no_command: true,
            compression: self.compression,
            port: server.and_then(|s| s.port).map(|p| p.to_string()),
            login: server
                .and_then(|s| s.user.clone())
                .or_else(|| self.user.clone()),
            identity: self.identity.clone(),
            config_file: self.ssh_config.clone(),
            options: self.options.clone(),
            destination: server.map(|s| s.host.clone()).unwrap_or_default(),
            ..SshArgs::default()
        }
    }

    /// What every tunnel fixes whatever ssh_config says: batch mode, ExitOnForwardFailure, its
    /// keepalive, connect timeout, host key policy, compression and known_hosts file, and its
    /// `proxy_protocol` when set.
    pub fn fixed(&self) -> Fixed {
        Fixed {
            batch_mode: Some(true),
            exit_on_forward_failure: Some(true),
            server_alive_interval: Some(Some(self.keepalive_interval)),
            server_alive_count_max: Some(self.keepalive_count),
            connect_timeout: Some(Some(self.connect_timeout)),
            strict_host_key_checking: Some(match self.host_key_checking {
                HostKeyChecking::Yes => StrictHostKeyChecking::Yes,
                HostKeyChecking::AcceptNew => StrictHostKeyChecking::AcceptNew,
            }),
            compression: Some(self.compression),
            user_known_hosts_file: self.known_hosts.clone(),
            proxy_protocol: self.proxy_protocol,
        }
    }

    /// Resolves the tunnel for `servers[server_index]` once, as `burrow ssh` would resolve its
    /// command line (ssh_config included), into typed options and the list of forwards to set
    /// up, each with its own label.
    pub fn plan(&self, server_index: usize, paths: &ConfigPaths) -> Result<Plan, OptionsError> {
        Plan::resolve(self, server_index, paths)
    }

    /// A stable digest of everything but the name, so a reload keeps a tunnel running when
    /// nothing about it changed (the name is the key the supervisor matches on). The contents of
    /// files it names (keys, ssh_config) are not included.
    pub fn fingerprint(&self) -> String {
        let unnamed = TunnelSpec {
            name: String::new(),
            ..self.clone()
        };
        let digest = Sha256::digest(format!("{unnamed:?}").as_bytes());
        data_encoding::HEXLOWER.encode(digest.get(..16).unwrap_or_default())
    }
}

impl fmt::Display for ServerAddr {
    /// `user@host:port` as written in the file (IPv6 in brackets when a port follows).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match self.port {
            Some(port) if self.host.contains(':') => write!(f, "[{}]:{port}", self.host),
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl fmt::Display for HostKeyChecking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostKeyChecking::Yes => "yes",
            HostKeyChecking::AcceptNew => "accept-new",
        })
    }
}

/// Why a tunnels file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TunnelsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not TOML, a value of the wrong type, or an unknown key (toml's message names the line,
    /// column and key).
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// Values that parse but are not valid; every problem found, one per line.
    #[error("{}", problems.iter().map(Invalid::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The problems, in file order per tunnel.
        problems: Vec<Invalid>,
    },
}

/// One invalid value, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The tunnels file.
    pub path: PathBuf,
    /// 1-based line of the value (or of its `[[tunnel]]` table).
    pub line: Option<usize>,
    /// `defaults`, `tunnel "name"` or `tunnel[i]` (0-based) for an unnamed one.
    pub scope: Option<String>,
    /// The key, with an index for list items: `remote[1]`, `servers[0]`.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Invalid {
    /// `tunnels.toml line 7: tunnel "a-ssh": remote[1]: invalid remote forward spec ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        for part in [&self.scope, &self.field].into_iter().flatten() {
            write!(f, ": {part}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The keys the parser accepts: top level, `[defaults]`, `[[tunnel]]`. burrow-tunnels.toml(5)
/// must describe each (checked by the man page's tests).
#[cfg(test)]
pub(crate) fn accepted_keys() -> [&'static [&'static str]; 3] {
    use crate::docs::fields::struct_fields;
    [
        struct_fields::<raw::RawFile>(),
        struct_fields::<raw::RawSettings>(),
        struct_fields::<raw::RawTunnel>(),
    ]
}

/// Reads and validates a tunnels file.
pub fn load(path: &Path) -> Result<TunnelsFile, TunnelsError> {
    let text = std::fs::read_to_string(path).map_err(|source| TunnelsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates tunnels file text; `path` names it in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<TunnelsFile, TunnelsError> {
    parse_with_home(text, path, &crate::config::options::home_dir())
}

/// [`parse`] with `~` meaning `home`.
fn parse_with_home(text: &str, path: &Path, home: &Path) -> Result<TunnelsFile, TunnelsError> {
    let raw: raw::RawFile = toml::from_str(text).map_err(|e| TunnelsError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let tunnels = validate::validate(raw, text, path, home)
        .map_err(|problems| TunnelsError::Invalid { problems })?;
    Ok(TunnelsFile {
        tunnels,
        source: path.to_path_buf(),
    })
}
