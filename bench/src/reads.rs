//! `wenhui-bench reads`: the rush's reads (issue 26) against a live `wenhui serve` on PostgreSQL.
//!
//! It starts the server on a scratch database, creates a season and a batch, registers
//! `--citizens` citizens who each claim one voucher, then measures, one after the other:
//! - wrk (`src/wrk.rs`) on the public batch list: `--connections` keep-alive connections
//!   sending GETs back to back for `--seconds` (no `If-None-Match`: every answer is a 200 with
//!   the body, the worst case for the server);
//! - the same on `GET /v1/me/vouchers`, the citizens in turn;
//! - pgbench select-only (`-S -c 8 -j 2 -M prepared`, scale 10) on the same server, the baseline;
//! - a claim rush of `--rush-citizens` on a fresh batch, alone, then on another fresh batch while
//!   the batch-list load runs beside it.
//!
//! It prints one line per figure and the ratios the issue asks for.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::task::JoinSet;

use crate::claims::{Api, ServerUnderTest, percentile, register_citizens};
use crate::wrk::{WrkFigures, WrkLoad};
use crate::{CpuMeter, CpuUse, ScratchDb, machine_description, parse_pgbench_tps};

#[derive(clap::Args, Debug, Clone)]
pub struct ReadsBench {
    /// Administrative PostgreSQL URL (the bench creates/drops its own databases there).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub pg_url: String,
    /// Concurrent connections of each read load.
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// Seconds each read load (and pgbench) runs.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Citizens registered, each with one voucher (the `/v1/me/vouchers` load reads them in turn).
    #[arg(long, default_value_t = 1_000)]
    pub citizens: u32,
    /// Citizens in each claim rush (their own, registered apart), and the batch's stock.
    #[arg(long, default_value_t = 5_000)]
    pub rush_citizens: u32,
    /// Concurrent connections of the claim rush.
    #[arg(long, default_value_t = 200)]
    pub rush_clients: usize,
    /// Skip pgbench (no ratio is printed).
    #[arg(long)]
    pub no_pgbench: bool,
}

/// One read load's figures.
struct Load {
    answers: usize,
    errors: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl From<WrkFigures> for Load {
    fn from(f: WrkFigures) -> Load {
        Load { answers: f.answers, errors: f.errors, seconds: f.seconds, p50_ms: f.p50_ms, p99_ms: f.p99_ms }
    }
}

impl Load {
    fn per_s(&self) -> f64 {
        self.answers as f64 / self.seconds
    }

    fn print(&self, label: &str) {
        println!(
            "{label}: {:.0} answers/s, p50 {:.1} ms, p99 {:.1} ms, {} errors ({} answers in {:.1} s)",
            self.per_s(),
            self.p50_ms,
            self.p99_ms,
            self.errors,
            self.answers,
            self.seconds
        );
    }
}

pub async fn run(args: &ReadsBench, exe: &Path) -> anyhow::Result<()> {
    ensure!(args.connections >= 1 && args.rush_clients >= 1, "connections and rush clients are at least 1");
    ensure!(args.citizens >= 1 && args.rush_citizens >= 1, "citizens are at least 1");
    crate::wrk::check_installed()?;
    println!("machine: {}", machine_description());
    let started = Instant::now();
    let scratch = ScratchDb::create(&args.pg_url, "wenhui_bench_reads").await?;
    let data_dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let outcome = async {
        let server = ServerUnderTest::start(exe, &scratch.url, data_dir.path()).await?;
        let measured = measure(args, &server).await;
        let stopped = server.stop().await;
        let figures = measured?;
        stopped?;
        anyhow::Ok(figures)
    }
    .await;
    let dropped = scratch.drop_db().await;
    let (batches, vouchers, alone, beside) = outcome?;
    dropped?;
    let pgbench =
        if args.no_pgbench { None } else { Some(pgbench_select_only(&args.pg_url, args.seconds).await?) };
    if let Some(tps) = pgbench {
        println!("pgbench select-only (-S -s 10 -c 8 -j 2 -T {} -M prepared): {tps:.0} tps", args.seconds);
        println!("ratio batch list answers/s / pgbench select-only tps: {:.2}", batches.per_s() / tps);
        println!("ratio /v1/me/vouchers answers/s / pgbench select-only tps: {:.2}", vouchers.per_s() / tps);
    }
    println!(
        "claim rush with the batch-list load beside it: {:.2}x the claims/s alone ({:.0} vs {:.0})",
        beside.0 / alone.0,
        beside.0,
        alone.0
    );
    println!("the whole run took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The loads and rushes against the running server: (batch list, my vouchers, rush alone as
/// (claims/s, p99 ms), rush beside the batch-list load).
async fn measure(
    args: &ReadsBench,
    server: &ServerUnderTest,
) -> anyhow::Result<(Load, Load, (f64, f64), (f64, f64))> {
    let staff_key = server.mint_staff_key().await?;
    let api = Arc::new(Api::new(&server.base_url, args.connections.max(args.rush_clients))?);
    let season_id = api.create_season(&staff_key, serde_json::json!({})).await?;
    let batch_id = api.create_batch(&staff_key, &season_id, args.citizens).await?;
    let setup = Instant::now();
    let clients = args.rush_clients.min(64);
    let tokens = register_citizens(&api, args.citizens + 2 * args.rush_citizens, clients).await?;
    let (readers, rushers) = tokens.split_at(args.citizens as usize);
    let claim_url = format!("{}/v1/batches/{batch_id}/claims", api.base_url);
    let (claimed, _) = rush(&api, &claim_url, readers, clients).await;
    ensure!(claimed == readers.len(), "only {claimed} of {} citizens got their voucher", readers.len());
    println!(
        "setup (season, {} citizens, their vouchers): {:.0} s",
        tokens.len(),
        setup.elapsed().as_secs_f64()
    );

    let list_url = format!("{}/v1/seasons/{season_id}/batches", api.base_url);
    let list_load = WrkLoad {
        url: &list_url,
        connections: args.connections,
        length: Duration::from_secs(args.seconds),
        bearer_tokens: None,
    };
    let cpu = CpuMeter::start_watching(server.pid());
    let batches = Load::from(list_load.run().await?);
    batches.print(&format!("GET /v1/seasons/{{id}}/batches ({} connections)", args.connections));
    print_cpu_per_answer(cpu.and_then(|m| m.finish()), &batches);
    let vouchers_url = format!("{}/v1/me/vouchers", api.base_url);
    let vouchers_load = WrkLoad { url: &vouchers_url, bearer_tokens: Some(readers), ..list_load };
    let cpu = CpuMeter::start_watching(server.pid());
    let vouchers = Load::from(vouchers_load.run().await?);
    vouchers.print(&format!(
        "GET /v1/me/vouchers ({} connections, {} citizens in turn)",
        args.connections, args.citizens
    ));
    print_cpu_per_answer(cpu.and_then(|m| m.finish()), &vouchers);

    let (first, second) = rushers.split_at(args.rush_citizens as usize);
    let rush_batch = api.create_batch(&staff_key, &season_id, args.rush_citizens).await?;
    let url = format!("{}/v1/batches/{rush_batch}/claims", api.base_url);
    let started = Instant::now();
    let (ok, p99) = rush(&api, &url, first, args.rush_clients).await;
    let alone = (ok as f64 / started.elapsed().as_secs_f64(), p99);
    println!("claim rush alone: {} claims, {:.0} claims/s, p99 {:.1} ms", ok, alone.0, alone.1);

    let rush_batch = api.create_batch(&staff_key, &season_id, args.rush_citizens).await?;
    let url = format!("{}/v1/batches/{rush_batch}/claims", api.base_url);
    let scratch = tempfile::tempdir().context("a directory for wrk")?;
    let background = WrkLoad { length: Duration::from_secs(args.seconds * 10), ..list_load };
    let mut reading = background.spawn(scratch.path())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (ok, p99) = rush(&api, &url, second, args.rush_clients).await;
    let beside = (ok as f64 / started.elapsed().as_secs_f64(), p99);
    reading.kill().await.context("stopping wrk")?;
    println!(
        "claim rush beside the batch-list load: {} claims, {:.0} claims/s, p99 {:.1} ms",
        ok, beside.0, beside.1
    );
    Ok((batches, vouchers, alone, beside))
}

/// Every token claims once from `clients` tasks: (201 answers, p99 latency in ms).
async fn rush(api: &Arc<Api>, url: &str, tokens: &[String], clients: usize) -> (usize, f64) {
    let tokens: Arc<Vec<String>> = Arc::new(tokens.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let url: Arc<str> = url.into();
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (api, url, tokens, next) = (api.clone(), url.clone(), tokens.clone(), next.clone());
        tasks.spawn(async move {
            let (mut ok, mut latencies) = (0, Vec::new());
            while let Some(token) = tokens.get(next.fetch_add(1, Ordering::Relaxed)) {
                let sent = Instant::now();
                if api.claim(&url, token).await.status == 201 {
                    ok += 1;
                }
                latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            (ok, latencies)
        });
    }
    let (mut ok, mut latencies) = (0, Vec::new());
    while let Some(Ok((n, mut l))) = tasks.join_next().await {
        ok += n;
        latencies.append(&mut l);
    }
    latencies.sort_unstable();
    (ok, percentile(&latencies, 99).map_or(0.0, |us| f64::from(us) / 1000.0))
}

/// Where a load's CPU went, per answer: what bounds it on a machine the load generator, the
/// server and PostgreSQL share.
fn print_cpu_per_answer(cpu: Option<CpuUse>, load: &Load) {
    let (Some(cpu), true) = (cpu, load.answers > 0) else { return };
    let per = |s: f64| s * 1e6 / load.answers as f64;
    println!(
        "  CPU per answer: server {:.0} µs, load generator {:.0} µs, PostgreSQL and the rest {:.0} µs \
         ({:.2} cores busy)",
        per(cpu.watched_s.unwrap_or(0.0)),
        per(cpu.this_process_s + cpu.waited_children_s),
        per(cpu.rest_s()),
        cpu.machine_s / load.seconds.max(1e-9),
    );
}

/// pgbench select-only on a scratch database of scale 10: its tps.
async fn pgbench_select_only(admin_url: &str, seconds: u64) -> anyhow::Result<f64> {
    let scratch = ScratchDb::create(admin_url, "wenhui_bench_pgbench_select").await?;
    let url = scratch.url.clone();
    let output = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        crate::pgbench_init(&url)?;
        let length = seconds.to_string();
        let run = Command::new("pgbench")
            .args(["-S", "-c", "8", "-j", "2", "-T", &length, "-M", "prepared", &url])
            .output()?;
        if !run.status.success() {
            bail!("pgbench -S failed: {}", String::from_utf8_lossy(&run.stderr));
        }
        Ok(String::from_utf8_lossy(&run.stdout).into_owned())
    })
    .await?;
    let dropped = scratch.drop_db().await;
    let tps = parse_pgbench_tps(&output?).context("no tps line in pgbench output")?;
    dropped?;
    Ok(tps)
}
