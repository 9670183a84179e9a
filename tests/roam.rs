//! Issue 22, roaming: a `burrow ssh` session through a burrow relay survives C's network change.
//!
//! On the A/B/C namespaces (`common/netns.rs`): A runs a real OpenSSH sshd, B runs the relay
//! (`burrow serve`, or OpenSSH's sshd for the control test), C logs in to A through B and runs
//! `cat` there, streaming a line counter through it both ways. In the middle of the session C's
//! address goes away for 20 s and comes back as another address. Through a burrow relay the
//! inner session (burrow ssh -J, or stock ssh with `ProxyCommand burrow ssh -W`) carries on:
//! every line comes back once, in order, and the session ends normally. Through a stock sshd the
//! same fault ends the session, as with OpenSSH.
//!
//! Skipped (with a printed note, and passing) where namespaces are unavailable.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{ChildStdin, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::*;
use common::*;

const RELAY_PORT: u16 = 2222;
/// C's address after the change.
const C_NEW_IP: &str = "10.77.2.3";
/// How long C is without its address (the 20 s).
const OUTAGE: Duration = Duration::from_secs(20);
/// The counter's pace: a line every tick, so the session spans the change.
const TICK: Duration = Duration::from_millis(50);
/// Bound for every wait on the session.
const LIMIT: Duration = Duration::from_secs(60);

/// The relay on B.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Relay {
    Burrow,
    OpenSsh,
}

/// A, B, C with A's sshd, a relay on B, and an ssh_config for C that every client (and each
/// jump hop) reads: the test key, strict known_hosts with A's and B's host keys.
struct Setup {
    _sshd_a: ChildGuard,
    /// A's sshd host key line.
    a_key: String,
    relay: ChildGuard,
    config: PathBuf,
    /// `user@host` (and `-p` port) of the relay as C reaches it.
    relay_dest: String,
    relay_port: u16,
    w: World,
}

impl Setup {
    fn start(test: &str, relay: Relay) -> Option<Setup> {
        Self::start_with_grace(test, relay, 60)
    }

    /// [`Setup::start`] with the burrow relay's `resume_grace_secs`.
    fn start_with_grace(test: &str, relay: Relay, grace_secs: u64) -> Option<Setup> {
        let w = World::new(test, None)?;
        let (a, b, c) = (w.net.a.clone(), w.net.b.clone(), w.net.c.clone());
        // A's sshd is reached from B only (C has no route to it but through the relay).
        let (sshd_a, a_key) = w.sshd(&a, "sshd-A", A_IP, &b);
        w.trust(A_IP, &a_key);
        let (relay_child, relay_port) = match relay {
            Relay::Burrow => {
                let cfg = w.path().join("serve.toml");
                std::fs::write(
                    &cfg,
                    format!(
                        "permit_open = [\"{A_IP}:22\", \"{A_IP}:23\", \"a-ssh:22\"]\n[limits]\nresume_grace_secs = {grace_secs}\n\
                         keepalive_interval_secs = 1\nkeepalive_count_max = 3\n"
                    ),
                )
                .expect("serve.toml");
                let cfg = cfg.to_string_lossy().into_owned();
                let (child, key) = w.relay_with("relay", RELAY_PORT, "no", &["--config", &cfg]);
                w.trust(&format!("[{B_PUBLIC}]:{RELAY_PORT}"), &key);
                w.trust(&format!("[{B_INSIDE}]:{RELAY_PORT}"), &key);
                (child, RELAY_PORT)
            }
            Relay::OpenSsh => {
                let (child, key) = w.sshd_with(
                    &b,
                    "sshd-B",
                    B_PUBLIC,
                    &c,
                    &["ClientAliveInterval 1", "ClientAliveCountMax 3"],
                );
                w.trust(B_PUBLIC, &key);
                (child, 22)
            }
        };
        let config = w.path().join("ssh_config");
        std::fs::write(
            &config,
            format!(
                "Host *\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  BatchMode yes\n  \
                 UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  \
                 StrictHostKeyChecking yes\n  ConnectTimeout 10\n",
                w.key.private.display(),
                w.known_hosts.display()
            ),
        )
        .expect("ssh_config");
        Some(Setup {
            _sshd_a: sshd_a,
            a_key,
            relay: relay_child,
            config,
            relay_dest: format!("root@{B_PUBLIC}"),
            relay_port,
            w,
        })
    }

    /// `burrow ssh OPTIONS -J relay root@A cat` in C.
    fn burrow_jump(&self, options: &[&str]) -> Command {
        let mut cmd = ns_cmd(&self.w.net.c, burrow_bin());
        cmd.arg("ssh")
            .arg("-F")
            .arg(&self.config)
            .args(options)
            .arg("-J")
            .arg(format!("{}:{}", self.relay_dest, self.relay_port))
            .arg(format!("root@{A_IP}"))
            .arg("cat");
        cmd
    }

    /// Stock `ssh -o ProxyCommand='burrow ssh -W %h:%p relay' root@A cat` in C.
    fn ssh_proxy_command(&self) -> Command {
        let proxy = format!(
            "{} ssh -v -F {} -p {} -W %h:%p {}",
            burrow_bin().display(),
            self.config.display(),
            self.relay_port,
            self.relay_dest
        );
        let mut cmd = ns_cmd(&self.w.net.c, "ssh");
        cmd.arg("-F")
            .arg(&self.config)
            .arg("-o")
            .arg(format!("ProxyCommand={proxy}"))
            .arg(format!("root@{A_IP}"))
            .arg("cat");
        cmd
    }

    /// C loses its address (and with it the route to B), then after `outage` gets a new one.
    fn change_address(&self, outage: Duration) {
        let c = &self.w.net.c;
        ip(&["-n", c, "addr", "del", "10.77.2.2/24", "dev", "toB"]);
        std::thread::sleep(outage);
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{C_NEW_IP}/24"),
            "dev",
            "toB",
        ]);
        // The old route to A's net left with the old address.
        let _ = ip_try(&["-n", c, "route", "add", "10.77.1.0/24", "via", B_PUBLIC]);
    }
}

/// Writes "0\n", "1\n", ... into the session's stdin at a steady pace until told to stop,
/// then closes it (so `cat` on A ends and with it the session).
struct Counter {
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl Counter {
    fn start(mut stdin: ChildStdin) -> Counter {
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (sent.clone(), stop.clone());
        let writer = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !st.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(240) {
                let n = s.load(Ordering::SeqCst);
                stdin
                    .write_all(format!("{n}\n").as_bytes())
                    .and_then(|()| stdin.flush())
                    .map_err(|e| format!("write of line {n}: {e}"))?;
                s.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(TICK);
            }
            drop(stdin);
            Ok(s.load(Ordering::SeqCst))
        });
        Counter {
            sent,
            stop,
            writer: Some(writer),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stops, closes stdin; the lines written, or the write error.
    fn finish(mut self) -> Result<u64, String> {
        self.stop.store(true, Ordering::SeqCst);
        self.writer
            .take()
            .map(|h| h.join().unwrap_or(Err("writer panicked".into())))
            .unwrap_or(Err("no writer".into()))
    }
}

/// The counter lines echoed so far, checked: exactly 0, 1, 2, ... (no gap, no repeat, no
/// reordering). Err with the first wrong line.
fn echoed(out: &str) -> Result<u64, String> {
    let mut n = 0u64;
    for line in out.lines() {
        if line != n.to_string() {
            return Err(format!("line {n} came back as {line:?}"));
        }
        n += 1;
    }
    Ok(n)
}

/// Waits until at least `want` lines came back in order; panics with the logs if the client
/// exits, a line is wrong, or time runs out.
fn wait_echoed(client: &mut ChildGuard, want: u64, what: &str, s: &Setup) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let out = client.stdout_text();
        match echoed(&out) {
            Ok(n) if n >= want => return,
            Ok(_) => {}
            Err(e) => panic!("{what}: {e}\n{}", logs(client, s)),
        }
        if let Some(st) = client.try_status() {
            panic!(
                "{what}: the client exited ({st}) before {want} lines came back\n{}",
                logs(client, s)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {want} lines did not come back within {LIMIT:?}\n{}",
            logs(client, s)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After the session's end the relay's side of the stream ended too (FIN or ABORT): it is not
/// left suspended, holding A's sshd connection until its grace runs out. A negative check,
/// watched for a bounded 3 s.
fn relay_stream_ends_cleanly(s: &Setup, name: &str, client: &ChildGuard) {
    let suspended_after_reattach = || {
        let log = s.relay.stderr_text();
        let tail = log
            .rsplit("resumable stream re-attached")
            .next()
            .unwrap_or("");
        tail.contains("resumable stream suspended")
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(
            !suspended_after_reattach(),
            "{name}: the relay's stream was left suspended after the session ended\n{}",
            logs(client, s)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ss`'s list of established TCP connections to the relay's port, in B.
fn relay_peers(s: &Setup) -> String {
    let mut cmd = ns_cmd(&s.w.net.b, "ss");
    cmd.args(["-tnH", "state", "established"])
        .arg(format!("( sport = :{} )", s.relay_port));
    let (st, out, err) = run_with_timeout(cmd, s.w.path(), "ss", Duration::from_secs(10));
    assert!(st.is_some_and(|st| st.success()), "ss failed: {err}");
    out
}

fn logs(client: &ChildGuard, s: &Setup) -> String {
    format!(
        "--- {} stderr ---\n{}\n--- {} ---\n{}",
        client.name(),
        client.stderr_text(),
        s.relay.name(),
        s.relay.stderr_text()
    )
}

/// The shared scenario: the counter flows, C's address changes for 20 s, the counter flows
/// again, the session ends normally with every line back once and in order. `roamer` is the
/// `burrow ssh` that roams when it is not the client itself (`-N -L`).
fn survives_address_change(s: &Setup, cmd: Command, name: &str, roamer: Option<&ChildGuard>) {
    let mut client = spawn_with_stdin(cmd, s.w.path(), name);
    let counter = Counter::start(client.take_stdin().expect("stdin"));
    wait_echoed(&mut client, 20, "before the change", s);
    let before = counter.sent();
    let t0 = Instant::now();
    s.change_address(OUTAGE);
    // Lines written during the outage and some after it: all come back once the link is back.
    let after = counter.sent();
    wait_echoed(&mut client, after + 20, "after the change", s);
    println!(
        "{name}: {} lines echoed before the change, {} written during it; flowing again {:.1} s \
         after it began",
        before,
        after - before,
        t0.elapsed().as_secs_f64()
    );
    // The relay's connection from C now comes from C's new address.
    let established = relay_peers(s);
    assert!(
        established.contains(&format!("{C_NEW_IP}:")),
        "{name}: no connection from C's new address {C_NEW_IP} at the relay:\n{established}\n{}",
        logs(&client, s)
    );
    let sent = counter
        .finish()
        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", logs(&client, s)));
    let status = client.wait_timeout(LIMIT);
    assert!(
        status.is_some_and(|st| st.success()),
        "{name}: the session did not end normally ({status:?})\n{}",
        logs(&client, s)
    );
    let lines = echoed(&client.stdout_text())
        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", logs(&client, s)));
    assert_eq!(
        lines,
        sent,
        "{name}: every line back exactly once\n{}",
        logs(&client, s)
    );
    let relay = s.relay.stderr_text();
    assert!(
        relay.contains("resumable stream re-attached"),
        "{name}: the relay never saw the stream re-attach\n{}",
        logs(&client, s)
    );
    let roamer_log = roamer.unwrap_or(&client).stderr_text();
    assert!(
        roamer_log.contains("reconnected to the relay"),
        "{name}: burrow never said it reconnected\n{}",
        logs(&client, s)
    );
    relay_stream_ends_cleanly(s, name, &client);
    println!("{name}: {sent} lines each way across C's address change, in order, no gap, exit 0");
}

/// `burrow ssh -J c@B a-host cat`: the destination session runs over the hop's resumable
/// stream and survives C's address changing for 20 s.
#[test]
fn burrow_ssh_jump_survives_an_address_change_exclusive() {
    let Some(s) = Setup::start("roam_jump", Relay::Burrow) else {
        return;
    };
    let cmd = s.burrow_jump(&[]);
    survives_address_change(&s, cmd, "burrow-ssh-J", None);
}

/// The recommended form: A publishes its sshd by name (stock `ssh -R a-ssh:22:...`, no
/// socket on B) and C logs in with `burrow ssh -J c@B a-ssh`: the same change leaves that
/// session whole too.
#[test]
fn burrow_ssh_jump_to_an_alias_survives_an_address_change_exclusive() {
    let Some(s) = Setup::start("roam_alias", Relay::Burrow) else {
        return;
    };
    let mut cmd = ns_cmd(&s.w.net.a, "ssh");
    cmd.arg("-F")
        .arg(&s.config)
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-p"])
        .arg(RELAY_PORT.to_string())
        .args(["-R", "a-ssh:22:localhost:22"])
        .arg(format!("root@{B_INSIDE}"));
    let mut publisher = s.w.spawn(cmd, "A-ssh-R-alias");
    assert!(
        s.relay
            .stderr()
            .wait_for_line("alias published", UP)
            .is_some(),
        "the relay did not publish a-ssh:\n{}\n--- A ---\n{}",
        s.relay.stderr_text(),
        publisher.stderr_text()
    );
    s.w.trust("a-ssh", &s.a_key);
    let mut cmd = ns_cmd(&s.w.net.c, burrow_bin());
    cmd.arg("ssh")
        .arg("-F")
        .arg(&s.config)
        .arg("-J")
        .arg(format!("{}:{}", s.relay_dest, s.relay_port))
        .args(["root@a-ssh", "cat"]);
    survives_address_change(&s, cmd, "burrow-ssh-J-alias", None);
    assert!(publisher.try_status().is_none(), "A's ssh -R ended");
}

/// Stock OpenSSH with `ProxyCommand burrow ssh -W %h:%p c@B`: ssh's session to A's sshd runs
/// over burrow's resumable -W stream and survives the same change.
#[test]
fn stock_ssh_with_proxy_command_survives_an_address_change_exclusive() {
    let Some(s) = Setup::start("roam_proxycommand", Relay::Burrow) else {
        return;
    };
    let cmd = s.ssh_proxy_command();
    survives_address_change(&s, cmd, "ssh-ProxyCommand", None);
}

/// `burrow ssh -N -L PORT:a-host:22 c@B`: stock ssh logs in to A through the -L port; that
/// forwarded connection is a resumable stream and survives the same change (the listener is
/// set up again on the new session).
#[test]
fn local_forward_connections_survive_an_address_change_exclusive() {
    const L_PORT: u16 = 2022;
    let Some(s) = Setup::start("roam_local", Relay::Burrow) else {
        return;
    };
    let mut cmd = ns_cmd(&s.w.net.c, burrow_bin());
    cmd.arg("ssh")
        .arg("-F")
        .arg(&s.config)
        .args(["-N", "-p", &s.relay_port.to_string(), "-L"])
        .arg(format!("127.0.0.1:{L_PORT}:{A_IP}:22"))
        .arg(&s.relay_dest);
    let mut forward = s.w.spawn(cmd, "burrow-ssh-N-L");
    wait_ssh_banner(
        &s.w.net.c,
        sa("127.0.0.1", L_PORT),
        "-L to A's sshd",
        &mut [&mut forward],
    );
    let mut ssh = ns_cmd(&s.w.net.c, "ssh");
    ssh.arg("-F")
        .arg(&s.config)
        .args(["-p", &L_PORT.to_string(), "-o"])
        .arg(format!("HostKeyAlias={A_IP}"))
        .arg("root@127.0.0.1")
        .arg("cat");
    survives_address_change(&s, ssh, "ssh-through-L", Some(&forward));
    assert!(
        forward.try_status().is_none(),
        "burrow ssh -N ended:\n{}",
        forward.stderr_text()
    );
}

/// A relay that comes back after its own resume grace has expired the stream: burrow ssh -J
/// ends at once with an error that names the relay and the destination, status 255, no hang.
#[test]
fn past_the_relays_grace_the_session_ends_with_a_named_error_exclusive() {
    let Some(s) = Setup::start_with_grace("roam_expired", Relay::Burrow, 3) else {
        return;
    };
    let mut client = spawn_with_stdin(s.burrow_jump(&[]), s.w.path(), "burrow-ssh-J-expired");
    let counter = Counter::start(client.take_stdin().expect("stdin"));
    wait_echoed(&mut client, 20, "before the outage", &s);
    let c = s.w.net.c.clone();
    ip(&["-n", &c, "link", "set", "toB", "down"]);
    // The relay drops the session after 3 missed keepalives, then the stream 3 s later.
    assert!(
        s.relay
            .stderr()
            .wait_for_line("resumable stream expired", LIMIT)
            .is_some(),
        "the relay never expired the stream\n{}",
        logs(&client, &s)
    );
    ip(&["-n", &c, "link", "set", "toB", "up"]);
    let t0 = Instant::now();
    let status = client.wait_timeout(LIMIT);
    let _ = counter.finish();
    assert_eq!(
        status.and_then(|st| st.code()),
        Some(255),
        "burrow ssh should end with 255 once the relay has forgotten the stream\n{}",
        logs(&client, &s)
    );
    let err = client.stderr_text();
    let want =
        format!("relay root@{B_PUBLIC}:{RELAY_PORT}: it no longer holds the stream to {A_IP}:22");
    assert!(err.contains(&want), "expected {want:?} in\n{err}");
    println!(
        "past the relay's grace: ended {:.1} s after the link came back: {}",
        t0.elapsed().as_secs_f64(),
        err.lines()
            .rfind(|l| l.contains("no longer holds"))
            .unwrap_or("")
    );
}

/// A relay unreachable for longer than burrow ssh's grace (60 s; the relay's own is longer
/// here): burrow ssh -J gives up with an error naming the relay and the stream, status 255,
/// soon after the grace, instead of hanging.
#[test]
fn a_relay_away_past_the_grace_ends_the_session_with_a_named_error_exclusive() {
    let Some(s) = Setup::start_with_grace("roam_gone", Relay::Burrow, 300) else {
        return;
    };
    let mut client = spawn_with_stdin(s.burrow_jump(&[]), s.w.path(), "burrow-ssh-J-gone");
    let counter = Counter::start(client.take_stdin().expect("stdin"));
    wait_echoed(&mut client, 20, "before the outage", &s);
    let c = s.w.net.c.clone();
    ip(&["-n", &c, "link", "set", "toB", "down"]);
    let t0 = Instant::now();
    let status = client.wait_timeout(Duration::from_secs(120));
    let waited = t0.elapsed();
    ip(&["-n", &c, "link", "set", "toB", "up"]);
    let _ = counter.finish();
    assert_eq!(
        status.and_then(|st| st.code()),
        Some(255),
        "burrow ssh should give up with 255 past its grace\n{}",
        logs(&client, &s)
    );
    let err = client.stderr_text();
    let want = format!(
        "relay root@{B_PUBLIC}:{RELAY_PORT}: unreachable for longer than the resume grace (60 s); \
         lost the stream to {A_IP}:22"
    );
    assert!(err.contains(&want), "expected {want:?} in\n{err}");
    assert!(
        waited >= Duration::from_secs(60),
        "gave up after {waited:?}, before the grace"
    );
    println!(
        "relay away: burrow ssh gave up {:.1} s after the link went down",
        waited.as_secs_f64()
    );
}

/// A -W target the relay cannot reach (nothing listens on A:23) is reported in ssh's words,
/// status 255, also when the stream would have been resumable.
#[test]
fn an_unreachable_w_target_fails_as_with_ssh_exclusive() {
    let Some(s) = Setup::start("roam_w_refused", Relay::Burrow) else {
        return;
    };
    let mut cmd = ns_cmd(&s.w.net.c, burrow_bin());
    cmd.arg("ssh")
        .arg("-F")
        .arg(&s.config)
        .args(["-p", &s.relay_port.to_string(), "-W"])
        .arg(format!("{A_IP}:23"))
        .arg(&s.relay_dest);
    let (st, _, err) = run_with_timeout(cmd, s.w.path(), "burrow-ssh-W-refused", LIMIT);
    assert_eq!(st.and_then(|st| st.code()), Some(255), "{err}");
    let want = format!("channel 0: open failed: connect failed: Connection refused: {A_IP}:23");
    assert!(
        err.contains(&want) && err.contains("stdio forwarding failed"),
        "expected ssh's message {want:?}, got:\n{err}"
    );
}

/// With OpenSSH's sshd as B nothing is negotiated and nothing changes: the session works, and
/// when C's link dies the session ends with ssh's error and status 255, no reconnect.
#[test]
fn against_a_stock_sshd_a_dead_link_ends_the_session_exclusive() {
    let Some(s) = Setup::start("roam_openssh", Relay::OpenSsh) else {
        return;
    };
    let cmd = s.burrow_jump(&["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3"]);
    let mut client = spawn_with_stdin(cmd, s.w.path(), "burrow-ssh-J-openssh");
    let counter = Counter::start(client.take_stdin().expect("stdin"));
    wait_echoed(&mut client, 20, "before the fault", &s);
    let c = s.w.net.c.clone();
    ip(&["-n", &c, "link", "set", "toB", "down"]);
    let status = client.wait_timeout(LIMIT);
    ip(&["-n", &c, "link", "set", "toB", "up"]);
    let _ = counter.finish();
    assert_eq!(
        status.and_then(|st| st.code()),
        Some(255),
        "the session should end with status 255 as ssh's does\n{}",
        logs(&client, &s)
    );
    let err = client.stderr_text();
    assert!(
        !err.contains("resumable streams on") && !err.contains("reconnect"),
        "nothing may be negotiated or retried with a stock sshd\n{err}"
    );
    let why = err.lines().rfind(|l| !l.starts_with("debug")).unwrap_or("");
    println!("stock sshd as B: the session ended with status 255 when the link died ({why})");
}

/// A different relay answers at B's address after the link broke (an impostor on C's new
/// network, or B reinstalled): burrow ssh re-attaches only to the relay whose host key it met
/// first, even under `StrictHostKeyChecking no`, which lets any key through a fresh connection.
/// A reconnect would hand the impostor the streams' re-attach secrets and, for -L/-D, their
/// plaintext mid-session, unseen by the user. Here the impostor is a burrow relay with its own
/// host key that authorizes the test key: burrow ssh must end (255, "Host key verification
/// failed") without ever logging in to it.
#[test]
fn a_reconnect_meets_only_the_relay_it_first_met_exclusive() {
    let Some(mut s) = Setup::start("roam_impostor", Relay::Burrow) else {
        return;
    };
    // The relay hop trusts any key, as `StrictHostKeyChecking no` does on a fresh connection.
    let lax = s.w.path().join("ssh_config_lax");
    let base = std::fs::read_to_string(&s.config).expect("ssh_config");
    std::fs::write(
        &lax,
        format!("Host {B_PUBLIC}\n  StrictHostKeyChecking no\n{base}"),
    )
    .expect("ssh_config_lax");
    let mut cmd = ns_cmd(&s.w.net.c, burrow_bin());
    cmd.arg("ssh")
        .arg("-F")
        .arg(&lax)
        .arg("-J")
        .arg(format!("{}:{}", s.relay_dest, s.relay_port))
        .arg(format!("root@{A_IP}"))
        .arg("cat");
    let mut client = spawn_with_stdin(cmd, s.w.path(), "burrow-ssh-J-impostor");
    let counter = Counter::start(client.take_stdin().expect("stdin"));
    wait_echoed(&mut client, 20, "before the relay changes", &s);
    s.relay.kill();
    let cfg = s.w.path().join("serve.toml").to_string_lossy().into_owned();
    let (mut impostor, _) =
        s.w.relay_with("impostor", RELAY_PORT, "no", &["--config", &cfg]);
    let status = client.wait_timeout(LIMIT);
    let _ = counter.finish();
    let shown = format!(
        "{}\n--- impostor ---\n{}",
        logs(&client, &s),
        impostor.stderr_text()
    );
    assert_eq!(
        status.and_then(|st| st.code()),
        Some(255),
        "burrow ssh should end with 255\n{shown}"
    );
    assert!(
        !impostor.stderr_text().contains("authenticated"),
        "burrow ssh logged in to a relay with another host key on reconnect\n{shown}"
    );
    let err = client.stderr_text();
    assert!(
        err.contains("Host key verification failed"),
        "expected the host key refusal in\n{shown}"
    );
    impostor.kill();
}
