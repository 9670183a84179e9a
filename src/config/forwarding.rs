//! Forward-related options: the -L/-R/-D lists (command line first, then config) with
//! OpenSSH's expansions, `StreamLocalBindUnlink`/`StreamLocalBindMask`, and the client's
//! `PermitRemoteOpen`.
//!
//! Expansion order follows OpenSSH: `${ENV}` is expanded in the whole spec before it is split
//! (readconf.c `parse_forward`), so a variable holding a path makes the field a path; `%`
//! tokens are expanded afterwards in unix socket paths only (ssh.c, after the config is read).

use std::path::PathBuf;

use super::error::OptionsError;
use super::ssh_config::{self, HostOptions, Tokens};
use crate::cli::SshArgs;
use crate::spec::{
    self, DynamicForward, Endpoint, Listen, LocalForward, PermitProblem, RemoteForward,
    StreamLocalBind, DEFAULT_BIND_MASK,
};

/// One `PermitRemoteOpen` entry: `host:port`, either part may be `*`. Hosts are compared
/// literally (no lookups, no patterns), as OpenSSH's `open_match` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOpen {
    /// Host or address literal (IPv6 without brackets), or `*`.
    pub host: String,
    /// Port; None = `*`.
    pub port: Option<u16>,
}

/// Where connections arriving on a reverse dynamic forward (`-R [bind:]port`) may go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PermitRemoteOpen {
    /// None = `any` (the default); Some(empty) = `none`.
    pub allowed: Option<Vec<RemoteOpen>>,
    /// The arguments as written, for `-G`.
    pub written: Vec<String>,
}

impl PermitRemoteOpen {
    /// Whether a SOCKS request for `host:port` may be connected.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        match &self.allowed {
            None => true,
            Some(list) => list
                .iter()
                .any(|e| (e.host == "*" || e.host == host) && e.port.is_none_or(|p| p == port)),
        }
    }

    /// The value `ssh -G` prints.
    pub fn dump_value(&self) -> String {
        if self.written.is_empty() {
            "any".into()
        } else {
            self.written.join(" ")
        }
    }
}

/// Reads StreamLocalBindUnlink and StreamLocalBindMask.
pub fn stream_local(opts: &HostOptions) -> Result<StreamLocalBind, OptionsError> {
    let unlink = match opts.first("streamlocalbindunlink") {
        None => false,
        Some(v) => yes_no("StreamLocalBindUnlink", v)?,
    };
    let mask = match opts.first("streamlocalbindmask") {
        None => DEFAULT_BIND_MASK,
        Some(v) => u32::from_str_radix(v, 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| OptionsError::Invalid {
                option: "StreamLocalBindMask",
                value: v.to_string(),
                reason: "not an octal mask (0000-0777)",
            })?,
    };
    Ok(StreamLocalBind { unlink, mask })
}

/// Reads PermitRemoteOpen: `any`, `none` or `host:port` entries (readconf.c's rules).
pub fn permit_remote_open(opts: &HostOptions) -> Result<PermitRemoteOpen, OptionsError> {
    let Some(args) = opts.get("permitremoteopen") else {
        return Ok(PermitRemoteOpen::default());
    };
    let written = args.to_vec();
    let keyword = |w: &str| w.eq_ignore_ascii_case("any") || w.eq_ignore_ascii_case("none");
    if args.len() > 1 && args.iter().any(|a| keyword(a)) {
        return Err(OptionsError::Invalid {
            option: "PermitRemoteOpen",
            value: args.join(" "),
            reason: "any and none must appear alone",
        });
    }
    let allowed = match args.first().map(String::as_str) {
        Some(a) if a.eq_ignore_ascii_case("any") => None,
        Some(a) if a.eq_ignore_ascii_case("none") => Some(Vec::new()),
        _ => Some(
            args.iter()
                .map(|a| remote_open_entry(a))
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(PermitRemoteOpen { allowed, written })
}

/// One entry, split by the rule the relay's permits use too ([`spec::split_permit`]).
fn remote_open_entry(entry: &str) -> Result<RemoteOpen, OptionsError> {
    let (host, port) =
        spec::split_permit(entry, false).map_err(|problem| OptionsError::Invalid {
            option: "PermitRemoteOpen",
            value: entry.to_string(),
            reason: match problem {
                PermitProblem::UnclosedBracket => "unclosed [",
                PermitProblem::MissingPort => "missing port",
                PermitProblem::EmptyHost => "missing host",
                PermitProblem::BadPort => "bad port number",
            },
        })?;
    Ok(RemoteOpen {
        host: host.to_string(),
        port,
    })
}

fn yes_no(option: &'static str, v: &str) -> Result<bool, OptionsError> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(OptionsError::Invalid {
            option,
            value: v.to_string(),
            reason: "expected yes or no",
        }),
    }
}

/// -L, -R and -D forwards.
pub type Forwards = (Vec<LocalForward>, Vec<RemoteForward>, Vec<DynamicForward>);

/// Command-line forwards first, then those from the config, as ssh(1) does; `${ENV}` expanded
/// in each spec, `%` tokens in its unix socket paths.
pub fn forwards(
    args: &SshArgs,
    opts: &HostOptions,
    tokens: &Tokens,
) -> Result<Forwards, OptionsError> {
    let env = |s: &str| ssh_config::dollar_expand(s);
    let mut local = Vec::new();
    for s in &args.local {
        local.push(spec::parse_local(&env(s)?)?);
    }
    for a in opts.get_all("localforward") {
        match a {
            [listen, target] => local.push(spec::parse_local_config(&env(listen)?, &env(target)?)?),
            _ => return Err(bad_args("LocalForward", a)),
        }
    }
    let mut remote = Vec::new();
    for s in &args.remote {
        remote.push(spec::parse_remote(&env(s)?)?);
    }
    for a in opts.get_all("remoteforward") {
        match a {
            [listen] => remote.push(spec::parse_remote_config(&env(listen)?, None)?),
            [listen, target] => {
                let target = env(target)?;
                remote.push(spec::parse_remote_config(&env(listen)?, Some(&target))?)
            }
            _ => return Err(bad_args("RemoteForward", a)),
        }
    }
    let mut dynamic = Vec::new();
    for s in &args.dynamic {
        dynamic.push(spec::parse_dynamic(&env(s)?)?);
    }
    for a in opts.get_all("dynamicforward") {
        match a {
            [listen] => dynamic.push(spec::parse_dynamic(&env(listen)?)?),
            _ => return Err(bad_args("DynamicForward", a)),
        }
    }
    expand_paths(&mut local, &mut remote, &mut dynamic, tokens)?;
    Ok((local, remote, dynamic))
}

/// `%` tokens in every unix socket path (ssh.c `default_client_percent_expand`).
fn expand_paths(
    local: &mut [LocalForward],
    remote: &mut [RemoteForward],
    dynamic: &mut [DynamicForward],
    tokens: &Tokens,
) -> Result<(), OptionsError> {
    let path = |p: &mut PathBuf| -> Result<(), OptionsError> {
        let text = p.to_string_lossy().into_owned();
        *p = PathBuf::from(ssh_config::percent_expand(&text, tokens)?);
        Ok(())
    };
    let listen = |l: &mut Listen| match l {
        Listen::Unix(p) => path(p),
        Listen::Tcp { .. } => Ok(()),
    };
    let target = |e: &mut Endpoint| match e {
        Endpoint::Unix(p) => path(p),
        Endpoint::Tcp { .. } => Ok(()),
    };
    for f in local {
        listen(&mut f.listen)?;
        target(&mut f.target)?;
    }
    for f in remote {
        listen(&mut f.listen)?;
        if let Some(t) = &mut f.target {
            target(t)?;
        }
    }
    for f in dynamic {
        listen(&mut f.listen)?;
    }
    Ok(())
}

fn bad_args(option: &'static str, args: &[String]) -> OptionsError {
    OptionsError::Invalid {
        option,
        value: args.join(" "),
        reason: "wrong number of arguments",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_options(lines: &[(&str, &[&str])]) -> HostOptions {
        let mut o = HostOptions::default();
        for (k, v) in lines {
            let args = v.iter().map(|s| s.to_string()).collect();
            o.set_if_absent(k, args, ssh_config::is_multi(k));
        }
        o
    }

    fn tokens() -> Tokens {
        let mut t = Tokens::new("server.example", "srv", 2222, "alice", "bob");
        t.home = PathBuf::from("/home/bob");
        t.local_hostname = "box.lan".into();
        t.uid = 1000;
        t
    }

    #[test]
    fn permit_remote_open_matches_literally() {
        let opts = host_options(&[("permitremoteopen", &["db.internal:5432", "*:80", "[::1]:*"])]);
        let p = permit_remote_open(&opts).unwrap();
        assert!(p.allows("db.internal", 5432));
        assert!(!p.allows("db.internal", 5433));
        assert!(
            !p.allows("DB.internal", 5432),
            "no case folding, as open_match"
        );
        assert!(p.allows("anything", 80));
        assert!(p.allows("::1", 22));
        assert!(!p.allows("127.0.0.1", 22), "no lookups");
        assert_eq!(p.dump_value(), "db.internal:5432 *:80 [::1]:*");
    }

    #[test]
    fn permit_remote_open_keywords() {
        let any = permit_remote_open(&HostOptions::default()).unwrap();
        assert!(any.allows("x", 1));
        assert_eq!(any.dump_value(), "any");
        let none = permit_remote_open(&host_options(&[("permitremoteopen", &["none"])])).unwrap();
        assert!(!none.allows("x", 1));
        assert_eq!(none.dump_value(), "none");
        for bad in [&["none", "a:1"][..], &["a"], &["a:0"], &["a:x"], &[":1"]] {
            let o = host_options(&[("permitremoteopen", bad)]);
            assert!(permit_remote_open(&o).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stream_local_defaults_and_values() {
        assert_eq!(
            stream_local(&HostOptions::default()).unwrap(),
            StreamLocalBind::default()
        );
        let o = host_options(&[
            ("streamlocalbindunlink", &["yes"]),
            ("streamlocalbindmask", &["0022"]),
        ]);
        let s = stream_local(&o).unwrap();
        assert!(s.unlink);
        assert_eq!(s.mask, 0o022);
        let bad = host_options(&[("streamlocalbindmask", &["0999"])]);
        assert!(stream_local(&bad).is_err());
    }

    #[test]
    fn env_before_split_and_tokens_in_paths_only() {
        std::env::set_var("BURROW_TEST_FWD_DIR", "/run/fwd");
        let args = SshArgs {
            local: vec!["${BURROW_TEST_FWD_DIR}/%h-%p.sock:db:5432".into()],
            remote: vec!["/tmp/%r.sock:%h:80".into()],
            dynamic: vec!["/tmp/socks-%C".into()],
            ..SshArgs::default()
        };
        let opts = host_options(&[("localforward", &["8080", "/srv/%u/app.sock"])]);
        let (local, remote, dynamic) = forwards(&args, &opts, &tokens()).unwrap();
        assert_eq!(
            local[0].listen,
            Listen::Unix("/run/fwd/server.example-2222.sock".into())
        );
        assert_eq!(local[1].target, Endpoint::Unix("/srv/bob/app.sock".into()));
        assert_eq!(remote[0].listen, Listen::Unix("/tmp/alice.sock".into()));
        // A host field is not a path: its `%h` stays as written, as in OpenSSH.
        assert_eq!(
            remote[0].target,
            Some(Endpoint::Tcp {
                host: "%h".into(),
                port: 80
            })
        );
        assert_eq!(
            dynamic[0].listen,
            Listen::Unix(format!("/tmp/socks-{}", tokens().connection_hash()).into())
        );
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        let args = SshArgs {
            local: vec!["${BURROW_TEST_SURELY_UNSET}/a.sock:db:1".into()],
            ..SshArgs::default()
        };
        let err = forwards(&args, &HostOptions::default(), &tokens()).unwrap_err();
        assert!(
            err.to_string().contains("BURROW_TEST_SURELY_UNSET"),
            "{err}"
        );
    }
}
