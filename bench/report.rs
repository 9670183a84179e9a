//! Results: one row per measured case with every pair's median and spread, its ratio to
//! OpenSSH ↔ OpenSSH, the physical ceiling and the target; printed as a table and saved as JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::peers::{Pair, PAIRS};

/// Median and spread of several runs.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The median run.
    pub median: f64,
    /// The lowest run.
    pub min: f64,
    /// The highest run.
    pub max: f64,
    /// Every run, in order.
    pub runs: Vec<f64>,
}

impl Summary {
    /// Summarizes `runs` (at least one).
    pub fn of(runs: Vec<f64>) -> Summary {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = match sorted.len() {
            0 => 0.0,
            n if n % 2 == 1 => sorted[mid],
            _ => (sorted[mid - 1] + sorted[mid]) / 2.0,
        };
        Summary {
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
            runs,
        }
    }
}

/// The `p`th percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Whether bigger numbers are better (throughput) or smaller (latency, memory, time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Throughput, connections/s.
    Higher,
    /// Latency, memory, time.
    Lower,
}

/// What a row must show: each of `pairs` at `ratio` × OpenSSH ↔ OpenSSH or better.
#[derive(Clone, Debug)]
pub struct Target {
    /// The bound on value(pair) / value(ssh→sshd).
    pub ratio: f64,
    /// The pairs it applies to.
    pub pairs: Vec<Pair>,
    /// Which of a pair's runs is held to the bound.
    pub judge: Judge,
    /// A name shown before the bound (e.g. "moonshot"), or empty.
    pub label: &'static str,
}

/// Which of a pair's runs a target judges (always against ssh→sshd's median).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judge {
    /// The median run: the usual figure.
    Median,
    /// The worst run (slowest for throughput): a target that must hold every time, not on a
    /// lucky run.
    Worst,
}

impl Target {
    /// `pairs` at `ratio` × ssh→sshd or better, judged on the median.
    pub fn new(ratio: f64, pairs: Vec<Pair>) -> Target {
        Target {
            ratio,
            pairs,
            judge: Judge::Median,
            label: "",
        }
    }

    /// The same bound held by every run, the worst included.
    pub fn every_run(self) -> Target {
        Target {
            judge: Judge::Worst,
            ..self
        }
    }

    /// The same bound under a name, e.g. "moonshot".
    pub fn named(self, label: &'static str) -> Target {
        Target { label, ..self }
    }
}

/// One measured case.
#[derive(Clone, Debug)]
pub struct Row {
    /// Section, e.g. "throughput".
    pub group: &'static str,
    /// What was measured, e.g. "-L 1 stream chacha20".
    pub case: String,
    /// Unit of the values.
    pub unit: &'static str,
    /// Direction of "better".
    pub better: Better,
    /// Per pair (missing pairs were not measured for this case).
    pub values: Vec<(Pair, Summary)>,
    /// The physical limit, as text.
    pub ceiling: String,
    /// The targets (none, or several: each with its own verdict).
    pub targets: Vec<Target>,
}

impl Row {
    /// The median of `pair`, if measured.
    pub fn median(&self, pair: Pair) -> Option<f64> {
        self.values
            .iter()
            .find(|(p, _)| *p == pair)
            .map(|(_, s)| s.median)
    }

    /// value(pair) / value(ssh→sshd).
    pub fn ratio(&self, pair: Pair) -> Option<f64> {
        self.judged_ratio(pair, Judge::Median)
    }

    /// The judged run of `pair` (median or worst) / ssh→sshd's median.
    pub fn judged_ratio(&self, pair: Pair, judge: Judge) -> Option<f64> {
        let base = self.median(PAIRS[0])?;
        let s = self
            .values
            .iter()
            .find(|(p, _)| *p == pair)
            .map(|(_, s)| s)?;
        let v = match (judge, self.better) {
            (Judge::Median, _) => s.median,
            (Judge::Worst, Better::Higher) => s.min,
            (Judge::Worst, Better::Lower) => s.max,
        };
        (base > 0.0).then(|| v / base)
    }

    /// Whether `t` is met: every pair it names measured and within the bound.
    pub fn met(&self, t: &Target) -> bool {
        t.pairs
            .iter()
            .all(|&p| match (self.judged_ratio(p, t.judge), self.better) {
                (Some(r), Better::Higher) => r >= t.ratio,
                (Some(r), Better::Lower) => r <= t.ratio,
                (None, _) => false,
            })
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cell(s: &Summary) -> String {
    format!(
        "{} ({}–{})",
        fmt_num(s.median),
        fmt_num(s.min),
        fmt_num(s.max)
    )
}

/// The table for stdout and the README: medians with (min–max), ratios to ssh→sshd, ceiling and
/// target.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut head = String::from("| case | unit |");
    for p in PAIRS {
        let _ = write!(head, " {} |", p.label());
    }
    for p in &PAIRS[1..] {
        let _ = write!(head, " {} ÷ ssh→sshd |", p.label());
    }
    head.push_str(" ceiling | target |");
    out.push_str(&head);
    out.push('\n');
    out.push_str(&"|---".repeat(2 + PAIRS.len() * 2 - 1 + 2));
    out.push_str("|\n");
    for r in rows {
        let _ = write!(out, "| {} | {} |", r.case, r.unit);
        for p in PAIRS {
            let v = r.values.iter().find(|(q, _)| *q == p).map(|(_, s)| cell(s));
            let _ = write!(out, " {} |", v.unwrap_or_else(|| "–".into()));
        }
        for p in &PAIRS[1..] {
            let v = r.ratio(*p).map(|x| format!("{x:.2}×"));
            let _ = write!(out, " {} |", v.unwrap_or_else(|| "–".into()));
        }
        let _ = writeln!(out, " {} | {} |", r.ceiling, target_text(r));
    }
    out
}

/// Every target of the row with its verdict, e.g. `≥ 1× (burrow→sshd): met`; a target judged
/// on the worst run also names that run's ratio (the ratio columns show medians).
fn target_text(r: &Row) -> String {
    let texts: Vec<String> = r
        .targets
        .iter()
        .map(|t| {
            let op = if r.better == Better::Higher {
                "≥"
            } else {
                "≤"
            };
            let who: Vec<&str> = t.pairs.iter().map(|p| p.label()).collect();
            let verdict = if r.met(t) { "met" } else { "NOT met" };
            let mut text = String::new();
            if !t.label.is_empty() {
                let _ = write!(text, "{} ", t.label);
            }
            if t.judge == Judge::Worst {
                let worst = if r.better == Better::Higher {
                    "slowest"
                } else {
                    "worst"
                };
                let ratios: Vec<String> = t
                    .pairs
                    .iter()
                    .map(|&p| {
                        r.judged_ratio(p, t.judge)
                            .map_or_else(|| "–".into(), |x| format!("{x:.2}×"))
                    })
                    .collect();
                let _ = write!(
                    text,
                    "{worst} run {op} {}× ({}): {verdict} ({})",
                    t.ratio,
                    who.join(", "),
                    ratios.join(", ")
                );
            } else {
                let _ = write!(text, "{op} {}× ({}): {verdict}", t.ratio, who.join(", "));
            }
            text
        })
        .collect();
    texts.join("; ")
}

/// The JSON document: machine facts, settings, rows and the latency samples.
pub fn json(rows: &[Row], meta: Value, latency: &[(Pair, Vec<f64>)]) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let values: serde_json::Map<String, Value> = r
                .values
                .iter()
                .map(|(p, s)| {
                    let v = json!({"median": s.median, "min": s.min, "max": s.max, "runs": s.runs});
                    (p.key().to_owned(), v)
                })
                .collect();
            let ratios: serde_json::Map<String, Value> = PAIRS[1..]
                .iter()
                .filter_map(|p| Some((p.key().to_owned(), json!(r.ratio(*p)?))))
                .collect();
            json!({
                "group": r.group, "case": r.case, "unit": r.unit,
                "higher_is_better": r.better == Better::Higher,
                "values": values, "ratio_to_ssh_sshd": ratios, "ceiling": r.ceiling,
                "targets": r.targets.iter().map(|t| json!({
                    "label": t.label,
                    "ratio": t.ratio,
                    "judge": if t.judge == Judge::Worst { "worst run" } else { "median" },
                    "pairs": t.pairs.iter().map(|p| p.key()).collect::<Vec<_>>(),
                    "met": r.met(t),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let samples: serde_json::Map<String, Value> = latency
        .iter()
        .map(|(p, v)| {
            // 0.1 µs is far below the noise; keeps the file small.
            let v: Vec<f64> = v.iter().map(|x| (x * 10.0).round() / 10.0).collect();
            (p.key().to_owned(), json!(v))
        })
        .collect();
    json!({"meta": meta, "rows": rows, "latency_us_samples": samples})
}

/// Writes `text` to `path`, creating its directory.
pub fn save(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
