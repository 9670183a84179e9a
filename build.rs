//! Records which commit a binary was built from, for `burrow --version` (BURROW_COMMIT).
//!
//! Where it comes from, first found wins:
//! 1. the `BURROW_COMMIT` environment variable, for builders that have neither (a distribution
//!    building from a release tarball);
//! 2. `.cargo_vcs_info.json`, which `cargo package` writes into the crate it uploads, so
//!    `cargo install burrow-tunnel` reports the commit the crate was packaged from;
//! 3. `git rev-parse HEAD` in a checkout;
//! 4. otherwise "unknown commit". A build never fails for want of a commit.
//!
//! Only files that exist are watched: cargo treats a missing rerun-if-changed file as changed,
//! which would rebuild burrow on every `cargo build`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BURROW_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = from_env()
        .or_else(|| from_vcs_info(&dir))
        .or_else(|| from_git(&dir))
        .unwrap_or_else(|| "unknown commit".to_owned());
    println!("cargo:rustc-env=BURROW_COMMIT={commit}");
}

fn from_env() -> Option<String> {
    let commit = std::env::var("BURROW_COMMIT").ok()?;
    let commit = commit.trim();
    (!commit.is_empty()).then(|| commit.to_owned())
}

/// `{"git": {"sha1": "<40 hex>", "dirty": true}, "path_in_vcs": ""}`; read with a string
/// search rather than a JSON parser, which would be a build dependency for one field.
fn from_vcs_info(dir: &Path) -> Option<String> {
    let path = dir.join(".cargo_vcs_info.json");
    let text = std::fs::read_to_string(&path).ok()?;
    println!("cargo:rerun-if-changed={}", path.display());
    let rest = &text[text.find("\"sha1\"")? + "\"sha1\"".len()..];
    let start = rest.find('"')? + 1;
    let hex: String = rest[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    if hex.len() < 12 {
        return None;
    }
    let dirty = if text.contains("\"dirty\": true") || text.contains("\"dirty\":true") {
        "-dirty"
    } else {
        ""
    };
    Some(format!("{}{dirty}", &hex[..12]))
}

fn from_git(dir: &Path) -> Option<String> {
    let commit = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    // Rebuild when HEAD moves: HEAD itself (a branch switch), the branch's ref file (a commit)
    // and packed-refs (after git gc). --git-path resolves them in a worktree too.
    let mut watched = vec![git(dir, &["rev-parse", "--git-path", "HEAD"])?];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(dir, &["rev-parse", "--git-path", &branch]));
    }
    watched.extend(git(dir, &["rev-parse", "--git-path", "packed-refs"]));
    for path in watched {
        let path = dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
