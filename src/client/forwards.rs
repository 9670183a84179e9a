//! Forwards added to and removed from a live [`Session`]: what `start_forwards` sets up at
//! connect time, and what a connection-sharing master adds or cancels later (`-O forward`,
//! `-O cancel`). Cancelling a forward closes its listener; connections already made through it
//! keep going, as in OpenSSH.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::{Session, SshHandle};
use crate::config::options::ClientOptions;
use crate::forward::listen::{BindError, BindOptions};
use crate::forward::proxy_header::ProxyProtocol;
use crate::forward::remote::{RemoteForwardError, RemoteForwards};
use crate::forward::{dynamic, local, ForwardContext};
use crate::pipe::Counters;
use crate::spec::{DynamicForward, Listen, LocalForward, RemoteForward};

/// A local listener's forward: -L or -D.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalSpec {
    /// -L.
    Local(LocalForward),
    /// -D.
    Dynamic(DynamicForward),
}

impl LocalSpec {
    fn listen(&self) -> &Listen {
        match self {
            LocalSpec::Local(f) => &f.listen,
            LocalSpec::Dynamic(f) => &f.listen,
        }
    }

    /// Same forward, with `*` and an empty bind address counted as equal.
    fn same(&self, other: &LocalSpec) -> bool {
        let targets_match = match (self, other) {
            (LocalSpec::Local(a), LocalSpec::Local(b)) => a.target == b.target,
            (LocalSpec::Dynamic(_), LocalSpec::Dynamic(_)) => true,
            _ => false,
        };
        targets_match && self.listen().same_as(other.listen())
    }
}

/// The -L/-D listeners of a session, each with the token that closes it.
#[derive(Debug, Default)]
pub struct LocalListeners {
    live: Mutex<Vec<(LocalSpec, CancellationToken)>>,
}

impl LocalListeners {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(LocalSpec, CancellationToken)>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The bind settings of `opts` for local listeners.
pub fn bind_options(opts: &ClientOptions) -> BindOptions {
    BindOptions {
        gateway_ports: opts.gateway_ports,
        unix: opts.stream_local,
    }
}

/// The session's -R registry, with PermitRemoteOpen applied to reverse dynamic forwards.
pub fn remote_registry(opts: &ClientOptions, ctx: &ForwardContext) -> RemoteForwards {
    let permit = opts.permit_remote_open.clone();
    RemoteForwards::with_permit(
        ctx.clone(),
        Arc::new(move |host: &str, port: u16| permit.allows(host, port)),
    )
    .with_proxy_protocol(opts.proxy_protocol)
}

impl Session {
    /// The SSH connection, for callers that open their own channels (a sharing master's
    /// passenger sessions).
    pub fn handle(&self) -> &SshHandle {
        &self.handle
    }

    /// Where this session's forward tasks live (their tracker, shutdown and byte counters).
    pub fn context(&self) -> &ForwardContext {
        &self.ctx
    }

    /// Starts a -L forward; returns the bound addresses and the forward's own counters.
    pub async fn open_local(
        &self,
        fwd: &LocalForward,
        bind: BindOptions,
    ) -> Result<(Vec<String>, Arc<Counters>), BindError> {
        let stop = self.ctx.cancel.child_token();
        let ctx = self.ctx.for_forward();
        let bound = local::start(self.handle.clone(), fwd, bind, &ctx, stop.clone()).await?;
        self.listeners
            .lock()
            .push((LocalSpec::Local(fwd.clone()), stop));
        Ok((bound, ctx.counters))
    }

    /// Starts a -D forward; returns the bound addresses and the forward's own counters.
    pub async fn open_dynamic(
        &self,
        fwd: &DynamicForward,
        bind: BindOptions,
    ) -> Result<(Vec<String>, Arc<Counters>), BindError> {
        let stop = self.ctx.cancel.child_token();
        let ctx = self.ctx.for_forward();
        let bound = dynamic::start(self.handle.clone(), fwd, bind, &ctx, stop.clone()).await?;
        self.listeners
            .lock()
            .push((LocalSpec::Dynamic(fwd.clone()), stop));
        Ok((bound, ctx.counters))
    }

    /// Whether this session already has `spec`'s listener.
    pub fn has_local(&self, spec: &LocalSpec) -> bool {
        self.listeners.lock().iter().any(|(s, _)| s.same(spec))
    }

    /// Closes `spec`'s listener; false when the session has no such forward.
    pub fn close_local(&self, spec: &LocalSpec) -> bool {
        let mut live = self.listeners.lock();
        let Some(index) = live.iter().position(|(s, _)| s.same(spec)) else {
            return false;
        };
        let (_, stop) = live.remove(index);
        stop.cancel();
        true
    }

    /// Requests a -R forward for a mux client; returns the port the server listens on (the
    /// allocated one for port 0; 0 for a unix socket).
    pub async fn open_remote(&self, fwd: &RemoteForward) -> Result<u32, RemoteForwardError> {
        self.remote
            .request_with(&self.handle, fwd, false)
            .await
            .map(|(port, _)| port)
    }

    /// Requests a -R forward whose connections start with `proxy_protocol`'s header (none for
    /// None), whatever the session's ProxyProtocol; returns the port the server listens on and
    /// the forward's own counters. For `burrow up`, where each forward may say.
    pub async fn open_remote_proxied(
        &self,
        fwd: &RemoteForward,
        proxy_protocol: Option<ProxyProtocol>,
    ) -> Result<(u32, Arc<Counters>), RemoteForwardError> {
        self.remote
            .request_proxied(&self.handle, fwd, proxy_protocol)
            .await
    }

    /// The server-side port of an active -R forward, if it is up.
    pub fn remote_port(&self, fwd: &RemoteForward) -> Option<u32> {
        self.remote.find(fwd)
    }

    /// Cancels a -R forward on the server.
    pub async fn close_remote(&self, fwd: &RemoteForward) -> Result<(), RemoteForwardError> {
        self.remote.cancel(&self.handle, fwd).await
    }
}
