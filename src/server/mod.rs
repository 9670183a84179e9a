//! `burrow serve`: a forwarding-only SSH relay (machine B). Any standard ssh client can use it for
//! -L, -R, -D and -W; shells and commands are refused.
//!
//! The relay owns its accept loop (one failing accept never stops the server) and runs one russh
//! session per connection, each with a cancellation token that ends it from outside.

pub mod access_log;
pub mod alias;
pub mod authorized_keys;
pub mod config;
pub mod direct;
pub mod handler;
pub mod listeners;
pub mod liveness;
pub mod penalty;
pub mod policy;
pub mod resume;
pub mod socks_gate;
pub mod stats;
pub mod status;
pub mod stream;
pub mod strict_modes;
pub mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pipe::Counters;
use authorized_keys::AuthorizedKeys;
use config::ServeConfig;
use handler::SessionHandler;
use listeners::ListenerRegistry;
use policy::PermitOpen;
use stats::{Refusal, RelayStats};

/// How long transfers may continue after SIGTERM before sessions are cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// State shared by every session of one relay.
pub struct Relay {
    /// Settings.
    pub config: ServeConfig,
    /// The address the SSH listener really bound (the port chosen when 0 was asked).
    pub local_addr: SocketAddr,
    /// The current authorized keys; replaced whole on reload, so live sessions keep the options
    /// they authenticated with.
    keys: RwLock<Arc<AuthorizedKeys>>,
    /// Who holds which -R port.
    pub registry: ListenerRegistry,
    /// Open channels per key fingerprint.
    channels: Mutex<HashMap<String, u32>>,
    /// Authenticated sessions per key fingerprint.
    sessions: Mutex<HashMap<String, u32>>,
    /// Caps connections that have not authenticated yet.
    pub unauthenticated: Arc<Semaphore>,
    /// Failed authentications per source, for the brute-force delay.
    pub penalties: penalty::Penalties,
    /// Cancelled on shutdown: stop accepting and close every -R listener.
    pub stop_listening: CancellationToken,
    /// Cancelled at the end of the shutdown grace period: every session ends.
    pub kill: CancellationToken,
    /// Owns every session and listener task.
    pub tracker: TaskTracker,
    /// Bytes through the relay (every forward's counters roll up here).
    pub counters: Arc<Counters>,
    /// Sessions, refusals, takeovers, auth failures and recent events, for metrics and the page.
    pub stats: RelayStats,
    /// Resumable streams by key and client instance.
    pub resume: resume::Instances,
    /// What grown channel receive windows may hold, per key and relay-wide.
    pub windows: crate::budget::WindowBudgets,
    /// Where the metrics endpoint really listens, once started: never reachable through a
    /// forward unless permit_open names it (see [`direct`]).
    pub metrics_addr: std::sync::OnceLock<SocketAddr>,
    /// One line per forwarded connection and per refused request (see [`access_log`]).
    pub access: Arc<access_log::AccessLog>,
    next_session: AtomicU64,
    ssh: Arc<russh::server::Config>,
    /// The threads sessions run on (see [`workers`]).
    workers: workers::Workers,
    /// The runtime that accepts connections, whose blocking pool every session's name lookups
    /// share (`forward::listen::lookup_on`), rather than each session thread's own.
    pub lookups: tokio::runtime::Handle,
}

impl Relay {
    /// The authorized keys in force now.
    pub fn keys(&self) -> Arc<AuthorizedKeys> {
        self.keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Re-reads authorized_keys (SIGHUP). On error the old set stays in force.
    pub fn reload_keys(&self) -> anyhow::Result<usize> {
        let fresh = AuthorizedKeys::load(&self.config.authorized_keys, self.config.strict_modes)?;
        let n = fresh.keys.len();
        match self.keys.write() {
            Ok(mut k) => *k = Arc::new(fresh),
            Err(p) => *p.into_inner() = Arc::new(fresh),
        }
        Ok(n)
    }

    /// Forwarding channels open now, over all keys.
    pub fn open_channels(&self) -> u64 {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|n| u64::from(*n)).sum()
    }

    /// Reserves a channel slot for a key; None when the key is at its cap.
    pub fn open_channel_slot(self: &Arc<Self>, fp: &str, cap: u32) -> Option<ChannelSlot> {
        self.take_slot(Counted::Channels, fp, cap)
    }

    /// Reserves a session slot for a key (`max_sessions_per_key`); None when the key is at
    /// its cap.
    pub fn session_slot(self: &Arc<Self>, fp: &str, cap: u32) -> Option<ChannelSlot> {
        self.take_slot(Counted::Sessions, fp, cap)
    }

    fn counts(&self, what: Counted) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        let map = match what {
            Counted::Channels => &self.channels,
            Counted::Sessions => &self.sessions,
        };
        map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_slot(self: &Arc<Self>, what: Counted, fp: &str, cap: u32) -> Option<ChannelSlot> {
        let mut map = self.counts(what);
        let n = map.entry(fp.to_string()).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(ChannelSlot {
            relay: self.clone(),
            what,
            fp: fp.to_string(),
        })
    }
}

/// What a [`ChannelSlot`] counts.
#[derive(Debug, Clone, Copy)]
enum Counted {
    Channels,
    Sessions,
}

/// One open channel (or session) counted against its key's cap; released on drop.
pub struct ChannelSlot {
    relay: Arc<Relay>,
    what: Counted,
    fp: String,
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        let mut map = self.relay.counts(self.what);
        if let Some(n) = map.get_mut(&self.fp) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.fp);
            }
        }
    }
}

/// russh server settings for the relay.
fn ssh_config(config: &ServeConfig, host_key: russh::keys::PrivateKey) -> russh::server::Config {
    use russh::{MethodKind, MethodSet, Preferred};
    let preferred = Preferred {
        kex: std::borrow::Cow::Borrowed(crate::transport::RELAY_KEX),
        cipher: std::borrow::Cow::Borrowed(crate::transport::CIPHERS),
        ..Preferred::default()
    };
    russh::server::Config {
        server_id: russh::SshId::Standard(
            concat!("SSH-2.0-burrow_", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // Slow down guessing, but not agents that offer several keys in a row.
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        max_auth_attempts: config.limits.max_auth_tries,
        // Idle -R tunnels are normal; dead peers are found by keepalives instead.
        inactivity_timeout: None,
        keepalive_interval: config.limits.keepalive_interval,
        keepalive_max: config.limits.keepalive_count_max,
        nodelay: true,
        // A client's resumable streams send frames that fill these packets; OpenSSH clients
        // and older burrows keep sending their own (32 KiB) packets.
        maximum_packet_size: crate::resume::frame::RELAY_PACKET as u32,
        window_size: config::CHANNEL_WINDOW as u32,
        preferred,
        ..Default::default()
    }
}

/// Warns, once at start, about each permitopen/permit_open entry whose host is a one-label
/// name while aliases are on: such a grant now means the alias, which any key allowed to
/// publish may take, not a host of B's network as it did before aliases (an upgraded
/// `permitopen="db:5432"` would carry the visitor to whoever publishes `db`).
fn warn_one_label_grants(config: &ServeConfig, keys: &AuthorizedKeys) {
    let policy = &config.policy;
    let is_alias =
        |p: &PermitOpen| matches!(alias::classify(policy, &p.host), alias::Target::Alias(_));
    if let policy::ServerOpen::Only(list) = &policy.permit_open {
        for p in list.iter().filter(|p| is_alias(p)) {
            tracing::warn!(entry = %p, "permit_open names the alias {}: with aliases on a one-label name is never resolved, and any key that may publish can take it; use an address or a name with a dot for a host of this network, restrict publishers with permitlisten=, or set aliases = false", p.host);
        }
    }
    for k in &keys.keys {
        for p in k
            .options
            .permit_open
            .iter()
            .flatten()
            .filter(|p| is_alias(p))
        {
            tracing::warn!(line = k.line, comment = %k.comment, entry = %p, file = %config.authorized_keys.display(), "permitopen names the alias {}: with aliases on a one-label name is never resolved, and any key that may publish can take it; use an address or a name with a dot for a host of this network, restrict publishers with permitlisten=, or set aliases = false", p.host);
        }
    }
}

/// Starts the relay on an already bound listener (tests hand in a port-0 listener).
pub fn start(config: ServeConfig, listener: tokio::net::TcpListener) -> anyhow::Result<Arc<Relay>> {
    let (host_key, created) = config::load_or_create_host_key(&config.host_key)?;
    let fp = host_key
        .public_key()
        .fingerprint(russh::keys::HashAlg::Sha256);
    if created {
        tracing::info!(path = %config.host_key.display(), "generated a new ed25519 host key");
    }
    tracing::info!(fingerprint = %fp, "host key");
    let keys = AuthorizedKeys::load(&config.authorized_keys, config.strict_modes)
        .with_context(|| format!("loading {}", config.authorized_keys.display()))?;
    tracing::info!(keys = keys.keys.len(), file = %config.authorized_keys.display(), "authorized keys loaded");
    warn_one_label_grants(&config, &keys);
    let access = access_log::AccessLog::open(config.access_log.as_deref())?;
    if let Some(path) = access.path() {
        tracing::info!(file = %path.display(), "access log");
    }
    let ssh = Arc::new(ssh_config(&config, host_key));
    let local_addr = listener.local_addr().unwrap_or(config.listen);
    let kill = CancellationToken::new();
    let relay = Arc::new(Relay {
        local_addr,
        resume: resume::Instances::new(
            config.limits.resume,
            config.limits.resume_budget,
            kill.clone(),
        ),
        windows: crate::budget::WindowBudgets::new(config.limits.window_growth),
        unauthenticated: Arc::new(Semaphore::new(config.limits.max_startups)),
        penalties: penalty::Penalties::new(config.limits.penalty.clone()),
        config,
        keys: RwLock::new(Arc::new(keys)),
        registry: ListenerRegistry::default(),
        channels: Mutex::new(HashMap::new()),
        sessions: Mutex::new(HashMap::new()),
        stop_listening: CancellationToken::new(),
        kill,
        tracker: TaskTracker::new(),
        counters: Arc::new(Counters::default()),
        stats: RelayStats::default(),
        metrics_addr: std::sync::OnceLock::new(),
        access: Arc::new(access),
        next_session: AtomicU64::new(1),
        ssh,
        workers: workers::Workers::start().context("starting the session threads")?,
        lookups: tokio::runtime::Handle::try_current()
            .context("the relay starts inside a tokio runtime")?,
    });
    let r = relay.clone();
    relay
        .tracker
        .spawn(async move { accept_loop(r, listener).await });
    Ok(relay)
}

async fn accept_loop(relay: Arc<Relay>, listener: tokio::net::TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("listening on {addr}");
    }
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = relay.stop_listening.cancelled() => return,
        };
        match accepted {
            Ok((socket, peer)) => hand_to_session_thread(&relay, socket, peer),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs the connection's session on the session thread with the fewest sessions (see
/// [`workers`]). The socket moves there too: registered with that thread's own event loop, its
/// readiness wakes no other thread.
fn hand_to_session_thread(relay: &Arc<Relay>, socket: TcpStream, peer: SocketAddr) {
    let r = relay.clone();
    let Some(place) = relay.workers.place() else {
        relay
            .tracker
            .spawn(async move { serve_connection(r, socket, peer).await });
        return;
    };
    let socket = match socket.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot hand the connection to a session thread; closing it");
            return;
        }
    };
    let handle = place.handle.clone();
    relay.tracker.spawn_on(
        async move {
            let _place = place;
            match TcpStream::from_std(socket) {
                Ok(socket) => serve_connection(r, socket, peer).await,
                Err(e) => tracing::warn!(%peer, error = %e, "cannot take the connection on its session thread; closing it"),
            }
        },
        &handle,
    );
}

/// One client connection from TCP accept to session end.
async fn serve_connection(relay: Arc<Relay>, socket: TcpStream, peer: SocketAddr) {
    let Ok(permit) = relay.unauthenticated.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "too many unauthenticated connections; refusing");
        relay.stats.refused(
            Refusal::Startups,
            &peer.to_string(),
            "connection refused: too many unauthenticated connections",
        );
        return;
    };
    let _ = socket.set_nodelay(true);
    let id = relay.next_session.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("session", id, %peer);
    let session_cancel = relay.kill.child_token();
    let authenticated = CancellationToken::new();
    let handler = SessionHandler::new(
        relay.clone(),
        id,
        peer,
        session_cancel.clone(),
        authenticated.clone(),
        permit,
    );
    // Batched reads: fewer wake-ups while a client uploads. Their 256 KiB reads once hid a
    // 100 ms upload's bursts from the adaptive window's probe (see russh's
    // `Encrypted::window_probe_reply`, which now counts a whole probe cycle).
    let stream = stream::Cancellable::new(
        crate::batched_reads::BatchedReads::new(socket),
        session_cancel.clone(),
    );
    let ssh = relay.ssh.clone();
    let session = async move {
        let running = russh::server::run_stream(ssh, stream, handler).await?;
        running.await
    };
    let grace = relay.config.limits.login_grace_time;
    let watchdog = async {
        tokio::time::sleep(grace).await;
        if !authenticated.is_cancelled() {
            tracing::info!("login grace time exceeded; closing");
            session_cancel.cancel();
        }
        std::future::pending::<()>().await
    };
    let result = tracing::Instrument::instrument(
        async {
            tokio::select! {
                r = session => r,
                () = watchdog => Ok(()),
            }
        },
        span.clone(),
    )
    .await;
    session_cancel.cancel();
    relay.registry.release_session(id);
    let _enter = span.enter();
    match result {
        Ok(()) => {
            tracing::info!("session closed");
            relay.stats.session_ended(id, "session closed");
        }
        Err(e) => {
            tracing::info!(reason = %e, "session ended");
            relay
                .stats
                .session_ended(id, &format!("session ended: {e}"));
        }
    }
}

/// Runs `burrow serve` until SIGINT/SIGTERM; SIGHUP reloads authorized_keys and reopens the
/// access log file; SIGUSR1 logs [`crate::diagnostics`] stats. With `--metrics`, also serves metrics and the status page until
/// the relay has shut down.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let listener = crate::forward::listen::bind_tcp(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let observe = config.observe.clone();
    let relay = start(config, listener)?;
    let observe_stop = CancellationToken::new();
    let endpoint = match &observe {
        Some(o) => {
            let source: Arc<dyn crate::observe::Source> = relay.clone();
            match crate::observe::start(o, source, observe_stop.clone()).await {
                Ok(e) => {
                    let _ = relay.metrics_addr.set(e.local_addr());
                    Some(e)
                }
                Err(e) => {
                    shutdown(&relay).await;
                    return Err(e.into());
                }
            }
        }
        None => None,
    };
    let result = wait_for_signals(&relay).await;
    shutdown(&relay).await;
    observe_stop.cancel();
    if let Some(e) = endpoint {
        let _ = tokio::time::timeout(Duration::from_secs(2), e.stopped()).await;
    }
    result
}

async fn wait_for_signals(relay: &Arc<Relay>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    loop {
        tokio::select! {
            _ = usr1.recv() => crate::diagnostics::log_snapshot_with(&relay.counters, relay.workers.alive_tasks()),
            _ = hup.recv() => {
                match relay.reload_keys() {
                    Ok(n) => tracing::info!(keys = n, "reloaded authorized keys"),
                    Err(e) => tracing::error!(error = %crate::logging::error_chain(&e), "reload failed; keeping the previous keys"),
                }
                // logrotate moved the file away: later lines go to a new one by its name.
                if let Err(e) = relay.access.reopen() {
                    tracing::error!(error = %e, "access log not reopened; still writing to the previous file");
                }
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

/// Stops accepting and closes listeners, lets transfers run for [`SHUTDOWN_GRACE`], then ends
/// every session.
pub async fn shutdown(relay: &Arc<Relay>) {
    tracing::info!("shutting down");
    relay.stop_listening.cancel();
    relay.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, relay.tracker.wait())
        .await
        .is_err()
    {
        relay.kill.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), relay.tracker.wait()).await;
    }
    relay.workers.stop(Duration::from_secs(2)).await;
}
