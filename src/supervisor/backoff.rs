//! Reconnect delays: exponential with jitter and a cap, reset once a connection has stayed up;
//! and [`Retry`], the rule for how long a tunnel waits before its next handshake.

use std::time::Duration;

use tokio::time::Instant;

/// How long a connection must stay up before the next failure starts again from the shortest delay.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Exponential backoff state for one tunnel.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `initial`, doubles per failure, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial: initial.max(Duration::from_millis(10)),
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The next delay: `initial * 2^n` capped at `max`, scaled by a random factor in [0.5, 1.0)
    /// so that many tunnels cut by the same outage do not reconnect in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let jitter = 0.5 + rand::random::<f64>() * 0.5;
        self.next_delay_with(jitter)
    }

    /// [`Backoff::next_delay`] with a given jitter factor (tests).
    pub fn next_delay_with(&mut self, jitter: f64) -> Duration {
        let exp = self.attempt.min(30);
        self.attempt = self.attempt.saturating_add(1);
        let base = self
            .initial
            .checked_mul(1u32 << exp.min(20))
            .unwrap_or(self.max)
            .min(self.max);
        base.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// Jumps straight to the cap: for failures that retrying soon cannot fix (authentication,
    /// host key), which must not be retried in a hot loop.
    pub fn to_cap(&mut self) {
        self.attempt = 31;
    }

    /// Back to the shortest delay (after a connection that stayed up).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// When the next handshake may start, after each way an attempt can end. Every handshake is
/// preceded by a probe that got the relay's SSH banner (see [`super::reach`]); this decides how
/// long to wait before probing, so that the relay sees at most one full handshake per backoff
/// step, whatever the network does:
///
/// - A session that was up and ended: probe at once (the fault may be over already, and the
///   probe is cheap), but only once per [`STABLE_AFTER`]: a session that keeps dying soon
///   after it came up gets the backoff pause like any failure.
/// - An attempt that failed after the relay answered (handshake error, refused forward,
///   authentication): the next backoff step first; the relay is there, so a probe would answer
///   at once and a hot loop would follow. Authentication and host-key failures jump to the cap.
/// - No answer to the probes: that costs the relay nothing, so probing goes on; each backoff
///   step that passes without an answer counts as one failed attempt.
#[derive(Debug, Clone)]
pub struct Retry {
    backoff: Backoff,
    last_quick: Option<Instant>,
}

impl Retry {
    /// Backoff from `initial` doubling to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            backoff: Backoff::new(initial, max),
            last_quick: None,
        }
    }

    /// A session that was up for `uptime` ended: the pause before probing.
    pub fn ended(&mut self, uptime: Duration) -> Duration {
        if uptime >= STABLE_AFTER {
            self.backoff.reset();
        }
        let now = Instant::now();
        match self.last_quick {
            Some(t) if now.duration_since(t) < STABLE_AFTER => self.backoff.next_delay(),
            _ => {
                self.last_quick = Some(now);
                Duration::ZERO
            }
        }
    }

    /// An attempt failed after the relay answered; `permanent` for authentication, host-key and
    /// configuration failures. The pause before probing again.
    pub fn failed(&mut self, permanent: bool) -> Duration {
        if permanent {
            self.backoff.to_cap();
        }
        self.backoff.next_delay()
    }

    /// How long the next stretch of unanswered probes lasts before it counts as a failure.
    pub fn unanswered(&mut self) -> Duration {
        self.backoff.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_ended_session_retries_at_once_but_only_once_per_stable_period() {
        let mut r = Retry::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(r.ended(Duration::from_secs(5)), Duration::ZERO);
        // Flapping: the next session also died quickly: it pauses like a failure.
        tokio::time::advance(Duration::from_secs(3)).await;
        let d = r.ended(Duration::from_secs(2));
        assert!(
            d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
            "{d:?}"
        );
        let d = r.ended(Duration::from_secs(2));
        assert!(
            d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
            "{d:?}"
        );
        // After STABLE_AFTER, an ended session is retried at once again.
        tokio::time::advance(STABLE_AFTER).await;
        assert_eq!(r.ended(Duration::from_secs(2)), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn answered_failures_always_pause_and_permanent_ones_jump_to_the_cap() {
        let mut r = Retry::new(Duration::from_secs(1), Duration::from_secs(60));
        let steps: Vec<Duration> = (0..4).map(|_| r.failed(false)).collect();
        for (i, d) in steps.iter().enumerate() {
            let full = Duration::from_secs(1 << i);
            assert!(*d >= full / 2 && *d <= full, "step {i}: {d:?}");
        }
        assert!(r.failed(true) >= Duration::from_secs(30));
        // A stable session resets the steps.
        assert_eq!(r.ended(STABLE_AFTER), Duration::ZERO);
        assert!(r.failed(false) <= Duration::from_secs(1));
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let seq: Vec<u64> = (0..6).map(|_| b.next_delay_with(1.0).as_secs()).collect();
        assert_eq!(seq, vec![1, 2, 4, 8, 10, 10]);
        b.reset();
        assert_eq!(b.next_delay_with(1.0), Duration::from_secs(1));
        b.to_cap();
        assert_eq!(b.next_delay_with(1.0), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_between_half_and_full_delay() {
        let mut b = Backoff::new(Duration::from_secs(4), Duration::from_secs(4));
        for _ in 0..200 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_secs(4),
                "{d:?}"
            );
        }
    }
}
