//! Physical ceilings printed beside the SSH figures: what loopback TCP carries without SSH
//! (same load generator, same servers) and what one core encrypts (`openssl speed -evp`).

use std::process::Command;

use anyhow::{Context, Result};

use crate::load::{self, Route, Servers};
use crate::report::{percentile, Summary};

/// Ceilings measured once per bench run.
#[derive(Clone, Debug, Default)]
pub struct Ceilings {
    /// Loopback TCP, one stream, MiB/s.
    pub tcp_1: f64,
    /// Loopback TCP, 8 streams, MiB/s.
    pub tcp_8: f64,
    /// Direct round trip p50 and p99, µs.
    pub rtt_p50: f64,
    /// See `rtt_p50`.
    pub rtt_p99: f64,
    /// Direct connections/s to the echo server.
    pub cps: f64,
    /// `openssl speed` MiB/s on one core for 16 KiB blocks, per SSH cipher name.
    pub cipher: Vec<(String, f64)>,
}

impl Ceilings {
    /// The cipher ceiling for an SSH cipher name, as text.
    pub fn cipher_text(&self, ssh_name: &str) -> String {
        self.cipher
            .iter()
            .find(|(n, _)| n == ssh_name)
            .map(|(_, v)| format!("openssl {v:.0}/core"))
            .unwrap_or_else(|| "openssl ?".into())
    }
}

impl Ceilings {
    /// One core's cipher cost per GiB (the floor under the CPU rows), as text.
    pub fn cipher_cpu_text(&self, ssh_name: &str) -> String {
        self.cipher
            .iter()
            .find(|(n, _)| n == ssh_name)
            .map(|(_, v)| format!("openssl {:.2}", 1024.0 / v.max(1e-9)))
            .unwrap_or_default()
    }
}

/// Measures the ceilings; `runs` medians of `secs`-long transfers.
pub async fn measure(
    servers: &Servers,
    ciphers: &[&str],
    runs: usize,
    secs: f64,
) -> Result<Ceilings> {
    let direct = Route::Direct(servers.sink);
    let mut c = Ceilings::default();
    let mut one = Vec::new();
    let mut eight = Vec::new();
    for _ in 0..runs {
        one.push(load::bulk(direct, 1, secs, false).await?);
        eight.push(load::bulk(direct, 8, secs, false).await?);
    }
    c.tcp_1 = Summary::of(one).median;
    c.tcp_8 = Summary::of(eight).median;
    let mut rtt = load::round_trips(Route::Direct(servers.echo), 1000).await?;
    rtt.sort_by(f64::total_cmp);
    c.rtt_p50 = percentile(&rtt, 50.0);
    c.rtt_p99 = percentile(&rtt, 99.0);
    c.cps = load::connections_per_s(servers.echo, 4, 1.0, 20_000).await?;
    for name in ciphers {
        let v = tokio::task::spawn_blocking({
            let evp = openssl_name(name);
            move || openssl_speed(evp)
        })
        .await??;
        c.cipher.push((name.to_string(), v));
    }
    Ok(c)
}

fn openssl_name(ssh_name: &str) -> &'static str {
    if ssh_name.starts_with("chacha20") {
        "chacha20-poly1305"
    } else if ssh_name.starts_with("aes256-gcm") {
        "aes-256-gcm"
    } else {
        "aes-128-gcm"
    }
}

/// `openssl speed -evp NAME` on 16 KiB blocks (one core), in MiB/s.
fn openssl_speed(evp: &str) -> Result<f64> {
    let out = Command::new("openssl")
        .args([
            "speed", "-mr", "-seconds", "1", "-bytes", "16384", "-evp", evp,
        ])
        .output()
        .with_context(|| format!("running openssl speed -evp {evp}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // Machine-readable result line: "+F:<n>:<name>:<bytes per second>".
    let line = text
        .lines()
        .find(|l| l.starts_with("+F:"))
        .with_context(|| format!("no result from openssl speed -evp {evp}:\n{text}"))?;
    let bytes_per_s: f64 = line
        .rsplit(':')
        .next()
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("unreadable openssl speed line {line:?}"))?;
    Ok(bytes_per_s / (1024.0 * 1024.0))
}
