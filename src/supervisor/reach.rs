//! Is a relay answering again? While a tunnel waits to reconnect it dials its relays with plain
//! TCP connects, and once one connects it waits on that connection for the SSH identification
//! line a server sends first. Only then does the next full handshake start.
//!
//! Why this shape: a refused or unanswered SYN costs the relay nothing and says the path or the
//! relay is still down, so dialling every half second finds a relay that is back within that
//! half second, instead of after the rest of a backoff pause that may have grown to a minute
//! during the outage. A relay whose process is frozen still completes TCP handshakes in its
//! kernel, so a connect alone proves little: the banner does. While one connection waits for
//! its banner no new ones are made (a frozen relay gets one queued connection per
//! [`BANNER_WAIT`], not one per probe), and a relay that answers and then closes is reported,
//! not dialled again in a loop.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Mean time between two probes of one relay (jittered between half and all of it, so tunnels
/// cut by the same outage do not probe in step).
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long one TCP connect may take before it counts as unanswered (a black hole); long enough
/// for a slow path's round trip and one SYN retransmission.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a connected probe waits for the relay's SSH banner before it is dropped and the
/// relay dialled again (a relay whose process is stopped or stuck).
pub const BANNER_WAIT: Duration = Duration::from_secs(10);
/// Connects to one relay in flight at once at most: as many as the shortest probe interval
/// starts within [`DIAL_TIMEOUT`], so a black hole never delays a probe (in flight at once only
/// while SYNs go unanswered; each is one SYN and its retransmissions).
const MAX_DIALING: usize = 13;
/// The most an SSH server may send before its identification line (RFC 4253 4.2 allows other
/// lines first).
const BANNER_LIMIT: usize = 8 * 1024;

/// How waiting for the relays ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Relay `index` sent its SSH banner: a handshake now has a good chance.
    Banner(usize),
    /// Every relay accepted a probe and closed it without a banner (or with something that is
    /// not SSH): it is alive but refusing, which a quicker retry will not change.
    Closed(String),
}

/// Dials relays and waits for a banner; keeps the last error for status messages.
pub struct Prober<D, B> {
    dial: D,
    banner: B,
    targets: usize,
    last_error: LastError,
}

/// Why the last probe failed (for `burrow status` while the relay stays away); readable while
/// [`Prober::until_answer`] runs.
#[derive(Debug, Clone, Default)]
pub struct LastError(Arc<Mutex<String>>);

impl LastError {
    fn set(&self, e: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
    }

    /// The message.
    pub fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

enum Event<C> {
    Dialed(usize, Result<C, String>),
    /// A dial cut short because another connection to the same relay is already held.
    Superseded(usize),
    Banner(usize, Result<(), String>),
    /// The held connection's banner wait ran out: dial again.
    Silent(usize, String),
}

type Pending<C> = std::pin::Pin<Box<dyn Future<Output = Event<C>> + Send>>;

impl<C, D, DF, B, BF> Prober<D, B>
where
    C: Send + 'static,
    D: FnMut(usize) -> DF,
    DF: Future<Output = Result<C, String>> + Send + 'static,
    B: FnMut(C) -> BF,
    BF: Future<Output = Result<(), String>> + Send + 'static,
{
    /// A prober for `targets` relays (indices `0..targets`): `dial(i)` connects to relay `i`
    /// (bounded by [`DIAL_TIMEOUT`] here), `banner(conn)` reads until the SSH identification
    /// line (bounded by [`BANNER_WAIT`] here).
    pub fn new(targets: usize, dial: D, banner: B) -> Self {
        Self {
            dial,
            banner,
            targets,
            last_error: LastError::default(),
        }
    }

    /// Why the last probe failed, also while probing goes on.
    pub fn last_error(&self) -> LastError {
        self.last_error.clone()
    }

    /// Probes until a relay answers with its banner, or all of them closed a probe. The first
    /// probe goes out at once; a change in `net` (new address, route or link) sends the next at
    /// once too. Cancel-safe: dropping the future drops every probe connection.
    pub async fn until_answer(&mut self, net: &mut watch::Receiver<u64>) -> Answer {
        let n = self.targets;
        if n == 0 {
            return Answer::Closed("no server configured".into());
        }
        let mut dialing = vec![0usize; n];
        let mut held = vec![false; n];
        let mut closed: Vec<Option<String>> = vec![None; n];
        // Dials still in flight when a connection is already held are cut short (one queued
        // connection per frozen relay, not several).
        let mut superseded: Vec<CancellationToken> =
            (0..n).map(|_| CancellationToken::new()).collect();
        let mut pending: FuturesUnordered<Pending<C>> = FuturesUnordered::new();
        let mut next = Instant::now();
        let mut watching = true;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {
                    for i in 0..n {
                        if held[i] || closed[i].is_some() || dialing[i] >= MAX_DIALING {
                            continue;
                        }
                        dialing[i] += 1;
                        pending.push(dial_one(i, (self.dial)(i), superseded[i].clone()));
                    }
                    let jitter = 0.5 + rand::random::<f64>() * 0.5;
                    next = Instant::now() + PROBE_EVERY.mul_f64(jitter);
                }
                Some(event) = pending.next() => match event {
                    Event::Dialed(i, Ok(conn)) => {
                        dialing[i] -= 1;
                        if !held[i] {
                            held[i] = true;
                            superseded[i].cancel();
                            pending.push(await_banner(i, (self.banner)(conn)));
                        }
                    }
                    Event::Dialed(i, Err(e)) => {
                        dialing[i] -= 1;
                        self.last_error.set(&e);
                    }
                    Event::Superseded(i) => dialing[i] -= 1,
                    Event::Silent(i, e) => {
                        held[i] = false;
                        superseded[i] = CancellationToken::new();
                        self.last_error.set(&e);
                    }
                    Event::Banner(i, Ok(())) => return Answer::Banner(i),
                    Event::Banner(i, Err(e)) => {
                        held[i] = false;
                        self.last_error.set(&e);
                        closed[i] = Some(e.clone());
                        if closed.iter().all(Option::is_some) {
                            return Answer::Closed(e);
                        }
                    }
                },
                changed = net.changed(), if watching => match changed {
                    Ok(()) => next = Instant::now(),
                    // No watcher (netlink unavailable): nothing more will come.
                    Err(_) => watching = false,
                },
            }
        }
    }
}

fn dial_one<C: Send + 'static>(
    i: usize,
    dial: impl Future<Output = Result<C, String>> + Send + 'static,
    cut: CancellationToken,
) -> Pending<C> {
    Box::pin(async move {
        tokio::select! {
            r = tokio::time::timeout(DIAL_TIMEOUT, dial) => Event::Dialed(i, match r {
                Ok(r) => r,
                Err(_) => Err("no answer to the TCP connect (timed out)".into()),
            }),
            () = cut.cancelled() => Event::Superseded(i),
        }
    })
}

fn await_banner<C: Send + 'static>(
    i: usize,
    banner: impl Future<Output = Result<(), String>> + Send + 'static,
) -> Pending<C> {
    Box::pin(async move {
        match tokio::time::timeout(BANNER_WAIT, banner).await {
            Ok(r) => Event::Banner(i, r),
            Err(_) => Event::Silent(i, "relay accepted TCP but sent no SSH banner".into()),
        }
    })
}

/// Connects to `host:port` (any of its addresses), for [`Prober`].
pub async fn dial_tcp(host: String, port: u16) -> Result<TcpStream, String> {
    TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect to {host} port {port}: {e}"))
}

/// Reads until the SSH identification line ("SSH-2.0-..."); an error if the peer closes first
/// or sends something else.
pub async fn read_banner(mut conn: TcpStream) -> Result<(), String> {
    let mut seen = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while seen.len() < BANNER_LIMIT {
        let n = conn
            .read(&mut buf)
            .await
            .map_err(|e| format!("relay closed the probe: {e}"))?;
        if n == 0 {
            return Err("relay accepted the probe and closed it without an SSH banner".into());
        }
        seen.extend_from_slice(buf.get(..n).unwrap_or_default());
        if seen.starts_with(b"SSH-") || seen.windows(5).any(|w| w == b"\nSSH-") {
            return Ok(());
        }
    }
    Err("relay sent no SSH banner in its first 8 KiB".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake relay on paused time: how a dial and a banner wait go at each moment.
    #[derive(Clone, Copy)]
    enum Relay {
        /// Connect refused at once (relay down, or link down).
        Refused,
        /// SYNs unanswered (black hole): the dial never completes.
        Silent,
        /// TCP accepted, no banner ever (process frozen).
        Frozen,
        /// TCP accepted, closed without a banner.
        Closes,
        /// Back: banner at once.
        Up,
    }

    struct Fake {
        started: Instant,
        /// (from this offset on, the relay behaves so), sorted.
        plan: Vec<(Duration, Relay)>,
        dials: AtomicUsize,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    impl Fake {
        fn new(plan: Vec<(Duration, Relay)>) -> Arc<Fake> {
            Arc::new(Fake {
                started: Instant::now(),
                plan,
                dials: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                most_in_flight: AtomicUsize::new(0),
            })
        }

        fn now(&self) -> Relay {
            let t = self.started.elapsed();
            self.plan
                .iter()
                .rev()
                .find(|(from, _)| t >= *from)
                .map_or(Relay::Refused, |(_, r)| *r)
        }

        fn prober(self: &Arc<Self>) -> FakeProber {
            let f = self.clone();
            Prober::new(
                1,
                Box::new(move |_| {
                    let f = f.clone();
                    f.dials.fetch_add(1, Ordering::SeqCst);
                    let n = f.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    f.most_in_flight.fetch_max(n, Ordering::SeqCst);
                    Box::pin(async move {
                        // Counts down when the dial ends or is dropped (timeout, superseded).
                        let _flight = Flight(f.clone());
                        match f.now() {
                            Relay::Refused => Err("Connection refused".into()),
                            Relay::Silent => std::future::pending().await,
                            r => Ok(r),
                        }
                    }) as Boxed<_>
                }),
                Box::new(|r: Relay| {
                    Box::pin(async move {
                        match r {
                            Relay::Frozen => std::future::pending().await,
                            Relay::Closes => Err("closed without a banner".into()),
                            _ => Ok(()),
                        }
                    }) as Boxed<_>
                }),
            )
        }
    }

    type Boxed<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;
    type FakeProber = Prober<
        Box<dyn FnMut(usize) -> Boxed<Result<Relay, String>> + Send>,
        Box<dyn FnMut(Relay) -> Boxed<Result<(), String>> + Send>,
    >;

    struct Flight(Arc<Fake>);
    impl Drop for Flight {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn no_net() -> watch::Receiver<u64> {
        watch::channel(0).1
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_that_comes_back_is_found_within_one_probe_interval() {
        let back = secs(3.3);
        let fake = Fake::new(vec![(Duration::ZERO, Relay::Refused), (back, Relay::Up)]);
        let answer = fake.prober().until_answer(&mut no_net()).await;
        let at = fake.started.elapsed();
        assert_eq!(answer, Answer::Banner(0));
        assert!(at >= back && at <= back + PROBE_EVERY, "answered at {at:?}");
        // One probe per 250..500 ms while refused: no hammering, no long silence.
        let dials = fake.dials.load(Ordering::SeqCst);
        assert!((7..=15).contains(&dials), "{dials} dials in {at:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_black_hole_keeps_few_syns_in_flight_and_its_end_is_seen_at_once() {
        let back = secs(6.0);
        let fake = Fake::new(vec![(Duration::ZERO, Relay::Silent), (back, Relay::Up)]);
        let answer = fake.prober().until_answer(&mut no_net()).await;
        let at = fake.started.elapsed();
        assert_eq!(answer, Answer::Banner(0));
        assert!(at >= back && at <= back + PROBE_EVERY, "answered at {at:?}");
        let most = fake.most_in_flight.load(Ordering::SeqCst);
        assert!(most <= MAX_DIALING, "{most} connects in flight at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_relay_gets_one_waiting_connection_per_banner_wait_not_a_storm() {
        let fake = Fake::new(vec![(Duration::ZERO, Relay::Frozen)]);
        let mut prober = fake.prober();
        let r = tokio::time::timeout(secs(35.0), prober.until_answer(&mut no_net())).await;
        assert!(r.is_err(), "a frozen relay never answers: {r:?}");
        // At 0, 10, 20 and 30 s (each held until BANNER_WAIT runs out), nothing in between.
        let dials = fake.dials.load(Ordering::SeqCst);
        assert!((3..=5).contains(&dials), "{dials} connections in 35 s");
        assert!(prober.last_error().get().contains("no SSH banner"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_that_closes_probes_is_reported_not_dialled_again() {
        let fake = Fake::new(vec![(Duration::ZERO, Relay::Closes)]);
        let answer = fake.prober().until_answer(&mut no_net()).await;
        assert_eq!(answer, Answer::Closed("closed without a banner".into()));
        assert_eq!(fake.dials.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_network_change_sends_the_next_probe_at_once() {
        let change = Duration::from_millis(2013);
        let fake = Fake::new(vec![(Duration::ZERO, Relay::Refused), (change, Relay::Up)]);
        let (tx, mut rx) = watch::channel(0u64);
        let mut prober = fake.prober();
        let probing = prober.until_answer(&mut rx);
        let announce = async {
            tokio::time::sleep(change).await;
            tx.send_modify(|n| *n += 1);
            std::future::pending::<()>().await
        };
        let answer = tokio::select! {
            a = probing => a,
            () = announce => unreachable!(),
        };
        assert_eq!(answer, Answer::Banner(0));
        assert_eq!(
            fake.started.elapsed(),
            change,
            "probed at the change, not at the next tick"
        );
    }
}
