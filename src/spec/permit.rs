//! `host:port` permission entries: the relay's `PermitOpen`/`PermitListen` and authorized_keys
//! `permitopen=`/`permitlisten=` (sshd), and the client's `PermitRemoteOpen` (ssh). Both split
//! an entry the same way (misc.c `hpdelim2` + `cleanhostname`) with a port of `*` (any) or
//! 1-65535 in plain digits (no service names), so that rule lives here once.
//!
//! What stays with each side, on purpose: its keywords (the relay takes `any`/`none` as
//! written, the client in any case) and how it compares hosts (the relay ignores ASCII case,
//! since DNS does; the client compares literally, as OpenSSH's `open_match` does).

/// Why an entry is not `host:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitProblem {
    /// `[` without its `]`.
    UnclosedBracket,
    /// No `:` (or, where allowed, `/`) before the port.
    MissingPort,
    /// Nothing before the separator.
    EmptyHost,
    /// The port is neither `*` nor 1-65535.
    BadPort,
}

/// Splits `host:port` or `[host]:port`, and with `allow_slash` also `host/port` (as
/// authorized_keys `permitopen=` allows). The port is `None` for `*`.
pub fn split_permit(s: &str, allow_slash: bool) -> Result<(&str, Option<u16>), PermitProblem> {
    let (host, rest) = match s.strip_prefix('[') {
        Some(inner) => inner
            .split_once(']')
            .ok_or(PermitProblem::UnclosedBracket)?,
        None => {
            let cut = s
                .find(|c| c == ':' || (allow_slash && c == '/'))
                .ok_or(PermitProblem::MissingPort)?;
            s.split_at(cut)
        }
    };
    let port = rest
        .strip_prefix(':')
        .or_else(|| rest.strip_prefix('/').filter(|_| allow_slash))
        .ok_or(PermitProblem::MissingPort)?;
    if host.is_empty() {
        return Err(PermitProblem::EmptyHost);
    }
    Ok((host, permit_port(port)?))
}

/// A permit's port: `*` → `None`; 1..=65535 in plain digits → `Some`. Service names are not
/// looked up (sshd's `a2port` would).
pub fn permit_port(port: &str) -> Result<Option<u16>, PermitProblem> {
    if port == "*" {
        return Ok(None);
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PermitProblem::BadPort);
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(PermitProblem::BadPort),
        Ok(p) => Ok(Some(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Split = Result<(&'static str, Option<u16>), PermitProblem>;

    #[test]
    fn splits_like_hpdelim2_and_cleanhostname() {
        use PermitProblem::*;
        #[rustfmt::skip]
        let cases: [(&str, bool, Split); 12] = [
            ("db:5432",      false, Ok(("db", Some(5432)))),
            ("[::1]:*",      false, Ok(("::1", None))),
            ("*:80",         false, Ok(("*", Some(80)))),
            ("db/5432",      true,  Ok(("db", Some(5432)))),
            ("db/5432",      false, Err(MissingPort)),
            ("[::1]/80",     true,  Ok(("::1", Some(80)))),
            ("[::1:80",      false, Err(UnclosedBracket)),
            ("db",           false, Err(MissingPort)),
            (":80",          false, Err(EmptyHost)),
            ("db:0",         false, Err(BadPort)),
            ("db:+80",       false, Err(BadPort)),
            ("db:65536",     false, Err(BadPort)),
        ];
        for (entry, slash, want) in cases {
            assert_eq!(split_permit(entry, slash), want, "{entry:?} slash={slash}");
        }
    }
}
