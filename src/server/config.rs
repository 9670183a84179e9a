//! `burrow serve` settings: a TOML file, overridden by flags, validated once at start-up with
//! errors that name the file and field. Also the host key: loaded, or generated on first start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::budget::BudgetConfig;
use crate::observe::ObserveConfig;
use crate::server::penalty::PenaltyConfig;
use crate::server::policy::{self, AllowTcpForwarding, GatewayPorts};

/// Why the relay's configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ServeConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown/mistyped fields.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// toml's message, which names line, column and field.
        message: String,
    },
    /// A value is invalid.
    #[error("{path}: {field}: {message}")]
    Invalid {
        /// File (or "command line").
        path: String,
        /// Field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A file others could read or change (sshd's StrictModes, "UNPROTECTED PRIVATE KEY
    /// FILE"); the message names the file, its mode and what is required.
    #[error(transparent)]
    Insecure {
        /// What is wrong.
        #[from]
        source: crate::server::strict_modes::Insecure,
    },
    /// Host key trouble.
    #[error("host key {path}: {message}")]
    HostKey {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The file format (see examples/serve.toml).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    /// Address to listen on, e.g. "0.0.0.0:2222".
    pub listen: Option<String>,
    /// Host key file (generated when missing).
    pub host_key: Option<PathBuf>,
    /// authorized_keys file.
    pub authorized_keys: Option<PathBuf>,
    /// "no" | "yes" | "clientspecified".
    pub gateway_ports: Option<String>,
    /// "yes" | "no" | "local" | "remote".
    pub allow_tcp_forwarding: Option<String>,
    /// Server-wide PermitOpen: "host:port" entries, or "any" or "none" alone; checked while
    /// the file is read, so a bad list is an error naming its line.
    #[serde(default, deserialize_with = "permit_open_list")]
    pub permit_open: Option<policy::ServerOpen>,
    /// Server-wide PermitListen: "`[host:]port`" entries, or "any" or "none" alone (`None` inside
    /// = any); checked like `permit_open`.
    #[serde(default, deserialize_with = "permit_listen_list")]
    pub permit_listen: Option<Option<Vec<policy::PermitListen>>>,
    /// Where to serve metrics and the status page, e.g. "127.0.0.1:9180".
    pub metrics: Option<String>,
    /// Bearer token file for the metrics address (required unless it is loopback).
    pub metrics_token_file: Option<PathBuf>,
    /// sshd's StrictModes for authorized_keys (default true).
    pub strict_modes: Option<bool>,
    /// Access log file (one line per forwarded connection and per refused request); stderr
    /// when unset. Reopened on SIGHUP.
    pub access_log: Option<PathBuf>,
    /// Private services by name (default true); false restores sshd's resolve-and-bind for
    /// names in -R and -L/-W/-D.
    pub aliases: Option<bool>,
    /// Limits.
    #[serde(default)]
    pub limits: LimitsFile,
}

/// `[limits]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Authentication attempts per connection.
    pub max_auth_tries: Option<usize>,
    /// Seconds a connection may take to authenticate.
    pub login_grace_time_secs: Option<u64>,
    /// Connections allowed to be unauthenticated at once.
    pub max_startups: Option<usize>,
    /// -R listeners one key may hold across its sessions.
    pub max_listeners_per_key: Option<u32>,
    /// Open channels one key may hold across its sessions.
    pub max_channels_per_key: Option<u32>,
    /// Authenticated sessions (connections) one key may hold at once.
    pub max_sessions_per_key: Option<u32>,
    /// Seconds to wait for an earlier session's answer before taking its port over.
    pub takeover_probe_secs: Option<u64>,
    /// Seconds between keepalives to clients (0 = off).
    pub keepalive_interval_secs: Option<u64>,
    /// Unanswered keepalives before a session is dropped.
    pub keepalive_count_max: Option<usize>,
    /// Resumable streams: how long a stream waits for its client to come back (default 60).
    pub resume_grace_secs: Option<u64>,
    /// Resumable streams: unacknowledged bytes kept per stream and direction (default 4096).
    pub resume_buffer_kib: Option<usize>,
    /// Resumable streams: replay buffer bytes one key's streams may reserve together (default
    /// 64); streams past it are carried unresumable.
    pub resume_budget_per_key_mib: Option<u64>,
    /// Resumable streams: replay buffer bytes all streams may reserve together (default an
    /// eighth of memory, 512 if unknown); streams past it are carried unresumable.
    pub resume_budget_total_mib: Option<u64>,
    /// Grown channel receive windows: bytes one key's channels may add together (default 256).
    pub window_growth_per_key_mib: Option<u64>,
    /// Grown channel receive windows: bytes all channels may add together (default an eighth
    /// of memory, 512 if unknown).
    pub window_growth_total_mib: Option<u64>,
    /// Failed authentications a source may have before its failure replies are delayed.
    pub auth_free_failures: Option<u32>,
    /// Longest delay of a failure reply for a source past its allowance (seconds).
    pub auth_max_delay_secs: Option<u64>,
}

/// Flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct ServeOverrides {
    /// --listen.
    pub listen: Option<String>,
    /// --config.
    pub config: Option<PathBuf>,
    /// --host-key.
    pub host_key: Option<PathBuf>,
    /// --authorized-keys.
    pub authorized_keys: Option<PathBuf>,
    /// --gateway-ports.
    pub gateway_ports: Option<String>,
    /// --metrics.
    pub metrics: Option<SocketAddr>,
    /// --metrics-token-file.
    pub metrics_token_file: Option<PathBuf>,
}

/// Validated relay settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Host key path.
    pub host_key: PathBuf,
    /// authorized_keys path (re-read on SIGHUP).
    pub authorized_keys: PathBuf,
    /// Refuse an authorized_keys that others could change (see [`super::strict_modes`]).
    pub strict_modes: bool,
    /// Forwarding policy.
    pub policy: policy::ServerPolicy,
    /// Limits.
    pub limits: Limits,
    /// Metrics and status page endpoint, when asked for.
    pub observe: Option<ObserveConfig>,
    /// Where the access log goes: this file, or stderr (the journal) when None.
    pub access_log: Option<PathBuf>,
}

/// Resource limits with safe defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Authentication attempts per connection (sshd MaxAuthTries: 6).
    pub max_auth_tries: usize,
    /// Time to authenticate (sshd LoginGraceTime: 120 s; we use 30 s).
    pub login_grace_time: Duration,
    /// Unauthenticated connections at once; more are refused (sshd MaxStartups-like).
    pub max_startups: usize,
    /// -R listeners per key.
    pub max_listeners_per_key: u32,
    /// Open channels per key.
    pub max_channels_per_key: u32,
    /// Authenticated sessions per key: each costs the relay memory whether it forwards or not.
    pub max_sessions_per_key: u32,
    /// Liveness probe deadline for stale-listener takeover.
    pub takeover_probe: Duration,
    /// Keepalive interval towards clients.
    pub keepalive_interval: Option<Duration>,
    /// Unanswered keepalives before dropping a session.
    pub keepalive_count_max: usize,
    /// Resumable streams (burrow clients only): replay buffer and grace period.
    pub resume: crate::resume::ResumeConfig,
    /// Resumable streams: what replay buffers may reserve, per key and relay-wide.
    pub resume_budget: BudgetConfig,
    /// What grown receive windows may add past the 2 MiB window, per key and relay-wide.
    pub window_growth: BudgetConfig,
    /// Per-source brute-force penalty (OpenSSH PerSourcePenalties-like).
    pub penalty: PenaltyConfig,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_auth_tries: 6,
            login_grace_time: Duration::from_secs(30),
            max_startups: 100,
            max_listeners_per_key: 64,
            max_channels_per_key: 1024,
            max_sessions_per_key: 1024,
            takeover_probe: Duration::from_secs(3),
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_count_max: 3,
            resume: crate::resume::ResumeConfig::default(),
            resume_budget: BudgetConfig {
                per_key: DEFAULT_RESUME_BUDGET_PER_KEY,
                total: default_budget_total(),
            },
            window_growth: BudgetConfig {
                per_key: DEFAULT_WINDOW_GROWTH_PER_KEY,
                total: default_budget_total(),
            },
            penalty: PenaltyConfig::default(),
        }
    }
}

/// Replay buffer bytes one key's resumable streams may reserve: 16 streams at the default
/// 4 MiB buffer.
pub const DEFAULT_RESUME_BUDGET_PER_KEY: u64 = 64 << 20;

/// What one key's grown receive windows may add: a window grows from 2 MiB to at most 16, so
/// 18 channels at their largest, far more than a key's long-distance bulk transfers need at
/// once, against 14 GiB for `max_channels_per_key` (1024) channels unbounded.
pub const DEFAULT_WINDOW_GROWTH_PER_KEY: u64 = 256 << 20;

/// A relay-wide budget when the machine's memory cannot be read.
pub const FALLBACK_BUDGET_TOTAL: u64 = 512 << 20;

/// A relay-wide budget (replay buffers, grown windows): an eighth of the memory this process
/// may use (MemTotal, or a smaller cgroup limit), so neither can take the machine alone;
/// [`FALLBACK_BUDGET_TOTAL`] where that is unknown.
pub fn default_budget_total() -> u64 {
    crate::budget::memory_available()
        .map(|m| m / 8)
        .unwrap_or(FALLBACK_BUDGET_TOTAL)
}

/// `mib` (a `[limits]` field named `field`) in bytes, `default` when absent. Err names the
/// field.
fn mib_bytes(
    field: &'static str,
    mib: Option<u64>,
    default: u64,
) -> Result<u64, (&'static str, String)> {
    match mib {
        None => Ok(default),
        Some(mib) => mib
            .checked_mul(1 << 20)
            .ok_or_else(|| (field, format!("{mib} MiB is too large"))),
    }
}

/// The relay's channel receive window before any growth (russh's default): its first doubling
/// takes this much from the growth budgets.
pub const CHANNEL_WINDOW: u64 = 2 << 20;

/// The window growth budgets from `[limits]`: each at least one first doubling
/// ([`CHANNEL_WINDOW`]), or 0 (every window stays at 2 MiB). Err names the field.
fn window_growth(
    per_key_mib: Option<u64>,
    total_mib: Option<u64>,
) -> Result<BudgetConfig, (&'static str, String)> {
    let bytes =
        |field: &'static str, mib: Option<u64>, default: u64| match mib_bytes(field, mib, default)?
        {
            b if b != 0 && b < CHANNEL_WINDOW => Err((
                field,
                format!(
                    "{} MiB is less than a window's first doubling ({} MiB): no window could ever \
                 grow; 0 says that on purpose",
                    b >> 20,
                    CHANNEL_WINDOW >> 20
                ),
            )),
            b => Ok(b),
        };
    let d = Limits::default().window_growth;
    Ok(BudgetConfig {
        per_key: bytes("window_growth_per_key_mib", per_key_mib, d.per_key)?,
        total: bytes("window_growth_total_mib", total_mib, d.total)?,
    })
}

/// The budgets from `[limits]`: MiB, each at least one stream's buffer (`buffer` bytes) or 0
/// (every stream carried unresumable). Err names the field.
fn resume_budget(
    per_key_mib: Option<u64>,
    total_mib: Option<u64>,
    buffer: usize,
) -> Result<BudgetConfig, (&'static str, String)> {
    let buffer = crate::resume::buffer_capacity(buffer) as u64;
    let bytes =
        |field: &'static str, mib: Option<u64>, default: u64| match mib_bytes(field, mib, default)?
        {
            b if b != 0 && b < buffer => Err((
                field,
                format!(
                    "{} MiB is less than one stream's replay buffer ({} KiB, \
                 resume_buffer_kib): no stream could ever be resumable; 0 says that on purpose",
                    b >> 20,
                    buffer / 1024
                ),
            )),
            b => Ok(b),
        };
    let d = Limits::default().resume_budget;
    Ok(BudgetConfig {
        per_key: bytes("resume_budget_per_key_mib", per_key_mib, d.per_key)?,
        total: bytes("resume_budget_total_mib", total_mib, d.total)?,
    })
}

/// Where state lives by default: /var/lib/burrow as root, else $XDG_STATE_HOME/burrow or
/// ~/.local/state/burrow.
pub fn default_state_dir() -> PathBuf {
    if nix::unistd::getuid().is_root() {
        return PathBuf::from("/var/lib/burrow");
    }
    match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("burrow"),
        None => crate::config::options::home_dir().join(".local/state/burrow"),
    }
}

impl ServeConfig {
    /// Reads the file (if any), applies flags and validates.
    pub fn load(over: &ServeOverrides) -> Result<Self, ServeConfigError> {
        let (file, origin) = match &over.config {
            Some(path) => (read_file(path)?, path.display().to_string()),
            None => (ServeFile::default(), "command line".to_string()),
        };
        Self::from_parts(file, over, &origin)
    }

    /// Combines a parsed file with flags; `origin` names the file in errors.
    pub fn from_parts(
        file: ServeFile,
        over: &ServeOverrides,
        origin: &str,
    ) -> Result<Self, ServeConfigError> {
        let invalid = |field: &'static str, message: String| ServeConfigError::Invalid {
            path: origin.to_string(),
            field,
            message,
        };
        let state = default_state_dir();
        let listen_text = over
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "0.0.0.0:2222".to_string());
        let listen = listen_text.parse().map_err(|_| {
            invalid(
                "listen",
                format!("\"{listen_text}\" is not an address:port"),
            )
        })?;
        let gateway_text = over
            .gateway_ports
            .clone()
            .or(file.gateway_ports)
            .unwrap_or_else(|| "no".to_string());
        let gateway_ports: GatewayPorts = gateway_text
            .parse()
            .map_err(|e: policy::PolicyError| invalid("gateway_ports", e.to_string()))?;
        let allow_tcp_forwarding: AllowTcpForwarding = file
            .allow_tcp_forwarding
            .as_deref()
            .unwrap_or("yes")
            .parse()
            .map_err(|e: policy::PolicyError| invalid("allow_tcp_forwarding", e.to_string()))?;
        let permit_open = file.permit_open.unwrap_or_default();
        let permit_listen = file.permit_listen.flatten();
        let metrics =
            match (over.metrics, file.metrics) {
                (Some(addr), _) => Some(addr),
                (None, Some(text)) => Some(text.parse().map_err(|_| {
                    invalid("metrics", format!("\"{text}\" is not an address:port"))
                })?),
                (None, None) => None,
            };
        let (per_key_mib, total_mib) = (
            file.limits.resume_budget_per_key_mib,
            file.limits.resume_budget_total_mib,
        );
        let growth = (
            file.limits.window_growth_per_key_mib,
            file.limits.window_growth_total_mib,
        );
        let mut limits = limits(file.limits);
        limits.resume_budget = resume_budget(per_key_mib, total_mib, limits.resume.buffer)
            .map_err(|(field, message)| invalid(field, message))?;
        limits.window_growth = window_growth(growth.0, growth.1)
            .map_err(|(field, message)| invalid(field, message))?;
        let token_file = over.metrics_token_file.clone().or(file.metrics_token_file);
        let access_log = match file.access_log {
            Some(p) if p.as_os_str().is_empty() => {
                return Err(invalid(
                    "access_log",
                    "empty: name a file, or leave access_log out to log to stderr".into(),
                ))
            }
            other => other,
        };
        let observe = match (metrics, token_file) {
            (Some(addr), token) => Some(
                ObserveConfig::new(addr, token).map_err(|e| invalid("metrics", e.to_string()))?,
            ),
            (None, Some(_)) => {
                return Err(invalid(
                    "metrics_token_file",
                    "set without metrics (an address to serve on)".into(),
                ))
            }
            (None, None) => None,
        };
        Ok(Self {
            listen,
            host_key: over
                .host_key
                .clone()
                .or(file.host_key)
                .unwrap_or_else(|| state.join("host_ed25519_key")),
            authorized_keys: over
                .authorized_keys
                .clone()
                .or(file.authorized_keys)
                .unwrap_or_else(|| state.join("authorized_keys")),
            strict_modes: file.strict_modes.unwrap_or(true),
            policy: policy::ServerPolicy {
                gateway_ports,
                allow_tcp_forwarding,
                permit_open,
                permit_listen,
                aliases: file.aliases.unwrap_or(true),
            },
            limits,
            observe,
            access_log,
        })
    }
}

/// `permit_open = [...]`, parsed as sshd reads PermitOpen: `any` or `none` alone, else entries.
/// (Reading `any` among entries as "any", or dropping `none`, would fail open.)
fn permit_open_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<policy::ServerOpen>, D::Error> {
    let args = Vec::<String>::deserialize(d)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match policy::parse_permit_open_list(&args) {
        Ok(None) => Ok(Some(policy::ServerOpen::Any)),
        Ok(Some(list)) => Ok(Some(policy::ServerOpen::Only(list))),
        Err(e) => Err(serde::de::Error::custom(format!("permit_open: {e}"))),
    }
}

/// `permit_listen = [...]`, parsed like [`permit_open_list`].
#[allow(clippy::option_option)]
fn permit_listen_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Vec<policy::PermitListen>>>, D::Error> {
    let args = Vec::<String>::deserialize(d)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    policy::parse_permit_listen_list(&args)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("permit_listen: {e}")))
}

fn limits(f: LimitsFile) -> Limits {
    let d = Limits::default();
    Limits {
        max_auth_tries: f.max_auth_tries.unwrap_or(d.max_auth_tries).max(1),
        login_grace_time: f
            .login_grace_time_secs
            .map(Duration::from_secs)
            .unwrap_or(d.login_grace_time),
        max_startups: f.max_startups.unwrap_or(d.max_startups).max(1),
        max_listeners_per_key: f.max_listeners_per_key.unwrap_or(d.max_listeners_per_key),
        max_channels_per_key: f.max_channels_per_key.unwrap_or(d.max_channels_per_key),
        max_sessions_per_key: f.max_sessions_per_key.unwrap_or(d.max_sessions_per_key),
        takeover_probe: f
            .takeover_probe_secs
            .map(Duration::from_secs)
            .unwrap_or(d.takeover_probe),
        keepalive_interval: match f.keepalive_interval_secs {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
            None => d.keepalive_interval,
        },
        keepalive_count_max: f.keepalive_count_max.unwrap_or(d.keepalive_count_max),
        resume: crate::resume::ResumeConfig {
            buffer: f
                .resume_buffer_kib
                .map(|k| k.saturating_mul(1024))
                .unwrap_or(d.resume.buffer),
            buffer_max: d.resume.buffer_max,
            grace: f
                .resume_grace_secs
                .map(Duration::from_secs)
                .unwrap_or(d.resume.grace),
        },
        // Validated by from_parts (resume_budget, window_growth), which has the file name for
        // errors.
        resume_budget: d.resume_budget,
        window_growth: d.window_growth,
        penalty: PenaltyConfig {
            free_failures: f.auth_free_failures.unwrap_or(d.penalty.free_failures),
            max_delay: f
                .auth_max_delay_secs
                .map(Duration::from_secs)
                .unwrap_or(d.penalty.max_delay),
            ..d.penalty
        },
    }
}

/// Parses a serve config file.
pub fn read_file(path: &Path) -> Result<ServeFile, ServeConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServeConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(&text, path)
}

/// Parses serve config text; `path` names it in errors.
pub fn parse_file(text: &str, path: &Path) -> Result<ServeFile, ServeConfigError> {
    toml::from_str(text).map_err(|e| ServeConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Loads the ed25519 host key, or generates it on first start. Returns the key and whether it
/// was created now.
///
/// An existing key that group or others may access is refused, as sshd refuses one
/// ("UNPROTECTED PRIVATE KEY FILE"). A new key is written to a temporary file in the same
/// directory (created 0600 by `tempfile`, so it is never readable by others, whatever the
/// umask) and linked into place only once complete, never replacing a file: a crash leaves
/// no half-written key and two relays starting at once keep one key. A missing directory is
/// created 0700.
pub fn load_or_create_host_key(
    path: &Path,
) -> Result<(russh::keys::PrivateKey, bool), ServeConfigError> {
    let err = |message: String| ServeConfigError::HostKey {
        path: path.to_path_buf(),
        message,
    };
    match std::fs::File::open(path) {
        Ok(file) => {
            let meta = file.metadata().map_err(|e| err(e.to_string()))?;
            crate::server::strict_modes::check_private_key(path, &meta)
                .map_err(|e| ServeConfigError::Insecure { source: e })?;
            let text = std::io::read_to_string(file).map_err(|e| err(e.to_string()))?;
            let key =
                russh::keys::decode_secret_key(&text, None).map_err(|e| err(e.to_string()))?;
            return Ok((key, false));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
    }
    use std::os::unix::fs::DirBuilderExt;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| err(format!("cannot create directory {}: {e}", dir.display())))?;
            dir
        }
        None => Path::new("."),
    };
    let key = russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)
        .map_err(|e| err(e.to_string()))?;
    let text = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| err(e.to_string()))?;
    let mut staged = tempfile::Builder::new()
        .prefix(".host-key-")
        .tempfile_in(dir)
        .map_err(|e| err(format!("cannot create a file in {}: {e}", dir.display())))?;
    std::io::Write::write_all(&mut staged, text.as_bytes()).map_err(|e| err(e.to_string()))?;
    staged
        .as_file()
        .sync_all()
        .map_err(|e| err(e.to_string()))?;
    staged
        .persist_noclobber(path)
        .map_err(|e| err(format!("cannot create: {}", e.error)))?;
    Ok((key, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_is_named() {
        let e = parse_file(
            "listen = \"0.0.0.0:1\"\nlisten_port = 3\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.toml") && e.contains("listen_port"), "{e}");
    }

    #[test]
    fn bad_gateway_ports_is_named() {
        let file = parse_file("gateway_ports = \"maybe\"\n", Path::new("x.toml")).unwrap();
        let e = ServeConfig::from_parts(file, &ServeOverrides::default(), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gateway_ports") && e.contains("maybe"), "{e}");
    }

    /// sshd's rule: `any`/`none` alone, else an error naming the line (`any` among entries
    /// used to mean "any", and `none` among entries was dropped: both failed open).
    #[test]
    fn permit_keywords_must_stand_alone() {
        let err = |text: &str| {
            let e = parse_file(text, Path::new("x.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("x.toml"), "{e}");
            e
        };
        let e = err("listen = \"0.0.0.0:1\"\npermit_open = [\"db:1\", \"any\"]\n");
        assert!(
            e.contains("line 2") && e.contains("\"any\" must appear alone"),
            "{e}"
        );
        let e = err("\npermit_listen = [\"none\", \"8080\"]\n");
        assert!(
            e.contains("line 2") && e.contains("\"none\" must appear alone"),
            "{e}"
        );
        let e = err("permit_open = [\"none\", \"db:1\"]\n");
        assert!(e.contains("permit_open") && e.contains("line 1"), "{e}");
        let e = err("permit_open = [\"db\"]\n");
        assert!(e.contains("expected host:port"), "{e}");
        let e = err("permit_open = []\n");
        assert!(e.contains("missing argument"), "{e}");
        let ok = |text: &str| {
            let file = parse_file(text, Path::new("x.toml")).unwrap();
            ServeConfig::from_parts(file, &ServeOverrides::default(), "x.toml").unwrap()
        };
        let c = ok("permit_open = [\"none\"]\npermit_listen = [\"any\"]\n");
        assert_eq!(c.policy.permit_open, policy::ServerOpen::Only(vec![]));
        assert_eq!(c.policy.permit_listen, None);
        let c = ok("permit_open = [\"any\"]\npermit_listen = [\"none\"]\n");
        assert_eq!(c.policy.permit_open, policy::ServerOpen::Any);
        assert_eq!(c.policy.permit_listen, Some(vec![]));
        let c = ok("");
        assert_eq!(c.policy.permit_open, policy::ServerOpen::Unset);
    }

    #[test]
    fn metrics_on_a_public_address_needs_a_token() {
        let file = parse_file("metrics = \"0.0.0.0:9180\"\n", Path::new("x.toml")).unwrap();
        let e = ServeConfig::from_parts(file, &ServeOverrides::default(), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("metrics") && e.contains("without a token"),
            "{e}"
        );
        let file = parse_file(
            "metrics = \"0.0.0.0:9180\"\nmetrics_token_file = \"/etc/burrow/metrics.token\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        let c = ServeConfig::from_parts(file, &ServeOverrides::default(), "x.toml").unwrap();
        let o = c.observe.unwrap();
        assert_eq!(o.addr.port(), 9180);
        let over = ServeOverrides {
            metrics_token_file: Some("/t".into()),
            ..Default::default()
        };
        let e = ServeConfig::from_parts(ServeFile::default(), &over, "command line")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics_token_file"), "{e}");
    }

    #[test]
    fn a_generated_host_key_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/host_key");
        let (_, created) = load_or_create_host_key(&path).unwrap();
        assert!(created);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let (_, again) = load_or_create_host_key(&path).unwrap();
        assert!(!again, "the existing key is kept");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["host_key"], "no staged file is left behind");
    }

    /// sshd's "UNPROTECTED PRIVATE KEY FILE": a host key group or others may access is not
    /// used; the message names the file and its mode.
    #[test]
    fn a_host_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host_key");
        let (key, _) = load_or_create_host_key(&path).unwrap();
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = load_or_create_host_key(&path).unwrap_err().to_string();
            let p = path.display();
            assert_eq!(
                e,
                format!(
                    "UNPROTECTED PRIVATE KEY FILE: permissions {mode:04o} for {p} are too open; a \
                     private key must not be accessible by group or others (chmod 600 {p})"
                )
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        let (again, created) = load_or_create_host_key(&path).unwrap();
        assert!(!created);
        assert_eq!(again.public_key(), key.public_key());
    }

    #[test]
    fn strict_modes_is_on_unless_turned_off() {
        let c =
            ServeConfig::from_parts(ServeFile::default(), &ServeOverrides::default(), "-").unwrap();
        assert!(c.strict_modes);
        let file = parse_file("strict_modes = false\n", Path::new("x.toml")).unwrap();
        let c = ServeConfig::from_parts(file, &ServeOverrides::default(), "x.toml").unwrap();
        assert!(!c.strict_modes);
    }

    #[test]
    fn flags_override_file() {
        let file = parse_file("listen = \"0.0.0.0:1\"\n", Path::new("x.toml")).unwrap();
        let over = ServeOverrides {
            listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let c = ServeConfig::from_parts(file, &over, "x.toml").unwrap();
        assert_eq!(c.listen, "127.0.0.1:2".parse().unwrap());
    }

    /// A serve.toml of `text`, as `burrow serve` loads it.
    fn load(text: &str) -> Result<ServeConfig, ServeConfigError> {
        let file = parse_file(text, Path::new("x.toml")).unwrap();
        ServeConfig::from_parts(file, &ServeOverrides::default(), "x.toml")
    }

    /// Why `burrow serve` refuses a serve.toml of `text`.
    fn refusal(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn resume_budgets_default_validate_and_name_their_field() {
        let c = load("").unwrap();
        assert_eq!(c.limits.resume_budget.per_key, 64 << 20);
        let total = c.limits.resume_budget.total;
        match crate::budget::memory_available() {
            Some(m) => assert_eq!(total, m / 8),
            None => assert_eq!(total, FALLBACK_BUDGET_TOTAL),
        }
        let c =
            load("[limits]\nresume_budget_per_key_mib = 8\nresume_budget_total_mib = 0\n").unwrap();
        assert_eq!(
            (c.limits.resume_budget.per_key, c.limits.resume_budget.total),
            (8 << 20, 0)
        );
        let e = refusal("[limits]\nresume_budget_per_key_mib = 2\n");
        assert!(
            e.contains("x.toml")
                && e.contains("resume_budget_per_key_mib")
                && e.contains("4096 KiB"),
            "2 MiB cannot hold one 4 MiB buffer: {e}"
        );
        let e = refusal("[limits]\nresume_budget_total_mib = 9223372036854775807\n");
        assert!(
            e.contains("resume_budget_total_mib") && e.contains("too large"),
            "{e}"
        );
        let c = load("[limits]\nresume_buffer_kib = 512\nresume_budget_per_key_mib = 1\n").unwrap();
        assert_eq!(
            c.limits.resume_budget.per_key,
            1 << 20,
            "two 512 KiB buffers"
        );
    }

    #[test]
    fn window_growth_budgets_default_validate_and_name_their_field() {
        let c = load("").unwrap();
        assert_eq!(
            c.limits.window_growth.per_key,
            DEFAULT_WINDOW_GROWTH_PER_KEY
        );
        assert_eq!(c.limits.window_growth.total, default_budget_total());
        let c = load("[limits]\nwindow_growth_per_key_mib = 0\nwindow_growth_total_mib = 64\n")
            .unwrap();
        assert_eq!(
            (c.limits.window_growth.per_key, c.limits.window_growth.total),
            (0, 64 << 20)
        );
        let e = refusal("[limits]\nwindow_growth_per_key_mib = 9223372036854775807\n");
        assert!(
            e.contains("window_growth_per_key_mib") && e.contains("too large"),
            "{e}"
        );
        let e = refusal("[limits]\nwindow_growth_total_mib = 1\n");
        assert!(
            e.contains("window_growth_total_mib") && e.contains("first doubling"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// Every example config in the repository must parse and validate.
    #[test]
    fn example_serve_toml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/serve.toml");
        let file = read_file(&path).unwrap();
        let c = ServeConfig::from_parts(file, &ServeOverrides::default(), "examples/serve.toml")
            .unwrap();
        assert_eq!(c.listen.port(), 2222);
        assert_eq!(c.limits.max_auth_tries, 6);
    }
}
