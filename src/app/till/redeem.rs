//! A redemption and its reversal, decided: the scanned token's checks, the voucher's checks in
//! their order (cheapest first, each with its own code), the voucher's basis after a member
//! discount, the split between the funders, and the rows, entry and answer to commit.
//!
//! Order of application when a benefit card and a voucher meet on one order: the merchant's
//! member discount applies first, then the government voucher on what remains
//! ([docs/till.md](../../../docs/till.md)).

use wenhui_merchant_sdk::token::{QrToken, TokenError, TokenKind, TokenPayload};
use wenhui_merchant_sdk::wire::{FunderShare, Quote, QuoteTerms, Redemption, Reversal};

use super::ttl_cache::TtlCache;
use crate::app::coalesce::Coalescer;
use crate::app::error::{AppError, Kind};
use crate::app::qr::QrKeys;
use crate::domain::entries::{AfterReversal, FunderPart, funder_parts, redemption_entry, reversal_entry};
use crate::domain::error_code::ErrorCode;
use crate::domain::funding::VoucherTerms;
use crate::domain::ids::{BatchId, MerchantId, RedemptionId, ReversalId, TerminalId, VoucherId};
use crate::domain::merchant::Merchant;
use crate::domain::money::Fen;
use crate::domain::region::RegionLevel;
use crate::domain::season::{Batch, Season, SeasonStatus, Voucher, VoucherStatus, order_slot};
use crate::domain::time::Timestamp;
use crate::storage::{
    CardPaymentRecord, IdemRecord, NewRedemption, NewReversal, RedemptionRecord, SeasonTotalDelta, Storage,
};

/// A wire answer as the JSON text the service sends and stores.
pub fn answer_text(answer: &impl serde::Serialize) -> Result<String, AppError> {
    serde_json::to_string(answer)
        .map_err(|error| AppError::internal(format!("an answer did not serialise: {error}")))
}

/// What a redemption will write, once every check has passed.
pub struct Plan {
    pub voucher: Voucher,
    pub batch: Batch,
    pub season: Season,
    pub discount: Fen,
    /// (funder, value part, discount part)
    pub parts: Vec<FunderPart>,
}

/// The funder parts a redemption stores and answers: each funder's share of the discount (a
/// share of 0.00 is left out).
fn funder_shares(plan: &Plan) -> Vec<FunderShare> {
    let parts = plan.parts.iter().filter(|(_, _, discount)| !discount.is_zero());
    parts
        .map(|(funder, _, discount)| FunderShare { funder: funder.to_string(), amount: discount.to_string() })
        .collect()
}

/// A QR token refused: 410 `qr_expired` when only its time has passed, else `qr_invalid`.
pub fn token_error(error: TokenError) -> AppError {
    match error {
        TokenError::Expired(_) => AppError::refused(Kind::Gone, ErrorCode::QrExpired, error.to_string()),
        other => AppError::invalid(ErrorCode::QrInvalid, other.to_string()),
    }
}

/// A scanned QR token: its form first, then its signature and expiry against the published
/// keys at `now`.
pub async fn verified_token(keys: &QrKeys, qr: &str, now: Timestamp) -> Result<TokenPayload, AppError> {
    let token = QrToken::parse(qr).map_err(token_error)?;
    let ring = keys.ring().await?;
    Ok(ring.verify(&token, now.unix_us().div_euclid(1_000_000)).map_err(token_error)?.clone())
}

/// 409 `qr_replayed`.
pub fn qr_replayed() -> AppError {
    AppError::conflict(ErrorCode::QrReplayed, "this QR code was already used; refresh it on the phone")
}

/// The reads a redemption's checks make: the store, the till path's cache of batches and
/// seasons and its coalesced voucher reads, and the time of the request.
pub struct Reads<'a> {
    pub store: &'a dyn Storage,
    pub batches: &'a TtlCache<BatchId, (Batch, Season)>,
    pub vouchers: &'a Coalescer<VoucherId, Option<Voucher>>,
    pub now: Timestamp,
}

impl Reads<'_> {
    /// The scanned QR token, verified, and the voucher it names: the first of a redemption's
    /// token checks (form and signature, expiry, kind), each with its own code.
    pub async fn scanned_voucher(
        &self,
        keys: &QrKeys,
        qr: &str,
    ) -> Result<(TokenPayload, Voucher), AppError> {
        let payload = verified_token(keys, qr, self.now).await?;
        if payload.kind != TokenKind::Voucher {
            return Err(AppError::invalid(ErrorCode::QrInvalid, "this is not a voucher code"));
        }
        let voucher = self.vouchers.load(payload.subject.into()).await?;
        let voucher =
            voucher.ok_or_else(|| AppError::not_found(ErrorCode::VoucherNotFound, "no such voucher"))?;
        Ok((payload, voucher))
    }

    /// The rest of the checks on a scanned voucher, cheapest first, each with its own code, and
    /// the discount with its split between the funders; with the token's nonce to spend.
    pub async fn plan(
        &self,
        merchant: &Merchant,
        scanned: (TokenPayload, Voucher),
        basis: Fen,
    ) -> Result<(Plan, Vec<u8>), AppError> {
        let (payload, voucher) = scanned;
        let status = voucher.status_at(self.now);
        if status != VoucherStatus::Active {
            // A spent token is reported as such; the group re-checks the nonce under the lock.
            if self.store.qr_nonce_used(&payload.nonce).await? {
                return Err(qr_replayed());
            }
            if self.batch_and_season(&voucher).await?.1.closed_at.is_some() {
                return Err(season_closed());
            }
            return Err(not_redeemable(status.as_str()));
        }
        let (batch, season) = self.batch_and_season(&voucher).await?;
        if season.status_at(self.now) != SeasonStatus::Open {
            return Err(AppError::conflict(ErrorCode::SeasonClosed, "the season is not open"));
        }
        merchant.eligible_for(&batch).map_err(|m| AppError::forbidden(ErrorCode::MerchantNotEligible, m))?;
        let ceiling = season.subsidy_ceilings.percent_for(merchant.category);
        let discount = batch
            .terms
            .discount_within(basis, ceiling)
            .map_err(|e| AppError::invalid(ErrorCode::BelowMinSpend, e.to_string()))?;
        if discount.is_zero() {
            return Err(AppError::invalid(
                ErrorCode::BelowMinSpend,
                "the order is too small for any discount",
            ));
        }
        let parts = funder_parts(&batch, voucher.value, discount);
        Ok((Plan { voucher, batch, season, discount, parts }, payload.nonce.to_vec()))
    }

    /// The voucher's batch and season, from a short-lived cache (they change rarely; the group
    /// commit re-checks everything that matters for money under the ledger lock).
    async fn batch_and_season(&self, voucher: &Voucher) -> Result<(Batch, Season), AppError> {
        if let Some(found) = self.batches.get(&voucher.batch_id) {
            return Ok(found);
        }
        let missing = || AppError::internal("a voucher's batch or season is missing");
        let batch = self.store.batch(voucher.batch_id).await?.ok_or_else(missing)?;
        let season = self.store.season(voucher.season_id).await?.ok_or_else(missing)?;
        self.batches.insert(voucher.batch_id, (batch.clone(), season.clone()));
        Ok((batch, season))
    }
}

/// 409 `season_closed`, for a redemption or a reversal.
pub fn season_closed() -> AppError {
    AppError::conflict(ErrorCode::SeasonClosed, "the season is closed: no more redemptions or reversals")
}

/// 409 `voucher_not_redeemable`, the voucher being in `state`.
pub fn not_redeemable(state: &str) -> AppError {
    AppError::conflict(ErrorCode::VoucherNotRedeemable, format!("the voucher is {state}"))
}

/// The amounts of an order as priced before the voucher: what was asked, what the voucher
/// applies to, and the card payment that set the difference, if any.
pub struct Priced {
    pub order_amount: Fen,
    pub basis: Fen,
    pub member_discount: Option<Fen>,
    pub card_payment: Option<CardPaymentRecord>,
}

/// What the voucher applies to: the order after the member discount of a card payment on the
/// same order (and that discount), or the whole order. Refused when the card payment was for
/// another amount, or when nothing is left to pay.
pub fn priced(order_amount: Fen, card_payment: Option<CardPaymentRecord>) -> Result<Priced, AppError> {
    let (basis, member_discount) = match &card_payment {
        None => (order_amount, None),
        Some(paid) if paid.order_amount_fen != order_amount.as_fen() => {
            return Err(AppError::conflict(
                ErrorCode::OrderAmountMismatch,
                format!(
                    "a card payment on this order was for {}; send the same order_amount",
                    Fen::new(paid.order_amount_fen).map(|f| f.to_string()).unwrap_or_default()
                ),
            ));
        }
        Some(paid) => {
            let bad = || AppError::internal("a card payment's discount is out of range");
            let discount = Fen::new(paid.discount_fen).map_err(|_| bad())?;
            let basis = order_amount.checked_sub(discount).ok_or_else(bad)?;
            (basis, Some(discount))
        }
    };
    if basis.is_zero() {
        return Err(AppError::invalid(
            ErrorCode::BelowMinSpend,
            "nothing is left to pay after the member discount",
        ));
    }
    Ok(Priced { order_amount, basis, member_discount, card_payment })
}

/// A scanned voucher token, verified, and its voucher; `None` when the body did not parse.
pub type Scanned = Result<(TokenPayload, Voucher), AppError>;

/// A redemption's checks in their order and its plan, written nowhere: the card payment on the
/// order first (its member discount sets the voucher's basis), then the scanned token and the
/// voucher ([`Reads::plan`]). The one path a redemption and a quote share; what only the group
/// commit can check under the ledger lock (the QR nonce unspent, the order reference, stacking,
/// the merchant limit, the budget) is left to the commit.
pub async fn check_and_plan(
    reads: &Reads<'_>,
    merchant: &Merchant,
    order_amount: Fen,
    (card_payment, scanned): (Option<CardPaymentRecord>, Option<Scanned>),
) -> Result<(Priced, (Plan, Vec<u8>)), AppError> {
    let priced = priced(order_amount, card_payment)?;
    let planned = match scanned {
        Some(Ok(scanned)) => reads.plan(merchant, scanned, priced.basis).await?,
        Some(Err(refusal)) => return Err(refusal),
        None => return Err(AppError::internal("a parsed redemption was not scanned")),
    };
    Ok((priced, planned))
}

/// What a redemption of the same order would answer now, written nowhere and spending nothing:
/// [`check_and_plan`], then the one check of the commit a read can make, the QR token's nonce
/// (a token that redeemed a voucher since reversed is refused as the redemption would be,
/// `qr_replayed`). The rest of the commit's checks are not made (see [`check_and_plan`]).
pub async fn quote(
    reads: &Reads<'_>,
    merchant: &Merchant,
    order_amount: Fen,
    read: (Option<CardPaymentRecord>, Option<Scanned>),
) -> Result<Quote, AppError> {
    let (priced, (plan, qr_nonce)) = check_and_plan(reads, merchant, order_amount, read).await?;
    if reads.store.qr_nonce_used(&qr_nonce).await? {
        return Err(qr_replayed());
    }
    let payable = priced.basis.checked_sub(plan.discount).unwrap_or(Fen::ZERO);
    let terms = match plan.batch.terms {
        VoucherTerms::Threshold { face_value, min_spend } => {
            QuoteTerms::Threshold { face_value: face_value.to_string(), min_spend: min_spend.to_string() }
        }
        VoucherTerms::Percent { percent, cap, step, min_spend } => QuoteTerms::Percent {
            percent,
            cap: cap.to_string(),
            step: step.to_string(),
            min_spend: min_spend.to_string(),
        },
    };
    let issuer = plan.batch.issuer;
    Ok(Quote {
        voucher_id: plan.voucher.id.as_uuid(),
        batch_name: plan.batch.name.clone(),
        terms,
        issuer: issuer.to_string(),
        issuer_name: crate::app::zh::region_name(issuer).unwrap_or_else(|| issuer.to_string()),
        categories: plan.batch.categories.iter().map(|c| c.as_str().to_owned()).collect(),
        category_names: plan
            .batch
            .categories
            .iter()
            .map(|c| crate::app::zh::category_name(*c).to_owned())
            .collect(),
        expires_at: plan.voucher.expires_at.to_string(),
        order_amount: priced.order_amount.to_string(),
        member_discount: priced.member_discount.map(|d| d.to_string()),
        voucher_basis: priced.basis.to_string(),
        discount: plan.discount.to_string(),
        payable: payable.to_string(),
        funders: funder_shares(&plan),
    })
}

/// Who redeems: the merchant and the terminal that signed the request.
#[derive(Clone, Copy)]
pub struct AtTill {
    pub merchant_id: MerchantId,
    pub terminal_id: TerminalId,
}

/// The redemption to commit, with its entry and the answer stored with it.
pub fn new_redemption(
    till: AtTill,
    (plan, qr_nonce): (Plan, Vec<u8>),
    priced: Priced,
    order_ref: String,
    now: Timestamp,
    record: impl Fn(u16, String) -> IdemRecord,
) -> Result<NewRedemption, AppError> {
    let id = RedemptionId::new_v7();
    let funders = funder_shares(&plan);
    let funders_json = answer_text(&funders)?;
    let payable = priced.basis.checked_sub(plan.discount).unwrap_or(Fen::ZERO);
    // With a card payment on the order: its member discount, and the basis the voucher applied to.
    let card = priced.member_discount.zip(priced.card_payment.as_ref());
    let answer = Redemption {
        redemption_id: id.as_uuid(),
        voucher_id: plan.voucher.id.as_uuid(),
        merchant_id: till.merchant_id.as_uuid(),
        order_ref: order_ref.clone(),
        order_amount: priced.order_amount.to_string(),
        discount: plan.discount.to_string(),
        payable: payable.to_string(),
        funders,
        member_discount: card.map(|(discount, _)| discount.to_string()),
        voucher_basis: card.map(|_| priced.basis.to_string()),
        card_payment_id: card.map(|(_, paid)| paid.id.as_uuid()),
    };
    Ok(NewRedemption {
        id,
        voucher_id: plan.voucher.id,
        merchant_id: till.merchant_id,
        terminal_id: till.terminal_id,
        season_id: plan.season.id,
        batch_id: plan.batch.id,
        order_slot: order_slot(&plan.season, &plan.batch),
        provincial: plan.batch.issuer.level() == RegionLevel::Province,
        order_ref,
        // The amount the voucher applied to: the order after any member discount.
        order_amount_fen: priced.basis.as_fen(),
        discount_fen: plan.discount.as_fen(),
        funders_json,
        redeemed_at: now,
        qr_nonce,
        card_payment_id: priced.card_payment.as_ref().map(|p| p.id),
        citizen_id: plan.voucher.citizen_id,
        merchant_redemption_limit: plan.season.merchant_redemption_limit,
        entry: redemption_entry(&plan.batch, &plan.parts, till.merchant_id, id),
        answer: record(201, answer_text(&answer)?),
    })
}

/// The reversal of `record` as of `now`: the voucher's fate, the compensating entry, the answer.
pub async fn plan_reversal(
    store: &dyn Storage,
    record: &RedemptionRecord,
    reason: &str,
    now: Timestamp,
    mut answer: IdemRecord,
) -> Result<(NewReversal, AfterReversal), AppError> {
    let missing = || AppError::internal("a redemption's voucher, batch or season is missing");
    let voucher = store.voucher(record.voucher_id).await?.ok_or_else(missing)?;
    let batch = store.batch(record.batch_id).await?.ok_or_else(missing)?;
    let season = store.season(record.season_id).await?.ok_or_else(missing)?;
    let discount =
        Fen::new(record.discount_fen).map_err(|_| AppError::internal("a stored discount is negative"))?;
    let parts = funder_parts(&batch, voucher.value, discount);
    let after = AfterReversal::of(&season, &voucher, now);
    let reversal_id = ReversalId::new_v7();
    let voucher_status = after.status().as_str();
    answer.body = answer_text(&Reversal {
        reversal_id: reversal_id.as_uuid(),
        redemption_id: record.id.as_uuid(),
        voucher_id: voucher.id.as_uuid(),
        voucher_status: voucher_status.to_owned(),
        amount: discount.to_string(),
    })?;
    // Expired by the reversal, the voucher no longer counts toward its holder's caps; active
    // again or forfeited, it still does.
    let season_totals = if after == AfterReversal::Expired {
        SeasonTotalDelta::for_voucher(&season, &voucher, false)
    } else {
        Vec::new()
    };
    let reversal = NewReversal {
        redemption_id: record.id,
        reversal_id,
        voucher_id: voucher.id,
        batch_id: batch.id,
        reason: reason.to_owned(),
        at: now,
        voucher_status,
        reserve_returned: batch.reserve_returned,
        season_totals,
        entry: reversal_entry(&batch, &parts, record.merchant_id, reversal_id, after),
        answer,
    };
    Ok((reversal, after))
}

/// The answer to a redemption or reversal the storage refused with `code`.
pub fn till_refusal(code: ErrorCode) -> AppError {
    let message = match code {
        ErrorCode::QrReplayed => "this QR code was already used; refresh it on the phone",
        ErrorCode::StackingNotAllowed => "provincial and city vouchers cannot be combined on one order",
        ErrorCode::OrderRefUsed => "a voucher was already redeemed on this order",
        ErrorCode::OrderChanged => {
            "a card payment on this order was recorded or reversed meanwhile; send the redemption again with a new key"
        }
        ErrorCode::AlreadySettled => "the redemption has been settled and cannot be reversed",
        ErrorCode::SeasonClosed => return season_closed(),
        ErrorCode::MerchantLimitReached => {
            "this citizen has used as many vouchers at this merchant as the season allows"
        }
        ErrorCode::AlreadyReversed => "the redemption was already reversed",
        other => return AppError::Constraint(other.as_str().to_owned()),
    };
    AppError::conflict(code, message)
}
