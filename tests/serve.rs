//! `burrow serve` driven by the real OpenSSH client (and by `burrow ssh`): forwarding both ways,
//! GatewayPorts, PermitOpen/PermitListen and authorized_keys options, refusals, the stale
//! listener takeover, reload and scale.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::burrow::{allocated_port, listening_addresses, Relay, PERMIT_OPEN_ANY, UP_TIMEOUT};
use common::*;

const MIB: u64 = 1024 * 1024;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

async fn relay_with<S: AsRef<str>>(
    dir: &std::path::Path,
    keys: &[S],
    config: Option<&str>,
) -> Relay {
    Relay::start(dir, "relay", keys, config, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_client_local_remote_and_dynamic_forwarding() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = relay_with(dir.path(), &[&key.public_line], Some(PERMIT_OPEN_ANY)).await;
    let echo = echo_server().await;
    // -L through the relay (direct-tcpip).
    let mut cmd = relay.ssh(&key);
    let lport = free_port();
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("127.0.0.1:{lport}:{}", echo.hostport()))
        .arg("root@127.0.0.1");
    let mut l = spawn_logged(cmd, dir.path(), "ssh-L");
    wait_listening(&mut l, loopback(lport), UP_TIMEOUT)
        .await
        .expect("-L up");
    transfer_checked(loopback(lport), 64 * MIB)
        .await
        .expect("-L 64 MiB");
    // -R with port 0: OpenSSH prints the port the relay allocated.
    let mut cmd = relay.ssh(&key);
    cmd.args(["-N", "-R"])
        .arg(format!("0:{}", echo.hostport()))
        .arg("root@127.0.0.1");
    let r = spawn_logged(cmd, dir.path(), "ssh-R0");
    let port = allocated_port(&r, &format!("remote forward to {}", echo.hostport())).await;
    assert!(wait_port(loopback(port), UP_TIMEOUT).await);
    transfer_checked(loopback(port), 64 * MIB)
        .await
        .expect("-R 64 MiB");
    // -D: SOCKS through the relay, names resolved on the relay side.
    if have("curl") {
        let web = http_server(det_bytes(5, 100_000)).await;
        let dport = free_port();
        let mut cmd = relay.ssh(&key);
        cmd.args(["-N", "-D"])
            .arg(format!("127.0.0.1:{dport}"))
            .arg("root@127.0.0.1");
        let mut d = spawn_logged(cmd, dir.path(), "ssh-D");
        wait_listening(&mut d, loopback(dport), UP_TIMEOUT)
            .await
            .expect("-D up");
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "--socks5-hostname",
                &format!("127.0.0.1:{dport}"),
            ])
            .arg(format!("http://localhost:{}/", web.port()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha256_hex(&out.stdout), sha256_hex(&det_bytes(5, 100_000)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burrow_client_against_burrow_relay() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = relay_with(dir.path(), &[&key.public_line], Some(PERMIT_OPEN_ANY)).await;
    let echo = echo_server().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_target = format!("127.0.0.1:{}", dead.local_addr().unwrap().port());
    drop(dead);
    let mut cmd = relay.burrow_ssh(&key);
    cmd.args(["-N", "-R"])
        .arg(format!("0:{}", echo.hostport()))
        .arg("-L")
        .arg(format!("127.0.0.1:0:{}", echo.hostport()))
        .arg("-L")
        .arg(format!("127.0.0.1:0:{dead_target}"))
        .arg("root@127.0.0.1");
    let child = spawn_logged(cmd, dir.path(), "burrow-RL");
    let rport = allocated_port(&child, &format!("remote forward to {}", echo.hostport())).await;
    let lport = allocated_port(&child, &format!("local forward to {}", echo.hostport())).await;
    let dead_port = allocated_port(&child, &format!("local forward to {dead_target}")).await;
    transfer_checked(loopback(rport), 16 * MIB)
        .await
        .expect("-R");
    transfer_checked(loopback(lport), 16 * MIB)
        .await
        .expect("-L");
    // -L's first bytes go right behind the stream's hello; a target the relay cannot reach
    // still closes the connection with OpenSSH's reason, and the session carries on.
    let mut refused = tokio::net::TcpStream::connect(loopback(dead_port))
        .await
        .unwrap();
    let _ = refused.write_all(b"sent before the relay dialled").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(UP_TIMEOUT, refused.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a refused target's connection stayed open or got bytes: {read:?} {rest:?}"
    );
    let want = format!("open failed: connect failed: Connection refused: forward to {dead_target}");
    child
        .stderr()
        .wait_for_line_async(&want, UP_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("no {want:?} in:\n{}", child.stderr_text()));
    transfer_checked(loopback(lport), MIB)
        .await
        .expect("-L after a refused connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_ports_decides_where_remote_listeners_bind() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let echo = echo_server().await;
    let cases: [(&str, &str, IpAddr); 4] = [
        ("no", "*", IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ("yes", "localhost", IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ("clientspecified", "*", IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        (
            "clientspecified",
            "127.0.0.1",
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        ),
    ];
    for (i, (gw, bind, want)) in cases.into_iter().enumerate() {
        let relay = Relay::start(
            dir.path(),
            &format!("relay{i}"),
            &[&key.public_line],
            None,
            &["--gateway-ports", gw],
        )
        .await;
        let mut cmd = relay.ssh(&key);
        cmd.args(["-N", "-R"])
            .arg(format!("{bind}:0:{}", echo.hostport()))
            .arg("root@127.0.0.1");
        let child = spawn_logged(cmd, dir.path(), &format!("ssh-gw{i}"));
        let port = allocated_port(&child, &format!("remote forward to {}", echo.hostport())).await;
        let addrs = listening_addresses(port);
        assert!(
            addrs.contains(&want),
            "GatewayPorts {gw}, asked {bind}: bound {addrs:?}"
        );
        let other = if want.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        assert!(
            !addrs.contains(&other),
            "GatewayPorts {gw}, asked {bind}: also bound {other}: {addrs:?}"
        );
        transfer_checked(loopback(port), MIB).await.expect("works");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permit_open_listen_and_key_options_allow_and_refuse() {
    let dir = test_dir();
    let echo = echo_server().await;
    let other = echo_server().await;
    let k_open = keygen(dir.path(), "open", KeyKind::Ed25519, None);
    let k_nofwd = keygen(dir.path(), "nofwd", KeyKind::Ed25519, None);
    let k_restrict = keygen(dir.path(), "restrict", KeyKind::Ed25519, None);
    let k_from = keygen(dir.path(), "from", KeyKind::Ed25519, None);
    let listen_ok = free_port();
    let lines = vec![
        format!(
            "permitopen=\"{}\",permitlisten=\"{listen_ok}\" {}",
            echo.hostport(),
            k_open.public_line
        ),
        format!("no-port-forwarding {}", k_nofwd.public_line),
        format!(
            "restrict,port-forwarding,permitopen=\"{}\" {}",
            other.hostport(),
            k_restrict.public_line
        ),
        format!("from=\"10.0.0.0/8,!127.0.0.1\" {}", k_from.public_line),
    ];
    let relay = relay_with(dir.path(), &lines, None).await;
    let l_check = |key: &Keypair, target: &str, name: &str| {
        // -W tells at once whether a direct-tcpip open is allowed: data flows or ssh exits 255.
        let mut cmd = relay.ssh(key);
        cmd.args(["-W", target, "root@127.0.0.1"]);
        run_with_timeout(cmd, dir.path(), name, Duration::from_secs(30))
    };
    let (st, _, err) = l_check(&k_open, &echo.hostport(), "open-ok");
    assert!(
        st.is_some_and(|s| s.success()),
        "permitted -W failed: {err}"
    );
    let (st, _, err) = l_check(&k_open, &other.hostport(), "open-denied");
    assert!(
        !st.unwrap().success() && err.contains("administratively prohibited"),
        "{err}"
    );
    let (st, _, err) = l_check(&k_nofwd, &echo.hostport(), "nofwd");
    assert!(
        !st.unwrap().success() && err.contains("administratively prohibited"),
        "{err}"
    );
    let (st, _, err) = l_check(&k_restrict, &other.hostport(), "restrict-ok");
    assert!(
        st.is_some_and(|s| s.success()),
        "restrict,port-forwarding: {err}"
    );
    let (st, _, err) = l_check(&k_from, &echo.hostport(), "from");
    assert!(
        !st.unwrap().success() && err.contains("Permission denied"),
        "{err}"
    );
    // permitlisten: the listed port works, another is refused with OpenSSH's message.
    let mut cmd = relay.ssh(&k_open);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("{listen_ok}:{}", echo.hostport()))
        .arg("root@127.0.0.1");
    let mut ok = spawn_logged(cmd, dir.path(), "listen-ok");
    wait_listening(&mut ok, loopback(listen_ok), UP_TIMEOUT)
        .await
        .expect("permitted -R");
    let mut cmd = relay.ssh(&k_open);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("0:{}", echo.hostport()))
        .arg("root@127.0.0.1");
    let (st, _, err) = run_with_timeout(cmd, dir.path(), "listen-denied", Duration::from_secs(30));
    assert_eq!(st.and_then(|s| s.code()), Some(255));
    assert!(
        err.contains("remote port forwarding failed for listen port 0"),
        "{err}"
    );
    // Every refusal is logged with the key's fingerprint and a reason.
    let log = relay.child.stderr_text();
    assert!(
        log.contains("forward refused") && log.contains(&k_open.fingerprint()),
        "{log}"
    );
    // Server-wide PermitOpen further limits every key.
    let relay2 = Relay::start(
        dir.path(),
        "relay2",
        &[&k_restrict.public_line],
        Some(&format!("permit_open = [\"{}\"]\n", echo.hostport())),
        &[],
    )
    .await;
    let mut cmd = relay2.ssh(&k_restrict);
    cmd.args(["-W", &other.hostport(), "root@127.0.0.1"]);
    let (st, _, err) = run_with_timeout(
        cmd,
        dir.path(),
        "server-permitopen",
        Duration::from_secs(30),
    );
    assert!(
        !st.unwrap().success() && err.contains("administratively prohibited"),
        "{err}"
    );
}

/// `ssh -W target` through `relay` with stdin closed: (exit status, stdout, stderr).
fn ssh_w(
    relay: &Relay,
    key: &Keypair,
    dir: &std::path::Path,
    target: &str,
) -> (bool, String, String) {
    let mut cmd = relay.ssh(key);
    cmd.args(["-W", target, "root@127.0.0.1"]);
    let name = format!("W-{}", target.replace([':', '[', ']'], "_"));
    let (st, out, err) = run_with_timeout(cmd, dir, &name, Duration::from_secs(30));
    (st.is_some_and(|s| s.success()), out, err)
}

/// No open proxy by default: a key without permitopen reaches the listeners published through
/// the relay (the two-hop path `ssh -L PORT:localhost:RPORT B`, by name, IPv4 or IPv6), and
/// nothing else: not another service on B's loopback, not the relay's own SSH port, not its
/// metrics page (loopback, so it asks no token). `permit_open = ["any"]` opens B's network but
/// still not the relay's own addresses; only an entry naming one opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_forwards_reach_only_published_listeners_never_the_relay_itself() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let inside = echo_server().await; // a service on B's loopback nobody published
    let at_a = echo_server().await; // A's service, published with -R
    let flags = ["--metrics", "127.0.0.1:0"];
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &flags).await;
    let metrics = relay.metrics_addr().await;
    let ssh_port = relay.addr.port();
    let refused = |target: &str| {
        let (ok, out, err) = ssh_w(&relay, &key, dir.path(), target);
        assert!(
            !ok && err.contains("administratively prohibited") && out.is_empty(),
            "-W {target} must be refused: {err}{out}"
        );
    };
    refused(&inside.hostport());
    refused(&format!("localhost:{}", inside.addr.port()));
    refused(&format!("127.0.0.1:{ssh_port}"));
    refused(&format!("localhost:{ssh_port}"));
    refused(&format!("0.0.0.0:{ssh_port}"));
    refused(&format!("127.0.0.1:{}", metrics.port()));
    // A publishes its service; B's listener is reachable by every spelling of loopback.
    let rport = free_port();
    let mut cmd = relay.ssh(&key);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("{rport}:{}", at_a.hostport()))
        .arg("root@127.0.0.1");
    let mut a = spawn_logged(cmd, dir.path(), "ssh-A");
    wait_listening(&mut a, loopback(rport), UP_TIMEOUT)
        .await
        .expect("-R up");
    for target in [
        format!("localhost:{rport}"),
        format!("127.0.0.1:{rport}"),
        format!("[::1]:{rport}"),
    ] {
        let (ok, _, err) = ssh_w(&relay, &key, dir.path(), &target);
        assert!(ok, "-W {target} (published) failed: {err}");
    }
    // The seed's two-hop path: C's -L to the name localhost on B carries bytes to A.
    let lport = free_port();
    let mut cmd = relay.ssh(&key);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("127.0.0.1:{lport}:localhost:{rport}"))
        .arg("root@127.0.0.1");
    let mut c = spawn_logged(cmd, dir.path(), "ssh-C");
    wait_listening(&mut c, loopback(lport), UP_TIMEOUT)
        .await
        .expect("-L up");
    transfer_checked(loopback(lport), MIB)
        .await
        .expect("two-hop path");
    // The unpublished service is still out of reach, and every refusal said why.
    refused(&inside.hostport());
    let log = relay.child.stderr_text();
    assert!(
        log.contains("not a listener published through this relay"),
        "{log}"
    );
    assert!(
        log.contains("the relay's own SSH or metrics address"),
        "{log}"
    );
    // Opting in opens B's network, but not the relay's own addresses...
    let any = Relay::start(
        dir.path(),
        "relay-any",
        &[&key.public_line],
        Some(PERMIT_OPEN_ANY),
        &flags,
    )
    .await;
    let any_metrics = any.metrics_addr().await;
    let (ok, _, err) = ssh_w(&any, &key, dir.path(), &inside.hostport());
    assert!(ok, "permit_open any: {err}");
    for target in [
        format!("127.0.0.1:{}", any.addr.port()),
        format!("localhost:{}", any_metrics.port()),
    ] {
        let (ok, _, err) = ssh_w(&any, &key, dir.path(), &target);
        assert!(
            !ok && err.contains("administratively prohibited"),
            "-W {target}: {err}"
        );
    }
    // ...which only an entry naming one opens: here the relay's SSH port answers with its banner.
    let named = Relay::start(
        dir.path(),
        "relay-named",
        &[format!(
            "permitopen=\"127.0.0.1:{ssh_port}\" {}",
            key.public_line
        )],
        Some(PERMIT_OPEN_ANY),
        &[],
    )
    .await;
    let own = format!("127.0.0.1:{}", named.addr.port());
    let line = format!("permitopen=\"{own}\" {}", key.public_line);
    std::fs::write(&named.authorized_keys, format!("{line}\n")).unwrap();
    named.child.signal(nix::sys::signal::Signal::SIGHUP);
    named
        .child
        .stderr()
        .wait_for_line_async("reloaded authorized keys", Duration::from_secs(10))
        .await
        .expect("reloaded");
    let (_, out, err) = ssh_w(&named, &key, dir.path(), &own);
    assert!(
        out.starts_with("SSH-2.0-burrow"),
        "-W {own} named: {out}{err}"
    );
}

/// The unspecified address as a destination: Linux connects `0.0.0.0` to 127.0.0.1 and `::` to
/// ::1. A key that publishes a listener on one loopback family only (here `-R [::1]:P`, which
/// the default gateway_ports binds as asked) must not thereby open `0.0.0.0:P` — that is B's
/// own service on 127.0.0.1:P, which nobody published. It used to pass: the check matched a
/// wildcard destination with any listener of this host on that port, whatever its family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unspecified_destination_reaches_only_the_published_loopback_family() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let inside = echo_server().await; // B's own service on 127.0.0.1:P, not published
    let at_a = echo_server().await;
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &[]).await;
    let port = inside.addr.port();
    let mut cmd = relay.ssh(&key);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("[::1]:{port}:{}", at_a.hostport()))
        .arg("root@127.0.0.1");
    let mut a = spawn_logged(cmd, dir.path(), "ssh-A");
    let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    wait_listening(&mut a, v6, UP_TIMEOUT)
        .await
        .expect("-R [::1] up");
    for target in [format!("[::1]:{port}"), format!("[::]:{port}")] {
        let (ok, _, err) = ssh_w(&relay, &key, dir.path(), &target);
        assert!(ok, "-W {target} (published on ::1) failed: {err}");
    }
    for target in [format!("0.0.0.0:{port}"), format!("127.0.0.1:{port}")] {
        let (ok, out, err) = ssh_w(&relay, &key, dir.path(), &target);
        assert!(
            !ok && err.contains("administratively prohibited") && out.is_empty(),
            "-W {target} reached B's unpublished 127.0.0.1:{port}: {err}{out}"
        );
    }
    assert_eq!(
        inside
            .stats
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "B's own service was reached"
    );
}

/// The line README, SECURITY.md, the man page and packaging/etc/authorized_keys recommend for a
/// key that only publishes: the relay must start with it (it used to refuse: "expected
/// host:port"), and the key may listen but open no -L/-W/-D at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permitopen_none_is_accepted_and_closes_local_forwarding() {
    let dir = test_dir();
    let echo = echo_server().await;
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let port = free_port();
    let line = format!(
        "restrict,port-forwarding,permitlisten=\"{port}\",permitopen=\"none\" {}",
        key.public_line
    );
    let relay = relay_with(dir.path(), &[line], None).await;
    let mut cmd = relay.ssh(&key);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("{port}:{}", echo.hostport()))
        .arg("root@127.0.0.1");
    let mut r = spawn_logged(cmd, dir.path(), "ssh-R");
    wait_listening(&mut r, loopback(port), UP_TIMEOUT)
        .await
        .expect("-R up");
    transfer_checked(loopback(port), MIB)
        .await
        .expect("-R works");
    for (target, name) in [
        (echo.hostport(), "W-echo"),
        (format!("localhost:{port}"), "W-own"),
    ] {
        let mut cmd = relay.ssh(&key);
        cmd.args(["-W", &target, "root@127.0.0.1"]);
        let (st, _, err) = run_with_timeout(cmd, dir.path(), name, Duration::from_secs(30));
        assert!(
            !st.unwrap().success() && err.contains("administratively prohibited"),
            "-W {target}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shells_and_commands_are_refused_with_a_message_and_wrong_keys_counted() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let stranger = keygen(dir.path(), "stranger", KeyKind::Ed25519, None);
    let relay = relay_with(dir.path(), &[&key.public_line], None).await;
    let mut cmd = relay.ssh(&key);
    cmd.args(["root@127.0.0.1", "uname"]);
    let (st, out, err) = run_with_timeout(cmd, dir.path(), "ssh-uname", Duration::from_secs(30));
    assert!(!st.unwrap().success());
    assert!(out.is_empty(), "no command ran: {out}");
    assert!(err.contains("only forwards ports"), "{err}");
    let mut cmd = relay.ssh(&stranger);
    cmd.args(["-N", "root@127.0.0.1"]);
    let (st, _, err) = run_with_timeout(cmd, dir.path(), "ssh-stranger", Duration::from_secs(30));
    assert_eq!(st.and_then(|s| s.code()), Some(255));
    assert!(err.contains("Permission denied"), "{err}");
    let log = relay
        .child
        .stderr()
        .wait_for_line("authentication refused", Duration::from_secs(5))
        .expect("logged");
    assert!(
        log.contains(&stranger.fingerprint()) && log.contains("127.0.0.1"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_listener_is_taken_over_only_when_the_holder_is_dead() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = relay_with(dir.path(), &[&key.public_line], None).await;
    let echo1 = echo_server().await;
    let echo2 = echo_server().await;
    let port = free_port();
    let spec = |e: &Service| format!("{port}:{}", e.hostport());
    let mut cmd = relay.ssh(&key);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(spec(&echo1))
        .arg("root@127.0.0.1");
    let mut first = spawn_logged(cmd, dir.path(), "ssh-first");
    wait_listening(&mut first, loopback(port), UP_TIMEOUT)
        .await
        .expect("first -R");
    transfer_checked(loopback(port), MIB)
        .await
        .expect("first works");
    // While the first client is alive and answering, a second session of the same key must not
    // steal the port (as with OpenSSH).
    let mut cmd = relay.ssh(&key);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(spec(&echo2))
        .arg("root@127.0.0.1");
    let (st, _, err) =
        run_with_timeout(cmd, dir.path(), "ssh-second-live", Duration::from_secs(60));
    assert_eq!(st.and_then(|s| s.code()), Some(255), "{err}");
    assert!(
        err.contains(&format!(
            "remote port forwarding failed for listen port {port}"
        )),
        "{err}"
    );
    assert!(first.try_status().is_none());
    // Freeze the first client: its TCP connection stays open but nothing answers.
    first.freeze();
    let mut cmd = relay.ssh(&key);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(spec(&echo2))
        .arg("root@127.0.0.1");
    let started = std::time::Instant::now();
    let mut second = spawn_logged(cmd, dir.path(), "ssh-second");
    // The port now leads to the second client's target.
    relay.wait_port_moves_to(port, &echo2, &mut second).await;
    println!("takeover after {:?}", started.elapsed());
    assert!(relay.child.stderr_text().contains("taking its port over"));
    first.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_authorized_keys_without_dropping_sessions() {
    let dir = test_dir();
    let k1 = keygen(dir.path(), "k1", KeyKind::Ed25519, None);
    let k2 = keygen(dir.path(), "k2", KeyKind::Ed25519, None);
    let relay = relay_with(dir.path(), &[&k1.public_line], Some(PERMIT_OPEN_ANY)).await;
    let echo = echo_server().await;
    let mut cmd = relay.ssh(&k1);
    cmd.args(["-N", "-R"])
        .arg(format!("0:{}", echo.hostport()))
        .arg("root@127.0.0.1");
    let s1 = spawn_logged(cmd, dir.path(), "ssh-k1");
    let p1 = allocated_port(&s1, &format!("remote forward to {}", echo.hostport())).await;
    let try_k2 = |name: &str| {
        let mut cmd = relay.ssh(&k2);
        cmd.args(["-W", &echo.hostport(), "root@127.0.0.1"]);
        run_with_timeout(cmd, dir.path(), name, Duration::from_secs(30))
    };
    assert!(!try_k2("k2-before").0.unwrap().success());
    std::fs::write(
        &relay.authorized_keys,
        format!("{}\n{}\n", k1.public_line, k2.public_line),
    )
    .unwrap();
    relay.child.signal(nix_signal_hup());
    relay
        .child
        .stderr()
        .wait_for_line_async("reloaded authorized keys", Duration::from_secs(10))
        .await
        .expect("reload logged");
    assert!(
        try_k2("k2-after").0.unwrap().success(),
        "k2 accepted after reload"
    );
    transfer_checked(loopback(p1), MIB)
        .await
        .expect("k1's session survived the reload");
}

fn nix_signal_hup() -> nix::sys::signal::Signal {
    nix::sys::signal::Signal::SIGHUP
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_each_hold_a_remote_listener() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = relay_with(
        dir.path(),
        &[&key.public_line],
        Some("[limits]\nmax_listeners_per_key = 256\n"),
    )
    .await;
    let echo = echo_server().await;
    let mut clients = Vec::new();
    let mut ports = Vec::new();
    for batch in 0..4 {
        let mut started = Vec::new();
        for i in 0..50 {
            let mut cmd = relay.burrow_ssh(&key);
            cmd.args(["-N", "-R"])
                .arg(format!("0:{}", echo.hostport()))
                .arg("root@127.0.0.1");
            started.push(spawn_logged(cmd, dir.path(), &format!("c{batch}-{i}")));
        }
        for c in &started {
            ports.push(allocated_port(c, &format!("remote forward to {}", echo.hostport())).await);
        }
        clients.extend(started);
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 200, "200 distinct listeners");
    let mut tasks = tokio::task::JoinSet::new();
    for (i, p) in ports.iter().enumerate() {
        let addr = loopback(*p);
        tasks.spawn(async move {
            transfer_checked_within(addr, 16 * 1024, i as u64, Duration::from_secs(120)).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().expect("every listener forwards");
    }
    for c in &mut clients {
        assert!(
            c.try_status().is_none(),
            "{} exited: {}",
            c.name(),
            c.stderr_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_relay_cleanly() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let mut relay = relay_with(dir.path(), &[&key.public_line], None).await;
    let echo = echo_server().await;
    let mut cmd = relay.ssh(&key);
    cmd.args(["-N", "-R"])
        .arg(format!("0:{}", echo.hostport()))
        .arg("root@127.0.0.1");
    let c = spawn_logged(cmd, dir.path(), "ssh-R");
    let port = allocated_port(&c, &format!("remote forward to {}", echo.hostport())).await;
    relay.child.signal(nix::sys::signal::Signal::SIGTERM);
    let st = relay
        .child
        .wait_timeout(Duration::from_secs(20))
        .expect("relay exits after SIGTERM");
    assert!(st.success(), "exit status {st}");
    assert!(
        !wait_port(loopback(port), Duration::from_millis(300)).await,
        "listener closed"
    );
    assert!(
        !wait_port(relay.addr, Duration::from_millis(300)).await,
        "relay port closed"
    );
}
