//! OpenSSH's patterns (`match.c`): `*`/`?` wildcards, comma lists with `!` negation, and the
//! `[...]` classes of glob(3) for `Include`. One home for both roles: the client's ssh_config
//! (`Host`, `Match`, `Include`, `SendEnv`) and known_hosts, and the relay's permits
//! (`PermitListen`, authorized_keys `permitlisten=`). Pure functions: no I/O.

/// Result of matching a comma-separated pattern list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListMatch {
    None,
    Positive,
    /// A `!pattern` matched: the list rejects the name whatever else matched.
    Negative,
}

impl ListMatch {
    pub(crate) fn is_hit(self) -> bool {
        self == ListMatch::Positive
    }
}

/// OpenSSH `match_pattern_list` for host names: true when some pattern of the comma list
/// matches and no `!`-negated one does; `*` and `?` are wildcards; case-insensitive.
pub fn match_pattern_list(name: &str, patterns: &str) -> bool {
    match_host_list(name, patterns)
}

/// Host-name list match (OpenSSH `match_hostname`): both sides lower-cased.
pub(crate) fn match_host_list(name: &str, patterns: &str) -> bool {
    pattern_list(&name.to_lowercase(), patterns, true).is_hit()
}

/// Match `name` against a comma-separated list, lower-casing the patterns if `fold`.
pub(crate) fn pattern_list(name: &str, patterns: &str, fold: bool) -> ListMatch {
    if patterns.is_empty() {
        return ListMatch::None;
    }
    // A trailing comma does not add an empty pattern (OpenSSH's loop stops at the end).
    let patterns = patterns.strip_suffix(',').unwrap_or(patterns);
    let mut result = ListMatch::None;
    for sub in patterns.split(',') {
        let (negated, sub) = match sub.strip_prefix('!') {
            Some(s) => (true, s),
            None => (false, sub),
        };
        let sub = if fold {
            sub.to_lowercase()
        } else {
            sub.to_string()
        };
        if match_pattern(name, &sub) {
            if negated {
                return ListMatch::Negative;
            }
            result = ListMatch::Positive;
        }
    }
    result
}

/// OpenSSH `match_pattern`: `*` matches any run, `?` any one character, all else literal.
/// Case-sensitive: callers that ignore case lower-case both sides first.
pub(crate) fn match_pattern(s: &str, pattern: &str) -> bool {
    let pat: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = s.chars().collect();
    wildmatch(&pat, &text, false)
}

/// Wildcard match with single-star backtracking (linear per star, no exponential blowup).
/// With `classes`, `[...]` sets (ranges, `!`/`^` negation) are recognised as in glob(3).
pub(crate) fn wildmatch(pat: &[char], text: &[char], classes: bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        let step = match pat.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some('?') => Some(p + 1),
            Some('[') if classes => match_class(pat, p, c),
            Some(&pc) if pc == c => Some(p + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                star = Some((sp, st + 1));
                p = sp + 1;
                t = st + 1;
            }
            (None, None) => return false,
        }
    }
    pat.get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// Match `c` against the `[...]` set starting at `pat[start]`; returns the index after the
/// set on a match. An unterminated `[` is a literal.
fn match_class(pat: &[char], start: usize, c: char) -> Option<usize> {
    let mut i = start + 1;
    let negate = matches!(pat.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let Some(&lo) = pat.get(i) else {
            // No closing bracket: the `[` is an ordinary character.
            return (c == '[').then_some(start + 1);
        };
        if lo == ']' && !first {
            break;
        }
        first = false;
        match (pat.get(i + 1), pat.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                matched |= (lo..=hi).contains(&c);
                i += 3;
            }
            _ => {
                matched |= lo == c;
                i += 1;
            }
        }
    }
    (matched != negate).then_some(i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay's permits (`PermitListen`, `permitlisten=`) use `match_pattern` too.
    #[test]
    fn match_pattern_wildcards() {
        #[rustfmt::skip]
        let cases = [
            ("*",       "",         true),
            ("*",       "abc",      true),
            ("",        "",         true),
            ("",        "a",        false),
            ("a*c",     "abbbc",    true),
            ("a*c",     "abbbd",    false),
            ("a?c",     "abc",      true),
            ("a?c",     "ac",       false),
            ("*.*.*.1", "10.0.0.1", true),
            ("*a*a*",   "banana",   true),
            ("**",      "x",        true),
            ("abc",     "abcd",     false),
            ("abcd",    "abc",      false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(
                match_pattern(text, pattern),
                want,
                "{pattern:?} vs {text:?}"
            );
        }
    }
}
