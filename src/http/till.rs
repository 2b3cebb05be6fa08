//! The till: signed terminal requests, redemptions, reversals, and the published QR keys.
//!
//! Order of application when a benefit card and a voucher meet on one order (documented in
//! ARCHITECTURE.md, "The benefit card"): the merchant's member discount applies first, then the
//! government voucher on what remains. The till sends the order's full amount to both endpoints;
//! when a card payment stands on the order, the voucher's threshold and percent apply to
//! `order_amount - member discount` (and a different `order_amount` is 409
//! `order_amount_mismatch`). A card payment after a voucher on the same order is refused (409
//! `card_after_voucher`): the till applies the card first.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use uuid::Uuid;
use wenhui_merchant_sdk::signing::{
    HEADER_NONCE, HEADER_SIGNATURE, HEADER_TERMINAL, HEADER_TIMESTAMP, SignatureError, SignedParts,
    parse_timestamp,
};
use wenhui_merchant_sdk::token::{KeyRing, QrToken, TokenError, TokenKind, TokenPayload};
use wenhui_merchant_sdk::wire::{FunderShare, OrderBody, ReasonBody, Redemption, RedemptionView, Reversal};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiBytes, ApiPath, plain_text};
use super::idempotency::{IdempotencyKey, json_response, parse_json, replay_if_known, request_hash};
use crate::domain::entries::{AfterReversal, funder_parts, redemption_entry, reversal_entry};
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::MerchantId;
use crate::domain::merchant::{Merchant, MerchantStatus};
use crate::domain::money::Fen;
use crate::domain::region::RegionLevel;
use crate::domain::season::{Batch, Season, SeasonStatus, Voucher, VoucherStatus, order_slot};
use crate::storage::{
    CardPaymentRecord, IdemRecord, NewRedemption, NewReversal, Refusal, SeasonTotalDelta, TerminalRecord,
    WriteError,
};

/// A verified terminal request.
pub struct TerminalCtx {
    pub terminal: TerminalRecord,
    pub merchant: Merchant,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers.get(name).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        ApiError::unauthorized(
            ErrorCode::MissingSignature,
            format!("terminal requests need the {name} header"),
        )
    })
}

impl TerminalCtx {
    /// A revoked terminal or a suspended merchant is refused (403). Keyed writes check this
    /// after the stored answer: a retry of a write answered before the revocation or the
    /// suspension gets its first answer, as every retry does, not a refusal that would leave the
    /// till's journal disagreeing with the service.
    fn standing(&self) -> Result<(), ApiError> {
        if self.terminal.revoked {
            return Err(ApiError::forbidden_code(
                ErrorCode::TerminalRevoked,
                "this terminal has been revoked",
            ));
        }
        if self.merchant.status == MerchantStatus::Suspended {
            return Err(ApiError::forbidden_code(ErrorCode::MerchantSuspended, "this merchant is suspended"));
        }
        Ok(())
    }
}

/// Checks a terminal request's signature, freshness, nonce, and standing.
pub async fn authenticate(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TerminalCtx, ApiError> {
    let ctx = authenticate_signature(state, method, uri, headers, body).await?;
    ctx.standing()?;
    Ok(ctx)
}

/// [`authenticate`] without the standing: for keyed writes, which look up the stored answer
/// before they check it.
async fn authenticate_signature(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TerminalCtx, ApiError> {
    let (ctx, nonce) = verify_terminal(state, method, uri, headers, body).await?;
    check_nonce(state, ctx.terminal.id, nonce).await?;
    Ok(ctx)
}

/// The signature and freshness of a terminal request, but neither its nonce (a database round
/// trip, which `redeem` overlaps with its other reads) nor its standing: returns the nonce
/// still to be checked.
async fn verify_terminal(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(TerminalCtx, String), ApiError> {
    let unknown = || ApiError::unauthorized(ErrorCode::UnknownTerminal, "no such terminal");
    let terminal_id: Uuid = header(headers, HEADER_TERMINAL)?.parse().map_err(|_| unknown())?;
    let timestamp_s = parse_timestamp(header(headers, HEADER_TIMESTAMP)?)
        .map_err(|e| ApiError::unauthorized(ErrorCode::TimestampMalformed, e.to_string()))?;
    let nonce = header(headers, HEADER_NONCE)?;
    let signature = header(headers, HEADER_SIGNATURE)?;
    let (terminal, merchant) = match state.inner().tills.get(&terminal_id) {
        Some(found) => found,
        None => {
            let terminal = state.store().terminal(terminal_id).await?.ok_or_else(unknown)?;
            let merchant = state.store().merchant(terminal.merchant_id).await?.ok_or_else(unknown)?;
            state.inner().tills.insert(terminal_id, (terminal.clone(), merchant.clone()));
            (terminal, merchant)
        }
    };
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or(uri.path());
    let parts = SignedParts { method: method.as_str(), path_and_query, timestamp_s, nonce, body };
    let now = state.clock().now();
    match parts.verify(&terminal.public_key, signature, now.unix_us().div_euclid(1_000_000)) {
        Ok(()) => {}
        Err(SignatureError::Stale) => {
            return Err(ApiError::unauthorized(
                ErrorCode::StaleRequest,
                "the request timestamp is more than 5 minutes off",
            ));
        }
        Err(error) => return Err(ApiError::unauthorized(ErrorCode::BadSignature, error.to_string())),
    }
    Ok((TerminalCtx { terminal, merchant }, nonce.to_owned()))
}

/// Records the request nonce; refuses it if the terminal used it before.
async fn check_nonce(state: &AppState, terminal_id: Uuid, nonce: String) -> Result<(), ApiError> {
    if !state.inner().till_reads.nonces.load((terminal_id, nonce)).await? {
        return Err(ApiError::unauthorized(ErrorCode::ReplayedRequest, "this nonce was already used"));
    }
    Ok(())
}

/// The published QR verification keys (current and previous), for tills to verify offline.
#[utoipa::path(get, path = "/v1/keys", operation_id = "list_qr_keys",
    responses((status = 200, body = KeyRing, description = "the current key and the previous one, if any"),
        (status = 503, body = super::error::ErrorBody, description = "database_busy, timeout")))]
pub async fn keys(State(state): State<AppState>) -> Result<Json<KeyRing>, ApiError> {
    Ok(Json(state.qr().ring().await?))
}

/// The body of a redemption or a card payment ([`OrderBody`]) with its amount read as yuan (at
/// most two places), so that a bad amount is refused by [`parse_json`] like any ill-formed field.
pub(super) struct Order {
    pub(super) qr: String,
    pub(super) order_amount: Fen,
    pub(super) order_ref: String,
}

impl<'de> Deserialize<'de> for Order {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let body = OrderBody::deserialize(deserializer)?;
        let order_amount = Fen::parse_yuan(&body.order_amount)
            .map_err(|e| serde::de::Error::custom(format_args!("order_amount: {e}")))?;
        Ok(Order { qr: body.qr, order_amount, order_ref: body.order_ref })
    }
}

/// A wire answer as the JSON text the service sends and stores.
pub(super) fn answer_text(answer: &impl Serialize) -> Result<String, ApiError> {
    serde_json::to_string(answer).map_err(|_| ApiError::internal())
}

/// What a redemption will write, once every check has passed.
pub(crate) struct Plan {
    pub(crate) voucher: Voucher,
    pub(crate) batch: Batch,
    pub(crate) season: Season,
    pub(crate) discount: Fen,
    /// (funder, value part, discount part)
    pub(crate) parts: Vec<(crate::domain::region::RegionCode, Fen, Fen)>,
}

/// The funder parts a redemption stores and answers: each funder's share of the discount (a
/// share of 0.00 is left out).
fn funder_shares(plan: &Plan) -> Vec<FunderShare> {
    let parts = plan.parts.iter().filter(|(_, _, discount)| !discount.is_zero());
    parts
        .map(|(funder, _, discount)| FunderShare { funder: funder.to_string(), amount: discount.to_string() })
        .collect()
}

pub(super) fn token_error(error: TokenError) -> ApiError {
    match error {
        TokenError::Expired(_) => {
            ApiError::new(axum::http::StatusCode::GONE, ErrorCode::QrExpired, error.to_string())
        }
        other => ApiError::unprocessable(ErrorCode::QrInvalid, other.to_string()),
    }
}

/// The scanned QR token, verified, and the voucher it names: the first of `redeem`'s token
/// checks (form and signature, expiry, kind), each with its own code.
async fn scanned_voucher(state: &AppState, qr: &str) -> Result<(TokenPayload, Voucher), ApiError> {
    let token = QrToken::parse(qr).map_err(token_error)?;
    let now = state.clock().now();
    let ring = state.qr().ring().await?;
    let payload = ring.verify(&token, now.unix_us().div_euclid(1_000_000)).map_err(token_error)?.clone();
    if payload.kind != TokenKind::Voucher {
        return Err(ApiError::unprocessable(ErrorCode::QrInvalid, "this is not a voucher code"));
    }
    let voucher = state
        .inner()
        .till_reads
        .vouchers
        .load(payload.subject)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::VoucherNotFound, "no such voucher"))?;
    Ok((payload, voucher))
}

/// The rest of the checks on a scanned voucher, cheapest first, each with its own code, and the
/// discount with its split between the funders.
async fn plan(
    state: &AppState,
    merchant: &Merchant,
    scanned: (TokenPayload, Voucher),
    order_amount: Fen,
) -> Result<(Plan, Vec<u8>), ApiError> {
    let (payload, voucher) = scanned;
    let now = state.clock().now();
    let status = voucher.status_at(now);
    if status != VoucherStatus::Active {
        // A spent token is reported as such; the group re-checks the nonce under the lock.
        if state.store().qr_nonce_used(&payload.nonce).await? {
            return Err(ApiError::conflict(
                ErrorCode::QrReplayed,
                "this QR code was already used; refresh it on the phone",
            ));
        }
        if batch_and_season(state, &voucher).await?.1.closed_at.is_some() {
            return Err(season_closed());
        }
        return Err(not_redeemable(status.as_str()));
    }
    let (batch, season) = batch_and_season(state, &voucher).await?;
    if season.status_at(now) != SeasonStatus::Open {
        return Err(ApiError::conflict(ErrorCode::SeasonClosed, "the season is not open"));
    }
    merchant.eligible_for(&batch).map_err(|m| ApiError::forbidden_code(ErrorCode::MerchantNotEligible, m))?;
    let ceiling = season.subsidy_ceilings.percent_for(merchant.category);
    let discount = batch
        .terms
        .discount_within(order_amount, ceiling)
        .map_err(|e| ApiError::unprocessable(ErrorCode::BelowMinSpend, e.to_string()))?;
    if discount.is_zero() {
        return Err(ApiError::unprocessable(
            ErrorCode::BelowMinSpend,
            "the order is too small for any discount",
        ));
    }
    let parts = funder_parts(&batch, voucher.value, discount);
    Ok((Plan { voucher, batch, season, discount, parts }, payload.nonce.to_vec()))
}

/// The voucher's batch and season, from a short-lived cache (they change rarely; the group
/// commit re-checks everything that matters for money under the ledger lock).
async fn batch_and_season(state: &AppState, voucher: &Voucher) -> Result<(Batch, Season), ApiError> {
    if let Some(found) = state.inner().batches.get(&voucher.batch_id) {
        return Ok(found);
    }
    let batch = state.store().batch(voucher.batch_id).await?.ok_or_else(ApiError::internal)?;
    let season = state.store().season(voucher.season_id).await?.ok_or_else(ApiError::internal)?;
    state.inner().batches.insert(voucher.batch_id, (batch.clone(), season.clone()));
    Ok((batch, season))
}

fn season_closed() -> ApiError {
    ApiError::conflict(ErrorCode::SeasonClosed, "the season is closed: no more redemptions or reversals")
}

fn not_redeemable(state: &str) -> ApiError {
    ApiError::conflict(ErrorCode::VoucherNotRedeemable, format!("the voucher is {state}"))
}

/// Redeems a voucher at the till (a signed terminal request with an Idempotency-Key).
#[utoipa::path(post, path = "/v1/redemptions", operation_id = "redeem", security(("terminal_signature" = [])),
    params(("Idempotency-Key" = String, Header, description = "1-128 visible ASCII characters, the same on every retry")),
    request_body = OrderBody,
    responses((status = 201, body = Redemption, description = "the redemption"),
        (status = 400, body = super::error::ErrorBody, description = "missing_idempotency_key, invalid_idempotency_key, malformed_json"),
        (status = 401, body = super::error::ErrorBody, description = "missing_signature, unknown_terminal, timestamp_malformed, stale_request, bad_signature, replayed_request"),
        (status = 403, body = super::error::ErrorBody, description = "terminal_revoked, merchant_suspended, merchant_not_eligible"),
        (status = 404, body = super::error::ErrorBody, description = "voucher_not_found"),
        (status = 409, body = super::error::ErrorBody, description = "qr_replayed, voucher_not_redeemable, season_closed, order_ref_used, stacking_not_allowed, order_amount_mismatch, order_changed, merchant_limit_reached, budget_exceeded"),
        (status = 410, body = super::error::ErrorBody, description = "qr_expired"),
        (status = 413, body = super::error::ErrorBody, description = "body_too_large"),
        (status = 422, body = super::error::ErrorBody, description = "invalid_body, qr_invalid, below_min_spend, idempotency_key_reused"),
        (status = 503, body = super::error::ErrorBody, description = "database_busy, timeout")))]
pub async fn redeem(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let (ctx, nonce) = verify_terminal(&state, &method, &uri, &headers, &body).await?;
    let scope = format!("terminal:{}", ctx.terminal.id);
    let hash = request_hash("POST", "/v1/redemptions", &body);
    if let Err(refusal) = ctx.standing() {
        check_nonce(&state, ctx.terminal.id, nonce).await?;
        return match replay_if_known(state.store(), &scope, &key, &hash).await? {
            Some(first_answer) => Ok(first_answer),
            None => Err(refusal),
        };
    }
    // No lookup of the key here: the group commit checks it under the ledger lock, and every
    // refusal path replays a stored answer when there is one (see `remember_refusal`).
    let parsed: Result<Order, ApiError> = parse_json(&body);
    let order_ref = parsed.as_ref().ok().and_then(|r| order_ref(&r.order_ref));
    let order_ref_ok = order_ref.is_some();
    let order_ref = order_ref.unwrap_or_default();
    // Three independent reads in one wait instead of three in a row: the request nonce, the card
    // payment on the order and the scanned voucher. Their outcomes are applied below in the order
    // the checks have always had (the nonce first), so the answers do not change.
    let card_lookup = async {
        if !order_ref_ok {
            return Ok(None);
        }
        state.inner().till_reads.card_payments.load((ctx.merchant.id, order_ref.clone())).await
    };
    let scan = async {
        match &parsed {
            Ok(request) => Some(scanned_voucher(&state, &request.qr).await),
            Err(_) => None,
        }
    };
    let (fresh, card_payment, scanned) =
        tokio::join!(check_nonce(&state, ctx.terminal.id, nonce), card_lookup, scan);
    fresh?;
    let request = parsed?;
    if !order_ref_ok || request.order_amount.is_zero() {
        return Err(ApiError::unprocessable(ErrorCode::InvalidBody, ORDER_FIELDS_RULE));
    }
    let record = |status: u16, body: String| IdemRecord {
        scope: scope.clone(),
        key: key.clone(),
        request_hash: hash.clone(),
        status,
        body,
    };
    // The member discount first: a card payment on this order sets the voucher's basis.
    let card_payment = card_payment?;
    let (basis, member_discount) = match voucher_basis(request.order_amount, card_payment.as_ref()) {
        Ok(basis) => basis,
        Err(refusal) => return remember_refusal(&state, refusal, record).await,
    };
    let planned = match scanned {
        Some(Ok(scanned)) => plan(&state, &ctx.merchant, scanned, basis).await,
        Some(Err(refusal)) => Err(refusal),
        None => Err(ApiError::internal()),
    };
    let (plan, qr_nonce) = match planned {
        Ok(planned) => planned,
        Err(refusal) => return remember_refusal(&state, refusal, record).await,
    };
    let priced = Priced { order_amount: request.order_amount, basis, member_discount, card_payment };
    let redemption = new_redemption(&state, &ctx, plan, priced, order_ref, qr_nonce, record)?;
    let answer = redemption.answer.clone();
    match state.redemptions().commit(redemption).await {
        Ok(()) => Ok(json_response(201, answer.body)),
        Err(error) => write_refusal(&state, error, &answer).await,
    }
}

/// What the voucher applies to: the order after the member discount of a card payment on the
/// same order (and that discount), or the whole order. Refused when the card payment was for
/// another amount, or when nothing is left to pay.
fn voucher_basis(
    order_amount: Fen,
    card_payment: Option<&CardPaymentRecord>,
) -> Result<(Fen, Option<Fen>), ApiError> {
    let (basis, member_discount) = match card_payment {
        None => (order_amount, None),
        Some(paid) if paid.order_amount_fen != order_amount.as_fen() => {
            return Err(ApiError::conflict(
                ErrorCode::OrderAmountMismatch,
                format!(
                    "a card payment on this order was for {}; send the same order_amount",
                    Fen::new(paid.order_amount_fen).map(|f| f.to_string()).unwrap_or_default()
                ),
            ));
        }
        Some(paid) => {
            let discount = Fen::new(paid.discount_fen).map_err(|_| ApiError::internal())?;
            let basis = order_amount.checked_sub(discount).ok_or_else(ApiError::internal)?;
            (basis, Some(discount))
        }
    };
    if basis.is_zero() {
        return Err(ApiError::unprocessable(
            ErrorCode::BelowMinSpend,
            "nothing is left to pay after the member discount",
        ));
    }
    Ok((basis, member_discount))
}

/// The amounts of an order as priced before the voucher: what was asked, what the voucher
/// applies to, and the card payment that set the difference, if any.
struct Priced {
    order_amount: Fen,
    basis: Fen,
    member_discount: Option<Fen>,
    card_payment: Option<CardPaymentRecord>,
}

/// The redemption to commit, with its entry and the answer stored with it.
fn new_redemption(
    state: &AppState,
    ctx: &TerminalCtx,
    plan: Plan,
    priced: Priced,
    order_ref: String,
    qr_nonce: Vec<u8>,
    record: impl Fn(u16, String) -> IdemRecord,
) -> Result<NewRedemption, ApiError> {
    let id = Uuid::now_v7();
    let funders = funder_shares(&plan);
    let funders_json = answer_text(&funders)?;
    let payable = priced.basis.checked_sub(plan.discount).unwrap_or(Fen::ZERO);
    // With a card payment on the order: its member discount, and the basis the voucher applied to.
    let card = priced.member_discount.zip(priced.card_payment.as_ref());
    let answer = Redemption {
        redemption_id: id,
        voucher_id: plan.voucher.id,
        merchant_id: ctx.merchant.id.as_uuid(),
        order_ref: order_ref.clone(),
        order_amount: priced.order_amount.to_string(),
        discount: plan.discount.to_string(),
        payable: payable.to_string(),
        funders,
        member_discount: card.map(|(discount, _)| discount.to_string()),
        voucher_basis: card.map(|_| priced.basis.to_string()),
        card_payment_id: card.map(|(_, paid)| paid.id),
    };
    Ok(NewRedemption {
        id,
        voucher_id: plan.voucher.id,
        merchant_id: ctx.merchant.id,
        terminal_id: ctx.terminal.id,
        season_id: plan.season.id,
        batch_id: plan.batch.id,
        order_slot: order_slot(&plan.season, &plan.batch),
        provincial: plan.batch.issuer.level() == RegionLevel::Province,
        order_ref,
        // The amount the voucher applied to: the order after any member discount.
        order_amount_fen: priced.basis.as_fen(),
        discount_fen: plan.discount.as_fen(),
        funders_json,
        redeemed_at: state.clock().now(),
        qr_nonce,
        card_payment_id: priced.card_payment.as_ref().map(|p| p.id),
        citizen_id: plan.voucher.citizen_id,
        merchant_redemption_limit: plan.season.merchant_redemption_limit,
        entry: redemption_entry(&plan.batch, &plan.parts, ctx.merchant.id, id),
        answer: record(201, answer_text(&answer)?),
    })
}

/// Stores a refusal under the idempotency key so a retry gets the same answer.
pub(super) async fn remember_refusal(
    state: &AppState,
    refusal: ApiError,
    record: impl Fn(u16, String) -> IdemRecord,
) -> Result<Response, ApiError> {
    if refusal.status.is_client_error() {
        let body = json!({"error": {"code": refusal.code, "message": refusal.message}}).to_string();
        let stored = record(refusal.status.as_u16(), body);
        if let Err(WriteError::IdempotencyTaken) = state.store().save_answer(&stored).await {
            return replay_if_known(state.store(), &stored.scope, &stored.key, &stored.request_hash)
                .await?
                .ok_or_else(ApiError::internal);
        }
    }
    Err(refusal)
}

async fn write_refusal(
    state: &AppState,
    error: WriteError,
    stored: &IdemRecord,
) -> Result<Response, ApiError> {
    let refusal = match error {
        WriteError::IdempotencyTaken => {
            return replay_if_known(state.store(), &stored.scope, &stored.key, &stored.request_hash)
                .await?
                .ok_or_else(ApiError::internal);
        }
        WriteError::Refused(Refusal::Code(code)) => till_refusal(code),
        WriteError::Refused(Refusal::VoucherState(state)) => not_redeemable(&state),
        WriteError::Refused(other) => ApiError::constraint_refusal(&other.to_string()),
        WriteError::Constraint(constraint) => ApiError::constraint_refusal(&constraint.to_string()),
        WriteError::Ledger(refusal) => ApiError::conflict(ErrorCode::BudgetExceeded, refusal.to_string()),
        WriteError::Storage(error) => return Err(error.into()),
    };
    let body = json!({"error": {"code": refusal.code, "message": refusal.message}}).to_string();
    let record = IdemRecord { status: refusal.status.as_u16(), body, ..stored.clone() };
    if let Err(WriteError::IdempotencyTaken) = state.store().save_answer(&record).await {
        return replay_if_known(state.store(), &record.scope, &record.key, &record.request_hash)
            .await?
            .ok_or_else(ApiError::internal);
    }
    Err(refusal)
}

/// The answer to a redemption or reversal the storage refused with `code`.
fn till_refusal(code: ErrorCode) -> ApiError {
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
        other => return ApiError::constraint_refusal(other.as_str()),
    };
    ApiError::conflict(code, message)
}

/// A request about a merchant from one of its own terminals (signed; there is no merchant staff
/// role) or from staff that `rule` (a capability of `crate::domain::access`) lets act for the
/// merchant's city.
pub(super) async fn merchant_or_staff(
    state: &AppState,
    staff: Option<super::extract::Staff>,
    merchant: &Merchant,
    rule: fn(
        &crate::domain::staff::StaffScope,
        crate::domain::region::RegionCode,
    ) -> Result<(), crate::domain::access::Denied>,
    request: (&Method, &Uri, &HeaderMap),
    body: &[u8],
) -> Result<(), ApiError> {
    let (method, uri, headers) = request;
    if headers.contains_key(HEADER_TERMINAL) {
        let ctx = authenticate(state, method, uri, headers, body).await?;
        if ctx.merchant.id != merchant.id {
            return Err(ApiError::forbidden("a terminal acts only for its own merchant"));
        }
        return Ok(());
    }
    let staff = staff.ok_or_else(|| {
        ApiError::unauthorized(
            ErrorCode::Unauthenticated,
            "send a staff key, or sign the request as the merchant's terminal",
        )
    })?;
    staff.may(rule, merchant.city)
}

/// What `order_ref` and `order_amount` must be, for the refusal of either.
pub(super) const ORDER_FIELDS_RULE: &str =
    "order_ref is 1-64 bytes with no control characters, and order_amount above 0.00";

/// A till's order reference: trimmed, 1 to 64 bytes, no control characters.
pub(super) fn order_ref(text: &str) -> Option<String> {
    plain_text(text, 64).filter(|r| !r.is_empty() && r.len() <= 64).map(str::to_owned)
}

/// The reason of a reversal body: trimmed, at most 200 characters (longer ones are cut), not
/// empty, no control characters.
pub(super) fn reversal_reason(body: &[u8]) -> Result<String, ApiError> {
    let request: ReasonBody = parse_json(body)?;
    let reason = request.reason.trim().chars().take(200).collect::<String>();
    match plain_text(&reason, 200) {
        Some(reason) if !reason.is_empty() => Ok(reason.to_owned()),
        Some(_) => Err(ApiError::unprocessable(ErrorCode::InvalidBody, "a reversal needs a reason")),
        None => Err(ApiError::unprocessable(ErrorCode::InvalidBody, "the reason holds a control character")),
    }
}

/// The start of a keyed terminal write: the terminal that signed it, the idempotency scope and
/// request hash, or the stored answer if this key was used before.
pub(super) enum TerminalWrite {
    Replay(Response),
    Fresh { ctx: TerminalCtx, scope: String, hash: Vec<u8> },
}

pub(super) async fn terminal_write(
    state: &AppState,
    request: (&Method, &Uri, &HeaderMap),
    path: &str,
    key: &str,
    body: &[u8],
) -> Result<TerminalWrite, ApiError> {
    let (method, uri, headers) = request;
    let ctx = authenticate_signature(state, method, uri, headers, body).await?;
    let scope = format!("terminal:{}", ctx.terminal.id);
    let hash = request_hash("POST", path, body);
    Ok(match replay_if_known(state.store(), &scope, key, &hash).await? {
        Some(replayed) => TerminalWrite::Replay(replayed),
        None => {
            ctx.standing()?;
            TerminalWrite::Fresh { ctx, scope, hash }
        }
    })
}

/// Reverses a redemption (a refunded sale), signed by a terminal of the same merchant.
#[utoipa::path(post, path = "/v1/redemptions/{id}/reversal", operation_id = "reverse_redemption", security(("terminal_signature" = [])),
    params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header, description = "1-128 visible ASCII characters, the same on every retry")),
    request_body = ReasonBody,
    responses((status = 201, body = Reversal, description = "the reversal"),
        (status = 400, body = super::error::ErrorBody, description = "missing_idempotency_key, invalid_idempotency_key, malformed_json"),
        (status = 401, body = super::error::ErrorBody, description = "missing_signature, unknown_terminal, timestamp_malformed, stale_request, bad_signature, replayed_request"),
        (status = 403, body = super::error::ErrorBody, description = "terminal_revoked, merchant_suspended"),
        (status = 404, body = super::error::ErrorBody, description = "redemption_not_found; not_found for an id that is not a UUID"),
        (status = 409, body = super::error::ErrorBody, description = "already_reversed, already_settled, season_closed"),
        (status = 413, body = super::error::ErrorBody, description = "body_too_large"),
        (status = 422, body = super::error::ErrorBody, description = "invalid_body, idempotency_key_reused"),
        (status = 503, body = super::error::ErrorBody, description = "database_busy, timeout")))]
pub async fn reverse(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiPath(redemption_id): ApiPath<Uuid>,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let path = format!("/v1/redemptions/{redemption_id}/reversal");
    let (ctx, scope, hash) =
        match terminal_write(&state, (&method, &uri, &headers), &path, &key, &body).await? {
            TerminalWrite::Replay(replayed) => return Ok(replayed),
            TerminalWrite::Fresh { ctx, scope, hash } => (ctx, scope, hash),
        };
    let reason = reversal_reason(&body)?;
    let record = state.store().redemption(redemption_id).await?.filter(|r| r.merchant_id == ctx.merchant.id);
    let record = record.ok_or_else(|| {
        ApiError::not_found(ErrorCode::RedemptionNotFound, "no such redemption at this merchant")
    })?;
    let answer = IdemRecord { scope, key, request_hash: hash, status: 201, body: String::new() };
    // Planned from the batch as read now; planned again, once, if the batch closed before the
    // commit (a batch closes once, so the second plan sees it as it stays).
    let mut planned_again = false;
    loop {
        let (reversal, after) =
            plan_reversal(&state, &record, ctx.merchant.id, &reason, answer.clone()).await?;
        match state.store().commit_reversal(&reversal).await {
            Ok(()) => {
                if after == AfterReversal::Expired {
                    state.writer().invalidate().await;
                }
                return Ok(json_response(201, reversal.answer.body));
            }
            Err(WriteError::Refused(Refusal::BatchClosedMeanwhile)) if !planned_again => {
                planned_again = true;
            }
            Err(error) => return write_refusal(&state, error, &reversal.answer).await,
        }
    }
}

/// The reversal of `record` as of now: the voucher's fate, the compensating entry, the answer.
async fn plan_reversal(
    state: &AppState,
    record: &crate::storage::RedemptionRecord,
    merchant_id: MerchantId,
    reason: &str,
    mut answer: IdemRecord,
) -> Result<(NewReversal, AfterReversal), ApiError> {
    let voucher = state.store().voucher(record.voucher_id).await?.ok_or_else(ApiError::internal)?;
    let batch = state.store().batch(record.batch_id).await?.ok_or_else(ApiError::internal)?;
    let season = state.store().season(record.season_id).await?.ok_or_else(ApiError::internal)?;
    let now = state.clock().now();
    let discount = Fen::new(record.discount_fen).map_err(|_| ApiError::internal())?;
    let parts = funder_parts(&batch, voucher.value, discount);
    let after = AfterReversal::of(&season, &voucher, now);
    let plan = Plan { voucher, batch, season, discount, parts };
    let reversal_id = Uuid::now_v7();
    let voucher_status = after.status().as_str();
    answer.body = answer_text(&Reversal {
        reversal_id,
        redemption_id: record.id,
        voucher_id: plan.voucher.id,
        voucher_status: voucher_status.to_owned(),
        amount: discount.to_string(),
    })?;
    // Expired by the reversal, the voucher no longer counts toward its holder's caps; active
    // again or forfeited, it still does.
    let season_totals = if after == AfterReversal::Expired {
        SeasonTotalDelta::for_voucher(&plan.season, &plan.voucher, false)
    } else {
        Vec::new()
    };
    let reversal = NewReversal {
        redemption_id: record.id,
        reversal_id,
        voucher_id: plan.voucher.id,
        batch_id: plan.batch.id,
        reason: reason.to_owned(),
        at: now,
        voucher_status,
        reserve_returned: plan.batch.reserve_returned,
        season_totals,
        entry: reversal_entry(&plan.batch, &plan.parts, merchant_id, reversal_id, after),
        answer,
    };
    Ok((reversal, after))
}

/// A redemption, for the merchant's own terminals.
#[utoipa::path(get, path = "/v1/redemptions/{id}", operation_id = "get_redemption", security(("terminal_signature" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = RedemptionView, description = "the redemption as it stands"),
        (status = 401, body = super::error::ErrorBody, description = "missing_signature, unknown_terminal, timestamp_malformed, stale_request, bad_signature, replayed_request"),
        (status = 403, body = super::error::ErrorBody, description = "terminal_revoked, merchant_suspended"),
        (status = 404, body = super::error::ErrorBody, description = "redemption_not_found; not_found for an id that is not a UUID"),
        (status = 503, body = super::error::ErrorBody, description = "database_busy, timeout")))]
pub async fn get(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiPath(redemption_id): ApiPath<Uuid>,
) -> Result<Json<RedemptionView>, ApiError> {
    let ctx = authenticate(&state, &method, &uri, &headers, &[]).await?;
    let record = state.store().redemption(redemption_id).await?.filter(|r| r.merchant_id == ctx.merchant.id);
    let r = record.ok_or_else(|| {
        ApiError::not_found(ErrorCode::RedemptionNotFound, "no such redemption at this merchant")
    })?;
    let yuan = |fen: i64| Fen::new(fen).map(|f| f.to_string()).unwrap_or_default();
    // Stored as the redemption answered them; unreadable, they are a fault of ours (500).
    let funders: Vec<FunderShare> =
        serde_json::from_str(&r.funders_json).map_err(|_| ApiError::internal())?;
    Ok(Json(RedemptionView {
        redemption_id: r.id,
        voucher_id: r.voucher_id,
        merchant_id: r.merchant_id.as_uuid(),
        terminal_id: r.terminal_id,
        order_amount: yuan(r.order_amount_fen),
        discount: yuan(r.discount_fen),
        payable: yuan(r.order_amount_fen - r.discount_fen),
        order_ref: r.order_ref,
        funders,
        redeemed_at: r.redeemed_at.to_string(),
        reversed: r.reversed_at.is_some(),
        reversed_at: r.reversed_at.map(|t| t.to_string()),
        reversal_id: r.reversal_id,
        settled: r.settled,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// The terminal-signed operations declare what the merchant SDK relies on: their own
    /// operation id, the terminal signature scheme (not header parameters), the wire types of
    /// body and answer, and their error statuses with the error body.
    #[test]
    fn terminal_operations_declare_their_contract() {
        let doc = serde_json::to_value(super::super::openapi()).expect("the document serializes");
        let operations = [
            ("/v1/redemptions", "post", "redeem", Some("OrderBody"), "201", "Redemption"),
            (
                "/v1/redemptions/{id}/reversal",
                "post",
                "reverse_redemption",
                Some("ReasonBody"),
                "201",
                "Reversal",
            ),
            ("/v1/redemptions/{id}", "get", "get_redemption", None, "200", "RedemptionView"),
            ("/v1/card-payments", "post", "pay_by_card", Some("OrderBody"), "201", "CardPayment"),
            (
                "/v1/card-payments/{id}/reversal",
                "post",
                "reverse_card_payment",
                Some("ReasonBody"),
                "201",
                "CardReversal",
            ),
            ("/v1/card-payments/{id}", "get", "get_card_payment", None, "200", "CardPaymentView"),
        ];
        for (path, method, id, body, success, answer) in operations {
            let op = &doc["paths"][path][method];
            assert_eq!(op["operationId"], id, "{path}");
            // The four signed headers, one apiKey scheme each, required together (`http::openapi`).
            let signed = serde_json::json!([{"terminal_id": [], "terminal_nonce": [], "terminal_signature": [],
                "terminal_timestamp": []}]);
            assert_eq!(op["security"], signed, "{path}");
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            assert!(
                params.iter().all(|p| !p["name"].as_str().unwrap_or_default().starts_with("Wenhui-")),
                "{path}"
            );
            let request = &op["requestBody"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                request.as_str(),
                body.map(|b| format!("#/components/schemas/{b}")).as_deref(),
                "{path}"
            );
            let responses = &op["responses"];
            let schema =
                |status: &str| responses[status]["content"]["application/json"]["schema"]["$ref"].clone();
            assert_eq!(schema(success), format!("#/components/schemas/{answer}"), "{path}");
            let writes = ["400", "401", "403", "404", "409", "413", "422", "503"];
            let statuses: &[&str] = if body.is_some() { &writes } else { &["401", "403", "404", "503"] };
            for status in statuses {
                assert_eq!(schema(status), "#/components/schemas/ErrorBody", "{path} {status}");
            }
            assert!(doc["components"]["schemas"][answer].is_object(), "{answer} is in the document");
        }
        let keys = &doc["paths"]["/v1/keys"]["get"];
        assert_eq!(keys["operationId"], "list_qr_keys");
        assert_eq!(
            keys["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/KeyRing"
        );
        let ids: Vec<&Value> = doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(_, item)| item.as_object().into_iter().flatten().map(|(_, op)| &op["operationId"]))
            .collect();
        for id in [
            "redeem",
            "reverse_redemption",
            "get_redemption",
            "list_qr_keys",
            "pay_by_card",
            "get_card_payment",
            "reverse_card_payment",
        ] {
            assert_eq!(ids.iter().filter(|i| **i == id).count(), 1, "{id} is unique");
        }
    }
}
