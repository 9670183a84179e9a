//! Asking the user for passwords, passphrases and confirmations, the way ssh(1) does: on the
//! controlling terminal, or through `SSH_ASKPASS` (honouring `SSH_ASKPASS_REQUIRE`), never on
//! stdin/stdout, which may carry forwarded data (-W).

use std::fs::{File, OpenOptions};
use std::process::{Command, Stdio};

/// The controlling terminal, if there is one.
pub fn open_tty() -> Option<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()
}

/// The prompts below, waited for on the blocking pool: a person may take minutes to answer,
/// and `burrow ssh`'s one runtime thread also carries what is already up meanwhile (a -J jump
/// host's session, a master's forwards).
pub async fn secret_off_thread(prompt: String) -> Option<String> {
    tokio::task::spawn_blocking(move || secret(&prompt))
        .await
        .ok()
        .flatten()
}

/// [`line`] on the blocking pool (see [`secret_off_thread`]).
pub async fn line_off_thread(prompt: String) -> Option<String> {
    tokio::task::spawn_blocking(move || line(&prompt))
        .await
        .ok()
        .flatten()
}

/// [`confirm`] on the blocking pool (see [`secret_off_thread`]); no answer refuses.
pub async fn confirm_off_thread(question: String) -> bool {
    tokio::task::spawn_blocking(move || confirm(&question))
        .await
        .unwrap_or(false)
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
