//! Hostile or broken peers that hold a key, and SOCKS clients: the per-key channel and listener
//! caps, ports of other keys, authorized_keys reloads that must not weaken the relay, and SOCKS
//! clients that send garbage or stop mid-handshake. SECURITY.md names these tests for its
//! promises.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::burrow::{allocated_port, burrow_ssh, Relay, PERMIT_OPEN_ANY, UP_TIMEOUT};
use common::procstat::{runtime_stats, settle};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `burrow ssh -N -L 127.0.0.1:0:TARGET` through `relay` with `key`: the process and the
/// local port, once allocated.
async fn local_forward_through(
    relay: &Relay,
    key: &Keypair,
    dir: &std::path::Path,
    target: &str,
) -> (ChildGuard, u16) {
    let mut cmd = relay.burrow_ssh(key);
    cmd.args(["-N", "-L"])
        .arg(format!("127.0.0.1:0:{target}"))
        .arg("root@127.0.0.1");
    let client = spawn_logged(cmd, dir, "burrow-L");
    let port = allocated_port(&client, &format!("local forward to {target}")).await;
    (client, port)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_opening_channels_without_end_hits_its_cap_with_a_failure_reply() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    // Four forwarded connections plus the resumable-streams control channel that `burrow ssh`
    // keeps open to a burrow relay (it roams): every channel counts against the cap.
    let line = format!("burrow-max-channels=5 {}", key.public_line);
    let relay = Relay::start(dir.path(), "relay", &[&line], Some(PERMIT_OPEN_ANY), &[]).await;
    let echo = echo_server().await;
    let (mut client, port) =
        local_forward_through(&relay, &key, dir.path(), &echo.hostport()).await;
    let addr = loopback(port);

    /// Opens a forwarded connection and checks it echoes; None when it was closed instead.
    async fn open(addr: SocketAddr) -> Option<TcpStream> {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut buf)).await {
            Ok(Ok(_)) if &buf == b"ping" => Some(s),
            _ => None,
        }
    }
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(
            open(addr)
                .await
                .unwrap_or_else(|| panic!("channel {i} within the cap")),
        );
    }
    // 50 more at once: every one is refused, none hangs.
    let attempts: Vec<_> = (0..50).map(|_| tokio::spawn(open(addr))).collect();
    let mut refused = 0;
    for a in attempts {
        if a.await.unwrap().is_none() {
            refused += 1;
        }
    }
    assert_eq!(refused, 50, "channels beyond the cap are refused");
    assert!(client
        .stderr()
        .wait_for_line_async("open failed: resource shortage", Duration::from_secs(5))
        .await
        .is_some());
    assert!(relay
        .child
        .stderr()
        .wait_for_line_async("open channel cap reached", Duration::from_secs(5))
        .await
        .is_some());
    // The session survives, the held channels still work, and a freed slot is reusable.
    assert!(client.try_status().is_none(), "{}", client.stderr_text());
    for s in &mut held[1..] {
        s.write_all(b"more").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
    }
    held.remove(0);
    let mut reopened = None;
    for _ in 0..50 {
        reopened = open(addr).await;
        if reopened.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "a closed channel frees its slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_held_to_its_listener_cap() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let line = format!("burrow-max-listeners=2 {}", key.public_line);
    let relay = Relay::start(dir.path(), "relay", &[&line], None, &[]).await;
    // Three different targets: OpenSSH drops duplicate forwards before asking.
    let targets = [
        echo_server().await,
        echo_server().await,
        echo_server().await,
    ];
    let mut cmd = relay.ssh(&key);
    cmd.arg("-N");
    for t in &targets {
        cmd.arg("-R").arg(format!("0:{}", t.hostport()));
    }
    cmd.arg("root@127.0.0.1");
    let client = spawn_logged(cmd, dir.path(), "ssh-3R");
    let refused = client
        .stderr()
        .wait_for_line_async("remote port forwarding failed", UP_TIMEOUT)
        .await;
    assert!(refused.is_some(), "{}", client.stderr_text());
    let allocated = client.stderr_text().matches("Allocated port").count();
    assert_eq!(allocated, 2, "{}", client.stderr_text());
    assert!(relay
        .child
        .stderr()
        .wait_for_line_async("listener cap reached", Duration::from_secs(5))
        .await
        .is_some());
}

/// The listener cap is reserved atomically: 20 sessions of one key with cap 1 ask at the same
/// instant for a bind address that must be resolved ("127.1", looked up like a name), and
/// exactly one gets a listener. (The cap used to be checked, then awaited on, then counted:
/// between 6 and 20 got one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sessions_of_a_key_with_cap_one_get_exactly_one_listener() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let line = format!("burrow-max-listeners=1 {}", key.public_line);
    let flags = ["--gateway-ports", "clientspecified"];
    let relay = Relay::start(dir.path(), "relay", &[&line], None, &flags).await;
    let mut sessions = Vec::new();
    for _ in 0..20 {
        sessions.push(common::russh_client::connect_with_key(relay.addr, &key).await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(sessions.len()));
    // Spawned all at once (not lazily, one by one, behind the barrier).
    let asks: Vec<_> = sessions
        .into_iter()
        .map(|session| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let got = tokio::time::timeout(UP_TIMEOUT, session.tcpip_forward("127.1", 0)).await;
                (got, session)
            })
        })
        .collect();
    let mut granted = Vec::new();
    let mut held = Vec::new();
    for ask in asks {
        let (got, session) = ask.await.expect("task");
        match got.expect("the relay answers") {
            Ok(port) => granted.push(port),
            Err(e) => assert!(
                e.to_string().contains("request failed")
                    || matches!(e, russh::Error::RequestDenied),
                "{e}"
            ),
        }
        held.push(session);
    }
    assert_eq!(granted.len(), 1, "listeners granted: {granted:?}");
    // Every refusal is logged with its reason (the log is read as it is written: wait for it).
    // The access log's lines on the same stderr say it again: count the relay's own messages.
    let refusals = || {
        relay
            .child
            .stderr_text()
            .lines()
            .filter(|l| l.contains("listener cap reached") && !l.contains("burrow-access:"))
            .count()
    };
    for _ in 0..50 {
        if refusals() >= 19 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refusals(), 19, "{}", relay.child.stderr_text());
}

/// The takeover exemption is not a way around the cap: with burrow-max-listeners=1, a live
/// session holds 127.0.0.1:P, and further sessions of the key ask for the same port P on other
/// addresses (::1, 127.0.0.2, ...), which bind beside it without any takeover. Each used to be
/// granted (the other session's listener on P did not count, as if it were to be replaced), so a
/// key could hold one listener per session and address; now every one is refused at commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_port_on_other_addresses_does_not_get_around_the_listener_cap() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let line = format!("burrow-max-listeners=1 {}", key.public_line);
    let flags = ["--gateway-ports", "clientspecified"];
    let relay = Relay::start(dir.path(), "relay", &[&line], None, &flags).await;
    let first = common::russh_client::connect_with_key(relay.addr, &key).await;
    let port = tokio::time::timeout(UP_TIMEOUT, first.tcpip_forward("127.0.0.1", 0))
        .await
        .expect("the relay answers")
        .expect("the first listener is within the cap");
    let mut others = Vec::new();
    for addr in ["::1", "127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let session = common::russh_client::connect_with_key(relay.addr, &key).await;
        let got = tokio::time::timeout(UP_TIMEOUT, session.tcpip_forward(addr, port))
            .await
            .expect("the relay answers");
        assert!(got.is_err(), "{addr}:{port} granted beyond the cap of 1");
        others.push(session);
    }
    // The live holder was probed, not evicted: its port still answers.
    tokio::net::TcpStream::connect(("127.0.0.1", u16::try_from(port).unwrap()))
        .await
        .expect("the first listener is still there");
    drop(first);
}

/// A key at its listener cap gets its own port back after its link silently died: the dead
/// session's listener is what the takeover replaces, so it does not count against the cap
/// (it used to: with burrow-max-listeners=1 the reconnecting client got "listener cap
/// reached" at once, and the port stayed with the dead session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_at_its_listener_cap_takes_over_its_own_stale_port() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let line = format!("burrow-max-listeners=1 {}", key.public_line);
    let relay = Relay::start(dir.path(), "relay", &[&line], None, &[]).await;
    let (echo1, echo2) = (echo_server().await, echo_server().await);
    let port = free_port();
    let start = |echo: &Service, name: &str| {
        let mut cmd = relay.ssh(&key);
        cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
            .arg(format!("{port}:{}", echo.hostport()))
            .arg("root@127.0.0.1");
        spawn_logged(cmd, dir.path(), name)
    };
    let mut first = start(&echo1, "ssh-first");
    wait_listening(&mut first, loopback(port), UP_TIMEOUT)
        .await
        .expect("first -R");
    // The link dies silently: the first client's TCP connection stays, nothing answers.
    first.freeze();
    let mut second = start(&echo2, "ssh-second");
    relay.wait_port_moves_to(port, &echo2, &mut second).await;
    let log = relay.child.stderr_text();
    assert!(log.contains("taking its port over"), "{log}");
    assert!(!log.contains("listener cap reached"), "{log}");
    first.thaw();
}

/// The relay pings every session once per keepalive interval. A holder that missed one of
/// those pings (its answer overdue past the grace) is replaced at once, without the takeover
/// probe; an idle but live holder answers every ping and keeps its port (no flap). The probe
/// deadline is long here so the two paths are told apart by the relay's log line, not speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_missed_the_relays_keepalive_is_replaced_without_the_probe() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let config = "[limits]\nkeepalive_interval_secs = 1\nkeepalive_count_max = 60\ntakeover_probe_secs = 20\n";
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], Some(config), &[]).await;
    let (echo1, echo2) = (echo_server().await, echo_server().await);
    let port = free_port();
    let forward = |echo: &Service| {
        let mut cmd = relay.ssh(&key);
        cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
            .arg(format!("{port}:{}", echo.hostport()))
            .arg("root@127.0.0.1");
        cmd
    };
    let mut first = spawn_logged(forward(&echo1), dir.path(), "ssh-first");
    wait_listening(&mut first, loopback(port), UP_TIMEOUT)
        .await
        .expect("first -R");
    // Idle but live through several keepalive rounds: a second client must not get the port.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (st, _, err) = run_with_timeout(
        forward(&echo2),
        dir.path(),
        "ssh-second-live",
        Duration::from_secs(60),
    );
    assert_eq!(st.and_then(|s| s.code()), Some(255), "{err}");
    assert!(first.try_status().is_none());
    let log = relay.child.stderr_text();
    assert!(
        log.contains("port held by a live session of the same key"),
        "{log}"
    );
    assert!(!log.contains("taking its port over"), "{log}");
    // Frozen: the next relay keepalive (1 s) goes unanswered and is overdue 1 s later.
    first.freeze();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut second = spawn_logged(forward(&echo2), dir.path(), "ssh-second");
    relay.wait_port_moves_to(port, &echo2, &mut second).await;
    let log = relay.child.stderr_text();
    first.thaw();
    assert!(log.contains("replaced at once: missed keepalives"), "{log}");
    assert!(!log.contains("did not answer the takeover probe"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_another_key_is_never_taken_over_even_when_its_holder_is_dead() {
    let dir = test_dir();
    let k1 = keygen(dir.path(), "k1", KeyKind::Ed25519, None);
    let k2 = keygen(dir.path(), "k2", KeyKind::Ed25519, None);
    let relay = Relay::start(
        dir.path(),
        "relay",
        &[&k1.public_line, &k2.public_line],
        None,
        &[],
    )
    .await;
    let echo = echo_server().await;
    let port = free_port();
    let forward = |key: &Keypair| {
        let mut cmd = relay.ssh(key);
        cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
            .arg(format!("{port}:{}", echo.hostport()))
            .arg("root@127.0.0.1");
        cmd
    };
    let mut holder = spawn_logged(forward(&k1), dir.path(), "ssh-k1");
    wait_listening(&mut holder, loopback(port), UP_TIMEOUT)
        .await
        .expect("k1 holds the port");
    // The holder stops answering (as a dead link would); k2 still may not have its port.
    holder.freeze();
    let (st, _, err) =
        run_with_timeout(forward(&k2), dir.path(), "ssh-k2", Duration::from_secs(60));
    holder.thaw();
    assert_eq!(st.and_then(|s| s.code()), Some(255), "{err}");
    assert!(
        err.contains(&format!(
            "remote port forwarding failed for listen port {port}"
        )),
        "{err}"
    );
    assert!(!relay.child.stderr_text().contains("taking its port over"));
    transfer_checked(loopback(port), 64 * 1024)
        .await
        .expect("still k1's forward");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_a_bad_or_writable_authorized_keys_keeps_the_previous_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let intruder = keygen(dir.path(), "intruder", KeyKind::Ed25519, None);
    let relay = Relay::start(
        dir.path(),
        "relay",
        &[&key.public_line],
        Some(PERMIT_OPEN_ANY),
        &[],
    )
    .await;
    let echo = echo_server().await;
    let login = |k: &Keypair, name: &str| {
        let mut cmd = relay.ssh(k);
        cmd.args(["-W", &echo.hostport(), "root@127.0.0.1"]);
        let (st, _, _) = run_with_timeout(cmd, dir.path(), name, Duration::from_secs(30));
        st.is_some_and(|s| s.success())
    };
    async fn reload(relay: &Relay, n: usize) -> bool {
        relay.child.signal(nix::sys::signal::Signal::SIGHUP);
        relay
            .child
            .stderr()
            .wait_until_async(Duration::from_secs(10), move |log| {
                (log.matches("reload failed; keeping the previous keys")
                    .count()
                    >= n)
                    .then_some(())
            })
            .await
            .is_some()
    }
    // A malformed file: refused, the old keys stay.
    let both = format!("{}\n{}\n", key.public_line, intruder.public_line);
    std::fs::write(
        &relay.authorized_keys,
        format!("{both}bogus-option {}\n", intruder.public_line),
    )
    .unwrap();
    assert!(reload(&relay, 1).await, "{}", relay.child.stderr_text());
    // A file others may write: refused too, even though its lines are fine.
    std::fs::write(&relay.authorized_keys, &both).unwrap();
    std::fs::set_permissions(
        &relay.authorized_keys,
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    assert!(reload(&relay, 2).await, "{}", relay.child.stderr_text());
    assert!(relay
        .child
        .stderr_text()
        .contains("writable by group or others"));
    assert!(login(&key, "kept"), "the previous key still logs in");
    assert!(
        !login(&intruder, "intruder"),
        "the rejected file's new key does not"
    );
}

/// A SOCKS5 CONNECT to `target` through the proxy at `proxy`; returns the open stream.
async fn socks5_connect(proxy: SocketAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(&[5, 1, 0]).await?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await?;
    assert_eq!(choice, [5, 0]);
    let SocketAddr::V4(t) = target else {
        unreachable!("IPv4 targets only")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&t.ip().octets());
    req.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&req).await?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await?;
    assert_eq!(reply[1], 0, "SOCKS5 reply {reply:?}");
    Ok(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_garbage_and_stalled_handshakes_cost_one_task_each_and_nothing_after() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions::with_keys(&[&key]));
    let echo = echo_server().await;
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-N", "-D", "127.0.0.1:0"]).arg(sshd.dest("root"));
    let client = spawn_logged(cmd, dir.path(), "burrow-D");
    let proxy = loopback(allocated_port(&client, "dynamic forward").await);
    let mut s = socks5_connect(proxy, echo.addr).await.expect("SOCKS works");
    drop(s.shutdown().await);
    let base = settle(
        &client,
        runtime_stats(&client).await,
        Duration::from_secs(10),
    )
    .await;

    // Garbage: answered (where the protocol allows) and closed at once.
    let garbage: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[5, 1, 0, 5, 9, 0, 1, 0, 0, 0, 0, 0, 0],
        &[4, 1, 0, 80, 0, 0, 0, 1, 0, 0],
        &[0xff; 64],
    ];
    for (i, g) in garbage.iter().enumerate() {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(g).await.unwrap();
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(closed, "garbage {i} got its connection closed");
    }
    // Stalled mid-handshake: each holds one task and one socket, and the proxy still serves.
    let stalled_n = 20u64;
    let mut stalled = Vec::new();
    for _ in 0..stalled_n {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(&[5, 2, 0]).await.unwrap(); // promises two methods, sends one
        stalled.push(s);
    }
    let mut ok = socks5_connect(proxy, echo.addr)
        .await
        .expect("SOCKS beside stalled ones");
    ok.write_all(b"echo").await.unwrap();
    let mut buf = [0u8; 4];
    ok.read_exact(&mut buf).await.unwrap();
    drop(ok);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = runtime_stats(&client).await;
    println!("baseline {base:?}, with {stalled_n} stalled handshakes {during:?}");
    assert_eq!(
        during.tasks - base.tasks,
        stalled_n,
        "one task per stalled client"
    );
    assert_eq!(
        during.fds - base.fds,
        stalled_n,
        "one socket per stalled client"
    );
    drop(stalled);
    let after = settle(&client, base, Duration::from_secs(10)).await;
    println!("after the stalled clients left {after:?}");
    assert!(
        after.tasks <= base.tasks && after.fds <= base.fds,
        "{after:?} vs {base:?}"
    );
}

/// A relay whose one key may hold 4 channels at once (`burrow-max-channels=4`), and that key.
async fn relay_with_four_channels(dir: &std::path::Path) -> (Relay, Keypair) {
    let key = keygen(dir, "id", KeyKind::Ed25519, None);
    let line = format!("burrow-max-channels=4 {}", key.public_line);
    (Relay::start(dir, "relay", &[&line], None, &[]).await, key)
}

/// Session channels count against the key's channel cap like forwards do: a relay that only
/// forwards has no use for more than a few, and each one the relay keeps costs memory. A key
/// with burrow-max-channels=4 used to open session channels without end on one connection
/// (20,000 grew the relay by tens of MB); now the fifth is refused, and a closed one frees
/// its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_channels_count_against_the_channel_cap() {
    let dir = test_dir();
    let (relay, key) = relay_with_four_channels(dir.path()).await;
    let session = common::russh_client::connect_with_key(relay.addr, &key).await;
    let before = common::procstat::rss_kib(relay.child.pid());
    let mut open = Vec::new();
    let mut refused = 0;
    let tries = std::env::var("BURROW_SESSION_CHANNELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50usize);
    for _ in 0..tries {
        match tokio::time::timeout(UP_TIMEOUT, session.channel_open_session())
            .await
            .expect("the relay answers")
        {
            Ok(ch) => open.push(ch),
            Err(_) => refused += 1,
        }
    }
    let after = common::procstat::rss_kib(relay.child.pid());
    eprintln!(
        "{} session channels open, {refused} refused; relay RSS {before} -> {after} KiB",
        open.len()
    );
    assert_eq!(open.len(), 4, "session channels beyond the cap of 4");
    // A closed session channel gives its slot back.
    let first = open.remove(0);
    first.close().await.expect("close");
    let mut reopened = None;
    for _ in 0..50 {
        if let Ok(ch) = session.channel_open_session().await {
            reopened = Some(ch);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reopened.is_some(),
        "a closed session channel frees its slot"
    );
}

/// A session channel the relay closes itself (it refuses every shell, exec and subsystem
/// request, then closes the channel) gives its slot back too. It did not: the handler freed the
/// slot only when russh reported a close the client started, so six refused commands on one
/// connection (an OpenSSH ControlMaster running `ssh -S sock host cmd` six times) left a key
/// with burrow-max-channels=4 refused every further channel, forwards included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_channels_the_relay_closes_give_their_slot_back() {
    let dir = test_dir();
    let (relay, key) = relay_with_four_channels(dir.path()).await;
    let session = common::russh_client::connect_with_key(relay.addr, &key).await;
    for command in 0..6 {
        let mut ch = tokio::time::timeout(UP_TIMEOUT, session.channel_open_session())
            .await
            .expect("the relay answers")
            .unwrap_or_else(|e| panic!("session channel for command {command}: {e}"));
        ch.exec(true, "true").await.expect("send exec");
        let mut status = None;
        let ended = tokio::time::timeout(UP_TIMEOUT, async {
            while let Some(msg) = ch.wait().await {
                if let russh::ChannelMsg::ExitStatus { exit_status } = msg {
                    status = Some(exit_status);
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "command {command}: the relay never closed the channel"
        );
        assert_eq!(status, Some(1), "command {command}: refused with status 1");
    }
}

/// The other side of [`session_channels_the_relay_closes_give_their_slot_back`]: a client that
/// opens its session channels with a window of 0 keeps the relay's refusal message, and so the
/// relay's close behind it, from ever going out. Those channels keep their slots (the client's
/// own close would free them), so the cap still holds: 4 open, the rest refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_session_channels_kept_shut_by_the_client_stay_within_the_cap() {
    let dir = test_dir();
    let (relay, key) = relay_with_four_channels(dir.path()).await;
    let config = russh::client::Config {
        window_size: 0,
        ..Default::default()
    };
    let session = common::russh_client::authenticate(
        common::russh_client::connect_with_config(relay.addr, config).await,
        &key,
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(UP_TIMEOUT, session.channel_open_session())
            .await
            .expect("the relay answers")
        {
            Ok(ch) => {
                ch.exec(true, "true").await.expect("send exec");
                open.push(ch);
            }
            Err(e) => assert!(
                format!("{e:?}").contains("ResourceShortage"),
                "refused for the cap: {e:?}"
            ),
        }
    }
    assert_eq!(open.len(), 4, "session channels beyond the cap of 4");
}

/// Authenticated sessions are capped per key (`max_sessions_per_key`): each costs the relay
/// memory (about 55 KB idle; 1000 sessions of one key grew it from 15 to 71 MB) whether it
/// forwards or not, and nothing used to bound how many one key could hold. With a cap of 3,
/// the fourth login is refused and logged; one ending frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_held_to_its_session_cap() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let config = "[limits]\nmax_sessions_per_key = 3\n";
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], Some(config), &[]).await;
    let login = || async {
        let mut session = common::russh_client::connect(relay.addr).await;
        let private = russh::keys::load_secret_key(&key.private, None).expect("load key");
        let auth = session
            .authenticate_publickey(
                "root",
                russh::keys::PrivateKeyWithHashAlg::new(std::sync::Arc::new(private), None),
            )
            .await
            .expect("authentication exchange");
        auth.success().then_some(session)
    };
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(
            login()
                .await
                .unwrap_or_else(|| panic!("login {i} within the cap")),
        );
    }
    assert!(
        login().await.is_none(),
        "a fourth session beyond the cap of 3"
    );
    assert!(relay
        .child
        .stderr()
        .wait_for_line_async("session cap reached", Duration::from_secs(5))
        .await
        .is_some());
    // One session ends; its slot comes back.
    let first = held.remove(0);
    first
        .disconnect(russh::Disconnect::ByApplication, "", "")
        .await
        .expect("disconnect");
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Some(s) = login().await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "an ended session frees its slot");
}

/// A -R listener may not share a port with the relay's own SSH or metrics listener, on any
/// address. With the relay on 127.0.0.1, `tcpip-forward ::1:PORT` used to succeed (the other
/// family was free), so B's own `ssh -p PORT localhost` or a metrics scrape of
/// `localhost:METRICS` with its bearer token, which try ::1 first, reached the key's client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_cannot_listen_on_the_relays_own_ports_on_another_address() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let flags = ["--metrics", "127.0.0.1:0"];
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &flags).await;
    let metrics = relay
        .child
        .stderr()
        .wait_until_async(UP_TIMEOUT, |log| {
            log.lines()
                .find_map(|l| l.split("metrics on http://").nth(1))
                .and_then(|rest| rest.split('/').next())
                .and_then(|a| a.parse::<SocketAddr>().ok())
        })
        .await
        .expect("metrics address in the log");
    let session = common::russh_client::connect_with_key(relay.addr, &key).await;
    for port in [relay.addr.port(), metrics.port()] {
        for addr in ["::1", "localhost", ""] {
            let got =
                tokio::time::timeout(UP_TIMEOUT, session.tcpip_forward(addr, u32::from(port)))
                    .await
                    .expect("the relay answers");
            assert!(
                got.is_err(),
                "tcpip-forward {addr}:{port} (the relay's own port) granted"
            );
        }
    }
    // Other ports still work.
    let got = tokio::time::timeout(UP_TIMEOUT, session.tcpip_forward("::1", 0))
        .await
        .expect("the relay answers");
    assert!(got.is_ok(), "an allocated port: {got:?}");
}

/// Under the default (only published listeners are reachable) a destination port no listener
/// is published on is refused before its name is looked up: a key cannot make the relay
/// resolve names of its choosing for nothing. The empty name, which the resolver fails at
/// once and without the network, shows it: refused as "administratively prohibited" (policy)
/// where it used to get "connect failed" (the lookup's error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublished_ports_are_refused_before_any_name_lookup() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &[]).await;
    let session = common::russh_client::connect_with_key(relay.addr, &key).await;
    let port = u32::from(free_port());
    let got = tokio::time::timeout(
        UP_TIMEOUT,
        session.channel_open_direct_tcpip("", port, "127.0.0.1", 40000),
    )
    .await
    .expect("the relay answers");
    match got {
        Err(russh::Error::ChannelOpenFailure(reason)) => assert_eq!(
            reason,
            russh::ChannelOpenFailure::AdministrativelyProhibited,
            "refused by policy, not by a failed lookup"
        ),
        other => panic!("direct-tcpip \"\":{port}: {:?}", other.map(|_| "opened")),
    }
}

/// A key holder's own resume control channel (`resume-v1@burrow.invalid`), used against the
/// relay, hurts only itself: a second and third request for the subsystem are refused; 50,000
/// acknowledgements (850 KB, the channel never read meanwhile) for stream ids its instance does
/// not have, with offsets far past anything sent, are read and change nothing; a message of an
/// unknown kind closes that channel and nothing else. A `burrow ssh -L` stream of the same key
/// (another client instance, so another registry) echoes byte-exact before, during and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_resume_control_channel_hurts_only_itself() {
    use russh::ChannelMsg;
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let mut relay = Relay::open_to(dir.path(), &key).await;
    let echo = echo_server().await;
    let (mut client, port) =
        local_forward_through(&relay, &key, dir.path(), &echo.hostport()).await;
    let mut legit = TcpStream::connect(loopback(port)).await.unwrap();
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    async fn echo_chunk(s: &mut TcpStream, chunk: &[u8]) {
        s.write_all(chunk).await.unwrap();
        let mut got = vec![0u8; chunk.len()];
        tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut got))
            .await
            .expect("the legitimate stream echoes")
            .unwrap();
        assert!(got == chunk, "echoed bytes differ");
    }
    echo_chunk(&mut legit, &chunk).await;
    assert!(relay
        .child
        .stderr()
        .wait_for_line_async("resumable streams on", Duration::from_secs(10))
        .await
        .is_some());

    let hostile = common::russh_client::connect_with_key(relay.addr, &key).await;
    let subsystem = "resume-v1@burrow.invalid";
    async fn answer(ch: &mut russh::Channel<russh::client::Msg>) -> Option<ChannelMsg> {
        loop {
            match tokio::time::timeout(UP_TIMEOUT, ch.wait()).await.ok()? {
                Some(ChannelMsg::WindowAdjusted { .. }) => {}
                other => return other,
            }
        }
    }
    let mut control = hostile.channel_open_session().await.unwrap();
    control.request_subsystem(true, subsystem).await.unwrap();
    assert!(matches!(
        answer(&mut control).await,
        Some(ChannelMsg::Success)
    ));
    let instance = [b"BRSI".as_slice(), &[0x42; 16]].concat();
    control.data(instance.as_slice()).await.unwrap();
    match answer(&mut control).await {
        Some(ChannelMsg::Data { data }) => assert_eq!(&data[..], b"BRSI\0"),
        other => panic!("no answer to the instance id: {other:?}"),
    }
    // Asked again, on another channel and on the same one: refused.
    let mut second = hostile.channel_open_session().await.unwrap();
    second.request_subsystem(true, subsystem).await.unwrap();
    assert!(matches!(
        answer(&mut second).await,
        Some(ChannelMsg::Failure)
    ));
    control.request_subsystem(true, subsystem).await.unwrap();
    assert!(matches!(
        answer(&mut control).await,
        Some(ChannelMsg::Failure)
    ));
    // Acknowledgements for streams that are not this instance's, far past anything sent,
    // while the legitimate stream runs; the channel is never read meanwhile.
    let mut flood = Vec::new();
    for id in 0..50_000u64 {
        flood.push(1u8);
        flood.extend_from_slice(&id.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        flood.extend_from_slice(&u64::MAX.to_be_bytes());
    }
    let legit_run = tokio::spawn(async move {
        for _ in 0..16 {
            echo_chunk(&mut legit, &chunk).await;
        }
        (legit, chunk)
    });
    let mut w = control.make_writer();
    tokio::time::timeout(Duration::from_secs(30), w.write_all(&flood))
        .await
        .expect("the relay reads a flooded control channel")
        .unwrap();
    let (mut legit, chunk) = legit_run.await.unwrap();
    // A message of an unknown kind closes that channel, and only that one.
    w.write_all(&[9u8]).await.unwrap();
    let closed = async {
        loop {
            match control.wait().await {
                Some(ChannelMsg::Close) | None => return,
                Some(_) => {}
            }
        }
    };
    tokio::time::timeout(UP_TIMEOUT, closed)
        .await
        .expect("the relay closes a control channel that sent garbage");
    assert!(relay
        .child
        .stderr()
        .wait_for_line_async(
            "unknown resume control message kind 9",
            Duration::from_secs(5)
        )
        .await
        .is_some());
    echo_chunk(&mut legit, &chunk).await;
    assert!(client.try_status().is_none(), "{}", client.stderr_text());
    assert!(relay.child.try_status().is_none(), "the relay is running");
}

/// The relay offers no finite-field Diffie-Hellman (src/transport.rs `RELAY_KEX`), and keeps
/// strict key exchange and extension negotiation on: russh
/// computes it on pure-Rust big integers, about half a second of CPU per 8192-bit exchange,
/// which any peer could ask for again and again before authenticating while the session's
/// thread (src/server/workers.rs) runs nothing else. An OpenSSH client limited to those
/// exchanges is refused with OpenSSH's message; with its defaults it authenticates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_offers_no_slow_diffie_hellman_key_exchange() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &[]).await;
    let limit = Duration::from_secs(30);
    for kex in [
        "diffie-hellman-group18-sha512",
        "diffie-hellman-group-exchange-sha256",
        "diffie-hellman-group14-sha256",
    ] {
        let mut cmd = relay.ssh(&key);
        cmd.args([
            "-o",
            &format!("KexAlgorithms={kex}"),
            "-N",
            "root@127.0.0.1",
        ]);
        let (st, _, err) = run_with_timeout(cmd, dir.path(), "ssh-dh", limit);
        assert_eq!(st.and_then(|s| s.code()), Some(255), "{kex}: {err}");
        assert!(
            err.contains("no matching key exchange method found"),
            "{kex}: {err}"
        );
        // What the relay offers instead, with strict key exchange and extension negotiation.
        let offer = err
            .split("Their offer: ")
            .nth(1)
            .and_then(|o| o.split_whitespace().next())
            .unwrap_or_else(|| panic!("{kex}: no offer in {err}"));
        for wanted in [
            "curve25519-sha256",
            "ecdh-sha2-nistp256",
            "kex-strict-s-v00@openssh.com",
            "ext-info-s",
        ] {
            assert!(
                offer.split(',').any(|k| k == wanted),
                "{wanted} not offered: {offer}"
            );
        }
        assert!(!offer.contains("diffie-hellman"), "{offer}");
    }
    // The defaults still reach authentication (the relay then refuses the command).
    let mut cmd = relay.ssh(&key);
    cmd.args(["-v", "root@127.0.0.1", "true"]);
    let (_, _, err) = run_with_timeout(cmd, dir.path(), "ssh-default", limit);
    assert!(err.contains("Authenticated to 127.0.0.1"), "{err}");
    assert!(
        ["curve25519-sha256", "mlkem768x25519-sha256"]
            .iter()
            .any(|k| err.contains(&format!("kex: algorithm: {k}"))),
        "{err}"
    );
}
