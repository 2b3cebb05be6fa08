//! The cultural benefit card (文惠卡): issuing and freezing cards, the card's QR code, member
//! discount terms, the season's points rate, card payments at the till and their reversals, and
//! points exchanges (through the claim writer). See ARCHITECTURE.md, "The benefit card".

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;
use wenhui_merchant_sdk::token::TokenKind;
use wenhui_merchant_sdk::wire::{CardPayment, CardPaymentView, CardReversal, OrderBody, ReasonBody};

use super::AppState;
use super::citizens::CitizenAuth;
use super::error::ApiError;
use super::extract::{ApiBytes, ApiPath, Staff};
use super::idempotency::{IdempotencyKey, json_response, parse_json, replay_if_known, request_hash};
use super::till::{
    ORDER_FIELDS_RULE, Order, TerminalWrite, authenticate, merchant_or_staff, order_ref, remember_refusal,
    reversal_reason, terminal_write,
};
use crate::app::card as app_card;
use crate::domain::card::{self, BankCardNumber, CardStatus, CardVia};
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{BatchId, CardId, CardPaymentId, MerchantId, SeasonId};
use crate::domain::money::{Fen, Yuan};
use crate::domain::staff::Role;
use crate::domain::time::Timestamp;
use crate::storage::{CardHolding, IdemRecord, Refusal, WriteError};

fn yuan(fen: i64) -> String {
    Fen::new(fen).map(|f| f.to_string()).unwrap_or_default()
}

fn card_frozen() -> ApiError {
    app_card::card_frozen().into()
}

fn no_card() -> ApiError {
    ApiError::not_found(ErrorCode::NoCard, "you have no benefit card yet: POST /v1/me/card")
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct IssueCard {
    via: String,
    #[serde(default)]
    bank_card_number: Option<String>,
}

/// Issues the citizen's benefit card, once per person: `{via: "mobile"}` or
/// `{via: "bank_card", bank_card_number}` (Luhn-checked; only its first six and last four digits
/// are kept). Not keyed, like registration: a retry answers 409 `card_exists`.
#[utoipa::path(post, operation_id = "issue_card", request_body = Option<IssueCard>, path = "/v1/me/card", security(("citizen_token" = [])),
    responses((status = 201, description = "the card", body = CardAnswer),
        (status = 409, body = super::error::ErrorBody, description = "card_exists"),
        (status = 422, body = super::error::ErrorBody, description = "bank_card_format, bank_card_check_digit, invalid_via")))]
pub async fn issue(
    State(state): State<AppState>,
    CitizenAuth(citizen_id): CitizenAuth,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    // Parsed without echoing the input in errors: it may hold a bank card number.
    let request: IssueCard =
        serde_json::from_slice(if body.is_empty() { b"{}" } else { &body }).map_err(|_| {
            ApiError::unprocessable(
                ErrorCode::InvalidBody,
                "expected {\"via\": \"mobile\"} or {\"via\": \"bank_card\", \"bank_card_number\": \"...\"}",
            )
        })?;
    let via = match (request.via.as_str(), request.bank_card_number.as_deref()) {
        ("mobile", None) => CardVia::Mobile,
        ("bank_card", Some(number)) => {
            let number = BankCardNumber::parse(number)
                .map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
            CardVia::BankCard { bin: number.bin().to_owned(), last4: number.last4().to_owned() }
        }
        _ => {
            return Err(ApiError::unprocessable(
                ErrorCode::InvalidVia,
                "via is \"mobile\" (no bank card number) or \"bank_card\" with bank_card_number",
            ));
        }
    };
    let card = app_card::issue(state.store(), citizen_id, via, state.clock().now()).await?;
    // A card just issued has no payments, so no points yet.
    let view = card_view(CardHolding { card, seasons: Vec::new() });
    Ok(axum::response::IntoResponse::into_response((axum::http::StatusCode::CREATED, Json(view))))
}

/// A benefit card as its holder sees it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CardAnswer {
    id: CardId,
    number: String,
    number_masked: String,
    /// mobile or bank_card.
    via: &'static str,
    /// The bank card's number masked, when issued on one.
    bank_card: Option<String>,
    /// active or frozen.
    status: &'static str,
    #[schema(format = DateTime)]
    issued_at: String,
    points: i64,
    points_debt: i64,
    seasons: Vec<SeasonPoints>,
}

/// A card's points earned in one season, and when they expire.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SeasonPoints {
    season_id: SeasonId,
    points: i64,
    points_debt: i64,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// A card's new status.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CardStatusAnswer {
    id: CardId,
    status: &'static str,
}

/// A merchant's member terms for card holders.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CardTermsAnswer {
    merchant_id: MerchantId,
    percent: u32,
    /// Yuan, when the discount is capped.
    cap: Option<String>,
}

/// A season's points rate.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct PointsRateAnswer {
    season_id: SeasonId,
    points_per_yuan: u32,
    #[schema(format = DateTime)]
    points_expire_at: Option<String>,
}

/// The card as its holder sees it: the full number (and the masked form shown to others),
/// status, points per season with their expiry, and any points debt.
fn card_view(holding: CardHolding) -> CardAnswer {
    let CardHolding { card, seasons } = holding;
    let points: i64 = seasons.iter().map(|s| s.points.max(0)).sum();
    let debt: i64 = seasons.iter().map(|s| s.debt.max(0)).sum();
    let seasons = seasons
        .into_iter()
        .map(|s| SeasonPoints {
            season_id: s.season_id,
            points: s.points,
            points_debt: s.debt,
            expires_at: s.expires_at.map(|t| t.to_string()),
        })
        .collect();
    let bank_card = match &card.via {
        CardVia::BankCard { bin, last4 } => Some(card::mask_bank_card(bin, last4)),
        CardVia::Mobile => None,
    };
    CardAnswer {
        id: card.id,
        number: card.number.as_str().to_owned(),
        number_masked: card.number.masked(),
        via: card.via.as_str(),
        bank_card,
        status: card.status.as_str(),
        issued_at: card.issued_at.to_string(),
        points,
        points_debt: debt,
        seasons,
    }
}

/// The citizen's card: number, status, points balance and debt.
#[utoipa::path(get, operation_id = "my_card", path = "/v1/me/card", security(("citizen_token" = [])),
    responses((status = 200, description = "the card", body = CardAnswer),
        (status = 404, body = super::error::ErrorBody, description = "no_card")))]
pub async fn mine(
    State(state): State<AppState>,
    CitizenAuth(citizen_id): CitizenAuth,
) -> Result<Json<CardAnswer>, ApiError> {
    // One statement: the card, its points per season and their expiry (docs/card.md).
    let holding = state.store().card_holding(citizen_id).await?.ok_or_else(no_card)?;
    Ok(Json(card_view(holding)))
}

/// A fresh signed QR code of the card (kind 2), same signing, lifetime and single use as a
/// voucher's.
#[utoipa::path(post, operation_id = "card_qr", path = "/v1/me/card/qr", security(("citizen_token" = [])),
    responses((status = 200, description = "the card's QR code", body = super::QrAnswer), (status = 403, body = super::error::ErrorBody, description = "card_frozen"),
        (status = 404, body = super::error::ErrorBody, description = "no_card"), (status = 429, body = super::error::ErrorBody, description = "rate_limited: too many QR codes for this citizen; see Retry-After")))]
pub async fn qr(
    State(state): State<AppState>,
    CitizenAuth(citizen_id): CitizenAuth,
) -> Result<Json<super::QrAnswer>, ApiError> {
    state.citizen_rates().qr_code(citizen_id).await?;
    let card = state.store().card_by_citizen(citizen_id).await?.ok_or_else(no_card)?;
    if card.status != CardStatus::Active {
        return Err(card_frozen());
    }
    Ok(Json(state.fresh_qr(TokenKind::Card, card.id.as_uuid()).await?))
}

async fn set_status(
    state: &AppState,
    staff: &Staff,
    id: CardId,
    status: CardStatus,
) -> Result<Json<CardStatusAnswer>, ApiError> {
    staff.require(&[Role::ProvinceAdmin])?;
    let not_found = || ApiError::not_found(ErrorCode::CardNotFound, "no such card");
    let card = state.store().card(id).await?.ok_or_else(not_found)?;
    let home = state.store().citizen_home(card.citizen_id).await?.ok_or_else(not_found)?;
    staff.may(crate::domain::access::act_for_citizen, home)?;
    let at = state.clock().now();
    if !state.store().set_card_status(id, status, at).await? {
        return Err(not_found());
    }
    tracing::info!(card = %id, status = status.as_str(), "card status changed");
    Ok(Json(CardStatusAnswer { id, status: status.as_str() }))
}

/// Freezes a card (lost phone, fraud): it is refused at the till and for exchanges.
#[utoipa::path(post, operation_id = "freeze_card", path = "/v1/cards/{id}/freeze", security(("staff_key" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "the card's new status", body = CardStatusAnswer), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn freeze(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<CardId>,
) -> Result<Json<CardStatusAnswer>, ApiError> {
    set_status(&state, &staff, id, CardStatus::Frozen).await
}

#[utoipa::path(post, operation_id = "unfreeze_card", path = "/v1/cards/{id}/unfreeze", security(("staff_key" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "the card's new status", body = CardStatusAnswer), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn unfreeze(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<CardId>,
) -> Result<Json<CardStatusAnswer>, ApiError> {
    set_status(&state, &staff, id, CardStatus::Active).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CardTermsBody {
    percent: u32,
    #[serde(default)]
    cap: Option<Yuan>,
}

/// Sets the merchant's member discount for card holders (and so joins the card programme).
/// Allowed: a city_admin of the merchant's city, a province_admin of its province, or a signed
/// request from one of the merchant's own terminals (the merchant acting for itself; there is no
/// merchant staff role). The merchant funds the discount; no government money moves.
#[utoipa::path(put, operation_id = "set_card_terms", request_body = CardTermsBody, path = "/v1/merchants/{id}/card-terms", security(("staff_key" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "the merchant's member terms", body = CardTermsAnswer), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn set_terms(
    State(state): State<AppState>,
    staff: Option<Staff>,
    ApiPath(merchant_id): ApiPath<MerchantId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Json<CardTermsAnswer>, ApiError> {
    let merchant = super::merchants::load(&state, merchant_id).await?;
    let rule = crate::domain::access::manage_merchant;
    merchant_or_staff(&state, staff, &merchant, rule, (&method, &uri, &headers), &body).await?;
    let request: CardTermsBody = parse_json(&body)?;
    let terms = app_card::member_terms(request.percent, request.cap.map(|c| c.0))?;
    state.store().set_card_terms(merchant_id, &terms, state.clock().now()).await?;
    Ok(Json(CardTermsAnswer { merchant_id, percent: terms.percent, cap: terms.cap.map(|c| c.to_string()) }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PointsRateBody {
    points_per_yuan: u32,
    /// Overrides the default expiry (the end of the season after next).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    points_expire_at: Option<Timestamp>,
}

/// Sets the season's points rate (whole points per whole yuan paid, rounded down) and optionally
/// a fixed expiry of the season's points (province_admin of the season's province).
#[utoipa::path(put, operation_id = "set_points_rate", request_body = PointsRateBody, path = "/v1/seasons/{id}/points-rate", security(("staff_key" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "the season's points rate", body = PointsRateAnswer), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn set_points_rate(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(season_id): ApiPath<SeasonId>,
    ApiBytes(body): ApiBytes,
) -> Result<Json<PointsRateAnswer>, ApiError> {
    staff.require(&[Role::ProvinceAdmin])?;
    let season = state
        .store()
        .season(season_id)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::SeasonNotFound, "no such season"))?;
    staff.may(crate::domain::access::set_season_points, season.province)?;
    let request: PointsRateBody = parse_json(&body)?;
    let policy =
        app_card::points_policy(state.store(), &season, request.points_per_yuan, request.points_expire_at)
            .await?;
    state.store().set_points_policy(&policy, state.clock().now()).await?;
    Ok(Json(PointsRateAnswer {
        season_id,
        points_per_yuan: policy.points_per_yuan,
        points_expire_at: policy.expire_at.map(|t| t.to_string()),
    }))
}

/// Pays at the till with the card (a signed terminal request with an Idempotency-Key): applies
/// the merchant's member discount and awards points on what is paid. Apply the card before any
/// voucher on the same order.
#[utoipa::path(post, path = "/v1/card-payments", operation_id = "pay_by_card", security(("terminal_signature" = [])),
    params(("Idempotency-Key" = String, Header, description = "1-128 visible ASCII characters, the same on every retry")),
    request_body = OrderBody,
    responses((status = 201, body = CardPayment, description = "the card payment"),
        (status = 400, body = super::error::ErrorBody, description = "missing_idempotency_key, invalid_idempotency_key, malformed_json"),
        (status = 401, body = super::error::ErrorBody, description = "missing_signature, unknown_terminal, timestamp_malformed, stale_request, bad_signature, replayed_request"),
        (status = 403, body = super::error::ErrorBody, description = "terminal_revoked, merchant_suspended, card_frozen"),
        (status = 404, body = super::error::ErrorBody, description = "card_not_found"),
        (status = 409, body = super::error::ErrorBody, description = "qr_replayed, merchant_not_in_card_programme, card_after_voucher, order_ref_used, points_refused"),
        (status = 410, body = super::error::ErrorBody, description = "qr_expired"),
        (status = 413, body = super::error::ErrorBody, description = "body_too_large"),
        (status = 422, body = super::error::ErrorBody, description = "invalid_body, qr_invalid, idempotency_key_reused"),
        (status = 503, body = super::error::ErrorBody, description = "database_busy, database_unavailable, timeout")))]
pub async fn pay(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let (ctx, scope, hash) =
        match terminal_write(&state, (&method, &uri, &headers), "/v1/card-payments", &key, &body).await? {
            TerminalWrite::Replay(replayed) => return Ok(replayed),
            TerminalWrite::Fresh { ctx, scope, hash } => (ctx, scope, hash),
        };
    let request: Order = parse_json(&body)?;
    let order_ref = match order_ref(&request.order_ref) {
        Some(order_ref) if !request.order_amount.is_zero() => order_ref,
        _ => return Err(ApiError::unprocessable(ErrorCode::InvalidBody, ORDER_FIELDS_RULE)),
    };
    let record = idem_recorder(scope, key, hash);
    let now = state.clock().now();
    let asked = (request.qr.as_str(), order_ref, request.order_amount);
    let order = match app_card::card_order(state.store(), state.qr(), now, ctx.merchant.id, asked).await {
        Ok(order) => order,
        Err(refusal) => return remember_refusal(&state, refusal.into(), record).await,
    };
    let till = app_card::AtTill { merchant_id: ctx.merchant.id, terminal_id: ctx.terminal.id };
    // Planned with the season's points as read now; planned once more if they expired before
    // the commit (the season has ended by then, so the second plan earns elsewhere or nothing).
    let mut planned_again = false;
    loop {
        let now = state.clock().now();
        let season = app_card::earning_season(state.store(), ctx.merchant.city.province(), now).await?;
        let payment = app_card::planned_payment(till, &order, season, now, record.clone())?;
        match state.store().commit_card_payment(&payment).await {
            Ok(stored) => {
                crate::telemetry::redeemed(crate::telemetry::CARD_PAYMENT);
                return Ok(json_response(stored.status, stored.body));
            }
            Err(WriteError::Refused(Refusal::PointsExpiredMeanwhile)) if !planned_again => {
                planned_again = true;
            }
            Err(error) => return card_write_refusal(&state, error, record).await,
        }
    }
}

/// The idempotency record of a terminal write's answer, under its scope, key and request hash.
fn idem_recorder(
    scope: String,
    key: String,
    hash: Vec<u8>,
) -> impl Fn(u16, String) -> IdemRecord + Clone + Send + Sync + 'static {
    move |status: u16, body: String| IdemRecord {
        scope: scope.clone(),
        key: key.clone(),
        request_hash: hash.clone(),
        status,
        body,
    }
}

/// A refusal decided inside the commit, stored under the key (or the first answer replayed).
async fn card_write_refusal(
    state: &AppState,
    error: WriteError,
    record: impl Fn(u16, String) -> IdemRecord,
) -> Result<Response, ApiError> {
    let refusal = match error {
        WriteError::IdempotencyTaken => {
            let probe = record(0, String::new());
            return replay_if_known(state.store(), &probe.scope, &probe.key, &probe.request_hash)
                .await?
                .ok_or_else(ApiError::internal);
        }
        WriteError::Refused(refusal) => app_card::card_refusal(refusal).into(),
        WriteError::Constraint(constraint) => ApiError::constraint_refusal(&constraint.to_string()),
        WriteError::Ledger(refusal) => ApiError::conflict(ErrorCode::PointsRefused, refusal.to_string()),
        WriteError::Storage(error) => return Err(error.into()),
    };
    remember_refusal(state, refusal, record).await
}

/// Reverses a card payment (a refund), signed by a terminal of the same merchant: takes back
/// the points it earned, from the card as far as they are still there, the rest as debt that
/// future points repay first.
#[utoipa::path(post, path = "/v1/card-payments/{id}/reversal", operation_id = "reverse_card_payment", security(("terminal_signature" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header, description = "1-128 visible ASCII characters, the same on every retry")),
    request_body = ReasonBody,
    responses((status = 201, body = CardReversal, description = "the reversal"),
        (status = 400, body = super::error::ErrorBody, description = "missing_idempotency_key, invalid_idempotency_key, malformed_json"),
        (status = 401, body = super::error::ErrorBody, description = "missing_signature, unknown_terminal, timestamp_malformed, stale_request, bad_signature, replayed_request"),
        (status = 403, body = super::error::ErrorBody, description = "terminal_revoked, merchant_suspended"),
        (status = 404, body = super::error::ErrorBody, description = "card_payment_not_found; not_found for an id that is not a UUID"),
        (status = 409, body = super::error::ErrorBody, description = "already_reversed, reverse_voucher_first, points_refused"),
        (status = 413, body = super::error::ErrorBody, description = "body_too_large"),
        (status = 422, body = super::error::ErrorBody, description = "invalid_body, idempotency_key_reused"),
        (status = 503, body = super::error::ErrorBody, description = "database_busy, database_unavailable, timeout")))]
pub async fn reverse(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiPath(payment_id): ApiPath<CardPaymentId>,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let path = format!("/v1/card-payments/{payment_id}/reversal");
    let (ctx, scope, hash) =
        match terminal_write(&state, (&method, &uri, &headers), &path, &key, &body).await? {
            TerminalWrite::Replay(replayed) => return Ok(replayed),
            TerminalWrite::Fresh { ctx, scope, hash } => (ctx, scope, hash),
        };
    let reason = reversal_reason(&body)?;
    let payment = state.store().card_payment(payment_id).await?.filter(|p| p.merchant_id == ctx.merchant.id);
    let payment = payment.ok_or_else(|| {
        ApiError::not_found(ErrorCode::CardPaymentNotFound, "no such card payment at this merchant")
    })?;
    let record = idem_recorder(scope, key, hash);
    let reversal = app_card::planned_reversal(&payment, reason, state.clock().now(), record.clone())?;
    match state.store().commit_card_reversal(&reversal).await {
        Ok(stored) => {
            crate::telemetry::reversed(crate::telemetry::CARD_PAYMENT);
            Ok(json_response(stored.status, stored.body))
        }
        Err(error) => card_write_refusal(&state, error, record).await,
    }
}

/// A card payment, for the merchant's own terminals.
#[utoipa::path(get, path = "/v1/card-payments/{id}", operation_id = "get_card_payment", security(("terminal_signature" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = CardPaymentView, description = "the card payment as it stands"),
        (status = 401, body = super::error::ErrorBody, description = "missing_signature, unknown_terminal, timestamp_malformed, stale_request, bad_signature, replayed_request"),
        (status = 403, body = super::error::ErrorBody, description = "terminal_revoked, merchant_suspended"),
        (status = 404, body = super::error::ErrorBody, description = "card_payment_not_found; not_found for an id that is not a UUID"),
        (status = 503, body = super::error::ErrorBody, description = "database_busy, database_unavailable, timeout")))]
pub async fn get(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiPath(payment_id): ApiPath<CardPaymentId>,
) -> Result<Json<CardPaymentView>, ApiError> {
    let ctx = authenticate(&state, &method, &uri, &headers, &[]).await?;
    let p = state.store().card_payment(payment_id).await?.filter(|p| p.merchant_id == ctx.merchant.id);
    let p = p.ok_or_else(|| {
        ApiError::not_found(ErrorCode::CardPaymentNotFound, "no such card payment at this merchant")
    })?;
    Ok(Json(CardPaymentView {
        card_payment_id: p.id.as_uuid(),
        card_id: p.card_id.as_uuid(),
        merchant_id: p.merchant_id.as_uuid(),
        terminal_id: p.terminal_id.as_uuid(),
        season_id: p.season_id.map(Uuid::from),
        order_amount: yuan(p.order_amount_fen),
        member_discount: yuan(p.discount_fen),
        amount_after_discount: yuan(p.order_amount_fen - p.discount_fen),
        order_ref: p.order_ref,
        points_earned: p.points,
        paid_at: p.paid_at.to_string(),
        reversed: p.reversed_at.is_some(),
        reversed_at: p.reversed_at.map(|t| t.to_string()),
        reversal_id: p.reversal_id.map(Uuid::from),
        points_taken_back: p.points_taken_back,
        points_debt_added: p.points_debt_added,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ExchangeBody {
    batch_id: BatchId,
    points: i64,
}

/// Exchanges points for a voucher of a batch that has a points price: a claim paid with points,
/// through the claim writer (same stock, per-person limits, season cap and rush rules; the
/// points leave the card in the same transaction as the voucher is written).
#[utoipa::path(post, operation_id = "exchange_for_card_points", request_body = ExchangeBody, path = "/v1/me/card/exchanges", security(("citizen_token" = [])), params(("Idempotency-Key" = String, Header)),
    responses((status = 201, description = "the voucher, the points spent and the points left", body = crate::app::claims::ClaimAnswer),
        (status = 403, body = super::error::ErrorBody, description = "card_frozen"),
        (status = 404, body = super::error::ErrorBody, description = "no_card, batch_not_found"),
        (status = 409, body = super::error::ErrorBody, description = "sold_out, limit_reached, not_open, not_exchangeable, points_price_mismatch, insufficient_points"), (status = 429, body = super::error::ErrorBody, description = "rate_limited: too many claims from this citizen; see Retry-After")))]
pub async fn exchange(
    State(state): State<AppState>,
    CitizenAuth(citizen_id): CitizenAuth,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    // An exchange is a claim paid with points: the claim writer's rate.
    state.citizen_rates().claim(citizen_id).await?;
    let request: ExchangeBody = parse_json(&body)?;
    let points = app_card::exchange_points(request.points)?;
    let card = state.store().card_by_citizen(citizen_id).await?.ok_or_else(no_card)?;
    let hash = request_hash("POST", "/v1/me/card/exchanges", &body);
    let exchange = crate::app::claims::Exchange { card_id: card.id, points };
    let answer = state.writer().exchange(citizen_id, request.batch_id, exchange, key, hash).await;
    Ok(super::idempotency::writer_response(answer))
}
