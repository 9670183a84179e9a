//! The fuzz targets' checks (fuzz/src/lib.rs) over the committed corpus and every input that once
//! crashed or hung a target (fuzz/regressions/<target>/), as ordinary tests: a parser fix that
//! regresses fails here without a fuzzer. `scripts/fuzz` explores further.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Files under fuzz/<dir>/<target>/ (none if the directory does not exist).
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        files.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

/// Runs `check` on every input of `target`; fails naming each input that panicked.
fn run(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no corpus for fuzz target {target}");
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("read corpus file");
            catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: inputs failing: {failed:#?}");
    println!("{target}: {} inputs pass", files.len());
}

#[test]
fn spec_inputs() {
    run("spec", checks::spec);
}

#[test]
fn socks_inputs() {
    run("socks", checks::socks);
}

#[test]
fn authorized_keys_inputs() {
    run("authorized_keys", checks::authorized_keys);
}

#[test]
fn ssh_config_inputs() {
    run("ssh_config", checks::ssh_config);
}

#[test]
fn tunnels_inputs() {
    run("tunnels", checks::tunnels);
}

#[test]
fn serve_config_inputs() {
    run("serve_config", checks::serve_config);
}
