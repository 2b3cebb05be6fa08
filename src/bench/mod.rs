//! Benchmarks, run from the command line so that anyone can reproduce BENCHMARKS.md.
//!
//! `wenhui bench ledger` posts two-posting entries through the storage trait on each backend,
//! one entry per transaction and 100 per transaction, and on PostgreSQL also runs pgbench TPC-B
//! on the same server, printing the ratio (the baseline measured in the same run).

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use sqlx::Connection;

use crate::domain::ledger::{AccountAddress, AccountSpec, NewEntry};
use crate::domain::money::Fen;
use crate::storage::{self, ConnectOptions, Storage};

pub mod claims;
pub mod finance;
pub mod redemptions;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
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
    /// The claim rush against a live `wenhui serve`, with pgbench TPC-B as the baseline.
    Claims(claims::ClaimsBench),
    /// Redemptions at the till against a live `wenhui serve` on PostgreSQL, with pgbench TPC-B.
    Redemptions(redemptions::RedemptionsBench),
    /// Report and reconcile a generated season of --vouchers and --redemptions on PostgreSQL.
    Finance(finance::FinanceBench),
}

pub async fn run(command: &BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ledger { .. } => ledger(command).await,
        BenchCommand::Claims(args) => claims::run(args).await,
        BenchCommand::Redemptions(args) => redemptions::run(args).await,
        BenchCommand::Finance(args) => finance::run(args).await,
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
    let scratch = ScratchDb::create(admin_url, "wenhui_bench_pgbench").await?;
    let url = scratch.url.clone();
    let output = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let init = Command::new("pgbench")
            .args(["-i", "-s", "10", "-q", &url])
            .output()
            .context("running pgbench -i (is pgbench installed?)")?;
        if !init.status.success() {
            bail!("pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
        }
        let run = Command::new("pgbench")
            .args(["-c", "8", "-j", "2", "-T", "20", "-M", "prepared", &url])
            .output()?;
        if !run.status.success() {
            bail!("pgbench failed: {}", String::from_utf8_lossy(&run.stderr));
        }
        Ok(String::from_utf8_lossy(&run.stdout).into_owned())
    })
    .await??;
    scratch.drop_db().await?;
    parse_pgbench_tps(&output).context("no tps line in pgbench output")
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
        let out = "latency average = 3.9 ms\ntps = 2034.123456 (without initial connection time)\n";
        assert_eq!(super::parse_pgbench_tps(out), Some(2034.123456));
    }
}
