//! `burrow demo` (the README's first command) really works end to end and cleans up after itself.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn demo_runs_every_step_and_leaves_nothing_behind() {
    let dir = test_dir();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = std::process::Command::new(burrow_bin());
    cmd.arg("demo").env("TMPDIR", &tmp);
    let (st, out, err) = run_with_timeout(cmd, dir.path(), "demo", Duration::from_secs(110));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "demo failed:\n{out}\n{err}"
    );
    for step in [
        "[A] inside services",
        "[B] relay",
        "[B] gateway ports",
        "[C] GET",
        "[C] sent",
        "All steps worked",
        "burrow serve --listen",
    ] {
        assert!(out.contains(step), "missing step {step:?} in:\n{out}");
    }
    assert!(out.contains("Hello from A"), "{out}");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "demo left files behind: {left:?}");
}
