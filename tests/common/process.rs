//! Child processes owned by guards. Output goes to files in the test's dir and to memory (so a test
//! can wait for a line without polling); on drop the child and all its descendants are killed by
//! PID and the child is reaped. Never pkill/killall: only PIDs this guard started (or their
//! descendants, found through /proc) are signalled.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::output::OutputLog;

/// Lines of stderr printed when a guard drops during a panic.
const TAIL_ON_PANIC: usize = 80;

/// A child process that is killed (with its descendants) and reaped when this drops.
pub struct ChildGuard {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    stdin: Option<ChildStdin>,
    stdout: OutputLog,
    stderr: OutputLog,
}

/// Spawns `cmd` with stdin from /dev/null, stdout and stderr captured to `dir/NAME.stdout` and
/// `dir/NAME.stderr` (and memory). Panics if it cannot start.
pub fn spawn_logged(cmd: Command, dir: &Path, name: &str) -> ChildGuard {
    spawn_inner(cmd, dir, name, false)
}

/// Like [`spawn_logged`] but with a piped stdin; take it with [`ChildGuard::take_stdin`].
pub fn spawn_with_stdin(cmd: Command, dir: &Path, name: &str) -> ChildGuard {
    spawn_inner(cmd, dir, name, true)
}

fn spawn_inner(mut cmd: Command, dir: &Path, name: &str, piped_stdin: bool) -> ChildGuard {
    cmd.stdin(if piped_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name} ({:?}): {e}", cmd.get_program()));
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    ChildGuard {
        name: name.to_owned(),
        stdin: child.stdin.take(),
        stdout: OutputLog::start(out, dir.join(format!("{name}.stdout"))),
        stderr: OutputLog::start(err, dir.join(format!("{name}.stderr"))),
        child,
        status: None,
    }
}

impl ChildGuard {
    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn (also the stem of its log files).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The piped stdin, once (only with [`spawn_with_stdin`]).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Its stdout stream.
    pub fn stdout(&self) -> &OutputLog {
        &self.stdout
    }

    /// Its stderr stream.
    pub fn stderr(&self) -> &OutputLog {
        &self.stderr
    }

    /// Stdout so far.
    pub fn stdout_text(&self) -> String {
        self.stdout.text()
    }

    /// Stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    /// Exit status if it has exited (reaps it), without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the child to exit; None if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(1);
        for _ in 0..100_000 {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(backoff.min(left));
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
        self.try_status()
    }

    /// Sends `sig` to the child only (not its descendants); no-op once it has been reaped.
    pub fn signal(&self, sig: Signal) {
        // Safe by PID while unreaped: an exited but unreaped child is a zombie whose PID cannot be
        // reused, and only this guard reaps it (recording `status`).
        if self.status.is_none() {
            let _ = kill(pid_of(self.child.id()), sig);
        }
    }

    /// SIGTERM, then waits up to `timeout` for a graceful exit; None if it did not exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        self.wait_timeout(timeout)
    }

    /// PIDs of the child's live descendants (children, grandchildren, ...), from /proc.
    pub fn descendants(&self) -> Vec<u32> {
        if self.status.is_some() {
            return Vec::new();
        }
        descendants_of(self.child.id())
    }

    /// SIGSTOP the child and all its descendants (a peer that stops answering, sockets still open).
    pub fn freeze(&self) {
        if self.status.is_none() {
            signal_tree(self.child.id(), Signal::SIGSTOP);
        }
    }

    /// SIGCONT the child and all its descendants.
    pub fn thaw(&self) {
        if self.status.is_none() {
            signal_tree(self.child.id(), Signal::SIGCONT);
        }
    }

    /// Kills the child and its descendants (SIGKILL) and reaps the child; returns its status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_status().is_none() {
            kill_tree(self.child.id());
            self.status = self.child.wait().ok();
        }
        self.status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            print_tail(&self.name, "stderr", &self.stderr.text());
        }
    }
}

/// Prints the last lines of a log to stderr (shown by the test runner for a failing test).
pub fn print_tail(name: &str, what: &str, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(TAIL_ON_PANIC);
    eprintln!(
        "----- {name} {what} (last {} of {} lines) -----",
        lines.len() - from,
        lines.len()
    );
    for l in &lines[from..] {
        eprintln!("{l}");
    }
    eprintln!("----- end of {name} {what} -----");
}

fn pid_of(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).expect("pid fits i32"))
}

/// parent PID -> child PIDs, from one scan of /proc.
fn children_map() -> HashMap<u32, Vec<u32>> {
    let mut map: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return map;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parens, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        if state == "Z" || state == "X" {
            continue;
        }
        if let Some(ppid) = f.next().and_then(|p| p.parse().ok()) {
            map.entry(ppid).or_default().push(pid);
        }
    }
    map
}

/// Live descendants of `root` (not `root` itself), parents before children.
pub fn descendants_of(root: u32) -> Vec<u32> {
    let map = children_map();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    // Bounded: a process tree deeper than 64 levels is not something a test starts.
    for _ in 0..64 {
        let next: Vec<u32> = frontier
            .iter()
            .flat_map(|p| map.get(p).cloned().unwrap_or_default())
            .filter(|p| !out.contains(p))
            .collect();
        if next.is_empty() {
            break;
        }
        out.extend(&next);
        frontier = next;
    }
    out
}

/// Sends `sig` to `root` and then to each descendant, top-down.
pub fn signal_tree(root: u32, sig: Signal) {
    let _ = kill(pid_of(root), sig);
    for p in descendants_of(root) {
        let _ = kill(pid_of(p), sig);
    }
}

/// Stops `root` and its descendants (so none can fork while we look), then SIGKILLs them all.
/// The caller reaps `root`; orphaned descendants are reaped by init.
pub fn kill_tree(root: u32) {
    let _ = kill(pid_of(root), Signal::SIGSTOP);
    let mut seen: Vec<u32> = Vec::new();
    // A few rounds catch children forked between the scan and the stop.
    for _ in 0..4 {
        let new: Vec<u32> = descendants_of(root)
            .into_iter()
            .filter(|p| !seen.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        for &p in &new {
            let _ = kill(pid_of(p), Signal::SIGSTOP);
        }
        seen.extend(new);
    }
    let _ = kill(pid_of(root), Signal::SIGKILL);
    for &p in seen.iter().rev() {
        let _ = kill(pid_of(p), Signal::SIGKILL);
    }
}

/// Runs `cmd` to completion within `timeout` (stdin /dev/null), returning (status, stdout, stderr).
/// The child is killed if the deadline passes. Panics if it cannot start.
pub fn run_with_timeout(
    cmd: Command,
    dir: &Path,
    name: &str,
    timeout: Duration,
) -> (Option<ExitStatus>, String, String) {
    let mut g = spawn_logged(cmd, dir, name);
    let status = g.wait_timeout(timeout);
    if status.is_none() {
        g.kill();
    }
    // Output pipes may still be draining after exit: wait (bounded) for EOF on both.
    let rest = Duration::from_secs(2);
    g.stdout.wait_until(rest, |_| None::<()>);
    g.stderr.wait_until(rest, |_| None::<()>);
    let (out, err) = (g.stdout_text(), g.stderr_text());
    drop(g);
    (status, out, err)
}
