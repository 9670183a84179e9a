//! The validation pass: turns the file as written into [`TunnelSpec`]s, applying `[defaults]`
//! and the built-in defaults, and collects every problem with its line, tunnel and field.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawFile, RawSettings, RawTarget, RawTunnel, RemoteItem};
use super::values::{self, PathRules};
use super::{
    HostKeyChecking, Invalid, RemoteSpec, ServerAddr, TunnelSpec, DEFAULT_BACKOFF_INITIAL,
    DEFAULT_BACKOFF_MAX, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE_COUNT,
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_RESUME_GRACE,
};
use crate::forward::proxy_header::ProxyProtocol;
use crate::spec::Listen;

/// Validates a parsed file. `home` replaces a leading `~`; relative paths are taken from the
/// directory of `path`. On failure, every problem found, in file order.
pub(super) fn validate(
    raw: RawFile,
    text: &str,
    path: &Path,
    home: &Path,
) -> Result<Vec<TunnelSpec>, Vec<Invalid>> {
    let mut c = Checker {
        path,
        text,
        paths: PathRules::new(home, path),
        problems: Vec::new(),
    };
    let defaults = match raw.defaults {
        Some(d) => c.settings("defaults", d.into_inner(), &Settings::default()),
        None => Settings::default(),
    };
    if raw.tunnel.is_empty() {
        c.report(None, None, None, "no [[tunnel]] entries".to_string());
    }
    let mut tunnels = Vec::new();
    for (index, table) in raw.tunnel.into_iter().enumerate() {
        let line = c.line(table.span());
        tunnels.extend(c.tunnel(index, line, table.into_inner(), &defaults));
    }
    c.across(&tunnels);
    if c.problems.is_empty() {
        return Ok(tunnels.into_iter().map(|t| t.spec).collect());
    }
    // The sort is stable: problems on one line keep the order they were found in.
    c.problems.sort_by_key(|p| p.line);
    Err(c.problems)
}

/// A valid tunnel and what the checks across tunnels need to know about it.
struct Checked {
    spec: TunnelSpec,
    /// `tunnel "name"` or `tunnel[i]`, for messages.
    label: String,
    /// Line of the `[[tunnel]]` table.
    line: usize,
    /// Line of `name`, or of the table for a derived name.
    name_line: usize,
    name_explicit: bool,
    /// Local listeners with fixed ports: field, line, address.
    listens: Vec<(String, usize, Listen)>,
}

/// A forward spec that passed its parser.
struct Forward<L> {
    text: String,
    field: String,
    line: usize,
    parsed: L,
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    paths: PathRules,
    problems: Vec<Invalid>,
}

/// One scope's settings after validation; `None` = not set there.
#[derive(Debug, Clone, Default)]
struct Settings {
    user: Option<String>,
    identity: Option<Vec<PathBuf>>,
    known_hosts: Option<PathBuf>,
    host_key_checking: Option<HostKeyChecking>,
    keepalive_interval: Option<Duration>,
    keepalive_count: Option<u32>,
    connect_timeout: Option<Duration>,
    compression: Option<bool>,
    backoff_initial: Option<Duration>,
    backoff_max: Option<Duration>,
    exit_after_failures: Option<u32>,
    resume: Option<bool>,
    resume_grace: Option<Duration>,
    ssh_config: Option<PathBuf>,
    jump: Option<String>,
    options: Option<Vec<String>>,
    proxy_protocol: Option<Option<ProxyProtocol>>,
}

impl Settings {
    /// Each setting from `self`, else from `fallback`.
    fn or(self, fallback: &Settings) -> Settings {
        let f = fallback.clone();
        Settings {
            user: self.user.or(f.user),
            identity: self.identity.or(f.identity),
            known_hosts: self.known_hosts.or(f.known_hosts),
            host_key_checking: self.host_key_checking.or(f.host_key_checking),
            keepalive_interval: self.keepalive_interval.or(f.keepalive_interval),
            keepalive_count: self.keepalive_count.or(f.keepalive_count),
            connect_timeout: self.connect_timeout.or(f.connect_timeout),
            compression: self.compression.or(f.compression),
            backoff_initial: self.backoff_initial.or(f.backoff_initial),
            backoff_max: self.backoff_max.or(f.backoff_max),
            exit_after_failures: self.exit_after_failures.or(f.exit_after_failures),
            resume: self.resume.or(f.resume),
            resume_grace: self.resume_grace.or(f.resume_grace),
            ssh_config: self.ssh_config.or(f.ssh_config),
            jump: self.jump.or(f.jump),
            options: self.options.or(f.options),
            proxy_protocol: self.proxy_protocol.or(f.proxy_protocol),
        }
    }
}

impl Checker<'_> {
    /// 1-based line of a byte offset in the file.
    fn line(&self, span: Range<usize>) -> usize {
        self.text
            .get(..span.start)
            .map_or(1, |before| before.matches('\n').count() + 1)
    }

    fn report(
        &mut self,
        line: Option<usize>,
        scope: Option<&str>,
        field: Option<&str>,
        message: String,
    ) {
        self.problems.push(Invalid {
            path: self.path.to_path_buf(),
            line,
            scope: scope.map(str::to_owned),
            field: field.map(str::to_owned),
            message,
        });
    }

    /// Runs `check` on a spanned value; a failure is reported at the value's line.
    fn check<T, R>(
        &mut self,
        scope: &str,
        field: &str,
        value: &Spanned<T>,
        check: impl FnOnce(&T) -> Result<R, String>,
    ) -> Option<R> {
        match check(value.get_ref()) {
            Ok(r) => Some(r),
            Err(message) => {
                let line = self.line(value.span());
                self.report(Some(line), Some(scope), Some(field), message);
                None
            }
        }
    }

    /// [`Checker::check`] for a key that may be absent.
    fn opt<T, R>(
        &mut self,
        scope: &str,
        field: &str,
        value: &Option<Spanned<T>>,
        check: impl FnOnce(&T) -> Result<R, String>,
    ) -> Option<R> {
        value
            .as_ref()
            .and_then(|v| self.check(scope, field, v, check))
    }

    /// Checks every item of a list; `None` if any failed.
    fn list<T, R>(
        &mut self,
        scope: &str,
        field: &str,
        items: &[Spanned<T>],
        check: impl Fn(&T) -> Result<R, String>,
    ) -> Option<Vec<R>> {
        let checked: Vec<Option<R>> = items
            .iter()
            .enumerate()
            .map(|(i, v)| self.check(scope, &format!("{field}[{i}]"), v, &check))
            .collect();
        checked.into_iter().collect()
    }

    /// Validates one scope's settings; `inherited` is what applies where this scope is silent
    /// (used only by the checks that combine two settings).
    fn settings(&mut self, scope: &str, raw: RawSettings, inherited: &Settings) -> Settings {
        let rules = self.paths.clone();
        let own = Settings {
            user: self.opt(scope, "user", &raw.user, |u| values::user(u)),
            identity: self.opt(scope, "identity", &raw.identity, |l| rules.paths(&l.0)),
            known_hosts: self.opt(scope, "known_hosts", &raw.known_hosts, |p| {
                values::known_hosts(&rules, p)
            }),
            host_key_checking: self.opt(scope, "host_key_checking", &raw.host_key_checking, |h| {
                values::host_key_checking(h)
            }),
            keepalive_interval: self.opt(
                scope,
                "keepalive_interval",
                &raw.keepalive_interval,
                |t| values::time(&t.0),
            ),
            keepalive_count: self.opt(scope, "keepalive_count", &raw.keepalive_count, |&n| {
                values::keepalive_count(n)
            }),
            connect_timeout: self.opt(scope, "connect_timeout", &raw.connect_timeout, |t| {
                values::time(&t.0)
            }),
            compression: raw.compression,
            backoff_initial: self.opt(scope, "backoff_initial", &raw.backoff_initial, |t| {
                values::time(&t.0)
            }),
            backoff_max: self.opt(scope, "backoff_max", &raw.backoff_max, |t| {
                values::time(&t.0)
            }),
            exit_after_failures: raw.exit_after_failures,
            resume: raw.resume,
            resume_grace: self.opt(scope, "resume_grace", &raw.resume_grace, |t| {
                values::time(&t.0)
            }),
            ssh_config: self.opt(scope, "ssh_config", &raw.ssh_config, |p| {
                values::ssh_config_path(&rules, p)
            }),
            jump: self.opt(scope, "jump", &raw.jump, |j| values::jump(j)),
            options: match &raw.options {
                Some(list) => self.list(scope, "options", list, |o| values::option(o)),
                None => None,
            },
            proxy_protocol: self.opt(scope, "proxy_protocol", &raw.proxy_protocol, |v| {
                values::proxy_protocol(v)
            }),
        };
        self.backoff_order(scope, &raw, &own, inherited);
        own
    }

    /// `backoff_initial <= backoff_max`, checked in the scope that sets either of them (so a
    /// mistake in `[defaults]` is reported once, not once per tunnel).
    fn backoff_order(&mut self, scope: &str, raw: &RawSettings, own: &Settings, up: &Settings) {
        let span = match (&raw.backoff_initial, &raw.backoff_max) {
            (Some(v), _) | (None, Some(v)) => v.span(),
            (None, None) => return,
        };
        let initial = own
            .backoff_initial
            .or(up.backoff_initial)
            .unwrap_or(DEFAULT_BACKOFF_INITIAL);
        let max = own
            .backoff_max
            .or(up.backoff_max)
            .unwrap_or(DEFAULT_BACKOFF_MAX);
        if initial > max {
            let line = self.line(span);
            let message = format!(
                "backoff_initial ({}s) is greater than backoff_max ({}s)",
                initial.as_secs(),
                max.as_secs()
            );
            self.report(Some(line), Some(scope), Some("backoff_initial"), message);
        }
    }

    /// Validates one `[[tunnel]]`; `None` if anything in it is invalid (all of it reported).
    fn tunnel(
        &mut self,
        index: usize,
        line: usize,
        raw: RawTunnel,
        defaults: &Settings,
    ) -> Option<Checked> {
        let (target, raw_settings) = raw.split();
        let explicit = target
            .name
            .as_ref()
            .map(|n| n.get_ref().clone())
            .filter(|n| !n.is_empty());
        let label = match &explicit {
            Some(name) => format!("tunnel {name:?}"),
            None => format!("tunnel[{index}]"),
        };
        let before = self.problems.len();
        self.opt(&label, "name", &target.name, |n| values::name(n));
        let servers = self.servers(&label, line, &target);
        let local = self.forwards(&label, "local", &target.local, |s: &String| {
            values::local_spec(s)
        });
        let remote = self.forwards(&label, "remote", &target.remote, |r: &RemoteItem| {
            values::remote_spec(&r.forward)?;
            r.proxy_protocol
                .as_deref()
                .map(values::proxy_protocol)
                .transpose()
        });
        let dynamic = self.forwards(&label, "dynamic", &target.dynamic, |s: &String| {
            values::dynamic_spec(s)
        });
        if target.local.is_empty() && target.remote.is_empty() && target.dynamic.is_empty() {
            let message = "no forwards: set at least one of local, remote, dynamic".to_string();
            self.report(Some(line), Some(&label), None, message);
        }
        let own = self.settings(&label, raw_settings, defaults);
        let servers = servers.filter(|_| self.problems.len() == before)?;
        let s = own.or(defaults);
        let listens = local
            .iter()
            .chain(&dynamic)
            .filter(|f| !matches!(f.parsed, Listen::Tcp { port: 0, .. }))
            .map(|f| (f.field.clone(), f.line, f.parsed.clone()))
            .collect();
        let spec = TunnelSpec {
            name: explicit
                .clone()
                .unwrap_or_else(|| values::derived_name(&servers, &target)),
            servers,
            jump: s.jump,
            local: local.into_iter().map(|f| f.text).collect(),
            remote: remote
                .into_iter()
                .map(|f| RemoteSpec {
                    spec: f.text,
                    proxy_protocol: f.parsed,
                })
                .collect(),
            dynamic: dynamic.into_iter().map(|f| f.text).collect(),
            user: s.user,
            identity: s.identity.unwrap_or_default(),
            known_hosts: s.known_hosts,
            host_key_checking: s.host_key_checking.unwrap_or(HostKeyChecking::Yes),
            keepalive_interval: s.keepalive_interval.unwrap_or(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_count: s.keepalive_count.unwrap_or(DEFAULT_KEEPALIVE_COUNT),
            connect_timeout: s.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            compression: s.compression.unwrap_or(false),
            backoff_initial: s.backoff_initial.unwrap_or(DEFAULT_BACKOFF_INITIAL),
            backoff_max: s.backoff_max.unwrap_or(DEFAULT_BACKOFF_MAX),
            exit_after_failures: s.exit_after_failures.unwrap_or(0),
            resume: s.resume.unwrap_or(true),
            resume_grace: s.resume_grace.unwrap_or(DEFAULT_RESUME_GRACE),
            ssh_config: s.ssh_config,
            options: s.options.unwrap_or_default(),
            proxy_protocol: s.proxy_protocol,
        };
        Some(Checked {
            spec,
            label,
            line,
            name_line: target.name.as_ref().map_or(line, |n| self.line(n.span())),
            name_explicit: explicit.is_some(),
            listens,
        })
    }

    /// Exactly one of `server` / `servers`, each a valid `[user@]host[:port]`.
    fn servers(&mut self, label: &str, line: usize, t: &RawTarget) -> Option<Vec<ServerAddr>> {
        let problem = match (&t.server, &t.servers) {
            (Some(one), None) => {
                return self
                    .check(label, "server", one, |s| values::server(s))
                    .map(|s| vec![s])
            }
            (None, Some(list)) if !list.get_ref().is_empty() => {
                return self.list(label, "servers", list.get_ref(), |s| values::server(s))
            }
            (None, Some(list)) => (Some(list.span()), "servers", "is empty: list a relay"),
            (Some(_), Some(list)) => (
                Some(list.span()),
                "servers",
                "set either server or servers, not both",
            ),
            (None, None) => (
                None,
                "server",
                "missing: set server = \"[user@]host[:port]\" or servers = [...]",
            ),
        };
        let (span, field, message) = problem;
        let at = span.map_or(line, |span| self.line(span));
        self.report(Some(at), Some(label), Some(field), message.to_string());
        None
    }

    /// Validates each spec of one forward list; the valid ones are returned.
    fn forwards<T: AsRef<str>, L>(
        &mut self,
        label: &str,
        field: &str,
        specs: &[Spanned<T>],
        parse: impl Fn(&T) -> Result<L, String>,
    ) -> Vec<Forward<L>> {
        specs
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let field = format!("{field}[{i}]");
                let parsed = self.check(label, &field, v, |s| parse(s))?;
                Some(Forward {
                    text: v.get_ref().as_ref().to_string(),
                    field,
                    line: self.line(v.span()),
                    parsed,
                })
            })
            .collect()
    }

    /// Names are unique, and no two forwards listen on the same local address (one of them
    /// could never come up).
    fn across(&mut self, tunnels: &[Checked]) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut listeners: HashMap<&Listen, (&str, usize)> = HashMap::new();
        for t in tunnels {
            let name = t.spec.name.as_str();
            match names.get(name) {
                Some(first) => {
                    let message = match t.name_explicit {
                        true => {
                            format!("{name:?} is already the name of the tunnel at line {first}")
                        }
                        false => format!(
                            "the derived name {name:?} is already used by the tunnel at line \
                             {first}; give one of them a name"
                        ),
                    };
                    self.report(Some(t.name_line), Some(&t.label), Some("name"), message);
                }
                None => {
                    names.insert(name, t.line);
                }
            }
            for (field, line, listen) in &t.listens {
                match listeners.get(listen) {
                    Some((other, other_line)) => {
                        let message = format!(
                            "{listen} is already a local listener of {other} (line {other_line})"
                        );
                        self.report(Some(*line), Some(&t.label), Some(field), message);
                    }
                    None => {
                        listeners.insert(listen, (&t.label, *line));
                    }
                }
            }
        }
    }
}
