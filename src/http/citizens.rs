//! Citizens: registration, sessions, their vouchers, and claiming.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{
    ApiBytes, ApiJson, ApiPath, ApiQuery, PageQuery, Staff, bearer_token, next_cursor, page_limit,
};
use super::idempotency::{IdempotencyKey, request_hash};
use crate::app::citizens::CitizenError;
use crate::app::codes::CodeError;
use crate::app::providers::SentCode;
use crate::domain::citizen::{CitizenName, IdNumber, Phone};
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::{BatchId, CitizenId, VoucherId};
use crate::domain::one_time_code::{CodePurpose, OneTimeCode};
use crate::domain::staff::Role;

/// An authenticated citizen (Authorization: Bearer <token>).
pub struct CitizenAuth(pub CitizenId);

impl FromRequestParts<AppState> for CitizenAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let PresentedToken(token) = PresentedToken::from_request_parts(parts, state).await?;
        match state.citizens().authenticate(&token).await? {
            Some(citizen_id) => Ok(CitizenAuth(citizen_id)),
            None => {
                Err(ApiError::unauthorized(ErrorCode::InvalidToken, "the token is not valid or has expired"))
            }
        }
    }
}

/// The citizen token a request presents, valid or not (for signing out).
pub struct PresentedToken(pub String);

impl FromRequestParts<AppState> for PresentedToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or_else(|| {
            ApiError::unauthorized(
                ErrorCode::Unauthenticated,
                "send the citizen token as Authorization: Bearer <token>",
            )
        })?;
        Ok(PresentedToken(token.to_owned()))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub name: String,
    /// 18-character resident identity number (GB 11643).
    pub id_number: String,
    /// 11-digit mainland mobile number.
    pub phone: String,
    /// The one-time code sent to the phone for `register` (`POST /v1/citizens/codes`).
    pub code: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub id_number: String,
    pub phone: String,
    /// The one-time code sent to the phone for `sign_in` (`POST /v1/citizens/codes`).
    pub code: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// 11-digit mainland mobile number.
    pub phone: String,
    pub purpose: CodePurpose,
}

/// A code is on its way. The code itself is only in the SMS.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CodeSentResponse {
    /// When the code stops working.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// How soon a new code for this phone and purpose may be asked for.
    pub resend_after_s: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionResponse {
    pub citizen_id: CitizenId,
    pub token: String,
    pub token_expires_at: String,
}

fn parse_identity(id_number: &str, phone: &str) -> Result<(IdNumber, Phone), ApiError> {
    let id = IdNumber::parse(id_number).map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let phone = Phone::parse(phone).map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    Ok((id, phone))
}

pub(super) fn parse_code(code: &str) -> Result<OneTimeCode, ApiError> {
    OneTimeCode::parse(code).map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))
}

pub(super) fn code_error(error: CodeError) -> ApiError {
    match error {
        CodeError::NotNow(refusal) => {
            let wait = std::time::Duration::from_secs(refusal.retry_after_s().max(1).unsigned_abs());
            ApiError { message: error.to_string(), ..ApiError::rate_limited(wait) }
        }
        CodeError::Unavailable(_) | CodeError::Refused(_) => {
            ApiError::unavailable(ErrorCode::ProviderUnavailable, error.to_string())
        }
        CodeError::Invalid => ApiError::unauthorized(ErrorCode::InvalidCode, error.to_string()),
        CodeError::Locked => ApiError::unauthorized(ErrorCode::CodeLocked, error.to_string()),
        CodeError::Storage(storage) => storage.into(),
    }
}

fn citizen_error(error: CitizenError) -> ApiError {
    match error {
        CitizenError::AlreadyRegistered => {
            ApiError::conflict(ErrorCode::AlreadyRegistered, error.to_string())
        }
        CitizenError::IdentityRejected(why) => {
            tracing::info!(why, "the real-name register refused a registration");
            ApiError::unprocessable(
                ErrorCode::IdentityRejected,
                "the real-name register does not confirm this name, ID number and phone",
            )
        }
        CitizenError::IdentityUnavailable(ref why) => {
            tracing::warn!(why, "the real-name register is unavailable");
            ApiError::unavailable(ErrorCode::ProviderUnavailable, error.to_string())
        }
        CitizenError::Code(code) => code_error(code),
        CitizenError::UnknownCitizen => ApiError::unauthorized(ErrorCode::UnknownCitizen, error.to_string()),
        CitizenError::Storage(storage) => storage.into(),
    }
}

fn session_response(session: crate::app::citizens::Session) -> (StatusCode, Json<SessionResponse>) {
    let body = SessionResponse {
        citizen_id: session.citizen_id,
        token: session.token,
        token_expires_at: session.expires_at.to_string(),
    };
    (StatusCode::CREATED, Json(body))
}

/// Sends a one-time code to a phone, for registration or sign-in: 202, and the code only in the
/// SMS. A phone gets a new code for a purpose at most once a minute and ten times a day (429
/// with Retry-After); a provider that cannot be reached is 503 and nothing is stored.
#[utoipa::path(post, operation_id = "send_code", path = "/v1/citizens/codes", request_body = CodeRequest,
    responses((status = 202, body = CodeSentResponse), (status = 422, body = super::error::ErrorBody, description = "phone_format"),
        (status = 429, body = super::error::ErrorBody, description = "rate_limited: a code was sent to this phone less than a minute ago, or ten today"),
        (status = 503, body = super::error::ErrorBody, description = "provider_unavailable: the SMS gateway did not answer"),
        (status = 415, body = super::error::ErrorBody, description = "unsupported_media_type: send Content-Type: application/json")))]
pub async fn send_code(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CodeRequest>,
) -> Result<(StatusCode, Json<CodeSentResponse>), ApiError> {
    let phone = Phone::parse(&request.phone).map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    if request.purpose == CodePurpose::StaffEnrol {
        let why = "a staff enrolment's code is sent when an admin enrols the person, not asked for";
        return Err(ApiError::unprocessable(ErrorCode::InvalidField, why));
    }
    let sent = state.citizens().codes().send(&phone, request.purpose).await.map_err(code_error)?;
    let body =
        CodeSentResponse { expires_at: sent.expires_at.to_string(), resend_after_s: sent.resend_after_s };
    Ok((StatusCode::ACCEPTED, Json(body)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DevSmsQuery {
    /// The phone whose codes to show.
    pub phone: String,
}

/// The codes the development SMS provider kept for a phone.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DevSmsPage {
    /// Newest first.
    pub messages: Vec<SentCode>,
    /// Notices (a waitlist's voucher came to the person), newest first.
    pub notices: Vec<crate::app::providers::SentNotice>,
}

/// Development only: the codes the `dev` SMS provider kept for a phone, newest first. The route
/// exists only when the server runs with `--sms-provider dev` (never in production).
#[utoipa::path(get, operation_id = "dev_sms", path = "/v1/dev/sms", params(DevSmsQuery),
    responses((status = 200, body = DevSmsPage), (status = 422, body = super::error::ErrorBody, description = "phone_format"),
        (status = 404, body = super::error::ErrorBody, description = "not_found: the server does not run the dev SMS provider")))]
pub async fn dev_sms(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DevSmsQuery>,
) -> Result<Json<DevSmsPage>, ApiError> {
    let phone = Phone::parse(&query.phone).map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let outbox = state.citizens().codes().sms().dev_outbox();
    let outbox = outbox.ok_or_else(|| ApiError::not_found(ErrorCode::NotFound, "no such endpoint"))?;
    Ok(Json(DevSmsPage { messages: outbox.sent_to(&phone), notices: outbox.notices_to(&phone) }))
}

/// Registers a citizen by real name, with the one-time code sent to the phone for `register`;
/// one account per ID number.
#[utoipa::path(post, operation_id = "register_citizen", path = "/v1/citizens", request_body = RegisterRequest,
    responses((status = 201, body = SessionResponse), (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody),
        (status = 401, body = super::error::ErrorBody, description = "invalid_code, code_locked"),
        (status = 503, body = super::error::ErrorBody, description = "provider_unavailable: the real-name register did not answer"),
        (status = 429, body = super::error::ErrorBody, description = "rate_limited: the ID number or the phone is past its rate"), (status = 415, body = super::error::ErrorBody, description = "unsupported_media_type: send Content-Type: application/json")))]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<SessionResponse>), ApiError> {
    let name =
        CitizenName::parse(&request.name).map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let (id, phone) = parse_identity(&request.id_number, &request.phone)?;
    let code = parse_code(&request.code)?;
    state.citizen_rates().identity_attempt(&state.citizens().identity_keys(&id, &phone)).await?;
    let session = state.citizens().register(name, id, phone, &code).await.map_err(citizen_error)?;
    Ok(session_response(session))
}

/// Issues a new token to a registered citizen with the one-time code sent to the phone for
/// `sign_in`. Attempts are limited per ID number and per phone (`http::rate_limit`), and a code
/// takes five tries, so a code cannot be guessed.
#[utoipa::path(post, operation_id = "sign_in", path = "/v1/citizens/sessions", request_body = SignInRequest,
    responses((status = 201, body = SessionResponse), (status = 401, body = super::error::ErrorBody, description = "unknown_citizen, invalid_code, code_locked"),
        (status = 422, body = super::error::ErrorBody),
        (status = 429, body = super::error::ErrorBody, description = "rate_limited: the ID number or the phone is past its rate"), (status = 415, body = super::error::ErrorBody, description = "unsupported_media_type: send Content-Type: application/json")))]
pub async fn sign_in(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<SignInRequest>,
) -> Result<(StatusCode, Json<SessionResponse>), ApiError> {
    let (id, phone) = parse_identity(&request.id_number, &request.phone)?;
    let code = parse_code(&request.code)?;
    state.citizen_rates().identity_attempt(&state.citizens().identity_keys(&id, &phone)).await?;
    let session = state.citizens().sign_in(id, phone, &code).await.map_err(citizen_error)?;
    Ok(session_response(session))
}

/// Signs out: the presented token stops working at once on this instance, within about a second
/// on every other (a change notice), and at worst within
/// [`REVOCATION_POLL`](crate::app::citizens::REVOCATION_POLL) (the revocation feed). Answers 204 whether or
/// not the token was still valid, so a retried sign-out gets the same answer.
#[utoipa::path(delete, operation_id = "sign_out", path = "/v1/me/session", security(("citizen_token" = [])),
    responses((status = 204, description = "signed out"), (status = 401, body = super::error::ErrorBody)))]
pub async fn sign_out(
    State(state): State<AppState>,
    PresentedToken(token): PresentedToken,
) -> Result<StatusCode, ApiError> {
    state.citizens().sign_out(&token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RevokedSessions {
    pub citizen_id: CitizenId,
    /// Always true: every session the citizen had is revoked (the same answer on a retry).
    pub sessions_revoked: bool,
}

/// Revokes every session of a citizen (a lost phone, an account taken over): the
/// province_admin of the citizen's home province only. The citizen signs in again to get a new token.
#[utoipa::path(post, operation_id = "revoke_citizen_sessions", path = "/v1/citizens/{id}/sessions/revoke", security(("staff_key" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, body = RevokedSessions), (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn revoke_sessions(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(citizen_id): ApiPath<CitizenId>,
) -> Result<Json<RevokedSessions>, ApiError> {
    staff.require(&[Role::ProvinceAdmin])?;
    let not_found = || ApiError::not_found(ErrorCode::CitizenNotFound, "no such citizen");
    let home = state.store().citizen_home(citizen_id).await?.ok_or_else(not_found)?;
    staff.may(crate::domain::access::act_for_citizen, home)?;
    let Some(revoked) = state.citizens().revoke_all(citizen_id).await? else {
        return Err(ApiError::not_found(ErrorCode::CitizenNotFound, "no such citizen"));
    };
    tracing::info!(citizen = %citizen_id, revoked, "citizen sessions revoked");
    Ok(Json(RevokedSessions { citizen_id, sessions_revoked: true }))
}

/// A page of `GET /v1/me/vouchers`: 100 by default, at most 200.
const VOUCHERS_PAGE_DEFAULT: u32 = 100;
const VOUCHERS_PAGE_MAX: u32 = 200;

/// The citizen's vouchers, newest first, with state and expiry, a page at a time.
#[utoipa::path(get, operation_id = "my_vouchers", path = "/v1/me/vouchers", security(("citizen_token" = [])),
    params(("after" = Option<Uuid>, Query, description = "next_after of the previous page"), ("limit" = Option<u32>, Query, description = "1 to 200, default 100")),
    responses((status = 200, description = "a page of the citizen's vouchers", body = MyVouchersPage), (status = 422, body = super::error::ErrorBody, description = "invalid_limit, invalid_cursor")))]
pub async fn my_vouchers(
    State(state): State<AppState>,
    CitizenAuth(citizen_id): CitizenAuth,
    ApiQuery(query): ApiQuery<PageQuery<VoucherId>>,
) -> Result<Json<MyVouchersPage>, ApiError> {
    let limit = page_limit(query.limit, VOUCHERS_PAGE_DEFAULT, VOUCHERS_PAGE_MAX)?;
    let after = query.after;
    let wanted = i64::from(limit) + 1;
    let mut page = match after {
        // The first page, the one every phone opens: many citizens' in one statement.
        None => state.voucher_pages().load((citizen_id, wanted)).await?,
        Some(after) => state.reads().read(|store| vouchers_page(store, citizen_id, after, wanted)).await?,
    };
    let next_after = next_cursor(&mut page, limit).map(|last| last.id);
    // One round trip: the vouchers; their batches' names and terms come from memory.
    let shown_batches: Vec<_> = page.iter().map(|v| (v.season_id, v.batch_id)).collect();
    let batches = state.public_reads().batches_known(shown_batches).await?;
    let now = state.clock().now();
    let mut vouchers = Vec::new();
    for voucher in page {
        let Some(batch) = batches.get(&voucher.batch_id) else { continue };
        let mut shown = voucher.clone();
        shown.status = voucher.status_at(now);
        let voucher = crate::app::claims::voucher_json(&shown, batch);
        vouchers.push(MyVoucher { voucher, batch_name: batch.name.clone() });
    }
    Ok(Json(MyVouchersPage { vouchers, next_after }))
}

/// Up to `wanted` of the citizen's vouchers after the voucher `after` (one of theirs), read on
/// `store` (the read side).
async fn vouchers_page(
    store: std::sync::Arc<dyn crate::storage::Storage>,
    citizen_id: CitizenId,
    after: VoucherId,
    wanted: i64,
) -> Result<Vec<crate::domain::season::Voucher>, ApiError> {
    let after = store.voucher(after).await?.filter(|v| v.citizen_id == citizen_id).ok_or_else(|| {
        ApiError::unprocessable(
            ErrorCode::InvalidCursor,
            "after names no voucher of yours: pass a page's next_after",
        )
    })?;
    Ok(store.citizen_vouchers(citizen_id, Some(&after), wanted).await?)
}

/// Claims one voucher of a batch. Requires an Idempotency-Key; a retry returns the first answer.
#[utoipa::path(post, operation_id = "claim_voucher", request_body = Option<ClaimBody>, path = "/v1/batches/{id}/claims", security(("citizen_token" = [])),
    params(("id" = Uuid, Path, description = "batch id"), ("Idempotency-Key" = String, Header, description = "one per attempt")),
    responses((status = 201, description = "the voucher claimed", body = crate::app::claims::ClaimAnswer), (status = 409, body = super::error::ErrorBody, description = "sold_out, limit_reached, not_open"), (status = 429, body = super::error::ErrorBody, description = "rate_limited: too many claims from this citizen; see Retry-After")))]
pub async fn claim(
    State(state): State<AppState>,
    CitizenAuth(citizen_id): CitizenAuth,
    ApiPath(batch_id): ApiPath<BatchId>,
    IdempotencyKey(key): IdempotencyKey,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    state.citizen_rates().claim(citizen_id).await?;
    let _: ClaimBody = super::idempotency::parse_json(&body)?;
    let path = format!("/v1/batches/{batch_id}/claims");
    let hash = request_hash("POST", &path, &body);
    let answer = state.writer().claim(citizen_id, batch_id, key, hash).await;
    Ok(super::idempotency::writer_response(answer))
}

/// One of the citizen's vouchers, with its batch's name.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MyVoucher {
    #[serde(flatten)]
    voucher: crate::app::claims::VoucherAnswer,
    batch_name: String,
}

/// A page of the citizen's vouchers; `next_after` is null on the last page.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MyVouchersPage {
    vouchers: Vec<MyVoucher>,
    next_after: Option<VoucherId>,
}

/// A claim's body: an empty object (or no body); the batch is in the path.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {}

/// A citizen's entry in a lottery batch's draw.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct LotteryEntry {
    batch_id: BatchId,
    #[schema(format = DateTime)]
    entered_at: String,
}

/// Enters the citizen in a lottery batch's draw, during its claim window. Once: entering again
/// answers the same (`entered_at` is the first entry's), so no Idempotency-Key is needed. 409
/// `not_a_lottery` for a batch claimed in a rush, `not_open` outside the window.
#[utoipa::path(post, operation_id = "enter_lottery", path = "/v1/batches/{id}/entries", security(("citizen_token" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "the citizen is entered in the draw", body = LotteryEntry), (status = 429, body = super::error::ErrorBody, description = "rate_limited"), (status = 409, body = super::error::ErrorBody)))]
pub async fn enter_lottery(
    State(state): State<AppState>,
    CitizenAuth(citizen_id): CitizenAuth,
    ApiPath(batch_id): ApiPath<BatchId>,
) -> Result<Json<LotteryEntry>, ApiError> {
    state.citizen_rates().claim(citizen_id).await?;
    let now = state.clock().now();
    let entered_at = crate::app::claims::enter_lottery(state.store(), batch_id, citizen_id, now).await?;
    Ok(Json(LotteryEntry { batch_id, entered_at: entered_at.to_string() }))
}

/// The citizen's standing in a lottery batch.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MyLotteryEntry {
    batch_id: BatchId,
    batch_name: String,
    /// not_entered, pending (entered, not drawn yet), won or lost.
    result: &'static str,
    #[schema(format = DateTime)]
    entered_at: Option<String>,
    #[schema(format = DateTime)]
    drawn_at: Option<String>,
    /// The voucher the draw gave (in `GET /v1/me/vouchers`), when won.
    voucher_id: Option<VoucherId>,
    /// The citizen's own id: with the salt the audit reveals, they recompute `entrant_hash`.
    citizen_id: CitizenId,
    /// After the draw, the citizen's keyed hash HMAC-SHA256(salt, citizen_id) in the draw's
    /// public audit (`/v1/batches/{id}/draw/audit`): among its entrants, and its winners if won.
    entrant_hash: Option<String>,
}

/// Whether the citizen entered a lottery batch's draw, and after the draw whether they won (the
/// voucher) or lost. 409 `not_a_lottery` for a batch claimed in a rush.
#[utoipa::path(get, operation_id = "my_lottery_entry", path = "/v1/batches/{id}/entries/me", security(("citizen_token" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "the citizen's standing in the draw", body = MyLotteryEntry), (status = 404, body = super::error::ErrorBody, description = "batch_not_found"), (status = 409, body = super::error::ErrorBody, description = "not_a_lottery")))]
pub async fn my_lottery_entry(
    State(state): State<AppState>,
    CitizenAuth(citizen_id): CitizenAuth,
    ApiPath(batch_id): ApiPath<BatchId>,
) -> Result<Json<MyLotteryEntry>, ApiError> {
    let view = crate::app::seasons::lottery_standing(state.store(), citizen_id, batch_id).await?;
    Ok(Json(MyLotteryEntry {
        batch_id: view.batch_id,
        batch_name: view.batch_name,
        result: view.result.as_str(),
        entered_at: view.entered_at.map(|t| t.to_string()),
        drawn_at: view.drawn_at.map(|t| t.to_string()),
        voucher_id: view.voucher_id,
        citizen_id,
        entrant_hash: view.entrant_hash.map(|h| crate::domain::season::hex(&h)),
    }))
}

/// Joining a waitlist: the phone the citizen registered with, kept sealed to text them when a
/// voucher comes to them, erased once they are reached.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinWaitlist {
    phone: String,
}

/// A citizen on a waitlist.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WaitlistJoined {
    batch_id: BatchId,
    #[schema(format = DateTime)]
    joined_at: String,
}

/// Joins the citizen to a waitlist batch during its window, once: joining again answers the
/// same (`joined_at` of the first time), so no key is needed; when or how often one joins
/// changes nothing, the place comes from the committed seed and the citizen id alone
/// (docs/waitlist.md). 422 `phone_mismatch` unless `phone` is the one registered; 409
/// `not_a_waitlist`, `not_open`.
#[utoipa::path(post, operation_id = "join_waitlist", path = "/v1/batches/{id}/waitlist", request_body = JoinWaitlist, security(("citizen_token" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "the citizen is on the waitlist", body = WaitlistJoined), (status = 404, body = super::error::ErrorBody, description = "batch_not_found"), (status = 409, body = super::error::ErrorBody, description = "not_a_waitlist, not_open"), (status = 422, body = super::error::ErrorBody, description = "phone_format, phone_mismatch"), (status = 429, body = super::error::ErrorBody, description = "rate_limited")))]
pub async fn join_waitlist(
    State(state): State<AppState>,
    CitizenAuth(citizen_id): CitizenAuth,
    ApiPath(batch_id): ApiPath<BatchId>,
    ApiJson(request): ApiJson<JoinWaitlist>,
) -> Result<Json<WaitlistJoined>, ApiError> {
    state.citizen_rates().claim(citizen_id).await?;
    let phone = Phone::parse(&request.phone).map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    let now = state.clock().now();
    let joined_at = crate::app::waitlist::join(
        state.store(),
        state.citizens(),
        state.waitlist_seal(),
        batch_id,
        citizen_id,
        &phone,
        now,
    )
    .await?;
    Ok(Json(WaitlistJoined { batch_id, joined_at: joined_at.to_string() }))
}

/// The citizen's place on a waitlist.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MyWaitlistPlace {
    batch_id: BatchId,
    batch_name: String,
    /// not_joined, waiting, issued (a voucher of the batch is theirs) or passed (their voucher
    /// expired or was forfeited and went on, or a per-person cap passed them over).
    status: &'static str,
    #[schema(format = DateTime)]
    joined_at: Option<String>,
    /// Their place in line from the opening on (1 is the first); null before it.
    place: Option<i64>,
    /// While waiting after the opening: how many are still before them.
    ahead: Option<i64>,
    #[schema(format = DateTime)]
    opened_at: Option<String>,
    /// The voucher the line gave them (in `GET /v1/me/vouchers`).
    voucher_id: Option<VoucherId>,
    /// voucher_expired, voucher_forfeited or limit_reached, when passed.
    passed_reason: Option<String>,
}

/// Where the citizen stands on a waitlist: place, how many ahead, status. 404
/// `batch_not_found`; 409 `not_a_waitlist`.
#[utoipa::path(get, operation_id = "my_waitlist_place", path = "/v1/batches/{id}/waitlist/me", security(("citizen_token" = [])), params(("id" = Uuid, Path)),
    responses((status = 200, description = "the citizen's place", body = MyWaitlistPlace), (status = 404, body = super::error::ErrorBody, description = "batch_not_found"), (status = 409, body = super::error::ErrorBody, description = "not_a_waitlist")))]
pub async fn my_waitlist_place(
    State(state): State<AppState>,
    CitizenAuth(citizen_id): CitizenAuth,
    ApiPath(batch_id): ApiPath<BatchId>,
) -> Result<Json<MyWaitlistPlace>, ApiError> {
    let view = crate::app::waitlist::standing(state.store(), citizen_id, batch_id).await?;
    Ok(Json(MyWaitlistPlace {
        batch_id: view.batch_id,
        batch_name: view.batch_name,
        status: view.status.as_str(),
        joined_at: view.joined_at.map(|t| t.to_string()),
        place: view.place,
        ahead: view.ahead,
        opened_at: view.opened_at.map(|t| t.to_string()),
        voucher_id: view.voucher_id,
        passed_reason: view.passed_reason,
    }))
}

/// A fresh signed QR code for one of the citizen's own active vouchers (the phone refreshes it).
#[utoipa::path(post, operation_id = "voucher_qr", path = "/v1/vouchers/{id}/qr", security(("citizen_token" = [])), params(("id" = Uuid, Path)), responses((status = 200, description = "the voucher's QR code", body = super::QrAnswer), (status = 409, body = super::error::ErrorBody), (status = 429, body = super::error::ErrorBody, description = "rate_limited")))]
pub async fn voucher_qr(
    State(state): State<AppState>,
    CitizenAuth(citizen_id): CitizenAuth,
    ApiPath(voucher_id): ApiPath<VoucherId>,
) -> Result<Json<super::QrAnswer>, ApiError> {
    state.citizen_rates().qr_code(citizen_id).await?;
    let found = state.store().voucher(voucher_id).await?;
    let voucher = crate::app::claims::voucher_for_qr(found, citizen_id, state.clock().now())?;
    Ok(Json(state.fresh_qr(wenhui_merchant_sdk::token::TokenKind::Voucher, voucher.id.as_uuid()).await?))
}
