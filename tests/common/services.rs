//! Small TCP peers on 127.0.0.1:0, each a tokio task owned by a handle that aborts it (and every
//! connection it accepted) on drop. Call these from inside a tokio runtime.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use super::data::{read_to_end_hashed, DetStream, CHUNK};

/// Upper bound on connections one service accepts in its lifetime (keeps the accept loop bounded).
const MAX_CONNECTIONS: usize = 100_000;

/// Counters shared by a service and its test; every field counts since the service started.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    /// Connections whose handler has finished (peer gone, EOF handled, or error).
    pub closed: Arc<AtomicU64>,
    /// Bytes read from peers.
    pub bytes_in: Arc<AtomicU64>,
    /// Bytes written to peers.
    pub bytes_out: Arc<AtomicU64>,
}

impl Stats {
    /// Reads one counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
}

/// A running service: its address, counters, and the task that is aborted when this drops.
#[derive(Debug)]
pub struct Service {
    /// Where it listens (always 127.0.0.1).
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Stats,
    task: JoinHandle<()>,
}

impl Service {
    /// Host:port text for forward specs, e.g. `127.0.0.1:34567`.
    pub fn hostport(&self) -> String {
        self.addr.to_string()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.task.abort();
    }
}

async fn serve<F, Fut>(stats: Stats, handler: F) -> Service
where
    F: Fn(TcpStream, Stats) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let st = stats.clone();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        for _ in 0..MAX_CONNECTIONS {
            let Ok((sock, _)) = listener.accept().await else {
                // e.g. EMFILE: back off a little instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            st.connections.fetch_add(1, Ordering::SeqCst);
            let _ = sock.set_nodelay(true);
            let (st2, fut) = (st.clone(), handler(sock, st.clone()));
            conns.spawn(async move {
                fut.await;
                st2.closed.fetch_add(1, Ordering::SeqCst);
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Service { addr, stats, task }
}

/// Echoes every byte back; after the client's EOF, finishes sending and half-closes its write side.
pub async fn echo_server() -> Service {
    serve(Stats::default(), |sock, st| async move {
        let (rd, mut wr) = sock.into_split();
        let mut rd = BufReader::with_capacity(CHUNK, rd);
        if let Ok(n) = tokio::io::copy_buf(&mut rd, &mut wr).await {
            st.bytes_in.fetch_add(n, Ordering::SeqCst);
            st.bytes_out.fetch_add(n, Ordering::SeqCst);
            let _ = wr.shutdown().await;
        }
    })
    .await
}

/// Sends `n_bytes` of `DetStream::new(seed, n_bytes)` to every connection, then closes it.
/// The expected digest is [`det_sha256(seed, n_bytes)`](super::det_sha256).
pub async fn source_server(n_bytes: u64, seed: u64) -> Service {
    serve(Stats::default(), move |mut sock, st| async move {
        let mut s = DetStream::new(seed, n_bytes);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let k = s.fill(&mut buf);
            if k == 0 || sock.write_all(&buf[..k]).await.is_err() {
                break;
            }
            st.bytes_out.fetch_add(k as u64, Ordering::SeqCst);
        }
        let _ = sock.shutdown().await;
    })
    .await
}

/// What a sink saw on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkResult {
    /// Bytes read before EOF (or before the error).
    pub bytes: u64,
    /// sha256 hex of those bytes.
    pub sha256: String,
    /// False if the connection ended with an error (e.g. reset) instead of a clean EOF.
    pub clean_eof: bool,
}

/// A [`sink_server`]: the service plus the per-connection results, in the order connections end.
#[derive(Debug)]
pub struct Sink {
    /// Where it listens (same as `service.addr`).
    pub addr: SocketAddr,
    /// The service (address, counters).
    pub service: Service,
    results: mpsc::UnboundedReceiver<SinkResult>,
}

impl Sink {
    /// The next finished connection's result, or None if none finishes within `timeout`.
    pub async fn next_result(&mut self, timeout: Duration) -> Option<SinkResult> {
        tokio::time::timeout(timeout, self.results.recv())
            .await
            .ok()
            .flatten()
    }
}

/// Reads each connection to EOF and reports its byte count and sha256; closes after the EOF.
pub async fn sink_server() -> Sink {
    let (tx, results) = mpsc::unbounded_channel();
    let service = serve(Stats::default(), move |mut sock, st| {
        let tx = tx.clone();
        async move {
            let mut counted = Counted {
                inner: &mut sock,
                stats: &st,
                n: 0,
            };
            let r = read_to_end_hashed(&mut counted).await;
            let res = match r {
                Ok((bytes, sha256)) => SinkResult {
                    bytes,
                    sha256,
                    clean_eof: true,
                },
                Err(_) => SinkResult {
                    bytes: counted.n,
                    sha256: String::new(),
                    clean_eof: false,
                },
            };
            let _ = sock.shutdown().await;
            let _ = tx.send(res);
        }
    })
    .await;
    Sink {
        addr: service.addr,
        service,
        results,
    }
}

/// Wraps a reader to count into `stats.bytes_in` as bytes arrive (so a test can watch progress).
struct Counted<'a> {
    inner: &'a mut TcpStream,
    stats: &'a Stats,
    n: u64,
}

impl tokio::io::AsyncRead for Counted<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.stats.bytes_in.fetch_add(n, Ordering::SeqCst);
        self.n += n;
        r
    }
}

/// Writes to every connection until the peer is gone (write error), counting bytes written in
/// `stats.bytes_out`. Use it to prove backpressure (the count stalls when the reader stalls) and
/// that a dropped forward really drops the connection (`stats.closed` rises).
pub async fn endless_writer_server() -> Service {
    serve(Stats::default(), |mut sock, st| async move {
        let mut buf = vec![0u8; CHUNK];
        DetStream::new(7, CHUNK as u64).fill(&mut buf);
        // Bounded: 1 TiB at loopback speed is far beyond any test's timeout.
        for _ in 0..(1u64 << 40) / CHUNK as u64 {
            match sock.write(&buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    st.bytes_out.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        }
    })
    .await
}

/// A minimal HTTP/1.1 responder: any request gets `200 OK` with Content-Length and `body`, then the
/// connection closes (one request per connection). `stats.connections` counts requests.
pub async fn http_server(body: impl Into<Vec<u8>>) -> Service {
    let body: Arc<Vec<u8>> = Arc::new(body.into());
    serve(Stats::default(), move |mut sock, st| {
        let body = body.clone();
        async move {
            let mut req = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            // Headers must end within 16 KiB and 10 s.
            let got_head = tokio::time::timeout(Duration::from_secs(10), async {
                while req.len() < 16 * 1024 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                    if super::data::find(&req, b"\r\n\r\n").is_some() {
                        return true;
                    }
                }
                false
            })
            .await;
            st.bytes_in.fetch_add(req.len() as u64, Ordering::SeqCst);
            if got_head != Ok(true) {
                return;
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if sock.write_all(head.as_bytes()).await.is_ok() && sock.write_all(&body).await.is_ok() {
                st.bytes_out.fetch_add((head.len() + body.len()) as u64, Ordering::SeqCst);
                let _ = sock.shutdown().await;
            }
        }
    })
    .await
}
