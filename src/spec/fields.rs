//! Field splitting and port parsing shared by every forward form, following OpenSSH's
//! `parse_fwd_field` and `a2port`.

use super::Problem;

/// OpenSSH splits a forward into at most this many `:`-separated fields.
const MAX_FIELDS: usize = 4;

/// Like OpenSSH's `a2port` via `strtonum`: leading C whitespace and a `+` are tolerated,
/// then decimal digits only. Service names (`getservbyname`) are deliberately not looked up.
pub(super) fn parse_port(text: &str) -> Result<u16, Problem> {
    let trimmed = text.trim_start_matches(is_c_space);
    let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::PortNotNumber(text.to_owned()));
    }
    digits
        .parse::<u16>()
        .map_err(|_| Problem::PortOutOfRange(text.to_owned()))
}

/// C `isspace` in the "C" locale, which is what OpenSSH skips.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// One `:`-separated field with escapes and brackets resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    pub(super) text: String,
    /// An unescaped `/` appeared: OpenSSH treats the field as a unix socket path.
    pub(super) path: bool,
}

/// Splits like `parse_forward`: skip leading whitespace, take up to four fields; a single
/// trailing `:` after the last field is tolerated (OpenSSH stops at the end of the string).
pub(super) fn split_fields(spec: &str) -> Result<Vec<Field>, Problem> {
    let mut rest = spec.trim_start_matches(is_c_space);
    if rest.is_empty() {
        return Err(Problem::Empty);
    }
    let mut fields = Vec::with_capacity(MAX_FIELDS);
    while !rest.is_empty() {
        if fields.len() == MAX_FIELDS {
            return Err(Problem::TooManyFields);
        }
        let (field, tail) = next_field(rest)?;
        fields.push(field);
        rest = tail;
    }
    Ok(fields)
}

/// Takes one field off the front of `s`, returning it and the text after its `:`.
fn next_field(s: &str) -> Result<(Field, &str), Problem> {
    if let Some(inner) = s.strip_prefix('[') {
        let (text, after) = inner
            .split_once(']')
            .ok_or_else(|| Problem::UnclosedBracket(s.to_owned()))?;
        let tail = match after.strip_prefix(':') {
            Some(tail) => tail,
            None if after.is_empty() => after,
            None => return Err(Problem::TextAfterBracket(s.to_owned())),
        };
        let path = text.contains('/');
        return Ok((
            Field {
                text: text.to_owned(),
                path,
            },
            tail,
        ));
    }
    let mut field = Field {
        text: String::new(),
        path: false,
    };
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => field.text.push(escaped),
                None => return Err(Problem::TrailingBackslash),
            },
            ':' => return Ok((field, s.get(i + 1..).unwrap_or_default())),
            '/' => {
                field.path = true;
                field.text.push(c);
            }
            _ => field.text.push(c),
        }
    }
    Ok((field, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, fields as (text, is_path)) following `parse_fwd_field`.
    #[test]
    fn splits_like_parse_fwd_field() {
        let cases: &[(&str, &[(&str, bool)])] = &[
            ("a:b", &[("a", false), ("b", false)]),
            ("  a", &[("a", false)]),
            (":a", &[("", false), ("a", false)]),
            ("a:", &[("a", false)]),
            ("a::", &[("a", false), ("", false)]),
            ("[::1]:80", &[("::1", false), ("80", false)]),
            ("[]", &[("", false)]),
            ("[/a:b]:c", &[("/a:b", true), ("c", false)]),
            ("/a\\:b:c", &[("/a:b", true), ("c", false)]),
            ("a\\/b", &[("a/b", false)]),
            ("\\[x", &[("[x", false)]),
            ("é:/ü", &[("é", false), ("/ü", true)]),
        ];
        for (input, want) in cases {
            let fields = split_fields(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            let got: Vec<(&str, bool)> = fields.iter().map(|f| (f.text.as_str(), f.path)).collect();
            assert_eq!(got, want.to_vec(), "{input:?}");
        }
    }

    #[test]
    fn ports_like_a2port_without_service_names() {
        let cases = [
            ("22", Ok(22)),
            ("0", Ok(0)),
            ("65535", Ok(65535)),
            ("0080", Ok(80)),
            (" \t80", Ok(80)),
            ("+80", Ok(80)),
            ("65536", Err(Problem::PortOutOfRange("65536".into()))),
            ("", Err(Problem::PortNotNumber("".into()))),
            ("+", Err(Problem::PortNotNumber("+".into()))),
            ("-1", Err(Problem::PortNotNumber("-1".into()))),
            ("80 ", Err(Problem::PortNotNumber("80 ".into()))),
            ("ssh", Err(Problem::PortNotNumber("ssh".into()))),
            ("٣", Err(Problem::PortNotNumber("٣".into()))),
        ];
        for (input, want) in cases {
            assert_eq!(parse_port(input), want, "{input:?}");
        }
    }
}
