//! Cases that start processes: time from start to forward ready, client and server memory per
//! idle connection, and relay memory per session (200 `ssh -R` sessions against sshd and against
//! burrow serve). Memory is measured on fresh processes, so what earlier cases left in a heap
//! does not hide (or inflate) the growth.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::load::{self, Servers};
use crate::peers::{free_port, Client, Lab, Pair, Server, PAIRS};
use crate::procs::{rss_kib, tree_pss_kib, Proc};
use crate::report::{Better, Row, Summary, Target};
use crate::Settings;

/// How long one session may take to come up.
const UP_LIMIT: Duration = Duration::from_secs(30);

/// Time from spawning the client to the first echo through its -L, per pair.
pub async fn ready_time(lab: &Lab, servers: &Servers, s: &Settings, cipher: &str) -> Result<Row> {
    eprintln!("  ready time");
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); PAIRS.len()];
    for _ in 0..s.runs.max(5) {
        for (i, pair) in PAIRS.iter().enumerate() {
            let port = free_port()?;
            let spec = format!("127.0.0.1:{port}:127.0.0.1:{}", servers.echo.port());
            let mut cmd = lab.client(
                pair.client,
                lab.addr(pair.server),
                cipher,
                &["-L".into(), spec],
            );
            let start = Instant::now();
            let mut proc = Proc::spawn(&format!("ready-{}", pair.key()), &mut cmd, &lab.dir)?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let waited = load::wait_echo(addr, UP_LIMIT).await;
            let elapsed = start.elapsed();
            if let Err(e) = waited {
                proc.check_alive()?;
                return Err(e.context(proc.log_tail()));
            }
            runs[i].push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    Ok(Row {
        group: "start",
        case: "start to -L forward ready".into(),
        unit: "ms",
        better: Better::Lower,
        values: PAIRS
            .iter()
            .copied()
            .zip(runs.into_iter().map(Summary::of))
            .collect(),
        ceiling: String::new(),
        targets: vec![Target::new(1.0, PAIRS[1..].to_vec())],
    })
}

/// Relay memory per session: `s.sessions` OpenSSH clients, each holding one -R listener, against
/// sshd and against burrow serve. sshd's figure sums every process of its tree (one or two per
/// session); PSS splits shared pages fairly, RSS counts them in every process.
pub async fn relay_memory(
    lab: &Lab,
    servers: &Servers,
    s: &Settings,
    cipher: &str,
) -> Result<Vec<Row>> {
    let lab = &lab.fresh("relay")?;
    let mut pss = Vec::new();
    let mut rss = Vec::new();
    for server in [Server::Sshd, Server::Serve] {
        let pid = lab.pid(server);
        eprintln!("  {} -R sessions on {server:?}", s.sessions);
        let pair = Pair {
            client: Client::OpenSsh,
            server,
        };
        let (p, r) = sessions_memory(lab, servers, s.sessions, cipher, server, pid).await?;
        pss.push((pair, Summary::of(vec![p])));
        rss.push((pair, Summary::of(vec![r])));
    }
    let relay_target = || {
        let serve = Pair {
            client: Client::OpenSsh,
            server: Server::Serve,
        };
        vec![Target::new(0.2, vec![serve])]
    };
    let row = |what: &str, values, targets| Row {
        group: "memory",
        case: format!("relay {what} per -R session ({}, one run)", s.sessions),
        unit: "KiB",
        better: Better::Lower,
        values,
        ceiling: String::new(),
        targets,
    };
    Ok(vec![
        row("PSS", pss, relay_target()),
        row("RSS", rss, relay_target()),
    ])
}

/// Opens `n` sessions with one -R each (in batches), returns the server's (PSS, RSS) growth per
/// session in KiB, then closes them.
async fn sessions_memory(
    lab: &Lab,
    servers: &Servers,
    n: usize,
    cipher: &str,
    server: Server,
    pid: u32,
) -> Result<(f64, f64)> {
    let (pss0, rss0) = (tree_pss_kib(pid), tree_rss_kib(pid));
    let mut clients = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(10) {
        let mut waiting = Vec::new();
        for i in 0..10.min(n - batch * 10) {
            let port = free_port()?;
            let spec = format!("127.0.0.1:{port}:127.0.0.1:{}", servers.echo.port());
            let mut cmd = lab.client(
                Client::OpenSsh,
                lab.addr(server),
                cipher,
                &["-R".into(), spec],
            );
            let name = format!("session-{server:?}-{}", batch * 10 + i);
            clients.push(Proc::spawn(&name, &mut cmd, &lab.dir)?);
            waiting.push(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
        for addr in waiting {
            load::wait_echo(addr, UP_LIMIT)
                .await
                .with_context(|| format!("session {} of {n} on {server:?}", clients.len()))?;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (pss1, rss1) = (tree_pss_kib(pid), tree_rss_kib(pid));
    drop(clients);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / n as f64;
    Ok((per(pss0, pss1), per(rss0, rss1)))
}

/// Sum of RSS over a process tree (shared pages counted in each process).
fn tree_rss_kib(pid: u32) -> u64 {
    std::iter::once(pid)
        .chain(crate::procs::descendants(pid))
        .map(|p| rss_kib(p).unwrap_or(0))
        .sum()
}

/// RSS growth per idle connection through one -L, of the client and of the server, for every
/// pair. Each run starts a fresh client and fresh servers: a heap keeps what an earlier run
/// freed, which would hide the next run's growth. sshd's figure sums its process tree (the
/// session's process holds the channels).
pub async fn idle_memory(
    lab: &Lab,
    servers: &Servers,
    s: &Settings,
    cipher: &str,
) -> Result<Vec<Row>> {
    eprintln!("  {} idle connections", s.idle);
    let mut client_runs: Vec<Vec<f64>> = vec![Vec::new(); PAIRS.len()];
    let mut server_runs: Vec<Vec<f64>> = vec![Vec::new(); PAIRS.len()];
    for run in 0..s.runs {
        for (i, pair) in PAIRS.iter().enumerate() {
            let fresh = lab.fresh(&format!("idle-{run}-{}", pair.key()))?;
            let server_pid = fresh.pid(pair.server);
            let port = free_port()?;
            let spec = format!("127.0.0.1:{port}:127.0.0.1:{}", servers.echo.port());
            let mut cmd = fresh.client(
                pair.client,
                fresh.addr(pair.server),
                cipher,
                &["-L".into(), spec],
            );
            let name = format!("idle-{}", pair.key());
            let proc = Proc::spawn(&name, &mut cmd, &fresh.dir)?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            load::wait_echo(addr, UP_LIMIT).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = (rss_kib(proc.pid())?, tree_rss_kib(server_pid));
            let held = load::hold_idle(addr, s.idle).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = (rss_kib(proc.pid())?, tree_rss_kib(server_pid));
            drop(held);
            let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / s.idle as f64;
            client_runs[i].push(per(before.0, after.0));
            server_runs[i].push(per(before.1, after.1));
        }
    }
    let row = |side: &str, runs: Vec<Vec<f64>>, targets| Row {
        group: "memory",
        case: format!("{side} RSS per idle -L connection ({})", s.idle),
        unit: "KiB",
        better: Better::Lower,
        values: PAIRS
            .iter()
            .copied()
            .zip(runs.into_iter().map(Summary::of))
            .collect(),
        ceiling: String::new(),
        targets,
    };
    let with = |pick: fn(&Pair) -> bool| PAIRS.iter().copied().filter(pick).collect::<Vec<_>>();
    Ok(vec![
        row(
            "client",
            client_runs,
            vec![Target::new(1.0, with(|p| p.client == Client::Burrow))],
        ),
        row(
            "server",
            server_runs,
            vec![Target::new(1.0, with(|p| p.server == Server::Serve))],
        ),
    ])
}
