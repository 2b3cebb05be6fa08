//! `wenhui-bench reads`: the rush's reads (issue 26) against a live `wenhui serve` on PostgreSQL.
//!
//! It starts the server on a scratch database, creates a season and a batch, registers
//! `--citizens` citizens who each claim one voucher, then measures, one after the other:
//! - wrk (`src/wrk.rs`) on the public batch list, on the main port then on the polls port
//!   (`--polls-listen`): `--connections` keep-alive connections sending GETs back to back for
//!   `--seconds` (no `If-None-Match`: every answer is a 200 with the body, the worst case);
//! - the same on `GET /v1/me/vouchers`, the citizens in turn;
//! - pgbench select-only (`-S -c 8 -j 2 -M prepared`, scale 10) on the same server, the baseline;
//! - claim rushes of `--rush-citizens`, each on a fresh batch: alone, then with the batch-list
//!   load beside it on the main port, on the polls port, and on the polls port with wrk under
//!   `SCHED_IDLE` (standing in for phones on other machines, whose load takes none of the
//!   node's CPU but what serving it costs), then alone again; the baseline is the mean of the
//!   two alone. The polls port's threads run on every core, or on the last `--polls-cores`.
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
use crate::floor::{CopiedAnswer, FloorServer};
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
    #[arg(long, default_value_t = 10_000)]
    pub rush_citizens: u32,
    /// Concurrent connections of the claim rush.
    #[arg(long, default_value_t = 200)]
    pub rush_clients: usize,
    /// Skip pgbench (no ratio is printed).
    #[arg(long)]
    pub no_pgbench: bool,
    /// The server's `--polls-cores`: its polls port's threads on the last this many cores (0,
    /// the server's default: every core).
    #[arg(long, default_value_t = 0)]
    pub polls_cores: u16,
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
    let chrt = std::process::Command::new("chrt").arg("--version").output().is_ok();
    ensure!(chrt, "chrt is not installed (util-linux): the rush beside wrk under SCHED_IDLE needs it");
    println!("machine: {}", machine_description());
    match args.polls_cores {
        0 => println!("the polls port's threads on every core"),
        cores => println!("the polls port's threads on the last {cores} core(s) (--polls-cores)"),
    }
    let started = Instant::now();
    let scratch = ScratchDb::create(&args.pg_url, "wenhui_bench_reads").await?;
    let data_dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let outcome = async {
        let (server, polls_url) =
            ServerUnderTest::start_with_polls_port(exe, &scratch.url, data_dir.path(), args.polls_cores)
                .await?;
        let measured = measure(args, &server, &polls_url).await;
        let stopped = server.stop().await;
        let figures = measured?;
        stopped?;
        anyhow::Ok(figures)
    }
    .await;
    let dropped = scratch.drop_db().await;
    let Measured { batches, floor, polls_batches, vouchers, alone, beside } = outcome?;
    dropped?;
    let pgbench =
        if args.no_pgbench { None } else { Some(pgbench_select_only(&args.pg_url, args.seconds).await?) };
    if let Some(tps) = pgbench {
        println!("pgbench select-only (-S -s 10 -c 8 -j 2 -T {} -M prepared): {tps:.0} tps", args.seconds);
        println!("ratio batch list answers/s / pgbench select-only tps: {:.2}", batches.per_s() / tps);
        println!(
            "ratio the floor (a bare axum server, the same bytes) answers/s / pgbench select-only tps: {:.2}",
            floor.per_s() / tps
        );
        println!(
            "ratio batch list on the polls port answers/s / pgbench select-only tps: {:.2}",
            polls_batches.per_s() / tps
        );
        println!("ratio /v1/me/vouchers answers/s / pgbench select-only tps: {:.2}", vouchers.per_s() / tps);
    }
    for (label, claims_per_s, _) in beside {
        println!(
            "claim rush with the batch-list load beside it {label}: {:.2}x the claims/s alone ({claims_per_s:.0} vs {:.0}, the mean of the first and last)",
            claims_per_s / alone.0,
            alone.0
        );
    }
    println!("the whole run took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The loads and rushes against the running server; each rush as (claims/s, p99 ms).
struct Measured {
    /// The batch list, on the main port and on the polls port.
    batches: Load,
    /// The same answer from a bare axum server (`floor.rs`).
    floor: Load,
    polls_batches: Load,
    vouchers: Load,
    alone: (f64, f64),
    /// Beside the batch-list load: where it went and how wrk ran, claims/s, p99 ms.
    beside: Vec<(&'static str, f64, f64)>,
}

async fn measure(args: &ReadsBench, server: &ServerUnderTest, polls_url: &str) -> anyhow::Result<Measured> {
    let staff_key = server.mint_staff_key().await?;
    let api = Arc::new(Api::new(&server.base_url, args.connections.max(args.rush_clients))?);
    let season_id = api.create_season(&staff_key, serde_json::json!({})).await?;
    let batch_id = api.create_batch(&staff_key, &season_id, args.citizens).await?;
    let setup = Instant::now();
    let clients = args.rush_clients.min(64);
    let tokens = register_citizens(&api, args.citizens + 5 * args.rush_citizens, clients).await?;
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
        idle_priority: false,
    };
    let polls_list_url = format!("{polls_url}/v1/seasons/{season_id}/batches");
    let on_polls = WrkLoad { url: &polls_list_url, ..list_load };
    let list_label = |port: &str| {
        format!("GET /v1/seasons/{{id}}/batches on the {port} ({} connections)", args.connections)
    };
    let batches = measure_load(server, list_load, &list_label("main port")).await?;
    let floor = measure_floor(&list_url, list_load).await?;
    let polls_batches = measure_load(server, on_polls, &list_label("polls port")).await?;
    let vouchers_url = format!("{}/v1/me/vouchers", api.base_url);
    let vouchers_load = WrkLoad { url: &vouchers_url, bearer_tokens: Some(readers), ..list_load };
    let label =
        format!("GET /v1/me/vouchers ({} connections, {} citizens in turn)", args.connections, args.citizens);
    let vouchers = measure_load(server, vouchers_load, &label).await?;

    // The rushes alone come first and last (the last runs faster, on a warmer database): the
    // baseline is their mean.
    let rushers: Vec<&[String]> = rushers.chunks(args.rush_citizens as usize).collect();
    let first_alone = timed_rush(args, &api, &staff_key, &season_id, rushers[0], None).await?;
    println!("claim rush alone, first: {:.0} claims/s, p99 {:.1} ms", first_alone.0, first_alone.1);
    let idle_generator = WrkLoad { idle_priority: true, ..on_polls };
    let mut beside = Vec::new();
    for (index, (label, load)) in [
        ("on the main port", list_load),
        ("on the polls port", on_polls),
        ("on the polls port, wrk under SCHED_IDLE", idle_generator),
    ]
    .into_iter()
    .enumerate()
    {
        let (claims_per_s, p99) =
            timed_rush(args, &api, &staff_key, &season_id, rushers[index + 1], Some(load)).await?;
        println!(
            "claim rush beside the batch-list load {label}: {claims_per_s:.0} claims/s, p99 {p99:.1} ms"
        );
        beside.push((label, claims_per_s, p99));
    }
    let last_alone = timed_rush(args, &api, &staff_key, &season_id, rushers[4], None).await?;
    println!("claim rush alone, last: {:.0} claims/s, p99 {:.1} ms", last_alone.0, last_alone.1);
    let alone = ((first_alone.0 + last_alone.0) / 2.0, first_alone.1.max(last_alone.1));
    Ok(Measured { batches, floor, polls_batches, vouchers, alone, beside })
}

/// One read load run to its end, printed with the CPU it cost per answer.
async fn measure_load(server: &ServerUnderTest, load: WrkLoad<'_>, label: &str) -> anyhow::Result<Load> {
    let cpu = CpuMeter::start_watching(server.pid());
    let figures = Load::from(load.run().await?);
    figures.print(label);
    print_cpu_per_answer(cpu.and_then(|m| m.finish()), &figures);
    Ok(figures)
}

/// The batch-list load on a bare axum server that answers with the service's bytes
/// (`floor.rs`): the most any axum service could answer here, wrk on the same cores.
async fn measure_floor(list_url: &str, load: WrkLoad<'_>) -> anyhow::Result<Load> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let answer = CopiedAnswer::fetch(&client, list_url).await?;
    let body_bytes = answer.body_len();
    let floor = FloorServer::start(answer)?;
    let url = format!("http://{}{}", floor.addr, reqwest::Url::parse(list_url)?.path());
    let figures = Load::from(WrkLoad { url: &url, ..load }.run().await?);
    drop(floor);
    figures.print(&format!(
        "the floor: the batch list's answer ({body_bytes} bytes of body) from a bare axum server ({} connections)",
        load.connections
    ));
    Ok(figures)
}

/// A claim rush of `citizens` on a fresh batch, with `reads` running beside it if given:
/// (claims/s, p99 ms).
async fn timed_rush(
    args: &ReadsBench,
    api: &Arc<Api>,
    staff_key: &str,
    season_id: &str,
    citizens: &[String],
    reads: Option<WrkLoad<'_>>,
) -> anyhow::Result<(f64, f64)> {
    let rush_batch = api.create_batch(staff_key, season_id, args.rush_citizens).await?;
    let url = format!("{}/v1/batches/{rush_batch}/claims", api.base_url);
    let scratch = tempfile::tempdir().context("a directory for wrk")?;
    let mut reading = match reads {
        Some(reads) => {
            let background = WrkLoad { length: Duration::from_secs(args.seconds * 10), ..reads };
            let child = background.spawn(scratch.path())?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(child)
        }
        None => None,
    };
    let started = Instant::now();
    let (ok, p99) = rush(api, &url, citizens, args.rush_clients).await;
    let beside = (ok as f64 / started.elapsed().as_secs_f64(), p99);
    if let Some(reading) = reading.as_mut() {
        reading.kill().await.context("stopping wrk")?;
    }
    ensure!(ok == citizens.len(), "only {ok} of {} claims beside the reads succeeded", citizens.len());
    Ok(beside)
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
