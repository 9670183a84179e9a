//! Prometheus text exposition of tunnel state on `--metrics ADDR`. It reads the same snapshots as
//! `burrow status`, so the two never disagree.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::supervisor::status::{State, StatusBoard, TunnelSnapshot};

/// One metric family: name, type, help, and how to read it from a snapshot.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TunnelSnapshot) -> u64,
);

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
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `render` over HTTP/1.1 on `addr` until `cancel`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    board: Arc<StatusBoard>,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = cancel.cancelled() => return,
            };
            let Ok((mut sock, _)) = accepted else {
                continue;
            };
            let board = board.clone();
            tokio::spawn(async move {
                let mut req = [0u8; 2048];
                let read =
                    tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut req))
                        .await;
                if !matches!(read, Ok(Ok(n)) if n > 0) {
                    return;
                }
                let body = render(&board.snapshot());
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(bound)
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
    }
}
