//! Long fat pipe: each pair's client reaches its server through a [`DelayLine`]; one stream
//! through -L, upload (the server receives) and download (the client receives). Where OpenSSH
//! receives, its fixed 2 MiB channel window allows 2 MiB per round trip; where burrow receives,
//! the window grows with the bandwidth-delay product.

use std::time::Duration;

use anyhow::Result;

use crate::cases::{interleaved, start_client};
use crate::delay::DelayLine;
use crate::load::{self, Route, Servers};
use crate::peers::{Client, Lab, Pair, Server, PAIRS};
use crate::report::{Better, Row, Target};
use crate::Settings;

/// Upload and download rows for a one-way delay of `delay_ms`.
pub async fn long_fat_pipe(
    lab: &Lab,
    servers: &Servers,
    s: &Settings,
    cipher: &str,
    delay_ms: u64,
) -> Result<Vec<Row>> {
    eprintln!("  long fat pipe, {delay_ms} ms each way");
    let delay = Duration::from_millis(delay_ms);
    let to_sshd = DelayLine::start(lab.sshd_addr, delay).await?;
    let to_serve = DelayLine::start(lab.serve_addr, delay).await?;
    let mut clients = Vec::new();
    for pair in PAIRS {
        let via = match pair.server {
            Server::Sshd => to_sshd.addr,
            Server::Serve => to_serve.addr,
        };
        clients.push(start_client(lab, servers, pair, via, cipher).await?);
    }
    let mut rows = Vec::new();
    for down in [false, true] {
        let values = interleaved(&clients, s.runs, |c| {
            let addr = if down { c.l_source } else { c.l_sink };
            load::bulk(Route::Direct(addr), 1, s.lfp_secs, down)
        })
        .await?;
        // burrow receives: as the server of an upload, as the client of a download.
        let receivers: Vec<Pair> = PAIRS
            .iter()
            .copied()
            .filter(|p| {
                if down {
                    p.client == Client::Burrow
                } else {
                    p.server == Server::Serve
                }
            })
            .collect();
        rows.push(Row {
            group: "long fat pipe",
            case: format!(
                "-L 1 stream {}, RTT {} ms",
                if down { "download" } else { "upload" },
                2 * delay_ms
            ),
            unit: "MiB/s",
            better: Better::Higher,
            values,
            ceiling: format!("2 MiB/RTT = {:.1}", 2.0 / (2.0 * delay_ms as f64 / 1000.0)),
            // The target is set at 100 ms RTT; other delays are for the curve.
            target: (delay_ms == 50).then_some(Target {
                ratio: 5.0,
                pairs: receivers,
            }),
        });
    }
    Ok(rows)
}
