//! `wenhui-bench lottery`: a lottery draw (`POST /v1/batches/{id}/draw`) against a live
//! `wenhui serve`, and what it does to the claims of another batch decided meanwhile.
//!
//! The bench creates a season, a rush batch and a lottery batch whose claim window closes
//! `--window-s` seconds later, writes `--entries` entries with random citizen ids straight into
//! `lottery_entries` (entering over HTTP would measure the entries, not the draw), and registers
//! the citizens who claim from the rush batch. After the window it sends claims of the rush batch
//! at a steady `--claims-per-s`, first alone for `--baseline-s` seconds (the baseline of this
//! run), then while the issuer draws. It prints the draw's time and rate and the claims' latency
//! in both phases, and fails unless the draw issued the whole stock and every claim was granted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chrono::{SecondsFormat, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::claims::{Api, ServerUnderTest, percentile, register_citizens, string_field};

/// The draw's own timeout in the server is 300 s; the bench waits a little longer for its answer.
const DRAW_REQUEST_TIMEOUT: Duration = Duration::from_secs(330);

#[derive(clap::Args, Debug, Clone)]
pub struct LotteryBench {
    /// Administrative PostgreSQL URL (the bench creates and drops its own database there).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub pg_url: String,
    /// The database the server runs on: "postgres" (a scratch database at --pg-url) or "sqlite"
    /// (a file in a temporary directory).
    #[arg(long, value_parser = ["postgres", "sqlite"], default_value = "postgres")]
    pub backend: String,
    /// Entries in the lottery batch (Beijing 2021 drew from about 2,000,000).
    #[arg(long, default_value_t = 500_000)]
    pub entries: u32,
    /// Vouchers drawn, the lottery batch's stock (Beijing 2021: 200,000).
    #[arg(long, default_value_t = 50_000)]
    pub stock: u32,
    /// Claims of the rush batch sent per second, in both phases.
    #[arg(long, default_value_t = 100)]
    pub claims_per_s: u32,
    /// How long the claims run alone before the draw (the baseline).
    #[arg(long, default_value_t = 10)]
    pub baseline_s: u32,
    /// Citizens registered to claim; claims stop early if they run out during the draw.
    #[arg(long, default_value_t = 5_000)]
    pub citizens: u32,
    /// Seconds from the lottery batch's creation to the end of its claim window.
    #[arg(long, default_value_t = 20)]
    pub window_s: u32,
}

impl LotteryBench {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.stock >= 1 && self.entries >= self.stock, "need 1 <= --stock <= --entries");
        ensure!(
            self.claims_per_s >= 1 && self.baseline_s >= 1,
            "--claims-per-s and --baseline-s must be positive"
        );
        let baseline_claims = u64::from(self.claims_per_s) * u64::from(self.baseline_s);
        ensure!(
            u64::from(self.citizens) > baseline_claims,
            "--citizens must exceed the baseline's {baseline_claims} claims, to leave some for the draw"
        );
        ensure!(self.citizens <= super::claims::MAX_CITIZENS, "too many citizens");
        Ok(())
    }
}

/// Runs the benchmark against `exe serve` (the wenhui binary).
pub async fn run(args: &LotteryBench, exe: &Path) -> anyhow::Result<()> {
    args.validate()?;
    println!("machine: {}", super::machine_description());
    if args.backend == "sqlite" {
        let dir = tempfile::tempdir().context("a directory for the SQLite database")?;
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        return serve_and_bench(exe, &url, args).await;
    }
    let scratch = super::ScratchDb::create(&args.pg_url, "wenhui_bench_lottery").await?;
    let outcome = serve_and_bench(exe, &scratch.url, args).await;
    let dropped = scratch.drop_db().await;
    outcome?;
    dropped
}

async fn serve_and_bench(exe: &Path, database_url: &str, args: &LotteryBench) -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    let server = ServerUnderTest::start(exe, database_url, data_dir.path()).await?;
    let outcome = bench(&server, database_url, args).await;
    server.stop().await?;
    outcome
}

async fn bench(server: &ServerUnderTest, database_url: &str, args: &LotteryBench) -> anyhow::Result<()> {
    let staff = server.mint_staff_key().await?;
    let api = Arc::new(Api::new(&server.base_url, 64)?);
    let season = api.create_season(&staff, json!({})).await?;
    let rush_batch = api.create_batch(&staff, &season, args.citizens).await?;
    let seed = format!("bench draw {}", Uuid::new_v4());
    let window_closes = Utc::now() + TimeDelta::seconds(i64::from(args.window_s));
    let lottery = create_lottery_batch(&api, &staff, &season, args.stock, &seed, window_closes).await?;

    let started = Instant::now();
    write_entries(database_url, lottery, args.entries).await?;
    println!("setup: {} entries written in {:.1} s", args.entries, started.elapsed().as_secs_f64());
    let tokens = register_citizens(&api, args.citizens, 32).await?;
    let wait = (window_closes - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1);
    println!(
        "setup: {} citizens registered; waiting {:.1} s for the window to close",
        tokens.len(),
        wait.as_secs_f64()
    );
    tokio::time::sleep(wait).await;

    let claims_url: Arc<str> = format!("{}/v1/batches/{rush_batch}/claims", api.base_url).into();
    let mut claimers = Claimers { api: api.clone(), url: claims_url, tokens, next: 0 };
    let period = Duration::from_secs_f64(1.0 / f64::from(args.claims_per_s));
    let baseline_end = tokio::time::sleep(Duration::from_secs(u64::from(args.baseline_s)));
    let (alone, ()) = claimers.send_until(period, baseline_end).await?;

    let draw_started = Instant::now();
    let (during, drawn) = claimers.send_until(period, draw(&api.base_url, &staff, lottery, &seed)).await?;
    let draw_s = draw_started.elapsed().as_secs_f64();
    let drawn = drawn?;
    report(args, &drawn, draw_s, alone, during)
}

async fn create_lottery_batch(
    api: &Api,
    staff: &str,
    season: &str,
    stock: u32,
    seed: &str,
    closes: chrono::DateTime<Utc>,
) -> anyhow::Result<Uuid> {
    let seed_sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, seed.as_bytes()));
    let opens = Utc::now() - TimeDelta::minutes(1);
    let body = json!({
        "name": "摇号 bench", "issuer": "370000", "kind": "threshold", "face_value": "10.00",
        "min_spend": "40.00", "stock": stock, "per_citizen_limit": 1, "valid_hours": 72,
        "claim_opens_at": opens.to_rfc3339_opts(SecondsFormat::Secs, true),
        "claim_closes_at": closes.to_rfc3339_opts(SecondsFormat::Secs, true),
        "categories": ["bookstore"], "lottery": {"seed_sha256": seed_sha256},
    });
    let created = api.post_created(&format!("/v1/seasons/{season}/batches"), Some(staff), &body).await?;
    Ok(string_field(&created, "id")?.parse()?)
}

/// `entries` entries with random citizen ids, in one statement on the server's own database.
async fn write_entries(database_url: &str, batch: Uuid, entries: u32) -> anyhow::Result<()> {
    match wenhui::storage::Backend::of_url(database_url) {
        Some(wenhui::storage::Backend::Sqlite) => {
            let mut conn = sqlx::SqliteConnection::connect(database_url).await?;
            sqlx::query("PRAGMA busy_timeout = 30000").execute(&mut conn).await?;
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) \
                 INSERT INTO lottery_entries SELECT ?, randomblob(16), 0 FROM n",
            )
            .bind(i64::from(entries))
            .bind(batch)
            .execute(&mut conn)
            .await?;
            sqlx::query("ANALYZE").execute(&mut conn).await?;
        }
        _ => {
            let mut conn = sqlx::PgConnection::connect(database_url).await?;
            sqlx::query(
                "INSERT INTO lottery_entries SELECT $1, gen_random_uuid(), 0 FROM generate_series(1, $2)",
            )
            .bind(batch)
            .bind(i64::from(entries))
            .execute(&mut conn)
            .await?;
            sqlx::query("VACUUM ANALYZE lottery_entries").execute(&mut conn).await?;
        }
    }
    Ok(())
}

/// Sends claims, one citizen each, at a steady rate.
struct Claimers {
    api: Arc<Api>,
    url: Arc<str>,
    tokens: Vec<String>,
    next: usize,
}

/// What the claims of one phase got.
struct Phase {
    /// Latency of each granted claim.
    latencies_us: Vec<u32>,
    /// Answers other than 201, and transport errors.
    refused: usize,
    /// True when the citizens ran out before the phase ended.
    ran_out: bool,
}

impl Claimers {
    /// One claim every `period` until `end` completes; then waits for the claims in flight.
    async fn send_until<F: Future>(
        &mut self,
        period: Duration,
        end: F,
    ) -> anyhow::Result<(Phase, F::Output)> {
        let mut end = std::pin::pin!(end);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut in_flight = JoinSet::new();
        let mut ran_out = false;
        let ended = loop {
            tokio::select! {
                ended = &mut end => break ended,
                _ = ticks.tick() => {
                    let Some(token) = self.tokens.get(self.next).cloned() else {
                        ran_out = true;
                        break end.await;
                    };
                    self.next += 1;
                    let (api, url) = (self.api.clone(), self.url.clone());
                    in_flight.spawn(async move {
                        let sent = Instant::now();
                        let granted = api.claim(&url, &token).await.status == StatusCode::CREATED.as_u16();
                        (granted, u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX))
                    });
                }
            }
        };
        let mut phase = Phase { latencies_us: Vec::new(), refused: 0, ran_out };
        while let Some(done) = in_flight.join_next().await {
            match done.context("a claim task panicked")? {
                (true, latency_us) => phase.latencies_us.push(latency_us),
                (false, _) => phase.refused += 1,
            }
        }
        phase.latencies_us.sort_unstable();
        Ok((phase, ended))
    }
}

/// The draw's answer.
async fn draw(base_url: &str, staff: &str, batch: Uuid, seed: &str) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder().no_proxy().timeout(DRAW_REQUEST_TIMEOUT).build()?;
    let response = client
        .post(format!("{base_url}/v1/batches/{batch}/draw"))
        .bearer_auth(staff)
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .json(&json!({"seed": seed}))
        .send()
        .await
        .context("POST .../draw")?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status == StatusCode::OK, "the draw answered {status}: {text}");
    serde_json::from_str(&text).with_context(|| format!("the draw's answer is not JSON: {text}"))
}

fn report(
    args: &LotteryBench,
    drawn: &Value,
    draw_s: f64,
    alone: Phase,
    during: Phase,
) -> anyhow::Result<()> {
    let issued = drawn.get("issued").and_then(Value::as_u64).context("no issued in the draw's answer")?;
    let entries = drawn.get("entries").and_then(Value::as_u64).context("no entries in the draw's answer")?;
    println!(
        "draw: {entries} entries, {issued} vouchers issued in {draw_s:.2} s ({:.0} issued/s)",
        issued as f64 / draw_s
    );
    let ms =
        |phase: &Phase, p| percentile(&phase.latencies_us, p).map_or(f64::NAN, |us| f64::from(us) / 1000.0);
    for (name, phase) in [("claims alone (baseline)", &alone), ("claims during the draw", &during)] {
        println!(
            "{name}: {} granted, {} refused, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{}",
            phase.latencies_us.len(),
            phase.refused,
            ms(phase, 50),
            ms(phase, 99),
            ms(phase, 100),
            if phase.ran_out { " (citizens ran out before the draw ended)" } else { "" },
        );
    }
    println!("ratio claim p50 during the draw / alone: {:.2}", ms(&during, 50) / ms(&alone, 50));
    println!("ratio claim p99 during the draw / alone: {:.2}", ms(&during, 99) / ms(&alone, 99));
    ensure!(entries == u64::from(args.entries), "the draw saw {entries} entries, not {}", args.entries);
    ensure!(
        issued == u64::from(args.stock),
        "the draw issued {issued} vouchers, not the stock {}",
        args.stock
    );
    ensure!(alone.refused + during.refused == 0, "claims were refused or failed");
    ensure!(!during.latencies_us.is_empty(), "no claim was decided during the draw");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> LotteryBench {
        LotteryBench {
            pg_url: String::new(),
            backend: "postgres".into(),
            entries: 1_000,
            stock: 100,
            claims_per_s: 10,
            baseline_s: 2,
            citizens: 50,
            window_s: 5,
        }
    }

    #[test]
    fn the_shape_of_a_run_is_checked_before_anything_starts() {
        assert!(args().validate().is_ok());
        let mut more_stock_than_entries = args();
        more_stock_than_entries.stock = 1_001;
        assert!(more_stock_than_entries.validate().is_err());
        let mut no_citizens_left_for_the_draw = args();
        no_citizens_left_for_the_draw.citizens = 20;
        assert!(no_citizens_left_for_the_draw.validate().is_err(), "the baseline alone sends 20 claims");
        let mut no_rate = args();
        no_rate.claims_per_s = 0;
        assert!(no_rate.validate().is_err());
    }
}
