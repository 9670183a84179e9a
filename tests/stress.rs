//! Stress between two burrows: `burrow ssh` → `burrow serve`, many bulk streams both ways at
//! once through `-L` and `-R`, with aes128-gcm@openssh.com and chacha20-poly1305@openssh.com,
//! every byte checked.
//!
//! bench/run once lost a session here ("-L 8 streams chacha20-poly1305": `sending to the sink:
//! Connection reset by peer`, then the forward was gone). The cause was the key exchange russh
//! starts after 1 GiB: the side that started it ended the session ("Pending buffer limit
//! reached") once more than 2 × window_size (4 MiB) of the other side's messages arrived before
//! that side's own KEXINIT, channel data included, although 8 streaming forwards alone may have
//! 16 MiB legitimately in flight (vendor/russh/BURROW-PATCH.md, "Channel data while we start a
//! key exchange"). Each `many_streams_*` test runs one cipher: for `-L` and `-R`, 8 and then 32
//! streams upload while as many download (the far side checks each upload byte as it arrives
//! and answers with a verdict; the test checks each download byte), [`DEFAULT_PHASE_MIB`] each
//! way per phase, so each direction passes the 1 GiB rekey limit while the other streams: before
//! the fix every run failed at the first key exchange, in the third phase. Both processes must
//! survive every phase, and neither may log a peer running past its window. The relay must not
//! warn about the window probes burrow ssh sends (`winadj@putty.projects.tartarus.org`): they
//! are answered quietly, as OpenSSH does. `rekey_while_*` reaches the same cause in seconds with
//! a client that rekeys every 8 MiB.
//!
//! `BURROW_STRESS_MIB` sets the MiB each phase moves each way (default [`DEFAULT_PHASE_MIB`],
//! spread over the phase's streams); raise it to hunt a rare failure for longer.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::burrow::{allocated_port, Relay, UP_TIMEOUT};
use common::russh_client;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// MiB moved each way per phase (all streams together) unless `BURROW_STRESS_MIB` says
/// otherwise: four phases pass russh's 1 GiB rekey limit each way.
const DEFAULT_PHASE_MIB: u64 = 384;
/// How long one phase may take: far beyond what it needs on a loaded 2-core machine, so a stall
/// fails it and slowness does not.
const PHASE_LIMIT: Duration = Duration::from_secs(60);
/// Streams at once in the two phase sizes.
const STREAMS: [usize; 2] = [8, 32];
/// What the relay logs when a peer runs past a window (russh's `adjust_window_size`).
const OVERRUN: &str = "beyond its window";
/// The window probe's request name: the relay must not warn about it.
const PROBE: &str = "winadj@putty.projects.tartarus.org";
/// What the checking service answers after an upload arrived intact.
const VERDICT_OK: &[u8] = b"ok";

fn phase_bytes() -> u64 {
    std::env::var("BURROW_STRESS_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_PHASE_MIB)
        << 20
}

/// Which way a stream's bulk goes, seen from the test (the client of the forward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Upload,
    Download,
}

/// The far end of every stream: each connection starts with a 17-byte request (`U` or `D`,
/// seed, length). For `U` it reads exactly `DetStream::new(seed, length)` to EOF, compared byte
/// by byte as it arrives, and answers [`VERDICT_OK`] or the error; for `D` it sends that stream
/// and half-closes. Aborted (with every connection) when the returned set drops.
async fn checker() -> (SocketAddr, JoinSet<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        // Bounded: far more connections than the tests open (readiness probes included).
        for _ in 0..10_000 {
            let Ok((sock, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            conns.spawn(check_one(sock));
            while conns.try_join_next().is_some() {}
        }
    });
    (addr, tasks)
}

async fn check_one(mut sock: TcpStream) {
    let mut head = [0u8; 17];
    if sock.read_exact(&mut head).await.is_err() {
        return; // a readiness probe, or a client that gave up
    }
    let word = |i: usize| u64::from_be_bytes(head[i..i + 8].try_into().unwrap_or_default());
    let stream = DetStream::new(word(1), word(9));
    match head[0] {
        b'U' => {
            let verdict = match read_expecting(&mut sock, stream).await {
                Ok(_) => VERDICT_OK.to_vec(),
                Err(e) => format!("upload arrived wrong: {e}").into_bytes(),
            };
            let _ = sock.write_all(&verdict).await;
        }
        b'D' => {
            let _ = send_stream(&mut sock, stream).await;
        }
        _ => return,
    }
    let _ = sock.shutdown().await;
}

/// One stream through `addr`: the request, then the bulk one way, checked.
async fn one_stream(addr: SocketAddr, way: Way, seed: u64, bytes: u64) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("stream {seed} ({way:?}): {what}: {e}");
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| fail("connect", e))?;
    let mut head = Vec::with_capacity(17);
    head.push(if way == Way::Upload { b'U' } else { b'D' });
    head.extend_from_slice(&seed.to_be_bytes());
    head.extend_from_slice(&bytes.to_be_bytes());
    s.write_all(&head).await.map_err(|e| fail("request", e))?;
    match way {
        Way::Upload => {
            send_stream(&mut s, DetStream::new(seed, bytes))
                .await
                .map_err(|e| fail("sending", e))?;
            s.shutdown().await.map_err(|e| fail("half-close", e))?;
            let mut verdict = Vec::new();
            s.read_to_end(&mut verdict)
                .await
                .map_err(|e| fail("reading the verdict", e))?;
            if verdict != VERDICT_OK {
                return Err(format!(
                    "stream {seed} (upload): {}",
                    String::from_utf8_lossy(&verdict)
                ));
            }
        }
        Way::Download => {
            read_expecting(&mut s, DetStream::new(seed, bytes))
                .await
                .map_err(|e| fail("receiving", e))?;
        }
    }
    Ok(())
}

/// `n` uploads and `n` downloads at once through `addr`, `total` bytes each way; panics on any
/// error, on the deadline, or if `client` died, with its log and `server_log()`.
async fn phase(
    name: &str,
    addr: SocketAddr,
    n: usize,
    total: u64,
    client: &mut ChildGuard,
    server_log: &mut dyn FnMut() -> (bool, String),
) {
    let per = total / n as u64;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (w, way) in [Way::Upload, Way::Download].into_iter().enumerate() {
        for i in 0..n {
            let seed = (name.len() as u64) << 40 | (n as u64) << 20 | (w as u64) << 16 | i as u64;
            tasks.spawn(tokio::time::timeout(
                PHASE_LIMIT,
                one_stream(addr, way, seed, per),
            ));
        }
    }
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.expect("stream task") {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push(format!("a stream was not done within {PHASE_LIMIT:?}")),
        }
    }
    let took = start.elapsed();
    let client_alive = client.try_status().is_none();
    let (server_alive, log) = server_log();
    assert!(
        errors.is_empty() && client_alive && server_alive,
        "{name}, {n} streams each way: {} of {} failed after {took:.1?}: {:?}\n\
         (burrow ssh alive: {client_alive}, server alive: {server_alive})\nburrow ssh:\n{}\n\
         server:\n{log}",
        errors.len(),
        2 * n,
        &errors[..errors.len().min(8)],
        client.stderr_text(),
    );
    println!(
        "{name}, {n} streams each way: 2 x {} MiB checked in {took:.1?} ({:.0} MiB/s each way)",
        (per * n as u64) >> 20,
        (per * n as u64) as f64 / 1048576.0 / took.as_secs_f64().max(1e-3)
    );
}

/// Adds `-o Ciphers=CIPHER -N -L 127.0.0.1:0:TARGET -R 127.0.0.1:0:TARGET root@127.0.0.1` to
/// `cmd` (a `burrow ssh` for some server), starts it and returns it with the two forwards'
/// addresses once both accept.
async fn forward_both_ways(
    mut cmd: std::process::Command,
    cipher: &str,
    target: SocketAddr,
    dir: &std::path::Path,
) -> (ChildGuard, SocketAddr, SocketAddr) {
    cmd.arg("-o")
        .arg(format!("Ciphers={cipher}"))
        .args(["-N", "-L"])
        .arg(format!("127.0.0.1:0:{target}"))
        .arg("-R")
        .arg(format!("127.0.0.1:0:{target}"))
        .arg("root@127.0.0.1");
    let client = spawn_logged(cmd, dir, "burrow-LR");
    let lport = allocated_port(&client, &format!("local forward to {target}")).await;
    let rport = allocated_port(&client, &format!("remote forward to {target}")).await;
    let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for port in [lport, rport] {
        assert!(
            wait_port(loopback(port), UP_TIMEOUT).await,
            "port {port} never accepted:\n{}",
            client.stderr_text(),
        );
    }
    (client, loopback(lport), loopback(rport))
}

/// A test's temp dir, a key in it, and a [`checker`] (its address and tasks).
async fn setup() -> (tempfile::TempDir, Keypair, SocketAddr, JoinSet<()>) {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let (target, checker) = checker().await;
    (dir, key, target, checker)
}

/// Starts a relay and `burrow ssh -c CIPHER -L ... -R ...` to the checker, runs every phase, and
/// checks both logs.
async fn stress(cipher: &str) {
    let (dir, key, target, _checker) = setup().await;
    let mut relay = Relay::open_to(dir.path(), &key).await;
    let (mut client, l, r) =
        forward_both_ways(relay.burrow_ssh(&key), cipher, target, dir.path()).await;
    let total = phase_bytes();
    for (fwd, addr) in [("-L", l), ("-R", r)] {
        for n in STREAMS {
            let name = format!("{cipher} {fwd}");
            let mut relay_state = || {
                let alive = relay.child.try_status().is_none();
                (alive, relay.child.stderr_text())
            };
            phase(&name, addr, n, total, &mut client, &mut relay_state).await;
        }
    }
    let (client_log, relay_log) = (client.stderr_text(), relay.child.stderr_text());
    for (who, log) in [("burrow ssh", &client_log), ("burrow serve", &relay_log)] {
        let overruns: Vec<&str> = log.lines().filter(|l| l.contains(OVERRUN)).collect();
        assert!(
            overruns.is_empty(),
            "{who}'s peer ran past a window it was granted ({} times):\n{}",
            overruns.len(),
            overruns[..overruns.len().min(10)].join("\n")
        );
    }
    let warned: Vec<&str> = relay_log
        .lines()
        .filter(|l| l.contains(PROBE) && (l.contains("WARN") || l.contains("ERROR")))
        .collect();
    assert!(
        warned.is_empty(),
        "burrow serve warned about burrow ssh's window probes ({} lines), e.g. {:?}",
        warned.len(),
        warned.first()
    );
}

/// Streams per session in [`rekey_while_many_channels_stream_to_the_initiator_keeps_the_session`].
const REKEY_STREAMS: usize = 16;
/// What each of those streams downloads.
const REKEY_STREAM_BYTES: u64 = 16 << 20;
/// The russh client's rekey limit for bytes received there: a key exchange every few MiB.
const REKEY_READ_LIMIT: usize = 8 << 20;

/// The root cause of the reset, made to happen on every key exchange: a peer that starts a key
/// exchange while the other side streams to it on many channels must take what was already on
/// its way (up to every channel's window) until the other side's KEXINIT arrives. russh allowed
/// only 2 × window_size (4 MiB) of it and ended the session ("Pending buffer limit reached"),
/// while 8 forwards alone may have 16 MiB in flight. A russh client (burrow ssh's engine) that
/// rekeys every [`REKEY_READ_LIMIT`] bytes received downloads [`REKEY_STREAMS`] streams at once
/// from burrow serve, every byte checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_while_many_channels_stream_to_the_initiator_keeps_the_session_exclusive() {
    let (dir, key, target, _checker) = setup().await;
    let relay = Relay::open_to(dir.path(), &key).await;
    let config = russh::client::Config {
        limits: russh::Limits::new(1 << 30, REKEY_READ_LIMIT, Duration::from_secs(3600)),
        ..Default::default()
    };
    let session = russh_client::authenticate(
        russh_client::connect_with_config(relay.addr, config).await,
        &key,
    )
    .await;
    let mut channels = Vec::new();
    for _ in 0..REKEY_STREAMS {
        channels.push(russh_client::open_direct(&session, target).await);
    }
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, channel) in channels.into_iter().enumerate() {
        let seed = 0x7265_6b65_7900 | i as u64;
        tasks.spawn(tokio::time::timeout(PHASE_LIMIT, async move {
            let mut s = channel.into_stream();
            let mut head = vec![b'D'];
            head.extend_from_slice(&seed.to_be_bytes());
            head.extend_from_slice(&REKEY_STREAM_BYTES.to_be_bytes());
            s.write_all(&head).await?;
            read_expecting(&mut s, DetStream::new(seed, REKEY_STREAM_BYTES)).await
        }));
    }
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.expect("stream task") {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(_) => errors.push(format!("not done within {PHASE_LIMIT:?}")),
        }
    }
    let took = start.elapsed();
    if !errors.is_empty() || session.is_closed() {
        // The session's own error says why it ended.
        let why = tokio::time::timeout(Duration::from_secs(5), session).await;
        panic!(
            "{} of {REKEY_STREAMS} streams failed: {:?}\nthe session ended with: {why:?}\nrelay:\n{}",
            errors.len(),
            &errors[..errors.len().min(4)],
            relay.child.stderr_text()
        );
    }
    println!(
        "{REKEY_STREAMS} x {} MiB downloaded, a key exchange every {} MiB received, in {:.1?}",
        REKEY_STREAM_BYTES >> 20,
        REKEY_READ_LIMIT >> 20,
        took
    );
}

/// sshd's rekey limit in the OpenSSH test below.
const SSHD_REKEY_LIMIT: &str = "RekeyLimit 8M";
/// What each phase moves each way there: sshd rekeys a dozen times per phase.
const SSHD_PHASE_BYTES: u64 = 64 << 20;

/// Key exchanges started by OpenSSH while 8 streams flow each way through burrow ssh's `-L` and
/// `-R`, both ciphers: sshd (`RekeyLimit 8M`) rekeys every few MiB, burrow ssh must take the
/// data still on its way, answer, switch keys (strict kex resets sequence numbers) and lose
/// nothing. Guards the read path against changes that would break rekeying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_rekeying_every_few_mib_under_streams_both_ways_loses_nothing_exclusive() {
    let (dir, key, target, _checker) = setup().await;
    let sshd = Sshd::start(SshdOptions::with_keys(&[&key]).config(SSHD_REKEY_LIMIT));
    for cipher in ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"] {
        let cmd = common::burrow::burrow_ssh(&sshd, Some(&key));
        let (mut client, l, r) = forward_both_ways(cmd, cipher, target, dir.path()).await;
        for (fwd, addr) in [("-L", l), ("-R", r)] {
            let name = format!("{cipher} {fwd} to sshd");
            let mut sshd_state = || (true, sshd.log());
            phase(
                &name,
                addr,
                8,
                SSHD_PHASE_BYTES,
                &mut client,
                &mut sshd_state,
            )
            .await;
        }
        let rekeys = sshd.log().matches("SSH2_MSG_KEXINIT sent").count();
        println!("{cipher}: sshd has sent {rekeys} KEXINITs so far");
        assert!(
            rekeys > 4,
            "sshd with {SSHD_REKEY_LIMIT} rekeyed only {rekeys} times:\n{}",
            sshd.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_each_way_between_burrows_aes128_gcm_lose_nothing_exclusive() {
    stress("aes128-gcm@openssh.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_each_way_between_burrows_chacha20_poly1305_lose_nothing_exclusive() {
    stress("chacha20-poly1305@openssh.com").await;
}

/// The relay announces 128 KiB channel packets, so burrow ssh's resumable streams send it
/// frames of that size (a quarter of the packets of OpenSSH's 32 KiB), and it must take what it
/// announces: a russh client uploads 32 MiB in full 128 KiB packets through it to the checker,
/// which compares every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_announces_128_kib_packets_and_takes_them_whole() {
    let (dir, key, target, _checker) = setup().await;
    let relay = Relay::open_to(dir.path(), &key).await;
    let session = russh_client::connect_with_key(relay.addr, &key).await;
    let channel = russh_client::open_direct(&session, target).await;
    assert_eq!(
        channel.max_packet_size(),
        128 * 1024,
        "the packet size the relay announces"
    );
    let (seed, bytes) = (0x6269_6770_6b74_u64, 32u64 << 20);
    let upload = async move {
        let mut s = channel.into_stream();
        let mut head = vec![b'U'];
        head.extend_from_slice(&seed.to_be_bytes());
        head.extend_from_slice(&bytes.to_be_bytes());
        s.write_all(&head).await?;
        // Writes of 256 KiB: russh cuts them at the announced size, into 128 KiB packets.
        let mut stream = DetStream::new(seed, bytes);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = stream.fill(&mut buf);
            if k == 0 {
                break;
            }
            s.write_all(&buf[..k]).await?;
        }
        s.shutdown().await?;
        let mut verdict = Vec::new();
        s.read_to_end(&mut verdict).await?;
        Ok::<_, std::io::Error>(verdict)
    };
    let verdict = tokio::time::timeout(PHASE_LIMIT, upload)
        .await
        .expect("the upload ends within the phase limit")
        .expect("the upload");
    assert_eq!(
        String::from_utf8_lossy(&verdict),
        String::from_utf8_lossy(VERDICT_OK),
        "relay:\n{}",
        relay.child.stderr_text()
    );
}
