//! `Include`: which files one names (`~`, `${ENV}`, relative paths and glob(3) patterns).
//! Reading and parsing them is [`super::parse`]'s, which recurses through them.

use std::fs;
use std::path::{Component, Path, PathBuf};

use super::tokens::{expand_with, join_home, split_tilde};
use crate::pattern::wildmatch;

/// Expand `~` and `${ENV}` in an `Include` argument and anchor relative paths at the base.
pub(super) fn include_pattern(arg: &str, include_base: &Path) -> Result<PathBuf, String> {
    if arg.contains('%') {
        return Err(format!(
            "Include \"{arg}\": % tokens in Include paths are not supported by burrow"
        ));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let (head, tail) = split_tilde(arg, home.as_deref())?;
    let tail = expand_with(tail, true, |_| None)?;
    Ok(match head {
        Some(dir) => join_home(&dir, &tail),
        None if Path::new(&tail).is_absolute() => PathBuf::from(tail),
        None => include_base.join(tail),
    })
}

/// Paths matching a glob (`*`, `?`, `[...]` per component), sorted like glob(3). Names
/// starting with `.` only match a pattern that starts with `.`.
pub(super) fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for component in pattern.components() {
        let Component::Normal(name) = component else {
            found.iter_mut().for_each(|p| p.push(component));
            continue;
        };
        let name = name.to_string_lossy();
        if !name.contains(['*', '?', '[']) {
            found.iter_mut().for_each(|p| p.push(&*name));
            continue;
        }
        found = found
            .iter()
            .flat_map(|dir| matching_entries(dir, &name))
            .collect();
    }
    found.retain(|p| p.exists());
    found.sort();
    found
}

/// Entries of `dir` whose names match one glob component.
fn matching_entries(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    let readable = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = fs::read_dir(readable) else {
        return Vec::new();
    };
    let pat: Vec<char> = pattern.chars().collect();
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let hidden_ok = !name.starts_with('.') || pattern.starts_with('.');
            let text: Vec<char> = name.chars().collect();
            hidden_ok && wildmatch(&pat, &text, true)
        })
        .map(|e| dir.join(e.file_name()))
        .collect()
}
