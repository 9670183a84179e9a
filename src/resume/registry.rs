//! The streams of one tunnel (client side) or one client instance (relay side): who may attach
//! to which stream, the task that owns each stream, and the session streams re-open on.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::control::{Inbox, Outbox};
use super::frame::{Hello, Reply, StreamKey};
use super::stream::{Attachment, Engine, Outcome, Replay, ReplyStep, Sideband};
use super::{
    answer_to_new_stream, BoxedIo, ChannelSpec, OpenError, Opener, ResumeConfig, HANDSHAKE_TIMEOUT,
    REPLY_TIMEOUT,
};
use crate::budget::Budgets;
use crate::pipe::{Carried, CloseReason, Counters};

/// Pause between re-attach attempts on the same session.
const REOPEN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Counts for `burrow status`, metrics and tests.
#[derive(Debug, Default)]
pub struct ResumeStats {
    /// Streams alive now (attached or waiting for a channel).
    pub streams: AtomicU64,
    /// Successful re-attachments.
    pub resumed: AtomicU64,
    /// Streams closed because no channel came back within the grace period.
    pub expired: AtomicU64,
    /// Re-attach attempts refused (wrong secret).
    pub refused: AtomicU64,
    /// Streams carried without a replay buffer (unresumable) because a budget had no room.
    pub unresumable: AtomicU64,
    /// Re-attaches the peer answered with anything but OK (it no longer knows the stream: it
    /// expired there first); the stream is closed. `burrow ssh` names this in its error.
    pub forgotten: AtomicU64,
    /// Replay buffers grown because they limited their stream (see `stream::Growth`).
    pub grown: AtomicU64,
    /// Growths a budget refused (the stream kept its buffer size).
    pub growth_refused: AtomicU64,
}

struct Entry {
    secret: [u8; 16],
    /// False for a stream carried without a replay buffer: nothing to re-attach to.
    resumable: bool,
    attach: mpsc::Sender<Attachment>,
    /// The peer's acknowledgements from the control channel.
    inbox: Arc<Inbox>,
}

/// Resumable streams sharing one client identity (see the module docs).
pub struct Registry {
    config: ResumeConfig,
    streams: Mutex<HashMap<u64, Entry>>,
    opener: watch::Sender<Option<Arc<dyn Opener>>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// What happened to the streams (shared by all registries of a relay).
    pub stats: Arc<ResumeStats>,
    instance: [u8; 16],
    /// What replay buffers reserve from (the relay's); None: no bound but `config.buffer` per
    /// stream (a client's streams are its own user's connections).
    budgets: Option<Budgets>,
    /// Our streams' acknowledgements for the control channel (see [`super::control`]).
    outbox: Arc<Outbox>,
    /// The channel packet size the peer's session announces (see [`Self::set_peer_packet`]).
    peer_packet: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("streams", &self.stream_count())
            .field("config", &self.config)
            .finish()
    }
}

/// A stream whose hello went out (and, opened with [`FirstBytes::AfterReply`], whose reply
/// said yes); [`Opened::run`] carries it.
pub struct Opened {
    registry: Arc<Registry>,
    key: StreamKey,
    spec: ChannelSpec,
    channel: BoxedIo,
    /// Where the reply stands: settled, or still to come first on the channel
    /// ([`FirstBytes::WithHello`]).
    reply: ReplyStep,
}

/// When a new stream's first bytes may follow its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// After the peer's reply: the caller must know whether the target was reached before it
    /// answers its own client (a SOCKS reply, an alias visitor's channel, `-W`'s exit status).
    AfterReply,
    /// Right behind the hello, without waiting for the reply: a new connection costs no round
    /// trip more than a plain forward's (the peer dials once the hello is in, as a plain
    /// forward's peer dials on the channel open). A refused target then ends the stream the
    /// way a refused plain channel ends an `-L` connection: closed, with the reason logged.
    WithHello,
}

enum Role {
    Opener(ChannelSpec),
    Receiver,
}

impl Role {
    /// Where the stream goes, for messages.
    fn target(&self) -> String {
        let (host, port) = match self {
            Role::Opener(ChannelSpec::Direct { host, port, .. }) => (host, port),
            Role::Opener(ChannelSpec::Forwarded { addr, port, .. }) => (addr, port),
            Role::Receiver => return "the peer's target".into(),
        };
        match u16::try_from(*port) {
            Ok(port) => crate::spec::Endpoint::Tcp {
                host: host.clone(),
                port,
            }
            .to_string(),
            Err(_) => format!("{host}:{port}"),
        }
    }
}

impl Registry {
    /// An empty registry whose stream tasks stop when `cancel` is cancelled.
    pub fn new(config: ResumeConfig, cancel: CancellationToken) -> Arc<Self> {
        Self::with_stats(config, cancel, Arc::default())
    }

    /// Same, counting into `stats` (one set of counters for many registries).
    pub fn with_stats(
        config: ResumeConfig,
        cancel: CancellationToken,
        stats: Arc<ResumeStats>,
    ) -> Arc<Self> {
        Self::with_budgets(config, cancel, stats, None)
    }

    /// Same, each stream reserving its replay buffer from `budgets` (a stream that does not
    /// fit is carried unresumable; see [`crate::budget`]).
    pub fn with_budgets(
        config: ResumeConfig,
        cancel: CancellationToken,
        stats: Arc<ResumeStats>,
        budgets: Option<Budgets>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            streams: Mutex::new(HashMap::new()),
            opener: watch::Sender::new(None),
            tracker: TaskTracker::new(),
            cancel,
            stats,
            instance: rand::random(),
            budgets,
            outbox: Arc::default(),
            peer_packet: Arc::new(AtomicUsize::new(super::frame::PACKET)),
        })
    }

    /// This side's random identity, sent to the relay so it can group our streams.
    pub fn instance(&self) -> [u8; 16] {
        self.instance
    }

    /// The limits streams run with.
    pub fn config(&self) -> ResumeConfig {
        self.config
    }

    /// The session streams opened by this side re-open on (None while disconnected).
    pub fn set_opener(&self, opener: Option<Arc<dyn Opener>>) {
        self.opener.send_replace(opener);
    }

    /// The peer session's channel packet size (its control channel's, as every channel of a
    /// session announces the same): streams fill such packets with their frames from their
    /// next attachment on (see [`super::frame::send_data`]). Set before the session's streams
    /// attach; a new session sets its own, so a re-attach to an older relay never sends it
    /// frames larger than it accepts.
    pub fn set_peer_packet(&self, bytes: u32) {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.peer_packet.store(bytes, Ordering::Relaxed);
    }

    /// What the control channel's writer sends: our streams' acknowledgements.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Applies an acknowledgement the peer sent on the control channel to our stream `id`;
    /// one for a stream we do not have (it ended meanwhile) means nothing.
    pub fn deliver_ack(&self, id: u64, offset: u64) {
        if let Some(entry) = self.lock().get(&id) {
            entry.inbox.offer(offset);
        }
    }

    /// Carries a control channel given as a byte stream (after its handshake; `leftover` came
    /// after the answer) until it ends: see [`super::control::run`].
    pub async fn run_control<S>(&self, stream: S, leftover: Vec<u8>) -> Result<(), String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    {
        super::control::run(stream, leftover, &self.outbox, |id, offset| {
            self.deliver_ack(id, offset)
        })
        .await
    }

    /// Streams alive now.
    pub fn stream_count(&self) -> usize {
        self.lock().len()
    }

    /// Waits until every stream task has ended (after cancellation).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a new stream on a channel this side opened: hello, then (with
    /// [`FirstBytes::AfterReply`]) the peer's reply; it dials the target first, so a refused
    /// target is reported like ssh's "connect failed".
    pub async fn open(
        self: &Arc<Self>,
        mut channel: BoxedIo,
        spec: ChannelSpec,
        first: FirstBytes,
    ) -> Result<Opened, OpenError> {
        let key = StreamKey {
            id: rand::random(),
            secret: rand::random(),
        };
        let handshake = async {
            channel.write_all(&Hello::New(key).encode()).await?;
            match first {
                FirstBytes::WithHello => Ok(None),
                FirstBytes::AfterReply => Reply::read(&mut channel).await.map(Some),
            }
        };
        let reply = match tokio::time::timeout(REPLY_TIMEOUT, handshake).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(OpenError::Handshake(e.to_string())),
            Err(_) => return Err(OpenError::Handshake("no reply in time".into())),
        };
        let reply = match reply {
            None => ReplyStep::Due,
            Some(reply) => answer_to_new_stream(reply).map(|()| ReplyStep::Settled)?,
        };
        Ok(Opened {
            registry: self.clone(),
            key,
            spec,
            channel,
            reply,
        })
    }

    /// Serves a channel the peer opened: a new stream (dial with `dial`, then reply) or a
    /// re-attach of a known one (checked against its secret). `guard` lives as long as the
    /// stream. The bounds repeat in `accept_new`, which this hands a new stream to.
    pub async fn accept<F, Fut, G>(
        self: &Arc<Self>,
        mut channel: BoxedIo,
        dial: F,
        counters: Arc<Counters>,
        guard: G,
    ) where
        F: FnOnce() -> Fut,
        Fut: Future<Output = io::Result<BoxedIo>>,
        G: Send + 'static,
    {
        let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, Hello::read(&mut channel)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::info!("resumable stream: bad hello: {e}");
                return;
            }
            Err(_) => {
                tracing::info!("resumable stream: no hello in time");
                return;
            }
        };
        match hello {
            Hello::New(key) => self.accept_new(channel, key, dial, counters, guard).await,
            Hello::Attach { key, received } => self.route_attach(channel, key, received).await,
        }
    }

    /// A new stream from [`Self::accept`] (same bounds, on purpose): dialled unless its id is
    /// taken.
    async fn accept_new<F, Fut, G>(
        self: &Arc<Self>,
        mut channel: BoxedIo,
        key: StreamKey,
        dial: F,
        counters: Arc<Counters>,
        guard: G,
    ) where
        F: FnOnce() -> Fut,
        Fut: Future<Output = io::Result<BoxedIo>>,
        G: Send + 'static,
    {
        if self.lock().contains_key(&key.id) {
            let _ = channel.write_all(&Reply::Refused.encode()).await;
            return;
        }
        match dial().await {
            Ok(local) => {
                if channel
                    .write_all(&Reply::Ok { received: 0 }.encode())
                    .await
                    .is_ok()
                {
                    let first = Attachment {
                        channel,
                        peer_received: 0,
                        reply: ReplyStep::Settled,
                    };
                    self.spawn(key, Role::Receiver, local, first, counters, guard);
                }
            }
            Err(e) => {
                let reason = crate::reason::io_reason(&e);
                let _ = channel
                    .write_all(&Reply::ConnectFailed(reason).encode())
                    .await;
            }
        }
    }

    async fn route_attach(&self, mut channel: BoxedIo, key: StreamKey, received: u64) {
        let route = {
            let streams = self.lock();
            match streams.get(&key.id) {
                None => Err(Reply::Unknown),
                Some(e) if !constant_time_eq(&e.secret, &key.secret) => Err(Reply::Refused),
                // Carried without a replay buffer: it ended with its channel, as if expired.
                Some(e) if !e.resumable => Err(Reply::Unknown),
                Some(e) => Ok(e.attach.clone()),
            }
        };
        match route {
            Ok(tx) => {
                let att = Attachment {
                    channel,
                    peer_received: received,
                    reply: ReplyStep::Owed,
                };
                if tx.send(att).await.is_err() {
                    tracing::debug!(stream = key.id, "stream ended while re-attaching");
                }
            }
            Err(reply) => {
                if reply == Reply::Refused {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        stream = format!("{:016x}", key.id),
                        "resumable stream: re-attach refused: wrong secret"
                    );
                } else {
                    tracing::info!(
                        stream = format!("{:016x}", key.id),
                        "resumable stream: re-attach for an unknown or expired stream"
                    );
                }
                let _ = channel.write_all(&reply.encode()).await;
            }
        }
    }

    fn spawn<G: Send + 'static>(
        self: &Arc<Self>,
        key: StreamKey,
        role: Role,
        local: BoxedIo,
        first: Attachment,
        counters: Arc<Counters>,
        guard: G,
    ) {
        let id = format!("{:016x}", key.id);
        let capacity = Engine::capacity_for(self.config.buffer);
        let replay = match &self.budgets {
            None => Replay::Kept(None),
            Some(budgets) => match budgets.reserve(capacity as u64) {
                Ok(reservation) => Replay::Kept(Some(reservation)),
                Err(full) => {
                    self.stats.unresumable.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        stream = id,
                        budget = super::budget_setting(full),
                        buffer = capacity,
                        "resumable stream carried without a replay buffer: its budget is full; \
                         it ends if its channel is lost"
                    );
                    Replay::Off
                }
            },
        };
        let resumable = matches!(replay, Replay::Kept(_));
        let (tx, rx) = mpsc::channel(1);
        let inbox = Arc::<Inbox>::default();
        self.lock().insert(
            key.id,
            Entry {
                secret: key.secret,
                resumable,
                attach: tx,
                inbox: inbox.clone(),
            },
        );
        if resumable {
            self.stats.streams.fetch_add(1, Ordering::Relaxed);
        }
        let registry = self.clone();
        self.tracker.spawn(async move {
            let _guard = guard;
            let carried = Carried::new(counters.clone(), &id);
            // Owns the reservation: given back when the stream ends, however it ends.
            let sideband = Sideband {
                id: key.id,
                outbox: registry.outbox.clone(),
                inbox,
            };
            let engine = Engine::new(registry.config.buffer, counters, replay)
                .growing(registry.config.buffer_max, registry.stats.clone(), &id)
                .with_sideband(sideband)
                .framing_for(registry.peer_packet.clone());
            let reason = registry.run(key, role, local, first, rx, &engine).await;
            carried.close(&engine.closed(reason));
            drop(engine);
            registry.lock().remove(&key.id);
            registry.outbox.forget(key.id);
            if resumable {
                registry.stats.streams.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }

    /// The life of one stream: attachments until it is done, fails or expires; why it ended.
    async fn run(
        &self,
        key: StreamKey,
        role: Role,
        local: BoxedIo,
        first: Attachment,
        mut attach_rx: mpsc::Receiver<Attachment>,
        engine: &Engine,
    ) -> CloseReason {
        let id = format!("{:016x}", key.id);
        let (mut local_r, mut local_w) = tokio::io::split(local);
        let mut sessions = self.opener.subscribe();
        sessions.borrow_and_update();
        let is_opener = matches!(role, Role::Opener(_));
        let mut next = Some(first);
        loop {
            let att = match next.take() {
                Some(a) => a,
                None => match self
                    .reattach(key, &role, engine, &mut attach_rx, &mut sessions)
                    .await
                {
                    Some(a) => {
                        self.stats.resumed.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(stream = id, "resumable stream re-attached");
                        a
                    }
                    None if self.cancel.is_cancelled() => return CloseReason::Shutdown,
                    None => return CloseReason::PeerError("no channel came back".into()),
                },
            };
            let outcome = tokio::select! {
                o = engine.attach(&mut local_r, &mut local_w, att) => o,
                Some(a) = attach_rx.recv() => {
                    // The peer re-attached on a new channel while ours still looked alive (this
                    // side had not noticed the old link die yet): move over at once.
                    self.stats.resumed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(stream = id, "resumable stream re-attached (its old channel was still open)");
                    next = Some(a);
                    continue;
                }
                Ok(()) = sessions.changed(), if is_opener => continue,
                () = self.cancel.cancelled() => return CloseReason::Shutdown,
            };
            match outcome {
                Outcome::Done => return CloseReason::Done,
                Outcome::Aborted(why) => {
                    tracing::info!(stream = id, "resumable stream closed: {why}");
                    return CloseReason::Aborted(why);
                }
                Outcome::OpenFailed(e) => {
                    // As a refused channel of a stream that waited for its reply is logged
                    // (`forward::local`).
                    tracing::info!("channel: open failed: {e}: forward to {}", role.target());
                    return CloseReason::PeerError(e.to_string());
                }
                Outcome::Lost if !engine.resumable() => {
                    tracing::info!(
                        stream = id,
                        "stream closed: its channel is gone and it had no replay buffer"
                    );
                    return CloseReason::PeerError("channel gone, no replay buffer".into());
                }
                Outcome::Lost => tracing::info!(
                    stream = id,
                    buffered = engine.buffered(),
                    capacity = engine.capacity(),
                    "resumable stream suspended: its channel is gone"
                ),
            }
        }
    }

    /// Waits for a new channel within the grace period: the peer's re-attach (receiver), or a
    /// new session to re-open on (opener). None when the stream must close.
    async fn reattach(
        &self,
        key: StreamKey,
        role: &Role,
        engine: &Engine,
        attach_rx: &mut mpsc::Receiver<Attachment>,
        sessions: &mut watch::Receiver<Option<Arc<dyn Opener>>>,
    ) -> Option<Attachment> {
        let wait = async {
            match role {
                Role::Receiver => attach_rx.recv().await,
                Role::Opener(spec) => self.reopen(key, spec, engine, sessions).await,
            }
        };
        tokio::select! {
            r = tokio::time::timeout(self.config.grace, wait) => match r {
                Ok(a) => a,
                Err(_) => {
                    self.stats.expired.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        stream = format!("{:016x}", key.id),
                        grace = ?self.config.grace,
                        "resumable stream expired: no new channel within the grace period"
                    );
                    None
                }
            },
            () = self.cancel.cancelled() => None,
        }
    }

    /// Opener side: tries each session as it appears until one carries the stream again.
    async fn reopen(
        &self,
        key: StreamKey,
        spec: &ChannelSpec,
        engine: &Engine,
        sessions: &mut watch::Receiver<Option<Arc<dyn Opener>>>,
    ) -> Option<Attachment> {
        loop {
            let current = sessions.borrow_and_update().clone();
            if let Some(opener) = current {
                match attach_on(opener.as_ref(), key, spec, engine.received()).await {
                    Ok(Some(att)) => return Some(att),
                    Ok(None) => {
                        self.stats.forgotten.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                    Err(e) => tracing::debug!(stream = key.id, "re-attach failed: {e}"),
                }
            }
            // A new session, or another try on this one shortly (it may have been busy
            // setting up when we tried).
            tokio::select! {
                changed = sessions.changed() => if changed.is_err() {
                    return None;
                },
                () = tokio::time::sleep(REOPEN_RETRY) => {}
            }
        }
    }
}

/// Opens `spec` on `opener` and asks the peer to re-attach `key`: Ok(None) when the peer no
/// longer knows the stream (it expired there) or refuses it.
async fn attach_on(
    opener: &dyn Opener,
    key: StreamKey,
    spec: &ChannelSpec,
    received: u64,
) -> io::Result<Option<Attachment>> {
    let mut channel = tokio::time::timeout(HANDSHAKE_TIMEOUT, opener.open(spec.clone()))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "channel open timed out"))??;
    let handshake = async {
        channel
            .write_all(&Hello::Attach { key, received }.encode())
            .await?;
        Reply::read(&mut channel).await
    };
    let reply = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply to re-attach"))??;
    Ok(match reply {
        Reply::Ok { received } => Some(Attachment {
            channel,
            peer_received: received,
            reply: ReplyStep::Settled,
        }),
        other => {
            tracing::info!(stream = key.id, "peer answered {other:?} to re-attach");
            None
        }
    })
}

impl Opened {
    /// Carries the stream between the channel and `local` in the registry's own task (it
    /// outlives the session). `guard` lives as long as the stream.
    pub fn run<G: Send + 'static>(self, local: BoxedIo, counters: Arc<Counters>, guard: G) {
        let first = Attachment {
            channel: self.channel,
            peer_received: 0,
            reply: self.reply,
        };
        self.registry.spawn(
            self.key,
            Role::Opener(self.spec),
            local,
            first,
            counters,
            guard,
        );
    }
}

fn constant_time_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
