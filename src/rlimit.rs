//! The open-file limit. Every forwarded connection costs the process one or two file descriptors
//! (and a relay session one more), so the common soft limit of 1024 would cap a relay or a busy
//! `-L` at a few hundred connections while the hard limit allows far more. burrow raises its soft
//! limit to the hard limit at start, as Go programs do by default; nothing is raised beyond what
//! the administrator allowed.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the (old, new) soft limit.
pub fn raise_nofile_limit() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, hard.max(soft)))
}

/// [`raise_nofile_limit`], logging the outcome (debug) instead of failing: a process that keeps
/// its old limit still works, only with fewer connections.
pub fn raise_nofile_limit_logged() {
    match raise_nofile_limit() {
        Ok((old, new)) => tracing::debug!(old, new, "open file limit"),
        Err(e) => tracing::debug!(error = %e, "cannot raise the open file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_ends_at_the_hard_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let (_, new) = raise_nofile_limit().unwrap();
        assert_eq!(new, hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}
