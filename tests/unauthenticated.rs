//! Unauthenticated and guessing peers against `burrow serve`: idle and slowloris connections
//! cut at the login grace time, the cap on unauthenticated connections, MaxAuthTries, and the
//! per-source brute-force slowdown. SECURITY.md names these tests for its promises.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::burrow::{Relay, PERMIT_OPEN_ANY, UP_TIMEOUT};
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// `ssh -N -L 127.0.0.1:PORT:target` through the relay (OpenSSH client), once it forwards.
async fn openssh_local_forward(
    relay: &Relay,
    key: &Keypair,
    dir: &std::path::Path,
    target: &str,
) -> (ChildGuard, SocketAddr) {
    let mut cmd = relay.ssh(key);
    let port = free_port();
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("127.0.0.1:{port}:{target}"))
        .arg("root@127.0.0.1");
    let mut child = spawn_logged(cmd, dir, "ssh-L");
    wait_listening(&mut child, loopback(port), UP_TIMEOUT)
        .await
        .expect("-L through the relay comes up");
    (child, loopback(port))
}

/// The relay's banner line on a fresh connection (proves it was accepted and is being served).
async fn banner(s: TcpStream) -> (String, BufReader<TcpStream>) {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line)).await;
    (line, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_connections_are_cut_at_the_login_grace_time() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let grace = Duration::from_secs(2);
    let config = &format!("{PERMIT_OPEN_ANY}[limits]\nlogin_grace_time_secs = 2\n");
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], Some(config), &[]).await;
    let echo = echo_server().await;
    let (_ssh, laddr) = openssh_local_forward(&relay, &key, dir.path(), &echo.hostport()).await;

    let start = Instant::now();
    let mut idle = TcpStream::connect(relay.addr).await.unwrap();
    let slow = TcpStream::connect(relay.addr).await.unwrap();
    let (mut slow_rd, mut slow_wr) = slow.into_split();
    // Slowloris: an SSH version line, one byte every 300 ms, never finished.
    let dribble = tokio::spawn(async move {
        for b in b"SSH-2.0-slowloris-that-never-ends-its-version-line".iter() {
            if slow_wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let (_, idle_closed) = read_until_closed(&mut idle, Duration::from_secs(20)).await;
    let idle_after = start.elapsed();
    let mut buf = [0u8; 4096];
    let slow_closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match slow_rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    let slow_after = start.elapsed();
    dribble.abort();
    println!("idle cut after {idle_after:?}, slowloris after {slow_after:?} (grace {grace:?})");
    assert!(idle_closed && slow_closed, "both cut within 20 s");
    assert!(
        idle_after >= grace && slow_after >= grace,
        "not before the grace time"
    );
    let cut = relay
        .child
        .stderr()
        .wait_until_async(Duration::from_secs(5), |log| {
            (log.matches("login grace time exceeded").count() >= 2).then_some(())
        })
        .await;
    assert!(cut.is_some(), "{}", relay.child.stderr_text());
    // The authenticated session outlived the grace time and still forwards.
    transfer_checked(laddr, MIB)
        .await
        .expect("authenticated session unaffected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_1001st_unauthenticated_connection_is_refused_and_sessions_go_on() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let cap = 1000;
    let config =
        format!("{PERMIT_OPEN_ANY}[limits]\nmax_startups = {cap}\nlogin_grace_time_secs = 90\n");
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], Some(&config), &[]).await;
    let echo = echo_server().await;
    let (_ssh, laddr) = openssh_local_forward(&relay, &key, dir.path(), &echo.hostport()).await;

    // Fill the cap with connections that never authenticate; each got the relay's banner.
    let mut held = Vec::new();
    for i in 0..cap {
        let s = TcpStream::connect(relay.addr).await.unwrap();
        let (line, r) = banner(s).await;
        assert!(line.starts_with("SSH-2.0-"), "connection {i}: {line:?}");
        held.push(r);
    }
    // The next one is closed without a banner.
    let mut extra = TcpStream::connect(relay.addr).await.unwrap();
    let (got, closed) = read_until_closed(&mut extra, Duration::from_secs(10)).await;
    assert!(
        closed && got.is_empty(),
        "connection {} got {got:?}",
        cap + 1
    );
    assert!(relay
        .child
        .stderr()
        .wait_for_line_async(
            "too many unauthenticated connections",
            Duration::from_secs(5)
        )
        .await
        .is_some_and(|l| l.contains("127.0.0.1")));
    // A real client is turned away too while the cap is full...
    let mut cmd = relay.ssh(&key);
    cmd.args(["-N", "root@127.0.0.1"]);
    let (st, _, err) = run_with_timeout(cmd, dir.path(), "ssh-full", Duration::from_secs(30));
    assert_eq!(st.and_then(|s| s.code()), Some(255), "{err}");
    // ...but the established session keeps forwarding.
    transfer_checked(laddr, 4 * MIB)
        .await
        .expect("established session unaffected by the flood");
    // Freed slots are served again.
    held.truncate(cap / 2);
    let mut served = false;
    for _ in 0..50 {
        let s = TcpStream::connect(relay.addr).await.unwrap();
        if banner(s).await.0.starts_with("SSH-2.0-") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "slots freed by closed connections are reused");
}

/// `failures=N` and `delay_ms=D` of each "authentication refused" line.
fn refusals(log: &str) -> Vec<(u64, u64)> {
    let field = |l: &str, k: &str| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse::<u64>().ok())
    };
    log.lines()
        .filter(|l| l.contains("authentication refused"))
        .filter_map(|l| Some((field(l, "failures=")?, field(l, "delay_ms=")?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_auth_failures_are_logged_with_the_source_and_slowed_down() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let stranger = keygen(dir.path(), "stranger", KeyKind::Ed25519, None);
    let config = "[limits]\nauth_free_failures = 2\nauth_max_delay_secs = 4\n";
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], Some(config), &[]).await;
    let attempt = |k: &Keypair, name: &str| {
        let mut cmd = relay.ssh(k);
        cmd.args(["root@127.0.0.1", "true"]);
        let t = Instant::now();
        let (st, _, err) = run_with_timeout(cmd, dir.path(), name, Duration::from_secs(60));
        (st.and_then(|s| s.code()), err, t.elapsed())
    };
    let mut took = Vec::new();
    for i in 0..5 {
        let (code, err, elapsed) = attempt(&stranger, &format!("guess{i}"));
        assert_eq!(code, Some(255), "{err}");
        // Only public keys are offered: no password to guess.
        assert!(err.contains("Permission denied (publickey)"), "{err}");
        took.push(elapsed);
    }
    println!("failed attempts took {took:?}");
    let log = relay.child.stderr_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authentication refused"))
        .collect();
    assert_eq!(lines.len(), 5, "{log}");
    assert!(lines
        .iter()
        .all(|l| l.contains("peer=127.0.0.1:") && l.contains(&stranger.fingerprint())));
    assert_eq!(
        refusals(&log),
        [(1, 0), (2, 0), (3, 1000), (4, 2000), (5, 4000)],
        "free allowance, then doubling to the cap"
    );
    assert!(took[3] >= Duration::from_secs(2) && took[4] >= Duration::from_secs(4));
    // The owner of a listed key gets in at once, and that forgives the source.
    let (code, err, _) = attempt(&key, "owner");
    assert_eq!(
        code,
        Some(1),
        "authenticated, then refused the command: {err}"
    );
    assert!(err.contains("only forwards ports"), "{err}");
    attempt(&stranger, "after-forgiven");
    let after = refusals(&relay.child.stderr_text());
    assert_eq!(after.last(), Some(&(1, 0)), "a login forgives its source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_auth_tries_ends_a_connection_that_keeps_guessing() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let guesses: Vec<Keypair> = (0..6)
        .map(|i| keygen(dir.path(), &format!("guess{i}"), KeyKind::Ed25519, None))
        .collect();
    let config = "[limits]\nmax_auth_tries = 3\nauth_free_failures = 100\n";
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], Some(config), &[]).await;
    let mut cmd = relay.ssh(&guesses[0]);
    for k in &guesses[1..] {
        cmd.arg("-i").arg(&k.private);
    }
    cmd.args(["-N", "root@127.0.0.1"]);
    let (st, _, err) = run_with_timeout(cmd, dir.path(), "ssh-6-keys", Duration::from_secs(60));
    assert_eq!(st.and_then(|s| s.code()), Some(255), "{err}");
    assert!(err.contains("Too many authentication"), "{err}");
    let refused = refusals(&relay.child.stderr_text()).len();
    assert!(refused <= 3, "{refused} keys tried on one connection");
}
