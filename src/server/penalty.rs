//! Brute-force brake: failed authentications are counted per source network, and once a source
//! has used its free allowance every further failure reply waits longer (doubling, capped).
//!
//! Why: `max_auth_tries` bounds one connection, but a guesser simply reconnects. OpenSSH 9.8's
//! `PerSourcePenalties` answers that by remembering sources across connections; this is the same
//! idea in its simplest form. The delay is taken before the failure reply, so it costs the guesser
//! time (and the connection its login grace time) while costing the relay one sleeping task.
//!
//! The table is bounded (`max_sources` entries, the least recently failing source is forgotten
//! first) so an attacker with many addresses cannot grow it without end; entries idle for
//! `forget_after` expire. A successful login forgives its source: it holds an authorized key,
//! and an agent offering several keys must not push its owner into the penalty.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Penalty settings (see [`super::config::Limits`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PenaltyConfig {
    /// Failures a source may have before replies are delayed (an agent offers several keys).
    pub free_failures: u32,
    /// Delay after the first failure beyond the allowance; doubles with each further one.
    pub base_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// A source with no failure for this long starts over.
    pub forget_after: Duration,
    /// Sources remembered at once.
    pub max_sources: usize,
}

impl Default for PenaltyConfig {
    fn default() -> Self {
        Self {
            free_failures: 10,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            forget_after: Duration::from_secs(15 * 60),
            max_sources: 10_000,
        }
    }
}

/// What one recorded failure means for its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Recent failures from this source, this one included.
    pub failures: u32,
    /// How long to wait before replying.
    pub delay: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// Failure counts per source network (IPv4 address, IPv6 /64).
#[derive(Debug)]
pub struct Penalties {
    config: PenaltyConfig,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl Penalties {
    /// An empty table.
    pub fn new(config: PenaltyConfig) -> Self {
        Self {
            config,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Records one failed authentication from `peer` and says how long to hold the reply.
    pub fn failure(&self, peer: IpAddr) -> Verdict {
        let now = Instant::now();
        let key = source_key(peer);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if !table.contains_key(&key) && table.len() >= self.config.max_sources {
            self.make_room(&mut table, now);
        }
        let entry = table.entry(key).or_insert(Entry {
            failures: 0,
            last: now,
        });
        if now.duration_since(entry.last) >= self.config.forget_after {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        Verdict {
            failures: entry.failures,
            delay: self.delay_for(entry.failures),
        }
    }

    /// Forgets `peer`'s failures (it just logged in).
    pub fn forgive(&self, peer: IpAddr) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.remove(&source_key(peer));
    }

    /// Sources currently remembered.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `base * 2^(n - free - 1)` for the n-th failure past the allowance, capped.
    fn delay_for(&self, failures: u32) -> Duration {
        let Some(over) = failures.checked_sub(self.config.free_failures) else {
            return Duration::ZERO;
        };
        if over == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(over - 1).unwrap_or(u32::MAX);
        self.config
            .base_delay
            .checked_mul(factor)
            .unwrap_or(self.config.max_delay)
            .min(self.config.max_delay)
    }

    /// Drops expired entries; if none expired, the one that failed longest ago.
    fn make_room(&self, table: &mut HashMap<IpAddr, Entry>, now: Instant) {
        let forget = self.config.forget_after;
        table.retain(|_, e| now.duration_since(e.last) < forget);
        if table.len() < self.config.max_sources {
            return;
        }
        let oldest = table.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| *k);
        if let Some(k) = oldest {
            table.remove(&k);
        }
    }
}

/// IPv4 addresses count alone; IPv6 by /64, the block one host usually gets.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PenaltyConfig {
        PenaltyConfig {
            free_failures: 2,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            forget_after: Duration::from_secs(60),
            max_sources: 3,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn delay_grows_after_the_allowance_and_is_capped() {
        let p = Penalties::new(config());
        let delays: Vec<u64> = (0..8)
            .map(|_| p.failure(ip("192.0.2.1")).delay.as_secs())
            .collect();
        assert_eq!(delays, [0, 0, 1, 2, 4, 8, 8, 8]);
        assert_eq!(p.failure(ip("192.0.2.1")).failures, 9);
        // Another source is not affected.
        assert_eq!(p.failure(ip("192.0.2.2")).delay, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_sources_start_over_and_success_forgives() {
        let p = Penalties::new(config());
        for _ in 0..5 {
            p.failure(ip("192.0.2.1"));
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(p.failure(ip("192.0.2.1")).failures, 1);
        for _ in 0..5 {
            p.failure(ip("192.0.2.1"));
        }
        p.forgive(ip("192.0.2.1"));
        assert_eq!(p.failure(ip("192.0.2.1")).failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn table_is_bounded_and_forgets_the_oldest_source() {
        let p = Penalties::new(config());
        for (i, a) in ["192.0.2.1", "192.0.2.2", "192.0.2.3"].iter().enumerate() {
            for _ in 0..=i {
                p.failure(ip(a));
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(p.len(), 3);
        p.failure(ip("192.0.2.4"));
        assert_eq!(p.len(), 3, "bounded");
        // .1 failed longest ago and was dropped; .3 is still remembered.
        assert_eq!(p.failure(ip("192.0.2.1")).failures, 1);
        assert_eq!(p.failure(ip("192.0.2.3")).failures, 4);
        for i in 0..1000u32 {
            p.failure(IpAddr::from(i.to_be_bytes()));
        }
        assert!(p.len() <= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let p = Penalties::new(config());
        p.failure(ip("2001:db8:1:2::1"));
        assert_eq!(p.failure(ip("2001:db8:1:2::ffff")).failures, 2);
        assert_eq!(p.failure(ip("2001:db8:1:3::1")).failures, 1);
        p.failure(ip("192.0.2.9"));
        assert_eq!(p.failure(ip("::ffff:192.0.2.9")).failures, 2);
    }
}
