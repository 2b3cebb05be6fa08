//! Shapes that cross the storage boundary for seasons, batches, citizens and claims.

use std::collections::HashMap;

use async_trait::async_trait;
use uuid::Uuid;

use super::{PostError, StorageError};
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{
    AccountRequestId, BatchId, CardId, CardPaymentId, CitizenId, MerchantId, RedemptionId, ReversalId,
    SeasonId, TerminalId, VoucherId,
};
use crate::domain::ledger::{Balance, IndexedLedgerError, NewEntry};
use crate::domain::merchant::{AccountDecision, AccountRequest, DecisionRefused};
use crate::domain::region::RegionCode;
use crate::domain::season::{Batch, CitizenHoldings, Season, Voucher};
use crate::domain::time::Timestamp;

/// A citizen's entry in a lottery batch, and the voucher its draw gave them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LotteryStanding {
    pub entered_at: Timestamp,
    pub voucher_id: Option<VoucherId>,
}

/// A person on a waitlist (docs/waitlist.md): their place and, while they wait, their sealed phone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitlistPerson {
    pub place: i64,
    pub citizen_id: CitizenId,
    pub sealed_phone: Option<Vec<u8>>,
}

/// A citizen's place on a waitlist and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitlistStanding {
    pub entered_at: Timestamp,
    /// None before the opening.
    pub place: Option<i64>,
    /// Why they were reached and given nothing (a per-person cap).
    pub passed_reason: Option<String>,
    /// Their latest voucher of the batch and its status ("active", "redeemed", "expired", ...).
    pub voucher: Option<(VoucherId, String)>,
}

/// A waitlist batch's figures for the console.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitlistSummary {
    /// People on the list (entrants; placed at the opening).
    pub length: i64,
    /// The first place not reached yet (None before the opening).
    pub next_place: Option<i64>,
    /// Vouchers that expired or were forfeited and went to the next in line.
    pub moved_on: i64,
    /// Freed vouchers nobody was left to take (or the season was over).
    pub unmoved: i64,
    /// People reached and passed over (a per-person cap refused them).
    pub passed: i64,
}

/// One freed voucher of a waitlist batch moving on, committed with the claim it makes (if any):
/// the line's cursor moves from `from_place` to `to_place` by a compare-and-set, so that two
/// sweeps (on two nodes) never hand out the same place or the same freed voucher twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitlistMove {
    pub batch_id: BatchId,
    /// The expired or forfeited voucher; moves once (primary key of `waitlist_moves`).
    pub freed: VoucherId,
    pub new_voucher: Option<VoucherId>,
    /// issued, list_end, season_over, batch_closed, pools_spent.
    pub outcome: &'static str,
    pub from_place: i64,
    pub to_place: i64,
    /// Places reached and passed over, with why.
    pub passed: Vec<(i64, String)>,
    /// A forfeited voucher's value went to the pool: the batch's stock grows by one, funded
    /// again by a refill entry in the same commit.
    pub refill: bool,
    pub at: Timestamp,
}

/// An answer to store under an idempotency key, written in the same transaction as its effect.
#[derive(Clone, PartialEq, Eq)]
pub struct IdemRecord {
    pub scope: String,
    pub key: String,
    pub request_hash: Vec<u8>,
    pub status: u16,
    pub body: String,
}

/// Without the body: an answer may hold personal data (a citizen's masked identity, a
/// merchant's settlement account), which no log line needs.
impl std::fmt::Debug for IdemRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdemRecord")
            .field("scope", &self.scope)
            .field("key", &self.key)
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub request_hash: Vec<u8>,
    pub status: u16,
    pub body: String,
}

impl std::fmt::Debug for StoredAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAnswer")
            .field("status", &self.status)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Why a write that carries its own checks did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another request with the same idempotency key committed first.
    #[error("the idempotency key was used by a request that committed first")]
    IdempotencyTaken,
    /// A business rule checked inside the transaction refused the write; nothing was written.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// A unique or check constraint refused the write: the caller's view was stale.
    #[error("refused by the database's {0}")]
    Constraint(super::constraint::Constraint),
    #[error(transparent)]
    Ledger(IndexedLedgerError),
    #[error(transparent)]
    Storage(StorageError),
}

impl From<sqlx::Error> for WriteError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error
            && (db.is_unique_violation() || db.is_check_violation())
        {
            return match super::constraint::Constraint::of(db.as_ref()) {
                super::constraint::Constraint::IdempotencyKey => WriteError::IdempotencyTaken,
                other => WriteError::Constraint(other),
            };
        }
        WriteError::Storage(StorageError::Database(error))
    }
}

impl From<StorageError> for WriteError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Database(db) => WriteError::from(db),
            other => WriteError::Storage(other),
        }
    }
}

impl From<PostError> for WriteError {
    fn from(error: PostError) -> Self {
        match error {
            PostError::Refused(refusal) => WriteError::Ledger(refusal),
            PostError::Storage(storage) => storage.into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct NewCitizen {
    pub id: CitizenId,
    pub id_hash: Vec<u8>,
    pub id_masked: String,
    pub name_masked: String,
    pub phone_hash: Vec<u8>,
    pub phone_masked: String,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug)]
pub struct CitizenRecord {
    pub id: CitizenId,
    pub phone_hash: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct NewSession {
    pub token_hash: Vec<u8>,
    pub citizen_id: CitizenId,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
}

#[derive(Clone, Copy, Debug)]
pub struct SessionRecord {
    pub citizen_id: CitizenId,
    pub expires_at: Timestamp,
}

/// A change to one citizen's total for a period of the season (`SEASON_PERIOD`, or a month
/// as YYYYMM); the cap the database enforces travels with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeasonTotalDelta {
    pub season_id: SeasonId,
    pub citizen_id: CitizenId,
    pub period: i32,
    pub delta_fen: i64,
    pub cap_fen: i64,
}

impl SeasonTotalDelta {
    /// The changes a voucher of `season` makes to its holder's capped totals: `+` its face value
    /// when claimed, `-` when it expires (see `Season::capped_periods`).
    pub fn for_voucher(season: &Season, voucher: &Voucher, claimed: bool) -> Vec<SeasonTotalDelta> {
        let value = voucher.value.as_fen();
        season
            .capped_periods(voucher.claimed_at)
            .into_iter()
            .map(|(period, cap)| SeasonTotalDelta {
                season_id: season.id,
                citizen_id: voucher.citizen_id,
                period,
                delta_fen: if claimed { value } else { -value },
                cap_fen: cap.as_fen(),
            })
            .collect()
    }
}

/// A group of accepted claims (and the stored answers of refused ones), committed at once.
#[derive(Clone, Debug, Default)]
pub struct ClaimCommit {
    pub vouchers: Vec<Voucher>,
    /// (batch, vouchers claimed now, vouchers released at this moment): the database refuses
    /// the update if live vouchers would exceed what is released.
    pub batch_claims: Vec<(BatchId, i64, i64)>,
    pub season_totals: Vec<SeasonTotalDelta>,
    pub answers: Vec<IdemRecord>,
    pub entries: Vec<NewEntry>,
    /// Cards whose points pay for exchanges in this group: the database refuses the group if
    /// any of them is no longer active under the ledger lock (a freeze since the writer read it).
    pub paying_cards: Vec<CardId>,
    /// Change notices for the other nodes, sent if the group commits (`app::events`).
    pub notices: Vec<String>,
    /// A waitlist's move (docs/waitlist.md), applied before the claims.
    pub waitlist_move: Option<WaitlistMove>,
}

/// Vouchers that reached their expiry, booked at once.
#[derive(Clone, Debug, Default)]
pub struct ExpiryCommit {
    pub voucher_ids: Vec<VoucherId>,
    pub expired_at: Timestamp,
    pub batch_returns: Vec<(BatchId, i64)>,
    /// Each batch's `reserve_returned` as the entries were planned (an expired voucher's value
    /// goes to the batch's reserve while it is open, to the pool once it has closed): the
    /// commit refuses if one has changed since. Empty: not checked.
    pub planned_reserves: Vec<(BatchId, bool)>,
    pub season_totals: Vec<SeasonTotalDelta>,
    pub entries: Vec<NewEntry>,
    /// Change notices for the other nodes, sent if the expiries commit (`app::events`).
    pub notices: Vec<String>,
}

/// See [`SeasonStore::claim_answer_keys`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimAnswerKeys {
    pub holders: Vec<CitizenId>,
    /// (scope, key) of stored refusals.
    pub refused: Vec<(String, String)>,
}

/// A revoked citizen session: its token's SHA-256, and when it was revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedSession {
    pub token_hash: Vec<u8>,
    pub revoked_at: Timestamp,
}

#[async_trait]
pub trait SeasonStore: Send + Sync {
    async fn idempotent_answer(&self, scope: &str, key: &str) -> Result<Option<StoredAnswer>, StorageError>;

    /// Deletes up to `max_rows` stored answers in citizen and terminal scopes created before
    /// `created_before`; returns how many. Staff scopes are never pruned.
    async fn prune_idempotency_answers(
        &self,
        created_before: Timestamp,
        max_rows: u32,
    ) -> Result<u64, StorageError>;

    /// Stored answers for many (scope, key) pairs in one round trip.
    async fn idempotent_answers(
        &self,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), StoredAnswer>, StorageError>;

    /// What may have a stored claim answer for a batch sold out: the citizens holding a live
    /// voucher of `batch_id`, and the (citizen scope, key) pairs of citizens' stored answers
    /// other than 201 created at or after `since`. `None` when they are more than `limit` in all
    /// (too many to hold in memory).
    async fn claim_answer_keys(
        &self,
        batch_id: BatchId,
        since: Timestamp,
        limit: u32,
    ) -> Result<Option<ClaimAnswerKeys>, StorageError>;

    async fn create_season(
        &self,
        season: &Season,
        funders: &[RegionCode],
        entries: &[NewEntry],
        answer: &IdemRecord,
    ) -> Result<(), WriteError>;

    async fn add_budget(
        &self,
        season_id: SeasonId,
        funder: RegionCode,
        entry: &NewEntry,
        answer: &IdemRecord,
    ) -> Result<(), WriteError>;

    async fn season(&self, id: SeasonId) -> Result<Option<Season>, StorageError>;

    /// Seasons (of `province`, or all), latest start first, after `after` (a page's last), at
    /// most `limit`.
    async fn seasons(
        &self,
        province: Option<RegionCode>,
        after: Option<&Season>,
        limit: i64,
    ) -> Result<Vec<Season>, StorageError>;

    async fn season_funders(&self, season_id: SeasonId) -> Result<Vec<RegionCode>, StorageError>;

    /// The summed balance of every account whose address matches a LIKE pattern.
    async fn sum_balances_like(&self, pattern: &str) -> Result<Balance, StorageError>;

    async fn create_batch(
        &self,
        batch: &Batch,
        entry: &NewEntry,
        answer: &IdemRecord,
    ) -> Result<(), WriteError>;

    /// Enters `citizen` in a lottery batch's draw at `at`, once: the time of their entry (the
    /// first one's, if they had entered before).
    async fn enter_lottery(
        &self,
        batch_id: BatchId,
        citizen_id: CitizenId,
        at: Timestamp,
    ) -> Result<Timestamp, StorageError>;

    /// Up to `limit` entrants of a lottery batch after `after`, by citizen id.
    async fn lottery_entrants(
        &self,
        batch_id: BatchId,
        after: Option<CitizenId>,
        limit: i64,
    ) -> Result<Vec<CitizenId>, StorageError>;

    /// The seed a lottery batch was drawn with; `None` before its draw.
    async fn lottery_seed(&self, batch_id: BatchId) -> Result<Option<String>, StorageError>;

    /// The citizens holding a voucher of a lottery batch (its draw's winners), by citizen id.
    async fn lottery_winners(&self, batch_id: BatchId) -> Result<Vec<CitizenId>, StorageError>;

    /// A citizen's standing in a lottery batch: when they entered and the voucher the draw gave
    /// them (if any); `None` if they did not enter.
    async fn lottery_standing(
        &self,
        batch_id: BatchId,
        citizen_id: CitizenId,
    ) -> Result<Option<LotteryStanding>, StorageError>;

    /// Joins `citizen` to a waitlist batch at `at`, once, with their sealed phone: the time of
    /// their entry (the first one's, if they had joined before; the first phone is kept).
    async fn enter_waitlist(
        &self,
        batch_id: BatchId,
        citizen_id: CitizenId,
        at: Timestamp,
        sealed_phone: &[u8],
    ) -> Result<Timestamp, StorageError>;

    /// Writes a waitlist's line at the opening: `order[i]` at place `i + 1` (again: no change).
    async fn place_waitlist(&self, batch_id: BatchId, order: &[CitizenId]) -> Result<(), StorageError>;

    /// After the opening's vouchers are issued: the first place not reached (after the last
    /// place holding a voucher, or past the end if the stock was not all given), the places
    /// passed over marked, the phones of everyone reached erased. Once (a no-op after).
    async fn start_waitlist(&self, batch_id: BatchId, issued_all: bool) -> Result<(), StorageError>;

    /// Up to `limit` expired or forfeited vouchers of opened waitlist batches still open (a
    /// closed one has nobody waiting) not moved on yet.
    async fn waitlist_freed(&self, limit: i64) -> Result<Vec<Voucher>, StorageError>;

    /// Up to `limit` people of a waitlist from `place` on, in order.
    async fn waitlist_people(
        &self,
        batch_id: BatchId,
        place: i64,
        limit: i64,
    ) -> Result<Vec<WaitlistPerson>, StorageError>;

    /// A citizen's place on a waitlist; `None` if they did not join.
    async fn waitlist_standing(
        &self,
        batch_id: BatchId,
        citizen_id: CitizenId,
    ) -> Result<Option<WaitlistStanding>, StorageError>;

    async fn waitlist_summary(&self, batch_id: BatchId) -> Result<WaitlistSummary, StorageError>;

    /// Records the draw of a lottery batch (its seed and time) with the draw's answer, once:
    /// false if it was drawn before.
    async fn record_draw(
        &self,
        batch_id: BatchId,
        seed: &str,
        at: Timestamp,
        answer: &IdemRecord,
    ) -> Result<bool, WriteError>;

    async fn batch(&self, id: BatchId) -> Result<Option<Batch>, StorageError>;

    async fn season_batches(&self, season_id: SeasonId) -> Result<Vec<Batch>, StorageError>;

    async fn insert_citizen(&self, citizen: &NewCitizen, session: &NewSession) -> Result<(), WriteError>;

    async fn citizen_by_id_hash(&self, id_hash: &[u8]) -> Result<Option<CitizenRecord>, StorageError>;

    /// A citizen's home region, from the first digits of their ID number (None: no such citizen).
    async fn citizen_home(&self, citizen_id: CitizenId) -> Result<Option<RegionCode>, StorageError>;

    /// The keyed hash of the phone a citizen registered with.
    async fn citizen_phone_hash(&self, citizen_id: CitizenId) -> Result<Option<Vec<u8>>, StorageError>;

    async fn insert_session(&self, session: &NewSession) -> Result<(), StorageError>;

    /// The session with this token hash, unless it was revoked (expired ones are returned).
    async fn session(&self, token_hash: &[u8]) -> Result<Option<SessionRecord>, StorageError>;

    /// Marks one session revoked at `at`; false if there is none or it was already revoked.
    async fn revoke_session(&self, token_hash: &[u8], at: Timestamp) -> Result<bool, StorageError>;

    /// Marks every unrevoked session of a citizen revoked at `at`; `None` if there is no such
    /// citizen, otherwise how many sessions were revoked.
    async fn revoke_citizen_sessions(
        &self,
        citizen_id: CitizenId,
        at: Timestamp,
    ) -> Result<Option<u64>, StorageError>;

    /// Token hashes of sessions revoked at or after `since`, with when, oldest first, at most
    /// `limit`.
    async fn revoked_sessions_since(
        &self,
        since: Timestamp,
        limit: i64,
    ) -> Result<Vec<RevokedSession>, StorageError>;

    /// The citizen's vouchers, newest claim first, after `after` (a page's last), at most `limit`.
    async fn citizen_vouchers(
        &self,
        citizen_id: CitizenId,
        after: Option<&Voucher>,
        limit: i64,
    ) -> Result<Vec<Voucher>, StorageError>;

    /// The first page of each citizen's vouchers (newest claim first, at most its limit), one
    /// page per pair and in the order asked, in one statement per thousand citizens: "my
    /// vouchers" of many citizens at once (`app::coalesce`). A citizen may be asked twice.
    async fn first_voucher_pages(
        &self,
        wanted: &[(CitizenId, i64)],
    ) -> Result<Vec<Vec<Voucher>>, StorageError>;

    /// What each citizen already holds in a batch and its season, with the season's totals for
    /// the whole season and for `month` (YYYYMM in CST).
    async fn holdings(
        &self,
        batch_id: BatchId,
        season_id: SeasonId,
        month: i32,
        citizens: &[CitizenId],
    ) -> Result<HashMap<CitizenId, CitizenHoldings>, StorageError>;

    async fn commit_claims(&self, commit: &ClaimCommit) -> Result<(), WriteError>;

    /// Opens the connections a claim writer uses and runs a claim group's statements on each, in
    /// transactions rolled back (nothing is written): the first group of the first rush then
    /// finds them open, their statements prepared and the tables known to each database
    /// process. Called by the claim writer when it starts, on its thread.
    async fn warm_claim_path(&self) -> Result<(), StorageError>;

    async fn due_vouchers(&self, now: Timestamp, limit: i64) -> Result<Vec<Voucher>, StorageError>;

    async fn commit_expiries(&self, commit: &ExpiryCommit) -> Result<(), WriteError>;

    /// Batches whose claim window has closed and whose reserve has not yet gone back to the pools.
    async fn batches_to_close(&self, now: Timestamp, limit: i64) -> Result<Vec<Batch>, StorageError>;

    async fn close_batch_reserve(
        &self,
        batch_id: BatchId,
        now: Timestamp,
        entry: Option<&NewEntry>,
    ) -> Result<(), WriteError>;
}

/// One change of a merchant's settlement account, as the append-only history keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountChange {
    pub id: Uuid,
    pub merchant_id: MerchantId,
    /// 1 for the merchant's first change, then 2, 3 ...: the order the changes were made in.
    pub seq: i64,
    pub changed_at: Timestamp,
    /// The staff key that made the change: the approving key of its request.
    pub changed_by: crate::domain::ids::StaffKeyId,
    pub reason: String,
    pub from: crate::domain::merchant::SettlementAccount,
    pub to: crate::domain::merchant::SettlementAccount,
    /// The request it carried out, and the key that asked; `None` for changes made with one key
    /// before requests needed a second (migration 0014).
    pub request: Option<(AccountRequestId, crate::domain::ids::StaffKeyId)>,
}

/// Rows housekeeping deletes by age: those of `table` matching `older` (which compares with `$1`,
/// the cutoff), oldest first when `oldest_first` names the age column.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PruneTarget {
    pub table: &'static str,
    pub older: &'static str,
    pub oldest_first: &'static str,
}

/// Request nonces first seen before the cutoff.
pub(crate) const OLD_REQUEST_NONCES: PruneTarget =
    PruneTarget { table: "terminal_nonces", older: "seen_at_us < $1", oldest_first: "" };

/// Spent QR token nonces used before the cutoff.
pub(crate) const OLD_QR_NONCES: PruneTarget =
    PruneTarget { table: "qr_nonces", older: "used_at_us < $1", oldest_first: "" };

/// Stored answers of citizens' and tills' writes made before the cutoff (staff keep theirs);
/// the predicate is that of the partial index `idempotency_keys_prunable`.
pub(crate) const OLD_CLIENT_ANSWERS: PruneTarget = PruneTarget {
    table: "idempotency_keys",
    older: "created_at_us < $1 AND (scope LIKE 'citizen:%' OR scope LIKE 'terminal:%')",
    oldest_first: "ORDER BY created_at_us",
};

/// A request to change a merchant's settlement account, as asked: the store numbers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccountRequest {
    pub id: AccountRequestId,
    pub merchant_id: MerchantId,
    pub requested_at: Timestamp,
    pub requested_by: crate::domain::ids::StaffKeyId,
    pub reason: String,
    pub to: crate::domain::merchant::SettlementAccount,
    pub expires_at: Timestamp,
}

/// What asking for a new settlement account did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountRequestOutcome {
    NoSuchMerchant,
    /// The merchant already has this account and nothing is waiting: nothing was written.
    Unchanged,
    /// The request waiting for a second key: this one, or the same account asked for before.
    Requested(Box<AccountRequest>),
    /// Another account is waiting for a second key: it must be decided first.
    OtherPending(Box<AccountRequest>),
}

/// A second key's decision about a request, as made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccountDecision {
    pub request_id: AccountRequestId,
    pub merchant_id: MerchantId,
    pub decision: AccountDecision,
    /// The id of the change an approval makes.
    pub change_id: Uuid,
}

/// What deciding about a request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountDecisionOutcome {
    NoSuchRequest,
    /// Nothing was written; the request as it stands.
    Refused(DecisionRefused, Box<AccountRequest>),
    /// Approved: the merchant is paid to the new account from now on.
    Approved(Box<AccountRequest>, Box<AccountChange>),
    Rejected(Box<AccountRequest>),
}

/// A terminal as authentication needs it.
#[derive(Clone, Debug)]
pub struct TerminalRecord {
    pub id: TerminalId,
    pub merchant_id: MerchantId,
    pub public_key: Vec<u8>,
    pub label: String,
    pub revoked: bool,
}

/// The public half of a QR signing key and its validity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrKeyRecord {
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub valid_from: Timestamp,
    pub retired_at: Option<Timestamp>,
}

/// A redemption ready to commit: the checks that need the database run inside its transaction.
#[derive(Clone, Debug)]
pub struct NewRedemption {
    pub id: RedemptionId,
    pub voucher_id: VoucherId,
    pub merchant_id: MerchantId,
    pub terminal_id: TerminalId,
    pub season_id: SeasonId,
    pub batch_id: BatchId,
    pub order_ref: String,
    pub order_slot: String,
    /// Whether the voucher's batch was issued by the province (for telling stacking apart).
    pub provincial: bool,
    pub order_amount_fen: i64,
    pub discount_fen: i64,
    pub funders_json: String,
    pub redeemed_at: Timestamp,
    pub qr_nonce: Vec<u8>,
    /// The live card payment on this order the redemption's basis was computed from (None: no
    /// card payment); re-checked under the ledger lock (`order_changed` if it differs).
    pub card_payment_id: Option<CardPaymentId>,
    /// The voucher's holder, and the season's limit on their redemptions at one merchant
    /// (`Season::merchant_redemption_limit`), counted under the ledger lock.
    pub citizen_id: CitizenId,
    pub merchant_redemption_limit: Option<u32>,
    pub entry: NewEntry,
    pub answer: IdemRecord,
}

#[derive(Clone, Debug)]
pub struct RedemptionRecord {
    pub id: RedemptionId,
    pub voucher_id: VoucherId,
    pub merchant_id: MerchantId,
    pub terminal_id: TerminalId,
    pub season_id: SeasonId,
    pub batch_id: BatchId,
    pub order_ref: String,
    pub order_amount_fen: i64,
    pub discount_fen: i64,
    pub funders_json: String,
    pub redeemed_at: Timestamp,
    pub reversed_at: Option<Timestamp>,
    pub reversal_id: Option<ReversalId>,
    pub settled: bool,
}

#[derive(Clone, Debug)]
pub struct NewReversal {
    pub redemption_id: RedemptionId,
    pub reversal_id: ReversalId,
    pub voucher_id: VoucherId,
    pub batch_id: BatchId,
    pub reason: String,
    pub at: Timestamp,
    /// "active" (still valid), "expired" (its value and stock go back to the batch) or
    /// "forfeited" (the season's refunds forfeit the voucher).
    pub voucher_status: &'static str,
    /// Whether the batch's reserve had gone back when the entry was planned: an expired
    /// voucher's value goes to the reserve while it has not, to the pool once it has. The
    /// commit refuses (`BATCH_CLOSED_MEANWHILE`) if the batch has closed since.
    pub reserve_returned: bool,
    /// The voucher's capped totals, lowered when the reversal expires it.
    pub season_totals: Vec<SeasonTotalDelta>,
    pub entry: NewEntry,
    pub answer: IdemRecord,
}

/// A refusal a storage transaction decided by its own checks (carried in `WriteError::Refused`,
/// or per redemption by `commit_redemptions`); nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Answered with this code; the caller words the message. For example `qr_replayed`,
    /// `season_closed`, `order_ref_used` or `stacking_not_allowed`, `order_changed` (a card
    /// payment on the order was recorded or reversed after the redemption was planned),
    /// `merchant_limit_reached`, `already_reversed`, `already_settled`, `already_paid`,
    /// `nothing_to_settle`, `settlement_in_progress`, `card_frozen`, `card_after_voucher`.
    #[error("{0}")]
    Code(ErrorCode),
    /// The voucher is not redeemable in its state (its status, or `unknown` if there is none).
    #[error("voucher_not_redeemable: {0}")]
    VoucherState(String),
    /// An earlier redemption of the same group carries the same idempotency key.
    #[error("the idempotency key is used earlier in the group")]
    IdempotencyTaken,
    /// The batch's reserve went back to the pool after a reversal was planned: plan it again.
    #[error("the batch closed after the reversal was planned")]
    BatchClosedMeanwhile,
    /// The season's points expired after the payment was planned to earn some there: plan again.
    #[error("the season's points expired after the payment was planned")]
    PointsExpiredMeanwhile,
    /// What the write read changed before it could commit (says what; logged, not sent).
    #[error("{0}")]
    Changed(String),
}

impl Refusal {
    /// The code the API answers this refusal with when the caller has no more specific answer.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::Code(code) => *code,
            Refusal::VoucherState(_) => ErrorCode::VoucherNotRedeemable,
            Refusal::IdempotencyTaken
            | Refusal::BatchClosedMeanwhile
            | Refusal::PointsExpiredMeanwhile
            | Refusal::Changed(_) => ErrorCode::Conflict,
        }
    }
}

#[async_trait]
pub trait TillStore: Send + Sync {
    async fn insert_merchant(
        &self,
        merchant: &crate::domain::merchant::Merchant,
        answer: &IdemRecord,
    ) -> Result<(), WriteError>;

    async fn merchant(
        &self,
        id: MerchantId,
    ) -> Result<Option<crate::domain::merchant::Merchant>, StorageError>;

    /// Merchants within a region (a city, or a whole province), by name then id, at most
    /// `limit`; with `after`, only those that come after that merchant in this order.
    async fn merchants_in(
        &self,
        region: RegionCode,
        after: Option<&crate::domain::merchant::Merchant>,
        limit: i64,
    ) -> Result<Vec<crate::domain::merchant::Merchant>, StorageError>;

    async fn set_merchant_status(&self, id: MerchantId, status: &str) -> Result<bool, StorageError>;

    /// Records a request to change the merchant's settlement account, under the merchant's row
    /// lock: at most one request waits per merchant, and asking again for the account already
    /// waiting answers with that request.
    async fn request_account_change(
        &self,
        request: &NewAccountRequest,
    ) -> Result<AccountRequestOutcome, StorageError>;

    /// Records a decision about a request under the merchant's row lock (checked there with
    /// [`AccountRequest::may_decide`]). An approval also sets the merchant's account and appends
    /// the change (with the account it replaces) to the history, in the same transaction.
    async fn decide_account_request(
        &self,
        decision: &NewAccountDecision,
    ) -> Result<AccountDecisionOutcome, StorageError>;

    /// The merchant's settlement account requests with a `seq` above `after_seq`, in the order
    /// they were made, at most `limit`.
    async fn account_requests(
        &self,
        merchant_id: MerchantId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AccountRequest>, StorageError>;

    /// The merchant's settlement account changes with a `seq` above `after_seq`, in the order
    /// they were made, at most `limit`.
    async fn account_changes(
        &self,
        merchant_id: MerchantId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AccountChange>, StorageError>;

    /// The merchant's latest settlement account change, if it ever had one.
    async fn latest_account_change(
        &self,
        merchant_id: MerchantId,
    ) -> Result<Option<AccountChange>, StorageError>;

    async fn insert_terminal(
        &self,
        terminal: &TerminalRecord,
        at: Timestamp,
        answer: &IdemRecord,
    ) -> Result<(), WriteError>;

    async fn terminal(&self, id: TerminalId) -> Result<Option<TerminalRecord>, StorageError>;

    async fn revoke_terminal(
        &self,
        merchant_id: MerchantId,
        terminal_id: TerminalId,
        at: Timestamp,
    ) -> Result<bool, StorageError>;

    /// Records request nonces (terminal, nonce), in order; for each, false if that terminal used
    /// it before (or earlier in the same call).
    async fn record_nonces(
        &self,
        seen: &[(TerminalId, String)],
        at: Timestamp,
    ) -> Result<Vec<bool>, StorageError>;

    /// Forgets up to `max_rows` request nonces first seen before `seen_before`; returns how many.
    async fn prune_terminal_nonces(&self, seen_before: Timestamp, max_rows: u32)
    -> Result<u64, StorageError>;

    /// Forgets up to `max_rows` spent QR token nonces used before `used_before`; returns how many.
    async fn prune_qr_nonces(&self, used_before: Timestamp, max_rows: u32) -> Result<u64, StorageError>;

    /// Vouchers by id, in order (None where there is none).
    async fn vouchers(
        &self,
        ids: &[VoucherId],
    ) -> Result<Vec<Option<crate::domain::season::Voucher>>, StorageError>;

    /// QR keys, newest first.
    async fn qr_keys(&self) -> Result<Vec<QrKeyRecord>, StorageError>;

    /// Adds a key and retires every older active key at the same moment.
    async fn insert_qr_key(&self, key: &QrKeyRecord) -> Result<(), StorageError>;

    async fn qr_nonce_used(&self, nonce: &[u8]) -> Result<bool, StorageError>;

    async fn voucher(&self, id: VoucherId) -> Result<Option<Voucher>, StorageError>;

    /// Commits many redemptions in one transaction, re-checking each under the ledger lock.
    /// Each gets `Ok`, or `Err` with the [`Refusal`] decided inside the transaction, which
    /// wrote nothing for it. A database error
    /// fails the whole group.
    async fn commit_redemptions(
        &self,
        group: &[NewRedemption],
    ) -> Result<Vec<Result<(), Refusal>>, WriteError>;

    async fn redemption(&self, id: RedemptionId) -> Result<Option<RedemptionRecord>, StorageError>;

    async fn commit_reversal(&self, reversal: &NewReversal) -> Result<(), WriteError>;

    /// Stores an answer on its own (a refusal decided without writing anything else).
    async fn save_answer(&self, answer: &IdemRecord) -> Result<(), WriteError>;
}
