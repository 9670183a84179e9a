//! -R: ask the server to listen (`tcpip-forward` / `streamlocal-forward@openssh.com`) and serve
//! each `forwarded-tcpip` channel it opens: connect it to the forward's target, or, for a
//! reverse dynamic forward (no target), answer SOCKS on it ([`super::rdynamic`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::Msg;
use russh::Channel;
use tokio::sync::Notify;

use super::proxy_header::ProxyProtocol;
use super::rdynamic::{self, OpenCheck};
use super::{ClientHandle, ClientSession, Dial, ForwardContext};
use crate::pipe::Counters;
use crate::spec::{Endpoint, Listen, RemoteForward};

/// Why a remote forward could not be set up or cancelled.
#[derive(Debug, thiserror::Error)]
pub enum RemoteForwardError {
    /// The server refused the listen request.
    #[error("remote port forwarding failed for listen port {0}")]
    Port(u16),
    /// The server refused the unix socket listen request.
    #[error("remote port forwarding failed for listen path {0}")]
    Path(String),
    /// Cancelling a forward this session does not have.
    #[error("port not forwarded")]
    NotForwarded,
    /// The server refused to cancel it.
    #[error("port not in permitted opens")]
    CancelRefused,
}

/// One active server-side listener and where its connections go.
#[derive(Debug, Clone)]
struct Active {
    /// The forward as requested (port 0 when the server allocated one).
    spec: RemoteForward,
    /// The bind address we sent ("localhost", "", or literal), or the socket path.
    listen_host: String,
    /// The port the server listens on (the allocated one for port 0); 0 for unix sockets.
    listen_port: u32,
    /// Where this forward's connections run and are counted.
    ctx: ForwardContext,
    /// The PROXY protocol header its connections to a target start with, if any.
    proxy_protocol: Option<ProxyProtocol>,
}

/// How long a channel for a listener we do not know yet waits for a request in flight to be
/// answered and registered.
const PENDING_WAIT: Duration = Duration::from_secs(5);

/// Where a connection on one of our listeners goes: the target (none for reverse dynamic), the
/// context of the forward it belongs to, and that forward's PROXY protocol version.
type Route = (Option<Endpoint>, ForwardContext, Option<ProxyProtocol>);

/// Bytes written to a connection's target before the stream (a PROXY protocol header).
type Preamble = Option<Vec<u8>>;

/// Who connected to which of our TCP listeners, as the server reported it: what a PROXY
/// protocol header says.
struct Visitor {
    originator: (String, u32),
    listener: (String, u32),
}

/// The live -R forwards of one session. The SSH handler consults it for every channel the server
/// opens, so only listeners we asked for are ever connected anywhere.
pub struct RemoteForwards {
    active: Mutex<Vec<Active>>,
    /// Requests sent and not yet registered. The server may open a channel on a new listener as
    /// soon as it has answered, before the task that asked has registered the port (OpenSSH
    /// handles the reply inside its dispatch loop; russh hands it to the asking task), so such a
    /// channel waits for the registration instead of being refused.
    pending: AtomicUsize,
    registered: Notify,
    ctx: ForwardContext,
    permit: OpenCheck,
    /// The PROXY protocol header -R connections to a target start with, unless their forward
    /// says otherwise.
    proxy_protocol: Option<ProxyProtocol>,
    /// Set once a visitor address that is not an IP literal has been logged.
    unknown_logged: AtomicBool,
}

impl std::fmt::Debug for RemoteForwards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteForwards")
            .field("active", &self.lock().len())
            .finish_non_exhaustive()
    }
}

/// The bind address OpenSSH sends for a -R listen spec: "localhost" when none was given, "" for
/// `*` or empty (all interfaces), else the literal (channels.c `channel_rfwd_bind_host`).
pub fn rfwd_bind_host(bind: &Option<String>) -> String {
    match bind.as_deref() {
        None => "localhost".to_string(),
        Some("") | Some("*") => String::new(),
        Some(h) => h.to_string(),
    }
}

/// Whether two -R specs name the same forward; `*` and an empty bind address are the same
/// (both mean all interfaces; `-O` sends the empty one as `*`).
pub fn same_forward(a: &RemoteForward, b: &RemoteForward) -> bool {
    a.listen.same_as(&b.listen) && a.target == b.target
}

/// What `Allocated port N for remote forward to X` names: the target, or `socks:0` for a
/// reverse dynamic forward (OpenSSH's connect host and port for those).
pub fn target_text(target: &Option<Endpoint>) -> String {
    target
        .as_ref()
        .map_or_else(|| "socks:0".to_string(), ToString::to_string)
}

impl RemoteForwards {
    /// An empty registry whose connection tasks live in `ctx`; reverse dynamic forwards may
    /// connect anywhere.
    pub fn new(ctx: ForwardContext) -> Self {
        Self::with_permit(ctx, Arc::new(|_: &str, _: u16| true))
    }

    /// An empty registry whose reverse dynamic forwards connect only where `permit` allows.
    pub fn with_permit(ctx: ForwardContext, permit: OpenCheck) -> Self {
        Self {
            active: Mutex::new(Vec::new()),
            pending: AtomicUsize::new(0),
            registered: Notify::new(),
            ctx,
            permit,
            proxy_protocol: None,
            unknown_logged: AtomicBool::new(false),
        }
    }

    /// Makes every -R connection to a target start with a PROXY protocol header carrying the
    /// visitor's address (`ProxyProtocol`), unless its forward was requested with a version of
    /// its own ([`Self::request_proxied`]).
    pub fn with_proxy_protocol(mut self, version: Option<ProxyProtocol>) -> Self {
        self.proxy_protocol = version;
        self
    }

    /// The `version` PROXY protocol header for `visitor`'s connection.
    fn preamble(&self, version: Option<ProxyProtocol>, visitor: &Visitor) -> Preamble {
        let version = version?;
        let (host, port) = (visitor.listener.0.as_str(), visitor.listener.1);
        let originator = (visitor.originator.0.as_str(), visitor.originator.1);
        let header = version.header(originator, (host, port));
        if !header.known && !self.unknown_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                originator = originator.0,
                listener = %format!("{host}:{port}"),
                "the server did not report the visitor's address as an IP address; \
                 PROXY protocol headers say UNKNOWN (v1) / LOCAL (v2) for such connections"
            );
        }
        Some(header.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The port the server listens on for `fwd`, if that forward is already up (the allocated
    /// port for a port-0 request; 0 for unix sockets).
    pub fn find(&self, fwd: &RemoteForward) -> Option<u32> {
        self.lock()
            .iter()
            .find(|a| same_forward(&a.spec, fwd))
            .map(|a| a.listen_port)
    }

    /// Requests the forward on the server and registers it. Returns the port the server listens
    /// on (allocated when 0 was asked; 0 for unix sockets) and the counters of this forward's
    /// connections. Prints ssh(1)'s "Allocated port" message for port 0.
    pub async fn request<H: ClientSession>(
        &self,
        handle: &ClientHandle<H>,
        fwd: &RemoteForward,
    ) -> Result<(u32, Arc<Counters>), RemoteForwardError> {
        self.request_with(handle, fwd, true).await
    }

    /// [`Self::request`]; `announce` prints the "Allocated port" message (a sharing master
    /// only logs it at debug level, as OpenSSH's does, and hands the port to its client).
    pub async fn request_with<H: ClientSession>(
        &self,
        handle: &ClientHandle<H>,
        fwd: &RemoteForward,
        announce: bool,
    ) -> Result<(u32, Arc<Counters>), RemoteForwardError> {
        self.request_inner(handle, fwd, announce, self.proxy_protocol)
            .await
    }

    /// [`Self::request`] with this forward's own PROXY protocol version (`burrow up`'s
    /// per-forward `proxy_protocol`), whatever the registry's is.
    pub async fn request_proxied<H: ClientSession>(
        &self,
        handle: &ClientHandle<H>,
        fwd: &RemoteForward,
        proxy_protocol: Option<ProxyProtocol>,
    ) -> Result<(u32, Arc<Counters>), RemoteForwardError> {
        self.request_inner(handle, fwd, true, proxy_protocol).await
    }

    async fn request_inner<H: ClientSession>(
        &self,
        handle: &ClientHandle<H>,
        fwd: &RemoteForward,
        announce: bool,
        proxy_protocol: Option<ProxyProtocol>,
    ) -> Result<(u32, Arc<Counters>), RemoteForwardError> {
        let _in_flight = InFlight::new(self);
        let ctx = self.ctx.for_forward();
        let counters = ctx.counters.clone();
        match &fwd.listen {
            Listen::Tcp { bind, port } => {
                let host = rfwd_bind_host(bind);
                let asked = u32::from(*port);
                let got = handle
                    .tcpip_forward(host.clone(), asked)
                    .await
                    .map_err(|_| RemoteForwardError::Port(*port))?;
                let listen_port = if asked == 0 { got } else { asked };
                // Registered before the port is announced: whoever connects as soon as they read
                // "Allocated port" must find the listener known here.
                self.register(Active {
                    spec: fwd.clone(),
                    listen_host: host,
                    listen_port,
                    ctx,
                    proxy_protocol,
                });
                if asked == 0 {
                    let to = target_text(&fwd.target);
                    if announce {
                        tracing::info!("Allocated port {listen_port} for remote forward to {to}");
                    } else {
                        tracing::debug!(
                            "Allocated port {listen_port} for mux remote forward to {to}"
                        );
                    }
                }
                Ok((listen_port, counters))
            }
            Listen::Unix(path) => {
                let p = path.to_string_lossy().to_string();
                handle
                    .streamlocal_forward(p.clone())
                    .await
                    .map_err(|_| RemoteForwardError::Path(p.clone()))?;
                self.register(Active {
                    spec: fwd.clone(),
                    listen_host: p,
                    listen_port: 0,
                    ctx,
                    proxy_protocol,
                });
                Ok((0, counters))
            }
        }
    }

    fn register(&self, active: Active) {
        self.lock().push(active);
        self.registered.notify_waiters();
    }

    /// Asks the server to stop listening for `fwd` (`cancel-tcpip-forward`, or its streamlocal
    /// form) and forgets it. Connections already forwarded keep going.
    pub async fn cancel<H: ClientSession>(
        &self,
        handle: &ClientHandle<H>,
        fwd: &RemoteForward,
    ) -> Result<(), RemoteForwardError> {
        let found = {
            let mut active = self.lock();
            let index = active.iter().position(|a| same_forward(&a.spec, fwd));
            index.map(|i| active.remove(i))
        };
        let Some(active) = found else {
            return Err(RemoteForwardError::NotForwarded);
        };
        let result = match &active.spec.listen {
            Listen::Tcp { .. } => {
                handle
                    .cancel_tcpip_forward(active.listen_host.clone(), active.listen_port)
                    .await
            }
            Listen::Unix(_) => {
                handle
                    .cancel_streamlocal_forward(active.listen_host.clone())
                    .await
            }
        };
        result.map_err(|_| RemoteForwardError::CancelRefused)
    }

    /// Finds the forward for a connection the server accepted on `host:port`. The port decides;
    /// the address breaks ties, since servers report it in different spellings.
    fn target_for(&self, host: &str, port: u32) -> Option<Route> {
        let active = self.lock();
        let same_port: Vec<&Active> = active
            .iter()
            .filter(|a| a.listen_port == port && matches!(a.spec.listen, Listen::Tcp { .. }))
            .collect();
        same_port
            .iter()
            .find(|a| a.listen_host == host)
            .or(same_port.first())
            .map(|a| (a.spec.target.clone(), a.ctx.clone(), a.proxy_protocol))
    }

    fn target_for_path(&self, path: &str) -> Option<Route> {
        self.lock()
            .iter()
            .find(|a| matches!(a.spec.listen, Listen::Unix(_)) && a.listen_host == path)
            .map(|a| (a.spec.target.clone(), a.ctx.clone(), a.proxy_protocol))
    }

    /// Handles a `forwarded-tcpip` channel: dial the target in a task, then accept the channel
    /// and pump, or reject it with "connect failed" as ssh(1) does; or serve SOCKS on it for a
    /// reverse dynamic forward. A channel for a listener not registered yet waits (bounded) while
    /// one of our requests is still in flight. `originator` is the visitor's address as the
    /// server reported it (for `ProxyProtocol`).
    pub fn dispatch(
        self: &Arc<Self>,
        channel: Channel<Msg>,
        (host, port): (&str, u32),
        originator: (&str, u32),
        reply: russh::client::ChannelOpenHandle,
    ) {
        let visitor = Visitor {
            originator: (originator.0.to_string(), originator.1),
            listener: (host.to_string(), port),
        };
        let (me, host) = (self.clone(), host.to_string());
        let listener = format!("{host}:{port}");
        self.route(channel, reply, listener, Some(visitor), move || {
            me.target_for(&host, port)
        });
    }

    /// Same as [`Self::dispatch`] for `forwarded-streamlocal@openssh.com`.
    pub fn dispatch_path(
        self: &Arc<Self>,
        channel: Channel<Msg>,
        path: &str,
        reply: russh::client::ChannelOpenHandle,
    ) {
        let (me, path) = (self.clone(), path.to_string());
        self.route(channel, reply, path.clone(), None, move || {
            me.target_for_path(&path)
        });
    }

    /// Finds the route for a channel now, or after a request in flight has registered it.
    fn route(
        self: &Arc<Self>,
        channel: Channel<Msg>,
        reply: russh::client::ChannelOpenHandle,
        listener: String,
        visitor: Option<Visitor>,
        find: impl Fn() -> Option<Route> + Send + Sync + 'static,
    ) {
        let found = find();
        if found.is_some() || self.pending.load(Ordering::SeqCst) == 0 {
            self.serve(channel, reply, &listener, found, visitor);
            return;
        }
        let me = self.clone();
        self.ctx.tracker.spawn(async move {
            let found = tokio::time::timeout(PENDING_WAIT, me.wait_for(&find))
                .await
                .ok()
                .flatten();
            me.serve(channel, reply, &listener, found, visitor);
        });
    }

    /// Waits until `find` succeeds, or no request is in flight any more.
    async fn wait_for(&self, find: &impl Fn() -> Option<Route>) -> Option<Route> {
        loop {
            let changed = self.registered.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(found) = find() {
                return Some(found);
            }
            if self.pending.load(Ordering::SeqCst) == 0 {
                return None;
            }
            tokio::select! {
                () = changed => {}
                () = self.ctx.cancel.cancelled() => return None,
            }
        }
    }

    fn serve(
        &self,
        channel: Channel<Msg>,
        reply: russh::client::ChannelOpenHandle,
        listener: &str,
        found: Option<Route>,
        visitor: Option<Visitor>,
    ) {
        let preamble = match (&found, &visitor) {
            (Some((Some(_), _, version)), Some(visitor)) => self.preamble(*version, visitor),
            _ => None,
        };
        if self.ctx.resume().is_some() {
            // A re-attaching stream may arrive before this session re-requested its listener.
            let (dial, ctx) = match found {
                Some((Some(target), ctx, _)) => (Dial::Target(target, preamble), ctx),
                Some((None, ctx, _)) => (Dial::Socks(self.permit.clone()), ctx),
                None => (Dial::Nowhere, self.ctx.clone()),
            };
            ctx.tracker
                .spawn(ctx.clone().serve_channel(channel, dial, reply, ()));
            return;
        }
        match found {
            None => {
                tracing::warn!("rejected forwarded connection for unknown listener {listener}");
                drop(reply);
            }
            Some((Some(target), ctx, _)) => {
                let dial = Dial::Target(target, preamble);
                ctx.tracker
                    .spawn(ctx.clone().serve_channel(channel, dial, reply, ()));
            }
            Some((None, ctx, _)) => rdynamic::serve(channel, reply, &ctx, self.permit.clone()),
        }
    }
}

/// Counts one request as in flight for as long as it lives (also when the request is dropped
/// half-way), and wakes waiting channels when it ends.
struct InFlight<'a>(&'a RemoteForwards);

impl<'a> InFlight<'a> {
    fn new(forwards: &'a RemoteForwards) -> Self {
        forwards.pending.fetch_add(1, Ordering::SeqCst);
        Self(forwards)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
        self.0.registered.notify_waiters();
    }
}

/// Shared registry handle.
pub type SharedRemoteForwards = Arc<RemoteForwards>;
