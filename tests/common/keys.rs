//! Key pairs made with ssh-keygen, and an ssh-agent owned by a guard.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{run_with_timeout, spawn_logged, ChildGuard};

/// Key algorithms ssh-keygen is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ssh-ed25519.
    Ed25519,
    /// ecdsa-sha2-nistp256.
    Ecdsa,
    /// ssh-rsa (2048 bits, to keep generation fast; signatures are rsa-sha2-256/512).
    Rsa,
}

impl KeyKind {
    /// All kinds, for tests that loop over them.
    pub const ALL: [KeyKind; 3] = [KeyKind::Ed25519, KeyKind::Ecdsa, KeyKind::Rsa];

    fn keygen_args(self) -> &'static [&'static str] {
        match self {
            KeyKind::Ed25519 => &["-t", "ed25519"],
            KeyKind::Ecdsa => &["-t", "ecdsa", "-b", "256"],
            KeyKind::Rsa => &["-t", "rsa", "-b", "2048"],
        }
    }
}

/// A key pair on disk.
#[derive(Clone, Debug)]
pub struct Keypair {
    /// Private key file (OpenSSH format, mode 0600).
    pub private: PathBuf,
    /// Public key file (`private` + ".pub").
    pub public: PathBuf,
    /// The public key line, e.g. `ssh-ed25519 AAAA... name` (trimmed), ready for authorized_keys.
    pub public_line: String,
    /// Its algorithm.
    pub kind: KeyKind,
    /// The passphrase it is encrypted with, if any.
    pub passphrase: Option<String>,
}

impl Keypair {
    /// The SHA256 fingerprint as ssh-keygen prints it (`SHA256:...`).
    pub fn fingerprint(&self) -> String {
        let mut cmd = Command::new("ssh-keygen");
        cmd.arg("-l")
            .arg("-E")
            .arg("sha256")
            .arg("-f")
            .arg(&self.public);
        let dir = self.public.parent().unwrap_or(Path::new("/tmp"));
        let (st, out, err) = run_with_timeout(cmd, dir, "ssh-keygen-l", Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "ssh-keygen -l failed: {err}"
        );
        out.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("unexpected ssh-keygen -l output: {out}"))
            .to_owned()
    }
}

/// The public key line of a private key file (`ssh-keygen -y`), e.g. for a host key that
/// `burrow serve` generated. Panics, naming the file, when it is unreadable.
pub fn public_key_line(private: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(private)
        .output()
        .expect("ssh-keygen -y");
    assert!(
        out.status.success(),
        "{}: key unreadable: {}",
        private.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Appends `host` with the key of `public_line` (type and base64; a comment is left out) to the
/// `known_hosts` file; `host` is `name` or `[name]:port`.
pub fn trust_host(known_hosts: &Path, host: &str, public_line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(known_hosts)
        .expect("open known_hosts");
    let key: Vec<&str> = public_line.split_whitespace().take(2).collect();
    writeln!(f, "{host} {}", key.join(" ")).expect("write known_hosts");
}

/// Generates `dir/name` (+ `.pub`) with ssh-keygen; comment `name`. Panics on failure.
pub fn keygen(dir: &Path, name: &str, kind: KeyKind, passphrase: Option<&str>) -> Keypair {
    let private = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.arg("-q")
        .args(kind.keygen_args())
        .arg("-N")
        .arg(passphrase.unwrap_or(""))
        .arg("-C")
        .arg(name)
        .arg("-f")
        .arg(&private);
    let (st, _, err) = run_with_timeout(
        cmd,
        dir,
        &format!("ssh-keygen-{name}"),
        Duration::from_secs(30),
    );
    assert!(
        st.is_some_and(|s| s.success()),
        "ssh-keygen {name} failed ({st:?}): {err}"
    );
    let public = dir.join(format!("{name}.pub"));
    let public_line = std::fs::read_to_string(&public)
        .unwrap_or_else(|e| panic!("read {}: {e}", public.display()))
        .trim()
        .to_owned();
    Keypair {
        private,
        public,
        public_line,
        kind,
        passphrase: passphrase.map(str::to_owned),
    }
}

/// An `ssh-agent -D -a SOCK`, killed on drop.
pub struct Agent {
    /// The agent socket (value for SSH_AUTH_SOCK).
    pub sock: PathBuf,
    dir: PathBuf,
    child: ChildGuard,
}

impl Agent {
    /// Starts an agent with its socket in `dir` (keep `dir` short: unix socket paths max ~107
    /// bytes); returns once the socket accepts connections.
    pub fn start(dir: &Path) -> Agent {
        let sock = dir.join("agent.sock");
        let mut cmd = Command::new("ssh-agent");
        cmd.arg("-D").arg("-a").arg(&sock);
        let child = spawn_logged(cmd, dir, "ssh-agent");
        // ssh-agent prints SSH_AUTH_SOCK=... after bind+listen; then confirm by connecting.
        let printed = child
            .stdout()
            .wait_for_line("SSH_AUTH_SOCK", Duration::from_secs(10));
        assert!(
            printed.is_some(),
            "ssh-agent did not start: {}",
            child.stderr_text()
        );
        assert!(
            std::os::unix::net::UnixStream::connect(&sock).is_ok(),
            "ssh-agent socket {} refuses connections",
            sock.display()
        );
        Agent {
            sock,
            dir: dir.to_owned(),
            child,
        }
    }

    /// Sets SSH_AUTH_SOCK on `cmd` to this agent.
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("SSH_AUTH_SOCK", &self.sock);
    }

    /// `ssh-add` the key (its passphrase, if any, is fed through SSH_ASKPASS). Panics on failure.
    pub fn add(&self, key: &Keypair) {
        let mut cmd = Command::new("ssh-add");
        cmd.arg(&key.private);
        self.env(&mut cmd);
        if let Some(pass) = &key.passphrase {
            let askpass = self.write_askpass(pass);
            cmd.env("SSH_ASKPASS", askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0");
        }
        // Retried: a just-written askpass script can fail to exec (ETXTBSY) while another thread of
        // this test process forks; that is the only failure a retry can cure.
        let mut last = String::new();
        for attempt in 0..3 {
            let mut c = Command::new(cmd.get_program());
            c.args(cmd.get_args());
            for (k, v) in cmd.get_envs() {
                if let Some(v) = v {
                    c.env(k, v);
                }
            }
            let name = format!("ssh-add-{attempt}");
            let (st, _, err) = run_with_timeout(c, &self.dir, &name, Duration::from_secs(20));
            if st.is_some_and(|s| s.success()) {
                return;
            }
            last = err;
        }
        panic!("ssh-add {} failed: {last}", key.private.display());
    }

    /// `ssh-add -l` output (one line per key), or "" when the agent holds none.
    pub fn list(&self) -> String {
        let mut cmd = Command::new("ssh-add");
        cmd.arg("-l");
        self.env(&mut cmd);
        let (_, out, _) = run_with_timeout(cmd, &self.dir, "ssh-add-l", Duration::from_secs(20));
        if out.contains("no identities") {
            String::new()
        } else {
            out
        }
    }

    /// The agent process's PID.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn write_askpass(&self, pass: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let pass_file = self.dir.join("askpass.secret");
        std::fs::write(&pass_file, format!("{pass}\n")).expect("write askpass secret");
        let script = self.dir.join("askpass.sh");
        let body = format!("#!/bin/sh\ncat '{}'\n", pass_file.display());
        std::fs::write(&script, body).expect("write askpass script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))
            .expect("chmod askpass");
        script
    }
}
