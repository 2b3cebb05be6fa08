//! Merchants, terminals, QR keys and redemptions on either backend (`TillStore`).

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{
    AccountRequestId, BatchId, CardPaymentId, CitizenId, MerchantId, RedemptionId, ReversalId, SeasonId,
    StaffKeyId, TerminalId, VoucherId,
};
use crate::domain::ledger::NewEntry;
use crate::domain::merchant::{
    AccountDecision, AccountRequest, CreditCode, Merchant, MerchantStatus, SettlementAccount,
};
use crate::domain::region::{RegionCode, RegionLevel};
use crate::domain::season::Voucher;
use crate::domain::time::Timestamp;
use crate::storage::db::{QueryBuilder, Tx, query, query_as};
use crate::storage::seasons::{VOUCHER_COLUMNS, VoucherRow};
use crate::storage::{
    AccountChange, AccountDecisionOutcome, AccountRequestOutcome, IdemRecord, NewAccountDecision,
    NewAccountRequest, NewRedemption, NewReversal, QrKeyRecord, RedemptionRecord, Refusal, SqlStore,
    StorageError, TerminalRecord, TillStore, WriteError,
};

pub(crate) const MERCHANT_COLUMNS: &str =
    "id, name, credit_code, category, city, bank, account_no, account_name, status";
pub(crate) const REDEMPTION_COLUMNS: &str = "id, voucher_id, merchant_id, terminal_id, season_id, batch_id, \
     order_ref, order_amount_fen, discount_fen, funders, redeemed_at_us, reversed_at_us, reversal_id, settled_at_us";

/// A `terminals` row as authentication reads it.
#[derive(sqlx::FromRow)]
struct TerminalRow {
    id: TerminalId,
    merchant_id: MerchantId,
    public_key: Vec<u8>,
    label: String,
    revoked_at_us: Option<i64>,
}

/// A merchant's payout account as read under the lock.
#[derive(sqlx::FromRow)]
struct PayoutAccountRow {
    bank: String,
    account_no: String,
    account_name: String,
}

/// A `qr_keys` row.
#[derive(sqlx::FromRow)]
struct QrKeyRow {
    key_id: String,
    public_key: Vec<u8>,
    valid_from_us: i64,
    retired_at_us: Option<i64>,
}

/// A redemption's state as a reversal locks it.
#[derive(sqlx::FromRow)]
struct ReversibleRow {
    reversed_at_us: Option<i64>,
    settled_at_us: Option<i64>,
    season_id: SeasonId,
}

#[derive(sqlx::FromRow)]
pub(crate) struct MerchantRow {
    id: MerchantId,
    name: String,
    credit_code: String,
    category: String,
    city: String,
    bank: String,
    account_no: String,
    account_name: String,
    status: String,
}

impl MerchantRow {
    pub fn into_merchant(self) -> Result<Merchant, StorageError> {
        let corrupt = |what: &str| StorageError::Corrupt(format!("merchant {}: {what}", self.id));
        Ok(Merchant {
            id: self.id,
            name: self.name.clone(),
            credit_code: CreditCode::parse(&self.credit_code).map_err(|_| corrupt("credit code"))?,
            category: self.category.parse().map_err(|_| corrupt("category"))?,
            city: self.city.parse().map_err(|_| corrupt("city"))?,
            settlement: SettlementAccount {
                bank: self.bank.clone(),
                account_no: self.account_no.clone(),
                account_name: self.account_name.clone(),
            },
            status: MerchantStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
        })
    }
}

/// The columns [`AccountChangeRow`] reads, in its order.
pub(crate) const ACCOUNT_CHANGE_COLUMNS: &str = "id, merchant_id, seq, changed_at_us, changed_by, reason, \
     old_bank, old_account_no, old_account_name, new_bank, new_account_no, new_account_name, request_id, requested_by";

#[derive(sqlx::FromRow)]
pub(crate) struct AccountChangeRow {
    id: Uuid,
    merchant_id: MerchantId,
    seq: i64,
    changed_at_us: i64,
    changed_by: StaffKeyId,
    reason: String,
    old_bank: String,
    old_account_no: String,
    old_account_name: String,
    new_bank: String,
    new_account_no: String,
    new_account_name: String,
    request_id: Option<AccountRequestId>,
    requested_by: Option<StaffKeyId>,
}

impl AccountChangeRow {
    pub fn into_change(self) -> super::AccountChange {
        super::AccountChange {
            id: self.id,
            merchant_id: self.merchant_id,
            seq: self.seq,
            changed_at: crate::domain::time::Timestamp::from_unix_us(self.changed_at_us),
            changed_by: self.changed_by,
            reason: self.reason,
            from: SettlementAccount {
                bank: self.old_bank,
                account_no: self.old_account_no,
                account_name: self.old_account_name,
            },
            to: SettlementAccount {
                bank: self.new_bank,
                account_no: self.new_account_no,
                account_name: self.new_account_name,
            },
            request: self.request_id.zip(self.requested_by),
        }
    }
}

/// The columns [`AccountRequestRow`] reads, in its order, from [`ACCOUNT_REQUEST_FROM`].
pub(crate) const ACCOUNT_REQUEST_COLUMNS: &str = "r.id, r.merchant_id, r.seq, r.requested_at_us, r.requested_by, \
     r.reason, r.new_bank, r.new_account_no, r.new_account_name, r.expires_at_us, \
     d.decision, d.decided_at_us, d.decided_by, d.note";

/// A request with its decision, if any.
pub(crate) const ACCOUNT_REQUEST_FROM: &str =
    "merchant_account_requests r LEFT JOIN merchant_account_decisions d ON d.request_id = r.id";

#[derive(sqlx::FromRow)]
pub(crate) struct AccountRequestRow {
    id: AccountRequestId,
    merchant_id: MerchantId,
    seq: i64,
    requested_at_us: i64,
    requested_by: StaffKeyId,
    reason: String,
    new_bank: String,
    new_account_no: String,
    new_account_name: String,
    expires_at_us: i64,
    decision: Option<String>,
    decided_at_us: Option<i64>,
    decided_by: Option<StaffKeyId>,
    note: Option<String>,
}

impl AccountRequestRow {
    pub fn into_request(self) -> Result<AccountRequest, StorageError> {
        use crate::domain::time::Timestamp;
        let decision = match (self.decision.as_deref(), self.decided_at_us, self.decided_by, self.note) {
            (None, ..) => None,
            (Some(decision @ ("approved" | "rejected")), Some(at_us), Some(decided_by), Some(note)) => {
                Some(AccountDecision {
                    approved: decision == "approved",
                    decided_at: Timestamp::from_unix_us(at_us),
                    decided_by,
                    note,
                })
            }
            _ => return Err(StorageError::Corrupt(format!("decision on account request {}", self.id))),
        };
        Ok(AccountRequest {
            id: self.id,
            merchant_id: self.merchant_id,
            seq: self.seq,
            requested_at: Timestamp::from_unix_us(self.requested_at_us),
            requested_by: self.requested_by,
            reason: self.reason,
            to: SettlementAccount {
                bank: self.new_bank,
                account_no: self.new_account_no,
                account_name: self.new_account_name,
            },
            expires_at: Timestamp::from_unix_us(self.expires_at_us),
            decision,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct RedemptionRow {
    id: RedemptionId,
    voucher_id: VoucherId,
    merchant_id: MerchantId,
    terminal_id: TerminalId,
    season_id: SeasonId,
    batch_id: BatchId,
    order_ref: String,
    order_amount_fen: i64,
    discount_fen: i64,
    funders: String,
    redeemed_at_us: i64,
    reversed_at_us: Option<i64>,
    reversal_id: Option<ReversalId>,
    settled_at_us: Option<i64>,
}

impl RedemptionRow {
    pub fn into_record(self) -> super::RedemptionRecord {
        use crate::domain::time::Timestamp;
        super::RedemptionRecord {
            id: self.id,
            voucher_id: self.voucher_id,
            merchant_id: self.merchant_id,
            terminal_id: self.terminal_id,
            season_id: self.season_id,
            batch_id: self.batch_id,
            order_ref: self.order_ref,
            order_amount_fen: self.order_amount_fen,
            discount_fen: self.discount_fen,
            funders_json: self.funders,
            redeemed_at: Timestamp::from_unix_us(self.redeemed_at_us),
            reversed_at: self.reversed_at_us.map(Timestamp::from_unix_us),
            reversal_id: self.reversal_id,
            settled: self.settled_at_us.is_some(),
        }
    }
}

/// What a redemption group could collide with, read under the ledger lock.
#[derive(Default)]
pub(crate) struct SeenState {
    pub answers: std::collections::HashSet<(String, String)>,
    pub nonces: std::collections::HashSet<Vec<u8>>,
    pub vouchers: std::collections::HashMap<VoucherId, String>,
    /// (merchant, order_ref, slot) -> whether the redeemed voucher was provincial.
    pub orders: std::collections::HashMap<(MerchantId, String, String), bool>,
    /// (merchant, order_ref) -> the live card payment on that order.
    pub card_orders: std::collections::HashMap<(MerchantId, String), CardPaymentId>,
    /// (citizen, merchant, season) -> live redemptions, for the group's redemptions whose season
    /// limits them (`NewRedemption::merchant_redemption_limit`).
    pub merchant_counts: std::collections::HashMap<(CitizenId, MerchantId, SeasonId), i64>,
}

/// The rows a redemption group's checks read under the ledger lock (see `SeenState`).
pub(crate) struct GroupRows {
    pub answers: Vec<(String, String)>,
    pub nonces: Vec<Vec<u8>>,
    /// (voucher, status; `season_closed` when its season is closed).
    pub vouchers: Vec<(VoucherId, String)>,
    /// (merchant, order_ref, live card payment).
    pub card_orders: Vec<(MerchantId, String, CardPaymentId)>,
}

/// Decides each redemption of a group in order against what the database holds and what the
/// group itself has already taken: the same checks, in the same order, as a single redemption.
pub(crate) fn decide_redemptions(
    group: &[super::NewRedemption],
    seen: &SeenState,
) -> Vec<Result<(), Refusal>> {
    let mut seen_answers = seen.answers.clone();
    let mut nonces = seen.nonces.clone();
    let mut vouchers = seen.vouchers.clone();
    let mut orders = seen.orders.clone();
    let mut merchant_counts = seen.merchant_counts.clone();
    group
        .iter()
        .map(|r| {
            if !seen_answers.insert((r.answer.scope.clone(), r.answer.key.clone())) {
                return Err(Refusal::IdempotencyTaken);
            }
            if !nonces.insert(r.qr_nonce.clone()) {
                return Err(Refusal::Code(ErrorCode::QrReplayed));
            }
            match vouchers.get(&r.voucher_id).map(String::as_str) {
                Some("active") => {}
                Some("season_closed") => return Err(Refusal::Code(ErrorCode::SeasonClosed)),
                Some(state) => return Err(Refusal::VoucherState(state.to_owned())),
                None => return Err(Refusal::VoucherState("unknown".to_owned())),
            }
            if seen.card_orders.get(&(r.merchant_id, r.order_ref.clone())) != r.card_payment_id.as_ref() {
                return Err(Refusal::Code(ErrorCode::OrderChanged));
            }
            let order = (r.merchant_id, r.order_ref.clone(), r.order_slot.clone());
            if let Some(provincial) = orders.get(&order) {
                let stacking = *provincial != r.provincial;
                let code = if stacking { ErrorCode::StackingNotAllowed } else { ErrorCode::OrderRefUsed };
                return Err(Refusal::Code(code));
            }
            if let Some(limit) = r.merchant_redemption_limit {
                let count = merchant_counts.entry((r.citizen_id, r.merchant_id, r.season_id)).or_insert(0);
                if *count >= i64::from(limit) {
                    return Err(Refusal::Code(ErrorCode::MerchantLimitReached));
                }
                *count += 1;
            }
            vouchers.insert(r.voucher_id, "redeemed".to_owned());
            orders.insert(order, r.provincial);
            Ok(())
        })
        .collect()
}

impl SqlStore {
    /// The merchant's settlement account, its row locked (PostgreSQL; SQLite holds
    /// the write lock already).
    async fn locked_account(
        &self,
        tx: &mut Tx,
        merchant_id: MerchantId,
    ) -> Result<Option<SettlementAccount>, StorageError> {
        let current: Option<PayoutAccountRow> = query_as(sqlx::AssertSqlSafe(format!(
            "SELECT bank, account_no, account_name FROM merchants WHERE id = $1{}",
            self.backend.for_update()
        )))
        .bind(merchant_id)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(current.map(|r| SettlementAccount {
            bank: r.bank,
            account_no: r.account_no,
            account_name: r.account_name,
        }))
    }

    /// Sets the merchant's account to `change.to` and appends `change` to the history
    /// with the next `seq`, which it returns.
    async fn apply_account_change(tx: &mut Tx, change: &AccountChange) -> Result<i64, StorageError> {
        query("UPDATE merchants SET bank = $2, account_no = $3, account_name = $4 WHERE id = $1")
            .bind(change.merchant_id)
            .bind(change.to.bank.clone())
            .bind(change.to.account_no.clone())
            .bind(change.to.account_name.clone())
            .execute(&mut *tx)
            .await?;
        let (seq,): (i64,) = query_as(
            "INSERT INTO merchant_account_changes (id, merchant_id, seq, changed_at_us, changed_by, reason, \
             old_bank, old_account_no, old_account_name, new_bank, new_account_no, new_account_name, \
             request_id, requested_by) \
             SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 \
             FROM merchant_account_changes WHERE merchant_id = $2 RETURNING seq",
        )
        .bind(change.id)
        .bind(change.merchant_id)
        .bind(change.changed_at.unix_us())
        .bind(change.changed_by)
        .bind(change.reason.clone())
        .bind(change.from.bank.clone())
        .bind(change.from.account_no.clone())
        .bind(change.from.account_name.clone())
        .bind(change.to.bank.clone())
        .bind(change.to.account_no.clone())
        .bind(change.to.account_name.clone())
        .bind(change.request.map(|(id, _)| id))
        .bind(change.request.map(|(_, by)| by))
        .fetch_one(&mut *tx)
        .await?;
        Ok(seq)
    }

    /// What the database already holds that a group of redemptions could collide with.
    async fn redemption_state(
        &self,
        tx: &mut Tx,
        group: &[NewRedemption],
    ) -> Result<crate::storage::till::SeenState, WriteError> {
        let mut seen = crate::storage::till::SeenState::default();
        let rows = self.backend.group_rows(tx, group).await?;
        seen.answers.extend(rows.answers);
        seen.nonces.extend(rows.nonces);
        seen.vouchers.extend(rows.vouchers);
        seen.card_orders.extend(
            rows.card_orders.into_iter().map(|(merchant, order_ref, id)| ((merchant, order_ref), id)),
        );
        let pairs: Vec<(MerchantId, String)> =
            group.iter().map(|r| (r.merchant_id, r.order_ref.clone())).collect();
        let rows = self.backend.live_orders(tx, &pairs).await?;
        for row in rows {
            seen.orders
                .insert((row.merchant_id, row.order_ref, row.order_slot), row.issuer.ends_with("0000"));
        }
        seen.merchant_counts = self.merchant_counts(tx, group).await?;
        Ok(seen)
    }

    /// The group's limited (citizen, merchant, season) triples, each once.
    fn limited_triples(group: &[&NewRedemption]) -> Vec<((CitizenId, MerchantId, SeasonId), u32, i64)> {
        let mut triples: Vec<((CitizenId, MerchantId, SeasonId), u32, i64)> = Vec::new();
        for r in group {
            let Some(limit) = r.merchant_redemption_limit else { continue };
            let key = (r.citizen_id, r.merchant_id, r.season_id);
            match triples.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, _, n)) => *n += 1,
                None => triples.push((key, limit, 1)),
            }
        }
        triples
    }

    /// Live redemptions per (citizen, merchant, season) for the group's limited
    /// redemptions, from `merchant_redemption_counts`; no query when none is limited.
    /// One statement of primary-key lookups (`merchant_count_rows`), so that the plan
    /// never depends on table statistics: a join of vouchers and redemptions, tried
    /// first, was planned as a scan of every redemption (BENCHMARKS).
    async fn merchant_counts(
        &self,
        tx: &mut Tx,
        group: &[NewRedemption],
    ) -> Result<std::collections::HashMap<(CitizenId, MerchantId, SeasonId), i64>, WriteError> {
        let all: Vec<&NewRedemption> = group.iter().collect();
        let triples = Self::limited_triples(&all);
        let mut counts = std::collections::HashMap::new();
        if triples.is_empty() {
            return Ok(counts);
        }
        let keys: Vec<(CitizenId, MerchantId, SeasonId)> = triples.iter().map(|(key, _, _)| *key).collect();
        for row in self.backend.merchant_count_rows(tx, &keys).await? {
            counts.insert((row.citizen_id, row.merchant_id, row.season_id), i64::from(row.live_count));
        }
        Ok(counts)
    }

    /// Adds the accepted limited redemptions to `merchant_redemption_counts` (whose
    /// CHECK refuses a count above the limit: the database's own word on it).
    async fn count_merchant_redemptions(tx: &mut Tx, accepted: &[&NewRedemption]) -> Result<(), WriteError> {
        let triples = Self::limited_triples(accepted);
        if triples.is_empty() {
            return Ok(());
        }
        let mut query = QueryBuilder::new(
            "INSERT INTO merchant_redemption_counts (season_id, citizen_id, merchant_id, live_count, limit_count) ",
        );
        query.push_values(&triples, |mut row, ((citizen, merchant, season), limit, n)| {
            row.push_bind(*season)
                .push_bind(*citizen)
                .push_bind(*merchant)
                .push_bind(i32::try_from(*n).unwrap_or(i32::MAX))
                .push_bind(i32::try_from(*limit).unwrap_or(i32::MAX));
        });
        query.push(
            " ON CONFLICT (season_id, citizen_id, merchant_id) \
             DO UPDATE SET live_count = merchant_redemption_counts.live_count + excluded.live_count",
        );
        query.build().execute(&mut *tx).await?;
        Ok(())
    }

    async fn insert_redemptions(&self, tx: &mut Tx, accepted: &[&NewRedemption]) -> Result<(), WriteError> {
        let answers: Vec<IdemRecord> = accepted.iter().map(|r| r.answer.clone()).collect();
        self.insert_answers(tx, &answers).await?;
        let updated = self.backend.insert_redemption_rows(tx, accepted).await?;
        if updated != accepted.len() as u64 {
            return Err(WriteError::Refused(Refusal::Changed(
                "a voucher changed state during the group".into(),
            )));
        }
        Ok(())
    }

    /// Whether a request under the same idempotency key committed first (a retry that
    /// overtook a slow first attempt): it must replay that answer, not refuse.
    pub(crate) async fn answer_exists(tx: &mut Tx, answer: &IdemRecord) -> Result<bool, WriteError> {
        let row: Option<(i32,)> =
            query_as("SELECT status FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
                .bind(answer.scope.clone())
                .bind(answer.key.clone())
                .fetch_optional(&mut *tx)
                .await?;
        Ok(row.is_some())
    }
}

#[async_trait]
impl TillStore for SqlStore {
    async fn insert_merchant(&self, merchant: &Merchant, answer: &IdemRecord) -> Result<(), WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        self.insert_answers(&mut tx, std::slice::from_ref(answer)).await?;
        query(
            "INSERT INTO merchants (id, name, credit_code, category, city, bank, account_no, account_name, status, created_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(merchant.id)
        .bind(merchant.name.clone())
        .bind(merchant.credit_code.as_str().to_owned())
        .bind(merchant.category.as_str())
        .bind(merchant.city.to_string())
        .bind(merchant.settlement.bank.clone())
        .bind(merchant.settlement.account_no.clone())
        .bind(merchant.settlement.account_name.clone())
        .bind(merchant.status.as_str())
        .bind(Timestamp::now().unix_us())
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn merchant(&self, id: MerchantId) -> Result<Option<Merchant>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {MERCHANT_COLUMNS} FROM merchants WHERE id = $1"));
        let row: Option<MerchantRow> = query_as(sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(MerchantRow::into_merchant).transpose()
    }

    async fn merchants_in(
        &self,
        region: RegionCode,
        after: Option<&Merchant>,
        limit: i64,
    ) -> Result<Vec<Merchant>, StorageError> {
        // A city matches itself; a province matches every city with its two-digit prefix.
        let pattern = match region.level() {
            RegionLevel::Province => format!("{}%", &region.to_string()[..2]),
            _ => region.to_string(),
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {MERCHANT_COLUMNS} FROM merchants WHERE city LIKE $1 \
             AND ($2 IS NULL OR (name, id) > ($2, $3)) ORDER BY name, id LIMIT $4"
        ));
        let rows: Vec<MerchantRow> = query_as(sql)
            .bind(pattern)
            .bind(after.map(|m| m.name.clone()))
            .bind(after.map(|m| m.id))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(MerchantRow::into_merchant).collect()
    }

    async fn set_merchant_status(&self, id: MerchantId, status: &str) -> Result<bool, StorageError> {
        let done = query("UPDATE merchants SET status = $1 WHERE id = $2")
            .bind(status.to_owned())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn request_account_change(
        &self,
        request: &NewAccountRequest,
    ) -> Result<AccountRequestOutcome, StorageError> {
        // Rows first, as every writer (ARCHITECTURE.md): on PostgreSQL the merchant
        // row's lock alone orders requests and decisions (no ledger, so no gate); on
        // SQLite the gate, then BEGIN IMMEDIATE.
        let (_gate, mut tx) = self.begin_row_write().await?;
        let Some(current) = self.locked_account(&mut tx, request.merchant_id).await? else {
            return Ok(AccountRequestOutcome::NoSuchMerchant);
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_REQUEST_COLUMNS} FROM {ACCOUNT_REQUEST_FROM} WHERE r.merchant_id = $1 \
             AND d.request_id IS NULL AND r.expires_at_us > $2 ORDER BY r.seq DESC LIMIT 1"
        ));
        let waiting: Option<AccountRequestRow> = query_as(sql)
            .bind(request.merchant_id)
            .bind(request.requested_at.unix_us())
            .fetch_optional(&mut tx)
            .await?;
        if let Some(waiting) = waiting {
            let waiting = Box::new(waiting.into_request()?);
            return Ok(if waiting.to == request.to {
                AccountRequestOutcome::Requested(waiting)
            } else {
                AccountRequestOutcome::OtherPending(waiting)
            });
        }
        if current == request.to {
            return Ok(AccountRequestOutcome::Unchanged);
        }
        let (seq,): (i64,) = query_as(
            "INSERT INTO merchant_account_requests (id, merchant_id, seq, requested_at_us, requested_by, reason, \
             new_bank, new_account_no, new_account_name, expires_at_us) \
             SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, $5, $6, $7, $8, $9 \
             FROM merchant_account_requests WHERE merchant_id = $2 RETURNING seq",
        )
        .bind(request.id)
        .bind(request.merchant_id)
        .bind(request.requested_at.unix_us())
        .bind(request.requested_by)
        .bind(request.reason.clone())
        .bind(request.to.bank.clone())
        .bind(request.to.account_no.clone())
        .bind(request.to.account_name.clone())
        .bind(request.expires_at.unix_us())
        .fetch_one(&mut tx)
        .await?;
        tx.commit().await?;
        let NewAccountRequest { id, merchant_id, requested_at, requested_by, reason, to, expires_at } =
            request.clone();
        Ok(AccountRequestOutcome::Requested(Box::new(AccountRequest {
            id,
            merchant_id,
            seq,
            requested_at,
            requested_by,
            reason,
            to,
            expires_at,
            decision: None,
        })))
    }

    async fn decide_account_request(
        &self,
        decision: &NewAccountDecision,
    ) -> Result<AccountDecisionOutcome, StorageError> {
        let (_gate, mut tx) = self.begin_row_write().await?;
        let Some(from) = self.locked_account(&mut tx, decision.merchant_id).await? else {
            return Ok(AccountDecisionOutcome::NoSuchRequest);
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_REQUEST_COLUMNS} FROM {ACCOUNT_REQUEST_FROM} WHERE r.id = $1 AND r.merchant_id = $2"
        ));
        let row: Option<AccountRequestRow> = query_as(sql)
            .bind(decision.request_id)
            .bind(decision.merchant_id)
            .fetch_optional(&mut tx)
            .await?;
        let Some(row) = row else {
            return Ok(AccountDecisionOutcome::NoSuchRequest);
        };
        let mut request = row.into_request()?;
        let made = &decision.decision;
        let decider = Self::key_lineage(&mut tx, made.decided_by).await?;
        let asker = Self::key_lineage(&mut tx, request.requested_by).await?;
        if let Err(refused) = request.may_decide(&decider, &asker, made.approved, made.decided_at) {
            return Ok(AccountDecisionOutcome::Refused(refused, Box::new(request)));
        }
        // Revocation is checked when a request is authenticated; read again here,
        // under the merchant's row lock, for a key revoked since (either one).
        let revoked: Vec<(StaffKeyId,)> =
            query_as("SELECT id FROM staff_keys WHERE id IN ($1, $2) AND revoked_at_us IS NOT NULL")
                .bind(made.decided_by)
                .bind(request.requested_by)
                .fetch_all(&mut tx)
                .await?;
        let decider_revoked = revoked.iter().any(|(id,)| *id == made.decided_by);
        if decider_revoked || (made.approved && !revoked.is_empty()) {
            let refused = crate::domain::merchant::DecisionRefused::RevokedKey;
            return Ok(AccountDecisionOutcome::Refused(refused, Box::new(request)));
        }
        query(
            "INSERT INTO merchant_account_decisions (request_id, decision, decided_at_us, decided_by, note) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(request.id)
        .bind(if made.approved { "approved" } else { "rejected" })
        .bind(made.decided_at.unix_us())
        .bind(made.decided_by)
        .bind(made.note.clone())
        .execute(&mut tx)
        .await?;
        request.decision = Some(made.clone());
        if !made.approved {
            tx.commit().await?;
            return Ok(AccountDecisionOutcome::Rejected(Box::new(request)));
        }
        let change = AccountChange {
            id: decision.change_id,
            merchant_id: request.merchant_id,
            seq: 0,
            changed_at: made.decided_at,
            changed_by: made.decided_by,
            reason: request.reason.clone(),
            from,
            to: request.to.clone(),
            request: Some((request.id, request.requested_by)),
        };
        let seq = Self::apply_account_change(&mut tx, &change).await?;
        tx.commit().await?;
        Ok(AccountDecisionOutcome::Approved(Box::new(request), Box::new(AccountChange { seq, ..change })))
    }

    async fn account_requests(
        &self,
        merchant_id: MerchantId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AccountRequest>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_REQUEST_COLUMNS} FROM {ACCOUNT_REQUEST_FROM} \
             WHERE r.merchant_id = $1 AND r.seq > $2 ORDER BY r.seq LIMIT $3"
        ));
        let rows: Vec<AccountRequestRow> =
            query_as(sql).bind(merchant_id).bind(after_seq).bind(limit).fetch_all(&self.pool).await?;
        rows.into_iter().map(AccountRequestRow::into_request).collect()
    }

    async fn account_changes(
        &self,
        merchant_id: MerchantId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AccountChange>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_CHANGE_COLUMNS} FROM merchant_account_changes \
             WHERE merchant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ));
        let rows: Vec<AccountChangeRow> =
            query_as(sql).bind(merchant_id).bind(after_seq).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(AccountChangeRow::into_change).collect())
    }

    async fn latest_account_change(
        &self,
        merchant_id: MerchantId,
    ) -> Result<Option<AccountChange>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_CHANGE_COLUMNS} FROM merchant_account_changes \
             WHERE merchant_id = $1 ORDER BY seq DESC LIMIT 1"
        ));
        let row: Option<AccountChangeRow> =
            query_as(sql).bind(merchant_id).fetch_optional(&self.pool).await?;
        Ok(row.map(AccountChangeRow::into_change))
    }

    async fn insert_terminal(
        &self,
        terminal: &TerminalRecord,
        at: Timestamp,
        answer: &IdemRecord,
    ) -> Result<(), WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        self.insert_answers(&mut tx, std::slice::from_ref(answer)).await?;
        query(
            "INSERT INTO terminals (id, merchant_id, public_key, label, created_at_us) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(terminal.id)
        .bind(terminal.merchant_id)
        .bind(terminal.public_key.clone())
        .bind(terminal.label.clone())
        .bind(at.unix_us())
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn terminal(&self, id: TerminalId) -> Result<Option<TerminalRecord>, StorageError> {
        let row: Option<TerminalRow> =
            query_as("SELECT id, merchant_id, public_key, label, revoked_at_us FROM terminals WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|row| TerminalRecord {
            id: row.id,
            merchant_id: row.merchant_id,
            public_key: row.public_key,
            label: row.label,
            revoked: row.revoked_at_us.is_some(),
        }))
    }

    async fn revoke_terminal(
        &self,
        merchant_id: MerchantId,
        terminal_id: TerminalId,
        at: Timestamp,
    ) -> Result<bool, StorageError> {
        let done = query(
            "UPDATE terminals SET revoked_at_us = $1 WHERE id = $2 AND merchant_id = $3 AND revoked_at_us IS NULL",
        )
        .bind(at.unix_us())
        .bind(terminal_id)
        .bind(merchant_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_nonces(
        &self,
        seen: &[(TerminalId, String)],
        at: Timestamp,
    ) -> Result<Vec<bool>, StorageError> {
        // One statement per chunk; of two equal nonces in one call only the first is new.
        let mut inserted = std::collections::HashSet::new();
        for chunk in seen.chunks(crate::storage::ledger::INSERT_CHUNK_ROWS) {
            inserted.extend(self.backend.inserted_nonce_rows(chunk, at.unix_us()).await?);
        }
        Ok(seen.iter().map(|key| inserted.remove(key)).collect())
    }

    async fn prune_terminal_nonces(
        &self,
        seen_before: Timestamp,
        max_rows: u32,
    ) -> Result<u64, StorageError> {
        Ok(self.backend.delete_old_rows(crate::storage::OLD_REQUEST_NONCES, seen_before, max_rows).await?)
    }

    async fn prune_qr_nonces(&self, used_before: Timestamp, max_rows: u32) -> Result<u64, StorageError> {
        Ok(self.backend.delete_old_rows(crate::storage::OLD_QR_NONCES, used_before, max_rows).await?)
    }

    async fn vouchers(&self, ids: &[VoucherId]) -> Result<Vec<Option<Voucher>>, StorageError> {
        let mut found = std::collections::HashMap::new();
        for chunk in ids.chunks(crate::storage::ledger::INSERT_CHUNK_ROWS) {
            for row in self.backend.voucher_rows(chunk).await? {
                let voucher = row.into_voucher()?;
                found.insert(voucher.id, voucher);
            }
        }
        Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
    }

    async fn qr_keys(&self) -> Result<Vec<QrKeyRecord>, StorageError> {
        let rows: Vec<QrKeyRow> = query_as(
            "SELECT key_id, public_key, valid_from_us, retired_at_us FROM qr_keys ORDER BY valid_from_us DESC, key_id LIMIT 10",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| QrKeyRecord {
                key_id: r.key_id,
                public_key: r.public_key,
                valid_from: Timestamp::from_unix_us(r.valid_from_us),
                retired_at: r.retired_at_us.map(Timestamp::from_unix_us),
            })
            .collect())
    }

    async fn insert_qr_key(&self, key: &QrKeyRecord) -> Result<(), StorageError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        query("UPDATE qr_keys SET retired_at_us = $1 WHERE retired_at_us IS NULL")
            .bind(key.valid_from.unix_us())
            .execute(&mut tx)
            .await?;
        query("INSERT INTO qr_keys (key_id, public_key, valid_from_us) VALUES ($1, $2, $3)")
            .bind(key.key_id.clone())
            .bind(key.public_key.clone())
            .bind(key.valid_from.unix_us())
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn qr_nonce_used(&self, nonce: &[u8]) -> Result<bool, StorageError> {
        let row: Option<(i64,)> = query_as("SELECT used_at_us FROM qr_nonces WHERE nonce = $1")
            .bind(nonce.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn voucher(&self, id: VoucherId) -> Result<Option<Voucher>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE id = $1"));
        let row: Option<VoucherRow> = query_as(sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(VoucherRow::into_voucher).transpose()
    }

    async fn commit_redemptions(
        &self,
        group: &[NewRedemption],
    ) -> Result<Vec<Result<(), Refusal>>, WriteError> {
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        self.lock_head(&mut tx).await?;
        let seen = self.redemption_state(&mut tx, group).await?;
        let outcomes = crate::storage::till::decide_redemptions(group, &seen);
        let accepted: Vec<&NewRedemption> =
            group.iter().zip(&outcomes).filter(|(_, o)| o.is_ok()).map(|(r, _)| r).collect();
        if !accepted.is_empty() {
            self.insert_redemptions(&mut tx, &accepted).await?;
            Self::count_merchant_redemptions(&mut tx, &accepted).await?;
            let entries: Vec<NewEntry> = accepted.iter().map(|r| r.entry.clone()).collect();
            let opened = self.post_in(&mut tx, &entries).await?;
            self.commit_and_cache(tx, opened).await?;
        } else {
            tx.commit().await?;
        }
        Ok(outcomes)
    }

    async fn redemption(&self, id: RedemptionId) -> Result<Option<RedemptionRecord>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {REDEMPTION_COLUMNS} FROM redemptions WHERE id = $1"));
        let row: Option<RedemptionRow> = query_as(sql).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(RedemptionRow::into_record))
    }

    async fn commit_reversal(&self, r: &NewReversal) -> Result<(), WriteError> {
        // The redemption's row first (locked until commit on PostgreSQL), then the
        // write gate and the ledger head: the order a settlement takes them in.
        let (held, mut tx) = self.begin_row_write().await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT reversed_at_us, settled_at_us, season_id FROM redemptions WHERE id = $1{}",
            self.backend.for_update()
        ));
        let row: Option<ReversibleRow> = query_as(sql).bind(r.redemption_id).fetch_optional(&mut tx).await?;
        let _gate = self.gate_after_rows(held).await;
        self.lock_head(&mut tx).await?;
        let season_id = Self::reversible(&mut tx, r, row).await?;
        self.insert_answers(&mut tx, std::slice::from_ref(&r.answer)).await?;
        self.mark_reversed(&mut tx, r, season_id).await?;
        let opened = self.post_in(&mut tx, std::slice::from_ref(&r.entry)).await?;
        self.commit_and_cache(tx, opened).await?;
        Ok(())
    }

    async fn save_answer(&self, answer: &IdemRecord) -> Result<(), WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        self.insert_answers(&mut tx, std::slice::from_ref(answer)).await?;
        tx.commit().await?;
        Ok(())
    }
}

impl SqlStore {
    /// Whether the redemption (its row as locked: reversed, settled, season) may be reversed
    /// now: not answered already, not reversed or settled, its season open, and, for a voucher
    /// that expires on reversal, its batch's reserve as the entry was planned. Its season.
    async fn reversible(
        tx: &mut Tx,
        r: &NewReversal,
        row: Option<ReversibleRow>,
    ) -> Result<SeasonId, WriteError> {
        if Self::answer_exists(tx, &r.answer).await? {
            return Err(WriteError::IdempotencyTaken);
        }
        let Some(ReversibleRow { reversed_at_us, settled_at_us, season_id }) = row else {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::AlreadyReversed)));
        };
        let closed: Option<(Option<i64>,)> = query_as("SELECT closed_at_us FROM seasons WHERE id = $1")
            .bind(season_id)
            .fetch_optional(&mut *tx)
            .await?;
        match (reversed_at_us, settled_at_us, closed) {
            (_, _, Some((Some(_),))) => {
                return Err(WriteError::Refused(Refusal::Code(ErrorCode::SeasonClosed)));
            }
            (None, None, Some((None,))) => {}
            (_, Some(_), _) => return Err(WriteError::Refused(Refusal::Code(ErrorCode::AlreadySettled))),
            _ => return Err(WriteError::Refused(Refusal::Code(ErrorCode::AlreadyReversed))),
        }
        // The entry was planned for the batch as it was then (open or closed).
        if r.voucher_status == "expired"
            && Self::reserve_returned_in(tx, r.batch_id).await? != r.reserve_returned
        {
            return Err(WriteError::Refused(Refusal::BatchClosedMeanwhile));
        }
        Ok(season_id)
    }

    /// Marks the redemption reversed and its voucher as the reversal leaves it, and gives back
    /// what the redemption counted: the batch's stock when the voucher expires, the caps, and
    /// its place under the per-merchant limit.
    async fn mark_reversed(
        &self,
        tx: &mut Tx,
        r: &NewReversal,
        season_id: SeasonId,
    ) -> Result<(), WriteError> {
        query(
            "UPDATE redemptions SET reversed_at_us = $1, reversal_id = $2, reversal_reason = $3 WHERE id = $4",
        )
        .bind(r.at.unix_us())
        .bind(r.reversal_id)
        .bind(r.reason.clone())
        .bind(r.redemption_id)
        .execute(&mut *tx)
        .await?;
        let expired_at = (r.voucher_status == "expired").then_some(r.at.unix_us());
        query("UPDATE vouchers SET status = $1, expired_at_us = $2 WHERE id = $3 AND status = 'redeemed'")
            .bind(r.voucher_status)
            .bind(expired_at)
            .bind(r.voucher_id)
            .execute(&mut *tx)
            .await?;
        if r.voucher_status == "expired" {
            query("UPDATE batches SET returned_count = returned_count + 1 WHERE id = $1")
                .bind(r.batch_id)
                .execute(&mut *tx)
                .await?;
        }
        self.apply_season_totals(tx, &r.season_totals).await?;
        // The reversal frees its place under the season's per-merchant limit (no row
        // when the season has none).
        query(
            "UPDATE merchant_redemption_counts SET live_count = live_count - 1 WHERE season_id = $1 \
             AND citizen_id = (SELECT citizen_id FROM vouchers WHERE id = $2) \
             AND merchant_id = (SELECT merchant_id FROM redemptions WHERE id = $3)",
        )
        .bind(season_id)
        .bind(r.voucher_id)
        .bind(r.redemption_id)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Timestamp;
    use crate::storage::{IdemRecord, NewRedemption};

    fn redemption(
        n: u8,
        citizen: CitizenId,
        merchant: MerchantId,
        order_ref: &str,
        limit: Option<u32>,
    ) -> NewRedemption {
        NewRedemption {
            id: Uuid::from_u128(u128::from(n)).into(),
            voucher_id: Uuid::from_u128(1_000 + u128::from(n)).into(),
            merchant_id: merchant,
            terminal_id: Uuid::nil().into(),
            season_id: SeasonId::from_uuid(Uuid::from_u128(7)),
            batch_id: BatchId::from_uuid(Uuid::from_u128(8)),
            order_ref: order_ref.into(),
            order_slot: "any".into(),
            provincial: true,
            order_amount_fen: 5_000,
            discount_fen: 1_000,
            funders_json: "[]".into(),
            redeemed_at: Timestamp::from_unix_us(0),
            qr_nonce: vec![n],
            card_payment_id: None,
            citizen_id: citizen,
            merchant_redemption_limit: limit,
            entry: crate::domain::ledger::NewEntry::new("redemption", format!("r{n}"), Vec::new()),
            answer: IdemRecord {
                scope: "terminal:t".into(),
                key: format!("k{n}"),
                request_hash: Vec::new(),
                status: 201,
                body: String::new(),
            },
        }
    }

    /// The per-merchant limit counts what the database holds plus what the group has already
    /// taken; a redemption refused for another reason takes no place, and other citizens and
    /// merchants have their own count.
    #[test]
    fn a_group_keeps_to_the_merchant_limit() {
        let (citizen, other_citizen) =
            (CitizenId::from_uuid(Uuid::from_u128(1)), CitizenId::from_uuid(Uuid::from_u128(2)));
        let (bookstore, cinema) =
            (MerchantId::from_uuid(Uuid::from_u128(3)), MerchantId::from_uuid(Uuid::from_u128(4)));
        let limit = Some(2);
        let group = [
            redemption(1, citizen, bookstore, "o-1", limit),
            redemption(2, citizen, bookstore, "o-1", limit),
            redemption(3, citizen, bookstore, "o-3", limit),
            redemption(4, citizen, bookstore, "o-4", limit),
            redemption(5, other_citizen, bookstore, "o-5", limit),
            redemption(6, citizen, cinema, "o-6", limit),
            redemption(7, citizen, bookstore, "o-7", None),
        ];
        let mut seen = SeenState::default();
        for r in &group {
            seen.vouchers.insert(r.voucher_id, "active".into());
        }
        seen.merchant_counts.insert((citizen, bookstore, SeasonId::from_uuid(Uuid::from_u128(7))), 1);
        let outcomes = decide_redemptions(&group, &seen);
        let limited = Err(Refusal::Code(ErrorCode::MerchantLimitReached));
        assert_eq!(outcomes[0], Ok(()), "one held before, one now");
        assert_eq!(
            outcomes[1],
            Err(Refusal::Code(ErrorCode::OrderRefUsed)),
            "refused on its order, before the limit"
        );
        assert_eq!(outcomes[2], limited);
        assert_eq!(outcomes[3], limited);
        assert_eq!(outcomes[4], Ok(()), "another citizen");
        assert_eq!(outcomes[5], Ok(()), "another merchant");
        assert_eq!(outcomes[6], Ok(()), "a season without a limit");
    }
}
