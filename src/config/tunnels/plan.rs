//! A tunnel resolved for one relay: the typed options `burrow ssh` would use and the forwards to
//! set up, each one carrying its own label, so status and metrics never pair a label with a
//! forward by position.

use std::fmt;

use super::TunnelSpec;
use crate::config::options::{self, ClientOptions, ConfigPaths, OptionsError};
use crate::forward::proxy_header::ProxyProtocol;
use crate::forward::remote::same_forward;
use crate::spec::{self, DynamicForward, LocalForward, RemoteForward};

/// One forward of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// `-L`.
    Local(LocalForward),
    /// `-D`.
    Dynamic(DynamicForward),
    /// `-R`.
    Remote(RemoteForward),
}

impl fmt::Display for Forward {
    /// The forward as a flag and its spec: `-R 8087:localhost:22`, the label status and
    /// metrics show for it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Forward::Local(l) => write!(f, "-L {l}"),
            Forward::Dynamic(d) => write!(f, "-D {d}"),
            Forward::Remote(r) => write!(f, "-R {r}"),
        }
    }
}

/// A forward to set up, with what applies to it alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedForward {
    /// The forward.
    pub forward: Forward,
    /// The PROXY protocol header its connections start with (remote forwards only).
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// A tunnel resolved for one of its relays.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The options a session is established with.
    pub opts: ClientOptions,
    /// Every forward to set up, the tunnel's own and those a matching ssh_config Host block
    /// adds, in the order they are set up: local, dynamic, remote.
    pub forwards: Vec<PlannedForward>,
}

impl Plan {
    /// Resolves `spec` for `servers[server_index]`.
    pub(super) fn resolve(
        spec: &TunnelSpec,
        server_index: usize,
        paths: &ConfigPaths,
    ) -> Result<Plan, OptionsError> {
        let opts = options::resolve_fixed(&spec.ssh_args(server_index), &spec.fixed(), paths)?;
        // Each of the tunnel's own -R forwards, typed, with its own proxy_protocol: matched to
        // the resolved forwards by what they are, not by position.
        let own_remote: Vec<(RemoteForward, Option<Option<ProxyProtocol>>)> = spec
            .remote
            .iter()
            .filter_map(|r| Some((spec::parse_remote(&r.spec).ok()?, r.proxy_protocol)))
            .collect();
        // The tunnel's proxy_protocol is in opts already (Fixed), over ssh_config's.
        let proxy = |f: &RemoteForward| {
            own_remote
                .iter()
                .find(|(own, _)| same_forward(own, f))
                .and_then(|(_, p)| *p)
                .unwrap_or(opts.proxy_protocol)
        };
        let forwards = opts
            .local_forwards
            .iter()
            .cloned()
            .map(Forward::Local)
            .chain(opts.dynamic_forwards.iter().cloned().map(Forward::Dynamic))
            .chain(opts.remote_forwards.iter().cloned().map(Forward::Remote))
            .map(|forward| PlannedForward {
                proxy_protocol: match &forward {
                    Forward::Remote(f) => proxy(f),
                    _ => None,
                },
                forward,
            })
            .collect();
        Ok(Plan { opts, forwards })
    }
}
