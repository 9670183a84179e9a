//! Man pages and shell completions, generated from the clap definitions in [`crate::cli`] and
//! from the config parsers' own defaults, so the documentation cannot drift from the program.
//!
//! The output is committed under `doc/` (the .deb packs it from there, and a source checkout
//! has the pages without building); `tests/docs.rs` regenerates it and fails on any difference,
//! naming [`REFRESH_COMMAND`]. One generator: clap_mangen for the section 1 pages and its `roff`
//! for the section 5 pages. It is run by `examples/gen-docs.rs` rather than a hidden
//! subcommand, so the installed binary (and the completions, which list hidden subcommands in
//! zsh) carry nothing meant only for maintainers.

pub mod completions;
#[cfg(test)]
pub(crate) mod fields;
mod format;
mod man;
mod serve_page;
mod tunnels_page;

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;

/// What a maintainer runs, from the repository root, after changing the CLI or a config format.
pub const REFRESH_COMMAND: &str = "cargo run --example gen-docs -- doc";

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocFile {
    /// Path relative to the output directory, e.g. `man/burrow-ssh.1`.
    pub path: PathBuf,
    /// The file's bytes.
    pub contents: Vec<u8>,
}

/// Why the documentation could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    /// Rendering a page failed (clap_mangen writes through `io::Write`).
    #[error("cannot render {page}: {source}")]
    Render {
        /// The page or script.
        page: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The command tree of `burrow`, as clap derives it from [`crate::cli`], with the plain
/// version: the committed pages must not change with every commit, as `--version`'s
/// [`crate::LONG_VERSION`] does.
pub fn command() -> clap::Command {
    Cli::command().version(env!("CARGO_PKG_VERSION"))
}

/// Every generated file: man pages (sections 1 and 5) and completions for bash, zsh and fish.
pub fn generate() -> Result<Vec<DocFile>, DocsError> {
    let mut files = man::pages(command())?;
    files.push(format::render(&tunnels_page::page())?);
    files.push(format::render(&serve_page::page())?);
    for shell in completions::SHELLS {
        files.push(DocFile {
            path: Path::new("completions").join(completions::file_name(shell)),
            contents: completions::script(shell),
        });
    }
    Ok(files)
}

/// Writes [`generate`]'s files under `dir`, creating `dir/man` and `dir/completions`; returns
/// the paths written. Files that are no longer generated are left alone.
pub fn write_to(dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    let mut written = Vec::new();
    for file in generate()? {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| DocsError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&path, &file.contents).map_err(|source| DocsError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Every visible argument and subcommand in `cmd`'s tree that has no help text, as
/// `burrow ssh -L` or `burrow completions`: a man page entry without words is a bug.
pub fn missing_help(cmd: &clap::Command) -> Vec<String> {
    let mut missing = Vec::new();
    collect_missing(cmd, cmd.get_name(), &mut missing);
    missing
}

fn collect_missing(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            missing.push(format!("{path} {}", arg_label(arg)));
        }
    }
    for sub in cmd.get_subcommands() {
        let sub_path = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            missing.push(sub_path.clone());
        }
        collect_missing(sub, &sub_path, missing);
    }
}

/// `-L`, `--json` or `<DIR>`: how a user would recognise the argument.
fn arg_label(arg: &clap::Arg) -> String {
    if let Some(long) = arg.get_long() {
        return format!("--{long}");
    }
    if let Some(short) = arg.get_short() {
        return format!("-{short}");
    }
    format!("<{}>", arg.get_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_argument_without_help_is_reported() {
        let cmd = clap::Command::new("x")
            .arg(
                clap::Arg::new("documented")
                    .long("documented")
                    .help("Says what it does."),
            )
            .arg(clap::Arg::new("bare").long("bare"))
            .subcommand(clap::Command::new("quiet").arg(clap::Arg::new("file")));
        assert_eq!(
            missing_help(&cmd),
            ["x --bare", "x quiet", "x quiet <file>"]
        );
    }

    #[test]
    fn every_burrow_argument_has_help() {
        // Built, so clap's own --help, --version and `help` are checked too.
        let mut cmd = command();
        cmd.build();
        assert_eq!(missing_help(&cmd), Vec::<String>::new());
    }

    #[test]
    fn every_page_and_script_is_generated_once() {
        let files = generate().unwrap();
        let mut names: Vec<_> = files.iter().map(|f| f.path.display().to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "completions/_burrow",
                "completions/burrow.bash",
                "completions/burrow.fish",
                "man/burrow-completions.1",
                "man/burrow-demo.1",
                "man/burrow-serve.1",
                "man/burrow-serve.toml.5",
                "man/burrow-ssh.1",
                "man/burrow-status.1",
                "man/burrow-tunnels.toml.5",
                "man/burrow-up.1",
                "man/burrow.1",
            ]
        );
        assert!(files.iter().all(|f| !f.contents.is_empty()));
    }
}
