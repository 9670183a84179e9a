//! bench/results/latest.svg, hand-written: burrow vs OpenSSH per case (how many times better
//! than ssh→sshd, log scale) and the distribution of 64-byte round-trip times per pair.

use std::fmt::Write as _;

use crate::peers::{Pair, PAIRS};
use crate::report::{Better, Row};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 330.0;
const RIGHT: f64 = 40.0;
const BAR: f64 = 7.0;
const COLORS: [&str; 4] = ["#555555", "#1f77b4", "#ff7f0e", "#2ca02c"];
/// The ratio axis: 1/16× .. 16×.
const LOG2_SPAN: f64 = 4.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The whole chart.
pub fn render(rows: &[Row], latency: &[(Pair, Vec<f64>)], title: &str) -> String {
    let compared: Vec<&Row> = rows
        .iter()
        .filter(|r| r.median(PAIRS[0]).is_some())
        .collect();
    let bars_h = compared.len() as f64 * (3.0 * BAR + 8.0);
    let top = 70.0;
    let cdf_top = top + bars_h + 70.0;
    let cdf_h = 260.0;
    let height = cdf_top + cdf_h + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##
    );
    let _ = writeln!(
        s,
        r##"<text x="10" y="20" font-size="12" font-weight="bold">{}</text>"##,
        esc(title)
    );
    legend(&mut s, 10.0, 40.0);
    ratio_bars(&mut s, &compared, top);
    latency_cdf(&mut s, latency, cdf_top, cdf_h);
    s.push_str("</svg>\n");
    s
}

fn legend(s: &mut String, x: f64, y: f64) {
    for (i, p) in PAIRS.iter().enumerate() {
        let lx = x + i as f64 * 150.0;
        let _ = writeln!(
            s,
            r##"<rect x="{lx}" y="{}" width="12" height="10" fill="{}"/>"##,
            y - 9.0,
            COLORS[i]
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{y}">{}</text>"##,
            lx + 16.0,
            esc(p.label())
        );
    }
}

/// x position of a ratio on the log axis.
fn ratio_x(r: f64) -> f64 {
    let l = r.max(1e-6).log2().clamp(-LOG2_SPAN, LOG2_SPAN);
    LEFT + (l + LOG2_SPAN) / (2.0 * LOG2_SPAN) * (WIDTH - LEFT - RIGHT)
}

/// One group of bars per case: how many times better than ssh→sshd (inverse ratio where lower
/// is better), so right of the 1× line always means better than OpenSSH.
fn ratio_bars(s: &mut String, rows: &[&Row], top: f64) {
    let bottom = top + rows.len() as f64 * (3.0 * BAR + 8.0);
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="{}" >times better than ssh→sshd (log scale; latency, memory and time inverted)</text>"##,
        top - 8.0
    );
    for k in -4..=4 {
        let r = 2f64.powi(k);
        let x = ratio_x(r);
        let stroke = if k == 0 { "#000" } else { "#ddd" };
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" stroke="{stroke}"/>"##
        );
        let label = if k >= 0 {
            format!("{}×", r)
        } else {
            format!("1/{}", 1 << -k)
        };
        let _ = writeln!(
            s,
            r##"<text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            bottom + 12.0
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y0 = top + i as f64 * (3.0 * BAR + 8.0);
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            y0 + 1.5 * BAR + 4.0,
            esc(&row.case)
        );
        for (j, p) in PAIRS[1..].iter().enumerate() {
            let Some(r) = row.ratio(*p) else { continue };
            let better = if row.better == Better::Higher {
                r
            } else {
                1.0 / r.max(1e-9)
            };
            let (a, b) = (ratio_x(1.0), ratio_x(better));
            let _ = writeln!(
                s,
                r##"<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {better:.2}×</title></rect>"##,
                a.min(b),
                y0 + j as f64 * BAR,
                (b - a).abs().max(1.0),
                BAR - 1.0,
                COLORS[j + 1],
                esc(p.label())
            );
        }
    }
}

/// Cumulative distribution of round-trip times (x: µs, log scale; y: share of round trips);
/// nothing without samples (a run without the latency section), which have no axis range.
fn latency_cdf(s: &mut String, latency: &[(Pair, Vec<f64>)], top: f64, h: f64) {
    if latency.iter().all(|(_, v)| v.is_empty()) {
        return;
    }
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let all = latency.iter().flat_map(|(_, v)| v.iter().copied());
    let lo = all
        .clone()
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
        .log10()
        .floor();
    let hi = all
        .fold(0.0, f64::max)
        .max(10.0)
        .log10()
        .ceil()
        .max(lo + 1.0);
    let x_of = |us: f64| x0 + (us.max(1.0).log10() - lo) / (hi - lo) * (x1 - x0);
    let y_of = |q: f64| top + h - q * h;
    let _ = writeln!(
        s,
        r##"<text x="{x0}" y="{}">64-byte round trips through -L: share of round trips faster than x (µs, log scale)</text>"##,
        top - 8.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{top}" width="{}" height="{h}" fill="none" stroke="#999"/>"##,
        x1 - x0
    );
    for d in (lo as i32)..=(hi as i32) {
        let x = x_of(10f64.powi(d));
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{}" stroke="#ddd"/>"##,
            top + h
        );
        let _ = writeln!(
            s,
            r##"<text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
            top + h + 14.0,
            10u64.pow(d.max(0) as u32)
        );
    }
    for q in [0.5, 0.99] {
        let y = y_of(q);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">p{}</text>"##,
            x0 - 4.0,
            y + 4.0,
            q * 100.0
        );
    }
    for (pair, samples) in latency {
        let mut v = samples.clone();
        v.sort_by(f64::total_cmp);
        let color = PAIRS
            .iter()
            .position(|p| p == pair)
            .map(|i| COLORS[i])
            .unwrap_or("#000");
        let step = (v.len() / 400).max(1);
        let points: Vec<String> = v
            .iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0 || *i + 1 == v.len())
            .map(|(i, us)| {
                format!(
                    "{:.1},{:.1}",
                    x_of(*us),
                    y_of((i + 1) as f64 / v.len() as f64)
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"##,
            points.join(" ")
        );
    }
}
