//! `burrow ssh -G`: the effective configuration in `ssh -G`'s format — lower-case keys, one
//! `key value` line each, in the order readconf.c's `dump_client_config` prints them — for the
//! keys burrow interprets. Keys burrow ignores are left out rather than printed with values
//! burrow would not act on. The values are what burrow will use (e.g. its own cipher list).

use std::fmt::Write as _;

use super::options::{AddressFamily, ClientOptions, StrictHostKeyChecking, DEFAULT_IDENTITIES};
use super::ssh_config::HostOptions;
use crate::cli::SshArgs;
use crate::spec::{DynamicForward, Endpoint, Listen, LocalForward, RemoteForward};

/// Renders the configuration; `raw` are the merged options as written (IdentityFile and
/// GlobalKnownHostsFile are printed unexpanded, as ssh does).
pub fn render(opts: &ClientOptions, raw: &HostOptions, args: &SshArgs) -> String {
    let mut out = Lines::default();
    out.line("host", &opts.host_alias);
    out.line("user", &opts.user);
    out.line("hostname", &opts.hostname);
    out.line("port", opts.port);
    out.line("addressfamily", address_family(opts.address_family));
    out.yes_no("batchmode", opts.batch_mode);
    out.yes_no("compression", opts.compression);
    out.line("controlmaster", opts.control.master.dump_name());
    out.yes_no("clearallforwardings", clear_all(raw));
    out.yes_no("exitonforwardfailure", opts.exit_on_forward_failure);
    out.yes_no("gatewayports", opts.gateway_ports);
    out.yes_no("hashknownhosts", opts.hash_known_hosts);
    out.yes_no("identitiesonly", opts.identities_only);
    out.yes_no(
        "kbdinteractiveauthentication",
        opts.kbd_interactive_authentication,
    );
    out.yes_no("passwordauthentication", opts.password_authentication);
    out.line("pubkeyauthentication", opts.pubkey_authentication);
    let session = if opts.no_command { "none" } else { "default" };
    out.line("sessiontype", session);
    out.yes_no("forkafterauthentication", opts.background);
    out.yes_no("streamlocalbindunlink", opts.stream_local.unlink);
    out.line(
        "stricthostkeychecking",
        strict(opts.strict_host_key_checking),
    );
    out.line("numberofpasswordprompts", opts.number_of_password_prompts);
    out.line("serveralivecountmax", opts.server_alive_count_max);
    let alive = opts.server_alive_interval.map_or(0, |d| d.as_secs());
    out.line("serveraliveinterval", alive);
    out.line("ciphers", ciphers(opts));
    if let Some(path) = &opts.control.path {
        out.line("controlpath", path.display());
    }
    if raw.first("identityagent").is_some() {
        let agent = opts
            .identity_agent
            .as_ref()
            .map(|p| p.display().to_string());
        out.line("identityagent", agent.as_deref().unwrap_or("none"));
    }
    forwards(&mut out, opts);
    for file in identity_files(raw, args) {
        out.line("identityfile", file);
    }
    global_known_hosts(&mut out, raw);
    let user_files: Vec<String> = opts
        .user_known_hosts_files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    if !user_files.is_empty() {
        out.line("userknownhostsfile", user_files.join(" "));
    }
    out.line("permitremoteopen", opts.permit_remote_open.dump_value());
    match opts.connect_timeout {
        None => out.line("connecttimeout", "none"),
        Some(d) => out.line("connecttimeout", d.as_secs()),
    }
    out.line("controlpersist", opts.control.persist.dump_value());
    out.line(
        "streamlocalbindmask",
        format!("0{:o}", opts.stream_local.mask),
    );
    if !opts.proxy_jump.is_empty() {
        out.line("proxyjump", proxy_jump(opts));
    }
    // A burrow extension ssh(1) has no line for: printed only when set, so -G matches ssh's
    // output otherwise.
    if let Some(version) = opts.proxy_protocol {
        out.line("proxyprotocol", version.name());
    }
    out.0
}

/// The output, one `key value` line at a time.
#[derive(Default)]
struct Lines(String);

impl Lines {
    fn line(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{key} {value}");
    }

    fn yes_no(&mut self, key: &str, value: bool) {
        self.line(key, if value { "yes" } else { "no" });
    }
}

fn address_family(af: AddressFamily) -> &'static str {
    match af {
        AddressFamily::Any => "any",
        AddressFamily::Inet => "inet",
        AddressFamily::Inet6 => "inet6",
    }
}

/// readconf.c's first name for each value: `true` for yes, `false` for no.
fn strict(s: StrictHostKeyChecking) -> &'static str {
    match s {
        StrictHostKeyChecking::Yes => "true",
        StrictHostKeyChecking::No => "false",
        StrictHostKeyChecking::Ask => "ask",
        StrictHostKeyChecking::AcceptNew => "accept-new",
    }
}

fn clear_all(raw: &HostOptions) -> bool {
    raw.first("clearallforwardings")
        .is_some_and(|v| v.eq_ignore_ascii_case("yes") || v.eq_ignore_ascii_case("true"))
}

fn ciphers(opts: &ClientOptions) -> String {
    let names: Vec<&str> = match &opts.ciphers {
        Some(list) => list.iter().map(|c| c.as_ref()).collect(),
        None => crate::transport::CIPHERS
            .iter()
            .map(|c| c.as_ref())
            .collect(),
    };
    names.join(",")
}

/// `-i` files, then IdentityFile lines as written, or burrow's defaults (as `~/...`).
fn identity_files(raw: &HostOptions, args: &SshArgs) -> Vec<String> {
    let mut files: Vec<String> = args
        .identity
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    files.extend(
        raw.get_all("identityfile")
            .into_iter()
            .filter_map(|a| a.first().cloned()),
    );
    if files.is_empty() {
        files = DEFAULT_IDENTITIES
            .iter()
            .map(|f| format!("~/{f}"))
            .collect();
    }
    files
}

/// GlobalKnownHostsFile as written (ssh does not expand it); nothing for `none`.
fn global_known_hosts(out: &mut Lines, raw: &HostOptions) {
    let files = match raw.get("globalknownhostsfile") {
        Some(f) => f.to_vec(),
        None => vec![
            "/etc/ssh/ssh_known_hosts".into(),
            "/etc/ssh/ssh_known_hosts2".into(),
        ],
    };
    if files
        .first()
        .is_some_and(|f| f.eq_ignore_ascii_case("none"))
    {
        return;
    }
    out.line("globalknownhostsfile", files.join(" "));
}

/// dump_cfg_forwards: dynamic, then local, then remote; listen as `port`, `[bind]:port` or a
/// path, target as `[host]:port` or a path; a reverse dynamic forward's target is `[socks]:0`.
fn forwards(out: &mut Lines, opts: &ClientOptions) {
    for DynamicForward { listen } in &opts.dynamic_forwards {
        out.line("dynamicforward", listen_text(listen));
    }
    for LocalForward { listen, target } in &opts.local_forwards {
        let text = format!("{} {}", listen_text(listen), target_text(target));
        out.line("localforward", text);
    }
    for RemoteForward { listen, target } in &opts.remote_forwards {
        let target = target.as_ref().map_or("[socks]:0".into(), target_text);
        out.line("remoteforward", format!("{} {target}", listen_text(listen)));
    }
}

fn listen_text(listen: &Listen) -> String {
    match listen {
        Listen::Tcp { bind: None, port } => port.to_string(),
        Listen::Tcp {
            bind: Some(b),
            port,
        } => format!("[{b}]:{port}"),
        Listen::Unix(path) => path.display().to_string(),
    }
}

fn target_text(target: &Endpoint) -> String {
    match target {
        Endpoint::Tcp { host, port } => format!("[{host}]:{port}"),
        Endpoint::Unix(path) => path.display().to_string(),
    }
}

/// `proxyjump` as readconf.c rebuilds it for one hop: `[user@]host[:port]`, with brackets
/// around numeric hosts. (For longer chains OpenSSH prints the earlier hops as written; burrow
/// prints each hop this way.)
fn proxy_jump(opts: &ClientOptions) -> String {
    let hops: Vec<String> = opts
        .proxy_jump
        .iter()
        .map(|hop| {
            let numeric =
                hop.host.contains(':') || hop.host.chars().all(|c| c.is_ascii_digit() || c == '.');
            let host = if numeric {
                format!("[{}]", hop.host)
            } else {
                hop.host.clone()
            };
            let user = hop.user.as_ref().map_or(String::new(), |u| format!("{u}@"));
            let port = hop.port.map_or(String::new(), |p| format!(":{p}"));
            format!("{user}{host}{port}")
        })
        .collect();
    hops.join(",")
}
