//! The load generator and its far-side servers, all in this process on loopback:
//! - sink: reads a stream to EOF, then answers how many bytes came and when the first and last
//!   arrived (so the receiver measures, not the sender);
//! - source: sends for the number of milliseconds the client asks, then closes;
//! - echo: sends back what it reads (latency, connections/s, idle connections, readiness);
//! - checked sink and checked source: the same with an exact byte count and every byte compared
//!   with the pattern, for the cases that must prove nothing was lost (rekeying).
//!
//! Timestamps are nanoseconds since [`epoch`], one clock for every stream of a run.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Size of one read or write of the generator.
const BUF: usize = 256 * 1024;

/// The process-wide time origin of all timestamps.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// What one stream delivered, as seen by its receiver.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    /// Bytes received.
    pub bytes: u64,
    /// When the first byte arrived (ns since [`epoch`]).
    pub first: u64,
    /// When the last byte arrived.
    pub last: u64,
}

/// Aggregate throughput of streams that ran together, in MiB/s: all bytes over the time from the
/// first byte of any stream to the last byte of any stream.
pub fn mib_per_s(records: &[Record]) -> f64 {
    let bytes: u64 = records.iter().map(|r| r.bytes).sum();
    let first = records.iter().map(|r| r.first).min().unwrap_or(0);
    let last = records.iter().map(|r| r.last).max().unwrap_or(0);
    let secs = (last.saturating_sub(first) as f64 / 1e9).max(1e-6);
    bytes as f64 / (1024.0 * 1024.0) / secs
}

/// The far-side servers; their tasks end when this is dropped.
pub struct Servers {
    /// Sink address.
    pub sink: SocketAddr,
    /// Source address.
    pub source: SocketAddr,
    /// Echo address.
    pub echo: SocketAddr,
    /// Checked sink address (see [`upload_exact`]).
    pub checked_sink: SocketAddr,
    /// Checked source address (see [`download_exact`]).
    pub checked_source: SocketAddr,
    _tasks: JoinSet<()>,
}

impl Servers {
    /// Binds the three servers on 127.0.0.1 (ports chosen by the system).
    pub async fn start() -> Result<Servers> {
        let mut tasks = JoinSet::new();
        let sink = serve(&mut tasks, |s| Box::pin(sink_conn(s))).await?;
        let source = serve(&mut tasks, |s| Box::pin(source_conn(s))).await?;
        let echo = serve(&mut tasks, |s| Box::pin(echo_conn(s))).await?;
        let checked_sink = serve(&mut tasks, |s| Box::pin(checked_sink_conn(s))).await?;
        let checked_source = serve(&mut tasks, |s| Box::pin(checked_source_conn(s))).await?;
        Ok(Servers {
            sink,
            source,
            echo,
            checked_sink,
            checked_source,
            _tasks: tasks,
        })
    }
}

type ConnFuture = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

/// Accepts on a fresh loopback listener and runs `handle` per connection; connection tasks belong
/// to the accept task and end with it.
async fn serve(tasks: &mut JoinSet<()>, handle: fn(TcpStream) -> ConnFuture) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((s, _)) = accepted {
                        let _ = s.set_nodelay(true);
                        conns.spawn(async move { let _ = handle(s).await; });
                    }
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok(addr)
}

async fn sink_conn(mut s: TcpStream) -> std::io::Result<()> {
    let r = receive(&mut s, |_, _| ()).await?;
    write_words(&mut s, &[r.bytes, r.first, r.last]).await?;
    s.shutdown().await
}

async fn source_conn(mut s: TcpStream) -> std::io::Result<()> {
    let millis = s.read_u64().await?.min(60_000);
    let end = Instant::now() + Duration::from_millis(millis);
    let buf = pattern();
    while Instant::now() < end {
        s.write_all(&buf).await?;
    }
    s.shutdown().await
}

async fn echo_conn(mut s: TcpStream) -> std::io::Result<()> {
    let (mut r, mut w) = s.split();
    tokio::io::copy(&mut r, &mut w).await?;
    Ok(())
}

/// Like [`sink_conn`], but compares every byte with the repeated [`pattern`] and adds the offset
/// of the first byte that differs (`u64::MAX`: none) to the reply.
async fn checked_sink_conn(mut s: TcpStream) -> std::io::Result<()> {
    let mut check = Check::new();
    let r = receive(&mut s, |at, data| check.feed(at, data)).await?;
    let bad = check.first_bad.unwrap_or(u64::MAX);
    write_words(&mut s, &[r.bytes, r.first, r.last, bad]).await?;
    s.shutdown().await
}

/// Reads `s` to EOF, handing each chunk to `chunk` with its offset in the stream; returns the
/// count and when the first and the last byte arrived.
async fn receive<R: AsyncRead + Unpin>(
    s: &mut R,
    mut chunk: impl FnMut(u64, &[u8]),
) -> std::io::Result<Record> {
    let mut buf = vec![0u8; BUF];
    let (mut bytes, mut first, mut last) = (0u64, 0u64, 0u64);
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        last = now_ns();
        if bytes == 0 {
            first = last;
        }
        chunk(bytes, &buf[..n]);
        bytes += n as u64;
    }
    Ok(Record { bytes, first, last })
}

/// Big-endian words in one write (a sink's reply).
async fn write_words<W: AsyncWrite + Unpin>(s: &mut W, words: &[u64]) -> std::io::Result<()> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    s.write_all(&bytes).await
}

/// `N` big-endian words (a sink's reply).
async fn read_words<const N: usize, R: AsyncRead + Unpin>(s: &mut R) -> std::io::Result<[u64; N]> {
    let mut words = [0u64; N];
    for w in &mut words {
        *w = s.read_u64().await?;
    }
    Ok(words)
}

/// A stream compared chunk by chunk with the repeated [`pattern`].
struct Check {
    expected: Vec<u8>,
    /// Offset of the first byte that differed.
    first_bad: Option<u64>,
}

impl Check {
    fn new() -> Check {
        Check {
            expected: pattern(),
            first_bad: None,
        }
    }

    /// Compares `data`, found at offset `at` of the stream (until the first difference).
    fn feed(&mut self, at: u64, data: &[u8]) {
        if self.first_bad.is_none() {
            self.first_bad = mismatch(&self.expected, at, data).map(|i| at + i as u64);
        }
    }
}

/// Sends exactly the number of bytes the client asks for (the repeated [`pattern`]), then
/// closes.
async fn checked_source_conn(mut s: TcpStream) -> std::io::Result<()> {
    let mut left = s.read_u64().await?.min(MAX_EXACT);
    let buf = pattern();
    while left > 0 {
        let n = left.min(BUF as u64) as usize;
        s.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    s.shutdown().await
}

/// The most one checked transfer moves (bounds the checked source).
const MAX_EXACT: u64 = 64 << 30;

/// Where `data`, received at stream offset `offset`, first differs from the repeated `pattern`
/// (whose length is [`BUF`]).
fn mismatch(pattern: &[u8], offset: u64, data: &[u8]) -> Option<usize> {
    let mut done = 0;
    while done < data.len() {
        let at = ((offset + done as u64) % BUF as u64) as usize;
        let n = (BUF - at).min(data.len() - done);
        let (got, want) = (&data[done..done + n], &pattern[at..at + n]);
        if got != want {
            return got
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .map(|i| done + i);
        }
        done += n;
    }
    None
}

/// Data that no compressor would shrink much (compression is off anyway).
fn pattern() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..BUF)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// How a stream reaches the far side: straight to a forward's port, or through a SOCKS5 proxy.
#[derive(Clone, Copy, Debug)]
pub enum Route {
    /// Connect to this address (a -L or -R port, or the server itself for the ceiling).
    Direct(SocketAddr),
    /// Connect to the proxy, then ask it for the target.
    Socks5 {
        proxy: SocketAddr,
        target: SocketAddr,
    },
}

/// Opens a stream along `route`.
pub async fn open(route: Route) -> Result<TcpStream> {
    let addr = match route {
        Route::Direct(a) | Route::Socks5 { proxy: a, .. } => a,
    };
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    if let Route::Socks5 { target, .. } = route {
        socks5_connect(&mut s, target).await?;
    }
    Ok(s)
}

/// The SOCKS5 handshake without authentication, for an IPv4 target.
async fn socks5_connect<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    target: SocketAddr,
) -> Result<()> {
    let SocketAddr::V4(t) = target else {
        bail!("SOCKS target {target} is not IPv4");
    };
    s.write_all(&[5, 1, 0]).await?;
    let mut hello = [0u8; 2];
    s.read_exact(&mut hello).await?;
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&t.ip().octets());
    req.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&req).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[1] != 0 {
        bail!("SOCKS5 proxy refused {target}: reply code {}", head[1]);
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => s.read_u8().await? as usize + 2,
        other => bail!("SOCKS5 reply with address type {other}"),
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip).await?;
    Ok(())
}

/// Sends to the sink along `route` for `secs`, then returns what the sink received.
pub async fn upload(route: Route, secs: f64) -> Result<Record> {
    let mut s = open(route).await?;
    let buf = pattern();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        s.write_all(&buf).await.context("sending to the sink")?;
    }
    s.shutdown().await?;
    let [bytes, first, last] = read_words(&mut s)
        .await
        .context("reading the sink's count")?;
    Ok(Record { bytes, first, last })
}

/// Asks the source along `route` for `secs` of data and measures what arrives.
pub async fn download(route: Route, secs: f64) -> Result<Record> {
    let mut s = open(route).await?;
    s.write_u64((secs * 1000.0) as u64).await?;
    let r = receive(&mut s, |_, _| ()).await;
    r.context("reading from the source")
}

/// Sends exactly `bytes` of the pattern to the checked sink along `route` and returns what it
/// received; fails unless every byte arrived unchanged.
pub async fn upload_exact(route: Route, bytes: u64) -> Result<Record> {
    let mut s = open(route).await?;
    let buf = pattern();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BUF as u64) as usize;
        s.write_all(&buf[..n])
            .await
            .with_context(|| format!("sending to the checked sink, {} bytes sent", bytes - left))?;
        left -= n as u64;
    }
    s.shutdown().await?;
    let [got, first, last, bad] = read_words(&mut s)
        .await
        .context("reading the checked sink's count")?;
    if got != bytes {
        bail!("the checked sink received {got} of {bytes} bytes");
    }
    if bad != u64::MAX {
        bail!("the checked sink received {bytes} bytes, wrong from byte {bad} on");
    }
    Ok(Record { bytes, first, last })
}

/// Asks the checked source along `route` for exactly `bytes` and measures what arrives; fails
/// unless every byte arrived unchanged.
pub async fn download_exact(route: Route, bytes: u64) -> Result<Record> {
    let mut s = open(route).await?;
    s.write_u64(bytes).await?;
    let mut check = Check::new();
    let mut got = 0;
    let r = receive(&mut s, |at, data| {
        check.feed(at, data);
        got = at + data.len() as u64;
    })
    .await;
    let r = r.with_context(|| {
        format!("reading from the checked source, {got} of {bytes} bytes received")
    })?;
    if let Some(bad) = check.first_bad {
        bail!("from the checked source: wrong from byte {bad} on");
    }
    if r.bytes != bytes {
        bail!(
            "received {} of {bytes} bytes from the checked source",
            r.bytes
        );
    }
    Ok(r)
}

/// Runs `streams` uploads or downloads at once and returns their aggregate MiB/s.
pub async fn bulk(route: Route, streams: usize, secs: f64, down: bool) -> Result<f64> {
    Ok(mib_per_s(&bulk_records(route, streams, secs, down).await?))
}

/// Runs `streams` uploads or downloads at once and returns what each delivered.
pub async fn bulk_records(
    route: Route,
    streams: usize,
    secs: f64,
    down: bool,
) -> Result<Vec<Record>> {
    let mut set = JoinSet::new();
    for _ in 0..streams {
        set.spawn(async move {
            if down {
                download(route, secs).await
            } else {
                upload(route, secs).await
            }
        });
    }
    let mut records = Vec::new();
    while let Some(r) = set.join_next().await {
        records.push(r??);
    }
    if records.iter().any(|r| r.bytes == 0) {
        bail!("a stream delivered nothing");
    }
    Ok(records)
}

/// Round trips of a 64-byte message on one connection to the echo server: `count` timed ones
/// after a few untimed; returns each in microseconds.
pub async fn round_trips(route: Route, count: usize) -> Result<Vec<f64>> {
    let mut s = open(route).await?;
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let mut out = Vec::with_capacity(count);
    for i in 0..count + 20 {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await.context("echo round trip")?;
        if i >= 20 {
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(out)
}

/// One short connection to the echo server: open, one byte each way, close.
pub async fn ping(addr: SocketAddr) -> Result<()> {
    let mut s = open(Route::Direct(addr)).await?;
    s.write_all(b"x").await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Ok(())
}

/// New connections per second through `addr` (an echo forward): `workers` loops of [`ping`] for
/// `secs` or `max` connections in all, whichever comes first.
pub async fn connections_per_s(
    addr: SocketAddr,
    workers: usize,
    secs: f64,
    max: usize,
) -> Result<f64> {
    Ok(connections(addr, workers, secs, max).await?.per_s())
}

/// What one run of [`connections`] made.
pub struct Connections {
    /// Connections opened, echoed through and closed.
    pub count: usize,
    /// How long that took.
    pub elapsed: Duration,
}

impl Connections {
    pub fn per_s(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

/// The loops behind [`connections_per_s`], reporting how many connections they made.
pub async fn connections(
    addr: SocketAddr,
    workers: usize,
    secs: f64,
    max: usize,
) -> Result<Connections> {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let per_worker = max / workers.max(1);
    let mut set = JoinSet::new();
    for _ in 0..workers {
        set.spawn(async move {
            let mut n = 0usize;
            while n < per_worker && Instant::now() < end {
                ping(addr).await?;
                n += 1;
            }
            anyhow::Ok(n)
        });
    }
    let mut count = 0;
    while let Some(r) = set.join_next().await {
        count += r??;
    }
    Ok(Connections {
        count,
        elapsed: start.elapsed(),
    })
}

/// Opens `count` connections through `addr` (an echo forward), each proven open by one byte each
/// way, and returns them still open.
pub async fn hold_idle(addr: SocketAddr, count: usize) -> Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = open(Route::Direct(addr)).await?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
            .await
            .with_context(|| format!("idle connection {} through {addr}", held.len()))?;
        held.push(s);
    }
    Ok(held)
}

/// Waits until an echo through `addr` works, trying every 5 ms for at most `limit`; returns how
/// long it took.
pub async fn wait_echo(addr: SocketAddr, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(2), ping(addr)).await;
        if let Ok(Ok(())) = attempt {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("no echo through {addr} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{mismatch, pattern, BUF};

    /// The checked transfers' comparison follows the pattern across its wrap-around and finds
    /// a changed byte anywhere, the wrap included.
    #[test]
    fn mismatch_finds_the_first_changed_byte_across_the_pattern_wrap() {
        let p = pattern();
        let offset = (BUF - 10) as u64;
        let mut data: Vec<u8> = (0..100).map(|i| p[(BUF - 10 + i) % BUF]).collect();
        assert_eq!(mismatch(&p, offset, &data), None);
        data[12] ^= 1;
        assert_eq!(mismatch(&p, offset, &data), Some(12));
        data[3] ^= 1;
        assert_eq!(mismatch(&p, offset, &data), Some(3));
        assert_eq!(mismatch(&p, offset + 1, &data[1..]), Some(2));
    }
}
