//! The SSH peers under test, all on loopback: an OpenSSH sshd and a `burrow serve` with their own
//! host keys, config and authorized_keys in a temp dir, and the clients (`ssh`, `burrow ssh`)
//! with the same options, a chosen cipher and their forwards.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use std::io::Read;

use crate::procs::Proc;

/// The sshd binary (absolute: sshd re-executes itself).
const SSHD: &str = "/usr/sbin/sshd";

/// Which client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// OpenSSH `ssh`.
    OpenSsh,
    /// `burrow ssh`.
    Burrow,
}

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// OpenSSH `sshd`.
    Sshd,
    /// `burrow serve`.
    Serve,
}

/// One client–server combination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The client.
    pub client: Client,
    /// The server.
    pub server: Server,
}

/// The four pairs, OpenSSH ↔ OpenSSH first (the reference of every ratio).
pub const PAIRS: [Pair; 4] = [
    Pair {
        client: Client::OpenSsh,
        server: Server::Sshd,
    },
    Pair {
        client: Client::Burrow,
        server: Server::Sshd,
    },
    Pair {
        client: Client::OpenSsh,
        server: Server::Serve,
    },
    Pair {
        client: Client::Burrow,
        server: Server::Serve,
    },
];

impl Pair {
    /// Stable key for JSON, e.g. `burrow-sshd`.
    pub fn key(self) -> &'static str {
        match (self.client, self.server) {
            (Client::OpenSsh, Server::Sshd) => "ssh-sshd",
            (Client::Burrow, Server::Sshd) => "burrow-sshd",
            (Client::OpenSsh, Server::Serve) => "ssh-serve",
            (Client::Burrow, Server::Serve) => "burrow-serve",
        }
    }

    /// Column heading, e.g. `burrow→sshd`.
    pub fn label(self) -> &'static str {
        match (self.client, self.server) {
            (Client::OpenSsh, Server::Sshd) => "ssh→sshd",
            (Client::Burrow, Server::Sshd) => "burrow→sshd",
            (Client::OpenSsh, Server::Serve) => "ssh→serve",
            (Client::Burrow, Server::Serve) => "burrow→serve",
        }
    }
}

/// The two servers and what clients need to reach them.
pub struct Lab {
    /// Temp dir with keys, configs and logs.
    pub dir: PathBuf,
    burrow: PathBuf,
    key: PathBuf,
    user: String,
    /// sshd's address.
    pub sshd_addr: SocketAddr,
    /// burrow serve's address.
    pub serve_addr: SocketAddr,
    /// The sshd process (its sessions are its descendants).
    pub sshd: Proc,
    /// The burrow serve process.
    pub serve: Proc,
    /// Extra environment of every sshd (`Settings::sshd_env`).
    sshd_env: Vec<(String, String)>,
}

impl Lab {
    /// Generates keys and starts sshd and burrow serve on free loopback ports.
    pub fn start(dir: &Path, burrow: &Path, sshd_env: &[(String, String)]) -> Result<Lab> {
        let key = dir.join("client_ed25519");
        keygen(&key)?;
        let public = std::fs::read_to_string(key.with_extension("pub"))?;
        let authorized = dir.join("authorized_keys");
        std::fs::write(&authorized, &public)?;
        let user = current_user();
        let (sshd, sshd_addr) = start_sshd(dir, &authorized, &[], sshd_env)?;
        let (serve, serve_addr) = start_serve(dir, burrow, &authorized)?;
        Ok(Lab {
            dir: dir.to_path_buf(),
            burrow: burrow.to_path_buf(),
            key,
            user,
            sshd_addr,
            serve_addr,
            sshd,
            serve,
            sshd_env: sshd_env.to_vec(),
        })
    }

    /// Another pair of servers, fresh processes with their own keys under `dir/name` (memory
    /// cases must not see what earlier cases left in the servers' heaps).
    pub fn fresh(&self, name: &str) -> Result<Lab> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Lab::start(&dir, &self.burrow, &self.sshd_env)
    }

    /// Another sshd for the same clients (same authorized key) under `dir/name`, with `config`
    /// lines ahead of the usual ones (the first value of a keyword wins in sshd_config).
    pub fn other_sshd(&self, name: &str, config: &[&str]) -> Result<(Proc, SocketAddr)> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let authorized = self.dir.join("authorized_keys");
        start_sshd(&dir, &authorized, config, &self.sshd_env)
    }

    /// The process of `server` (sshd's listener, whose children are its sessions).
    pub fn pid(&self, server: Server) -> u32 {
        match server {
            Server::Sshd => self.sshd.pid(),
            Server::Serve => self.serve.pid(),
        }
    }

    /// The address of `server`.
    pub fn addr(&self, server: Server) -> SocketAddr {
        match server {
            Server::Sshd => self.sshd_addr,
            Server::Serve => self.serve_addr,
        }
    }

    /// A client command to `to` with `cipher` and the forward flags in `forwards` (`-L`, spec,
    /// ...), not started. Both clients get the same options.
    pub fn client(
        &self,
        client: Client,
        to: SocketAddr,
        cipher: &str,
        forwards: &[String],
    ) -> Command {
        let mut cmd = match client {
            Client::OpenSsh => Command::new("ssh"),
            Client::Burrow => {
                let mut c = Command::new(&self.burrow);
                c.arg("ssh");
                c
            }
        };
        cmd.env_remove("SSH_AUTH_SOCK")
            .args(["-F", "/dev/null", "-N", "-p"]);
        cmd.arg(to.port().to_string());
        for o in [
            "BatchMode=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
            "ExitOnForwardFailure=yes",
            "LogLevel=ERROR",
        ] {
            cmd.args(["-o", o]);
        }
        cmd.arg("-o").arg(format!("Ciphers={cipher}"));
        cmd.arg("-i").arg(&self.key);
        cmd.args(forwards);
        cmd.arg(format!("{}@{}", self.user, to.ip()));
        cmd
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released: good enough on a quiet loopback).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().ok();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into())
}

fn keygen(path: &Path) -> Result<()> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .context("running ssh-keygen")?;
    if !status.success() {
        bail!("ssh-keygen failed for {}", path.display());
    }
    Ok(())
}

fn start_sshd(
    dir: &Path,
    authorized: &Path,
    first: &[&str],
    env: &[(String, String)],
) -> Result<(Proc, SocketAddr)> {
    std::fs::create_dir_all("/run/sshd").context("mkdir /run/sshd")?;
    let host_key = dir.join("sshd_host_ed25519");
    keygen(&host_key)?;
    let port = free_port()?;
    let config = dir.join("sshd_config");
    let lines = first.iter().map(|l| l.to_string()).chain([
        format!("Port {port}"),
        "ListenAddress 127.0.0.1".into(),
        format!("HostKey {}", host_key.display()),
        format!("AuthorizedKeysFile {}", authorized.display()),
        "PidFile none".into(),
        "LogLevel ERROR".into(),
        "PermitRootLogin prohibit-password".into(),
        "StrictModes no".into(),
        "UsePAM no".into(),
        "PasswordAuthentication no".into(),
        "KbdInteractiveAuthentication no".into(),
        "AllowTcpForwarding yes".into(),
        "UseDNS no".into(),
        "PrintMotd no".into(),
        // 200 relay sessions are opened in batches; do not drop them as a flood.
        "MaxStartups 300:30:400".into(),
        "Ciphers chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes256-gcm@openssh.com"
            .into(),
    ]);
    let text: String = lines.map(|l| l + "\n").collect();
    std::fs::write(&config, text)?;
    let mut cmd = Command::new(SSHD);
    cmd.args(["-D", "-e", "-f"]).arg(&config);
    // sshd re-executes itself for each connection with the same environment.
    cmd.envs(env.iter().map(|(name, value)| (name, value)));
    let mut proc = Proc::spawn("sshd", &mut cmd, dir)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_banner(&mut proc, addr)?;
    Ok((proc, addr))
}

fn start_serve(dir: &Path, burrow: &Path, authorized: &Path) -> Result<(Proc, SocketAddr)> {
    let port = free_port()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // One key holds every bench session's listener and every idle connection: raise the
    // per-key limits (64 listeners, 1024 channels by default) past what the cases open.
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        // The bench's files are in a temporary directory under /tmp, which strict modes
        // (like sshd's) refuse as a parent of authorized_keys.
        // -L/-D to the bench's own servers on loopback: the relay is default-deny.
        "strict_modes = false\npermit_open = [\"any\"]\n[limits]\nmax_startups = 300\nmax_listeners_per_key = 1000\nmax_channels_per_key = 5000\n",
    )?;
    let mut cmd = Command::new(burrow);
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["-q", "--listen"])
        .arg(addr.to_string())
        .arg("--host-key")
        .arg(dir.join("serve_host_ed25519"))
        .arg("--authorized-keys")
        .arg(authorized)
        .env("XDG_STATE_HOME", dir);
    let mut proc = Proc::spawn("serve", &mut cmd, dir)?;
    wait_banner(&mut proc, addr)?;
    Ok((proc, addr))
}

/// Waits (at most 15 s) until `addr` sends an SSH banner.
fn wait_banner(proc: &mut Proc, addr: SocketAddr) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        proc.check_alive()?;
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut b = [0u8; 8];
            if s.read_exact(&mut b).is_ok() && b.starts_with(b"SSH-2.0") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "{} on {addr} sent no banner:\n{}",
        proc.name,
        proc.log_tail()
    )
}
