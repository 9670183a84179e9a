//! Driving the burrow binary in tests: `burrow ssh` commands pointed at a test sshd, and reading
//! the ports it reports.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::burrow_bin;
use super::keys::Keypair;
use super::openssh::parse_allocated_port;
use super::process::{run_with_timeout, spawn_logged, ChildGuard};
use super::sshd::Sshd;

/// How long a burrow forward may take to come up in a debug build on a busy machine.
pub const UP_TIMEOUT: Duration = Duration::from_secs(30);

/// `burrow ssh` for `sshd`: no config file, no agent, BatchMode, the server's known_hosts with
/// strict checking, its port, and `key` only (when given). Add flags, then the destination.
pub fn burrow_ssh(sshd: &Sshd, key: Option<&Keypair>) -> Command {
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("ssh")
        .env_remove("SSH_AUTH_SOCK")
        .arg("-F")
        .arg("/dev/null");
    cmd.arg("-o").arg("BatchMode=yes");
    for o in sshd.client_options() {
        cmd.arg("-o").arg(o);
    }
    cmd.arg("-p").arg(sshd.port.to_string());
    if let Some(k) = key {
        cmd.arg("-i")
            .arg(&k.private)
            .arg("-o")
            .arg("IdentitiesOnly=yes");
    }
    cmd
}

/// Tunnel `name` in `burrow status --json` of the `burrow up` behind `control` (None if the
/// status command fails within 10 s or the tunnel is not listed); its output is logged in `dir`.
pub fn tunnel_status(control: &Path, dir: &Path, name: &str) -> Option<serde_json::Value> {
    let mut cmd = Command::new(burrow_bin());
    cmd.args(["status", "--json", "--control"]).arg(control);
    let (st, out, _) = run_with_timeout(cmd, dir, "status", Duration::from_secs(10));
    if !st.is_some_and(|s| s.success()) {
        return None;
    }
    let all: serde_json::Value = serde_json::from_str(&out).ok()?;
    all.as_array()?.iter().find(|t| t["name"] == name).cloned()
}

/// Waits for the `Allocated port N for <what>` line on `child`'s stderr and returns N; panics with
/// the stderr if it does not come or the process exits first.
pub async fn allocated_port(child: &ChildGuard, what: &str) -> u16 {
    let want = format!(" for {what}");
    let found = child
        .stderr()
        .wait_until_async(UP_TIMEOUT, move |log| {
            log.lines()
                .filter(|l| l.contains("Allocated port ") && l.contains(&want))
                .find_map(parse_allocated_port)
        })
        .await;
    found.unwrap_or_else(|| {
        panic!(
            "no 'Allocated port ..{what}' from {}:\n{}",
            child.name(),
            child.stderr_text()
        )
    })
}

/// `burrow ssh -N -L 127.0.0.1:0:TARGET` (plus `extra` flags); returns the process and the
/// local address it listens on, once it accepts connections.
pub async fn local_forward(
    sshd: &Sshd,
    key: &Keypair,
    dir: &Path,
    target: &str,
    extra: &[&str],
) -> (ChildGuard, SocketAddr) {
    let mut cmd = burrow_ssh(sshd, Some(key));
    cmd.args(extra)
        .arg("-N")
        .arg("-L")
        .arg(format!("127.0.0.1:0:{target}"))
        .arg(sshd.dest("root"));
    let mut child = spawn_logged(cmd, dir, "burrow-L");
    let port = allocated_port(&child, &format!("local forward to {target}")).await;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    super::openssh::wait_listening(&mut child, addr, UP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("burrow -L: {e}"));
    (child, addr)
}

/// PIDs of processes whose command line contains `marker` (for a `-f` child that detached; the
/// test started it, so it may end it by PID).
pub fn pids_with_cmdline(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let text = String::from_utf8_lossy(&raw).replace('\0', " ");
            if text.contains(marker) && pid != std::process::id() {
                pids.push(pid);
            }
        }
    }
    pids
}

/// An executable SSH_ASKPASS script in `dir` that prints `answer`.
pub fn askpass_script(dir: &Path, answer: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("askpass.sh");
    std::fs::write(&path, format!("#!/bin/sh\nprintf '%s\\n' '{answer}'\n"))
        .expect("write askpass");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod askpass");
    path
}

/// A `burrow serve` started by a test on 127.0.0.1 with a port it chose itself, killed on drop.
pub struct Relay {
    /// The process.
    pub child: ChildGuard,
    /// Where it listens.
    pub addr: SocketAddr,
    /// A known_hosts file with its host key as `[127.0.0.1]:PORT`.
    pub known_hosts: std::path::PathBuf,
    /// Its authorized_keys file (rewrite it, then SIGHUP, to reload).
    pub authorized_keys: std::path::PathBuf,
    /// Its host key file.
    pub host_key: std::path::PathBuf,
}

/// serve.toml opting in to -L/-W/-D anywhere the relay can reach, for tests whose subject is
/// something else (by default the relay reaches only listeners published through it).
pub const PERMIT_OPEN_ANY: &str = "permit_open = [\"any\"]\n";

impl Relay {
    /// Where a relay started with `--metrics 127.0.0.1:0` serves, from its log.
    pub async fn metrics_addr(&self) -> SocketAddr {
        self.child
            .stderr()
            .wait_until_async(UP_TIMEOUT, super::output::logged_metrics_address)
            .await
            .unwrap_or_else(|| panic!("no metrics address logged:\n{}", self.child.stderr_text()))
    }

    /// A relay in `dir` that accepts `key` alone and lets it reach anything ([`PERMIT_OPEN_ANY`]),
    /// for tests whose subject is the data path, not the policy.
    pub async fn open_to(dir: &std::path::Path, key: &Keypair) -> Relay {
        Relay::start(
            dir,
            "relay",
            std::slice::from_ref(&key.public_line),
            Some(PERMIT_OPEN_ANY),
            &[],
        )
        .await
    }

    /// Waits (30 s at most) until the relay's loopback `port` leads to `target`, a service that
    /// `client` (a later session asking for a port another session holds) forwards to: a checked
    /// 64 KiB echo gets through and `target` counts a new connection. Panics with the logs if
    /// `client` exits or the port never moves.
    pub async fn wait_port_moves_to(
        &self,
        port: u16,
        target: &super::services::Service,
        client: &mut ChildGuard,
    ) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                client.try_status().is_none(),
                "second client exited: {}\nrelay: {}",
                client.stderr_text(),
                self.child.stderr_text()
            );
            let before = super::services::Stats::get(&target.stats.connections);
            let echoed =
                super::data::transfer_checked_within(addr, 64 * 1024, 1, Duration::from_secs(5))
                    .await;
            if echoed.is_ok() && super::services::Stats::get(&target.stats.connections) > before {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no takeover:\n{}",
                self.child.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts `burrow serve --listen 127.0.0.1:0` with these authorized_keys lines, an optional
    /// TOML config and extra flags; returns once it reported its port and accepts connections.
    pub async fn start<S: AsRef<str>>(
        dir: &Path,
        name: &str,
        authorized: &[S],
        config: Option<&str>,
        extra: &[&str],
    ) -> Relay {
        Relay::start_at(dir, name, authorized, config, extra, "127.0.0.1:0").await
    }

    /// [`Relay::start`] on a given address (e.g. to restart a killed relay on its old port; the
    /// host key in `dir/name` is reused, so known_hosts stays valid).
    pub async fn start_at<S: AsRef<str>>(
        dir: &Path,
        name: &str,
        authorized: &[S],
        config: Option<&str>,
        extra: &[&str],
        listen: &str,
    ) -> Relay {
        let base = dir.join(name);
        std::fs::create_dir_all(&base).expect("relay dir");
        let authorized_keys = base.join("authorized_keys");
        let text: Vec<&str> = authorized.iter().map(|s| s.as_ref()).collect();
        std::fs::write(&authorized_keys, text.join("\n") + "\n").expect("write authorized_keys");
        let host_key = base.join("host_key");
        let mut cmd = Command::new(burrow_bin());
        cmd.args(["serve", "--listen", listen, "--host-key"])
            .arg(&host_key)
            .arg("--authorized-keys")
            .arg(&authorized_keys)
            // Its home: strict modes check authorized_keys and the directories above it up to
            // here, so the test's world-writable /tmp (refused, as by sshd) is not reached.
            .env("HOME", &base);
        if let Some(text) = config {
            let path = base.join("serve.toml");
            std::fs::write(&path, text).expect("write serve.toml");
            cmd.arg("--config").arg(path);
        }
        cmd.args(extra);
        let mut child = spawn_logged(cmd, &base, name);
        let port = child
            .stderr()
            .wait_until_async(UP_TIMEOUT, |log| {
                log.lines()
                    .find_map(|l| l.split("listening on 127.0.0.1:").nth(1))
                    .and_then(|p| p.trim().parse::<u16>().ok())
            })
            .await
            .unwrap_or_else(|| panic!("burrow serve did not start:\n{}", child.stderr_text()));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        super::openssh::wait_listening(&mut child, addr, UP_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("burrow serve: {e}"));
        let public = super::keys::public_key_line(&host_key);
        let known_hosts = base.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {public}\n"))
            .expect("write known_hosts");
        Relay {
            child,
            addr,
            known_hosts,
            authorized_keys,
            host_key,
        }
    }

    /// The `-o` options for an ssh client to trust this relay and nothing else.
    pub fn client_options(&self) -> Vec<String> {
        vec![
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".into(),
            "StrictHostKeyChecking=yes".into(),
            "ConnectTimeout=10".into(),
        ]
    }

    /// OpenSSH `ssh` for this relay with `key` only, BatchMode, no config. Add flags and
    /// `user@127.0.0.1`.
    pub fn ssh(&self, key: &Keypair) -> Command {
        let mut cmd = Command::new("ssh");
        self.common_args(&mut cmd, key);
        cmd
    }

    /// `burrow ssh` for this relay, same settings as [`Relay::ssh`].
    pub fn burrow_ssh(&self, key: &Keypair) -> Command {
        let mut cmd = Command::new(burrow_bin());
        cmd.arg("ssh");
        self.common_args(&mut cmd, key);
        cmd
    }

    fn common_args(&self, cmd: &mut Command, key: &Keypair) {
        cmd.env_remove("SSH_AUTH_SOCK")
            .args(["-F", "/dev/null", "-o", "BatchMode=yes"]);
        for o in self.client_options() {
            cmd.arg("-o").arg(o);
        }
        cmd.args(["-p", &self.addr.port().to_string(), "-i"])
            .arg(&key.private)
            .args(["-o", "IdentitiesOnly=yes"]);
    }
}

/// Local addresses of TCP sockets listening on `port` (from /proc/net/tcp and tcp6), to check
/// which interface a listener really bound.
pub fn listening_addresses(port: u16) -> Vec<std::net::IpAddr> {
    let mut found = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 || cols[3] != "0A" {
                continue;
            }
            let Some((addr_hex, port_hex)) = cols[1].split_once(':') else {
                continue;
            };
            if u16::from_str_radix(port_hex, 16).ok() != Some(port) {
                continue;
            }
            if let Some(ip) = parse_proc_addr(addr_hex, v6) {
                found.push(ip);
            }
        }
    }
    found
}

fn parse_proc_addr(hex: &str, v6: bool) -> Option<std::net::IpAddr> {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect::<Option<_>>()?;
    if v6 {
        // Four little-endian 32-bit words.
        let mut out = [0u8; 16];
        for w in 0..4 {
            for b in 0..4 {
                out[w * 4 + b] = bytes[w * 4 + (3 - b)];
            }
        }
        Some(std::net::IpAddr::from(out))
    } else {
        Some(std::net::IpAddr::from([
            bytes[3], bytes[2], bytes[1], bytes[0],
        ]))
    }
}
