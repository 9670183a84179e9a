//! `Host` and `Match` evaluation: which blocks apply to a destination.

use std::process::{Command, Stdio};

use super::tokens::{expand_with, Tokens};
use super::{Criterion, CriterionKind, HostOptions, MatchContext};
use crate::pattern::{match_host_list, match_pattern, pattern_list};

/// A `Host` line applies when some pattern matches the typed host and no `!` pattern does.
/// Unlike `Match host`, this is case-sensitive and commas are literal (as ssh; see tests).
pub(super) fn host_line_matches(host: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(negated) if match_pattern(host, negated) => return false,
            Some(_) => {}
            None => matched |= match_pattern(host, pattern),
        }
    }
    matched
}

/// Evaluate a `Match` line against the destination and the options obtained so far.
pub(super) fn match_line_matches(
    criteria: &[Criterion],
    ctx: &MatchContext,
    so_far: &HostOptions,
) -> bool {
    let mut result = true;
    for criterion in criteria {
        let hit = match &criterion.kind {
            CriterionKind::All => true,
            CriterionKind::LaterPass => false,
            CriterionKind::Host(p) => match_host_list(&match_host(ctx, so_far), p),
            CriterionKind::OriginalHost(p) => match_host_list(&ctx.original_host, p),
            CriterionKind::User(p) => pattern_list(&remote_user(ctx, so_far), p, false).is_hit(),
            CriterionKind::LocalUser(p) => pattern_list(&ctx.local_user, p, false).is_hit(),
            // Like ssh, a command is not run once an earlier criterion has failed.
            CriterionKind::Exec(_) if !result => continue,
            CriterionKind::Exec(cmd) => run_exec(cmd, ctx, so_far),
        };
        if hit == criterion.negate {
            result = false;
        }
    }
    result
}

/// The name `Match host` tests: a HostName obtained so far (with `%h` expanded) replaces
/// the typed host, unless the caller already fixed the host name.
fn match_host(ctx: &MatchContext, so_far: &HostOptions) -> String {
    match so_far.first("hostname") {
        Some(name) if ctx.host == ctx.original_host => {
            let typed = || Some(ctx.original_host.clone());
            expand_with(name, false, |c| if c == 'h' { typed() } else { None })
                .unwrap_or_else(|_| name.to_string())
        }
        _ => ctx.host.clone(),
    }
}

/// The remote user as ssh knows it at this point of the config.
fn remote_user(ctx: &MatchContext, so_far: &HostOptions) -> String {
    ctx.user
        .clone()
        .or_else(|| so_far.first("user").map(str::to_string))
        .unwrap_or_else(|| ctx.local_user.clone())
}

/// Run a `Match exec` command with its tokens expanded; exit status 0 means a match.
fn run_exec(cmd: &str, ctx: &MatchContext, so_far: &HostOptions) -> bool {
    let host = match_host(ctx, so_far);
    let port = so_far
        .first("port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(22);
    let tokens = Tokens::new(
        &host,
        &ctx.original_host,
        port,
        &remote_user(ctx, so_far),
        &ctx.local_user,
    );
    let Ok(command) = expand_with(cmd, false, |c| tokens.value(c)) else {
        return false;
    };
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".to_string());
    Command::new(shell)
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
