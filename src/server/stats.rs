//! Everything the relay counts, in one place: sessions, refusals by reason, takeovers,
//! authentication failures, and the recent events. The handler reports here; metrics, the JSON
//! status and the page read from here (see [`super::status`]), so they always agree.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::observe::events::{EventKind, EventLog};
use crate::pipe::Counters;
use crate::server::policy::DenyReason;

/// Why the relay refused something; the label is the Prometheus `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `AllowTcpForwarding` excludes this direction.
    ForwardingDisabled,
    /// The key has `restrict` or `no-port-forwarding`.
    KeyForwardingDisabled,
    /// Not in the server-wide or the key's PermitOpen.
    PermitOpen,
    /// Not in the server-wide or the key's PermitListen.
    PermitListen,
    /// A port below 1024 without `burrow-privileged-ports`.
    PrivilegedPort,
    /// The key holds as many listeners as it may.
    ListenerCap,
    /// The key has as many channels open as it may.
    ChannelCap,
    /// The listen address could not be bound (in use, not local, ...).
    Bind,
    /// The listen host name did not resolve.
    Resolve,
    /// A port number outside 0..=65535.
    BadPort,
    /// Too many connections had not authenticated yet.
    Startups,
    /// The key has as many sessions as it may.
    SessionCap,
}

impl Refusal {
    /// Every reason, in the order metrics list them.
    pub const ALL: [Refusal; 12] = [
        Refusal::ForwardingDisabled,
        Refusal::KeyForwardingDisabled,
        Refusal::PermitOpen,
        Refusal::PermitListen,
        Refusal::PrivilegedPort,
        Refusal::ListenerCap,
        Refusal::ChannelCap,
        Refusal::Bind,
        Refusal::Resolve,
        Refusal::BadPort,
        Refusal::Startups,
        Refusal::SessionCap,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ForwardingDisabled => "forwarding_disabled",
            Refusal::KeyForwardingDisabled => "key_forwarding_disabled",
            Refusal::PermitOpen => "permitopen",
            Refusal::PermitListen => "permitlisten",
            Refusal::PrivilegedPort => "privileged_port",
            Refusal::ListenerCap => "listener_cap",
            Refusal::ChannelCap => "channel_cap",
            Refusal::Bind => "bind",
            Refusal::Resolve => "resolve",
            Refusal::BadPort => "bad_port",
            Refusal::Startups => "max_startups",
            Refusal::SessionCap => "session_cap",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl From<DenyReason> for Refusal {
    fn from(r: DenyReason) -> Self {
        match r {
            DenyReason::ServerForwardingDisabled => Refusal::ForwardingDisabled,
            DenyReason::KeyForwardingDisabled => Refusal::KeyForwardingDisabled,
            DenyReason::NotInPermitOpen
            | DenyReason::NotInKeyPermitOpen
            | DenyReason::NotPublished
            | DenyReason::RelayAddress
            | DenyReason::AliasNotPermitted => Refusal::PermitOpen,
            DenyReason::NotInPermitListen | DenyReason::NotInKeyPermitListen => {
                Refusal::PermitListen
            }
            DenyReason::PrivilegedPort => Refusal::PrivilegedPort,
        }
    }
}

/// An authenticated session, as the status page shows it.
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// Fingerprint (SHA256) of its key.
    pub fingerprint: String,
    /// The key's comment in authorized_keys.
    pub comment: String,
    /// The user name the client sent.
    pub user: String,
    /// Where it connects from.
    pub peer: SocketAddr,
    /// Unix time it authenticated.
    pub since: u64,
    /// Its -L/-D/-W channels (`direct-tcpip`), all together.
    pub direct: Arc<Counters>,
}

/// The relay's counters and recent events.
#[derive(Debug)]
pub struct RelayStats {
    /// Unix time the relay started.
    pub started: u64,
    /// Failed authentication attempts.
    pub auth_failures: AtomicU64,
    /// Ports handed from a dead session to a new one.
    pub takeovers: AtomicU64,
    /// Sessions that authenticated since start.
    pub sessions_total: AtomicU64,
    refusals: [AtomicU64; Refusal::ALL.len()],
    sessions: Mutex<BTreeMap<u64, LiveSession>>,
    /// Recent connects, disconnects, takeovers, refusals.
    pub events: EventLog,
}

impl Default for RelayStats {
    fn default() -> Self {
        Self {
            started: crate::observe::unix_secs(),
            auth_failures: AtomicU64::new(0),
            takeovers: AtomicU64::new(0),
            sessions_total: AtomicU64::new(0),
            refusals: Default::default(),
            sessions: Mutex::new(BTreeMap::new()),
            events: EventLog::default(),
        }
    }
}

/// How a session is named in events: `#3 SHA256:abcd… (comment)`.
pub fn session_label(id: u64, fingerprint: &str, comment: &str) -> String {
    let short: String = fingerprint.chars().take(19).collect();
    let dots = if fingerprint.len() > short.len() {
        "…"
    } else {
        ""
    };
    if comment.is_empty() {
        format!("#{id} {short}{dots}")
    } else {
        format!("#{id} {short}{dots} ({comment})")
    }
}

impl RelayStats {
    fn sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, LiveSession>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a refusal and records it for the page.
    pub fn refused(&self, reason: Refusal, subject: &str, detail: &str) {
        if let Some(c) = self.refusals.get(reason.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.events.push(EventKind::Refusal, subject, detail);
    }

    /// Refusals so far, by reason (every reason listed, zeros included).
    pub fn refusals(&self) -> Vec<(Refusal, u64)> {
        Refusal::ALL
            .iter()
            .zip(self.refusals.iter())
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Counts a rejected authentication attempt from `peer`.
    pub fn auth_failed(&self, peer: SocketAddr, fingerprint: &str, why: &str) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
        self.events.push(
            EventKind::AuthFailure,
            &peer.to_string(),
            &format!("{fingerprint}: {why}"),
        );
    }

    /// A session authenticated.
    pub fn session_started(&self, id: u64, session: LiveSession) {
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
        let subject = session_label(id, &session.fingerprint, &session.comment);
        let detail = format!("user {} from {}", session.user, session.peer);
        self.sessions().insert(id, session);
        self.events.push(EventKind::Connect, &subject, &detail);
    }

    /// A session ended (authenticated or not; only authenticated ones make an event).
    pub fn session_ended(&self, id: u64, why: &str) {
        let Some(s) = self.sessions().remove(&id) else {
            return;
        };
        let subject = session_label(id, &s.fingerprint, &s.comment);
        self.events.push(EventKind::Disconnect, &subject, why);
    }

    /// A port moved from an unresponsive earlier session to a new one.
    pub fn took_over(&self, subject: &str, port: u16, holder: u64) {
        self.takeovers.fetch_add(1, Ordering::Relaxed);
        self.events.push(
            EventKind::Takeover,
            subject,
            &format!("port {port} taken from session #{holder}, which did not answer a keepalive"),
        );
    }

    /// The authenticated sessions now, by id.
    pub fn live_sessions(&self) -> Vec<(u64, LiveSession)> {
        self.sessions()
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> LiveSession {
        LiveSession {
            fingerprint: "SHA256:0123456789abcdefghijklmnopqrstuvwxyz".into(),
            comment: "tunnel-a".into(),
            user: "u".into(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            since: 0,
            direct: Arc::default(),
        }
    }

    #[test]
    fn sessions_come_and_go_with_events() {
        let s = RelayStats::default();
        s.session_started(7, session());
        assert_eq!(s.live_sessions().len(), 1);
        s.session_ended(7, "client closed");
        s.session_ended(8, "never authenticated");
        assert!(s.live_sessions().is_empty());
        let kinds: Vec<EventKind> = s.events.recent().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![EventKind::Disconnect, EventKind::Connect]);
        assert_eq!(
            s.events.recent()[0].subject,
            "#7 SHA256:0123456789ab… (tunnel-a)"
        );
        assert_eq!(s.sessions_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let s = RelayStats::default();
        s.refused(DenyReason::NotInKeyPermitOpen.into(), "#1", "x");
        s.refused(Refusal::PermitOpen, "#1", "y");
        s.refused(Refusal::Startups, "1.2.3.4:5", "z");
        let by: BTreeMap<&str, u64> = s
            .refusals()
            .into_iter()
            .map(|(r, n)| (r.label(), n))
            .collect();
        assert_eq!(by["permitopen"], 2);
        assert_eq!(by["max_startups"], 1);
        assert_eq!(by["bind"], 0);
        assert_eq!(by.len(), Refusal::ALL.len());
    }
}
