//! Rekeying under load (issue 21): a fixed amount (1 GiB) each way through an sshd with
//! `RekeyLimit 64M`, ssh→sshd and burrow ssh→sshd, both ciphers. sshd starts a key exchange
//! every 64 MiB in either direction; the client must answer it mid-stream (strict kex resets the
//! sequence numbers) without losing or changing a byte. Every transfer is checked byte for byte
//! and sshd's log must show the completed key exchanges, so a speed-up that breaks rekeying (or
//! skips it) fails the section instead of showing up as a fast row.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cases::{interleaved, start_client, Running};
use crate::load::{self, Route, Servers};
use crate::peers::{Lab, PAIRS};
use crate::procs::Proc;
use crate::report::{Better, Row, Summary};
use crate::Settings;

/// sshd's rekey limit, in MiB (`RekeyLimit 64M`: MiB, as sshd reads the suffix).
const LIMIT_MIB: u64 = 64;

/// The slowest a checked transfer may be, in MiB/s (far below any build's speed); with 30 s for
/// the rest, it bounds each run.
const FLOOR_MIB_S: u64 = 8;

/// What sshd logs (LogLevel DEBUG) each time a key exchange completes: the client's NEWKEYS.
const KEX_DONE: &str = "SSH2_MSG_NEWKEYS received";

/// Completed key exchanges per run, as counted in sshd's log.
type KexLog = Arc<Mutex<Vec<usize>>>;

/// Upload and download rows per cipher, for the two clients against one rekeying sshd.
pub async fn rekey(
    lab: &Lab,
    servers: &Servers,
    s: &Settings,
    ciphers: &[&str],
) -> Result<Vec<Row>> {
    let limit = format!("RekeyLimit {LIMIT_MIB}M");
    let (sshd, addr) = lab.other_sshd("rekey", &["LogLevel DEBUG", &limit])?;
    let checked = [servers.checked_sink, servers.checked_source];
    let mut rows = Vec::new();
    for cipher in ciphers {
        let short = cipher.split('@').next().unwrap_or(cipher);
        let mut clients = Vec::new();
        for pair in &PAIRS[..2] {
            clients.push(start_client(lab, servers, *pair, addr, cipher, &checked).await?);
        }
        for down in [false, true] {
            let way = if down { "download" } else { "upload" };
            eprintln!("  {} MiB {way} through sshd, {limit}, {short}", s.rekey_mib);
            let kex: KexLog = Arc::default();
            let values = interleaved(&clients, s.runs, |c: &Running| {
                let addr = c.extra[usize::from(down)];
                checked_run(&sshd, addr, down, s.rekey_mib, kex.clone())
            })
            .await?;
            let kex = Summary::of(
                kex.lock()
                    .map(|k| k.iter().map(|&n| n as f64).collect())
                    .unwrap_or_default(),
            );
            rows.push(Row {
                group: "rekey",
                case: format!(
                    "{} MiB -L {way} checked, sshd {limit}, {short}",
                    s.rekey_mib
                ),
                unit: "MiB/s",
                better: Better::Higher,
                values,
                ceiling: format!("sshd rekeyed {:.0}–{:.0}× per run", kex.min, kex.max),
                targets: Vec::new(),
            });
        }
    }
    Ok(rows)
}

/// One checked transfer of `mib` MiB through `addr`, a client's -L to the checked sink or (`down`)
/// the checked source; fails on any lost or changed byte, or if sshd completed fewer key
/// exchanges than half of what its limit calls for (one at least).
async fn checked_run(
    sshd: &Proc,
    addr: SocketAddr,
    down: bool,
    mib: u64,
    kex: KexLog,
) -> Result<f64> {
    let bytes = mib << 20;
    let before = sshd.log().matches(KEX_DONE).count();
    let transfer = async {
        if down {
            load::download_exact(Route::Direct(addr), bytes).await
        } else {
            load::upload_exact(Route::Direct(addr), bytes).await
        }
    };
    let limit = Duration::from_secs(30 + mib / FLOOR_MIB_S);
    let record = tokio::time::timeout(limit, transfer)
        .await
        .with_context(|| format!("{mib} MiB not through within {limit:?}"))??;
    let done = sshd.log().matches(KEX_DONE).count().saturating_sub(before);
    let wanted = (mib / LIMIT_MIB / 2).max(1) as usize;
    if done < wanted {
        bail!(
            "sshd completed {done} key exchanges in {mib} MiB with RekeyLimit {LIMIT_MIB}M \
             (at least {wanted} expected):\n{}",
            sshd.log_tail()
        );
    }
    if let Ok(mut k) = kex.lock() {
        k.push(done);
    }
    Ok(load::mib_per_s(&[record]))
}
