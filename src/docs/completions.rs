//! Shell completion scripts (clap_complete), for `burrow completions SHELL` and for the files
//! the package installs where each shell looks for them.

use clap_complete::Shell;

/// The shells whose scripts are committed and packaged.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The completion script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut cmd = super::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "burrow", &mut out);
    out
}

/// The file name each shell's loader expects: bash-completion looks up `burrow`, zsh's
/// compinit `_burrow`, fish `burrow.fish`. Under doc/completions bash's gets a `.bash` suffix so
/// the three are told apart; the package installs it as plain `burrow`.
pub fn file_name(shell: Shell) -> String {
    match shell {
        Shell::Bash => "burrow.bash".to_string(),
        Shell::Zsh => "_burrow".to_string(),
        Shell::Fish => "burrow.fish".to_string(),
        other => format!("burrow.{other}"),
    }
}
