//! The cultural benefit card (文惠卡): issuing and freezing cards, the card's QR code, member
//! discount terms, the season's points rate, card payments at the till and their reversals, and
//! points exchanges (through the claim writer). See ARCHITECTURE.md, "The benefit card".

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use uuid::Uuid;
use wenhui_merchant_sdk::token::{QrToken, TokenKind};
use wenhui_merchant_sdk::wire::{CardPayment, CardPaymentView, CardReversal, OrderBody, ReasonBody};

use super::AppState;
use super::citizens::CitizenAuth;
use super::error::ApiError;
use super::extract::{ApiBytes, ApiPath, Staff};
use super::idempotency::{IdempotencyKey, json_response, parse_json, replay_if_known, request_hash};
use super::till::{
    ORDER_FIELDS_RULE, Order, TerminalCtx, TerminalWrite, answer_text, authenticate, merchant_or_staff,
    order_ref, remember_refusal, reversal_reason, terminal_write, token_error,
};
use crate::domain::card::{
    self, BankCardNumber, Card, CardNumber, CardStatus, CardVia, Clawback, Earning, MAX_POINTS_PER_YUAN,
    MemberTerms,
};
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{BatchId, MerchantId, SeasonId};
use crate::domain::money::{Fen, Yuan};
use crate::domain::season::{Season, SeasonStatus};
use crate::domain::staff::Role;
use crate::domain::time::Timestamp;
use crate::storage::{
    Constraint, IdemRecord, NewCardPayment, NewCardReversal, PointsPolicy, Refusal, Storage, WriteError,
};

fn yuan(fen: i64) -> String {
    Fen::new(fen).map(|f| f.to_string()).unwrap_or_default()
}

fn card_frozen() -> ApiError {
    ApiError::forbidden_code(
        ErrorCode::CardFrozen,
        "the card is frozen; the holder should contact the province",
    )
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
    if state.store().card_by_citizen(citizen_id).await?.is_some() {
        return Err(card_exists());
    }
    let now = state.clock().now();
    // A fresh random number; on the (unlikely) collision with an issued one, draw again.
    for _ in 0..5 {
        let mut bytes = [0u8; 8];
        SystemRandom::new().fill(&mut bytes).map_err(|_| ApiError::internal())?;
        let card = Card {
            id: Uuid::now_v7(),
            citizen_id,
            number: CardNumber::from_random(u64::from_be_bytes(bytes)),
            via: via.clone(),
            status: CardStatus::Active,
            issued_at: now,
        };
        match state.store().insert_card(&card).await {
            Ok(()) => {
                tracing::info!(card = %card.id, via = card.via.as_str(), "card issued");
                let view = card_view(state.store(), &card).await?;
                return Ok(axum::response::IntoResponse::into_response((
                    axum::http::StatusCode::CREATED,
                    Json(view),
                )));
            }
            Err(WriteError::Constraint(Constraint::CardNumber)) => continue,
            Err(WriteError::Constraint(Constraint::CardPerCitizen)) => return Err(card_exists()),
            Err(WriteError::Constraint(other)) => {
                return Err(ApiError::constraint_refusal(&other.to_string()));
            }
            Err(WriteError::Storage(error)) => return Err(error.into()),
            Err(_) => return Err(ApiError::internal()),
        }
    }
    Err(ApiError::unavailable(ErrorCode::CardNumberBusy, "could not draw a free card number; retry"))
}

fn card_exists() -> ApiError {
    ApiError::conflict(ErrorCode::CardExists, "you already have a benefit card: GET /v1/me/card")
}

/// A benefit card as its holder sees it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CardAnswer {
    id: Uuid,
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
    id: Uuid,
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
async fn card_view(store: &dyn Storage, card: &Card) -> Result<CardAnswer, ApiError> {
    let mut seasons = Vec::new();
    let (mut points, mut debt) = (0i64, 0i64);
    for line in store.card_points(card.id).await? {
        points += line.points.max(0);
        debt += line.debt.max(0);
        let expires_at =
            match (store.season(line.season_id).await?, store.points_policy(line.season_id).await?) {
                (Some(season), Some(policy)) => {
                    let all = store.seasons(Some(season.province), None, 1_000).await?;
                    card::points_expiry(&season, policy.expire_at, &all).map(|t| t.to_string())
                }
                _ => None,
            };
        seasons.push(SeasonPoints {
            season_id: line.season_id,
            points: line.points,
            points_debt: line.debt,
            expires_at,
        });
    }
    let bank_card = match &card.via {
        CardVia::BankCard { bin, last4 } => Some(card::mask_bank_card(bin, last4)),
        CardVia::Mobile => None,
    };
    Ok(CardAnswer {
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
    })
}

/// The citizen's card: number, status, points balance and debt.
#[utoipa::path(get, operation_id = "my_card", path = "/v1/me/card", security(("citizen_token" = [])),
    responses((status = 200, description = "the card", body = CardAnswer),
        (status = 404, body = super::error::ErrorBody, description = "no_card")))]
pub async fn mine(
    State(state): State<AppState>,
    CitizenAuth(citizen_id): CitizenAuth,
) -> Result<Json<CardAnswer>, ApiError> {
    let card = state.store().card_by_citizen(citizen_id).await?.ok_or_else(no_card)?;
    Ok(Json(card_view(state.store(), &card).await?))
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
    state.citizen_rates().qr_code(citizen_id)?;
    let card = state.store().card_by_citizen(citizen_id).await?.ok_or_else(no_card)?;
    if card.status != CardStatus::Active {
        return Err(card_frozen());
    }
    Ok(Json(state.fresh_qr(TokenKind::Card, card.id).await?))
}

async fn set_status(
    state: &AppState,
    staff: &Staff,
    id: Uuid,
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
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<CardStatusAnswer>, ApiError> {
    set_status(&state, &staff, id, CardStatus::Frozen).await
}

#[utoipa::path(post, operation_id = "unfreeze_card", path = "/v1/cards/{id}/unfreeze", security(("staff_key" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "the card's new status", body = CardStatusAnswer), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn unfreeze(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<Uuid>,
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
    let terms = MemberTerms::new(request.percent, request.cap.map(|c| c.0))
        .map_err(|m| ApiError::unprocessable(ErrorCode::InvalidTerms, m))?;
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
    if request.points_per_yuan > MAX_POINTS_PER_YUAN {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidPointsRate,
            format!("points_per_yuan is 0 to {MAX_POINTS_PER_YUAN}"),
        ));
    }
    if request.points_expire_at.is_some_and(|at| at < season.ends_at) {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidDates,
            "points cannot expire before their season ends",
        ));
    }
    let existing = state.store().points_policy(season_id).await?;
    if existing.is_some_and(|p| p.expired_at.is_some()) {
        return Err(ApiError::conflict(
            ErrorCode::PointsExpired,
            "this season's points have already expired",
        ));
    }
    let policy = PointsPolicy {
        season_id,
        points_per_yuan: request.points_per_yuan,
        expire_at: request.points_expire_at,
        expired_at: None,
    };
    state.store().set_points_policy(&policy, state.clock().now()).await?;
    Ok(Json(PointsRateAnswer {
        season_id,
        points_per_yuan: policy.points_per_yuan,
        points_expire_at: policy.expire_at.map(|t| t.to_string()),
    }))
}

/// The season a payment at this merchant earns points in: the open season of its province that
/// started last, and its points rate (0 without a policy).
async fn earning_season(
    state: &AppState,
    province: crate::domain::region::RegionCode,
) -> Result<Option<(Season, u32)>, ApiError> {
    let now = state.clock().now();
    let open = state
        .store()
        .seasons(Some(province), None, 1_000)
        .await?
        .into_iter()
        .filter(|s| s.status_at(now) == SeasonStatus::Open)
        .max_by_key(|s| (s.starts_at, s.id));
    let Some(season) = open else { return Ok(None) };
    let policy = state.store().points_policy(season.id).await?;
    // A season whose points have expired earns none.
    let rate = policy.filter(|p| p.expired_at.is_none()).map(|p| p.points_per_yuan).unwrap_or(0);
    Ok(Some((season, rate)))
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
        (status = 503, body = super::error::ErrorBody, description = "database_busy, timeout")))]
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
    let checked = check_card(&state, &ctx.merchant, &request.qr).await;
    let (card, nonce, terms) = match checked {
        Ok(found) => found,
        Err(refusal) => return remember_refusal(&state, refusal, record).await,
    };
    let amount = request.order_amount;
    let discount = terms.discount(amount);
    let paid = amount.checked_sub(discount).unwrap_or(Fen::ZERO);
    let order = CardOrder { card, nonce, order_ref, amount, discount, paid };
    // Planned with the season's points as read now; planned once more if they expired before
    // the commit (the season has ended by then, so the second plan earns elsewhere or nothing).
    let mut planned_again = false;
    loop {
        let season = earning_season(&state, ctx.merchant.city.province()).await?;
        let payment = planned_payment(&state, &ctx, &order, season, record.clone())?;
        match state.store().commit_card_payment(&payment).await {
            Ok(stored) => return Ok(json_response(stored.status, stored.body)),
            Err(WriteError::Refused(Refusal::PointsExpiredMeanwhile)) if !planned_again => {
                planned_again = true;
            }
            Err(error) => return card_write_refusal(&state, error, record).await,
        }
    }
}

/// What a card payment pays, known before its earning season is chosen.
struct CardOrder {
    card: Card,
    /// The QR token's nonce, spent by the commit.
    nonce: Vec<u8>,
    order_ref: String,
    amount: Fen,
    discount: Fen,
    /// The amount after the member discount, on which points are earned.
    paid: Fen,
}

/// The card payment of `order`, earning points in `season` at its rate (none without a season).
fn planned_payment(
    state: &AppState,
    ctx: &TerminalCtx,
    order: &CardOrder,
    season: Option<(Season, u32)>,
    record: impl Fn(u16, String) -> IdemRecord + Send + Sync + 'static,
) -> Result<NewCardPayment, ApiError> {
    let points = season.as_ref().map(|(_, rate)| card::points_for(order.paid, *rate)).unwrap_or(0);
    let id = Uuid::now_v7();
    let answer = CardPayment {
        card_payment_id: id,
        card_id: order.card.id,
        card_number: order.card.number.masked(),
        merchant_id: ctx.merchant.id.as_uuid(),
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
        merchant_id: ctx.merchant.id,
        terminal_id: ctx.terminal.id,
        season_id: season.as_ref().map(|(s, _)| s.id),
        order_ref: order.order_ref.clone(),
        order_amount_fen: order.amount.as_fen(),
        discount_fen: order.discount.as_fen(),
        points,
        paid_at: state.clock().now(),
        qr_nonce: order.nonce.clone(),
        answer: Box::new(move |earning: &Earning| record(201, render(earning))),
    })
}

/// The JSON text of a terminal write's `answer` with what the commit decided set by `decided`.
/// Serializing a wire answer (strings, ids, integers) cannot fail once it has succeeded: it is
/// tried here, before the commit, so that the closure the commit calls needs no error path (on
/// the impossible failure there, the answer checked here is sent).
fn answer_renderer<T, D>(
    answer: T,
    decided: impl Fn(&mut T, &D) + Send + Sync,
) -> Result<impl Fn(&D) -> String + Send + Sync, ApiError>
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

/// Token, card and merchant checks, cheapest first, each with its own code.
async fn check_card(
    state: &AppState,
    merchant: &crate::domain::merchant::Merchant,
    qr: &str,
) -> Result<(Card, Vec<u8>, MemberTerms), ApiError> {
    let token = QrToken::parse(qr).map_err(token_error)?;
    let ring = state.qr().ring().await?;
    let now_s = state.clock().now().unix_us().div_euclid(1_000_000);
    let payload = ring.verify(&token, now_s).map_err(token_error)?.clone();
    if payload.kind != TokenKind::Card {
        return Err(ApiError::unprocessable(
            ErrorCode::QrInvalid,
            "this is a voucher code, not a card code: redeem it instead",
        ));
    }
    let card = state
        .store()
        .card(payload.subject)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::CardNotFound, "no such card"))?;
    if card.status != CardStatus::Active {
        return Err(card_frozen());
    }
    if state.store().qr_nonce_used(&payload.nonce).await? {
        return Err(ApiError::conflict(
            ErrorCode::QrReplayed,
            "this QR code was already used; refresh it on the phone",
        ));
    }
    let terms = state.store().card_terms(merchant.id).await?.ok_or_else(|| {
        ApiError::conflict(
            ErrorCode::MerchantNotInCardProgramme,
            "this merchant has no member discount terms for the card",
        )
    })?;
    Ok((card, payload.nonce.to_vec(), terms))
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
        WriteError::Refused(Refusal::Code(code)) => match code {
            ErrorCode::QrReplayed => ApiError::conflict(
                ErrorCode::QrReplayed,
                "this QR code was already used; refresh it on the phone",
            ),
            ErrorCode::CardFrozen => card_frozen(),
            ErrorCode::CardAfterVoucher => ApiError::conflict(
                ErrorCode::CardAfterVoucher,
                "a voucher was already redeemed on this order: apply the card first (reverse the redemption, pay with the card, redeem again)",
            ),
            ErrorCode::OrderRefUsed => {
                ApiError::conflict(ErrorCode::OrderRefUsed, "the card was already used on this order")
            }
            ErrorCode::AlreadyReversed => {
                ApiError::conflict(ErrorCode::AlreadyReversed, "the card payment was already reversed")
            }
            ErrorCode::ReverseVoucherFirst => ApiError::conflict(
                ErrorCode::ReverseVoucherFirst,
                "a voucher redemption on this order used the member discount: reverse it first",
            ),
            other => ApiError::conflict(ErrorCode::Conflict, other.as_str()),
        },
        WriteError::Refused(other) => ApiError::conflict(other.code(), other.to_string()),
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
        (status = 503, body = super::error::ErrorBody, description = "database_busy, timeout")))]
pub async fn reverse(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiPath(payment_id): ApiPath<Uuid>,
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
    let reversal_id = Uuid::now_v7();
    let record = idem_recorder(scope, key, hash);
    let answer_record = record.clone();
    let repaid: i64 = payment.debt_repaid.iter().map(|d| d.points).sum();
    let answer = CardReversal {
        reversal_id,
        card_payment_id: payment_id,
        points_reversed: payment.points,
        points_taken_back: 0,
        points_debt_added: 0,
    };
    // How many points come back and how many become debt is decided under the ledger lock.
    let render = answer_renderer(answer, move |answer: &mut CardReversal, clawback: &Clawback| {
        answer.points_taken_back = clawback.taken;
        answer.points_debt_added = clawback.debt + repaid;
    })?;
    let reversal = NewCardReversal {
        payment_id,
        reversal_id,
        reason,
        at: state.clock().now(),
        answer: Box::new(move |clawback: &Clawback| answer_record(201, render(clawback))),
    };
    match state.store().commit_card_reversal(&reversal).await {
        Ok(stored) => Ok(json_response(stored.status, stored.body)),
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
        (status = 503, body = super::error::ErrorBody, description = "database_busy, timeout")))]
pub async fn get(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiPath(payment_id): ApiPath<Uuid>,
) -> Result<Json<CardPaymentView>, ApiError> {
    let ctx = authenticate(&state, &method, &uri, &headers, &[]).await?;
    let p = state.store().card_payment(payment_id).await?.filter(|p| p.merchant_id == ctx.merchant.id);
    let p = p.ok_or_else(|| {
        ApiError::not_found(ErrorCode::CardPaymentNotFound, "no such card payment at this merchant")
    })?;
    Ok(Json(CardPaymentView {
        card_payment_id: p.id,
        card_id: p.card_id,
        merchant_id: p.merchant_id.as_uuid(),
        terminal_id: p.terminal_id,
        season_id: p.season_id.map(Uuid::from),
        order_amount: yuan(p.order_amount_fen),
        member_discount: yuan(p.discount_fen),
        amount_after_discount: yuan(p.order_amount_fen - p.discount_fen),
        order_ref: p.order_ref,
        points_earned: p.points,
        paid_at: p.paid_at.to_string(),
        reversed: p.reversed_at.is_some(),
        reversed_at: p.reversed_at.map(|t| t.to_string()),
        reversal_id: p.reversal_id,
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
    state.citizen_rates().claim(citizen_id)?;
    let request: ExchangeBody = parse_json(&body)?;
    if request.points <= 0 || request.points > card::MAX_POINTS_PRICE {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidPoints,
            "points is the batch's points price, above 0",
        ));
    }
    let card = state.store().card_by_citizen(citizen_id).await?.ok_or_else(no_card)?;
    let hash = request_hash("POST", "/v1/me/card/exchanges", &body);
    let exchange = crate::app::claims::Exchange { card_id: card.id, points: request.points };
    let answer = state.writer().exchange(citizen_id, request.batch_id, exchange, key, hash).await;
    Ok(json_response(answer.status, answer.body))
}
