//! The README's A/B/C scenario on real network namespaces.
//!
//! Every test builds its own three namespaces: A (inside, 10.77.1.2) and C (outside, 10.77.2.2)
//! each linked to B (the relay, 10.77.1.1 and 10.77.2.1) by a veth pair. A has a route to C's net
//! through B and C one to A's net through B, so the only thing keeping C from A is that B does not
//! forward IP packets (asserted, and proved by a bounded connect from C to A's sshd that must fail).
//! Every process runs under `ip netns exec` in a [`ChildGuard`]; the namespaces (and any
//! `/etc/netns/<name>` dir) are deleted by a guard, also when a test panics.
//!
//! 1. [`openssh_reference`]: OpenSSH only — the recipe the README starts from, proving the test.
//! 2. [`burrow_relay_ssh_and_http`]: `burrow serve` on B, `burrow ssh -R` on A; C logs in to A's
//!    sshd with OpenSSH through B's local `*:` forwards and through a GatewayPorts listener, and
//!    fetches A's web server with curl.
//! 3. [`burrow_dynamic_socks_resolves_on_a`]: `burrow ssh -D` on C over the chain; curl resolves a
//!    name only A's namespace knows.
//! 4. [`burrow_compressed_chain_256mib_exclusive`]: -C on A's tunnel and on C's client, 256 MiB
//!    checksummed (time and MiB/s printed), and proof that A's tunnel really compresses.
//!    [`openssh_compressed_chain_256mib_reference_exclusive`] (ignored) times the same with OpenSSH.
//!
//! Skipped (with a printed note, and passing) only where namespaces are unavailable: not root, or
//! `ip netns add` fails.

mod common;

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1024 * 1024;
/// A's address (on the A<->B link).
const A_IP: &str = "10.77.1.2";
/// B's address on the A<->B link.
const B_INSIDE: &str = "10.77.1.1";
/// B's address on the B<->C link: the "public" address C uses.
const B_PUBLIC: &str = "10.77.2.1";
/// C's address.
const C_IP: &str = "10.77.2.2";
/// Deadline for a daemon, tunnel or forward to come up.
const UP: Duration = Duration::from_secs(30);
/// Deadline for one short client command (an ssh login running one command, a small curl).
const CMD: Duration = Duration::from_secs(30);
/// The name only A's namespace resolves (step 4).
const A_ONLY_NAME: &str = "web.a-internal";

// ---------------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------------

/// Runs `f` on a fresh thread that has joined network namespace `ns`. Sockets made there stay in
/// `ns` for their whole life, whichever thread uses them afterwards.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // Only this short-lived, private thread changes namespace.
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// A TCP connection made from inside `ns`.
fn connect_from(ns: &str, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    in_netns(ns, move || TcpStream::connect_timeout(&addr, timeout))
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("socket address")
}

/// The three namespaces of one test; deleted (with their veths and `/etc/netns` dirs) on drop.
struct Net {
    a: String,
    b: String,
    c: String,
    /// `/etc/netns/<a>` when this test created it.
    etc_dir: Option<PathBuf>,
    /// Whether this test also created `/etc/netns` itself (removed again if left empty).
    made_etc_netns: bool,
    created: Vec<String>,
}

static NET_SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS` (bounded), returning whether it succeeded and its stderr.
fn ip_try(args: &[&str]) -> (bool, String) {
    let out = Command::new("ip").args(args).output();
    match out {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        ),
        Err(e) => (false, format!("cannot run ip: {e}")),
    }
}

fn ip(args: &[&str]) {
    let (ok, err) = ip_try(args);
    assert!(ok, "ip {}: {err}", args.join(" "));
}

impl Net {
    /// Builds A, B and C; `a_hosts` becomes A's /etc/hosts (through `/etc/netns/<a>/hosts`, which
    /// `ip netns exec` bind-mounts for the processes it starts). None (after printing why) when
    /// this machine cannot make namespaces: the caller returns and the test passes as skipped.
    fn create(test: &str, a_hosts: Option<&str>) -> Option<Net> {
        if !is_root() {
            println!("SKIPPED {test}: network namespaces need root (this is not root)");
            return None;
        }
        sweep_stale_namespaces();
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NET_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Net {
            a: format!("bA-{tag}"),
            b: format!("bB-{tag}"),
            c: format!("bC-{tag}"),
            etc_dir: None,
            made_etc_netns: false,
            created: Vec::new(),
        };
        let (ok, err) = ip_try(&["netns", "add", &net.a]);
        if !ok {
            println!(
                "SKIPPED {test}: network namespaces unavailable (`ip netns add` failed: {err})"
            );
            return None;
        }
        net.created.push(net.a.clone());
        if let Some(hosts) = a_hosts {
            // Before anything runs in A: `ip netns exec` mounts it for every process it starts.
            let dir = PathBuf::from(format!("/etc/netns/{}", net.a));
            net.made_etc_netns = !Path::new("/etc/netns").exists();
            std::fs::create_dir_all(&dir).expect("mkdir /etc/netns/<A>");
            net.etc_dir = Some(dir.clone());
            std::fs::write(dir.join("hosts"), hosts).expect("write A's hosts");
        }
        for ns in [net.b.clone(), net.c.clone()] {
            ip(&["netns", "add", &ns]);
            net.created.push(ns);
        }
        let (a, b, c) = (net.a.clone(), net.b.clone(), net.c.clone());
        // Each veth end is created directly inside its namespace: nothing appears in the host's.
        ip(&[
            "link", "add", "toB", "netns", &a, "type", "veth", "peer", "name", "toA", "netns", &b,
        ]);
        ip(&[
            "link", "add", "toC", "netns", &b, "type", "veth", "peer", "name", "toB", "netns", &c,
        ]);
        for (ns, dev, addr) in [
            (&a, "toB", "10.77.1.2/24"),
            (&b, "toA", "10.77.1.1/24"),
            (&b, "toC", "10.77.2.1/24"),
            (&c, "toB", "10.77.2.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        for ns in [&a, &b, &c] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Routes both ways through B: were B forwarding, C would reach A. It must not be.
        ip(&["-n", &a, "route", "add", "10.77.2.0/24", "via", B_INSIDE]);
        ip(&["-n", &c, "route", "add", "10.77.1.0/24", "via", B_PUBLIC]);
        let fwd = Command::new("ip")
            .args(["netns", "exec", &b, "cat", "/proc/sys/net/ipv4/ip_forward"])
            .output()
            .expect("read B's ip_forward");
        assert_eq!(
            String::from_utf8_lossy(&fwd.stdout).trim(),
            "0",
            "IP forwarding must be off in B ({})",
            String::from_utf8_lossy(&fwd.stderr)
        );
        Some(net)
    }

    /// Asserts that C cannot open a TCP connection to A's sshd (which is listening: the caller
    /// started it and reached it from B), within a bounded attempt.
    fn assert_c_cannot_reach_a(&self) {
        let t0 = Instant::now();
        let r = connect_from(&self.c, sa(A_IP, 22), Duration::from_secs(2));
        match r {
            Ok(s) => panic!(
                "C connected straight to A ({:?} -> {:?}): the topology is wrong",
                s.local_addr(),
                s.peer_addr()
            ),
            Err(e) => println!(
                "C -> {A_IP}:22 fails as it must ({e}, after {:?}); B -> {A_IP}:22 works",
                t0.elapsed()
            ),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            let (ok, err) = ip_try(&["netns", "del", ns]);
            if !ok {
                eprintln!("warning: ip netns del {ns}: {err}");
            }
        }
        if let Some(dir) = &self.etc_dir {
            let _ = std::fs::remove_dir_all(dir);
            if self.made_etc_netns {
                // Fails, leaving it, if anything else is in it by now.
                let _ = std::fs::remove_dir("/etc/netns");
            }
        }
    }
}

/// Deletes `b[ABC]-<pid>-<n>` namespaces (and `/etc/netns` dirs) of test processes that no
/// longer exist (killed on timeout before their guards ran).
fn sweep_stale_namespaces() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let stale = |name: &str| -> bool {
            let Some(rest) = ["bA-", "bB-", "bC-"]
                .iter()
                .find_map(|p| name.strip_prefix(p))
            else {
                return false;
            };
            let Some((pid, n)) = rest.split_once('-') else {
                return false;
            };
            match (pid.parse::<u32>(), n.parse::<u32>()) {
                (Ok(pid), Ok(_)) => !Path::new(&format!("/proc/{pid}")).exists(),
                _ => false,
            }
        };
        if let Ok(entries) = std::fs::read_dir("/run/netns") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if stale(&name) {
                    let _ = ip_try(&["netns", "del", &name]);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir("/etc/netns") {
            let mut removed = false;
            for e in entries.flatten() {
                if stale(&e.file_name().to_string_lossy()) {
                    removed |= std::fs::remove_dir_all(e.path()).is_ok();
                }
            }
            if removed {
                // A dead test made it; fails, leaving it, unless it is empty now.
                let _ = std::fs::remove_dir("/etc/netns");
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Processes in namespaces
// ---------------------------------------------------------------------------------------------

/// `ip netns exec NS PROG` (no agent).
fn ns_cmd(ns: &str, prog: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(prog);
    c.env_remove("SSH_AUTH_SOCK");
    c
}

/// Connects from `ns` to `addr` until the peer sends an SSH banner (so a forward counts as up
/// only once the whole chain behind it answers), bounded by [`UP`]. Fails early, with logs, if one
/// of `watch` exits.
fn wait_ssh_banner(ns: &str, addr: SocketAddr, what: &str, watch: &mut [&mut ChildGuard]) {
    let deadline = Instant::now() + UP;
    let mut last = String::from("no attempt");
    let mut backoff = Duration::from_millis(20);
    for _ in 0..1000 {
        for c in watch.iter_mut() {
            if let Some(st) = c.try_status() {
                panic!(
                    "{} exited ({st}) while waiting for {what} at {addr}:\n{}",
                    c.name(),
                    c.stderr_text()
                );
            }
        }
        match read_banner(ns, addr) {
            Ok(b) if b.starts_with("SSH-2.0-") => return,
            Ok(b) => last = format!("unexpected first line {b:?}"),
            Err(e) => last = e.to_string(),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // A retry backoff between bounded attempts, not a readiness guess.
        std::thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
    let logs: Vec<String> = watch
        .iter()
        .map(|c| format!("--- {} ---\n{}", c.name(), c.stderr_text()))
        .collect();
    panic!(
        "{what}: no SSH banner from {addr} (seen from {ns}) within {UP:?}: {last}\n{}",
        logs.join("\n")
    );
}

fn read_banner(ns: &str, addr: SocketAddr) -> io::Result<String> {
    let mut s = connect_from(ns, addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while got.len() < 255 && !got.ends_with(b"\n") {
        if s.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed after {} bytes", got.len()),
            ));
        }
        got.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&got).trim().to_owned())
}

/// Asserts nothing accepts `addr` seen from `ns` (a bounded attempt).
fn assert_closed(ns: &str, addr: SocketAddr, why: &str) {
    if let Ok(s) = connect_from(ns, addr, Duration::from_secs(2)) {
        panic!("{addr} accepted a connection from {ns} ({why}): {s:?}");
    }
}

/// One test's world: its namespaces, temp dir, the client key every login uses (user root), and
/// the known_hosts file every client checks strictly.
struct World {
    net: Net,
    dir: tempfile::TempDir,
    key: Keypair,
    known_hosts: PathBuf,
}

impl World {
    fn new(test: &str, a_hosts: Option<&str>) -> Option<World> {
        let net = Net::create(test, a_hosts)?;
        for prog in ["ssh", "ssh-keygen", "curl", "bash", "sha256sum"] {
            assert!(
                have(prog),
                "{prog} is not installed (scripts/test installs it)"
            );
        }
        assert!(Path::new(sshd::SSHD).is_file(), "{} missing", sshd::SSHD);
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let dir = test_dir();
        let key = keygen(dir.path(), "id", KeyKind::Ed25519, None);
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, "").expect("known_hosts");
        Some(World {
            net,
            dir,
            key,
            known_hosts,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Adds `host key` to the known_hosts file (`host` is `name` or `[name]:port`).
    fn trust(&self, host: &str, public_line: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.known_hosts)
            .expect("open known_hosts");
        let key: Vec<&str> = public_line.split_whitespace().take(2).collect();
        writeln!(f, "{host} {}", key.join(" ")).expect("write known_hosts");
    }

    fn client_opts(&self, cmd: &mut Command) {
        cmd.args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-i")
        .arg(&self.key.private)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"]);
    }

    /// OpenSSH `ssh` in `ns` with the test's key and known_hosts; add flags and destination.
    fn ssh(&self, ns: &str) -> Command {
        let mut c = ns_cmd(ns, "ssh");
        self.client_opts(&mut c);
        c
    }

    /// `burrow ssh` in `ns`, same settings as [`World::ssh`].
    fn burrow_ssh(&self, ns: &str) -> Command {
        let mut c = ns_cmd(ns, burrow_bin());
        c.arg("ssh");
        self.client_opts(&mut c);
        c
    }

    fn spawn(&self, cmd: Command, name: &str) -> ChildGuard {
        spawn_logged(cmd, self.path(), name)
    }

    /// OpenSSH sshd on port 22 (all addresses) in `ns`, its own host key, the test key authorized
    /// for root; returns once `probe_ns` gets its banner at `ip:22`.
    fn sshd(&self, ns: &str, name: &str, ip: &str, probe_ns: &str) -> (ChildGuard, String) {
        self.sshd_with(ns, name, ip, probe_ns, &[])
    }

    /// [`World::sshd`] with `extra` sshd_config lines first (sshd keeps the first value it reads).
    fn sshd_with(
        &self,
        ns: &str,
        name: &str,
        ip: &str,
        probe_ns: &str,
        extra: &[&str],
    ) -> (ChildGuard, String) {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).expect("sshd dir");
        let host = keygen(&dir, "host_ed25519", KeyKind::Ed25519, None);
        let ak = dir.join("authorized_keys");
        std::fs::write(&ak, format!("{}\n", self.key.public_line)).expect("authorized_keys");
        let mut cfg = vec!["LogLevel DEBUG".to_owned()];
        cfg.extend(extra.iter().map(|l| l.to_string()));
        cfg.extend([
            "Port 22".into(),
            "ListenAddress 0.0.0.0".into(),
            format!("HostKey {}", host.private.display()),
            format!("AuthorizedKeysFile {}", ak.display()),
        ]);
        for l in [
            "PidFile none",
            "PermitRootLogin yes",
            "StrictModes no",
            "UsePAM no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AllowTcpForwarding yes",
            "GatewayPorts no",
            "X11Forwarding no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "LoginGraceTime 30",
            "MaxStartups 100:30:200",
        ] {
            cfg.push(l.into());
        }
        if openssh_version() >= (9, 8) {
            cfg.push("PerSourcePenalties no".into());
        }
        let cfg_path = dir.join("sshd_config");
        std::fs::write(&cfg_path, cfg.join("\n") + "\n").expect("sshd_config");
        let mut cmd = ns_cmd(ns, sshd::SSHD);
        cmd.args(["-D", "-e", "-f"]).arg(&cfg_path);
        let mut child = self.spawn(cmd, name);
        let listening = child
            .stderr()
            .wait_for_line("Server listening on 0.0.0.0 port 22", UP);
        assert!(
            listening.is_some(),
            "{name} did not start:\n{}",
            child.stderr_text()
        );
        wait_ssh_banner(probe_ns, sa(ip, 22), name, &mut [&mut child]);
        (child, host.public_line)
    }

    /// `burrow serve` in B on 0.0.0.0:PORT with `--gateway-ports GW`, the test key authorized;
    /// returns once A gets its banner at B's inside address. Also returns its host key line.
    fn relay(&self, name: &str, port: u16, gw: &str) -> (ChildGuard, String) {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).expect("relay dir");
        let ak = dir.join("authorized_keys");
        std::fs::write(&ak, format!("{}\n", self.key.public_line)).expect("authorized_keys");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&ak, std::fs::Permissions::from_mode(0o600))
                .expect("chmod authorized_keys");
        }
        let host_key = dir.join("host_key");
        let mut cmd = ns_cmd(&self.net.b, burrow_bin());
        cmd.args([
            "serve",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--host-key",
        ])
        .arg(&host_key)
        .arg("--authorized-keys")
        .arg(&ak)
        .args(["--gateway-ports", gw]);
        let mut child = self.spawn(cmd, name);
        let up = child.stderr().wait_for_line("listening on", UP);
        assert!(
            up.is_some(),
            "{name} (burrow serve) did not start:\n{}",
            child.stderr_text()
        );
        wait_ssh_banner(&self.net.a, sa(B_INSIDE, port), name, &mut [&mut child]);
        let out = Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&host_key)
            .output()
            .expect("ssh-keygen -y");
        assert!(
            out.status.success(),
            "{name}: generated host key unreadable: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            child,
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    }

    /// Runs `ssh -p PORT root@B_PUBLIC 'ip -4 -o addr show'` from C (OpenSSH) and asserts the
    /// output is A's: A's address present, B's and C's absent.
    fn login_from_c_lands_on_a(&self, port: u16, label: &str) {
        let mut cmd = self.ssh(&self.net.c);
        cmd.args(["-p", &port.to_string()])
            .arg(format!("root@{B_PUBLIC}"))
            .arg("ip -4 -o addr show; echo ran-on=$(cat /proc/sys/kernel/hostname)");
        let t0 = Instant::now();
        let (st, out, err) = run_with_timeout(cmd, self.path(), &format!("c-login-{port}"), CMD);
        assert!(
            st.is_some_and(|s| s.success()),
            "{label}: ssh -p {port} root@{B_PUBLIC} from C failed ({st:?}):\nstdout:\n{out}\nstderr:\n{err}"
        );
        assert!(
            out.contains(&format!("inet {A_IP}/24")),
            "{label}: the command did not run on A:\n{out}"
        );
        for other in [B_INSIDE, B_PUBLIC, C_IP] {
            assert!(
                !out.contains(&format!("inet {other}/")),
                "{label}: output shows {other}, not only A:\n{out}"
            );
        }
        println!(
            "{label}: C ran `ip -4 -o addr show` through {B_PUBLIC}:{port} on A ({:?}):\n{}",
            t0.elapsed(),
            out.lines()
                .filter(|l| l.contains("inet "))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// `curl URL | sha256sum` in `ns` (curl `extra` flags first); returns the hex digest.
    fn curl_sha256(
        &self,
        ns: &str,
        name: &str,
        extra: &str,
        url: &str,
        timeout: Duration,
    ) -> String {
        let script = format!(
            "set -o pipefail; curl -sS -f --max-time {} {extra} '{url}' | sha256sum",
            timeout.as_secs()
        );
        let mut cmd = ns_cmd(ns, "bash");
        cmd.arg("-c").arg(&script);
        let (st, out, err) =
            run_with_timeout(cmd, self.path(), name, timeout + Duration::from_secs(5));
        assert!(
            st.is_some_and(|s| s.success()),
            "{name}: `{script}` in {ns} failed ({st:?}): {err}"
        );
        out.split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("{name}: no digest in {out:?}"))
            .to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// A's web server
// ---------------------------------------------------------------------------------------------

/// What `GET /NAME` returns.
#[derive(Clone, Copy, Debug)]
enum Body {
    /// [`DetStream`] bytes (incompressible) of this seed.
    Random(u64),
    /// Numbered text lines (compresses well): [`TextBody`].
    Text,
}

/// A deterministic, highly compressible body: numbered text lines, cut at `len` bytes.
struct TextBody {
    line: u64,
    pending: Vec<u8>,
    left: u64,
}

impl TextBody {
    fn new(len: u64) -> TextBody {
        TextBody {
            line: 0,
            pending: Vec::new(),
            left: len,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) -> usize {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut done = 0;
        while done < want {
            if self.pending.is_empty() {
                self.pending = format!(
                    "{:012} GET /app/status 200 the quick brown fox jumps over the lazy dog on A\n",
                    self.line
                )
                .into_bytes();
                self.line += 1;
            }
            let k = self.pending.len().min(want - done);
            buf[done..done + k].copy_from_slice(&self.pending[..k]);
            self.pending.drain(..k);
            done += k;
        }
        self.left -= done as u64;
        done
    }
}

/// sha256 of [`Body::Text`] of `len` bytes.
fn text_sha256(len: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut body = TextBody::new(len);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = body.fill(&mut buf);
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

/// An HTTP/1.0-style server whose listening socket lives in A's namespace (0.0.0.0:PORT there),
/// serving deterministic bodies: `GET /NAME` → a [`Body`] of `len` bytes. Records each client's
/// address. Stopped (listener and open connections shut down) on drop.
struct WebOnA {
    listener: socket2::Socket,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebOnA {
    fn start(ns: &str, port: u16, files: &[(&str, Body, u64)]) -> WebOnA {
        let listener: TcpListener = in_netns(ns, move || TcpListener::bind(("0.0.0.0", port)))
            .unwrap_or_else(|e| panic!("bind 0.0.0.0:{port} in {ns}: {e}"));
        let stop = socket2::Socket::from(listener.try_clone().expect("clone listener"));
        let files: Vec<(String, Body, u64)> = files
            .iter()
            .map(|(n, s, l)| (format!("/{n}"), *s, *l))
            .collect();
        let conns = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (c2, p2) = (conns.clone(), peers.clone());
        let thread = std::thread::spawn(move || {
            // Ends when the listener is shut down (accept then fails).
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                if let Ok(peer) = conn.peer_addr() {
                    p2.lock().unwrap().push(peer);
                }
                if let Ok(c) = conn.try_clone() {
                    c2.lock().unwrap().push(c);
                }
                let files = files.clone();
                std::thread::spawn(move || {
                    let _ = serve_one(conn, &files);
                });
            }
        });
        WebOnA {
            listener: stop,
            conns,
            peers,
            thread: Some(thread),
        }
    }

    fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for WebOnA {
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

fn serve_one(mut conn: TcpStream, files: &[(String, Body, u64)]) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let Some((_, kind, len)) = files.iter().find(|(p, _, _)| *p == path) else {
        conn.write_all(
            b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    let header = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(header.as_bytes())?;
    let (mut random, mut text) = match kind {
        Body::Random(seed) => (Some(DetStream::new(*seed, *len)), None),
        Body::Text => (None, Some(TextBody::new(*len))),
    };
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = match (&mut random, &mut text) {
            (Some(r), _) => r.fill(&mut chunk),
            (_, Some(t)) => t.fill(&mut chunk),
            _ => 0,
        };
        if n == 0 {
            break;
        }
        conn.write_all(&chunk[..n])?;
    }
    conn.shutdown(Shutdown::Write)
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

/// Step 1, OpenSSH only: sshd on A and B; A: `ssh -NR 8087:localhost:22 root@B`; B:
/// `ssh -NL '*:8086:localhost:8087' localhost`; C: `ssh -p 8086 root@B CMD` runs CMD on A.
#[test]
fn openssh_reference() {
    let Some(w) = World::new("openssh_reference", None) else {
        return;
    };
    let (a, b, c) = (&w.net.a, &w.net.b, &w.net.c);
    let (mut sshd_a, key_a) = w.sshd(a, "sshd-A", A_IP, b);
    let (mut sshd_b, key_b) = w.sshd(b, "sshd-B", B_INSIDE, b);
    w.net.assert_c_cannot_reach_a();
    w.trust(B_INSIDE, &key_b);
    w.trust("localhost", &key_b);
    w.trust(&format!("[{B_PUBLIC}]:8086"), &key_a);

    let mut cmd = w.ssh(a);
    cmd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        "8087:localhost:22",
    ])
    .arg(format!("root@{B_INSIDE}"));
    let mut tunnel = w.spawn(cmd, "A-ssh-R");
    wait_ssh_banner(
        b,
        sa("127.0.0.1", 8087),
        "A's -R 8087 on B",
        &mut [&mut tunnel, &mut sshd_a, &mut sshd_b],
    );
    // sshd's GatewayPorts no: the -R listener is loopback only, C cannot use it directly.
    assert_closed(
        c,
        sa(B_PUBLIC, 8087),
        "sshd GatewayPorts no binds -R on loopback",
    );

    let mut cmd = w.ssh(b);
    cmd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        "*:8086:localhost:8087",
    ])
    .arg("root@localhost");
    let mut local = w.spawn(cmd, "B-ssh-L");
    wait_ssh_banner(
        c,
        sa(B_PUBLIC, 8086),
        "B's *:8086 forward",
        &mut [&mut local, &mut tunnel, &mut sshd_a, &mut sshd_b],
    );
    w.login_from_c_lands_on_a(
        8086,
        "openssh: C -> B:8086 (B's ssh -L) -> B:8087 (sshd -R) -> A:22",
    );
}

/// Steps 2 and 3 with burrow: `burrow serve` on B (one relay with GatewayPorts no, one with yes),
/// `burrow ssh -R` on A. C logs in to A's sshd with OpenSSH through B's local `*:` forwards (one
/// through B's own sshd, one through the relay itself) and through the relay's gateway port, and
/// fetches A's web server (4 MiB, sha256) with curl.
#[test]
fn burrow_relay_ssh_and_http() {
    let Some(w) = World::new("burrow_relay_ssh_and_http", None) else {
        return;
    };
    let (a, b, c) = (&w.net.a, &w.net.b, &w.net.c);
    let (mut sshd_a, key_a) = w.sshd(a, "sshd-A", A_IP, b);
    let (mut sshd_b, key_b) = w.sshd(b, "sshd-B", B_INSIDE, b);
    w.net.assert_c_cannot_reach_a();
    let (mut relay_no, key_r_no) = w.relay("relay-gw-no", 2222, "no");
    let (mut relay_yes, key_r_yes) = w.relay("relay-gw-yes", 2223, "yes");
    let web_len = 4 * MIB;
    let web = WebOnA::start(a, 8080, &[("file", Body::Random(3), web_len)]);
    w.trust(&format!("[{B_INSIDE}]:2222"), &key_r_no);
    w.trust(&format!("[{B_INSIDE}]:2223"), &key_r_yes);
    w.trust("localhost", &key_b);
    w.trust("[localhost]:2222", &key_r_no);
    for port in [8086, 8088, 8089] {
        w.trust(&format!("[{B_PUBLIC}]:{port}"), &key_a);
    }

    // A -> relay (GatewayPorts no): B:8087 on loopback only.
    let mut cmd = w.burrow_ssh(a);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-p", "2222"])
        .args(["-R", "8087:localhost:22"])
        .arg(format!("root@{B_INSIDE}"));
    let mut tun_no = w.spawn(cmd, "A-burrow-R-gw-no");
    // A -> relay (GatewayPorts yes): B:8089 (sshd) and B:8090 (web) on all interfaces.
    let mut cmd = w.burrow_ssh(a);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-p", "2223"])
        .args(["-R", "8089:localhost:22", "-R", "8090:localhost:8080"])
        .arg(format!("root@{B_INSIDE}"));
    let mut tun_yes = w.spawn(cmd, "A-burrow-R-gw-yes");
    wait_ssh_banner(
        b,
        sa("127.0.0.1", 8087),
        "A's -R 8087 on the gw-no relay",
        &mut [&mut tun_no, &mut relay_no, &mut sshd_a],
    );
    assert_closed(
        c,
        sa(B_PUBLIC, 8087),
        "relay --gateway-ports no binds -R on loopback",
    );
    wait_ssh_banner(
        c,
        sa(B_PUBLIC, 8089),
        "A's -R 8089 on the gw-yes relay",
        &mut [&mut tun_yes, &mut relay_yes, &mut sshd_a],
    );

    // B's local `*:` forwards onto the loopback-only 8087: through B's sshd, and through the relay.
    let mut cmd = w.ssh(b);
    cmd.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        "*:8086:localhost:8087",
    ])
    .arg("root@localhost");
    let mut l_sshd = w.spawn(cmd, "B-ssh-L-via-sshd");
    let mut cmd = w.ssh(b);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-p", "2222"])
        .args(["-L", "*:8088:localhost:8087"])
        .arg("root@localhost");
    let mut l_relay = w.spawn(cmd, "B-ssh-L-via-relay");
    wait_ssh_banner(
        c,
        sa(B_PUBLIC, 8086),
        "B's *:8086 (via B's sshd)",
        &mut [&mut l_sshd, &mut tun_no, &mut relay_no, &mut sshd_b],
    );
    wait_ssh_banner(
        c,
        sa(B_PUBLIC, 8088),
        "B's *:8088 (via the relay)",
        &mut [&mut l_relay, &mut tun_no, &mut relay_no],
    );

    w.login_from_c_lands_on_a(
        8086,
        "burrow: C -> B:8086 (ssh -L via B's sshd) -> B:8087 (relay gw=no) -> burrow -R on A -> A:22",
    );
    w.login_from_c_lands_on_a(
        8088,
        "burrow: C -> B:8088 (ssh -L via the relay) -> B:8087 (relay gw=no) -> burrow -R on A -> A:22",
    );
    w.login_from_c_lands_on_a(
        8089,
        "burrow: C -> B:8089 (relay gw=yes) -> burrow -R on A -> A:22",
    );

    // Step 3: a non-SSH service.
    let t0 = Instant::now();
    let got = w.curl_sha256(
        c,
        "c-curl-web",
        "",
        &format!("http://{B_PUBLIC}:8090/file"),
        Duration::from_secs(60),
    );
    assert_eq!(
        got,
        det_sha256(3, web_len),
        "A's 4 MiB body corrupted via B:8090"
    );
    let peers = web.peers();
    assert!(
        peers.iter().any(|p| p.ip().is_loopback()),
        "A's web server saw no connection from A's own burrow (localhost): {peers:?}"
    );
    println!(
        "http: C fetched A's 4 MiB through {B_PUBLIC}:8090 in {:?}, sha256 {got} (server saw {peers:?})",
        t0.elapsed()
    );
    for g in [&mut tun_no, &mut tun_yes, &mut relay_no, &mut relay_yes] {
        assert!(
            g.try_status().is_none(),
            "{} died:\n{}",
            g.name(),
            g.stderr_text()
        );
    }
}

/// Step 4: C's `burrow ssh -D` logs in to A's sshd through the relay's gateway port; curl
/// through that SOCKS proxy fetches `web.a-internal`, a name only A's /etc/hosts has.
#[test]
fn burrow_dynamic_socks_resolves_on_a() {
    let hosts = format!("127.0.0.1 localhost\n{A_IP} {A_ONLY_NAME}\n");
    let Some(w) = World::new("burrow_dynamic_socks_resolves_on_a", Some(&hosts)) else {
        return;
    };
    let (a, b, c) = (&w.net.a, &w.net.b, &w.net.c);
    let (mut sshd_a, key_a) = w.sshd(a, "sshd-A", A_IP, b);
    w.net.assert_c_cannot_reach_a();
    let (mut relay, key_r) = w.relay("relay-gw-yes", 2223, "yes");
    let len = 2 * MIB;
    let web = WebOnA::start(a, 8080, &[("file", Body::Random(4), len)]);
    w.trust(&format!("[{B_INSIDE}]:2223"), &key_r);
    w.trust(&format!("[{B_PUBLIC}]:8089"), &key_a);

    // The name resolves in A (processes under `ip netns exec A`), and not in C.
    let getent = |ns: &str, name: &str| {
        let mut cmd = ns_cmd(ns, "getent");
        cmd.args(["hosts", A_ONLY_NAME]);
        run_with_timeout(cmd, w.path(), name, CMD)
    };
    let (st, out, _) = getent(a, "getent-A");
    assert!(
        st.is_some_and(|s| s.success()) && out.contains(A_IP),
        "A should resolve {A_ONLY_NAME}: {st:?} {out:?}"
    );
    let (st, out, _) = getent(c, "getent-C");
    assert!(
        !st.is_some_and(|s| s.success()),
        "C must not resolve {A_ONLY_NAME}, got {out:?}"
    );

    let mut cmd = w.burrow_ssh(a);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-p", "2223"])
        .args(["-R", "8089:localhost:22"])
        .arg(format!("root@{B_INSIDE}"));
    let mut tun = w.spawn(cmd, "A-burrow-R");
    wait_ssh_banner(
        c,
        sa(B_PUBLIC, 8089),
        "A's -R 8089 on the relay",
        &mut [&mut tun, &mut relay, &mut sshd_a],
    );

    let mut cmd = w.burrow_ssh(c);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-p", "8089"])
        .args(["-D", "127.0.0.1:0"])
        .arg(format!("root@{B_PUBLIC}"));
    let mut socks = w.spawn(cmd, "C-burrow-D");
    let port = socks
        .stderr()
        .wait_until(UP, |t| {
            t.lines()
                .filter(|l| l.contains("for dynamic forward"))
                .find_map(parse_allocated_port)
        })
        .unwrap_or_else(|| {
            panic!(
                "no 'Allocated port N for dynamic forward' from C's burrow ssh -D ({:?}):\n{}",
                socks.try_status(),
                socks.stderr_text()
            )
        });
    // The listener is up once reported; prove it from C.
    connect_from(c, sa("127.0.0.1", port), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("SOCKS port {port} in C: {e}\n{}", socks.stderr_text()));

    let t0 = Instant::now();
    let got = w.curl_sha256(
        c,
        "c-curl-socks",
        &format!("--socks5-hostname 127.0.0.1:{port}"),
        &format!("http://{A_ONLY_NAME}:8080/file"),
        Duration::from_secs(60),
    );
    assert_eq!(got, det_sha256(4, len), "body via SOCKS corrupted");
    let peers = web.peers();
    assert!(
        peers.iter().any(|p| p.ip().to_string() == A_IP),
        "A's web server saw no connection from A's sshd dialing {A_ONLY_NAME} ({A_IP}): {peers:?}"
    );
    println!(
        "socks: C fetched http://{A_ONLY_NAME}:8080/file (2 MiB) via burrow -D in {:?}, sha256 {got}; server saw {peers:?}",
        t0.elapsed()
    );
    // Resolving on C instead (plain --socks5) must fail: the name exists only in A.
    let mut cmd = ns_cmd(c, "curl");
    cmd.args(["-sS", "-o", "/dev/null", "--max-time", "20", "--socks5"])
        .arg(format!("127.0.0.1:{port}"))
        .arg(format!("http://{A_ONLY_NAME}:8080/file"));
    let (st, _, err) = run_with_timeout(cmd, w.path(), "c-curl-socks-local-dns", CMD);
    assert!(
        !st.is_some_and(|s| s.success()),
        "curl --socks5 (name resolved on C) should fail"
    );
    println!(
        "socks: resolving on C instead fails as it must: {}",
        err.trim()
    );
    for g in [&mut tun, &mut relay, &mut socks] {
        assert!(
            g.try_status().is_none(),
            "{} died:\n{}",
            g.name(),
            g.stderr_text()
        );
    }
}

/// Bytes interface `dev` of namespace `ns` has received (its namespace's /sys, as `ip netns exec` mounts it).
fn rx_bytes(ns: &str, dev: &str) -> u64 {
    let out = ns_cmd(ns, "cat")
        .arg(format!("/sys/class/net/{dev}/statistics/rx_bytes"))
        .output()
        .expect("read rx_bytes");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("rx_bytes of {dev} in {ns}: {out:?}"))
}

/// Size of the compressible body that proves A's -C tunnel compresses.
const TEXT_LEN: u64 = 64 * MIB;

/// Step 5's chain, with `tunnel` (A -> B with -C, `-R 8089:localhost:22 -R 8090:localhost:8080`,
/// already up) and `client` (C -> A's sshd via B:8089 with -C, `-L 127.0.0.1:PORT:localhost:8080`)
/// started by the caller (`client_port` None: burrow's `-L 0`, read its "Allocated port"): waits
/// for the client, checks A's sshd negotiated zlib with C, then (1) 256 MiB
/// of random bytes from A's web server to C through `client`'s forward and (2) 64 MiB of text
/// through B:8090, counting what crossed the A<->B link (must be far less: compressed).
#[allow(clippy::too_many_arguments)]
fn compressed_chain(
    w: &World,
    label: &str,
    sshd_a: &mut ChildGuard,
    b_side: &mut ChildGuard,
    tunnel: &mut ChildGuard,
    client: &mut ChildGuard,
    client_port: Option<u16>,
    want_big: String,
    want_text: String,
) {
    let (b, c) = (&w.net.b, &w.net.c);
    let port = match client_port {
        Some(p) => p,
        None => client
            .stderr()
            .wait_until(UP, |t| {
                t.lines()
                    .filter(|l| l.contains("for local forward"))
                    .find_map(parse_allocated_port)
            })
            .unwrap_or_else(|| {
                panic!(
                    "{label}: no 'Allocated port N for local forward' from C's -C -L ({:?}):\n{}",
                    client.try_status(),
                    client.stderr_text()
                )
            }),
    };
    // A's sshd agreed to compress C's session (kex line in its DEBUG log).
    let kex = sshd_a
        .stderr()
        .wait_until(UP, |t| {
            t.lines()
                .find(|l| l.contains("kex: server->client") && l.contains("compression: zlib"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            panic!(
                "{label}: A's sshd never negotiated zlib with C's -C client:\n{}",
                sshd_a.stderr_text()
            )
        });
    println!("{label}: C's session to A's sshd: {}", kex.trim());
    // The -L listener is up once ssh/burrow set up forwards (after auth); wait for it from C.
    let deadline = Instant::now() + UP;
    while connect_from(c, sa("127.0.0.1", port), Duration::from_secs(2)).is_err() {
        assert!(
            Instant::now() < deadline && client.try_status().is_none(),
            "{label}: C's -L port {port} never accepted ({:?}):\n{}",
            client.try_status(),
            client.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let t0 = Instant::now();
    let got = w.curl_sha256(
        c,
        "c-curl-256mib",
        "",
        &format!("http://127.0.0.1:{port}/big"),
        Duration::from_secs(90),
    );
    let big_secs = t0.elapsed().as_secs_f64();
    assert_eq!(
        got, want_big,
        "{label}: 256 MiB through the compressed chain corrupted"
    );
    println!(
        "{label}: 256 MiB A -> C through the -C chain in {big_secs:.1} s ({:.1} MiB/s), sha256 {got}",
        256.0 / big_secs
    );

    // A's tunnel compresses: 64 MiB of text through B:8090 must cross A<->B much smaller.
    let before = rx_bytes(b, "toA");
    let got = w.curl_sha256(
        c,
        "c-curl-text",
        "",
        &format!("http://{B_PUBLIC}:8090/text"),
        Duration::from_secs(60),
    );
    let text_wire = rx_bytes(b, "toA") - before;
    assert_eq!(
        got, want_text,
        "{label}: 64 MiB of text via B:8090 corrupted"
    );
    println!(
        "{label}: 64 MiB of text A -> B:8090 -> C crossed the A<->B link as {text_wire} bytes ({:.1}x smaller)",
        TEXT_LEN as f64 / text_wire.max(1) as f64
    );
    assert!(
        text_wire < TEXT_LEN / 10,
        "{label}: A's -C tunnel did not compress: {text_wire} bytes on the wire for {TEXT_LEN}"
    );
    for g in [tunnel, b_side, client] {
        assert!(
            g.try_status().is_none(),
            "{label}: {} died:\n{}",
            g.name(),
            g.stderr_text()
        );
    }
}

/// Step 5: compression on the chain and a 256 MiB body. A's tunnel to the relay runs with -C
/// (proved effective: 64 MiB of text cross A<->B at a fraction of their size); C's
/// `burrow ssh -C -L 0:localhost:8080` logs in to A's sshd through the relay's gateway port (A's
/// sshd logs zlib for it); curl on C downloads 256 MiB of random bytes from A's web server;
/// sha256 compared. Prints time and MiB/s (not asserted).
#[test]
fn burrow_compressed_chain_256mib_exclusive() {
    let Some(w) = World::new("burrow_compressed_chain_256mib_exclusive", None) else {
        return;
    };
    let (a, b, c) = (&w.net.a, &w.net.b, &w.net.c);
    let (mut sshd_a, key_a) = w.sshd(a, "sshd-A", A_IP, b);
    w.net.assert_c_cannot_reach_a();
    let (mut relay, key_r) = w.relay("relay-gw-yes", 2223, "yes");
    let len = 256 * MIB;
    let _web = WebOnA::start(
        a,
        8080,
        &[
            ("big", Body::Random(5), len),
            ("text", Body::Text, TEXT_LEN),
        ],
    );
    w.trust(&format!("[{B_INSIDE}]:2223"), &key_r);
    w.trust(&format!("[{B_PUBLIC}]:8089"), &key_a);
    let want = std::thread::spawn(move || (det_sha256(5, len), text_sha256(TEXT_LEN)));

    let mut cmd = w.burrow_ssh(a);
    cmd.args(["-C", "-N", "-o", "ExitOnForwardFailure=yes", "-p", "2223"])
        .args(["-R", "8089:localhost:22", "-R", "8090:localhost:8080"])
        .arg(format!("root@{B_INSIDE}"));
    let mut tun = w.spawn(cmd, "A-burrow-CR");
    wait_ssh_banner(
        c,
        sa(B_PUBLIC, 8089),
        "A's -C -R 8089 on the relay",
        &mut [&mut tun, &mut relay, &mut sshd_a],
    );
    let mut cmd = w.burrow_ssh(c);
    cmd.args(["-C", "-N", "-o", "ExitOnForwardFailure=yes", "-p", "8089"])
        .args(["-L", "127.0.0.1:0:localhost:8080"])
        .arg(format!("root@{B_PUBLIC}"));
    let mut fwd = w.spawn(cmd, "C-burrow-CL");
    let (want_big, want_text) = want.join().expect("sha thread");
    compressed_chain(
        &w,
        "burrow",
        &mut sshd_a,
        &mut relay,
        &mut tun,
        &mut fwd,
        None,
        want_big,
        want_text,
    );
}

/// The same chain with OpenSSH only (sshd with GatewayPorts yes on B, `ssh -C` on A and C), as a
/// speed reference for the burrow run; ignored by default (run with `--run-ignored all`).
#[test]
#[ignore = "reference timing only"]
fn openssh_compressed_chain_256mib_reference_exclusive() {
    let Some(w) = World::new("openssh_compressed_chain_256mib_reference_exclusive", None) else {
        return;
    };
    let (a, b, c) = (&w.net.a, &w.net.b, &w.net.c);
    let (mut sshd_a, key_a) = w.sshd(a, "sshd-A", A_IP, b);
    w.net.assert_c_cannot_reach_a();
    let (mut sshd_b, key_b) = w.sshd_with(b, "sshd-B", B_INSIDE, a, &["GatewayPorts yes"]);
    let len = 256 * MIB;
    let _web = WebOnA::start(
        a,
        8080,
        &[
            ("big", Body::Random(5), len),
            ("text", Body::Text, TEXT_LEN),
        ],
    );
    w.trust(B_INSIDE, &key_b);
    w.trust(&format!("[{B_PUBLIC}]:8089"), &key_a);
    let want = std::thread::spawn(move || (det_sha256(5, len), text_sha256(TEXT_LEN)));

    let mut cmd = w.ssh(a);
    cmd.args(["-C", "-N", "-o", "ExitOnForwardFailure=yes"])
        .args(["-R", "8089:localhost:22", "-R", "8090:localhost:8080"])
        .arg(format!("root@{B_INSIDE}"));
    let mut tun = w.spawn(cmd, "A-ssh-CR");
    wait_ssh_banner(
        c,
        sa(B_PUBLIC, 8089),
        "A's -C -R 8089 on B's sshd",
        &mut [&mut tun, &mut sshd_b, &mut sshd_a],
    );
    let mut cmd = w.ssh(c);
    cmd.args(["-C", "-N", "-o", "ExitOnForwardFailure=yes", "-p", "8089"])
        .args(["-L", "127.0.0.1:18080:localhost:8080"])
        .arg(format!("root@{B_PUBLIC}"));
    let mut fwd = w.spawn(cmd, "C-ssh-CL");
    let (want_big, want_text) = want.join().expect("sha thread");
    compressed_chain(
        &w,
        "openssh",
        &mut sshd_a,
        &mut sshd_b,
        &mut tun,
        &mut fwd,
        Some(18080),
        want_big,
        want_text,
    );
}
