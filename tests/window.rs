//! The adaptive receive window (vendor/russh/BURROW-PATCH.md, "Adaptive receive window"): over
//! a link with a long round trip, a burrow peer that receives on a forward grows that channel's
//! window past the fixed 2 MiB once a round trip's worth of data fills most of it, against
//! OpenSSH's sshd and against burrow serve; and with both directions of an echo running at once
//! nothing stalls and every byte arrives (the demo's 64 MiB echo once stalled with this change,
//! before the session loops learned to read while writing). The relay grows its windows only
//! within its key's growth budget, and gets the bytes back when the connection closes.
//!
//! The link is a delay line on loopback (tests/common/delay.rs), 40 ms each way. Growth is read
//! from russh's debug line for it (`BURROW_LOG=...,russh::session=debug`); no speed is asserted.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::burrow::{allocated_port, Relay, UP_TIMEOUT};
use common::delay::DelayLine;
use common::*;

/// Each way; 80 ms round trip, where 2 MiB per round trip is 25 MiB/s, below what even a debug
/// build moves on loopback, so a window that never grows is the limit and shows up as such.
const DELAY: Duration = Duration::from_millis(40);
/// Enough round trips for the window to double a few times.
const BYTES: u64 = 64 << 20;
/// The debug line russh logs when it grows a channel's receive window.
const GREW: &str = "receive window";
/// Logs burrow at its normal level plus russh's window decisions.
const LOG_FILTER: &str = "warn,burrow=info,russh::session=debug";

/// Starts `burrow ssh -N -L 127.0.0.1:0:TARGET root@127.0.0.1` to `port` (the delay line) with
/// the server's client `options` and `key`; returns it with the local address it listens on.
async fn forward(
    port: u16,
    options: Vec<String>,
    key: &Keypair,
    dir: &std::path::Path,
    target: &str,
) -> (ChildGuard, SocketAddr) {
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("ssh")
        .env_remove("SSH_AUTH_SOCK")
        .env("BURROW_LOG", LOG_FILTER)
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ]);
    for o in options {
        cmd.arg("-o").arg(o);
    }
    cmd.arg("-i")
        .arg(&key.private)
        .args(["-p", &port.to_string(), "-N", "-L"])
        .arg(format!("127.0.0.1:0:{target}"))
        .arg("root@127.0.0.1");
    let mut child = spawn_logged(cmd, dir, "burrow-L");
    let port = allocated_port(&child, &format!("local forward to {target}")).await;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_listening(&mut child, addr, UP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("burrow -L: {e}"));
    (child, addr)
}

/// A `burrow serve` logging with `filter` (the relay inherits `BURROW_LOG`), a delay line of
/// `delay` each way in front of it, and a `burrow ssh -L` through that line to `target`
/// (logging with [`LOG_FILTER`]); the line must live as long as the forward is used.
async fn relay_forward(
    dir: &std::path::Path,
    filter: &str,
    delay: Duration,
    target: &str,
) -> (Relay, DelayLine, ChildGuard, SocketAddr) {
    relay_forward_with(dir, filter, delay, target, "").await
}

/// [`relay_forward`] with `limits` (serve.toml's `[limits]` lines) in the relay's config. The
/// relay serves its metrics on a loopback port of its choice ([`Relay::metrics_addr`]).
async fn relay_forward_with(
    dir: &std::path::Path,
    filter: &str,
    delay: Duration,
    target: &str,
    limits: &str,
) -> (Relay, DelayLine, ChildGuard, SocketAddr) {
    let key = keygen(dir, "id", KeyKind::Ed25519, None);
    let config = format!("{}[limits]\n{limits}", burrow::PERMIT_OPEN_ANY);
    let relay = {
        std::env::set_var("BURROW_LOG", filter);
        Relay::start(
            dir,
            "relay",
            std::slice::from_ref(&key.public_line),
            Some(&config),
            &["--metrics", "127.0.0.1:0"],
        )
        .await
    };
    let line = DelayLine::start(relay.addr, delay)
        .await
        .expect("delay line");
    let alias = format!("[127.0.0.1]:{}", line.addr.port());
    trust_host(
        &relay.known_hosts,
        &alias,
        &public_key_line(&relay.host_key),
    );
    let (client, addr) = forward(line.addr.port(), relay.client_options(), &key, dir, target).await;
    (relay, line, client, addr)
}

/// The `receive window A -> B` lines in `log`.
fn growth(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(GREW)).collect()
}

/// Echoes [`BYTES`] both ways at once through `addr`, every byte compared, within a deadline far
/// beyond what even a fixed window needs (a stall fails it, slowness does not).
async fn echo_through(addr: SocketAddr) {
    let deadline = Duration::from_secs(90);
    let t = transfer_checked_within(addr, BYTES, DEFAULT_SEED, deadline)
        .await
        .unwrap_or_else(|e| panic!("echo of {BYTES} bytes through {addr}: {e}"));
    println!(
        "echoed {} MiB each way at {:.1} MiB/s",
        BYTES >> 20,
        t.mib_per_s()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_grows_receiving_from_openssh_sshd_and_the_echo_completes_exclusive() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions::with_keys(&[&key]));
    let echo = echo_server().await;
    let line = DelayLine::start(sshd.addr, DELAY)
        .await
        .expect("delay line");
    // The client reaches sshd through the delay line's port and checks sshd's real host key.
    let alias = format!("[127.0.0.1]:{}", line.addr.port());
    trust_host(&sshd.known_hosts, &alias, &sshd.host_key_line);

    let (client, addr) = forward(
        line.addr.port(),
        sshd.client_options(),
        &key,
        dir.path(),
        &echo.hostport(),
    )
    .await;
    echo_through(addr).await;

    let log = client.stderr_text();
    let grew = growth(&log);
    assert!(
        !grew.is_empty(),
        "burrow received {BYTES} bytes over an 80 ms round trip and never grew its window:\n{log}"
    );
    println!("client: {}", grew.join("\n        "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_grows_both_ways_between_burrow_peers_and_the_echo_completes_exclusive() {
    let dir = test_dir();
    let echo = echo_server().await;
    let (relay, _line, client, addr) =
        relay_forward(dir.path(), LOG_FILTER, DELAY, &echo.hostport()).await;
    echo_through(addr).await;

    let (client_log, relay_log) = (client.stderr_text(), relay.child.stderr_text());
    let (client_grew, relay_grew) = (growth(&client_log), growth(&relay_log));
    assert!(
        !client_grew.is_empty(),
        "burrow ssh received the echo over an 80 ms round trip and never grew its window:\n{client_log}"
    );
    assert!(
        !relay_grew.is_empty(),
        "burrow serve received the upload over an 80 ms round trip and never grew its window:\n{relay_log}"
    );
    println!("client: {}", client_grew.join("\n        "));
    println!("relay:  {}", relay_grew.join("\n        "));
}

/// Each way for [`replay_buffers_grow_on_a_download_from_burrow_serve_exclusive`]: at a 200 ms
/// round trip a fixed 4 MiB replay buffer carries at most 20 MiB/s, below what a debug build
/// moves, so the buffer (not the CPU) is what limits and has to grow.
const LFP_DELAY: Duration = Duration::from_millis(100);

/// Resumable streams (burrow ssh to burrow serve) keep every byte in a replay buffer until it is
/// acknowledged; at 4 MiB fixed that capped a download at 4 MiB per round trip. Over a 200 ms
/// round trip the relay's buffer for a 64 MiB download grows past its first 4 MiB (its debug
/// line `replay buffer grew`, with `burrow::resume=debug`, and as often in its metrics'
/// `burrow_relay_stream_buffers_grown_total`), and every byte arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_buffers_grow_on_a_download_from_burrow_serve_exclusive() {
    const FILTER: &str = "warn,burrow=info,burrow::resume=debug";
    let dir = test_dir();
    let source = source_server(BYTES, DEFAULT_SEED).await;
    let (relay, _line, client, addr) =
        relay_forward(dir.path(), FILTER, LFP_DELAY, &source.hostport()).await;
    let start = std::time::Instant::now();
    let got = fetch_checked(addr, BYTES, DEFAULT_SEED, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "download of {BYTES} bytes through {addr}: {e}\nclient: {}\nrelay: {}",
                client.stderr_text(),
                relay.child.stderr_text()
            )
        });
    assert_eq!(got, BYTES);
    let relay_log = relay.child.stderr_text();
    let grew: Vec<&str> = relay_log
        .lines()
        .filter(|l| l.contains("replay buffer grew"))
        .collect();
    println!(
        "downloaded {} MiB in {:.1} s; relay: {}",
        BYTES >> 20,
        start.elapsed().as_secs_f64(),
        grew.join("\n        ")
    );
    assert!(
        !grew.is_empty(),
        "the relay sent {BYTES} bytes over a 200 ms round trip and never grew its replay \
         buffer:\n{relay_log}\nclient: {}",
        client.stderr_text()
    );
    let (status, body) = http_get(relay.metrics_addr().await, "/metrics", UP_TIMEOUT)
        .await
        .expect("the relay's metrics");
    let metrics = String::from_utf8_lossy(&body);
    let counted = format!("burrow_relay_stream_buffers_grown_total {}", grew.len());
    assert!(
        status == 200 && metrics.lines().any(|l| l == counted),
        "{} growths logged, metrics say otherwise ({status}):\n{metrics}",
        grew.len()
    );
}

/// Resumable streams acknowledge on the session's control channel as well as inside each
/// stream's channel, where an acknowledgement waits behind data. An echo through a relay whose
/// replay buffers are small (`resume_buffer_kib = 64`, against burrow ssh's 4 MiB) hung for good
/// without that: the relay's full buffer stopped it reading the echo target's answers, so the
/// target stopped reading, so the relay stopped reading its channel, where burrow ssh's
/// acknowledgements sat behind data. Both directions at once, every byte compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_through_a_relay_with_small_replay_buffers_completes_exclusive() {
    let dir = test_dir();
    let echo = echo_server().await;
    let (relay, _line, client, addr) = relay_forward_with(
        dir.path(),
        LOG_FILTER,
        DELAY,
        &echo.hostport(),
        "resume_buffer_kib = 64\n",
    )
    .await;
    let bytes = 64 << 20;
    let t = transfer_checked_within(addr, bytes, DEFAULT_SEED, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "echo of {bytes} bytes through {addr}: {e}\nclient: {}\nrelay: {}",
                client.stderr_text(),
                relay.child.stderr_text()
            )
        });
    println!("echoed 64 MiB each way at {:.1} MiB/s", t.mib_per_s());
}

/// The relay's growth budgets: a window is what a client can make the relay queue for a
/// connection whose other end stops reading, so its growth past 2 MiB is bounded per key
/// (`window_growth_per_key_mib`) and relay-wide (`window_growth_total_mib`). With 2 MiB in
/// either, the relay's window on an upload over an 80 ms round trip grows once (2 -> 4 MiB)
/// and then stays, the refusals counted in its metrics; the echo completes anyway, every byte
/// compared. Once the forwarded connection is closed the growth is given back
/// (`burrow_relay_window_growth_bytes 0`), and the next connection's window grows once again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_grows_windows_only_within_the_key_budget_and_gets_it_back_exclusive() {
    grows_within_budget("window_growth_per_key_mib = 2\n").await;
}

/// [`the_relay_grows_windows_only_within_the_key_budget_and_gets_it_back_exclusive`] with the
/// relay-wide budget as the one that binds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_grows_windows_only_within_the_relay_budget_exclusive() {
    grows_within_budget("window_growth_per_key_mib = 64\nwindow_growth_total_mib = 2\n").await;
}

/// Two 64 MiB echoes through a relay with `limits`, which leave 2 MiB of window growth: each
/// grows the relay's window exactly once, and gives it back.
async fn grows_within_budget(limits: &str) {
    let dir = test_dir();
    let echo = echo_server().await;
    let (relay, _line, client, addr) =
        relay_forward_with(dir.path(), LOG_FILTER, DELAY, &echo.hostport(), limits).await;
    let metrics_addr = relay.metrics_addr().await;
    for round in 1..=2 {
        echo_through(addr).await;
        let relay_log = relay.child.stderr_text();
        let grew = growth(&relay_log);
        let grown: Vec<&&str> = grew.iter().filter(|l| !l.contains("stays")).collect();
        let refused = grew.iter().filter(|l| l.contains("budget")).count();
        assert!(
            grown.len() == round && grown.iter().all(|l| l.contains("2097152 -> 4194304")),
            "round {round}: the relay's windows should have grown once per connection, \
             2 -> 4 MiB, within a 2 MiB budget:\n{relay_log}\nclient: {}",
            client.stderr_text()
        );
        assert!(
            refused > 0,
            "round {round}: no growth was refused:\n{relay_log}"
        );
        let deadline = std::time::Instant::now() + UP_TIMEOUT;
        let metrics = loop {
            let (status, body) = http_get(metrics_addr, "/metrics", UP_TIMEOUT)
                .await
                .expect("the relay's metrics");
            let metrics = String::from_utf8_lossy(&body).into_owned();
            assert_eq!(status, 200, "{metrics}");
            if metrics
                .lines()
                .any(|l| l == "burrow_relay_window_growth_bytes 0")
                || std::time::Instant::now() > deadline
            {
                break metrics;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            metrics
                .lines()
                .any(|l| l == "burrow_relay_window_growth_bytes 0"),
            "round {round}: the closed connection's growth was not given back:\n{metrics}"
        );
        let counted = metrics
            .lines()
            .find_map(|l| l.strip_prefix("burrow_relay_window_growth_refused_total "))
            .and_then(|n| n.parse::<usize>().ok());
        assert!(
            counted.is_some_and(|n| n >= refused),
            "round {round}: {refused} refusals logged, metrics say {counted:?}:\n{metrics}"
        );
    }
}
