//! Private services by name on real network namespaces (see `src/server/alias.rs`).
//!
//! A publishes its sshd as the alias `a-ssh` (stock OpenSSH `ssh -R a-ssh:22:localhost:22`)
//! and a small service as `a-web` (`burrow ssh -R a-web:80:localhost:8080`); the relay on B
//! binds no socket for either. C reaches them through the relay with its own key, whose line
//! names them in `permitopen=`: stock `ssh -J`, `burrow ssh -J` and `ssh -L 18080:a-web:80`.
//! A key without that permitopen is refused (and the refusal logged), and a second key cannot
//! take a name. The A/B/C namespaces come from `common/netns.rs`; skipped (passing, with a
//! note) where namespaces are unavailable.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::burrow::{allocated_port, Relay};

use common::netns::*;
use common::*;

/// Deadline for one short client command.
const CMD: Duration = Duration::from_secs(30);
/// The relay's SSH port in B.
const RELAY_PORT: u16 = 2222;
/// The relay's metrics address in B (loopback: no token).
const METRICS: &str = "127.0.0.1:9180";

/// OpenSSH options every client here uses, with `keys` offered in this order (the first the
/// relay accepts is the key the relay sees). In a config file, so that the jump `ssh -J` runs
/// gets them too (it passes `-F` on, not `-o`).
fn client_opts(w: &World, cmd: &mut Command, keys: &[&Path]) {
    let mut cfg = String::from("Host *\n  BatchMode yes\n  IdentitiesOnly yes\n");
    for k in keys {
        cfg.push_str(&format!("  IdentityFile {}\n", k.display()));
    }
    cfg.push_str(&format!(
        "  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  ConnectTimeout 10\n",
        w.known_hosts.display()
    ));
    let names: Vec<String> = keys
        .iter()
        .filter_map(|k| Some(k.file_name()?.to_string_lossy().into_owned()))
        .collect();
    let path = w.path().join(format!("ssh_config-{}", names.join("+")));
    std::fs::write(&path, cfg).expect("ssh_config");
    cmd.arg("-F").arg(path);
}

/// Stock `ssh` in `ns` with [`client_opts`].
fn ssh(w: &World, ns: &str, keys: &[&Path]) -> Command {
    let mut c = ns_cmd(ns, "ssh");
    client_opts(w, &mut c, keys);
    c
}

/// `burrow ssh` in `ns` with [`client_opts`].
fn burrow_ssh(w: &World, ns: &str, keys: &[&Path]) -> Command {
    let mut c = ns_cmd(ns, burrow_bin());
    c.arg("ssh");
    client_opts(w, &mut c, keys);
    c
}

/// `PROG -J USER@B:RELAY_PORT root@a-ssh hostname` from C (`prog` is [`ssh`] or
/// [`burrow_ssh`]), offering `keys`; returns (status, stdout, stderr).
fn jump_to_a_ssh(
    w: &World,
    prog: fn(&World, &str, &[&Path]) -> Command,
    keys: &[&Path],
    user: &str,
    name: &str,
) -> (Option<std::process::ExitStatus>, String, String) {
    let mut cmd = prog(w, &w.net.c, keys);
    cmd.arg("-J")
        .arg(format!("{user}@{B_PUBLIC}:{RELAY_PORT}"))
        .args(["root@a-ssh", "hostname"]);
    run_with_timeout(cmd, w.path(), name, CMD)
}

/// Asserts none of `guards` has exited.
fn assert_running(guards: &mut [&mut ChildGuard]) {
    for g in guards.iter_mut() {
        if let Some(st) = g.try_status() {
            panic!("{} died ({st}):\n{}", g.name(), g.stderr_text());
        }
    }
}

/// `burrow serve` in B on 0.0.0.0:RELAY_PORT with `authorized_keys` as given and metrics on
/// B's loopback; returns once A sees its banner, with its host key line.
fn relay(w: &World, authorized_keys: &str, extra_toml: &str) -> (ChildGuard, String) {
    let toml = format!("metrics = \"{METRICS}\"\n{extra_toml}");
    let at = (w.net.b.as_str(), RELAY_PORT);
    relay_in(w, "relay", at, (&w.net.a, B_INSIDE), authorized_keys, &toml)
}

/// `burrow serve` named `name` in namespace `at.0` on 0.0.0.0:`at.1` with this authorized_keys
/// and serve.toml; returns once namespace `probe.0` sees its banner at `probe.1`, with its host
/// key line.
fn relay_in(
    w: &World,
    name: &str,
    at: (&str, u16),
    probe: (&str, &str),
    authorized_keys: &str,
    toml_text: &str,
) -> (ChildGuard, String) {
    let dir = w.path().join(name);
    std::fs::create_dir_all(&dir).expect("relay dir");
    let ak = dir.join("authorized_keys");
    std::fs::write(&ak, authorized_keys).expect("authorized_keys");
    let toml = dir.join("serve.toml");
    std::fs::write(&toml, toml_text).expect("serve.toml");
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [&ak, &toml] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
    }
    let host_key = dir.join("host_key");
    let mut cmd = ns_cmd(at.0, burrow_bin());
    cmd.args([
        "serve",
        "--listen",
        &format!("0.0.0.0:{}", at.1),
        "--config",
    ])
    .arg(&toml)
    .arg("--host-key")
    .arg(&host_key)
    .arg("--authorized-keys")
    .arg(&ak)
    .env("HOME", &dir);
    let mut child = w.spawn(cmd, name);
    assert!(
        child.stderr().wait_for_line("listening on", UP).is_some(),
        "burrow serve did not start:\n{}",
        child.stderr_text()
    );
    wait_ssh_banner(probe.0, sa(probe.1, at.1), name, &mut [&mut child]);
    (child, common::keys::public_key_line(&host_key))
}

/// TCP ports listening in `ns` (`ss -ltnH`).
fn listening_ports(w: &World, ns: &str) -> Vec<u16> {
    let mut cmd = ns_cmd(ns, "ss");
    cmd.arg("-ltnH");
    let (st, out, err) = run_with_timeout(cmd, w.path(), "ss", CMD);
    assert!(st.is_some_and(|s| s.success()), "ss -ltnH failed: {err}");
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|local| local.rsplit_once(':')?.1.parse().ok())
        .collect()
}

/// `curl -sS URL` in B (the metrics page is loopback-only).
fn curl_in(w: &World, ns: &str, url: &str) -> String {
    let mut cmd = ns_cmd(ns, "curl");
    cmd.args(["-sS", "-f", "--max-time", "10", url]);
    let (st, out, err) = run_with_timeout(cmd, w.path(), "curl", CMD);
    assert!(st.is_some_and(|s| s.success()), "curl {url}: {err}");
    out
}

/// A line service in A's namespace on 0.0.0.0:PORT: answers each connection's first line with
/// `A got <line>`. Its listener stays in A's namespace; the thread ends with the test process.
fn line_service_on_a(ns: &str, port: u16) {
    let listener = in_netns(ns, move || {
        TcpListener::bind(("0.0.0.0", port)).expect("bind")
    });
    std::thread::spawn(move || {
        for conn in listener.incoming().take(64) {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(CMD));
                let mut line = String::new();
                let mut reader = BufReader::new(&conn);
                if reader.read_line(&mut line).is_ok() {
                    let _ = (&conn).write_all(format!("A got {line}").as_bytes());
                }
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });
}

/// Sends one line to `addr` from `ns` and returns the whole answer.
fn ask(ns: &str, addr: std::net::SocketAddr, line: &str) -> std::io::Result<String> {
    let mut s = connect_from(ns, addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(CMD))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut got = String::new();
    s.read_to_string(&mut got)?;
    Ok(got)
}

/// Waits (bounded) until the relay logged `n` lines containing `needle`.
fn wait_lines(g: &ChildGuard, needle: &str, n: usize) -> bool {
    g.stderr()
        .wait_until(UP, |t| {
            (t.lines().filter(|l| l.contains(needle)).count() >= n).then_some(())
        })
        .is_some()
}

/// The whole issue-22 alias story on one world (each step's assertion names what it proves).
#[test]
fn alias_reaches_a_by_name_privately_with_no_socket_on_b() {
    let Some(w) = World::new(
        "alias_reaches_a_by_name_privately_with_no_socket_on_b",
        None,
    ) else {
        return;
    };
    let (a, b, c) = (&w.net.a, &w.net.b, &w.net.c);
    let (mut sshd_a, key_a) = w.sshd(a, "sshd-A", A_IP, b);
    w.net.assert_c_cannot_reach_a();
    line_service_on_a(a, 8080);
    // Keys: A publishes with w.key; C visits with its own key (permitopen names the aliases);
    // a third key has no permitopen.
    let visitor = keygen(w.path(), "c-visitor", KeyKind::Ed25519, None);
    let stranger = keygen(w.path(), "c-stranger", KeyKind::Ed25519, None);
    let ak = format!(
        "{publisher}\nrestrict,port-forwarding,permitopen=\"a-ssh:22\",permitopen=\"a-web:80\" {visitor}\n{stranger}\n",
        publisher = w.key.public_line,
        visitor = visitor.public_line,
        stranger = stranger.public_line,
    );
    // gateway_ports = "yes" for the public-port form beside the aliases (its originator).
    let (mut relay, key_r) = relay(&w, &ak, "gateway_ports = \"yes\"\n");
    w.trust(&format!("[{B_INSIDE}]:{RELAY_PORT}"), &key_r);
    w.trust(&format!("[{B_PUBLIC}]:{RELAY_PORT}"), &key_r);
    // C's ssh checks A's host key under the alias it asked for.
    w.trust("a-ssh", &key_a);

    // A publishes a-ssh with stock OpenSSH (-v: it logs each forwarded connection's
    // originator), and its sshd on the public port 8022 the seed's way; a-web with burrow.
    let mut cmd = ssh(&w, a, &[&w.key.private]);
    cmd.args(["-v", "-N", "-o", "ExitOnForwardFailure=yes", "-p"])
        .arg(RELAY_PORT.to_string())
        .args(["-R", "a-ssh:22:localhost:22", "-R", "8022:localhost:22"])
        .arg(format!("tunnel@{B_INSIDE}"));
    let mut pub_ssh = w.spawn(cmd, "A-ssh-R-alias");
    let mut cmd = burrow_ssh(&w, a, &[&w.key.private]);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-p"])
        .arg(RELAY_PORT.to_string())
        .args(["-R", "a-web:80:localhost:8080"])
        .arg(format!("tunnel@{B_INSIDE}"));
    let mut pub_web = w.spawn(cmd, "A-burrow-R-alias");
    assert!(
        wait_lines(&relay, "alias published", 2),
        "the relay did not publish both aliases:\n{}\n--- A ssh ---\n{}\n--- A burrow ---\n{}",
        relay.stderr_text(),
        pub_ssh.stderr_text(),
        pub_web.stderr_text()
    );

    // No socket on B for either alias: only the relay's own port, its metrics port and the
    // public port 8022 listen.
    wait_ssh_banner(c, sa(B_PUBLIC, 8022), "A's -R 8022", &mut [&mut pub_ssh]);
    let ports = listening_ports(&w, b);
    for p in &ports {
        assert!(
            [RELAY_PORT, 9180, 8022].contains(p),
            "B listens on port {p}, which is neither the relay's own nor 8022 (all: {ports:?})"
        );
    }
    for p in [22, 80] {
        assert!(!ports.contains(&p), "B listens on {p}: {ports:?}");
    }

    // C logs in to A's sshd by name with stock ssh -J (C's key for the relay, w.key for A).
    let both = [visitor.private.as_path(), w.key.private.as_path()];
    let (st, out, err) = jump_to_a_ssh(&w, ssh, &both, "c", "C-ssh-J-alias");
    assert!(
        st.is_some_and(|s| s.success()),
        "ssh -J c@B a-ssh from C failed ({st:?}):\n{out}\n{err}\n--- relay ---\n{}",
        relay.stderr_text()
    );
    assert_eq!(out.trim(), *a, "ssh -J ... a-ssh did not land on A");
    // The forwarded-tcpip channel named C's address as its originator.
    let originator = pub_ssh
        .stderr()
        .wait_for_line(&format!("listen a-ssh port 22, originator {C_IP} port"), UP);
    assert!(
        originator.is_some(),
        "A's ssh saw no forwarded connection from C's address {C_IP}:\n{}",
        pub_ssh.stderr_text()
    );

    // The seed's public-port form says who connected too: the banner probe above came from C.
    let originator = pub_ssh
        .stderr()
        .wait_for_line(&format!("port 8022, originator {C_IP} port"), UP);
    assert!(
        originator.is_some(),
        "A's ssh saw no connection to port 8022 from C's address {C_IP}:\n{}",
        pub_ssh.stderr_text()
    );

    // The same with burrow ssh -J.
    let (st, out, err) = jump_to_a_ssh(&w, burrow_ssh, &both, "c", "C-burrow-J-alias");
    assert!(
        st.is_some_and(|s| s.success()),
        "burrow ssh -J c@B a-ssh from C failed ({st:?}):\n{out}\n{err}\n--- relay ---\n{}",
        relay.stderr_text()
    );
    assert_eq!(out.trim(), *a, "burrow ssh -J ... a-ssh did not land on A");

    // ssh -L 18080:a-web:80: a service that is not SSH, by name.
    let mut cmd = ssh(&w, c, &[&visitor.private]);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-p"])
        .arg(RELAY_PORT.to_string())
        .args(["-L", "18080:a-web:80"])
        .arg(format!("c@{B_PUBLIC}"));
    let mut l_web = w.spawn(cmd, "C-ssh-L-alias");
    let mut answer = Err(std::io::Error::other("no attempt"));
    for _ in 0..100 {
        answer = ask(c, sa("127.0.0.1", 18080), "hello");
        if answer.as_ref().is_ok_and(|a| !a.is_empty()) || l_web.try_status().is_some() {
            break;
        }
        // A retry backoff while C's -L listener comes up, not a readiness guess.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        answer.as_deref().ok(),
        Some("A got hello\n"),
        "ssh -L 18080:a-web:80 did not reach A's service: {answer:?}\n{}\n--- relay ---\n{}",
        l_web.stderr_text(),
        relay.stderr_text()
    );

    // A key without permitopen for the alias is refused, and the refusal is logged.
    let keys = [stranger.private.as_path(), w.key.private.as_path()];
    let (st, out, err) = jump_to_a_ssh(&w, ssh, &keys, "k", "C-stranger-J-alias");
    assert!(
        !st.is_some_and(|s| s.success()),
        "a key without permitopen reached a-ssh:\n{out}\n{err}"
    );
    assert!(
        err.contains("administratively prohibited"),
        "the stranger's ssh did not see a refusal:\n{err}"
    );
    let refused = relay
        .stderr()
        .wait_for_line("direct-tcpip a-ssh:22", UP)
        .filter(|l| l.contains("forward refused") && l.contains("a private alias"));
    assert!(
        refused.is_some(),
        "the relay did not log the refusal:\n{}",
        relay.stderr_text()
    );

    // A second key cannot take the name (on any port), and is told why.
    let mut cmd = ssh(&w, a, &[&stranger.private]);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-p"])
        .arg(RELAY_PORT.to_string())
        .args(["-R", "a-ssh:2022:localhost:22"])
        .arg(format!("thief@{B_INSIDE}"));
    let (st, _, err) = run_with_timeout(cmd, w.path(), "A-stranger-R-alias", CMD);
    assert!(
        st.is_some_and(|s| s.code() == Some(255)),
        "a second key published a-ssh ({st:?}):\n{err}"
    );
    assert!(
        relay
            .stderr()
            .wait_for_line("alias a-ssh is held by another key", UP)
            .is_some(),
        "the relay did not say why:\n{}",
        relay.stderr_text()
    );
    // ... and the owner's alias still works.
    let (st, out, err) = jump_to_a_ssh(&w, ssh, &both, "c", "C-ssh-J-alias-again");
    assert!(
        st.is_some_and(|s| s.success()) && out.trim() == *a,
        "a-ssh broke after the refused takeover ({st:?}):\n{out}\n{err}"
    );

    // /metrics and the status page show the aliases like listeners.
    let metrics = curl_in(&w, b, &format!("http://{METRICS}/metrics"));
    assert!(
        metrics.lines().any(|l| l == "burrow_relay_aliases 2")
            && metrics.lines().any(|l| l == "burrow_relay_listeners 1"),
        "metrics do not count the aliases:\n{metrics}"
    );
    let status = curl_in(&w, b, &format!("http://{METRICS}/api/status"));
    let doc: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let forwards: Vec<&serde_json::Value> = doc["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["forwards"].as_array().into_iter().flatten())
        .filter(|f| f["kind"] == "alias")
        .collect();
    let web = forwards
        .iter()
        .find(|f| f["bind"] == "a-web:80")
        .unwrap_or_else(|| panic!("no a-web alias on the status page: {status}"));
    assert!(
        web["connections_total"].as_u64() >= Some(1) && web["sent_bytes"].as_u64() >= Some(6),
        "the a-web alias counted no traffic: {web}"
    );
    assert!(
        forwards.iter().any(|f| f["bind"] == "a-ssh:22"),
        "no a-ssh alias on the status page: {status}"
    );

    assert_running(&mut [&mut relay, &mut pub_ssh, &mut pub_web, &mut sshd_a]);
}

/// Same-key takeover works for an alias as for a port: while the publisher answers, a second
/// session of its key is refused the alias; once the publisher is frozen (its TCP connection
/// open, nothing answering), the second session takes the alias over after the probe, and a
/// visitor's next connection reaches the new publisher's target. Loopback only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_takes_over_a_dead_publishers_alias() {
    let dir = test_dir();
    let publisher = keygen(dir.path(), "publisher", KeyKind::Ed25519, None);
    let visitor = keygen(dir.path(), "visitor", KeyKind::Ed25519, None);
    let relay = Relay::start(
        dir.path(),
        "relay",
        &[
            publisher.public_line.clone(),
            format!("permitopen=\"a-echo:7\" {}", visitor.public_line),
        ],
        Some("[limits]\ntakeover_probe_secs = 2\n"),
        &[],
    )
    .await;
    let (echo1, echo2) = (echo_server().await, echo_server().await);
    let publish = |name: &str, echo: &common::services::Service| {
        let mut cmd = relay.ssh(&publisher);
        cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
            .arg(format!("a-echo:7:{}", echo.hostport()))
            .arg("root@127.0.0.1");
        spawn_logged(cmd, dir.path(), name)
    };
    let first = publish("publisher-first", &echo1);
    relay
        .child
        .stderr()
        .wait_for_line_async("alias=a-echo port=7", UP)
        .await
        .unwrap_or_else(|| panic!("no alias:\n{}", relay.child.stderr_text()));
    let mut cmd = relay.burrow_ssh(&visitor);
    cmd.args(["-N", "-L", "127.0.0.1:0:a-echo:7", "root@127.0.0.1"]);
    let visit = spawn_logged(cmd, dir.path(), "visitor-L");
    let port = allocated_port(&visit, "local forward to a-echo:7").await;
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    transfer_checked(local, 256 * 1024)
        .await
        .expect("the visitor reaches the first publisher");
    assert_eq!(common::services::Stats::get(&echo1.stats.connections), 1);

    // A live publisher keeps its alias.
    let mut second_live = publish("publisher-second-live", &echo2);
    let st = second_live.wait_timeout(Duration::from_secs(60));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(255),
        "{}",
        second_live.stderr_text()
    );
    assert!(
        relay
            .child
            .stderr_text()
            .contains("alias a-echo:7 is held by a live session of the same key"),
        "{}",
        relay.child.stderr_text()
    );

    first.freeze();
    let mut second = publish("publisher-second", &echo2);
    relay.wait_port_moves_to(port, &echo2, &mut second).await;
    assert!(relay.child.stderr_text().contains("taking its port over"));
    first.thaw();
}

/// A line echo service in A's namespace on 127.0.0.1 (port chosen by the kernel): echoes each
/// line of each connection. Connections end on EOF or after a 120 s read timeout (an outage of
/// the tunnel must not look like an idle client).
fn line_echo_on_a(ns: &str) -> u16 {
    let listener = in_netns(ns, || TcpListener::bind(("127.0.0.1", 0))).expect("bind echo");
    let port = listener.local_addr().expect("echo address").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(16) {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
                let mut reader = BufReader::new(&conn);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if (&conn).write_all(line.as_bytes()).is_err() {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
    port
}

/// The tunnels.toml form (`remote = ["a-echo:7:127.0.0.1:PORT"]` under `burrow up`) publishes
/// an alias, and a visitor's connection to it is a resumable stream on the publisher's side:
/// it survives A's link to B going down for 10 s (the relay drops the dead session by its
/// keepalives, the publisher reconnects, publishes its alias again and re-attaches the
/// stream), with no reset and no line lost.
#[test]
fn alias_from_tunnels_toml_survives_the_publishers_outage() {
    let Some(w) = World::new(
        "alias_from_tunnels_toml_survives_the_publishers_outage",
        None,
    ) else {
        return;
    };
    let (a, c) = (w.net.a.clone(), w.net.c.clone());
    let echo = line_echo_on_a(&a);
    let visitor = keygen(w.path(), "c-visitor", KeyKind::Ed25519, None);
    let ak = format!(
        "{}\npermitopen=\"a-echo:7\" {}\n",
        w.key.public_line, visitor.public_line
    );
    let (mut relay, key_r) = relay(
        &w,
        &ak,
        "[limits]\nresume_grace_secs = 60\nkeepalive_interval_secs = 1\nkeepalive_count_max = 3\n",
    );
    w.trust(&format!("[{B_INSIDE}]:{RELAY_PORT}"), &key_r);
    w.trust(&format!("[{B_PUBLIC}]:{RELAY_PORT}"), &key_r);
    let file = w.path().join("tunnels.toml");
    std::fs::write(
        &file,
        format!(
            "[[tunnel]]\nname = \"a\"\nserver = \"tunnel@{B_INSIDE}:{RELAY_PORT}\"\n\
             remote = [\"a-echo:7:127.0.0.1:{echo}\"]\nidentity = \"{}\"\n\
             known_hosts = \"{}\"\nssh_config = \"none\"\n\
             keepalive_interval = 1\nkeepalive_count = 3\nbackoff_initial = 1\nbackoff_max = 2\n\
             resume_grace = 60\n",
            w.key.private.display(),
            w.known_hosts.display()
        ),
    )
    .expect("tunnels.toml");
    let mut cmd = ns_cmd(&a, burrow_bin());
    cmd.arg("up")
        .arg(&file)
        .arg("--control")
        .arg(w.path().join("up.sock"));
    let mut up = w.spawn(cmd, "A-burrow-up");
    assert!(
        wait_lines(&relay, "alias=a-echo port=7", 1),
        "burrow up did not publish the alias:\n{}\n--- up ---\n{}",
        relay.stderr_text(),
        up.stderr_text()
    );
    let mut cmd = ssh(&w, &c, &[&visitor.private]);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-p"])
        .arg(RELAY_PORT.to_string())
        .args(["-L", "17007:a-echo:7"])
        .arg(format!("c@{B_PUBLIC}"));
    let mut l_echo = w.spawn(cmd, "C-ssh-L-alias");
    let mut conn = None;
    for _ in 0..100 {
        if let Ok(mut s) = connect_from(&c, sa("127.0.0.1", 17007), Duration::from_secs(2)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
            let mut got = [0u8; 6];
            if s.write_all(b"hello\n").is_ok() && s.read_exact(&mut got).is_ok() {
                assert_eq!(&got, b"hello\n");
                conn = Some(s);
                break;
            }
        }
        assert!(l_echo.try_status().is_none(), "{}", l_echo.stderr_text());
        // A retry backoff while C's -L listener comes up, not a readiness guess.
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut conn = conn.unwrap_or_else(|| {
        panic!(
            "no echo through a-echo:\n{}\n--- up ---\n{}",
            relay.stderr_text(),
            up.stderr_text()
        )
    });

    // `burrow status` on A lists the alias like a port forward, with its traffic.
    let mut cmd = Command::new(burrow_bin());
    cmd.args(["status", "--json", "--control"])
        .arg(w.path().join("up.sock"));
    let (st, out, err) = run_with_timeout(cmd, w.path(), "status", CMD);
    assert!(st.is_some_and(|s| s.success()), "burrow status: {err}");
    let all: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    let fwd = all[0]["forwards"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| {
            f["spec"]
                .as_str()
                .is_some_and(|s| s.contains("-R a-echo:7:"))
        })
        .unwrap_or_else(|| panic!("no a-echo forward in burrow status: {out}"));
    assert!(
        fwd["bytes_in"].as_u64() >= Some(6),
        "burrow status counted no bytes for the alias: {fwd}"
    );
    // A's link down for 10 s: written meanwhile, echoed once it is back.
    ip(&["-n", &a, "link", "set", "toB", "down"]);
    conn.write_all(b"during the outage\n")
        .expect("write during the outage");
    std::thread::sleep(Duration::from_secs(10));
    ip(&["-n", &a, "link", "set", "toB", "up"]);
    conn.write_all(b"after\n").expect("write after the outage");
    let mut reader = BufReader::new(&conn);
    let mut got = String::new();
    for want in ["during the outage\n", "after\n"] {
        got.clear();
        reader.read_line(&mut got).unwrap_or_else(|e| {
            panic!(
                "the visitor's connection broke ({e}):\n{}\n--- up ---\n{}",
                relay.stderr_text(),
                up.stderr_text()
            )
        });
        assert_eq!(got, want, "lost or garbled across the outage");
    }
    assert!(
        relay.stderr_text().contains("resumable stream re-attached"),
        "the stream was not re-attached:\n{}",
        relay.stderr_text()
    );
    assert_running(&mut [&mut relay, &mut up, &mut l_echo]);
}

/// With aliases on, the relay never resolves a one-label name, so no key can reach (or, by
/// publishing an alias, capture) a host of the relay's network by its short name, even under
/// `permit_open = ["any"]`; `aliases = false` restores resolve-and-dial. The relay runs in A's
/// namespace, whose /etc/hosts names `svc` (127.0.0.1), where a service listens.
#[test]
fn one_label_names_are_never_resolved_with_aliases_on() {
    let hosts = "127.0.0.1 localhost\n127.0.0.1 svc\n";
    let Some(w) = World::new(
        "one_label_names_are_never_resolved_with_aliases_on",
        Some(hosts),
    ) else {
        return;
    };
    let a = w.net.a.clone();
    line_service_on_a(&a, 8080);
    let ak = format!("{}\n", w.key.public_line);
    let any = "permit_open = [\"any\"]\n";
    let (mut on, key_on) = relay_in(&w, "relay-on", (&a, 2222), (&a, "127.0.0.1"), &ak, any);
    let off_toml = format!("{any}aliases = false\n");
    let (mut off, key_off) = relay_in(
        &w,
        "relay-off",
        (&a, 2223),
        (&a, "127.0.0.1"),
        &ak,
        &off_toml,
    );
    w.trust("[127.0.0.1]:2222", &key_on);
    w.trust("[127.0.0.1]:2223", &key_off);
    let try_w = |port: u16, name: &str| {
        let mut cmd = ssh(&w, &a, &[&w.key.private]);
        cmd.args(["-W", "svc:8080", "-p", &port.to_string(), "k@127.0.0.1"]);
        run_with_timeout(cmd, w.path(), name, CMD)
    };
    let (st, out, err) = try_w(2223, "W-aliases-off");
    assert!(
        st.is_some_and(|s| s.success()) && out.starts_with("A got"),
        "aliases = false: svc:8080 must resolve and connect ({st:?}):\n{out}\n{err}\n{}",
        off.stderr_text()
    );
    let (st, out, err) = try_w(2222, "W-aliases-on");
    assert!(
        !st.is_some_and(|s| s.success()) && !out.contains("A got"),
        "aliases on: svc:8080 was resolved and reached:\n{out}\n{err}"
    );
    assert!(
        on.stderr()
            .wait_for_line("direct-tcpip svc:8080", UP)
            .is_some_and(|l| l.contains("a private alias")),
        "the relay did not refuse svc:8080 as an alias:\n{}",
        on.stderr_text()
    );
    assert_running(&mut [&mut on, &mut off]);
}

/// Aliases count toward the key's listener cap like ports: with `burrow-max-listeners=1` a
/// second alias in the same session is refused. Loopback only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_count_toward_the_listener_cap() {
    let dir = test_dir();
    let key = keygen(dir.path(), "publisher", KeyKind::Ed25519, None);
    let relay = Relay::start(
        dir.path(),
        "relay",
        &[format!("burrow-max-listeners=\"1\" {}", key.public_line)],
        None,
        &[],
    )
    .await;
    let mut cmd = relay.ssh(&key);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes"])
        .args(["-R", "a-one:1:127.0.0.1:9", "-R", "a-two:2:127.0.0.1:9"])
        .arg("root@127.0.0.1");
    let (st, _, err) = run_with_timeout(cmd, dir.path(), "two-aliases", CMD);
    assert_eq!(st.and_then(|s| s.code()), Some(255), "{err}");
    let log = relay.child.stderr_text();
    assert!(
        log.contains("alias published") && log.contains("listener cap reached for this key"),
        "{log}"
    );
}

/// A relay in `dir` whose publisher key publishes `a-echo:7` to `target` (OpenSSH `ssh -R`),
/// keepalives off; the publisher is frozen while a visitor key (permitopen `a-echo:7`) runs
/// `ssh -W a-echo:7` (90 s at most), then thawed. Returns the relay, the publisher (to keep it
/// alive) and the visitor's status and stderr.
async fn visit_a_frozen_publisher(
    dir: &Path,
    target: &str,
) -> (Relay, ChildGuard, Option<std::process::ExitStatus>, String) {
    let publisher = keygen(dir, "publisher", KeyKind::Ed25519, None);
    let visitor = keygen(dir, "visitor", KeyKind::Ed25519, None);
    let relay = Relay::start(
        dir,
        "relay",
        &[
            publisher.public_line.clone(),
            format!("permitopen=\"a-echo:7\" {}", visitor.public_line),
        ],
        Some("[limits]\nkeepalive_interval_secs = 0\n"),
        &[],
    )
    .await;
    let mut cmd = relay.ssh(&publisher);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("a-echo:7:{target}"))
        .arg("root@127.0.0.1");
    let publisher_ssh = spawn_logged(cmd, dir, "publisher");
    relay
        .child
        .stderr()
        .wait_for_line_async("alias=a-echo port=7", UP)
        .await
        .unwrap_or_else(|| panic!("no alias:\n{}", relay.child.stderr_text()));
    publisher_ssh.freeze();
    let mut cmd = relay.ssh(&visitor);
    cmd.args(["-W", "a-echo:7", "root@127.0.0.1"]);
    let logs = dir.to_owned();
    let (st, _, err) = tokio::task::spawn_blocking(move || {
        run_with_timeout(cmd, &logs, "visitor-W", Duration::from_secs(90))
    })
    .await
    .expect("visitor task");
    publisher_ssh.thaw();
    (relay, publisher_ssh, st, err)
}

/// A visitor of an alias whose publisher stopped answering (frozen, its TCP connection open,
/// the relay's keepalives off so nothing ends the session) gets "connect failed" once the
/// relay's 30 s dial timeout passes, as for a target that does not answer, instead of waiting
/// for ever. Loopback only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_publisher_fails_the_visit_after_the_dial_timeout() {
    let dir = test_dir();
    let echo = echo_server().await;
    let started = std::time::Instant::now();
    let (relay, _publisher, st, err) = visit_a_frozen_publisher(dir.path(), &echo.hostport()).await;
    assert!(
        st.is_some_and(|s| !s.success()) && err.contains("connect failed"),
        "the visit did not fail with connect failed within 90 s ({st:?}):\n{err}\n{}",
        relay.child.stderr_text()
    );
    println!(
        "visit to a frozen publisher failed after {:?}",
        started.elapsed()
    );
}

/// A one-label host that is no valid alias name (all digits, `_`, too long) is refused like a
/// bad alias, never handed to the resolver, even under `permit_open = ["any"]`: glibc reads
/// `2130706433` as 127.0.0.1, so before this a key reached the relay's loopback by a one-label
/// name SECURITY.md says is never resolved. Loopback only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_label_names_that_are_no_alias_are_refused_not_resolved() {
    let dir = test_dir();
    let key = keygen(dir.path(), "visitor", KeyKind::Ed25519, None);
    let relay = Relay::start(
        dir.path(),
        "relay",
        std::slice::from_ref(&key.public_line),
        Some("permit_open = [\"any\"]\n"),
        &[],
    )
    .await;
    let echo = echo_server().await;
    // 127.0.0.1 as one 32-bit number: no dot, no letter, so not an alias name either.
    let numeric = format!("2130706433:{}", echo.port());
    let mut cmd = relay.ssh(&key);
    cmd.args(["-W", &numeric, "root@127.0.0.1"]);
    let logs = dir.path().to_owned();
    let (st, _, err) =
        tokio::task::spawn_blocking(move || run_with_timeout(cmd, &logs, "numeric-W", CMD))
            .await
            .expect("visitor task");
    assert!(
        st.is_some_and(|s| !s.success()) && err.contains("administratively prohibited"),
        "{numeric} was resolved and dialled ({st:?}):\n{err}\n{}",
        relay.child.stderr_text()
    );
    assert_eq!(
        common::services::Stats::get(&echo.stats.connections),
        0,
        "the echo server was reached"
    );
    let log = relay.child.stderr_text();
    assert!(
        log.lines()
            .any(|l| l.contains("direct-tcpip 2130706433") && l.contains("at least one letter")),
        "no refusal naming the rule:\n{log}"
    );
}

/// The documented visitor lines (README's `c-laptop`, the packaged authorized_keys' and the
/// man page's) publish nothing, alias or port: before, C's key could
/// publish any alias or port, so while A reconnected C could take the name `a-ssh` (A then
/// refused, every other visitor carried to C's service). Each line is taken from the document
/// itself, with a real key in place of `ssh-ed25519 AAAA...`. Loopback only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_visitor_lines_publish_nothing() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect("read doc");
    let docs = [
        ("README.md", read("README.md")),
        (
            "packaging/etc/authorized_keys",
            read("packaging/etc/authorized_keys"),
        ),
        (
            "doc/man/burrow-serve.toml.5",
            read("doc/man/burrow-serve.toml.5").replace("\\-", "-"),
        ),
    ];
    let dir = test_dir();
    let visitor = keygen(dir.path(), "visitor", KeyKind::Ed25519, None);
    for (doc, text) in &docs {
        let Some(line) = text
            .lines()
            .map(|l| l.trim().trim_start_matches('#').trim())
            .find(|l| l.ends_with("ssh-ed25519 AAAA... c-laptop"))
        else {
            panic!("{doc}: no c-laptop line");
        };
        let line = line.replace("ssh-ed25519 AAAA... c-laptop", &visitor.public_line);
        let relay = Relay::start(dir.path(), "relay", std::slice::from_ref(&line), None, &[]).await;
        for spec in ["a-ssh:22:127.0.0.1:9", "8086:127.0.0.1:9"] {
            let mut cmd = relay.ssh(&visitor);
            cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R", spec])
                .arg("root@127.0.0.1");
            let logs = dir.path().to_owned();
            let (st, _, err) = tokio::task::spawn_blocking(move || {
                run_with_timeout(cmd, &logs, "visitor-R", Duration::from_secs(10))
            })
            .await
            .expect("visitor task");
            assert_eq!(
                st.and_then(|s| s.code()),
                Some(255),
                "{doc}: the visitor line `{line}` published -R {spec}:\n{err}\n{}",
                relay.child.stderr_text()
            );
        }
    }
}

/// A publisher that answers a visit only after the visitor was told "connect failed" (frozen
/// past the 30 s dial timeout, then thawed) gets that channel closed at once: before, the
/// relay dropped its wait and left the late-confirmed channel open for the publisher's whole
/// session, so A's service kept a connection nobody would ever use, and each such visit left
/// one more channel the key's cap did not count. Loopback only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_confirmed_after_the_visitor_gave_up_is_closed() {
    let dir = test_dir();
    // A's service: accepts one connection and reports whether it ended (EOF or reset) within
    // 15 s of being accepted.
    let service = TcpListener::bind("127.0.0.1:0").expect("bind");
    let service_addr = service.local_addr().expect("addr");
    service.set_nonblocking(true).expect("nonblocking");
    let (ended_tx, ended_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            match service.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(15)));
                    let mut buf = [0u8; 64];
                    let ended = loop {
                        match conn.read(&mut buf) {
                            Ok(0) => break true,
                            Ok(_) => continue,
                            Err(e) => {
                                break e.kind() != std::io::ErrorKind::WouldBlock
                                    && e.kind() != std::io::ErrorKind::TimedOut
                            }
                        }
                    };
                    let _ = ended_tx.send(ended);
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    let (relay, _publisher, st, err) =
        visit_a_frozen_publisher(dir.path(), &service_addr.to_string()).await;
    assert!(
        st.is_some_and(|s| !s.success()) && err.contains("connect failed"),
        "the visit did not fail with connect failed ({st:?}):\n{err}"
    );
    let ended = tokio::task::spawn_blocking(move || ended_rx.recv_timeout(Duration::from_secs(40)))
        .await
        .expect("service task");
    assert_eq!(
        ended,
        Ok(true),
        "A's service kept the late connection open (Ok(false)) or never got it (Err):\n{}",
        relay.child.stderr_text()
    );
}

/// A grant that names a one-label host (`permitopen="db:5432"` on a key line, `permit_open`
/// in serve.toml) means the alias once aliases are on, which any key allowed to publish may
/// take: a relay upgraded with such a line used to dial B's host `db` and now carries the
/// visitor to whoever publishes `db`. The relay says so at start, naming the line; grants by
/// address stay quiet. Loopback only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_label_grants_are_warned_about_at_start() {
    let dir = test_dir();
    let key = keygen(dir.path(), "visitor", KeyKind::Ed25519, None);
    let relay = Relay::start(
        dir.path(),
        "relay",
        &[format!("permitopen=\"db:5432\" {}", key.public_line)],
        Some("permit_open = [\"cache:6379\", \"10.0.0.5:22\"]\n"),
        &[],
    )
    .await;
    let warned = |what: &str| {
        relay
            .child
            .stderr_text()
            .lines()
            .any(|l| l.contains("WARN") && l.contains(what) && l.contains("aliases = false"))
    };
    assert!(
        warned("permitopen names the alias db") && warned("line=1"),
        "no warning for permitopen=\"db:5432\":\n{}",
        relay.child.stderr_text()
    );
    assert!(
        warned("permit_open names the alias cache"),
        "no warning for permit_open cache:6379:\n{}",
        relay.child.stderr_text()
    );
    assert!(
        !relay.child.stderr_text().contains("10.0.0.5:22"),
        "an address grant was warned about:\n{}",
        relay.child.stderr_text()
    );
}
