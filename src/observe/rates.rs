//! Throughput over time, for the "current rate" and the sparklines on the status page. The
//! counters themselves only grow; a sampler reads them once a second and keeps the last minute
//! of per-second rates for each forward, so the page shows history as soon as it opens.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Samples kept per series: one minute at one sample a second.
pub const HISTORY: usize = 60;

/// How often the counters are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Byte totals of one forward (or tunnel) at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Bytes this process sent through it so far.
    pub sent: u64,
    /// Bytes this process received through it so far.
    pub received: u64,
}

/// Recent throughput of one series, as the status JSON carries it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Throughput {
    /// Bytes per second sent over the last sample period.
    pub sent_per_sec: u64,
    /// Bytes per second received over the last sample period.
    pub received_per_sec: u64,
    /// Up to [`HISTORY`] per-second send rates, oldest first.
    pub sent_history: Vec<u64>,
    /// Up to [`HISTORY`] per-second receive rates, oldest first.
    pub received_history: Vec<u64>,
}

#[derive(Debug, Default)]
struct Series {
    last: Sample,
    points: VecDeque<(u64, u64)>,
}

/// Rate history of every series (keyed by a stable id such as `s3/r1`).
#[derive(Debug, Default)]
pub struct Rates {
    series: Mutex<HashMap<String, Series>>,
}

impl Rates {
    /// Records one sampling round taken `elapsed` after the previous one. Series missing from
    /// `totals` are forgotten (their forward is gone). A new series counts from zero: every
    /// counter starts at zero when its forward does, and sampling starts with the process, so
    /// traffic in a forward's first second shows instead of vanishing into a baseline. A counter
    /// that went down (a tunnel's forward after a reconnect) counts as idle for that round.
    pub fn record(&self, totals: Vec<(String, Sample)>, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(0.001);
        let per_sec = |delta: u64| (delta as f64 / secs).round() as u64;
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = HashMap::with_capacity(totals.len());
        for (id, now) in totals {
            let mut series = map.remove(&id).unwrap_or_default();
            let point = (
                per_sec(now.sent.saturating_sub(series.last.sent)),
                per_sec(now.received.saturating_sub(series.last.received)),
            );
            if series.points.len() >= HISTORY {
                series.points.pop_front();
            }
            series.points.push_back(point);
            series.last = now;
            fresh.insert(id, series);
        }
        *map = fresh;
    }

    /// The throughput of one series (zeros when it has no history yet).
    pub fn get(&self, id: &str) -> Throughput {
        let map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = map.get(id) else {
            return Throughput::default();
        };
        let (sent_per_sec, received_per_sec) = s.points.back().copied().unwrap_or((0, 0));
        Throughput {
            sent_per_sec,
            received_per_sec,
            sent_history: s.points.iter().map(|p| p.0).collect(),
            received_history: s.points.iter().map(|p| p.1).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(rates: &Rates, sent: u64, received: u64, secs: u64) {
        rates.record(
            vec![("f".into(), Sample { sent, received })],
            Duration::from_secs(secs),
        );
    }

    #[test]
    fn rates_are_deltas_per_second_and_history_is_bounded() {
        let rates = Rates::default();
        round(&rates, 3000, 0, 1);
        assert_eq!(
            rates.get("f").sent_per_sec,
            3000,
            "a new series counts from zero"
        );
        round(&rates, 3400, 10, 2);
        let t = rates.get("f");
        assert_eq!((t.sent_per_sec, t.received_per_sec), (200, 5));
        assert_eq!(t.sent_history, vec![3000, 200]);
        round(&rates, 100, 10, 1);
        assert_eq!(
            rates.get("f").sent_per_sec,
            0,
            "a counter that restarted is idle, not negative"
        );
        for i in 0..100 {
            round(&rates, 1_000_400 + i, 10, 1);
        }
        assert_eq!(rates.get("f").sent_history.len(), HISTORY);
    }

    #[test]
    fn gone_series_are_forgotten() {
        let rates = Rates::default();
        round(&rates, 1, 1, 1);
        round(&rates, 2, 2, 1);
        rates.record(Vec::new(), Duration::from_secs(1));
        assert_eq!(rates.get("f"), Throughput::default());
    }
}
