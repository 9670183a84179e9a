//! The sshd_config a test sshd runs with, and the OpenSSH version it adapts to.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use super::sshd::SshdOptions;

pub(crate) fn render_config(
    opts: &SshdOptions,
    port: u16,
    host_key: &Path,
    authorized_keys: &Path,
) -> Vec<String> {
    let split = opts
        .extra_config
        .iter()
        .position(|l| l.trim_start().to_ascii_lowercase().starts_with("match "))
        .unwrap_or(opts.extra_config.len());
    let (front, matches) = opts.extra_config.split_at(split);
    // LogLevel first: the readiness check reads "Server listening" from the log.
    let mut c = vec!["LogLevel DEBUG".to_owned()];
    c.extend(front.iter().cloned());
    c.push(format!("Port {port}"));
    c.push("ListenAddress 127.0.0.1".into());
    if opts.listen_ipv6 {
        c.push("ListenAddress ::1".into());
    }
    c.push(format!("HostKey {}", host_key.display()));
    c.push(format!("AuthorizedKeysFile {}", authorized_keys.display()));
    c.extend(shared_lines());
    for l in [
        "AllowAgentForwarding yes",
        "MaxAuthTries 10",
        "Subsystem sftp internal-sftp",
    ] {
        c.push(l.into());
    }
    c.extend(matches.iter().cloned());
    c
}

/// The settings every test sshd shares, loopback or in a namespace: root logs in with keys
/// only, no PAM, no DNS, no per-source penalties (tests fail auth on purpose). Callers put their
/// own lines first: sshd keeps the first value it reads for a keyword.
pub(crate) fn shared_lines() -> Vec<String> {
    let mut c: Vec<String> = [
        "PidFile none",
        "PermitRootLogin yes",
        "StrictModes no",
        "UsePAM no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AllowTcpForwarding yes",
        "X11Forwarding no",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        "LoginGraceTime 30",
        "MaxStartups 100:30:200",
    ]
    .iter()
    .map(|l| l.to_string())
    .collect();
    if openssh_version() >= (9, 8) {
        c.push("PerSourcePenalties no".into());
    }
    c
}

pub(crate) fn write_lines(path: &Path, lines: &[String], mode: u32) -> io::Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// (major, minor) of the installed OpenSSH, from `ssh -V`; (0, 0) if unknown.
pub fn openssh_version() -> (u32, u32) {
    static V: OnceLock<(u32, u32)> = OnceLock::new();
    *V.get_or_init(|| {
        let out = Command::new("ssh").arg("-V").output().ok();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        let ver = text.split("OpenSSH_").nth(1).unwrap_or("");
        let mut it = ver
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    })
}
