//! What `burrow up` serves on `--metrics ADDR` (through [`crate::observe`]): Prometheus text and
//! the status page's JSON. Both read the same snapshots as `burrow status`, so the three never
//! disagree.

use std::fmt::Write as _;

use serde::Serialize;

use crate::observe::events::Event;
use crate::observe::rates::{Rates, Sample, Throughput};
use crate::observe::Source;
use crate::supervisor::status::{ForwardSnapshot, State, StatusBoard, TunnelSnapshot};

/// One metric family: name, type, help, and how to read it from a snapshot.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TunnelSnapshot) -> u64,
);

/// One per-forward metric family, read from a forward's snapshot.
type ForwardMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ForwardSnapshot) -> u64,
);

/// Each forward's series, labelled with its tunnel and the forward as configured
/// (`-R 8087:localhost:22`). They count the tunnel's current session, as `burrow status` does,
/// so they start again from 0 after a reconnect (a counter reset to Prometheus).
const FORWARD_METRICS: [ForwardMetric; 4] = [
    (
        "burrow_forward_connections_active",
        "gauge",
        "connections open now through this forward",
        |f| f.connections_active,
    ),
    (
        "burrow_forward_connections_total",
        "counter",
        "connections through this forward in the tunnel's current session",
        |f| f.connections_total,
    ),
    (
        "burrow_forward_sent_bytes_total",
        "counter",
        "bytes this forward sent towards the relay in the tunnel's current session",
        |f| f.bytes_out,
    ),
    (
        "burrow_forward_received_bytes_total",
        "counter",
        "bytes this forward received from the relay in the tunnel's current session",
        |f| f.bytes_in,
    ),
];

/// The exposition text for these tunnels.
pub fn render(tunnels: &[TunnelSnapshot]) -> String {
    let mut out = String::new();
    let metrics: [Metric; 10] = [
        (
            "burrow_tunnel_up",
            "gauge",
            "1 while the tunnel is connected with its forwards up",
            |t| u64::from(t.state == State::Up),
        ),
        (
            "burrow_tunnel_reconnects_total",
            "counter",
            "times the tunnel came back after being down",
            |t| t.reconnects,
        ),
        (
            "burrow_tunnel_failures",
            "gauge",
            "consecutive failed connection attempts",
            |t| t.failures,
        ),
        (
            "burrow_tunnel_connections_active",
            "gauge",
            "forwarded connections open now",
            |t| t.connections_active,
        ),
        (
            "burrow_tunnel_connections_total",
            "counter",
            "forwarded connections since start",
            |t| t.connections_total,
        ),
        (
            "burrow_tunnel_sent_bytes_total",
            "counter",
            "bytes sent towards the relay",
            |t| t.bytes_out,
        ),
        (
            "burrow_tunnel_received_bytes_total",
            "counter",
            "bytes received from the relay",
            |t| t.bytes_in,
        ),
        (
            "burrow_tunnel_streams_resumable",
            "gauge",
            "resumable streams alive (attached or waiting for the tunnel)",
            |t| t.streams_resumable,
        ),
        (
            "burrow_tunnel_streams_resumed_total",
            "counter",
            "streams re-attached after a reconnect",
            |t| t.streams_resumed,
        ),
        (
            "burrow_tunnel_streams_expired_total",
            "counter",
            "streams closed because the tunnel did not return within the grace period",
            |t| t.streams_expired,
        ),
    ];
    for (name, kind, help, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for t in tunnels {
            let _ = writeln!(out, "{name}{{tunnel=\"{}\"}} {}", escape(&t.name), value(t));
        }
    }
    for (name, kind, help, value) in FORWARD_METRICS {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for t in tunnels {
            for f in &t.forwards {
                let forward = if f.forward.is_empty() {
                    &f.spec
                } else {
                    &f.forward
                };
                let _ = writeln!(
                    out,
                    "{name}{{tunnel=\"{}\",forward=\"{}\"}} {}",
                    escape(&t.name),
                    escape(forward),
                    value(f)
                );
            }
        }
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/api/status` document of `burrow up`.
#[derive(Debug, Serialize)]
pub struct UpStatus {
    /// Always "up" (the page draws `serve` differently).
    pub kind: &'static str,
    /// burrow's version.
    pub version: &'static str,
    /// Unix time of this document.
    pub now: u64,
    /// Every tunnel, by name.
    pub tunnels: Vec<TunnelView>,
    /// Recent events, newest first.
    pub events: Vec<Event>,
}

/// One tunnel: exactly what `burrow status --json` shows, plus recent throughput.
#[derive(Debug, Serialize)]
pub struct TunnelView {
    /// The `burrow status` snapshot.
    #[serde(flatten)]
    pub tunnel: TunnelSnapshot,
    /// The tunnel's recent throughput (sent = towards the relay).
    pub throughput: Throughput,
    /// Each forward's, in the order of `tunnel.forwards`.
    pub forward_throughput: Vec<Throughput>,
}

/// Rate series id of a tunnel's forward.
fn forward_id(tunnel: &str, index: usize) -> String {
    format!("{tunnel}/{index}")
}

/// What `burrow up` shows on `--metrics ADDR`: the board every tunnel reports to.
impl Source for StatusBoard {
    fn metrics(&self) -> String {
        render(&self.snapshot())
    }

    fn samples(&self) -> Vec<(String, Sample)> {
        let mut out = Vec::new();
        for t in self.snapshot() {
            for (i, f) in t.forwards.iter().enumerate() {
                let sample = Sample {
                    sent: f.bytes_out,
                    received: f.bytes_in,
                };
                out.push((forward_id(&t.name, i), sample));
            }
            let sample = Sample {
                sent: t.bytes_out,
                received: t.bytes_in,
            };
            out.push((t.name, sample));
        }
        out
    }

    fn status(&self, rates: &Rates) -> serde_json::Result<Vec<u8>> {
        let tunnels = self
            .snapshot()
            .into_iter()
            .map(|tunnel| TunnelView {
                throughput: rates.get(&tunnel.name),
                forward_throughput: (0..tunnel.forwards.len())
                    .map(|i| rates.get(&forward_id(&tunnel.name, i)))
                    .collect(),
                tunnel,
            })
            .collect();
        serde_json::to_vec(&UpStatus {
            kind: "up",
            version: env!("CARGO_PKG_VERSION"),
            now: crate::observe::unix_secs(),
            tunnels,
            events: self.events.recent(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_per_tunnel_and_metric() {
        let t = TunnelSnapshot {
            name: "a\"b".into(),
            state: State::Up,
            since: 0,
            server: None,
            reconnects: 2,
            failures: 0,
            last_error: None,
            connections_active: 1,
            connections_total: 3,
            bytes_out: 10,
            bytes_in: 20,
            forwards: vec![ForwardSnapshot {
                forward: "-L 8080:web:80".into(),
                spec: "-L 8080:web:80 (listening on 127.0.0.1:8080)".into(),
                connections_active: 0,
                connections_total: 2,
                bytes_out: 7,
                bytes_in: 9,
            }],
            streams_resumable: 1,
            streams_resumed: 4,
            streams_expired: 0,
        };
        let text = render(&[t]);
        assert!(
            text.contains("burrow_tunnel_up{tunnel=\"a\\\"b\"} 1"),
            "{text}"
        );
        assert!(text.contains("burrow_tunnel_reconnects_total{tunnel=\"a\\\"b\"} 2"));
        assert!(text.contains("# TYPE burrow_tunnel_received_bytes_total counter"));
        assert!(text.contains("burrow_tunnel_streams_resumed_total{tunnel=\"a\\\"b\"} 4"));
        assert!(
            text.contains(
                "burrow_forward_sent_bytes_total{tunnel=\"a\\\"b\",forward=\"-L 8080:web:80\"} 7"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE burrow_forward_connections_total counter"));
    }

    #[test]
    fn status_document_is_the_status_snapshot_plus_throughput() {
        let board = StatusBoard::default();
        let t = board.tunnel("web");
        t.connecting("relay:2222");
        let session = std::sync::Arc::new(crate::pipe::Counters::default());
        let forward = std::sync::Arc::new(crate::pipe::Counters::child_of(session.clone()));
        t.up(
            session,
            vec![crate::supervisor::status::LiveForward {
                forward: "-R 80:localhost:8080".into(),
                spec: "-R 80:localhost:8080 (relay port 80)".into(),
                counters: forward,
            }],
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&Source::status(&board, &Rates::default()).unwrap()).unwrap();
        assert_eq!(doc["kind"], "up");
        let tunnel = &doc["tunnels"][0];
        let snapshot = serde_json::to_value(&board.snapshot()[0]).unwrap();
        for (k, v) in snapshot.as_object().unwrap() {
            assert_eq!(&tunnel[k], v, "{k}");
        }
        assert_eq!(tunnel["throughput"]["sent_per_sec"], 0);
        assert_eq!(
            tunnel["forwards"][0]["spec"],
            "-R 80:localhost:8080 (relay port 80)"
        );
        assert_eq!(
            tunnel["forward_throughput"].as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(doc["events"][0]["kind"], "connect");
    }
}
