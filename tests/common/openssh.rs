//! The OpenSSH client as a reference peer: `ssh -N` with -L / -R forwards, up and ready.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use super::data::wait_port;
use super::keys::Keypair;
use super::process::{spawn_logged, ChildGuard};
use super::sshd::{free_port, Sshd};

/// Bounded retries when a chosen local port turns out to be taken.
const PORT_ATTEMPTS: usize = 6;
/// How long a forward may take to come up.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(20);

/// `ssh -v -N -o ExitOnForwardFailure=yes -L 127.0.0.1:PORT:TARGET` authenticated with `key`.
/// ssh cannot report a -L port it picked, so PORT is a [`free_port`], retried on "Address already
/// in use". Returns once ssh logged that *it* listens there and a connection succeeded.
/// (That probe connection reaches `target` too: count it if you count connections.)
pub async fn ssh_local_forward(
    sshd: &Sshd,
    key: &Keypair,
    dir: &Path,
    target: SocketAddr,
) -> (ChildGuard, SocketAddr) {
    let mut last = String::new();
    for attempt in 0..PORT_ATTEMPTS {
        let port = free_port();
        let mut cmd = sshd.ssh_command_with_key(key);
        cmd.args(["-v", "-N", "-o", "ExitOnForwardFailure=yes", "-L"])
            .arg(format!("127.0.0.1:{port}:{target}"))
            .arg(sshd.dest("root"));
        let mut child = spawn_logged(cmd, dir, &format!("ssh-L-{attempt}"));
        let want = format!("Local forwarding listening on 127.0.0.1 port {port}.");
        let seen = child
            .stderr()
            .wait_until_async(FORWARD_TIMEOUT, move |log| {
                if log.contains(&want) {
                    Some(true)
                } else if log.contains("Address already in use") {
                    Some(false)
                } else {
                    None
                }
            })
            .await;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        match seen {
            Some(true) => {
                wait_listening(&mut child, addr, FORWARD_TIMEOUT)
                    .await
                    .unwrap_or_else(|e| panic!("ssh -L {addr}: {e}"));
                return (child, addr);
            }
            Some(false) => last = child.stderr_text(),
            None => panic!(
                "ssh -L did not come up (status {:?}):\n{}",
                child.try_status(),
                child.stderr_text()
            ),
        }
    }
    panic!("ssh -L: no free port after {PORT_ATTEMPTS} attempts; last stderr:\n{last}");
}

/// `ssh -N -o ExitOnForwardFailure=yes -R 127.0.0.1:0:TARGET`: sshd picks the port and ssh prints
/// `Allocated port N for remote forward to TARGET`; returns (ssh, 127.0.0.1:N) once N accepts.
pub async fn ssh_remote_forward(
    sshd: &Sshd,
    key: &Keypair,
    dir: &Path,
    target: SocketAddr,
) -> (ChildGuard, SocketAddr) {
    let mut cmd = sshd.ssh_command_with_key(key);
    cmd.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("127.0.0.1:0:{target}"))
        .arg(sshd.dest("root"));
    let mut child = spawn_logged(cmd, dir, "ssh-R");
    let line = child
        .stderr()
        .wait_for_line_async("Allocated port", FORWARD_TIMEOUT)
        .await;
    let port = line
        .as_deref()
        .and_then(parse_allocated_port)
        .unwrap_or_else(|| {
            panic!(
                "ssh -R printed no allocated port (status {:?}):\n{}",
                child.try_status(),
                child.stderr_text()
            )
        });
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_listening(&mut child, addr, FORWARD_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("ssh -R {addr}: {e}"));
    (child, addr)
}

/// The N in `Allocated port N for remote forward to HOST:PORT` (OpenSSH's and burrow's wording).
pub fn parse_allocated_port(line: &str) -> Option<u16> {
    let rest = line.split("Allocated port ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Waits until `addr` accepts a connection, failing early (with its stderr) if `child` exits.
pub async fn wait_listening(
    child: &mut ChildGuard,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    for _ in 0..10_000 {
        if let Some(st) = child.try_status() {
            return Err(format!(
                "{} exited ({st}) before {addr} accepted:\n{}",
                child.name(),
                child.stderr_text()
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if wait_port(addr, left.min(Duration::from_millis(200))).await {
            return Ok(());
        }
    }
    Err(format!(
        "{addr} did not accept within {timeout:?}; {} stderr:\n{}",
        child.name(),
        child.stderr_text()
    ))
}
