//! Recent events (connect, disconnect, takeover, refusal, ...) for the status page, kept in a
//! bounded ring so a flood of refusals costs a fixed amount of memory and pushes out only older
//! events. The log lines in `tracing` stay the complete record; this is the glance view.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// How many events the status page keeps by default.
pub const DEFAULT_CAPACITY: usize = 200;

/// Longest subject or detail kept, in characters: details can quote what a client asked for
/// (a host name in a refused `direct-tcpip`), and that must not grow the ring without bound.
const MAX_TEXT: usize = 240;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A session authenticated (serve) or a tunnel came up (up).
    Connect,
    /// A session or tunnel ended.
    Disconnect,
    /// A port was taken from an unresponsive earlier session of the same key.
    Takeover,
    /// A request was refused (policy, caps, bind failure).
    Refusal,
    /// An authentication attempt was rejected.
    AuthFailure,
    /// A connection attempt failed (up).
    Failure,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Increases by one per event; lets a reader tell new events from ones it has seen.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// Who it happened to: a session (`#3 SHA256:… comment`) or a tunnel name.
    pub subject: String,
    /// The why, in words.
    pub detail: String,
}

/// A bounded ring of recent events, shared by every task that reports one.
#[derive(Debug)]
pub struct EventLog {
    capacity: usize,
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    next_seq: u64,
    events: VecDeque<Event>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl EventLog {
    /// An empty log that keeps the last `capacity` events (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Ring::default()),
        }
    }

    /// Records an event now, dropping the oldest when full.
    pub fn push(&self, kind: EventKind, subject: &str, detail: &str) {
        let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ring.next_seq += 1;
        let event = Event {
            seq: ring.next_seq,
            time_ms: crate::observe::unix_millis(),
            kind,
            subject: truncate(subject),
            detail: truncate(detail),
        };
        while ring.events.len() >= self.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event);
    }

    /// The kept events, newest first.
    pub fn recent(&self) -> Vec<Event> {
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ring.events.iter().rev().cloned().collect()
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or(text)),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest_and_numbers_them() {
        let log = EventLog::new(3);
        for i in 0..5 {
            log.push(EventKind::Refusal, &format!("s{i}"), "why");
        }
        let seen: Vec<(u64, String)> = log
            .recent()
            .into_iter()
            .map(|e| (e.seq, e.subject))
            .collect();
        assert_eq!(
            seen,
            vec![(5, "s4".into()), (4, "s3".into()), (3, "s2".into())]
        );
    }

    #[test]
    fn long_text_is_cut() {
        let log = EventLog::new(2);
        log.push(EventKind::Refusal, "s", &"é".repeat(1000));
        let e = &log.recent()[0];
        assert_eq!(e.detail.chars().count(), MAX_TEXT + 1);
        assert!(e.detail.ends_with('…'));
    }
}
