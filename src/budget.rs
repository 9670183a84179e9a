//! Byte budgets, per key and relay-wide, so that what one key's connections make the relay hold
//! stays bounded whatever the peers do. Two things reserve from them:
//!
//! - **Replay buffers of resumable streams** (`resume_budget_*`). A resumable stream keeps the
//!   bytes it sent until the peer acknowledges them, and keeps them for the whole grace period
//!   after its client is gone. Without a bound, one key's streams whose readers never read hold
//!   `buffer` bytes each for as long as they like. So every resumable stream reserves its buffer
//!   from its key's budget and the relay-wide one, and a stream that does not fit is carried
//!   without a replay buffer (unresumable: it works like a plain forward and ends when its
//!   channel is lost), never buffered past a budget.
//! - **Grown receive windows** (`window_growth_*`). A forward's receive window grows past the
//!   configured 2 MiB on a long round trip (vendor/russh, "Adaptive receive window"), and a
//!   window is what a channel whose reader stalls can leave queued in the relay. Each growth
//!   takes its bytes from these budgets first (through [`russh::WindowBudget`]); a refused one
//!   leaves the window as it is, the channel running on at its size.
//!
//! What is reserved is a buffer's or window's *capacity*, not the bytes it holds at a given
//! moment:
//! - the bound then holds for the memory itself: a buffer grows as it fills but is never
//!   allocated past that capacity, and a peer may never send past its window, so the sum of
//!   the reservations bounds the memory these can ever take;
//! - a stream admitted as resumable always has its whole buffer: counting bytes as they are
//!   buffered would have to stall a stream whose next read does not fit, and with a shared
//!   relay-wide budget one key's unread streams would then stall every other key's streams, or
//!   drop their resumability in the middle of a transfer;
//! - the decision is taken where it is cheap and clear (a stream's open, a window's growth),
//!   and reserve/release pair up exactly: what was taken is given back when the stream or
//!   channel ends (done, failed, expired or stopped), by `Drop`.
//!
//! The price: an idle stream counts as a full one. At the defaults (4 MiB buffer, 64 MiB per
//! key) a key has 16 resumable streams at once and its further streams are carried
//! unresumable; an operator who wants more lowers `resume_buffer_kib` or raises the budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Reservable bytes: one key's, or the whole relay's.
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
        // Only a Reservation or a grown window gives back, exactly what it took: an underflow
        // is a bug here.
        debug_assert!(released.is_ok(), "budget released more than was reserved");
    }
}

/// Which budget a reservation did not fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The budget of the key.
    Key,
    /// The relay-wide budget.
    Relay,
}

/// The budgets one key reserves from.
#[derive(Debug, Clone)]
pub struct Budgets {
    /// Shared by every reservation of the key, across its sessions and client instances.
    pub key: Arc<Budget>,
    /// Shared by every reservation on the relay.
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

    /// Gives back `n` bytes that [`Self::take`] took from both.
    fn give_back(&self, n: u64) {
        self.relay.give_back(n);
        self.key.give_back(n);
    }
}

/// The sizes of a pair of budgets (serve.toml `resume_budget_*_mib`, `window_growth_*_mib`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// What one key may reserve, across its sessions and client instances.
    pub per_key: u64,
    /// What every key may reserve together.
    pub total: u64,
}

/// One budget per key, created on first use and shared by everything of that key while any of
/// it is alive, and one relay-wide budget shared by all keys.
#[derive(Debug)]
pub struct KeyedBudgets {
    per_key: u64,
    relay: Arc<Budget>,
    /// Weak: a key's budget lives as long as a reservation or a holder of its [`Budgets`].
    keys: Mutex<HashMap<String, Weak<Budget>>>,
}

impl KeyedBudgets {
    /// `config.per_key` bytes for each key, `config.total` for all of them together.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            per_key: config.per_key,
            relay: Arc::new(Budget::new(config.total)),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The budgets of key `fp` (its fingerprint): its own and the relay's. Forgets the budgets
    /// of keys nothing holds any more.
    pub fn for_key(&self, fp: &str) -> Budgets {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.retain(|_, b| b.strong_count() > 0);
        let key = match keys.get(fp).and_then(Weak::upgrade) {
            Some(b) => b,
            None => {
                let b = Arc::new(Budget::new(self.per_key));
                keys.insert(fp.to_string(), Arc::downgrade(&b));
                b
            }
        };
        Budgets {
            key,
            relay: self.relay.clone(),
        }
    }

    /// Bytes reserved now, all keys together.
    pub fn reserved(&self) -> u64 {
        self.relay.used()
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
        self.budgets.give_back(self.bytes);
    }
}

/// The budgets of grown receive windows: one per key and one for the relay, and how many
/// growths they refused (a window that stays at its size).
#[derive(Debug)]
pub struct WindowBudgets {
    budgets: KeyedBudgets,
    refused: Arc<AtomicU64>,
}

impl WindowBudgets {
    /// `config.per_key` bytes of growth for each key, `config.total` for all of them.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            budgets: KeyedBudgets::new(config),
            refused: Arc::default(),
        }
    }

    /// What the sessions of key `fp` grow their windows from (`Session::set_window_budget`).
    pub fn for_key(&self, fp: &str) -> Arc<dyn russh::WindowBudget> {
        Arc::new(KeyWindowBudget {
            budgets: self.budgets.for_key(fp),
            refused: self.refused.clone(),
        })
    }

    /// Bytes the grown windows of every key hold now.
    pub fn reserved(&self) -> u64 {
        self.budgets.reserved()
    }

    /// Growths refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One key's window growth budgets: all or nothing from the key's and the relay's, given back
/// when the channel that grew is gone.
#[derive(Debug)]
struct KeyWindowBudget {
    budgets: Budgets,
    refused: Arc<AtomicU64>,
}

impl russh::WindowBudget for KeyWindowBudget {
    fn take(&self, bytes: u64) -> bool {
        let taken = self.budgets.take(bytes).is_ok();
        if !taken {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    fn give_back(&self, bytes: u64) {
        self.budgets.give_back(bytes)
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
    fn window_budgets_hold_each_key_to_its_own_and_all_to_the_total_and_count_refusals() {
        let windows = WindowBudgets::new(BudgetConfig {
            per_key: 6,
            total: 10,
        });
        let (a, a_again, b) = (
            windows.for_key("SHA256:a"),
            windows.for_key("SHA256:a"),
            windows.for_key("SHA256:b"),
        );
        assert!(a.take(4));
        assert!(
            !a_again.take(4),
            "one budget for all sessions of a key: 4 + 4 > 6"
        );
        assert!(a_again.take(2));
        assert!(!b.take(5), "relay-wide: 6 + 5 > 10");
        assert!(b.take(4));
        assert_eq!((windows.reserved(), windows.refused()), (10, 2));
        a.give_back(4);
        a_again.give_back(2);
        assert!(b.take(2), "a's bytes came back to the relay");
        b.give_back(6);
        assert_eq!(windows.reserved(), 0);
    }

    #[test]
    fn window_budgets_under_racing_sessions_never_overshoot_and_all_come_back() {
        // 8 threads, 2 keys, each take paired with a give-back later: at no moment more than
        // the total is held, and nothing is at the end.
        let windows = Arc::new(WindowBudgets::new(BudgetConfig {
            per_key: 40,
            total: 64,
        }));
        let peak = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (windows, peak) = (windows.clone(), peak.clone());
                std::thread::spawn(move || {
                    let budget = windows.for_key(if t % 2 == 0 { "a" } else { "b" });
                    let mut held = 0u64;
                    for i in 0..500 {
                        if budget.take(3) {
                            held += 3;
                        }
                        peak.fetch_max(windows.reserved(), Ordering::Relaxed);
                        if i % 3 == 0 && held > 0 {
                            budget.give_back(3);
                            held -= 3;
                        }
                    }
                    budget.give_back(held);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            peak.load(Ordering::Relaxed) <= 63,
            "never past 64 in steps of 3"
        );
        assert!(windows.refused() > 0, "the budgets were contended");
        assert_eq!(windows.reserved(), 0, "no leak");
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
