//! One relay session: public key authentication against authorized_keys, the forwarding policy,
//! and refusal of everything that is not forwarding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use russh::keys::{HashAlg, PublicKey};
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::authorized_keys::AuthorizedKey;
use super::listeners::{self, Conflict, ListenerStats, SessionRef};
use super::policy::{self, Decision, ListenAddr};
use super::socks_gate;
use super::stats::{self, LiveSession, Refusal};
use super::Relay;
use crate::forward::listen::{bind_tcp, bind_tcp_all, BindError, Listener};
use crate::forward::{io_reason, ForwardContext};
use crate::pipe::Counters;
use crate::resume::{self, ChannelSpec};
use crate::spec::Endpoint;

/// The message a client gets when it asks for a shell, a command or a subsystem.
pub const FORWARD_ONLY_MESSAGE: &str =
    "burrow serve only forwards ports: shell, exec and subsystem requests are refused (use ssh -N or -W)\r\n";

/// Binds every address on `port`; returns what bound and the first failure, if any.
fn bind_each(ips: &[IpAddr], port: u16) -> (Vec<Listener>, Option<String>) {
    let mut bound = Vec::new();
    let mut error = None;
    for ip in ips {
        match bind_tcp(std::net::SocketAddr::new(*ip, port)) {
            Ok(l) => bound.push(Listener::Tcp(l)),
            Err(e) => {
                error.get_or_insert_with(|| format!("bind [{ip}]:{port}: {}", io_reason(&e)));
            }
        }
    }
    (bound, error)
}

/// Per-session state.
pub struct SessionHandler {
    relay: Arc<Relay>,
    id: u64,
    peer: SocketAddr,
    key: Option<Authenticated>,
    ctx: ForwardContext,
    authenticated: CancellationToken,
    unauth_permit: Option<OwnedSemaphorePermit>,
    /// The resume control channel and what arrived on it so far.
    resume_control: Option<(ChannelId, Vec<u8>)>,
}

/// The key a session authenticated with.
#[derive(Clone)]
struct Authenticated {
    entry: AuthorizedKey,
    fp: String,
    user: String,
}

impl SessionHandler {
    /// A handler for a new connection; `permit` holds its unauthenticated-connection slot until
    /// authentication succeeds.
    pub fn new(
        relay: Arc<Relay>,
        id: u64,
        peer: SocketAddr,
        cancel: CancellationToken,
        authenticated: CancellationToken,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let mut ctx = ForwardContext::new(cancel);
        ctx.tracker = relay.tracker.clone();
        // This session's -L/-D/-W channels; -R listeners get counters of their own.
        ctx.counters = Arc::new(Counters::child_of(relay.counters.clone()));
        Self {
            relay,
            id,
            peer,
            key: None,
            ctx,
            authenticated,
            unauth_permit: Some(permit),
            resume_control: None,
        }
    }

    /// The authorized_keys entry for `key` if it may log in from this peer now.
    /// Like sshd, every line for the key is tried (a later line may allow what `from=` or
    /// `expiry-time` on an earlier one refused).
    fn authorize(&self, key: &PublicKey) -> Result<AuthorizedKey, String> {
        self.relay
            .keys()
            .authorize(key, self.peer.ip(), SystemTime::now())
            .cloned()
            .map_err(|r| r.to_string())
    }

    /// Counts and logs a failed authentication, then holds the failure reply for the source's
    /// brute-force penalty (see [`super::penalty`]); ends early if the session is being closed.
    async fn reject(&self, key: &PublicKey, why: &str) -> Auth {
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        self.relay.stats.auth_failed(self.peer, &fp, why);
        let verdict = self.relay.penalties.failure(self.peer.ip());
        tracing::warn!(
            peer = %self.peer,
            fingerprint = %fp,
            reason = why,
            failures = verdict.failures,
            delay_ms = verdict.delay.as_millis() as u64,
            "authentication refused"
        );
        if !verdict.delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(verdict.delay) => {}
                () = self.ctx.cancel.cancelled() => {}
            }
        }
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        }
    }

    fn refuse(&self, what: &str, kind: Refusal, reason: &dyn std::fmt::Display) {
        let fp = self.key.as_ref().map(|k| k.fp.as_str()).unwrap_or("-");
        tracing::warn!(session = self.id, fingerprint = fp, request = what, %reason, "forward refused");
        self.relay
            .stats
            .refused(kind, &self.label(), &format!("{what}: {reason}"));
    }

    /// How events name this session.
    fn label(&self) -> String {
        match &self.key {
            Some(k) => stats::session_label(self.id, &k.fp, &k.entry.comment),
            None => format!("#{} {}", self.id, self.peer),
        }
    }

    fn channel_cap(&self) -> u32 {
        let key_cap = self.key.as_ref().and_then(|k| k.entry.options.max_channels);
        key_cap.unwrap_or(self.relay.config.limits.max_channels_per_key)
    }

    fn listener_cap(&self) -> u32 {
        let key_cap = self
            .key
            .as_ref()
            .and_then(|k| k.entry.options.max_listeners);
        key_cap.unwrap_or(self.relay.config.limits.max_listeners_per_key)
    }

    /// Refuses a session request the way a ForceCommand would: the request "succeeds", the
    /// client shows our message on stderr and exits with status 1. (A bare failure reply makes
    /// OpenSSH exit with "exec request failed" before the message can be shown.)
    fn refuse_session_request(&self, channel: ChannelId, what: &str, session: &mut Session) {
        tracing::info!(request = what, "session request refused: forwarding only");
        let _ = session.channel_success(channel);
        let _ = session.extended_data(channel, 1, FORWARD_ONLY_MESSAGE.as_bytes().to_vec());
        let _ = session.exit_status_request(channel, 1);
        let _ = session.eof(channel);
        let _ = session.close(channel);
    }

    /// The resume control channel: the client's instance id binds this session to its streams
    /// (see [`crate::resume`]); one answer, then the channel stays open and quiet.
    fn resume_control_data(&mut self, channel: ChannelId, data: &[u8], session: &mut Session) {
        let Some((control, buf)) = self.resume_control.as_mut() else {
            return;
        };
        if *control != channel || self.ctx.resume().is_some() {
            return;
        }
        buf.extend_from_slice(data);
        let parsed = resume::parse_instance_message(buf);
        let (Some(key), Ok(Some(instance))) = (self.key.as_ref(), &parsed) else {
            if parsed.is_err() {
                tracing::info!(session = self.id, "bad resume control message; closing it");
                let _ = session.close(channel);
            }
            return;
        };
        let registry = self.relay.resume.bind(&key.fp, *instance, session.handle());
        self.ctx.enable_resume(registry);
        tracing::info!(session = self.id, fingerprint = %key.fp, "resumable streams on");
        let mut answer = resume::CONTROL_MAGIC.to_vec();
        answer.push(0);
        let _ = session.data(channel, answer);
    }

    /// Resolves where a -R listener binds, by GatewayPorts.
    async fn listen_ips(&self, requested: &str, port: u16) -> Result<Vec<IpAddr>, BindError> {
        Ok(
            match policy::listen_addr(requested, self.relay.config.policy.gateway_ports) {
                ListenAddr::Loopback => vec![
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ],
                ListenAddr::Any => vec![
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                ],
                ListenAddr::Host(h) => tokio::net::lookup_host((h.as_str(), port))
                    .await
                    .map_err(|e| BindError::Resolve {
                        host: h.clone(),
                        reason: io_reason(&e),
                    })?
                    .map(|a| a.ip())
                    .collect(),
            },
        )
    }

    /// Binds for a -R request; when the port is held by earlier, unresponsive sessions of the
    /// same key, takes it over.
    async fn bind_with_takeover(
        &self,
        ips: &[IpAddr],
        port: u16,
        fp: &str,
    ) -> Result<Vec<Listener>, String> {
        if port == 0 {
            // The first address picks the port for the others; nothing to take over.
            return bind_tcp_all(ips, 0).map_err(|e| e.to_string());
        }
        let (bound, error) = bind_each(ips, port);
        let Some(error) = error else {
            return Ok(bound);
        };
        // Some address is taken. If earlier sessions of this key hold the port, they must be
        // probed even when another address bound (else the port could end up half served).
        let same_key = matches!(
            self.relay.registry.conflict(port, self.id, fp),
            Conflict::SameKey(_)
        );
        if !same_key {
            // Someone else's port: OpenSSH's rule, succeed if any address bound.
            return if bound.is_empty() {
                Err(error)
            } else {
                Ok(bound)
            };
        }
        drop(bound);
        if !self.take_over(port, fp).await {
            return Err(error);
        }
        // The evicted listeners close as their tasks see the cancellation. Wait until every
        // address binds again (accepting the first partial bind could leave the port on IPv4
        // only while the old IPv6 listener was still closing); fall back to what binds.
        for _ in 0..40 {
            let (bound, error) = bind_each(ips, port);
            if error.is_none() {
                return Ok(bound);
            }
            drop(bound);
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        bind_tcp_all(ips, port).map_err(|e| e.to_string())
    }

    /// Probes the sessions of the same key that hold `port`; if none answers, ends them.
    async fn take_over(&self, port: u16, fp: &str) -> bool {
        let Conflict::SameKey(holders) = self.relay.registry.conflict(port, self.id, fp) else {
            return false;
        };
        let deadline = self.relay.config.limits.takeover_probe;
        for holder in &holders {
            if listeners::probe(&holder.handle, deadline).await {
                tracing::info!(
                    port,
                    holder = holder.id,
                    "port held by a live session of the same key; not taking over"
                );
                return false;
            }
        }
        for holder in holders {
            self.relay.stats.took_over(&self.label(), port, holder.id);
            tracing::warn!(
                port,
                holder = holder.id,
                "earlier session did not answer a keepalive; closing it and taking its port over"
            );
            holder.cancel.cancel();
            self.relay.registry.release_session(holder.id);
        }
        true
    }

    /// Accepts connections on a -R listener and opens a `forwarded-tcpip` channel for each.
    fn serve_listener(
        &self,
        listeners: Vec<Listener>,
        requested_addr: String,
        port: u16,
        stop: CancellationToken,
        handle: russh::server::Handle,
        counters: Arc<Counters>,
    ) {
        let label = self.label();
        for listener in listeners {
            let mut ctx = self.ctx.clone();
            ctx.counters = counters.clone();
            let label = label.clone();
            let relay = self.relay.clone();
            let stop = stop.clone();
            let handle = handle.clone();
            let addr = requested_addr.clone();
            let fp = self.key.as_ref().map(|k| k.fp.clone()).unwrap_or_default();
            let cap = self.channel_cap();
            let gate = self
                .key
                .as_ref()
                .map(|k| k.entry.options.remote_open.clone())
                .unwrap_or_default();
            self.ctx.tracker.spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        r = listener.accept() => r,
                        () = stop.cancelled() => return,
                        () = ctx.cancel.cancelled() => return,
                        () = relay.stop_listening.cancelled() => return,
                    };
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Some(slot) = relay.open_channel_slot(&fp, cap) else {
                        tracing::warn!(fingerprint = %fp, "channel cap reached; dropping forwarded connection");
                        relay.stats.refused(
                            Refusal::ChannelCap,
                            &label,
                            &format!("forwarded connection to port {port}: open channel cap reached for this key"),
                        );
                        continue;
                    };
                    let forwarded = Forwarded {
                        handle: handle.clone(),
                        addr: addr.clone(),
                        port,
                        peer,
                    };
                    let ctx2 = ctx.clone();
                    let gate = gate.clone();
                    let fp = fp.clone();
                    ctx.tracker.spawn(async move {
                        forwarded.serve(stream, &gate, &ctx2, &fp, slot).await;
                    });
                }
            });
        }
    }
}

/// One connection accepted on a -R listener, to be carried to the client.
struct Forwarded {
    handle: russh::server::Handle,
    addr: String,
    port: u16,
    peer: crate::forward::listen::Peer,
}

impl Forwarded {
    /// Opens the `forwarded-tcpip` channel and pumps; for a key with
    /// `burrow-permitremoteopen`, only after its SOCKS request passed the gate.
    /// `guard` (the key's channel slot) lives as long as the connection. Gated listeners stay
    /// plain (not resumable): their SOCKS bytes go through the channel before any stream hello.
    async fn serve<G: Send + 'static>(
        self,
        mut stream: crate::forward::Stream,
        gate: &[policy::PermitOpen],
        ctx: &ForwardContext,
        fp: &str,
        guard: G,
    ) {
        let label = format!("{}:{}", self.addr, self.port);
        if gate.is_empty() {
            let Some(ch) = self.open().await else {
                return;
            };
            match ctx.carrier(ch, Some(self.spec())).await {
                Ok(c) => ctx.carry(c, stream, &label, guard).await,
                Err(e) => tracing::info!(error = %e, "forwarded connection failed"),
            }
            return;
        }
        let _guard = guard;
        match socks_gate::admit(&mut stream, gate, || self.open()).await {
            Ok(ch) => ctx.pump(ch, stream, &label).await,
            Err(e) => {
                tracing::info!(fingerprint = fp, listener = %label, error = %e, "reverse dynamic connection refused")
            }
        }
    }

    /// How a resumable stream re-opens this channel on the client's next session.
    fn spec(&self) -> ChannelSpec {
        let (orig, orig_port) = self.peer.originator();
        ChannelSpec::Forwarded {
            addr: self.addr.clone(),
            port: u32::from(self.port),
            orig,
            orig_port,
        }
    }

    async fn open(&self) -> Option<russh::ChannelStream<Msg>> {
        let (orig, orig_port) = self.peer.originator();
        match self
            .handle
            .channel_open_forwarded_tcpip(self.addr.clone(), u32::from(self.port), orig, orig_port)
            .await
        {
            Ok(ch) => Some(ch.into_stream()),
            Err(e) => {
                tracing::info!(error = %e, "client refused the forwarded connection");
                None
            }
        }
    }
}

impl russh::server::Handler for SessionHandler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        })
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(match self.authorize(offer.public_key) {
            Ok(_) => Auth::Accept,
            Err(why) => self.reject(offer.public_key, &why).await,
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.authorize(key.public_key) {
            Ok(entry) => {
                let fp = key.public_key.fingerprint(HashAlg::Sha256).to_string();
                tracing::info!(session = self.id, user, fingerprint = %fp, comment = %entry.comment, "authenticated");
                self.key = Some(Authenticated {
                    entry,
                    fp,
                    user: user.to_string(),
                });
                Ok(Auth::Accept)
            }
            Err(why) => Ok(self.reject(key.public_key, &why).await),
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        if let Some(k) = &self.key {
            self.relay.stats.session_started(
                self.id,
                LiveSession {
                    fingerprint: k.fp.clone(),
                    comment: k.entry.comment.clone(),
                    user: k.user.clone(),
                    peer: self.peer,
                    since: crate::observe::unix_secs(),
                    direct: self.ctx.counters.clone(),
                },
            );
        }
        self.relay.penalties.forgive(self.peer.ip());
        self.authenticated.cancel();
        self.unauth_permit = None;
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Accepted so that shell/exec requests can be refused with a readable message.
        reply.accept().await;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_session_request(channel, "shell", session);
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_session_request(channel, "exec", session);
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == resume::SUBSYSTEM {
            // Keys with burrow-permitremoteopen keep plain forwarding: their -R connections
            // carry SOCKS bytes the relay reads before any stream hello could come.
            let eligible = self
                .key
                .as_ref()
                .is_some_and(|k| k.entry.options.remote_open.is_empty());
            if eligible && self.resume_control.is_none() {
                let _ = session.channel_success(channel);
                self.resume_control = Some((channel, Vec::new()));
            } else {
                let _ = session.channel_failure(channel);
            }
            return Ok(());
        }
        self.refuse_session_request(channel, &format!("subsystem {name}"), session);
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.resume_control_data(channel, data, session);
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(key) = self.key.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let what = format!("direct-tcpip {host_to_connect}:{port_to_connect}");
        let Ok(port) = u16::try_from(port_to_connect) else {
            self.refuse(&what, Refusal::BadPort, &"port out of range");
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        if let Decision::Deny(reason) = policy::check_open(
            &self.relay.config.policy,
            &key.entry.options,
            host_to_connect,
            port,
        ) {
            self.refuse(&what, reason.into(), &reason);
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let Some(slot) = self.relay.open_channel_slot(&key.fp, self.channel_cap()) else {
            self.refuse(
                &what,
                Refusal::ChannelCap,
                &"open channel cap reached for this key",
            );
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        let target = Endpoint::Tcp {
            host: host_to_connect.to_string(),
            port,
        };
        self.ctx.dial_then_pump(channel, target, reply, slot);
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(key) = self.key.clone() else {
            return Ok(false);
        };
        let what = format!("tcpip-forward {address}:{port}");
        let Ok(requested) = u16::try_from(*port) else {
            self.refuse(&what, Refusal::BadPort, &"port out of range");
            return Ok(false);
        };
        if let Decision::Deny(reason) = policy::check_listen(
            &self.relay.config.policy,
            &key.entry.options,
            address,
            requested,
        ) {
            self.refuse(&what, reason.into(), &reason);
            return Ok(false);
        }
        if self.relay.registry.count_for_key(&key.fp) >= self.listener_cap() as usize {
            self.refuse(
                &what,
                Refusal::ListenerCap,
                &"listener cap reached for this key",
            );
            return Ok(false);
        }
        let ips = match self.listen_ips(address, requested).await {
            Ok(ips) => ips,
            Err(e) => {
                self.refuse(&what, Refusal::Resolve, &e);
                return Ok(false);
            }
        };
        let listeners = match self.bind_with_takeover(&ips, requested, &key.fp).await {
            Ok(l) => l,
            Err(e) => {
                self.refuse(&what, Refusal::Bind, &e);
                return Ok(false);
            }
        };
        let bound: Vec<String> = listeners.iter().map(|l| l.describe()).collect();
        let actual = match listeners.first() {
            Some(Listener::Tcp(l)) => l.local_addr().map(|a| a.port()).unwrap_or(requested),
            _ => requested,
        };
        *port = u32::from(actual);
        let stop = CancellationToken::new();
        let me = SessionRef {
            id: self.id,
            key_fp: key.fp.clone(),
            handle: session.handle(),
            cancel: self.ctx.cancel.clone(),
        };
        let counters = Arc::new(Counters::child_of(self.relay.counters.clone()));
        let listener_stats = ListenerStats {
            bound: bound.clone(),
            counters: counters.clone(),
            since: crate::observe::unix_secs(),
        };
        self.relay
            .registry
            .add(actual, address, me, stop.clone(), listener_stats);
        tracing::info!(session = self.id, fingerprint = %key.fp, requested = %address, ?bound, port = actual, "remote forward listening");
        self.serve_listener(
            listeners,
            address.to_string(),
            actual,
            stop,
            session.handle(),
            counters,
        );
        Ok(true)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Ok(port) = u16::try_from(port) else {
            return Ok(false);
        };
        let found = self.relay.registry.cancel(self.id, address, port);
        if found {
            tracing::info!(address, port, "remote forward cancelled");
        }
        Ok(found)
    }
}
