//! Merchants and their terminals (staff endpoints).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::{
    ApiBytes, ApiPath, ApiQuery, PLAIN_TEXT_RULE, Staff, next_cursor, page_limit, plain_text,
};
use super::idempotency::{IdempotencyKey, Prelude, json_response, parse_json, staff_prelude, write_outcome};
use crate::app::merchants::{self, Asked};
use crate::domain::access;
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{MerchantId, TerminalId};
use crate::domain::merchant::{
    ACCOUNT_REQUEST_TTL_S, AccountRequest, Merchant, MerchantStatus, SettlementAccount,
};
use crate::domain::region::RegionCode;
use crate::domain::staff::Role;
use crate::domain::time::Timestamp;
use crate::storage::{AccountChange, Constraint, IdemRecord, NewAccountRequest, TerminalRecord, WriteError};

fn invalid(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::unprocessable(code, message)
}

fn text_field(value: &str, what: &str, max_chars: usize) -> Result<String, ApiError> {
    Ok(merchants::text_field(value, what, max_chars)?)
}

/// Any staff role over the merchant's city may see its account history.
fn require_viewer_of(staff: &Staff, city: RegionCode) -> Result<(), ApiError> {
    staff.may(access::see_merchants, city)
}

/// City admins manage their own city's merchants; province admins their province's.
fn require_admin_of(staff: &Staff, city: RegionCode) -> Result<(), ApiError> {
    staff.may(access::manage_merchant, city)
}

/// A merchant as the API shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MerchantAnswer {
    id: MerchantId,
    name: String,
    credit_code: String,
    category: String,
    #[schema(value_type = String)]
    city: RegionCode,
    /// active or suspended.
    status: &'static str,
    settlement_account: AccountAnswer,
}

/// Where a merchant is paid.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AccountAnswer {
    bank: String,
    account_no: String,
    account_name: String,
}

pub fn merchant_json(merchant: &Merchant) -> MerchantAnswer {
    MerchantAnswer {
        id: merchant.id,
        name: merchant.name.clone(),
        credit_code: merchant.credit_code.as_str().to_owned(),
        category: merchant.category.as_str().to_owned(),
        city: merchant.city,
        status: merchant.status.as_str(),
        settlement_account: account_json(&merchant.settlement),
    }
}

/// A page of merchants; `next_after` is null on the last page.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MerchantPage {
    merchants: Vec<MerchantAnswer>,
    next_after: Option<MerchantId>,
}

/// A merchant's new status.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MerchantStatusAnswer {
    id: MerchantId,
    status: &'static str,
}

/// A terminal registered.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TerminalAnswer {
    terminal_id: TerminalId,
    merchant_id: MerchantId,
    label: String,
}

/// A terminal revoked (revoking again answers the same).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TerminalRevokedAnswer {
    terminal_id: TerminalId,
    revoked: bool,
}

/// A change of settlement account made.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AccountChangeAnswer {
    id: Uuid,
    seq: i64,
    #[schema(format = DateTime)]
    changed_at: String,
    changed_by_key: Uuid,
    request_id: Option<Uuid>,
    requested_by_key: Option<Uuid>,
    reason: String,
    from: AccountAnswer,
    to: AccountAnswer,
}

/// A request to change a settlement account, waiting for or given its decision.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AccountRequestAnswer {
    id: Uuid,
    seq: i64,
    /// pending, approved, rejected or expired.
    status: &'static str,
    #[schema(format = DateTime)]
    requested_at: String,
    requested_by_key: Uuid,
    reason: String,
    to: AccountAnswer,
    #[schema(format = DateTime)]
    expires_at: String,
    decision: Option<DecisionAnswer>,
}

/// Who decided a request, and when.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DecisionAnswer {
    #[schema(format = DateTime)]
    decided_at: String,
    decided_by_key: Uuid,
    note: String,
}

/// The merchant, with the account it already has and its latest change.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AccountUnchanged {
    merchant: MerchantAnswer,
    last_change: Option<AccountChangeAnswer>,
}

/// The merchant, with a request about its account.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MerchantAndRequest {
    merchant: MerchantAnswer,
    request: AccountRequestAnswer,
}

/// A request as decided.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct RequestAnswer {
    request: AccountRequestAnswer,
}

/// A page of a merchant's account changes; `next_after_seq` is null on the last page.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AccountChangesPage {
    merchant_id: MerchantId,
    changes: Vec<AccountChangeAnswer>,
    next_after_seq: Option<i64>,
}

/// A page of a merchant's account requests; `next_after_seq` is null on the last page.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AccountRequestsPage {
    merchant_id: MerchantId,
    requests: Vec<AccountRequestAnswer>,
    next_after_seq: Option<i64>,
}

/// An answer as the text stored with an idempotent write.
fn answer_text(answer: &impl serde::Serialize) -> Result<String, ApiError> {
    serde_json::to_string(answer).map_err(|error| {
        tracing::error!(%error, "an answer did not serialise");
        ApiError::internal()
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SettlementBody {
    bank: String,
    account_no: String,
    account_name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateMerchant {
    name: String,
    credit_code: String,
    category: String,
    city: String,
    settlement_account: SettlementBody,
}

fn parse_merchant(request: CreateMerchant) -> Result<Merchant, ApiError> {
    let account = &request.settlement_account;
    Ok(merchants::new_merchant(&merchants::MerchantAsked {
        name: &request.name,
        credit_code: &request.credit_code,
        category: &request.category,
        city: &request.city,
        account: merchants::AccountAsked {
            bank: &account.bank,
            account_no: &account.account_no,
            account_name: &account.account_name,
        },
    })?)
}

/// Registers a merchant (city_admin of its city, or province_admin).
#[utoipa::path(post, operation_id = "create_merchant", request_body = CreateMerchant, path = "/v1/merchants", security(("staff_key" = [])), params(("Idempotency-Key" = String, Header)), responses((status = 201, description = "the merchant, its account number masked but its last four digits", body = MerchantAnswer), (status = 409, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    staff: Staff,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    staff.require(&[Role::ProvinceAdmin, Role::CityAdmin])?;
    let (scope, hash) = match staff_prelude(state.store(), staff.key_id, "/v1/merchants", &key, &body).await?
    {
        Prelude::Replay(replayed) => return Ok(replayed),
        Prelude::Fresh { scope, hash } => (scope, hash),
    };
    let merchant = parse_merchant(parse_json(&body)?)?;
    require_admin_of(&staff, merchant.city)?;
    // The answer is kept for retries as long as the key's other answers: it shows the account
    // number masked, which the creator just sent anyway (the merchant's GET shows it whole).
    let mut answer = merchant_json(&merchant);
    answer.settlement_account.account_no = merchant.settlement.masked_account_no();
    let record = IdemRecord { scope, key, request_hash: hash, status: 201, body: answer_text(&answer)? };
    let outcome = state.store().insert_merchant(&merchant, &record).await;
    write_outcome(state.store(), outcome, record, |refused| match refused {
        WriteError::Constraint(Constraint::MerchantCreditCode) => ApiError::conflict(
            ErrorCode::MerchantExists,
            "a merchant with this credit code is already registered",
        ),
        other => ApiError::constraint_refusal(&other.to_string()),
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    city: Option<String>,
    /// A part of the merchant's name (letters compared without case).
    #[serde(default)]
    name: Option<String>,
    /// The `next_after` of the previous page.
    #[serde(default)]
    after: Option<Uuid>,
    #[serde(default)]
    limit: Option<u32>,
}

/// Merchants listed per page unless the caller asks for fewer or more.
const MERCHANTS_PAGE_DEFAULT: u32 = 100;
/// The most merchants one page holds.
const MERCHANTS_PAGE_MAX: u32 = 500;

/// Merchants of a city (or of the caller's whole region when no city is given), by name, a page
/// at a time: `next_after` is the `after` of the next page, null on the last. With `name`, only
/// those whose name contains it.
#[utoipa::path(get, operation_id = "list_merchants", path = "/v1/merchants", security(("staff_key" = [])),
    params(("city" = Option<String>, Query), ("name" = Option<String>, Query, description = "a part of the name, 1 to 50 characters"), ("after" = Option<Uuid>, Query, description = "next_after of the previous page"),
        ("limit" = Option<u32>, Query, description = "1 to 500, 100 by default")),
    responses((status = 200, description = "a page of merchants", body = MerchantPage),
        (status = 422, body = super::error::ErrorBody, description = "invalid_region, invalid_field, invalid_limit, invalid_cursor")))]
pub async fn list(
    State(state): State<AppState>,
    staff: Staff,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<MerchantPage>, ApiError> {
    let region = match &query.city {
        Some(city) => city.parse().map_err(|e: crate::domain::region::RegionError| {
            invalid(ErrorCode::InvalidRegion, e.to_string())
        })?,
        None => staff.scope.region,
    };
    staff.may(access::see_merchants, region)?;
    let limit = page_limit(query.limit, MERCHANTS_PAGE_DEFAULT, MERCHANTS_PAGE_MAX)?;
    let name = merchants::search_name(query.name.as_deref())?;
    let after = match query.after {
        Some(id) => Some(state.store().merchant(id.into()).await?.ok_or_else(|| {
            invalid(ErrorCode::InvalidCursor, "after names no merchant: pass a page's next_after")
        })?),
        None => None,
    };
    let mut merchants =
        merchants::search(state.store(), region, name.as_deref(), after.as_ref(), i64::from(limit) + 1)
            .await?;
    let next_after = next_cursor(&mut merchants, limit).map(|last| last.id);
    Ok(Json(MerchantPage { merchants: merchants.iter().map(merchant_json).collect(), next_after }))
}

pub(super) async fn load(state: &AppState, id: MerchantId) -> Result<Merchant, ApiError> {
    state
        .store()
        .merchant(id)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::MerchantNotFound, "no such merchant"))
}

async fn set_status(
    state: &AppState,
    staff: &Staff,
    id: MerchantId,
    status: MerchantStatus,
) -> Result<Json<MerchantStatusAnswer>, ApiError> {
    let merchant = load(state, id).await?;
    require_admin_of(staff, merchant.city)?;
    state.store().set_merchant_status(id, status.as_str()).await?;
    state.announce(crate::app::events::NodeEvent::MerchantChanged(id)).await;
    tracing::info!(merchant = %id, status = status.as_str(), "merchant status changed");
    Ok(Json(MerchantStatusAnswer { id, status: status.as_str() }))
}

#[utoipa::path(post, operation_id = "suspend_merchant", path = "/v1/merchants/{id}/suspend", security(("staff_key" = [])), params(("id" = Uuid, Path)), responses((status = 200, description = "the merchant's new status", body = MerchantStatusAnswer)))]
pub async fn suspend(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<MerchantId>,
) -> Result<Json<MerchantStatusAnswer>, ApiError> {
    set_status(&state, &staff, id, MerchantStatus::Suspended).await
}

#[utoipa::path(post, operation_id = "activate_merchant", path = "/v1/merchants/{id}/activate", security(("staff_key" = [])), params(("id" = Uuid, Path)), responses((status = 200, description = "the merchant's new status", body = MerchantStatusAnswer)))]
pub async fn activate(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<MerchantId>,
) -> Result<Json<MerchantStatusAnswer>, ApiError> {
    set_status(&state, &staff, id, MerchantStatus::Active).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterTerminal {
    public_key: String,
    #[serde(default)]
    label: String,
}

/// Registers a till's Ed25519 public key for a merchant; the till keeps its private key.
#[utoipa::path(post, operation_id = "register_terminal", request_body = RegisterTerminal, path = "/v1/merchants/{id}/terminals", security(("staff_key" = [])), params(("id" = Uuid, Path), ("Idempotency-Key" = String, Header)), responses((status = 201, description = "the terminal", body = TerminalAnswer), (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)))]
pub async fn register_terminal(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(merchant_id): ApiPath<MerchantId>,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let merchant = load(&state, merchant_id).await?;
    require_admin_of(&staff, merchant.city)?;
    let path = format!("/v1/merchants/{merchant_id}/terminals");
    let (scope, hash) = match staff_prelude(state.store(), staff.key_id, &path, &key, &body).await? {
        Prelude::Replay(replayed) => return Ok(replayed),
        Prelude::Fresh { scope, hash } => (scope, hash),
    };
    let request: RegisterTerminal = parse_json(&body)?;
    let public_key = crate::app::merchants::terminal_public_key(&request.public_key)?;
    let label = plain_text(&request.label, 100)
        .ok_or_else(|| {
            invalid(ErrorCode::InvalidField, format!("label is at most 100 characters, {PLAIN_TEXT_RULE}"))
        })?
        .into_string();
    let terminal = TerminalRecord {
        id: TerminalId::new_v7(),
        merchant_id,
        public_key,
        label: label.clone(),
        revoked: false,
    };
    let answer = TerminalAnswer { terminal_id: terminal.id, merchant_id, label };
    let record = IdemRecord { scope, key, request_hash: hash, status: 201, body: answer_text(&answer)? };
    let outcome = state.store().insert_terminal(&terminal, state.clock().now(), &record).await;
    write_outcome(state.store(), outcome, record, |refused| match refused {
        WriteError::Constraint(Constraint::TerminalPublicKey) => {
            ApiError::conflict(ErrorCode::TerminalExists, "this public key is already registered")
        }
        other => ApiError::constraint_refusal(&other.to_string()),
    })
    .await
}

#[utoipa::path(post, operation_id = "revoke_terminal", path = "/v1/merchants/{id}/terminals/{terminal_id}/revoke", security(("staff_key" = [])), params(("id" = Uuid, Path), ("terminal_id" = Uuid, Path)), responses((status = 200, description = "the terminal revoked", body = TerminalRevokedAnswer)))]
pub async fn revoke_terminal(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath((merchant_id, terminal_id)): ApiPath<(MerchantId, TerminalId)>,
) -> Result<Json<TerminalRevokedAnswer>, ApiError> {
    let merchant = load(&state, merchant_id).await?;
    require_admin_of(&staff, merchant.city)?;
    let revoked = state.store().revoke_terminal(merchant_id, terminal_id, state.clock().now()).await?;
    state.announce(crate::app::events::NodeEvent::TerminalChanged(terminal_id)).await;
    if !revoked && state.store().terminal(terminal_id).await?.is_none_or(|t| t.merchant_id != merchant_id) {
        return Err(ApiError::not_found(ErrorCode::TerminalNotFound, "no such terminal at this merchant"));
    }
    Ok(Json(TerminalRevokedAnswer { terminal_id, revoked: true }))
}

fn account_json(account: &SettlementAccount) -> AccountAnswer {
    AccountAnswer {
        bank: account.bank.clone(),
        account_no: account.account_no.clone(),
        account_name: account.account_name.clone(),
    }
}

fn account_change_json(change: &AccountChange) -> AccountChangeAnswer {
    AccountChangeAnswer {
        id: change.id,
        seq: change.seq,
        changed_at: change.changed_at.to_string(),
        changed_by_key: change.changed_by.as_uuid(),
        request_id: change.request.map(|(id, _)| id),
        requested_by_key: change.request.map(|(_, by)| by.as_uuid()),
        reason: change.reason.clone(),
        from: account_json(&change.from),
        to: account_json(&change.to),
    }
}

fn account_request_json(request: &AccountRequest, now: Timestamp) -> AccountRequestAnswer {
    let decision = request.decision.as_ref().map(|d| DecisionAnswer {
        decided_at: d.decided_at.to_string(),
        decided_by_key: d.decided_by.as_uuid(),
        note: d.note.clone(),
    });
    AccountRequestAnswer {
        id: request.id,
        seq: request.seq,
        status: request.status_at(now).as_str(),
        requested_at: request.requested_at.to_string(),
        requested_by_key: request.requested_by.as_uuid(),
        reason: request.reason.clone(),
        to: account_json(&request.to),
        expires_at: request.expires_at.to_string(),
        decision,
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangeAccount {
    bank: String,
    account_no: String,
    account_name: String,
    /// Why the account changes (the merchant's letter, a bank merger): kept in the history.
    reason: String,
}

/// Asks to change where the merchant is paid (city_admin of its city, or province_admin). The
/// change takes effect only when another staff key approves it (four eyes: `.../requests/{id}/approve`);
/// until then the merchant is paid to its current account. 202 with the request waiting. Asking
/// again for the account already waiting answers with that request, so a retry is harmless;
/// another account while one waits is 409 `change_pending`; the account the merchant already
/// has (with nothing waiting) is 200 with the merchant and its latest change.
#[utoipa::path(put, operation_id = "change_settlement_account", request_body = ChangeAccount, path = "/v1/merchants/{id}/settlement-account", security(("staff_key" = [])), params(("id" = Uuid, Path)),
    responses((status = 202, description = "the merchant and the request waiting for a second key", body = MerchantAndRequest),
        (status = 200, description = "the merchant already has this account: it and its latest change", body = AccountUnchanged),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody, description = "change_pending"), (status = 422, body = super::error::ErrorBody)))]
pub async fn change_account(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<MerchantId>,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let merchant = load(&state, id).await?;
    require_admin_of(&staff, merchant.city)?;
    let request: ChangeAccount = parse_json(&body)?;
    let to = merchants::settlement_account(&merchants::AccountAsked {
        bank: &request.bank,
        account_no: &request.account_no,
        account_name: &request.account_name,
    })?;
    let now = state.clock().now();
    let asked = NewAccountRequest {
        id: Uuid::now_v7(),
        merchant_id: id,
        requested_at: now,
        requested_by: staff.key_id,
        reason: text_field(&request.reason, "reason", 500)?,
        to,
        expires_at: now.plus_seconds(ACCOUNT_REQUEST_TTL_S),
    };
    match merchants::request_change(state.store(), &asked).await? {
        Asked::Unchanged => {
            let last_change = state.store().latest_account_change(id).await?;
            let body = AccountUnchanged {
                merchant: merchant_json(&merchant),
                last_change: last_change.as_ref().map(account_change_json),
            };
            Ok(json_response(200, answer_text(&body)?))
        }
        Asked::Waiting(waiting) => {
            let body = MerchantAndRequest {
                merchant: merchant_json(&merchant),
                request: account_request_json(&waiting, now),
            };
            Ok(json_response(202, answer_text(&body)?))
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Decide {
    /// Why (a call to the merchant, a check of the letter): kept with the decision.
    #[serde(default)]
    note: Option<String>,
}

/// Approves a request to change the merchant's settlement account: an admin over the merchant
/// (city_admin of its city, or province_admin) with a key unrelated to the one that asked: not
/// that key, one it minted, or one that minted it, at any depth (403 `same_approver`). The merchant is paid to the new account from now on and the change joins
/// the history. A retry gets the same answer; 409 `request_decided` if it was rejected, 409
/// `request_expired` after a week undecided.
#[utoipa::path(post, operation_id = "approve_settlement_account_request", request_body = Option<Decide>, path = "/v1/merchants/{id}/settlement-account/requests/{request_id}/approve", security(("staff_key" = [])),
    params(("id" = Uuid, Path), ("request_id" = Uuid, Path)),
    responses((status = 200, description = "the merchant and the request approved", body = MerchantAndRequest), (status = 403, body = super::error::ErrorBody, description = "forbidden, same_approver, key_revoked"),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody, description = "request_decided, request_expired")))]
pub async fn approve_account_request(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath((id, request_id)): ApiPath<(MerchantId, Uuid)>,
    ApiBytes(body): ApiBytes,
) -> Result<Json<MerchantAndRequest>, ApiError> {
    let request = decide(&state, &staff, id, request_id, &body, true).await?;
    let merchant = load(&state, id).await?;
    let request = account_request_json(&request, state.clock().now());
    Ok(Json(MerchantAndRequest { merchant: merchant_json(&merchant), request }))
}

/// Rejects a request to change the merchant's settlement account (an admin over the merchant;
/// the key that asked may withdraw its own). A retry gets the same answer; 409
/// `request_decided` if it was approved, 409 `request_expired` after a week undecided.
#[utoipa::path(post, operation_id = "reject_settlement_account_request", request_body = Option<Decide>, path = "/v1/merchants/{id}/settlement-account/requests/{request_id}/reject", security(("staff_key" = [])),
    params(("id" = Uuid, Path), ("request_id" = Uuid, Path)),
    responses((status = 200, description = "the request rejected", body = RequestAnswer), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody, description = "request_decided, request_expired")))]
pub async fn reject_account_request(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath((id, request_id)): ApiPath<(MerchantId, Uuid)>,
    ApiBytes(body): ApiBytes,
) -> Result<Json<RequestAnswer>, ApiError> {
    let request = decide(&state, &staff, id, request_id, &body, false).await?;
    Ok(Json(RequestAnswer { request: account_request_json(&request, state.clock().now()) }))
}

/// Records `staff`'s decision (`approve`, else reject) on the request, and answers with the
/// request as decided; the same decision made before (a retry) answers the same.
async fn decide(
    state: &AppState,
    staff: &Staff,
    merchant_id: MerchantId,
    request_id: Uuid,
    body: &Bytes,
    approve: bool,
) -> Result<AccountRequest, ApiError> {
    let merchant = load(state, merchant_id).await?;
    require_admin_of(staff, merchant.city)?;
    let asked: Decide = if body.is_empty() { Decide { note: None } } else { parse_json(body)? };
    let note = match asked.note.as_deref() {
        Some(note) => text_field(note, "note", 500)?,
        None => String::new(),
    };
    let asked = merchants::Decision {
        merchant_id,
        request_id,
        approve,
        by: staff.key_id,
        at: state.clock().now(),
        note,
    };
    let decided = merchants::decide(state.store(), asked).await?;
    if decided.approved_now {
        state.announce(crate::app::events::NodeEvent::MerchantChanged(merchant_id)).await;
    }
    Ok(decided.request)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// The `next_after_seq` of the previous page; 0 (the default) starts at the first change.
    #[serde(default)]
    after_seq: i64,
    #[serde(default)]
    limit: Option<u32>,
}

/// Changes listed per page unless the caller asks for fewer or more.
const ACCOUNT_CHANGES_PAGE_DEFAULT: u32 = 100;
/// The most changes one page holds.
const ACCOUNT_CHANGES_PAGE_MAX: u32 = 1_000;

/// The page size asked for a merchant's account history, once `staff` may see the merchant.
async fn history_page_limit(
    state: &AppState,
    staff: &Staff,
    id: MerchantId,
    query: &ChangesQuery,
) -> Result<u32, ApiError> {
    let merchant = load(state, id).await?;
    require_viewer_of(staff, merchant.city)?;
    page_limit(query.limit, ACCOUNT_CHANGES_PAGE_DEFAULT, ACCOUNT_CHANGES_PAGE_MAX)
}

/// The merchant's settlement account changes, in the order they were made (`seq`), a page at a
/// time (`next_after_seq` is the `after_seq` of the next page, null on the last): its admins,
/// finance and auditors of its region.
#[utoipa::path(get, operation_id = "list_settlement_account_changes", path = "/v1/merchants/{id}/settlement-account/changes", security(("staff_key" = [])),
    params(("id" = Uuid, Path), ("after_seq" = Option<i64>, Query, description = "next_after_seq of the previous page"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, 100 by default")),
    responses((status = 200, description = "a page of changes", body = AccountChangesPage), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody, description = "invalid_limit")))]
pub async fn account_changes(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<MerchantId>,
    ApiQuery(query): ApiQuery<ChangesQuery>,
) -> Result<Json<AccountChangesPage>, ApiError> {
    let limit = history_page_limit(&state, &staff, id, &query).await?;
    let mut changes = state.store().account_changes(id, query.after_seq, i64::from(limit) + 1).await?;
    let next_after_seq = next_cursor(&mut changes, limit).map(|last| last.seq);
    Ok(Json(AccountChangesPage {
        merchant_id: id,
        changes: changes.iter().map(account_change_json).collect(),
        next_after_seq,
    }))
}

/// The merchant's requests to change its settlement account (waiting, approved, rejected or
/// expired), in the order they were made, a page at a time: its admins, finance and auditors of
/// its region.
#[utoipa::path(get, operation_id = "list_settlement_account_requests", path = "/v1/merchants/{id}/settlement-account/requests", security(("staff_key" = [])),
    params(("id" = Uuid, Path), ("after_seq" = Option<i64>, Query, description = "next_after_seq of the previous page"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, 100 by default")),
    responses((status = 200, description = "a page of requests", body = AccountRequestsPage), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody, description = "invalid_limit")))]
pub async fn account_requests(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<MerchantId>,
    ApiQuery(query): ApiQuery<ChangesQuery>,
) -> Result<Json<AccountRequestsPage>, ApiError> {
    let limit = history_page_limit(&state, &staff, id, &query).await?;
    let mut requests = state.store().account_requests(id, query.after_seq, i64::from(limit) + 1).await?;
    let next_after_seq = next_cursor(&mut requests, limit).map(|last| last.seq);
    let now = state.clock().now();
    let requests = requests.iter().map(|r| account_request_json(r, now)).collect();
    Ok(Json(AccountRequestsPage { merchant_id: id, requests, next_after_seq }))
}
