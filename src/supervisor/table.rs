//! The `burrow status` table: one line per tunnel, from the same snapshots as the JSON, the
//! metrics and the status page.

use super::status::TunnelSnapshot;

/// A human-readable table of snapshots.
pub fn render_table(tunnels: &[TunnelSnapshot]) -> String {
    let mut out = format!(
        "{:<20} {:<10} {:>9} {:<24} {:>10} {:>6} {:>10} {:>10}  {}\n",
        "TUNNEL", "STATE", "FOR", "SERVER", "RECONNECTS", "CONNS", "IN", "OUT", "LAST ERROR"
    );
    let t_now = crate::observe::unix_secs();
    for t in tunnels {
        out.push_str(&format!(
            "{:<20} {:<10} {:>9} {:<24} {:>10} {:>6} {:>10} {:>10}  {}\n",
            t.name,
            format!("{:?}", t.state).to_lowercase(),
            human_duration(t_now.saturating_sub(t.since)),
            t.server.as_deref().unwrap_or("-"),
            t.reconnects,
            t.connections_active,
            human_bytes(t.bytes_in),
            human_bytes(t.bytes_out),
            t.last_error.as_deref().unwrap_or("-"),
        ));
    }
    out
}

fn human_duration(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS.get(u).copied().unwrap_or("B"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(human_duration(3725), "1h2m");
    }
}
