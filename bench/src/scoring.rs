//! `wenhui-bench scoring`: cash-out scoring (`wenhui::app::fraud::score_season`) of a synthetic
//! season of 100,000 and 1,000,000 redemptions, on SQLite and PostgreSQL. The season is written
//! with direct SQL (multi-row INSERTs of literals, 1,000 rows a statement), then scored through
//! the library's public API; printed: the wall time of the scoring and the process's peak RSS
//! during it (`VmHWM`, reset through `/proc/self/clear_refs` before each run), to show that
//! memory stays flat as the redemptions grow.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context;
use sqlx::Connection;
use uuid::Uuid;
use wenhui::domain::ids::SeasonId;
use wenhui::storage::{self, ConnectOptions};

use crate::ScratchDb;

#[derive(clap::Args, Debug)]
pub struct ScoringBench {
    /// Administrative PostgreSQL URL; the bench creates and drops its own database there.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_url: String,
    /// The season sizes scored, in redemptions.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    sizes: Vec<usize>,
    /// Merchants the redemptions are spread over (the same for every size).
    #[arg(long, default_value_t = 2_000)]
    merchants: usize,
    #[arg(long, value_parser = ["both", "postgres", "sqlite"], default_value = "both")]
    backend: String,
    /// Keep the PostgreSQL database (`wenhui_bench_scoring`) and the SQLite file afterwards, for
    /// EXPLAIN or a profile.
    #[arg(long)]
    keep: bool,
}

const DAYS: u64 = 30;
/// 2026-03-01T00:00:00+08:00.
const DAY0_US: i64 = 1_772_294_400_000_000;
const HOUR_US: i64 = 3_600_000_000;
const ROWS_PER_STATEMENT: usize = 1_000;
const CATEGORIES: [&str; 5] = ["bookstore", "ktv", "cinema", "internet_cafe", "museum"];
const CITIES: [&str; 5] = ["370102", "370202", "370302", "370602", "370702"];
const HOMES: [&str; 6] = ["3701", "3702", "3703", "3706", "4401", "1101"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    fn uuid(self, id: Uuid) -> String {
        match self {
            Dialect::Sqlite => format!("X'{}'", id.simple()),
            Dialect::Postgres => format!("'{id}'"),
        }
    }

    fn bytes(self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self {
            Dialect::Sqlite => format!("X'{hex}'"),
            Dialect::Postgres => format!("'\\x{hex}'::bytea"),
        }
    }
}

/// Ids by kind and number, the same in every run.
fn id(kind: u128, n: usize) -> Uuid {
    Uuid::from_u128((kind << 96) | n as u128 | 0x4000_8000_0000_0000_0000)
}

const SEASON: u128 = 1;
const BATCH: u128 = 2;
const MERCHANT: u128 = 3;
const TERMINAL: u128 = 4;
const CITIZEN: u128 = 5;
const VOUCHER: u128 = 6;
const REDEMPTION: u128 = 7;

/// A small mixing function: the synthetic season's choices, deterministic.
fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub async fn run(args: &ScoringBench) -> anyhow::Result<()> {
    println!("machine: {}", crate::machine_description());
    for &size in &args.sizes {
        if args.backend != "postgres" {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("scoring.db").display());
            measure("sqlite", &url, Dialect::Sqlite, size, args.merchants).await?;
            if args.keep {
                println!("kept: {}", dir.keep().join("scoring.db").display());
            }
        }
        if args.backend != "sqlite" {
            let scratch = ScratchDb::create(&args.pg_url, "wenhui_bench_scoring").await?;
            measure("postgres", &scratch.url, Dialect::Postgres, size, args.merchants).await?;
            if !args.keep {
                scratch.drop_db().await?;
            }
        }
    }
    Ok(())
}

async fn measure(
    name: &str,
    url: &str,
    dialect: Dialect,
    size: usize,
    merchants: usize,
) -> anyhow::Result<()> {
    let store = storage::connect(url, ConnectOptions::default()).await?;
    store.migrate().await?;
    let written = Instant::now();
    generate(url, dialect, size, merchants).await?;
    // A real season's rows were written over weeks, with autovacuum's statistics and visibility
    // map kept up to date all along; a season written in one go gets them here, before the clock.
    analyze(url, dialect).await?;
    let written_s = written.elapsed().as_secs_f64();
    let season = store.season(SeasonId::from(id(SEASON, 0))).await?.context("the generated season")?;
    let until = wenhui::domain::time::Timestamp::from_unix_us(DAY0_US + DAYS as i64 * 24 * HOUR_US);
    reset_peak_rss();
    let before_kib = rss_kib("VmRSS");
    let started = Instant::now();
    let scores = wenhui::app::fraud::score_season(store.as_ref(), &season, until).await?;
    let scored_s = started.elapsed().as_secs_f64();
    let peak_kib = rss_kib("VmHWM");
    let above_60 = scores.merchants.iter().filter(|m| m.score > 60).count();
    println!(
        "{name:<8} scoring {:>9} redemptions, {} merchants: {scored_s:>6.2} s ({:>9.0} redemptions/s), peak RSS {} MiB \
         (RSS before {} MiB: {} MiB more while scoring); {above_60} merchants above 60; season written in {written_s:.1} s",
        scores.redemptions,
        scores.merchants.len(),
        scores.redemptions as f64 / scored_s,
        peak_kib.map_or("?".into(), |k| (k / 1024).to_string()),
        before_kib.map_or("?".into(), |k| (k / 1024).to_string()),
        peak_kib
            .zip(before_kib)
            .map_or("?".into(), |(peak, before)| (peak.saturating_sub(before) / 1024).to_string()),
    );
    Ok(())
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS (Linux).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A `/proc/self/status` figure in KiB (`VmHWM`: the peak resident set; `VmRSS`: now).
fn rss_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Writes the season: one season and 满100减30 batch, `merchants` merchants with a till each,
/// a citizen per four redemptions, and `size` vouchers each redeemed once (some at exactly
/// 100.00, some reversed, spread over 30 days mostly in opening hours).
async fn generate(url: &str, dialect: Dialect, size: usize, merchants: usize) -> anyhow::Result<()> {
    let mut statements: Vec<String> = Vec::new();
    let season = dialect.uuid(id(SEASON, 0));
    let batch = dialect.uuid(id(BATCH, 0));
    let ends = DAY0_US + DAYS as i64 * 24 * HOUR_US;
    statements.push(format!(
        "INSERT INTO seasons (id, name, province, starts_at_us, ends_at_us, created_at_us) \
         VALUES ({season}, 'bench', '370000', {DAY0_US}, {ends}, {DAY0_US})"
    ));
    statements.push(format!(
        "INSERT INTO batches (id, season_id, name, issuer, kind, face_value_fen, min_spend_fen, max_value_fen, stock, \
         per_citizen_limit, valid_hours, claim_opens_at_us, claim_closes_at_us, categories, funding, releases, created_at_us) \
         VALUES ({batch}, {season}, '满100减30', '370000', 'threshold', 3000, 10000, 3000, {size}, 4, 720, {DAY0_US}, {ends}, \
         'bookstore,ktv,cinema,internet_cafe,museum', '370000:100', '', {DAY0_US})"
    ));
    rows(
        &mut statements,
        "merchants (id, name, credit_code, category, city, bank, account_no, account_name, status, created_at_us)",
        merchants,
        |m| {
            format!(
                "({}, '商户{m}', 'BENCH{m:013}', '{}', '{}', '银行', '6222000000000000', '商户', 'active', {DAY0_US})",
                dialect.uuid(id(MERCHANT, m)),
                CATEGORIES[m % CATEGORIES.len()],
                CITIES[m % CITIES.len()]
            )
        },
    );
    rows(&mut statements, "terminals (id, merchant_id, public_key, label, created_at_us)", merchants, |m| {
        format!(
            "({}, {}, {}, 'till', {DAY0_US})",
            dialect.uuid(id(TERMINAL, m)),
            dialect.uuid(id(MERCHANT, m)),
            dialect.bytes(id(TERMINAL, m).as_bytes())
        )
    });
    execute(url, dialect, &statements).await?;
    statements.clear();

    let citizens = size.div_ceil(4);
    rows(
        &mut statements,
        "citizens (id, id_hash, id_masked, name_masked, phone_hash, phone_masked, created_at_us)",
        citizens,
        |c| {
            format!(
                "({}, {}, '{}**********{:03}X', '张*', {}, '138****0000', {DAY0_US})",
                dialect.uuid(id(CITIZEN, c)),
                dialect.bytes(id(CITIZEN, c).as_bytes()),
                home(c),
                c % 1000,
                dialect.bytes(id(CITIZEN, c).as_bytes())
            )
        },
    );
    execute(url, dialect, &statements).await?;
    statements.clear();

    // Vouchers and their redemptions, a chunk at a time (the statements of a million rows would
    // be a gigabyte of text).
    let chunk = 100_000;
    let mut start = 0;
    while start < size {
        let end = (start + chunk).min(size);
        let span = end - start;
        rows(
            &mut statements,
            "vouchers (id, batch_id, season_id, citizen_id, slot, status, value_fen, claimed_at_us, expires_at_us)",
            span,
            |i| {
                let v = start + i;
                let (redeemed, claimed) = times(v);
                format!(
                    "({}, {batch}, {season}, {}, {}, 'redeemed', 3000, {claimed}, {})",
                    dialect.uuid(id(VOUCHER, v)),
                    dialect.uuid(id(CITIZEN, v / 4)),
                    v % 4 + 1,
                    redeemed + 720 * HOUR_US
                )
            },
        );
        rows(
            &mut statements,
            "redemptions (id, voucher_id, merchant_id, terminal_id, season_id, batch_id, order_ref, order_slot, \
              order_amount_fen, discount_fen, funders, redeemed_at_us, reversed_at_us, citizen_id, claimed_at_us, \
              citizen_home_digits)",
            span,
            |i| {
                let v = start + i;
                let r = mix(v as u64 ^ 0x5555);
                let m = (r % merchants as u64) as usize;
                let (redeemed, claimed) = times(v);
                let amount = if r.is_multiple_of(10) { 10_000 } else { 10_000 + (r >> 8) % 20_000 };
                let reversed = if (r >> 20).is_multiple_of(50) {
                    (redeemed + HOUR_US).to_string()
                } else {
                    "NULL".into()
                };
                format!(
                    "({}, {}, {}, {}, {season}, {batch}, 'o{v}', '370000', {amount}, 3000, '370000:3000', {redeemed}, {reversed}, \
                     {}, {claimed}, '{}')",
                    dialect.uuid(id(REDEMPTION, v)),
                    dialect.uuid(id(VOUCHER, v)),
                    dialect.uuid(id(MERCHANT, m)),
                    dialect.uuid(id(TERMINAL, m)),
                    dialect.uuid(id(CITIZEN, v / 4)),
                    home(v / 4),
                )
            },
        );
        execute(url, dialect, &statements).await?;
        statements.clear();
        start = end;
    }
    Ok(())
}

/// A citizen's home: the first four digits of their ID number.
fn home(citizen: usize) -> &'static str {
    HOMES[(mix(citizen as u64) % HOMES.len() as u64) as usize]
}

/// A voucher's redemption and claim instants: a day of the season, mostly 09:00 to 21:00.
fn times(v: usize) -> (i64, i64) {
    let r = mix(v as u64);
    let day = (r % DAYS) as i64;
    let hour = 9 + ((r >> 8) % 13) as i64;
    let second = ((r >> 16) % 3_600) as i64;
    let redeemed = DAY0_US + day * 24 * HOUR_US + hour * HOUR_US + second * 1_000_000;
    let claimed = redeemed - (1 + ((r >> 32) % 72) as i64) * HOUR_US;
    (redeemed, claimed)
}

/// Appends multi-row INSERTs of `count` rows, `ROWS_PER_STATEMENT` a statement.
fn rows(statements: &mut Vec<String>, table: &str, count: usize, row: impl Fn(usize) -> String) {
    let mut start = 0;
    while start < count {
        let end = (start + ROWS_PER_STATEMENT).min(count);
        let mut sql = format!("INSERT INTO {table} VALUES ");
        for i in start..end {
            if i > start {
                sql.push_str(", ");
            }
            let _ = write!(sql, "{}", row(i));
        }
        statements.push(sql);
        start = end;
    }
}

/// Gathers the planner's statistics (and, on PostgreSQL, sets the visibility map and hint bits
/// as autovacuum would have).
async fn analyze(url: &str, dialect: Dialect) -> anyhow::Result<()> {
    match dialect {
        Dialect::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await?;
            sqlx::raw_sql("ANALYZE").execute(&mut conn).await?;
        }
        Dialect::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            sqlx::raw_sql("VACUUM ANALYZE").execute(&mut conn).await?;
        }
    }
    Ok(())
}

/// Runs the statements in one transaction on a connection of their own.
async fn execute(url: &str, dialect: Dialect, statements: &[String]) -> anyhow::Result<()> {
    match dialect {
        Dialect::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await?;
            let mut tx = conn.begin().await?;
            for sql in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        Dialect::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            let mut tx = conn.begin().await?;
            for sql in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}
