//! `burrow up` against a real relay on loopback: a tunnel comes up, survives the relay being
//! killed and restarted and being frozen, reports through `burrow status` and metrics, and a
//! reload adds a tunnel without touching the running one. (Link-level faults in network
//! namespaces live in the fault tests.)

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::burrow::Relay;
use common::*;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn status_json(control: &Path) -> Option<serde_json::Value> {
    let out = Command::new(burrow_bin())
        .args(["status", "--json", "--control"])
        .arg(control)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn tunnel<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status.as_array()?.iter().find(|t| t["name"] == name)
}

/// Waits until `check(status)` holds; panics with the last status and the up log otherwise.
async fn wait_status(
    control: &Path,
    up: &ChildGuard,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(s) = status_json(control) {
            if check(&s) {
                return s;
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for {what}; last status {last:?}\n{}",
        up.stderr_text()
    );
}

/// Retries a small echo transfer until it works; returns how long that took.
async fn until_echo_works(addr: SocketAddr, limit: Duration) -> Duration {
    let start = Instant::now();
    for i in 0..10_000u64 {
        if transfer_checked_within(addr, 32 * 1024, i, Duration::from_secs(3))
            .await
            .is_ok()
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{addr} did not work again within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

fn write_tunnels(path: &Path, key: &Keypair, relay: &Relay, tunnels: &str) {
    let text = format!(
        "[defaults]\nidentity = \"{}\"\nknown_hosts = \"{}\"\nkeepalive_interval = 1\nkeepalive_count = 2\nbackoff_initial = 1\nbackoff_max = 2\nconnect_timeout = 5\nssh_config = \"none\"\n\n{tunnels}",
        key.private.display(),
        relay.known_hosts.display()
    );
    std::fs::write(path, text).unwrap();
}

fn http_metrics(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_recovers_from_relay_restart_and_freeze_and_reload_keeps_it() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let mut relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &[]).await;
    let relay_addr = relay.addr;
    let echo = echo_server().await;
    let rport = free_port();
    let file = dir.path().join("tunnels.toml");
    let first = format!(
        "[[tunnel]]\nname = \"a\"\nserver = \"root@127.0.0.1:{}\"\nremote = [\"{rport}:{}\"]\n",
        relay_addr.port(),
        echo.hostport()
    );
    write_tunnels(&file, &key, &relay, &first);
    let control = dir.path().join("up.sock");
    let up = spawn_up(dir.path(), &file, &control, &["--metrics", "127.0.0.1:0"]);
    wait_status(&control, &up, "tunnel a up", |s| {
        tunnel(s, "a").is_some_and(|t| t["state"] == "up")
    })
    .await;
    transfer_checked(loopback(rport), 4 << 20)
        .await
        .expect("tunnel works");

    // 1. The relay dies (SIGKILL) and comes back on the same port.
    relay.child.kill();
    relay = Relay::start_at(
        dir.path(),
        "relay",
        &[&key.public_line],
        None,
        &[],
        &relay_addr.to_string(),
    )
    .await;
    let recovered = until_echo_works(loopback(rport), Duration::from_secs(45)).await;
    println!(
        "relay SIGKILL + restart: end-to-end again {:.2} s after the relay was back",
        recovered.as_secs_f64()
    );

    // 2. The relay freezes longer than the keepalive window (1 s x 2): the tunnel notices.
    relay.child.freeze();
    wait_status(&control, &up, "tunnel a noticing the frozen relay", |s| {
        tunnel(s, "a").is_some_and(|t| t["state"] != "up")
    })
    .await;
    relay.child.thaw();
    let thawed = until_echo_works(loopback(rport), Duration::from_secs(45)).await;
    println!(
        "relay SIGSTOP > keepalive window, SIGCONT: end-to-end again {:.2} s after SIGCONT",
        thawed.as_secs_f64()
    );
    let s = wait_status(&control, &up, "tunnel a up again", |s| {
        tunnel(s, "a").is_some_and(|t| t["state"] == "up")
    })
    .await;
    let a = tunnel(&s, "a").unwrap().clone();
    assert!(a["reconnects"].as_u64().unwrap() >= 2, "{a}");
    assert!(
        a["bytes_out"].as_u64().unwrap() >= 4 << 20,
        "bytes survive reconnects: {a}"
    );

    // Metrics read the same counters.
    let metrics_addr = metrics_address(&up).await;
    let text = http_metrics(metrics_addr);
    assert!(text.contains("burrow_tunnel_up{tunnel=\"a\"} 1"), "{text}");
    assert!(
        text.contains(&format!(
            "burrow_tunnel_reconnects_total{{tunnel=\"a\"}} {}",
            a["reconnects"]
        )),
        "{text}"
    );

    // 3. Reload: a second tunnel appears; the first keeps its connection (same `since`).
    let second = format!(
        "{first}\n[[tunnel]]\nname = \"b\"\nserver = \"root@127.0.0.1:{}\"\nremote = [\"0:{}\"]\n",
        relay_addr.port(),
        echo.hostport()
    );
    write_tunnels(&file, &key, &relay, &second);
    let s = wait_status(&control, &up, "tunnel b up after reload", |s| {
        tunnel(s, "b").is_some_and(|t| t["state"] == "up")
    })
    .await;
    let a2 = tunnel(&s, "a").unwrap();
    assert_eq!(
        (a2["since"].clone(), a2["reconnects"].clone()),
        (a["since"].clone(), a["reconnects"].clone()),
        "tunnel a untouched by the reload"
    );
    transfer_checked(loopback(rport), 1 << 20)
        .await
        .expect("tunnel a still works");

    // The human table names both tunnels.
    let out = Command::new(burrow_bin())
        .args(["status", "--control"])
        .arg(&control)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("TUNNEL") && table.lines().filter(|l| l.contains(" up ")).count() == 2,
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tunnels_file_names_the_line_and_field() {
    let dir = test_dir();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[tunnel]]\nname = \"x\"\nserver = \"b:2222\"\nremote = [\"8087:localhost\"]\n",
    )
    .unwrap();
    let out = Command::new(burrow_bin())
        .arg("up")
        .arg(&file)
        .arg("--control")
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 4") && err.contains("remote[0]") && err.contains("\"x\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_first_relay_falls_over_to_the_next() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &[]).await;
    let echo = echo_server().await;
    // A port nothing listens on: bound, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = dir.path().join("tunnels.toml");
    let tunnels = format!(
        "[[tunnel]]\nname = \"multi\"\nservers = [\"root@127.0.0.1:{dead}\", \"root@127.0.0.1:{}\"]\nremote = [\"0:{}\"]\n",
        relay.addr.port(),
        echo.hostport()
    );
    write_tunnels(&file, &key, &relay, &tunnels);
    let control = dir.path().join("up.sock");
    let up = spawn_up(dir.path(), &file, &control, &[]);
    let s = wait_status(&control, &up, "tunnel up on the second relay", |s| {
        tunnel(s, "multi").is_some_and(|t| t["state"] == "up")
    })
    .await;
    let t = tunnel(&s, "multi").unwrap();
    assert_eq!(
        t["server"],
        format!("root@127.0.0.1:{}", relay.addr.port()),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_key_backs_off_to_the_cap_and_exit_after_failures_gives_up() {
    let dir = test_dir();
    let allowed = keygen(dir.path(), "allowed", KeyKind::Ed25519, None);
    let refused = keygen(dir.path(), "refused", KeyKind::Ed25519, None);
    let relay = Relay::start(dir.path(), "relay", &[&allowed.public_line], None, &[]).await;
    let file = dir.path().join("tunnels.toml");
    // backoff 1 s doubling to a 30 s cap: an authentication failure must jump to the cap at once.
    let text = format!(
        "[defaults]\nidentity = \"{}\"\nknown_hosts = \"{}\"\nbackoff_initial = 1\nbackoff_max = 30\nssh_config = \"none\"\n\n[[tunnel]]\nname = \"denied\"\nserver = \"root@127.0.0.1:{}\"\nremote = [\"0:127.0.0.1:9\"]\n",
        refused.private.display(),
        relay.known_hosts.display(),
        relay.addr.port()
    );
    std::fs::write(&file, text).unwrap();
    let control = dir.path().join("up.sock");
    let up = spawn_up(dir.path(), &file, &control, &[]);
    let s = wait_status(&control, &up, "the refusal reported", |s| {
        tunnel(s, "denied").is_some_and(|t| t["state"] == "backoff" && t["failures"] == 1)
    })
    .await;
    let t = tunnel(&s, "denied").unwrap();
    assert!(
        t["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("Permission denied"),
        "{t}"
    );
    // No hot loop: within the next 8 s there is no second attempt, on either side.
    let refusals = relay
        .child
        .stderr_text()
        .matches("authentication refused")
        .count();
    assert!(refusals >= 1, "the relay saw the attempt");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let s = status_json(&control).expect("status");
    assert_eq!(
        tunnel(&s, "denied").unwrap()["failures"],
        1,
        "retried too soon: {s}"
    );
    assert_eq!(
        relay
            .child
            .stderr_text()
            .matches("authentication refused")
            .count(),
        refusals,
        "no new attempt reached the relay"
    );

    // exit_after_failures: an unreachable relay, two failures, then burrow up exits non-zero.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file2 = dir.path().join("gives-up.toml");
    std::fs::write(
        &file2,
        format!("[[tunnel]]\nname = \"gone\"\nserver = \"root@127.0.0.1:{dead}\"\nremote = [\"0:127.0.0.1:9\"]\nbackoff_initial = 1\nbackoff_max = 1\nexit_after_failures = 2\nssh_config = \"none\"\n"),
    )
    .unwrap();
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("up")
        .arg(&file2)
        .arg("--control")
        .arg(dir.path().join("up2.sock"));
    let (st, _, err) = run_with_timeout(
        cmd,
        dir.path(),
        "burrow-up-gives-up",
        Duration::from_secs(30),
    );
    assert!(
        st.is_some_and(|s| !s.success()),
        "exit status {st:?}: {err}"
    );
    assert!(
        err.contains("giving up after 2 consecutive failures"),
        "{err}"
    );
}

/// A tunnel on burrow up's default backoff (1 s doubling to 60 s) whose relay is away long enough
/// for the pause to grow (before issue 19, 16 s down meant waiting 8-16 s more after the relay
/// was back). Now the tunnel probes the relay every half second while it waits and starts the
/// handshake as soon as one answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_is_back_within_a_probe_interval_after_a_long_relay_outage() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let mut relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &[]).await;
    let relay_addr = relay.addr;
    let echo = echo_server().await;
    let rport = free_port();
    let file = dir.path().join("tunnels.toml");
    let tunnels = format!(
        "[[tunnel]]\nname = \"a\"\nserver = \"root@127.0.0.1:{}\"\nremote = [\"{rport}:{}\"]\nbackoff_max = 60\n",
        relay_addr.port(),
        echo.hostport()
    );
    write_tunnels(&file, &key, &relay, &tunnels);
    let control = dir.path().join("up.sock");
    let up = spawn_up(dir.path(), &file, &control, &[]);
    wait_status(&control, &up, "tunnel a up", |s| {
        tunnel(s, "a").is_some_and(|t| t["state"] == "up")
    })
    .await;
    until_echo_works(loopback(rport), Duration::from_secs(10)).await;

    relay.child.kill();
    tokio::time::sleep(Duration::from_secs(16)).await;
    relay = Relay::start_at(
        dir.path(),
        "relay",
        &[&key.public_line],
        None,
        &[],
        &relay_addr.to_string(),
    )
    .await;
    let back = until_echo_works(loopback(rport), Duration::from_secs(45)).await;
    println!(
        "relay down 16 s (default backoff): end-to-end again {:.2} s after the relay was back",
        back.as_secs_f64()
    );
    assert!(
        back <= Duration::from_secs(2),
        "the tunnel took {back:?} after the relay was back: it waited out a backoff pause\n{}",
        up.stderr_text()
    );
    let handshakes = relay.child.stderr_text().matches("authenticated").count();
    assert_eq!(
        handshakes,
        1,
        "one handshake reached the relay that came back\n{}",
        relay.child.stderr_text()
    );
}

/// A relay frozen for a minute (SIGSTOP: its kernel still accepts TCP, its process sends no SSH
/// banner) must not be hammered: while it is frozen the tunnel keeps one connection waiting for
/// the banner (a new one per 10 s banner wait), so when it resumes the relay works through a
/// backlog of a few connections and sees exactly one full handshake; and the tunnel is back
/// within moments, on the connection that was waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_frozen_for_a_minute_sees_one_handshake_not_a_storm() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &[]).await;
    let echo = echo_server().await;
    let rport = free_port();
    let file = dir.path().join("tunnels.toml");
    let tunnels = format!(
        "[[tunnel]]\nname = \"a\"\nserver = \"root@127.0.0.1:{}\"\nremote = [\"{rport}:{}\"]\nbackoff_max = 60\n",
        relay.addr.port(),
        echo.hostport()
    );
    write_tunnels(&file, &key, &relay, &tunnels);
    let control = dir.path().join("up.sock");
    let up = spawn_up(dir.path(), &file, &control, &[]);
    wait_status(&control, &up, "tunnel a up", |s| {
        tunnel(s, "a").is_some_and(|t| t["state"] == "up")
    })
    .await;
    until_echo_works(loopback(rport), Duration::from_secs(10)).await;

    let outage = Duration::from_secs(60);
    let log_before = relay.child.stderr_text().len();
    let frozen = Instant::now();
    relay.child.freeze();
    wait_status(&control, &up, "tunnel a noticing the frozen relay", |s| {
        tunnel(s, "a").is_some_and(|t| t["state"] != "up")
    })
    .await;
    tokio::time::sleep(outage.saturating_sub(frozen.elapsed())).await;
    relay.child.thaw();
    let back = until_echo_works(loopback(rport), Duration::from_secs(45)).await;
    // Let the relay finish with its backlog (each queued probe ends at once).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = relay.child.stderr_text();
    let after = log.get(log_before..).unwrap_or_default();
    let handshakes = after.matches("authenticated").count();
    let connections = after
        .split("session{id=")
        .skip(1)
        .filter_map(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u64>()
                .ok()
        })
        .collect::<std::collections::BTreeSet<u64>>()
        .len();
    println!(
        "relay frozen {} s: end-to-end again {:.2} s after SIGCONT; the relay then saw \
         {connections} connections and {handshakes} full handshake",
        outage.as_secs(),
        back.as_secs_f64()
    );
    assert_eq!(
        handshakes,
        1,
        "one full handshake after a minute frozen\n{after}\n{}",
        up.stderr_text()
    );
    let most = (outage.as_secs() / 10 + 3) as usize;
    assert!(
        connections <= most,
        "{connections} connections queued at the frozen relay (at most {most}): the tunnel spins\n{after}"
    );
    assert!(
        back <= Duration::from_secs(2),
        "the tunnel took {back:?} after SIGCONT\n{}",
        up.stderr_text()
    );
}

/// Datagrams a fake systemd receives on its NOTIFY_SOCKET (a unixgram socket the test binds),
/// collected by a thread until dropped.
struct NotifySocket {
    path: std::path::PathBuf,
    got: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(path: std::path::PathBuf) -> NotifySocket {
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            // Bounded: stops when the test drops the socket (at most a few minutes of test).
            for _ in 0..1_000_000 {
                if s.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    g.lock().unwrap().push(text);
                }
            }
        });
        NotifySocket {
            path,
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn messages(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until a message satisfies `check`; returns its index. Panics after `limit`.
    async fn wait_for(&self, what: &str, from: usize, check: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(i) = self
                .messages()
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, m)| check(m))
                .map(|(i, _)| i)
            {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {what} on NOTIFY_SOCKET; got {:#?}", self.messages());
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A `burrow up` this test started, killed (by its PID) and reaped on drop.
struct UpProcess(std::process::Child);

impl UpProcess {
    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal burrow up");
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// systemd's view of `burrow up` (sd_notify(3), systemd.exec(5)): READY once the tunnels are up,
/// a STATUS line that names the tunnel that is not up and why, RELOADING then READY around a
/// reload, STOPPING on SIGTERM; no WATCHDOG pings when WATCHDOG_PID names another process, pings
/// when it is unset. With JOURNAL_STREAM naming its stderr, every line starts with its syslog
/// priority (`<4>` for warnings), which journald files as PRIORITY. (No journald runs here, so
/// the lines are read from the file that stands in for the journal stream.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_status_reload_and_stop_and_the_journal_gets_priorities() {
    use nix::sys::signal::Signal;
    use std::os::unix::fs::MetadataExt;

    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], None, &[]).await;
    let echo = echo_server().await;
    let file = dir.path().join("tunnels.toml");
    let one = format!(
        "[[tunnel]]\nname = \"a\"\nserver = \"root@127.0.0.1:{}\"\nremote = [\"0:{}\"]\n",
        relay.addr.port(),
        echo.hostport()
    );
    write_tunnels(&file, &key, &relay, &one);
    let notify = NotifySocket::bind(dir.path().join("notify"));
    let journal = dir.path().join("journal.log");
    let stderr = std::fs::File::create(&journal).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("up")
        .arg(&file)
        .arg("--control")
        .arg(dir.path().join("up.sock"))
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    let up = UpProcess(cmd.spawn().expect("spawn burrow up"));

    let ready = notify.wait_for("READY=1", 0, |m| m == "READY=1").await;
    notify
        .wait_for("STATUS with the tunnel up", 0, |m| {
            m == "STATUS=1 of 1 tunnel up"
        })
        .await;

    // A second tunnel to a port nothing listens on, by SIGHUP.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let two = format!(
        "{one}\n[[tunnel]]\nname = \"gone\"\nserver = \"root@127.0.0.1:{dead}\"\nremote = [\"0:127.0.0.1:9\"]\n"
    );
    write_tunnels(&file, &key, &relay, &two);
    up.signal(Signal::SIGHUP);
    let reloading = notify
        .wait_for("RELOADING=1", ready + 1, |m| {
            m.starts_with("RELOADING=1\nMONOTONIC_USEC=")
        })
        .await;
    notify
        .wait_for("READY=1 after the reload", reloading + 1, |m| {
            m == "READY=1"
        })
        .await;
    let status = notify
        .wait_for("STATUS naming the tunnel that is down", reloading, |m| {
            m.starts_with("STATUS=1 of 2 tunnels up; gone: backoff ")
                && m.contains("relay not answering")
                && m.contains("Connection refused")
        })
        .await;
    println!("systemd status line: {}", notify.messages()[status]);

    up.signal(Signal::SIGTERM);
    notify
        .wait_for("STOPPING=1", status, |m| m == "STOPPING=1")
        .await;
    drop(up);
    let all = notify.messages();
    assert!(
        !all.iter().any(|m| m.contains("WATCHDOG=1")),
        "pinged the watchdog although WATCHDOG_PID names another process: {all:#?}"
    );

    // The journal stream: every line has a priority; the failure is a warning, the rest not.
    let lines = std::fs::read_to_string(&journal).unwrap();
    assert!(
        lines.lines().all(|l| l.starts_with('<')),
        "a line without a priority:\n{lines}"
    );
    let warning = lines
        .lines()
        .find(|l| l.contains("still waiting for the relay"))
        .unwrap_or_else(|| panic!("no warning about the dead relay:\n{lines}"));
    assert!(warning.starts_with("<4>"), "{warning}");
    let info = lines
        .lines()
        .find(|l| l.contains("tunnel up"))
        .unwrap_or_else(|| panic!("no tunnel up line:\n{lines}"));
    assert!(info.starts_with("<6>"), "{info}");

    // WATCHDOG_PID unset: the pings come (half of WATCHDOG_USEC).
    let notify2 = NotifySocket::bind(dir.path().join("notify2"));
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("up")
        .arg(&file)
        .arg("--control")
        .arg(dir.path().join("up2.sock"))
        .env("NOTIFY_SOCKET", &notify2.path)
        .env("WATCHDOG_USEC", "200000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _up2 = UpProcess(cmd.spawn().expect("spawn burrow up"));
    notify2
        .wait_for("WATCHDOG=1", 0, |m| m == "WATCHDOG=1")
        .await;
}

/// The metrics endpoint `burrow up` logged ("metrics on http://ADDR/").
async fn metrics_address(up: &ChildGuard) -> SocketAddr {
    up.stderr()
        .wait_until(
            Duration::from_secs(5),
            common::output::logged_metrics_address,
        )
        .expect("metrics address logged")
}

/// A tunnel to OpenSSH's sshd whose ssh_config Host block adds a LocalForward of its own next to
/// the tunnel's -R: `burrow status --json` and /metrics show each forward under its own label
/// with its own bytes and connections. (Labels were paired with forwards by position, so the
/// Host block's forward took the -R label and counters; /metrics had no per-forward series.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_block_forward_keeps_its_own_label_and_counters_in_status_and_metrics() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let sshd = Sshd::start(SshdOptions::with_keys(&[&key]));
    let echo = echo_server().await;
    let (lport, rport) = (free_port(), free_port());
    let echo_target = echo.hostport();
    let ssh_config = dir.path().join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!("Host 127.0.0.1\n    LocalForward {lport} {echo_target}\n"),
    )
    .unwrap();
    let file = dir.path().join("tunnels.toml");
    std::fs::write(
        &file,
        format!(
            "[[tunnel]]\nname = \"a\"\nserver = \"root@127.0.0.1:{}\"\nidentity = \"{}\"\n\
             known_hosts = \"{}\"\nssh_config = \"{}\"\nkeepalive_interval = 1\n\
             remote = [\"{rport}:{echo_target}\"]\n",
            sshd.port,
            key.private.display(),
            sshd.known_hosts.display(),
            ssh_config.display()
        ),
    )
    .unwrap();
    let control = dir.path().join("up.sock");
    let up = spawn_up(dir.path(), &file, &control, &["--metrics", "127.0.0.1:0"]);
    wait_status(&control, &up, "tunnel a up", |s| {
        tunnel(s, "a").is_some_and(|t| t["state"] == "up")
    })
    .await;
    // Different traffic through each: one 1 MiB echo through the -R forward, two 64 KiB ones
    // through the Host block's -L forward.
    const REMOTE_BYTES: u64 = 1 << 20;
    const LOCAL_BYTES: u64 = 64 << 10;
    transfer_checked(loopback(rport), REMOTE_BYTES)
        .await
        .expect("echo through the -R forward");
    for _ in 0..2 {
        transfer_checked(loopback(lport), LOCAL_BYTES)
            .await
            .expect("echo through the Host block's -L forward");
    }
    let local_label = format!("-L {lport}:{echo_target}");
    let remote_label = format!("-R {rport}:{echo_target}");
    let find = |t: &serde_json::Value, label: &str| -> Option<serde_json::Value> {
        t["forwards"]
            .as_array()?
            .iter()
            .find(|f| {
                f["spec"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&format!("{label} (")))
            })
            .cloned()
    };
    let s = wait_status(&control, &up, "both forwards' traffic counted", |s| {
        tunnel(s, "a").is_some_and(|t| {
            let counted = |label: &str, bytes: u64, conns: u64| {
                find(t, label).is_some_and(|f| {
                    f["bytes_out"] == bytes
                        && f["bytes_in"] == bytes
                        && f["connections_total"] == conns
                        && f["connections_active"] == 0
                })
            };
            counted(&local_label, 2 * LOCAL_BYTES, 2) && counted(&remote_label, REMOTE_BYTES, 1)
        })
    })
    .await;
    let t = tunnel(&s, "a").unwrap();
    let forwards = t["forwards"].as_array().unwrap();
    assert_eq!(forwards.len(), 2, "both forwards listed: {t:#}");
    assert!(
        find(t, &local_label).unwrap()["spec"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{local_label} (listening on ")),
        "{t:#}"
    );
    assert_eq!(
        find(t, &remote_label).unwrap()["spec"],
        format!("{remote_label} (relay port {rport})"),
        "{t:#}"
    );

    // /metrics: one series per forward and family, with the same numbers.
    let text = http_metrics(metrics_address(&up).await);
    for (label, bytes, conns) in [
        (&local_label, 2 * LOCAL_BYTES, 2),
        (&remote_label, REMOTE_BYTES, 1),
    ] {
        for (family, value) in [
            ("burrow_forward_sent_bytes_total", bytes),
            ("burrow_forward_received_bytes_total", bytes),
            ("burrow_forward_connections_total", conns),
            ("burrow_forward_connections_active", 0),
        ] {
            let line = format!("{family}{{tunnel=\"a\",forward=\"{label}\"}} {value}");
            assert!(text.lines().any(|l| l == line), "want {line:?} in\n{text}");
        }
        // The label the series carry is in the status too.
        assert_eq!(find(t, label).unwrap()["forward"], label.as_str(), "{t:#}");
    }
}

/// A TCP proxy to a target whose open connections can be turned into a black hole at once
/// ([`FreezableProxy::freeze_open`]): their bytes go nowhere and their sockets stay open, while
/// connections made later pass as before. A dropped link, on loopback.
struct FreezableProxy {
    addr: SocketAddr,
    /// Connections numbered below this move no more bytes.
    frozen_below: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    async fn start(target: SocketAddr) -> FreezableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (frozen, count) = (frozen_below.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            // Bounded: a tunnel that spins is the test's failure, not an endless loop here.
            for _ in 0..64 {
                let Ok((inbound, _)) = listener.accept().await else {
                    break;
                };
                let id = count.fetch_add(1, Ordering::SeqCst);
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (from_client, to_client) = inbound.into_split();
                let (from_target, to_target) = outbound.into_split();
                pumps.spawn(pump(from_client, to_target, id, frozen.clone()));
                pumps.spawn(pump(from_target, to_client, id, frozen.clone()));
            }
            // The pumps live as long as the proxy.
            std::future::pending::<()>().await;
        });
        FreezableProxy {
            addr,
            frozen_below,
            accepted,
            task,
        }
    }

    /// Every connection open now stops moving bytes, for good.
    fn freeze_open(&self) {
        let open = self.accepted.load(Ordering::SeqCst);
        self.frozen_below.store(open, Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    frozen_below: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if id < frozen_below.load(Ordering::SeqCst) {
            // Black hole: nothing is forwarded, nothing is closed.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// After its link to the relay silently dies, a `burrow up` tunnel gets its -R port back at
/// once: the relay sees that the session holding the port serves the very client instance now
/// asking for it (one stream registry, through resumable streams), so it neither probes nor
/// waits. The relay's own keepalive is off in practice (600 s) and its takeover probe waits
/// 60 s, so the port moving and the tunnel being up again within the test's deadlines shows
/// the instant path; the relay's log says which path it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_takes_its_port_back_from_its_own_dead_session_at_once() {
    let dir = test_dir();
    let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
    let config = "[limits]\nkeepalive_interval_secs = 600\ntakeover_probe_secs = 60\n";
    let relay = Relay::start(dir.path(), "relay", &[&key.public_line], Some(config), &[]).await;
    let proxy = FreezableProxy::start(relay.addr).await;
    let echo = echo_server().await;
    let rport = free_port();
    let file = dir.path().join("tunnels.toml");
    // The relay is reached through the proxy's port: its key is recorded on first contact.
    let tunnels = format!(
        "[[tunnel]]\nname = \"a\"\nserver = \"root@127.0.0.1:{}\"\nhost_key_checking = \"accept-new\"\nremote = [\"{rport}:{}\"]\n",
        proxy.addr.port(),
        echo.hostport()
    );
    write_tunnels(&file, &key, &relay, &tunnels);
    let control = dir.path().join("up.sock");
    let mut up = spawn_up(dir.path(), &file, &control, &[]);
    wait_status(&control, &up, "tunnel a up", |s| {
        tunnel(s, "a").is_some_and(|t| t["state"] == "up")
    })
    .await;
    transfer_checked(loopback(rport), 64 << 10)
        .await
        .expect("echo through the tunnel");
    // The link dies silently; the tunnel's keepalive (1 s x 2) notices and it reconnects
    // through the proxy, asking for its port again.
    proxy.freeze_open();
    wait_status(&control, &up, "tunnel a up again", |s| {
        tunnel(s, "a").is_some_and(|t| t["state"] == "up" && t["reconnects"] == 1)
    })
    .await;
    relay.wait_port_moves_to(rport, &echo, &mut up).await;
    let log = relay.child.stderr_text();
    assert!(
        log.contains("replaced at once: same client instance"),
        "{log}"
    );
    assert!(!log.contains("did not answer the takeover probe"), "{log}");
}

/// `burrow up FILE --control SOCKET [EXTRA...]`, its log kept as "burrow-up" in `dir`.
fn spawn_up(dir: &Path, file: &Path, control: &Path, extra: &[&str]) -> ChildGuard {
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("up")
        .arg(file)
        .arg("--control")
        .arg(control)
        .args(extra);
    spawn_logged(cmd, dir, "burrow-up")
}
