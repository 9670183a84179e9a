//! Asking the user for passwords, passphrases and confirmations, the way ssh(1) does: on the
//! controlling terminal, or through `SSH_ASKPASS` (honouring `SSH_ASKPASS_REQUIRE`), never on
//! stdin/stdout, which may carry forwarded data (-W).

use std::fs::{File, OpenOptions};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// The controlling terminal, if there is one.
pub fn open_tty() -> Option<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()
}

/// Runs `ask` (a prompt, or work around one) on the blocking pool, one at a time.
///
/// Off the runtime thread because a person may take minutes to answer, and `burrow ssh`'s one
/// runtime thread also carries what is already up meanwhile (a -J jump host's session, a
/// master's forwards). One at a time, as ssh(1) asks: two readers of one terminal would each
/// save and restore its echo setting over the other's, and take each other's answers. A
/// caller that gives up (a timeout) leaves its prompt to finish; the next one waits for it,
/// on the runtime without holding a thread.
pub async fn in_turn<T: Send + 'static>(ask: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    static TURN: std::sync::LazyLock<Arc<tokio::sync::Mutex<()>>> =
        std::sync::LazyLock::new(Arc::default);
    let turn = TURN.clone().lock_owned().await;
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        ask()
    })
    .await
    .ok()
}

/// [`secret`], in turn and off the runtime thread (see [`in_turn`]).
pub async fn secret_off_thread(prompt: String) -> Option<String> {
    in_turn(move || secret(&prompt)).await.flatten()
}

/// [`line()`], in turn and off the runtime thread (see [`in_turn`]).
pub async fn line_off_thread(prompt: String) -> Option<String> {
    in_turn(move || line(&prompt)).await.flatten()
}

/// [`confirm`], in turn and off the runtime thread (see [`in_turn`]); no answer refuses.
pub async fn confirm_off_thread(question: String) -> bool {
    in_turn(move || confirm(&question)).await.unwrap_or(false)
}

/// How SSH_ASKPASS_REQUIRE asks us to behave.
fn askpass_program() -> Option<String> {
    let program = std::env::var("SSH_ASKPASS")
        .ok()
        .filter(|p| !p.is_empty())?;
    match std::env::var("SSH_ASKPASS_REQUIRE").ok().as_deref() {
        Some("never") => None,
        Some("force") | Some("prefer") => Some(program),
        _ => {
            let has_display = std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty());
            (has_display && open_tty().is_none()).then_some(program)
        }
    }
}

/// Reads a secret (password, passphrase) without echo. None when no way to ask exists.
pub fn secret(prompt: &str) -> Option<String> {
    if let Some(program) = askpass_program() {
        return run_askpass(&program, prompt);
    }
    open_tty()?;
    rpassword::prompt_password(prompt).ok()
}

fn run_askpass(program: &str, prompt: &str) -> Option<String> {
    let out = Command::new(program)
        .arg(prompt)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads a line with echo (keyboard-interactive prompts that ask for it).
pub fn line(prompt: &str) -> Option<String> {
    use std::io::{BufRead, Write};
    if let Some(program) = askpass_program() {
        return run_askpass(&program, prompt);
    }
    let mut tty = open_tty()?;
    tty.write_all(prompt.as_bytes()).ok()?;
    tty.flush().ok()?;
    let mut reader = std::io::BufReader::new(tty);
    let mut answer = String::new();
    reader.read_line(&mut answer).ok()?;
    Some(answer.trim_end_matches(['\r', '\n']).to_string())
}

/// Asks a yes/no question the way ssh(1)'s `ask_permission` does (ControlMaster ask/autoask):
/// through `SSH_ASKPASS` when set (with `SSH_ASKPASS_PROMPT=confirm`), else on the terminal.
/// An empty answer or "yes" allows; no way to ask, or anything else, refuses.
pub fn confirm(question: &str) -> bool {
    let answer = match std::env::var("SSH_ASKPASS").ok().filter(|p| !p.is_empty()) {
        Some(program) if std::env::var("SSH_ASKPASS_REQUIRE").ok().as_deref() != Some("never") => {
            Command::new(&program)
                .arg(question)
                .env("SSH_ASKPASS_PROMPT", "confirm")
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
        }
        _ => line(question),
    };
    answer.is_some_and(|a| {
        let a = a.trim_end_matches(['\r', '\n']);
        a.is_empty() || a.eq_ignore_ascii_case("yes")
    })
}
