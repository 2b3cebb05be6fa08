//! Seasons, batches, citizens, vouchers and idempotency keys on either backend (`SeasonStore`).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use crate::domain::error_code::ErrorCode;
use crate::domain::funding::{FundingShares, VoucherTerms};
use crate::domain::ids::{BatchId, CitizenId, SeasonId, VoucherId};
use crate::domain::ledger::{Balance, NewEntry};
use crate::domain::money::Fen;
use crate::domain::region::RegionCode;
use crate::domain::season::{
    Batch, Category, CitizenHoldings, Lottery, LotterySalt, Release, Season, SubsidyCeilings, Voucher,
    VoucherStatus,
};
use crate::domain::time::Timestamp;
use crate::storage::backend::ClaimRows;
use crate::storage::db::{QueryBuilder, Tx, query, query_as};
use crate::storage::ledger::{AddressBalanceRow, INSERT_CHUNK_ROWS};
use crate::storage::{
    CitizenRecord, ClaimAnswerKeys, ClaimCommit, ExpiryCommit, IdemRecord, LotteryStanding, NewCitizen,
    NewSession, Refusal, RevokedSession, SeasonStore, SeasonTotalDelta, SessionRecord, SqlStore,
    StorageError, StoredAnswer, WaitlistMove, WaitlistPerson, WaitlistStanding, WaitlistSummary, WriteError,
};

/// People placed in a waitlist's line per transaction (`place_waitlist`).
const PLACES_PER_TRANSACTION: usize = 10 * INSERT_CHUNK_ROWS;

pub(crate) const SEASON_COLUMNS: &str = "id, name, province, starts_at_us, ends_at_us, per_citizen_cap_fen, allow_stacking, closed_at_us, \
     merchant_redemption_limit, subsidy_ceilings, per_citizen_monthly_cap_fen, refund_forfeits_voucher, hold_score_threshold";
pub(crate) const BATCH_COLUMNS: &str = "id, season_id, name, issuer, kind, face_value_fen, percent, cap_fen, \
     step_fen, min_spend_fen, stock, per_citizen_limit, valid_hours, claim_opens_at_us, claim_closes_at_us, \
     categories, funding, releases, claimed_count, returned_count, reserve_returned_at_us, points_price, \
     lottery_seed_sha256, drawn_at_us, lottery_salt, lottery_committed_at_us, lottery_algorithm, \
     waitlist, waitlist_next_place";
pub(crate) const VOUCHER_COLUMNS: &str =
    "id, batch_id, season_id, citizen_id, slot, status, value_fen, claimed_at_us, expires_at_us";

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(what.to_owned())
}

fn fen(value: i64, what: &str) -> Result<Fen, StorageError> {
    Fen::new(value).map_err(|_| corrupt(what))
}

fn region(text: &str) -> Result<RegionCode, StorageError> {
    text.parse().map_err(|_| corrupt("region code"))
}

#[derive(sqlx::FromRow)]
pub(crate) struct SeasonRow {
    id: SeasonId,
    name: String,
    province: String,
    starts_at_us: i64,
    ends_at_us: i64,
    per_citizen_cap_fen: Option<i64>,
    allow_stacking: i32,
    closed_at_us: Option<i64>,
    merchant_redemption_limit: Option<i32>,
    subsidy_ceilings: Option<String>,
    per_citizen_monthly_cap_fen: Option<i64>,
    refund_forfeits_voucher: i32,
    hold_score_threshold: Option<i32>,
}

impl SeasonRow {
    pub fn into_season(self) -> Result<Season, StorageError> {
        Ok(Season {
            id: self.id,
            name: self.name,
            province: region(&self.province)?,
            starts_at: Timestamp::from_unix_us(self.starts_at_us),
            ends_at: Timestamp::from_unix_us(self.ends_at_us),
            per_citizen_cap: self.per_citizen_cap_fen.map(|c| fen(c, "season cap")).transpose()?,
            per_citizen_monthly_cap: self
                .per_citizen_monthly_cap_fen
                .map(|c| fen(c, "monthly cap"))
                .transpose()?,
            allow_stacking: self.allow_stacking != 0,
            refund_forfeits_voucher: self.refund_forfeits_voucher != 0,
            merchant_redemption_limit: self
                .merchant_redemption_limit
                .map(|n| {
                    u32::try_from(n).map_err(|_| StorageError::Corrupt("merchant_redemption_limit".into()))
                })
                .transpose()?,
            subsidy_ceilings: parse_ceilings(self.subsidy_ceilings.as_deref().unwrap_or(""))?,
            hold_score_threshold: self
                .hold_score_threshold
                .map(|n| {
                    u8::try_from(n).ok().filter(|n| *n <= 100).ok_or_else(|| corrupt("hold_score_threshold"))
                })
                .transpose()?,
            closed_at: self.closed_at_us.map(Timestamp::from_unix_us),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct BatchRow {
    id: BatchId,
    season_id: SeasonId,
    name: String,
    issuer: String,
    kind: String,
    face_value_fen: Option<i64>,
    percent: Option<i32>,
    cap_fen: Option<i64>,
    step_fen: Option<i64>,
    min_spend_fen: i64,
    stock: i64,
    per_citizen_limit: i32,
    valid_hours: i32,
    claim_opens_at_us: i64,
    claim_closes_at_us: i64,
    categories: String,
    funding: String,
    releases: String,
    claimed_count: i64,
    returned_count: i64,
    reserve_returned_at_us: Option<i64>,
    points_price: Option<i64>,
    lottery_seed_sha256: Option<String>,
    drawn_at_us: Option<i64>,
    lottery_salt: Option<Vec<u8>>,
    lottery_committed_at_us: Option<i64>,
    lottery_algorithm: Option<i32>,
    waitlist: i32,
    waitlist_next_place: Option<i64>,
}

/// A slot a citizen holds a live voucher in, of one batch.
#[derive(sqlx::FromRow)]
pub(crate) struct LiveSlotRow {
    pub citizen_id: CitizenId,
    pub slot: i32,
}

/// A `citizen_season_totals` row: what a citizen claimed in a season (`period` 0) or a month
/// (`period` YYYYMM in CST).
#[derive(sqlx::FromRow)]
pub(crate) struct SeasonTotalRow {
    pub citizen_id: CitizenId,
    pub period: i32,
    pub claimed_fen: i64,
}

/// The columns a batch's terms are stored in: kind, face value, percent, cap, step, min spend.
pub(crate) type TermColumns = (&'static str, Option<i64>, Option<i32>, Option<i64>, Option<i64>, i64);

pub(crate) fn term_columns(terms: &VoucherTerms) -> TermColumns {
    match terms {
        VoucherTerms::Threshold { face_value, min_spend } => {
            ("threshold", Some(face_value.as_fen()), None, None, None, min_spend.as_fen())
        }
        VoucherTerms::Percent { percent, cap, step, min_spend } => (
            "percent",
            None,
            Some(*percent as i32),
            Some(cap.as_fen()),
            Some(step.as_fen()),
            min_spend.as_fen(),
        ),
    }
}

pub(crate) fn funding_text(funding: &FundingShares) -> String {
    funding.iter().map(|(funder, share)| format!("{funder}:{share}")).collect::<Vec<_>>().join(",")
}

/// `category:percent` pairs joined by commas; None when there are none.
pub(crate) fn ceilings_text(ceilings: &SubsidyCeilings) -> Option<String> {
    let pairs: Vec<String> =
        ceilings.iter().map(|(category, percent)| format!("{category}:{percent}")).collect();
    (!pairs.is_empty()).then(|| pairs.join(","))
}

fn parse_ceilings(text: &str) -> Result<SubsidyCeilings, StorageError> {
    let mut pairs = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (category, percent) = part.split_once(':').ok_or_else(|| corrupt("subsidy ceiling"))?;
        let category: Category = category.parse().map_err(|_| corrupt("subsidy ceiling category"))?;
        pairs.push((category, percent.parse().map_err(|_| corrupt("subsidy ceiling percent"))?));
    }
    SubsidyCeilings::new(pairs).map_err(|_| corrupt("subsidy ceilings"))
}

pub(crate) fn categories_text(categories: &[Category]) -> String {
    categories.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",")
}

fn parse_funding(text: &str) -> Result<FundingShares, StorageError> {
    let mut shares = Vec::new();
    for part in text.split(',') {
        let (funder, share) = part.split_once(':').ok_or_else(|| corrupt("funding"))?;
        shares.push((region(funder)?, share.parse().map_err(|_| corrupt("funding share"))?));
    }
    FundingShares::new(shares).map_err(|_| corrupt("funding shares"))
}

impl BatchRow {
    fn terms(&self) -> Result<VoucherTerms, StorageError> {
        let min_spend = fen(self.min_spend_fen, "min spend")?;
        match self.kind.as_str() {
            "threshold" => Ok(VoucherTerms::Threshold {
                face_value: fen(self.face_value_fen.unwrap_or(-1), "face value")?,
                min_spend,
            }),
            "percent" => Ok(VoucherTerms::Percent {
                percent: u32::try_from(self.percent.unwrap_or(-1)).map_err(|_| corrupt("percent"))?,
                cap: fen(self.cap_fen.unwrap_or(-1), "cap")?,
                step: fen(self.step_fen.unwrap_or(-1), "step")?,
                min_spend,
            }),
            _ => Err(corrupt("batch kind")),
        }
    }

    pub fn into_batch(self) -> Result<Batch, StorageError> {
        let terms = self.terms()?;
        let categories = self
            .categories
            .split(',')
            .filter(|c| !c.is_empty())
            .map(|c| c.parse::<Category>().map_err(|_| corrupt("category")))
            .collect::<Result<Vec<_>, _>>()?;
        let releases: Vec<Release> = serde_json::from_str(&self.releases).map_err(|_| corrupt("releases"))?;
        Ok(Batch {
            id: self.id,
            season_id: self.season_id,
            name: self.name,
            issuer: region(&self.issuer)?,
            terms,
            stock: self.stock,
            per_citizen_limit: u32::try_from(self.per_citizen_limit).map_err(|_| corrupt("limit"))?,
            valid_hours: u32::try_from(self.valid_hours).map_err(|_| corrupt("valid hours"))?,
            claim_opens_at: Timestamp::from_unix_us(self.claim_opens_at_us),
            claim_closes_at: Timestamp::from_unix_us(self.claim_closes_at_us),
            categories,
            funding: parse_funding(&self.funding)?,
            releases,
            claimed_count: self.claimed_count,
            returned_count: self.returned_count,
            reserve_returned: self.reserve_returned_at_us.is_some(),
            points_price: self.points_price,
            lottery: self
                .lottery_seed_sha256
                .map(|hex| {
                    let seed_sha256 =
                        Lottery::parse_commitment(&hex).ok_or_else(|| corrupt("lottery seed hash"))?;
                    let salt = self.lottery_salt.and_then(|s| <[u8; 32]>::try_from(s).ok());
                    let algorithm = self.lottery_algorithm.and_then(|a| u8::try_from(a).ok());
                    let (Some(salt), Some(committed_at_us), Some(algorithm)) =
                        (salt, self.lottery_committed_at_us, algorithm)
                    else {
                        return Err(corrupt("lottery salt"));
                    };
                    Ok::<_, StorageError>(Lottery {
                        seed_sha256,
                        salt: LotterySalt(salt),
                        committed_at: Timestamp::from_unix_us(committed_at_us),
                        algorithm,
                        drawn_at: self.drawn_at_us.map(Timestamp::from_unix_us),
                        waitlist: self.waitlist != 0,
                        next_place: self.waitlist_next_place,
                    })
                })
                .transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct VoucherRow {
    id: VoucherId,
    batch_id: BatchId,
    season_id: SeasonId,
    citizen_id: CitizenId,
    slot: i32,
    status: String,
    value_fen: i64,
    claimed_at_us: i64,
    expires_at_us: i64,
}

impl VoucherRow {
    pub fn into_voucher(self) -> Result<Voucher, StorageError> {
        Ok(Voucher {
            id: self.id,
            batch_id: self.batch_id,
            season_id: self.season_id,
            citizen_id: self.citizen_id,
            slot: u32::try_from(self.slot).map_err(|_| corrupt("slot"))?,
            status: VoucherStatus::parse(&self.status).ok_or_else(|| corrupt("voucher status"))?,
            value: fen(self.value_fen, "voucher value")?,
            claimed_at: Timestamp::from_unix_us(self.claimed_at_us),
            expires_at: Timestamp::from_unix_us(self.expires_at_us),
        })
    }
}

impl SqlStore {
    /// A lottery's or a waitlist's entry (with the waitlist's sealed phone), once: when the
    /// citizen first entered.
    async fn insert_entry(
        &self,
        batch_id: BatchId,
        citizen_id: CitizenId,
        at: Timestamp,
        sealed_phone: Option<&[u8]>,
    ) -> Result<Timestamp, StorageError> {
        query(
            "INSERT INTO lottery_entries (batch_id, citizen_id, entered_at_us, sealed_phone) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (batch_id, citizen_id) DO NOTHING",
        )
        .bind(batch_id)
        .bind(citizen_id)
        .bind(at.unix_us())
        .bind(sealed_phone.map(<[u8]>::to_vec))
        .execute(&self.pool)
        .await?;
        let (entered_at_us,): (i64,) =
            query_as("SELECT entered_at_us FROM lottery_entries WHERE batch_id = $1 AND citizen_id = $2")
                .bind(batch_id)
                .bind(citizen_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(Timestamp::from_unix_us(entered_at_us))
    }

    /// A waitlist's move (docs/waitlist.md) inside the claim's transaction: the cursor by a
    /// compare-and-set (another sweep that moved it first refuses this one), the freed voucher
    /// recorded once (primary key), the places passed over marked, and the phones of the people
    /// reached erased. A forfeit's move grows the stock by one (its refill entry funds it).
    async fn apply_waitlist_move(tx: &mut Tx, moved: &WaitlistMove) -> Result<(), WriteError> {
        let updated = query(
            "UPDATE batches SET waitlist_next_place = $1, stock = stock + $2 \
             WHERE id = $3 AND waitlist = 1 AND waitlist_next_place = $4",
        )
        .bind(moved.to_place)
        .bind(i64::from(moved.refill))
        .bind(moved.batch_id)
        .bind(moved.from_place)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(WriteError::Refused(Refusal::Changed(format!(
                "the waitlist of batch {} moved on meanwhile",
                moved.batch_id
            ))));
        }
        query(
            "INSERT INTO waitlist_moves (voucher_id, batch_id, new_voucher_id, outcome, moved_at_us) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(moved.freed)
        .bind(moved.batch_id)
        .bind(moved.new_voucher)
        .bind(moved.outcome)
        .bind(moved.at.unix_us())
        .execute(&mut *tx)
        .await?;
        for (place, reason) in &moved.passed {
            query("UPDATE waitlist_places SET passed_reason = $1 WHERE batch_id = $2 AND place = $3")
                .bind(reason.clone())
                .bind(moved.batch_id)
                .bind(*place)
                .execute(&mut *tx)
                .await?;
        }
        Ok(Self::erase_phones(tx, moved.batch_id, moved.from_place, moved.to_place).await?)
    }

    /// Erases the sealed phones of the people at places `from..to`: reached, they wait no more.
    async fn erase_phones(tx: &mut Tx, batch_id: BatchId, from: i64, to: i64) -> Result<(), StorageError> {
        if from >= to {
            return Ok(());
        }
        query(
            "UPDATE lottery_entries SET sealed_phone = NULL WHERE batch_id = $1 AND sealed_phone IS NOT NULL \
             AND citizen_id IN (SELECT citizen_id FROM waitlist_places WHERE batch_id = $1 AND place >= $2 AND place < $3)",
        )
        .bind(batch_id)
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Appends ledger entries inside `tx` and returns the accounts to cache on commit.
    pub(crate) async fn post_in(
        &self,
        tx: &mut Tx,
        entries: &[NewEntry],
    ) -> Result<HashMap<String, crate::storage::ledger::KnownAccount>, WriteError> {
        if entries.is_empty() {
            return Ok(HashMap::new());
        }
        let (_, opened) = self.append(tx, entries).await?;
        Ok(opened)
    }

    /// Refuses (`SEASON_CLOSED`) a write to a closed season. The caller holds the ledger head,
    /// which a season's close holds while it returns every reserve and liability.
    pub(crate) async fn refuse_closed_season(tx: &mut Tx, season_id: SeasonId) -> Result<(), WriteError> {
        let closed: Option<(Option<i64>,)> = query_as("SELECT closed_at_us FROM seasons WHERE id = $1")
            .bind(season_id)
            .fetch_optional(&mut *tx)
            .await?;
        if matches!(closed, Some((Some(_),))) {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::SeasonClosed)));
        }
        Ok(())
    }

    /// Whether the batch's reserve has gone back to the pools. The caller holds the
    /// ledger head, which a batch's close holds while it returns the reserve, so a
    /// write planned for the batch open or closed can check it still is.
    pub(crate) async fn reserve_returned_in(tx: &mut Tx, batch_id: BatchId) -> Result<bool, WriteError> {
        let returned: Option<(Option<i64>,)> =
            query_as("SELECT reserve_returned_at_us FROM batches WHERE id = $1")
                .bind(batch_id)
                .fetch_optional(&mut *tx)
                .await?;
        Ok(matches!(returned, Some((Some(_),))))
    }

    pub(crate) async fn insert_answers(&self, tx: &mut Tx, answers: &[IdemRecord]) -> Result<(), WriteError> {
        let now_us = Timestamp::now().unix_us();
        for chunk in answers.chunks(INSERT_CHUNK_ROWS) {
            self.backend.insert_answer_rows(tx, chunk, now_us).await?;
        }
        Ok(())
    }

    /// Applies the claim group's, the sweeper's or a reversal's changes to citizens'
    /// season totals, summed per citizen first. A rise is an upsert (a citizen's
    /// first claim creates the row). A fall is a plain UPDATE: as an upsert its
    /// negative insert row fails the table's CHECK on both backends, which check it
    /// before they find the conflict. The row it lowers exists: the claim made it.
    pub(crate) async fn apply_season_totals(
        &self,
        tx: &mut Tx,
        deltas: &[SeasonTotalDelta],
    ) -> Result<(), WriteError> {
        let mut summed: std::collections::BTreeMap<(SeasonId, CitizenId, i32), (i64, i64)> =
            Default::default();
        for d in deltas {
            let entry = summed.entry((d.season_id, d.citizen_id, d.period)).or_insert((0, d.cap_fen));
            entry.0 += d.delta_fen;
        }
        let change = |((season_id, citizen_id, period), (delta_fen, cap_fen)): (
            &(SeasonId, CitizenId, i32),
            &(i64, i64),
        )| SeasonTotalDelta {
            season_id: *season_id,
            citizen_id: *citizen_id,
            period: *period,
            delta_fen: *delta_fen,
            cap_fen: *cap_fen,
        };
        let rises: Vec<SeasonTotalDelta> =
            summed.iter().filter(|(_, (delta, _))| *delta > 0).map(change).collect();
        let falls: Vec<SeasonTotalDelta> =
            summed.iter().filter(|(_, (delta, _))| *delta < 0).map(change).collect();
        for chunk in rises.chunks(INSERT_CHUNK_ROWS) {
            self.backend.raise_season_totals(tx, chunk).await?;
        }
        for chunk in falls.chunks(INSERT_CHUNK_ROWS) {
            self.backend.lower_season_totals(tx, chunk).await?;
        }
        Ok(())
    }
}

/// An `idempotency_keys` row's stored answer.
#[derive(sqlx::FromRow)]
pub(crate) struct AnswerRow {
    request_hash: Vec<u8>,
    status: i32,
    body: String,
}

impl AnswerRow {
    fn into_answer(self) -> StoredAnswer {
        StoredAnswer {
            request_hash: self.request_hash,
            status: u16::try_from(self.status).unwrap_or(500),
            body: self.body,
        }
    }
}

/// An `idempotency_keys` row with its scope and key.
#[derive(sqlx::FromRow)]
pub(crate) struct ScopedAnswerRow {
    scope: String,
    idem_key: String,
    #[sqlx(flatten)]
    answer: AnswerRow,
}

#[async_trait]
impl SeasonStore for SqlStore {
    async fn prune_idempotency_answers(
        &self,
        created_before: Timestamp,
        max_rows: u32,
    ) -> Result<u64, StorageError> {
        Ok(self.backend.delete_old_rows(crate::storage::OLD_CLIENT_ANSWERS, created_before, max_rows).await?)
    }

    async fn idempotent_answer(&self, scope: &str, key: &str) -> Result<Option<StoredAnswer>, StorageError> {
        let row: Option<AnswerRow> = query_as(
            "SELECT request_hash, status, body FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
        )
        .bind(scope.to_owned())
        .bind(key.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(AnswerRow::into_answer))
    }

    async fn idempotent_answers(
        &self,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), StoredAnswer>, StorageError> {
        let mut found = HashMap::new();
        let wanted: std::collections::HashSet<&(String, String)> = keys.iter().collect();
        for chunk in keys.chunks(INSERT_CHUNK_ROWS) {
            for row in self.backend.answer_rows(chunk).await? {
                let pair = (row.scope, row.idem_key);
                if wanted.contains(&pair) {
                    found.insert(pair, row.answer.into_answer());
                }
            }
        }
        Ok(found)
    }

    async fn claim_answer_keys(
        &self,
        batch_id: BatchId,
        since: Timestamp,
        limit: u32,
    ) -> Result<Option<ClaimAnswerKeys>, StorageError> {
        let limit = i64::from(limit);
        // The partial unique index on (batch, citizen, slot) of live vouchers.
        let holders: Vec<(CitizenId,)> = query_as(
            "SELECT DISTINCT citizen_id FROM vouchers WHERE batch_id = $1 AND status <> 'expired' LIMIT $2",
        )
        .bind(batch_id)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let room = limit - i64::try_from(holders.len()).unwrap_or(i64::MAX);
        if room < 0 {
            return Ok(None);
        }
        // The retention index (its predicate written out, so that SQLite uses it too).
        let refused: Vec<(String, String)> = query_as(
            "SELECT scope, idem_key FROM idempotency_keys \
             WHERE (scope LIKE 'citizen:%' OR scope LIKE 'terminal:%') AND created_at_us >= $1 \
             AND scope LIKE 'citizen:%' AND status <> 201 LIMIT $2",
        )
        .bind(since.unix_us())
        .bind(room + 1)
        .fetch_all(&self.pool)
        .await?;
        if i64::try_from(refused.len()).unwrap_or(i64::MAX) > room {
            return Ok(None);
        }
        Ok(Some(ClaimAnswerKeys { holders: holders.into_iter().map(|(c,)| c).collect(), refused }))
    }

    async fn create_season(
        &self,
        season: &Season,
        funders: &[RegionCode],
        entries: &[NewEntry],
        answer: &IdemRecord,
    ) -> Result<(), WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        self.insert_answers(&mut tx, std::slice::from_ref(answer)).await?;
        query(
            "INSERT INTO seasons (id, name, province, starts_at_us, ends_at_us, per_citizen_cap_fen, allow_stacking, \
             created_at_us, merchant_redemption_limit, subsidy_ceilings, per_citizen_monthly_cap_fen, \
             refund_forfeits_voucher, hold_score_threshold) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(season.id)
        .bind(season.name.clone())
        .bind(season.province.to_string())
        .bind(season.starts_at.unix_us())
        .bind(season.ends_at.unix_us())
        .bind(season.per_citizen_cap.map(|c| c.as_fen()))
        .bind(i32::from(season.allow_stacking))
        .bind(Timestamp::now().unix_us())
        .bind(season.merchant_redemption_limit.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
        .bind(crate::storage::seasons::ceilings_text(&season.subsidy_ceilings))
        .bind(season.per_citizen_monthly_cap.map(|c| c.as_fen()))
        .bind(i32::from(season.refund_forfeits_voucher))
        .bind(season.hold_score_threshold.map(i32::from))
        .execute(&mut tx)
        .await?;
        for funder in funders {
            query("INSERT INTO season_funders (season_id, funder) VALUES ($1, $2)")
                .bind(season.id)
                .bind(funder.to_string())
                .execute(&mut tx)
                .await?;
        }
        let opened = self.post_in(&mut tx, entries).await?;
        self.commit_and_cache(tx, opened).await?;
        Ok(())
    }

    async fn add_budget(
        &self,
        season_id: SeasonId,
        funder: RegionCode,
        entry: &NewEntry,
        answer: &IdemRecord,
    ) -> Result<(), WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        // A closed season takes no more money (a batch or a budget added after the
        // close would be stranded in a season nobody closes again).
        self.lock_head(&mut tx).await?;
        Self::refuse_closed_season(&mut tx, season_id).await?;
        self.insert_answers(&mut tx, std::slice::from_ref(answer)).await?;
        query("INSERT INTO season_funders (season_id, funder) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(season_id)
            .bind(funder.to_string())
            .execute(&mut tx)
            .await?;
        let opened = self.post_in(&mut tx, std::slice::from_ref(entry)).await?;
        self.commit_and_cache(tx, opened).await?;
        Ok(())
    }

    async fn season(&self, id: SeasonId) -> Result<Option<Season>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {SEASON_COLUMNS} FROM seasons WHERE id = $1"));
        let row: Option<SeasonRow> = query_as(sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(SeasonRow::into_season).transpose()
    }

    async fn seasons(
        &self,
        province: Option<RegionCode>,
        after: Option<&Season>,
        limit: i64,
    ) -> Result<Vec<Season>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {SEASON_COLUMNS} FROM seasons WHERE ($1 IS NULL OR province = $1) \
             AND ($2 IS NULL OR (starts_at_us, id) < ($2, $3)) ORDER BY starts_at_us DESC, id DESC LIMIT $4"
        ));
        let rows: Vec<SeasonRow> = query_as(sql)
            .bind(province.map(|p| p.to_string()))
            .bind(after.map(|s| s.starts_at.unix_us()))
            .bind(after.map(|s| s.id))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(SeasonRow::into_season).collect()
    }

    async fn season_funders(&self, season_id: SeasonId) -> Result<Vec<RegionCode>, StorageError> {
        let rows: Vec<(String,)> =
            query_as("SELECT funder FROM season_funders WHERE season_id = $1 ORDER BY funder")
                .bind(season_id)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(|(f,)| f.parse().map_err(|_| StorageError::Corrupt("funder".into()))).collect()
    }

    async fn sum_balances_like(&self, pattern: &str) -> Result<Balance, StorageError> {
        let (debits_fen, credits_fen): (i64, i64) = query_as(
            "SELECT CAST(COALESCE(SUM(b.debits_fen), 0) AS BIGINT), CAST(COALESCE(SUM(b.credits_fen), 0) AS BIGINT) \
             FROM accounts a JOIN account_balances b ON b.account_id = a.id WHERE a.address LIKE $1",
        )
        .bind(pattern.to_owned())
        .fetch_one(&self.pool)
        .await?;
        Ok(Balance { debits_fen, credits_fen })
    }

    async fn create_batch(
        &self,
        batch: &Batch,
        entry: &NewEntry,
        answer: &IdemRecord,
    ) -> Result<(), WriteError> {
        let (kind, face, percent, cap, step, min_spend) = term_columns(&batch.terms);
        let releases =
            serde_json::to_string(&batch.releases).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        // A closed season takes no more money (a batch or a budget added after the
        // close would be stranded in a season nobody closes again).
        self.lock_head(&mut tx).await?;
        Self::refuse_closed_season(&mut tx, batch.season_id).await?;
        self.insert_answers(&mut tx, std::slice::from_ref(answer)).await?;
        query(
            "INSERT INTO batches (id, season_id, name, issuer, kind, face_value_fen, percent, cap_fen, step_fen, \
             min_spend_fen, max_value_fen, stock, per_citizen_limit, valid_hours, claim_opens_at_us, claim_closes_at_us, \
             categories, funding, releases, created_at_us, points_price, lottery_seed_sha256, lottery_salt, \
             lottery_committed_at_us, lottery_algorithm, waitlist) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
             $23, $24, $25, $26)",
        )
        .bind(batch.id)
        .bind(batch.season_id)
        .bind(batch.name.clone())
        .bind(batch.issuer.to_string())
        .bind(kind)
        .bind(face)
        .bind(percent)
        .bind(cap)
        .bind(step)
        .bind(min_spend)
        .bind(batch.voucher_value().as_fen())
        .bind(batch.stock)
        .bind(batch.per_citizen_limit as i32)
        .bind(batch.valid_hours as i32)
        .bind(batch.claim_opens_at.unix_us())
        .bind(batch.claim_closes_at.unix_us())
        .bind(categories_text(&batch.categories))
        .bind(funding_text(&batch.funding))
        .bind(releases)
        .bind(Timestamp::now().unix_us())
        .bind(batch.points_price)
        .bind(batch.lottery.as_ref().map(|l| l.commitment_hex()))
        .bind(batch.lottery.as_ref().map(|l| l.salt.0.to_vec()))
        .bind(batch.lottery.as_ref().map(|l| l.committed_at.unix_us()))
        .bind(batch.lottery.as_ref().map(|l| i32::from(l.algorithm)))
        .bind(i32::from(batch.lottery.as_ref().is_some_and(|l| l.waitlist)))
        .execute(&mut tx)
        .await?;
        let opened = self.post_in(&mut tx, std::slice::from_ref(entry)).await?;
        self.commit_and_cache(tx, opened).await?;
        Ok(())
    }

    async fn batch(&self, id: BatchId) -> Result<Option<Batch>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1"));
        let row: Option<BatchRow> = query_as(sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(BatchRow::into_batch).transpose()
    }

    async fn season_batches(&self, season_id: SeasonId) -> Result<Vec<Batch>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE season_id = $1 ORDER BY claim_opens_at_us, id LIMIT 1000"
        ));
        let rows: Vec<BatchRow> = query_as(sql).bind(season_id).fetch_all(&self.pool).await?;
        rows.into_iter().map(BatchRow::into_batch).collect()
    }

    async fn insert_citizen(&self, citizen: &NewCitizen, session: &NewSession) -> Result<(), WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        query(
            "INSERT INTO citizens (id, id_hash, id_masked, name_masked, phone_hash, phone_masked, created_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(citizen.id)
        .bind(citizen.id_hash.clone())
        .bind(citizen.id_masked.clone())
        .bind(citizen.name_masked.clone())
        .bind(citizen.phone_hash.clone())
        .bind(citizen.phone_masked.clone())
        .bind(citizen.created_at.unix_us())
        .execute(&mut tx)
        .await?;
        query(
            "INSERT INTO citizen_sessions (token_hash, citizen_id, expires_at_us, created_at_us) VALUES ($1, $2, $3, $4)",
        )
        .bind(session.token_hash.clone())
        .bind(session.citizen_id)
        .bind(session.expires_at.unix_us())
        .bind(session.created_at.unix_us())
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn citizen_by_id_hash(&self, id_hash: &[u8]) -> Result<Option<CitizenRecord>, StorageError> {
        let row: Option<(CitizenId, Vec<u8>)> =
            query_as("SELECT id, phone_hash FROM citizens WHERE id_hash = $1")
                .bind(id_hash.to_vec())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id, phone_hash)| CitizenRecord { id, phone_hash }))
    }

    async fn citizen_phone_hash(&self, citizen_id: CitizenId) -> Result<Option<Vec<u8>>, StorageError> {
        let row: Option<(Vec<u8>,)> = query_as("SELECT phone_hash FROM citizens WHERE id = $1")
            .bind(citizen_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(hash,)| hash))
    }

    async fn citizen_home(&self, citizen_id: CitizenId) -> Result<Option<RegionCode>, StorageError> {
        let row: Option<(String,)> = query_as("SELECT id_masked FROM citizens WHERE id = $1")
            .bind(citizen_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(masked,)| {
            crate::domain::citizen::home_region_of_masked(&masked)
                .ok_or_else(|| StorageError::Corrupt(format!("citizen {citizen_id}'s ID number")))
        })
        .transpose()
    }

    async fn insert_session(&self, session: &NewSession) -> Result<(), StorageError> {
        query(
            "INSERT INTO citizen_sessions (token_hash, citizen_id, expires_at_us, created_at_us) VALUES ($1, $2, $3, $4)",
        )
        .bind(session.token_hash.clone())
        .bind(session.citizen_id)
        .bind(session.expires_at.unix_us())
        .bind(session.created_at.unix_us())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, token_hash: &[u8]) -> Result<Option<SessionRecord>, StorageError> {
        let row: Option<(CitizenId, i64)> = query_as(
            "SELECT citizen_id, expires_at_us FROM citizen_sessions \
                 WHERE token_hash = $1 AND revoked_at_us IS NULL",
        )
        .bind(token_hash.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(citizen_id, expires_at_us)| SessionRecord {
            citizen_id,
            expires_at: Timestamp::from_unix_us(expires_at_us),
        }))
    }

    async fn revoke_session(&self, token_hash: &[u8], at: Timestamp) -> Result<bool, StorageError> {
        let done = query(
            "UPDATE citizen_sessions SET revoked_at_us = $2 \
             WHERE token_hash = $1 AND revoked_at_us IS NULL",
        )
        .bind(token_hash.to_vec())
        .bind(at.unix_us())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_citizen_sessions(
        &self,
        citizen_id: CitizenId,
        at: Timestamp,
    ) -> Result<Option<u64>, StorageError> {
        let done = query(
            "UPDATE citizen_sessions SET revoked_at_us = $2 \
             WHERE citizen_id = $1 AND revoked_at_us IS NULL",
        )
        .bind(citizen_id)
        .bind(at.unix_us())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            let known: Option<(CitizenId,)> = query_as("SELECT id FROM citizens WHERE id = $1")
                .bind(citizen_id)
                .fetch_optional(&self.pool)
                .await?;
            if known.is_none() {
                return Ok(None);
            }
        }
        Ok(Some(done.rows_affected()))
    }

    async fn revoked_sessions_since(
        &self,
        since: Timestamp,
        limit: i64,
    ) -> Result<Vec<RevokedSession>, StorageError> {
        let rows: Vec<(Vec<u8>, i64)> = query_as(
            "SELECT token_hash, revoked_at_us FROM citizen_sessions \
             WHERE revoked_at_us >= $1 ORDER BY revoked_at_us LIMIT $2",
        )
        .bind(since.unix_us())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(token_hash, at_us)| RevokedSession {
                token_hash,
                revoked_at: Timestamp::from_unix_us(at_us),
            })
            .collect())
    }

    async fn citizen_vouchers(
        &self,
        citizen_id: CitizenId,
        after: Option<&Voucher>,
        limit: i64,
    ) -> Result<Vec<Voucher>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE citizen_id = $1 \
             AND ($2 IS NULL OR (claimed_at_us, id) < ($2, $3)) ORDER BY claimed_at_us DESC, id DESC LIMIT $4"
        ));
        let rows: Vec<VoucherRow> = query_as(sql)
            .bind(citizen_id)
            .bind(after.map(|v| v.claimed_at.unix_us()))
            .bind(after.map(|v| v.id))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(VoucherRow::into_voucher).collect()
    }

    async fn first_voucher_pages(
        &self,
        wanted: &[(CitizenId, i64)],
    ) -> Result<Vec<Vec<Voucher>>, StorageError> {
        let mut limits: HashMap<CitizenId, i64> = HashMap::new();
        for &(citizen_id, limit) in wanted {
            let most = limits.entry(citizen_id).or_insert(0);
            *most = (*most).max(limit);
        }
        let asked: Vec<(CitizenId, i64)> = limits.into_iter().collect();
        let mut pages: HashMap<CitizenId, Vec<Voucher>> = HashMap::new();
        for chunk in asked.chunks(INSERT_CHUNK_ROWS) {
            for row in self.backend.first_voucher_page_rows(chunk).await? {
                let voucher = row.into_voucher()?;
                pages.entry(voucher.citizen_id).or_default().push(voucher);
            }
        }
        for page in pages.values_mut() {
            page.sort_unstable_by_key(|v| std::cmp::Reverse((v.claimed_at, v.id)));
        }
        Ok(wanted
            .iter()
            .map(|(citizen_id, limit)| {
                let page = pages.get(citizen_id).map(Vec::as_slice).unwrap_or_default();
                page.iter().take(usize::try_from(*limit).unwrap_or(0)).cloned().collect()
            })
            .collect())
    }

    async fn enter_lottery(
        &self,
        batch_id: BatchId,
        citizen_id: CitizenId,
        at: Timestamp,
    ) -> Result<Timestamp, StorageError> {
        self.insert_entry(batch_id, citizen_id, at, None).await
    }

    async fn lottery_entrants(
        &self,
        batch_id: BatchId,
        after: Option<CitizenId>,
        limit: i64,
    ) -> Result<Vec<CitizenId>, StorageError> {
        let rows: Vec<(CitizenId,)> = query_as(
            "SELECT citizen_id FROM lottery_entries WHERE batch_id = $1 AND ($2 IS NULL OR citizen_id > $2) \
             ORDER BY citizen_id LIMIT $3",
        )
        .bind(batch_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn enter_waitlist(
        &self,
        batch_id: BatchId,
        citizen_id: CitizenId,
        at: Timestamp,
        sealed_phone: &[u8],
    ) -> Result<Timestamp, StorageError> {
        self.insert_entry(batch_id, citizen_id, at, Some(sealed_phone)).await
    }

    async fn place_waitlist(&self, batch_id: BatchId, order: &[CitizenId]) -> Result<(), StorageError> {
        // A transaction per PLACES_PER_TRANSACTION people, so that a long line does not hold
        // the write lock (SQLite's, for every till) for seconds: the places are fixed by the
        // order, and a chunk written again after a failure part way changes nothing.
        for (t, people) in order.chunks(PLACES_PER_TRANSACTION).enumerate() {
            let _gate = self.write_gate.lock().await;
            let mut tx = self.begin_write().await?;
            for (n, chunk) in people.chunks(INSERT_CHUNK_ROWS).enumerate() {
                let first = t * PLACES_PER_TRANSACTION + n * INSERT_CHUNK_ROWS;
                let first = i64::try_from(first).unwrap_or(i64::MAX);
                let mut insert =
                    QueryBuilder::new("INSERT INTO waitlist_places (batch_id, place, citizen_id) ");
                insert.push_values(chunk.iter().enumerate(), |mut row, (i, citizen)| {
                    row.push_bind(batch_id).push_bind(first + i as i64 + 1).push_bind(*citizen);
                });
                insert.push(" ON CONFLICT DO NOTHING");
                insert.build().execute(&mut tx).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    async fn start_waitlist(&self, batch_id: BatchId, issued_all: bool) -> Result<(), StorageError> {
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        let (length,): (i64,) = query_as("SELECT COUNT(*) FROM waitlist_places WHERE batch_id = $1")
            .bind(batch_id)
            .fetch_one(&mut tx)
            .await?;
        let (last,): (Option<i64>,) = query_as(
            "SELECT MAX(p.place) FROM waitlist_places p JOIN vouchers v \
             ON v.batch_id = p.batch_id AND v.citizen_id = p.citizen_id WHERE p.batch_id = $1",
        )
        .bind(batch_id)
        .fetch_one(&mut tx)
        .await?;
        let next = if issued_all { last.unwrap_or(0) + 1 } else { length + 1 };
        let started = query(
            "UPDATE batches SET waitlist_next_place = $1 WHERE id = $2 AND waitlist = 1 AND waitlist_next_place IS NULL",
        )
        .bind(next)
        .bind(batch_id)
        .execute(&mut tx)
        .await?;
        if started.rows_affected() == 1 {
            query(
                "UPDATE waitlist_places SET passed_reason = 'limit_reached' WHERE batch_id = $1 AND place < $2 \
                 AND NOT EXISTS (SELECT 1 FROM vouchers v WHERE v.batch_id = waitlist_places.batch_id \
                 AND v.citizen_id = waitlist_places.citizen_id)",
            )
            .bind(batch_id)
            .bind(next)
            .execute(&mut tx)
            .await?;
            Self::erase_phones(&mut tx, batch_id, 1, next).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn waitlist_freed(&self, limit: i64) -> Result<Vec<Voucher>, StorageError> {
        let columns = VOUCHER_COLUMNS.split(", ").map(|c| format!("v.{c}")).collect::<Vec<_>>().join(", ");
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM vouchers v JOIN batches b ON b.id = v.batch_id \
             WHERE b.waitlist = 1 AND b.waitlist_next_place IS NOT NULL AND b.drawn_at_us IS NOT NULL \
             AND b.reserve_returned_at_us IS NULL \
             AND v.status IN ('expired', 'forfeited') \
             AND NOT EXISTS (SELECT 1 FROM waitlist_moves m WHERE m.voucher_id = v.id) \
             ORDER BY v.expires_at_us, v.id LIMIT $1"
        ));
        let rows: Vec<VoucherRow> = query_as(sql).bind(limit).fetch_all(&self.pool).await?;
        rows.into_iter().map(VoucherRow::into_voucher).collect()
    }

    async fn waitlist_people(
        &self,
        batch_id: BatchId,
        place: i64,
        limit: i64,
    ) -> Result<Vec<WaitlistPerson>, StorageError> {
        let rows: Vec<(i64, CitizenId, Option<Vec<u8>>)> = query_as(
            "SELECT p.place, p.citizen_id, e.sealed_phone FROM waitlist_places p LEFT JOIN lottery_entries e \
             ON e.batch_id = p.batch_id AND e.citizen_id = p.citizen_id \
             WHERE p.batch_id = $1 AND p.place >= $2 ORDER BY p.place LIMIT $3",
        )
        .bind(batch_id)
        .bind(place)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(place, citizen_id, sealed_phone)| WaitlistPerson { place, citizen_id, sealed_phone })
            .collect())
    }

    async fn waitlist_standing(
        &self,
        batch_id: BatchId,
        citizen_id: CitizenId,
    ) -> Result<Option<WaitlistStanding>, StorageError> {
        let entry: Option<(i64, Option<i64>, Option<String>)> = query_as(
            "SELECT e.entered_at_us, p.place, p.passed_reason FROM lottery_entries e LEFT JOIN waitlist_places p \
             ON p.batch_id = e.batch_id AND p.citizen_id = e.citizen_id WHERE e.batch_id = $1 AND e.citizen_id = $2",
        )
        .bind(batch_id)
        .bind(citizen_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((entered_at_us, place, passed_reason)) = entry else { return Ok(None) };
        let voucher: Option<(VoucherId, String)> = query_as(
            "SELECT id, status FROM vouchers WHERE batch_id = $1 AND citizen_id = $2 ORDER BY claimed_at_us DESC, id DESC LIMIT 1",
        )
        .bind(batch_id)
        .bind(citizen_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(Some(WaitlistStanding {
            entered_at: Timestamp::from_unix_us(entered_at_us),
            place,
            passed_reason,
            voucher,
        }))
    }

    async fn waitlist_summary(&self, batch_id: BatchId) -> Result<WaitlistSummary, StorageError> {
        let (length,): (i64,) = query_as("SELECT COUNT(*) FROM lottery_entries WHERE batch_id = $1")
            .bind(batch_id)
            .fetch_one(&self.pool)
            .await?;
        let (next_place,): (Option<i64>,) = query_as("SELECT waitlist_next_place FROM batches WHERE id = $1")
            .bind(batch_id)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or((None,));
        let (moved_on, unmoved): (i64, i64) = query_as(
            "SELECT COUNT(new_voucher_id), COUNT(*) - COUNT(new_voucher_id) FROM waitlist_moves WHERE batch_id = $1",
        )
        .bind(batch_id)
        .fetch_one(&self.pool)
        .await?;
        let (passed,): (i64,) = query_as(
            "SELECT COUNT(*) FROM waitlist_places WHERE batch_id = $1 AND passed_reason IS NOT NULL",
        )
        .bind(batch_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(WaitlistSummary { length, next_place, moved_on, unmoved, passed })
    }

    async fn lottery_seed(&self, batch_id: BatchId) -> Result<Option<String>, StorageError> {
        let row: Option<(Option<String>,)> = query_as("SELECT lottery_seed FROM batches WHERE id = $1")
            .bind(batch_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|(seed,)| seed))
    }

    async fn lottery_winners(&self, batch_id: BatchId) -> Result<Vec<CitizenId>, StorageError> {
        let rows: Vec<(CitizenId,)> =
            // A waitlist's later vouchers (moved on from expired or forfeited ones) are not the draw's.
            query_as(
                "SELECT DISTINCT citizen_id FROM vouchers WHERE batch_id = $1 AND NOT EXISTS \
                 (SELECT 1 FROM waitlist_moves m WHERE m.new_voucher_id = vouchers.id) ORDER BY citizen_id",
            )
                .bind(batch_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn lottery_standing(
        &self,
        batch_id: BatchId,
        citizen_id: CitizenId,
    ) -> Result<Option<LotteryStanding>, StorageError> {
        let entry: Option<(i64,)> =
            query_as("SELECT entered_at_us FROM lottery_entries WHERE batch_id = $1 AND citizen_id = $2")
                .bind(batch_id)
                .bind(citizen_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some((entered_at_us,)) = entry else { return Ok(None) };
        let voucher: Option<(VoucherId,)> =
            query_as("SELECT id FROM vouchers WHERE batch_id = $1 AND citizen_id = $2 ORDER BY id LIMIT 1")
                .bind(batch_id)
                .bind(citizen_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Some(LotteryStanding {
            entered_at: Timestamp::from_unix_us(entered_at_us),
            voucher_id: voucher.map(|(id,)| id),
        }))
    }

    async fn record_draw(
        &self,
        batch_id: BatchId,
        seed: &str,
        at: Timestamp,
        answer: &IdemRecord,
    ) -> Result<bool, WriteError> {
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        let done = query(
            "UPDATE batches SET lottery_seed = $1, drawn_at_us = $2 \
             WHERE id = $3 AND lottery_seed_sha256 IS NOT NULL AND drawn_at_us IS NULL",
        )
        .bind(seed)
        .bind(at.unix_us())
        .bind(batch_id)
        .execute(&mut tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        self.insert_answers(&mut tx, std::slice::from_ref(answer)).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn holdings(
        &self,
        batch_id: BatchId,
        season_id: SeasonId,
        month: i32,
        citizens: &[CitizenId],
    ) -> Result<HashMap<CitizenId, CitizenHoldings>, StorageError> {
        let mut holdings: HashMap<CitizenId, CitizenHoldings> =
            citizens.iter().map(|c| (*c, CitizenHoldings::default())).collect();
        for chunk in citizens.chunks(INSERT_CHUNK_ROWS) {
            let (slots, totals) = self.backend.holding_rows(batch_id, season_id, month, chunk).await?;
            for LiveSlotRow { citizen_id, slot } in slots {
                if let (Some(h), Ok(slot)) = (holdings.get_mut(&citizen_id), u32::try_from(slot)) {
                    h.slots.push(slot);
                }
            }
            for row in totals {
                if let Some(h) = holdings.get_mut(&row.citizen_id) {
                    if row.period == crate::domain::season::SEASON_PERIOD {
                        h.season_total_fen = row.claimed_fen;
                    } else {
                        h.month_total_fen = row.claimed_fen;
                    }
                }
            }
        }
        Ok(holdings)
    }

    async fn commit_claims(&self, commit: &ClaimCommit) -> Result<(), WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        if !commit.paying_cards.is_empty() {
            // Under the ledger lock, which a freeze takes too: a card frozen since the
            // writer read it refuses the group (the writer then replays it one by one).
            self.lock_head(&mut tx).await?;
            for card_id in &commit.paying_cards {
                let status: Option<(String,)> = query_as("SELECT status FROM cards WHERE id = $1")
                    .bind(*card_id)
                    .fetch_optional(&mut tx)
                    .await?;
                if status.is_none_or(|(s,)| s != crate::domain::card::CardStatus::Active.as_str()) {
                    return Err(WriteError::Refused(Refusal::Changed(format!(
                        "card {card_id} is no longer active"
                    ))));
                }
            }
        }
        if let Some(moved) = &commit.waitlist_move {
            Self::apply_waitlist_move(&mut tx, moved).await?;
        }
        let rows = ClaimRows {
            answers: &commit.answers,
            now_us: Timestamp::now().unix_us(),
            batch_claims: &commit.batch_claims,
            vouchers: &commit.vouchers,
        };
        if let Some(batch_id) = self.backend.write_claim_rows(&mut tx, &rows).await? {
            return Err(WriteError::Refused(Refusal::Changed(format!(
                "batch {batch_id} has fewer vouchers left"
            ))));
        }
        self.apply_season_totals(&mut tx, &commit.season_totals).await?;
        // A claim's entry is named after its voucher, inserted just above under its primary
        // key: no such entry can exist yet, so those references are not looked up.
        let inserted: HashSet<String> =
            commit.vouchers.iter().map(|v| crate::domain::entries::claim_reference(v.id)).collect();
        let opened = if commit.entries.is_empty() {
            HashMap::new()
        } else {
            self.append_known_new(&mut tx, &commit.entries, |e| inserted.contains(&e.reference)).await?.1
        };
        self.backend.notify_in(&mut tx, &commit.notices).await?;
        self.commit_and_cache(tx, opened).await?;
        self.backend.notify_committed(&commit.notices);
        Ok(())
    }

    async fn warm_claim_path(&self) -> Result<(), StorageError> {
        let connections = self.backend.writer_connections();
        // Every transaction begun before any runs, so that each holds a connection of its own.
        let mut transactions = Vec::new();
        for _ in 0..connections {
            transactions.push(self.begin_write().await?);
        }
        for mut tx in transactions {
            let head = self.lock_head(&mut tx).await?;
            self.backend.balance_rows(&mut tx, Vec::new()).await?;
            let nothing = ClaimRows {
                answers: &[],
                now_us: head.posted_at.unix_us(),
                batch_claims: &[],
                vouchers: &[],
            };
            self.backend.write_claim_rows(&mut tx, &nothing).await?;
            let unchanged = super::ledger::SealedRows {
                balances: Vec::new(),
                entries: Vec::new(),
                postings: Vec::new(),
                head,
            };
            self.backend.write_sealed(&mut tx, &unchanged).await?;
            tx.rollback().await?;
        }
        // The reads before a group, as many at once as there are connections.
        let nil = uuid::Uuid::nil();
        let (batch_id, season_id, citizen_id) =
            (BatchId::from_uuid(nil), SeasonId::from_uuid(nil), CitizenId::from_uuid(nil));
        let reads = (0..connections).map(|_| async move {
            self.backend.answer_rows(&[(String::new(), String::new())]).await?;
            self.backend.holding_rows(batch_id, season_id, 0, &[citizen_id]).await
        });
        for read in futures_util::future::join_all(reads).await {
            read?;
        }
        Ok(())
    }

    async fn due_vouchers(&self, now: Timestamp, limit: i64) -> Result<Vec<Voucher>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {VOUCHER_COLUMNS} FROM vouchers WHERE status = 'active' AND expires_at_us <= $1 ORDER BY expires_at_us LIMIT $2"
        ));
        let rows: Vec<VoucherRow> =
            query_as(sql).bind(now.unix_us()).bind(limit).fetch_all(&self.pool).await?;
        rows.into_iter().map(VoucherRow::into_voucher).collect()
    }

    async fn commit_expiries(&self, commit: &ExpiryCommit) -> Result<(), WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        for chunk in commit.voucher_ids.chunks(INSERT_CHUNK_ROWS) {
            let mut update = QueryBuilder::new("UPDATE vouchers SET status = 'expired', expired_at_us = ");
            update.push_bind(commit.expired_at.unix_us()).push(" WHERE status = 'active' AND id IN (");
            let mut list = update.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            update.push(")");
            let done = update.build().execute(&mut tx).await?;
            if done.rows_affected() != chunk.len() as u64 {
                return Err(WriteError::Refused(Refusal::Changed(
                    "a voucher changed state before it could expire".into(),
                )));
            }
        }
        for (batch_id, count) in &commit.batch_returns {
            query("UPDATE batches SET returned_count = returned_count + $1 WHERE id = $2")
                .bind(*count)
                .bind(*batch_id)
                .execute(&mut tx)
                .await?;
        }
        self.apply_season_totals(&mut tx, &commit.season_totals).await?;
        // Every row is ours now, then the head (a batch's close takes its row and
        // then the head too): a close that committed since the entries were planned
        // is seen here, and the sweep plans them again.
        if !commit.planned_reserves.is_empty() {
            self.lock_head(&mut tx).await?;
        }
        for (batch_id, planned) in &commit.planned_reserves {
            if Self::reserve_returned_in(&mut tx, *batch_id).await? != *planned {
                return Err(WriteError::Refused(Refusal::Changed(format!(
                    "batch {batch_id} closed while its expiries were planned"
                ))));
            }
        }
        let opened = self.post_in(&mut tx, &commit.entries).await?;
        self.backend.notify_in(&mut tx, &commit.notices).await?;
        self.commit_and_cache(tx, opened).await?;
        self.backend.notify_committed(&commit.notices);
        Ok(())
    }

    async fn batches_to_close(&self, now: Timestamp, limit: i64) -> Result<Vec<Batch>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE reserve_returned_at_us IS NULL AND claim_closes_at_us <= $1 \
             AND (lottery_seed_sha256 IS NULL OR drawn_at_us IS NOT NULL) \
             AND NOT (waitlist = 1 AND (waitlist_next_place IS NULL OR waitlist_next_place <= \
                 (SELECT COUNT(*) FROM waitlist_places p WHERE p.batch_id = batches.id)) \
                 AND EXISTS (SELECT 1 FROM seasons s WHERE s.id = batches.season_id AND s.ends_at_us > $1 \
                 AND s.closed_at_us IS NULL)) \
             ORDER BY claim_closes_at_us LIMIT $2"
        ));
        let rows: Vec<BatchRow> = query_as(sql).bind(now.unix_us()).bind(limit).fetch_all(&self.pool).await?;
        rows.into_iter().map(BatchRow::into_batch).collect()
    }

    async fn close_batch_reserve(
        &self,
        batch_id: BatchId,
        now: Timestamp,
        entry: Option<&NewEntry>,
    ) -> Result<(), WriteError> {
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        let season: Option<(SeasonId,)> = query_as(
            "UPDATE batches SET reserve_returned_at_us = $1 WHERE id = $2 AND reserve_returned_at_us IS NULL \
             RETURNING season_id",
        )
        .bind(now.unix_us())
        .bind(batch_id)
        .fetch_optional(&mut tx)
        .await?;
        let Some((season_id,)) = season else {
            return Err(WriteError::Refused(Refusal::Changed(format!(
                "batch {batch_id} was already closed"
            ))));
        };
        // The entry was made from balances read before this transaction: under the
        // head, the reserves must still hold exactly what it moves (a reversal or an
        // expiry may have credited one since), or the close would leave money in a
        // closed batch's reserve. The next sweep plans it again.
        self.lock_head(&mut tx).await?;
        let reserves: Vec<AddressBalanceRow> = query_as(
            "SELECT a.address, b.debits_fen, b.credits_fen FROM accounts a \
             JOIN account_balances b ON b.account_id = a.id WHERE a.address LIKE $1",
        )
        .bind(format!(
            "season:{}:batch:{}:funder:%:reserve",
            season_id.as_uuid().hyphenated(),
            batch_id.as_uuid().hyphenated()
        ))
        .fetch_all(&mut tx)
        .await?;
        // What each reserve holds now, against what the entry takes out of each.
        let held: HashMap<&str, i64> = reserves
            .iter()
            .map(|r| (r.address.as_str(), r.credits_fen - r.debits_fen))
            .filter(|(_, left)| *left != 0)
            .collect();
        let moved: HashMap<&str, i64> = entry
            .iter()
            .flat_map(|e| e.postings.iter())
            .filter(|p| p.side == crate::domain::ledger::Side::Debit)
            .map(|p| (p.account.address.as_str(), p.amount_fen))
            .collect();
        if held != moved {
            return Err(WriteError::Refused(Refusal::Changed(format!(
                "batch {batch_id}: its reserve changed while its close was planned"
            ))));
        }
        // A waitlist closes with nobody left to text: the phones still sealed (people never
        // reached, the season over) are erased with it.
        query(
            "UPDATE lottery_entries SET sealed_phone = NULL WHERE batch_id = $1 AND sealed_phone IS NOT NULL",
        )
        .bind(batch_id)
        .execute(&mut tx)
        .await?;
        let opened = match entry {
            Some(entry) => self.post_in(&mut tx, std::slice::from_ref(entry)).await?,
            None => HashMap::new(),
        };
        self.commit_and_cache(tx, opened).await?;
        Ok(())
    }
}
