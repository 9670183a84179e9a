//! Deterministic test data, sha256 helpers and checked transfers over TCP.
//!
//! The byte generator streams: a 4 GiB transfer never holds more than one chunk in memory.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Chunk size used by every streaming helper here.
pub const CHUNK: usize = 64 * 1024;

/// Seed used by [`transfer_checked`] when the caller does not pick one.
pub const DEFAULT_SEED: u64 = 0x6275_7272_6f77; // "burrow"

/// Size of the shared random block every [`DetStream`] copies its windows from.
const BASE_LEN: usize = 1 << 20;
/// Every stream is cut into segments of this size, each a window of the base block.
const SEGMENT: u64 = 16 * 1024;
/// Bytes at the start of each segment overwritten with (seed, segment index).
const STAMP: usize = 16;

/// A 1 MiB (+ one segment) block of xorshift64* output, made once per process.
fn base_block() -> &'static [u8] {
    static BASE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let mut v = vec![0u8; BASE_LEN + SEGMENT as usize];
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for word in v.chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            word.copy_from_slice(
                &x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes()[..word.len()],
            );
        }
        v
    })
}

fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser.
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic pseudo-random bytes, `len` of them, produced chunk by chunk in O(1) memory.
///
/// Segment `i` (16 KiB) of the stream for `seed` is a window of a shared random block at an offset
/// picked by hashing (seed, i), with its first 16 bytes replaced by (seed, i). So every segment is
/// distinct: a lost, duplicated, reordered or shifted range changes the digest. Producing it is
/// memcpy, so it stays fast in unoptimised test builds.
#[derive(Clone, Debug)]
pub struct DetStream {
    seed: u64,
    pos: u64,
    len: u64,
}

impl DetStream {
    /// A stream of `len` bytes fully determined by `seed`.
    pub fn new(seed: u64, len: u64) -> DetStream {
        DetStream { seed, pos: 0, len }
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    /// Fills the front of `buf` with the next bytes; returns how many (0 at the end).
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let base = base_block();
        let n = buf
            .len()
            .min(usize::try_from(self.remaining()).unwrap_or(usize::MAX));
        let mut done = 0;
        while done < n {
            let seg = self.pos / SEGMENT;
            let within = (self.pos % SEGMENT) as usize;
            let take = (SEGMENT as usize - within).min(n - done);
            let off = (mix(self.seed ^ mix(seg)) % BASE_LEN as u64) as usize;
            let out = &mut buf[done..done + take];
            out.copy_from_slice(&base[off + within..off + within + take]);
            if within < STAMP {
                let mut stamp = [0u8; STAMP];
                stamp[..8].copy_from_slice(&self.seed.to_le_bytes());
                stamp[8..].copy_from_slice(&seg.to_le_bytes());
                let k = (STAMP - within).min(take);
                out[..k].copy_from_slice(&stamp[within..within + k]);
            }
            done += take;
            self.pos += take as u64;
        }
        n
    }
}

/// `n` deterministic bytes in memory (for small payloads; stream big ones with [`DetStream`]).
pub fn det_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    DetStream::new(seed, n as u64).fill(&mut v);
    v
}

/// sha256 (lower-case hex) of the `n` bytes [`DetStream::new(seed, n)`] produces.
pub fn det_sha256(seed: u64, n: u64) -> String {
    let mut s = DetStream::new(seed, n);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let k = s.fill(&mut buf);
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
    }
    hex(&h.finalize())
}

/// Lower-case hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lower-case hex of any bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Connects to `addr` until it accepts or `timeout` passes (short capped backoff); true if it accepted.
pub async fn wait_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(2);
    for _ in 0..10_000 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let attempt = left.min(Duration::from_secs(1));
        if let Ok(Ok(_)) = tokio::time::timeout(attempt, TcpStream::connect(addr)).await {
            return true;
        }
        tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
    false
}

/// What a checked transfer moved and how fast.
#[derive(Clone, Debug)]
pub struct Transfer {
    /// Bytes sent and received back identical.
    pub bytes: u64,
    /// The seed of the [`DetStream`] that was sent.
    pub seed: u64,
    /// Wall time from connect to the echo's EOF.
    pub elapsed: Duration,
}

impl Transfer {
    /// Throughput in MiB/s of one direction.
    pub fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// sha256 hex of the bytes sent (and, the transfer having passed, of the echo): computed on
    /// demand, since hashing is slow in unoptimised builds.
    pub fn sha256(&self) -> String {
        det_sha256(self.seed, self.bytes)
    }
}

/// Default deadline for a transfer of `n_bytes`: generous for a debug build on 2 shared cores.
pub fn transfer_deadline(n_bytes: u64) -> Duration {
    Duration::from_secs(30 + n_bytes / (4 << 20))
}

/// Echo check: connect to `addr` (an echo service, usually through a forward), send `n_bytes`
/// deterministic bytes while reading the echo concurrently, half-close after sending, read to EOF,
/// and fail unless the echo is exactly what was sent: same length, and compared byte for byte as
/// it arrives (stronger than comparing digests, cheap in a debug build, and a failure names the
/// first differing offset). [`Transfer::sha256`] gives the digest if a test wants to print it.
pub async fn transfer_checked(addr: SocketAddr, n_bytes: u64) -> io::Result<Transfer> {
    transfer_checked_within(addr, n_bytes, DEFAULT_SEED, transfer_deadline(n_bytes)).await
}

/// [`transfer_checked`] with an explicit seed and deadline.
pub async fn transfer_checked_within(
    addr: SocketAddr,
    n_bytes: u64,
    seed: u64,
    timeout: Duration,
) -> io::Result<Transfer> {
    let run = async {
        let start = Instant::now();
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut rd, mut wr) = stream.into_split();
        let writer = async move {
            let mut s = DetStream::new(seed, n_bytes);
            let mut buf = vec![0u8; CHUNK];
            loop {
                let k = s.fill(&mut buf);
                if k == 0 {
                    break;
                }
                wr.write_all(&buf[..k]).await?;
            }
            wr.shutdown().await
        };
        let reader = read_expecting(&mut rd, DetStream::new(seed, n_bytes));
        tokio::try_join!(writer, reader)?;
        Ok(Transfer {
            bytes: n_bytes,
            seed,
            elapsed: start.elapsed(),
        })
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("transfer of {n_bytes} bytes via {addr} not done within {timeout:?}"),
        )),
    }
}

/// Reads `r` to EOF and fails (InvalidData) unless it yields exactly the bytes of `expected`;
/// the error names the first differing offset, or says the data was short or too long.
pub async fn read_expecting<R>(r: &mut R, mut expected: DetStream) -> io::Result<u64>
where
    R: AsyncReadExt + Unpin,
{
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let (mut buf, mut want) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut total = 0u64;
    loop {
        let k = r.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        let w = expected.fill(&mut want[..k]);
        if buf[..w] != want[..w] {
            let at = (0..w).find(|&i| buf[i] != want[i]).unwrap_or(0);
            return Err(bad(format!(
                "data differs from what was sent at byte offset {}",
                total + at as u64
            )));
        }
        if w < k {
            return Err(bad(format!(
                "{} bytes more than the {} sent",
                k - w,
                total + w as u64
            )));
        }
        total += k as u64;
    }
    if expected.remaining() > 0 {
        return Err(bad(format!(
            "EOF after {total} bytes, {} short",
            expected.remaining()
        )));
    }
    Ok(total)
}

/// Writes the whole stream to `w`; returns (bytes, sha256 hex). Does not shut `w` down.
pub async fn send_stream<W>(w: &mut W, mut s: DetStream) -> io::Result<(u64, String)>
where
    W: AsyncWriteExt + Unpin,
{
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let k = s.fill(&mut buf);
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        w.write_all(&buf[..k]).await?;
        total += k as u64;
    }
    w.flush().await?;
    Ok((total, hex(&h.finalize())))
}

/// Reads `r` to EOF; returns (bytes, sha256 hex).
pub async fn read_to_end_hashed<R>(r: &mut R) -> io::Result<(u64, String)>
where
    R: AsyncReadExt + Unpin,
{
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let k = r.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        total += k as u64;
    }
    Ok((total, hex(&h.finalize())))
}

/// Connects to `addr` (e.g. a [`source_server`](super::source_server) behind a forward) and reads to
/// EOF within `timeout`; returns (bytes, sha256 hex).
pub async fn fetch_hashed(addr: SocketAddr, timeout: Duration) -> io::Result<(u64, String)> {
    let run = async {
        let mut s = TcpStream::connect(addr).await?;
        read_to_end_hashed(&mut s).await
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Connects to `addr` (e.g. a [`source_server`](super::source_server) behind a forward), reads to
/// EOF within `timeout` and fails unless it got exactly `DetStream::new(seed, n_bytes)`.
pub async fn fetch_checked(
    addr: SocketAddr,
    n_bytes: u64,
    seed: u64,
    timeout: Duration,
) -> io::Result<u64> {
    let run = async {
        let mut s = TcpStream::connect(addr).await?;
        read_expecting(&mut s, DetStream::new(seed, n_bytes)).await
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// Connects to `addr` (e.g. a [`sink_server`](super::sink_server)), sends `n_bytes` of
/// `DetStream::new(seed, n_bytes)`, half-closes and waits for the peer's EOF; returns the sha256 sent.
pub async fn push_hashed(
    addr: SocketAddr,
    n_bytes: u64,
    seed: u64,
    timeout: Duration,
) -> io::Result<String> {
    let run = async {
        let mut s = TcpStream::connect(addr).await?;
        let (_, sha) = send_stream(&mut s, DetStream::new(seed, n_bytes)).await?;
        s.shutdown().await?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await?;
        Ok(sha)
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// A one-shot HTTP/1.1 GET of `path` (Connection: close); returns (status code, body).
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> io::Result<(u16, Vec<u8>)> {
    http_get_with(addr, path, &[], timeout).await
}

/// [`http_get`] with extra request headers, e.g. `("Authorization", "Bearer ...")`.
pub async fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<(u16, Vec<u8>)> {
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let run = async {
        let mut s = TcpStream::connect(addr).await?;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await?;
        parse_http_response(&resp)
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

fn parse_http_response(resp: &[u8]) -> io::Result<(u16, Vec<u8>)> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let end = find(resp, b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&resp[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    Ok((status, resp[end + 4..].to_vec()))
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads from `s` until EOF or an error, at most `limit`; returns the bytes read and whether the
/// peer closed within the limit.
pub async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}
