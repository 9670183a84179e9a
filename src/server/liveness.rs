//! Whether a session still answers the relay's keepalives, so a stale -R listener of a dead
//! session can be replaced without the takeover probe's wait.
//!
//! The relay pings every authenticated session once per `keepalive_interval` (a
//! keepalive@openssh.com with want-reply, see [`watch`]) and records when each ping went out
//! and how long answers took. The rule in [`Liveness::overdue`]: a session whose ping has been
//! unanswered for longer than max(1 s, 4 × the slowest round trip it ever showed) *missed* a
//! keepalive; a same-key session asking for its port replaces it at once. A ping that is merely
//! outstanding (in flight, within that grace) does not count, and neither does a session that
//! was never pinged: those are probed as before, so two live clients of one key never flap.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Below this, an unanswered ping is never called missed, however fast the link was: covers
/// scheduling jitter on a loaded relay and a client briefly busy.
const MIN_GRACE: Duration = Duration::from_secs(1);
/// Slack over the slowest round trip the session showed (queueing behind bulk output makes a
/// live session's answers slower than the bare link).
const RTT_FACTOR: u32 = 4;

/// The keepalive record of one session.
#[derive(Debug, Default)]
pub struct Liveness {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the unanswered ping went out, if one is outstanding.
    outstanding_since: Option<Instant>,
    /// The slowest answer seen on this session.
    slowest_rtt: Duration,
}

impl Liveness {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ping went out at `at`.
    pub fn sent(&self, at: Instant) {
        self.state().outstanding_since = Some(at);
    }

    /// The ping sent at `sent` was answered at `at`.
    pub fn answered(&self, sent: Instant, at: Instant) {
        let mut s = self.state();
        s.outstanding_since = None;
        s.slowest_rtt = s.slowest_rtt.max(at.saturating_duration_since(sent));
    }

    /// How long past its grace the outstanding ping is at `now`, if it is: the session missed
    /// a keepalive. `None` when nothing is outstanding or the answer may still be in flight
    /// (unanswered for at most max(1 s, 4 × the slowest round trip seen)).
    pub fn overdue(&self, now: Instant) -> Option<Duration> {
        let s = self.state();
        let since = s.outstanding_since?;
        let grace = MIN_GRACE.max(s.slowest_rtt.saturating_mul(RTT_FACTOR));
        let waited = now.saturating_duration_since(since);
        (waited > grace).then(|| waited - grace)
    }
}

/// Pings the session behind `handle` every `every` until it ends or `stop` fires, recording
/// each ping and answer in `liveness`. A ping is sent only after the previous one was answered,
/// so a dead session keeps one outstanding ping that ages.
pub fn watch(
    liveness: Arc<Liveness>,
    handle: russh::server::Handle,
    every: Duration,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let sent = Instant::now();
            liveness.sent(sent);
            let answer = tokio::select! {
                () = stop.cancelled() => return,
                r = handle.ping() => r,
            };
            if answer.is_err() {
                // The session ended.
                return;
            }
            liveness.answered(sent, Instant::now());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_an_answer_overdue_past_the_grace_counts_as_missed() {
        let l = Liveness::default();
        // Never pinged: nothing to judge.
        assert_eq!(l.overdue(Instant::now()), None);
        // A fast link: answered in 10 ms.
        let t0 = Instant::now();
        l.sent(t0);
        tokio::time::advance(Duration::from_millis(10)).await;
        l.answered(t0, Instant::now());
        assert_eq!(l.overdue(Instant::now()), None);
        // The next ping is outstanding: in flight, not missed, up to the 1 s floor.
        let t1 = Instant::now();
        l.sent(t1);
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(l.overdue(Instant::now()), None);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(l.overdue(Instant::now()), None, "exactly at the grace");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(l.overdue(Instant::now()), Some(Duration::from_millis(200)));
        // Answered late after all: live again.
        l.answered(t1, Instant::now());
        assert_eq!(l.overdue(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_session_gets_four_round_trips_of_grace() {
        let l = Liveness::default();
        let t0 = Instant::now();
        l.sent(t0);
        tokio::time::advance(Duration::from_millis(700)).await;
        l.answered(t0, Instant::now());
        let t1 = Instant::now();
        l.sent(t1);
        // 2 s outstanding: past the 1 s floor but within 4 × 700 ms.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(l.overdue(Instant::now()), None);
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(l.overdue(Instant::now()), Some(Duration::from_millis(100)));
    }
}
