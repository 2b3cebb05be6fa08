//! The benefit card at the till and in its season: a card payment's checks and plan (member
//! discount, the season it earns points in), a card reversal's plan, the refusals the commit
//! decides, and the season's points rate. See [docs/card.md](../../docs/card.md).

use ring::rand::{SecureRandom, SystemRandom};
use wenhui_merchant_sdk::token::TokenKind;
use wenhui_merchant_sdk::wire::{CardPayment, CardReversal};

use crate::app::error::{AppError, Kind};
use crate::app::qr::QrKeys;
use crate::app::till::redeem::{answer_text, qr_replayed, verified_token};
use crate::domain::card::{
    self, Card, CardNumber, CardStatus, CardVia, Clawback, Earning, MAX_POINTS_PER_YUAN, MemberTerms,
};
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{CardId, CardPaymentId, CitizenId, MerchantId, ReversalId, TerminalId};
use crate::domain::money::Fen;
use crate::domain::region::RegionCode;
use crate::domain::season::{Season, SeasonStatus};
use crate::domain::time::Timestamp;
use crate::storage::{
    CardPaymentRecord, Constraint, IdemRecord, NewCardPayment, NewCardReversal, PointsPolicy, Refusal,
    Storage, WriteError,
};

/// Issues the citizen's card, once per person, under a fresh random number; on the (unlikely)
/// collision with an issued one, draws again.
pub async fn issue(
    store: &dyn Storage,
    citizen_id: CitizenId,
    via: CardVia,
    now: Timestamp,
) -> Result<Card, AppError> {
    if store.card_by_citizen(citizen_id).await?.is_some() {
        return Err(card_exists());
    }
    for _ in 0..5 {
        let mut bytes = [0u8; 8];
        SystemRandom::new().fill(&mut bytes).map_err(|_| AppError::internal("no random bytes"))?;
        let card = Card {
            id: CardId::new_v7(),
            citizen_id,
            number: CardNumber::from_random(u64::from_be_bytes(bytes)),
            via: via.clone(),
            status: CardStatus::Active,
            issued_at: now,
        };
        match store.insert_card(&card).await {
            Ok(()) => {
                tracing::info!(card = %card.id, via = card.via.as_str(), "card issued");
                return Ok(card);
            }
            Err(WriteError::Constraint(Constraint::CardNumber)) => continue,
            Err(WriteError::Constraint(Constraint::CardPerCitizen)) => return Err(card_exists()),
            Err(WriteError::Constraint(other)) => return Err(AppError::Constraint(other.to_string())),
            Err(WriteError::Storage(error)) => return Err(error.into()),
            Err(other) => return Err(AppError::internal(other.to_string())),
        }
    }
    Err(AppError::refused(
        Kind::Unavailable,
        ErrorCode::CardNumberBusy,
        "could not draw a free card number; retry",
    ))
}

fn card_exists() -> AppError {
    AppError::conflict(ErrorCode::CardExists, "you already have a benefit card: GET /v1/me/card")
}

/// 403 `card_frozen`.
pub fn card_frozen() -> AppError {
    AppError::forbidden(ErrorCode::CardFrozen, "the card is frozen; the holder should contact the province")
}

/// What a card payment pays, known before its earning season is chosen.
pub struct CardOrder {
    pub card: Card,
    /// The QR token's nonce, spent by the commit.
    pub nonce: Vec<u8>,
    pub order_ref: String,
    pub amount: Fen,
    pub discount: Fen,
    /// The amount after the member discount, on which points are earned.
    pub paid: Fen,
}

/// Token, card and merchant checks, cheapest first, each with its own code; then the order
/// priced with the merchant's member discount.
pub async fn card_order(
    store: &dyn Storage,
    keys: &QrKeys,
    now: Timestamp,
    merchant_id: MerchantId,
    (qr, order_ref, amount): (&str, String, Fen),
) -> Result<CardOrder, AppError> {
    let payload = verified_token(keys, qr, now).await?;
    if payload.kind != TokenKind::Card {
        return Err(AppError::invalid(
            ErrorCode::QrInvalid,
            "this is a voucher code, not a card code: redeem it instead",
        ));
    }
    let card = store
        .card(payload.subject.into())
        .await?
        .ok_or_else(|| AppError::not_found(ErrorCode::CardNotFound, "no such card"))?;
    if card.status != CardStatus::Active {
        return Err(card_frozen());
    }
    if store.qr_nonce_used(&payload.nonce).await? {
        return Err(qr_replayed());
    }
    let terms = store.card_terms(merchant_id).await?.ok_or_else(|| {
        AppError::conflict(
            ErrorCode::MerchantNotInCardProgramme,
            "this merchant has no member discount terms for the card",
        )
    })?;
    let discount = terms.discount(amount);
    let paid = amount.checked_sub(discount).unwrap_or(Fen::ZERO);
    Ok(CardOrder { card, nonce: payload.nonce.to_vec(), order_ref, amount, discount, paid })
}

/// The season a payment at a merchant of `province` earns points in: the open season of the
/// province that started last, and its points rate (0 without a policy, or once expired).
pub async fn earning_season(
    store: &dyn Storage,
    province: RegionCode,
    now: Timestamp,
) -> Result<Option<(Season, u32)>, AppError> {
    let open = store
        .seasons(Some(province), None, 1_000)
        .await?
        .into_iter()
        .filter(|s| s.status_at(now) == SeasonStatus::Open)
        .max_by_key(|s| (s.starts_at, s.id));
    let Some(season) = open else { return Ok(None) };
    let policy = store.points_policy(season.id).await?;
    // A season whose points have expired earns none.
    let rate = policy.filter(|p| p.expired_at.is_none()).map(|p| p.points_per_yuan).unwrap_or(0);
    Ok(Some((season, rate)))
}

/// Who is paid: the merchant and the terminal that signed the request.
#[derive(Clone, Copy)]
pub struct AtTill {
    pub merchant_id: MerchantId,
    pub terminal_id: TerminalId,
}

/// The card payment of `order`, earning points in `season` at its rate (none without a season).
pub fn planned_payment(
    till: AtTill,
    order: &CardOrder,
    season: Option<(Season, u32)>,
    now: Timestamp,
    record: impl Fn(u16, String) -> IdemRecord + Send + Sync + 'static,
) -> Result<NewCardPayment, AppError> {
    let points = season.as_ref().map(|(_, rate)| card::points_for(order.paid, *rate)).unwrap_or(0);
    let id = CardPaymentId::new_v7();
    let answer = CardPayment {
        card_payment_id: id.as_uuid(),
        card_id: order.card.id.as_uuid(),
        card_number: order.card.number.masked(),
        merchant_id: till.merchant_id.as_uuid(),
        order_ref: order.order_ref.clone(),
        order_amount: order.amount.to_string(),
        member_discount: order.discount.to_string(),
        amount_after_discount: order.paid.to_string(),
        points_earned: points,
        season_id: season.as_ref().map(|(s, _)| s.id.as_uuid()),
        points_debt_repaid: 0,
    };
    // The repaid debt is decided under the ledger lock: the commit renders the answer with it.
    let render = answer_renderer(answer, |answer: &mut CardPayment, earning: &Earning| {
        answer.points_debt_repaid = earning.repaid.iter().map(|d| d.points).sum();
    })?;
    Ok(NewCardPayment {
        id,
        card_id: order.card.id,
        merchant_id: till.merchant_id,
        terminal_id: till.terminal_id,
        season_id: season.as_ref().map(|(s, _)| s.id),
        order_ref: order.order_ref.clone(),
        order_amount_fen: order.amount.as_fen(),
        discount_fen: order.discount.as_fen(),
        points,
        paid_at: now,
        qr_nonce: order.nonce.clone(),
        answer: Box::new(move |earning: &Earning| record(201, render(earning))),
    })
}

/// The reversal of a card payment: how many points come back and how many become debt is
/// decided under the ledger lock, so the answer is rendered by the commit.
pub fn planned_reversal(
    payment: &CardPaymentRecord,
    reason: String,
    now: Timestamp,
    record: impl Fn(u16, String) -> IdemRecord + Send + Sync + 'static,
) -> Result<NewCardReversal, AppError> {
    let reversal_id = ReversalId::new_v7();
    let repaid: i64 = payment.debt_repaid.iter().map(|d| d.points).sum();
    let answer = CardReversal {
        reversal_id: reversal_id.as_uuid(),
        card_payment_id: payment.id.as_uuid(),
        points_reversed: payment.points,
        points_taken_back: 0,
        points_debt_added: 0,
    };
    let render = answer_renderer(answer, move |answer: &mut CardReversal, clawback: &Clawback| {
        answer.points_taken_back = clawback.taken;
        answer.points_debt_added = clawback.debt + repaid;
    })?;
    Ok(NewCardReversal {
        payment_id: payment.id,
        reversal_id,
        reason,
        at: now,
        answer: Box::new(move |clawback: &Clawback| record(201, render(clawback))),
    })
}

/// The JSON text of a terminal write's `answer` with what the commit decided set by `decided`.
/// Serializing a wire answer (strings, ids, integers) cannot fail once it has succeeded: it is
/// tried here, before the commit, so that the closure the commit calls needs no error path (on
/// the impossible failure there, the answer checked here is sent).
fn answer_renderer<T, D>(
    answer: T,
    decided: impl Fn(&mut T, &D) + Send + Sync,
) -> Result<impl Fn(&D) -> String + Send + Sync, AppError>
where
    T: serde::Serialize + Clone + Send + Sync,
{
    let checked = answer_text(&answer)?;
    Ok(move |outcome: &D| {
        let mut answer = answer.clone();
        decided(&mut answer, outcome);
        serde_json::to_string(&answer).unwrap_or_else(|_| checked.clone())
    })
}

/// The answer to a card payment or reversal the commit refused by its own checks.
pub fn card_refusal(refusal: Refusal) -> AppError {
    let code = match refusal {
        Refusal::Code(code) => code,
        other => return AppError::conflict(other.code(), other.to_string()),
    };
    match code {
        ErrorCode::QrReplayed => qr_replayed(),
        ErrorCode::CardFrozen => card_frozen(),
        ErrorCode::CardAfterVoucher => AppError::conflict(
            ErrorCode::CardAfterVoucher,
            "a voucher was already redeemed on this order: apply the card first (reverse the redemption, pay with the card, redeem again)",
        ),
        ErrorCode::OrderRefUsed => {
            AppError::conflict(ErrorCode::OrderRefUsed, "the card was already used on this order")
        }
        ErrorCode::AlreadyReversed => {
            AppError::conflict(ErrorCode::AlreadyReversed, "the card payment was already reversed")
        }
        ErrorCode::ReverseVoucherFirst => AppError::conflict(
            ErrorCode::ReverseVoucherFirst,
            "a voucher redemption on this order used the member discount: reverse it first",
        ),
        other => AppError::conflict(ErrorCode::Conflict, other.as_str()),
    }
}

/// The points policy a season's province_admin asks for, checked: a rate of 0 to
/// [`MAX_POINTS_PER_YUAN`], an expiry not before the season ends nor after 2100, and points not
/// expired already.
pub async fn points_policy(
    store: &dyn Storage,
    season: &Season,
    points_per_yuan: u32,
    expire_at: Option<Timestamp>,
) -> Result<PointsPolicy, AppError> {
    if points_per_yuan > MAX_POINTS_PER_YUAN {
        return Err(AppError::invalid(
            ErrorCode::InvalidPointsRate,
            format!("points_per_yuan is 0 to {MAX_POINTS_PER_YUAN}"),
        ));
    }
    if expire_at.is_some_and(|at| at < season.ends_at) {
        return Err(AppError::invalid(
            ErrorCode::InvalidDates,
            "points cannot expire before their season ends",
        ));
    }
    if expire_at.is_some_and(|at| at > crate::domain::season::SEASON_LATEST) {
        return Err(AppError::invalid(
            ErrorCode::InvalidDates,
            "points expire by the end of 2100 at the latest",
        ));
    }
    let existing = store.points_policy(season.id).await?;
    if existing.is_some_and(|p| p.expired_at.is_some()) {
        return Err(AppError::conflict(
            ErrorCode::PointsExpired,
            "this season's points have already expired",
        ));
    }
    Ok(PointsPolicy { season_id: season.id, points_per_yuan, expire_at, expired_at: None })
}

/// The member terms a merchant asks for, checked (422 `invalid_terms`).
pub fn member_terms(percent: u32, cap: Option<Fen>) -> Result<MemberTerms, AppError> {
    MemberTerms::new(percent, cap).map_err(|m| AppError::invalid(ErrorCode::InvalidTerms, m))
}

/// The points an exchange offers, before the batch is read: above 0 and at most
/// [`card::MAX_POINTS_PRICE`], or 422 `invalid_points`.
pub fn exchange_points(points: i64) -> Result<i64, AppError> {
    if points <= 0 || points > card::MAX_POINTS_PRICE {
        return Err(AppError::invalid(
            ErrorCode::InvalidPoints,
            "points is the batch's points price, above 0",
        ));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_points_are_positive_and_bounded() {
        assert_eq!(exchange_points(1).expect("one"), 1);
        assert_eq!(exchange_points(card::MAX_POINTS_PRICE).expect("max"), card::MAX_POINTS_PRICE);
        for bad in [0, -5, card::MAX_POINTS_PRICE + 1, i64::MIN] {
            assert_eq!(exchange_points(bad).expect_err("refused").code(), Some(ErrorCode::InvalidPoints));
        }
    }
}
