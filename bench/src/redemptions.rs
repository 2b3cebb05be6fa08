//! `wenhui-bench redemptions`: redemptions at the till against a live `wenhui serve` on
//! PostgreSQL, from many terminals over pre-claimed vouchers, with pgbench TPC-B as the
//! baseline measured in the same run. With `--backend sqlite` the server runs on an SQLite file,
//! and the same run on PostgreSQL is the baseline.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::json;
use tokio::task::JoinSet;
use uuid::Uuid;
use wenhui_merchant_sdk::client::{ClientOptions, RedeemRequest, TillClient, TillKey, register_terminal};
use wenhui_merchant_sdk::journal::Journal;

use super::claims::{Api, ServerUnderTest, percentile, string_field};

#[derive(clap::Args, Debug, Clone)]
pub struct RedemptionsBench {
    /// Administrative PostgreSQL URL (the bench creates and drops its own database there).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub pg_url: String,
    /// Vouchers claimed beforehand and then redeemed.
    #[arg(long, default_value_t = 20_000)]
    pub vouchers: u32,
    /// Terminals redeeming at once (each one concurrent client).
    #[arg(long, default_value_t = 50)]
    pub terminals: usize,
    #[arg(long)]
    pub no_pgbench: bool,
    /// The database the server runs on: "postgres" (a scratch database at --pg-url), or "sqlite"
    /// (a file in a temporary directory), followed by the same run on PostgreSQL as the baseline
    /// (pgbench is not run then).
    #[arg(long, value_parser = ["postgres", "sqlite"], default_value = "postgres")]
    pub backend: String,
    /// Sets the season's per-merchant redemption limit (each citizen holds one voucher, so it
    /// never refuses): measures what counting a citizen's redemptions at the merchant costs.
    #[arg(long)]
    pub merchant_redemption_limit: Option<u32>,
}

/// Runs the benchmark against `exe serve` (the wenhui binary).
pub async fn run(args: &RedemptionsBench, exe: &Path) -> anyhow::Result<()> {
    println!("machine: {}", super::machine_description());
    if args.backend == "sqlite" {
        return run_sqlite(args, exe).await;
    }
    let scratch = super::ScratchDb::create(&args.pg_url, "wenhui_bench_redemptions").await?;
    let (rate, cpu_per_redemption) = serve_and_bench(exe, &scratch.url, args).await?;
    let (sign_us, verify_us) = super::ed25519_costs_us();
    println!("ed25519 (ring) on this machine: sign {sign_us:.1} µs, verify {verify_us:.1} µs");
    if !args.no_pgbench {
        let pgbench = super::pgbench_run(&args.pg_url).await?;
        let tps = pgbench.tps;
        println!("pgbench TPC-B (-s 10 -c 8 -j 2 -T 20 -M prepared): {tps:.0} tps");
        println!("ratio redemptions/s / pgbench tps: {:.2}", rate / tps);
        if let (Some(ours), Some(theirs)) = (cpu_per_redemption, pgbench.cpu_us_per_transaction) {
            println!(
                "machine CPU per operation: redemption {:.0} µs, TPC-B transaction {theirs:.0} µs (ratio {:.2})",
                ours.machine_us,
                ours.machine_us / theirs
            );
        }
        if let (Some(ours), Some(theirs)) = (cpu_per_redemption, pgbench.database_cpu_us_per_transaction) {
            println!(
                "PostgreSQL (and the rest of the machine) per operation: redemption {:.0} µs, TPC-B transaction {theirs:.0} µs (ratio {:.2})",
                ours.database_us,
                ours.database_us / theirs
            );
        }
        // What the target rate would cost in signatures alone: the service verifies the request
        // and the QR token, the till signs the request.
        let target = 2.0 * tps;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        println!(
            "at the target ({target:.0}/s) two verifications and one signature per redemption need {:.2} of {cores} cores",
            target * (2.0 * verify_us + sign_us) / 1e6
        );
    }
    scratch.drop_db().await
}

/// The embedded default: the bench on an SQLite file, then on PostgreSQL as the baseline.
async fn run_sqlite(args: &RedemptionsBench, exe: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("a directory for the SQLite database")?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    println!("SQLite ({url}):");
    let (sqlite_rate, _) = serve_and_bench(exe, &url, args).await?;
    println!("PostgreSQL, the baseline of this run:");
    let scratch = super::ScratchDb::create(&args.pg_url, "wenhui_bench_redemptions").await?;
    let outcome = serve_and_bench(exe, &scratch.url, args).await;
    scratch.drop_db().await?;
    let (postgres_rate, _) = outcome?;
    println!("ratio SQLite / PostgreSQL redemptions/s: {:.2}", sqlite_rate / postgres_rate);
    Ok(())
}

/// Starts `wenhui serve` on `database_url`, runs the bench against it, and stops it.
async fn serve_and_bench(
    exe: &Path,
    database_url: &str,
    args: &RedemptionsBench,
) -> anyhow::Result<(f64, Option<CpuPerRedemption>)> {
    let data_dir = tempfile::tempdir()?;
    let server = ServerUnderTest::start(exe, database_url, data_dir.path()).await?;
    let in_server = wenhui::storage::Backend::of_url(database_url) == Some(wenhui::storage::Backend::Sqlite);
    let outcome = bench(&server, args, in_server).await;
    server.stop().await?;
    outcome
}

/// What one redemption cost in CPU, split by process (microseconds of core time).
#[derive(Clone, Copy)]
struct CpuPerRedemption {
    machine_us: f64,
    database_us: f64,
}

/// Sets up a season, a merchant, terminals and claimed vouchers; then redeems them all.
/// `database_in_server`: SQLite runs inside the server, so "the rest" of the machine's CPU is
/// no database.
async fn bench(
    server: &ServerUnderTest,
    args: &RedemptionsBench,
    database_in_server: bool,
) -> anyhow::Result<(f64, Option<CpuPerRedemption>)> {
    let staff = server.mint_staff_key().await?;
    let api = Arc::new(Api::new(&server.base_url, args.terminals)?);
    let rules = match args.merchant_redemption_limit {
        Some(limit) => json!({"merchant_redemption_limit": limit}),
        None => json!({}),
    };
    let season = api.create_season(&staff, rules).await?;
    let batch = api.create_batch(&staff, &season, args.vouchers).await?;
    let merchant = create_merchant(&api, &staff).await?;
    let tills = register_tills(&server.base_url, &staff, merchant, args.terminals).await?;
    let started = Instant::now();
    let holders = claim_vouchers(&api, &batch, args.vouchers, args.terminals).await?;
    println!("setup: {} vouchers claimed in {:.1} s", holders.len(), started.elapsed().as_secs_f64());
    let tokens = issue_qr(&api, holders, args.terminals).await?;
    println!("redeeming: {} QR codes from {} terminals", tokens.len(), args.terminals);
    let cpu = super::CpuMeter::start_watching(server.pid());
    let (latencies_us, failures, elapsed_s) = redeem_all(tills, tokens).await;
    let used = cpu.and_then(|c| c.finish());
    let redeemed = latencies_us.len().max(1) as f64;
    let rest =
        if database_in_server { "the rest (SQLite is in the server)" } else { "PostgreSQL and the rest" };
    let per_redemption = used.map(|u| print_cpu_use(&u, elapsed_s, redeemed, rest));
    let rate = report(latencies_us, failures, elapsed_s)?;
    Ok((rate, per_redemption))
}

/// Prints how busy the machine was and what one redemption cost each process.
fn print_cpu_use(used: &super::CpuUse, elapsed_s: f64, redeemed: f64, rest: &str) -> CpuPerRedemption {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let us = |s: f64| s * 1e6 / redeemed;
    println!("machine CPU while redeeming: {:.0}% busy", 100.0 * used.machine_s / (cores * elapsed_s));
    println!(
        "CPU per redemption: server {:.0} µs, load generator (tills) {:.0} µs, {rest} {:.0} µs",
        used.watched_s.map(us).unwrap_or(f64::NAN),
        us(used.this_process_s),
        us(used.rest_s()),
    );
    CpuPerRedemption { machine_us: us(used.machine_s), database_us: us(used.rest_s()) }
}

async fn create_merchant(api: &Api, staff: &str) -> anyhow::Result<Uuid> {
    let first17 = "91370200MA3BENCH0";
    let check = wenhui::domain::merchant::credit_check_char(first17.as_bytes()).context("credit code")?;
    let body = json!({"name": "bench bookstore", "credit_code": format!("{first17}{check}"), "category": "bookstore",
        "city": "370200", "settlement_account": {"bank": "bank", "account_no": "62220000111122223", "account_name": "bench"}});
    let created = api.post_created("/v1/merchants", Some(staff), &body).await?;
    Ok(string_field(&created, "id")?.parse()?)
}

async fn register_tills(
    base: &str,
    staff: &str,
    merchant: Uuid,
    count: usize,
) -> anyhow::Result<Vec<Arc<TillClient>>> {
    let mut tills = Vec::with_capacity(count);
    let options =
        ClientOptions { timeout: Duration::from_secs(30), max_attempts: 1, ..ClientOptions::default() };
    for n in 0..count {
        let key = TillKey::generate()?;
        let registration =
            register_terminal(base, staff, merchant, &key, &format!("till-{n}"), options).await?;
        tills.push(Arc::new(TillClient::new(
            base,
            registration.terminal_id,
            key,
            Journal::disabled(),
            options,
        )?));
    }
    Ok(tills)
}

/// Registers citizens and claims one voucher each: (citizen token, voucher id).
async fn claim_vouchers(
    api: &Arc<Api>,
    batch: &str,
    count: u32,
    clients: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..clients {
        let (api, next, batch) = (api.clone(), next.clone(), batch.to_owned());
        set.spawn(async move {
            let mut held = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count as usize {
                    return anyhow::Ok(held);
                }
                let token = api.register_citizen(n as u32).await?;
                let claimed = api
                    .post_created(&format!("/v1/batches/{batch}/claims"), Some(&token), &json!({}))
                    .await?;
                let voucher = claimed["voucher"]["id"].as_str().context("voucher id")?.to_owned();
                held.push((token, voucher));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(done) = set.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

async fn issue_qr(
    api: &Arc<Api>,
    holders: Vec<(String, String)>,
    clients: usize,
) -> anyhow::Result<Vec<String>> {
    let holders = Arc::new(holders);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..clients {
        let (api, next, holders) = (api.clone(), next.clone(), holders.clone());
        set.spawn(async move {
            let mut tokens = Vec::new();
            while let Some((citizen, voucher)) = holders.get(next.fetch_add(1, Ordering::Relaxed)) {
                let url = format!("{}/v1/vouchers/{voucher}/qr", api.base_url);
                let answer: serde_json::Value =
                    api.client.post(url).bearer_auth(citizen).send().await?.json().await?;
                tokens.push(answer["token"].as_str().context("qr token")?.to_owned());
            }
            anyhow::Ok(tokens)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = set.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// Every terminal redeems from the shared queue of tokens at once.
async fn redeem_all(tills: Vec<Arc<TillClient>>, tokens: Vec<String>) -> (Vec<u32>, usize, f64) {
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for till in tills {
        let (tokens, next) = (tokens.clone(), next.clone());
        set.spawn(async move {
            let (mut latencies_us, mut failures) = (Vec::new(), 0);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(qr) = tokens.get(n) else { return (latencies_us, failures) };
                let request = RedeemRequest {
                    qr: qr.clone(),
                    order_amount: "100.00".into(),
                    order_ref: format!("order-{n}"),
                    idempotency_key: None,
                };
                let sent = Instant::now();
                match till.redeem(request).await {
                    Ok(_) => latencies_us.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX)),
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(code = %error.code(), "redemption refused");
                    }
                }
            }
        });
    }
    let (mut latencies_us, mut failures) = (Vec::new(), 0);
    while let Some(Ok((mine, failed))) = set.join_next().await {
        latencies_us.extend(mine);
        failures += failed;
    }
    (latencies_us, failures, started.elapsed().as_secs_f64())
}

fn report(mut latencies_us: Vec<u32>, failures: usize, elapsed_s: f64) -> anyhow::Result<f64> {
    latencies_us.sort_unstable();
    let rate = latencies_us.len() as f64 / elapsed_s;
    let ms = |p| percentile(&latencies_us, p).map(|us| f64::from(us) / 1000.0).unwrap_or(0.0);
    println!("redemptions: {} in {elapsed_s:.2} s, {failures} refused", latencies_us.len());
    println!("redemptions/s: {rate:.0}");
    println!("latency p50: {:.1} ms", ms(50));
    println!("latency p99: {:.1} ms", ms(99));
    ensure!(failures == 0, "{failures} redemptions were refused");
    Ok(rate)
}
