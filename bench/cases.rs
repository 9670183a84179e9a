//! The cases run over one established connection per pair: bulk throughput through -L, -R and -D,
//! 64-byte round trips, connections per second, and client memory with idle connections.
//! Pairs are interleaved run by run, so a burst of load from elsewhere hits all of them alike.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::ceiling::Ceilings;
use crate::load::{self, Route, Servers};
use crate::peers::{free_port, Client, Lab, Pair, Server, PAIRS};
use crate::procs::{own_cpu_secs, tree_cpu_secs, Proc};
use crate::report::{percentile, Better, Row, Summary, Target};
use crate::Settings;

/// How long a client may take to bring its forwards up.
const UP_LIMIT: Duration = Duration::from_secs(30);

/// One client connected to its server with every forward the cases use.
pub struct Running {
    /// Which pair.
    pub pair: Pair,
    /// The client process.
    pub proc: Proc,
    /// -L to the sink.
    pub l_sink: SocketAddr,
    /// -L to the source.
    pub l_source: SocketAddr,
    /// -L to the echo server.
    pub l_echo: SocketAddr,
    /// -R (on the server's side) to the sink.
    pub r_sink: SocketAddr,
    /// -D SOCKS port.
    pub socks: SocketAddr,
    /// -L to each of the extra targets [`start_client`] was given, in order.
    pub extra: Vec<SocketAddr>,
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Starts the client of `pair` towards `to` (the server, or a delay line in front of it) with all
/// forwards, and -L to each of `extra` (targets only some cases use), and waits until -L, -R
/// and -D accept.
pub async fn start_client(
    lab: &Lab,
    servers: &Servers,
    pair: Pair,
    to: SocketAddr,
    cipher: &str,
    extra: &[SocketAddr],
) -> Result<Running> {
    let (ls, lo, le, rs, d) = (
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
    );
    let fwd = |p: u16, t: SocketAddr| format!("127.0.0.1:{p}:127.0.0.1:{}", t.port());
    let mut args = vec![
        "-L".to_owned(),
        fwd(ls, servers.sink),
        "-L".into(),
        fwd(lo, servers.source),
        "-L".into(),
        fwd(le, servers.echo),
        "-R".into(),
        fwd(rs, servers.sink),
        "-D".into(),
        format!("127.0.0.1:{d}"),
    ];
    let mut extra_ports = Vec::new();
    for &t in extra {
        let p = free_port()?;
        args.extend(["-L".into(), fwd(p, t)]);
        extra_ports.push(local(p));
    }
    let mut cmd = lab.client(pair.client, to, cipher, &args);
    let name = format!(
        "{}-{}-{}",
        pair.key(),
        cipher.split('@').next().unwrap_or(cipher),
        to.port()
    );
    let mut proc = Proc::spawn(&name, &mut cmd, &lab.dir)?;
    let up = async {
        load::wait_echo(local(le), UP_LIMIT).await?;
        wait_connect(local(rs)).await?;
        wait_connect(local(d)).await
    };
    if let Err(e) = up.await {
        proc.check_alive()?;
        return Err(e.context(format!("{name} forwards not up:\n{}", proc.log_tail())));
    }
    Ok(Running {
        pair,
        proc,
        l_sink: local(ls),
        l_source: local(lo),
        l_echo: local(le),
        r_sink: local(rs),
        socks: local(d),
        extra: extra_ports,
    })
}

/// Waits until `addr` accepts a TCP connection (bounded by [`UP_LIMIT`]).
async fn wait_connect(addr: SocketAddr) -> Result<()> {
    let start = std::time::Instant::now();
    while start.elapsed() < UP_LIMIT {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("{addr} does not accept after {UP_LIMIT:?}")
}

/// Starts the four clients for `cipher`.
pub async fn start_all(lab: &Lab, servers: &Servers, cipher: &str) -> Result<Vec<Running>> {
    let mut out = Vec::new();
    for pair in PAIRS {
        out.push(start_client(lab, servers, pair, lab.addr(pair.server), cipher, &[]).await?);
    }
    Ok(out)
}

/// Runs `measure` `runs` times for each client, pairs interleaved, and summarizes per pair.
pub async fn interleaved<F, Fut>(
    clients: &[Running],
    runs: usize,
    mut measure: F,
) -> Result<Vec<(Pair, Summary)>>
where
    F: FnMut(&Running) -> Fut,
    Fut: std::future::Future<Output = Result<f64>>,
{
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); clients.len()];
    for _ in 0..runs {
        for (i, c) in clients.iter().enumerate() {
            let v = measure(c)
                .await
                .with_context(|| format!("measuring {}", c.pair.label()))?;
            values[i].push(v);
        }
    }
    Ok(clients
        .iter()
        .zip(values)
        .map(|(c, v)| (c.pair, Summary::of(v)))
        .collect())
}

/// The pairs where burrow is on at least one side (every ratio target applies to them).
fn burrow_pairs() -> Vec<Pair> {
    PAIRS[1..].to_vec()
}

/// The pair where burrow is on both ends.
const BURROW_TO_SERVE: Pair = PAIRS[3];

/// Issue 21's moonshot: where burrow owns both ends, one stream at twice ssh→sshd (half of one
/// core's AEAD). Shown beside the row's own target, with its own verdict.
fn moonshot() -> Target {
    Target::new(2.0, vec![BURROW_TO_SERVE]).named("moonshot")
}

/// CPU seconds per GiB of (client, server) during one run, per direction (true: download) and
/// pair.
type CpuLog = Arc<Mutex<Vec<(bool, Pair, f64, f64)>>>;

/// One bulk run, upload to the sink or (`down`) download from the source; with `cpu`, also logs
/// the CPU time the client and the server (sshd's whole process tree, or burrow serve) spent per
/// GiB moved.
async fn bulk_run(
    pair: Pair,
    pids: (u32, u32),
    addr: SocketAddr,
    (streams, down): (usize, bool),
    secs: f64,
    cpu: Option<CpuLog>,
) -> Result<f64> {
    let (client_pid, server_pid) = pids;
    let (c0, s0) = (tree_cpu_secs(client_pid), tree_cpu_secs(server_pid));
    let records = load::bulk_records(Route::Direct(addr), streams, secs, down).await?;
    if let Some(log) = cpu {
        let gib = records.iter().map(|r| r.bytes).sum::<u64>() as f64 / (1u64 << 30) as f64;
        let (c1, s1) = (tree_cpu_secs(client_pid), tree_cpu_secs(server_pid));
        if let Ok(mut log) = log.lock() {
            log.push((down, pair, (c1 - c0) / gib, (s1 - s0) / gib));
        }
    }
    Ok(load::mib_per_s(&records))
}

/// The bulk cases of one cipher: (forward, streams, download). -L and -R uploads send towards
/// the sink (through -R the server's side sends, so the client receives); the -L download is
/// there for the CPU rows of the other direction (the server encrypts, the client decrypts).
const BULK: [(&str, usize, bool); 5] = [
    ("-L", 1, false),
    ("-L", 1, true),
    ("-L", 8, false),
    ("-R", 1, false),
    ("-R", 8, false),
];

/// Bulk transfers through -L and -R, 1 and 8 streams, for one cipher; for -L 1 stream, upload
/// and download, also the CPU cost per GiB on each side.
pub async fn throughput(
    lab: &Lab,
    clients: &[Running],
    s: &Settings,
    cipher: &str,
    ceil: &Ceilings,
) -> Result<Vec<Row>> {
    let short = cipher.split('@').next().unwrap_or(cipher);
    let mut rows = Vec::new();
    let cpu: CpuLog = Arc::default();
    for (fwd, streams, down) in BULK {
        let what = if down { " download" } else { "" };
        let case = format!(
            "{fwd} {streams} stream{}{what} {short}",
            if streams > 1 { "s" } else { "" }
        );
        if !s.wants_case(&case) {
            continue;
        }
        eprintln!("  {fwd} {streams} stream(s){what}, {short}");
        let values = interleaved(clients, s.runs, |c| {
            let addr = match (fwd, down) {
                ("-L", true) => c.l_source,
                ("-L", false) => c.l_sink,
                _ => c.r_sink,
            };
            let log = (fwd == "-L" && streams == 1).then(|| cpu.clone());
            bulk_run(
                c.pair,
                (c.proc.pid(), lab.pid(c.pair.server)),
                addr,
                (streams, down),
                s.secs,
                log,
            )
        })
        .await?;
        let tcp = if streams == 1 { ceil.tcp_1 } else { ceil.tcp_8 };
        let mut targets = vec![Target::new(1.0, burrow_pairs())];
        if streams == 1 {
            targets.push(moonshot());
        }
        rows.push(Row {
            group: "throughput",
            case,
            unit: "MiB/s",
            better: Better::Higher,
            values,
            ceiling: format!("tcp {tcp:.0}, {}", ceil.cipher_text(cipher)),
            targets,
        });
    }
    let log = cpu.lock().map(|l| l.clone()).unwrap_or_default();
    rows.extend(cpu_rows(&log, short, &ceil.cipher_cpu_text(cipher)));
    Ok(rows)
}

/// CPU per GiB, both roles, both directions: upload (the client encrypts, the server decrypts)
/// and download (the server encrypts, the client decrypts). The target (≤ 0.8×) holds burrow
/// to OpenSSH's cost in the same role: client rows judge the pairs with burrow's client, server
/// rows the pairs with burrow serve (the other pairs show what the peer's choices cost it).
fn cpu_rows(log: &[(bool, Pair, f64, f64)], short: &str, ceiling: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for down in [false, true] {
        if !log.iter().any(|e| e.0 == down) {
            continue; // that direction's case was not run (--case)
        }
        let (direction, client_does, server_does) = if down {
            ("download", "received", "sent")
        } else {
            ("upload", "sent", "received")
        };
        for (side, does) in [("client", client_does), ("server", server_does)] {
            let values = PAIRS
                .iter()
                .map(|&p| {
                    let runs = log.iter().filter(|e| e.0 == down && e.1 == p);
                    let runs = runs.map(|e| if side == "client" { e.2 } else { e.3 });
                    (p, Summary::of(runs.collect()))
                })
                .collect();
            let ours = PAIRS.into_iter().filter(|p| {
                if side == "client" {
                    p.client == Client::Burrow
                } else {
                    p.server == Server::Serve
                }
            });
            rows.push(Row {
                group: "cpu",
                case: format!("{side} CPU per GiB {does}, -L 1 stream {direction} {short}"),
                unit: "s/GiB",
                better: Better::Lower,
                values,
                ceiling: ceiling.to_owned(),
                targets: vec![Target::new(0.8, ours.collect())],
            });
        }
    }
    rows
}

/// The latency section's cases, by the name `--case` matches (the round trips' rows add " p50" and
/// " p99").
pub const SOCKS_CASE: &str = "-D 1 stream chacha20-poly1305";
pub const ROUND_TRIP_CASE: &str = "64-byte round trip -L";
pub const CONNECTIONS_CASE: &str = "new connections/s through -L";

/// -D one stream, round-trip latency and connections/s.
pub async fn single_cipher_cases(
    lab: &Lab,
    clients: &[Running],
    servers: &Servers,
    s: &Settings,
    ceil: &Ceilings,
    latency: &mut Vec<(Pair, Vec<f64>)>,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    if s.wants_case(SOCKS_CASE) {
        eprintln!("  -D 1 stream");
        let values = interleaved(clients, s.runs, |c| {
            let route = Route::Socks5 {
                proxy: c.socks,
                target: servers.sink,
            };
            load::bulk(route, 1, s.secs, false)
        })
        .await?;
        rows.push(Row {
            group: "throughput",
            case: SOCKS_CASE.into(),
            unit: "MiB/s",
            better: Better::Higher,
            values,
            ceiling: format!("tcp {:.0}", ceil.tcp_1),
            targets: Vec::new(),
        });
    }
    if s.wants_case(ROUND_TRIP_CASE) {
        rows.extend(round_trip_rows(clients, s, ceil, latency).await?);
    }
    if s.wants_case(CONNECTIONS_CASE) {
        rows.extend(connection_rows(lab, clients, s, ceil).await?);
    }
    Ok(rows)
}

/// Microseconds of CPU per connection of (client, server, this process) during one run.
type ConnCpuLog = Arc<Mutex<Vec<(Pair, [f64; 3])>>>;

/// New connections/s through -L (4 loops of connect, one byte each way, close), and what each
/// connection cost in CPU: the client, the server (sshd's whole process tree, or burrow serve)
/// and the load generator with its echo server (this process). The three together are what two
/// cores have to spend per connection, so they show how far a faster burrow can lift the
/// ratio when the other end, or the generator, costs what it costs.
async fn connection_rows(
    lab: &Lab,
    clients: &[Running],
    s: &Settings,
    ceil: &Ceilings,
) -> Result<Vec<Row>> {
    eprintln!("  connections/s");
    let cpu: ConnCpuLog = Arc::default();
    let values = interleaved(clients, s.runs, |c| {
        let pids = (c.proc.pid(), lab.pid(c.pair.server));
        connections_run(c.pair, pids, c.l_echo, s.secs, cpu.clone())
    })
    .await?;
    let mut rows = vec![Row {
        group: "connections",
        case: CONNECTIONS_CASE.into(),
        unit: "conn/s",
        better: Better::Higher,
        values,
        ceiling: format!("tcp {:.0}", ceil.cps),
        targets: vec![Target::new(1.5, burrow_pairs())],
    }];
    let log = cpu.lock().map(|l| l.clone()).unwrap_or_default();
    let who = ["client", "server", "load generator and echo server"];
    for (i, who) in who.into_iter().enumerate() {
        let values = PAIRS
            .iter()
            .map(|&p| {
                let runs = log.iter().filter(|e| e.0 == p).map(|e| e.1[i]);
                (p, Summary::of(runs.collect()))
            })
            .collect();
        rows.push(Row {
            group: "connections",
            case: format!("{who} CPU per connection through -L"),
            unit: "µs",
            better: Better::Lower,
            values,
            ceiling: String::new(),
            targets: Vec::new(),
        });
    }
    Ok(rows)
}

/// One connections/s run; logs the CPU the client, the server and this process spent per
/// connection.
async fn connections_run(
    pair: Pair,
    (client_pid, server_pid): (u32, u32),
    addr: SocketAddr,
    secs: f64,
    cpu: ConnCpuLog,
) -> Result<f64> {
    let before = [
        tree_cpu_secs(client_pid),
        tree_cpu_secs(server_pid),
        own_cpu_secs(),
    ];
    let made = load::connections(addr, 4, secs, 20_000).await?;
    let after = [
        tree_cpu_secs(client_pid),
        tree_cpu_secs(server_pid),
        own_cpu_secs(),
    ];
    let per_conn = |i: usize| (after[i] - before[i]) * 1e6 / made.count.max(1) as f64;
    if let Ok(mut log) = cpu.lock() {
        log.push((pair, [per_conn(0), per_conn(1), per_conn(2)]));
    }
    Ok(made.per_s())
}

/// p50 and p99 of 64-byte round trips through -L; all samples of every run kept for the chart.
async fn round_trip_rows(
    clients: &[Running],
    s: &Settings,
    ceil: &Ceilings,
    latency: &mut Vec<(Pair, Vec<f64>)>,
) -> Result<Vec<Row>> {
    eprintln!("  round trips");
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut all: Vec<Vec<f64>> = vec![Vec::new(); clients.len()];
    for _ in 0..s.runs {
        for (i, c) in clients.iter().enumerate() {
            let mut v = load::round_trips(Route::Direct(c.l_echo), s.round_trips).await?;
            all[i].extend_from_slice(&v);
            v.sort_by(f64::total_cmp);
            p50.push((i, percentile(&v, 50.0)));
            p99.push((i, percentile(&v, 99.0)));
        }
    }
    let per_pair = |v: &[(usize, f64)]| -> Vec<(Pair, Summary)> {
        clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    c.pair,
                    Summary::of(v.iter().filter(|x| x.0 == i).map(|x| x.1).collect()),
                )
            })
            .collect()
    };
    for (c, v) in clients.iter().zip(all) {
        latency.push((c.pair, v));
    }
    let row = |quantile: &str, values, direct: f64, targets| Row {
        group: "latency",
        case: format!("{ROUND_TRIP_CASE} {quantile}"),
        unit: "µs",
        better: Better::Lower,
        values,
        ceiling: format!("tcp {direct:.0}"),
        targets,
    };
    Ok(vec![
        row("p50", per_pair(&p50), ceil.rtt_p50, Vec::new()),
        row(
            "p99",
            per_pair(&p99),
            ceil.rtt_p99,
            vec![Target::new(1.0, burrow_pairs())],
        ),
    ])
}
