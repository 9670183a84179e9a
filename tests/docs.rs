//! The committed man pages and completions under doc/ are what the current CLI and config
//! parsers generate, and `burrow completions SHELL` prints the committed scripts.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn repo_doc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("doc")
}

/// Every file under `dir/man` and `dir/completions`, by path relative to `dir`.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for sub in ["man", "completions"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = format!("{sub}/{}", entry.file_name().to_string_lossy());
            files.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
    files
}

/// Regenerates everything in memory and compares it with doc/ in both directions: changed,
/// missing and no-longer-generated files all fail, with the command that refreshes them.
#[test]
fn committed_docs_are_what_the_generator_writes() {
    let fresh: BTreeMap<String, Vec<u8>> = ::burrow::docs::generate()
        .unwrap()
        .into_iter()
        .map(|f| (f.path.display().to_string(), f.contents))
        .collect();
    let committed = tree(&repo_doc());
    assert!(fresh.len() >= 12, "generated only {:?}", fresh.keys());
    let mut problems = Vec::new();
    for (name, contents) in &fresh {
        match committed.get(name) {
            None => problems.push(format!("doc/{name} is missing")),
            Some(old) if old != contents => problems.push(format!("doc/{name} is stale")),
            Some(_) => {}
        }
    }
    for name in committed.keys().filter(|n| !fresh.contains_key(*n)) {
        problems.push(format!("doc/{name} is no longer generated (delete it)"));
    }
    assert!(
        problems.is_empty(),
        "{}\nrefresh with: {}",
        problems.join("\n"),
        ::burrow::docs::REFRESH_COMMAND
    );
}

/// What `write_to` (the example's only call) puts on disk is what `generate` returns.
#[test]
fn write_to_writes_the_generated_files() {
    let dir = test_dir();
    let out = dir.path().join("doc");
    let written = ::burrow::docs::write_to(&out).unwrap();
    let generated = ::burrow::docs::generate().unwrap();
    assert_eq!(written.len(), generated.len());
    let on_disk = tree(&out);
    for file in generated {
        let name = file.path.display().to_string();
        assert_eq!(on_disk.get(&name), Some(&file.contents), "{name}");
    }
}

#[test]
fn completions_subcommand_prints_the_committed_scripts() {
    let dir = test_dir();
    for (shell, file) in [
        ("bash", "burrow.bash"),
        ("zsh", "_burrow"),
        ("fish", "burrow.fish"),
    ] {
        let mut cmd = Command::new(burrow_bin());
        cmd.args(["completions", shell]);
        let (st, stdout, stderr) =
            run_with_timeout(cmd, dir.path(), shell, Duration::from_secs(30));
        assert_eq!(st.and_then(|s| s.code()), Some(0), "{shell}: {stderr}");
        let committed = std::fs::read_to_string(repo_doc().join("completions").join(file)).unwrap();
        assert!(
            stdout == committed,
            "burrow completions {shell} differs from doc/completions/{file}"
        );
        assert!(stdout.contains("burrow"), "{shell}: {stdout}");
    }
}

#[test]
fn completions_refuses_an_unknown_shell() {
    let dir = test_dir();
    let mut cmd = Command::new(burrow_bin());
    cmd.args(["completions", "tcsh"]);
    let (st, _, stderr) = run_with_timeout(cmd, dir.path(), "tcsh", Duration::from_secs(30));
    assert_eq!(st.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(
        stderr.contains("tcsh") && stderr.contains("bash"),
        "{stderr}"
    );
}
