//! Tests of the tunnels file parser. Each test carries its own small TOML file, so many look
//! alike (same keys, other values): fixtures side by side on purpose, not repeated logic.

use super::*;

const HOME: &str = "/home/u";

fn parse_text(text: &str) -> Result<TunnelsFile, TunnelsError> {
    parse_with_home(text, Path::new("tunnels.toml"), Path::new(HOME))
}

fn one(text: &str) -> TunnelSpec {
    match parse_text(text) {
        Ok(mut file) if file.tunnels.len() == 1 => file.tunnels.remove(0),
        other => panic!("expected one tunnel from {text:?}, got {other:?}"),
    }
}

/// The validation problems of `text`, as displayed.
fn problems(text: &str) -> Vec<String> {
    match parse_text(text) {
        Err(TunnelsError::Invalid { problems }) => problems.iter().map(|p| p.to_string()).collect(),
        other => panic!("expected validation problems from {text:?}, got {other:?}"),
    }
}

/// A tunnel that is valid apart from what `extra` adds.
fn tunnel(extra: &str) -> String {
    format!("[[tunnel]]\nserver = \"b\"\nremote = [\"8087:localhost:22\"]\n{extra}")
}

#[test]
fn seed_entry_is_three_lines() {
    let t = one("[[tunnel]]\nserver = \"user@B\"\nremote = [\"8087:localhost:22\"]\n");
    assert_eq!(t.name, "B/R8087:localhost:22");
    assert_eq!(
        t.servers,
        vec![ServerAddr {
            user: Some("user".into()),
            host: "B".into(),
            port: None
        }]
    );
    assert_eq!(remote_specs(&t), vec!["8087:localhost:22"]);
    assert_eq!(t.host_key_checking, HostKeyChecking::Yes);
    assert_eq!(t.keepalive_interval, DEFAULT_KEEPALIVE_INTERVAL);
    assert_eq!(t.keepalive_count, DEFAULT_KEEPALIVE_COUNT);
    assert_eq!(t.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(
        (t.backoff_initial, t.backoff_max),
        (DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX)
    );
    assert_eq!((t.exit_after_failures, t.compression), (0, false));
    assert!(t.identity.is_empty() && t.user.is_none() && t.jump.is_none());
    assert_eq!((&t.known_hosts, &t.ssh_config), (&None, &None));
}

#[test]
fn defaults_are_inherited_and_overridden() {
    let text = r#"
[defaults]
user = "tunnel"
identity = "~/.ssh/id_ed25519"
known_hosts = "keys/known_hosts"
host_key_checking = "accept-new"
keepalive_interval = "10s"
keepalive_count = 5
connect_timeout = 20
compression = true
backoff_initial = "2s"
backoff_max = "2m"
exit_after_failures = 7
ssh_config = "none"
jump = "j1"
options = ["IdentitiesOnly=yes"]

[[tunnel]]
name = "inherits"
server = "b"
remote = ["8087:localhost:22"]

[[tunnel]]
name = "overrides"
server = "other@b:2222"
local = ["8080:intranet:80"]
user = "me"
identity = ["/k1", "k2"]
host_key_checking = "yes"
keepalive_interval = 3
keepalive_count = 1
compression = false
backoff_max = "5s"
ssh_config = "~/alt_config"
jump = "none"
options = []
"#;
    let file = parse_with_home(text, Path::new("/etc/burrow/tunnels.toml"), Path::new(HOME));
    let file = file.unwrap_or_else(|e| panic!("{e}"));
    let [a, b] = file.tunnels.as_slice() else {
        panic!("two tunnels expected: {file:?}");
    };
    assert_eq!(a.user.as_deref(), Some("tunnel"));
    assert_eq!(a.identity, vec![PathBuf::from("/home/u/.ssh/id_ed25519")]);
    assert_eq!(
        a.known_hosts,
        Some(PathBuf::from("/etc/burrow/keys/known_hosts"))
    );
    assert_eq!(a.host_key_checking, HostKeyChecking::AcceptNew);
    assert_eq!(a.keepalive_interval, Duration::from_secs(10));
    assert_eq!(a.keepalive_count, 5);
    assert_eq!(a.connect_timeout, Duration::from_secs(20));
    assert!(a.compression);
    assert_eq!(a.backoff_initial, Duration::from_secs(2));
    assert_eq!(a.backoff_max, Duration::from_secs(120));
    assert_eq!(a.exit_after_failures, 7);
    assert_eq!(a.ssh_config, Some(PathBuf::from("none")));
    assert_eq!(a.jump.as_deref(), Some("j1"));
    assert_eq!(a.options, vec!["IdentitiesOnly=yes"]);

    assert_eq!(b.user.as_deref(), Some("me"));
    assert_eq!(b.servers[0].user.as_deref(), Some("other"));
    assert_eq!(b.servers[0].port, Some(2222));
    assert_eq!(
        b.identity,
        vec![PathBuf::from("/k1"), PathBuf::from("/etc/burrow/k2")]
    );
    assert_eq!(b.host_key_checking, HostKeyChecking::Yes);
    assert_eq!(b.keepalive_interval, Duration::from_secs(3));
    assert_eq!(b.keepalive_count, 1);
    assert_eq!(b.connect_timeout, Duration::from_secs(20), "inherited");
    assert!(!b.compression);
    assert_eq!(b.backoff_initial, Duration::from_secs(2), "inherited");
    assert_eq!(b.backoff_max, Duration::from_secs(5));
    assert_eq!(b.ssh_config, Some(PathBuf::from("/home/u/alt_config")));
    assert_eq!(b.jump.as_deref(), Some("none"));
    assert!(b.options.is_empty(), "a tunnel's list replaces the default");
}

#[test]
fn durations() {
    let cases = [
        ("5", 5),
        ("\"5\"", 5),
        ("\"5s\"", 5),
        ("\"1m\"", 60),
        ("\"1h30m\"", 5400),
        ("\"1M\"", 60),
        ("\" 2s \"", 2),
    ];
    for (value, secs) in cases {
        let t = one(&tunnel(&format!("connect_timeout = {value}\n")));
        assert_eq!(t.connect_timeout, Duration::from_secs(secs), "{value}");
    }
    let bad = [
        ("0", "must be at least 1s"),
        ("\"0s\"", "must be at least 1s"),
        ("-5", "invalid time \"-5\""),
        ("\"5x\"", "invalid time \"5x\""),
        ("\"\"", "invalid time \"\""),
        ("\"1.5s\"", "invalid time \"1.5s\""),
        ("\"99999999999s\"", "invalid time"),
    ];
    for (value, want) in bad {
        let got = problems(&tunnel(&format!("keepalive_interval = {value}\n")));
        let want = format!("tunnels.toml line 4: tunnel[0]: keepalive_interval: {want}");
        assert!(
            got.len() == 1 && got[0].starts_with(&want),
            "{value}: {got:?}"
        );
    }
}

#[test]
fn malformed_values_name_line_tunnel_and_field() {
    let named = |extra: &str| format!("[[tunnel]]\nname = \"a-ssh\"\nserver = \"b\"\n{extra}");
    let cases: Vec<(String, &str)> = vec![
        (
            named("remote = [\"8087:localhost:22\", \"x:y\"]\n"),
            "tunnels.toml line 4: tunnel \"a-ssh\": remote[1]: invalid remote forward spec \"x:y\": ",
        ),
        (
            named("remote = [\n  \"8087:localhost:22\",\n  \"8088:localhost:0\",\n]\n"),
            "tunnels.toml line 6: tunnel \"a-ssh\": remote[1]: invalid remote forward spec \"8088:localhost:0\": port 0",
        ),
        (
            named("remote = [\"8086\"]\n"),
            "tunnels.toml line 4: tunnel \"a-ssh\": remote[0]: \"8086\" has no target",
        ),
        (
            named("local = [\"8080:intranet\"]\n"),
            "tunnels.toml line 4: tunnel \"a-ssh\": local[0]: invalid local forward spec \"8080:intranet\": ",
        ),
        (
            named("dynamic = [\"1080\", \"a:b:c\"]\n"),
            "tunnels.toml line 4: tunnel \"a-ssh\": dynamic[1]: invalid dynamic forward spec \"a:b:c\": ",
        ),
        (
            tunnel("user = \"bad;user\"\n"),
            "tunnels.toml line 4: tunnel[0]: user: invalid user \"bad;user\": ",
        ),
        (
            tunnel("keepalive_count = 0\n"),
            "tunnels.toml line 4: tunnel[0]: keepalive_count: must be at least 1",
        ),
        (
            tunnel("host_key_checking = \"no\"\n"),
            "tunnels.toml line 4: tunnel[0]: host_key_checking: \"no\" is not allowed: a tunnel runs unattended",
        ),
        (
            tunnel("host_key_checking = \"ask\"\n"),
            "tunnels.toml line 4: tunnel[0]: host_key_checking: \"ask\" is not allowed",
        ),
        (
            tunnel("host_key_checking = \"maybe\"\n"),
            "tunnels.toml line 4: tunnel[0]: host_key_checking: \"maybe\": expected \"yes\" or \"accept-new\"",
        ),
        (
            tunnel("jump = \"j1,,j2\"\n"),
            "tunnels.toml line 4: tunnel[0]: jump: invalid jump host spec \"j1,,j2\": ",
        ),
        (
            tunnel("identity = [\"~bob/.ssh/id\"]\n"),
            "tunnels.toml line 4: tunnel[0]: identity: \"~bob/.ssh/id\": only ~ and ~/ are expanded",
        ),
        (
            tunnel("identity = \"\"\n"),
            "tunnels.toml line 4: tunnel[0]: identity: the path is empty",
        ),
        (
            tunnel("known_hosts = \"${HOME}/kh\"\n"),
            "tunnels.toml line 4: tunnel[0]: known_hosts: \"${HOME}/kh\": \"${\" is not allowed",
        ),
        (
            tunnel("backoff_initial = \"2m\"\n"),
            "tunnels.toml line 4: tunnel[0]: backoff_initial: backoff_initial (120s) is greater than backoff_max (60s)",
        ),
        (
            tunnel("options = [\"IdentitiesOnly=yes\", \"ServerAliveInterval=30\"]\n"),
            "tunnels.toml line 4: tunnel[0]: options[1]: \"ServerAliveInterval=30\": set keepalive_interval",
        ),
        (
            tunnel("options = [\"BatchMode no\"]\n"),
            "tunnels.toml line 4: tunnel[0]: options[0]: \"BatchMode no\": burrow up always sets BatchMode=yes",
        ),
        (
            tunnel("options = [\"Cipher=aes128-ctr\"]\n"),
            "tunnels.toml line 4: tunnel[0]: options[0]: \"Cipher=aes128-ctr\": unknown option \"Cipher\"",
        ),
        (
            tunnel("options = [\"Ciphers\"]\n"),
            "tunnels.toml line 4: tunnel[0]: options[0]: \"Ciphers\": no argument after keyword",
        ),
        (
            tunnel("options = [\"Host x\"]\n"),
            "tunnels.toml line 4: tunnel[0]: options[0]: \"Host x\": Host is not supported",
        ),
        (
            tunnel("name = \"\"\n"),
            "tunnels.toml line 4: tunnel[0]: name: is empty",
        ),
        (
            tunnel("name = \"a\\nb\"\n"),
            "tunnels.toml line 4: tunnel \"a\\nb\": name: \"a\\nb\": no leading or trailing spaces",
        ),
        (
            "[[tunnel]]\nserver = \"user@ho;st\"\nremote = [\"1:a:2\"]\n".into(),
            "tunnels.toml line 2: tunnel[0]: server: invalid server \"user@ho;st\": host name \"ho;st\"",
        ),
        (
            "[[tunnel]]\nserver = \"b:0\"\nremote = [\"1:a:2\"]\n".into(),
            "tunnels.toml line 2: tunnel[0]: server: invalid server \"b:0\": port 0",
        ),
        (
            "[[tunnel]]\nserver = \"b1,b2\"\nremote = [\"1:a:2\"]\n".into(),
            "tunnels.toml line 2: tunnel[0]: server: invalid server \"b1,b2\": one server per entry",
        ),
        (
            "[[tunnel]]\nserver = \"b\"\nservers = [\"c\"]\nremote = [\"1:a:2\"]\n".into(),
            "tunnels.toml line 3: tunnel[0]: servers: set either server or servers, not both",
        ),
        (
            "[[tunnel]]\nremote = [\"1:a:2\"]\n".into(),
            "tunnels.toml line 1: tunnel[0]: server: missing: set server = ",
        ),
        (
            "[[tunnel]]\nservers = []\nremote = [\"1:a:2\"]\n".into(),
            "tunnels.toml line 2: tunnel[0]: servers: is empty: list a relay",
        ),
        (
            "[[tunnel]]\nservers = [\"b1\", \"[::1\"]\nremote = [\"1:a:2\"]\n".into(),
            "tunnels.toml line 2: tunnel[0]: servers[1]: invalid server \"[::1\": '[' in",
        ),
        (
            "\n[[tunnel]]\nname = \"x\"\nserver = \"b\"\n".into(),
            "tunnels.toml line 2: tunnel \"x\": no forwards: set at least one of local, remote, dynamic",
        ),
        (
            "[defaults]\nbackoff_max = \"0\"\n".into(),
            "tunnels.toml line 2: defaults: backoff_max: must be at least 1s",
        ),
        (
            format!("[defaults]\nbackoff_initial = 90\n{}", tunnel("")),
            "tunnels.toml line 2: defaults: backoff_initial: backoff_initial (90s) is greater than backoff_max (60s)",
        ),
        ("# nothing\n".into(), "tunnels.toml: no [[tunnel]] entries"),
    ];
    for (text, want) in cases {
        let got = problems(&text);
        assert!(
            got.iter().any(|p| p.starts_with(want)),
            "{text}\nwant a problem starting with: {want}\ngot: {got:#?}"
        );
    }
}

#[test]
fn toml_errors_keep_line_column_and_key() {
    let cases = [
        (
            tunnel("port = 22\n"),
            "line 4, column 1",
            "unknown field `port`",
        ),
        (
            "[defaults]\nkeepalive = 5\n".to_string(),
            "line 2, column 1",
            "unknown field `keepalive`",
        ),
        (
            "[[tunnels]]\nserver = \"b\"\n".to_string(),
            "line 1",
            "unknown field `tunnels`",
        ),
        (
            "[[tunnel]]\nserver = \"b\"\nremote = \"8087:localhost:22\"\n".to_string(),
            "line 3, column 10",
            "expected a sequence",
        ),
        (
            tunnel("keepalive_count = -1\n"),
            "line 4",
            "invalid value: integer `-1`",
        ),
        (
            tunnel("keepalive_interval = true\n"),
            "line 4",
            "expected a time",
        ),
        (
            tunnel("identity = 3\n"),
            "line 4",
            "expected a string or a list of strings",
        ),
        (
            tunnel("compression = \"yes\"\n"),
            "line 4",
            "expected a boolean",
        ),
        ("[[tunnel]\n".to_string(), "line 1", ""),
    ];
    for (text, place, what) in cases {
        match parse_text(&text) {
            Err(e @ TunnelsError::Parse { .. }) => {
                let msg = e.to_string();
                assert!(msg.starts_with("tunnels.toml: "), "{msg}");
                assert!(msg.contains(place) && msg.contains(what), "{text}\n{msg}");
            }
            other => panic!("{text}: expected a parse error, got {other:?}"),
        }
    }
}

#[test]
fn every_problem_is_reported() {
    let text = r#"
[defaults]
keepalive_count = 0

[[tunnel]]
name = "a"
server = "b"
remote = ["bad"]

[[tunnel]]
name = "a"
server = "c"
local = ["8080:x:80"]
connect_timeout = "soon"
"#;
    let got = problems(text);
    assert_eq!(
        got,
        vec![
            "tunnels.toml line 3: defaults: keepalive_count: must be at least 1 (keepalives are how a dead link is noticed)",
            "tunnels.toml line 8: tunnel \"a\": remote[0]: invalid remote forward spec \"bad\": port \"bad\" is not a number (service names are not supported)",
            "tunnels.toml line 14: tunnel \"a\": connect_timeout: invalid time \"soon\": expected seconds or a time like 30s, 5m, 1h30m",
        ]
    );
}

#[test]
fn names_are_unique() {
    let text = r#"
[[tunnel]]
name = "a-ssh"
server = "b"
remote = ["8087:localhost:22"]

[[tunnel]]
server = "b"
remote = ["8087:localhost:22"]

[[tunnel]]
name = "a-ssh"
server = "c"
remote = ["8088:localhost:22"]

[[tunnel]]
server = "user@b:2222"
remote = ["8087:localhost:22"]
"#;
    assert_eq!(
        problems(text),
        vec![
            "tunnels.toml line 12: tunnel \"a-ssh\": name: \"a-ssh\" is already the name of the tunnel at line 2",
            "tunnels.toml line 16: tunnel[3]: name: the derived name \"b/R8087:localhost:22\" is already used by the tunnel at line 7; give one of them a name",
        ]
    );
}

#[test]
fn local_listeners_do_not_collide() {
    let text = r#"
[[tunnel]]
name = "one"
server = "b"
local = ["8080:x:80", "0:x:81"]

[[tunnel]]
name = "two"
server = "c"
local = ["127.0.0.1:8080:x:80", "0:y:82"]
dynamic = ["8080"]
"#;
    assert_eq!(
        problems(text),
        vec![
            "tunnels.toml line 11: tunnel \"two\": dynamic[0]: 8080 is already a local listener of tunnel \"one\" (line 5)"
        ]
    );
}

#[test]
fn servers_in_every_form() {
    let t = one(
        "[[tunnel]]\nservers = [\"b1\", \"u@b2:2222\", \"[::1]:22\", \"ssh://v@b3:2200\", \"[::1]\"]\nremote = [\"1:a:2\"]\n",
    );
    let addr = |user: Option<&str>, host: &str, port: Option<u16>| ServerAddr {
        user: user.map(str::to_owned),
        host: host.to_owned(),
        port,
    };
    assert_eq!(
        t.servers,
        vec![
            addr(None, "b1", None),
            addr(Some("u"), "b2", Some(2222)),
            addr(None, "::1", Some(22)),
            addr(Some("v"), "b3", Some(2200)),
            addr(None, "::1", None),
        ]
    );
    let shown: Vec<String> = t.servers.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["b1", "u@b2:2222", "[::1]:22", "v@b3:2200", "::1"]);
    assert_eq!(t.ssh_args(4).destination, "::1");
}

#[test]
fn ssh_args_for_a_typical_tunnel() {
    let text = r#"
[[tunnel]]
name = "a-ssh"
servers = ["relay1:2222", "ops@relay2"]
user = "tunnel"
identity = ["~/.ssh/id_ed25519"]
known_hosts = "/var/lib/burrow/known hosts %x"
host_key_checking = "accept-new"
keepalive_interval = "5s"
keepalive_count = 3
connect_timeout = "1m"
jump = "j1,user@j2:22"
local = ["8080:intranet:80"]
remote = ["8086:localhost:22", "0:localhost:8080"]
dynamic = ["1080"]
ssh_config = "none"
options = ["Ciphers=aes128-gcm@openssh.com"]
"#;
    let t = one(text);
    let a = t.ssh_args(0);
    assert_eq!(a.destination, "relay1");
    assert_eq!(a.port.as_deref(), Some("2222"));
    assert_eq!(a.login.as_deref(), Some("tunnel"));
    assert_eq!(a.identity, vec![PathBuf::from("/home/u/.ssh/id_ed25519")]);
    assert_eq!(a.jump.as_deref(), Some("j1,user@j2:22"));
    assert_eq!(a.local, vec!["8080:intranet:80"]);
    assert_eq!(a.remote, vec!["8086:localhost:22", "0:localhost:8080"]);
    assert_eq!(a.dynamic, vec!["1080"]);
    assert_eq!(a.config_file, Some(PathBuf::from("none")));
    assert!(a.no_command && !a.compression && !a.background && a.stdio.is_none());
    assert!(a.command.is_empty());
    assert_eq!(
        a.options,
        vec!["Ciphers=aes128-gcm@openssh.com"],
        "only the tunnel's own options are text"
    );
    use crate::config::options::{Fixed, StrictHostKeyChecking};
    assert_eq!(
        t.fixed(),
        Fixed {
            batch_mode: Some(true),
            exit_on_forward_failure: Some(true),
            server_alive_interval: Some(Some(Duration::from_secs(5))),
            server_alive_count_max: Some(3),
            connect_timeout: Some(Some(Duration::from_secs(60))),
            strict_host_key_checking: Some(StrictHostKeyChecking::AcceptNew),
            compression: Some(false),
            user_known_hosts_file: Some(PathBuf::from("/var/lib/burrow/known hosts %x")),
            proxy_protocol: None,
        }
    );

    let b = t.ssh_args(1);
    assert_eq!(b.destination, "relay2");
    assert_eq!(b.port, None);
    assert_eq!(b.login.as_deref(), Some("ops"), "user@ in the server wins");
    assert_eq!(
        t.ssh_args(9).destination,
        "relay1",
        "out of range: the first"
    );
}

/// A known_hosts path with quotes and `%` is used as written: no `-o` quoting, no tokens.
#[test]
fn plan_takes_paths_literally() {
    let t = one(&tunnel(
        "known_hosts = \"/tmp/a \\\"b\\\" c%d\"\ncompression = true\n",
    ));
    let o = resolve(&t, 0);
    assert!(o.compression);
    assert_eq!(
        o.user_known_hosts_files,
        vec![PathBuf::from("/tmp/a \"b\" c%d")]
    );
}

#[test]
fn fingerprint_follows_the_connection_not_the_name() {
    let base = one(&tunnel("name = \"x\"\n"));
    assert_eq!(base.fingerprint(), base.clone().fingerprint());
    assert_eq!(base.fingerprint().len(), 32);
    let renamed = TunnelSpec {
        name: "y".into(),
        ..base.clone()
    };
    assert_eq!(renamed.fingerprint(), base.fingerprint());
    let changes = [
        one(&tunnel("name = \"x\"\nkeepalive_count = 5\n")),
        one(&tunnel(
            "name = \"x\"\noptions = [\"IdentitiesOnly=yes\"]\n",
        )),
        one("[[tunnel]]\nname = \"x\"\nserver = \"b:2222\"\nremote = [\"8087:localhost:22\"]\n"),
        one("[[tunnel]]\nname = \"x\"\nserver = \"b\"\nremote = [\"8088:localhost:22\"]\n"),
    ];
    for changed in changes {
        assert_ne!(changed.fingerprint(), base.fingerprint(), "{changed:?}");
    }
}

#[test]
fn load_names_a_missing_file() {
    let e = load(Path::new("/nonexistent/tunnels.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot read /nonexistent/tunnels.toml: "),
        "{e}"
    );
}

/// What `burrow up` will do with a tunnel: resolve its arguments like `burrow ssh` does.
fn resolve(t: &TunnelSpec, server: usize) -> crate::config::options::ClientOptions {
    let paths = crate::config::options::ConfigPaths {
        user: None,
        system: None,
        home: PathBuf::from(HOME),
    };
    t.plan(server, &paths)
        .unwrap_or_else(|e| panic!("{}: {e}", t.name))
        .opts
}

#[test]
fn ssh_args_resolve_like_the_command_line() {
    use crate::config::options::StrictHostKeyChecking;
    let t = one(
        "[[tunnel]]\nservers = [\"b1\", \"u@b2:2222\"]\nuser = \"tunnel\"\nknown_hosts = \"~/kh\"\n\
         remote = [\"8087:localhost:22\"]\nlocal = [\"8080:intranet:80\"]\nkeepalive_interval = 7\n",
    );
    let o = resolve(&t, 1);
    assert_eq!(
        (o.hostname.as_str(), o.port, o.user.as_str()),
        ("b2", 2222, "u")
    );
    assert_eq!(o.remote_forwards.len() + o.local_forwards.len(), 2);
    assert!(o.batch_mode && o.exit_on_forward_failure && o.no_command && !o.compression);
    assert_eq!(o.server_alive_interval, Some(Duration::from_secs(7)));
    assert_eq!(o.server_alive_count_max, DEFAULT_KEEPALIVE_COUNT);
    assert_eq!(o.connect_timeout, Some(Duration::from_secs(10)));
    assert_eq!(o.strict_host_key_checking, StrictHostKeyChecking::Yes);
    assert_eq!(o.user_known_hosts_files, vec![PathBuf::from("/home/u/kh")]);
    let o = resolve(&t, 0);
    assert_eq!(
        (o.hostname.as_str(), o.port, o.user.as_str()),
        ("b1", 22, "tunnel")
    );
}

/// Every tunnels*.toml under examples/ parses and validates.
#[test]
fn example_tunnels_files_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("tunnels") && name.ends_with(".toml")) {
            continue;
        }
        let file = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!file.tunnels.is_empty(), "{name}");
        for t in &file.tunnels {
            for i in 0..t.servers.len() {
                resolve(t, i);
            }
        }
        checked += 1;
    }
    assert!(checked >= 1, "no examples/tunnels*.toml found");

    let file = load(&dir.join("tunnels.toml")).unwrap();
    let names: Vec<&str> = file.tunnels.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "b.example.com/R8087:localhost:22",
            "a-publish",
            "app-relays",
            "office-socks"
        ]
    );
    let seed = &file.tunnels[0];
    assert_eq!(remote_specs(seed), vec!["8087:localhost:22"]);
    assert_eq!(
        remote_specs(&file.tunnels[1]),
        vec!["8086:localhost:22", "8088:localhost:8080"]
    );
    assert!(seed.compression && seed.ssh_args(0).compression);
    assert_eq!(file.tunnels[2].servers.len(), 2);
    assert_eq!(file.tunnels[3].dynamic, vec!["1080"]);
}

/// The plan lists every forward, the tunnel's and those a matching Host block adds, each with
/// its own label, in the order they are set up (local, dynamic, remote).
#[test]
fn plan_lists_host_block_forwards_each_with_its_own_label() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        "Host relay\n    LocalForward 9000 db:5432\n    RemoteForward 9001 localhost:80\n",
    )
    .unwrap();
    let t = one("[[tunnel]]\nserver = \"relay\"\nremote = [\"8087:localhost:22\"]\n");
    let paths = crate::config::options::ConfigPaths {
        user: Some(config),
        system: None,
        home: PathBuf::from(HOME),
    };
    let plan = t.plan(0, &paths).unwrap();
    let labels: Vec<String> = plan
        .forwards
        .iter()
        .map(|f| f.forward.to_string())
        .collect();
    assert_eq!(
        labels,
        [
            "-L 9000:db:5432",
            "-R 8087:localhost:22",
            "-R 9001:localhost:80"
        ]
    );
    assert!(plan.opts.batch_mode && plan.opts.exit_on_forward_failure);
}

/// The `-R` specs of a tunnel, as written.
fn remote_specs(t: &TunnelSpec) -> Vec<&str> {
    t.remote.iter().map(|r| r.spec.as_str()).collect()
}

/// `proxy_protocol` per tunnel (from `[defaults]` or its own) and per forward, where a remote
/// entry written as a table says; the forward's value wins, and a Host block's -R forward
/// takes the tunnel's.
#[test]
fn proxy_protocol_per_tunnel_and_per_forward() {
    use crate::forward::proxy_header::ProxyProtocol::{V1, V2};
    let text = r#"
[defaults]
proxy_protocol = "v2"

[[tunnel]]
name = "a"
server = "relay"
proxy_protocol = "v1"
remote = [
    "8080:localhost:80",
    { forward = "8081:localhost:81", proxy_protocol = "v2" },
    { forward = "8082:localhost:82", proxy_protocol = "none" },
]

[[tunnel]]
name = "b"
server = "relay"
remote = ["8090:localhost:90"]
"#;
    let file = parse_with_home(text, Path::new("/etc/burrow/tunnels.toml"), Path::new(HOME))
        .unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (&file.tunnels[0], &file.tunnels[1]);
    assert_eq!(a.proxy_protocol, Some(Some(V1)));
    assert_eq!(b.proxy_protocol, Some(Some(V2)), "from [defaults]");
    assert_eq!(
        remote_specs(a),
        [
            "8080:localhost:80",
            "8081:localhost:81",
            "8082:localhost:82"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::write(&config, "Host relay\n    RemoteForward 9000 localhost:99\n").unwrap();
    let paths = crate::config::options::ConfigPaths {
        user: Some(config),
        system: None,
        home: PathBuf::from(HOME),
    };
    let plan = a.plan(0, &paths).unwrap();
    let got: Vec<(String, Option<_>)> = plan
        .forwards
        .iter()
        .map(|f| (f.forward.to_string(), f.proxy_protocol))
        .collect();
    assert_eq!(
        got,
        [
            ("-R 8080:localhost:80".to_string(), Some(V1)),
            ("-R 8081:localhost:81".to_string(), Some(V2)),
            ("-R 8082:localhost:82".to_string(), None),
            ("-R 9000:localhost:99".to_string(), Some(V1)),
        ]
    );
}

/// A bad proxy_protocol, in a tunnel or in a remote entry, is named with its line and field;
/// an unknown key in a remote entry is refused.
#[test]
fn bad_proxy_protocol_is_named() {
    let e = parse(
        "[[tunnel]]\nserver = \"b\"\nremote = [{ forward = \"80:l:80\", proxy_protocol = \"v3\" }]\n",
        Path::new("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("line 3") && e.contains("remote[0]") && e.contains("\"v3\": expected"),
        "{e}"
    );
    let e = parse(
        "[[tunnel]]\nserver = \"b\"\nproxy_protocol = \"yes\"\nremote = [\"80:l:80\"]\n",
        Path::new("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 3") && e.contains("proxy_protocol"), "{e}");
    let e = parse(
        "[[tunnel]]\nserver = \"b\"\nremote = [{ forward = \"80:l:80\", proxy = \"v1\" }]\n",
        Path::new("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `proxy`"), "{e}");
}
