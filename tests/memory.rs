//! Memory stays bounded under backpressure, measured as the resident set size (VmRSS in
//! /proc/PID/status) of the burrow processes:
//!
//! - a forwarded connection whose reader stalls while its source has 64 MiB to send, beside a
//!   connection on the same session through which a writer pushes 1 GiB: the stalled stream is
//!   held back by its channel window, the other one flows, neither process grows past a bound
//!   derived from the window, and once the reader resumes every byte of the stalled stream
//!   arrives intact;
//! - a peer that sends one-byte packets into a channel nobody reads (the case
//!   vendor/russh/BURROW-PATCH.md calls "coalescing small data"): queued bytes cost about a
//!   byte each, not a queue slot and an allocation per packet.
//!
//! - 100 streams through `burrow up` whose reader never reads, with resumable streams on: the
//!   relay keeps what it sent until acknowledged, but every replay buffer is reserved from the
//!   key's budget (64 MiB by default), so the relay grows by no more than that budget on top of
//!   what the same streams cost without resume.
//!
//! - thousands of short connections one after another, each closed by the far side first (the
//!   relay's channel is closed by the relay): neither process keeps anything per connection.
//!
//! All are `_exclusive`: they move gigabytes or hold hundreds of MiB, and sample memory.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::burrow::{allocated_port, Relay, PERMIT_OPEN_ANY};
use common::procstat::rss_kib;
use common::russh_client::connect_with_key;
use common::*;
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// russh's default receive window per channel (burrow keeps it): 2 MiB.
fn window() -> u64 {
    u64::from(russh::client::Config::default().window_size)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Samples the RSS of `pids` every 50 ms until stopped; keeps the peak of each (KiB).
struct RssSampler {
    stop: Arc<AtomicBool>,
    peaks: Vec<Arc<AtomicU64>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pids: &[u32]) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks: Vec<Arc<AtomicU64>> = pids.iter().map(|_| Arc::default()).collect();
        let (pids, s, p) = (pids.to_vec(), stop.clone(), peaks.clone());
        let task = tokio::spawn(async move {
            // Bounded: at most 20 minutes of samples.
            for _ in 0..24_000 {
                for (pid, peak) in pids.iter().zip(&p) {
                    peak.fetch_max(rss_kib(*pid), Ordering::Relaxed);
                }
                if s.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        RssSampler { stop, peaks, task }
    }

    async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peaks
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .collect()
    }
}

/// Waits until `counter` stops growing for 500 ms (at most `limit`); returns its value.
async fn until_still(counter: &AtomicU64, limit: Duration) -> u64 {
    let start = Instant::now();
    let mut last = Stats::get(counter);
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = Stats::get(counter);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// A relay that lets its one key open anything, and a `burrow ssh -N` to it with one `-L` per
/// target (host:port); returns them with the local ports of the forwards, in order.
async fn relay_and_forwards(
    dir: &std::path::Path,
    targets: &[String],
) -> (Relay, ChildGuard, Vec<u16>) {
    let key = keygen(dir, "id", KeyKind::Ed25519, None);
    let relay = Relay::start(
        dir,
        "relay",
        &[&key.public_line],
        Some(PERMIT_OPEN_ANY),
        &[],
    )
    .await;
    let mut cmd = relay.burrow_ssh(&key);
    cmd.arg("-N");
    for target in targets {
        cmd.arg("-L").arg(format!("127.0.0.1:0:{target}"));
    }
    cmd.arg("root@127.0.0.1");
    let client = spawn_logged(cmd, dir, "burrow-L");
    let mut ports = Vec::new();
    for target in targets {
        ports.push(allocated_port(&client, &format!("local forward to {target}")).await);
    }
    (relay, client, ports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_beside_a_1_gib_transfer_keeps_memory_bounded_exclusive() {
    let dir = test_dir();
    let stalled_len = 64 * MIB;
    let source = source_server(stalled_len, 21).await;
    let mut sink = sink_server().await;
    let (relay, client, ports) =
        relay_and_forwards(dir.path(), &[source.hostport(), sink.addr.to_string()]).await;
    let [source_port, sink_port] = ports[..] else {
        unreachable!("two forwards asked for")
    };
    let pids = [client.pid(), relay.child.pid()];
    let base: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();

    // The stalled reader: connected, never reading, while the source tries to send 64 MiB.
    let mut stalled = TcpStream::connect(loopback(source_port)).await.unwrap();
    let held_back = until_still(&source.stats.bytes_out, Duration::from_secs(30)).await;
    println!("stalled stream: source sent {held_back} bytes, then stopped");
    assert!(
        held_back < stalled_len / 2,
        "a stalled stream is held back, not buffered"
    );

    // Meanwhile 1 GiB moves through the same session.
    let sampler = RssSampler::start(&pids);
    let started = Instant::now();
    let sha = push_hashed(loopback(sink_port), GIB, 22, Duration::from_secs(600))
        .await
        .expect("1 GiB beside a stalled reader");
    let elapsed = started.elapsed();
    let got = sink
        .next_result(Duration::from_secs(60))
        .await
        .expect("sink saw EOF");
    assert_eq!((got.bytes, got.sha256.as_str()), (GIB, sha.as_str()));
    assert!(got.clean_eof);
    let still = Stats::get(&source.stats.bytes_out);
    assert!(still - held_back < MIB, "stalled stream stayed stalled");
    let peaks = sampler.finish().await;
    println!(
        "1 GiB beside the stalled reader in {elapsed:.1?} ({:.0} MiB/s)",
        GIB as f64 / MIB as f64 / elapsed.as_secs_f64()
    );

    // Then the reader resumes: every byte of the held-back stream arrives.
    let sampler2 = RssSampler::start(&pids);
    let (n, digest) =
        tokio::time::timeout(Duration::from_secs(600), read_to_end_hashed(&mut stalled))
            .await
            .expect("stalled stream finishes once read")
            .expect("read");
    assert_eq!((n, digest), (stalled_len, det_sha256(21, stalled_len)));
    let peaks2 = sampler2.finish().await;

    let bound_kib = 24 * window() / 1024;
    for (i, name) in ["burrow ssh", "burrow serve"].iter().enumerate() {
        let grew = peaks[i].max(peaks2[i]).saturating_sub(base[i]);
        println!(
            "{name}: RSS {} KiB before, peak {} KiB while stalled + 1 GiB, {} KiB while draining; \
             growth {grew} KiB (bound {bound_kib} KiB = 24 x {} KiB window)",
            base[i],
            peaks[i],
            peaks2[i],
            window() / 1024
        );
        assert!(grew <= bound_kib, "{name} grew by {grew} KiB");
    }
}

/// A TCP service that accepts one connection and reads from it only the byte counts sent on
/// the returned channel, with a small receive buffer: what is sent to it beyond that piles up in
/// the sender.
async fn metered_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedSender<usize>) {
    use socket2::{Domain, Socket, Type};
    use tokio::io::AsyncReadExt;
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(&loopback(0).into()).unwrap();
    sock.listen(16).unwrap();
    sock.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(sock.into()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    tokio::spawn(async move {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        while let Some(mut n) = rx.recv().await {
            while n > 0 {
                let k = buf.len().min(n);
                match conn.read(&mut buf[..k]).await {
                    Ok(0) | Err(_) => return,
                    Ok(got) => n -= got,
                }
            }
        }
    });
    (addr, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_packets_into_an_unread_channel_cost_about_a_byte_each_exclusive() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = Relay::start(
        dir.path(),
        "relay",
        &[&key.public_line],
        Some(PERMIT_OPEN_ANY),
        &[],
    )
    .await;
    let (target, read) = metered_server().await;

    let session = connect_with_key(relay.addr, &key).await;
    let channel = common::russh_client::open_direct(&session, target).await;
    let pid = relay.child.pid();

    // 1. Fill everything behind the relay's pump (socket buffers, then the channel's window)
    //    with full-sized packets until the relay stops granting window.
    let chunk = vec![0u8; 32 * 1024];
    let mut bulk = 0u64;
    for _ in 0..4096 {
        let sent = tokio::time::timeout(Duration::from_secs(2), channel.data(&chunk[..])).await;
        if sent.is_err() {
            break;
        }
        bulk += chunk.len() as u64;
    }
    assert!(bulk >= window(), "window exhausted after {bulk} bytes");
    // 2. The target reads 3/4 of a window: the pump moves that much on and blocks again, and the
    //    relay re-opens the window by as much, while its queue is not being read.
    let reopened = 3 * window() / 4;
    read.send(reopened as usize).unwrap();
    // 3. One-byte packets into that window; the relay must queue all of them.
    let packets = window() / 8;
    let base = rss_kib(pid);
    let started = Instant::now();
    for i in 0..packets {
        tokio::time::timeout(Duration::from_secs(30), channel.data(&b"x"[..]))
            .await
            .unwrap_or_else(|_| panic!("packet {i}: window not re-opened"))
            .expect("send one byte");
    }
    // A keepalive answered after the data: the relay has processed every packet.
    session
        .send_ping()
        .await
        .expect("relay answers after the flood");
    let after = rss_kib(pid);
    let grew = after.saturating_sub(base);
    let bound_kib = 4 * window() / 1024;
    println!(
        "{bulk} bytes to fill the path, then {packets} one-byte packets in {:.1?}: relay RSS \
         {base} -> {after} KiB, +{grew} KiB (bound {bound_kib} KiB = 4 x window; unmerged they \
         would cost ~115 B each, ~{} KiB)",
        started.elapsed(),
        packets * 115 / 1024
    );
    assert!(grew <= bound_kib, "relay grew by {grew} KiB");
    drop(channel);
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
}

/// The relay's default replay buffer budget per key (serve.toml `resume_budget_per_key_mib`).
const KEY_BUDGET: u64 = 64 * MIB;
/// Streams whose reader never reads.
const UNREAD_STREAMS: usize = 100;

/// Relay RSS growth (KiB) caused by [`UNREAD_STREAMS`] streams through a `burrow up` -L
/// forward to a source with 64 MiB for each, with resumable streams `resume`, and how many of
/// them the relay logged as carried without a replay buffer; prints the figures.
async fn unread_streams_growth_kib(resume: bool) -> (u64, usize) {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    // The -L target is a source on the relay's loopback: opt in to reaching it.
    let relay = Relay::start(
        dir.path(),
        "relay",
        &[&key.public_line],
        Some(PERMIT_OPEN_ANY),
        &[],
    )
    .await;
    let per_stream = 64 * MIB;
    let source = source_server(per_stream, 31).await;
    let lport = free_port();
    let file = dir.path().join("tunnels.toml");
    std::fs::write(
        &file,
        format!(
            "[[tunnel]]\nname = \"m\"\nserver = \"root@127.0.0.1:{}\"\n\
             local = [\"127.0.0.1:{lport}:{}\"]\nidentity = \"{}\"\nknown_hosts = \"{}\"\n\
             ssh_config = \"none\"\nresume = {resume}\n",
            relay.addr.port(),
            source.hostport(),
            key.private.display(),
            relay.known_hosts.display()
        ),
    )
    .expect("tunnels.toml");
    let mut cmd = std::process::Command::new(burrow_bin());
    cmd.arg("up")
        .arg(&file)
        .arg("--control")
        .arg(dir.path().join("up.sock"));
    let up = spawn_logged(cmd, dir.path(), "burrow-up");
    assert!(
        wait_port(loopback(lport), Duration::from_secs(30)).await,
        "tunnel's -L port never opened:\n{}",
        up.stderr_text()
    );
    // Let the probe connection's stream end before the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = relay.child.pid();
    let base = rss_kib(pid);
    let client_base = rss_kib(up.pid());

    let mut readers = Vec::with_capacity(UNREAD_STREAMS);
    for _ in 0..UNREAD_STREAMS {
        readers.push(TcpStream::connect(loopback(lport)).await.expect("connect"));
    }
    let sampler = RssSampler::start(&[pid]);
    let held = until_quiet(&source.stats.bytes_out, Duration::from_secs(120)).await;
    let peak = sampler.finish().await[0];
    let grew = peak.saturating_sub(base);
    println!(
        "resume {}: {UNREAD_STREAMS} unread streams, sources sent {} MiB and stopped; relay RSS \
         {base} KiB -> peak {peak} KiB (+{grew} KiB), burrow up {client_base} -> {} KiB",
        if resume { "on" } else { "off" },
        held / MIB,
        rss_kib(up.pid())
    );
    assert!(
        held < UNREAD_STREAMS as u64 * per_stream / 4,
        "unread streams are held back, not drained"
    );
    let unresumable = relay
        .child
        .stderr_text()
        .matches("carried without a replay buffer")
        .count();
    println!("relay: {unresumable} streams carried without a replay buffer");
    drop(readers);
    (grew, unresumable)
}

/// Waits until `counter` has not grown for 3 s in a row (at most `limit`): on a loaded machine
/// a 500 ms pause in the middle of filling 100 streams' buffers is not the end of it.
async fn until_quiet(counter: &AtomicU64, limit: Duration) -> u64 {
    let start = Instant::now();
    let mut last = Stats::get(counter);
    let mut quiet = 0;
    while start.elapsed() < limit && quiet < 6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = Stats::get(counter);
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    last
}

/// Issue 18, item 3. Without the budget each unread stream pinned up to its 4 MiB replay buffer
/// on the relay: 100 of them grew it by 217-226 MiB (14-15 MiB with resume off). With it, 16
/// streams fill the key's 64 MiB and the other 84 are carried unresumable. The slack on top of
/// the budget is what the same 100 streams cost the relay with resume off, measured in the same
/// run (channels, sessions, bytes in flight), plus 16 MiB: the resume engine's two 32 KiB frame
/// buffers per stream (6.25 MiB for 100), and allocator noise (the resume-off figure alone
/// varies by ~1.5 MiB between runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_resumable_streams_grow_the_relay_by_at_most_the_key_budget_exclusive() {
    let (plain, _) = unread_streams_growth_kib(false).await;
    let (resumable, unresumable) = unread_streams_growth_kib(true).await;
    let bound = (KEY_BUDGET + 16 * MIB) / 1024 + plain;
    println!(
        "relay growth: resume off +{plain} KiB, resume on +{resumable} KiB; bound {bound} KiB \
         (64 MiB key budget + resume-off growth + 16 MiB)"
    );
    assert!(
        resumable <= bound,
        "100 unread resumable streams grew the relay by {resumable} KiB, past {bound} KiB"
    );
    // 16 x 4 MiB fill the key's 64 MiB (15 if the probe's stream still held its buffer).
    assert!(
        unresumable >= UNREAD_STREAMS - 16,
        "streams past the key budget are carried unresumable ({unresumable})"
    );
}

/// Opens a connection through `addr` (an echo forward), sends one byte, reads it back, closes.
async fn ping(addr: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"x").await.expect("send");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("echo");
}

/// `n` [`ping`]s through `addr`, four at a time.
async fn pings(addr: SocketAddr, n: usize) {
    let loops: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..n / 4 {
                    ping(addr).await;
                }
            })
        })
        .collect();
    for l in loops {
        l.await.expect("ping loop");
    }
}

/// Short connections cost nothing once closed. The relay closes each forwarded channel first
/// (the echo service closes when the client half-closes), and russh dropped the peer's CLOSE
/// answering it before removing the channel's queue: measured on a release build, 31,000
/// connections through burrow ssh (resumable streams) grew the relay by 115 MB, 3.7 KB each,
/// and 33,000 from an OpenSSH client by 24 MB. After a warm-up, 8000 more connections must
/// leave both processes within 2 MiB of where they were (the leak grew this debug-build relay
/// by 4.2 MB per 4000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_connections_leave_nothing_behind_exclusive() {
    const WARM_UP: usize = 1000;
    const MEASURED: usize = 8000;
    let dir = test_dir();
    let echo = echo_server().await;
    let (relay, client, ports) = relay_and_forwards(dir.path(), &[echo.hostport()]).await;
    let addr = loopback(ports[0]);
    pings(addr, WARM_UP).await;
    let pids = [client.pid(), relay.child.pid()];
    let base: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    let start = Instant::now();
    pings(addr, MEASURED).await;
    let after: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    println!(
        "{MEASURED} connections in {:.1?}: client {} -> {} KiB, relay {} -> {} KiB",
        start.elapsed(),
        base[0],
        after[0],
        base[1],
        after[1]
    );
    for (name, (b, a)) in ["burrow ssh", "burrow serve"]
        .iter()
        .zip(base.iter().zip(&after))
    {
        assert!(
            a.saturating_sub(*b) <= 2048,
            "{name} grew by {} KiB over {MEASURED} closed connections ({b} -> {a} KiB)",
            a.saturating_sub(*b)
        );
    }
}
