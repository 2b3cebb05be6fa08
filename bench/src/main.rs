//! `wenhui-bench`: Wenhui's benchmarks, run from the command line so that anyone can reproduce
//! BENCHMARKS.md. They use the library's public API (`wenhui::...`) and, for the server under
//! test, the `wenhui` binary over HTTP.
//!
//! `wenhui-bench ledger` posts two-posting entries through the storage trait on each backend,
//! one entry per transaction and 100 per transaction, and on PostgreSQL also runs pgbench TPC-B
//! on the same server, printing the ratio (the baseline measured in the same run).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark prints its results and its errors"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use sqlx::Connection;
use wenhui::domain::ledger::{AccountAddress, AccountSpec, NewEntry};
use wenhui::domain::money::Fen;
use wenhui::storage::{self, ConnectOptions, Storage};

mod claims;
mod finance;
mod fleet;
mod flood;
mod flood_wrk;
mod floor;
mod lottery;
mod qr;
mod reads;
mod redemptions;
mod scoring;
mod writer_metrics;
mod wrk;

#[derive(Parser, Debug)]
#[command(name = "wenhui-bench", version, about = "Wenhui's benchmarks (see BENCHMARKS.md)")]
struct Cli {
    /// The `wenhui` binary that the claims, redemptions, finance and lottery benchmarks run as
    /// the server (or command) under test; default: `wenhui` beside this executable (the same
    /// target directory).
    #[arg(long, global = true)]
    wenhui: Option<PathBuf>,
    #[command(subcommand)]
    command: BenchCommand,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    wenhui::telemetry::init(wenhui::telemetry::LogFormat::Text);
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The `wenhui` binary to run: `--wenhui`, else the sibling of this executable.
fn wenhui_exe(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let exe = match flag {
        Some(path) => path.to_owned(),
        None => {
            let own = std::env::current_exe().context("locating the wenhui-bench executable")?;
            own.with_file_name(format!("wenhui{}", std::env::consts::EXE_SUFFIX))
        }
    };
    if !exe.is_file() {
        bail!(
            "no wenhui binary at {} (build it with `cargo build --release -p wenhui`, or pass --wenhui PATH)",
            exe.display()
        );
    }
    Ok(exe)
}

#[derive(clap::Subcommand, Debug)]
enum BenchCommand {
    /// Ledger append throughput, single and batched, with pgbench TPC-B as the baseline.
    Ledger {
        /// Administrative PostgreSQL URL; the bench creates and drops its own databases there.
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        pg_url: String,
        /// Entries posted one per transaction.
        #[arg(long, default_value_t = 4_000)]
        single_entries: usize,
        /// Entries posted 100 per transaction.
        #[arg(long, default_value_t = 100_000)]
        batched_entries: usize,
        /// Concurrent posting tasks (pgbench uses 8 clients).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Runs to take the median of.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, value_parser = ["both", "postgres", "sqlite"], default_value = "both")]
        backend: String,
        /// Skip pgbench (no ratio is printed).
        #[arg(long)]
        no_pgbench: bool,
    },
    /// The claim rush against a live `wenhui serve` (or several on one PostgreSQL database),
    /// with pgbench TPC-B as the baseline.
    Claims(claims::ClaimsBench),
    /// A flood of claims far beyond the stock from thousands of connections: exact stock, no
    /// error, p99 of every answer, sold-out answers per second once sold out.
    Flood(flood::FloodBench),
    /// Redemptions at the till against a live `wenhui serve` on PostgreSQL, with pgbench TPC-B.
    Redemptions(redemptions::RedemptionsBench),
    /// Report and reconcile a generated season of --vouchers and --redemptions on PostgreSQL.
    Finance(finance::FinanceBench),
    /// A lottery draw against a live `wenhui serve`, with claims of another batch decided
    /// meanwhile; their latency without a draw, in the same run, is the baseline.
    Lottery(lottery::LotteryBench),
    /// Drawing a token as an SVG QR code, against the qrcode crate's own path as the baseline.
    Qr(qr::QrBench),
    /// The rush's reads (batch list, my vouchers) with pgbench select-only as the baseline, and
    /// a claim rush alone and beside them.
    Reads(reads::ReadsBench),
    /// Cash-out scoring of a generated season of 100,000 and 1,000,000 redemptions on each
    /// backend: wall time and peak RSS.
    Scoring(scoring::ScoringBench),
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    let wenhui = || wenhui_exe(cli.wenhui.as_deref());
    match &cli.command {
        command @ BenchCommand::Ledger { .. } => ledger(command).await,
        BenchCommand::Claims(args) => claims::run(args, &wenhui()?).await,
        BenchCommand::Flood(args) => flood::run(args, &wenhui()?).await,
        BenchCommand::Redemptions(args) => redemptions::run(args, &wenhui()?).await,
        BenchCommand::Finance(args) => finance::run(args, &wenhui()?).await,
        BenchCommand::Lottery(args) => lottery::run(args, &wenhui()?).await,
        BenchCommand::Qr(args) => qr::run(args),
        BenchCommand::Reads(args) => reads::run(args, &wenhui()?).await,
        BenchCommand::Scoring(args) => scoring::run(args).await,
    }
}

async fn ledger(command: &BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Ledger {
        pg_url,
        single_entries,
        batched_entries,
        concurrency,
        runs,
        backend,
        no_pgbench,
    } = command
    else {
        anyhow::bail!("not a ledger benchmark");
    };
    let shape =
        Shape { single: *single_entries, batched: *batched_entries, concurrency: (*concurrency).max(1) };
    let runs = (*runs).max(1);
    println!("machine: {}", machine_description());
    if backend != "postgres" {
        let (single, batched) = median_runs(runs, || async {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            let store = storage::connect(&url, ConnectOptions::default()).await?;
            store.migrate().await?;
            ledger_rates(store, shape).await
        })
        .await?;
        println!("sqlite   ledger: {single:>9.0} entries/s one per tx, {batched:>9.0} entries/s 100 per tx");
    }
    if backend != "sqlite" {
        let scratch = ScratchDb::create(pg_url, "wenhui_bench_ledger").await?;
        let (single, batched) = median_runs(runs, || async {
            scratch.recreate().await?;
            let store = storage::connect(&scratch.url, ConnectOptions::default()).await?;
            store.migrate().await?;
            ledger_rates(store, shape).await
        })
        .await?;
        println!("postgres ledger: {single:>9.0} entries/s one per tx, {batched:>9.0} entries/s 100 per tx");
        if !no_pgbench {
            let tps = pgbench_tps(pg_url).await?;
            println!("pgbench TPC-B (-s 10 -c 8 -j 2 -T 20 -M prepared): {tps:.0} tps");
            println!("ratio batched ledger entries/s / pgbench tps: {:.2}", batched / tps);
            println!("ratio single  ledger entries/s / pgbench tps: {:.2}", single / tps);
        }
        scratch.drop_db().await?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Shape {
    single: usize,
    batched: usize,
    concurrency: usize,
}

async fn median_runs<F, Fut>(runs: usize, mut once: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(f64, f64)>>,
{
    let (mut singles, mut batches) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (single, batched) = once().await?;
        singles.push(single);
        batches.push(batched);
    }
    Ok((median(&mut singles), median(&mut batches)))
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn bench_entry(task: usize, n: usize) -> NewEntry {
    let source = AccountSpec::debit_unlimited(AccountAddress::from_segments(&["bench", "source"]));
    let dest_name = format!("d{}", n % 50);
    let dest = AccountSpec::credit_limited(AccountAddress::from_segments(&["bench", "dest", &dest_name]));
    NewEntry::transfer(
        "bench_transfer",
        format!("bench:{task}:{n}"),
        source,
        dest,
        Fen::from_fen_unchecked(1),
    )
}

/// Posts entries from `concurrency` tasks; returns entries/s for one-per-tx and 100-per-tx.
async fn ledger_rates(store: Arc<dyn Storage>, shape: Shape) -> anyhow::Result<(f64, f64)> {
    let single = post_concurrently(store.clone(), shape.single, 1, shape.concurrency, 0).await?;
    let batched = post_concurrently(store, shape.batched, 100, shape.concurrency, 1_000_000).await?;
    Ok((single, batched))
}

async fn post_concurrently(
    store: Arc<dyn Storage>,
    total: usize,
    batch: usize,
    concurrency: usize,
    offset: usize,
) -> anyhow::Result<f64> {
    let per_task = total.div_ceil(concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while n < per_task {
                let size = batch.min(per_task - n);
                let entries: Vec<NewEntry> = (n..n + size).map(|i| bench_entry(task, offset + i)).collect();
                store.post_entries(&entries).await?;
                n += size;
            }
            anyhow::Ok(per_task)
        }));
    }
    let mut posted = 0;
    for task in tasks {
        posted += task.await??;
    }
    Ok(posted as f64 / started.elapsed().as_secs_f64())
}

/// A database of our own on the PostgreSQL server, dropped at the end.
pub struct ScratchDb {
    admin_url: String,
    name: String,
    pub url: String,
}

impl ScratchDb {
    pub async fn create(admin_url: &str, name: &str) -> anyhow::Result<ScratchDb> {
        let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin_url);
        let scratch = ScratchDb {
            admin_url: admin_url.to_owned(),
            name: name.to_owned(),
            url: format!("{base}/{name}"),
        };
        scratch.recreate().await?;
        Ok(scratch)
    }

    pub async fn recreate(&self) -> anyhow::Result<()> {
        self.drop_db().await?;
        self.admin(&format!("CREATE DATABASE {}", self.name)).await
    }

    pub async fn drop_db(&self) -> anyhow::Result<()> {
        self.admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await
    }

    async fn admin(&self, sql: &str) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .with_context(|| format!("connecting to {}", storage::redact_url(&self.admin_url)))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await?;
        Ok(())
    }
}

/// pgbench TPC-B on the same server: `-i -s 10`, then `-c 8 -j 2 -T 20 -M prepared`.
pub async fn pgbench_tps(admin_url: &str) -> anyhow::Result<f64> {
    Ok(pgbench_run(admin_url).await?.tps)
}

/// One pgbench TPC-B run: its rate, and the machine's CPU time per transaction while it ran
/// (pgbench itself included, as the load generator is in our own runs).
pub struct PgbenchRun {
    pub tps: f64,
    pub cpu_us_per_transaction: Option<f64>,
    /// The part of `cpu_us_per_transaction` outside pgbench itself: PostgreSQL (and whatever
    /// else the machine ran), comparable with the database part of our own operations.
    pub database_cpu_us_per_transaction: Option<f64>,
}

/// `pgbench -i` at scale 10 on the scratch database `url` (blocking: call it off the runtime).
pub fn pgbench_init(url: &str) -> anyhow::Result<()> {
    let init = Command::new("pgbench")
        .args(["-i", "-s", "10", "-q", url])
        .output()
        .context("running pgbench -i (is pgbench installed?)")?;
    if !init.status.success() {
        bail!("pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
    }
    Ok(())
}

pub async fn pgbench_run(admin_url: &str) -> anyhow::Result<PgbenchRun> {
    let scratch = ScratchDb::create(admin_url, "wenhui_bench_pgbench").await?;
    let url = scratch.url.clone();
    let output = tokio::task::spawn_blocking(move || -> anyhow::Result<(String, Option<CpuUse>)> {
        pgbench_init(&url)?;
        let cpu = CpuMeter::start();
        let run = Command::new("pgbench")
            .args(["-c", "8", "-j", "2", "-T", "20", "-M", "prepared", &url])
            .output()?;
        let used = cpu.and_then(|c| c.finish());
        if !run.status.success() {
            bail!("pgbench failed: {}", String::from_utf8_lossy(&run.stderr));
        }
        Ok((String::from_utf8_lossy(&run.stdout).into_owned(), used))
    })
    .await??;
    scratch.drop_db().await?;
    let (output, used) = output;
    let tps = parse_pgbench_tps(&output).context("no tps line in pgbench output")?;
    let transactions = parse_pgbench_transactions(&output).map(|n| n as f64).unwrap_or(tps * 20.0);
    let per_transaction = |s: f64| s * 1e6 / transactions;
    Ok(PgbenchRun {
        tps,
        cpu_us_per_transaction: used.map(|u| per_transaction(u.machine_s)),
        // pgbench is a waited-for child of this process; this process itself is idle meanwhile.
        database_cpu_us_per_transaction: used
            .map(|u| per_transaction(u.machine_s - u.waited_children_s - u.this_process_s)),
    })
}

fn parse_pgbench_transactions(output: &str) -> Option<u64> {
    output
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("number of transactions actually processed: "))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
}

/// The whole machine's busy CPU time between `start` and `busy_core_seconds`, from the first
/// line of `/proc/stat` (Linux; `None` elsewhere). Every process counts: the server, the
/// database and the load generator share the cores, so this is what one operation costs the box.
/// Also splits it by process: this process (the load generator), its waited-for children
/// (pgbench), and one watched process (the server under test), from `/proc/<pid>/stat`.
#[derive(Clone, Copy)]
pub struct CpuMeter {
    started: Instant,
    busy: u64,
    total: u64,
    this_process: ProcessTicks,
    watched: Option<(u32, ProcessTicks)>,
}

/// Where a run's CPU went, in core-seconds.
#[derive(Clone, Copy, Debug)]
pub struct CpuUse {
    /// Every process on the machine.
    pub machine_s: f64,
    /// This process's own threads (the load generator).
    pub this_process_s: f64,
    /// Children of this process that exited and were waited for during the run (pgbench).
    pub waited_children_s: f64,
    /// The watched process (the server under test), if one was given and could be read.
    pub watched_s: Option<f64>,
}

impl CpuUse {
    /// The rest of the machine: PostgreSQL's processes, and anything else that ran.
    pub fn rest_s(&self) -> f64 {
        self.machine_s - self.this_process_s - self.waited_children_s - self.watched_s.unwrap_or(0.0)
    }
}

impl CpuMeter {
    pub fn start() -> Option<CpuMeter> {
        CpuMeter::start_watching(None)
    }

    /// As `start`, and also measures the process `watched_pid` (it must still run at `finish`).
    pub fn start_watching(watched_pid: Option<u32>) -> Option<CpuMeter> {
        let (busy, total) = proc_stat_jiffies()?;
        let this_process = ProcessTicks::read("self")?;
        let watched = watched_pid.and_then(|pid| Some((pid, ProcessTicks::read(&pid.to_string())?)));
        Some(CpuMeter { started: Instant::now(), busy, total, this_process, watched })
    }

    /// Where the CPU went since `start`.
    pub fn finish(&self) -> Option<CpuUse> {
        let machine_s = self.busy_core_seconds()?;
        let now = ProcessTicks::read("self")?;
        let watched_s = self.watched.and_then(|(pid, then)| {
            let now = ProcessTicks::read(&pid.to_string())?;
            Some(ticks_s(now.own - then.own))
        });
        Some(CpuUse {
            machine_s,
            this_process_s: ticks_s(now.own - self.this_process.own),
            waited_children_s: ticks_s(now.waited_children - self.this_process.waited_children),
            watched_s,
        })
    }

    /// Busy core-seconds since `start`: the busy share of all jiffies, times cores, times seconds.
    pub fn busy_core_seconds(&self) -> Option<f64> {
        let (busy, total) = proc_stat_jiffies()?;
        let cores = std::thread::available_parallelism().ok()?.get() as f64;
        let share = (busy - self.busy) as f64 / (total - self.total).max(1) as f64;
        Some(share * cores * self.started.elapsed().as_secs_f64())
    }
}

/// A process's CPU ticks from `/proc/<pid>/stat`: its own (utime + stime) and its waited-for
/// children's (cutime + cstime).
#[derive(Clone, Copy)]
struct ProcessTicks {
    own: u64,
    waited_children: u64,
}

impl ProcessTicks {
    fn read(pid: &str) -> Option<ProcessTicks> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_process_ticks(&stat)
    }
}

/// Fields 14 to 17 of `/proc/<pid>/stat` (utime, stime, cutime, cstime), counted after the
/// command name, which is in parentheses and may itself hold spaces or parentheses.
fn parse_process_ticks(stat: &str) -> Option<ProcessTicks> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<u64> =
        after_name.split_whitespace().skip(11).take(4).filter_map(|f| f.parse().ok()).collect();
    let [utime, stime, cutime, cstime] = fields[..] else { return None };
    Some(ProcessTicks { own: utime + stime, waited_children: cutime + cstime })
}

/// `/proc` reports process times in USER_HZ ticks, 100 per second on every Linux platform we run.
fn ticks_s(ticks: u64) -> f64 {
    ticks as f64 / 100.0
}

/// (busy, total) jiffies of all CPUs; idle and iowait are not busy.
fn proc_stat_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

/// Median microseconds of one Ed25519 signature and one verification with ring, as the
/// service and the tills use it, on this machine, now.
pub fn ed25519_costs_us() -> (f64, f64) {
    use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
    let rng = ring::rand::SystemRandom::new();
    let Ok(pkcs8) = Ed25519KeyPair::generate_pkcs8(&rng) else { return (f64::NAN, f64::NAN) };
    let Ok(pair) = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()) else { return (f64::NAN, f64::NAN) };
    let public = UnparsedPublicKey::new(&ED25519, pair.public_key().as_ref().to_vec());
    let message = [7u8; 160];
    let signature = pair.sign(&message);
    let median = |mut runs: Vec<f64>| {
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    let rounds = 5;
    let per_round = 400;
    let mut sign_us = Vec::new();
    let mut verify_us = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        for _ in 0..per_round {
            std::hint::black_box(pair.sign(std::hint::black_box(&message)));
        }
        sign_us.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(per_round));
        let started = Instant::now();
        for _ in 0..per_round {
            let checked = public.verify(std::hint::black_box(&message), signature.as_ref());
            std::hint::black_box(checked.is_ok());
        }
        verify_us.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(per_round));
    }
    (median(sign_us), median(verify_us))
}

pub fn parse_pgbench_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find(|l| l.trim_start().starts_with("tps = "))
        .and_then(|l| l.trim_start().trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cpu}, {cores} cores")
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_pgbench_output() {
        let out = "number of transactions actually processed: 40682\n\
                   latency average = 3.9 ms\ntps = 2034.123456 (without initial connection time)\n";
        assert_eq!(super::parse_pgbench_tps(out), Some(2034.123456));
        assert_eq!(super::parse_pgbench_transactions(out), Some(40_682));
    }

    #[test]
    fn parses_process_ticks_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 100 0 0 0                     731 129 55 6 20 0 3 0 100 1000 10 18446744073709551615";
        let ticks = super::parse_process_ticks(stat).expect("parsed");
        assert_eq!((ticks.own, ticks.waited_children), (731 + 129, 55 + 6));
        assert!(super::parse_process_ticks("4242 (short) S 1 2").is_none());
    }
}
