//! Byte budgets for the relay's replay buffers, so resumable streams cannot pin its memory.
//!
//! A resumable stream keeps the bytes it sent until the peer acknowledges them, and keeps them
//! for the whole grace period after its client is gone. Without a bound, one key's streams
//! whose readers never read hold `buffer` bytes each for as long as they like. So every
//! resumable stream on the relay reserves its buffer from two budgets, the one of its key and
//! the relay-wide one, and a stream that does not fit is carried without a replay buffer
//! (unresumable: it works like a plain forward and ends when its channel is lost), never
//! buffered past a budget.
//!
//! What is reserved is the buffer's *capacity*, up front, when the stream opens, not the bytes
//! it holds at a given moment:
//! - the bound then holds for the memory itself: a stream's buffer grows as it fills but is
//!   never allocated past that capacity, so the sum of the reservations bounds the memory that
//!   replay buffers can ever take, whatever the peers do;
//! - a stream admitted as resumable always has its whole buffer: counting bytes as they are
//!   buffered would have to stall a stream whose next read does not fit, and with a shared
//!   relay-wide budget one key's unread streams would then stall every other key's streams, or
//!   drop their resumability in the middle of a transfer;
//! - the decision is taken once, where it is cheap and clear (at open, before any byte moved),
//!   and reserve/release pair up exactly: one reservation per stream, given back when the
//!   stream ends (done, failed, expired or stopped), by `Drop`.
//!
//! The price: an idle stream counts as a full one. At the defaults (4 MiB buffer, 64 MiB per
//! key) a key has 16 resumable streams at once and its further streams are carried
//! unresumable; an operator who wants more lowers `resume_buffer_kib` or raises the budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes reservable by replay buffers: one key's, or the whole relay's.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes, nothing reserved.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// The most that can be reserved.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Takes `n` bytes if they fit, in one atomic step: concurrent openers never overshoot.
    fn take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `n` bytes taken earlier.
    fn give_back(&self, n: u64) {
        let released = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_sub(n)
            });
        // Only a Reservation gives back, exactly what it took: an underflow is a bug here.
        debug_assert!(released.is_ok(), "budget released more than was reserved");
    }
}

/// Which budget a stream did not fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The budget of the stream's key (`resume_budget_per_key_mib`).
    Key,
    /// The relay-wide budget (`resume_budget_total_mib`).
    Relay,
}

impl Exhausted {
    /// The serve.toml setting that bounds it (for logs).
    pub fn setting(self) -> &'static str {
        match self {
            Exhausted::Key => "resume_budget_per_key_mib",
            Exhausted::Relay => "resume_budget_total_mib",
        }
    }
}

/// The budgets a stream of one key reserves from.
#[derive(Debug, Clone)]
pub struct Budgets {
    /// Shared by every stream of the key, across its sessions and client instances.
    pub key: Arc<Budget>,
    /// Shared by every stream on the relay.
    pub relay: Arc<Budget>,
}

impl Budgets {
    /// Reserves `n` bytes from both budgets, or from neither: the key's first, so a key that is
    /// over its own budget never takes relay-wide bytes, not even for a moment.
    pub fn reserve(&self, n: u64) -> Result<Reservation, Exhausted> {
        self.take(n)?;
        Ok(Reservation {
            bytes: n,
            budgets: self.clone(),
        })
    }

    /// Takes `n` bytes from both budgets or from neither (see [`Self::reserve`]).
    fn take(&self, n: u64) -> Result<(), Exhausted> {
        if !self.key.take(n) {
            return Err(Exhausted::Key);
        }
        if !self.relay.take(n) {
            self.key.give_back(n);
            return Err(Exhausted::Relay);
        }
        Ok(())
    }
}

/// Bytes held in both budgets until dropped.
#[derive(Debug)]
pub struct Reservation {
    bytes: u64,
    budgets: Budgets,
}

impl Reservation {
    /// Bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reserves `n` more bytes from the same budgets (a replay buffer that grows), with the
    /// same all-or-nothing rule as [`Budgets::reserve`]: on a refusal nothing changes and the
    /// reservation keeps what it had.
    pub fn grow(&mut self, n: u64) -> Result<(), Exhausted> {
        self.budgets.take(n)?;
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budgets.relay.give_back(self.bytes);
        self.budgets.key.give_back(self.bytes);
    }
}

/// The memory this process may use, for a relay-wide budget that is a fraction of it: the
/// smaller of MemTotal in /proc/meminfo and the cgroup v2 limit (/sys/fs/cgroup/memory.max, a
/// container's real ceiling). None where neither can be read (not Linux, /proc not mounted):
/// the caller falls back to a fixed default.
pub fn memory_available() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo_total(&t));
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| parse_cgroup_max(&t));
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// `MemTotal:  24683784 kB` -> bytes.
fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// A cgroup v2 `memory.max`: a byte count, or "max" (no limit: None).
fn parse_cgroup_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(key: u64, relay: u64) -> Budgets {
        Budgets {
            key: Arc::new(Budget::new(key)),
            relay: Arc::new(Budget::new(relay)),
        }
    }

    #[test]
    fn reserve_and_release_are_exact_in_a_deterministic_sequence() {
        let relay = Arc::new(Budget::new(10));
        let a = Budgets {
            key: Arc::new(Budget::new(6)),
            relay: relay.clone(),
        };
        let b = Budgets {
            key: Arc::new(Budget::new(100)),
            relay: relay.clone(),
        };
        let a1 = a.reserve(4).unwrap();
        assert_eq!(a.reserve(4).unwrap_err(), Exhausted::Key, "4 + 4 > 6");
        assert_eq!(
            (a.key.used(), relay.used()),
            (4, 4),
            "a refusal takes nothing"
        );
        let a2 = a.reserve(2).unwrap();
        assert_eq!(a.key.used(), 6, "exactly up to the limit");
        assert_eq!(b.reserve(5).unwrap_err(), Exhausted::Relay, "6 + 5 > 10");
        assert_eq!(
            b.key.used(),
            0,
            "a relay-wide refusal gives the key's bytes back"
        );
        let b1 = b.reserve(4).unwrap();
        assert_eq!(relay.used(), 10);
        drop(a1);
        assert_eq!((a.key.used(), relay.used()), (2, 6));
        let b2 = b.reserve(4).unwrap();
        drop((a2, b1, b2));
        assert_eq!((a.key.used(), b.key.used(), relay.used()), (0, 0, 0));
        let zero = budgets(0, 0);
        assert_eq!(zero.reserve(1).unwrap_err(), Exhausted::Key);
        assert_eq!(zero.reserve(0).unwrap().bytes(), 0);
    }

    #[test]
    fn a_reservation_grows_only_within_both_budgets_and_gives_everything_back() {
        let b = budgets(10, 100);
        let mut r = b.reserve(4).unwrap();
        r.grow(4).unwrap();
        assert_eq!((r.bytes(), b.key.used(), b.relay.used()), (8, 8, 8));
        assert_eq!(r.grow(4).unwrap_err(), Exhausted::Key, "8 + 4 > 10");
        assert_eq!(
            (r.bytes(), b.key.used()),
            (8, 8),
            "a refused growth takes nothing"
        );
        r.grow(2).unwrap();
        drop(r);
        assert_eq!(
            (b.key.used(), b.relay.used()),
            (0, 0),
            "growth given back too"
        );
        let tight = budgets(100, 5);
        let mut r = tight.reserve(4).unwrap();
        assert_eq!(r.grow(4).unwrap_err(), Exhausted::Relay);
        assert_eq!((tight.key.used(), tight.relay.used()), (4, 4));
        drop(r);
        assert_eq!((tight.key.used(), tight.relay.used()), (0, 0));
    }

    #[test]
    fn concurrent_reservations_never_overshoot_and_all_come_back() {
        // 8 threads race for 2000 reservations of 3 bytes from budgets of 100 and 64: at any
        // moment no more than fits is held, and once every reservation is dropped nothing is.
        let b = budgets(100, 64);
        let peak = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (b, peak) = (b.clone(), peak.clone());
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    let mut granted = 0u32;
                    for i in 0..250 {
                        if let Ok(r) = b.reserve(3) {
                            granted += 1;
                            held.push(r);
                        }
                        peak.fetch_max(b.relay.used(), Ordering::Relaxed);
                        if i % 3 == 0 {
                            held.pop();
                        }
                    }
                    granted
                })
            })
            .collect();
        let granted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(granted > 21, "reservations were granted ({granted})");
        assert!(
            peak.load(Ordering::Relaxed) <= 63,
            "never past 64 in steps of 3"
        );
        assert_eq!((b.key.used(), b.relay.used()), (0, 0), "no leak");
    }

    #[test]
    fn memory_sources_parse() {
        let meminfo = "MemTotal:       24683784 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo_total(meminfo), Some(24683784 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(
            parse_meminfo_total("MemTotal: 12\n"),
            None,
            "no unit, no guess"
        );
        assert_eq!(parse_cgroup_max("max\n"), None);
        assert_eq!(parse_cgroup_max("536870912\n"), Some(512 << 20));
        assert!(memory_available().is_some_and(|m| m > 0), "Linux has /proc");
    }
}
