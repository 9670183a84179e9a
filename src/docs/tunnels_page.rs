//! burrow-tunnels.toml(5): the tunnels file read by `burrow up`, as `config::tunnels` parses
//! and validates it. Defaults come from that module's constants; a unit test checks that every
//! key the parser accepts is described here and nothing else is.

use std::time::Duration;

use super::format::{FormatPage, Key, KeyTable};
use crate::config::tunnels::{
    DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE_COUNT,
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_RESUME_GRACE,
};
use crate::supervisor::backoff::STABLE_AFTER;

/// The page.
pub(super) fn page() -> FormatPage {
    FormatPage {
        name: "burrow-tunnels.toml",
        summary: "tunnels that burrow up keeps up",
        synopsis: "/etc/burrow/tunnels.toml (burrow-up.service), /etc/burrow/NAME.toml \
                   (burrow-up@NAME.service), or any file given to burrow up",
        description: description(),
        tables: vec![
            KeyTable {
                heading: "TOP LEVEL",
                intro: "The file has two kinds of tables; any other key is an error that \
                        names its line."
                    .to_string(),
                keys: vec![
                    Key::bare("defaults", "table").help(
                        "[defaults]: settings every tunnel inherits (any key of SETTINGS below).",
                    ),
                    Key::bare("tunnel", "array of tables").help(
                        "[[tunnel]]: one entry per tunnel, in the order they start; at least \
                         one. Its keys are those of TUNNEL plus any of SETTINGS.",
                    ),
                ],
            },
            KeyTable {
                heading: "TUNNEL",
                intro: "What a [[tunnel]] connects to and forwards. Each tunnel is one SSH \
                        connection, like burrow ssh -N with these forwards; it needs at least \
                        one of local, remote and dynamic."
                    .to_string(),
                keys: tunnel_keys(),
            },
            KeyTable {
                heading: "SETTINGS",
                intro: "Allowed in [defaults] and in each [[tunnel]]; a tunnel's own value \
                        wins. Times are seconds (5) or OpenSSH time strings (\"30s\", \"5m\", \
                        \"1h30m\") of at least one second."
                    .to_string(),
                keys: setting_keys(),
            },
        ],
        sections: vec![
            ("PRECEDENCE", precedence()),
            ("WHAT BURROW UP ADDS", adds()),
            ("RELOADING", reloading()),
        ],
        example_source: "The example shipped as /etc/burrow/tunnels.toml (examples/tunnels.toml \
                         in the source; the test suite parses it):",
        example: include_str!("../../examples/tunnels.toml"),
        see_also: "burrow-up(1), burrow-status(1), burrow-ssh(1), burrow-serve.toml(5), \
                   ssh_config(5), systemd.service(5)",
    }
}

fn description() -> Vec<String> {
    vec![
        "A TOML file of tunnels: named SSH connections to relays (burrow serve or any sshd) \
         and the -L, -R and -D forwards each carries. burrow up connects every tunnel, notices \
         a dead link by keepalives, reconnects with backoff and reports each tunnel in burrow \
         status and its metrics."
            .to_string(),
        "The whole file is validated before anything starts. Every problem is reported at once, \
         one per line, naming the file, the line, the tunnel and the field, e.g. \
         \"tunnels.toml line 7: tunnel \"office\": remote[1]: ...\"."
            .to_string(),
    ]
}

fn tunnel_keys() -> Vec<Key> {
    vec![
        Key::bare("name", "\"text\"").help(
            "Shown in logs, burrow status and metrics; unique in the file. Without it the name \
             is derived from the first server and first forward, e.g. \
             \"b.example.com/R8087:localhost:22\" (R, L or D for remote, local, dynamic). No \
             leading or trailing spaces, no control characters.",
        ),
        Key::bare("server", "\"[user@]host[:port]\"").help(
            "The relay, also written ssh://[user@]host[:port]; an IPv6 address with a port is \
             written [addr]:port. Exactly one of server and servers.",
        ),
        Key::bare("servers", "[\"[user@]host[:port]\", ...]").help(
            "Several relays in order of preference. Every connection attempt tries them in \
             order, so the tunnel goes back to the first one at its next reconnect; an \
             unreachable relay (TCP or SSH handshake failure) moves on to the next, a refusal \
             (authentication, host key) does not. Not empty.",
        ),
        Key::new("local", "[\"spec\", ...]", "[]").help(
            "Local forwards, as ssh -L: [bind_address:]port:host:hostport, \
             [bind_address:]port:remote_socket, local_socket:host:hostport or \
             local_socket:remote_socket. Port 0 picks a free port. No two forwards of the file \
             may listen on the same local address.",
        ),
        Key::new(
            "remote",
            "[\"spec\" | { forward = \"spec\", ... }, ...]",
            "[]",
        )
        .help(
            "Remote forwards, as ssh -R: [bind_address:]port:host:hostport or \
             remote_socket:host:hostport. Port 0 lets the relay choose a port, which is logged \
             as \"Allocated port N for remote forward to host:port\". A target is required \
             (reverse dynamic forwarding is not supported yet). An entry may be a table with \
             settings of that forward alone: { forward = \"8080:localhost:80\", \
             proxy_protocol = \"v2\" } (proxy_protocol is the only one so far; it wins over the \
             tunnel's).",
        ),
        Key::new("dynamic", "[\"[bind_address:]port\", ...]", "[]")
            .help("SOCKS4/4a/5 proxies, as ssh -D, whose connections leave from the relay."),
    ]
}

fn setting_keys() -> Vec<Key> {
    vec![
        Key::bare("user", "\"login\"").help(
            "Login on the relays when server has no user@. Absent: ssh_config's User, else the \
             local user name.",
        ),
        Key::bare("identity", "\"path\" | [\"path\", ...]").help(
            "Private key files. Absent or empty: ssh_config's IdentityFile, the agent and the \
             default keys, as ssh does. ~ is $HOME (~user is refused); relative paths are \
             relative to the tunnels file.",
        ),
        Key::bare("known_hosts", "\"path\"").help(
            "The known_hosts file to check relays against (and record them in, with \
             accept-new). Absent: ssh_config's UserKnownHostsFile, else ~/.ssh/known_hosts. \
             \"${\" is refused.",
        ),
        Key::new("host_key_checking", "\"yes\" | \"accept-new\"", "\"yes\"").help(
            "yes: the relay's key must already be known. accept-new: record a relay's key on \
             first contact; a changed key still fails. \"no\" and \"ask\" are refused: a \
             tunnel runs unattended, so it can neither ask nor trust any key.",
        ),
        Key::new(
            "keepalive_interval",
            "time",
            secs(DEFAULT_KEEPALIVE_INTERVAL),
        )
        .help("Seconds between keepalives when the relay is silent (ssh's ServerAliveInterval)."),
        Key::new(
            "keepalive_count",
            "integer",
            DEFAULT_KEEPALIVE_COUNT.to_string(),
        )
        .help(format!(
            "Unanswered keepalives before the link is declared dead (ServerAliveCountMax), at \
             least 1. As with ssh a dead link is noticed (count + 1) x interval after the last \
             sign of life: {} s with the defaults.",
            (u64::from(DEFAULT_KEEPALIVE_COUNT) + 1) * DEFAULT_KEEPALIVE_INTERVAL.as_secs()
        )),
        Key::new("connect_timeout", "time", secs(DEFAULT_CONNECT_TIMEOUT))
            .help("TCP connect timeout per address (ConnectTimeout)."),
        Key::new("compression", "true | false", "false").help("Compress the connection (ssh -C)."),
        Key::new("backoff_initial", "time", secs(DEFAULT_BACKOFF_INITIAL)).help(
            "First pause after a failed or dropped connection. Pauses double up to \
             backoff_max, each scaled by a random factor between 0.5 and 1 so tunnels cut by \
             one outage do not reconnect in lockstep.",
        ),
        Key::new("backoff_max", "time", secs(DEFAULT_BACKOFF_MAX)).help(format!(
            "Longest pause; at least backoff_initial. A connection that stayed up {} s starts \
             the next series from backoff_initial again. Authentication and host key failures \
             also wait the full pause, never a hot loop.",
            STABLE_AFTER.as_secs()
        )),
        Key::new("exit_after_failures", "integer", "0").help(
            "0: retry forever. N: burrow up exits non-zero after N failed attempts in a row of \
             one tunnel, to let systemd restart it or alert.",
        ),
        Key::new("resume", "true | false", "true").help(
            "Resumable streams with a burrow serve relay: forwarded connections survive a \
             reconnect (each end keeps its TCP connection and replays what the other missed). \
             A standard sshd declines and nothing changes.",
        ),
        Key::new("resume_grace", "time", secs(DEFAULT_RESUME_GRACE)).help(
            "How long a stream waits for the tunnel to come back before its connections are \
             closed (cleanly).",
        ),
        Key::bare("ssh_config", "\"path\" | \"none\"").help(
            "The ssh_config file, as ssh -F. Absent: ~/.ssh/config and /etc/ssh/ssh_config; \
             \"none\": no file.",
        ),
        Key::bare("jump", "\"[user@]host[:port][,...]\" | \"none\"")
            .help("Jump hosts, as ssh -J; \"none\" overrides a ProxyJump in ssh_config."),
        Key::new("proxy_protocol", "\"v1\" | \"v2\" | \"none\"", "\"none\"").help(
            "Start every connection of the tunnel's remote forwards to its target with a PROXY \
             protocol header (v1 text, v2 binary) carrying the visitor's address as the relay \
             reports it, for a service that reads one (nginx listen ... proxy_protocol, HAProxy \
             accept-proxy). A remote entry's own proxy_protocol wins over this; this wins over \
             ProxyProtocol in options or ssh_config, which otherwise applies (burrow ssh -o \
             ProxyProtocol). Remote forwards from an ssh_config Host block take this value too.",
        ),
        Key::new("options", "[\"Key=value\", ...]", "[]").help(
            "More ssh_config options, as ssh -o (e.g. \"Ciphers=aes128-gcm@openssh.com\"). \
             Unknown keys are refused, and so are those the tunnel sets itself, each with the \
             key to use instead: Port, HostName, User, IdentityFile, ProxyJump, ProxyCommand, \
             LocalForward, RemoteForward, DynamicForward, ClearAllForwardings, \
             ServerAliveInterval, ServerAliveCountMax, ConnectTimeout, StrictHostKeyChecking, \
             UserKnownHostsFile, Compression, BatchMode, ExitOnForwardFailure.",
        ),
    ]
}

fn precedence() -> Vec<String> {
    vec![
        "Highest first: the tunnel's own keys (user@ in server before user), then [defaults], \
         then ssh_config for what neither sets (Host and Match blocks apply as for ssh), then \
         the defaults above. A list (identity, options) set in a tunnel replaces the one in \
         [defaults]."
            .to_string(),
    ]
}

fn adds() -> Vec<String> {
    vec![
        "Each tunnel runs as burrow ssh -N with its keys as flags, resolved once when the \
         tunnel starts (ssh_config is read then), plus, as typed values that win over \
         ssh_config like ssh -o would: BatchMode=yes (nobody is there to type a password), \
         ExitOnForwardFailure=yes (a forward that cannot be set up fails the attempt and is \
         retried), ServerAliveInterval, ServerAliveCountMax, ConnectTimeout, \
         StrictHostKeyChecking, UserKnownHostsFile and ProxyProtocol from the settings, and \
         Compression=no unless compression is true. Forwards that a matching Host block adds \
         (LocalForward, RemoteForward, DynamicForward) are set up too, and burrow status and \
         the metrics list each forward under its own spec."
            .to_string(),
    ]
}

fn reloading() -> Vec<String> {
    vec![
        "SIGHUP, or saving the file, makes burrow up read it again. Tunnels whose settings did \
         not change keep their connections; changed ones restart alone; removed ones stop. A \
         file that does not validate is reported and the running tunnels are kept."
            .to_string(),
    ]
}

/// `3s`: the way the example file writes times.
fn secs(d: Duration) -> String {
    format!("\"{}s\"", d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::fields::sorted;

    /// The page describes exactly the keys the parser accepts, table by table.
    #[test]
    fn every_parser_key_is_documented() {
        let page = page();
        let [top, settings, tunnel] = crate::config::tunnels::accepted_keys();
        assert_eq!(page.documented_keys("TOP LEVEL"), sorted(top));
        assert_eq!(page.documented_keys("SETTINGS"), sorted(settings));
        let tunnel_only: Vec<&str> = tunnel
            .iter()
            .copied()
            .filter(|k| !settings.contains(k))
            .collect();
        assert_eq!(page.documented_keys("TUNNEL"), sorted(&tunnel_only));
    }
}
