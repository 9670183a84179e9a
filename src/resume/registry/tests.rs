//! Two registries joined by in-memory "sessions" whose channels can be cut at once, as a dropped
//! link cuts every channel of an SSH session.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures::FutureExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::budget::Budget;
use crate::resume::frame;
use crate::server::stream::Cancellable;

/// The integration tests' delay line; only its one-way delay is used here.
#[allow(dead_code)]
#[path = "../../../tests/common/delay.rs"]
mod delay;

/// A session from one registry to `peer`: each channel is a duplex pipe whose far end `peer`
/// accepts, dialling `target` for new streams. Cancelling `cut` kills every channel.
struct MemSession {
    peer: Arc<Registry>,
    target: SocketAddr,
    cut: CancellationToken,
    /// One-way delay of every channel (a long fat pipe), or none.
    delay: Option<Duration>,
    /// The largest write offered to any of the session's channels on this side: the size of
    /// the frames its streams send.
    largest_write: Arc<AtomicUsize>,
}

/// Records the largest write offered through it (a whole frame; the pipe may take less).
struct LargestWrite<S> {
    inner: S,
    largest: Arc<AtomicUsize>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for LargestWrite<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for LargestWrite<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.largest.fetch_max(buf.len(), Ordering::Relaxed);
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Like `duplex`, but every byte arrives `delay` after it was written, each way, and nothing
/// limits the bytes in flight: a long fat pipe where only the streams' own buffers can limit.
fn delayed_duplex(delay: Duration) -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
    let (near, a) = tokio::io::duplex(256 * 1024);
    let (b, far) = tokio::io::duplex(256 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    tokio::spawn(delay::direction(ar, bw, delay));
    tokio::spawn(delay::direction(br, aw, delay));
    (near, far)
}

impl Opener for MemSession {
    fn open(&self, _spec: ChannelSpec) -> futures::future::BoxFuture<'static, io::Result<BoxedIo>> {
        let cut = self.cut.clone();
        let peer = self.peer.clone();
        let target = self.target;
        let delay = self.delay;
        let largest = self.largest_write.clone();
        async move {
            if cut.is_cancelled() {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "session is gone",
                ));
            }
            let (a, b) = match delay {
                Some(d) => delayed_duplex(d),
                None => tokio::io::duplex(64 * 1024),
            };
            let near: BoxedIo = Box::new(LargestWrite {
                inner: Cancellable::new(a, cut.clone()),
                largest,
            });
            let far: BoxedIo = Box::new(Cancellable::new(b, cut));
            tokio::spawn(async move {
                let dial = || async move {
                    TcpStream::connect(target)
                        .await
                        .map(|s| Box::new(s) as BoxedIo)
                };
                peer.accept(far, dial, Arc::new(Counters::default()), ())
                    .await;
            });
            Ok(near)
        }
        .boxed()
    }
}

/// An echo server on loopback that serves `n` connections, echoing until EOF, then closing.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

fn config(grace_ms: u64) -> ResumeConfig {
    ResumeConfig {
        buffer: 256 * 1024,
        // Fixed: the budget tests count exact reservations (growth has its own test).
        buffer_max: 256 * 1024,
        grace: Duration::from_millis(grace_ms),
    }
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

struct Pair {
    client: Arc<Registry>,
    server: Arc<Registry>,
    target: SocketAddr,
    cut: CancellationToken,
    delay: Option<Duration>,
    /// See [`MemSession::largest_write`]: the client's side of every session.
    largest_write: Arc<AtomicUsize>,
}

impl Pair {
    async fn new(grace_ms: u64) -> Pair {
        Pair::with_budgets(grace_ms, None).await
    }

    /// A pair whose server side (the relay) reserves replay buffers from `budgets`.
    async fn with_budgets(grace_ms: u64, budgets: Option<Budgets>) -> Pair {
        Pair::with(config(grace_ms), budgets, None).await
    }

    /// A pair with `config` on both sides, the relay's budgets, and channels delayed by
    /// `delay` each way.
    async fn with(config: ResumeConfig, budgets: Option<Budgets>, delay: Option<Duration>) -> Pair {
        Pair::with_configs(config, config, budgets, delay).await
    }

    /// Like [`Pair::with`], the client and the relay each with its own config.
    async fn with_configs(
        client: ResumeConfig,
        server: ResumeConfig,
        budgets: Option<Budgets>,
        delay: Option<Duration>,
    ) -> Pair {
        let target = echo_server().await;
        let client = Registry::new(client, CancellationToken::new());
        let server =
            Registry::with_budgets(server, CancellationToken::new(), Arc::default(), budgets);
        let cut = CancellationToken::new();
        let pair = Pair {
            client,
            server,
            target,
            cut,
            delay,
            largest_write: Arc::default(),
        };
        pair.connect();
        pair
    }

    /// A new session: the client's opener, and the control channel both registries
    /// acknowledge on, cut with the session's channels.
    fn connect(&self) {
        self.client.set_opener(Some(Arc::new(MemSession {
            peer: self.server.clone(),
            target: self.target,
            cut: self.cut.clone(),
            delay: self.delay,
            largest_write: self.largest_write.clone(),
        })));
        let (near, far) = match self.delay {
            Some(d) => delayed_duplex(d),
            None => tokio::io::duplex(64 * 1024),
        };
        for (registry, end) in [(self.client.clone(), near), (self.server.clone(), far)] {
            let cut = self.cut.clone();
            tokio::spawn(async move {
                let end = Cancellable::new(end, cut);
                let _ = registry.run_control(end, Vec::new()).await;
            });
        }
    }

    /// Opens a stream from the client; returns the application's end of it.
    async fn open_stream(&self) -> tokio::io::DuplexStream {
        let opener = self.client.opener.borrow().clone().unwrap();
        let spec = ChannelSpec::Direct {
            host: "echo".into(),
            port: 7,
            orig: "127.0.0.1".into(),
            orig_port: 1,
        };
        let channel = opener.open(spec.clone()).await.unwrap();
        // As -L opens them: its first bytes go right behind the hello.
        let first = FirstBytes::WithHello;
        let opened = self.client.open(channel, spec, first).await.unwrap();
        let (app, local) = tokio::io::duplex(64 * 1024);
        opened.run(Box::new(local), Arc::new(Counters::default()), ());
        app
    }
}

#[tokio::test]
async fn echo_survives_two_cuts_byte_exact() {
    echo_through_two_cuts(None, 7919).await;
}

/// The same with the relay's 128 KiB packets and 64 KiB writes: the cuts fall inside frames
/// larger than the 32 KiB pieces a receiver delivers them in.
#[tokio::test]
async fn echo_in_large_frames_survives_two_cuts_byte_exact() {
    echo_through_two_cuts(Some(crate::resume::frame::RELAY_PACKET), 64 * 1024).await;
}

/// 8 MiB echoed through a stream, written `chunk` bytes at a time, while its session is cut
/// twice; the client's registry told the peer's packet size when `peer_packet` is given.
async fn echo_through_two_cuts(peer_packet: Option<usize>, chunk: usize) {
    let mut pair = Pair::new(10_000).await;
    if let Some(bytes) = peer_packet {
        pair.client.set_peer_packet(bytes as u32);
    }
    let app = pair.open_stream().await;
    let (mut app_r, mut app_w) = tokio::io::split(app);
    let total = 8 << 20;
    let sent = data(total);
    let expected = Sha256::digest(&sent);
    // Paced (about 0.5 s in all) so that both cuts fall in the middle of the transfer.
    let pause_every = (16 * 7919 / chunk).max(1);
    let writer = tokio::spawn(async move {
        for (i, piece) in sent.chunks(chunk).enumerate() {
            app_w.write_all(piece).await.unwrap();
            if i % pause_every == 0 {
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        }
        app_w.shutdown().await.unwrap();
    });
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        app_r.read_to_end(&mut got).await.unwrap();
        got
    });
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        pair.cut.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        pair.cut = CancellationToken::new();
        pair.connect();
    }
    let got = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("echo completes")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), total);
    assert_eq!(Sha256::digest(&got), expected, "bytes lost or duplicated");
    assert!(pair.client.stats.resumed.load(Ordering::Relaxed) >= 2);
    for _ in 0..100 {
        if pair.client.stream_count() == 0 && pair.server.stream_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("finished streams were not forgotten");
}

/// A stream's frames fill the packets the peer's session announced, as the registry learned it
/// (`set_peer_packet`, which burrow ssh calls with its control channel's packet size): 32 KiB
/// until then, as large as the local reads after (this test's pipes hold 64 KiB).
#[tokio::test]
async fn streams_send_frames_as_large_as_the_session_announced() {
    use crate::resume::frame::{PACKET, RELAY_PACKET};
    let pair = Pair::new(10_000).await;
    for (announced, larger) in [(None, false), (Some(RELAY_PACKET), true)] {
        if let Some(bytes) = announced {
            pair.client.set_peer_packet(bytes as u32);
        }
        pair.largest_write.store(0, Ordering::Relaxed);
        let (mut app_r, mut app_w) = tokio::io::split(pair.open_stream().await);
        let writer = tokio::spawn(async move {
            app_w.write_all(&data(1 << 20)).await.unwrap();
            app_w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), app_r.read_to_end(&mut got))
            .await
            .expect("echo completes")
            .unwrap();
        writer.await.unwrap();
        assert_eq!(got, data(1 << 20), "announced {announced:?}");
        let largest = pair.largest_write.load(Ordering::Relaxed);
        assert_eq!(
            largest > PACKET,
            larger,
            "announced {announced:?}: largest channel write {largest}"
        );
    }
}

#[tokio::test]
async fn past_the_grace_period_streams_close_cleanly() {
    let pair = Pair::new(300).await;
    let mut app = pair.open_stream().await;
    app.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    app.read_exact(&mut buf).await.unwrap();
    pair.cut.cancel();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), app.read_to_end(&mut rest))
        .await
        .expect("closed after the grace period")
        .expect("a clean close, not an error");
    assert_eq!(n, 0);
    assert_eq!(pair.client.stats.expired.load(Ordering::Relaxed), 1);
    for _ in 0..100 {
        if pair.server.stream_count() == 0 {
            assert_eq!(pair.server.stats.expired.load(Ordering::Relaxed), 1);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the relay side kept its stream past the grace period");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_counted() {
    let pair = Pair::new(10_000).await;
    let mut app = pair.open_stream().await;
    app.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    app.read_exact(&mut one).await.unwrap();
    let id = *pair.server.lock().keys().next().unwrap();
    let (mut near, far) = tokio::io::duplex(1024);
    let server = pair.server.clone();
    tokio::spawn(async move {
        let dial = || async { Err(io::Error::other("no dial")) };
        server
            .accept(Box::new(far), dial, Arc::new(Counters::default()), ())
            .await;
    });
    let key = StreamKey {
        id,
        secret: [0; 16],
    };
    near.write_all(&Hello::Attach { key, received: 0 }.encode())
        .await
        .unwrap();
    assert_eq!(Reply::read(&mut near).await.unwrap(), Reply::Refused);
    assert_eq!(pair.server.stats.refused.load(Ordering::Relaxed), 1);
    // The real stream is untouched.
    app.write_all(b"y").await.unwrap();
    app.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"y");
}

/// A session whose peer dials a port nobody listens on, and a channel opened on it.
async fn channel_to_a_dead_target(pair: &Pair) -> (BoxedIo, ChannelSpec) {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let session = MemSession {
        peer: pair.server.clone(),
        target: dead,
        cut: CancellationToken::new(),
        delay: None,
        largest_write: Arc::default(),
    };
    let spec = ChannelSpec::Direct {
        host: "dead".into(),
        port: 1,
        orig: String::new(),
        orig_port: 0,
    };
    (session.open(spec.clone()).await.unwrap(), spec)
}

/// A stream that sent right behind its hello (-L) and whose target refused: its local
/// connection is closed without a byte, as a refused plain channel's is, and neither side
/// keeps the stream.
#[tokio::test]
async fn a_refused_target_closes_a_stream_that_sent_before_the_reply() {
    let pair = Pair::new(10_000).await;
    let (channel, spec) = channel_to_a_dead_target(&pair).await;
    let opened = pair.client.open(channel, spec, FirstBytes::WithHello).await;
    let (mut app, local) = tokio::io::duplex(64 * 1024);
    let counters = Arc::new(Counters::default());
    opened.unwrap().run(Box::new(local), counters.clone(), ());
    app.write_all(b"sent before the reply").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), app.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?} {got:?}");
    assert!(
        eventually(|| pair.client.stream_count() == 0 && pair.server.stream_count() == 0).await
    );
    assert_eq!(pair.client.stats.forgotten.load(Ordering::Relaxed), 0);
}

/// A new stream opened as -L opens it, whose peer the test plays by hand on `far`: the
/// application's end, and what the peer received before it answered (the hello, then frames).
async fn early_stream(pair: &Pair, first: &[u8]) -> (tokio::io::DuplexStream, BoxedIo) {
    let (near, far) = tokio::io::duplex(64 * 1024);
    let spec = ChannelSpec::Direct {
        host: "::1".into(),
        port: 7,
        orig: String::new(),
        orig_port: 0,
    };
    let opened = pair
        .client
        .open(Box::new(near), spec, FirstBytes::WithHello);
    let (mut app, local) = tokio::io::duplex(64 * 1024);
    opened
        .await
        .unwrap()
        .run(Box::new(local), Arc::new(Counters::default()), ());
    app.write_all(first).await.unwrap();
    (app, Box::new(far))
}

/// Reads the hello and one DATA frame from `far`, as the peer of [`early_stream`].
async fn hello_and_data(far: &mut BoxedIo) -> Vec<u8> {
    let within = Duration::from_secs(5);
    let hello = tokio::time::timeout(within, Hello::read(far)).await;
    assert!(matches!(hello, Ok(Ok(Hello::New(_)))), "{hello:?}");
    let frame = tokio::time::timeout(within, frame::read_frame(far)).await;
    let Ok(Ok(Some(frame::Frame::Data(len)))) = frame else {
        panic!("no DATA frame before the reply: {frame:?}")
    };
    let mut payload = vec![0u8; len as usize];
    far.read_exact(&mut payload).await.unwrap();
    payload
}

/// The connection's first bytes reach the peer before it replied (it dials meanwhile), and
/// what it sends after its reply reaches the application.
#[tokio::test]
async fn an_l_stream_sends_its_first_bytes_before_the_reply() {
    let pair = Pair::new(10_000).await;
    let (mut app, mut far) = early_stream(&pair, b"first").await;
    assert_eq!(hello_and_data(&mut far).await, b"first");
    far.write_all(&Reply::Ok { received: 0 }.encode())
        .await
        .unwrap();
    frame::write_data(&mut far, b"back", frame::PACKET)
        .await
        .unwrap();
    let mut got = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), app.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"back");
}

/// A peer that answers a new stream's hello with anything but "go ahead" (after the stream
/// sent on it) ends that stream: its connection closes, and nothing waits for a re-attach.
#[tokio::test]
async fn a_stream_that_sent_before_a_bad_reply_is_closed() {
    let lies = [
        Reply::Unknown.encode(),
        Reply::Refused.encode(),
        Reply::Ok { received: 7 }.encode(),
        b"not a reply at all".to_vec(),
    ];
    for lie in lies {
        let pair = Pair::new(10_000).await;
        let (mut app, mut far) = early_stream(&pair, b"first").await;
        hello_and_data(&mut far).await;
        far.write_all(&lie).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), app.read_to_end(&mut got)).await;
        assert!(matches!(read, Ok(Ok(0))), "{lie:?}: {read:?} {got:?}");
        assert!(
            eventually(|| pair.client.stream_count() == 0).await,
            "{lie:?}"
        );
        assert_eq!(pair.client.stats.forgotten.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test]
async fn a_refused_target_is_reported_as_connect_failed() {
    let pair = Pair::new(10_000).await;
    let (channel, spec) = channel_to_a_dead_target(&pair).await;
    match pair
        .client
        .open(channel, spec, FirstBytes::AfterReply)
        .await
    {
        Err(OpenError::ConnectFailed(reason)) => {
            assert!(reason.contains("refused"), "{reason}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a dead target was reported as connected"),
    }
}

/// Writes `msg` and reads its echo.
async fn echo_once(app: &mut tokio::io::DuplexStream, msg: &[u8]) -> io::Result<()> {
    app.write_all(msg).await?;
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), app.read_exact(&mut got))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no echo"))??;
    assert_eq!(got, msg);
    Ok(())
}

/// Polls `cond` for up to 5 s.
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn past_the_key_budget_a_stream_is_carried_unresumable_and_budgets_come_back() {
    // Room for two 256 KiB buffers in the key's budget: the third stream does not fit.
    let capacity = crate::resume::buffer_capacity(config(0).buffer) as u64;
    let budgets = Budgets {
        key: Arc::new(Budget::new(2 * capacity)),
        relay: Arc::new(Budget::new(100 * capacity)),
    };
    let mut pair = Pair::with_budgets(10_000, Some(budgets.clone())).await;
    let mut a = pair.open_stream().await;
    let mut b = pair.open_stream().await;
    let mut c = pair.open_stream().await;
    for app in [&mut a, &mut b, &mut c] {
        echo_once(app, b"hello").await.unwrap();
    }
    let stats = pair.server.stats.clone();
    assert_eq!(stats.unresumable.load(Ordering::Relaxed), 1);
    assert_eq!(
        stats.streams.load(Ordering::Relaxed),
        2,
        "two resumable streams"
    );
    assert_eq!(
        (budgets.key.used(), budgets.relay.used()),
        (2 * capacity, 2 * capacity)
    );

    // The link drops: the two resumable streams come back, the third one ends cleanly.
    pair.cut.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    pair.cut = CancellationToken::new();
    pair.connect();
    echo_once(&mut a, b"after").await.unwrap();
    echo_once(&mut b, b"after").await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest))
        .await
        .expect("the unresumable stream is closed once its channel is gone")
        .expect("a clean close");
    assert_eq!(n, 0);
    assert_eq!(stats.unresumable.load(Ordering::Relaxed), 1, "counted once");

    // A stream that ends gives its buffer back: a new one is resumable again.
    drop(a);
    assert!(
        eventually(|| budgets.key.used() == capacity).await,
        "reservation given back when its stream ended ({} used)",
        budgets.key.used()
    );
    let mut d = pair.open_stream().await;
    echo_once(&mut d, b"d").await.unwrap();
    assert_eq!(stats.unresumable.load(Ordering::Relaxed), 1, "d fitted");
    assert_eq!(budgets.relay.used(), 2 * capacity);
    drop((b, c, d));
    assert!(
        eventually(|| budgets.key.used() == 0 && budgets.relay.used() == 0).await,
        "every reservation given back ({} / {} used)",
        budgets.key.used(),
        budgets.relay.used()
    );
}

#[tokio::test]
async fn an_expired_stream_gives_its_reservation_back() {
    let budgets = Budgets {
        key: Arc::new(Budget::new(64 << 20)),
        relay: Arc::new(Budget::new(64 << 20)),
    };
    let pair = Pair::with_budgets(300, Some(budgets.clone())).await;
    let mut app = pair.open_stream().await;
    echo_once(&mut app, b"ping").await.unwrap();
    assert!(budgets.relay.used() > 0);
    pair.cut.cancel();
    assert!(
        eventually(|| pair.server.stats.expired.load(Ordering::Relaxed) == 1).await,
        "the relay side expired its stream"
    );
    assert!(
        eventually(|| budgets.key.used() == 0 && budgets.relay.used() == 0).await,
        "expiry gave the reservation back"
    );
}

#[tokio::test]
async fn a_full_relay_budget_makes_streams_unresumable_for_every_key() {
    let capacity = crate::resume::buffer_capacity(config(0).buffer) as u64;
    let budgets = Budgets {
        key: Arc::new(Budget::new(100 * capacity)),
        relay: Arc::new(Budget::new(capacity)),
    };
    let pair = Pair::with_budgets(10_000, Some(budgets.clone())).await;
    let mut a = pair.open_stream().await;
    let mut b = pair.open_stream().await;
    echo_once(&mut a, b"a").await.unwrap();
    echo_once(&mut b, b"b").await.unwrap();
    assert_eq!(pair.server.stats.unresumable.load(Ordering::Relaxed), 1);
    assert_eq!(
        budgets.key.used(),
        capacity,
        "the refused stream took nothing from its key"
    );
}

/// Writes `total` bytes of [`data`] to `app` and half-closes it, while collecting everything
/// that comes back until EOF: the application's two directions at once.
fn send_and_collect(
    app: tokio::io::DuplexStream,
    total: usize,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::task::JoinHandle<Vec<u8>>,
) {
    let (mut app_r, mut app_w) = tokio::io::split(app);
    let writer = tokio::spawn(async move {
        app_w.write_all(&data(total)).await.unwrap();
        app_w.shutdown().await.unwrap();
    });
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(total);
        app_r.read_to_end(&mut got).await.unwrap();
        got
    });
    (writer, reader)
}

/// A target on loopback that, on every connection, sends `down` bytes of [`data`] and counts
/// (and drops) whatever it receives until EOF, in two tasks: its reading never waits for its
/// writing, so the two directions of a stream do not hold each other up.
async fn source_sink(down: usize) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counted = received.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (mut r, mut w) = s.into_split();
            tokio::spawn(async move {
                w.write_all(&data(down)).await.unwrap();
                let _ = w.shutdown().await;
            });
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, received)
}

/// The long-fat-pipe case: over a 50 ms round trip a fixed 256 KiB buffer carries at most
/// 256 KiB per round trip. A stream uploads and downloads 16 MiB at once: the client's buffer
/// (no budget) grows for the upload, the relay's for the download, reserved from its key's
/// budget, and stops exactly where that budget ends (1 MiB: the first 256 KiB and two
/// doublings), the stream carrying on at that size; every byte arrives, and the grown
/// reservation comes back whole when the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_long_round_trip_buffers_grow_and_the_relays_stop_at_its_key_budget() {
    let config = ResumeConfig {
        buffer: 256 << 10,
        buffer_max: 4 << 20,
        grace: Duration::from_secs(10),
    };
    let budgets = Budgets {
        key: Arc::new(Budget::new(1 << 20)),
        relay: Arc::new(Budget::new(64 << 20)),
    };
    let mut pair = Pair::with(
        config,
        Some(budgets.clone()),
        Some(Duration::from_millis(25)),
    )
    .await;
    let total = 16 << 20;
    let (target, uploaded) = source_sink(total).await;
    pair.target = target;
    pair.connect();
    let app = pair.open_stream().await;
    let (writer, reader) = send_and_collect(app, total);
    let got = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the download completes")
        .unwrap();
    assert_eq!(got.len(), total);
    assert!(got == data(total), "download bytes lost or reordered");
    writer.await.unwrap();
    assert!(
        eventually(|| uploaded.load(Ordering::Relaxed) == total as u64).await,
        "the upload completes ({} of {total})",
        uploaded.load(Ordering::Relaxed)
    );

    let (client, relay) = (&pair.client.stats, &pair.server.stats);
    let grown = |s: &ResumeStats| s.grown.load(Ordering::Relaxed);
    assert!(
        grown(client) >= 1,
        "the client's buffer limited the upload and never grew"
    );
    assert_eq!(
        grown(relay),
        2,
        "the relay's buffer grew twice (256 KiB -> 512 KiB -> 1 MiB)"
    );
    assert!(
        relay.growth_refused.load(Ordering::Relaxed) >= 1,
        "the relay's buffer still limited the download at the key's budget"
    );
    assert_eq!(relay.unresumable.load(Ordering::Relaxed), 0);
    assert!(
        eventually(|| budgets.key.used() == 0 && budgets.relay.used() == 0).await,
        "the grown reservation came back whole when the stream ended ({} / {} used)",
        budgets.key.used(),
        budgets.relay.used()
    );
}

/// An echo through two ends whose replay buffers differ (a client's 4 MiB, a relay's 64 KiB),
/// with the application writing and reading at once. Acknowledgements used to travel only
/// inside the channel, behind data: the relay's buffer filled, so it stopped reading from the
/// echo target, which stopped reading what the relay delivered, which left the client's
/// acknowledgements unread behind that data, and the echo hung for good. Every byte comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_between_unequal_buffers_never_waits_for_acks_stuck_behind_data() {
    let fixed = |buffer| ResumeConfig {
        buffer,
        buffer_max: buffer,
        grace: Duration::from_secs(10),
    };
    let pair = Pair::with_configs(fixed(4 << 20), fixed(64 << 10), None, None).await;
    let app = pair.open_stream().await;
    let total = 8 << 20;
    let (writer, reader) = send_and_collect(app, total);
    let got = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the echo completes (it hung: acknowledgements stuck behind data)")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), total);
    assert!(got == data(total), "echoed bytes lost or reordered");
}
