//! burrow-serve.toml(5): the relay's configuration file, as `server::config` parses it. The
//! limits' defaults come from `Limits::default()`; unit tests check that every key the parser
//! accepts is described and that the other stated defaults are the ones it applies.

use std::time::Duration;

use super::format::{FormatPage, Key, KeyTable};
use crate::server::config::Limits;

/// `listen` when neither the file nor --listen sets it.
const DEFAULT_LISTEN: &str = "0.0.0.0:2222";

/// The page.
pub(super) fn page() -> FormatPage {
    FormatPage {
        name: "burrow-serve.toml",
        summary: "settings of the burrow serve relay",
        synopsis: "/etc/burrow/serve.toml (burrow-serve.service), or any file given to burrow \
                   serve --config",
        description: vec![
            "burrow serve is a forwarding-only SSH relay: clients (burrow ssh, burrow up, any \
             ssh) authenticate with a key from authorized_keys and may open -L, -D and -W \
             connections (direct-tcpip) and -R listeners (tcpip-forward); shell, exec and \
             subsystem requests are refused. This TOML file holds its settings; every key is \
             optional, and the flags --listen, --host-key, --authorized-keys and \
             --gateway-ports override the keys of the same name."
                .to_string(),
            "The file is read once at start. A malformed file, a value of the wrong type or an \
             unknown key stops the relay with a message naming the file, line and key."
                .to_string(),
        ],
        tables: vec![
            KeyTable {
                heading: "TOP LEVEL",
                intro: "Where the relay listens, its key files and its forwarding policy, with \
                        the meaning of the sshd_config(5) option of the same name."
                    .to_string(),
                keys: top_keys(),
            },
            KeyTable {
                heading: "[LIMITS]",
                intro: "Resource limits, in the [limits] table.".to_string(),
                keys: limit_keys(&Limits::default()),
            },
        ],
        sections: vec![
            ("AUTHORIZED KEYS", authorized_keys()),
            ("ACCESS LOG", access_log()),
            ("SIGNALS", signals()),
        ],
        example_source: "The example shipped as /etc/burrow/serve.toml (examples/serve.toml in \
                         the source; the test suite parses it):",
        example: include_str!("../../examples/serve.toml"),
        see_also: "burrow-serve(1), burrow-tunnels.toml(5), sshd_config(5), sshd(8)",
    }
}

fn top_keys() -> Vec<Key> {
    vec![
        Key::new(
            "listen",
            "\"address:port\"",
            format!("\"{DEFAULT_LISTEN}\""),
        )
        .help("Address and port to accept SSH connections on; [v6addr]:port for IPv6."),
        Key::bare("host_key", "\"path\"").help(
            "The relay's ed25519 host key, generated with mode 0600 on first start (a missing \
             directory is created with mode 0700); its fingerprint is logged. A key group or \
             others may access is refused, as sshd refuses an UNPROTECTED PRIVATE KEY FILE. \
             Absent: host_ed25519_key in the state directory, /var/lib/burrow as root, else \
             $XDG_STATE_HOME/burrow or ~/.local/state/burrow.",
        ),
        Key::bare("authorized_keys", "\"path\"").help(
            "The keys allowed in, in OpenSSH's authorized_keys format (see AUTHORIZED KEYS). \
             Absent: authorized_keys in the state directory.",
        ),
        Key::new("strict_modes", "true | false", "true").help(
            "As sshd's StrictModes: authorized_keys and every directory above it, up to the \
             relay user's home directory or /, must be owned by root or the relay's user and \
             not be writable by group or others, or the relay does not start (a reload keeps \
             the previous keys); the message names the path, its owner and mode. A directory \
             such as /tmp (mode 1777) fails too, as with sshd. false turns the check off for \
             odd setups. The host key is always refused when group or others may read it.",
        ),
        Key::new(
            "gateway_ports",
            "\"no\" | \"yes\" | \"clientspecified\"",
            "\"no\"",
        )
        .help(
            "Where -R listeners bind, as sshd's GatewayPorts: no: loopback only, whatever the \
             client asked; yes: all interfaces; clientspecified: the client's bind address \
             (\"\" or \"*\" all, \"localhost\" loopback).",
        ),
        Key::new(
            "allow_tcp_forwarding",
            "\"yes\" | \"no\" | \"local\" | \"remote\"",
            "\"yes\"",
        )
        .help(
            "As sshd's AllowTcpForwarding: local allows -L, -D and -W only, remote allows -R \
             only (\"all\" means yes).",
        ),
        Key::new(
            "permit_open",
            "[\"host:port\", ...] | [\"any\"] | [\"none\"]",
            "unset",
        )
        .help(
            "Server-wide PermitOpen: where -L, -D and -W connections may go. Unset, they reach \
             only listeners published through this relay with -R (a key's permitopen= opens \
             more). \"any\" or \"none\" stand alone; entries are host:port, \"*\" matches any \
             host or port, [v6addr]:port for IPv6; published listeners stay reachable. A key's \
             permitopen= narrows it further. The relay's own SSH and metrics addresses are \
             reachable only when an entry names them.",
        ),
        Key::new(
            "permit_listen",
            "[\"[host:]port\", ...] | [\"any\"] | [\"none\"]",
            "[\"any\"]",
        )
        .help(
            "Server-wide PermitListen: which -R listeners may be opened; a bare port means any \
             address; \"any\" or \"none\" stand alone. A key's permitlisten= option narrows it \
             further.",
        ),
        Key::new("aliases", "true | false", "true").help(
            "Private services by name. On, a -R bind address that is a one-label name other \
             than localhost (letters, digits and '-', at least one letter: ssh -R \
             a-ssh:22:localhost:22) publishes an alias: no socket is bound, and a -L, -J or -W \
             to a-ssh:22 through this relay is carried to the publisher. An alias is private: \
             only keys whose permitopen= names it (a-ssh:22 or a-ssh:*), or every key when a \
             permit_open entry here names it, may connect; \"*\" hosts and \"any\" grant no \
             alias. A name belongs to the key that published it first; a publisher whose line \
             has permitlisten= needs an entry whose host matches the name. With aliases on, a \
             one-label name is never resolved or bound by the relay: reach hosts of the \
             relay's network by address or by a name with a dot. false restores sshd's \
             resolve-and-bind for names.",
        ),
        Key::bare("metrics", "\"addr:port\"").help(
            "Serve Prometheus metrics (/metrics), a JSON status API (/api/status) and a live \
             status page (/) on this address, as --metrics. Off when absent.",
        ),
        Key::bare("metrics_token_file", "\"path\"").help(
            "A file holding a bearer token (at least 16 characters) that every request to the \
             metrics address must present; required for a non-loopback address.",
        ),
        Key::bare("access_log", "\"path\"").help(
            "Write the access log (see ACCESS LOG) to this file, appending; it is created with \
             mode 0640 and reopened on SIGHUP, so logrotate can move it away. Absent: the lines \
             go to stderr (the journal under systemd).",
        ),
        Key::bare("limits", "table").help("The [limits] table below."),
    ]
}

fn limit_keys(d: &Limits) -> Vec<Key> {
    vec![
        Key::new("max_auth_tries", "integer", d.max_auth_tries.to_string())
            .help("Authentication attempts per connection (at least 1)."),
        Key::new("login_grace_time_secs", "seconds", secs(d.login_grace_time))
            .help("A connection that has not authenticated by then is closed."),
        Key::new("max_startups", "integer", d.max_startups.to_string())
            .help("Unauthenticated connections at once (at least 1); more are refused at once."),
        Key::new(
            "max_listeners_per_key",
            "integer",
            d.max_listeners_per_key.to_string(),
        )
        .help("-R listeners one key may hold across all its sessions."),
        Key::new(
            "max_channels_per_key",
            "integer",
            d.max_channels_per_key.to_string(),
        )
        .help("Forwarded connections one key may have open across all its sessions."),
        Key::new(
            "max_sessions_per_key",
            "integer",
            d.max_sessions_per_key.to_string(),
        )
        .help(
            "Authenticated connections one key may have at once; a login past it is refused. \
             Each session costs the relay memory whether it forwards or not.",
        ),
        Key::new("takeover_probe_secs", "seconds", secs(d.takeover_probe)).help(
            "When a key asks for a port still held by an earlier session of the same key, that \
             session gets a keepalive; if it does not answer within this time it is closed and \
             the port handed over. A live holder keeps its port.",
        ),
        Key::new(
            "keepalive_interval_secs",
            "seconds",
            d.keepalive_interval.map_or("0".to_string(), secs),
        )
        .help(
            "Seconds between the relay's keepalives: to a silent client (ending a dead session) \
             and on every session (a holder that missed one loses its port to the same key at \
             once, see takeover_probe_secs); 0 turns both off.",
        ),
        Key::new(
            "keepalive_count_max",
            "integer",
            d.keepalive_count_max.to_string(),
        )
        .help("Unanswered keepalives before a session is dropped."),
        Key::new("resume_grace_secs", "seconds", secs(d.resume.grace)).help(
            "Resumable streams (burrow up clients only): how long a stream whose client went \
             away keeps its outside connection open, waiting for the same key to re-attach it.",
        ),
        Key::new(
            "resume_buffer_kib",
            "KiB",
            (d.resume.buffer / 1024).to_string(),
        )
        .help(
            "Resumable streams: unacknowledged bytes kept per stream and direction for replay, at \
             first; a full buffer stops reading from the connection (backpressure). A buffer \
             that limits its stream while acknowledgements keep coming (a long round trip) \
             doubles, up to 32 MiB, each growth reserved from the budgets below first; where \
             they have no room it keeps its size.",
        ),
        Key::new(
            "resume_budget_per_key_mib",
            "MiB",
            (d.resume_budget.per_key >> 20).to_string(),
        )
        .help(
            "Resumable streams: replay buffer memory one key's streams may reserve together, \
             across its sessions. Each stream reserves its whole buffer (resume_buffer_kib) when \
             it opens, and each growth of it; a stream that does not fit is carried unresumable: \
             it works as usual but ends if its connection to the relay is lost. At least one \
             buffer, or 0 (no stream resumable).",
        ),
        Key::new("resume_budget_total_mib", "MiB", "an eighth of memory").help(
            "Resumable streams: the same over every key. The default is an eighth of MemTotal in \
             /proc/meminfo, or of the cgroup's memory.max when that is smaller, or 512 where \
             neither can be read.",
        ),
        Key::new(
            "window_growth_per_key_mib",
            "MiB",
            (d.window_growth.per_key >> 20).to_string(),
        )
        .help(
            "Memory one key's grown channel windows may add together, across its sessions. A \
             forward's receive window starts at 2 MiB and doubles, up to 16 MiB, while a long \
             round trip makes it what limits the transfer; a window is what a client can make \
             the relay queue for a connection whose other end stops reading. Each doubling \
             takes its bytes from this budget and the one below first; where they have no room \
             the window keeps its size (the transfer goes on, slower on a long link), and what \
             a channel took comes back when it has closed and the relay no longer holds its \
             data. At least 2 MiB (one doubling), or 0 (every window stays at 2 MiB).",
        ),
        Key::new("window_growth_total_mib", "MiB", "an eighth of memory").help(
            "Grown channel windows: the same over every key, with the same default as \
             resume_budget_total_mib (a separate budget).",
        ),
        Key::new(
            "auth_free_failures",
            "integer",
            d.penalty.free_failures.to_string(),
        )
        .help(
            "Failed authentications one source address (IPv6: its /64) may have before the \
             relay delays its failure replies; an agent offering several keys fails a few times \
             legitimately. Failures are logged with the source address.",
        ),
        Key::new("auth_max_delay_secs", "seconds", secs(d.penalty.max_delay)).help(
            "Past the allowance each failure reply waits 1 s, 2 s, 4 s, ... up to this; a source \
             with no failure for 15 minutes starts over, and a successful login forgives it.",
        ),
    ]
}

fn authorized_keys() -> Vec<String> {
    vec![
        "One key per line, in OpenSSH's format: [options] type base64 [comment]. Supported \
         options: restrict, port-forwarding, no-port-forwarding, permitopen=\"host:port\" (or \
         permitopen=\"none\": no -L, -D or -W at all), \
         permitlisten=\"[host:]port\", from=\"pattern-list\", expiry-time=\"YYYYMMDD[HHMM[SS]][Z]\" \
         (the relay's local time, from TZ or /etc/localtime, as sshd reads it; Z or UTC at the \
         end means UTC; the zone is read at start and on SIGHUP). \
         Options for what the relay never offers (pty, agent-forwarding, x11-forwarding, \
         user-rc and their no- forms, command=, environment=, tunnel=) are accepted and change \
         nothing; cert-authority and principals are refused. FIDO keys (sk-ssh-ed25519, \
         sk-ecdsa-sha2-nistp256) need a signature made with a touch of the key unless the line \
         has no-touch-required, and one the key verified the user for (PIN) with \
         verify-required, as in sshd. \
         burrow's own: burrow-privileged-ports (may listen below port 1024), \
         burrow-max-listeners=\"N\" and burrow-max-channels=\"N\" (lower the limits for this \
         key). An unknown or unsupported option stops the load with the file and line."
            .to_string(),
        "For example, to let a key publish only port 8086 and open nothing else:".to_string(),
        "  restrict,port-forwarding,permitlisten=\"8086\",permitopen=\"none\" ssh-ed25519 AAAA... \
         tunnel-from-A"
            .to_string(),
        "Or to let A publish its sshd only as the private alias a-ssh (no port on the relay), \
         and C reach that alias and nothing else (see aliases above):"
            .to_string(),
        "  restrict,port-forwarding,permitlisten=\"a-ssh:22\",permitopen=\"none\" ssh-ed25519 \
         AAAA... tunnel-from-A"
            .to_string(),
        "  restrict,port-forwarding,permitopen=\"a-ssh:22\",permitlisten=\"none\" ssh-ed25519 \
         AAAA... c-laptop"
            .to_string(),
    ]
}

fn access_log() -> Vec<String> {
    vec![
        "One line per forwarded connection when it closes, and one per forward request the \
         relay refused: a UTC timestamp, burrow-access:, the event (close or refused), then \
         key=value fields in a fixed order: from= and port= (who opened the connection: the \
         visitor of a -R listener, the SSH client for -L, -W, -D and refusals), kind= \
         (forwarded, direct-tcpip, tcpip-forward, session, auth), session=, key= (the key's SHA256 \
         fingerprint), comment=, listener= (the -R listener or alias), to= (the destination; \
         for -R the publishing client), up= and down= (bytes from the opener and back), secs= \
         and end= (closed, error:TEXT, session-ended, shutdown, aborted, publisher-refused, \
         connect-failed, channel-cap, gate-refused); a refusal has to= and reason= instead. A refused login \
         is a refused line with kind=auth, key= (the fingerprint offered) and reason=; an agent \
         offering several keys leaves one per key it tries, so the filter below leaves them \
         out."
            .to_string(),
        "Text a peer chose (key comments, host names, bind addresses) comes after from=, in \
         double quotes, with the characters \" \\ = , control characters and non-ASCII bytes \
         written as \\xNN, and cut after 512 bytes (to=\"...\"+N: N bytes left out): it can \
         neither start a new line nor spell from=. A session's first 100 refusals are \
         logged; later ones are counted, announced once and summed up when the session ends. \
         A fail2ban filter for refused requests (the test suite runs it through \
         fail2ban-regex):"
            .to_string(),
        "  [Definition]\n\
         failregex = burrow-access: refused from=<HOST> port=\\d+ \
         kind=(?:direct-tcpip|tcpip-forward)\\b\n\
         ignoreregex =\n\
         journalmatch = _SYSTEMD_UNIT=burrow-serve.service"
            .to_string(),
    ]
}

fn signals() -> Vec<String> {
    vec![
        "SIGHUP reloads authorized_keys and reopens the access_log file; live sessions keep \
         going, and a file that fails to load leaves the previous keys in force. SIGTERM and \
         SIGINT stop accepting, close the listeners and give open transfers 5 seconds. Changes to this file take effect at the \
         next start."
            .to_string(),
    ]
}

fn secs(d: Duration) -> String {
    d.as_secs().to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::docs::fields::{sorted, struct_fields};
    use crate::server::config::{LimitsFile, ServeConfig, ServeFile, ServeOverrides};

    fn documented(heading: &str) -> Vec<&'static str> {
        page().documented_keys(heading)
    }

    /// The page describes exactly the keys the parser accepts.
    #[test]
    fn every_parser_key_is_documented() {
        assert_eq!(
            documented("TOP LEVEL"),
            sorted(struct_fields::<ServeFile>())
        );
        assert_eq!(
            documented("[LIMITS]"),
            sorted(struct_fields::<LimitsFile>())
        );
    }

    /// The defaults the page states are the ones an empty file gets.
    #[test]
    fn stated_defaults_are_applied() {
        let c =
            ServeConfig::from_parts(ServeFile::default(), &ServeOverrides::default(), "-").unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        let page = page();
        let default_of = |name: &str| {
            page.tables
                .iter()
                .flat_map(|t| &t.keys)
                .find(|k| k.name == name)
                .and_then(|k| k.default.clone())
                .unwrap()
        };
        let file = |text: &str| crate::server::config::parse_file(text, Path::new("x")).unwrap();
        let per_key: u64 = default_of("resume_budget_per_key_mib").parse().unwrap();
        assert_eq!(c.limits.resume_budget.per_key, per_key << 20);
        let growth: u64 = default_of("window_growth_per_key_mib").parse().unwrap();
        assert_eq!(c.limits.window_growth.per_key, growth << 20);
        for key in ["gateway_ports", "allow_tcp_forwarding"] {
            let explicit = file(&format!("{key} = {}\n", default_of(key)));
            let explicit = ServeConfig::from_parts(explicit, &ServeOverrides::default(), "-");
            assert_eq!(
                format!("{:?}", explicit.unwrap().policy),
                format!("{:?}", c.policy),
                "{key}"
            );
        }
    }
}
