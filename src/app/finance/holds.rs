//! Settlement holds (docs/settlement-holds.md): a merchant put on hold for a season has its
//! settlement lines held (payable -> held, not in the payout file) until finance releases them
//! (held -> settled, paid in the next payout) or rejects them with four eyes (held -> each
//! funder's pool; the note is what the merchant is told).
//!
//! A hold comes from a finance officer's hand ([`hold_merchant`] with [`HoldSource::Manual`]) or,
//! for automatic holds, from a cash-out score at or above the season's `hold_score_threshold`:
//! the scorer calls [`hold_by_score`], which holds only at or above the threshold.
//!
//! A finance officer who has checked the merchant lifts its hold ([`lift_hold`], with a note):
//! the next settlements pay the merchant; lines held before stay held until decided. After a
//! lift a score does not hold the merchant again for the season (a person decided); a hold by
//! hand puts it in force again.

use serde::Serialize;

use crate::app::error::AppError;
use crate::app::merchants::text_field;
use crate::domain::error_code::ErrorCode;
use crate::domain::finance::{HoldDecisionKind, HoldSource};
use crate::domain::ids::{MerchantId, SeasonId, SettlementId, StaffKeyId};
use crate::domain::season::Season;
use crate::domain::time::Timestamp;
use crate::storage::{
    HeldLineRecord, HoldDecision, HoldRecord, LiftHold, NewHold, Refusal, Storage, WriteError,
};

use super::yuan;

/// The longest reason or decision note, in characters.
pub const MAX_NOTE_CHARS: usize = 500;

/// A hold's reason or a decision's note as typed: 1 to 500 characters of plain text (422
/// `invalid_field`).
pub fn note(text: &str, what: &str) -> Result<String, AppError> {
    text_field(text.trim(), what, MAX_NOTE_CHARS)
}

fn refused(error: WriteError) -> AppError {
    match error {
        WriteError::Refused(Refusal::Code(code)) => match code {
            ErrorCode::SeasonNotFound => AppError::not_found(code, "no such season"),
            ErrorCode::MerchantNotFound => AppError::not_found(code, "no such merchant"),
            ErrorCode::HoldNotFound => {
                AppError::not_found(code, "no held line of this merchant in this settlement")
            }
            ErrorCode::HoldDecided => {
                AppError::conflict(code, "the held line was decided the other way already")
            }
            ErrorCode::RejectionNotProposed => AppError::conflict(
                code,
                "nobody proposed rejecting this line: propose it first (another person approves)",
            ),
            ErrorCode::SameApprover => AppError::forbidden(
                code,
                "a rejection needs a second person: the proposer, and whoever minted their key or \
                 whose key they minted, cannot approve it",
            ),
            other => AppError::internal(format!("an unexpected refusal: {other}")),
        },
        WriteError::Storage(error) => AppError::from(error),
        other => AppError::internal(other.to_string()),
    }
}

/// Puts `merchant_id` on hold for the season: its settlement lines from the next settlement on
/// are held. A merchant already on hold keeps its first hold (answered as it is). A lifted hold
/// is put in force again by hand (the new reason, the lift cleared); by score it is answered as
/// it is, lifted.
pub async fn hold_merchant(
    store: &dyn Storage,
    season_id: SeasonId,
    merchant_id: MerchantId,
    source: HoldSource,
    reason: &str,
    held_by: Option<StaffKeyId>,
    at: Timestamp,
) -> Result<HoldRecord, AppError> {
    let reason = note(reason, "reason")?;
    let hold = NewHold { season_id, merchant_id, source, reason, held_by, at };
    let record = store.put_hold(&hold).await.map_err(refused)?;
    tracing::info!(season = %season_id, merchant = %merchant_id, source = source.as_str(),
        staff_key = ?held_by, "merchant settlement on hold");
    Ok(record)
}

/// The scorer's call: holds the merchant if `score` reaches the season's threshold (none set:
/// never). Answers the hold, or `None` when the score stays below or a finance officer lifted
/// the merchant's hold for the season (a person decided: a score does not hold it again).
pub async fn hold_by_score(
    store: &dyn Storage,
    season: &Season,
    merchant_id: MerchantId,
    score: u8,
    reasons: &str,
    at: Timestamp,
) -> Result<Option<HoldRecord>, AppError> {
    match season.hold_score_threshold {
        Some(threshold) if score >= threshold => {
            let reason = format!("score {score} >= {threshold}: {reasons}");
            let reason: String = reason.chars().take(MAX_NOTE_CHARS).collect();
            let hold = hold_merchant(
                store,
                season.id,
                merchant_id,
                HoldSource::Score(score.min(100)),
                &reason,
                None,
                at,
            )
            .await?;
            Ok(hold.in_force().then_some(hold))
        }
        _ => Ok(None),
    }
}

/// Lifts the merchant's hold for the season (a finance officer, with a note): the next
/// settlements pay the merchant normally; its lines held already stay held until released or
/// rejected. A lifted hold answers as it is; no hold is 404 `hold_not_found`.
pub async fn lift_hold(
    store: &dyn Storage,
    season_id: SeasonId,
    merchant_id: MerchantId,
    by: StaffKeyId,
    note_text: &str,
    at: Timestamp,
) -> Result<HoldRecord, AppError> {
    let note = note(note_text, "note")?;
    let lift = LiftHold { season_id, merchant_id, by, note, at };
    let record = store.lift_hold(&lift).await.map_err(|error| match error {
        WriteError::Refused(Refusal::Code(ErrorCode::HoldNotFound)) => {
            AppError::not_found(ErrorCode::HoldNotFound, "this merchant is not on hold for this season")
        }
        other => refused(other),
    })?;
    tracing::info!(season = %season_id, merchant = %merchant_id, staff_key = %by, "merchant settlement hold lifted");
    Ok(record)
}

/// Releases a held line (paid in the next payout), proposes its rejection, or approves a
/// rejection another person proposed; the same decision again answers the line as it is.
pub async fn decide(
    store: &dyn Storage,
    settlement_id: SettlementId,
    merchant_id: MerchantId,
    kind: HoldDecisionKind,
    by: StaffKeyId,
    note_text: &str,
    at: Timestamp,
) -> Result<HeldLineRecord, AppError> {
    let note = match kind {
        // What the merchant is told, and why finance let it through: both are required.
        HoldDecisionKind::Release | HoldDecisionKind::ProposeReject => note(note_text, "note")?,
        HoldDecisionKind::ApproveReject if note_text.trim().is_empty() => String::new(),
        HoldDecisionKind::ApproveReject => note(note_text, "note")?,
    };
    let decision = HoldDecision { settlement_id, merchant_id, kind, by, note, at };
    let line = store.decide_held_line(&decision).await.map_err(refused)?;
    tracing::info!(settlement = %settlement_id, merchant = %merchant_id, decision = ?kind, staff_key = %by,
        status = line.status.as_str(), "held settlement line decided");
    Ok(line)
}

/// A merchant on hold, as the API answers it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct HoldAnswer {
    pub season_id: SeasonId,
    pub merchant_id: MerchantId,
    pub merchant_name: String,
    /// `manual` or `score`.
    pub source: &'static str,
    pub score: Option<u8>,
    pub reason: String,
    pub held_by: Option<StaffKeyId>,
    #[schema(value_type = String, format = DateTime)]
    pub held_at: Timestamp,
    /// False once lifted: the next settlements pay the merchant.
    pub in_force: bool,
    /// The staff key that lifted it.
    pub lifted_by: Option<StaffKeyId>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub lifted_at: Option<Timestamp>,
    /// Why it was lifted (what finance checked).
    pub lift_note: Option<String>,
}

impl HoldAnswer {
    pub fn of(h: &HoldRecord) -> HoldAnswer {
        HoldAnswer {
            season_id: h.season_id,
            merchant_id: h.merchant_id,
            merchant_name: h.merchant_name.clone(),
            source: h.source.as_str(),
            score: h.source.score(),
            reason: h.reason.clone(),
            held_by: h.held_by,
            held_at: h.held_at,
            in_force: h.in_force(),
            lifted_by: h.lift.as_ref().map(|l| l.by),
            lifted_at: h.lift.as_ref().map(|l| l.at),
            lift_note: h.lift.as_ref().map(|l| l.note.clone()),
        }
    }
}

/// A held settlement line and what finance decided, as the API answers it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct HeldLineAnswer {
    pub settlement_id: SettlementId,
    pub merchant_id: MerchantId,
    pub merchant_name: String,
    pub merchant_city: String,
    #[schema(value_type = String, format = DateTime)]
    pub settled_at: Timestamp,
    pub redemptions: i64,
    pub amount: String,
    /// `held`, `released` or `rejected`.
    pub status: &'static str,
    /// The hold's reason.
    pub reason: String,
    pub release_note: Option<String>,
    pub released_by: Option<StaffKeyId>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub released_at: Option<Timestamp>,
    /// The settlement whose payout pays the released line (none until one completes).
    pub paid_in_settlement_id: Option<SettlementId>,
    pub paid: bool,
    /// Why it is (to be) rejected: what the merchant is told.
    pub reject_note: Option<String>,
    pub reject_proposed_by: Option<StaffKeyId>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub reject_proposed_at: Option<Timestamp>,
    pub rejected_by: Option<StaffKeyId>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub rejected_at: Option<Timestamp>,
}

impl HeldLineAnswer {
    pub fn of(l: &HeldLineRecord) -> HeldLineAnswer {
        HeldLineAnswer {
            settlement_id: l.settlement_id,
            merchant_id: l.merchant_id,
            merchant_name: l.merchant_name.clone(),
            merchant_city: l.merchant_city.clone(),
            settled_at: l.settled_at,
            redemptions: l.redemption_count,
            amount: yuan(l.amount_fen),
            status: l.status.as_str(),
            reason: l.reason.clone(),
            release_note: l.release_note.clone(),
            released_by: l.released_by,
            released_at: l.released_at,
            paid_in_settlement_id: l.paid_in_settlement_id,
            paid: l.paid,
            reject_note: l.reject_note.clone(),
            reject_proposed_by: l.reject_proposed_by,
            reject_proposed_at: l.reject_proposed_at,
            rejected_by: l.rejected_by,
            rejected_at: l.rejected_at,
        }
    }
}
