//! The client's effective options: command line first, then `-o`, then ssh_config files, with
//! OpenSSH's rule that the first obtained value wins and forwards accumulate.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::config::error::OptionsError;

use crate::cli::SshArgs;
use crate::config::forwarding::{self, PermitRemoteOpen};
use crate::config::sharing::{self, ControlOptions, MuxCommand};
use crate::config::ssh_config::{self, HostOptions, MatchContext, SshConfig, Tokens};
use crate::forward::proxy_header::ProxyProtocol;
use crate::spec::{self, DynamicForward, JumpHost, LocalForward, RemoteForward, StreamLocalBind};

/// StrictHostKeyChecking as in ssh_config(5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// Never add keys; refuse unknown hosts.
    Yes,
    /// Ask on the terminal (the default).
    Ask,
    /// Add unknown hosts silently; still refuse changed keys.
    AcceptNew,
    /// Add unknown hosts and accept changed keys (warns).
    No,
}

/// The identity files ssh(1) tries when none is configured.
pub const DEFAULT_IDENTITIES: &[&str] = &[
    ".ssh/id_rsa",
    ".ssh/id_ecdsa",
    ".ssh/id_ecdsa_sk",
    ".ssh/id_ed25519",
    ".ssh/id_ed25519_sk",
];

/// Everything one `burrow ssh` run needs, resolved and typed.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The host as typed (what `Host` patterns matched).
    pub host_alias: String,
    /// The host to connect to (HostName, or the alias).
    pub hostname: String,
    /// TCP port of the server.
    pub port: u16,
    /// Remote user name.
    pub user: String,
    /// Private key files to try, in order.
    pub identity_files: Vec<PathBuf>,
    /// Only offer keys from `identity_files`, also when the agent holds others.
    pub identities_only: bool,
    /// Agent socket (IdentityAgent or SSH_AUTH_SOCK); None = no agent.
    pub identity_agent: Option<PathBuf>,
    /// Jump hosts as given, first hop first.
    pub proxy_jump: Vec<JumpHost>,
    /// Each jump host resolved through the config like a destination of its own.
    pub jump_hosts: Vec<ClientOptions>,
    /// Ciphers to offer, most preferred first (Ciphers); None = burrow's default order.
    pub ciphers: Option<Vec<russh::cipher::Name>>,
    /// -L forwards.
    pub local_forwards: Vec<LocalForward>,
    /// -R forwards.
    pub remote_forwards: Vec<RemoteForward>,
    /// -D forwards.
    pub dynamic_forwards: Vec<DynamicForward>,
    /// -W target.
    pub stdio_forward: Option<(String, u16)>,
    /// -g / GatewayPorts: default bind of -L/-D is all interfaces.
    pub gateway_ports: bool,
    /// A forward that cannot be set up ends the client with status 255.
    pub exit_on_forward_failure: bool,
    /// Keepalive interval; None = off.
    pub server_alive_interval: Option<Duration>,
    /// Unanswered keepalives before the session is declared dead.
    pub server_alive_count_max: u32,
    /// TCP connect timeout per address.
    pub connect_timeout: Option<Duration>,
    /// Negotiate zlib compression.
    pub compression: bool,
    /// Host key policy.
    pub strict_host_key_checking: StrictHostKeyChecking,
    /// known_hosts files that new keys are written to (the first) and read from.
    pub user_known_hosts_files: Vec<PathBuf>,
    /// System-wide known_hosts files (read only).
    pub global_known_hosts_files: Vec<PathBuf>,
    /// The only host key this hop may present, whatever known_hosts and
    /// StrictHostKeyChecking say: set by a roaming `burrow ssh` to the relay's key of its
    /// first session, so a reconnect after a network change hands the streams' re-attach
    /// secrets (and -L/-D plaintext) to that relay only, never to whoever answers on the new
    /// network. Never read from a config file.
    pub pinned_host_key: Option<russh::keys::PublicKey>,
    /// Write new known_hosts entries hashed.
    pub hash_known_hosts: bool,
    /// Never prompt (passwords, passphrases, host keys).
    pub batch_mode: bool,
    /// Try password authentication.
    pub password_authentication: bool,
    /// Try keyboard-interactive authentication.
    pub kbd_interactive_authentication: bool,
    /// Try public key authentication.
    pub pubkey_authentication: bool,
    /// How many times to ask for a password.
    pub number_of_password_prompts: u32,
    /// -N: no session, forwards only.
    pub no_command: bool,
    /// -f: background once ready.
    pub background: bool,
    /// The remote command, if any.
    pub command: Vec<String>,
    /// PTY, escape character and environment for the session channel.
    pub session: super::session::SessionOptions,
    /// -4 / -6 / any.
    pub address_family: AddressFamily,
    /// Connection sharing: ControlMaster, ControlPath, ControlPersist, -O.
    pub control: ControlOptions,
    /// How -L/-D unix socket listeners are created.
    pub stream_local: StreamLocalBind,
    /// Where reverse dynamic forwards may connect.
    pub permit_remote_open: PermitRemoteOpen,
    /// PROXY protocol header for -R connections (`ProxyProtocol`, a burrow extension).
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// Which address families to use when resolving and connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    /// Both.
    Any,
    /// IPv4 only.
    Inet,
    /// IPv6 only.
    Inet6,
}

/// Where config files live, so tests and `-F` can point elsewhere.
#[derive(Debug, Clone)]
pub struct ConfigPaths {
    /// User config (~/.ssh/config) or `-F`; None = `-F none`.
    pub user: Option<PathBuf>,
    /// Read the system config (/etc/ssh/ssh_config): only when `-F` is not given, as ssh does.
    pub system: Option<PathBuf>,
    /// The user's home directory.
    pub home: PathBuf,
}

impl ConfigPaths {
    /// The paths ssh(1) uses for a given `-F` value.
    pub fn for_args(config_file: Option<&Path>) -> Self {
        let home = home_dir();
        match config_file {
            Some(p) if p == Path::new("none") => Self {
                user: None,
                system: None,
                home,
            },
            Some(p) => Self {
                user: Some(p.to_path_buf()),
                system: None,
                home,
            },
            None => Self {
                user: Some(home.join(".ssh/config")),
                system: Some(PathBuf::from("/etc/ssh/ssh_config")),
                home,
            },
        }
    }
}

/// The current user's home directory ($HOME, else the password database).
pub fn home_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The local user's login name.
pub fn local_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".to_string())
}

/// Loads the config files that exist. A missing default file is fine; a missing `-F` file is not.
pub fn load_configs(paths: &ConfigPaths) -> Result<Vec<SshConfig>, OptionsError> {
    let mut configs = Vec::new();
    if let Some(user) = &paths.user {
        let explicit = paths.system.is_none();
        if explicit || user.exists() {
            configs.push(SshConfig::load(user, &paths.home.join(".ssh"))?);
        }
    }
    if let Some(system) = &paths.system {
        if system.exists() {
            configs.push(SshConfig::load(system, Path::new("/etc/ssh"))?);
        }
    }
    Ok(configs)
}

/// Options from the command line (`-o` and flags) layered over the config files for `host`.
pub fn host_options(
    command_line: &[String],
    configs: &[SshConfig],
    ctx: &MatchContext,
) -> Result<HostOptions, OptionsError> {
    let mut merged = HostOptions::default();
    for line in command_line {
        let (key, args) = ssh_config::parse_option_line(line)?;
        if !ssh_config::KNOWN_KEYS
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&key))
        {
            // ssh refuses an unknown -o key; burrow, which knows fewer keys, ignores it but
            // says so, since it is most likely a typo on the command line.
            tracing::warn!("-o \"{line}\": burrow does not use this option; ignored");
        }
        let multi = ssh_config::is_multi(&key);
        merged.set_if_absent(&key, args, multi);
    }
    // Each file sees what came before it (e.g. `-o HostName=` for `Match host`), as in ssh.
    for config in configs {
        merged = config.lookup_onto(ctx, merged);
    }
    Ok(merged)
}

/// Settings a program fixes for itself rather than reading them from a command line (`burrow
/// up`'s tunnels), as typed values: each one set takes the place of the command-line `-o` that
/// would say the same, so it wins over ssh_config as that would, without being written out as
/// text and parsed back. `None` leaves the option as the command line and ssh_config say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fixed {
    /// BatchMode.
    pub batch_mode: Option<bool>,
    /// ExitOnForwardFailure.
    pub exit_on_forward_failure: Option<bool>,
    /// ServerAliveInterval (`Some(None)` = off).
    pub server_alive_interval: Option<Option<Duration>>,
    /// ServerAliveCountMax.
    pub server_alive_count_max: Option<u32>,
    /// ConnectTimeout (`Some(None)` = none).
    pub connect_timeout: Option<Option<Duration>>,
    /// StrictHostKeyChecking.
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// Compression.
    pub compression: Option<bool>,
    /// UserKnownHostsFile: this one file, taken literally (no `%` tokens).
    pub user_known_hosts_file: Option<PathBuf>,
    /// ProxyProtocol (`Some(None)` = none).
    pub proxy_protocol: Option<Option<ProxyProtocol>>,
}

impl Fixed {
    /// Puts every value that is set into `o`.
    fn apply(&self, o: &mut ClientOptions) {
        if let Some(v) = self.batch_mode {
            o.batch_mode = v;
        }
        if let Some(v) = self.exit_on_forward_failure {
            o.exit_on_forward_failure = v;
        }
        if let Some(v) = self.server_alive_interval {
            o.server_alive_interval = v.filter(|d| !d.is_zero());
        }
        if let Some(v) = self.server_alive_count_max {
            o.server_alive_count_max = v;
        }
        if let Some(v) = self.connect_timeout {
            o.connect_timeout = v.filter(|d| !d.is_zero());
        }
        if let Some(v) = self.strict_host_key_checking {
            o.strict_host_key_checking = v;
        }
        if let Some(v) = self.compression {
            o.compression = v;
        }
        if let Some(v) = &self.user_known_hosts_file {
            o.user_known_hosts_files = vec![v.clone()];
        }
        if let Some(v) = self.proxy_protocol {
            o.proxy_protocol = v;
        }
    }
}

/// [`resolve`] with `fixed` on top: what `burrow up` builds each tunnel's options with. A value
/// in `fixed` wins over ssh_config like a command-line `-o`; unlike one, ssh_config's own value
/// for that option is still read (a malformed one is an error, as it is for `ssh` to that host).
pub fn resolve_fixed(
    args: &SshArgs,
    fixed: &Fixed,
    paths: &ConfigPaths,
) -> Result<ClientOptions, OptionsError> {
    let mut resolved = resolve(args, paths)?;
    fixed.apply(&mut resolved);
    Ok(resolved)
}

/// Resolves `burrow ssh` arguments into effective options.
pub fn resolve(args: &SshArgs, paths: &ConfigPaths) -> Result<ClientOptions, OptionsError> {
    resolve_with_config(args, paths).map(|(resolved, _)| resolved)
}

/// [`resolve`], also returning the merged options as written (for `-G`, which prints some
/// values, e.g. IdentityFile, before expansion as ssh does).
pub fn resolve_with_config(
    args: &SshArgs,
    paths: &ConfigPaths,
) -> Result<(ClientOptions, HostOptions), OptionsError> {
    let configs = load_configs(paths)?;
    let (dest_user, dest_host, dest_port) = spec::parse_destination(&args.destination)?;
    let local_user = local_user();
    let ctx = MatchContext {
        host: dest_host.clone(),
        original_host: dest_host.clone(),
        user: args.login.clone().or_else(|| dest_user.clone()),
        local_user: local_user.clone(),
    };
    let opts = host_options_with_flags(args, &configs, &ctx)?;
    let port = match &args.port {
        Some(p) => parse_port("Port", p)?,
        None => match dest_port {
            Some(p) => p,
            None => opt_port(&opts)?.unwrap_or(22),
        },
    };
    let user = args
        .login
        .clone()
        .or(dest_user)
        .or_else(|| first(&opts, "user"))
        .unwrap_or_else(|| local_user.clone());
    let hostname = lowercase_name(
        first(&opts, "hostname")
            .map(|h| h.replace("%h", &dest_host).replace("%%", "%"))
            .unwrap_or_else(|| dest_host.clone()),
    );
    let tokens = Tokens {
        host: hostname.clone(),
        original_host: dest_host.clone(),
        port,
        remote_user: user.clone(),
        local_user,
        home: paths.home.clone(),
        uid: nix::unistd::getuid().as_raw(),
        local_hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
    };
    let mut resolved = build(args, &opts, &tokens, paths, dest_host, hostname, port, user)?;
    resolved.jump_hosts = resolved
        .proxy_jump
        .iter()
        .map(|hop| resolve_hop(hop, args, paths))
        .collect::<Result<_, _>>()?;
    Ok((resolved, opts))
}

/// ssh lower-cases the host name (not address literals) before using it for anything.
fn lowercase_name(host: String) -> String {
    if host.parse::<std::net::IpAddr>().is_ok() {
        host
    } else {
        host.to_ascii_lowercase()
    }
}

/// [`host_options`] with the flags that set options directly first: `-S` (ControlPath) and
/// `-M`/`-MM` (ControlMaster) override `-o` and the config, as in ssh.c.
fn host_options_with_flags(
    args: &SshArgs,
    configs: &[SshConfig],
    ctx: &MatchContext,
) -> Result<HostOptions, OptionsError> {
    let mut flags = HostOptions::default();
    if let Some(path) = &args.control_path {
        flags.set_if_absent("controlpath", vec![path.clone()], false);
    }
    match args.master {
        0 => {}
        1 => flags.set_if_absent("controlmaster", vec!["yes".into()], false),
        _ => flags.set_if_absent("controlmaster", vec!["ask".into()], false),
    }
    flags.merge_from(host_options(&args.options, configs, ctx)?);
    Ok(flags)
}

/// A jump host is looked up in the same config files as a destination of its own (its user and
/// port from the -J spec win); it never has jump hosts or forwards itself.
fn resolve_hop(
    hop: &JumpHost,
    args: &SshArgs,
    paths: &ConfigPaths,
) -> Result<ClientOptions, OptionsError> {
    let hop_args = SshArgs {
        destination: hop.host.clone(),
        port: hop.port.map(|p| p.to_string()),
        login: hop.user.clone(),
        config_file: args.config_file.clone(),
        jump: Some("none".to_string()),
        no_command: true,
        ipv4: args.ipv4,
        ipv6: args.ipv6,
        ..SshArgs::default()
    };
    let mut o = resolve(&hop_args, paths)?;
    o.local_forwards.clear();
    o.remote_forwards.clear();
    o.dynamic_forwards.clear();
    Ok(o)
}

#[allow(clippy::too_many_arguments)]
fn build(
    args: &SshArgs,
    opts: &HostOptions,
    tokens: &Tokens,
    paths: &ConfigPaths,
    host_alias: String,
    hostname: String,
    port: u16,
    user: String,
) -> Result<ClientOptions, OptionsError> {
    let expand = |s: &str| ssh_config::expand_tokens(s, tokens);
    let mut identity_files: Vec<PathBuf> = args.identity.clone();
    for f in opts.get_all("identityfile") {
        if let Some(v) = f.first() {
            identity_files.push(PathBuf::from(expand(v)?));
        }
    }
    let identities_only = flag(opts, "identitiesonly", false)?;
    let identity_agent = match first(opts, "identityagent") {
        Some(v) if v.eq_ignore_ascii_case("none") => None,
        Some(v) if v == "SSH_AUTH_SOCK" => std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
        Some(v) => Some(PathBuf::from(expand(&v)?)),
        None => std::env::var_os("SSH_AUTH_SOCK")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
    };
    let proxy_jump = match (&args.jump, first(opts, "proxyjump")) {
        (Some(j), _) => spec::parse_jump(j)?,
        (None, Some(j)) => spec::parse_jump(&j)?,
        (None, None) => Vec::new(),
    };
    let clear = flag(opts, "clearallforwardings", false)?;
    let (local_forwards, remote_forwards, dynamic_forwards) = if clear {
        (Vec::new(), Vec::new(), Vec::new())
    } else {
        forwarding::forwards(args, opts, tokens)?
    };
    let stdio_forward = args.stdio.as_deref().map(spec::parse_stdio).transpose()?;
    let strict = match first(opts, "stricthostkeychecking") {
        None => StrictHostKeyChecking::Ask,
        Some(v) => parse_strict(&v)?,
    };
    let user_known_hosts_files = file_list(
        opts,
        "userknownhostsfile",
        &expand,
        &[
            paths.home.join(".ssh/known_hosts"),
            paths.home.join(".ssh/known_hosts2"),
        ],
    )?;
    let global_known_hosts_files = file_list(
        opts,
        "globalknownhostsfile",
        &expand,
        &[
            PathBuf::from("/etc/ssh/ssh_known_hosts"),
            PathBuf::from("/etc/ssh/ssh_known_hosts2"),
        ],
    )?;
    let batch_mode = flag(opts, "batchmode", false)?;
    Ok(ClientOptions {
        host_alias,
        hostname,
        port,
        user,
        identity_files,
        identities_only,
        identity_agent,
        proxy_jump,
        jump_hosts: Vec::new(),
        ciphers: first(opts, "ciphers")
            .map(|c| parse_ciphers(&c))
            .transpose()?,
        local_forwards,
        remote_forwards,
        dynamic_forwards,
        stdio_forward,
        gateway_ports: args.gateway_ports || flag(opts, "gatewayports", false)?,
        exit_on_forward_failure: flag(opts, "exitonforwardfailure", false)? || args.stdio.is_some(),
        server_alive_interval: match first(opts, "serveraliveinterval") {
            Some(v) => Some(parse_time("ServerAliveInterval", &v)?).filter(|d| !d.is_zero()),
            None => None,
        },
        server_alive_count_max: match first(opts, "serveralivecountmax") {
            Some(v) => parse_u32("ServerAliveCountMax", &v)?,
            None => 3,
        },
        connect_timeout: match first(opts, "connecttimeout") {
            Some(v) if v.eq_ignore_ascii_case("none") => None,
            Some(v) => Some(parse_time("ConnectTimeout", &v)?).filter(|d| !d.is_zero()),
            None => None,
        },
        compression: args.compression || flag(opts, "compression", false)?,
        strict_host_key_checking: strict,
        user_known_hosts_files,
        global_known_hosts_files,
        pinned_host_key: None,
        hash_known_hosts: flag(opts, "hashknownhosts", false)?,
        batch_mode,
        password_authentication: flag(opts, "passwordauthentication", true)?,
        kbd_interactive_authentication: flag(opts, "kbdinteractiveauthentication", true)?,
        pubkey_authentication: flag(opts, "pubkeyauthentication", true)?,
        number_of_password_prompts: match first(opts, "numberofpasswordprompts") {
            Some(v) => parse_u32("NumberOfPasswordPrompts", &v)?,
            None => 3,
        },
        no_command: args.no_command || args.stdio.is_some(),
        background: args.background,
        command: args.command.clone(),
        session: super::session::resolve(args, opts)?,
        address_family: if args.ipv4 {
            AddressFamily::Inet
        } else if args.ipv6 {
            AddressFamily::Inet6
        } else {
            match first(opts, "addressfamily").as_deref() {
                Some("inet") => AddressFamily::Inet,
                Some("inet6") => AddressFamily::Inet6,
                _ => AddressFamily::Any,
            }
        },
        control: sharing::resolve(
            opts,
            args.control_command.as_deref().and_then(MuxCommand::parse),
            &expand,
        )?,
        stream_local: forwarding::stream_local(opts)?,
        permit_remote_open: forwarding::permit_remote_open(opts)?,
        proxy_protocol: match first(opts, "proxyprotocol") {
            None => None,
            Some(v) => ProxyProtocol::parse(&v).ok_or(OptionsError::Invalid {
                option: "ProxyProtocol",
                value: v,
                reason: "expected v1, v2 or none",
            })?,
        },
    })
}

/// A list-of-files option (UserKnownHostsFile, GlobalKnownHostsFile): tokens expanded, `none`
/// dropped, `default` when the option is absent.
fn file_list(
    opts: &HostOptions,
    key: &str,
    expand: &dyn Fn(&str) -> Result<String, ssh_config::ConfigError>,
    default: &[PathBuf],
) -> Result<Vec<PathBuf>, OptionsError> {
    match opts.get(key) {
        Some(files) => Ok(files
            .iter()
            .filter(|f| !f.eq_ignore_ascii_case("none"))
            .map(|f| expand(f).map(PathBuf::from))
            .collect::<Result<_, _>>()?),
        None => Ok(default.to_vec()),
    }
}

fn first(opts: &HostOptions, key: &str) -> Option<String> {
    opts.get(key).and_then(|a| a.first()).cloned()
}

fn opt_port(opts: &HostOptions) -> Result<Option<u16>, OptionsError> {
    first(opts, "port")
        .map(|p| parse_port("Port", &p))
        .transpose()
}

fn parse_port(option: &'static str, value: &str) -> Result<u16, OptionsError> {
    match value.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(OptionsError::Invalid {
            option,
            value: value.to_string(),
            reason: "not a port number (1-65535)",
        }),
    }
}

fn parse_u32(option: &'static str, value: &str) -> Result<u32, OptionsError> {
    value.trim().parse().map_err(|_| OptionsError::Invalid {
        option,
        value: value.to_string(),
        reason: "not a non-negative integer",
    })
}

/// A yes/no option (also true/false, as readconf.c accepts).
fn flag(opts: &HostOptions, key: &'static str, default: bool) -> Result<bool, OptionsError> {
    match first(opts, key) {
        None => Ok(default),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "yes" | "true" => Ok(true),
            "no" | "false" => Ok(false),
            _ => Err(OptionsError::Invalid {
                option: option_name(key),
                value: v,
                reason: "expected yes or no",
            }),
        },
    }
}

fn option_name(key: &'static str) -> &'static str {
    ssh_config::KNOWN_KEYS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(key))
        .copied()
        .unwrap_or(key)
}

fn parse_strict(v: &str) -> Result<StrictHostKeyChecking, OptionsError> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(StrictHostKeyChecking::Yes),
        "ask" => Ok(StrictHostKeyChecking::Ask),
        "accept-new" => Ok(StrictHostKeyChecking::AcceptNew),
        "no" | "off" | "false" => Ok(StrictHostKeyChecking::No),
        _ => Err(OptionsError::Invalid {
            option: "StrictHostKeyChecking",
            value: v.to_string(),
            reason: "expected yes, ask, accept-new or no",
        }),
    }
}

/// `Ciphers` as a comma list of names russh implements (no +/-/^ modifiers).
fn parse_ciphers(list: &str) -> Result<Vec<russh::cipher::Name>, OptionsError> {
    list.split(',')
        .map(|name| {
            russh::cipher::ALL_CIPHERS
                .iter()
                .find(|c| c.as_ref() == name.trim())
                .map(|c| **c)
                .ok_or_else(|| OptionsError::Invalid {
                    option: "Ciphers",
                    value: name.to_string(),
                    reason: "unknown or unsupported cipher",
                })
        })
        .collect()
}

/// Time values as in sshd_config(5) "TIME FORMATS": `90`, `90s`, `10m`, `1h30m`.
pub fn parse_time(option: &'static str, value: &str) -> Result<Duration, OptionsError> {
    ssh_config::parse_time(value.trim())
        .map(Duration::from_secs)
        .ok_or_else(|| OptionsError::Invalid {
            option,
            value: value.to_string(),
            reason: "not a time value (e.g. 30, 30s, 5m, 1h30m)",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_values() {
        for (s, secs) in [
            ("30", 30),
            ("30s", 30),
            ("5m", 300),
            ("1h30m", 5400),
            ("0", 0),
        ] {
            assert_eq!(
                parse_time("X", s).unwrap(),
                Duration::from_secs(secs),
                "{s}"
            );
        }
        for bad in ["", "abc", "5x", "m"] {
            assert!(parse_time("X", bad).is_err(), "{bad}");
        }
    }
}
