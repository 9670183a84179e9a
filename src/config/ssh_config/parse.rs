//! Parsing: configuration text into [`super::SshConfig`] items, as OpenSSH's `readconf.c`
//! splits and checks each line.

use std::fs;
use std::io;
use std::path::Path;

use super::checks::rule_for;
use super::include::{glob, include_pattern};
use super::tokens::check_tokens;
use super::{
    ConfigError, Criterion, CriterionKind, Item, SshConfig, EXEC_TOKENS, KNOWN_KEYS,
    MAX_INCLUDE_DEPTH, RAW_KEYS,
};

/// One parsed line: lower-case key, the keyword's display name, and its arguments.
pub(super) struct Directive {
    pub(super) key: String,
    pub(super) name: String,
    pub(super) args: Vec<String>,
}

/// Parse configuration text; `depth` counts enclosing `Include`s.
pub(super) fn parse_config(
    text: &str,
    origin: &Path,
    include_base: &Path,
    depth: usize,
) -> Result<SshConfig, ConfigError> {
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let lineno = index + 1;
        let at = |problem: String| ConfigError::Line {
            file: origin.to_path_buf(),
            line: lineno,
            problem,
        };
        let Some(directive) = parse_directive(line).map_err(at)? else {
            continue;
        };
        let item = match directive.key.as_str() {
            "host" => Item::Host(parse_host_line(directive.args).map_err(at)?),
            "match" => Item::Match(parse_match_line(&directive.args).map_err(at)?),
            "include" => Item::Include(include_files(
                &directive.args,
                origin,
                lineno,
                include_base,
                depth,
            )?),
            _ => Item::Opt {
                key: directive.key,
                args: directive.args,
            },
        };
        items.push(item);
    }
    Ok(SshConfig { items })
}

/// Resolve and parse the files of one `Include` line. Globs that match nothing are fine
/// (ssh only logs them); an existing file that cannot be read is an error.
fn include_files(
    args: &[String],
    origin: &Path,
    lineno: usize,
    include_base: &Path,
    depth: usize,
) -> Result<Vec<SshConfig>, ConfigError> {
    let at = |problem: String| ConfigError::Line {
        file: origin.to_path_buf(),
        line: lineno,
        problem,
    };
    if depth + 1 > MAX_INCLUDE_DEPTH {
        return Err(at(format!(
            "too many nested Include levels (more than {MAX_INCLUDE_DEPTH}); does a file include itself?"
        )));
    }
    let mut files = Vec::new();
    for arg in args {
        let pattern = include_pattern(arg, include_base).map_err(at)?;
        for path in glob(&pattern) {
            let text = match fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(ConfigError::Include {
                        file: origin.to_path_buf(),
                        line: lineno,
                        path,
                        source,
                    })
                }
            };
            files.push(parse_config(&text, &path, include_base, depth + 1)?);
        }
    }
    Ok(files)
}

/// Turn a line into a directive, or `None` for blank lines and comments. Errors are the
/// problems ssh reports for the line (missing argument, bad quotes, bad value).
pub(super) fn parse_directive(line: &str) -> Result<Option<Directive>, String> {
    let Some((keyword, rest)) = split_keyword(line) else {
        return Ok(None);
    };
    let key = keyword.to_ascii_lowercase();
    let name = display_name(&key, keyword);
    if rest.is_empty() {
        return Err(format!("no argument after keyword \"{name}\""));
    }
    // ssh splits every line first, so even a raw command needs balanced quotes.
    let split = split_args(rest)?;
    let args = if RAW_KEYS.contains(&key.as_str()) {
        vec![rest.to_string()]
    } else {
        split
    };
    if let Some(rule) = rule_for(&key) {
        rule.check(&name, &args)?;
    }
    Ok(Some(Directive { key, name, args }))
}

/// The spelling used in messages: the documented one for known keys.
fn display_name(key: &str, as_written: &str) -> String {
    let known = KNOWN_KEYS
        .iter()
        .chain(["Host", "Match", "Include"].iter())
        .find(|k| k.eq_ignore_ascii_case(key));
    known.map_or_else(|| as_written.to_string(), |k| (*k).to_string())
}

const WHITESPACE: [char; 2] = [' ', '\t'];

/// Split a line into keyword and unparsed rest as OpenSSH's `strdelim` does: the keyword
/// ends at whitespace, a quote or `=`, and one `=` between keyword and value is skipped.
fn split_keyword(line: &str) -> Option<(&str, &str)> {
    let line = line
        .trim_end_matches([' ', '\t', '\r', '\n', '\x0c'])
        .trim_start_matches(WHITESPACE);
    if line.starts_with('#') {
        return None;
    }
    let end = line.find([' ', '\t', '=', '"']).unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    if keyword.is_empty() {
        return None;
    }
    let rest = rest.trim_start_matches(WHITESPACE);
    let rest = rest
        .strip_prefix('=')
        .map_or(rest, |r| r.trim_start_matches(WHITESPACE));
    Some((keyword, rest))
}

/// Split arguments like OpenSSH's `argv_split`: whitespace separates, `"` and `'` quote,
/// backslash escapes quotes, backslash and (outside quotes) space, and a `#` at the start
/// of an argument ends the line.
pub(super) fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| WHITESPACE.contains(c)).is_some() {}
        match chars.peek() {
            None | Some('#') => break,
            Some(_) => {}
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let escaped = chars.next_if(|&n| {
                        n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ')
                    });
                    arg.push(escaped.unwrap_or('\\'));
                }
                ' ' | '\t' if quote.is_none() => break,
                '"' | '\'' if quote.is_none() => quote = Some(c),
                c if Some(c) == quote => quote = None,
                c => arg.push(c),
            }
        }
        if quote.is_some() {
            return Err("invalid quotes (unterminated quote)".to_string());
        }
        args.push(arg);
    }
    Ok(args)
}

/// `Host` patterns; an empty pattern (`""`) is an error in ssh.
fn parse_host_line(args: Vec<String>) -> Result<Vec<String>, String> {
    if args.iter().any(String::is_empty) {
        return Err("Host has an empty pattern".to_string());
    }
    Ok(args)
}

/// Parse `Match` criteria (`name arg` or `name=arg`, `!` negation); unknown or
/// unsupported criteria are errors so a config is never silently misread.
fn parse_match_line(args: &[String]) -> Result<Vec<Criterion>, String> {
    let mut criteria = Vec::new();
    let mut rest = args.iter();
    while let Some(word) = rest.next() {
        let (negate, word) = match word.strip_prefix('!') {
            Some(w) => (true, w),
            None => (false, word.as_str()),
        };
        let (name, inline) = match word.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v.to_string())),
            None => (word.to_ascii_lowercase(), None),
        };
        let kind = match name.as_str() {
            "all" => {
                if criteria.len() > 1 || rest.next().is_some() {
                    return Err("Match \"all\" cannot be combined with other criteria".into());
                }
                CriterionKind::All
            }
            "canonical" | "final" => CriterionKind::LaterPass,
            _ => {
                let arg = match inline {
                    Some(v) => v,
                    None => rest.next().cloned().unwrap_or_default(),
                };
                if arg.is_empty() {
                    return Err(format!("missing argument for Match criterion \"{name}\""));
                }
                criterion_with_arg(&name, arg)?
            }
        };
        criteria.push(Criterion { negate, kind });
    }
    if criteria.is_empty() {
        return Err("Match needs one or more criteria".to_string());
    }
    Ok(criteria)
}

/// Build a criterion that takes an argument.
fn criterion_with_arg(name: &str, arg: String) -> Result<CriterionKind, String> {
    Ok(match name {
        "host" => CriterionKind::Host(arg),
        "originalhost" => CriterionKind::OriginalHost(arg),
        "user" => CriterionKind::User(arg),
        "localuser" => CriterionKind::LocalUser(arg),
        "exec" => {
            check_tokens(&arg, EXEC_TOKENS)?;
            CriterionKind::Exec(arg)
        }
        "localnetwork" | "tagged" | "command" | "sessiontype" | "version" => {
            return Err(format!(
                "Match criterion \"{name}\" is not supported by burrow"
            ))
        }
        _ => return Err(format!("unknown Match criterion \"{name}\"")),
    })
}
