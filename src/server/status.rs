//! The relay seen from outside: Prometheus metrics and the `/api/status` document for the
//! status page, both built from [`super::stats`], the listener registry and the byte counters.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::listeners::ListenerInfo;
use super::Relay;
use crate::observe::events::Event;
use crate::observe::prometheus::Exposition;
use crate::observe::rates::{Rates, Sample, Throughput};
use crate::observe::Source;
use crate::pipe::Counters;

/// The `/api/status` document of `burrow serve`.
#[derive(Debug, Serialize)]
pub struct RelayStatus {
    /// Always "serve" (the page draws `up` differently).
    pub kind: &'static str,
    /// burrow's version.
    pub version: &'static str,
    /// The SSH listen address.
    pub listen: String,
    /// Unix time the relay started.
    pub started: u64,
    /// Unix time of this document.
    pub now: u64,
    /// Relay-wide counters.
    pub totals: Totals,
    /// Authenticated sessions, oldest first.
    pub sessions: Vec<SessionView>,
    /// Recent events, newest first.
    pub events: Vec<Event>,
}

/// Relay-wide counters (the same numbers as `/metrics`).
#[derive(Debug, Serialize)]
pub struct Totals {
    /// Authenticated sessions now.
    pub sessions: u64,
    /// Sessions that authenticated since start.
    pub sessions_total: u64,
    /// Connections not authenticated yet.
    pub unauthenticated: u64,
    /// -R listeners now (sockets).
    pub listeners: u64,
    /// Aliases published now (-R by name, no socket).
    pub aliases: u64,
    /// Forwarding channels open now.
    pub channels: u64,
    /// Forwarded connections since start.
    pub channels_total: u64,
    /// Bytes sent to SSH clients through forwards.
    pub sent_bytes: u64,
    /// Bytes received from SSH clients through forwards.
    pub received_bytes: u64,
    /// Rejected authentication attempts.
    pub auth_failures: u64,
    /// Ports taken over from dead sessions.
    pub takeovers: u64,
    /// Resumable streams alive now (attached, or waiting for their client to come back).
    pub streams_resumable: u64,
    /// Streams re-attached after a client reconnected.
    pub streams_resumed: u64,
    /// Streams closed because their client did not return within the grace period.
    pub streams_expired: u64,
    /// Re-attach attempts refused for a wrong secret.
    pub streams_refused: u64,
    /// Streams carried unresumable because a replay buffer budget (per key or relay-wide) was
    /// full.
    pub streams_unresumable: u64,
    /// Replay buffers grown because they limited their stream.
    pub streams_buffers_grown: u64,
    /// Replay buffer growths a resume budget refused (the stream kept its buffer size).
    pub streams_growth_refused: u64,
    /// Bytes reserved by the replay buffers of resumable streams now.
    pub resume_reserved_bytes: u64,
    /// Bytes channel receive windows have grown by, past the configured window, now.
    pub window_growth_bytes: u64,
    /// Window growths a window growth budget refused (counted each round trip a channel would
    /// have grown).
    pub window_growth_refused: u64,
    /// Refusals by reason.
    pub refusals: BTreeMap<&'static str, u64>,
    /// Relay-wide throughput.
    pub throughput: Throughput,
}

/// One authenticated session.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// Relay-wide session number.
    pub id: u64,
    /// SHA256 fingerprint of its key.
    pub fingerprint: String,
    /// The key's comment.
    pub comment: String,
    /// User name sent by the client.
    pub user: String,
    /// Client address.
    pub peer: String,
    /// Unix time it authenticated.
    pub since: u64,
    /// Its forwards: -R listeners, then its -L/-D/-W channels together.
    pub forwards: Vec<ForwardView>,
}

/// One forward of a session.
#[derive(Debug, Serialize)]
pub struct ForwardView {
    /// Stable id (also the rate series).
    pub id: String,
    /// "remote" (-R listener), "alias" (-R by name, no socket) or "direct" (-L/-D/-W channels).
    pub kind: &'static str,
    /// What the client asked for: `[addr]:port` for -R, `direct-tcpip` otherwise.
    pub bind: String,
    /// The addresses a -R listener really bound.
    pub bound: Vec<String>,
    /// Connections open now.
    pub connections_active: u64,
    /// Connections since it started.
    pub connections_total: u64,
    /// Bytes sent to the client.
    pub sent_bytes: u64,
    /// Bytes received from the client.
    pub received_bytes: u64,
    /// Recent throughput.
    pub throughput: Throughput,
}

/// Rate series id of the relay total.
const TOTAL_ID: &str = "total";

fn listener_id(l: &ListenerInfo) -> String {
    format!("s{}/r[{}]:{}", l.session, l.requested_addr, l.port)
}

fn direct_id(session: u64) -> String {
    format!("s{session}/direct")
}

fn sample(c: &Counters) -> Sample {
    Sample {
        sent: c.a_to_b.load(Ordering::Relaxed),
        received: c.b_to_a.load(Ordering::Relaxed),
    }
}

fn forward(
    id: String,
    kind: &'static str,
    bind: String,
    bound: Vec<String>,
    c: &Counters,
    rates: &Rates,
) -> ForwardView {
    let throughput = rates.get(&id);
    ForwardView {
        id,
        kind,
        bind,
        bound,
        connections_active: c.active.load(Ordering::Relaxed),
        connections_total: c.opened.load(Ordering::Relaxed),
        sent_bytes: c.a_to_b.load(Ordering::Relaxed),
        received_bytes: c.b_to_a.load(Ordering::Relaxed),
        throughput,
    }
}

/// `[addr]:port` as the client asked (`*` for all interfaces).
fn bind_label(l: &ListenerInfo) -> String {
    let addr = match l.requested_addr.as_str() {
        "" => "*",
        a => a,
    };
    if addr.contains(':') {
        format!("[{addr}]:{}", l.port)
    } else {
        format!("{addr}:{}", l.port)
    }
}

impl Relay {
    /// Relay-wide counters now.
    pub fn totals(&self, rates: &Rates) -> Totals {
        let st = &self.stats;
        let c = &self.counters;
        let unauthenticated = self
            .config
            .limits
            .max_startups
            .saturating_sub(self.unauthenticated.available_permits());
        let aliases = self.registry.aliases();
        Totals {
            sessions: st.live_sessions().len() as u64,
            sessions_total: st.sessions_total.load(Ordering::Relaxed),
            unauthenticated: unauthenticated as u64,
            listeners: self.registry.len().saturating_sub(aliases) as u64,
            aliases: aliases as u64,
            channels: self.open_channels(),
            channels_total: c.opened.load(Ordering::Relaxed),
            sent_bytes: c.a_to_b.load(Ordering::Relaxed),
            received_bytes: c.b_to_a.load(Ordering::Relaxed),
            auth_failures: st.auth_failures.load(Ordering::Relaxed),
            takeovers: st.takeovers.load(Ordering::Relaxed),
            streams_resumable: self.resume.stats.streams.load(Ordering::Relaxed),
            streams_resumed: self.resume.stats.resumed.load(Ordering::Relaxed),
            streams_expired: self.resume.stats.expired.load(Ordering::Relaxed),
            streams_refused: self.resume.stats.refused.load(Ordering::Relaxed),
            streams_unresumable: self.resume.stats.unresumable.load(Ordering::Relaxed),
            streams_buffers_grown: self.resume.stats.grown.load(Ordering::Relaxed),
            streams_growth_refused: self.resume.stats.growth_refused.load(Ordering::Relaxed),
            resume_reserved_bytes: self.resume.reserved(),
            window_growth_bytes: self.windows.reserved(),
            window_growth_refused: self.windows.refused(),
            refusals: st
                .refusals()
                .into_iter()
                .map(|(r, n)| (r.label(), n))
                .collect(),
            throughput: rates.get(TOTAL_ID),
        }
    }

    /// The whole status document.
    pub fn status(&self, rates: &Rates) -> RelayStatus {
        let listeners = self.registry.listeners();
        let sessions = self
            .stats
            .live_sessions()
            .into_iter()
            .map(|(id, s)| {
                let mut forwards: Vec<ForwardView> = listeners
                    .iter()
                    .filter(|l| l.session == id)
                    .map(|l| {
                        let c = &l.stats.counters;
                        forward(
                            listener_id(l),
                            if l.alias { "alias" } else { "remote" },
                            bind_label(l),
                            l.stats.bound.clone(),
                            c,
                            rates,
                        )
                    })
                    .collect();
                if s.direct.opened.load(Ordering::Relaxed) > 0 {
                    forwards.push(forward(
                        direct_id(id),
                        "direct",
                        "direct-tcpip".into(),
                        Vec::new(),
                        &s.direct,
                        rates,
                    ));
                }
                SessionView {
                    id,
                    fingerprint: s.fingerprint,
                    comment: s.comment,
                    user: s.user,
                    peer: s.peer.to_string(),
                    since: s.since,
                    forwards,
                }
            })
            .collect();
        RelayStatus {
            kind: "serve",
            version: env!("CARGO_PKG_VERSION"),
            listen: self.local_addr.to_string(),
            started: self.stats.started,
            now: crate::observe::unix_secs(),
            totals: self.totals(rates),
            sessions,
            events: self.stats.events.recent(),
        }
    }
}

/// Prometheus text for these totals.
pub fn render_metrics(t: &Totals) -> String {
    let mut out = Exposition::default();
    let plain: [(&str, &str, &str, u64); 21] = [
        (
            "burrow_relay_sessions",
            "gauge",
            "authenticated sessions now",
            t.sessions,
        ),
        (
            "burrow_relay_sessions_total",
            "counter",
            "sessions that authenticated since start",
            t.sessions_total,
        ),
        (
            "burrow_relay_unauthenticated_connections",
            "gauge",
            "connections that have not authenticated yet",
            t.unauthenticated,
        ),
        (
            "burrow_relay_listeners",
            "gauge",
            "remote forward (-R) listeners now",
            t.listeners,
        ),
        (
            "burrow_relay_aliases",
            "gauge",
            "aliases published now (-R by name: private, no socket)",
            t.aliases,
        ),
        (
            "burrow_relay_channels",
            "gauge",
            "forwarding channels open now",
            t.channels,
        ),
        (
            "burrow_relay_channels_total",
            "counter",
            "forwarded connections since start",
            t.channels_total,
        ),
        (
            "burrow_relay_sent_bytes_total",
            "counter",
            "bytes sent to SSH clients through forwards",
            t.sent_bytes,
        ),
        (
            "burrow_relay_received_bytes_total",
            "counter",
            "bytes received from SSH clients through forwards",
            t.received_bytes,
        ),
        (
            "burrow_relay_takeovers_total",
            "counter",
            "ports taken over from unresponsive sessions of the same key",
            t.takeovers,
        ),
        (
            "burrow_relay_auth_failures_total",
            "counter",
            "rejected authentication attempts",
            t.auth_failures,
        ),
        (
            "burrow_relay_streams_resumable",
            "gauge",
            "resumable streams alive (attached or waiting for their client)",
            t.streams_resumable,
        ),
        (
            "burrow_relay_streams_resumed_total",
            "counter",
            "streams re-attached after their client reconnected",
            t.streams_resumed,
        ),
        (
            "burrow_relay_streams_expired_total",
            "counter",
            "streams closed because their client did not return within the grace period",
            t.streams_expired,
        ),
        (
            "burrow_relay_streams_refused_total",
            "counter",
            "stream re-attach attempts refused for a wrong secret",
            t.streams_refused,
        ),
        (
            "burrow_relay_streams_unresumable_total",
            "counter",
            "streams carried without a replay buffer because a resume budget was full",
            t.streams_unresumable,
        ),
        (
            "burrow_relay_stream_buffers_grown_total",
            "counter",
            "replay buffers of resumable streams grown because they limited their stream",
            t.streams_buffers_grown,
        ),
        (
            "burrow_relay_stream_buffer_growth_refused_total",
            "counter",
            "replay buffer growths a resume budget refused (the stream kept its buffer)",
            t.streams_growth_refused,
        ),
        (
            "burrow_relay_resume_reserved_bytes",
            "gauge",
            "bytes reserved by the replay buffers of resumable streams",
            t.resume_reserved_bytes,
        ),
        (
            "burrow_relay_window_growth_bytes",
            "gauge",
            "bytes channel receive windows have grown by, past the configured window",
            t.window_growth_bytes,
        ),
        (
            "burrow_relay_window_growth_refused_total",
            "counter",
            "window growths a window growth budget refused (each round trip it would have grown)",
            t.window_growth_refused,
        ),
    ];
    for (name, kind, help, value) in plain {
        out.family(name, kind, help);
        out.sample(name, &[], value);
    }
    let name = "burrow_relay_refusals_total";
    out.family(
        name,
        "counter",
        "refused forwards and connections, by reason",
    );
    for (reason, n) in &t.refusals {
        out.sample(name, &[("reason", reason)], *n);
    }
    out.finish()
}

impl Source for Relay {
    fn metrics(&self) -> String {
        render_metrics(&self.totals(&Rates::default()))
    }

    fn samples(&self) -> Vec<(String, Sample)> {
        let mut out = vec![(TOTAL_ID.to_string(), sample(&self.counters))];
        for l in self.registry.listeners() {
            out.push((listener_id(&l), sample(&l.stats.counters)));
        }
        for (id, s) in self.stats.live_sessions() {
            out.push((direct_id(id), sample(&s.direct)));
        }
        out
    }

    fn status(&self, rates: &Rates) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&Relay::status(self, rates))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_list_every_counter_and_refusal_reason() {
        let totals = Totals {
            sessions: 2,
            sessions_total: 5,
            unauthenticated: 1,
            listeners: 3,
            aliases: 1,
            channels: 4,
            channels_total: 9,
            sent_bytes: 1000,
            received_bytes: 2000,
            auth_failures: 6,
            takeovers: 1,
            streams_resumable: 1,
            streams_resumed: 7,
            streams_expired: 2,
            streams_refused: 0,
            streams_unresumable: 3,
            streams_buffers_grown: 8,
            streams_growth_refused: 5,
            resume_reserved_bytes: 4096,
            window_growth_bytes: 2 << 20,
            window_growth_refused: 3,
            refusals: [("permitopen", 2), ("bind", 0)].into_iter().collect(),
            throughput: Throughput::default(),
        };
        let text = render_metrics(&totals);
        for line in [
            "burrow_relay_sessions 2",
            "burrow_relay_sessions_total 5",
            "burrow_relay_listeners 3",
            "burrow_relay_aliases 1",
            "burrow_relay_channels 4",
            "burrow_relay_sent_bytes_total 1000",
            "burrow_relay_received_bytes_total 2000",
            "burrow_relay_takeovers_total 1",
            "burrow_relay_auth_failures_total 6",
            "burrow_relay_streams_resumed_total 7",
            "burrow_relay_streams_expired_total 2",
            "burrow_relay_streams_unresumable_total 3",
            "burrow_relay_stream_buffers_grown_total 8",
            "burrow_relay_stream_buffer_growth_refused_total 5",
            "burrow_relay_resume_reserved_bytes 4096",
            "burrow_relay_window_growth_bytes 2097152",
            "burrow_relay_window_growth_refused_total 3",
            "burrow_relay_refusals_total{reason=\"permitopen\"} 2",
            "burrow_relay_refusals_total{reason=\"bind\"} 0",
            "# TYPE burrow_relay_refusals_total counter",
            "# TYPE burrow_relay_sessions gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
    }
}
