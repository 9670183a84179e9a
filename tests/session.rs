//! `burrow ssh` sessions against a real OpenSSH sshd: a login shell on a real terminal (tmux
//! gives the pseudo-terminal: prompt, echo, window resize, escapes, terminal restored), `-t`/`-T`
//! and RequestTTY decisions, SendEnv/SetEnv. Exec without a terminal is in tests/client.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::burrow::burrow_ssh;
use common::*;

const SHORT: Duration = Duration::from_secs(30);

/// A detached tmux server of our own (own socket), one window running `script` under `sh`.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Starts `script` in a 80x24 window. The script's last line keeps the pane alive (bounded)
    /// so its output can be read after the client exits.
    fn start(dir: &Path, script: &str) -> Tmux {
        let socket = dir.join("tmux.sock");
        let path = dir.join("pane.sh");
        std::fs::write(&path, format!("{script}\necho PANE-DONE\nsleep 60\n")).expect("script");
        let t = Tmux { socket };
        let st = t
            .cmd()
            .args(["new-session", "-d", "-s", "s", "-x", "80", "-y", "24"])
            .arg(format!("sh {}", path.display()))
            .status()
            .expect("run tmux");
        assert!(st.success(), "tmux new-session failed");
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    /// Types `text` literally (no key-name lookup).
    fn type_text(&self, text: &str) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "s", "-l", text])
            .status()
            .expect("tmux send-keys");
        assert!(st.success());
    }

    fn enter(&self) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "s", "Enter"])
            .status()
            .expect("tmux send-keys Enter");
        assert!(st.success());
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-J", "-S", "-200", "-t", "s"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `needle`; panics with the screen after `timeout`.
    fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                t0.elapsed() < timeout,
                "screen never showed {needle:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn resize(&self, cols: u16, rows: u16) {
        let st = self
            .cmd()
            .args(["resize-window", "-t", "s", "-x", &cols.to_string()])
            .args(["-y", &rows.to_string()])
            .status()
            .expect("tmux resize-window");
        assert!(st.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Ends only the tmux server on our own socket (and the pane it started).
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// The shell script for a pane: saves the terminal's modes, runs `client`, records its exit
/// status and whether the modes came back unchanged.
fn pane_script(dir: &Path, client: &Command) -> String {
    let mut line = shell_quote(client.get_program().to_string_lossy().as_ref());
    for a in client.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(a.to_string_lossy().as_ref()));
    }
    let d = dir.display();
    format!(
        "TERM=xterm; export TERM\nstty -g > {d}/stty.before\n{line}\necho \"client-exit=$?\"\nstty -g > {d}/stty.after\n\
         cmp -s {d}/stty.before {d}/stty.after && echo TERMINAL-RESTORED || echo TERMINAL-CHANGED"
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn setup() -> (tempfile::TempDir, Keypair, Sshd) {
    let dir = test_dir();
    let key = keygen(dir.path(), "id_ed25519", KeyKind::Ed25519, None);
    let sshd =
        Sshd::start(SshdOptions::with_keys(&[&key]).config("AcceptEnv LC_BURROW_* BURROW_SET_*"));
    (dir, key, sshd)
}

/// A login shell: prompt, a command's output, `stty size` after a resize, `exit` returns
/// the shell's status, and the local terminal's modes are back as they were.
#[test]
fn interactive_shell_on_a_terminal() {
    if !have("tmux") {
        println!("SKIP: tmux not installed");
        return;
    }
    let (dir, key, sshd) = setup();
    let mut client = burrow_ssh(&sshd, Some(&key));
    client.arg(sshd.dest("root"));
    let tmux = Tmux::start(dir.path(), &pane_script(dir.path(), &client));
    // The remote shell answers: typed text is echoed by the remote PTY, the result proves it ran.
    tmux.type_text("echo shell-$((6*7)); echo TERM=$TERM; tty");
    tmux.enter();
    let screen = tmux.wait_for("/dev/pts/", SHORT);
    assert!(screen.contains("shell-42"), "{screen}");
    assert!(screen.contains("TERM=xterm"), "TERM passed:\n{screen}");
    assert!(screen.contains("/dev/pts/"), "remote PTY:\n{screen}");

    tmux.resize(100, 30);
    // Give the window-change request a moment to reach sshd before asking.
    std::thread::sleep(Duration::from_millis(500));
    tmux.type_text("echo size=$(stty size)");
    tmux.enter();
    tmux.wait_for("size=30 100", SHORT);

    tmux.type_text("exit 7");
    tmux.enter();
    let screen = tmux.wait_for("PANE-DONE", SHORT);
    assert!(screen.contains("client-exit=7"), "exit status:\n{screen}");
    assert!(
        screen.contains("Connection to 127.0.0.1 closed."),
        "ssh's closing line:\n{screen}"
    );
    assert!(
        screen.contains("TERMINAL-RESTORED"),
        "raw mode left:\n{screen}"
    );
}

/// `~?` lists the escapes, `~.` disconnects with status 255, and the terminal comes back.
#[test]
fn escape_sequences_help_and_disconnect() {
    if !have("tmux") {
        println!("SKIP: tmux not installed");
        return;
    }
    let (dir, key, sshd) = setup();
    let mut client = burrow_ssh(&sshd, Some(&key));
    client.arg(sshd.dest("root"));
    let tmux = Tmux::start(dir.path(), &pane_script(dir.path(), &client));
    tmux.type_text("echo up-$((1+1))");
    tmux.enter();
    tmux.wait_for("up-2", SHORT);
    tmux.type_text("~?");
    tmux.wait_for("Supported escape sequences:", SHORT);
    // `~~` at the start of a line sends one tilde: the remote line reads `~/ ; echo ...`.
    tmux.type_text("~~/ ; echo done-$((8*8))");
    tmux.enter();
    let screen = tmux.wait_for("done-64", SHORT);
    assert!(screen.contains("~/ ; echo"), "{screen}");
    assert!(
        !screen.contains("~~/"),
        "both tildes reached the server:\n{screen}"
    );
    tmux.type_text("~.");
    let screen = tmux.wait_for("PANE-DONE", SHORT);
    assert!(
        screen.contains("client-exit=255"),
        "~. exits 255:\n{screen}"
    );
    assert!(
        screen.contains("TERMINAL-RESTORED"),
        "raw mode left:\n{screen}"
    );
}

/// With `-e none` the session is transparent: `~.` goes to the server like any text.
#[test]
fn escape_none_passes_tilde_dot_through() {
    if !have("tmux") {
        println!("SKIP: tmux not installed");
        return;
    }
    let (dir, key, sshd) = setup();
    let mut client = burrow_ssh(&sshd, Some(&key));
    client.args(["-e", "none"]).arg(sshd.dest("root"));
    let tmux = Tmux::start(dir.path(), &pane_script(dir.path(), &client));
    tmux.type_text("echo ready-$((2+3))");
    tmux.enter();
    tmux.wait_for("ready-5", SHORT);
    tmux.type_text("~.");
    tmux.type_text(" ; echo still-$((3+4))");
    tmux.enter();
    tmux.wait_for("still-7", SHORT);
    tmux.type_text("exit");
    tmux.enter();
    let screen = tmux.wait_for("PANE-DONE", SHORT);
    assert!(screen.contains("client-exit=0"), "{screen}");
}

fn run_client(cmd: Command, dir: &Path, name: &str) -> (Option<i32>, String, String) {
    let (st, out, err) = run_with_timeout(cmd, dir, name, SHORT);
    (st.and_then(|s| s.code()), out, err)
}

/// ssh(1)'s PTY rules with stdin not a terminal: a command gets none; `-t` says why it cannot
/// have one; `-tt` forces one; RequestTTY=force does too, and `-T` wins over it.
#[test]
fn tty_flags_follow_ssh() {
    let (dir, key, sshd) = setup();
    let case = |flags: &[&str], name: &str| {
        let mut cmd = burrow_ssh(&sshd, Some(&key));
        cmd.args(flags).arg(sshd.dest("root")).arg("tty");
        run_client(cmd, dir.path(), name)
    };
    let (code, out, _) = case(&[], "plain");
    assert_eq!(code, Some(1), "no PTY: tty(1) fails");
    assert!(out.contains("not a tty"), "{out}");

    let (_, out, err) = case(&["-t"], "t");
    assert!(out.contains("not a tty"), "{out}");
    assert!(
        err.contains("Pseudo-terminal will not be allocated because stdin is not a terminal."),
        "{err}"
    );

    let (code, out, err) = case(&["-tt"], "tt");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("/dev/pts/"), "forced PTY: {out}");

    let (_, out, _) = case(&["-o", "RequestTTY=force"], "force");
    assert!(out.contains("/dev/pts/"), "RequestTTY=force: {out}");

    let (_, out, _) = case(&["-T", "-o", "RequestTTY=force"], "T");
    assert!(out.contains("not a tty"), "-T wins: {out}");
}

/// SendEnv sends matching local variables, SetEnv sets its own and wins over SendEnv; the
/// server's AcceptEnv decides what it takes.
#[test]
fn send_env_and_set_env() {
    let (dir, key, sshd) = setup();
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.env("LC_BURROW_A", "from-local")
        .env("LC_BURROW_B", "not-sent")
        .env("BURROW_SET_X", "local-x")
        .args(["-o", "SendEnv=LC_BURROW_* BURROW_SET_X -LC_BURROW_B"])
        .args([
            "-o",
            "SetEnv=BURROW_SET_X=from-setenv BURROW_SET_Y=\"two words\"",
        ])
        .arg(sshd.dest("root"))
        .arg("echo \"a=$LC_BURROW_A b=$LC_BURROW_B x=$BURROW_SET_X y=$BURROW_SET_Y\"");
    let (code, out, err) = run_client(cmd, dir.path(), "env");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "a=from-local b= x=from-setenv y=two words");
}

/// A shell without a terminal (commands on stdin) and forwards beside it, as `ssh -L ... host`
/// with a script piped in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_shell_with_a_forward() {
    let (dir, key, sshd) = setup();
    let echo = echo_server().await;
    let port = free_port();
    let mut cmd = burrow_ssh(&sshd, Some(&key));
    cmd.args(["-L", &format!("{port}:{}", echo.hostport())])
        .arg(sshd.dest("root"));
    let mut child = spawn_with_stdin(cmd, dir.path(), "piped-shell");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(wait_port(addr, SHORT).await, "forward beside the shell");
    transfer_checked(addr, 1 << 20)
        .await
        .expect("through the -L");
    {
        use std::io::Write;
        let mut stdin = child.take_stdin().expect("stdin");
        writeln!(stdin, "echo piped-$((5*5))").expect("write");
        writeln!(stdin, "exit 4").expect("write");
    }
    let status = child.wait_timeout(SHORT).expect("client exits");
    assert_eq!(status.code(), Some(4), "{}", child.stderr_text());
    assert!(child.stdout_text().contains("piped-25"));
    assert!(
        child
            .stderr_text()
            .contains("Pseudo-terminal will not be allocated because stdin is not a terminal."),
        "{}",
        child.stderr_text()
    );
}
