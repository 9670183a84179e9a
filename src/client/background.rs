//! `-f`: go to the background only once the session is authenticated and every forward is up, so
//! a script can use the ports as soon as `burrow ssh -f` returns.
//!
//! A tokio runtime cannot safely survive fork(2), so the foreground process re-executes itself
//! with a pipe; the child does all the work (including any password prompt on the terminal),
//! writes one byte when ready and detaches. The parent exits 0 on that byte, or with the child's
//! status if the child ended first.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

const READY_FD_ENV: &str = "BURROW_BACKGROUND_READY_FD";
/// Set in the re-executed child that runs a ControlPersist master.
const PERSIST_ENV: &str = "BURROW_CONTROL_PERSIST_MASTER";
const READY_BYTE: &[u8] = b"R";

/// The child's way to tell the waiting parent that it is ready.
#[derive(Debug, Default)]
pub struct Ready(Option<File>);

impl Ready {
    /// Nothing waits (no -f).
    pub fn none() -> Self {
        Self(None)
    }

    /// Tells the parent we are ready, then detaches from the terminal: new session, stdio on
    /// /dev/null. Does nothing without -f.
    pub fn signal(&mut self) {
        let Some(mut pipe) = self.0.take() else {
            return;
        };
        let _ = pipe.write_all(READY_BYTE);
        drop(pipe);
        let _ = nix::unistd::setsid();
        if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
            for fd in 0..=2 {
                let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
            }
        }
    }
}

/// What `main` should do after [`start`].
#[derive(Debug)]
pub enum Role {
    /// Run normally; call [`Ready::signal`] when the forwards are up.
    Run(Ready),
    /// We are the waiting parent: exit with this status.
    Exit(u8),
}

/// Sets up `-f`. Must run before the async runtime starts.
pub fn start(background: bool) -> Role {
    if let Ok(fd) = std::env::var(READY_FD_ENV) {
        return Role::Run(Ready(child_pipe(&fd)));
    }
    if !background {
        return Role::Run(Ready::none());
    }
    match spawn_and_wait() {
        Ok(code) => Role::Exit(code),
        Err(e) => {
            eprintln!("burrow: cannot go to the background: {e}");
            Role::Exit(255)
        }
    }
}

/// Opens the inherited pipe through /proc (no unsafe fd adoption) and closes the inherited number.
fn child_pipe(fd: &str) -> Option<File> {
    let n: i32 = fd.parse().ok()?;
    let file = OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{n}"))
        .ok();
    let _ = nix::unistd::close(n);
    file
}

/// True in the background child started by [`spawn_persistent_master`].
pub fn is_persistent_master() -> bool {
    std::env::var_os(PERSIST_ENV).is_some()
}

/// ControlPersist: starts this command again in the background as the connection-sharing
/// master and waits until it is ready (connected, forwards up, control socket listening).
/// `Ok(None)` when it is; `Ok(Some(status))` when it ended first.
pub fn spawn_persistent_master() -> std::io::Result<Option<u8>> {
    spawn_child(&[(PERSIST_ENV, "1")])
}

fn spawn_and_wait() -> std::io::Result<u8> {
    Ok(spawn_child(&[])?.unwrap_or(0))
}

/// Re-executes this command with a ready pipe (and `env`); None when the child signalled
/// ready, else its exit status.
fn spawn_child(env: &[(&str, &str)]) -> std::io::Result<Option<u8>> {
    let (read_end, write_end): (OwnedFd, OwnedFd) = nix::unistd::pipe()?;
    // The child must inherit the write end; the read end stays here.
    fcntl(write_end.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
    fcntl(read_end.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(READY_FD_ENV, write_end.as_raw_fd().to_string())
        .envs(env.iter().copied())
        .spawn()?;
    drop(write_end);
    let mut signal = Vec::new();
    File::from(read_end).read_to_end(&mut signal)?;
    if signal.starts_with(READY_BYTE) {
        return Ok(None);
    }
    let status = child.wait()?;
    Ok(Some(status.code().map(|c| c as u8).unwrap_or(255)))
}
