//! Reconnect delays: exponential with jitter and a cap, reset once a connection has stayed up.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
