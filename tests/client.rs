//! `burrow ssh` against a real OpenSSH sshd: every forward kind, authentication, host keys,
//! failure handling, and a stalled reader that must not freeze the session.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use common::burrow::{
    allocated_port, askpass_script, burrow_ssh, local_forward, pids_with_cmdline, UP_TIMEOUT,
};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;

fn setup() -> (tempfile::TempDir, Keypair, Sshd) {
    let dir = test_dir();
    let key = keygen(dir.path(), "id_ed25519", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions::with_keys(&[&key]));
    (dir, key, sshd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forward_moves_64_mib_both_ways() {
    let (dir, key, sshd) = setup();
    let echo = echo_server().await;
    let (_burrow, addr) = local_forward(&sshd, &key, dir.path(), &echo.hostport(), &[]).await;
    let t = transfer_checked(addr, 64 * MIB)
        .await
        .expect("64 MiB echo through -L");
    assert_eq!(t.bytes, 64 * MIB);
    println!("-L echo: {:.1} MiB/s each way", t.mib_per_s());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forward_propagates_eof_both_ways() {
    let (dir, key, sshd) = setup();
    // Server-side EOF: a source sends N bytes and closes; the client sees exactly N, then EOF.
    let source = source_server(3 * MIB, 7).await;
    let (_b1, addr) = local_forward(&sshd, &key, dir.path(), &source.hostport(), &[]).await;
    let (n, sha) = fetch_hashed(addr, Duration::from_secs(60))
        .await
        .expect("fetch");
    assert_eq!((n, sha), (3 * MIB, det_sha256(7, 3 * MIB)));
    // Client-side EOF: a sink reads until EOF, which only comes if our half-close crossed.
    let mut sink = sink_server().await;
    let (_b2, addr2) = local_forward(&sshd, &key, dir.path(), &sink.addr.to_string(), &[]).await;
    let sent = push_hashed(addr2, 2 * MIB, 9, Duration::from_secs(60))
        .await
        .expect("push");
    // The readiness probe of `local_forward` reached the sink too: skip its empty connection.
    let mut got = sink
        .next_result(Duration::from_secs(30))
        .await
        .expect("sink saw EOF");
    if got.bytes == 0 {
        got = sink
            .next_result(Duration::from_secs(30))
            .await
            .expect("sink saw EOF");
    }
    assert_eq!((got.bytes, got.sha256), (2 * MIB, sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forward_port_zero_is_reported_and_works() {
    let (dir, key, sshd) = setup();
    let echo = echo_server().await;
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-N", "-R"])
        .arg(format!("0:{}", echo.hostport()))
        .arg(sshd.dest("root"));
    let child = spawn_logged(cmd, dir.path(), "burrow-R0");
    let port = allocated_port(&child, &format!("remote forward to {}", echo.hostport())).await;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    assert!(wait_port(addr, UP_TIMEOUT).await, "sshd listens on {addr}");
    let t = transfer_checked(addr, 64 * MIB)
        .await
        .expect("64 MiB echo through -R");
    println!("-R echo: {:.1} MiB/s each way", t.mib_per_s());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forward_to_another_host_of_the_local_network() {
    let (dir, key, sshd) = setup();
    // "Another machine": an echo service on 127.0.0.2, not the loopback address ssh defaults to.
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let target = listener.local_addr().unwrap();
    let echo_task = tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = sock.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("0:{target}"))
        .arg(sshd.dest("root"));
    let mut child = spawn_logged(cmd, dir.path(), "burrow-R");
    let port = allocated_port(&child, &format!("remote forward to {target}")).await;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_listening(&mut child, addr, UP_TIMEOUT)
        .await
        .expect("-R listener");
    transfer_checked(addr, 4 * MIB)
        .await
        .expect("echo via 127.0.0.2");
    echo_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_forward_serves_socks5_socks5h_and_socks4a() {
    if !have("curl") {
        println!("SKIP: curl not installed");
        return;
    }
    let (dir, key, sshd) = setup();
    let body: Vec<u8> = det_bytes(3, 200_000);
    let web = http_server(body.clone()).await;
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-N", "-D", "127.0.0.1:0"]).arg(sshd.dest("root"));
    let child = spawn_logged(cmd, dir.path(), "burrow-D");
    let port = allocated_port(&child, "dynamic forward").await;
    let proxy = format!("127.0.0.1:{port}");
    let cases = [
        ("--socks5", format!("http://127.0.0.1:{}/", web.port())),
        (
            "--socks5-hostname",
            format!("http://localhost:{}/", web.port()),
        ),
        ("--socks4a", format!("http://localhost:{}/", web.port())),
        ("--socks4", format!("http://127.0.0.1:{}/", web.port())),
    ];
    for (flag, url) in cases {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", flag, &proxy, &url])
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "curl {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            sha256_hex(&out.stdout),
            sha256_hex(&body),
            "body via {flag}"
        );
    }
    // A refused target gets a SOCKS error, not a silent close.
    let closed = free_port();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "--socks5",
            &proxy,
            &format!("http://127.0.0.1:{closed}/"),
        ])
        .output()
        .expect("run curl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("refused") || err.contains("socks"),
        "curl said: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_forward_works_as_openssh_proxycommand() {
    let (dir, key, jump) = setup();
    let target = Sshd::start(SshdOptions::with_keys(&[&key]));
    let proxy = format!(
        "{} ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -i {} -p {} -W %h:%p root@127.0.0.1",
        burrow_bin().display(),
        jump.known_hosts.display(),
        key.private.display(),
        jump.port
    );
    let mut cmd = target.ssh_command_with_key(&key);
    cmd.arg("-o")
        .arg(format!("ProxyCommand={proxy}"))
        .arg(target.dest("root"))
        .arg("echo via-proxy");
    let (st, out, err) =
        run_with_timeout(cmd, dir.path(), "ssh-proxycommand", Duration::from_secs(60));
    assert!(
        st.is_some_and(|s| s.success()),
        "ssh via burrow -W failed: {err}"
    );
    assert_eq!(out.trim(), "via-proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_through_two_sshd_hops() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id_ed25519", KeyKind::Ed25519, None);
    let hop1 = Sshd::start(SshdOptions::with_keys(&[&key]));
    let hop2 = Sshd::start(SshdOptions::with_keys(&[&key]));
    let dest = Sshd::start(SshdOptions::with_keys(&[&key]));
    // Every hop is checked against known_hosts: one file holding all three host keys.
    let kh = dir.path().join("known_hosts_all");
    let mut all = String::new();
    for s in [&hop1, &hop2, &dest] {
        all.push_str(&std::fs::read_to_string(&s.known_hosts).unwrap());
    }
    std::fs::write(&kh, all).unwrap();
    let cfg = dir.path().join("ssh_config");
    std::fs::write(
        &cfg,
        format!(
            "Host *\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  BatchMode yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n",
            key.private.display(),
            kh.display()
        ),
    )
    .unwrap();
    let echo = echo_server().await;
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("ssh")
        .env_remove("SSH_AUTH_SOCK")
        .arg("-F")
        .arg(&cfg)
        .arg("-J")
        .arg(format!(
            "127.0.0.1:{},root@127.0.0.1:{}",
            hop1.port, hop2.port
        ))
        .args(["-p", &dest.port.to_string(), "-N", "-L"])
        .arg(format!("127.0.0.1:0:{}", echo.hostport()))
        .arg("127.0.0.1");
    let child = spawn_logged(cmd, dir.path(), "burrow-J");
    let port = allocated_port(&child, &format!("local forward to {}", echo.hostport())).await;
    transfer_checked(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), 4 * MIB)
        .await
        .expect("echo through two jumps");
    // The destination saw a login that came through hop2, not from us directly.
    assert!(dest
        .wait_log("Accepted publickey", Duration::from_secs(5))
        .is_some());
    assert!(hop2
        .wait_log("Accepted publickey", Duration::from_secs(5))
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_types_agent_and_encrypted_keys_authenticate() {
    let dir = test_dir();
    let ecdsa = keygen(dir.path(), "id_ecdsa", KeyKind::Ecdsa, None);
    let rsa = keygen(dir.path(), "id_rsa", KeyKind::Rsa, None);
    let locked = keygen(
        dir.path(),
        "id_locked",
        KeyKind::Ed25519,
        Some("s3cret phrase"),
    );
    let agent_key = keygen(dir.path(), "id_agent", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions::with_keys(&[&ecdsa, &rsa, &locked, &agent_key]));
    let echo = echo_server().await;
    for k in [&ecdsa, &rsa] {
        let (_b, addr) = local_forward(&sshd, k, dir.path(), &echo.hostport(), &[]).await;
        transfer_checked(addr, MIB).await.expect("transfer");
    }
    // Encrypted key: the passphrase comes from SSH_ASKPASS (BatchMode must be off to prompt).
    let askpass = askpass_script(dir.path(), "s3cret phrase");
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("ssh")
        .env_remove("SSH_AUTH_SOCK")
        .args(["-F", "/dev/null"]);
    for o in sshd.client_options() {
        cmd.arg("-o").arg(o);
    }
    cmd.env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force");
    cmd.args(["-p", &sshd.port.to_string(), "-i"])
        .arg(&locked.private);
    cmd.args(["-N", "-L"])
        .arg(format!("127.0.0.1:0:{}", echo.hostport()))
        .arg(sshd.dest("root"));
    let child = spawn_logged(cmd, dir.path(), "burrow-locked");
    let port = allocated_port(&child, &format!("local forward to {}", echo.hostport())).await;
    transfer_checked(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), MIB)
        .await
        .expect("locked key");
    // Agent: no -i at all; the key comes from a real ssh-agent.
    let agent = Agent::start(dir.path());
    agent.add(&agent_key);
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("ssh")
        .args(["-F", "/dev/null", "-o", "BatchMode=yes"]);
    for o in sshd.client_options() {
        cmd.arg("-o").arg(o);
    }
    agent.env(&mut cmd);
    cmd.env("HOME", dir.path()); // no default key files to fall back on
    cmd.args(["-p", &sshd.port.to_string(), "-N", "-L"])
        .arg(format!("127.0.0.1:0:{}", echo.hostport()))
        .arg(sshd.dest("root"));
    let child = spawn_logged(cmd, dir.path(), "burrow-agent");
    let port = allocated_port(&child, &format!("local forward to {}", echo.hostport())).await;
    transfer_checked(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), MIB)
        .await
        .expect("agent key");
    assert!(
        sshd.log().contains(&agent_key.fingerprint()),
        "sshd accepted the agent's key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_keyboard_interactive_login() {
    if !is_root() {
        println!("SKIP: creating a test user needs root");
        return;
    }
    let dir = test_dir();
    let user = TestUser::create();
    let sshd = Sshd::start(SshdOptions::default().password_auth());
    let echo = echo_server().await;
    let askpass = askpass_script(dir.path(), &user.password);
    for (name, extra) in [
        ("kbdint", vec!["-o", "PasswordAuthentication=no"]),
        ("password", vec!["-o", "KbdInteractiveAuthentication=no"]),
    ] {
        let mut cmd = Command::new(burrow_bin());
        cmd.arg("ssh")
            .env_remove("SSH_AUTH_SOCK")
            .args(["-F", "/dev/null"]);
        cmd.env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force");
        cmd.env("HOME", dir.path());
        for o in sshd.client_options() {
            cmd.arg("-o").arg(o);
        }
        cmd.args(["-o", "PubkeyAuthentication=no"]).args(&extra);
        cmd.args(["-p", &sshd.port.to_string(), "-N", "-L"])
            .arg(format!("127.0.0.1:0:{}", echo.hostport()))
            .arg(sshd.dest(&user.name));
        let child = spawn_logged(cmd, dir.path(), &format!("burrow-{name}"));
        let port = allocated_port(&child, &format!("local forward to {}", echo.hostport())).await;
        transfer_checked(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), MIB)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // A wrong password ends with ssh's message and status 255.
    let bad = askpass_script(&dir.path().join("."), "wrong");
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("ssh").args([
        "-F",
        "/dev/null",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "NumberOfPasswordPrompts=1",
    ]);
    cmd.env("SSH_ASKPASS", &bad)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("HOME", dir.path());
    for o in sshd.client_options() {
        cmd.arg("-o").arg(o);
    }
    cmd.args(["-p", &sshd.port.to_string(), "-N"])
        .arg(sshd.dest(&user.name));
    let (st, _, err) = run_with_timeout(cmd, dir.path(), "burrow-badpw", Duration::from_secs(60));
    assert_eq!(st.and_then(|s| s.code()), Some(255), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_accept_new_then_changed_key_is_refused() {
    let (dir, key, sshd) = setup();
    let kh = dir.path().join("kh");
    let run_with = |policy: &str, name: &str, extra: &[&str]| {
        let mut cmd = Command::new(burrow_bin());
        cmd.arg("ssh")
            .env_remove("SSH_AUTH_SOCK")
            .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .args(extra);
        cmd.arg("-o")
            .arg(format!("UserKnownHostsFile={}", kh.display()));
        cmd.args(["-o", "GlobalKnownHostsFile=/dev/null", "-o"])
            .arg(format!("StrictHostKeyChecking={policy}"));
        cmd.args(["-i"])
            .arg(&key.private)
            .args(["-p", &sshd.port.to_string(), "-W"]);
        cmd.arg("127.0.0.1:9").arg(sshd.dest("root"));
        run_with_timeout(cmd, dir.path(), name, Duration::from_secs(60))
    };
    let run = |policy: &str, name: &str| run_with(policy, name, &[]);
    // Unknown host with StrictHostKeyChecking=yes: refused, nothing written.
    let (st, _, err) = run("yes", "strict");
    assert_eq!(st.and_then(|s| s.code()), Some(255));
    assert!(err.contains("Host key verification failed."), "{err}");
    assert!(!kh.exists() || std::fs::read_to_string(&kh).unwrap().is_empty());
    // accept-new: remembered in [host]:port form.
    let (_, _, err) = run("accept-new", "accept-new");
    let text = std::fs::read_to_string(&kh).unwrap_or_default();
    let host_key = sshd.host_key_line.split_whitespace().nth(1).unwrap();
    assert!(
        text.contains(&format!("[127.0.0.1]:{}", sshd.port)) && text.contains(host_key),
        "{text}\n{err}"
    );
    assert!(err.contains("Permanently added"), "{err}");
    // With -q the key is remembered without a word, as ssh -q does.
    std::fs::remove_file(&kh).unwrap();
    let (_, _, err) = run_with("accept-new", "accept-new-quiet", &["-q"]);
    let text = std::fs::read_to_string(&kh).unwrap_or_default();
    assert!(text.contains(host_key), "{text}\n{err}");
    assert!(!err.contains("Permanently added"), "{err}");
    // Now a different key for the same host: refused with OpenSSH's warning, also for accept-new.
    let other = keygen(dir.path(), "other_host", KeyKind::Ed25519, None);
    let other_key = other
        .public_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(&kh, format!("[127.0.0.1]:{} {other_key}\n", sshd.port)).unwrap();
    let (st, _, err) = run("accept-new", "changed");
    assert_eq!(st.and_then(|s| s.code()), Some(255));
    assert!(
        err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{err}"
    );
    assert!(err.contains("Host key verification failed."), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_on_forward_failure_names_the_taken_port() {
    let (dir, key, sshd) = setup();
    // Taken on both loopback addresses: sshd binds "localhost" as 127.0.0.1 and ::1 and succeeds
    // if either works.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let taken6 = std::net::TcpListener::bind(("::1", port)).ok();
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("127.0.0.1:{port}:127.0.0.1:9"))
        .arg(sshd.dest("root"));
    let (st, _, err) = run_with_timeout(cmd, dir.path(), "burrow-taken", Duration::from_secs(60));
    assert_eq!(st.and_then(|s| s.code()), Some(255), "{err}");
    assert!(
        err.contains(&format!("bind [127.0.0.1]:{port}: Address already in use")),
        "{err}"
    );
    assert!(err.contains("Could not request local forwarding."), "{err}");
    // -R to a port sshd cannot bind: OpenSSH's "remote port forwarding failed" message.
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("{port}:127.0.0.1:9"))
        .arg(sshd.dest("root"));
    let (st, _, err) = run_with_timeout(cmd, dir.path(), "burrow-taken-R", Duration::from_secs(60));
    assert_eq!(st.and_then(|s| s.code()), Some(255), "{err}");
    assert!(
        err.contains(&format!(
            "Error: remote port forwarding failed for listen port {port}"
        )),
        "{err}"
    );
    drop((taken, taken6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_returns_only_when_the_port_accepts() {
    let (dir, key, sshd) = setup();
    let echo = echo_server().await;
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-f", "-N", "-L"])
        .arg(format!("127.0.0.1:0:{}", echo.hostport()))
        .arg(sshd.dest("root"));
    let (st, _, err) = run_with_timeout(cmd, dir.path(), "burrow-f", Duration::from_secs(60));
    let marker = sshd.known_hosts.display().to_string();
    let pids = pids_with_cmdline(&marker);
    let cleanup = scopeguard(pids.clone());
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{err}");
    let port = err
        .lines()
        .find_map(parse_allocated_port)
        .unwrap_or_else(|| panic!("{err}"));
    // No waiting, no retry: the port must accept right now.
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect(addr)
        .await
        .expect("forward ready when -f returned");
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(pids.len(), 1, "exactly one background burrow: {pids:?}");
    drop(cleanup);
}

/// Kills the given PIDs on drop (the detached `-f` child this test started).
fn scopeguard(pids: Vec<u32>) -> impl Drop {
    struct Kill(Vec<u32>);
    impl Drop for Kill {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = Command::new("kill").arg(p.to_string()).status();
            }
        }
    }
    Kill(pids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_connections_through_one_local_forward() {
    let (dir, key, sshd) = setup();
    let echo = echo_server().await;
    let (_b, addr) = local_forward(&sshd, &key, dir.path(), &echo.hostport(), &[]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50u64 {
        tasks.spawn(async move {
            transfer_checked_within(addr, 512 * 1024, i, Duration::from_secs(120)).await
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        r.expect("task").expect("transfer");
        ok += 1;
    }
    assert_eq!(ok, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_does_not_freeze_other_forwards_or_keepalives() {
    let (dir, key, sshd) = setup();
    let endless = endless_writer_server().await;
    let echo = echo_server().await;
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args([
        "-N",
        "-o",
        "ServerAliveInterval=1",
        "-o",
        "ServerAliveCountMax=3",
        "-L",
    ])
    .arg(format!("127.0.0.1:0:{}", endless.hostport()))
    .arg("-L")
    .arg(format!("127.0.0.1:0:{}", echo.hostport()))
    .arg(sshd.dest("root"));
    let mut child = spawn_logged(cmd, dir.path(), "burrow-stall");
    let stall_port =
        allocated_port(&child, &format!("local forward to {}", endless.hostport())).await;
    let echo_port = allocated_port(&child, &format!("local forward to {}", echo.hostport())).await;
    // Open the stalled connection and never read from it.
    let _stalled = TcpStream::connect((Ipv4Addr::LOCALHOST, stall_port))
        .await
        .unwrap();
    let t0 = Instant::now();
    while Stats::get(&endless.stats.bytes_out) < 4 * MIB && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other forward keeps transferring at full speed while the first one is stuck.
    let t = transfer_checked(SocketAddr::from((Ipv4Addr::LOCALHOST, echo_port)), 32 * MIB)
        .await
        .expect("second forward works while the first reader stalls");
    println!("echo beside a stalled reader: {:.1} MiB/s", t.mib_per_s());
    // Longer than ServerAliveInterval * CountMax: keepalives must have been answered meanwhile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        child.try_status().is_none(),
        "session died: {}",
        child.stderr_text()
    );
    // Memory stays bounded: the writer is held back by the window, not buffered without end.
    let a = Stats::get(&endless.stats.bytes_out);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = Stats::get(&endless.stats.bytes_out);
    println!("endless writer: {a} bytes, +{} in 2 s while stalled", b - a);
    assert!(b < 64 * MIB, "stalled stream buffered {b} bytes");
    assert!(
        b - a < MIB,
        "stalled stream still flowing: +{} bytes",
        b - a
    );
    transfer_checked(SocketAddr::from((Ipv4Addr::LOCALHOST, echo_port)), MIB)
        .await
        .expect("still working");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_stdio_and_returns_the_exit_status() {
    let (dir, key, sshd) = setup();
    let run = |command: &str, name: &str| {
        let mut cmd = burrow_ssh(&sshd, Some(&key));
        cmd.arg(sshd.dest("root")).arg(command);
        run_with_timeout(cmd, dir.path(), name, Duration::from_secs(60))
    };
    let (st, out, err) = run("echo out; echo err >&2; exit 0", "exec0");
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{err}");
    assert_eq!(out.trim(), "out");
    // (sshd at LogLevel DEBUG adds its own debug lines to the session's stderr.)
    assert!(
        err.lines().any(|l| l.trim() == "err"),
        "stderr kept apart: {err}"
    );
    let (st, _, _) = run("exit 3", "exec3");
    assert_eq!(st.and_then(|s| s.code()), Some(3));
    let (st, _, _) = run("kill -TERM $$", "execsig");
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(128 + 15),
        "signal death reported as 128+n"
    );
    // 64 MiB through stdin, EOF sent as channel EOF: the remote sha256sum sees all of it.
    let data_path = dir.path().join("data");
    std::fs::write(&data_path, det_bytes(11, 64 << 20)).unwrap();
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.arg(sshd.dest("root")).arg("sha256sum");
    cmd.stdin(std::fs::File::open(&data_path).unwrap());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let remote = String::from_utf8_lossy(&out.stdout);
    assert!(
        remote.starts_with(&det_sha256(11, 64 << 20)),
        "remote saw {remote}"
    );
}
