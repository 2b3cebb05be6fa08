//! The till: signed terminal requests, redemptions, reversals, and the published QR keys. The
//! handlers authenticate and parse; what a redemption or reversal checks and writes is decided
//! in `app::till::redeem`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde::{Deserialize, Deserializer};
use wenhui_merchant_sdk::signing::{
    HEADER_NONCE, HEADER_SIGNATURE, HEADER_TERMINAL, HEADER_TIMESTAMP, SignatureError, SignedParts,
    parse_timestamp,
};
use wenhui_merchant_sdk::token::KeyRing;
use wenhui_merchant_sdk::wire::{
    FunderShare, OrderBody, Quote, ReasonBody, Redemption, RedemptionView, Reversal,
};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiBytes, ApiPath, plain_text};
use super::idempotency::{IdempotencyKey, json_response, parse_json, replay_if_known, request_hash};
use crate::app::till::redeem;
use crate::domain::entries::AfterReversal;
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{RedemptionId, TerminalId};
use crate::domain::merchant::{Merchant, MerchantStatus};
use crate::domain::money::Fen;
use crate::domain::text::PlainText;
use crate::storage::{CardPaymentRecord, IdemRecord, Refusal, TerminalRecord, WriteError};

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
    let terminal_id: TerminalId = header(headers, HEADER_TERMINAL)?.parse().map_err(|_| unknown())?;
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
async fn check_nonce(state: &AppState, terminal_id: TerminalId, nonce: String) -> Result<(), ApiError> {
    if !state.inner().till_reads.nonces.load((terminal_id, nonce)).await? {
        return Err(ApiError::unauthorized(ErrorCode::ReplayedRequest, "this nonce was already used"));
    }
    Ok(())
}

/// The published QR verification keys (current and previous), for tills to verify offline; from
/// memory (reloaded each second), with a strong ETag and 304 for an `If-None-Match` naming it.
#[utoipa::path(get, path = "/v1/keys", operation_id = "list_qr_keys",
    params(("If-None-Match" = Option<String>, Header, description = "the ETag of an answer held: 304 if it is still the answer")),
    responses((status = 200, body = KeyRing, description = "the current key and the previous one, if any"),
        (status = 304, description = "not modified: the keys held are current"),
        (status = 503, body = super::error::ErrorBody, description = "database_busy, database_unavailable, timeout")))]
pub async fn keys(
    State(state): State<AppState>,
    if_none_match: super::conditional::IfNoneMatch,
) -> Result<Response, ApiError> {
    let ring = state.qr().ring().await?;
    let rendered = crate::app::public_reads::Rendered::new(super::conditional::to_json(&ring));
    super::conditional::answer(&if_none_match, &rendered, super::conditional::KEYS)
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
        (status = 503, body = super::error::ErrorBody, description = "database_busy, database_unavailable, timeout")))]
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
    let reads = redeem::Reads {
        store: state.store(),
        batches: &state.inner().batches,
        vouchers: &state.inner().till_reads.vouchers,
        now: state.clock().now(),
    };
    let scan = async {
        match &parsed {
            Ok(request) => Some(reads.scanned_voucher(state.qr(), &request.qr).await),
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
    let order = (request.order_amount, order_ref);
    commit_redemption(&state, &ctx, &reads, order, (card_payment?, scanned), record).await
}

/// The card payment on the order and the scanned voucher, as read, checked and planned
/// ([`redeem::check_and_plan`], which the quote shares), then committed by the group writer. A
/// refusal is stored under the key.
async fn commit_redemption(
    state: &AppState,
    ctx: &TerminalCtx,
    reads: &redeem::Reads<'_>,
    (order_amount, order_ref): (Fen, String),
    read: (Option<CardPaymentRecord>, Option<redeem::Scanned>),
    record: impl Fn(u16, String) -> IdemRecord,
) -> Result<Response, ApiError> {
    let (priced, planned) = match redeem::check_and_plan(reads, &ctx.merchant, order_amount, read).await {
        Ok(checked) => checked,
        Err(refusal) => return remember_refusal(state, refusal.into(), record).await,
    };
    let till = redeem::AtTill { merchant_id: ctx.merchant.id, terminal_id: ctx.terminal.id };
    let redemption = redeem::new_redemption(till, planned, priced, order_ref, reads.now, record)?;
    let answer = redemption.answer.clone();
    match state.redemptions().commit(redemption).await {
        Ok(()) => Ok(json_response(201, answer.body)),
        Err(error) => write_refusal(state, error, &answer).await,
    }
}

/// What a redemption of this body would take off now, and the voucher's terms: the same checks
/// and plan as `redeem` ([`redeem::check_and_plan`]), nothing written, the QR token not spent.
#[utoipa::path(post, path = "/v1/redemptions/quote", operation_id = "quote_redemption", security(("terminal_signature" = [])),
    description = "A read: the redemption's checks and plan on the same body, answered without writing anything. \
        The voucher stays unused and the QR token's nonce unspent, so the redemption that follows succeeds with the same token. \
        The request is signed like every terminal request and spends its own request nonce (every request has a fresh one), \
        never the QR token's. No Idempotency-Key: a quote changes nothing, so it may be repeated freely. \
        The refusals are the redemption's, except those only the commit can give under the ledger lock \
        (order_ref_used, stacking_not_allowed, merchant_limit_reached, budget_exceeded), which come at the redemption.",
    request_body = OrderBody,
    responses((status = 200, body = Quote, description = "the voucher's terms, the discount and what the customer would pay"),
        (status = 400, body = super::error::ErrorBody, description = "malformed_json"),
        (status = 401, body = super::error::ErrorBody, description = "missing_signature, unknown_terminal, timestamp_malformed, stale_request, bad_signature, replayed_request"),
        (status = 403, body = super::error::ErrorBody, description = "terminal_revoked, merchant_suspended, merchant_not_eligible"),
        (status = 404, body = super::error::ErrorBody, description = "voucher_not_found"),
        (status = 409, body = super::error::ErrorBody, description = "qr_replayed, voucher_not_redeemable, season_closed, order_amount_mismatch"),
        (status = 410, body = super::error::ErrorBody, description = "qr_expired"),
        (status = 413, body = super::error::ErrorBody, description = "body_too_large"),
        (status = 422, body = super::error::ErrorBody, description = "invalid_body, qr_invalid, below_min_spend"),
        (status = 503, body = super::error::ErrorBody, description = "database_busy, database_unavailable, timeout")))]
pub async fn quote(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Json<Quote>, ApiError> {
    let ctx = authenticate(&state, &method, &uri, &headers, &body).await?;
    let request: Order = parse_json(&body)?;
    let order_ref = order_ref(&request.order_ref).filter(|_| !request.order_amount.is_zero());
    let order_ref =
        order_ref.ok_or_else(|| ApiError::unprocessable(ErrorCode::InvalidBody, ORDER_FIELDS_RULE))?;
    let reads = redeem::Reads {
        store: state.store(),
        batches: &state.inner().batches,
        vouchers: &state.inner().till_reads.vouchers,
        now: state.clock().now(),
    };
    let card_lookup = state.inner().till_reads.card_payments.load((ctx.merchant.id, order_ref));
    let (card_payment, scanned) = tokio::join!(card_lookup, reads.scanned_voucher(state.qr(), &request.qr));
    let read = (card_payment?, Some(scanned));
    Ok(Json(redeem::quote(&reads, &ctx.merchant, request.order_amount, read).await?))
}

/// Stores a refusal under the idempotency key so a retry gets the same answer.
pub(super) async fn remember_refusal(
    state: &AppState,
    refusal: ApiError,
    record: impl Fn(u16, String) -> IdemRecord,
) -> Result<Response, ApiError> {
    if refusal.status.is_client_error() {
        let stored = record(refusal.status.as_u16(), refusal.body_text());
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
        WriteError::Refused(Refusal::Code(code)) => redeem::till_refusal(code).into(),
        WriteError::Refused(Refusal::VoucherState(state)) => redeem::not_redeemable(&state).into(),
        WriteError::Refused(other) => ApiError::constraint_refusal(&other.to_string()),
        WriteError::Constraint(constraint) => ApiError::constraint_refusal(&constraint.to_string()),
        WriteError::Ledger(refusal) => ApiError::conflict(ErrorCode::BudgetExceeded, refusal.to_string()),
        WriteError::Storage(error) => return Err(error.into()),
    };
    let record = IdemRecord { status: refusal.status.as_u16(), body: refusal.body_text(), ..stored.clone() };
    if let Err(WriteError::IdempotencyTaken) = state.store().save_answer(&record).await {
        return replay_if_known(state.store(), &record.scope, &record.key, &record.request_hash)
            .await?
            .ok_or_else(ApiError::internal);
    }
    Err(refusal)
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
    "order_ref is 1-64 bytes with no control or invisible formatting characters, and order_amount above 0.00";

/// A till's order reference: trimmed, 1 to 64 bytes, plain text (`domain::text`).
pub(super) fn order_ref(text: &str) -> Option<String> {
    plain_text(text, 64).filter(|r| !r.is_empty() && r.as_str().len() <= 64).map(PlainText::into_string)
}

/// The reason of a reversal body: trimmed, at most 200 characters (longer ones are cut), not
/// empty, no control characters.
pub(super) fn reversal_reason(body: &[u8]) -> Result<String, ApiError> {
    let request: ReasonBody = parse_json(body)?;
    let reason = request.reason.trim().chars().take(200).collect::<String>();
    match plain_text(&reason, 200) {
        Some(reason) if !reason.is_empty() => Ok(reason.into_string()),
        Some(_) => Err(ApiError::unprocessable(ErrorCode::InvalidBody, "a reversal needs a reason")),
        None => Err(ApiError::unprocessable(
            ErrorCode::InvalidBody,
            "the reason holds a control or invisible formatting character",
        )),
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
        (status = 503, body = super::error::ErrorBody, description = "database_busy, database_unavailable, timeout")))]
pub async fn reverse(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiPath(redemption_id): ApiPath<RedemptionId>,
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
        let now = state.clock().now();
        let (reversal, after) =
            redeem::plan_reversal(state.store(), &record, &reason, now, answer.clone()).await?;
        match state.store().commit_reversal(&reversal).await {
            Ok(()) => {
                crate::telemetry::reversed(crate::telemetry::VOUCHER);
                if after == AfterReversal::Expired {
                    state.announce(crate::app::events::NodeEvent::StockReturned(record.batch_id)).await;
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

/// A redemption, for the merchant's own terminals.
#[utoipa::path(get, path = "/v1/redemptions/{id}", operation_id = "get_redemption", security(("terminal_signature" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = RedemptionView, description = "the redemption as it stands"),
        (status = 401, body = super::error::ErrorBody, description = "missing_signature, unknown_terminal, timestamp_malformed, stale_request, bad_signature, replayed_request"),
        (status = 403, body = super::error::ErrorBody, description = "terminal_revoked, merchant_suspended"),
        (status = 404, body = super::error::ErrorBody, description = "redemption_not_found; not_found for an id that is not a UUID"),
        (status = 503, body = super::error::ErrorBody, description = "database_busy, database_unavailable, timeout")))]
pub async fn get(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    ApiPath(redemption_id): ApiPath<RedemptionId>,
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
        redemption_id: r.id.as_uuid(),
        voucher_id: r.voucher_id.as_uuid(),
        merchant_id: r.merchant_id.as_uuid(),
        terminal_id: r.terminal_id.as_uuid(),
        order_amount: yuan(r.order_amount_fen),
        discount: yuan(r.discount_fen),
        payable: yuan(r.order_amount_fen - r.discount_fen),
        order_ref: r.order_ref,
        funders,
        redeemed_at: r.redeemed_at.to_string(),
        reversed: r.reversed_at.is_some(),
        reversed_at: r.reversed_at.map(|t| t.to_string()),
        reversal_id: r.reversal_id.map(uuid::Uuid::from),
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
            ("/v1/redemptions/quote", "post", "quote_redemption", Some("OrderBody"), "200", "Quote"),
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
        let quote = &doc["paths"]["/v1/redemptions/quote"]["post"];
        let said = quote["description"].as_str().unwrap_or_default();
        assert!(said.contains("No Idempotency-Key") && said.contains("never the QR token's"), "{said}");
        let params = quote["parameters"].as_array().cloned().unwrap_or_default();
        assert!(params.iter().all(|p| p["name"] != "Idempotency-Key"), "a read takes no key");
        for id in [
            "redeem",
            "quote_redemption",
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
