//! Throwaway local users with a password (needs root): useradd + chpasswd, userdel -r on drop.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prefix of every user this harness creates; followed by `<pid>x<n>`.
const PREFIX: &str = "burrowt";

/// A local user that exists while this value lives.
#[derive(Debug)]
pub struct TestUser {
    /// Login name, unique per test process and call: `burrowt<pid>x<n>`.
    pub name: String,
    /// Its password.
    pub password: String,
    /// Its home directory (created).
    pub home: PathBuf,
    /// Its uid.
    pub uid: u32,
}

/// True when running as root (users can be created).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

impl TestUser {
    /// Creates the user (home dir, /bin/sh shell, a random password). Panics unless root.
    pub fn create() -> TestUser {
        static N: AtomicU32 = AtomicU32::new(0);
        assert!(is_root(), "TestUser needs root (useradd)");
        remove_stale_users();
        let name = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let password = format!(
            "Pw-{:x}-{}",
            nanos ^ (u128::from(std::process::id()) << 64),
            name.len()
        );
        let home = PathBuf::from(format!("/home/{name}"));
        let out = retry_locked(|| {
            Command::new("useradd")
                .args(["-m", "-s", "/bin/sh", "-d"])
                .arg(&home)
                .arg(&name)
                .output()
        });
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Constructed now so that a failure below still removes the user.
        let uid = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
            .unwrap_or(0);
        let user = TestUser {
            name,
            password,
            home,
            uid,
        };
        let line = format!("{}:{}\n", user.name, user.password);
        let out = retry_locked(|| {
            let mut child = Command::new("chpasswd")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(line.as_bytes())?;
            child.wait_with_output()
        });
        assert!(
            out.status.success(),
            "chpasswd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        user
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        delete_user(&self.name);
    }
}

fn delete_user(name: &str) {
    // -f: even if a session process of the user is still exiting.
    let out = retry_locked(|| Command::new("userdel").args(["-r", "-f", name]).output());
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !err.contains("does not exist") {
        eprintln!("userdel {name} failed: {err}");
    }
}

/// Runs a shadow-utils command, retrying (bounded) while another process holds /etc/passwd's lock
/// (parallel tests create users at the same time).
fn retry_locked(mut f: impl FnMut() -> std::io::Result<Output>) -> Output {
    let mut backoff = Duration::from_millis(20);
    for attempt in 0..30 {
        let out = f().expect("run shadow-utils command");
        let err = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
        let locked = err.contains("lock") || err.contains("try again");
        if out.status.success() || !locked || attempt == 29 {
            return out;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
    unreachable!("loop returns on its last attempt")
}

/// Deletes users left by test processes that died without dropping them (e.g. SIGKILL on timeout).
fn remove_stale_users() {
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else {
        return;
    };
    for line in passwd.lines() {
        let name = line.split(':').next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once('x'))
            .and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete_user(name);
        }
    }
}
