//! The pump contract, and the pump for plain channels.
//!
//! Every forward kind (-L, -R, -D, -W) and the relay carry one connection in one of two ways: a
//! plain channel through [`pipe`], or a resumable stream through `resume::stream`'s
//! `Engine`, whose bytes must be framed, acknowledged and kept for replay across channels. Both
//! carriers keep one contract, and the shared part of it lives here:
//!
//! - **Counting:** a [`Carried`] counts the connection opened and active for as long as it
//!   lives, and every byte goes to the same [`Counters`] (`a_to_b` = local to peer).
//! - **Closing:** when the connection ends the carrier hands [`Carried::close`] one [`Closed`]:
//!   the totals each way and a [`CloseReason`]. That writes the one "connection closed" line.
//! - **Half-close and backpressure** stay per carrier, since framing and ACKs differ by design:
//!   [`pipe`]'s `copy_half` shuts the writer on EOF and awaits each write before reading more
//!   (one chunk in memory per direction); the engine's `uplink` sends FIN at local EOF and
//!   reads only into free room of its bounded replay buffer, its `downlink` shuts the local
//!   writer at the peer's FIN.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of one read. Matches the SSH maximum packet payload we advertise so one read fills one
/// channel data message.
const CHUNK: usize = 32 * 1024;

/// What one read from the SSH side may grow to once a read fills [`CHUNK`]: a channel reader
/// hands over every queued message that fits, so a bulk download is written on in a few large
/// writes, as OpenSSH does, not one system call per SSH packet. Only that direction grows: the
/// local side's reads stay at one channel packet, and an idle connection keeps [`CHUNK`].
const BULK_CHUNK: usize = 256 * 1024;

/// How long a grown buffer may wait for the next read before it shrinks back to [`CHUNK`]. A
/// connection that received one burst and then stays open idle (an HTTP keep-alive connection
/// through a forward) would otherwise hold [`BULK_CHUNK`] for as long as it lives: a relay with
/// a thousand such connections 256 MiB instead of 32 MiB. A bulk transfer never waits this
/// long between reads, so it keeps its large buffer.
const IDLE_SHRINK: std::time::Duration = std::time::Duration::from_secs(1);

/// Live byte counters shared with metrics and status; cloned cheaply into every pump.
///
/// Counters may have a parent (see [`Counters::child_of`]): every count also goes to the parent,
/// so one forward's counters and the totals of its process stay exact without a second pass.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes read from side `a` and written to side `b`.
    pub a_to_b: AtomicU64,
    /// Bytes read from side `b` and written to side `a`.
    pub b_to_a: AtomicU64,
    /// Connections ever pumped.
    pub opened: AtomicU64,
    /// Connections being pumped now.
    pub active: AtomicU64,
    parent: Option<Arc<Counters>>,
}

/// Which of a [`Counters`]' byte counts a pump direction adds to.
#[derive(Debug, Clone, Copy)]
enum Direction {
    AToB,
    BToA,
}

impl Counters {
    /// Counters whose counts also go to `parent` (e.g. one relay forward within the relay total).
    pub fn child_of(parent: Arc<Counters>) -> Self {
        Self {
            parent: Some(parent),
            ..Self::default()
        }
    }

    /// Applies `f` to these counters and every ancestor.
    fn each(&self, f: impl Fn(&Counters)) {
        let mut next = Some(self);
        while let Some(c) = next {
            f(c);
            next = c.parent.as_deref();
        }
    }

    /// Counts `n` bytes moved from side `a` to side `b` (here and in every ancestor).
    pub fn count_a_to_b(&self, n: u64) {
        self.add_bytes(Direction::AToB, n);
    }

    /// Counts `n` bytes moved from side `b` to side `a` (here and in every ancestor).
    pub fn count_b_to_a(&self, n: u64) {
        self.add_bytes(Direction::BToA, n);
    }

    fn add_bytes(&self, direction: Direction, n: u64) {
        self.each(|c| {
            let counter = match direction {
                Direction::AToB => &c.a_to_b,
                Direction::BToA => &c.b_to_a,
            };
            counter.fetch_add(n, Ordering::Relaxed);
        });
    }
}

/// Counts one connection as active for as long as it lives.
struct ActiveGuard(Arc<Counters>);

impl ActiveGuard {
    /// Marks a connection opened and active.
    pub fn new(counters: Arc<Counters>) -> Self {
        counters.each(|c| {
            c.opened.fetch_add(1, Ordering::Relaxed);
            c.active.fetch_add(1, Ordering::Relaxed);
        });
        Self(counters)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.each(|c| {
            c.active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// What one finished pump moved, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Bytes from `a` to `b`.
    pub a_to_b: u64,
    /// Bytes from `b` to `a`.
    pub b_to_a: u64,
}

/// Why a carried connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides ended their output (EOF) and everything was delivered.
    Done,
    /// Reading or writing the local side failed.
    LocalError(String),
    /// The peer's side (the channel, or a resumable stream's channels) failed or went away.
    PeerError(String),
    /// Stopped by shutdown.
    Shutdown,
    /// The carrier gave up on the connection (e.g. a resumable stream's protocol abort).
    Aborted(String),
}

/// What a carrier reports when a connection closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// What moved each way (`a_to_b` = local to peer).
    pub totals: Totals,
    /// Why it ended.
    pub reason: CloseReason,
}

/// One connection as its carrier holds it: counted active while it lives, and closed once, with
/// the one log line every carrier writes.
pub struct Carried {
    label: String,
    _active: ActiveGuard,
}

impl Carried {
    /// Counts the connection `label` opened and active in `counters`.
    pub fn new(counters: Arc<Counters>, label: &str) -> Self {
        Self {
            label: label.to_owned(),
            _active: ActiveGuard::new(counters),
        }
    }

    /// Logs how the connection ended; it stops counting as active.
    pub fn close(self, closed: &Closed) {
        let (conn, t) = (self.label.as_str(), closed.totals);
        match &closed.reason {
            CloseReason::Done => {
                tracing::debug!(
                    conn,
                    sent = t.a_to_b,
                    received = t.b_to_a,
                    "connection closed"
                )
            }
            CloseReason::Shutdown => tracing::debug!(conn, "connection stopped by shutdown"),
            CloseReason::LocalError(e) | CloseReason::PeerError(e) | CloseReason::Aborted(e) => {
                tracing::debug!(conn, error = %e, sent = t.a_to_b, received = t.b_to_a, "connection ended with an error")
            }
        }
    }
}

/// Copies bytes both ways until both directions have seen EOF; `a` is the local side.
///
/// When one side ends its output (EOF), the pump shuts down the write half of the other side and
/// keeps copying the opposite direction: a half-closed connection (e.g. `curl` uploading a body,
/// then reading the reply) keeps working. Each direction awaits its write before reading more, so
/// a slow reader slows only its own writer: backpressure reaches the SSH window and the TCP
/// peer, and memory stays at one chunk per direction. The first error ends both directions and is
/// reported once, as the side it came from, to the task that owns the connection.
pub async fn pipe<A, B>(a: A, b: B, counters: Arc<Counters>) -> Closed
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let moved = [AtomicU64::new(0), AtomicU64::new(0)];
    let forward = copy_half(
        &mut a_read,
        &mut b_write,
        &counters,
        Direction::AToB,
        &moved[0],
    );
    let backward = copy_half(
        &mut b_read,
        &mut a_write,
        &counters,
        Direction::BToA,
        &moved[1],
    );
    let reason = match tokio::try_join!(forward, backward) {
        Ok(_) => CloseReason::Done,
        Err(reason) => reason,
    };
    let [a_to_b, b_to_a] = moved.map(AtomicU64::into_inner);
    Closed {
        totals: Totals { a_to_b, b_to_a },
        reason,
    }
}

/// One direction: read, write, count into `moved` and `counters`; on EOF shut down the writer
/// (half-close) and return. An error names its side: reading `a` or writing `a` is local.
async fn copy_half<R, W>(
    reader: &mut R,
    writer: &mut W,
    counters: &Counters,
    direction: Direction,
    moved: &AtomicU64,
) -> Result<(), CloseReason>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let side = |local: bool| {
        move |e: io::Error| match local {
            true => CloseReason::LocalError(e.to_string()),
            false => CloseReason::PeerError(e.to_string()),
        }
    };
    let reads_local = matches!(direction, Direction::AToB);
    let (on_read, on_write) = (side(reads_local), side(!reads_local));
    let grows_to = if reads_local { CHUNK } else { BULK_CHUNK };
    // Filled through `read_buf`, so only the pages data lands in are ever touched: an idle
    // connection holds two mostly untouched 32 KiB buffers, not 64 KiB of zeroes (which the
    // main heap, where `burrow ssh`'s one thread allocates, would make resident).
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
    loop {
        buf.clear();
        let n = if buf.capacity() > CHUNK {
            let quick = tokio::time::timeout(IDLE_SHRINK, reader.read_buf(&mut buf)).await;
            match quick {
                Ok(read) => read,
                // Dropping a pending read loses nothing (`AsyncRead`'s contract).
                Err(_idle) => {
                    buf.shrink_to(CHUNK);
                    reader.read_buf(&mut buf).await
                }
            }
        } else {
            reader.read_buf(&mut buf).await
        };
        let n = n.map_err(on_read)?;
        if n == 0 {
            return writer.shutdown().await.map_err(on_write);
        }
        writer.write_all(&buf).await.map_err(on_write)?;
        // A no-op for sockets and channels; stdout (-W) is line-buffered and would hold binary
        // data back otherwise.
        writer.flush().await.map_err(on_write)?;
        moved.fetch_add(n as u64, Ordering::Relaxed);
        counters.add_bytes(direction, n as u64);
        if n == buf.capacity() && n < grows_to {
            buf.clear();
            buf.reserve_exact(grows_to);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::duplex;

    /// The application writes a request and half-closes; the server reads it all, then answers
    /// and closes: the server still answers after the client's EOF when half-close is kept.
    /// Shared with the resumable carrier's test of the same contract.
    pub(crate) async fn half_closed_exchange(
        app: tokio::io::DuplexStream,
        server: tokio::io::DuplexStream,
    ) {
        let (mut app_r, mut app_w) = tokio::io::split(app);
        let (mut server_r, mut server_w) = tokio::io::split(server);
        app_w.write_all(b"request").await.unwrap();
        app_w.shutdown().await.unwrap();
        let mut got = Vec::new();
        server_r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        server_w.write_all(b"reply").await.unwrap();
        server_w.shutdown().await.unwrap();
        let mut reply = Vec::new();
        app_r.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply");
    }

    #[tokio::test]
    async fn copies_both_ways_and_keeps_half_close() {
        let (client, pump_a) = duplex(1024);
        let (pump_b, server) = duplex(1024);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(pipe(pump_a, pump_b, counters.clone()));
        half_closed_exchange(client, server).await;

        let closed = task.await.unwrap();
        assert_eq!(closed.reason, CloseReason::Done);
        assert_eq!(
            closed.totals,
            Totals {
                a_to_b: 7,
                b_to_a: 5
            }
        );
        assert_eq!(counters.a_to_b.load(Ordering::Relaxed), 7);
    }

    #[tokio::test]
    async fn child_counts_reach_the_parent() {
        let parent = Arc::new(Counters::default());
        let child = Arc::new(Counters::child_of(parent.clone()));
        let guard = ActiveGuard::new(child.clone());
        let (client, pump_a) = duplex(64);
        let (pump_b, mut server) = duplex(64);
        let task = tokio::spawn(pipe(pump_a, pump_b, child.clone()));
        let (mut client_r, mut client_w) = tokio::io::split(client);
        client_w.write_all(b"abc").await.unwrap();
        client_w.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        server.shutdown().await.unwrap();
        client_r.read_to_end(&mut Vec::new()).await.unwrap();
        assert_eq!(task.await.unwrap().reason, CloseReason::Done);
        for c in [&child, &parent] {
            assert_eq!(c.a_to_b.load(Ordering::Relaxed), 3);
            assert_eq!(c.active.load(Ordering::Relaxed), 1);
        }
        drop(guard);
        assert_eq!(parent.active.load(Ordering::Relaxed), 0);
        assert_eq!(parent.opened.load(Ordering::Relaxed), 1);
    }

    /// A channel side that serves `events` (when, how many bytes) and records how much room
    /// each read offered, so a test sees what the pump holds while it waits.
    struct Timed {
        events: std::collections::VecDeque<(tokio::time::Instant, usize)>,
        sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
        offered: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl AsyncRead for Timed {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            use std::future::Future;
            use std::task::Poll;
            self.offered.lock().unwrap().push(buf.remaining());
            let Some(&(at, n)) = self.events.front() else {
                return Poll::Ready(Ok(()));
            };
            if tokio::time::Instant::now() < at {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                sleep.as_mut().reset(at);
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            let take = n.min(buf.remaining());
            buf.put_slice(&vec![7u8; take]);
            if take == n {
                self.events.pop_front();
            } else if let Some(front) = self.events.front_mut() {
                front.1 -= take;
            }
            Poll::Ready(Ok(()))
        }
    }

    /// A connection that once received a burst and then goes idle (an HTTP keep-alive
    /// connection through a forward) waits with a [`CHUNK`] buffer again, not [`BULK_CHUNK`]:
    /// a relay with many such connections would otherwise hold 256 KiB for each, for as long
    /// as they stay open.
    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_gives_the_bulk_buffer_back() {
        let t0 = tokio::time::Instant::now();
        let offered = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut reader = Timed {
            events: [
                (t0, 200 * 1024),
                (t0 + std::time::Duration::from_secs(60), 100),
            ]
            .into(),
            sleep: None,
            offered: offered.clone(),
        };
        let (mut writer, mut sink) = duplex(1 << 20);
        let drain = tokio::spawn(async move {
            let mut all = Vec::new();
            sink.read_to_end(&mut all).await.unwrap();
            all.len()
        });
        let counters = Counters::default();
        let moved = AtomicU64::new(0);
        copy_half(&mut reader, &mut writer, &counters, Direction::BToA, &moved)
            .await
            .unwrap();
        drop(writer);
        assert_eq!(drain.await.unwrap(), 200 * 1024 + 100);
        let offered = offered.lock().unwrap().clone();
        assert!(
            offered.iter().any(|n| *n > CHUNK),
            "the burst was read in large reads: {offered:?}"
        );
        // The read that got the late 100 bytes (the last but one; the last read saw EOF).
        let late = offered[offered.len() - 2];
        assert!(
            late <= CHUNK,
            "idle for a minute, still waiting with {late} bytes: {offered:?}"
        );
    }
}
