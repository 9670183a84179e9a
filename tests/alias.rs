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

/// `burrow serve` in B on 0.0.0.0:RELAY_PORT with `authorized_keys` as given and metrics on
/// B's loopback; returns once A sees its banner, with its host key line.
fn relay(w: &World, authorized_keys: &str, extra_toml: &str) -> (ChildGuard, String) {
    let dir = w.path().join("relay");
    std::fs::create_dir_all(&dir).expect("relay dir");
    let ak = dir.join("authorized_keys");
    std::fs::write(&ak, authorized_keys).expect("authorized_keys");
    let toml = dir.join("serve.toml");
    std::fs::write(&toml, format!("metrics = \"{METRICS}\"\n{extra_toml}")).expect("serve.toml");
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [&ak, &toml] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
    }
    let host_key = dir.join("host_key");
    let mut cmd = ns_cmd(&w.net.b, burrow_bin());
    cmd.args([
        "serve",
        "--listen",
        &format!("0.0.0.0:{RELAY_PORT}"),
        "--config",
    ])
    .arg(&toml)
    .arg("--host-key")
    .arg(&host_key)
    .arg("--authorized-keys")
    .arg(&ak)
    .env("HOME", &dir);
    let mut child = w.spawn(cmd, "relay");
    assert!(
        child.stderr().wait_for_line("listening on", UP).is_some(),
        "burrow serve did not start:\n{}",
        child.stderr_text()
    );
    wait_ssh_banner(
        &w.net.a,
        sa(B_INSIDE, RELAY_PORT),
        "relay",
        &mut [&mut child],
    );
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
    let (mut relay, key_r) = relay(&w, &ak, "");
    w.trust(&format!("[{B_INSIDE}]:{RELAY_PORT}"), &key_r);
    w.trust(&format!("[{B_PUBLIC}]:{RELAY_PORT}"), &key_r);
    // C's ssh checks A's host key under the alias it asked for.
    w.trust("a-ssh", &key_a);

    // A publishes a-ssh with stock OpenSSH (-v: it logs each forwarded connection's
    // originator) and a-web with burrow.
    let mut cmd = ssh(&w, a, &[&w.key.private]);
    cmd.args(["-v", "-N", "-o", "ExitOnForwardFailure=yes", "-p"])
        .arg(RELAY_PORT.to_string())
        .args(["-R", "a-ssh:22:localhost:22"])
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

    // No socket on B for either alias: only the relay's own port and its metrics port listen.
    let ports = listening_ports(&w, b);
    for p in &ports {
        assert!(
            [RELAY_PORT, 9180].contains(p),
            "B listens on port {p}, which is not the relay's own (all: {ports:?})"
        );
    }
    for p in [22, 80] {
        assert!(!ports.contains(&p), "B listens on {p}: {ports:?}");
    }

    // C logs in to A's sshd by name with stock ssh -J (C's key for the relay, w.key for A).
    let mut cmd = ssh(&w, c, &[&visitor.private, &w.key.private]);
    cmd.arg("-J")
        .arg(format!("c@{B_PUBLIC}:{RELAY_PORT}"))
        .arg("root@a-ssh")
        .arg("hostname");
    let (st, out, err) = run_with_timeout(cmd, w.path(), "C-ssh-J-alias", CMD);
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

    // The same with burrow ssh -J.
    let mut cmd = burrow_ssh(&w, c, &[&visitor.private, &w.key.private]);
    cmd.arg("-J")
        .arg(format!("c@{B_PUBLIC}:{RELAY_PORT}"))
        .arg("root@a-ssh")
        .arg("hostname");
    let (st, out, err) = run_with_timeout(cmd, w.path(), "C-burrow-J-alias", CMD);
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
    let mut cmd = ssh(&w, c, &[&stranger.private, &w.key.private]);
    cmd.arg("-J")
        .arg(format!("k@{B_PUBLIC}:{RELAY_PORT}"))
        .arg("root@a-ssh")
        .arg("hostname");
    let (st, out, err) = run_with_timeout(cmd, w.path(), "C-stranger-J-alias", CMD);
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
    let mut cmd = ssh(&w, c, &[&visitor.private, &w.key.private]);
    cmd.arg("-J")
        .arg(format!("c@{B_PUBLIC}:{RELAY_PORT}"))
        .arg("root@a-ssh")
        .arg("hostname");
    let (st, out, err) = run_with_timeout(cmd, w.path(), "C-ssh-J-alias-again", CMD);
    assert!(
        st.is_some_and(|s| s.success()) && out.trim() == *a,
        "a-ssh broke after the refused takeover ({st:?}):\n{out}\n{err}"
    );

    // /metrics and the status page show the aliases like listeners.
    let metrics = curl_in(&w, b, &format!("http://{METRICS}/metrics"));
    assert!(
        metrics.lines().any(|l| l == "burrow_relay_aliases 2")
            && metrics.lines().any(|l| l == "burrow_relay_listeners 0"),
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

    for g in [&mut relay, &mut pub_ssh, &mut pub_web, &mut sshd_a] {
        assert!(
            g.try_status().is_none(),
            "{} died:\n{}",
            g.name(),
            g.stderr_text()
        );
    }
}
