//! SQL for finance: report aggregates, settlements and payouts, closing a season, merchant
//! statements, and the reconciliation queries, on either backend. Every report query aggregates
//! in the database: nothing here loads a season's vouchers or redemptions into memory.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use futures_util::TryStreamExt;
use uuid::Uuid;

use crate::domain::accounts;
use crate::domain::entries;
use crate::domain::error_code::ErrorCode;
use crate::domain::finance::{HoldStatus, SalesFigures, SettlementLine, UnsettledCount};
use crate::domain::ids::{BatchId, MerchantId, RedemptionId, SeasonId, SettlementId, TerminalId};
use crate::domain::ledger::{Balance, NewEntry, NewPosting, Side};
use crate::domain::money::Fen;
use crate::domain::region::RegionCode;
use crate::domain::time::Timestamp;
use crate::storage::db::{Exec, QueryBuilder, Tx, execute_raw, query, query_as};
use crate::storage::holds::{HeldLineRecord, HoldDecision, HoldRecord, LiftHold, NewHold};
use crate::storage::ledger::AddressBalanceRow;
use crate::storage::till::{REDEMPTION_COLUMNS, RedemptionRow};
use crate::storage::{IdemRecord, RedemptionRecord, Refusal, SqlStore, StorageError, WriteError};

/// Rows of a report or a statement are capped here; a bigger answer must be narrowed.
pub const MAX_REPORT_ROWS: i64 = 200_000;
/// Breaks listed per reconciliation check (the count is always exact).
pub const MAX_BREAKS_LISTED: i64 = 50;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantSales {
    pub merchant_id: MerchantId,
    pub name: String,
    pub city: String,
    pub category: String,
    pub sales: SalesFigures,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayActivity {
    /// Days since 1970-01-01 in China Standard Time.
    pub day_number: i64,
    pub claims: i64,
    pub claimed_fen: i64,
    pub sales: SalesFigures,
}

/// What a settlement run needs. The run settles its merchants in chunks, each chunk one
/// transaction (`settle_merchants`), then `finish_settlement` marks it complete.
#[derive(Clone)]
pub struct SettlementPlan {
    pub id: SettlementId,
    pub season_id: SeasonId,
    pub cut_off: Timestamp,
    /// Also the `settled_at` of every redemption it settles.
    pub created_at: Timestamp,
    /// The answer stored when the settlement completes; its body is rendered from the
    /// settlement. `None` when a run finishes a settlement that another request began.
    pub answer: Option<IdemRecord>,
    pub render: fn(&SettlementRecord) -> String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementRecord {
    pub id: SettlementId,
    pub season_id: SeasonId,
    pub cut_off: Timestamp,
    pub total_fen: i64,
    pub line_count: i64,
    pub created_at: Timestamp,
    /// `None` while the settlement is in progress (more merchants may follow; it cannot be paid).
    pub completed_at: Option<Timestamp>,
    pub paid_at: Option<Timestamp>,
    pub payout_ref: Option<String>,
    /// Of its lines, those held (their merchants on hold): not in its payout file.
    pub held_count: i64,
    pub held_fen: i64,
    /// Lines released from hold since the previous settlement, which its payout pays.
    pub released_count: i64,
    pub released_fen: i64,
}

impl SettlementRecord {
    /// What its payout file pays: its lines not held, and the released lines it took up.
    pub fn payout_fen(&self) -> i64 {
        self.total_fen - self.held_fen + self.released_fen
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementLineRecord {
    pub merchant_id: MerchantId,
    pub merchant_name: String,
    /// The merchant's city, for a city's finance (who sees its own merchants' lines only).
    pub merchant_city: String,
    pub redemption_count: i64,
    pub amount_fen: i64,
    pub funders: Vec<(RegionCode, Fen)>,
    pub bank: String,
    pub account_no: String,
    pub account_name: String,
    /// `none` (paid normally), `held`, `released` or `rejected`.
    pub hold_status: crate::domain::finance::HoldStatus,
    /// For a released line in a later payout: the settlement that held it.
    pub held_in: Option<SettlementId>,
}

/// A closed season's stored report and reconciliation (JSON text), written once.
#[derive(Clone, Debug)]
pub struct FinalReport {
    pub season_id: SeasonId,
    pub report: String,
    pub reconciliation: String,
    pub checkpoint_seq: i64,
    pub created_at: Timestamp,
}

/// One line of a merchant's statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementEvent {
    pub at: Timestamp,
    /// `redemption`, `reversal`, `settlement` or `payout`; for a held line `held`, then
    /// `released` (its payout follows) or `rejected`.
    pub kind: String,
    pub id: Uuid,
    pub order_ref: Option<String>,
    pub order_amount_fen: i64,
    pub amount_fen: i64,
    /// On a `rejected` line the rejection's note (what the merchant is told), on a `released`
    /// line the release's; staff-written text.
    pub note: Option<String>,
}

/// Per merchant: what the business rows say it is owed (unsettled live redemptions), has had
/// settled and not yet paid, and has been paid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MerchantMoney {
    pub unsettled_fen: i64,
    /// Settled while on hold, neither released nor rejected.
    pub held_fen: i64,
    pub settled_unpaid_fen: i64,
    pub paid_fen: i64,
}

/// One merchant's sales in a season, with the merchant's name, city and category.
#[derive(sqlx::FromRow)]
struct MerchantSalesRow {
    id: MerchantId,
    name: String,
    city: String,
    category: String,
    #[sqlx(flatten)]
    sales: SalesRow,
}

/// The live-redemption aggregates of a group of redemptions ([`SALES_COLUMNS`]).
#[derive(sqlx::FromRow)]
struct SalesRow {
    redemptions: i64,
    reversals: i64,
    discount_fen: i64,
    order_amount_fen: i64,
}

impl SalesRow {
    fn figures(&self) -> SalesFigures {
        sales(self.redemptions, self.reversals, self.discount_fen, self.order_amount_fen)
    }
}

/// A batch's sales in a season.
#[derive(sqlx::FromRow)]
struct BatchSalesRow {
    batch_id: BatchId,
    #[sqlx(flatten)]
    sales: SalesRow,
}

/// One day's claims in a season.
#[derive(sqlx::FromRow)]
struct DayClaimsRow {
    day: i64,
    claims: i64,
    claimed_fen: i64,
}

/// One day's sales in a season.
#[derive(sqlx::FromRow)]
struct DaySalesRow {
    day: i64,
    #[sqlx(flatten)]
    sales: SalesRow,
}

/// A merchant's payout account as a settlement line copies it.
#[derive(sqlx::FromRow)]
struct MerchantAccountRow {
    id: MerchantId,
    bank: String,
    account_no: String,
    account_name: String,
}

/// A settlement's season and progress, as a payout checks it.
#[derive(sqlx::FromRow)]
struct SettlementStateRow {
    season_id: SeasonId,
    paid_at_us: Option<i64>,
    completed_at_us: Option<i64>,
}

/// How many of a batch's vouchers are still active (and expire on close).
#[derive(sqlx::FromRow)]
struct ActiveCountRow {
    batch_id: BatchId,
    active: i64,
}

/// A merchant's unsettled discount in a season.
#[derive(sqlx::FromRow)]
struct UnsettledRow {
    merchant_id: MerchantId,
    unsettled_fen: i64,
}

/// A merchant's settled amounts in a season, split by paid or not.
#[derive(sqlx::FromRow)]
struct SettledRow {
    merchant_id: MerchantId,
    settled_unpaid_fen: i64,
    paid_fen: i64,
    held_fen: i64,
}

/// A `season_reports` row, without its season.
#[derive(sqlx::FromRow)]
struct FinalReportRow {
    report: String,
    reconciliation: String,
    checkpoint_seq: i64,
    created_at_us: i64,
}

/// One event of a merchant's statement; `discount_fen` is the amount of a settlement or a payout.
#[derive(sqlx::FromRow)]
struct StatementRow {
    at: i64,
    kind: String,
    id: Uuid,
    order_ref: Option<String>,
    order_amount_fen: i64,
    discount_fen: i64,
    note: Option<String>,
}

/// How many of a batch's vouchers are in one status.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct VoucherStatusCount {
    pub batch_id: BatchId,
    pub status: String,
    pub vouchers: i64,
}

/// One link check of a season's rows against its ledger: how many rows break it, and the first
/// few described (at most `MAX_BREAKS_LISTED`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkBreaks {
    pub check: &'static str,
    pub breaks: i64,
    pub listed: Vec<String>,
}

/// A merchant's count of unsettled redemptions, as `unsettled_counts` reads it.
#[derive(sqlx::FromRow)]
struct UnsettledCountRow {
    merchant_id: MerchantId,
    redemptions: i64,
}

#[async_trait]
pub trait FinanceStore: Send + Sync {
    /// Every account of the season (`season:S:...`) with its maintained debits and credits.
    async fn season_balances(&self, season_id: SeasonId) -> Result<Vec<(String, Balance)>, StorageError>;

    /// Per batch: its vouchers counted by status (from the voucher rows).
    async fn voucher_status_counts(
        &self,
        season_id: SeasonId,
    ) -> Result<Vec<VoucherStatusCount>, StorageError>;

    /// Per batch: live redemptions and reversals.
    async fn batch_sales(&self, season_id: SeasonId) -> Result<Vec<(BatchId, SalesFigures)>, StorageError>;

    /// Per merchant (of `city`, if given), by merchant name.
    async fn merchant_sales(
        &self,
        season_id: SeasonId,
        city: Option<RegionCode>,
    ) -> Result<Vec<MerchantSales>, StorageError>;

    /// Per CST day: claims (of batches `issuer` funds, if given) and redemptions (at merchants of
    /// `city`, if given).
    async fn day_activity(
        &self,
        season_id: SeasonId,
        city: Option<RegionCode>,
    ) -> Result<Vec<DayActivity>, StorageError>;

    /// Per merchant, how many unsettled, unreversed redemptions of the season there are up to
    /// the cut-off (what a settlement run plans its chunks by), in merchant id order.
    async fn unsettled_counts(
        &self,
        season_id: SeasonId,
        cut_off: Timestamp,
    ) -> Result<Vec<UnsettledCount>, StorageError>;

    /// One chunk of a settlement, in one transaction: settles these merchants' unsettled,
    /// unreversed redemptions up to the cut-off (a merchant that already has a line in this
    /// settlement is skipped), adds their lines to the settlement (creating it with the first
    /// line), and posts a ledger entry per merchant. Returns the number of lines added: 0 if
    /// the merchants had nothing left, or if the settlement was completed meanwhile.
    /// `Refused(idempotency_key_reused)` if the settlement exists with another season or cut-off.
    async fn settle_merchants(
        &self,
        plan: &SettlementPlan,
        merchants: &[MerchantId],
    ) -> Result<usize, WriteError>;

    /// Marks the settlement complete (once) and stores the plan's answer with it.
    /// `Refused(nothing_to_settle)` if no chunk added a line; `IdempotencyTaken` if the
    /// answer's key was answered first.
    async fn finish_settlement(
        &self,
        plan: &SettlementPlan,
        at: Timestamp,
    ) -> Result<SettlementRecord, WriteError>;

    /// The settlements still in progress (a run that stopped part way, or one running now) of
    /// one season, or of every season: the oldest 100.
    async fn settlements_in_progress(
        &self,
        season_id: Option<SeasonId>,
    ) -> Result<Vec<SettlementRecord>, StorageError>;

    async fn settlement(&self, id: SettlementId) -> Result<Option<SettlementRecord>, StorageError>;

    /// The season's settlements in the order they were made, after `after` (a page's last),
    /// at most `limit`.
    async fn season_settlements(
        &self,
        season_id: SeasonId,
        after: Option<&SettlementRecord>,
        limit: i64,
    ) -> Result<Vec<SettlementRecord>, StorageError>;

    async fn settlement_lines(&self, id: SettlementId) -> Result<Vec<SettlementLineRecord>, StorageError>;

    /// What a settlement's payout pays: its lines not held, then the lines released from hold
    /// that it took up (`held_in` names the settlement that held each).
    async fn payout_lines(&self, id: SettlementId) -> Result<Vec<SettlementLineRecord>, StorageError>;

    /// Records the bank's payout of a settlement (ledger entries settled -> paid).
    /// `Refused(already_paid)` if it was recorded before, `Refused(settlement_in_progress)`
    /// if the settlement is not complete.
    async fn commit_payout(
        &self,
        settlement_id: SettlementId,
        payout_ref: &str,
        at: Timestamp,
        answer: &IdemRecord,
    ) -> Result<(), WriteError>;

    /// Closes the season: marks it closed, expires every active voucher and returns all issued
    /// and reserved money to the funders' pools, in one transaction. Idempotent: answers when the
    /// season closed (`at`, or the earlier close).
    async fn close_season(&self, season_id: SeasonId, at: Timestamp) -> Result<Timestamp, WriteError>;

    async fn final_report(&self, season_id: SeasonId) -> Result<Option<FinalReport>, StorageError>;

    /// Stores a closed season's report unless one is stored already (the first one wins).
    async fn insert_final_report(&self, report: &FinalReport) -> Result<(), StorageError>;

    /// A merchant's redemptions, reversals, settlements and payouts in a season, in time order.
    async fn merchant_statement(
        &self,
        merchant_id: MerchantId,
        season_id: SeasonId,
        limit: i64,
    ) -> Result<Vec<StatementEvent>, StorageError>;

    /// Redemptions made by these terminals at or after `since`, oldest first.
    async fn terminal_redemptions(
        &self,
        terminals: &[TerminalId],
        since: Timestamp,
        limit: i64,
    ) -> Result<Vec<super::RedemptionRecord>, StorageError>;

    async fn redemptions_by_id(
        &self,
        ids: &[RedemptionId],
    ) -> Result<Vec<super::RedemptionRecord>, StorageError>;

    /// Per merchant of the season: see [`MerchantMoney`].
    async fn merchant_money(
        &self,
        season_id: SeasonId,
    ) -> Result<Vec<(MerchantId, MerchantMoney)>, StorageError>;

    /// Vouchers whose state disagrees with the ledger or the redemptions, ledger entries
    /// (claim, expiry, redemption, reversal) whose voucher or redemption is missing or disagrees,
    /// and the per-person limit counters that disagree with what they count: one per check.
    async fn link_breaks(
        &self,
        season: &crate::domain::season::Season,
    ) -> Result<Vec<LinkBreaks>, StorageError>;

    /// Puts a merchant on hold for a season (its next settlement lines are held), or answers
    /// the hold it is on already. 404s: `season_not_found`, `merchant_not_found`.
    async fn put_hold(&self, hold: &NewHold) -> Result<HoldRecord, WriteError>;

    /// Lifts a merchant's hold for the season (the next settlements pay it; lines held stay
    /// held), or answers the hold lifted already. Refusal: `hold_not_found`.
    async fn lift_hold(&self, lift: &LiftHold) -> Result<HoldRecord, WriteError>;

    /// Sets (`Some`) or clears the season's `hold_score_threshold`; false: no such season.
    async fn set_hold_threshold(
        &self,
        season_id: SeasonId,
        threshold: Option<u8>,
    ) -> Result<bool, StorageError>;

    /// The season's merchants on hold; with `city`, only that city's merchants (one statement).
    async fn season_holds(
        &self,
        season_id: SeasonId,
        city: Option<RegionCode>,
    ) -> Result<Vec<HoldRecord>, StorageError>;

    /// The season's settlement lines that were ever held, with finance's decisions.
    async fn held_lines(&self, season_id: SeasonId) -> Result<Vec<HeldLineRecord>, StorageError>;

    /// Releases a held line, proposes its rejection or approves it (four eyes), posting the
    /// release's or rejection's entry; refusals: `hold_not_found`, `hold_decided`,
    /// `rejection_not_proposed`, `same_approver`.
    async fn decide_held_line(&self, decision: &HoldDecision) -> Result<HeldLineRecord, WriteError>;
}

#[derive(sqlx::FromRow)]
pub(crate) struct SettlementRow {
    id: SettlementId,
    season_id: SeasonId,
    cut_off_us: i64,
    total_fen: i64,
    line_count: i32,
    created_at_us: i64,
    completed_at_us: Option<i64>,
    paid_at_us: Option<i64>,
    payout_ref: Option<String>,
    held_count: i64,
    held_fen: i64,
    released_count: i64,
    released_fen: i64,
}

pub(crate) const SETTLEMENT_COLUMNS: &str = "id, season_id, cut_off_us, total_fen, line_count, created_at_us, completed_at_us, paid_at_us, payout_ref, \
     held_count, held_fen, released_count, released_fen";

impl SettlementRow {
    pub fn into_record(self) -> SettlementRecord {
        SettlementRecord {
            id: self.id,
            season_id: self.season_id,
            cut_off: Timestamp::from_unix_us(self.cut_off_us),
            total_fen: self.total_fen,
            line_count: i64::from(self.line_count),
            created_at: Timestamp::from_unix_us(self.created_at_us),
            completed_at: self.completed_at_us.map(Timestamp::from_unix_us),
            paid_at: self.paid_at_us.map(Timestamp::from_unix_us),
            payout_ref: self.payout_ref,
            held_count: self.held_count,
            held_fen: self.held_fen,
            released_count: self.released_count,
            released_fen: self.released_fen,
        }
    }
}

/// A redemption's (or line's) stored funder parts, or a corruption error naming it.
pub(crate) fn funder_parts(json: &str, what: &str) -> Result<Vec<(RegionCode, Fen)>, StorageError> {
    crate::domain::finance::parse_funder_parts(json)
        .ok_or_else(|| StorageError::Corrupt(format!("{what}: unreadable funder parts")))
}

/// A settlement line's funder parts, in the format redemptions store.
pub(crate) fn funder_parts_json(parts: &std::collections::BTreeMap<RegionCode, i64>) -> String {
    crate::domain::finance::funder_parts_json(
        parts.iter().map(|(funder, fen)| (*funder, Fen::from_fen_unchecked(*fen))),
    )
    .to_string()
}

/// SQL: the CST day number of a `*_at_us` column.
pub(crate) fn day_sql(column: &str) -> String {
    format!("(({column} + 28800000000) / 86400000000)")
}

/// A released line as a later payout reads it, with the settlement that held it.
#[derive(sqlx::FromRow)]
struct ReleasedLineRow {
    #[sqlx(flatten)]
    line: SettlementLineRow,
    settlement_id: SettlementId,
}

/// A settlement line as read, with its merchant's name and city.
#[derive(sqlx::FromRow)]
struct SettlementLineRow {
    merchant_id: MerchantId,
    merchant_name: String,
    merchant_city: String,
    redemption_count: i64,
    amount_fen: i64,
    funders: String,
    bank: String,
    account_no: String,
    account_name: String,
    hold_status: String,
}

impl SettlementLineRow {
    fn into_record(self, settlement_id: SettlementId) -> Result<SettlementLineRecord, StorageError> {
        let place = format!("settlement line {settlement_id}/{}", self.merchant_id);
        Ok(SettlementLineRecord {
            merchant_id: self.merchant_id,
            merchant_name: self.merchant_name,
            merchant_city: self.merchant_city,
            redemption_count: self.redemption_count,
            amount_fen: self.amount_fen,
            funders: funder_parts(&self.funders, &place)?,
            bank: self.bank,
            account_no: self.account_no,
            account_name: self.account_name,
            hold_status: crate::domain::finance::HoldStatus::parse(&self.hold_status)
                .ok_or_else(|| StorageError::Corrupt(format!("{place}: hold status")))?,
            held_in: None,
        })
    }
}

fn sales(redemptions: i64, reversals: i64, discount: i64, order_amount: i64) -> SalesFigures {
    SalesFigures { redemptions, reversals, discount, order_amount }
}

/// The live-redemption aggregate columns shared by the sales queries.
const SALES_COLUMNS: &str = "CAST(COALESCE(SUM(CASE WHEN r.reversed_at_us IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS redemptions, \
     CAST(COALESCE(SUM(CASE WHEN r.reversed_at_us IS NULL THEN 0 ELSE 1 END), 0) AS BIGINT) AS reversals, \
     CAST(COALESCE(SUM(CASE WHEN r.reversed_at_us IS NULL THEN r.discount_fen ELSE 0 END), 0) AS BIGINT) AS discount_fen, \
     CAST(COALESCE(SUM(CASE WHEN r.reversed_at_us IS NULL THEN r.order_amount_fen ELSE 0 END), 0) AS BIGINT) AS order_amount_fen";

impl SqlStore {
    /// Marks these merchants' unsettled, unreversed redemptions of the season up to the
    /// cut-off as settled by `plan` and sums them per merchant; a merchant that already
    /// has a line in this settlement (a redemption that arrived after its chunk) is left
    /// for the next settlement. On PostgreSQL the UPDATE locks each row it changes: a
    /// reversal of one of them waits for this chunk and then finds it settled; a
    /// reversal or settlement that holds a row first is waited for, and the row is then
    /// skipped (it no longer matches).
    async fn settle_redemptions(
        tx: &mut Tx,
        plan: &SettlementPlan,
        merchants: &[MerchantId],
    ) -> Result<BTreeMap<MerchantId, SettlementLine>, WriteError> {
        let mut q = QueryBuilder::new("UPDATE redemptions SET settled_at_us = ");
        q.push_bind(plan.created_at.unix_us())
            .push(", settlement_id = ")
            .push_bind(plan.id)
            .push(" WHERE season_id = ")
            .push_bind(plan.season_id)
            .push(" AND merchant_id IN (");
        let mut list = q.separated(", ");
        for merchant in merchants {
            list.push_bind(*merchant);
        }
        q.push(") AND settled_at_us IS NULL AND reversed_at_us IS NULL AND redeemed_at_us <= ")
            .push_bind(plan.cut_off.unix_us())
            .push(" AND merchant_id NOT IN (SELECT merchant_id FROM settlement_lines WHERE settlement_id = ")
            .push_bind(plan.id)
            .push(") RETURNING id, merchant_id, funders");
        let mut lines: BTreeMap<MerchantId, SettlementLine> = BTreeMap::new();
        let mut rows = q.build_query_as::<(RedemptionId, MerchantId, String)>().fetch(&mut *tx);
        while let Some((id, merchant_id, funders)) = rows.try_next().await? {
            let parts = funder_parts(&funders, &format!("redemption {id}"))?;
            let line = lines.entry(merchant_id).or_insert_with(|| SettlementLine::new(merchant_id));
            line.add(&parts);
        }
        Ok(lines)
    }

    /// A settlement's lines, through the pool or inside a transaction.
    async fn lines_of<'e>(
        executor: impl Into<Exec<'e>>,
        id: SettlementId,
    ) -> Result<Vec<SettlementLineRecord>, StorageError> {
        let rows: Vec<SettlementLineRow> = query_as(
            "SELECT l.merchant_id, m.name AS merchant_name, m.city AS merchant_city, l.redemption_count, \
             l.amount_fen, l.funders, l.bank, l.account_no, l.account_name, l.hold_status \
             FROM settlement_lines l JOIN merchants m ON m.id = l.merchant_id \
             WHERE l.settlement_id = $1 ORDER BY m.name, l.merchant_id",
        )
        .bind(id)
        .fetch_all(executor)
        .await?;
        rows.into_iter().map(|row| row.into_record(id)).collect()
    }

    /// What a settlement's payout pays: its lines not held, then the lines released from hold
    /// that it took up (each with the settlement that held it).
    async fn payout_lines_of(
        tx: &mut Tx,
        id: SettlementId,
    ) -> Result<Vec<SettlementLineRecord>, StorageError> {
        let mut lines: Vec<SettlementLineRecord> = Self::lines_of(&mut *tx, id)
            .await?
            .into_iter()
            .filter(|l| l.hold_status == HoldStatus::None)
            .collect();
        lines.extend(Self::released_payout_lines(&mut *tx, id).await?);
        Ok(lines)
    }

    /// The lines released from hold that a settlement's payout pays.
    async fn released_payout_lines<'e>(
        executor: impl Into<Exec<'e>>,
        id: SettlementId,
    ) -> Result<Vec<SettlementLineRecord>, StorageError> {
        let mut lines = Vec::new();
        let rows: Vec<ReleasedLineRow> = query_as(
            "SELECT l.merchant_id, m.name AS merchant_name, m.city AS merchant_city, l.redemption_count, \
             l.amount_fen, l.funders, l.bank, l.account_no, l.account_name, l.hold_status, l.settlement_id \
             FROM settlement_lines l JOIN merchants m ON m.id = l.merchant_id \
             WHERE l.paid_in_settlement_id = $1 AND l.hold_status = 'released' ORDER BY m.name, l.merchant_id, l.settlement_id",
        )
        .bind(id)
        .fetch_all(executor)
        .await?;
        for row in rows {
            let held_in = row.settlement_id;
            let mut line = row.line.into_record(held_in)?;
            line.held_in = Some(held_in);
            lines.push(line);
        }
        Ok(lines)
    }

    /// Orders the transactions of one settlement run (its chunks and its finish) on
    /// PostgreSQL, so that two runs of the same settlement never line a merchant twice
    /// or add to it once it is complete; SQLite has one writer at a time anyway.
    async fn lock_settlement(&self, tx: &mut Tx, id: SettlementId) -> Result<(), WriteError> {
        if let Some(sql) = self.backend.settlement_lock_sql() {
            let mut key = [0u8; 8];
            key.copy_from_slice(&id.as_uuid().as_bytes()[..8]);
            query(sql).bind(i64::from_be_bytes(key)).execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// The settlement's row under the run's lock; a settlement with this id but another
    /// season or cut-off means the Idempotency-Key was used for another request.
    async fn settlement_in(
        tx: &mut Tx,
        plan: &SettlementPlan,
    ) -> Result<Option<SettlementRecord>, WriteError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE id = $1"));
        let row: Option<SettlementRow> = query_as(sql).bind(plan.id).fetch_optional(&mut *tx).await?;
        let record = row.map(SettlementRow::into_record);
        match record {
            Some(ref s) if s.season_id != plan.season_id || s.cut_off != plan.cut_off => {
                Err(WriteError::Refused(Refusal::Code(ErrorCode::IdempotencyKeyReused)))
            }
            _ => Ok(record),
        }
    }

    async fn insert_settlement_lines(
        tx: &mut Tx,
        settlement_id: SettlementId,
        lines: &BTreeMap<MerchantId, SettlementLine>,
        held: &BTreeMap<MerchantId, String>,
    ) -> Result<(), WriteError> {
        let ids: Vec<MerchantId> = lines.keys().copied().collect();
        for chunk in ids.chunks(500) {
            let mut q =
                QueryBuilder::new("SELECT id, bank, account_no, account_name FROM merchants WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            let accounts: Vec<MerchantAccountRow> = q.build_query_as().fetch_all(&mut *tx).await?;
            if accounts.len() != chunk.len() {
                return Err(WriteError::Storage(StorageError::Corrupt(
                    "a redemption names a merchant that does not exist".into(),
                )));
            }
            let mut q = QueryBuilder::new(
                "INSERT INTO settlement_lines (settlement_id, merchant_id, redemption_count, amount_fen, funders, \
                 bank, account_no, account_name, hold_status, hold_reason) ",
            );
            q.push_values(accounts, |mut row, account| {
                let line = &lines[&account.id];
                row.push_bind(settlement_id)
                    .push_bind(account.id)
                    .push_bind(line.redemption_count)
                    .push_bind(line.amount_fen)
                    .push_bind(funder_parts_json(&line.by_funder))
                    .push_bind(account.bank)
                    .push_bind(account.account_no)
                    .push_bind(account.account_name);
                let reason = held.get(&account.id);
                let status = if reason.is_some() { HoldStatus::Held } else { HoldStatus::None };
                row.push_bind(status.as_str()).push_bind(reason.cloned());
            });
            q.build().execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// The season's batch accounts (reserve and issued) with their balances, under the lock.
    async fn batch_balances_in(
        tx: &mut Tx,
        season_id: SeasonId,
    ) -> Result<Vec<(String, Balance)>, WriteError> {
        let rows: Vec<AddressBalanceRow> = query_as(
            "SELECT a.address, b.debits_fen, b.credits_fen FROM accounts a \
             JOIN account_balances b ON b.account_id = a.id WHERE a.address LIKE $1",
        )
        .bind(format!("season:{}:batch:%", season_id.as_uuid().hyphenated()))
        .fetch_all(&mut *tx)
        .await?;
        Ok(rows.into_iter().map(AddressBalanceRow::into_pair).collect())
    }

    /// The claim and redemption paths keep two counters whose CHECKs hold the
    /// season's per-person limits: `citizen_season_totals` (the season cap, and the
    /// monthly cap per month of claim) and `merchant_redemption_counts` (the
    /// per-merchant limit). Each must equal what
    /// the rows it counts add up to, and carry the season's limit, or a limit holds
    /// against a wrong number. Both ways: a counted group must have its counter, and
    /// a non-zero counter must have rows behind it.
    fn counter_checks(&self, season: &crate::domain::season::Season) -> Vec<(&'static str, String)> {
        // Only the season's own rules: the aggregates cost a pass over its vouchers
        // or redemptions, and a season without the rule never reads its counter.
        [
            self.subsidy_ceiling_check(season),
            season.per_citizen_cap.map(|_| self.season_total_check()),
            season.per_citizen_monthly_cap.map(|_| self.month_total_check()),
            season.merchant_redemption_limit.map(|_| self.merchant_count_check()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Every redemption at a merchant of a capped category kept to the ceiling's share of its
    /// order (the basis the voucher applied to). Categories and percents are the season's own
    /// typed values, written into the SQL.
    fn subsidy_ceiling_check(
        &self,
        season: &crate::domain::season::Season,
    ) -> Option<(&'static str, String)> {
        let text = |col: &str| self.backend.uuid_text_sql(col);
        let over_ceiling: Vec<String> = season
            .subsidy_ceilings
            .iter()
            .map(|(category, percent)| {
                format!(
                    "(m.category = '{category}' AND r.discount_fen * 100 > r.order_amount_fen * {percent})"
                )
            })
            .collect();
        if over_ceiling.is_empty() {
            return None;
        }
        Some((
            "redemption_over_subsidy_ceiling",
            format!(
                "SELECT 'redemption ' || {id} || ': ' || r.discount_fen || ' fen off ' || r.order_amount_fen \
             || ' fen at a ' || m.category FROM redemptions r JOIN merchants m ON m.id = r.merchant_id \
             WHERE r.season_id = $1 AND ({})",
                over_ceiling.join(" OR "),
                id = text("r.id")
            ),
        ))
    }

    /// A citizen's season counter equals the vouchers counted against the cap.
    fn season_total_check(&self) -> (&'static str, String) {
        let text = |col: &str| self.backend.uuid_text_sql(col);
        // The vouchers counted against the cap: live ones, and those the close expired
        // (closing leaves the counter as it was; the season is over).
        let held = "SELECT v.citizen_id, SUM(v.value_fen) AS held_fen FROM vouchers v \
                    JOIN seasons s ON s.id = v.season_id WHERE v.season_id = $1 \
                    AND (v.status <> 'expired' OR v.expired_at_us = s.closed_at_us) GROUP BY v.citizen_id";
        (
            "citizen_season_total_disagrees",
            format!(
                "SELECT 'citizen ' || {citizen} || ': counter ' || COALESCE(t.claimed_fen, -1) || ' fen (cap ' \
             || COALESCE(t.cap_fen, -1) || '), vouchers ' || h.held_fen || ' fen (cap ' || s.per_citizen_cap_fen || ')' \
             FROM ({held}) h JOIN seasons s ON s.id = $1 \
             LEFT JOIN citizen_season_totals t ON t.season_id = $1 AND t.citizen_id = h.citizen_id AND t.period = 0 \
             WHERE s.per_citizen_cap_fen IS NOT NULL AND (t.claimed_fen IS NULL OR t.claimed_fen <> h.held_fen \
             OR t.cap_fen <> s.per_citizen_cap_fen) \
             UNION ALL \
             SELECT 'citizen ' || {counted} || ': counter ' || t.claimed_fen || ' fen, no vouchers' \
             FROM citizen_season_totals t LEFT JOIN ({held}) h ON h.citizen_id = t.citizen_id \
             WHERE t.season_id = $1 AND t.period = 0 AND t.claimed_fen <> 0 AND h.held_fen IS NULL",
                citizen = text("h.citizen_id"),
                counted = text("t.citizen_id")
            ),
        )
    }

    /// A citizen's monthly counters equal the vouchers claimed in each month.
    fn month_total_check(&self) -> (&'static str, String) {
        let text = |col: &str| self.backend.uuid_text_sql(col);
        let month = self.backend.cst_month_sql("v.claimed_at_us");
        let held_by_month = format!(
            "SELECT v.citizen_id, {month} AS period, SUM(v.value_fen) AS held_fen FROM vouchers v \
             JOIN seasons s ON s.id = v.season_id WHERE v.season_id = $1 \
             AND (v.status <> 'expired' OR v.expired_at_us = s.closed_at_us) GROUP BY v.citizen_id, {month}"
        );
        (
            "citizen_month_total_disagrees",
            format!(
                "SELECT 'citizen ' || {citizen} || ' in ' || h.period || ': counter ' || COALESCE(t.claimed_fen, -1) \
             || ' fen (cap ' || COALESCE(t.cap_fen, -1) || '), vouchers ' || h.held_fen || ' fen (cap ' \
             || s.per_citizen_monthly_cap_fen || ')' \
             FROM ({held_by_month}) h JOIN seasons s ON s.id = $1 \
             LEFT JOIN citizen_season_totals t ON t.season_id = $1 AND t.citizen_id = h.citizen_id \
             AND t.period = h.period \
             WHERE s.per_citizen_monthly_cap_fen IS NOT NULL AND (t.claimed_fen IS NULL \
             OR t.claimed_fen <> h.held_fen OR t.cap_fen <> s.per_citizen_monthly_cap_fen) \
             UNION ALL \
             SELECT 'citizen ' || {counted} || ' in ' || t.period || ': counter ' || t.claimed_fen || ' fen, no vouchers' \
             FROM citizen_season_totals t LEFT JOIN ({held_by_month}) h ON h.citizen_id = t.citizen_id \
             AND h.period = t.period \
             WHERE t.season_id = $1 AND t.period <> 0 AND t.claimed_fen <> 0 AND h.held_fen IS NULL",
                citizen = text("h.citizen_id"),
                counted = text("t.citizen_id")
            ),
        )
    }

    /// A citizen's count at a merchant equals the live redemptions there.
    fn merchant_count_check(&self) -> (&'static str, String) {
        let text = |col: &str| self.backend.uuid_text_sql(col);
        let live = "SELECT v.citizen_id, r.merchant_id, COUNT(*) AS live FROM redemptions r \
                    JOIN vouchers v ON v.id = r.voucher_id WHERE r.season_id = $1 \
                    AND r.reversed_at_us IS NULL GROUP BY v.citizen_id, r.merchant_id";
        (
            "merchant_redemption_count_disagrees",
            format!(
                "SELECT 'citizen ' || {citizen} || ' at merchant ' || {merchant} || ': counter ' \
             || COALESCE(c.live_count, -1) || ' (limit ' || COALESCE(c.limit_count, -1) || '), live redemptions ' \
             || l.live || ' (limit ' || s.merchant_redemption_limit || ')' \
             FROM ({live}) l JOIN seasons s ON s.id = $1 \
             LEFT JOIN merchant_redemption_counts c ON c.season_id = $1 AND c.citizen_id = l.citizen_id \
             AND c.merchant_id = l.merchant_id \
             WHERE s.merchant_redemption_limit IS NOT NULL AND (c.live_count IS NULL OR c.live_count <> l.live \
             OR c.limit_count <> s.merchant_redemption_limit) \
             UNION ALL \
             SELECT 'citizen ' || {counted} || ' at merchant ' || {counted_at} || ': counter ' || c.live_count \
             || ', no live redemptions' \
             FROM merchant_redemption_counts c LEFT JOIN ({live}) l ON l.citizen_id = c.citizen_id \
             AND l.merchant_id = c.merchant_id \
             WHERE c.season_id = $1 AND c.live_count <> 0 AND l.live IS NULL",
                citizen = text("l.citizen_id"),
                merchant = text("l.merchant_id"),
                counted = text("c.citizen_id"),
                counted_at = text("c.merchant_id")
            ),
        )
    }

    async fn count_breaks(
        tx: &mut Tx,
        check: &'static str,
        sql: String,
        season_id: SeasonId,
    ) -> Result<LinkBreaks, StorageError> {
        let count_sql = sqlx::AssertSqlSafe(format!("SELECT CAST(COUNT(*) AS BIGINT) FROM ({sql}) breaks"));
        let (breaks,): (i64,) = query_as(count_sql).bind(season_id).fetch_one(&mut *tx).await?;
        if breaks == 0 {
            return Ok(LinkBreaks { check, breaks, listed: Vec::new() });
        }
        let list_sql = sqlx::AssertSqlSafe(format!("{sql} LIMIT {MAX_BREAKS_LISTED}"));
        let listed: Vec<(String,)> = query_as(list_sql).bind(season_id).fetch_all(&mut *tx).await?;
        Ok(LinkBreaks { check, breaks, listed: listed.into_iter().map(|(d,)| d).collect() })
    }
}

#[async_trait]
impl FinanceStore for SqlStore {
    async fn season_balances(&self, season_id: SeasonId) -> Result<Vec<(String, Balance)>, StorageError> {
        let rows: Vec<AddressBalanceRow> = query_as(
            "SELECT a.address, COALESCE(b.debits_fen, 0) AS debits_fen, COALESCE(b.credits_fen, 0) AS credits_fen FROM accounts a \
             LEFT JOIN account_balances b ON b.account_id = a.id WHERE a.address LIKE $1 ORDER BY a.address",
        )
        .bind(accounts::season_pattern(season_id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(AddressBalanceRow::into_pair).collect())
    }

    async fn voucher_status_counts(
        &self,
        season_id: SeasonId,
    ) -> Result<Vec<VoucherStatusCount>, StorageError> {
        Ok(query_as(
            "SELECT batch_id, status, CAST(COUNT(*) AS BIGINT) AS vouchers FROM vouchers WHERE season_id = $1 \
             GROUP BY batch_id, status",
        )
        .bind(season_id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn batch_sales(&self, season_id: SeasonId) -> Result<Vec<(BatchId, SalesFigures)>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT r.batch_id, {SALES_COLUMNS} FROM redemptions r WHERE r.season_id = $1 GROUP BY r.batch_id"
        ));
        let rows: Vec<BatchSalesRow> = query_as(sql).bind(season_id).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| (r.batch_id, r.sales.figures())).collect())
    }

    async fn merchant_sales(
        &self,
        season_id: SeasonId,
        city: Option<RegionCode>,
    ) -> Result<Vec<MerchantSales>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT m.id, m.name, m.city, m.category, s.redemptions, s.reversals, s.discount_fen, s.order_amount_fen FROM \
             (SELECT r.merchant_id, {SALES_COLUMNS} FROM redemptions r WHERE r.season_id = $1 \
              GROUP BY r.merchant_id) s JOIN merchants m ON m.id = s.merchant_id \
             WHERE ($2 = '' OR m.city = $2) ORDER BY m.name, m.id LIMIT {}",
            crate::storage::finance::MAX_REPORT_ROWS
        ));
        let city = city.map(|c| c.to_string()).unwrap_or_default();
        let rows: Vec<MerchantSalesRow> =
            query_as(sql).bind(season_id).bind(city).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|r| MerchantSales {
                merchant_id: r.id,
                name: r.name,
                city: r.city,
                category: r.category,
                sales: r.sales.figures(),
            })
            .collect())
    }

    async fn day_activity(
        &self,
        season_id: SeasonId,
        city: Option<RegionCode>,
    ) -> Result<Vec<DayActivity>, StorageError> {
        let claims_sql = sqlx::AssertSqlSafe(format!(
            "SELECT {day} AS day, CAST(COUNT(*) AS BIGINT) AS claims, \
             CAST(COALESCE(SUM(value_fen), 0) AS BIGINT) AS claimed_fen \
             FROM vouchers WHERE season_id = $1 GROUP BY {day}",
            day = day_sql("claimed_at_us")
        ));
        let claims: Vec<DayClaimsRow> = if city.is_none() {
            query_as(claims_sql).bind(season_id).fetch_all(&self.pool).await?
        } else {
            Vec::new()
        };
        let redemptions_sql = sqlx::AssertSqlSafe(format!(
            "SELECT {day} AS day, {SALES_COLUMNS} FROM redemptions r JOIN merchants m ON m.id = r.merchant_id \
             WHERE r.season_id = $1 AND ($2 = '' OR m.city = $2) GROUP BY {day}",
            day = day_sql("r.redeemed_at_us")
        ));
        let city = city.map(|c| c.to_string()).unwrap_or_default();
        let redeemed: Vec<DaySalesRow> =
            query_as(redemptions_sql).bind(season_id).bind(city).fetch_all(&self.pool).await?;
        let mut days: BTreeMap<i64, DayActivity> = BTreeMap::new();
        let blank = |day_number| DayActivity {
            day_number,
            claims: 0,
            claimed_fen: 0,
            sales: SalesFigures::default(),
        };
        for row in claims {
            let entry = days.entry(row.day).or_insert_with(|| blank(row.day));
            entry.claims = row.claims;
            entry.claimed_fen = row.claimed_fen;
        }
        for row in redeemed {
            days.entry(row.day).or_insert_with(|| blank(row.day)).sales = row.sales.figures();
        }
        Ok(days.into_values().collect())
    }

    async fn unsettled_counts(
        &self,
        season_id: SeasonId,
        cut_off: Timestamp,
    ) -> Result<Vec<UnsettledCount>, StorageError> {
        let rows: Vec<UnsettledCountRow> = query_as(
            "SELECT merchant_id, COUNT(*) AS redemptions FROM redemptions WHERE season_id = $1 \
             AND settled_at_us IS NULL AND reversed_at_us IS NULL AND redeemed_at_us <= $2 \
             GROUP BY merchant_id ORDER BY merchant_id",
        )
        .bind(season_id)
        .bind(cut_off.unix_us())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| UnsettledCount { merchant_id: r.merchant_id, redemptions: r.redemptions })
            .collect())
    }

    async fn settle_merchants(
        &self,
        plan: &SettlementPlan,
        merchants: &[MerchantId],
    ) -> Result<usize, WriteError> {
        if merchants.is_empty() {
            return Ok(0);
        }
        // The redemption rows are updated and the lines written before the write gate
        // and the ledger head are taken (on PostgreSQL; SQLite has one writer anyway):
        // tills wait only while the chunk's entries are posted.
        let (held, mut tx) = self.begin_row_write().await?;
        self.lock_settlement(&mut tx, plan.id).await?;
        let existing = Self::settlement_in(&mut tx, plan).await?;
        if existing.as_ref().is_some_and(|s| s.completed_at.is_some()) {
            return Ok(0);
        }
        if let Some((set, _)) = self.backend.settlement_scan_sql() {
            execute_raw(set, &mut tx).await?;
        }
        let lines = Self::settle_redemptions(&mut tx, plan, merchants).await?;
        if let Some((_, reset)) = self.backend.settlement_scan_sql() {
            execute_raw(reset, &mut tx).await?;
        }
        if lines.is_empty() {
            return Ok(0);
        }
        let merchants_lined: Vec<MerchantId> = lines.keys().copied().collect();
        let on_hold = Self::held_merchants_in(&mut tx, plan.season_id, &merchants_lined).await?;
        let held_fen: i64 = on_hold.keys().filter_map(|m| lines.get(m)).map(|l| l.amount_fen).sum();
        let held_count = on_hold.len() as i64;
        let total_fen: i64 = lines.values().map(|l| l.amount_fen).sum();
        let line_count = i32::try_from(lines.len()).map_err(|_| {
            WriteError::Storage(StorageError::Corrupt("a settlement chunk of over 2^31 merchants".into()))
        })?;
        let write = if existing.is_some() {
            query(
                "UPDATE settlements SET total_fen = total_fen + $1, line_count = line_count + $2, \
                 held_count = held_count + $4, held_fen = held_fen + $5 WHERE id = $3",
            )
            .bind(total_fen)
            .bind(line_count)
            .bind(plan.id)
            .bind(held_count)
            .bind(held_fen)
        } else {
            query(
                "INSERT INTO settlements (total_fen, line_count, id, season_id, cut_off_us, created_at_us, \
                 held_count, held_fen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(total_fen)
            .bind(line_count)
            .bind(plan.id)
            .bind(plan.season_id)
            .bind(plan.cut_off.unix_us())
            .bind(plan.created_at.unix_us())
            .bind(held_count)
            .bind(held_fen)
        };
        write.execute(&mut tx).await?;
        Self::insert_settlement_lines(&mut tx, plan.id, &lines, &on_hold).await?;
        let entries: Vec<NewEntry> = lines
            .values()
            .map(|line| {
                let held = on_hold.contains_key(&line.merchant_id);
                entries::settlement_entry(plan.season_id, line.merchant_id, plan.id, &line.by_funder, held)
            })
            .collect();
        let _gate = self.gate_after_rows(held).await;
        let opened = self.post_in(&mut tx, &entries).await?;
        self.commit_and_cache(tx, opened).await?;
        Ok(lines.len())
    }

    async fn finish_settlement(
        &self,
        plan: &SettlementPlan,
        at: Timestamp,
    ) -> Result<SettlementRecord, WriteError> {
        let (_held, mut tx) = self.begin_row_write().await?;
        self.lock_settlement(&mut tx, plan.id).await?;
        if let Some(answer) = &plan.answer
            && Self::answer_exists(&mut tx, answer).await?
        {
            return Err(WriteError::IdempotencyTaken);
        }
        let existing = Self::settlement_in(&mut tx, plan).await?;
        if existing.is_none() {
            // Nothing of its own to settle: a settlement still pays the lines released from
            // hold since the last one, if any wait.
            if !Self::released_waiting(&mut tx, plan.season_id).await? {
                return Err(WriteError::Refused(Refusal::Code(ErrorCode::NothingToSettle)));
            }
            query(
                "INSERT INTO settlements (total_fen, line_count, id, season_id, cut_off_us, created_at_us) \
                 VALUES (0, 0, $1, $2, $3, $4)",
            )
            .bind(plan.id)
            .bind(plan.season_id)
            .bind(plan.cut_off.unix_us())
            .bind(plan.created_at.unix_us())
            .execute(&mut tx)
            .await?;
        }
        let Some(mut record) = Self::settlement_in(&mut tx, plan).await? else {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::NothingToSettle)));
        };
        if record.completed_at.is_none() {
            let (released_count, released_fen) =
                Self::take_up_released(&mut tx, plan.season_id, plan.id).await?;
            query(
                "UPDATE settlements SET completed_at_us = $1, released_count = $3, released_fen = $4 WHERE id = $2",
            )
            .bind(at.unix_us())
            .bind(plan.id)
            .bind(released_count)
            .bind(released_fen)
            .execute(&mut tx)
            .await?;
            record.completed_at = Some(at);
            record.released_count = released_count;
            record.released_fen = released_fen;
        }
        if let Some(answer) = &plan.answer {
            let answer = IdemRecord { body: (plan.render)(&record), ..answer.clone() };
            self.insert_answers(&mut tx, std::slice::from_ref(&answer)).await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    async fn settlements_in_progress(
        &self,
        season_id: Option<SeasonId>,
    ) -> Result<Vec<SettlementRecord>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE ($1 IS NULL OR season_id = $1) \
             AND completed_at_us IS NULL ORDER BY created_at_us, id LIMIT 100"
        ));
        let rows: Vec<SettlementRow> = query_as(sql).bind(season_id).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(SettlementRow::into_record).collect())
    }

    async fn settlement(&self, id: SettlementId) -> Result<Option<SettlementRecord>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE id = $1"));
        let row: Option<SettlementRow> = query_as(sql).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(SettlementRow::into_record))
    }

    async fn season_settlements(
        &self,
        season_id: SeasonId,
        after: Option<&SettlementRecord>,
        limit: i64,
    ) -> Result<Vec<SettlementRecord>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE season_id = $1 \
             AND ($2 IS NULL OR (created_at_us, id) > ($2, $3)) ORDER BY created_at_us, id LIMIT $4"
        ));
        let rows: Vec<SettlementRow> = query_as(sql)
            .bind(season_id)
            .bind(after.map(|s| s.created_at.unix_us()))
            .bind(after.map(|s| s.id))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(SettlementRow::into_record).collect())
    }

    async fn settlement_lines(&self, id: SettlementId) -> Result<Vec<SettlementLineRecord>, StorageError> {
        Self::lines_of(&self.pool, id).await
    }

    async fn payout_lines(&self, id: SettlementId) -> Result<Vec<SettlementLineRecord>, StorageError> {
        let mut lines: Vec<SettlementLineRecord> = Self::lines_of(&self.pool, id)
            .await?
            .into_iter()
            .filter(|l| l.hold_status == HoldStatus::None)
            .collect();
        lines.extend(Self::released_payout_lines(&self.pool, id).await?);
        Ok(lines)
    }

    async fn commit_payout(
        &self,
        settlement_id: SettlementId,
        payout_ref: &str,
        at: Timestamp,
        answer: &IdemRecord,
    ) -> Result<(), WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        self.lock_head(&mut tx).await?;
        if Self::answer_exists(&mut tx, answer).await? {
            return Err(WriteError::IdempotencyTaken);
        }
        let state: Option<SettlementStateRow> =
            query_as("SELECT season_id, paid_at_us, completed_at_us FROM settlements WHERE id = $1")
                .bind(settlement_id)
                .fetch_optional(&mut tx)
                .await?;
        let season_id = match state {
            Some(SettlementStateRow { paid_at_us: Some(_), .. }) => {
                return Err(WriteError::Refused(Refusal::Code(ErrorCode::AlreadyPaid)));
            }
            Some(SettlementStateRow { completed_at_us: None, .. }) => {
                return Err(WriteError::Refused(Refusal::Code(ErrorCode::SettlementInProgress)));
            }
            Some(SettlementStateRow { season_id, .. }) => season_id,
            None => return Err(WriteError::Refused(Refusal::Code(ErrorCode::SettlementNotFound))),
        };
        // Complete: no chunk adds a line any more (`settle_merchants` checks), so the
        // lines read here are all of them.
        let lines = Self::payout_lines_of(&mut tx, settlement_id).await?;
        query("UPDATE settlements SET paid_at_us = $1, payout_ref = $2 WHERE id = $3")
            .bind(at.unix_us())
            .bind(payout_ref.to_owned())
            .bind(settlement_id)
            .execute(&mut tx)
            .await?;
        let entries: Vec<NewEntry> = lines
            .iter()
            .map(|line| {
                let by_funder: BTreeMap<RegionCode, i64> =
                    line.funders.iter().map(|(f, a)| (*f, a.as_fen())).collect();
                if let Some(held_in) = line.held_in {
                    return entries::released_payout_entry(season_id, line.merchant_id, held_in, &by_funder);
                }
                let postings = move_per_funder(&by_funder, |f| {
                    (
                        accounts::settled(season_id, line.merchant_id, f),
                        accounts::paid(season_id, line.merchant_id, f),
                    )
                });
                NewEntry::new("payout", format!("payout:{settlement_id}:{}", line.merchant_id), postings)
            })
            .collect();
        self.insert_answers(&mut tx, std::slice::from_ref(answer)).await?;
        let opened = self.post_in(&mut tx, &entries).await?;
        self.commit_and_cache(tx, opened).await?;
        Ok(())
    }

    async fn close_season(&self, season_id: SeasonId, at: Timestamp) -> Result<Timestamp, WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        self.lock_head(&mut tx).await?;
        let closed: Option<(Option<i64>,)> = query_as("SELECT closed_at_us FROM seasons WHERE id = $1")
            .bind(season_id)
            .fetch_optional(&mut tx)
            .await?;
        match closed {
            None => return Err(WriteError::Refused(Refusal::Code(ErrorCode::SeasonNotFound))),
            Some((Some(closed_at),)) => {
                return Ok(Timestamp::from_unix_us(closed_at));
            }
            Some((None,)) => {}
        }
        query("UPDATE seasons SET closed_at_us = $1 WHERE id = $2")
            .bind(at.unix_us())
            .bind(season_id)
            .execute(&mut tx)
            .await?;
        let expiring: Vec<ActiveCountRow> = query_as(
            "SELECT batch_id, CAST(COUNT(*) AS BIGINT) AS active FROM vouchers WHERE season_id = $1 AND status = 'active' GROUP BY batch_id",
        )
        .bind(season_id)
        .fetch_all(&mut tx)
        .await?;
        query("UPDATE vouchers SET status = 'expired', expired_at_us = $1 WHERE season_id = $2 AND status = 'active'")
            .bind(at.unix_us())
            .bind(season_id)
            .execute(&mut tx)
            .await?;
        for row in &expiring {
            query("UPDATE batches SET returned_count = returned_count + $1 WHERE id = $2")
                .bind(row.active)
                .bind(row.batch_id)
                .execute(&mut tx)
                .await?;
        }
        query(
            "UPDATE batches SET reserve_returned_at_us = $1 WHERE season_id = $2 AND reserve_returned_at_us IS NULL",
        )
        .bind(at.unix_us())
        .bind(season_id)
        .execute(&mut tx)
        .await?;
        let balances = Self::batch_balances_in(&mut tx, season_id).await?;
        let entries = crate::domain::finance::season_close_entries(season_id, &balances);
        let opened = self.post_in(&mut tx, &entries).await?;
        self.commit_and_cache(tx, opened).await?;
        Ok(at)
    }

    async fn final_report(&self, season_id: SeasonId) -> Result<Option<FinalReport>, StorageError> {
        let row: Option<FinalReportRow> = query_as(
            "SELECT report, reconciliation, checkpoint_seq, created_at_us FROM season_reports WHERE season_id = $1",
        )
        .bind(season_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| FinalReport {
            season_id,
            report: row.report,
            reconciliation: row.reconciliation,
            checkpoint_seq: row.checkpoint_seq,
            created_at: Timestamp::from_unix_us(row.created_at_us),
        }))
    }

    async fn insert_final_report(&self, report: &FinalReport) -> Result<(), StorageError> {
        query(
            "INSERT INTO season_reports (season_id, report, reconciliation, checkpoint_seq, created_at_us) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (season_id) DO NOTHING",
        )
        .bind(report.season_id)
        .bind(report.report.clone())
        .bind(report.reconciliation.clone())
        .bind(report.checkpoint_seq)
        .bind(report.created_at.unix_us())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn merchant_statement(
        &self,
        merchant_id: MerchantId,
        season_id: SeasonId,
        limit: i64,
    ) -> Result<Vec<StatementEvent>, StorageError> {
        let rows: Vec<StatementRow> = query_as(
            "SELECT redeemed_at_us AS at, 'redemption' AS kind, id, order_ref, order_amount_fen, discount_fen, \
               CAST(NULL AS TEXT) AS note \
               FROM redemptions WHERE merchant_id = $1 AND season_id = $2 \
             UNION ALL \
             SELECT reversed_at_us, 'reversal', reversal_id, order_ref, order_amount_fen, discount_fen, NULL \
               FROM redemptions WHERE merchant_id = $1 AND season_id = $2 AND reversed_at_us IS NOT NULL \
             UNION ALL \
             SELECT s.created_at_us, CASE WHEN l.hold_status = 'none' THEN 'settlement' ELSE 'held' END, s.id, \
               NULL, 0, l.amount_fen, NULL \
               FROM settlement_lines l JOIN settlements s ON s.id = l.settlement_id \
               WHERE l.merchant_id = $1 AND s.season_id = $2 \
             UNION ALL \
             SELECT s.paid_at_us, 'payout', s.id, NULL, 0, l.amount_fen, NULL \
               FROM settlement_lines l JOIN settlements s ON s.id = l.settlement_id \
               WHERE l.merchant_id = $1 AND s.season_id = $2 AND s.paid_at_us IS NOT NULL AND l.hold_status = 'none' \
             UNION ALL \
             SELECT l.released_at_us, 'released', s.id, NULL, 0, l.amount_fen, l.release_note \
               FROM settlement_lines l JOIN settlements s ON s.id = l.settlement_id \
               WHERE l.merchant_id = $1 AND s.season_id = $2 AND l.hold_status = 'released' \
             UNION ALL \
             SELECT l.rejected_at_us, 'rejected', s.id, NULL, 0, l.amount_fen, l.reject_note \
               FROM settlement_lines l JOIN settlements s ON s.id = l.settlement_id \
               WHERE l.merchant_id = $1 AND s.season_id = $2 AND l.hold_status = 'rejected' \
             UNION ALL \
             SELECT p.paid_at_us, 'payout', p.id, NULL, 0, l.amount_fen, NULL \
               FROM settlement_lines l JOIN settlements p ON p.id = l.paid_in_settlement_id \
               WHERE l.merchant_id = $1 AND p.season_id = $2 AND p.paid_at_us IS NOT NULL AND l.hold_status = 'released' \
             ORDER BY 1, 2, 3 LIMIT $3",
        )
        .bind(merchant_id)
        .bind(season_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| StatementEvent {
                at: Timestamp::from_unix_us(row.at),
                kind: row.kind,
                id: row.id,
                order_ref: row.order_ref,
                order_amount_fen: row.order_amount_fen,
                amount_fen: row.discount_fen,
                note: row.note,
            })
            .collect())
    }

    async fn terminal_redemptions(
        &self,
        terminals: &[TerminalId],
        since: Timestamp,
        limit: i64,
    ) -> Result<Vec<RedemptionRecord>, StorageError> {
        if terminals.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::new(format!(
            "SELECT {REDEMPTION_COLUMNS} FROM redemptions WHERE redeemed_at_us >= "
        ));
        q.push_bind(since.unix_us()).push(" AND terminal_id IN (");
        let mut list = q.separated(", ");
        for t in terminals {
            list.push_bind(*t);
        }
        q.push(") ORDER BY redeemed_at_us, id LIMIT ").push_bind(limit);
        let rows: Vec<RedemptionRow> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(RedemptionRow::into_record).collect())
    }

    async fn redemptions_by_id(&self, ids: &[RedemptionId]) -> Result<Vec<RedemptionRecord>, StorageError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let mut q =
                QueryBuilder::new(format!("SELECT {REDEMPTION_COLUMNS} FROM redemptions WHERE id IN ("));
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            let rows: Vec<RedemptionRow> = q.build_query_as().fetch_all(&self.pool).await?;
            found.extend(rows.into_iter().map(RedemptionRow::into_record));
        }
        Ok(found)
    }

    async fn merchant_money(
        &self,
        season_id: SeasonId,
    ) -> Result<Vec<(MerchantId, MerchantMoney)>, StorageError> {
        let unsettled: Vec<UnsettledRow> = query_as(
            "SELECT merchant_id, CAST(SUM(discount_fen) AS BIGINT) AS unsettled_fen FROM redemptions WHERE season_id = $1 \
             AND reversed_at_us IS NULL AND settled_at_us IS NULL GROUP BY merchant_id",
        )
        .bind(season_id)
        .fetch_all(&self.pool)
        .await?;
        let settled: Vec<SettledRow> = query_as(
            "SELECT l.merchant_id, \
             CAST(SUM(CASE WHEN l.hold_status = 'none' AND s.paid_at_us IS NULL THEN l.amount_fen \
                      WHEN l.hold_status = 'released' AND p.paid_at_us IS NULL THEN l.amount_fen ELSE 0 END) AS BIGINT) \
                 AS settled_unpaid_fen, \
             CAST(SUM(CASE WHEN l.hold_status = 'none' AND s.paid_at_us IS NOT NULL THEN l.amount_fen \
                      WHEN l.hold_status = 'released' AND p.paid_at_us IS NOT NULL THEN l.amount_fen ELSE 0 END) AS BIGINT) \
                 AS paid_fen, \
             CAST(SUM(CASE WHEN l.hold_status = 'held' THEN l.amount_fen ELSE 0 END) AS BIGINT) AS held_fen \
             FROM settlement_lines l JOIN settlements s ON s.id = l.settlement_id \
             LEFT JOIN settlements p ON p.id = l.paid_in_settlement_id WHERE s.season_id = $1 \
             GROUP BY l.merchant_id",
        )
        .bind(season_id)
        .fetch_all(&self.pool)
        .await?;
        let mut money: HashMap<MerchantId, MerchantMoney> = HashMap::new();
        for row in unsettled {
            money.entry(row.merchant_id).or_default().unsettled_fen = row.unsettled_fen;
        }
        for row in settled {
            let entry = money.entry(row.merchant_id).or_default();
            entry.settled_unpaid_fen = row.settled_unpaid_fen;
            entry.paid_fen = row.paid_fen;
            entry.held_fen = row.held_fen;
        }
        Ok(money.into_iter().collect())
    }

    async fn link_breaks(
        &self,
        season: &crate::domain::season::Season,
    ) -> Result<Vec<LinkBreaks>, StorageError> {
        let mut checks = self.rows_to_entries_checks();
        checks.extend(self.entries_to_rows_checks());
        checks.extend(self.counter_checks(season));
        let mut found = Vec::with_capacity(checks.len());
        let mut tx = self.backend.begin_link_checks().await?;
        for (name, sql) in checks {
            found.push(Self::count_breaks(&mut tx, name, sql, season.id).await?);
        }
        tx.rollback().await?;
        Ok(found)
    }

    async fn put_hold(&self, hold: &NewHold) -> Result<HoldRecord, WriteError> {
        self.put_hold_row(hold).await
    }

    async fn lift_hold(&self, lift: &LiftHold) -> Result<HoldRecord, WriteError> {
        self.lift_hold_row(lift).await
    }

    async fn set_hold_threshold(
        &self,
        season_id: SeasonId,
        threshold: Option<u8>,
    ) -> Result<bool, StorageError> {
        self.set_hold_threshold_row(season_id, threshold).await
    }

    async fn season_holds(
        &self,
        season_id: SeasonId,
        city: Option<RegionCode>,
    ) -> Result<Vec<HoldRecord>, StorageError> {
        self.season_hold_rows(season_id, city).await
    }

    async fn held_lines(&self, season_id: SeasonId) -> Result<Vec<HeldLineRecord>, StorageError> {
        self.held_line_rows(season_id).await
    }

    async fn decide_held_line(&self, decision: &HoldDecision) -> Result<HeldLineRecord, WriteError> {
        self.decide_held_line_row(decision).await
    }
}

/// Postings moving each funder's amount from one account to another.
fn move_per_funder(
    by_funder: &BTreeMap<RegionCode, i64>,
    accounts: impl Fn(RegionCode) -> (crate::domain::ledger::AccountSpec, crate::domain::ledger::AccountSpec),
) -> Vec<NewPosting> {
    let mut postings = Vec::new();
    for (funder, amount_fen) in by_funder {
        if *amount_fen <= 0 {
            continue;
        }
        let (from, to) = accounts(*funder);
        postings.push(NewPosting { account: from, side: Side::Debit, amount_fen: *amount_fen });
        postings.push(NewPosting { account: to, side: Side::Credit, amount_fen: *amount_fen });
    }
    postings
}

impl SqlStore {
    /// Rows to entries: every voucher, redemption, reversal and settlement line of the season
    /// has its journal entry, and the rows agree with each other. Each statement lists the
    /// rows at fault, with `$1` the season.
    fn rows_to_entries_checks(&self) -> Vec<(&'static str, String)> {
        let mut checks = self.voucher_rows_checks();
        checks.extend(self.redemption_rows_checks());
        checks
    }

    /// An `EXISTS` condition: the entry `<kind>:<col>` is in the journal.
    fn entry_for(&self, kind: &str, col: &str) -> String {
        let text = self.backend.uuid_text_sql(col);
        format!("EXISTS (SELECT 1 FROM journal_entries e WHERE e.reference = '{kind}:' || {text})")
    }

    /// Rows to entries, of the season's vouchers.
    fn voucher_rows_checks(&self) -> Vec<(&'static str, String)> {
        let text = |col: &str| self.backend.uuid_text_sql(col);
        let entry_for = |kind: &str, col: &str| self.entry_for(kind, col);
        vec![
            (
                "voucher_without_claim_entry",
                format!(
                    "SELECT 'voucher ' || {} FROM vouchers v WHERE v.season_id = $1 AND NOT {}",
                    text("v.id"),
                    entry_for("claim", "v.id")
                ),
            ),
            (
                "expired_voucher_without_entry",
                format!(
                    "SELECT 'voucher ' || {} FROM vouchers v JOIN seasons s ON s.id = v.season_id \
                 WHERE v.season_id = $1 AND v.status = 'expired' AND NOT {} \
                 AND (s.closed_at_us IS NULL OR v.expired_at_us <> s.closed_at_us) \
                 AND NOT EXISTS (SELECT 1 FROM redemptions r WHERE r.voucher_id = v.id AND r.reversed_at_us IS NOT NULL)",
                    text("v.id"),
                    entry_for("expiry", "v.id")
                ),
            ),
            (
                "redeemed_voucher_without_redemption",
                format!(
                    "SELECT 'voucher ' || {} FROM vouchers v WHERE v.season_id = $1 AND v.status = 'redeemed' \
                 AND NOT EXISTS (SELECT 1 FROM redemptions r WHERE r.voucher_id = v.id AND r.reversed_at_us IS NULL)",
                    text("v.id")
                ),
            ),
        ]
    }

    /// Rows to entries, of the season's redemptions, reversals and settlement lines.
    fn redemption_rows_checks(&self) -> Vec<(&'static str, String)> {
        let text = |col: &str| self.backend.uuid_text_sql(col);
        let entry_for = |kind: &str, col: &str| self.entry_for(kind, col);
        vec![
            (
                "live_redemption_of_unredeemed_voucher",
                format!(
                    "SELECT 'redemption ' || {} FROM redemptions r JOIN vouchers v ON v.id = r.voucher_id \
                 WHERE r.season_id = $1 AND r.reversed_at_us IS NULL AND v.status <> 'redeemed'",
                    text("r.id")
                ),
            ),
            // What the foreign keys of `redemptions` held before PostgreSQL dropped them
            // (migration 0006), and more: the rows it names exist and agree with it.
            (
                "redemption_with_broken_reference",
                format!(
                    "SELECT 'redemption ' || {} FROM redemptions r \
                 LEFT JOIN vouchers v ON v.id = r.voucher_id \
                 LEFT JOIN batches b ON b.id = r.batch_id \
                 LEFT JOIN terminals t ON t.id = r.terminal_id \
                 LEFT JOIN merchants m ON m.id = r.merchant_id \
                 WHERE r.season_id = $1 AND (v.id IS NULL OR b.id IS NULL OR t.id IS NULL OR m.id IS NULL \
                 OR v.batch_id <> r.batch_id OR v.season_id <> r.season_id OR b.season_id <> r.season_id \
                 OR t.merchant_id <> r.merchant_id)",
                    text("r.id")
                ),
            ),
            (
                "redemption_without_entry",
                format!(
                    "SELECT 'redemption ' || {} FROM redemptions r WHERE r.season_id = $1 AND NOT {}",
                    text("r.id"),
                    entry_for("redemption", "r.id")
                ),
            ),
            (
                "reversal_without_entry",
                format!(
                    "SELECT 'reversal ' || {} FROM redemptions r WHERE r.season_id = $1 AND r.reversed_at_us IS NOT NULL \
                 AND (r.reversal_id IS NULL OR NOT {})",
                    text("r.reversal_id"),
                    entry_for("reversal", "r.reversal_id")
                ),
            ),
            (
                "settlement_line_without_entry",
                format!(
                    "SELECT 'settlement line ' || {} || '/' || {} FROM settlement_lines l JOIN settlements s ON s.id = l.settlement_id \
                 WHERE s.season_id = $1 AND NOT EXISTS (SELECT 1 FROM journal_entries e WHERE e.reference = \
                 'settlement:' || {} || ':' || {})",
                    text("s.id"),
                    text("l.merchant_id"),
                    text("s.id"),
                    text("l.merchant_id")
                ),
            ),
            (
                "held_line_decision_without_entry",
                format!(
                    "SELECT 'settlement line ' || {s} || '/' || {m} || ' (' || l.hold_status || ')' FROM settlement_lines l \
                 JOIN settlements s ON s.id = l.settlement_id WHERE s.season_id = $1 AND \
                 ((l.hold_status = 'released' AND NOT EXISTS (SELECT 1 FROM journal_entries e WHERE e.reference = \
                 'hold_release:' || {s} || ':' || {m})) OR (l.hold_status = 'rejected' AND NOT EXISTS \
                 (SELECT 1 FROM journal_entries e WHERE e.reference = 'hold_reject:' || {s} || ':' || {m})))",
                    s = text("s.id"),
                    m = text("l.merchant_id"),
                ),
            ),
        ]
    }

    /// Entries to rows. An entry whose row is missing cannot be placed in a season, so these
    /// are checked across the ledger; an entry whose row exists must agree with it.
    /// (`$1 = $1` keeps the season parameter every check is bound with.)
    fn entries_to_rows_checks(&self) -> Vec<(&'static str, String)> {
        let entry_names = |kind: &str, col: &str| self.backend.entry_names_sql(kind, col);
        vec![
            (
                "claim_entry_without_voucher",
                format!(
                    "SELECT e.reference FROM journal_entries e LEFT JOIN vouchers v ON {} \
                 WHERE e.kind = 'claim' AND v.id IS NULL AND $1 = $1",
                    entry_names("claim", "v.id")
                ),
            ),
            (
                "expiry_entry_disagrees",
                format!(
                    "SELECT e.reference FROM journal_entries e LEFT JOIN vouchers v ON {} \
                 WHERE e.kind = 'expiry' AND (v.id IS NULL OR (v.season_id = $1 AND v.status <> 'expired'))",
                    entry_names("expiry", "v.id")
                ),
            ),
            (
                "redemption_entry_without_redemption",
                format!(
                    "SELECT e.reference FROM journal_entries e LEFT JOIN redemptions r ON {} \
                 WHERE e.kind = 'redemption' AND r.id IS NULL AND $1 = $1",
                    entry_names("redemption", "r.id")
                ),
            ),
            (
                "reversal_entry_disagrees",
                format!(
                    "SELECT e.reference FROM journal_entries e LEFT JOIN redemptions r ON {} \
                 WHERE e.kind = 'reversal' AND (r.id IS NULL OR (r.season_id = $1 AND r.reversed_at_us IS NULL))",
                    entry_names("reversal", "r.reversal_id")
                ),
            ),
        ]
    }
}
