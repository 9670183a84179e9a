//! burrow vs OpenSSH on this machine, side by side in one run (issue 7). Run it with `bench/run`,
//! which builds release burrow and this driver, installs what is missing and passes its
//! arguments here.
//!
//! Four pairs — ssh→sshd, burrow ssh→sshd, ssh→burrow serve, burrow ssh→burrow serve — all on
//! loopback, each case several runs with pairs interleaved; the table (stdout),
//! bench/results/latest.json and latest.svg give medians, spread, ratios to ssh→sshd, ceilings
//! and the issue's targets.

mod cases;
mod ceiling;
#[path = "../tests/common/delay.rs"]
mod delay;
mod lfp;
mod load;
mod peers;
mod procs;
mod rekey;
mod report;
mod sessions;
mod svg;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;

/// The ciphers compared (same on both sides of every comparison).
const CIPHERS: [&str; 2] = ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"];

/// How much to measure; every loop is bounded by these.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Runs per case and pair (the median is reported).
    pub runs: usize,
    /// Seconds of one bulk transfer.
    pub secs: f64,
    /// Seconds of one transfer through the delay line.
    pub lfp_secs: f64,
    /// Timed round trips per run.
    pub round_trips: usize,
    /// Idle connections held for the idle memory case (client and server).
    pub idle: usize,
    /// -R sessions for the relay memory case.
    pub sessions: usize,
    /// MiB each way through the rekeying sshd.
    pub rekey_mib: u64,
    /// Sections to run (all when empty): throughput, latency, rekey, lfp, start, memory.
    pub only: Vec<String>,
    /// Cases of the throughput and latency sections to run: those whose name contains every
    /// part given ("-R 1 stream", "aes128"), to re-run one row for an A/B without the rest (all
    /// when empty). A bulk case's CPU rows come with it; other sections ignore this.
    pub cases: Vec<String>,
    /// The burrow binary.
    pub burrow: PathBuf,
    /// Where latest.json and latest.svg go.
    pub out: PathBuf,
    /// Environment variables (NAME=VALUE) for every sshd the bench starts, and for nothing
    /// else: to test whether a slow row is sshd's own (its allocator, say) without changing
    /// burrow's processes too. The bench's tables compare a stock sshd: leave it empty there.
    pub sshd_env: Vec<(String, String)>,
    /// Keep the lab directory (keys, configs, every peer's log) instead of deleting it; with
    /// `BURROW_LOG` set, the burrow peers log there at that level, to see why a run was slow.
    pub keep_lab: bool,
}

impl Settings {
    fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }

    /// Whether the case named `case` is to run (every `--case` part must be in its name).
    pub fn wants_case(&self, case: &str) -> bool {
        self.cases.iter().all(|part| case.contains(part.as_str()))
    }
}

fn parse_args() -> Result<Settings> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut s = Settings {
        runs: 3,
        secs: 1.2,
        lfp_secs: 4.0,
        round_trips: 1000,
        idle: 1000,
        sessions: 200,
        rekey_mib: 1024,
        only: Vec::new(),
        cases: Vec::new(),
        burrow: root.join("target/release/burrow"),
        out: root.join("bench/results"),
        keep_lab: false,
        sshd_env: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => {
                (s.runs, s.secs, s.lfp_secs) = (2, 0.7, 2.5);
                (s.round_trips, s.idle, s.sessions) = (300, 200, 40);
                s.rekey_mib = 128;
            }
            "--runs" => s.runs = value()?.parse().context("--runs")?,
            "--secs" => s.secs = value()?.parse().context("--secs")?,
            "--lfp-secs" => s.lfp_secs = value()?.parse().context("--lfp-secs")?,
            "--rekey-mib" => s.rekey_mib = value()?.parse().context("--rekey-mib")?,
            "--only" => s.only = value()?.split(',').map(str::to_owned).collect(),
            "--case" => s.cases.push(value()?),
            "--burrow" => s.burrow = value()?.into(),
            "--out" => s.out = value()?.into(),
            "--keep-lab" => s.keep_lab = true,
            "--sshd-env" => s.sshd_env.push(name_value(&value()?)?),
            "-h" | "--help" => {
                println!("bench [--quick] [--runs N] [--secs S] [--lfp-secs S] [--rekey-mib MIB] [--only throughput,latency,rekey,lfp,start,memory] [--case NAME-PART]... [--burrow BIN] [--out DIR] [--keep-lab] [--sshd-env NAME=VALUE]...");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    s.runs = s.runs.clamp(1, 20);
    s.secs = s.secs.clamp(0.2, 30.0);
    s.lfp_secs = s.lfp_secs.clamp(0.5, 60.0);
    s.rekey_mib = s.rekey_mib.clamp(64, 4096);
    Ok(s)
}

/// `NAME=VALUE` of `--sshd-env`.
fn name_value(arg: &str) -> Result<(String, String)> {
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => bail!("--sshd-env wants NAME=VALUE, not {arg:?}"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let s = parse_args()?;
    // Interrupted (Ctrl-C, `timeout`, a dropped terminal), the run is dropped rather than the
    // process killed, so the sshd, relay and clients it started are ended by their `Proc`'s
    // Drop, not left behind. The handlers are installed before the run starts; a signal that
    // arrives while the run is in blocking start-up code is acted on when that returns.
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::select! {
        biased;
        _ = int.recv() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
        _ = hup.recv() => bail!("hung up"),
        r = run(s) => r,
    }
}

async fn run(s: Settings) -> Result<()> {
    if !s.burrow.exists() {
        bail!(
            "{} not found: build it first (bench/run does)",
            s.burrow.display()
        );
    }
    let started = std::time::Instant::now();
    let load_before = loadavg();
    let tmp = tempfile::Builder::new().prefix("burrow-bench-").tempdir()?;
    let lab = peers::Lab::start(tmp.path(), &s.burrow, &s.sshd_env)?;
    let servers = load::Servers::start().await?;
    eprintln!("ceilings (loopback TCP, openssl speed)");
    let ceil = ceiling::measure(&servers, &CIPHERS, s.runs, s.secs).await?;
    let mut rows = Vec::new();
    let mut latency = Vec::new();
    let mut errors = Vec::new();
    for (i, cipher) in CIPHERS.iter().enumerate() {
        let first = i == 0;
        if !(s.wants("throughput") || first && s.wants("latency")) {
            continue;
        }
        eprintln!(
            "[{:>4.0} s] clients with {cipher}",
            started.elapsed().as_secs_f64()
        );
        let clients = match cases::start_all(&lab, &servers, cipher).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("clients with {cipher}: {e:#}"));
                continue;
            }
        };
        if s.wants("throughput") {
            keep(
                &mut rows,
                &mut errors,
                "throughput",
                cases::throughput(&lab, &clients, &s, cipher, &ceil).await,
            );
        }
        if first && s.wants("latency") {
            let r =
                cases::single_cipher_cases(&lab, &clients, &servers, &s, &ceil, &mut latency).await;
            keep(&mut rows, &mut errors, "latency", r);
        }
    }
    if s.wants("rekey") {
        eprintln!("[{:>4.0} s] rekeying", started.elapsed().as_secs_f64());
        let r = rekey::rekey(&lab, &servers, &s, &CIPHERS).await;
        keep(&mut rows, &mut errors, "rekey", r);
    }
    if s.wants("lfp") {
        for delay_ms in [50, 25] {
            eprintln!("[{:>4.0} s] long fat pipe", started.elapsed().as_secs_f64());
            let r = lfp::long_fat_pipe(&lab, &servers, &s, CIPHERS[0], delay_ms).await;
            keep(&mut rows, &mut errors, "long fat pipe", r);
        }
    }
    if s.wants("start") {
        eprintln!("[{:>4.0} s] start", started.elapsed().as_secs_f64());
        let r = sessions::ready_time(&lab, &servers, &s, CIPHERS[0]).await;
        keep(&mut rows, &mut errors, "ready time", r.map(|r| vec![r]));
    }
    if s.wants("memory") {
        eprintln!("[{:>4.0} s] memory", started.elapsed().as_secs_f64());
        let r = sessions::idle_memory(&lab, &servers, &s, CIPHERS[0]).await;
        keep(&mut rows, &mut errors, "idle memory", r);
        let r = sessions::relay_memory(&lab, &servers, &s, CIPHERS[0]).await;
        keep(&mut rows, &mut errors, "relay memory", r);
    }
    if rows.is_empty() && !s.cases.is_empty() {
        // Before anything is written: an empty table must not replace the last results.
        bail!(
            "no case matched --case {:?} (names: \"-L 1 stream download aes128-gcm\", {:?}, \
             {:?}, {:?})",
            s.cases,
            cases::SOCKS_CASE,
            cases::ROUND_TRIP_CASE,
            cases::CONNECTIONS_CASE
        );
    }
    let table = report::table(&rows);
    println!("{table}");
    for e in &errors {
        println!("FAILED: {e}");
    }
    let meta = json!({
        "command": "bench/run", "settings": format!("{s:?}"), "seconds": started.elapsed().as_secs_f64(),
        "loadavg_before": load_before, "loadavg_after": loadavg(), "machine": machine(),
        "ceilings": format!("{ceil:?}"), "errors": errors,
    });
    let doc = report::json(&rows, meta, &latency);
    report::save(
        &s.out.join("latest.json"),
        &serde_json::to_string_pretty(&doc)?,
    )?;
    report::save(&s.out.join("latest.md"), &table)?;
    let title = format!("burrow vs OpenSSH — {}", machine());
    report::save(
        &s.out.join("latest.svg"),
        &svg::render(&rows, &latency, &title),
    )?;
    eprintln!(
        "wrote {}/latest.{{json,md,svg}} in {:.0} s",
        s.out.display(),
        started.elapsed().as_secs_f64()
    );
    if s.keep_lab {
        eprintln!("kept the lab in {}", tmp.keep().display());
    }
    if !errors.is_empty() {
        bail!("{} section(s) failed", errors.len());
    }
    Ok(())
}

/// Keeps a section's rows, or its error for the report: one failed section does not lose the
/// others' figures.
fn keep(
    rows: &mut Vec<report::Row>,
    errors: &mut Vec<String>,
    what: &str,
    r: Result<Vec<report::Row>>,
) {
    match r {
        Ok(r) => rows.extend(r),
        Err(e) => {
            eprintln!("{what} failed: {e:#}");
            errors.push(format!("{what}: {e:#}"));
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// CPU model, cores, kernel and OpenSSH version, one line.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|m| m.trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let run = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .map(|o| {
                String::from_utf8_lossy(if o.stdout.is_empty() {
                    &o.stderr
                } else {
                    &o.stdout
                })
                .trim()
                .to_owned()
            })
            .unwrap_or_default()
    };
    format!(
        "{cpu}, {cores} cores, Linux {}, {}",
        run("uname", "-r"),
        run("ssh", "-V")
    )
}
