//! The relay's -R listeners, in one place: who holds which port (the registry), each session's
//! listeners ([`SessionListeners`]: where they bind by GatewayPorts, the per-key listener cap,
//! and the stale-session takeover) and the `forwarded-tcpip` channel every accepted connection
//! travels in. Binding and the accept loop are [`crate::forward::listen`]'s, as for -L and -D.
//!
//! Takeover: when a key asks for a port still held by an earlier session of the same key, the
//! earlier session is probed; if it does not answer within a short deadline it is closed and the
//! port handed over at once. No probe is needed when the earlier session is one the asking
//! client has left (same client instance, known through resumable streams) or one that already
//! missed the relay's keepalive: it is replaced at once. (OpenSSH keeps such a port until TCP
//! gives up on the dead session, which can take many minutes.)
//!
//! Aliases ([`super::alias`]) live in the same registry and obey the same cap and takeover, but
//! bind nothing: a name belongs to the first key that publishes it until that key's last alias
//! of the name is gone, and a visitor's `direct-tcpip` to it becomes a `forwarded-tcpip`
//! channel on the publisher's session ([`AliasTarget::dial`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::server::Msg;
use tokio_util::sync::CancellationToken;

use super::access_log::{self, ending, Metered, Track, Tracked};
use super::policy::{self, PermitOpen};
use super::socks_gate;
use super::stats::Refusal;
use super::{ChannelSlot, Relay};
use crate::forward::listen::{self, bind_addrs, bind_each, bind_tcp_all, Listener, Peer};
use crate::forward::{Carrier, Dial, ForwardContext, Stream};
use crate::pipe::Counters;
use crate::resume::{BoxedIo, ChannelSpec, FirstBytes};

/// A session that holds listeners, as the registry sees it.
#[derive(Clone)]
pub struct SessionRef {
    /// Relay-wide session number.
    pub id: u64,
    /// Fingerprint of the key that authenticated it.
    pub key_fp: String,
    /// To probe or disconnect it.
    pub handle: russh::server::Handle,
    /// Cancels everything the session owns (listeners, pumps).
    pub cancel: CancellationToken,
    /// Whether it answers the relay's keepalives (see [`super::liveness`]).
    pub liveness: Arc<super::liveness::Liveness>,
}

impl std::fmt::Debug for SessionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRef")
            .field("id", &self.id)
            .field("key_fp", &self.key_fp)
            .finish()
    }
}

/// One listener, or a reservation for one: the slot is taken before the request awaits
/// anything (name lookup, takeover probe, bind), so concurrent requests cannot all pass the cap.
#[derive(Debug)]
struct Entry {
    /// Names the entry for its [`Reservation`].
    id: u64,
    /// The requested port while reserved (0: to be allocated), then the bound one.
    port: u16,
    requested_addr: String,
    /// An alias (`requested_addr` is its name): no socket, its own namespace of ports.
    alias: bool,
    session: SessionRef,
    /// The session's forward context: once resumable streams are on, its stream registry
    /// names the client instance the session serves (see [`ListenerRegistry::same_instance`]).
    ctx: ForwardContext,
    /// `None` while reserved; set once the listener is bound and serving.
    live: Option<Live>,
}

impl Entry {
    /// Is this entry alias `name` (any port)?
    fn is_alias_named(&self, name: &str) -> bool {
        self.alias && self.requested_addr.eq_ignore_ascii_case(name)
    }
}

/// What a serving listener has besides its reservation.
#[derive(Debug)]
struct Live {
    /// Stops this one listener (cancel-tcpip-forward).
    stop: CancellationToken,
    stats: ListenerStats,
    /// The addresses it really bound: what -L/-W/-D may reach by default (none for an alias).
    addrs: Vec<SocketAddr>,
    /// Where an alias's visitors go.
    alias: Option<AliasTarget>,
}

/// What the status page shows about a listener besides its port.
#[derive(Debug, Clone)]
pub struct ListenerStats {
    /// The addresses it really bound.
    pub bound: Vec<String>,
    /// Its connections and bytes (counted into the relay's totals too).
    pub counters: Arc<Counters>,
    /// Unix time it started listening.
    pub since: u64,
}

/// One listener, as [`ListenerRegistry::listeners`] reports it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// The session that holds it.
    pub session: u64,
    /// The port it listens on.
    pub port: u16,
    /// The bind address the client asked for ("" = all, "localhost", ...), or the alias name.
    pub requested_addr: String,
    /// An alias: nothing bound, reached by name through the relay.
    pub alias: bool,
    /// Bound addresses, counters, start time.
    pub stats: ListenerStats,
}

/// What to do about a port that is already in use.
#[derive(Debug)]
pub enum Conflict {
    /// Nobody we know holds it (another program, or a different key): refuse.
    Foreign,
    /// Earlier sessions of the same key hold it: probe them.
    SameKey(Vec<SessionRef>),
}

/// All -R listeners of the relay.
#[derive(Debug, Default)]
pub struct ListenerRegistry {
    entries: Mutex<Vec<Entry>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl ListenerRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one of the key's `cap` listener slots for a request by `session` for `port`, in
    /// one step under the lock; `None` when the key is at its cap.
    ///
    /// Listeners that earlier sessions of the same key hold on this very port do not count:
    /// they are what a takeover would replace (the request fails anyway if their holder is
    /// alive), and counting them would keep a key at its cap from ever getting its port back
    /// after a dropped link.
    fn reserve(
        &self,
        session: &SessionRef,
        ctx: &ForwardContext,
        requested_addr: &str,
        port: u16,
        cap: u32,
    ) -> Option<u64> {
        let mut entries = self.lock();
        let replaceable = |e: &Entry| {
            port != 0
                && !e.alias
                && e.port == port
                && e.live.is_some()
                && e.session.id != session.id
        };
        let held = entries
            .iter()
            .filter(|e| e.session.key_fp == session.key_fp && !replaceable(e))
            .count();
        if held >= cap as usize {
            return None;
        }
        Some(self.push_reservation(&mut entries, (session, ctx), (requested_addr, port), false))
    }

    /// Adds a reservation for (`addr`, `port`) by `session` to the locked `entries`.
    fn push_reservation(
        &self,
        entries: &mut Vec<Entry>,
        (session, ctx): (&SessionRef, &ForwardContext),
        (addr, port): (&str, u16),
        alias: bool,
    ) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        entries.push(Entry {
            id,
            port,
            requested_addr: addr.to_string(),
            alias,
            session: session.clone(),
            ctx: ctx.clone(),
            live: None,
        });
        id
    }

    /// Takes one of the key's `cap` listener slots for alias `name:port`, in one step under the
    /// lock; also returns the earlier sessions of the same key that serve this very alias (to
    /// take over). Refused when another key holds the name (any port, even only reserved: the
    /// name is the key's), when this session has it already, or when a request of another
    /// session for it is in flight.
    fn reserve_alias(
        &self,
        session: &SessionRef,
        ctx: &ForwardContext,
        name: &str,
        port: u16,
        cap: u32,
    ) -> Result<(u64, Vec<SessionRef>), Refused> {
        let mut entries = self.lock();
        if entries
            .iter()
            .any(|e| e.is_alias_named(name) && e.session.key_fp != session.key_fp)
        {
            return Err(Refused::new(
                Refusal::Bind,
                format!("alias {name} is held by another key"),
            ));
        }
        let same: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.is_alias_named(name) && e.port == port)
            .collect();
        if same.iter().any(|e| e.session.id == session.id) {
            return Err(Refused::new(
                Refusal::Bind,
                format!("alias {name}:{port} is already published by this session"),
            ));
        }
        if same.iter().any(|e| e.live.is_none()) {
            return Err(Refused::new(
                Refusal::Bind,
                format!("alias {name}:{port}: another request for it is in flight"),
            ));
        }
        let mut holders: Vec<SessionRef> = Vec::new();
        for e in &same {
            if !holders.iter().any(|s| s.id == e.session.id) {
                holders.push(e.session.clone());
            }
        }
        let held = entries
            .iter()
            .filter(|e| e.session.key_fp == session.key_fp)
            .filter(|e| !(e.is_alias_named(name) && e.port == port))
            .count();
        if held >= cap as usize {
            return Err(Refused::new(
                Refusal::ListenerCap,
                "listener cap reached for this key",
            ));
        }
        let id = self.push_reservation(&mut entries, (session, ctx), (name, port), true);
        Ok((id, holders))
    }

    /// Where a visitor of alias `name:port` goes, if it is published and serving.
    pub fn alias(&self, name: &str, port: u16) -> Option<AliasTarget> {
        self.lock()
            .iter()
            .filter(|e| e.is_alias_named(name) && e.port == port)
            .filter_map(|e| e.live.as_ref()?.alias.clone())
            .find(|t| !t.stop.is_cancelled())
    }

    /// Turns reservation `id` into the listener now serving on `port`, if the key is still
    /// within its `cap` counting every other entry of the key.
    ///
    /// The cap is checked again here because [`reserve`](Self::reserve) did not count the
    /// key's listeners on the same port in other sessions: those are replaced only if a
    /// takeover happened, which removed them by now. When the new listener bound beside them
    /// instead (another address, same port) they are still here and count.
    fn commit(&self, id: u64, port: u16, cap: u32, live: Live) -> Result<(), Refused> {
        let mut entries = self.lock();
        let Some(key_fp) = entries
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.session.key_fp.clone())
        else {
            return Err(Refused::new(Refusal::Bind, "session ended while binding"));
        };
        let others = entries
            .iter()
            .filter(|e| e.id != id && e.session.key_fp == key_fp)
            .count();
        if others >= cap as usize {
            return Err(Refused::new(
                Refusal::ListenerCap,
                "listener cap reached for this key",
            ));
        }
        let Some(e) = entries.iter_mut().find(|e| e.id == id) else {
            return Err(Refused::new(Refusal::Bind, "session ended while binding"));
        };
        e.port = port;
        e.live = Some(live);
        Ok(())
    }

    /// Every address a -R listener of this relay is bound to now (any key's).
    pub fn published(&self) -> Vec<SocketAddr> {
        self.lock()
            .iter()
            .filter_map(|e| e.live.as_ref())
            .flat_map(|l| l.addrs.iter().copied())
            .collect()
    }

    /// Drops reservation `id` if it never became a listener.
    fn unreserve(&self, id: u64) {
        self.lock().retain(|e| e.id != id || e.live.is_some());
    }

    /// Every listener now, in the order they were reserved.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.lock()
            .iter()
            .filter_map(|e| {
                let live = e.live.as_ref()?;
                Some(ListenerInfo {
                    session: e.session.id,
                    port: e.port,
                    requested_addr: e.requested_addr.clone(),
                    alias: e.alias,
                    stats: live.stats.clone(),
                })
            })
            .collect()
    }

    /// How many listeners the relay holds.
    pub fn len(&self) -> usize {
        self.lock().iter().filter(|e| e.live.is_some()).count()
    }

    /// How many of them are aliases.
    pub fn aliases(&self) -> usize {
        self.lock()
            .iter()
            .filter(|e| e.alias && e.live.is_some())
            .count()
    }

    /// True when no session holds a listener.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many listeners (and reservations) sessions of this key hold.
    pub fn count_for_key(&self, key_fp: &str) -> usize {
        self.lock()
            .iter()
            .filter(|e| e.session.key_fp == key_fp)
            .count()
    }

    /// Whether session `holder` serves the same client instance as the session whose context
    /// is `mine`: both have resumable streams on with one stream registry, which the relay
    /// keeps per key and client instance id ([`super::resume::Instances`]). A client runs one
    /// session per instance at a time (a `burrow up` tunnel), so a holder that shares the
    /// asking session's instance is one the client has already left; two clients of one key
    /// have instances of their own and never match.
    pub fn same_instance(&self, holder: u64, mine: &ForwardContext) -> bool {
        let Some(mine) = mine.resume() else {
            return false;
        };
        self.lock()
            .iter()
            .any(|e| e.session.id == holder && e.ctx.resume().is_some_and(|r| Arc::ptr_eq(r, mine)))
    }

    /// Who else holds `port`, seen from session `me` of key `key_fp`. Only serving listeners
    /// count: a reservation of another session means a request in flight, never a stale one.
    pub fn conflict(&self, port: u16, me: u64, key_fp: &str) -> Conflict {
        let entries = self.lock();
        let holders: Vec<&Entry> = entries
            .iter()
            .filter(|e| !e.alias && e.port == port && e.session.id != me)
            .collect();
        if holders.is_empty()
            || holders
                .iter()
                .any(|e| e.session.key_fp != key_fp || e.live.is_none())
        {
            return Conflict::Foreign;
        }
        let mut sessions: Vec<SessionRef> = Vec::new();
        for e in holders {
            if !sessions.iter().any(|s| s.id == e.session.id) {
                sessions.push(e.session.clone());
            }
        }
        Conflict::SameKey(sessions)
    }

    /// Stops and forgets one listener of a session (cancel-tcpip-forward). True if found.
    pub fn cancel(&self, session: u64, requested_addr: &str, port: u16) -> bool {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|e| {
            let Some(live) = &e.live else {
                return true;
            };
            // Port listeners and aliases never share a requested address: aliases on, a name is
            // an alias; off, there are none.
            let hit =
                e.session.id == session && e.port == port && e.requested_addr == requested_addr;
            if hit {
                live.stop.cancel();
            }
            !hit
        });
        entries.len() != before
    }

    /// Forgets every listener and reservation of a session that ended (its listener tasks stop
    /// with the session).
    pub fn release_session(&self, session: u64) {
        self.lock().retain(|e| {
            let hit = e.session.id == session;
            if let (true, Some(live)) = (hit, &e.live) {
                live.stop.cancel();
            }
            !hit
        });
    }
}

/// A listener slot taken by [`ListenerRegistry::reserve`]; given back on drop unless the
/// listener was committed.
struct Reservation {
    relay: Arc<Relay>,
    id: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.relay.registry.unreserve(self.id);
    }
}

/// Asks a session whether it is alive (keepalive@openssh.com with want-reply); false when it
/// does not answer within `deadline`.
pub async fn probe(handle: &russh::server::Handle, deadline: Duration) -> bool {
    matches!(
        tokio::time::timeout(deadline, handle.ping()).await,
        Ok(Ok(()))
    )
}

/// Why a -R request was refused: the refusal counter it goes to and the reason for the log.
#[derive(Debug)]
pub struct Refused {
    /// Counter on the status page.
    pub kind: Refusal,
    /// Names the address/port and what went wrong.
    pub reason: String,
}

impl Refused {
    fn new(kind: Refusal, reason: impl std::fmt::Display) -> Self {
        Self {
            kind,
            reason: reason.to_string(),
        }
    }
}

/// One session's -R listeners: what the session handler asks for on `tcpip-forward` and
/// `cancel-tcpip-forward`, with everything the listeners and their connections need.
pub struct SessionListeners {
    relay: Arc<Relay>,
    me: SessionRef,
    /// How events name the session.
    label: String,
    /// The session's tasks and shutdown (and resumable streams, once on).
    ctx: ForwardContext,
    listener_cap: u32,
    channel_cap: u32,
    /// The key's `burrow-permitremoteopen` list (empty: no SOCKS gate).
    gate: Vec<PermitOpen>,
}

impl SessionListeners {
    /// The listeners of an authenticated session `me`, under the key's caps and gate.
    pub fn new(
        relay: Arc<Relay>,
        me: SessionRef,
        label: String,
        ctx: ForwardContext,
        caps: (u32, u32),
        gate: Vec<PermitOpen>,
    ) -> Self {
        let (listener_cap, channel_cap) = caps;
        Self {
            relay,
            me,
            label,
            ctx,
            listener_cap,
            channel_cap,
            gate,
        }
    }

    /// Opens a -R listener on (`requested_addr`, `port`) after the policy allowed it; returns
    /// the port it listens on (the allocated one for port 0).
    pub async fn listen(&self, requested_addr: &str, port: u16) -> Result<u16, Refused> {
        let fp = &self.me.key_fp;
        let Some(id) = self.relay.registry.reserve(
            &self.me,
            &self.ctx,
            requested_addr,
            port,
            self.listener_cap,
        ) else {
            return Err(Refused::new(
                Refusal::ListenerCap,
                "listener cap reached for this key",
            ));
        };
        let reservation = Reservation {
            relay: self.relay.clone(),
            id,
        };
        let own_port = || {
            Refused::new(
                Refusal::Bind,
                "the relay's own SSH or metrics port is not for -R listeners",
            )
        };
        if super::direct::is_own_port(&self.relay, port) {
            return Err(own_port());
        }
        let target = policy::listen_addr(requested_addr, self.relay.config.policy.gateway_ports);
        let ips = bind_addrs(&target, port, Some(&self.relay.lookups))
            .await
            .map_err(|e| Refused::new(Refusal::Resolve, e))?;
        let listeners = self
            .bind_with_takeover(&ips, port)
            .await
            .map_err(|e| Refused::new(Refusal::Bind, e))?;
        let bound: Vec<String> = listeners.iter().map(Listener::describe).collect();
        let addrs: Vec<SocketAddr> = listeners.iter().filter_map(Listener::local_addr).collect();
        let actual = addrs.first().map_or(port, SocketAddr::port);
        if super::direct::is_own_port(&self.relay, actual) {
            // Port 0 on the other family can be handed the same number.
            return Err(own_port());
        }
        let stop = self.relay.stop_listening.child_token();
        let counters = Arc::new(Counters::child_of(self.relay.counters.clone()));
        let stats = ListenerStats {
            bound: bound.clone(),
            counters: counters.clone(),
            since: crate::observe::unix_secs(),
        };
        self.relay.registry.commit(
            reservation.id,
            actual,
            self.listener_cap,
            Live {
                stop: stop.clone(),
                stats,
                addrs,
                alias: None,
            },
        )?;
        tracing::info!(session = self.me.id, fingerprint = %fp, requested = %requested_addr, ?bound, port = actual, "remote forward listening");
        let mut ctx = self.ctx.clone();
        ctx.counters = counters;
        let conn = Arc::new(self.connections(requested_addr, actual, ctx.clone()));
        listen::serve_until(listeners, &ctx, stop, move |stream, peer| {
            let conn = conn.clone();
            async move { conn.accepted(stream, peer).await }
        });
        Ok(actual)
    }

    /// What every connection to (`addr`, `port`) needs, counted in `ctx`.
    fn connections(&self, addr: &str, port: u16, ctx: ForwardContext) -> ListenerConnections {
        ListenerConnections {
            relay: self.relay.clone(),
            handle: self.me.handle.clone(),
            fp: self.me.key_fp.clone(),
            label: self.label.clone(),
            channel_cap: self.channel_cap,
            gate: self.gate.clone(),
            addr: addr.to_string(),
            port,
            ctx,
            publisher: access_log::publisher(&self.relay, self.me.id, &self.me.key_fp),
        }
    }

    /// Publishes alias `name:port` for this session's key after the policy allowed it: binds
    /// nothing, takes over from earlier unresponsive sessions of the same key as for a port.
    pub async fn publish_alias(&self, name: &str, port: u16) -> Result<u16, Refused> {
        if port == 0 {
            return Err(Refused::new(
                Refusal::BadPort,
                format!("alias {name}: needs a port (0 allocates ports, not names)"),
            ));
        }
        if !self.gate.is_empty() {
            // The SOCKS gate reads a request off an accepted socket; an alias has none.
            return Err(Refused::new(
                Refusal::Bind,
                format!("alias {name}: keys with burrow-permitremoteopen publish ports only"),
            ));
        }
        let (id, holders) = self.relay.registry.reserve_alias(
            &self.me,
            &self.ctx,
            name,
            port,
            self.listener_cap,
        )?;
        let reservation = Reservation {
            relay: self.relay.clone(),
            id,
        };
        if !holders.is_empty() && !self.evict(holders, port).await {
            return Err(Refused::new(
                Refusal::Bind,
                format!("alias {name}:{port} is held by a live session of the same key"),
            ));
        }
        let stop = self.relay.stop_listening.child_token();
        let counters = Arc::new(Counters::child_of(self.relay.counters.clone()));
        let stats = ListenerStats {
            bound: Vec::new(),
            counters: counters.clone(),
            since: crate::observe::unix_secs(),
        };
        let mut ctx = self.ctx.clone();
        ctx.counters = counters;
        let target = AliasTarget {
            conn: Arc::new(self.connections(name, port, ctx)),
            stop: stop.clone(),
        };
        self.relay.registry.commit(
            reservation.id,
            port,
            self.listener_cap,
            Live {
                stop,
                stats,
                addrs: Vec::new(),
                alias: Some(target),
            },
        )?;
        tracing::info!(session = self.me.id, fingerprint = %self.me.key_fp, alias = %name, port, "alias published (no socket bound)");
        Ok(port)
    }

    /// Stops one listener of this session (cancel-tcpip-forward); true if it was there.
    pub fn cancel(&self, requested_addr: &str, port: u16) -> bool {
        self.relay.registry.cancel(self.me.id, requested_addr, port)
    }

    /// Binds for a -R request; when the port is held by earlier, unresponsive sessions of the
    /// same key, takes it over.
    async fn bind_with_takeover(&self, ips: &[IpAddr], port: u16) -> Result<Vec<Listener>, String> {
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
            self.relay
                .registry
                .conflict(port, self.me.id, &self.me.key_fp),
            Conflict::SameKey(_)
        );
        if !same_key {
            // Someone else's port: OpenSSH's rule, succeed if any address bound.
            return if bound.is_empty() {
                Err(error.to_string())
            } else {
                Ok(bound)
            };
        }
        drop(bound);
        if !self.take_over(port).await {
            return Err(error.to_string());
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
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bind_tcp_all(ips, port).map_err(|e| e.to_string())
    }

    /// Takes `port` over from the sessions of the same key that hold it, if they are all dead.
    /// A holder that serves the asking client's own instance ([`ListenerRegistry::
    /// same_instance`]: the client has moved on to this session, typically after its address
    /// changed) or that missed one of the relay's own keepalives (an answer overdue past its
    /// grace, see [`super::liveness::Liveness::overdue`]) is replaced at once; any other
    /// holder, idle or with an answer merely in flight, is probed and keeps the port if it
    /// answers within `takeover_probe_secs`, so two live clients of one key never flap.
    async fn take_over(&self, port: u16) -> bool {
        let registry = &self.relay.registry;
        let Conflict::SameKey(holders) = registry.conflict(port, self.me.id, &self.me.key_fp)
        else {
            return false;
        };
        self.evict(holders, port).await
    }

    /// Closes `holders` (earlier sessions of this key holding what this one asks for, `port`
    /// for the log) if they are all dead, by the rules of [`Self::take_over`].
    async fn evict(&self, holders: Vec<SessionRef>, port: u16) -> bool {
        let registry = &self.relay.registry;
        let deadline = self.relay.config.limits.takeover_probe;
        for holder in &holders {
            if registry.same_instance(holder.id, &self.ctx) {
                tracing::warn!(
                    port,
                    holder = holder.id,
                    "earlier session replaced at once: same client instance, which has moved on to this session; closing it and taking its port over"
                );
                continue;
            }
            if let Some(overdue) = holder.liveness.overdue(tokio::time::Instant::now()) {
                tracing::warn!(
                    port,
                    holder = holder.id,
                    overdue_ms = u64::try_from(overdue.as_millis()).unwrap_or(u64::MAX),
                    "earlier session replaced at once: missed keepalives; closing it and taking its port over"
                );
                continue;
            }
            if probe(&holder.handle, deadline).await {
                tracing::info!(
                    port,
                    holder = holder.id,
                    "port held by a live session of the same key; not taking over"
                );
                return false;
            }
            tracing::warn!(
                port,
                holder = holder.id,
                "earlier session did not answer the takeover probe; closing it and taking its port over"
            );
        }
        for holder in holders {
            self.relay.stats.took_over(&self.label, port, holder.id);
            holder.cancel.cancel();
            registry.release_session(holder.id);
        }
        true
    }
}

/// What every connection accepted on one -R listener needs.
struct ListenerConnections {
    relay: Arc<Relay>,
    handle: russh::server::Handle,
    fp: String,
    label: String,
    channel_cap: u32,
    gate: Vec<PermitOpen>,
    /// The bind address the client asked for, sent back in `forwarded-tcpip`.
    addr: String,
    port: u16,
    /// The session's context with this listener's counters.
    ctx: ForwardContext,
    /// The publishing session, as access log lines name it, and its address.
    publisher: (access_log::Who, String),
}

impl ListenerConnections {
    /// One accepted connection: counted against the key's channel cap, then carried to the client.
    async fn accepted(&self, stream: Stream, peer: Peer) {
        let from = match peer {
            Peer::Tcp(a) => a,
            Peer::Unix => SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
        };
        let (meter, tracked) = self.track(from);
        let stream = Metered::new(stream, meter);
        let Some(slot) = self.relay.open_channel_slot(&self.fp, self.channel_cap) else {
            tracked.ended(ending::CHANNEL_CAP);
            tracing::warn!(fingerprint = %self.fp, "channel cap reached; dropping forwarded connection");
            self.relay.stats.refused(
                Refusal::ChannelCap,
                &self.label,
                &format!(
                    "forwarded connection to port {}: open channel cap reached for this key",
                    self.port
                ),
            );
            return;
        };
        let forwarded = Forwarded {
            handle: self.handle.clone(),
            addr: self.addr.clone(),
            port: self.port,
            peer,
        };
        forwarded
            .serve(stream, &self.gate, &self.ctx, &self.fp, (slot, tracked))
            .await;
    }

    /// The access log's view of one connection from `from` (a visitor of the listener or
    /// alias): its line is written when the returned [`Tracked`] is dropped, with the bytes
    /// and end seen by the stream wrapped in a [`Metered`] with the returned meter.
    fn track(&self, from: SocketAddr) -> (Arc<access_log::Meter>, Tracked) {
        let meter = Arc::new(access_log::Meter::default());
        let (who, to) = self.publisher.clone();
        let tracked = self.relay.access.track(Track {
            who,
            kind: access_log::Kind::Forwarded,
            from,
            listener: format!("{}:{}", self.addr, self.port),
            to,
            bytes: access_log::Bytes::Meter(meter.clone()),
            session: self.ctx.cancel.clone(),
            shutdown: self.relay.stop_listening.clone(),
        });
        (meter, tracked)
    }
}

impl ListenerConnections {
    /// One visitor of an alias (`visitor`: its session's address): a `forwarded-tcpip` channel
    /// on the publisher's session, counted against the publisher's channel cap, pumped from
    /// one end of an in-memory pipe whose other end (returned) the visitor's channel is pumped
    /// to. So the alias's counters count like a listener's, and the publisher's side is
    /// resumable exactly as for a port.
    ///
    /// The open runs in its own task, holding the publisher's channel slot until the
    /// publisher answers: the visitor may give up first (the dial timeout drops this future),
    /// and a channel the publisher confirms after that must be closed, not left open and
    /// uncounted for the rest of its session.
    async fn visit(self: Arc<Self>, visitor: SocketAddr) -> io::Result<BoxedIo> {
        let label = format!("{}:{}", self.addr, self.port);
        let (meter, tracked) = self.track(visitor);
        let Some(slot) = self.relay.open_channel_slot(&self.fp, self.channel_cap) else {
            tracked.ended(ending::CHANNEL_CAP);
            tracing::warn!(fingerprint = %self.fp, alias = %label, "channel cap reached; refusing the alias's visitor");
            self.relay.stats.refused(
                Refusal::ChannelCap,
                &self.label,
                &format!("visitor of alias {label}: open channel cap reached for this key"),
            );
            return Err(io::Error::other(
                "the publisher's open channel cap is reached",
            ));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let conn = self.clone();
        self.ctx.tracker.spawn(async move {
            let opened = conn
                .open_for_visitor(visitor, slot, label.clone(), meter, tracked)
                .await;
            if let Err(Ok(late)) = tx.send(opened) {
                // The visitor is gone: closing our end of the pipe ends the publisher's
                // channel (EOF, then close) instead of leaving it open.
                tracing::info!(alias = %label, "publisher answered after the visitor gave up; closing");
                drop(late);
            }
        });
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the relay is shutting down")))
    }

    /// The body of [`Self::visit`] once the publisher's slot is held.
    async fn open_for_visitor(
        &self,
        visitor: SocketAddr,
        slot: ChannelSlot,
        label: String,
        meter: Arc<access_log::Meter>,
        tracked: Tracked,
    ) -> io::Result<BoxedIo> {
        let forwarded = Forwarded {
            handle: self.handle.clone(),
            addr: self.addr.clone(),
            port: self.port,
            peer: Peer::Tcp(visitor),
        };
        let Some(channel) = forwarded.open().await else {
            tracked.ended(ending::PUBLISHER_REFUSED);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("the publisher of {label} refused the connection"),
            ));
        };
        let carrier = self
            .ctx
            .carrier(channel, Some(forwarded.spec()), FirstBytes::AfterReply)
            .await
            .map_err(|e| {
                tracked.ended(ending::PUBLISHER_REFUSED);
                io::Error::other(format!("alias {label}: {e}"))
            })?;
        let (near, far) = tokio::io::duplex(64 * 1024);
        // The visitor's end, as the access log sees it; the line is written when both go.
        let (far, slot) = (Metered::new(far, meter), (slot, tracked));
        match carrier {
            Carrier::Plain(channel) => {
                let ctx = self.ctx.clone();
                self.ctx.tracker.spawn(async move {
                    let _slot = slot;
                    ctx.pump(channel, far, &label).await;
                });
            }
            Carrier::Resumable(opened) => {
                opened.run(Box::new(far), self.ctx.counters.clone(), slot)
            }
        }
        Ok(Box::new(near))
    }
}

/// Where the visitors of one alias go; cheap to clone.
#[derive(Clone)]
pub struct AliasTarget {
    conn: Arc<ListenerConnections>,
    /// Cancelled when the alias is withdrawn or the relay shuts down: no new visitors.
    stop: CancellationToken,
}

impl std::fmt::Debug for AliasTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliasTarget")
            .field("alias", &self.conn.addr)
            .field("port", &self.conn.port)
            .finish()
    }
}

impl AliasTarget {
    /// How a visitor's channel from `visitor` reaches the publisher: a [`Dial`] for the
    /// visitor's session, so the channel is answered as for any -L target (accepted once the
    /// publisher took the connection, "connect failed" otherwise; resumable on the visitor's
    /// side too when that session has resumable streams).
    pub fn dial(&self, visitor: SocketAddr) -> Dial {
        let conn = self.conn.clone();
        let label = format!("alias {}:{}", conn.addr, conn.port);
        Dial::Open(label, Box::pin(async move { conn.visit(visitor).await }))
    }
}

/// One connection accepted on a -R listener, to be carried to the client.
struct Forwarded {
    handle: russh::server::Handle,
    addr: String,
    port: u16,
    peer: Peer,
}

impl Forwarded {
    /// Opens the `forwarded-tcpip` channel and pumps; for a key with
    /// `burrow-permitremoteopen`, only after its SOCKS request passed the gate.
    /// `guard` (the key's channel slot) lives as long as the connection. Gated listeners stay
    /// plain (not resumable): their SOCKS bytes go through the channel before any stream hello.
    async fn serve<G: Send + 'static>(
        self,
        mut stream: Metered<Stream>,
        gate: &[policy::PermitOpen],
        ctx: &ForwardContext,
        fp: &str,
        guard: (G, Tracked),
    ) {
        let label = format!("{}:{}", self.addr, self.port);
        if gate.is_empty() {
            let Some(ch) = self.open().await else {
                guard.1.ended(ending::PUBLISHER_REFUSED);
                return;
            };
            // After the reply: a client that cannot reach its target ends the connection as
            // `publisher-refused` in the access log.
            let carrier = ctx.carrier(ch, Some(self.spec()), FirstBytes::AfterReply);
            match carrier.await {
                Ok(c) => ctx.carry(c, stream, &label, guard).await,
                Err(e) => {
                    guard.1.ended(ending::PUBLISHER_REFUSED);
                    tracing::info!(error = %e, "forwarded connection failed");
                }
            }
            return;
        }
        let _guard = guard;
        match socks_gate::admit(&mut stream, gate, || self.open()).await {
            Ok(ch) => ctx.pump(ch, stream, &label).await,
            Err(e) => {
                _guard.1.ended(ending::GATE_REFUSED);
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
