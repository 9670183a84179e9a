//! One relay session: public key authentication against authorized_keys, the forwarding policy,
//! and refusal of everything that is not forwarding.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use russh::keys::{HashAlg, PublicKey};
use russh::server::{Auth, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::access_log::Who;
use super::alias::{self, Target};
use super::authorized_keys::AuthorizedKey;
use super::direct::{self, Blocked};
use super::listeners::{SessionListeners, SessionRef};
use super::policy::{self, Decision, Reach};
use super::resume::{Control, ControlStep};
use super::stats::{self, LiveSession, Refusal};
use super::{ChannelSlot, Relay};
use crate::forward::{Dial, ForwardContext};
use crate::pipe::Counters;
use crate::resume;
use crate::spec::Endpoint;

/// The message a client gets when it asks for a shell, a command or a subsystem.
pub const FORWARD_ONLY_MESSAGE: &str =
    "burrow serve only forwards ports: shell, exec and subsystem requests are refused (use ssh -N or -W)\r\n";

/// Per-session state.
pub struct SessionHandler {
    relay: Arc<Relay>,
    id: u64,
    peer: SocketAddr,
    key: Option<Authenticated>,
    ctx: ForwardContext,
    authenticated: CancellationToken,
    unauth_permit: Option<OwnedSemaphorePermit>,
    /// The resume control channel, once asked for.
    resume_control: Option<Control>,
    /// This session's -R listeners, once authenticated.
    listeners: Option<SessionListeners>,
    /// Open session channels, each holding a slot of the key's channel cap until it closes:
    /// the relay keeps state for every one, so they must not be free.
    session_channels: HashMap<ChannelId, SessionChannel>,
    /// This session's slot of its key's `max_sessions_per_key`, held until the session ends.
    session_slot: Option<ChannelSlot>,
    /// Requests refused so far; past [`LOGGED_REFUSALS`] they are counted, not logged. Shared
    /// with the tasks that refuse a direct-tcpip after its name lookup.
    refusals: Arc<AtomicU64>,
}

/// A session channel the relay accepted (the client may make it the resume control channel).
struct SessionChannel {
    /// A slot of the key's channel cap, given back when the channel closes.
    _slot: ChannelSlot,
    /// Its writing half, until the resume control channel takes it.
    writer: Option<russh::ChannelWriteHalf<Msg>>,
    /// A shell, exec or subsystem request was refused on it (once is enough).
    refused: bool,
}

/// Refusals of one session written to the access log and the relay's messages. A refused
/// channel open costs its sender one small packet and the relay two log lines, so a key
/// holder asking in a loop could fill the disk (or the journal's rate limit, which then drops
/// other sessions' lines); 100 is plenty for fail2ban and for an operator to see what was
/// tried, and the rest are counted in the stats and summed up when the session ends.
const LOGGED_REFUSALS: u64 = 100;

/// Counts one refusal of session `session` in `refusals`; whether to log it. The first one
/// past [`LOGGED_REFUSALS`] says so once.
fn to_log(refusals: &AtomicU64, session: u64, peer: SocketAddr, fingerprint: &str) -> bool {
    let n = refusals.fetch_add(1, Ordering::Relaxed) + 1;
    if n == LOGGED_REFUSALS + 1 {
        tracing::warn!(
            session,
            %peer,
            fingerprint,
            logged = LOGGED_REFUSALS,
            "further refusals of this session are counted, not logged"
        );
    }
    n <= LOGGED_REFUSALS
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
            listeners: None,
            session_channels: HashMap::new(),
            session_slot: None,
            refusals: Arc::new(AtomicU64::new(0)),
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
        self.relay.access.auth_refused(self.peer, &fp, why);
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
        self.relay
            .stats
            .refused(kind, &self.label(), &format!("{what}: {reason}"));
        let fp = self.key.as_ref().map(|k| k.fp.as_str()).unwrap_or("-");
        if !to_log(&self.refusals, self.id, self.peer, fp) {
            return;
        }
        tracing::warn!(session = self.id, fingerprint = fp, request = what, %reason, "forward refused");
        let who = self.key.as_ref().map(|k| self.who(k));
        (self.relay.access).refused_request(who.as_ref(), self.peer, what, &reason.to_string());
    }

    /// How access log lines name this session and key.
    fn who(&self, key: &Authenticated) -> Who {
        Who::new(self.id, &key.fp, &key.entry.comment)
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
    fn refuse_session_request(&mut self, channel: ChannelId, what: &str, session: &mut Session) {
        // One message per channel: further requests on a refused channel (its close may wait
        // behind the message for a client that keeps its window shut) get a plain failure.
        match self.session_channels.get_mut(&channel) {
            Some(c) if c.refused => {
                let _ = session.channel_failure(channel);
                return;
            }
            Some(c) => c.refused = true,
            None => {}
        }
        tracing::info!(request = what, "session request refused: forwarding only");
        let _ = session.channel_success(channel);
        let _ = session.extended_data(channel, 1, FORWARD_ONLY_MESSAGE.as_bytes().to_vec());
        let _ = session.exit_status_request(channel, 1);
        let _ = session.eof(channel);
        self.close_session_channel(channel, session);
    }

    /// Closes a session channel from our side, and gives its slot back once our CLOSE has gone
    /// out: russh reports only the closes the client starts (`channel_close`), not ours. A
    /// close that waits behind data (a client that keeps the channel's window shut) keeps the
    /// slot, so the cap still bounds such channels; the client's own close frees it.
    fn close_session_channel(&mut self, channel: ChannelId, session: &mut Session) {
        let _ = session.close(channel);
        if !session.has_pending_data(channel) {
            self.session_channels.remove(&channel);
        }
    }

    /// A slot of key `fp`'s channel cap for forward `what`; refused (logged and counted) at
    /// the cap.
    fn forward_slot(&self, fp: &str, what: &str) -> Option<ChannelSlot> {
        let slot = self.relay.open_channel_slot(fp, self.channel_cap());
        if slot.is_none() {
            self.refuse(
                what,
                Refusal::ChannelCap,
                &"open channel cap reached for this key",
            );
        }
        slot
    }

    /// `direct-tcpip` to alias `name:port`: refused unless the key may visit it (before saying
    /// whether it exists), "connect failed" when nobody publishes it, else carried to the
    /// publisher with this session's address as the originator.
    async fn visit_alias(
        &self,
        channel: Channel<Msg>,
        key: &Authenticated,
        name: &str,
        port: u16,
        reply: russh::server::ChannelOpenHandle,
    ) {
        let what = format!("direct-tcpip {name}:{port}");
        if let Err(reason) =
            alias::check_visit(&self.relay.config.policy, &key.entry.options, name, port)
        {
            self.refuse(&what, reason.into(), &reason);
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        }
        let Some(target) = self.relay.registry.alias(name, port) else {
            tracing::info!(session = self.id, fingerprint = %key.fp, alias = %name, port, "connect_to {name}:{port}: no such alias published");
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        };
        let Some(slot) = self.forward_slot(&key.fp, &what) else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return;
        };
        tracing::info!(session = self.id, fingerprint = %key.fp, alias = %name, port, visitor = %self.peer, "visiting alias");
        let stop = self.relay.stop_listening.clone();
        let to = format!("{name}:{port}");
        let (ctx, tracked) =
            (self.relay.access).track_direct(self.who(key), self.peer, &to, &self.ctx, stop);
        let dial = target.dial(self.peer);
        ctx.tracker.spawn(
            ctx.clone()
                .serve_channel(channel, dial, reply, (slot, tracked)),
        );
    }

    /// The resume control channel: see [`Control`].
    fn resume_control_data(&mut self, channel: ChannelId, data: &[u8], session: &mut Session) {
        let Some(control) = self.resume_control.as_mut() else {
            return;
        };
        if control.channel() != channel {
            return;
        }
        let mut step = control.data(data);
        if let ControlStep::Bind(instance) = step {
            let Some(key) = self.key.as_ref() else {
                return;
            };
            let registry = self.relay.resume.bind(&key.fp, instance, session.handle());
            self.ctx.enable_resume(registry.clone());
            tracing::info!(session = self.id, fingerprint = %key.fp, "resumable streams on");
            let (answer, next) =
                control.bound(registry, &self.ctx.tracker, self.ctx.cancel.clone());
            let _ = session.data(channel, answer);
            step = next;
        }
        if let ControlStep::Close(why) = step {
            tracing::info!(
                session = self.id,
                "bad resume control message ({why}); closing it"
            );
            // The broken control stays: the session does not get a second one.
            self.close_session_channel(channel, session);
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
                if let Some(why) = key.security_key.and_then(|sk| {
                    policy::security_key_problem(
                        &entry.options,
                        sk.user_present(),
                        sk.user_verified(),
                    )
                }) {
                    return Ok(self.reject(key.public_key, why).await);
                }
                let fp = key.public_key.fingerprint(HashAlg::Sha256).to_string();
                let cap = self.relay.config.limits.max_sessions_per_key;
                let Some(slot) = self.relay.session_slot(&fp, cap) else {
                    // The key is right; the relay just will not hold more of its sessions.
                    // Not a failure for the brute-force penalty.
                    tracing::warn!(session = self.id, peer = %self.peer, fingerprint = %fp, cap, "login refused: session cap reached for this key");
                    self.relay.stats.refused(
                        Refusal::SessionCap,
                        &format!("#{} {}", self.id, self.peer),
                        &format!("{fp}: session cap ({cap}) reached for this key"),
                    );
                    return Ok(Auth::Reject {
                        proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
                        partial_success: false,
                    });
                };
                self.session_slot = Some(slot);
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

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        if let Some(k) = &self.key {
            session.set_window_budget(self.relay.windows.for_key(&k.fp));
            let me = SessionRef {
                id: self.id,
                key_fp: k.fp.clone(),
                handle: session.handle(),
                cancel: self.ctx.cancel.clone(),
                liveness: Arc::default(),
            };
            if let Some(every) = self.relay.config.limits.keepalive_interval {
                super::liveness::watch(
                    me.liveness.clone(),
                    me.handle.clone(),
                    every,
                    self.ctx.cancel.clone(),
                );
            }
            self.listeners = Some(SessionListeners::new(
                self.relay.clone(),
                me,
                self.label(),
                self.ctx.clone(),
                (self.listener_cap(), self.channel_cap()),
                k.entry.options.remote_open.clone(),
            ));
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
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(key) = self.key.as_ref() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        // Counted like a forward: one connection could otherwise open channels without end.
        let Some(slot) = self.relay.open_channel_slot(&key.fp, self.channel_cap()) else {
            self.refuse(
                "session channel",
                Refusal::ChannelCap,
                &"open channel cap reached for this key",
            );
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        // The read half goes: what comes on a session channel reaches `data` below, and its
        // window re-opens as it does.
        let id = channel.id();
        let (_, writer) = channel.split();
        self.session_channels.insert(
            id,
            SessionChannel {
                _slot: slot,
                writer: Some(writer),
                refused: false,
            },
        );
        // Accepted so that shell/exec requests can be refused with a readable message.
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A session channel gives its slot back; forwards hold theirs in their pumps.
        self.session_channels.remove(&channel);
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
                let writer =
                    (self.session_channels.get_mut(&channel)).and_then(|c| c.writer.take());
                self.resume_control = Some(Control::new(channel, writer));
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
        match alias::classify(&self.relay.config.policy, host_to_connect) {
            Target::Alias(name) => {
                self.visit_alias(channel, &key, name, port, reply).await;
                return Ok(());
            }
            // A one-label name that is no alias name is never resolved either: the resolver
            // would read `2130706433` as 127.0.0.1 and search domains would complete the rest.
            Target::BadName(why) => {
                self.refuse(&what, Refusal::PermitOpen, &why);
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return Ok(());
            }
            Target::Address => {}
        }
        let reach = policy::check_open(
            &self.relay.config.policy,
            &key.entry.options,
            host_to_connect,
            port,
        );
        if let Reach::Deny(reason) = reach {
            self.refuse(&what, reason.into(), &reason);
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let Some(slot) = self.forward_slot(&key.fp, &what) else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        // Resolving may take a while: in a task, so the session goes on meanwhile.
        let (relay, ctx, host) = (
            self.relay.clone(),
            self.ctx.clone(),
            host_to_connect.to_string(),
        );
        let (label, fp) = (self.label(), key.fp.clone());
        let (who, peer) = (self.who(&key), self.peer);
        let refusals = self.refusals.clone();
        self.ctx.tracker.spawn(async move {
            match direct::admit(&relay, reach, &host, port).await {
                Ok(addrs) => {
                    let target = Endpoint::Tcp { host, port }.to_string();
                    let stop = relay.stop_listening.clone();
                    let (ctx, tracked) = relay.access.track_direct(who, peer, &target, &ctx, stop);
                    ctx.serve_channel(channel, Dial::Addrs(target, addrs), reply, (slot, tracked))
                        .await;
                }
                Err(Blocked::Policy(reason)) => {
                    relay
                        .stats
                        .refused(reason.into(), &label, &format!("{what}: {reason}"));
                    if to_log(&refusals, who.session, peer, &fp) {
                        tracing::warn!(fingerprint = %fp, request = %what, %reason, "forward refused");
                        let why = reason.to_string();
                        relay.access.refused_request(Some(&who), peer, &what, &why);
                    }
                    reply
                        .reject(ChannelOpenFailure::AdministrativelyProhibited)
                        .await;
                }
                Err(e @ Blocked::Resolve(_)) => {
                    tracing::info!(request = %what, error = %e, "connect_to {host}: failed");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(key) = self.key.clone() else {
            return Ok(false);
        };
        let what = format!("tcpip-forward {address}:{port}");
        let Ok(requested) = u16::try_from(*port) else {
            self.refuse(&what, Refusal::BadPort, &"port out of range");
            return Ok(false);
        };
        let policy = &self.relay.config.policy;
        let name = match alias::classify(policy, address) {
            Target::Address => None,
            Target::Alias(name) => Some(name),
            Target::BadName(why) => {
                self.refuse(&what, Refusal::Bind, &why);
                return Ok(false);
            }
        };
        if let Some(name) = name {
            if let Err(reason) = alias::check_publish(policy, &key.entry.options, name, requested) {
                self.refuse(&what, reason.into(), &reason);
                return Ok(false);
            }
        } else if let Decision::Deny(reason) =
            policy::check_listen(policy, &key.entry.options, address, requested)
        {
            self.refuse(&what, reason.into(), &reason);
            return Ok(false);
        }
        let Some(listeners) = &self.listeners else {
            return Ok(false);
        };
        let result = match name {
            Some(name) => listeners.publish_alias(name, requested).await,
            None => listeners.listen(address, requested).await,
        };
        match result {
            Ok(actual) => {
                *port = u32::from(actual);
                Ok(true)
            }
            Err(refused) => {
                self.refuse(&what, refused.kind, &refused.reason);
                Ok(false)
            }
        }
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
        let found = self
            .listeners
            .as_ref()
            .is_some_and(|l| l.cancel(address, port));
        if found {
            tracing::info!(address, port, "remote forward cancelled");
        }
        Ok(found)
    }
}

impl Drop for SessionHandler {
    /// Sums up the refusals `SessionHandler::refuse` counted without logging.
    fn drop(&mut self) {
        let n = self.refusals.load(Ordering::Relaxed);
        if n > LOGGED_REFUSALS {
            tracing::warn!(
                session = self.id,
                peer = %self.peer,
                not_logged = n - LOGGED_REFUSALS,
                "session ended with refusals not logged"
            );
        }
    }
}
