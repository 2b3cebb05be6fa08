//! What a backend must supply, as a trait the compiler checks, and the one store built on it.
//!
//! The storage logic (append, accounts, claims, redemptions, settlement, reports) is written
//! once, as methods of [`SqlStore`] in `ledger.rs`, `seasons.rs`, `till.rs`, `card.rs` and
//! `finance.rs`, running the same SQL text on either backend through `db.rs`. A backend
//! (`postgres/`, `sqlite/`) implements [`SqlBackend`]: how a write transaction begins, how the
//! chain head is locked, the SQL that differs by dialect, and the row operations whose fast
//! form differs (arrays through `UNNEST` on PostgreSQL, `IN` and `VALUES` lists on SQLite).

use std::sync::Arc;

use async_trait::async_trait;

use super::card::CardPaymentRow;
use super::db::{Pool, Tx};
use super::ledger::{AccountCache, EntryRow, SealedRows};
use super::seasons::{LiveSlotRow, ScopedAnswerRow, SeasonTotalRow, VoucherRow};
use super::till::GroupRows;
use super::{Backend, IdemRecord, NewRedemption, PruneTarget, SeasonTotalDelta, StorageError};
use crate::domain::ids::{BatchId, CitizenId, MerchantId, SeasonId, TerminalId, VoucherId};
use crate::domain::season::Voucher;
use crate::domain::time::{Clock, Timestamp};

/// An `account_balances` row: an account's maintained debits and credits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct AccountBalanceRow {
    pub account_id: i64,
    pub debits_fen: i64,
    pub credits_fen: i64,
}

/// A claim group's rows, as [`SqlBackend::write_claim_rows`] writes them.
pub(crate) struct ClaimRows<'a> {
    pub answers: &'a [IdemRecord],
    pub now_us: i64,
    /// `(batch, vouchers claimed, vouchers released by now)`, one per batch.
    pub batch_claims: &'a [(BatchId, i64, i64)],
    pub vouchers: &'a [Voucher],
}

/// A `merchant_redemption_counts` row: a citizen's live redemptions at a merchant in a season.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct MerchantCountRow {
    pub citizen_id: CitizenId,
    pub merchant_id: MerchantId,
    pub season_id: SeasonId,
    pub live_count: i32,
}

/// A live redemption on an order: its slot on the order and the issuer of its voucher's batch.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct LiveOrderRow {
    pub merchant_id: MerchantId,
    pub order_ref: String,
    pub order_slot: String,
    pub issuer: String,
}

/// The contract of a backend. Row operations take the transaction the caller began with
/// [`SqlBackend::begin_write`] and run one statement, or one small fixed group of them.
#[async_trait]
pub(crate) trait SqlBackend: Send + Sync + std::fmt::Debug + 'static {
    fn kind(&self) -> Backend;

    /// The pool every statement of the shared logic runs on.
    fn pool(&self) -> &Pool;

    async fn migrate(&self) -> Result<(), StorageError>;

    /// A transaction that may append to the ledger (the head row is locked by `lock_head_sql`).
    async fn begin_write(&self) -> Result<Tx, sqlx::Error>;

    /// Sends `notices` to every node if `tx` commits (PostgreSQL: `pg_notify` in `tx`, delivered
    /// on commit). A backend without transactional delivery sends them in
    /// [`SqlBackend::notify_committed`] instead.
    async fn notify_in(&self, tx: &mut Tx, notices: &[String]) -> Result<(), sqlx::Error>;

    /// Called right after the commit of a transaction given `notices` in
    /// [`SqlBackend::notify_in`]: SQLite's in-process channel sends them now.
    fn notify_committed(&self, notices: &[String]);

    /// Sends one notice to every node now, outside any transaction.
    async fn publish(&self, notice: &str) -> Result<(), sqlx::Error>;

    /// Every node's notices from now on (`notices.rs`).
    fn subscribe(&self) -> super::notices::NoticeFeed;

    /// Whether a writer that changes existing rows takes the process's write gate before its
    /// row locks (SQLite: one writer at a time) or only once they are held (PostgreSQL).
    fn gate_before_row_locks(&self) -> bool;

    /// How many write transactions the writers may hold at once (their pool's size).
    fn writer_connections(&self) -> usize;

    /// The read transaction of the reconciliation's link checks: one snapshot for them all.
    async fn begin_link_checks(&self) -> Result<Tx, sqlx::Error>;

    /// Reads (and, where the backend has row locks, locks) the ledger head:
    /// `seq, hash, posted_at_us`.
    fn lock_head_sql(&self) -> &'static str;

    /// Appended to a `SELECT` that locks the rows it reads until the transaction ends.
    fn for_update(&self) -> &'static str;

    /// Orders the transactions of one settlement run (a statement taking the settlement's
    /// lock key as `$1`), where the backend needs it.
    fn settlement_lock_sql(&self) -> Option<&'static str>;

    /// Statements set before and after a settlement chunk's UPDATE, where the backend needs them.
    fn settlement_scan_sql(&self) -> Option<(&'static str, &'static str)>;

    /// SQL: the calendar month in CST of a `*_at_us` column as an integer YYYYMM.
    fn cst_month_sql(&self, col: &str) -> String;

    /// SQL: a UUID column as the text `Uuid`'s Display gives (how ledger references name rows).
    fn uuid_text_sql(&self, col: &str) -> String;

    /// SQL: the join condition "journal entry `e` is `kind:<col>`".
    fn entry_names_sql(&self, kind: &str, col: &str) -> String;

    async fn inserted_nonce_rows(
        &self,
        rows: &[(TerminalId, String)],
        at_us: i64,
    ) -> Result<Vec<(TerminalId, String)>, sqlx::Error>;

    async fn delete_old_rows(
        &self,
        target: PruneTarget,
        cutoff: Timestamp,
        max_rows: u32,
    ) -> Result<u64, sqlx::Error>;

    async fn voucher_rows(&self, ids: &[VoucherId]) -> Result<Vec<VoucherRow>, sqlx::Error>;

    /// Each citizen's newest vouchers, at most the citizen's limit (or more: the caller sorts
    /// and cuts), for distinct citizens.
    async fn first_voucher_page_rows(
        &self,
        asked: &[(CitizenId, i64)],
    ) -> Result<Vec<VoucherRow>, sqlx::Error>;

    async fn live_card_payment_rows(&self, order_refs: &[String])
    -> Result<Vec<CardPaymentRow>, sqlx::Error>;

    async fn group_rows(&self, tx: &mut Tx, group: &[NewRedemption]) -> Result<GroupRows, sqlx::Error>;

    async fn merchant_count_rows(
        &self,
        tx: &mut Tx,
        keys: &[(CitizenId, MerchantId, SeasonId)],
    ) -> Result<Vec<MerchantCountRow>, sqlx::Error>;

    /// Inserts the group's QR nonces and redemption rows and marks its vouchers redeemed;
    /// returns how many vouchers changed (all of them, or the caller rolls back).
    async fn insert_redemption_rows(
        &self,
        tx: &mut Tx,
        accepted: &[&NewRedemption],
    ) -> Result<u64, sqlx::Error>;

    /// The stored answers of these (scope, key) pairs (those that have one): the claim
    /// writer's lookup, a primary-key probe per pair.
    async fn answer_rows(&self, keys: &[(String, String)]) -> Result<Vec<ScopedAnswerRow>, sqlx::Error>;

    /// Of these citizens: the slots of their live vouchers of `batch_id`, and their totals in
    /// `season_id` for the season (period 0) and for `month`.
    async fn holding_rows(
        &self,
        batch_id: BatchId,
        season_id: SeasonId,
        month: i32,
        citizens: &[CitizenId],
    ) -> Result<(Vec<LiveSlotRow>, Vec<SeasonTotalRow>), sqlx::Error>;

    /// Adds each (positive) `delta_fen` to its citizen's total, creating the row (with its
    /// `cap_fen`) when it is the first; one row per (season, citizen, period).
    async fn raise_season_totals(&self, tx: &mut Tx, rows: &[SeasonTotalDelta]) -> Result<(), sqlx::Error>;

    /// Adds each (negative) `delta_fen` to its citizen's existing total; one row per key.
    async fn lower_season_totals(&self, tx: &mut Tx, rows: &[SeasonTotalDelta]) -> Result<(), sqlx::Error>;

    /// The live redemptions on these (merchant, order_ref) pairs, with their batch's issuer.
    async fn live_orders(
        &self,
        tx: &mut Tx,
        pairs: &[(MerchantId, String)],
    ) -> Result<Vec<LiveOrderRow>, sqlx::Error>;

    async fn insert_answer_rows(
        &self,
        tx: &mut Tx,
        rows: &[IdemRecord],
        now_us: i64,
    ) -> Result<(), sqlx::Error>;

    async fn entries_by_reference(
        &self,
        tx: &mut Tx,
        references: Vec<String>,
    ) -> Result<Vec<EntryRow>, sqlx::Error>;

    /// The maintained balances of these accounts (those that have one).
    async fn balance_rows(&self, tx: &mut Tx, ids: Vec<i64>) -> Result<Vec<AccountBalanceRow>, sqlx::Error>;

    /// Writes a claim group's rows: its stored answers (`now_us` their time), its vouchers, and
    /// each batch's `claimed_count` raised by `count` where the batch is open and `released`
    /// covers it. Returns the first batch the database would not raise (the caller rolls back).
    /// One statement on PostgreSQL, as [`SqlBackend::write_sealed`].
    async fn write_claim_rows(
        &self,
        tx: &mut Tx,
        rows: &ClaimRows<'_>,
    ) -> Result<Option<BatchId>, sqlx::Error>;

    /// Writes a sealed append: the accounts' new balances (upserted), the entries, their
    /// postings, and the new chain head. One statement on PostgreSQL (a statement's round trip
    /// is what a busy node's writer waits on most); chunked multi-row statements on SQLite.
    async fn write_sealed(&self, tx: &mut Tx, rows: &SealedRows) -> Result<(), sqlx::Error>;
}

/// The store: the shared logic over one backend. Implements [`Storage`](super::Storage) and
/// the narrower stores.
#[derive(Debug)]
pub struct SqlStore {
    pub(crate) backend: Box<dyn SqlBackend>,
    /// The backend's pool, for the shared logic's statements.
    pub(crate) pool: Pool,
    pub(crate) accounts: AccountCache,
    pub(crate) clock: Arc<dyn Clock>,
    /// One writer at a time in this process: waiting here is cheaper than on the database lock.
    pub(crate) write_gate: tokio::sync::Mutex<()>,
}

impl SqlStore {
    pub(crate) fn new(backend: Box<dyn SqlBackend>, clock: Arc<dyn Clock>) -> SqlStore {
        let pool = backend.pool().clone();
        SqlStore {
            backend,
            pool,
            accounts: AccountCache::default(),
            clock,
            write_gate: tokio::sync::Mutex::new(()),
        }
    }

    /// Commits `tx`, then caches the accounts it opened: only committed accounts enter the
    /// cache (a rolled-back account id would name another account later).
    pub(crate) async fn commit_and_cache(
        &self,
        tx: Tx,
        opened: std::collections::HashMap<String, super::ledger::KnownAccount>,
    ) -> Result<(), sqlx::Error> {
        tx.commit().await?;
        self.accounts.extend(opened);
        Ok(())
    }

    pub(crate) async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        self.backend.begin_write().await
    }

    /// A transaction for a write that changes existing `redemptions` rows (settlement,
    /// reversal). Every such writer takes its locks in one order (rows, gate, head), so none
    /// waits for a row while holding the head: on PostgreSQL the gate is taken only to post
    /// (`gate_after_rows`), on SQLite (one writer) it comes first, as for every write.
    pub(crate) async fn begin_row_write(
        &self,
    ) -> Result<(Option<tokio::sync::MutexGuard<'_, ()>>, Tx), sqlx::Error> {
        let gate = match self.backend.gate_before_row_locks() {
            true => Some(self.write_gate.lock().await),
            false => None,
        };
        Ok((gate, self.backend.begin_write().await?))
    }

    /// The write gate for a transaction from `begin_row_write`, which already holds it on
    /// SQLite and takes it only now on PostgreSQL, once its rows are locked.
    pub(crate) async fn gate_after_rows<'a>(
        &'a self,
        held: Option<tokio::sync::MutexGuard<'a, ()>>,
    ) -> tokio::sync::MutexGuard<'a, ()> {
        match held {
            Some(gate) => gate,
            None => self.write_gate.lock().await,
        }
    }
}
