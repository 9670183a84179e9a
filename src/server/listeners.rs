//! Who holds which relay port, and the stale-session takeover: when a key asks for a port still
//! held by an earlier session of the same key, the earlier session is probed; if it does not
//! answer within a short deadline it is closed and the port handed over at once. (OpenSSH keeps
//! such a port until TCP gives up on the dead session, which can take many minutes.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::pipe::Counters;

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
}

impl std::fmt::Debug for SessionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRef")
            .field("id", &self.id)
            .field("key_fp", &self.key_fp)
            .finish()
    }
}

#[derive(Debug)]
struct Entry {
    port: u16,
    requested_addr: String,
    session: SessionRef,
    /// Stops this one listener (cancel-tcpip-forward).
    stop: CancellationToken,
    stats: ListenerStats,
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
    /// The bind address the client asked for ("" = all, "localhost", ...).
    pub requested_addr: String,
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
}

impl ListenerRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a listener; `stop` ends it.
    pub fn add(
        &self,
        port: u16,
        requested_addr: &str,
        session: SessionRef,
        stop: CancellationToken,
        stats: ListenerStats,
    ) {
        self.lock().push(Entry {
            port,
            requested_addr: requested_addr.to_string(),
            session,
            stop,
            stats,
        });
    }

    /// Every listener now, in the order they were added.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        self.lock()
            .iter()
            .map(|e| ListenerInfo {
                session: e.session.id,
                port: e.port,
                requested_addr: e.requested_addr.clone(),
                stats: e.stats.clone(),
            })
            .collect()
    }

    /// How many listeners the relay holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session holds a listener.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// How many listeners sessions of this key hold.
    pub fn count_for_key(&self, key_fp: &str) -> usize {
        self.lock()
            .iter()
            .filter(|e| e.session.key_fp == key_fp)
            .count()
    }

    /// Who else holds `port`, seen from session `me` of key `key_fp`.
    pub fn conflict(&self, port: u16, me: u64, key_fp: &str) -> Conflict {
        let entries = self.lock();
        let holders: Vec<&Entry> = entries.iter().filter(|e| e.port == port).collect();
        if holders.is_empty()
            || holders
                .iter()
                .any(|e| e.session.key_fp != key_fp || e.session.id == me)
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
            let hit =
                e.session.id == session && e.port == port && e.requested_addr == requested_addr;
            if hit {
                e.stop.cancel();
            }
            !hit
        });
        entries.len() != before
    }

    /// Forgets every listener of a session that ended (its listener tasks stop with the session).
    pub fn release_session(&self, session: u64) {
        self.lock().retain(|e| {
            let hit = e.session.id == session;
            if hit {
                e.stop.cancel();
            }
            !hit
        });
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
