//! The A/B/C network namespaces of the scenario and fault tests, and processes in them.
//!
//! [`Net`] builds three namespaces per test: A (inside, 10.77.1.2) and C (outside, 10.77.2.2) each
//! linked to B (the relay, 10.77.1.1 and 10.77.2.1) by a veth pair (A's end and C's end are both
//! named `toB`, B's are `toA` and `toC`). A has a route to C's net through B and C one to A's net
//! through B, but B does not forward IP packets (asserted). The namespaces (and any
//! `/etc/netns/<name>` dir) are deleted when the [`Net`] drops, also when a test panics, and
//! namespaces left by killed test processes are swept on the next run. [`in_netns`] and
//! [`spawn_in_netns`] run code on a thread inside a namespace (sockets made there stay there);
//! [`ns_cmd`] runs a program there; [`World`] adds a temp dir, a client key and known_hosts and
//! starts sshd, `burrow serve`, ssh and `burrow ssh` in the namespaces under [`ChildGuard`]s.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::sshd;
use super::{burrow_bin, have, is_root, keygen, openssh_version, spawn_logged, test_dir};
use super::{ChildGuard, KeyKind, Keypair};

/// A's address (on the A<->B link).
pub const A_IP: &str = "10.77.1.2";
/// B's address on the A<->B link.
pub const B_INSIDE: &str = "10.77.1.1";
/// B's address on the B<->C link: the "public" address C uses.
pub const B_PUBLIC: &str = "10.77.2.1";
/// C's address.
pub const C_IP: &str = "10.77.2.2";
/// Deadline for a daemon, tunnel or forward to come up.
pub const UP: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------------

/// Runs `f` on a fresh thread that has joined network namespace `ns`. Sockets made there stay in
/// `ns` for their whole life, whichever thread uses them afterwards.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
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

/// Starts `f` on a new thread that has joined network namespace `ns` (for work that runs while
/// the test goes on, e.g. a client that keeps probing); join the handle for its result.
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // Only this private thread changes namespace.
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

/// A TCP connection made from inside `ns`.
pub fn connect_from(ns: &str, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    in_netns(ns, move || TcpStream::connect_timeout(&addr, timeout))
}

/// `ip:port` as a socket address.
pub fn sa(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().expect("socket address")
}

/// The three namespaces of one test; deleted (with their veths and `/etc/netns` dirs) on drop.
pub struct Net {
    /// Namespace A (inside).
    pub a: String,
    /// Namespace B (the relay).
    pub b: String,
    /// Namespace C (outside).
    pub c: String,
    /// `/etc/netns/<a>` when this test created it.
    etc_dir: Option<PathBuf>,
    /// Whether this test also created `/etc/netns` itself (removed again if left empty).
    made_etc_netns: bool,
    created: Vec<String>,
}

static NET_SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS` (bounded), returning whether it succeeded and its stderr.
pub fn ip_try(args: &[&str]) -> (bool, String) {
    let out = Command::new("ip").args(args).output();
    match out {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        ),
        Err(e) => (false, format!("cannot run ip: {e}")),
    }
}

/// Runs `ip ARGS`; panics with its stderr if it fails.
pub fn ip(args: &[&str]) {
    let (ok, err) = ip_try(args);
    assert!(ok, "ip {}: {err}", args.join(" "));
}

impl Net {
    /// Builds A, B and C; `a_hosts` becomes A's /etc/hosts (through `/etc/netns/<a>/hosts`, which
    /// `ip netns exec` bind-mounts for the processes it starts). None (after printing why) when
    /// this machine cannot make namespaces: the caller returns and the test passes as skipped.
    pub fn create(test: &str, a_hosts: Option<&str>) -> Option<Net> {
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
    pub fn assert_c_cannot_reach_a(&self) {
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
pub fn ns_cmd(ns: &str, prog: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(prog);
    c.env_remove("SSH_AUTH_SOCK");
    c
}

/// Connects from `ns` to `addr` until the peer sends an SSH banner (so a forward counts as up
/// only once the whole chain behind it answers), bounded by [`UP`]. Fails early, with logs, if one
/// of `watch` exits.
pub fn wait_ssh_banner(ns: &str, addr: SocketAddr, what: &str, watch: &mut [&mut ChildGuard]) {
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

pub fn read_banner(ns: &str, addr: SocketAddr) -> io::Result<String> {
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
pub fn assert_closed(ns: &str, addr: SocketAddr, why: &str) {
    if let Ok(s) = connect_from(ns, addr, Duration::from_secs(2)) {
        panic!("{addr} accepted a connection from {ns} ({why}): {s:?}");
    }
}

/// One test's world: its namespaces, temp dir, the client key every login uses (user root), and
/// the known_hosts file every client checks strictly.
pub struct World {
    /// The namespaces.
    pub net: Net,
    /// Keys, configs and logs of everything the test starts.
    pub dir: tempfile::TempDir,
    /// The client key every login uses.
    pub key: Keypair,
    /// The known_hosts file every client checks strictly ([`World::trust`] adds to it).
    pub known_hosts: PathBuf,
}

impl World {
    pub fn new(test: &str, a_hosts: Option<&str>) -> Option<World> {
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

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Adds `host key` to the known_hosts file (`host` is `name` or `[name]:port`).
    pub fn trust(&self, host: &str, public_line: &str) {
        super::keys::trust_host(&self.known_hosts, host, public_line);
    }

    pub fn client_opts(&self, cmd: &mut Command) {
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
    pub fn ssh(&self, ns: &str) -> Command {
        let mut c = ns_cmd(ns, "ssh");
        self.client_opts(&mut c);
        c
    }

    /// `burrow ssh` in `ns`, same settings as [`World::ssh`].
    pub fn burrow_ssh(&self, ns: &str) -> Command {
        let mut c = ns_cmd(ns, burrow_bin());
        c.arg("ssh");
        self.client_opts(&mut c);
        c
    }

    pub fn spawn(&self, cmd: Command, name: &str) -> ChildGuard {
        spawn_logged(cmd, self.path(), name)
    }

    /// OpenSSH sshd on port 22 (all addresses) in `ns`, its own host key, the test key authorized
    /// for root; returns once `probe_ns` gets its banner at `ip:22`.
    pub fn sshd(&self, ns: &str, name: &str, ip: &str, probe_ns: &str) -> (ChildGuard, String) {
        self.sshd_with(ns, name, ip, probe_ns, &[])
    }

    /// [`World::sshd`] with `extra` sshd_config lines first (sshd keeps the first value it reads).
    pub fn sshd_with(
        &self,
        ns: &str,
        name: &str,
        ip: &str,
        probe_ns: &str,
        extra: &[&str],
    ) -> (ChildGuard, String) {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).expect("sshd dir");
        // A restart under the same name keeps the host key (known_hosts stays valid).
        let host = if dir.join("host_ed25519").is_file() {
            existing_key(&dir, "host_ed25519", KeyKind::Ed25519)
        } else {
            keygen(&dir, "host_ed25519", KeyKind::Ed25519, None)
        };
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
        cfg.push("GatewayPorts no".into());
        cfg.extend(super::sshd_config::shared_lines());
        let cfg_path = dir.join("sshd_config");
        std::fs::write(&cfg_path, cfg.join("\n") + "\n").expect("sshd_config");
        // Its own UTS namespace named after the network namespace: `hostname` in a login tells
        // which machine the session landed on.
        let mut cmd = ns_cmd(ns, "unshare");
        cmd.args(["--uts", "sh", "-c", r#"hostname "$0" && exec "$@""#, ns])
            .args([sshd::SSHD, "-D", "-e", "-f"])
            .arg(&cfg_path);
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
    pub fn relay(&self, name: &str, port: u16, gw: &str) -> (ChildGuard, String) {
        self.relay_with(name, port, gw, &[])
    }

    /// [`World::relay`] with `extra` arguments for `burrow serve` (e.g. `--config FILE`).
    pub fn relay_with(
        &self,
        name: &str,
        port: u16,
        gw: &str,
        extra: &[&str],
    ) -> (ChildGuard, String) {
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
        .args(["--gateway-ports", gw])
        .args(extra)
        // Strict modes stop at the relay's home: the world-writable /tmp above is not reached.
        .env("HOME", &dir);
        let mut child = self.spawn(cmd, name);
        let up = child.stderr().wait_for_line("listening on", UP);
        assert!(
            up.is_some(),
            "{name} (burrow serve) did not start:\n{}",
            child.stderr_text()
        );
        wait_ssh_banner(&self.net.a, sa(B_INSIDE, port), name, &mut [&mut child]);
        let public = super::keys::public_key_line(&host_key);
        (child, public)
    }
}

/// The unencrypted key pair `dir/name` (+ `.pub`) made earlier by [`keygen`].
fn existing_key(dir: &Path, name: &str, kind: KeyKind) -> Keypair {
    let public = dir.join(format!("{name}.pub"));
    let public_line = std::fs::read_to_string(&public)
        .unwrap_or_else(|e| panic!("read {}: {e}", public.display()))
        .trim()
        .to_owned();
    Keypair {
        private: dir.join(name),
        public,
        public_line,
        kind,
        passphrase: None,
    }
}
