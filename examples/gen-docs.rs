//! Writes burrow's man pages and shell completions (see `burrow::docs`) into a directory, by
//! default `doc/`: `cargo run --example gen-docs -- doc` from the repository root after
//! changing a flag, a help text or a config key. tests/docs.rs fails until it has been run.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("doc"), PathBuf::from);
    let written = burrow::docs::write_to(&dir)
        .with_context(|| format!("generating the docs into {}", dir.display()))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
