//! SQL for settlement holds (docs/settlement-holds.md): a merchant put on hold for a season, its
//! settlement lines written `held` (see `settle_merchants`), and finance's decisions on them:
//! release (held -> settled, paid in the next payout) and rejection (held -> the funders' pools),
//! the rejection proposed by one person and approved by another under the ledger lock.

use std::collections::BTreeMap;

use crate::domain::entries;
use crate::domain::error_code::ErrorCode;
use crate::domain::finance::{
    HoldDecisionKind, HoldOutcome, HoldRefused, HoldSource, HoldStatus, decide_hold,
};
use crate::domain::ids::{MerchantId, SeasonId, SettlementId, StaffKeyId};
use crate::domain::ledger::NewEntry;
use crate::domain::money::Fen;
use crate::domain::region::RegionCode;
use crate::domain::time::Timestamp;
use crate::storage::db::{Exec, QueryBuilder, Tx, query, query_as};
use crate::storage::finance::funder_parts;
use crate::storage::{Refusal, SqlStore, StorageError, WriteError};

/// A merchant on hold for a season.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRecord {
    pub season_id: SeasonId,
    pub merchant_id: MerchantId,
    pub merchant_name: String,
    pub source: HoldSource,
    pub reason: String,
    /// The staff key that held it by hand; none for a hold by score.
    pub held_by: Option<StaffKeyId>,
    pub held_at: Timestamp,
    /// Lifted by a finance officer: not in force (the next settlements pay the merchant).
    pub lift: Option<HoldLift>,
}

impl HoldRecord {
    /// Whether settlements hold the merchant's lines (not lifted).
    pub fn in_force(&self) -> bool {
        self.lift.is_none()
    }
}

/// Who lifted a hold, when, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldLift {
    pub by: StaffKeyId,
    pub at: Timestamp,
    pub note: String,
}

/// A lift, as asked.
#[derive(Clone, Debug)]
pub struct LiftHold {
    pub season_id: SeasonId,
    pub merchant_id: MerchantId,
    pub by: StaffKeyId,
    pub note: String,
    pub at: Timestamp,
}

/// A hold to put: by hand (`held_by`) or by score.
#[derive(Clone, Debug)]
pub struct NewHold {
    pub season_id: SeasonId,
    pub merchant_id: MerchantId,
    pub source: HoldSource,
    pub reason: String,
    pub held_by: Option<StaffKeyId>,
    pub at: Timestamp,
}

/// A settlement line that was held, and what finance decided about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLineRecord {
    pub settlement_id: SettlementId,
    pub season_id: SeasonId,
    /// When the settlement that held it was made.
    pub settled_at: Timestamp,
    pub merchant_id: MerchantId,
    pub merchant_name: String,
    pub merchant_city: String,
    pub redemption_count: i64,
    pub amount_fen: i64,
    pub funders: Vec<(RegionCode, Fen)>,
    pub status: HoldStatus,
    /// The hold's reason when the line was held.
    pub reason: String,
    pub release_note: Option<String>,
    pub released_by: Option<StaffKeyId>,
    pub released_at: Option<Timestamp>,
    /// The settlement whose payout pays it, once released and another settlement completed.
    pub paid_in_settlement_id: Option<SettlementId>,
    /// Whether that payout was recorded paid.
    pub paid: bool,
    /// Why it is (to be) rejected: what the merchant is told.
    pub reject_note: Option<String>,
    pub reject_proposed_by: Option<StaffKeyId>,
    pub reject_proposed_at: Option<Timestamp>,
    pub rejected_by: Option<StaffKeyId>,
    pub rejected_at: Option<Timestamp>,
}

impl HeldLineRecord {
    pub fn by_funder(&self) -> BTreeMap<RegionCode, i64> {
        self.funders.iter().map(|(f, a)| (*f, a.as_fen())).collect()
    }
}

/// A decision on a held line, as asked.
#[derive(Clone, Debug)]
pub struct HoldDecision {
    pub settlement_id: SettlementId,
    pub merchant_id: MerchantId,
    pub kind: HoldDecisionKind,
    pub by: StaffKeyId,
    pub note: String,
    pub at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct HoldRow {
    season_id: SeasonId,
    merchant_id: MerchantId,
    merchant_name: String,
    source: String,
    score: Option<i32>,
    reason: String,
    held_by: Option<StaffKeyId>,
    held_at_us: i64,
    lifted_at_us: Option<i64>,
    lifted_by: Option<StaffKeyId>,
    lift_note: Option<String>,
}

impl HoldRow {
    fn into_record(self) -> Result<HoldRecord, StorageError> {
        let source = match (self.source.as_str(), self.score) {
            ("manual", None) => HoldSource::Manual,
            ("score", Some(score)) => HoldSource::Score(
                u8::try_from(score).map_err(|_| StorageError::Corrupt("a hold's score".into()))?,
            ),
            _ => return Err(StorageError::Corrupt(format!("hold of merchant {}", self.merchant_id))),
        };
        let lift = match (self.lifted_at_us, self.lifted_by, self.lift_note) {
            (None, None, None) => None,
            (Some(at), Some(by), Some(note)) => Some(HoldLift { by, at: Timestamp::from_unix_us(at), note }),
            _ => {
                return Err(StorageError::Corrupt(format!(
                    "lift of the hold of merchant {}",
                    self.merchant_id
                )));
            }
        };
        Ok(HoldRecord {
            season_id: self.season_id,
            merchant_id: self.merchant_id,
            merchant_name: self.merchant_name,
            source,
            reason: self.reason,
            held_by: self.held_by,
            held_at: Timestamp::from_unix_us(self.held_at_us),
            lift,
        })
    }
}

const HOLD_SELECT: &str = "SELECT h.season_id, h.merchant_id, m.name AS merchant_name, h.source, h.score, h.reason, \
     h.held_by, h.held_at_us, h.lifted_at_us, h.lifted_by, h.lift_note FROM merchant_holds h JOIN merchants m ON m.id = h.merchant_id";

#[derive(sqlx::FromRow)]
struct HeldLineRow {
    settlement_id: SettlementId,
    season_id: SeasonId,
    settled_at_us: i64,
    merchant_id: MerchantId,
    merchant_name: String,
    merchant_city: String,
    redemption_count: i64,
    amount_fen: i64,
    funders: String,
    hold_status: String,
    hold_reason: Option<String>,
    release_note: Option<String>,
    released_by: Option<StaffKeyId>,
    released_at_us: Option<i64>,
    paid_in_settlement_id: Option<SettlementId>,
    paid_at_us: Option<i64>,
    reject_note: Option<String>,
    reject_proposed_by: Option<StaffKeyId>,
    reject_proposed_at_us: Option<i64>,
    rejected_by: Option<StaffKeyId>,
    rejected_at_us: Option<i64>,
}

impl HeldLineRow {
    fn into_record(self) -> Result<HeldLineRecord, StorageError> {
        let place = format!("settlement line {}/{}", self.settlement_id, self.merchant_id);
        let at = |us: Option<i64>| us.map(Timestamp::from_unix_us);
        Ok(HeldLineRecord {
            settlement_id: self.settlement_id,
            season_id: self.season_id,
            settled_at: Timestamp::from_unix_us(self.settled_at_us),
            merchant_id: self.merchant_id,
            merchant_name: self.merchant_name,
            merchant_city: self.merchant_city,
            redemption_count: self.redemption_count,
            amount_fen: self.amount_fen,
            funders: funder_parts(&self.funders, &place)?,
            status: HoldStatus::parse(&self.hold_status)
                .ok_or_else(|| StorageError::Corrupt(format!("{place}: hold status")))?,
            reason: self.hold_reason.unwrap_or_default(),
            release_note: self.release_note,
            released_by: self.released_by,
            released_at: at(self.released_at_us),
            paid_in_settlement_id: self.paid_in_settlement_id,
            paid: self.paid_at_us.is_some(),
            reject_note: self.reject_note,
            reject_proposed_by: self.reject_proposed_by,
            reject_proposed_at: at(self.reject_proposed_at_us),
            rejected_by: self.rejected_by,
            rejected_at: at(self.rejected_at_us),
        })
    }
}

const HELD_LINE_SELECT: &str = "SELECT l.settlement_id, s.season_id, s.created_at_us AS settled_at_us, l.merchant_id, \
     m.name AS merchant_name, m.city AS merchant_city, l.redemption_count, l.amount_fen, l.funders, l.hold_status, \
     l.hold_reason, l.release_note, l.released_by, l.released_at_us, l.paid_in_settlement_id, p.paid_at_us, \
     l.reject_note, l.reject_proposed_by, l.reject_proposed_at_us, l.rejected_by, l.rejected_at_us \
     FROM settlement_lines l JOIN settlements s ON s.id = l.settlement_id JOIN merchants m ON m.id = l.merchant_id \
     LEFT JOIN settlements p ON p.id = l.paid_in_settlement_id";

/// The most held lines one season lists (a hold is a handful of merchants, not thousands).
pub const MAX_HELD_LINES: i64 = 10_000;

impl SqlStore {
    /// Sets (or clears) the season's hold threshold; false if there is no such season.
    pub(crate) async fn set_hold_threshold_row(
        &self,
        season_id: SeasonId,
        threshold: Option<u8>,
    ) -> Result<bool, StorageError> {
        let done = query("UPDATE seasons SET hold_score_threshold = $1 WHERE id = $2")
            .bind(threshold.map(i32::from))
            .bind(season_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts the merchant on hold for the season, or answers the hold it is already on. A lifted
    /// hold is put in force again by hand only (the row takes the new hold, the lift cleared); a
    /// score answers the lifted hold as it is.
    pub(crate) async fn put_hold_row(&self, hold: &NewHold) -> Result<HoldRecord, WriteError> {
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        let season: Option<(SeasonId,)> = query_as("SELECT id FROM seasons WHERE id = $1")
            .bind(hold.season_id)
            .fetch_optional(&mut tx)
            .await?;
        if season.is_none() {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::SeasonNotFound)));
        }
        let merchant: Option<(MerchantId,)> = query_as("SELECT id FROM merchants WHERE id = $1")
            .bind(hold.merchant_id)
            .fetch_optional(&mut tx)
            .await?;
        if merchant.is_none() {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::MerchantNotFound)));
        }
        let on_conflict = match hold.source {
            HoldSource::Manual => {
                "DO UPDATE SET source = excluded.source, score = excluded.score, reason = excluded.reason, \
                 held_by = excluded.held_by, held_at_us = excluded.held_at_us, lifted_at_us = NULL, \
                 lifted_by = NULL, lift_note = NULL WHERE merchant_holds.lifted_at_us IS NOT NULL"
            }
            HoldSource::Score(_) => "DO NOTHING",
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO merchant_holds (season_id, merchant_id, source, score, reason, held_by, held_at_us) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (season_id, merchant_id) {on_conflict}"
        ));
        query(sql)
            .bind(hold.season_id)
            .bind(hold.merchant_id)
            .bind(hold.source.as_str())
            .bind(hold.source.score().map(i32::from))
            .bind(hold.reason.clone())
            .bind(hold.held_by)
            .bind(hold.at.unix_us())
            .execute(&mut tx)
            .await?;
        let record = Self::hold_in(&mut tx, hold.season_id, hold.merchant_id).await?;
        tx.commit().await?;
        record.ok_or_else(|| WriteError::Storage(StorageError::Corrupt("a hold just written".into())))
    }

    /// Lifts the merchant's hold for the season; a lifted hold answers as it is. Refusal:
    /// `hold_not_found` (no hold).
    pub(crate) async fn lift_hold_row(&self, lift: &LiftHold) -> Result<HoldRecord, WriteError> {
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        query(
            "UPDATE merchant_holds SET lifted_at_us = $3, lifted_by = $4, lift_note = $5 \
             WHERE season_id = $1 AND merchant_id = $2 AND lifted_at_us IS NULL",
        )
        .bind(lift.season_id)
        .bind(lift.merchant_id)
        .bind(lift.at.unix_us())
        .bind(lift.by)
        .bind(lift.note.clone())
        .execute(&mut tx)
        .await?;
        let Some(record) = Self::hold_in(&mut tx, lift.season_id, lift.merchant_id).await? else {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::HoldNotFound)));
        };
        tx.commit().await?;
        Ok(record)
    }

    async fn hold_in<'e>(
        executor: impl Into<Exec<'e>>,
        season_id: SeasonId,
        merchant_id: MerchantId,
    ) -> Result<Option<HoldRecord>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!("{HOLD_SELECT} WHERE h.season_id = $1 AND h.merchant_id = $2"));
        let row: Option<HoldRow> =
            query_as(sql).bind(season_id).bind(merchant_id).fetch_optional(executor).await?;
        row.map(HoldRow::into_record).transpose()
    }

    /// The season's holds, of `city`'s merchants only if given ('' is every city).
    pub(crate) async fn season_hold_rows(
        &self,
        season_id: SeasonId,
        city: Option<RegionCode>,
    ) -> Result<Vec<HoldRecord>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{HOLD_SELECT} WHERE h.season_id = $1 AND ($2 = '' OR m.city = $2) \
             ORDER BY h.held_at_us, h.merchant_id LIMIT {MAX_HELD_LINES}"
        ));
        let city = city.map(|c| c.to_string()).unwrap_or_default();
        let rows: Vec<HoldRow> = query_as(sql).bind(season_id).bind(city).fetch_all(&self.pool).await?;
        rows.into_iter().map(HoldRow::into_record).collect()
    }

    /// Of these merchants, those on hold for the season (a hold in force: not lifted), with the
    /// hold's reason.
    pub(crate) async fn held_merchants_in(
        tx: &mut Tx,
        season_id: SeasonId,
        merchants: &[MerchantId],
    ) -> Result<BTreeMap<MerchantId, String>, StorageError> {
        let mut held = BTreeMap::new();
        for chunk in merchants.chunks(500) {
            let mut q = QueryBuilder::new(
                "SELECT merchant_id, reason FROM merchant_holds WHERE lifted_at_us IS NULL AND season_id = ",
            );
            q.push_bind(season_id).push(" AND merchant_id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            let rows: Vec<(MerchantId, String)> = q.build_query_as().fetch_all(&mut *tx).await?;
            held.extend(rows);
        }
        Ok(held)
    }

    /// The season's lines that were ever held, oldest settlement first.
    pub(crate) async fn held_line_rows(
        &self,
        season_id: SeasonId,
    ) -> Result<Vec<HeldLineRecord>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{HELD_LINE_SELECT} WHERE s.season_id = $1 AND l.hold_status <> 'none' \
             ORDER BY s.created_at_us, s.id, m.name, l.merchant_id LIMIT {MAX_HELD_LINES}"
        ));
        let rows: Vec<HeldLineRow> = query_as(sql).bind(season_id).fetch_all(&self.pool).await?;
        rows.into_iter().map(HeldLineRow::into_record).collect()
    }

    async fn held_line_in<'e>(
        executor: impl Into<Exec<'e>>,
        settlement_id: SettlementId,
        merchant_id: MerchantId,
    ) -> Result<Option<HeldLineRecord>, StorageError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "{HELD_LINE_SELECT} WHERE l.settlement_id = $1 AND l.merchant_id = $2"
        ));
        let row: Option<HeldLineRow> =
            query_as(sql).bind(settlement_id).bind(merchant_id).fetch_optional(executor).await?;
        row.map(HeldLineRow::into_record).transpose()
    }

    /// A settlement completing takes up the season's lines released since: its payout pays them.
    /// Returns how many and their total, from the rows it marked (a release committed meanwhile
    /// is either marked here, and counted, or left for the next settlement).
    pub(crate) async fn take_up_released(
        tx: &mut Tx,
        season_id: SeasonId,
        settlement_id: SettlementId,
    ) -> Result<(i64, i64), StorageError> {
        let taken: Vec<(i64,)> = query_as(
            "UPDATE settlement_lines SET paid_in_settlement_id = $1 WHERE hold_status = 'released' \
             AND paid_in_settlement_id IS NULL AND settlement_id IN (SELECT id FROM settlements WHERE season_id = $2) \
             RETURNING amount_fen",
        )
        .bind(settlement_id)
        .bind(season_id)
        .fetch_all(&mut *tx)
        .await?;
        Ok((taken.len() as i64, taken.iter().map(|(fen,)| fen).sum()))
    }

    /// Whether the season has released lines no payout has taken up yet.
    pub(crate) async fn released_waiting(tx: &mut Tx, season_id: SeasonId) -> Result<bool, StorageError> {
        let found: Option<(i64,)> = query_as(
            "SELECT CAST(1 AS BIGINT) FROM settlement_lines l JOIN settlements s ON s.id = l.settlement_id \
             WHERE s.season_id = $1 AND l.hold_status = 'released' AND l.paid_in_settlement_id IS NULL LIMIT 1",
        )
        .bind(season_id)
        .fetch_optional(&mut *tx)
        .await?;
        Ok(found.is_some())
    }

    /// Records a decision on a held line under the ledger lock: a release or an approved
    /// rejection posts its entry in the same transaction; the same decision again answers the
    /// line as it is.
    pub(crate) async fn decide_held_line_row(
        &self,
        decision: &HoldDecision,
    ) -> Result<HeldLineRecord, WriteError> {
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        self.lock_head(&mut tx).await?;
        let Some(line) = Self::held_line_in(&mut tx, decision.settlement_id, decision.merchant_id).await?
        else {
            return Err(WriteError::Refused(Refusal::Code(ErrorCode::HoldNotFound)));
        };
        let related = match (decision.kind, line.reject_proposed_by) {
            (HoldDecisionKind::ApproveReject, Some(proposer)) => {
                let decider = Self::key_lineage(&mut tx, decision.by).await?;
                let proposer = Self::key_lineage(&mut tx, proposer).await?;
                decider.may_share_holder(&proposer)
            }
            _ => false,
        };
        let outcome = decide_hold(line.status, line.reject_proposed_by.is_some(), decision.kind, related)
            .map_err(|refused| {
                WriteError::Refused(Refusal::Code(match refused {
                    HoldRefused::NotHeld => ErrorCode::HoldNotFound,
                    HoldRefused::Decided => ErrorCode::HoldDecided,
                    HoldRefused::NotProposed => ErrorCode::RejectionNotProposed,
                    HoldRefused::SameApprover => ErrorCode::SameApprover,
                }))
            })?;
        if outcome == HoldOutcome::AlreadyDone {
            return Ok(line);
        }
        let (season, merchant, settlement) = (line.season_id, line.merchant_id, line.settlement_id);
        let by_funder = line.by_funder();
        let key = |q: crate::storage::db::Query| q.bind(decision.settlement_id).bind(decision.merchant_id);
        let mut entries: Vec<NewEntry> = Vec::new();
        match decision.kind {
            HoldDecisionKind::Release => {
                key(query(
                    "UPDATE settlement_lines SET hold_status = 'released', release_note = $3, released_by = $4, \
                     released_at_us = $5 WHERE settlement_id = $1 AND merchant_id = $2",
                ))
                .bind(decision.note.clone())
                .bind(decision.by)
                .bind(decision.at.unix_us())
                .execute(&mut tx)
                .await?;
                entries.push(entries::hold_release_entry(season, merchant, settlement, &by_funder));
            }
            HoldDecisionKind::ProposeReject => {
                key(query(
                    "UPDATE settlement_lines SET reject_note = $3, reject_proposed_by = $4, \
                     reject_proposed_at_us = $5 WHERE settlement_id = $1 AND merchant_id = $2",
                ))
                .bind(decision.note.clone())
                .bind(decision.by)
                .bind(decision.at.unix_us())
                .execute(&mut tx)
                .await?;
            }
            HoldDecisionKind::ApproveReject => {
                key(query(
                    "UPDATE settlement_lines SET hold_status = 'rejected', rejected_by = $3, rejected_at_us = $4 \
                     WHERE settlement_id = $1 AND merchant_id = $2",
                ))
                .bind(decision.by)
                .bind(decision.at.unix_us())
                .execute(&mut tx)
                .await?;
                entries.push(entries::hold_reject_entry(season, merchant, settlement, &by_funder));
            }
        }
        let decided = Self::held_line_in(&mut tx, decision.settlement_id, decision.merchant_id)
            .await?
            .ok_or_else(|| WriteError::Storage(StorageError::Corrupt("a held line just decided".into())))?;
        let opened = self.post_in(&mut tx, &entries).await?;
        self.commit_and_cache(tx, opened).await?;
        Ok(decided)
    }
}
