//! `wenhui-bench finance`: report and reconcile a whole season (issue #5's benchmark).
//!
//! It creates a scratch PostgreSQL database (or, with `--backend sqlite`, a SQLite file in a
//! temporary directory), migrates it and generates a season through the service's own storage
//! methods and entry builders: the season and its two funders' budgets (`create_season`), four
//! batches (`create_batch`, threshold and percent, one co-funded 70/30), merchants in five cities
//! and every category with a terminal each, then the season's life in big groups: claims
//! (`commit_claims`), redemptions (`commit_redemptions`), reversals (`commit_reversal`), expiries
//! while the batches are open (`commit_expiries`), re-issued claims of the stock the expiries gave
//! back, the batches' closing (`close_batch_reserve`), expiries after closing, a settlement and its
//! payout (`finance::settle`, `commit_payout`). Every ledger entry comes from the function the
//! service uses (`domain::entries::claim_entry`, `domain::entries::redemption_entry`, ...), so reconciliation must
//! find no break.
//!
//! Left out, because neither the report nor reconciliation reads them: citizen rows (vouchers
//! carry a citizen id; no foreign key) and the claims' stored idempotency answers.
//!
//! Then it runs `wenhui reconcile --season ID` and `wenhui report --season ID` (JSON and xlsx) as
//! child processes `--runs` times each, under `/usr/bin/time` for the peak RSS of each child,
//! and prints the medians.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::json;
use sqlx::Connection;
use uuid::Uuid;
use wenhui::domain::ids::{CitizenId, RedemptionId, SettlementId, TerminalId, VoucherId};

use crate::{ScratchDb, machine_description, median};
use wenhui::domain::entries::{
    AfterReversal, budget_entry, claim_entry, expiry_entry, funder_parts, redemption_entry, reserve_entry,
    reversal_entry,
};
use wenhui::domain::finance::{SettlementChunking, funder_parts_json};
use wenhui::domain::funding::{FundingShares, VoucherTerms};
use wenhui::domain::merchant::{CreditCode, Merchant, MerchantStatus, SettlementAccount, credit_check_char};
use wenhui::domain::money::Fen;
use wenhui::domain::region::{RegionCode, RegionLevel};
use wenhui::domain::season::{Batch, Category, Season, Voucher, VoucherStatus, order_slot};
use wenhui::domain::time::Timestamp;
use wenhui::storage::{
    self, ClaimCommit, ConnectOptions, ExpiryCommit, IdemRecord, NewRedemption, NewReversal, Storage,
    TerminalRecord,
};

const PROVINCE: &str = "370000";
/// The city that co-funds (Qingdao).
const CITY: &str = "370200";
/// Cities the merchants are in.
const CITIES: [&str; 5] = ["370100", "370200", "370300", "370600", "370700"];
const DAY_S: i64 = 86_400;
/// Vouchers (claims, expiries) and redemptions committed per transaction.
const CLAIM_GROUP: usize = 5_000;
const REDEEM_GROUP: usize = 2_000;

#[derive(clap::Args, Debug, Clone)]
pub struct FinanceBench {
    /// The database the season is generated in: "postgres" (a scratch database at --pg-url) or
    /// "sqlite" (a file in a temporary directory).
    #[arg(long, value_parser = ["postgres", "sqlite"], default_value = "postgres")]
    pub backend: String,
    /// Administrative PostgreSQL URL (the bench creates its own database there).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub pg_url: String,
    /// Vouchers claimed in the season (2% of them re-issued from stock that expiries gave back).
    #[arg(long, default_value_t = 100_000)]
    pub vouchers: usize,
    /// Redemptions (1% of them reversed).
    #[arg(long, default_value_t = 50_000)]
    pub redemptions: usize,
    #[arg(long, default_value_t = 2_000)]
    pub merchants: usize,
    /// Runs of each measured command; the median is printed.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Keep the database afterwards (to re-measure it with --reuse).
    #[arg(long)]
    pub keep: bool,
    /// The scratch database's name.
    #[arg(long, default_value = "wenhui_bench_finance")]
    pub db_name: String,
    /// Measure a season generated before (with --keep) in --db-name instead of generating one.
    #[arg(long)]
    pub reuse: Option<Uuid>,
    /// Redemption rows per settlement transaction at most (the service's default unless given;
    /// a large number settles in one transaction, as before chunking).
    #[arg(long)]
    pub settlement_chunk_rows: Option<i64>,
    /// Merchants per settlement transaction at most (the service's default unless given).
    #[arg(long)]
    pub settlement_chunk_merchants: Option<usize>,
}

/// Runs the benchmark; `exe` is the wenhui binary whose `reconcile` and `report` are measured.
pub async fn run(args: &FinanceBench, exe: &Path) -> anyhow::Result<()> {
    println!("machine: {}", machine_description());
    if args.backend == "sqlite" {
        return run_sqlite(exe, args).await;
    }
    let base = args.pg_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&args.pg_url);
    let (scratch, url, season_id) = match args.reuse {
        Some(season) => (None, format!("{base}/{}", args.db_name), season),
        None => {
            let scratch = ScratchDb::create(&args.pg_url, &args.db_name).await?;
            let url = scratch.url.clone();
            let season = generate_in(&url, args).await?;
            (Some(scratch), url, season)
        }
    };
    let outcome = measure(exe, &url, season_id, args.runs.max(1)).await;
    if let Some(scratch) = scratch {
        if args.keep {
            println!("kept database {} (re-measure with --reuse {season_id})", args.db_name);
        } else {
            scratch.drop_db().await?;
        }
    }
    outcome
}

/// The SQLite run: a file in a temporary directory, or `<db-name>.db` in the working directory
/// with `--keep` (and `--reuse`, to measure it again).
async fn run_sqlite(exe: &Path, args: &FinanceBench) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("a directory for the SQLite database")?;
    let kept = args.keep || args.reuse.is_some();
    let file = if kept { format!("{}.db", args.db_name).into() } else { dir.path().join("bench.db") };
    let url = format!("sqlite://{}", file.display());
    let season_id = match args.reuse {
        Some(season) => season,
        None => {
            if kept {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
                }
            }
            generate_in(&url, args).await?
        }
    };
    if args.keep {
        println!("kept database {} (re-measure with --reuse {season_id})", file.display());
    }
    measure(exe, &url, season_id, args.runs.max(1)).await
}

/// Migrates the empty database at `url`, generates the season in it and brings the planner's
/// statistics up to date; returns the season's id.
async fn generate_in(url: &str, args: &FinanceBench) -> anyhow::Result<Uuid> {
    let store = storage::connect(url, ConnectOptions::default()).await?;
    store.migrate().await?;
    let started = Instant::now();
    let season = generate(store.as_ref(), &Scale::of(args)?, url).await?;
    println!("generated in {:.1} s: season {season}", started.elapsed().as_secs_f64());
    // What autovacuum does soon after such a load in production (statistics, hint bits, the
    // visibility map; some machines run PostgreSQL with autovacuum off), and on SQLite what
    // `PRAGMA optimize` would.
    let vacuuming = Instant::now();
    if storage::Backend::of_url(url) == Some(storage::Backend::Sqlite) {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        sqlx::raw_sql("ANALYZE").execute(&mut conn).await?;
        println!("ANALYZE in {:.1} s", vacuuming.elapsed().as_secs_f64());
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::raw_sql("VACUUM ANALYZE").execute(&mut conn).await?;
        println!("VACUUM ANALYZE in {:.1} s", vacuuming.elapsed().as_secs_f64());
    }
    Ok(season)
}

/// How many of each thing the generated season has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub merchants: usize,
    /// Vouchers claimed from the batches' stock (the stocks sum to this).
    pub stock: usize,
    /// Vouchers claimed again from stock that expiries returned.
    pub reissued: usize,
    pub redemptions: usize,
    pub reversals: usize,
    /// Vouchers expired while their batch was open (value back to the batch reserve).
    pub expired_open: usize,
    /// Vouchers expired after their batch closed (value back to the funder's pool).
    pub expired_closed: usize,
    /// How the generated season's settlement is cut into transactions.
    pub settlement_chunking: SettlementChunking,
}

impl Scale {
    pub fn of(args: &FinanceBench) -> anyhow::Result<Scale> {
        let mut scale = Scale::new(args.vouchers, args.redemptions, args.merchants)?;
        let backend =
            if args.backend == "sqlite" { storage::Backend::Sqlite } else { storage::Backend::Postgres };
        scale.settlement_chunking = backend.settlement_chunking();
        let chunking = &mut scale.settlement_chunking;
        chunking.max_rows = args.settlement_chunk_rows.unwrap_or(chunking.max_rows).max(1);
        chunking.max_merchants = args.settlement_chunk_merchants.unwrap_or(chunking.max_merchants).max(1);
        Ok(scale)
    }

    pub fn new(vouchers: usize, redemptions: usize, merchants: usize) -> anyhow::Result<Scale> {
        ensure!(vouchers >= 1_000, "--vouchers must be at least 1000");
        ensure!(merchants >= CITIES.len() * Category::ALL.len(), "--merchants must be at least 45");
        let reissued = vouchers / 50;
        let stock = vouchers - reissued;
        let scale = Scale {
            merchants,
            stock,
            reissued,
            redemptions,
            reversals: redemptions / 100,
            expired_open: vouchers / 25,
            expired_closed: vouchers / 50,
            settlement_chunking: SettlementChunking::ROW_LOCKS,
        };
        ensure!(
            scale.redemptions + scale.expired_open + scale.expired_closed <= scale.stock,
            "--redemptions must leave room for expiries: at most {}",
            scale.stock - scale.expired_open - scale.expired_closed
        );
        Ok(scale)
    }

    /// Each batch's stock: 35%, 25%, 25% and the rest.
    pub fn stocks(&self) -> [usize; 4] {
        let a = self.stock * 35 / 100;
        let b = self.stock * 25 / 100;
        [a, b, b, self.stock - a - 2 * b]
    }
}

/// splitmix64: deterministic, good enough to spread amounts and merchants.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn region(code: &str) -> anyhow::Result<RegionCode> {
    code.parse().map_err(|e| anyhow::anyhow!("region {code}: {e:?}"))
}

fn fen(amount: i64) -> anyhow::Result<Fen> {
    Fen::new(amount).map_err(|e| anyhow::anyhow!("{amount} fen: {e:?}"))
}

fn answer(scope: &str, body: String) -> IdemRecord {
    let key = Uuid::new_v4().to_string();
    IdemRecord { scope: scope.to_owned(), request_hash: key.as_bytes().to_vec(), key, status: 201, body }
}

/// A generated voucher, as much as the generator needs to remember of it.
#[derive(Clone, Copy)]
struct Gen {
    id: VoucherId,
    batch: usize,
    citizen: CitizenId,
    claimed_at: i64,
    expires_at: i64,
    state: GenState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GenState {
    Active,
    Redeemed,
    Expired,
}

impl Gen {
    fn voucher(&self, batch: &Batch, status: VoucherStatus) -> Voucher {
        Voucher {
            id: self.id,
            batch_id: batch.id,
            season_id: batch.season_id,
            citizen_id: self.citizen,
            slot: 1,
            status,
            value: batch.voucher_value(),
            claimed_at: Timestamp::from_unix_us(self.claimed_at),
            expires_at: Timestamp::from_unix_us(self.expires_at),
        }
    }
}

struct Till {
    merchant: Merchant,
    terminal: TerminalId,
}

fn at(start: Timestamp, seconds: i64) -> Timestamp {
    start.plus_seconds(seconds)
}

fn progress(what: &str, done: usize, total: usize, started: Instant) {
    if done == total || done % (total / 10).max(1) < CLAIM_GROUP.min(REDEEM_GROUP) {
        println!("  {what}: {done}/{total} ({:.0} s)", started.elapsed().as_secs_f64());
    }
}

/// What the generator has made so far.
struct World {
    season: Season,
    batches: Vec<Batch>,
    tills: Vec<Till>,
    /// Per batch, the tills whose merchants may redeem its vouchers.
    eligible: Vec<Vec<usize>>,
    vouchers: Vec<Gen>,
    /// How many of `vouchers` are the first claims (the rest are re-issued).
    claimed: usize,
    start: Timestamp,
    started: Instant,
}

/// Generates the season; returns its id.
/// `url` is the database's, for the probe that measures how long the settlement holds up
/// other ledger writers.
pub async fn generate(store: &dyn Storage, scale: &Scale, url: &str) -> anyhow::Result<Uuid> {
    let mut rng = Rng(0x5EA5_0415);
    let mut world = create_world(store, scale, &mut rng).await?;
    claim_stock(store, &mut world).await?;
    let redeemed = redeem_some(store, scale, &mut world, &mut rng).await?;
    reverse_some(store, scale, &mut world, &redeemed).await?;
    drop(redeemed);
    // Expiries while the batches are open: the earliest active vouchers.
    expire_active(store, &mut world, scale.expired_open).await?;
    reissue(store, scale, &mut world).await?;
    close_claims(store, &mut world).await?;
    // Expiries after closing: the value goes to the pools.
    expire_active(store, &mut world, scale.expired_closed).await?;
    settle_and_pay(store, scale, &world, url).await?;
    Ok(world.season.id.as_uuid())
}

/// The season with its budgets (what the batches reserve plus a quarter), its batches, and the
/// merchants with their terminals.
async fn create_world(store: &dyn Storage, scale: &Scale, rng: &mut Rng) -> anyhow::Result<World> {
    let started = Instant::now();
    let (province, city) = (region(PROVINCE)?, region(CITY)?);
    // 2025-10-01 00:00 in Beijing; the season runs 90 days, claims the first 60.
    let start = Timestamp::parse_rfc3339("2025-09-30T16:00:00Z").context("start time")?;
    let season = Season {
        id: Uuid::now_v7().into(),
        name: "Bench season".into(),
        province,
        starts_at: start,
        ends_at: at(start, 90 * DAY_S),
        per_citizen_cap: None,
        per_citizen_monthly_cap: None,
        allow_stacking: false,
        refund_forfeits_voucher: false,
        merchant_redemption_limit: None,
        subsidy_ceilings: Default::default(),
        hold_score_threshold: None,
        closed_at: None,
    };
    let batches = bench_batches(&season, scale, province, city)?;
    let mut needed: HashMap<RegionCode, i64> = HashMap::new();
    for batch in &batches {
        for (funder, part) in batch.funding.split(batch.voucher_value()) {
            *needed.entry(funder).or_default() += part.as_fen() * batch.stock;
        }
    }
    let funders = vec![province, city];
    let mut entries = Vec::new();
    for funder in &funders {
        let amount = needed.get(funder).copied().unwrap_or(0);
        let memo = format!("budget:{}:{funder}:initial", season.id);
        entries.push(budget_entry(season.id, *funder, fen(amount + amount / 4 + 100)?, memo));
    }
    store.create_season(&season, &funders, &entries, &answer("bench:season", "{}".into())).await?;
    for batch in &batches {
        let entry = reserve_entry(batch)
            .map_err(|_| anyhow::anyhow!("batch {}: stock x value too large", batch.name))?;
        store.create_batch(batch, &entry, &answer("bench:batch", "{}".into())).await?;
    }
    let tills = create_tills(store, scale.merchants, rng).await?;
    let eligible: Vec<Vec<usize>> = batches
        .iter()
        .map(|b| (0..tills.len()).filter(|i| tills[*i].merchant.eligible_for(b).is_ok()).collect())
        .collect();
    println!(
        "  season, batches, {} merchants and terminals ({:.0} s)",
        tills.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(World { season, batches, tills, eligible, vouchers: Vec::new(), claimed: 0, start, started })
}

/// Claims of the whole stock, spread over the first 45 days.
async fn claim_stock(store: &dyn Storage, world: &mut World) -> anyhow::Result<()> {
    let mut vouchers = Vec::new();
    for (b, batch) in world.batches.iter().enumerate() {
        for k in 0..batch.stock {
            let claimed_at = at(world.start, k * 45 * DAY_S / batch.stock + b as i64 * 60);
            vouchers.push(Gen {
                id: VoucherId::new_v7(),
                batch: b,
                citizen: CitizenId::from_uuid(Uuid::from_u128(
                    0xC171_2E40_0000_0000_0000_0000_0000_0000 | k as u128,
                )),
                claimed_at: claimed_at.unix_us(),
                expires_at: batch.expiry_for(claimed_at, &world.season).unix_us(),
                state: GenState::Active,
            });
        }
    }
    commit_claims(store, &world.batches, &vouchers, world.started).await?;
    world.claimed = vouchers.len();
    world.vouchers = vouchers;
    Ok(())
}

/// Redemptions, spread evenly over the claimed vouchers, each at a merchant eligible for it.
async fn redeem_some(
    store: &dyn Storage,
    scale: &Scale,
    world: &mut World,
    rng: &mut Rng,
) -> anyhow::Result<Vec<(usize, NewRedemption)>> {
    let stock = world.vouchers.len();
    let chosen: Vec<usize> =
        (0..stock).filter(|i| (i + 1) * scale.redemptions / stock > i * scale.redemptions / stock).collect();
    let mut redeemed: Vec<(usize, NewRedemption)> = Vec::with_capacity(chosen.len());
    let mut done = 0;
    for group in chosen.chunks(REDEEM_GROUP) {
        let mut news = Vec::with_capacity(group.len());
        for &i in group {
            let g = &world.vouchers[i];
            let list = &world.eligible[g.batch];
            let till = &world.tills[list[rng.below(list.len() as u64) as usize]];
            let redeemed_at = g.claimed_at + (3_600 + rng.below(10 * DAY_S as u64) as i64) * 1_000_000;
            let redeemed_at = Timestamp::from_unix_us(redeemed_at);
            news.push(new_redemption(&world.season, &world.batches[g.batch], g, till, redeemed_at, rng)?);
        }
        let outcomes = store.commit_redemptions(&news).await?;
        if let Some(Err(refusal)) = outcomes.iter().find(|o| o.is_err()) {
            bail!("a generated redemption was refused: {refusal}");
        }
        for (&i, news) in group.iter().zip(news) {
            world.vouchers[i].state = GenState::Redeemed;
            redeemed.push((i, news));
        }
        done += group.len();
        progress("redemptions", done, chosen.len(), world.started);
    }
    Ok(redeemed)
}

/// Reversals: every hundredth redemption; four in five give the voucher back to its holder,
/// the fifth returns it (and its stock) to the batch.
async fn reverse_some(
    store: &dyn Storage,
    scale: &Scale,
    world: &mut World,
    redeemed: &[(usize, NewRedemption)],
) -> anyhow::Result<()> {
    let step = (redeemed.len() / scale.reversals.max(1)).max(1);
    let mut reversed = 0;
    for (n, (i, r)) in redeemed.iter().enumerate().filter(|(n, _)| n % step == step - 1) {
        if reversed == scale.reversals {
            break;
        }
        let g = world.vouchers[*i];
        let batch = &world.batches[g.batch];
        let reactivate = n % (5 * step) != 5 * step - 1;
        let parts = funder_parts(batch, batch.voucher_value(), fen(r.discount_fen)?);
        let reversal_id = wenhui::domain::ids::ReversalId::new_v7();
        let after = if reactivate { AfterReversal::Active } else { AfterReversal::Expired };
        let status = after.status().as_str();
        let reversal = NewReversal {
            redemption_id: r.id,
            reversal_id,
            voucher_id: g.id,
            batch_id: batch.id,
            reason: "refund".into(),
            at: r.redeemed_at.plus_seconds(3_600),
            voucher_status: status,
            reserve_returned: batch.reserve_returned,
            season_totals: Vec::new(),
            entry: reversal_entry(batch, &parts, r.merchant_id, reversal_id, after),
            answer: answer(
                &r.answer.scope,
                json!({"reversal_id": reversal_id, "voucher_status": status}).to_string(),
            ),
        };
        store.commit_reversal(&reversal).await?;
        world.vouchers[*i].state = if reactivate { GenState::Active } else { GenState::Expired };
        if !reactivate {
            world.batches[g.batch].returned_count += 1;
        }
        reversed += 1;
    }
    println!("  reversals: {reversed} ({:.0} s)", world.started.elapsed().as_secs_f64());
    Ok(())
}

/// Expires the first `count` active vouchers of the claims (not the re-issued ones).
async fn expire_active(store: &dyn Storage, world: &mut World, count: usize) -> anyhow::Result<()> {
    let due: Vec<usize> =
        (0..world.claimed).filter(|i| world.vouchers[*i].state == GenState::Active).take(count).collect();
    expire(store, &mut world.batches, &mut world.vouchers, &due, world.started).await
}

/// Re-issue: the stock the expiries gave back is claimed again on day 50.
async fn reissue(store: &dyn Storage, scale: &Scale, world: &mut World) -> anyhow::Result<()> {
    let mut reissue = Vec::new();
    let mut left = scale.reissued;
    for (b, batch) in world.batches.iter().enumerate() {
        let room = (batch.stock - (batch.claimed_count - batch.returned_count)).max(0) as usize;
        for k in 0..room.min(left) {
            let claimed_at = at(world.start, 50 * DAY_S + k as i64);
            reissue.push(Gen {
                id: VoucherId::new_v7(),
                batch: b,
                citizen: CitizenId::from_uuid(Uuid::from_u128(
                    0xC171_2E41_0000_0000_0000_0000_0000_0000 | k as u128,
                )),
                claimed_at: claimed_at.unix_us(),
                expires_at: batch.expiry_for(claimed_at, &world.season).unix_us(),
                state: GenState::Active,
            });
        }
        left -= room.min(left);
    }
    ensure!(left == 0, "expiries gave back too little stock to re-issue {} vouchers", scale.reissued);
    commit_claims(store, &world.batches, &reissue, world.started).await?;
    world.vouchers.extend(reissue);
    Ok(())
}

/// Claims close on day 60: each batch's reserve goes back to its funders' pools.
async fn close_claims(store: &dyn Storage, world: &mut World) -> anyhow::Result<()> {
    for batch in &world.batches {
        let fresh = store.batch(batch.id).await?.context("batch")?;
        let entry = wenhui::app::claims::close_entry(store, &fresh).await?;
        store.close_batch_reserve(batch.id, at(world.start, 60 * DAY_S), entry.as_ref()).await?;
    }
    for batch in world.batches.iter_mut() {
        *batch = store.batch(batch.id).await?.context("batch")?;
    }
    Ok(())
}

/// A settlement of everything redeemed up to day 40 (timed, with a probe of how long it holds
/// up other ledger writers), and its payout.
async fn settle_and_pay(store: &dyn Storage, scale: &Scale, world: &World, url: &str) -> anyhow::Result<()> {
    let start = world.start;
    let cut_off = at(start, 40 * DAY_S);
    let probe = HeadProbe::start(url).await?;
    let settling = Instant::now();
    let settlement = wenhui::app::finance::settle(
        store,
        &world.season,
        cut_off,
        at(start, 70 * DAY_S),
        answer("bench:settle", String::new()),
        scale.settlement_chunking,
    )
    .await
    .map_err(|e| anyhow::anyhow!("settlement: {e}"))?;
    let settle_s = settling.elapsed().as_secs_f64();
    let mut waits_ms = probe.stop().await?;
    let longest_ms = waits_ms.iter().copied().fold(0.0, f64::max);
    println!(
        "  settlement of {} redemptions: {settle_s:.2} s; a ledger writer probing every {} ms waited at most \
         {longest_ms:.1} ms (median {:.2} ms, {} probes): {:.3} of the settlement's time",
        settlement_count(store, settlement.id).await?,
        HeadProbe::EVERY.as_millis(),
        median(&mut waits_ms),
        waits_ms.len(),
        longest_ms / 1_000.0 / settle_s,
    );
    let payout = answer("bench:payout", "{}".into());
    store.commit_payout(settlement.id, "BANK-BENCH-1", at(start, 72 * DAY_S), &payout).await?;
    println!(
        "  settlement of {} merchants, {} fen, paid ({:.0} s)",
        settlement.line_count,
        settlement.total_fen,
        world.started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn settlement_count(store: &dyn Storage, id: SettlementId) -> anyhow::Result<i64> {
    Ok(store.settlement_lines(id).await?.iter().map(|line| line.redemption_count).sum())
}

/// The probe's own session.
enum ProbeConn {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl ProbeConn {
    /// Takes what a ledger writer takes first (PostgreSQL: the head row's lock; SQLite: the
    /// write lock), then lets it go.
    async fn take_and_release(&mut self) -> anyhow::Result<()> {
        match self {
            ProbeConn::Postgres(conn) => {
                let mut tx = conn.begin().await?;
                sqlx::query("SELECT seq FROM ledger_head WHERE id = 1 FOR UPDATE").execute(&mut *tx).await?;
                tx.rollback().await?;
            }
            ProbeConn::Sqlite(conn) => {
                sqlx::raw_sql("BEGIN IMMEDIATE; ROLLBACK").execute(&mut *conn).await?;
            }
        }
        Ok(())
    }
}

/// Another ledger writer, as the server is while `wenhui settle` runs: a session of its own
/// that takes the ledger head (PostgreSQL: `SELECT ... FOR UPDATE`; SQLite: `BEGIN IMMEDIATE`),
/// then rolls back, every `EVERY`, and records how long each attempt took.
struct HeadProbe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<f64>>>,
}

impl HeadProbe {
    const EVERY: Duration = Duration::from_millis(10);

    async fn start(url: &str) -> anyhow::Result<HeadProbe> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let mut writer = if storage::Backend::of_url(url) == Some(storage::Backend::Sqlite) {
            // SQLite's one writer: what a till's write waits for is the database's write lock.
            let options =
                sqlx::sqlite::SqliteConnectOptions::from_str(url)?.busy_timeout(Duration::from_secs(600));
            ProbeConn::Sqlite(sqlx::SqliteConnection::connect_with(&options).await?)
        } else {
            ProbeConn::Postgres(sqlx::PgConnection::connect(url).await?)
        };
        let task = tokio::spawn(async move {
            let mut waits_ms = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let started = Instant::now();
                writer.take_and_release().await?;
                waits_ms.push(started.elapsed().as_secs_f64() * 1_000.0);
                tokio::time::sleep(Self::EVERY).await;
            }
            Ok(waits_ms)
        });
        Ok(HeadProbe { stop, task })
    }

    /// The probes' times in milliseconds.
    async fn stop(self) -> anyhow::Result<Vec<f64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

fn bench_batches(
    season: &Season,
    scale: &Scale,
    province: RegionCode,
    city: RegionCode,
) -> anyhow::Result<Vec<Batch>> {
    let stocks = scale.stocks();
    let all = Category::ALL.to_vec();
    let shares = |s: Vec<(RegionCode, u32)>| FundingShares::new(s).map_err(|e| anyhow::anyhow!("{e}"));
    let specs: [(&str, RegionCode, VoucherTerms, Vec<Category>, FundingShares); 4] = [
        (
            "Province: 50 off 200",
            province,
            VoucherTerms::Threshold { face_value: fen(5_000)?, min_spend: fen(20_000)? },
            all.clone(),
            FundingShares::single(province),
        ),
        (
            "Province: 20% off stage and screen",
            province,
            VoucherTerms::Percent { percent: 20, cap: fen(4_000)?, step: fen(100)?, min_spend: fen(5_000)? },
            vec![Category::Cinema, Category::Theatre, Category::Performance, Category::Museum],
            FundingShares::single(province),
        ),
        (
            "Qingdao: 10% off, co-funded 70/30",
            city,
            VoucherTerms::Percent { percent: 10, cap: fen(3_000)?, step: fen(1)?, min_spend: fen(1_000)? },
            all.clone(),
            shares(vec![(province, 70), (city, 30)])?,
        ),
        (
            "Qingdao: 20 off 100",
            city,
            VoucherTerms::Threshold { face_value: fen(2_000)?, min_spend: fen(10_000)? },
            vec![
                Category::Bookstore,
                Category::Ktv,
                Category::InternetCafe,
                Category::Sports,
                Category::ScenicSpot,
            ],
            FundingShares::single(city),
        ),
    ];
    Ok(specs
        .into_iter()
        .zip(stocks)
        .map(|((name, issuer, terms, categories, funding), stock)| Batch {
            id: Uuid::now_v7().into(),
            season_id: season.id,
            name: name.into(),
            issuer,
            terms,
            stock: stock as i64,
            per_citizen_limit: 1,
            valid_hours: 20 * 24,
            claim_opens_at: season.starts_at,
            claim_closes_at: at(season.starts_at, 60 * DAY_S),
            categories,
            funding,
            releases: Vec::new(),
            claimed_count: 0,
            returned_count: 0,
            reserve_returned: false,
            points_price: None,
            lottery: None,
        })
        .collect())
}

async fn create_tills(store: &dyn Storage, count: usize, rng: &mut Rng) -> anyhow::Result<Vec<Till>> {
    let now = Timestamp::parse_rfc3339("2025-09-01T00:00:00Z").context("time")?;
    let mut tills = Vec::with_capacity(count);
    for m in 0..count {
        let first17 = format!("91{}{m:09}", CITIES[m % CITIES.len()]);
        let check = credit_check_char(first17.as_bytes()).context("credit code")?;
        let name = format!("Merchant {m:05}");
        let merchant = Merchant {
            id: Uuid::now_v7().into(),
            name: name.clone(),
            credit_code: CreditCode::parse(&format!("{first17}{check}"))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            category: Category::ALL[m % Category::ALL.len()],
            city: region(CITIES[m % CITIES.len()])?,
            settlement: SettlementAccount {
                bank: "Bank of Qingdao".into(),
                account_no: format!("6216{m:012}"),
                account_name: name,
            },
            status: MerchantStatus::Active,
        };
        store.insert_merchant(&merchant, &answer("bench:merchant", "{}".into())).await?;
        let terminal = TerminalRecord {
            id: TerminalId::new_v7(),
            merchant_id: merchant.id,
            public_key: rng.bytes(32),
            label: "till 1".into(),
            revoked: false,
        };
        store.insert_terminal(&terminal, now, &answer("bench:terminal", "{}".into())).await?;
        tills.push(Till { merchant, terminal: terminal.id });
    }
    Ok(tills)
}

/// Claims in groups, as the claim writer commits them (no stored answers: see the module doc).
async fn commit_claims(
    store: &dyn Storage,
    batches: &[Batch],
    vouchers: &[Gen],
    started: Instant,
) -> anyhow::Result<()> {
    let mut done = 0;
    for group in vouchers.chunks(CLAIM_GROUP) {
        let mut commit = ClaimCommit::default();
        for g in group {
            let batch = &batches[g.batch];
            let voucher = g.voucher(batch, VoucherStatus::Active);
            commit.entries.push(claim_entry(batch, &voucher));
            commit.vouchers.push(voucher);
            match commit.batch_claims.iter_mut().find(|(id, _, _)| *id == batch.id) {
                Some((_, count, _)) => *count += 1,
                None => commit.batch_claims.push((batch.id, 1, batch.stock)),
            }
        }
        store.commit_claims(&commit).await?;
        done += group.len();
        progress("claims", done, vouchers.len(), started);
    }
    Ok(())
}

/// Expires vouchers in groups, as the sweeper does (booked at the latest expiry of each group).
async fn expire(
    store: &dyn Storage,
    batches: &mut [Batch],
    vouchers: &mut [Gen],
    due: &[usize],
    started: Instant,
) -> anyhow::Result<()> {
    let mut done = 0;
    for group in due.chunks(CLAIM_GROUP) {
        let expired_at = group.iter().map(|i| vouchers[*i].expires_at).max().unwrap_or(0);
        let mut commit =
            ExpiryCommit { expired_at: Timestamp::from_unix_us(expired_at), ..ExpiryCommit::default() };
        for &i in group {
            let g = vouchers[i];
            let batch = &batches[g.batch];
            commit.entries.push(expiry_entry(batch, &g.voucher(batch, VoucherStatus::Active)));
            commit.voucher_ids.push(g.id);
            match commit.batch_returns.iter_mut().find(|(id, _)| *id == batch.id) {
                Some((_, count)) => *count += 1,
                None => commit.batch_returns.push((batch.id, 1)),
            }
        }
        store.commit_expiries(&commit).await?;
        for &i in group {
            vouchers[i].state = GenState::Expired;
            batches[vouchers[i].batch].returned_count += 1;
        }
        done += group.len();
        progress("expiries", done, due.len(), started);
    }
    Ok(())
}

/// A redemption as `POST /v1/redemptions` builds it (without a card payment on the order).
fn new_redemption(
    season: &Season,
    batch: &Batch,
    g: &Gen,
    till: &Till,
    redeemed_at: Timestamp,
    rng: &mut Rng,
) -> anyhow::Result<NewRedemption> {
    let order_amount = fen(batch.terms.min_spend().as_fen() + 100 + rng.below(30_000) as i64)?;
    let discount = batch.terms.discount(order_amount).map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(!discount.is_zero(), "a generated order gets no discount");
    let parts = funder_parts(batch, batch.voucher_value(), discount);
    let id = RedemptionId::new_v7();
    let order_ref = format!("ORD-{}", id.as_uuid().simple());
    let funders = funder_parts_json(parts.iter().map(|(funder, _, discount)| (*funder, *discount)));
    let body = json!({
        "redemption_id": id, "voucher_id": g.id, "merchant_id": till.merchant.id, "order_ref": order_ref,
        "order_amount": order_amount.to_string(), "discount": discount.to_string(),
        "payable": Fen::from_fen_unchecked(order_amount.as_fen() - discount.as_fen()).to_string(), "funders": funders,
    });
    Ok(NewRedemption {
        id,
        voucher_id: g.id,
        merchant_id: till.merchant.id,
        terminal_id: till.terminal,
        season_id: season.id,
        batch_id: batch.id,
        order_slot: order_slot(season, batch),
        provincial: batch.issuer.level() == RegionLevel::Province,
        order_ref,
        order_amount_fen: order_amount.as_fen(),
        discount_fen: discount.as_fen(),
        funders_json: funders.to_string(),
        redeemed_at,
        qr_nonce: rng.bytes(16),
        card_payment_id: None,
        citizen_id: g.citizen,
        merchant_redemption_limit: None,
        entry: redemption_entry(batch, &parts, till.merchant.id, id),
        answer: answer(&format!("terminal:{}", till.terminal), body.to_string()),
    })
}

/// One measured child process: wall time and peak RSS.
struct Sample {
    seconds: f64,
    peak_rss_kib: Option<u64>,
    ok: bool,
    stdout: String,
}

async fn run_child(exe: &Path, url: &str, args: &[&str], data_dir: &Path) -> anyhow::Result<Sample> {
    let time = Path::new("/usr/bin/time");
    let mut command = if time.exists() {
        let mut c = tokio::process::Command::new(time);
        c.arg("-f").arg("WENHUI_PEAK_RSS_KIB=%M").arg(exe);
        c
    } else {
        tokio::process::Command::new(exe)
    };
    command
        .args(args)
        .env("DATABASE_URL", url)
        .env("WENHUI_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let output = command.output().await.context("running a measured command")?;
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let peak_rss_kib = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("WENHUI_PEAK_RSS_KIB="))
        .and_then(|n| n.parse().ok());
    if !output.status.success() && !stderr.contains("BROKEN") {
        bail!("{args:?} failed: {stderr}");
    }
    Ok(Sample {
        seconds,
        peak_rss_kib,
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    })
}

async fn measure(exe: &Path, url: &str, season: Uuid, runs: usize) -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir().context("a data directory for the measured commands")?;
    let out = data_dir.path().join("report.out");
    let out = out.to_str().context("temporary path")?.to_owned();
    let season = season.to_string();
    let commands: [(&str, Vec<&str>); 3] = [
        ("reconcile", vec!["reconcile", "--season", &season]),
        ("report json", vec!["report", "--season", &season, "--format", "json", "--out", &out]),
        ("report xlsx", vec!["report", "--season", &season, "--format", "xlsx", "--out", &out]),
    ];
    let mut broken = false;
    for (label, args) in &commands {
        let mut times = Vec::new();
        let mut peaks = Vec::new();
        for _ in 0..runs {
            let sample = run_child(exe, url, args, data_dir.path()).await?;
            if *label == "reconcile" && !sample.ok {
                broken = true;
                println!("reconcile found breaks:\n{}", sample.stdout);
            }
            times.push(sample.seconds);
            peaks.extend(sample.peak_rss_kib.map(|k| k as f64));
        }
        let peak = if peaks.is_empty() {
            "n/a (no /usr/bin/time)".to_owned()
        } else {
            format!("{:.1} MiB", peaks.iter().copied().fold(0.0, f64::max) / 1024.0)
        };
        println!(
            "{label:<12} median {:>7.2} s of {runs} (min {:.2}, max {:.2}), peak RSS {peak}",
            median(&mut times.clone()),
            times.iter().copied().fold(f64::INFINITY, f64::min),
            times.iter().copied().fold(0.0, f64::max),
        );
    }
    if broken {
        bail!("reconciliation found breaks in a generated season: the generator or reconciliation is wrong");
    }
    println!("reconcile: ok, no breaks");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_season_shape_adds_up() {
        let scale = Scale::new(1_000_000, 500_000, 2_000).expect("scale");
        assert_eq!(scale.stock + scale.reissued, 1_000_000);
        assert_eq!(scale.stocks().iter().sum::<usize>(), scale.stock);
        assert_eq!(scale.reversals, 5_000);
        // Expiries while open give back more stock than is re-issued.
        assert!(scale.expired_open >= scale.reissued);
        assert!(Scale::new(1_000, 990, 2_000).is_err());
        assert!(Scale::new(1_000, 100, 10).is_err());
    }
}
