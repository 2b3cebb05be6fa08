//! SQLite: the embedded default. WAL journal, `synchronous = FULL` (an acknowledged write
//! survives power loss, not only a crash), and every write transaction begins `IMMEDIATE` so it
//! waits for the single writer's lock instead of failing with SQLITE_BUSY halfway through.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::backend::{AccountBalanceRow, LiveOrderRow, MerchantCountRow, SqlBackend};
use super::db::{Bind, Pool, QueryBuilder, Tx, query};
use super::{Backend, StorageError};
use crate::domain::ids::{BatchId, CitizenId, MerchantId, SeasonId, TerminalId, VoucherId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug)]
pub(crate) struct SqliteBackend {
    pool: SqlitePool,
    /// The same pool, as the shared logic takes it.
    any_pool: Pool,
    /// The in-process channel of change notices of this database (`notices.rs`).
    notices: tokio::sync::broadcast::Sender<String>,
}

impl SqliteBackend {
    pub async fn connect(url: &str, max_connections: u32) -> Result<SqliteBackend, StorageError> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        // No ping before a connection is handed out (sqlx's default): a file does not hang
        // up, and the ping is a round trip to the connection's worker thread.
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(max_connections.clamp(1, 16))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect)
            .await?;
        let notices = super::notices::local_hub(url);
        Ok(SqliteBackend { any_pool: Pool::Sqlite(pool.clone()), pool, notices })
    }
}

#[async_trait]
impl SqlBackend for SqliteBackend {
    fn kind(&self) -> Backend {
        Backend::Sqlite
    }

    fn pool(&self) -> &Pool {
        &self.any_pool
    }

    async fn migrate(&self) -> Result<(), StorageError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// `BEGIN IMMEDIATE`: takes SQLite's write lock now, so the transaction is the only writer
    /// and waits for the lock instead of failing with SQLITE_BUSY halfway through.
    async fn notify_in(&self, _tx: &mut Tx, _notices: &[String]) -> Result<(), sqlx::Error> {
        Ok(())
    }

    fn notify_committed(&self, notices: &[String]) {
        for notice in notices {
            // No subscriber (no server in this process) is not an error.
            let _ = self.notices.send(notice.clone());
        }
    }

    async fn publish(&self, notice: &str) -> Result<(), sqlx::Error> {
        let _ = self.notices.send(notice.to_owned());
        Ok(())
    }

    fn subscribe(&self) -> super::notices::NoticeFeed {
        super::notices::local_feed(&self.notices)
    }

    async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        Ok(Tx::Sqlite(self.pool.begin_with("BEGIN IMMEDIATE").await?))
    }

    /// SQLite has one writer at a time, so the gate comes first, as for every write.
    fn gate_before_row_locks(&self) -> bool {
        true
    }

    /// One: a write transaction begins `IMMEDIATE`, and SQLite has one writer.
    fn writer_connections(&self) -> usize {
        1
    }

    /// No lock to take: `BEGIN IMMEDIATE` already made the transaction the only writer.
    fn lock_head_sql(&self) -> &'static str {
        "SELECT seq, hash, posted_at_us FROM ledger_head WHERE id = 1"
    }

    /// SQLite has no row locks: `BEGIN IMMEDIATE` already made the transaction the only writer.
    fn for_update(&self) -> &'static str {
        ""
    }

    /// SQLite has one writer at a time: a settlement run's transactions are ordered already.
    fn settlement_lock_sql(&self) -> Option<&'static str> {
        None
    }

    /// No planner settings around a settlement chunk's UPDATE (see the PostgreSQL twin).
    fn settlement_scan_sql(&self) -> Option<(&'static str, &'static str)> {
        None
    }

    // The till's coalesced reads and the request-nonce insert, with `IN (...)` lists (SQLite
    // prepares and plans a statement in-process, cheaply).
    /// Deletes up to `max_rows` rows of `target` older than `cutoff`, by rowid through the
    /// target's age index.
    async fn delete_old_rows(
        &self,
        target: super::PruneTarget,
        cutoff: crate::domain::time::Timestamp,
        max_rows: u32,
    ) -> Result<u64, sqlx::Error> {
        let super::PruneTarget { table, older, oldest_first } = target;
        let sql = sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE {older} AND rowid IN \
             (SELECT rowid FROM {table} WHERE {older} {oldest_first} LIMIT $2)"
        ));
        let done =
            query(sql).bind(cutoff.unix_us()).bind(i64::from(max_rows)).execute(&self.any_pool).await?;
        Ok(done.rows_affected())
    }

    async fn inserted_nonce_rows(
        &self,
        rows: &[(TerminalId, String)],
        at_us: i64,
    ) -> Result<Vec<(TerminalId, String)>, sqlx::Error> {
        let mut q = QueryBuilder::new("INSERT INTO terminal_nonces (terminal_id, nonce, seen_at_us) ");
        q.push_values(rows, |mut row, (terminal, nonce)| {
            row.push_bind(*terminal).push_bind(nonce.clone()).push_bind(at_us);
        });
        q.push(" ON CONFLICT DO NOTHING RETURNING terminal_id, nonce");
        q.build_query_as().fetch_all(&self.any_pool).await
    }

    async fn voucher_rows(&self, ids: &[VoucherId]) -> Result<Vec<super::seasons::VoucherRow>, sqlx::Error> {
        let prefix = format!("SELECT {} FROM vouchers WHERE id IN (", super::seasons::VOUCHER_COLUMNS);
        in_list(prefix, ids.iter().copied()).build_query_as().fetch_all(&self.any_pool).await
    }

    async fn first_voucher_page_rows(
        &self,
        asked: &[(CitizenId, i64)],
    ) -> Result<Vec<super::seasons::VoucherRow>, sqlx::Error> {
        // Numbered newest first per citizen; the largest limit asked bounds every citizen's rows.
        let columns = super::seasons::VOUCHER_COLUMNS;
        let most = asked.iter().map(|(_, limit)| *limit).max().unwrap_or(0);
        let prefix = format!(
            "SELECT {columns} FROM (SELECT {columns}, ROW_NUMBER() OVER (PARTITION BY citizen_id \
             ORDER BY claimed_at_us DESC, id DESC) AS newest FROM vouchers WHERE citizen_id IN ("
        );
        let mut select = in_list(prefix, asked.iter().map(|(citizen_id, _)| *citizen_id));
        select.push(") WHERE newest <= ").push_bind(most);
        select.build_query_as().fetch_all(&self.any_pool).await
    }

    async fn live_card_payment_rows(
        &self,
        order_refs: &[String],
    ) -> Result<Vec<super::card::CardPaymentRow>, sqlx::Error> {
        let prefix = format!(
            "SELECT {} FROM card_payments WHERE reversed_at_us IS NULL AND order_ref IN (",
            super::card::CARD_PAYMENT_COLUMNS
        );
        in_list(prefix, order_refs.iter().cloned()).build_query_as().fetch_all(&self.any_pool).await
    }

    // The redemption writer's per-group statements, with `IN` and `VALUES` lists.
    async fn group_rows(
        &self,
        tx: &mut Tx,
        group: &[super::NewRedemption],
    ) -> Result<super::till::GroupRows, sqlx::Error> {
        // Row values, so the primary key is probed once per pair.
        let mut q = in_pairs(
            "SELECT scope, idem_key FROM idempotency_keys WHERE (scope, idem_key) IN (",
            group.iter().map(|r| (r.answer.scope.clone(), r.answer.key.clone())),
        );
        let answers = q.build_query_as().fetch_all(&mut *tx).await?;
        let mut q =
            in_list("SELECT nonce FROM qr_nonces WHERE nonce IN (", group.iter().map(|r| r.qr_nonce.clone()));
        let nonces: Vec<(Vec<u8>,)> = q.build_query_as().fetch_all(&mut *tx).await?;
        // A closed season's vouchers are refused as such, whatever their state.
        let mut q = in_list(
            "SELECT v.id, CASE WHEN s.closed_at_us IS NULL THEN v.status ELSE 'season_closed' END \
             FROM vouchers v JOIN seasons s ON s.id = v.season_id WHERE v.id IN (",
            group.iter().map(|r| r.voucher_id),
        );
        let vouchers = q.build_query_as().fetch_all(&mut *tx).await?;
        let mut q = in_list(
            "SELECT merchant_id, order_ref, id FROM card_payments WHERE reversed_at_us IS NULL AND order_ref IN (",
            group.iter().map(|r| r.order_ref.clone()),
        );
        let card_orders = q.build_query_as().fetch_all(&mut *tx).await?;
        Ok(super::till::GroupRows {
            answers,
            nonces: nonces.into_iter().map(|(n,)| n).collect(),
            vouchers,
            card_orders,
        })
    }

    /// `merchant_redemption_counts` rows of these (citizen, merchant, season) keys: a
    /// primary-key equality per key, `UNION ALL` (SQLite prepares a statement cheaply).
    async fn merchant_count_rows(
        &self,
        tx: &mut Tx,
        keys: &[(CitizenId, MerchantId, SeasonId)],
    ) -> Result<Vec<MerchantCountRow>, sqlx::Error> {
        let mut query = QueryBuilder::new("");
        for (n, (citizen, merchant, season)) in keys.iter().enumerate() {
            if n > 0 {
                query.push(" UNION ALL ");
            }
            query.push(
                "SELECT citizen_id, merchant_id, season_id, live_count FROM merchant_redemption_counts \
                 WHERE season_id = ",
            );
            query.push_bind(*season).push(" AND citizen_id = ").push_bind(*citizen);
            query.push(" AND merchant_id = ").push_bind(*merchant);
        }
        query.build_query_as().fetch_all(&mut *tx).await
    }

    /// Inserts the group's QR nonces and redemption rows and marks its vouchers redeemed;
    /// returns how many vouchers changed (all of them, or the caller rolls back).
    async fn insert_redemption_rows(
        &self,
        tx: &mut Tx,
        accepted: &[&super::NewRedemption],
    ) -> Result<u64, sqlx::Error> {
        let mut q = QueryBuilder::new("INSERT INTO qr_nonces (nonce, subject_id, used_at_us) ");
        q.push_values(accepted, |mut row, r| {
            row.push_bind(r.qr_nonce.clone()).push_bind(r.voucher_id).push_bind(r.redeemed_at.unix_us());
        });
        q.build().execute(&mut *tx).await?;
        let mut q = in_list(
            "UPDATE vouchers SET status = 'redeemed' WHERE status = 'active' AND id IN (",
            accepted.iter().map(|r| r.voucher_id),
        );
        let updated = q.build().execute(&mut *tx).await?;
        // The redemption carries its voucher's citizen and claim time and the citizen's home city
        // (migration 0032: what cash-out scoring reads), taken from their rows as it is written.
        let mut q = QueryBuilder::new(
            "INSERT INTO redemptions (id, voucher_id, merchant_id, terminal_id, season_id, batch_id, order_ref, \
             order_slot, order_amount_fen, discount_fen, funders, redeemed_at_us, \
             citizen_id, claimed_at_us, citizen_home_digits) \
             SELECT u.column1, u.column2, u.column3, u.column4, u.column5, u.column6, u.column7, u.column8, \
             u.column9, u.column10, u.column11, u.column12, v.citizen_id, v.claimed_at_us, substr(c.id_masked, 1, 4) \
             FROM (",
        );
        q.push_values(accepted, |mut row, r| {
            row.push_bind(r.id)
                .push_bind(r.voucher_id)
                .push_bind(r.merchant_id)
                .push_bind(r.terminal_id)
                .push_bind(r.season_id)
                .push_bind(r.batch_id)
                .push_bind(r.order_ref.clone())
                .push_bind(r.order_slot.clone())
                .push_bind(r.order_amount_fen)
                .push_bind(r.discount_fen)
                .push_bind(r.funders_json.clone())
                .push_bind(r.redeemed_at.unix_us());
        });
        q.push(") AS u LEFT JOIN vouchers v ON v.id = u.column2 LEFT JOIN citizens c ON c.id = v.citizen_id");
        q.build().execute(&mut *tx).await?;
        Ok(updated.rows_affected())
    }

    /// SQL: a UUID column as the text `Uuid`'s Display gives (how ledger references name rows).
    /// SQL: the calendar month in CST of a `*_at_us` column as an integer YYYYMM
    /// (`domain::finance::cst_month`).
    fn cst_month_sql(&self, col: &str) -> String {
        format!("CAST(strftime('%Y%m', ({col} + 28800000000) / 1000000, 'unixepoch') AS INTEGER)")
    }

    fn uuid_text_sql(&self, col: &str) -> String {
        format!(
            "lower(substr(hex({col}), 1, 8) || '-' || substr(hex({col}), 9, 4) || '-' || substr(hex({col}), 13, 4) || '-' || substr(hex({col}), 17, 4) || '-' || substr(hex({col}), 21, 12))"
        )
    }

    /// SQL: the join condition "journal entry `e` is `kind:<col>`", for the entries-to-rows
    /// checks: the UUID parsed out of the reference (NULL if it names none), so the row is
    /// found through its primary key.
    fn entry_names_sql(&self, kind: &str, col: &str) -> String {
        let from = kind.len() + 2;
        format!("{col} = unhex(replace(substr(e.reference, {from}), '-', ''))")
    }

    /// The link checks' read transaction: one snapshot for all of them.
    async fn begin_link_checks(&self) -> Result<Tx, sqlx::Error> {
        Ok(Tx::Sqlite(self.pool.begin().await?))
    }

    /// The answers, the batches' counts (a conditional UPDATE each), then the vouchers.
    async fn write_claim_rows(
        &self,
        tx: &mut Tx,
        rows: &super::backend::ClaimRows<'_>,
    ) -> Result<Option<BatchId>, sqlx::Error> {
        use super::ledger::INSERT_CHUNK_ROWS;
        for chunk in rows.answers.chunks(INSERT_CHUNK_ROWS) {
            self.insert_answer_rows(tx, chunk, rows.now_us).await?;
        }
        for (batch_id, count, released) in rows.batch_claims {
            let raised = query(
                "UPDATE batches SET claimed_count = claimed_count + $1 \
                 WHERE id = $2 AND reserve_returned_at_us IS NULL AND claimed_count + $1 - returned_count <= $3",
            )
            .bind(*count)
            .bind(*batch_id)
            .bind(*released)
            .execute(&mut *tx)
            .await?;
            if raised.rows_affected() != 1 {
                return Ok(Some(*batch_id));
            }
        }
        for chunk in rows.vouchers.chunks(INSERT_CHUNK_ROWS) {
            insert_voucher_rows(tx, chunk).await?;
        }
        Ok(None)
    }

    /// The live redemptions on these (merchant, order_ref) pairs with their batch's issuer, by
    /// row values: one probe of `redemptions_one_per_order` per pair.
    async fn answer_rows(
        &self,
        keys: &[(String, String)],
    ) -> Result<Vec<super::seasons::ScopedAnswerRow>, sqlx::Error> {
        // Row values: one primary-key probe per pair (scope IN .. AND key IN .. probes every
        // scope with every key).
        let prefix = "SELECT scope, idem_key, request_hash, status, body FROM idempotency_keys WHERE (scope, idem_key) IN (";
        in_pairs(prefix, keys.iter().cloned()).build_query_as().fetch_all(&self.any_pool).await
    }

    async fn holding_rows(
        &self,
        batch_id: BatchId,
        season_id: SeasonId,
        month: i32,
        citizens: &[CitizenId],
    ) -> Result<(Vec<super::seasons::LiveSlotRow>, Vec<super::seasons::SeasonTotalRow>), sqlx::Error> {
        let (slots_in, slots_batch) = HOLDING_SLOTS_SQL;
        let mut slots = in_list(slots_in, citizens.iter().copied());
        slots.push(slots_batch).push_bind(batch_id);
        let slots = slots.build_query_as().fetch_all(&self.any_pool).await?;
        let mut totals = in_list(
            "SELECT citizen_id, period, claimed_fen FROM citizen_season_totals WHERE citizen_id IN (",
            citizens.iter().copied(),
        );
        totals.push(" AND season_id = ").push_bind(season_id);
        totals.push(" AND period IN (0, ").push_bind(month).push(")");
        let totals = totals.build_query_as().fetch_all(&self.any_pool).await?;
        Ok((slots, totals))
    }

    async fn raise_season_totals(
        &self,
        tx: &mut Tx,
        rows: &[super::SeasonTotalDelta],
    ) -> Result<(), sqlx::Error> {
        let mut upsert = QueryBuilder::new(
            "INSERT INTO citizen_season_totals (season_id, citizen_id, period, claimed_fen, cap_fen) ",
        );
        upsert.push_values(rows, |mut row, d| {
            row.push_bind(d.season_id)
                .push_bind(d.citizen_id)
                .push_bind(d.period)
                .push_bind(d.delta_fen)
                .push_bind(d.cap_fen);
        });
        upsert.push(
            " ON CONFLICT (season_id, citizen_id, period) DO UPDATE SET \
             claimed_fen = citizen_season_totals.claimed_fen + excluded.claimed_fen",
        );
        upsert.build().execute(&mut *tx).await?;
        Ok(())
    }

    async fn lower_season_totals(
        &self,
        tx: &mut Tx,
        rows: &[super::SeasonTotalDelta],
    ) -> Result<(), sqlx::Error> {
        // `column1..4`: the names SQLite gives a VALUES list's columns.
        let mut update = QueryBuilder::new(
            "UPDATE citizen_season_totals SET claimed_fen = claimed_fen + d.column4 FROM (",
        );
        update.push_values(rows, |mut row, d| {
            row.push_bind(d.season_id).push_bind(d.citizen_id).push_bind(d.period).push_bind(d.delta_fen);
        });
        update.push(
            ") AS d WHERE citizen_season_totals.season_id = d.column1 \
             AND citizen_season_totals.citizen_id = d.column2 AND citizen_season_totals.period = d.column3",
        );
        update.build().execute(&mut *tx).await?;
        Ok(())
    }

    async fn live_orders(
        &self,
        tx: &mut Tx,
        pairs: &[(MerchantId, String)],
    ) -> Result<Vec<LiveOrderRow>, sqlx::Error> {
        let mut q = in_pairs(
            "SELECT r.merchant_id, r.order_ref, r.order_slot, b.issuer FROM redemptions r \
             JOIN batches b ON b.id = r.batch_id WHERE r.reversed_at_us IS NULL AND (r.merchant_id, r.order_ref) IN (",
            pairs.iter().cloned(),
        );
        q.build_query_as().fetch_all(&mut *tx).await
    }

    async fn insert_answer_rows(
        &self,
        tx: &mut Tx,
        rows: &[super::IdemRecord],
        now_us: i64,
    ) -> Result<(), sqlx::Error> {
        let mut insert = QueryBuilder::new(
            "INSERT INTO idempotency_keys (scope, idem_key, request_hash, status, body, created_at_us) ",
        );
        insert.push_values(rows, |mut row, a| {
            row.push_bind(a.scope.clone())
                .push_bind(a.key.clone())
                .push_bind(a.request_hash.clone())
                .push_bind(i32::from(a.status))
                .push_bind(a.body.clone())
                .push_bind(now_us);
        });
        insert.build().execute(&mut *tx).await?;
        Ok(())
    }

    async fn entries_by_reference(
        &self,
        tx: &mut Tx,
        references: Vec<String>,
    ) -> Result<Vec<super::ledger::EntryRow>, sqlx::Error> {
        in_list(
            "SELECT seq, id, kind, reference, posted_at_us, prev_hash, hash FROM journal_entries WHERE reference IN (",
            references,
        )
        .build_query_as().fetch_all(&mut *tx).await
    }

    async fn balance_rows(&self, tx: &mut Tx, ids: Vec<i64>) -> Result<Vec<AccountBalanceRow>, sqlx::Error> {
        in_list("SELECT account_id, debits_fen, credits_fen FROM account_balances WHERE account_id IN (", ids)
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
    }

    /// Multi-row statements, chunked under SQLite's bound-parameter limit: SQLite parses them
    /// in process, so their number costs no round trip.
    async fn write_sealed(&self, tx: &mut Tx, rows: &super::ledger::SealedRows) -> Result<(), sqlx::Error> {
        use super::ledger::INSERT_CHUNK_ROWS;
        for chunk in rows.balances.chunks(INSERT_CHUNK_ROWS) {
            upsert_balance_rows(tx, chunk).await?;
        }
        for chunk in rows.entries.chunks(INSERT_CHUNK_ROWS) {
            insert_entry_rows(tx, chunk).await?;
        }
        for chunk in rows.postings.chunks(INSERT_CHUNK_ROWS) {
            insert_posting_rows(tx, chunk).await?;
        }
        query("UPDATE ledger_head SET seq = $1, hash = $2, posted_at_us = $3 WHERE id = 1")
            .bind(rows.head.seq)
            .bind(rows.head.hash.0.to_vec())
            .bind(rows.head.posted_at.unix_us())
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

async fn upsert_balance_rows(tx: &mut Tx, rows: &[AccountBalanceRow]) -> Result<(), sqlx::Error> {
    let mut upsert = QueryBuilder::new("INSERT INTO account_balances (account_id, debits_fen, credits_fen) ");
    upsert.push_values(rows, |mut row, balance| {
        row.push_bind(balance.account_id).push_bind(balance.debits_fen).push_bind(balance.credits_fen);
    });
    upsert.push(
        " ON CONFLICT (account_id) DO UPDATE SET debits_fen = excluded.debits_fen, credits_fen = excluded.credits_fen",
    );
    upsert.build().execute(&mut *tx).await?;
    Ok(())
}

/// A multi-row VALUES insert (SQLite has no arrays; statements are parsed in process).
async fn insert_entry_rows(tx: &mut Tx, rows: &[super::ledger::EntryInsert]) -> Result<(), sqlx::Error> {
    let mut insert = QueryBuilder::new(
        "INSERT INTO journal_entries (seq, id, kind, reference, posted_at_us, prev_hash, hash) ",
    );
    insert.push_values(rows, |mut row, r| {
        row.push_bind(r.seq)
            .push_bind(r.id)
            .push_bind(r.kind.clone())
            .push_bind(r.reference.clone())
            .push_bind(r.posted_at_us)
            .push_bind(r.prev_hash.clone())
            .push_bind(r.hash.clone());
    });
    insert.build().execute(&mut *tx).await?;
    Ok(())
}

async fn insert_posting_rows(tx: &mut Tx, rows: &[super::ledger::PostingInsert]) -> Result<(), sqlx::Error> {
    let mut insert =
        QueryBuilder::new("INSERT INTO postings (entry_seq, idx, account_id, side, amount_fen) ");
    insert.push_values(rows, |mut row, r| {
        row.push_bind(r.entry_seq)
            .push_bind(r.idx)
            .push_bind(r.account_id)
            .push_bind(r.side)
            .push_bind(r.amount_fen);
    });
    insert.build().execute(&mut *tx).await?;
    Ok(())
}

/// `prefix` (ending in `IN (`), the values as bound parameters, and `)`.
fn in_list<T: Bind>(prefix: impl Into<String>, values: impl IntoIterator<Item = T>) -> QueryBuilder {
    let mut q = QueryBuilder::new(prefix);
    let mut list = q.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    q.push(")");
    q
}

/// `prefix` (ending in `IN (`), the pairs as row values `($1, $2)`, and `)`.
fn in_pairs<A: Bind, B: Bind>(
    prefix: impl Into<String>,
    pairs: impl IntoIterator<Item = (A, B)>,
) -> QueryBuilder {
    let mut q = QueryBuilder::new(prefix);
    let mut list = q.separated(", ");
    for (a, b) in pairs {
        list.push("(").push_bind_unseparated(a).push_unseparated(", ");
        list.push_bind_unseparated(b).push_unseparated(")");
    }
    q.push(")");
    q
}

async fn insert_voucher_rows(
    tx: &mut Tx,
    rows: &[crate::domain::season::Voucher],
) -> Result<(), sqlx::Error> {
    let mut insert = QueryBuilder::new(
        "INSERT INTO vouchers (id, batch_id, season_id, citizen_id, slot, status, value_fen, claimed_at_us, expires_at_us) ",
    );
    insert.push_values(rows, |mut row, v| {
        row.push_bind(v.id)
            .push_bind(v.batch_id)
            .push_bind(v.season_id)
            .push_bind(v.citizen_id)
            .push_bind(v.slot as i32)
            .push_bind(v.status.as_str())
            .push_bind(v.value.as_fen())
            .push_bind(v.claimed_at.unix_us())
            .push_bind(v.expires_at.unix_us());
    });
    insert.build().execute(&mut *tx).await?;
    Ok(())
}

/// The live slots a group's citizens hold in a batch, read as the claim writer decides: the
/// text before the citizens' `IN` list and before the batch's parameter. SQLite searches
/// `vouchers_live_slot` on both columns, one probe per citizen; the suite checks the plan
/// (`tests/suite/claims.rs`), as it does PostgreSQL's.
#[doc(hidden)]
pub const HOLDING_SLOTS_SQL: (&str, &str) = (
    "SELECT citizen_id, slot FROM vouchers WHERE status <> 'expired' AND citizen_id IN (",
    " AND batch_id = ",
);
