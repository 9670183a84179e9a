//! Load with nothing lost: N connections held open at once through `-L` and then through `-R`
//! (`burrow ssh` client, `burrow serve` relay), each moving seeded pseudo-random data both ways
//! and half-closing; then both processes are back to their starting file descriptors and tokio
//! tasks.
//!
//! Each connection opens, proves the whole path with a one-byte round trip, and waits until all N
//! are open (the echo service counts N live connections at that moment). Then each sends
//! `BURROW_LOAD_BYTES` (default 64 KiB) from its own seed, shuts down its write side, and must read
//! back exactly those bytes, compared byte by byte, followed by EOF: any reset, short read, extra
//! byte or wrong byte fails the test. Leaks are measured in the burrow processes: open file
//! descriptors (/proc/PID/fd, and the process's own count) and tokio's count of live tasks, read
//! from the `stats` line burrow logs on SIGUSR1. Threads (/proc/PID/task) are printed, not
//! asserted: tokio's blocking pool keeps idle threads for a while by design.
//!
//! `BURROW_LOAD_CONNECTIONS` sets N (default [`DEFAULT_CONNECTIONS`], what runs in well under a
//! minute on the project's 2-core machine).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::burrow::{allocated_port, Relay, PERMIT_OPEN_ANY};
use common::procstat::{fd_count, runtime_stats, settle, thread_count, RuntimeStats};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections per direction unless `BURROW_LOAD_CONNECTIONS` says otherwise.
const DEFAULT_CONNECTIONS: usize = 1000;
/// How long one phase (open all, transfer all) may take.
const PHASE_LIMIT: Duration = Duration::from_secs(100);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Shared progress of one phase.
#[derive(Default)]
struct Progress {
    opened: AtomicUsize,
    failed: AtomicUsize,
}

/// One connection: open, one-byte round trip, wait for `go`, then send `bytes` from `seed`,
/// half-close and read back exactly the same bytes and EOF.
async fn one_connection(
    addr: SocketAddr,
    seed: u64,
    bytes: u64,
    progress: Arc<Progress>,
    mut go: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("connection {seed}: {what}: {e}");
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| fail("connect", e))?;
    s.write_all(&[0x5a]).await.map_err(|e| fail("hello", e))?;
    let mut hello = [0u8; 1];
    s.read_exact(&mut hello)
        .await
        .map_err(|e| fail("hello back", e))?;
    progress.opened.fetch_add(1, Ordering::SeqCst);
    go.wait_for(|g| *g)
        .await
        .map_err(|_| format!("connection {seed}: test gave up"))?;
    let (mut rd, mut wr) = s.into_split();
    let writer = async move {
        send_stream(&mut wr, DetStream::new(seed, bytes)).await?;
        wr.shutdown().await
    };
    let reader = read_expecting(&mut rd, DetStream::new(seed, bytes));
    tokio::try_join!(writer, reader).map_err(|e| fail("transfer", e))?;
    Ok(())
}

/// Runs one phase through `addr`; returns (time to open all, time to transfer all).
async fn phase(
    name: &str,
    addr: SocketAddr,
    n: usize,
    bytes: u64,
    echo: &Service,
) -> (Duration, Duration) {
    // `closed` first: read the other way round, a connection opened and closed between the
    // two reads would count as closed but not as opened.
    let live = |s: &Stats| {
        let closed = Stats::get(&s.closed);
        Stats::get(&s.connections).saturating_sub(closed)
    };
    // A readiness probe's or the last phase's connection may still be closing at the echo end
    // (its close crosses the tunnel after the client's): wait for it, bounded.
    let idle = async {
        while live(&echo.stats) != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let settled = tokio::time::timeout(Duration::from_secs(10), idle).await;
    assert!(
        settled.is_ok(),
        "{name}: echo not idle before the phase: {} connection(s) still open after 10 s",
        live(&echo.stats)
    );
    let progress = Arc::new(Progress::default());
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    for i in 0..n {
        let (p, go) = (progress.clone(), go_rx.clone());
        let seed = (name.len() as u64) << 32 | i as u64;
        tasks.spawn(async move {
            let r = tokio::time::timeout(
                PHASE_LIMIT,
                one_connection(addr, seed, bytes, p.clone(), go),
            )
            .await
            .unwrap_or_else(|_| Err(format!("connection {seed}: timed out")));
            if r.is_err() {
                p.failed.fetch_add(1, Ordering::SeqCst);
            }
            r
        });
    }
    // Wait (bounded) until every connection is open end to end, or one failed.
    while progress.opened.load(Ordering::SeqCst) < n
        && progress.failed.load(Ordering::SeqCst) == 0
        && start.elapsed() < PHASE_LIMIT
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened_in = start.elapsed();
    let concurrent = live(&echo.stats);
    let opened = progress.opened.load(Ordering::SeqCst);
    assert_eq!(
        opened,
        n,
        "{name}: only {opened} of {n} connections open end to end after {opened_in:.1?} \
         ({} failed, echo saw {concurrent} live)",
        progress.failed.load(Ordering::SeqCst)
    );
    let _ = go_tx.send(true);
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.expect("connection task") {
            errors.push(e);
        }
    }
    let total = start.elapsed();
    assert!(
        errors.is_empty(),
        "{name}: {} of {n} failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert_eq!(
        concurrent, n as u64,
        "{name}: all {n} connections open at once"
    );
    (opened_in, total - opened_in)
}

/// Waits for `child` to return to `base` and asserts it did.
async fn assert_back_to(name: &str, child: &ChildGuard, base: RuntimeStats) {
    let after = settle(child, base, Duration::from_secs(30)).await;
    println!(
        "{name}: after {after:?} (baseline {base:?}); /proc fds {}, threads {}",
        fd_count(child.pid()),
        thread_count(child.pid())
    );
    assert!(
        after.fds <= base.fds,
        "{name} leaked file descriptors: {after:?} vs {base:?}"
    );
    assert!(
        after.tasks <= base.tasks,
        "{name} leaked tasks: {after:?} vs {base:?}"
    );
    assert_eq!(
        after.connections, 0,
        "{name}: connections still counted active"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_through_l_and_r_lose_nothing_and_leak_nothing_exclusive() {
    let n = env_or("BURROW_LOAD_CONNECTIONS", DEFAULT_CONNECTIONS);
    let bytes = env_or("BURROW_LOAD_BYTES", 64 * 1024u64);
    // The test holds 2 sockets per connection (client and echo side).
    ::burrow::rlimit::raise_nofile_limit().expect("raise the open file limit");
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let config = format!(
        "{PERMIT_OPEN_ANY}[limits]\nmax_channels_per_key = {}\n",
        n + 64
    );
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], Some(&config), &[]).await;
    let echo = echo_server().await;
    let mut cmd = relay.burrow_ssh(&key);
    cmd.args(["-N", "-L"])
        .arg(format!("127.0.0.1:0:{}", echo.hostport()))
        .arg("-R")
        .arg(format!("127.0.0.1:0:{}", echo.hostport()))
        .arg("root@127.0.0.1");
    let client = spawn_logged(cmd, dir.path(), "burrow-LR");
    let lport = allocated_port(&client, &format!("local forward to {}", echo.hostport())).await;
    let rport = allocated_port(&client, &format!("remote forward to {}", echo.hostport())).await;
    assert!(wait_port(loopback(rport), Duration::from_secs(30)).await);
    // The readiness probe reaches the echo service through -R: wait until it has (0 == 0 is
    // true before it arrives) and has closed again. Bounded: the phase checks idleness itself.
    for _ in 0..100 {
        let closed = Stats::get(&echo.stats.closed);
        if closed >= 1 && Stats::get(&echo.stats.connections) == closed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client_base = settle(
        &client,
        runtime_stats(&client).await,
        Duration::from_secs(10),
    )
    .await;
    let relay_base = settle(
        &relay.child,
        runtime_stats(&relay.child).await,
        Duration::from_secs(10),
    )
    .await;
    println!("baseline: client {client_base:?}, relay {relay_base:?}");

    for (name, addr) in [("-L", loopback(lport)), ("-R", loopback(rport))] {
        let (open, transfer) = phase(name, addr, n, bytes, &echo).await;
        println!(
            "{name}: {n} connections open at once after {open:.1?}; {n} x {bytes} bytes both ways \
             checked in {transfer:.1?}"
        );
        assert_back_to("burrow ssh", &client, client_base).await;
        assert_back_to("burrow serve", &relay.child, relay_base).await;
    }
    // Every byte (and each connection's one-byte hello) reached the echo service once per phase.
    assert_eq!(Stats::get(&echo.stats.bytes_in), 2 * n as u64 * (bytes + 1));
}
