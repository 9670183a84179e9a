//! Issue 6's fault tests: `burrow serve` on B, `burrow up` on A publishing an echo service of A's
//! on B:8086, C probing B:8086 end to end, on the A/B/C network namespaces of the scenario test
//! (`common/netns.rs`). Every fault runs at the same moment on a second, independent set of
//! namespaces where OpenSSH sshd (GatewayPorts yes) is the relay and `autossh -M 0` keeps
//! `ssh -R` up, with the same keepalive settings, so the recovery times can be compared: measured,
//! not claimed.
//!
//! | test | fault | keepalive (burrow and ssh) |
//! |------|-------|----------------------------|
//! | [`relay_sigkill_restart_exclusive`] | relay SIGKILL, started again at once | 1 s x 3 |
//! | [`link_down_20s_exclusive`] | A's link to B down for 20 s | 1 s x 3 |
//! | [`relay_sigstop_exclusive`] | relay SIGSTOP for 7 s (past the keepalive window), SIGCONT | 1 s x 3 |
//! | [`blackhole_nft_exclusive`] | nftables in A drops A<->B packets (no RST) for 30 s | defaults: 3 s x 4 |
//! | [`address_change_exclusive`] | A's address removed, a new one added 10 s later | defaults: 3 s x 4 |
//! | [`relay_stalls_handshake_exclusive`] | relay SIGSTOP for 40 s: TCP accepted, no SSH banner; connect timeout 2 s | 1 s x 3 |
//!
//! burrow's backoff is always its default (1 s doubling to 60 s, reset after 30 s up), so a
//! pause that grew during the outage would show in the recovery time; the black-hole test runs
//! with every `burrow up` default (keepalive, backoff, connect timeout). autossh runs with
//! `AUTOSSH_GATETIME=0 AUTOSSH_POLL=10`. Faults start only once A's network has settled (IPv6
//! duplicate address detection done), so burrow's network watcher reacts to the fault and not
//! to the namespace's set-up.
//!
//! Recovery time is measured from the end of the fault (relay running again, link up, black hole
//! removed, SIGCONT, new address added) to C's first successful end-to-end echo through B:8086;
//! C keeps probing (connect + 16-byte echo, 1 s connect and 2 s read timeouts, every 200 ms) all
//! along. "Noticed" is the time from the start of the fault until burrow status leaves `up`, or
//! until ssh (under autossh) has closed its connection ("-": not while the fault lasted). Each
//! test prints a `| fault | burrow | openssh+autossh |` table row and one line
//!
//! ```text
//! FAULT-RESULT <fault> burrow=<t>s openssh+autossh=<t>s|NOT RECOVERED (>60s) [noticed: burrow=<t>s openssh+autossh=<t>s] (<conditions>)
//! ```
//!
//! (see them with `cargo nextest run --test faults --no-capture`). burrow must recover within
//! [`PROMPT`] (plus the relay's [`TAKEOVER_PROBE`] where the relay still holds the dead
//! session's port), and then show status `up` with `reconnects` incremented, B listening on
//! 8086 exactly as before the fault, exactly one SSH session between A and B, the old relay
//! session closed or taken over;
//! with its defaults it must notice a black hole within the documented keepalive window
//! (interval x count). autossh is only required to have come up before the fault: its numbers
//! are what they are.
//!
//! Skipped (with a printed note, and passing) where namespaces are unavailable (not root, or
//! `ip netns add` fails). Needs `nft` and `autossh` (scripts/test installs them).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::netns::*;
use common::*;

/// The relay's SSH port (burrow serve) on B; OpenSSH's sshd listens on 22.
const RELAY_PORT: u16 = 2222;
/// The port A publishes on B (all interfaces: C reaches it at B_PUBLIC).
const PUBLISHED: u16 = 8086;
/// How long the black hole lasts (fault 4): twice the default keepalive window, as in issue 19.
const BLACK_HOLE: Duration = Duration::from_secs(30);
/// How long the relay stays frozen in fault 6: several of burrow's 11 s handshake deadlines
/// (connect timeout 2 s) and of its 10 s banner waits.
const STALL: Duration = Duration::from_secs(40);
/// burrow must be end-to-end again within this after a fault ends: C's probe interval, burrow's
/// probe interval, one handshake and a forward request, with room for a loaded 2-core machine.
/// Not a speed claim (the measured times are printed and quoted in the README): a tunnel that
/// waits out a backoff pause after the fault takes seconds more.
const PROMPT: Duration = Duration::from_secs(2);
/// The relay's stale-listener takeover (src/server): a new session asking for a port an earlier
/// session of its key still holds waits up to 3 s for that holder to answer a keepalive, unless
/// the holder serves the same client instance (burrow up with resumable streams: the client has
/// moved on) or already missed one of the relay's own keepalives; then it is replaced at once
/// (the report says which path was taken). The address change is held to [`PROMPT`] alone: its
/// tunnel's new session is always of the same instance.
const TAKEOVER_PROBE: Duration = Duration::from_secs(3);
/// How long after a fault ends the recovery is watched (both implementations).
const OBSERVE: Duration = Duration::from_secs(60);
/// Pause between two of C's probes.
const PROBE_EVERY: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// A's echo service
// ---------------------------------------------------------------------------------------------

/// An echo server on 127.0.0.1 inside A's namespace (port chosen by the system); stopped, with
/// its open connections, on drop.
struct EchoOnA {
    port: u16,
    listener: socket2::Socket,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoOnA {
    fn start(ns: &str) -> EchoOnA {
        let listener: TcpListener = in_netns(ns, || TcpListener::bind(("127.0.0.1", 0)))
            .unwrap_or_else(|e| panic!("bind an echo port in {ns}: {e}"));
        let port = listener.local_addr().expect("echo address").port();
        let stop = socket2::Socket::from(listener.try_clone().expect("clone listener"));
        let conns = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let c2 = conns.clone();
        let thread = std::thread::spawn(move || {
            // Ends when the listener is shut down (accept then fails).
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                if let Ok(c) = conn.try_clone() {
                    c2.lock().unwrap().push(c);
                }
                std::thread::spawn(move || echo(conn));
            }
        });
        EchoOnA {
            port,
            listener: stop,
            conns,
            thread: Some(thread),
        }
    }
}

fn echo(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 4096];
    // Bounded by the read timeout and by EOF; a probe sends a few bytes and closes.
    for _ in 0..10_000 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
}

impl Drop for EchoOnA {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket wakes a blocked accept on Linux.
        let _ = self.listener.shutdown(Shutdown::Both);
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// C's prober
// ---------------------------------------------------------------------------------------------

/// One end-to-end attempt from C.
struct Probe {
    end: Instant,
    result: Result<(), String>,
}

/// A thread in C's namespace that keeps making end-to-end requests to B:8086 (connect, send a
/// numbered line, read it back) and records each outcome, until dropped.
struct Prober {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Probe>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(ns: &str, addr: SocketAddr) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s2, l2) = (stop.clone(), log.clone());
        let thread = spawn_in_netns(ns, move || {
            let started = Instant::now();
            // Bounded in count and time (a test is killed after 120 s anyway).
            for n in 0..5_000u32 {
                if s2.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(170) {
                    break;
                }
                let result = probe_once(addr, n);
                l2.lock().unwrap().push(Probe {
                    end: Instant::now(),
                    result,
                });
                std::thread::sleep(PROBE_EVERY);
            }
        });
        Prober {
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// When the first probe that ended after `t` succeeded.
    fn first_success_after(&self, t: Instant) -> Option<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.end >= t && p.result.is_ok())
            .map(|p| p.end)
    }

    /// Failed probes that ended in `[from, to)`.
    fn failures_between(&self, from: Instant, to: Instant) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.end >= from && p.end < to && p.result.is_err())
            .count()
    }

    /// The outcome of the latest probe, for messages.
    fn last(&self) -> String {
        match self.log.lock().unwrap().last() {
            None => "no probe yet".into(),
            Some(Probe { result: Ok(()), .. }) => "ok".into(),
            Some(Probe { result: Err(e), .. }) => e.clone(),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn probe_once(addr: SocketAddr, n: u32) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let msg = format!("probe-{n:09}\n");
    s.write_all(msg.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    if got != msg.as_bytes() {
        return Err(format!(
            "echo mismatch: {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One side of a comparison: burrow, or OpenSSH + autossh
// ---------------------------------------------------------------------------------------------

/// Keepalive settings: burrow's `keepalive_interval`/`keepalive_count`, ssh's
/// `ServerAliveInterval`/`ServerAliveCountMax`.
#[derive(Clone, Copy, Debug)]
struct Keepalive {
    interval: u64,
    count: u64,
}

/// 1 s x 3: a dead relay is noticed within a few seconds.
const FAST: Keepalive = Keepalive {
    interval: 1,
    count: 3,
};
/// burrow up's defaults (examples/tunnels.toml): 3 s x 4.
const DEFAULT: Keepalive = Keepalive {
    interval: 3,
    count: 4,
};

impl Keepalive {
    /// The keepalive window as documented (examples/tunnels.toml, and ssh's own
    /// ServerAliveInterval/CountMax arithmetic): (count + 1) x interval after the last sign of
    /// life, since the first interval passes before the first probe.
    fn window(self) -> Duration {
        Duration::from_secs(self.interval * (self.count + 1))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Burrow,
    OpenSsh,
}

/// How burrow up is configured beyond server, forward, identity and known_hosts. The backoff is
/// always burrow up's default (1 s doubling to 60 s, reset after 30 s up): during an outage it
/// grows, and recovering promptly when the fault ends must not depend on where in a pause the
/// tunnel happens to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tuning {
    /// The keepalive given.
    Keepalive,
    /// The keepalive given and a 2 s connect timeout (ssh: ConnectTimeout=2, which bounds its
    /// banner wait too; burrow's handshake deadline is then 3 x 2 + 5 = 11 s).
    ShortConnect,
    /// Nothing else: every timing (keepalive, backoff, connect timeout) is burrow up's default.
    Defaults,
}

/// One world (its own A, B, C), its relay on B, its tunnel client on A, A's echo service and
/// C's prober. Fields drop in order: prober, client, server, echo, then the namespaces.
struct Side {
    prober: Prober,
    client: ChildGuard,
    server: ChildGuard,
    /// A's echo service (kept running until the side drops).
    _echo: EchoOnA,
    imp: Impl,
    /// burrow up's control socket (burrow only).
    control: PathBuf,
    /// Logs of relays that were replaced (relay restart).
    old_server_logs: String,
    /// Where B listened on 8086 once the tunnel was up (burrow: checked again after a fault).
    listening: Vec<String>,
    w: World,
}

impl Side {
    fn label(&self) -> &'static str {
        match self.imp {
            Impl::Burrow => "burrow",
            Impl::OpenSsh => "openssh+autossh",
        }
    }

    fn start(test: &str, imp: Impl, ka: Keepalive, tuning: Tuning) -> Option<Side> {
        let w = World::new(&format!("{test} ({imp:?})"), None)?;
        let a = w.net.a.clone();
        let echo = EchoOnA::start(&a);
        let (server, client, control) = match imp {
            Impl::Burrow => {
                let (relay, key_r) = w.relay("relay", RELAY_PORT, "yes");
                w.trust(&format!("[{B_INSIDE}]:{RELAY_PORT}"), &key_r);
                let file = w.path().join("tunnels.toml");
                std::fs::write(&file, tunnels_toml(&w, ka, tuning, echo.port))
                    .expect("write tunnels.toml");
                let control = w.path().join("up.sock");
                let mut cmd = ns_cmd(&a, burrow_bin());
                cmd.arg("up").arg(&file).arg("--control").arg(&control);
                let up = w.spawn(cmd, "A-burrow-up");
                (relay, up, control)
            }
            Impl::OpenSsh => {
                assert!(
                    have("autossh"),
                    "autossh is not installed (scripts/test installs it: apt package autossh)"
                );
                let (sshd, key_b) = start_sshd_b(&w);
                w.trust(B_INSIDE, &key_b);
                let mut cmd = ns_cmd(&a, "autossh");
                cmd.env("AUTOSSH_GATETIME", "0")
                    .env("AUTOSSH_POLL", "10")
                    .env("AUTOSSH_LOGLEVEL", "7")
                    .env("AUTOSSH_LOGFILE", w.path().join("autossh.log"))
                    .args(["-M", "0"]);
                w.client_opts(&mut cmd);
                if tuning == Tuning::ShortConnect {
                    cmd.args(["-o", "ConnectTimeout=2"]);
                }
                cmd.args(["-N", "-o", "ExitOnForwardFailure=yes"])
                    .arg("-o")
                    .arg(format!("ServerAliveInterval={}", ka.interval))
                    .arg("-o")
                    .arg(format!("ServerAliveCountMax={}", ka.count))
                    .arg("-R")
                    .arg(format!("{PUBLISHED}:127.0.0.1:{}", echo.port))
                    .arg(format!("root@{B_INSIDE}"));
                let autossh = w.spawn(cmd, "A-autossh");
                (sshd, autossh, PathBuf::new())
            }
        };
        let prober = Prober::start(&w.net.c, sa(B_PUBLIC, PUBLISHED));
        let mut side = Side {
            prober,
            client,
            server,
            _echo: echo,
            imp,
            control,
            old_server_logs: String::new(),
            listening: Vec::new(),
            w,
        };
        side.wait_working("the tunnel to come up");
        if imp == Impl::Burrow {
            side.wait_status("tunnel up", UP, |t| t["state"] == "up");
        }
        let (listen, _, _) = side.sockets();
        side.listening = Side::listen_addrs(&listen);
        assert!(
            !side.listening.is_empty() && side.listening.windows(2).all(|w| w[0] != w[1]),
            "{}: B's listeners on :{PUBLISHED} once up: {listen:#?}",
            side.label()
        );
        Some(side)
    }

    /// Waits (bounded by [`UP`]) for a successful probe from now on; panics with logs if none.
    fn wait_working(&mut self, what: &str) {
        let t0 = Instant::now();
        let deadline = t0 + UP;
        while Instant::now() < deadline {
            if self.prober.first_success_after(t0).is_some() {
                return;
            }
            if let Some(st) = self.client.try_status() {
                panic!(
                    "{}: {} exited ({st}) while waiting for {what}:\n{}",
                    self.label(),
                    self.client.name(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{}: no end-to-end echo through {B_PUBLIC}:{PUBLISHED} within {UP:?} ({what}); last probe: {}\n{}",
            self.label(),
            self.prober.last(),
            self.logs()
        );
    }

    /// The whole story for a failure message: client, relay and (OpenSSH) autossh logs, status.
    fn logs(&self) -> String {
        let mut out = format!(
            "--- {} stderr ---\n{}\n--- {} stderr ---\n{}{}\n",
            self.client.name(),
            self.client.stderr_text(),
            self.server.name(),
            self.old_server_logs,
            self.server.stderr_text()
        );
        match self.imp {
            Impl::Burrow => {
                out += &format!("--- burrow status --json ---\n{:?}\n", self.status());
            }
            Impl::OpenSsh => {
                let log =
                    std::fs::read_to_string(self.w.path().join("autossh.log")).unwrap_or_default();
                out += &format!("--- autossh.log ---\n{log}\n");
            }
        }
        out
    }

    /// Tunnel "a" in `burrow status --json` (None if status fails).
    fn status(&self) -> Option<serde_json::Value> {
        let mut cmd = Command::new(burrow_bin());
        cmd.args(["status", "--json", "--control"])
            .arg(&self.control);
        let (st, out, _) = run_with_timeout(cmd, self.w.path(), "status", Duration::from_secs(10));
        if !st.is_some_and(|s| s.success()) {
            return None;
        }
        let all: serde_json::Value = serde_json::from_str(&out).ok()?;
        all.as_array()?.iter().find(|t| t["name"] == "a").cloned()
    }

    /// Polls burrow status until `check` holds; panics with logs after `limit`.
    fn wait_status(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        for _ in 0..10_000 {
            if let Some(t) = self.status() {
                if check(&t) {
                    return t;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("burrow: timed out waiting for {what}\n{}", self.logs());
    }

    fn reconnects(&self) -> u64 {
        self.status()
            .and_then(|t| t["reconnects"].as_u64())
            .unwrap_or_else(|| panic!("burrow status has no reconnects\n{}", self.logs()))
    }

    /// A's end (address:port) of the one established SSH session between A and B.
    fn a_session(&self) -> String {
        let (_, _, on_a) = self.sockets();
        assert_eq!(
            on_a.len(),
            1,
            "{}: want one A<->B session on A: {on_a:#?}\n{}",
            self.label(),
            self.logs()
        );
        on_a[0]
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no local address in ss line {:?}", on_a[0]))
            .to_owned()
    }

    /// Whether the tunnel client has given up on the session whose A end is `a_session`: burrow
    /// status leaves `up`; ssh (under autossh) has closed that connection (a new one may
    /// already be up: a frozen sshd's kernel still completes TCP handshakes).
    fn noticed(&self, a_session: &str) -> bool {
        match self.imp {
            Impl::Burrow => self.status().is_some_and(|t| t["state"] != "up"),
            Impl::OpenSsh => !self
                .sockets()
                .2
                .iter()
                .any(|l| l.split_whitespace().nth(2) == Some(a_session)),
        }
    }

    /// Waits until A's network has settled after the namespace was made: IPv6 duplicate address
    /// detection on the new veth ends a second or two after link up with an address change
    /// (rtnetlink RTM_NEWADDR) that burrow up's network watcher answers with a relay probe, which
    /// must not coincide with a fault. Bounded; then gives the watcher's 300 ms settle window
    /// and its probe (answered at once while the link is fine) a second.
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut cmd = ns_cmd(&self.w.net.a, "ip");
            cmd.args(["addr", "show", "tentative"]);
            let (st, out, err) =
                run_with_timeout(cmd, self.w.path(), "ip-tentative", Duration::from_secs(10));
            assert!(
                st.is_some_and(|s| s.success()),
                "ip addr show tentative: {err}"
            );
            if out.trim().is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "A still has tentative addresses after 15 s:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    fn relay_log(&self) -> String {
        format!("{}{}", self.old_server_logs, self.server.stderr_text())
    }

    // --- faults ---------------------------------------------------------------------------

    fn link(&self, up: bool) {
        ip(&[
            "-n",
            &self.w.net.a,
            "link",
            "set",
            "toB",
            if up { "up" } else { "down" },
        ]);
        if up {
            // Link down flushed A's route to C's net (unused by the tunnel; restored for tidiness).
            let _ = ip_try(&[
                "-n",
                &self.w.net.a,
                "route",
                "add",
                "10.77.2.0/24",
                "via",
                B_INSIDE,
            ]);
        }
    }

    fn blackhole(&self, on: bool) {
        let mut cmd = ns_cmd(&self.w.net.a, "nft");
        if on {
            let rules = self.w.path().join("blackhole.nft");
            std::fs::write(
                &rules,
                format!(
                    "table inet bh {{\n\
                     \tchain out {{ type filter hook output priority 0; policy accept; ip daddr {B_INSIDE} drop; }}\n\
                     \tchain in {{ type filter hook input priority 0; policy accept; ip saddr {B_INSIDE} drop; }}\n\
                     }}\n"
                ),
            )
            .expect("write nft rules");
            cmd.arg("-f").arg(&rules);
        } else {
            cmd.args(["delete", "table", "inet", "bh"]);
        }
        let (st, out, err) = run_with_timeout(cmd, self.w.path(), "nft", Duration::from_secs(10));
        assert!(
            st.is_some_and(|s| s.success()),
            "nft ({}) in {} failed ({st:?}): {out}{err}",
            if on { "add black hole" } else { "remove it" },
            self.w.net.a
        );
    }

    /// Starts counting the TCP connections A opens to the relay's SSH port (nftables, in A).
    fn count_connects(&self) {
        let port = match self.imp {
            Impl::Burrow => RELAY_PORT,
            Impl::OpenSsh => 22,
        };
        let rules = self.w.path().join("count.nft");
        std::fs::write(
            &rules,
            format!(
                "table inet count {{\n\tchain out {{ type filter hook output priority 0; policy accept; \
                 ip daddr {B_INSIDE} tcp dport {port} tcp flags & (syn | ack) == syn counter; }}\n}}\n"
            ),
        )
        .expect("write nft rules");
        let mut cmd = ns_cmd(&self.w.net.a, "nft");
        cmd.arg("-f").arg(&rules);
        let (st, out, err) = run_with_timeout(cmd, self.w.path(), "nft", Duration::from_secs(10));
        assert!(
            st.is_some_and(|s| s.success()),
            "nft (count connects) in {} failed ({st:?}): {out}{err}",
            self.w.net.a
        );
    }

    /// SYNs A sent to the relay since [`Side::count_connects`] (a frozen relay's kernel answers
    /// every one, so this is the number of connections opened).
    fn connects(&self) -> u64 {
        let mut cmd = ns_cmd(&self.w.net.a, "nft");
        cmd.args(["list", "table", "inet", "count"]);
        let (st, out, err) = run_with_timeout(cmd, self.w.path(), "nft", Duration::from_secs(10));
        assert!(st.is_some_and(|s| s.success()), "nft list: {out}{err}");
        out.split("counter packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter in nft output: {out}"))
    }

    fn kill_server(&mut self) {
        self.server.kill();
        self.old_server_logs += &self.server.stderr_text();
        self.old_server_logs += "--- (killed; restarted) ---\n";
    }

    fn restart_server(&mut self) {
        self.server = match self.imp {
            Impl::Burrow => self.w.relay("relay", RELAY_PORT, "yes").0,
            Impl::OpenSsh => start_sshd_b(&self.w).0,
        };
    }

    // --- checks after recovery (burrow) -----------------------------------------------------

    /// Lines of `ss -H ARGS` in `ns`.
    fn ss(&self, ns: &str, args: &[&str]) -> Vec<String> {
        let mut cmd = ns_cmd(ns, "ss");
        cmd.arg("-H").args(args);
        let (st, out, err) = run_with_timeout(cmd, self.w.path(), "ss", Duration::from_secs(10));
        assert!(
            st.is_some_and(|s| s.success()),
            "ss {args:?} in {ns}: {err}"
        );
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Listening sockets on B:8086, and established SSH sessions between A and B as `ss` shows
    /// them in B and in A.
    fn sockets(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        let ssh_port = match self.imp {
            Impl::Burrow => RELAY_PORT,
            Impl::OpenSsh => 22,
        };
        let listen = self.ss(&self.w.net.b, &["-ltn", &format!("sport = :{PUBLISHED}")]);
        let on_b = self.ss(
            &self.w.net.b,
            &[
                "-tn",
                "state",
                "established",
                &format!("sport = :{ssh_port}"),
            ],
        );
        let on_a = self.ss(
            &self.w.net.a,
            &[
                "-tn",
                "state",
                "established",
                &format!("dport = :{ssh_port}"),
            ],
        );
        (listen, on_b, on_a)
    }

    /// A's address and port of the one established SSH session B has (panics unless one).
    fn session_peer(&self) -> String {
        let (_, on_b, _) = self.sockets();
        assert_eq!(
            on_b.len(),
            1,
            "want one A<->B session on B: {on_b:#?}\n{}",
            self.logs()
        );
        on_b[0]
            .split_whitespace()
            .nth(3)
            .unwrap_or_else(|| panic!("no peer in ss line {:?}", on_b[0]))
            .to_owned()
    }

    /// The local addresses B listens on for port 8086, sorted.
    fn listen_addrs(listen: &[String]) -> Vec<String> {
        let mut v: Vec<String> = listen
            .iter()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
            .collect();
        v.sort();
        v
    }

    /// After a recovery: state up with more reconnects than `before`; B listens on 8086 exactly
    /// as before the fault (`listening`: one socket per address, the relay binds 0.0.0.0 and
    /// [::]) and has one SSH session with A, seen from both ends (bounded wait for closes).
    fn assert_clean_recovery(&self, fault: &str, reconnects_before: u64, listening: &[String]) {
        let t = self.wait_status("state up after the fault", UP, |t| t["state"] == "up");
        let reconnects = t["reconnects"].as_u64().unwrap_or(0);
        assert!(
            reconnects > reconnects_before,
            "{fault}: burrow status shows no reconnect ({reconnects_before} -> {reconnects}): {t}\n{}",
            self.logs()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = None;
        for _ in 0..100 {
            let (listen, on_b, on_a) = self.sockets();
            if Side::listen_addrs(&listen) == listening && on_b.len() == 1 && on_a.len() == 1 {
                println!(
                    "{fault}: burrow clean: status up, reconnects {reconnects_before} -> {reconnects}; \
                     B listens on :{PUBLISHED} once per address ({listening:?}), as before the fault; \
                     one A<->B session ({})",
                    squeeze(&on_b[0])
                );
                return;
            }
            last = Some((listen, on_b, on_a));
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (listen, on_b, on_a) = last.unwrap_or_default();
        panic!(
            "{fault}: after recovery want B's listeners on :{PUBLISHED} as before ({listening:?}) and \
             one established A<->B session; B listeners {listen:#?}, B sessions {on_b:#?}, A \
             sessions {on_a:#?}\n{}",
            self.logs()
        );
    }

    /// What the OpenSSH side looks like after the observation (reported, not asserted).
    fn describe_openssh(&self) -> String {
        let (listen, on_b, on_a) = self.sockets();
        let fwd_failed = self
            .client
            .stderr_text()
            .lines()
            .filter(|l| l.contains("remote port forwarding failed"))
            .count();
        let autossh =
            std::fs::read_to_string(self.w.path().join("autossh.log")).unwrap_or_default();
        let runs = autossh
            .lines()
            .filter(|l| l.contains("starting ssh"))
            .count();
        format!(
            "B listeners on :{PUBLISHED}: {}, established ssh sessions seen on B: {}, on A: {}; \
             ssh runs started by autossh: {runs}; \"remote port forwarding failed\": {fwd_failed}",
            listen.len(),
            on_b.len(),
            on_a.len()
        )
    }
}

fn squeeze(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// OpenSSH sshd on B with GatewayPorts yes (reusing its host key on a restart).
fn start_sshd_b(w: &World) -> (ChildGuard, String) {
    let (b, a) = (w.net.b.clone(), w.net.a.clone());
    w.sshd_with(&b, "sshd-B", B_INSIDE, &a, &["GatewayPorts yes"])
}

fn tunnels_toml(w: &World, ka: Keepalive, tuning: Tuning, echo_port: u16) -> String {
    let mut t = format!(
        "[[tunnel]]\nname = \"a\"\nserver = \"root@{B_INSIDE}:{RELAY_PORT}\"\n\
         remote = [\"{PUBLISHED}:127.0.0.1:{echo_port}\"]\nidentity = \"{}\"\n\
         known_hosts = \"{}\"\nssh_config = \"none\"\n",
        w.key.private.display(),
        w.known_hosts.display()
    );
    match tuning {
        Tuning::Keepalive | Tuning::ShortConnect => {
            t += &format!(
                "keepalive_interval = {}\nkeepalive_count = {}\n",
                ka.interval, ka.count
            );
            if tuning == Tuning::ShortConnect {
                t += "connect_timeout = 2\n";
            }
        }
        Tuning::Defaults => assert!(
            ka.interval == DEFAULT.interval && ka.count == DEFAULT.count,
            "Tuning::Defaults goes with burrow's default keepalive"
        ),
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Measuring and reporting
// ---------------------------------------------------------------------------------------------

/// How the relay let go of the session from `old_peer` (A's address and port): the line saying
/// it ended, and how its port was taken over first, if it was: "at once (missed keepalives)"
/// when the old session had already missed the relay's own keepalive, else "after the probe"
/// (the takeover probe went unanswered for `takeover_probe_secs`).
fn old_session_fate(relay_log: &str, old_peer: &str) -> Option<(String, Option<&'static str>)> {
    let tag = format!("peer={old_peer}}}");
    let ended = relay_log.lines().find(|l| {
        l.contains(&tag) && (l.contains("session closed") || l.contains("session ended"))
    })?;
    let takeover = relay_log
        .lines()
        .find(|l| l.contains("taking its port over") && l.contains(&format!("port={PUBLISHED}")))
        .map(|l| {
            if l.contains("replaced at once: missed keepalives") {
                "at once (missed keepalives)"
            } else if l.contains("replaced at once: same client instance") {
                "at once (same client instance)"
            } else {
                "after the probe"
            }
        });
    Some((ended.trim().to_owned(), takeover))
}

/// Recovery of one side after its fault ended.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Recovered(Duration),
    NotRecovered(Duration),
}

impl Outcome {
    fn short(self) -> String {
        match self {
            Outcome::Recovered(d) => format!("{:.1}s", d.as_secs_f64()),
            Outcome::NotRecovered(w) => format!("NOT RECOVERED (>{}s)", w.as_secs()),
        }
    }

    fn cell(self) -> String {
        match self {
            Outcome::Recovered(d) => format!("{:.1} s", d.as_secs_f64()),
            Outcome::NotRecovered(w) => format!("not recovered within {} s", w.as_secs()),
        }
    }
}

/// Watches every side until each has had a successful probe after its `t_end`, or [`OBSERVE`]
/// passed since then. Returns the outcomes in order.
fn observe(sides: &[&Side], t_end: &[Instant]) -> Vec<Outcome> {
    let mut out: Vec<Option<Outcome>> = vec![None; sides.len()];
    for _ in 0..10_000 {
        for (i, s) in sides.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            if let Some(at) = s.prober.first_success_after(t_end[i]) {
                out[i] = Some(Outcome::Recovered(at - t_end[i]));
            } else if t_end[i].elapsed() > OBSERVE {
                out[i] = Some(Outcome::NotRecovered(OBSERVE));
            }
        }
        if out.iter().all(Option::is_some) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    out.into_iter()
        .map(|o| o.expect("observation ended"))
        .collect()
}

/// Polls until every side has [`Side::noticed`] the fault (`sessions`: each side's
/// [`Side::a_session`] before it) or `until` passes; returns each side's time from `t0` (None:
/// not noticed by then).
fn wait_noticed(
    sides: &[&Side],
    sessions: &[String],
    t0: Instant,
    until: Instant,
) -> Vec<Option<Duration>> {
    let mut out = vec![None; sides.len()];
    for _ in 0..10_000 {
        for (i, s) in sides.iter().enumerate() {
            if out[i].is_none() && s.noticed(&sessions[i]) {
                out[i] = Some(t0.elapsed());
            }
        }
        if out.iter().all(Option::is_some) || Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    out
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.1}s", d.as_secs_f64()))
}

/// Prints the table row and the `FAULT-RESULT` line: recovery (from the end of the fault) and,
/// where measured, how long each client took to notice the fault (from its start).
fn report(fault: &str, out: &[Outcome], noticed: Option<&[Option<Duration>]>, note: &str) {
    println!("| fault | burrow | openssh+autossh |");
    println!("|-------|--------|-----------------|");
    println!("| {fault} | {} | {} |", out[0].cell(), out[1].cell());
    let detect = noticed.map_or_else(String::new, |n| {
        format!(
            " noticed: burrow={} openssh+autossh={}",
            secs(n[0]),
            secs(n[1])
        )
    });
    println!(
        "FAULT-RESULT {fault} burrow={} openssh+autossh={}{detect} ({note})",
        out[0].short(),
        out[1].short()
    );
}

/// Asserts burrow recovered within `limit`; returns the time.
fn burrow_recovered(fault: &str, side: &Side, outcome: Outcome, limit: Duration) -> Duration {
    match outcome {
        Outcome::Recovered(d) if d <= limit => d,
        other => panic!(
            "{fault}: burrow did not recover within {limit:?} ({other:?}); last probe: {}\n{}",
            side.prober.last(),
            side.logs()
        ),
    }
}

/// Both sides, or None (test skipped) where namespaces are unavailable.
fn both(test: &str, ka: Keepalive, tuning: Tuning) -> Option<(Side, Side)> {
    let burrow = Side::start(test, Impl::Burrow, ka, tuning)?;
    let openssh = Side::start(test, Impl::OpenSsh, ka, tuning)?;
    burrow.settle();
    openssh.settle();
    Some((burrow, openssh))
}

/// After recovery: the relay ended its session from `old_peer` (closed, or taken over) and the
/// one session left comes from elsewhere. Returns "taken over" or "closed".
fn assert_old_session_released(fault: &str, side: &Side, old_peer: &str) -> &'static str {
    let (line, taken_over) = old_session_fate(&side.relay_log(), old_peer).unwrap_or_else(|| {
        panic!(
            "{fault}: the relay never closed or took over its old session from {old_peer}\n{}",
            side.logs()
        )
    });
    let now = side.session_peer();
    assert_ne!(
        now,
        old_peer,
        "{fault}: the relay's session is still the old one\n{}",
        side.logs()
    );
    let how = if taken_over.is_some() {
        "taken over"
    } else {
        "closed"
    };
    println!(
        "{fault}: relay's old session from {old_peer} {how} {}: {line}; new session from {now}",
        taken_over.unwrap_or("")
    );
    how
}

// ---------------------------------------------------------------------------------------------
// The faults
// ---------------------------------------------------------------------------------------------

/// Fault 1: the relay dies (SIGKILL, with everything it started) and is started again at once
/// on the same address with the same host key. Measured from the restart (spawn) to C's first
/// successful echo.
#[test]
fn relay_sigkill_restart_exclusive() {
    const FAULT: &str = "relay-kill";
    let Some((mut burrow, mut openssh)) = both(FAULT, FAST, Tuning::Keepalive) else {
        return;
    };
    let before = burrow.reconnects();
    burrow.kill_server();
    openssh.kill_server();
    let t_b = Instant::now();
    burrow.restart_server();
    let t_o = Instant::now();
    openssh.restart_server();
    let out = observe(&[&burrow, &openssh], &[t_b, t_o]);
    report(FAULT, &out, None, "keepalive 1sx3");
    let d = burrow_recovered(FAULT, &burrow, out[0], PROMPT);
    burrow.assert_clean_recovery(FAULT, before, &burrow.listening);
    println!(
        "{FAULT}: burrow end-to-end again {:.2} s after the relay restart (keepalive 1 s x 3); \
         openssh+autossh: {:?} ({})",
        d.as_secs_f64(),
        out[1],
        openssh.describe_openssh()
    );
}

/// Fault 2: A's link to B goes down for 20 s (`ip link set toB down` in A), then up again. No
/// manual step: burrow up reconnects, and the port the dead session still holds on the relay is
/// handed to the new session.
#[test]
fn link_down_20s_exclusive() {
    const FAULT: &str = "link-down-20s";
    let Some((burrow, openssh)) = both(FAULT, FAST, Tuning::Keepalive) else {
        return;
    };
    let before = burrow.reconnects();
    let old = burrow.session_peer();
    let sessions = [burrow.a_session(), openssh.a_session()];
    let t0 = Instant::now();
    burrow.link(false);
    openssh.link(false);
    let outage = Duration::from_secs(20);
    let noticed = wait_noticed(&[&burrow, &openssh], &sessions, t0, t0 + outage);
    std::thread::sleep(outage.saturating_sub(t0.elapsed()));
    burrow.link(true);
    let t_b = Instant::now();
    openssh.link(true);
    let t_o = Instant::now();
    assert!(
        noticed[0].is_some(),
        "{FAULT}: burrow up did not notice a 20 s outage\n{}",
        burrow.logs()
    );
    assert!(
        burrow.prober.failures_between(t0, t_b) > 0,
        "{FAULT}: C's probes never failed during the outage: no fault happened"
    );
    let out = observe(&[&burrow, &openssh], &[t_b, t_o]);
    report(FAULT, &out, Some(&noticed), "keepalive 1sx3");
    let d = burrow_recovered(FAULT, &burrow, out[0], PROMPT);
    let how = assert_old_session_released(FAULT, &burrow, &old);
    burrow.assert_clean_recovery(FAULT, before, &burrow.listening);
    println!(
        "{FAULT}: burrow noticed the dead link after {}, end-to-end again {:.2} s after link up; \
         old relay session {how}; openssh+autossh: noticed after {}, {:?} ({})",
        secs(noticed[0]),
        d.as_secs_f64(),
        secs(noticed[1]),
        out[1],
        openssh.describe_openssh()
    );
}

/// Fault 3: the relay is frozen (SIGSTOP: sockets open, nothing answers) for longer than the
/// keepalive window, then SIGCONT. The client notices, reconnects, and nothing is left
/// half-open.
#[test]
fn relay_sigstop_exclusive() {
    const FAULT: &str = "relay-sigstop";
    let Some((burrow, openssh)) = both(FAULT, FAST, Tuning::Keepalive) else {
        return;
    };
    let before = burrow.reconnects();
    let old = burrow.session_peer();
    let sessions = [burrow.a_session(), openssh.a_session()];
    // Past the keepalive window (3 s) with a margin: ssh's and russh's counting declare the
    // relay dead one interval after the last unanswered keepalive (4 s).
    let freeze = FAST.window() + Duration::from_secs(4);
    let t0 = Instant::now();
    burrow.server.freeze();
    openssh.server.freeze();
    let noticed = wait_noticed(&[&burrow, &openssh], &sessions, t0, t0 + freeze);
    std::thread::sleep(freeze.saturating_sub(t0.elapsed()));
    burrow.server.thaw();
    let t_b = Instant::now();
    openssh.server.thaw();
    let t_o = Instant::now();
    assert!(
        noticed[0].is_some(),
        "{FAULT}: burrow up did not notice the relay frozen for {freeze:?}\n{}",
        burrow.logs()
    );
    let out = observe(&[&burrow, &openssh], &[t_b, t_o]);
    report(FAULT, &out, Some(&noticed), "keepalive 1sx3, frozen 7s");
    let d = burrow_recovered(FAULT, &burrow, out[0], PROMPT);
    let how = assert_old_session_released(FAULT, &burrow, &old);
    burrow.assert_clean_recovery(FAULT, before, &burrow.listening);
    println!(
        "{FAULT}: frozen {:.0} s; burrow noticed after {}, end-to-end again {:.2} s after \
         SIGCONT; old relay session {how}; openssh+autossh: noticed after {}, {:?} ({})",
        freeze.as_secs_f64(),
        secs(noticed[0]),
        d.as_secs_f64(),
        secs(noticed[1]),
        out[1],
        openssh.describe_openssh()
    );
}

/// Fault 4: nftables in A drops every packet to and from B (no RST, no ICMP) for 30 s, with
/// burrow up on all its defaults (keepalive 3 s x 4, backoff 1 s to 60 s, connect timeout 10 s).
/// The dead link must be noticed within the keepalive window, not after TCP's minutes, and the
/// tunnel must be back promptly once the hole is gone, not after a connect that was sent into
/// the hole or a pause that grew during it.
#[test]
fn blackhole_nft_exclusive() {
    const FAULT: &str = "blackhole";
    assert!(
        have("nft"),
        "nft is not installed (scripts/test installs it: apt package nftables)"
    );
    let Some((burrow, openssh)) = both(FAULT, DEFAULT, Tuning::Defaults) else {
        return;
    };
    let before = burrow.reconnects();
    let old = burrow.session_peer();
    let sessions = [burrow.a_session(), openssh.a_session()];
    let t0 = Instant::now();
    burrow.blackhole(true);
    openssh.blackhole(true);
    let noticed = wait_noticed(&[&burrow, &openssh], &sessions, t0, t0 + BLACK_HOLE);
    std::thread::sleep(BLACK_HOLE.saturating_sub(t0.elapsed()));
    burrow.blackhole(false);
    let t_b = Instant::now();
    openssh.blackhole(false);
    let t_o = Instant::now();
    let hole = t_b - t0;
    let out = observe(&[&burrow, &openssh], &[t_b, t_o]);
    report(
        FAULT,
        &out,
        Some(&noticed),
        &format!(
            "{:.0}s, burrow up defaults, keepalive 3sx4",
            hole.as_secs_f64()
        ),
    );
    assert!(
        noticed[0].is_some(),
        "{FAULT}: burrow up did not notice the black hole within {BLACK_HOLE:?}\n{}",
        burrow.logs()
    );
    let d = burrow_recovered(FAULT, &burrow, out[0], PROMPT + TAKEOVER_PROBE);
    let how = assert_old_session_released(FAULT, &burrow, &old);
    burrow.assert_clean_recovery(FAULT, before, &burrow.listening);
    println!(
        "{FAULT}: black hole for {:.1} s; burrow (all defaults) noticed after {}, end-to-end \
         again {:.2} s after it was removed; old relay session {how}; openssh+autossh: noticed \
         after {}, {:?} ({})",
        hole.as_secs_f64(),
        secs(noticed[0]),
        d.as_secs_f64(),
        secs(noticed[1]),
        out[1],
        openssh.describe_openssh()
    );
    // Last, so the numbers above are printed either way: noticed within the documented window
    // (interval x count), with 1 s for polling.
    let limit = DEFAULT.window() + Duration::from_secs(1);
    assert!(
        noticed[0].is_some_and(|n| n <= limit),
        "{FAULT}: burrow up (defaults: keepalive 3 s x 4) noticed the black hole after {}, not \
         within the documented keepalive window of (4 + 1) x 3 s (+1 s: {limit:?}); ssh with \
         ServerAliveInterval=5 ServerAliveCountMax=3 noticed after {}\n{}",
        secs(noticed[0]),
        secs(noticed[1]),
        burrow.logs()
    );
}

/// Fault 5: A's address changes during a 10 s outage (a new lease): 10.77.1.2 is removed, and
/// 10.77.1.3 added 10 s later. Packets of the old session go nowhere, so B gets no RST and keeps
/// the old session. The keepalive is burrow's default (3 s x 4, a 15 s window, longer than the outage): the
/// network change watcher has to notice. Measured from the new address to C's first success (C
/// probes all along).
#[test]
fn address_change_exclusive() {
    const FAULT: &str = "address-change";
    let Some((burrow, openssh)) = both(FAULT, DEFAULT, Tuning::Keepalive) else {
        return;
    };
    let before = burrow.reconnects();
    let old = burrow.session_peer();
    let sessions = [burrow.a_session(), openssh.a_session()];
    let t0 = Instant::now();
    for s in [&burrow, &openssh] {
        ip(&[
            "-n",
            &s.w.net.a,
            "addr",
            "del",
            &format!("{A_IP}/24"),
            "dev",
            "toB",
        ]);
    }
    let outage = Duration::from_secs(10);
    let noticed = wait_noticed(&[&burrow, &openssh], &sessions, t0, t0 + outage);
    std::thread::sleep(outage.saturating_sub(t0.elapsed()));
    let mut t_end = Vec::new();
    for s in [&burrow, &openssh] {
        ip(&[
            "-n",
            &s.w.net.a,
            "addr",
            "add",
            "10.77.1.3/24",
            "dev",
            "toB",
        ]);
        t_end.push(Instant::now());
        let _ = ip_try(&[
            "-n",
            &s.w.net.a,
            "route",
            "add",
            "10.77.2.0/24",
            "via",
            B_INSIDE,
        ]);
    }
    assert!(
        burrow.prober.failures_between(t0, t_end[0]) > 0,
        "{FAULT}: C's probes never failed during the outage: no fault happened"
    );
    let out = observe(&[&burrow, &openssh], &t_end);
    report(FAULT, &out, Some(&noticed), "10s outage, keepalive 3sx4");
    let d = burrow_recovered(FAULT, &burrow, out[0], PROMPT);
    let how = assert_old_session_released(FAULT, &burrow, &old);
    burrow.assert_clean_recovery(FAULT, before, &burrow.listening);
    println!(
        "{FAULT}: burrow noticed after {} (of a 10 s outage), end-to-end again {:.2} s after the \
         new address (keepalive 3 s x 4); old relay session {how}; openssh+autossh: noticed \
         after {}, {:?} ({})",
        secs(noticed[0]),
        d.as_secs_f64(),
        secs(noticed[1]),
        out[1],
        openssh.describe_openssh()
    );
}

/// Fault 6: the relay accepts TCP but stalls the SSH handshake: frozen (SIGSTOP) for 40 s, so
/// its kernel still completes every TCP connect while the process sends no banner. burrow up
/// runs with a 2 s connect timeout (its handshake deadline is then 11 s), so several attempts
/// would fit in the freeze. The tunnel must not spin: A opens at most one connection to the
/// relay per banner wait (10 s) or handshake deadline, plus a few, and when the relay resumes
/// it works through that short backlog and sees exactly one full handshake (one
/// "authenticated" session) from the tunnel. Then the tunnel must be back promptly: the
/// connection that waits for the banner carries on the moment the relay does.
#[test]
fn relay_stalls_handshake_exclusive() {
    const FAULT: &str = "relay-stalls-handshake";
    assert!(
        have("nft"),
        "nft is not installed (scripts/test installs it: apt package nftables)"
    );
    let Some((burrow, openssh)) = both(FAULT, FAST, Tuning::ShortConnect) else {
        return;
    };
    let before = burrow.reconnects();
    let sessions = [burrow.a_session(), openssh.a_session()];
    burrow.count_connects();
    openssh.count_connects();
    let log_before = burrow.server.stderr_text().len();
    let t0 = Instant::now();
    burrow.server.freeze();
    openssh.server.freeze();
    let noticed = wait_noticed(&[&burrow, &openssh], &sessions, t0, t0 + STALL);
    std::thread::sleep(STALL.saturating_sub(t0.elapsed()));
    let connects = [burrow.connects(), openssh.connects()];
    burrow.server.thaw();
    let t_b = Instant::now();
    openssh.server.thaw();
    let t_o = Instant::now();
    let out = observe(&[&burrow, &openssh], &[t_b, t_o]);
    report(
        FAULT,
        &out,
        Some(&noticed),
        &format!(
            "relay frozen {}s after accept, keepalive 1sx3, connect timeout 2s; connections \
             opened to the frozen relay: burrow={} openssh+autossh={}",
            STALL.as_secs(),
            connects[0],
            connects[1]
        ),
    );
    assert!(
        noticed[0].is_some(),
        "{FAULT}: burrow up did not notice the relay frozen for {STALL:?}\n{}",
        burrow.logs()
    );
    // One banner wait (10 s) per connection at most, or one 11 s handshake deadline plus a
    // backoff step: 40 s / 10 s, and room for the first attempt and a network-change probe.
    let most = STALL.as_secs() / 10 + 3;
    assert!(
        connects[0] <= most,
        "{FAULT}: burrow up opened {} connections to a relay frozen for {STALL:?} (at most \
         {most}): it spins\n{}",
        connects[0],
        burrow.logs()
    );
    let d = burrow_recovered(FAULT, &burrow, out[0], PROMPT);
    burrow.assert_clean_recovery(FAULT, before, &burrow.listening);
    // The relay's view once it has worked through its backlog: every connection A queued was
    // seen, and one of them authenticated.
    let log = burrow.server.stderr_text();
    let after = log.get(log_before..).unwrap_or_default();
    let handshakes = after.matches("authenticated").count();
    let accepted = session_ids(after).len();
    assert_eq!(
        handshakes,
        1,
        "{FAULT}: want exactly one full handshake from the tunnel after the freeze\n{}",
        burrow.logs()
    );
    println!(
        "{FAULT}: relay frozen {} s; burrow noticed after {}, opened {} connections to it while \
         frozen, end-to-end again {:.2} s after SIGCONT; the relay then saw {accepted} \
         connections and {handshakes} full handshake; openssh+autossh: noticed after {}, \
         opened {} connections, {:?} ({})",
        STALL.as_secs(),
        secs(noticed[0]),
        connects[0],
        d.as_secs_f64(),
        secs(noticed[1]),
        connects[1],
        out[1],
        openssh.describe_openssh()
    );
}

/// The distinct relay session ids in a burrow serve log (one per accepted connection).
fn session_ids(log: &str) -> std::collections::BTreeSet<u64> {
    log.split("session{id=")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}
