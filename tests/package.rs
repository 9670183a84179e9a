//! What `cargo package` would upload (Cargo.toml's `include`), checked against the repository:
//! everything a build from the crate needs (every file under src/, which include_str!s the
//! status page; build.rs; the example configs the man pages include), what users read (man
//! pages, completions, units, licences, README, CHANGELOG), and nothing that only the
//! repository needs (target/, fuzz corpus, tests, vendored russh, scripts).
//!
//! `cargo package --list` only lists; it neither builds nor needs the network.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn package_list() -> BTreeSet<String> {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let out = Command::new(cargo)
        .args(["package", "--list", "--allow-dirty", "--offline"])
        .current_dir(root())
        .output()
        .expect("run cargo package --list");
    assert!(
        out.status.success(),
        "cargo package --list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("file list is UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Files under `dir` (relative to the repository), as `/`-separated relative paths.
fn files_under(dir: &str) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).expect("under base");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &root().join(dir), &mut out);
    out.sort();
    out
}

#[test]
fn package_holds_what_a_build_and_a_user_need() {
    let list = package_list();
    let mut missing = Vec::new();
    let mut wanted: Vec<String> = [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "README.md",
        "CHANGELOG.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "examples/serve.toml",
        "examples/tunnels.toml",
        "packaging/etc/authorized_keys",
        "packaging/systemd/burrow-serve.service",
        "packaging/systemd/burrow-up.service",
        "packaging/systemd/burrow-up@.service",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Every source file, including the status page's HTML/JS/CSS that include_str! reads.
    wanted.extend(files_under("src"));
    wanted.extend(files_under("doc/man"));
    wanted.extend(files_under("doc/completions"));
    for file in &wanted {
        if !list.contains(file) {
            missing.push(file.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "cargo package leaves out {missing:?} (Cargo.toml include)"
    );
    assert!(
        files_under("doc/man").len() >= 9,
        "expected the 9 man pages in doc/man"
    );
}

#[test]
fn package_leaves_out_what_only_the_repository_needs() {
    let list = package_list();
    let unwanted: Vec<&String> = list
        .iter()
        .filter(|f| {
            [
                "target/", "fuzz/", "tests/", "vendor/", "bench/", "scripts/", ".ci/", ".config/",
            ]
            .iter()
            .any(|dir| f.starts_with(dir))
                || f.contains("corpus")
                || f.ends_with(".deb")
                || f.ends_with(".png")
        })
        .collect();
    assert!(
        unwanted.is_empty(),
        "cargo package would upload {unwanted:?}"
    );
}
