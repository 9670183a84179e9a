//! Shared integration-test harness (`mod common;` in each test file).
//!
//! Real peers only: OpenSSH `sshd`/`ssh`/`ssh-agent` started per test by guards that kill them by
//! PID on drop ([`Sshd`], [`Agent`], [`ChildGuard`]), throwaway users ([`TestUser`]), and small
//! tokio TCP services on 127.0.0.1:0 ([`echo_server`], [`source_server`], [`sink_server`],
//! [`endless_writer_server`], [`http_server`]), an echo service and a prober across the test
//! namespaces ([`probe`]), and headless Chromium for rendered pages
//! ([`chromium`]). Rules it keeps: loopback only; ports come from binding port 0 (only sshd,
//! which cannot report its port, gets a [`free_port`] with retry on EADDRINUSE); readiness is
//! proven by connecting, never by sleeping; every loop is bounded in count and time; temp dirs
//! are removed on drop.
//!
//! Each test binary uses only part of this module, hence the allow below.
#![allow(dead_code, unused_imports)]

pub mod burrow;
pub mod chromium;
pub mod data;
pub mod delay;
pub mod keys;
pub mod netns;
pub mod openssh;
pub mod output;
pub mod probe;
pub mod process;
pub mod procstat;
pub mod russh_client;
pub mod services;
pub mod sshd;
pub mod sshd_config;
pub mod user;

use std::path::PathBuf;

pub use data::{
    det_bytes, det_sha256, fetch_checked, fetch_hashed, hex, http_get, http_get_with, push_hashed,
    read_expecting, read_to_end_hashed, read_until_closed, send_stream, sha256_hex,
    transfer_checked, transfer_checked_within, wait_port, DetStream, Transfer, DEFAULT_SEED,
};
pub use keys::{keygen, public_key_line, trust_host, Agent, KeyKind, Keypair};
pub use openssh::{parse_allocated_port, ssh_local_forward, ssh_remote_forward, wait_listening};
pub use output::OutputLog;
pub use process::{run_with_timeout, spawn_logged, spawn_with_stdin, ChildGuard};
pub use services::{
    echo_server, endless_writer_server, http_server, sink_server, source_server, Service, Sink,
    SinkResult, Stats,
};
pub use sshd::{free_port, free_port_for, Sshd, SshdOptions, StartError};
pub use sshd_config::openssh_version;
pub use user::{is_root, TestUser};

/// The burrow binary cargo built for this test run.
pub fn burrow_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_burrow"))
}

/// Prefixes of the temp dirs this harness makes (`<prefix><pid>-<random>`).
const TMP_PREFIXES: [&str; 2] = ["burrow-t-", "burrow-sshd-"];

/// A fresh temp dir (removed on drop) for a test's keys, logs and sockets; short path under /tmp
/// so unix socket paths inside it stay under the 108-byte limit.
pub fn test_dir() -> tempfile::TempDir {
    temp_dir(TMP_PREFIXES[0])
}

/// `/tmp/<prefix><pid>-XXXXXX`, removed on drop. The first call in a process also removes such
/// dirs left by test processes that no longer exist (killed on timeout before their guards ran).
pub(crate) fn temp_dir(prefix: &str) -> tempfile::TempDir {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(remove_stale_temp_dirs);
    tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir_in("/tmp")
        .expect("create temp dir")
}

fn remove_stale_temp_dirs() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = TMP_PREFIXES
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// True if `prog` is on PATH (to skip, with a printed note, tests whose tool is missing).
pub fn have(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}
