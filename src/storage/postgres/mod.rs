//! PostgreSQL: the production backend. Writers serialize on the `ledger_head` row
//! (`SELECT ... FOR UPDATE`), which is what keeps sequence numbers gapless across processes.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::backend::{AccountBalanceRow, LiveOrderRow, MerchantCountRow, SqlBackend};
use super::db::{Pool, Tx};
use super::notices::{Notice, NoticeFeed};
use super::{Backend, StorageError};
use crate::domain::ids::{BatchId, CitizenId, MerchantId, SeasonId, TerminalId, VoucherId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug)]
pub(crate) struct PgBackend {
    pool: PgPool,
    /// Connections with `synchronous_commit = off`, for writes whose loss in a crash does no
    /// harm: request nonces (a nonce lost only reopens a replay window the request's
    /// Idempotency-Key closes) and housekeeping's deletes.
    relaxed_pool: PgPool,
    /// The main pool, as the shared logic takes it.
    any_pool: Pool,
    /// The writers' own connections, used and so opened on their thread
    /// ([`super::WRITERS_THREAD`]): a statement's reply wakes that thread at once, not once a
    /// request worker busy with a rush next polls for I/O (each of a claim group's round trips
    /// took 0.2 to 0.6 ms beyond its execution with the writers on the main pool).
    writers_pool: PgPool,
}

impl PgBackend {
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgBackend, StorageError> {
        // Custom plans for every execution: a generic plan cached while a table was small (a
        // sequential scan) would otherwise stay in use as the ledger grows.
        let connect = PgConnectOptions::from_str(url)?
            .application_name("wenhui")
            .options([("plan_cache_mode", "force_custom_plan")]);
        let relaxed = connect.clone().options([("synchronous_commit", "off")]);
        let pool = pool_options()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect.clone())
            .await?;
        let relaxed_pool = pool_options()
            .max_connections(RELAXED_POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(relaxed);
        let writers_pool = pool_options()
            .max_connections(WRITERS_POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(connect);
        Ok(PgBackend { any_pool: Pool::Pg(pool.clone()), pool, relaxed_pool, writers_pool })
    }

    /// A hot standby, for reads: connected lazily (a standby down at start does not stop the
    /// start), with a short acquire timeout so that a standby gone quiet costs a read little
    /// before it runs again on the primary. Its transactions are read-only: the standby
    /// refuses any write, and so does the session, should one ever be sent here.
    pub fn connect_standby(url: &str, max_connections: u32) -> Result<PgBackend, StorageError> {
        let connect = PgConnectOptions::from_str(url)?
            .application_name("wenhui-reads")
            .options([("plan_cache_mode", "force_custom_plan"), ("default_transaction_read_only", "on")]);
        let pool = pool_options()
            .max_connections(max_connections)
            .acquire_timeout(STANDBY_ACQUIRE_TIMEOUT)
            .connect_lazy_with(connect);
        Ok(PgBackend {
            any_pool: Pool::Pg(pool.clone()),
            relaxed_pool: pool.clone(),
            writers_pool: pool.clone(),
            pool,
        })
    }
}

/// How long a connection may sit idle in a pool before it is pinged on its way out of it.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// A pool that pings a connection before handing it out only when it has sat idle for
/// [`PING_WHEN_IDLE_FOR`] (sqlx pings every one by default: a round trip to the server before
/// each statement, a third of a one-statement read's). A connection that died while in use
/// recently fails its next statement and is dropped by the pool when it comes back.
impl PgBackend {
    /// The writers' pool on the writers' thread, else the main pool.
    fn for_caller(&self) -> &PgPool {
        match std::thread::current().name() == Some(super::WRITERS_THREAD) {
            true => &self.writers_pool,
            false => &self.pool,
        }
    }
}

fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new().test_before_acquire(false).before_acquire(|conn, meta| {
        Box::pin(async move {
            if meta.idle_for >= PING_WHEN_IDLE_FOR {
                sqlx::Connection::ping(conn).await?;
            }
            Ok(true)
        })
    })
}

/// Connections in the writers' pool: a claim group's transaction and the next group's reads,
/// the redemption writer's, the sweeps'.
const WRITERS_POOL_SIZE: u32 = 6;

/// Connections in the pool with `synchronous_commit = off`.
const RELAXED_POOL_SIZE: u32 = 4;

/// The most connections one node holds on the primary with a main pool of `main_pool`: that
/// pool, the relaxed pool, the writers' pool and the notices' listener. The sum over the nodes
/// (and the command line's) must stay below the server's `max_connections`: beyond it
/// PostgreSQL refuses the connection and a request waiting for one answers `database_busy`.
pub fn connections_per_node(main_pool: u32) -> u32 {
    main_pool + RELAXED_POOL_SIZE + WRITERS_POOL_SIZE + 1
}

/// How long a read waits for a standby connection before it runs on the primary instead.
const STANDBY_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

#[async_trait]
impl SqlBackend for PgBackend {
    fn kind(&self) -> Backend {
        Backend::Postgres
    }

    fn pool(&self) -> &Pool {
        &self.any_pool
    }

    async fn migrate(&self) -> Result<(), StorageError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// A transaction for appending; the head row lock is taken by `append`.
    async fn notify_in(&self, tx: &mut Tx, notices: &[String]) -> Result<(), sqlx::Error> {
        for notice in notices {
            super::db::query("SELECT pg_notify($1, $2)")
                .bind(super::notices::CHANNEL)
                .bind(notice.as_str())
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    fn notify_committed(&self, _notices: &[String]) {}

    async fn publish(&self, notice: &str) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(super::notices::CHANNEL)
            .bind(notice)
            .execute(&self.pool)
            .await
            .map(drop)
    }

    fn subscribe(&self) -> NoticeFeed {
        // A pool of one connection of its own, kept open: the listener's, reconnected through it.
        let options = (*self.pool.connect_options()).clone();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        let (sender, receiver) = NoticeFeed::channel();
        NoticeFeed::new(receiver, tokio::spawn(listen(pool, sender)))
    }

    async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        Ok(Tx::Pg(self.for_caller().begin().await?))
    }

    /// Row writers (settlement, reversal) lock their rows first and take the gate and the
    /// ledger head only to post, so a settlement's long bulk phase runs while tills go on
    /// redeeming.
    fn gate_before_row_locks(&self) -> bool {
        false
    }

    /// The writers' pool's size; no more than the main pool's where a writer runs among the
    /// requests (its thread could not be made).
    fn writer_connections(&self) -> usize {
        self.for_caller().options().get_max_connections().min(WRITERS_POOL_SIZE) as usize
    }

    /// Writers serialize on the `ledger_head` row, which keeps sequence numbers gapless
    /// across processes.
    fn lock_head_sql(&self) -> &'static str {
        "SELECT seq, hash, posted_at_us FROM ledger_head WHERE id = 1 FOR UPDATE"
    }

    fn for_update(&self) -> &'static str {
        " FOR UPDATE"
    }

    /// A transaction-scoped advisory lock on the settlement id (`finance.rs`, `lock_settlement`).
    fn settlement_lock_sql(&self) -> Option<&'static str> {
        Some("SELECT pg_advisory_xact_lock($1)")
    }

    /// Set around a settlement chunk's UPDATE: a bitmap scan, which visits the chunk's rows in
    /// table order, instead of an index scan in merchant order, which visits the table's pages at
    /// random, many of them more than once (`BENCHMARKS.md`, "Settlement in chunks").
    fn settlement_scan_sql(&self) -> Option<(&'static str, &'static str)> {
        Some(("SET LOCAL enable_indexscan = off", "SET LOCAL enable_indexscan TO DEFAULT"))
    }

    // The till's coalesced reads and the request-nonce insert as one fixed statement each, arrays
    // through `= ANY` and `UNNEST`: prepared once per connection and planned once. Built with an
    // `IN (...)` list, every batch size was its own statement, and re-preparing and re-planning them
    // was about a tenth of the machine's CPU in `wenhui bench redemptions` (perf).
    async fn inserted_nonce_rows(
        &self,
        rows: &[(TerminalId, String)],
        at_us: i64,
    ) -> Result<Vec<(TerminalId, String)>, sqlx::Error> {
        sqlx::query_as(
            "INSERT INTO terminal_nonces (terminal_id, nonce, seen_at_us) \
             SELECT t, n, $3 FROM UNNEST($1::uuid[], $2::text[]) AS k(t, n) \
             ON CONFLICT DO NOTHING RETURNING terminal_id, nonce",
        )
        .bind(rows.iter().map(|(terminal, _)| *terminal).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, nonce)| nonce.clone()).collect::<Vec<_>>())
        .bind(at_us)
        .fetch_all(&self.relaxed_pool)
        .await
    }

    /// Deletes up to `max_rows` rows of `target` older than `cutoff` by their row addresses (a
    /// key `IN (...)` form hash-joins the whole table on every batch), on the relaxed pool: a
    /// delete lost in a crash is done again by the next prune.
    async fn delete_old_rows(
        &self,
        target: super::PruneTarget,
        cutoff: crate::domain::time::Timestamp,
        max_rows: u32,
    ) -> Result<u64, sqlx::Error> {
        let super::PruneTarget { table, older, oldest_first } = target;
        let sql = sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE {older} AND ctid = ANY(ARRAY( \
             SELECT ctid FROM {table} WHERE {older} {oldest_first} LIMIT $2))"
        ));
        let done = sqlx::query(sql)
            .bind(cutoff.unix_us())
            .bind(i64::from(max_rows))
            .execute(&self.relaxed_pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn voucher_rows(&self, ids: &[VoucherId]) -> Result<Vec<super::seasons::VoucherRow>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM vouchers WHERE id = ANY($1::uuid[])",
            super::seasons::VOUCHER_COLUMNS
        ));
        sqlx::query_as(sql).bind(ids.to_vec()).fetch_all(&self.pool).await
    }

    async fn first_voucher_page_rows(
        &self,
        asked: &[(CitizenId, i64)],
    ) -> Result<Vec<super::seasons::VoucherRow>, sqlx::Error> {
        // One index range per citizen (`vouchers_by_citizen_page`), read backwards to its limit.
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT page.* FROM UNNEST($1::uuid[], $2::bigint[]) AS asked(citizen_id, page_limit) \
             CROSS JOIN LATERAL (SELECT {} FROM vouchers WHERE vouchers.citizen_id = asked.citizen_id \
             ORDER BY claimed_at_us DESC, id DESC LIMIT asked.page_limit) AS page",
            super::seasons::VOUCHER_COLUMNS
        ));
        sqlx::query_as(sql)
            .bind(asked.iter().map(|(citizen_id, _)| *citizen_id).collect::<Vec<_>>())
            .bind(asked.iter().map(|(_, limit)| *limit).collect::<Vec<_>>())
            .fetch_all(&self.pool)
            .await
    }

    async fn live_card_payment_rows(
        &self,
        order_refs: &[String],
    ) -> Result<Vec<super::card::CardPaymentRow>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM card_payments WHERE reversed_at_us IS NULL AND order_ref = ANY($1::text[])",
            super::card::CARD_PAYMENT_COLUMNS
        ));
        sqlx::query_as(sql).bind(order_refs.to_vec()).fetch_all(&self.pool).await
    }

    // The redemption writer's per-group statements as fixed array statements (see above): with
    // `IN (...)` lists each group size was a new statement, prepared (a round trip of its own) and
    // planned inside the single writer's critical section.
    async fn group_rows(
        &self,
        tx: &mut Tx,
        group: &[super::NewRedemption],
    ) -> Result<super::till::GroupRows, sqlx::Error> {
        let answers = sqlx::query_as(
            "SELECT i.scope, i.idem_key FROM UNNEST($1::text[], $2::text[]) AS k(scope, idem_key) \
             CROSS JOIN LATERAL (SELECT scope, idem_key FROM idempotency_keys i \
                 WHERE i.scope = k.scope AND i.idem_key = k.idem_key OFFSET 0) i",
        )
        .bind(group.iter().map(|r| r.answer.scope.clone()).collect::<Vec<_>>())
        .bind(group.iter().map(|r| r.answer.key.clone()).collect::<Vec<_>>())
        .fetch_all(tx.pg()?)
        .await?;
        let nonces: Vec<(Vec<u8>,)> =
            sqlx::query_as("SELECT nonce FROM qr_nonces WHERE nonce = ANY($1::bytea[])")
                .bind(group.iter().map(|r| r.qr_nonce.clone()).collect::<Vec<_>>())
                .fetch_all(tx.pg()?)
                .await?;
        // A closed season's vouchers are refused as such, whatever their state.
        let vouchers = sqlx::query_as(
            "SELECT v.id, CASE WHEN s.closed_at_us IS NULL THEN v.status ELSE 'season_closed' END \
             FROM vouchers v JOIN seasons s ON s.id = v.season_id WHERE v.id = ANY($1::uuid[])",
        )
        .bind(group.iter().map(|r| r.voucher_id).collect::<Vec<_>>())
        .fetch_all(tx.pg()?)
        .await?;
        let card_orders = sqlx::query_as(
            "SELECT merchant_id, order_ref, id FROM card_payments WHERE reversed_at_us IS NULL AND order_ref = ANY($1::text[])",
        )
        .bind(group.iter().map(|r| r.order_ref.clone()).collect::<Vec<_>>())
        .fetch_all(tx.pg()?)
        .await?;
        Ok(super::till::GroupRows {
            answers,
            nonces: nonces.into_iter().map(|(n,)| n).collect(),
            vouchers,
            card_orders,
        })
    }

    /// `merchant_redemption_counts` rows of these (citizen, merchant, season) keys: one fixed
    /// statement whatever the group's size, a primary-key probe per key (`LATERAL ... LIMIT 1`
    /// keeps the planner from turning it into a join).
    async fn merchant_count_rows(
        &self,
        tx: &mut Tx,
        keys: &[(CitizenId, MerchantId, SeasonId)],
    ) -> Result<Vec<MerchantCountRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT c.citizen_id, c.merchant_id, c.season_id, c.live_count \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[]) AS k(citizen_id, merchant_id, season_id) \
             CROSS JOIN LATERAL (SELECT citizen_id, merchant_id, season_id, live_count \
                 FROM merchant_redemption_counts m WHERE m.season_id = k.season_id \
                 AND m.citizen_id = k.citizen_id AND m.merchant_id = k.merchant_id LIMIT 1) c",
        )
        .bind(keys.iter().map(|(citizen, _, _)| *citizen).collect::<Vec<_>>())
        .bind(keys.iter().map(|(_, merchant, _)| *merchant).collect::<Vec<_>>())
        .bind(keys.iter().map(|(_, _, season)| *season).collect::<Vec<_>>())
        .fetch_all(tx.pg()?)
        .await
    }

    /// Inserts the group's QR nonces and redemption rows and marks its vouchers redeemed;
    /// returns how many vouchers changed (all of them, or the caller rolls back).
    async fn insert_redemption_rows(
        &self,
        tx: &mut Tx,
        accepted: &[&super::NewRedemption],
    ) -> Result<u64, sqlx::Error> {
        sqlx::query(
            "INSERT INTO qr_nonces (nonce, subject_id, used_at_us) \
             SELECT * FROM UNNEST($1::bytea[], $2::uuid[], $3::bigint[])",
        )
        .bind(accepted.iter().map(|r| r.qr_nonce.clone()).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.voucher_id).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.redeemed_at.unix_us()).collect::<Vec<_>>())
        .execute(tx.pg()?)
        .await?;
        let updated = sqlx::query(
            "UPDATE vouchers SET status = 'redeemed' WHERE status = 'active' AND id = ANY($1::uuid[])",
        )
        .bind(accepted.iter().map(|r| r.voucher_id).collect::<Vec<_>>())
        .execute(tx.pg()?)
        .await?;
        sqlx::query(
            "INSERT INTO redemptions (id, voucher_id, merchant_id, terminal_id, season_id, batch_id, order_ref, \
             order_slot, order_amount_fen, discount_fen, funders, redeemed_at_us, \
             citizen_id, claimed_at_us, citizen_home_digits) \
             SELECT u.*, v.citizen_id, v.claimed_at_us, substr(c.id_masked, 1, 4) \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[], \
             $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::text[], $12::bigint[]) \
             AS u (id, voucher_id, merchant_id, terminal_id, season_id, batch_id, order_ref, order_slot, \
             order_amount_fen, discount_fen, funders, redeemed_at_us) \
             LEFT JOIN vouchers v ON v.id = u.voucher_id \
             LEFT JOIN citizens c ON c.id = v.citizen_id",
        )
        .bind(accepted.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.voucher_id).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.merchant_id).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.terminal_id).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.season_id).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.batch_id).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.order_ref.clone()).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.order_slot.clone()).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.order_amount_fen).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.discount_fen).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.funders_json.clone()).collect::<Vec<_>>())
        .bind(accepted.iter().map(|r| r.redeemed_at.unix_us()).collect::<Vec<_>>())
        .execute(tx.pg()?)
        .await?;
        Ok(updated.rows_affected())
    }

    /// SQL: the calendar month in CST of a `*_at_us` column as an integer YYYYMM
    /// (`domain::finance::cst_month`).
    fn cst_month_sql(&self, col: &str) -> String {
        format!(
            "CAST(to_char(to_timestamp(({col} + 28800000000) / 1000000) AT TIME ZONE 'UTC', 'YYYYMM') AS INTEGER)"
        )
    }

    fn uuid_text_sql(&self, col: &str) -> String {
        format!("{col}::text")
    }

    /// SQL: the join condition "journal entry `e` is `kind:<col>`", for the entries-to-rows
    /// checks. Compared as text, so the join hashes the reference as it is; parsing the UUID
    /// out of a million references (a regular expression guarding the cast) took 6 µs a row.
    fn entry_names_sql(&self, kind: &str, col: &str) -> String {
        format!("e.reference = '{kind}:' || {col}::text")
    }

    /// The link checks' read transaction: one snapshot for all of them, and hash joins. The
    /// planner has no statistics on `'claim:' || id::text` and would sort both sides (with
    /// external merges at a million rows) instead of hashing: 4.5 s against 1.3 s.
    async fn begin_link_checks(&self) -> Result<Tx, sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
        sqlx::raw_sql("SET LOCAL work_mem = '64MB'; SET LOCAL enable_mergejoin = off")
            .execute(&mut *tx)
            .await?;
        Ok(Tx::Pg(tx))
    }

    /// The live redemptions on these (merchant, order_ref) pairs with their batch's issuer: one
    /// probe of `redemptions_one_per_order` per pair, forced by the lateral subquery (`OFFSET 0`
    /// keeps it from being flattened into a join). A plain join planned while the table had few
    /// rows and no statistics (the first minutes of a season) hash-joined every live redemption:
    /// 6 ms a group in `wenhui bench redemptions`, against 0.3 ms for this shape.
    // The claim writer's lookups before its transaction, and its season totals, as fixed array
    // statements (see above): with `IN (...)` and `VALUES` lists each group size was a new
    // statement, prepared (a round trip of its own) and parsed inside the single writer's turn.
    async fn answer_rows(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<super::seasons::ScopedAnswerRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT i.scope, i.idem_key, i.request_hash, i.status, i.body \
             FROM UNNEST($1::text[], $2::text[]) AS k(scope, idem_key) \
             CROSS JOIN LATERAL (SELECT scope, idem_key, request_hash, status, body FROM idempotency_keys i \
                 WHERE i.scope = k.scope AND i.idem_key = k.idem_key OFFSET 0) i",
        )
        .bind(keys.iter().map(|(scope, _)| scope.clone()).collect::<Vec<_>>())
        .bind(keys.iter().map(|(_, key)| key.clone()).collect::<Vec<_>>())
        .fetch_all(self.for_caller())
        .await
    }

    async fn holding_rows(
        &self,
        batch_id: BatchId,
        season_id: SeasonId,
        month: i32,
        citizens: &[CitizenId],
    ) -> Result<(Vec<super::seasons::LiveSlotRow>, Vec<super::seasons::SeasonTotalRow>), sqlx::Error> {
        let slots = sqlx::query_as(HOLDING_SLOTS_SQL)
            .bind(batch_id)
            .bind(citizens.to_vec())
            .fetch_all(self.for_caller())
            .await?;
        let totals = sqlx::query_as(
            "SELECT citizen_id, period, claimed_fen FROM citizen_season_totals \
             WHERE season_id = $1 AND period IN (0, $2) AND citizen_id = ANY($3::uuid[])",
        )
        .bind(season_id)
        .bind(month)
        .bind(citizens.to_vec())
        .fetch_all(self.for_caller())
        .await?;
        Ok((slots, totals))
    }

    async fn raise_season_totals(
        &self,
        tx: &mut Tx,
        rows: &[super::SeasonTotalDelta],
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO citizen_season_totals (season_id, citizen_id, period, claimed_fen, cap_fen) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::bigint[], $5::bigint[]) \
             ON CONFLICT (season_id, citizen_id, period) DO UPDATE SET \
             claimed_fen = citizen_season_totals.claimed_fen + excluded.claimed_fen",
        )
        .bind(rows.iter().map(|d| d.season_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|d| d.citizen_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|d| d.period).collect::<Vec<_>>())
        .bind(rows.iter().map(|d| d.delta_fen).collect::<Vec<_>>())
        .bind(rows.iter().map(|d| d.cap_fen).collect::<Vec<_>>())
        .execute(tx.pg()?)
        .await?;
        Ok(())
    }

    async fn lower_season_totals(
        &self,
        tx: &mut Tx,
        rows: &[super::SeasonTotalDelta],
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE citizen_season_totals t SET claimed_fen = t.claimed_fen + d.delta_fen \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::bigint[]) AS d(season_id, citizen_id, period, delta_fen) \
             WHERE t.season_id = d.season_id AND t.citizen_id = d.citizen_id AND t.period = d.period",
        )
        .bind(rows.iter().map(|d| d.season_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|d| d.citizen_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|d| d.period).collect::<Vec<_>>())
        .bind(rows.iter().map(|d| d.delta_fen).collect::<Vec<_>>())
        .execute(tx.pg()?)
        .await?;
        Ok(())
    }

    async fn live_orders(
        &self,
        tx: &mut Tx,
        pairs: &[(MerchantId, String)],
    ) -> Result<Vec<LiveOrderRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT r.merchant_id, r.order_ref, r.order_slot, b.issuer \
             FROM UNNEST($1::uuid[], $2::text[]) AS k(merchant_id, order_ref) \
             CROSS JOIN LATERAL (SELECT r.merchant_id, r.order_ref, r.order_slot, r.batch_id FROM redemptions r \
                 WHERE r.merchant_id = k.merchant_id AND r.order_ref = k.order_ref AND r.reversed_at_us IS NULL OFFSET 0) r \
             JOIN batches b ON b.id = r.batch_id",
        )
        .bind(pairs.iter().map(|(merchant, _)| *merchant).collect::<Vec<_>>())
        .bind(pairs.iter().map(|(_, order_ref)| order_ref.clone()).collect::<Vec<_>>())
        .fetch_all(tx.pg()?)
        .await
    }

    async fn insert_answer_rows(
        &self,
        tx: &mut Tx,
        rows: &[super::IdemRecord],
        now_us: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, idem_key, request_hash, status, body, created_at_us) \
             SELECT s, k, h, st, b, $6 FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::int[], $5::text[]) AS t(s, k, h, st, b)",
        )
        .bind(rows.iter().map(|a| a.scope.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.key.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.request_hash.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| i32::from(a.status)).collect::<Vec<_>>())
        .bind(rows.iter().map(|a| a.body.clone()).collect::<Vec<_>>())
        .bind(now_us)
        .execute(tx.pg()?)
        .await?;
        Ok(())
    }

    async fn entries_by_reference(
        &self,
        tx: &mut Tx,
        references: Vec<String>,
    ) -> Result<Vec<super::ledger::EntryRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT seq, id, kind, reference, posted_at_us, prev_hash, hash FROM journal_entries WHERE reference = ANY($1)",
        )
        .bind(references)
        .fetch_all(tx.pg()?)
        .await
    }

    async fn balance_rows(&self, tx: &mut Tx, ids: Vec<i64>) -> Result<Vec<AccountBalanceRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT account_id, debits_fen, credits_fen FROM account_balances WHERE account_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(tx.pg()?)
        .await
    }

    /// One statement (data-modifying CTEs), as [`SqlBackend::write_sealed`]: the answers, the
    /// vouchers and the batches' counts, which return the batches they raised.
    async fn write_claim_rows(
        &self,
        tx: &mut Tx,
        rows: &super::backend::ClaimRows<'_>,
    ) -> Result<Option<BatchId>, sqlx::Error> {
        let (answers, vouchers, batches) = (rows.answers, rows.vouchers, rows.batch_claims);
        let raised: Vec<(BatchId,)> = sqlx::query_as(
            "WITH answers AS (\
                 INSERT INTO idempotency_keys (scope, idem_key, request_hash, status, body, created_at_us) \
                 SELECT s, k, h, st, b, $6 FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::int[], $5::text[]) \
                 AS t(s, k, h, st, b)), \
             vouchers AS (\
                 INSERT INTO vouchers (id, batch_id, season_id, citizen_id, slot, status, value_fen, claimed_at_us, \
                 expires_at_us) SELECT * FROM UNNEST($7::uuid[], $8::uuid[], $9::uuid[], $10::uuid[], $11::int[], \
                 $12::text[], $13::bigint[], $14::bigint[], $15::bigint[])) \
             UPDATE batches b SET claimed_count = b.claimed_count + c.claimed \
             FROM UNNEST($16::uuid[], $17::bigint[], $18::bigint[]) AS c(id, claimed, released) \
             WHERE b.id = c.id AND b.reserve_returned_at_us IS NULL \
             AND b.claimed_count + c.claimed - b.returned_count <= c.released \
             RETURNING b.id",
        )
        .bind(answers.iter().map(|a| a.scope.clone()).collect::<Vec<_>>())
        .bind(answers.iter().map(|a| a.key.clone()).collect::<Vec<_>>())
        .bind(answers.iter().map(|a| a.request_hash.clone()).collect::<Vec<_>>())
        .bind(answers.iter().map(|a| i32::from(a.status)).collect::<Vec<_>>())
        .bind(answers.iter().map(|a| a.body.clone()).collect::<Vec<_>>())
        .bind(rows.now_us)
        .bind(vouchers.iter().map(|v| v.id).collect::<Vec<_>>())
        .bind(vouchers.iter().map(|v| v.batch_id).collect::<Vec<_>>())
        .bind(vouchers.iter().map(|v| v.season_id).collect::<Vec<_>>())
        .bind(vouchers.iter().map(|v| v.citizen_id).collect::<Vec<_>>())
        .bind(vouchers.iter().map(|v| v.slot as i32).collect::<Vec<_>>())
        .bind(vouchers.iter().map(|v| v.status.as_str().to_owned()).collect::<Vec<_>>())
        .bind(vouchers.iter().map(|v| v.value.as_fen()).collect::<Vec<_>>())
        .bind(vouchers.iter().map(|v| v.claimed_at.unix_us()).collect::<Vec<_>>())
        .bind(vouchers.iter().map(|v| v.expires_at.unix_us()).collect::<Vec<_>>())
        .bind(batches.iter().map(|(id, _, _)| *id).collect::<Vec<_>>())
        .bind(batches.iter().map(|(_, claimed, _)| *claimed).collect::<Vec<_>>())
        .bind(batches.iter().map(|(_, _, released)| *released).collect::<Vec<_>>())
        .fetch_all(tx.pg()?)
        .await?;
        Ok(batches.iter().map(|(id, _, _)| *id).find(|id| !raised.iter().any(|(r,)| r == id)))
    }

    /// One statement (data-modifying CTEs) for the whole append: four statements were four
    /// round trips, each waiting for this backend and then for the writer to be scheduled again
    /// on a node whose cores serve a rush (about 0.5 ms each, measured in the claim writer).
    async fn write_sealed(&self, tx: &mut Tx, rows: &super::ledger::SealedRows) -> Result<(), sqlx::Error> {
        let (balances, entries, postings) = (&rows.balances, &rows.entries, &rows.postings);
        sqlx::query(
            "WITH balances AS (\
                 INSERT INTO account_balances (account_id, debits_fen, credits_fen) \
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) \
                 ON CONFLICT (account_id) DO UPDATE \
                 SET debits_fen = excluded.debits_fen, credits_fen = excluded.credits_fen), \
             entries AS (\
                 INSERT INTO journal_entries (seq, id, kind, reference, posted_at_us, prev_hash, hash) \
                 SELECT * FROM UNNEST($4::bigint[], $5::uuid[], $6::text[], $7::text[], $8::bigint[], \
                 $9::bytea[], $10::bytea[])), \
             postings AS (\
                 INSERT INTO postings (entry_seq, idx, account_id, side, amount_fen) \
                 SELECT * FROM UNNEST($11::bigint[], $12::int[], $13::bigint[], $14::text[], $15::bigint[])) \
             UPDATE ledger_head SET seq = $16, hash = $17, posted_at_us = $18 WHERE id = 1",
        )
        .bind(balances.iter().map(|row| row.account_id).collect::<Vec<_>>())
        .bind(balances.iter().map(|row| row.debits_fen).collect::<Vec<_>>())
        .bind(balances.iter().map(|row| row.credits_fen).collect::<Vec<_>>())
        .bind(entries.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(entries.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(entries.iter().map(|r| r.kind.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|r| r.reference.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|r| r.posted_at_us).collect::<Vec<_>>())
        .bind(entries.iter().map(|r| r.prev_hash.clone()).collect::<Vec<_>>())
        .bind(entries.iter().map(|r| r.hash.clone()).collect::<Vec<_>>())
        .bind(postings.iter().map(|r| r.entry_seq).collect::<Vec<_>>())
        .bind(postings.iter().map(|r| r.idx).collect::<Vec<_>>())
        .bind(postings.iter().map(|r| r.account_id).collect::<Vec<_>>())
        .bind(postings.iter().map(|r| r.side.to_owned()).collect::<Vec<_>>())
        .bind(postings.iter().map(|r| r.amount_fen).collect::<Vec<_>>())
        .bind(rows.head.seq)
        .bind(rows.head.hash.0.to_vec())
        .bind(rows.head.posted_at.unix_us())
        .execute(tx.pg()?)
        .await?;
        Ok(())
    }
}

/// How long the listener waits before connecting again after a failure.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Listens on the notices' channel until `out` is dropped: a [`Notice::Resync`] each time the
/// listening connection is (re)established, then every notice as it arrives.
async fn listen(pool: PgPool, out: tokio::sync::mpsc::Sender<Notice>) {
    loop {
        let connected = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.ignore_pool_close_event(true);
            listener.listen(super::notices::CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match connected.await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "listening for other nodes' notices failed; retrying");
                tokio::time::sleep(LISTEN_RETRY).await;
                continue;
            }
        };
        if out.send(Notice::Resync).await.is_err() {
            return;
        }
        loop {
            let notice = match listener.try_recv().await {
                Ok(Some(notification)) => Notice::Received(notification.payload().to_owned()),
                Ok(None) => {
                    tracing::warn!("the notices' connection was lost and is back: forgetting caches");
                    Notice::Resync
                }
                Err(error) => {
                    tracing::warn!(%error, "the notices' connection failed; reconnecting");
                    break;
                }
            };
            if out.send(notice).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

/// The live slots a group's citizens hold in a batch, read as the claim writer decides (`$1` the
/// batch, `$2` the citizens). One probe of `vouchers_live_slot` per citizen: as
/// `citizen_id = ANY($2)` beside `batch_id = $1`, the planner, whose statistics lag a rush's
/// inserts, scanned the batch's every live voucher and filtered them, a read that grew with
/// the batch (1.2 ms a group at 20,000 vouchers). The suite checks the plan (`tests/suite/claims.rs`).
#[doc(hidden)]
pub const HOLDING_SLOTS_SQL: &str = "SELECT c.citizen_id, v.slot FROM UNNEST($2::uuid[]) AS c(citizen_id) \
     CROSS JOIN LATERAL (SELECT slot FROM vouchers v WHERE v.batch_id = $1 AND v.citizen_id = c.citizen_id \
     AND v.status <> 'expired' OFFSET 0) v";
