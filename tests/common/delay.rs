//! A delay line: a TCP proxy that releases every chunk `delay` after it arrived, in each
//! direction, with unbounded buffering. Between a client and a server it makes a long fat pipe
//! (this kernel has no netem): RTT = 2 × delay, and neither TCP nor the proxy limits throughput,
//! only the SSH peers' windows do.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A running delay line; its tasks (and the connections through it) end when this is dropped.
pub struct DelayLine {
    /// Where clients connect instead of the server.
    pub addr: SocketAddr,
    _task: JoinSet<()>,
}

impl DelayLine {
    /// Listens on 127.0.0.1 and forwards every connection to `target` with `delay` each way.
    pub async fn start(target: SocketAddr, delay: Duration) -> Result<DelayLine> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut task = JoinSet::new();
        task.spawn(accept_loop(listener, target, delay));
        Ok(DelayLine { addr, _task: task })
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, delay: Duration) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((inbound, _)) = accepted else { continue };
                conns.spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::join!(direction(ir, ow, delay), direction(or, iw, delay));
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One direction: a reader that never waits for the writer (unbounded queue of timestamped
/// chunks) and a writer that sleeps until each chunk is due. EOF is forwarded as a shutdown,
/// delayed like data. Also the delayed in-memory channels of the resume registry's unit tests
/// (`src/resume/registry/tests.rs` includes this file).
pub async fn direction(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        loop {
            let mut buf = vec![0u8; 64 * 1024];
            let n = from.read(&mut buf).await.unwrap_or(0);
            buf.truncate(n);
            let eof = n == 0;
            if tx.send((Instant::now() + delay, buf)).is_err() || eof {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() {
                let _ = to.shutdown().await;
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}
