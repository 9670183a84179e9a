//! A real OpenSSH server per test: own temp dir, host key, authorized_keys and config, on a free
//! loopback port; killed (with its session processes) on drop.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::keys::Keypair;
use super::process::{spawn_logged, ChildGuard};
use super::sshd_config::{render_config, write_lines};

/// The sshd binary (absolute: sshd re-executes itself and refuses a relative path).
pub const SSHD: &str = "/usr/sbin/sshd";
/// How many ports are tried when the chosen one turns out to be taken.
const START_ATTEMPTS: usize = 8;
/// Deadline for one start attempt (bind + banner).
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What a test wants from its sshd.
#[derive(Clone, Debug, Default)]
pub struct SshdOptions {
    /// Lines of the authorized_keys file (public key lines, optionally with OpenSSH options).
    pub authorized_keys: Vec<String>,
    /// sshd_config lines. Placed *before* the harness defaults, and sshd keeps the first value
    /// it reads for a keyword, so these override the defaults (e.g. `PasswordAuthentication yes`,
    /// `GatewayPorts clientspecified`). A `Match` block and everything after it go at the end.
    pub extra_config: Vec<String>,
    /// Also listen on [::1] (same port).
    pub listen_ipv6: bool,
}

impl SshdOptions {
    /// Options authorizing these keys.
    pub fn with_keys(keys: &[&Keypair]) -> SshdOptions {
        SshdOptions {
            authorized_keys: keys.iter().map(|k| k.public_line.clone()).collect(),
            ..SshdOptions::default()
        }
    }

    /// Adds one sshd_config line.
    pub fn config(mut self, line: &str) -> SshdOptions {
        self.extra_config.push(line.to_owned());
        self
    }

    /// Turns on password and keyboard-interactive auth. keyboard-interactive needs PAM
    /// (`UsePAM yes`); plain `password` works without it (sshd checks /etc/shadow itself).
    pub fn password_auth(self) -> SshdOptions {
        self.config("PasswordAuthentication yes")
            .config("KbdInteractiveAuthentication yes")
            .config("UsePAM yes")
    }
}

/// A running sshd. Dropping it kills the listener and every session process (printing the tail of
/// its log if the test is panicking), then removes its dir.
pub struct Sshd {
    /// The port it listens on.
    pub port: u16,
    /// 127.0.0.1:port.
    pub addr: SocketAddr,
    /// [::1]:port when started with `listen_ipv6`.
    pub addr_v6: Option<SocketAddr>,
    /// Its private temp dir (config, keys, logs); mode 0755 so non-root users can read
    /// authorized_keys through it.
    pub dir: PathBuf,
    /// sshd_config path.
    pub config_path: PathBuf,
    /// The authorized_keys file every user is checked against (AuthorizedKeysFile).
    pub authorized_keys: PathBuf,
    /// The host public key line, e.g. `ssh-ed25519 AAAA...`.
    pub host_key_line: String,
    /// The host private key file.
    pub host_key: PathBuf,
    /// A known_hosts file with `[127.0.0.1]:PORT <hostkey>` (and `[::1]:PORT` with IPv6).
    pub known_hosts: PathBuf,
    child: ChildGuard,
    _tmp: tempfile::TempDir,
}

/// Why one start attempt failed.
#[derive(Debug)]
pub enum StartError {
    /// The port was taken: try another.
    AddrInUse,
    /// Anything else, with sshd's log.
    Failed(String),
}

impl Sshd {
    /// Starts sshd on a free port, retrying on EADDRINUSE a bounded number of times; returns once
    /// it has bound and a connection got the `SSH-2.0-` banner. Panics (printing sshd's log) on
    /// failure.
    pub fn start(opts: SshdOptions) -> Sshd {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Sshd::try_start_at(&opts, free_port_for(opts.listen_ipv6)) {
                Ok(s) => return s,
                Err(StartError::AddrInUse) => last = "address in use".into(),
                Err(StartError::Failed(log)) => panic!("sshd did not start:\n{log}"),
            }
        }
        panic!("sshd: no free port after {START_ATTEMPTS} attempts ({last})");
    }

    /// One start attempt on a given port (exposed for tests of the harness itself).
    pub fn try_start_at(opts: &SshdOptions, port: u16) -> Result<Sshd, StartError> {
        let failed = |what: &str, e: io::Error| StartError::Failed(format!("{what}: {e}"));
        std::fs::create_dir_all("/run/sshd").map_err(|e| failed("mkdir /run/sshd", e))?;
        let tmp = super::temp_dir("burrow-sshd-");
        let dir = tmp.path().to_path_buf();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| failed("chmod", e))?;
        let host_key = dir.join("host_ed25519");
        let host_key_line = make_host_key(&dir, &host_key).map_err(StartError::Failed)?;
        let authorized_keys = dir.join("authorized_keys");
        write_lines(&authorized_keys, &opts.authorized_keys, 0o644)
            .map_err(|e| failed("authorized_keys", e))?;

        let mut known = vec![format!("[127.0.0.1]:{port} {host_key_line}")];
        if opts.listen_ipv6 {
            known.push(format!("[::1]:{port} {host_key_line}"));
        }
        let known_hosts = dir.join("known_hosts");
        write_lines(&known_hosts, &known, 0o644).map_err(|e| failed("known_hosts", e))?;

        let config_path = dir.join("sshd_config");
        let config = render_config(opts, port, &host_key, &authorized_keys);
        write_lines(&config_path, &config, 0o644).map_err(|e| failed("sshd_config", e))?;

        let mut cmd = Command::new(SSHD);
        cmd.arg("-D").arg("-e").arg("-f").arg(&config_path);
        let mut child = spawn_logged(cmd, &dir, "sshd");
        wait_ready(&mut child, port, opts.listen_ipv6)?;
        Ok(Sshd {
            port,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            addr_v6: opts
                .listen_ipv6
                .then_some(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)),
            dir,
            config_path,
            authorized_keys,
            host_key_line,
            host_key,
            known_hosts,
            child,
            _tmp: tmp,
        })
    }

    /// sshd's log so far (stderr of the listener and of every session process; LogLevel DEBUG).
    pub fn log(&self) -> String {
        self.child.stderr_text()
    }

    /// Waits (bounded) for a log line containing `needle`; returns the line.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.child.stderr().wait_for_line(needle, timeout)
    }

    /// The listener's PID.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// PIDs of sshd's per-connection processes (and whatever they started).
    pub fn session_pids(&self) -> Vec<u32> {
        self.child.descendants()
    }

    /// SIGSTOP the listener and every session process: the server stops answering but its sockets
    /// stay open (a peer that vanished without a FIN). Undo with [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.child.freeze();
    }

    /// SIGCONT everything [`freeze`](Self::freeze) stopped (and any session started since).
    pub fn thaw(&self) {
        self.child.thaw();
    }

    /// Appends a line to authorized_keys (sshd rereads it on every authentication).
    pub fn add_authorized_key(&self, line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.authorized_keys)
            .expect("open authorized_keys");
        writeln!(f, "{line}").expect("append authorized_keys");
    }

    /// `user@127.0.0.1`.
    pub fn dest(&self, user: &str) -> String {
        format!("{user}@127.0.0.1")
    }

    /// An `ssh` command for this server with no identity chosen yet: `-F /dev/null`, BatchMode,
    /// this server's known_hosts with StrictHostKeyChecking=yes, `-p PORT`, no agent.
    /// Add options, then the destination ([`dest`](Self::dest)) and any remote command.
    pub fn ssh_command(&self) -> Command {
        let mut cmd = Command::new("ssh");
        self.ssh_args(&mut cmd, true);
        cmd
    }

    /// `sshpass -e ssh ...` logging in with `password` by `method` (`password` or
    /// `keyboard-interactive`); no BatchMode, no public keys. Needs the sshpass program.
    pub fn ssh_password_command(&self, password: &str, method: &str) -> Command {
        let mut cmd = Command::new("sshpass");
        cmd.env("SSHPASS", password).arg("-e").arg("ssh");
        self.ssh_args(&mut cmd, false);
        cmd.arg("-o")
            .arg(format!("PreferredAuthentications={method}"));
        cmd.arg("-o")
            .arg("PubkeyAuthentication=no")
            .arg("-o")
            .arg("NumberOfPasswordPrompts=1");
        cmd
    }

    fn ssh_args(&self, cmd: &mut Command, batch_mode: bool) {
        // ssh keeps the first value given for an option, so BatchMode is decided here, once.
        cmd.env_remove("SSH_AUTH_SOCK").arg("-F").arg("/dev/null");
        cmd.arg("-o").arg(format!(
            "BatchMode={}",
            if batch_mode { "yes" } else { "no" }
        ));
        for o in self.client_options() {
            cmd.arg("-o").arg(o);
        }
        cmd.arg("-p").arg(self.port.to_string());
    }

    /// [`ssh_command`](Self::ssh_command) authenticating with `key` only (`-i`, IdentitiesOnly).
    pub fn ssh_command_with_key(&self, key: &Keypair) -> Command {
        let mut cmd = self.ssh_command();
        cmd.arg("-i")
            .arg(&key.private)
            .arg("-o")
            .arg("IdentitiesOnly=yes");
        cmd
    }

    /// The `-o` values [`ssh_command`](Self::ssh_command) uses besides BatchMode, for driving
    /// other clients (burrow) the same way.
    pub fn client_options(&self) -> Vec<String> {
        vec![
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".into(),
            "StrictHostKeyChecking=yes".into(),
            "ConnectTimeout=10".into(),
        ]
    }
}

/// A port that was free a moment ago on 127.0.0.1 (and on ::1 with `ipv6`). Only for programs that
/// cannot bind port 0 and report it (sshd): anything else takes a listener bound to port 0. The
/// port can be taken before it is used, so callers retry on EADDRINUSE.
pub fn free_port_for(ipv6: bool) -> u16 {
    for _ in 0..32 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if !ipv6 || TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

/// [`free_port_for`] on 127.0.0.1 only. Same caveat: only where a program cannot report its port.
pub fn free_port() -> u16 {
    free_port_for(false)
}

fn make_host_key(dir: &Path, host_key: &Path) -> Result<String, String> {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "burrow-test-host",
        "-f",
    ])
    .arg(host_key);
    let (st, _, err) =
        super::process::run_with_timeout(cmd, dir, "ssh-keygen-host", Duration::from_secs(30));
    if !st.is_some_and(|s| s.success()) {
        return Err(format!("host key generation failed: {err}"));
    }
    let line =
        std::fs::read_to_string(host_key.with_extension("pub")).map_err(|e| e.to_string())?;
    // known_hosts wants "type base64" (the comment is harmless but drop it for a clean line).
    Ok(line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

fn wait_ready(child: &mut ChildGuard, port: u16, ipv6: bool) -> Result<(), StartError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let want_v4 = format!("Server listening on 127.0.0.1 port {port}.");
    let want_v6 = format!("Server listening on ::1 port {port}.");
    // Event-driven: wakes when sshd writes to its log or exits (EOF).
    let outcome = child.stderr().wait_until(START_TIMEOUT, |log| {
        if log.contains("Address already in use") {
            Some(Err(StartError::AddrInUse))
        } else if log.contains(&want_v4) && (!ipv6 || log.contains(&want_v6)) {
            Some(Ok(()))
        } else {
            None
        }
    });
    match outcome {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(e),
        None => {
            let status = child.try_status();
            return Err(StartError::Failed(format!(
                "sshd not listening on port {port} (exit status {status:?}); log:\n{}",
                child.stderr_text()
            )));
        }
    }
    let mut addrs = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))];
    if ipv6 {
        addrs.push(SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
    }
    for a in addrs {
        read_banner(a, deadline).map_err(|e| {
            StartError::Failed(format!(
                "no SSH banner from {a}: {e}; log:\n{}",
                child.stderr_text()
            ))
        })?;
    }
    Ok(())
}

/// Connects and reads the first line; Ok if it starts with "SSH-2.0-".
pub fn read_banner(addr: SocketAddr, deadline: Instant) -> io::Result<String> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let mut s = TcpStream::connect_timeout(&addr, left)?;
    s.set_read_timeout(Some(left))?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 256 && !line.ends_with(b"\n") {
        if s.read(&mut b)? == 0 {
            break;
        }
        line.push(b[0]);
    }
    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
    if text.starts_with("SSH-2.0-") {
        Ok(text)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("banner {text:?}"),
        ))
    }
}
