//! Staff keys over HTTP: an admin enrols a named person for a key within its own region, and the
//! person claims it with the one-time code sent to their phone.
//!
//! Neither is replayed under an Idempotency-Key: the claim's answer holds the secret, and
//! replaying it would mean storing the secret; a claim is single-use anyway. A retried enrolment
//! sends a second code for a second enrolment; the unclaimed one lapses.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Staff, plain_text};
use crate::app::staff::{self, EnrolError};
use crate::domain::citizen::Phone;
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::StaffEnrolmentId;
use crate::domain::staff::{Role, StaffScope};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub role: String,
    pub region: String,
    #[serde(default)]
    pub label: String,
    /// The person the key is for (at most 50 characters).
    pub name: String,
    /// The person's 11-digit mainland mobile number: the one-time code goes there, and one phone
    /// is one person.
    pub phone: String,
}

/// An enrolment waiting for its person's claim. The key does not exist yet.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EnrolmentResponse {
    /// Give it to the person: they claim the key with it and the code sent to their phone.
    pub enrolment_id: uuid::Uuid,
    /// When an unclaimed enrolment lapses (a day).
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub role: Role,
    pub region: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The six-digit code sent to the enrolled person's phone.
    pub code: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreateKeyResponse {
    pub id: uuid::Uuid,
    /// The key itself. Shown once, to the claimant; only its hash is stored.
    pub key: String,
    pub role: Role,
    pub region: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The key's id (what a four-eyes record names as its proposer or decider).
    pub key_id: crate::domain::ids::StaffKeyId,
    pub role: Role,
    pub region: String,
    /// What the key may do, by capability (`domain::access`), asked of the key's own region:
    /// `read_season_finance`, `reconcile_season`, `settle_season`, `manage_merchant`, ... The
    /// console offers only these; each request is still checked against its resource.
    pub may: Vec<&'static str>,
}

/// A key's scope as a request or the CLI names it (see `app::staff::parse_scope`), as a 422.
pub fn parse_scope(role: &str, region: &str) -> Result<StaffScope, ApiError> {
    Ok(staff::parse_scope(role, region)?)
}

/// Enrols a named person for a staff key (province_admin for its province and cities;
/// city_admin for its city): 202 with the enrolment, and a one-time code to the person's phone.
/// The key exists, and its secret is shown, only when the person claims it. Not replayed under an
/// Idempotency-Key: a retry enrols again (the person claims one; the other lapses in a day).
#[utoipa::path(post, operation_id = "create_staff_key", path = "/v1/staff/keys", security(("staff_key" = [])), request_body = CreateKeyRequest,
    responses((status = 202, body = EnrolmentResponse), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody),
        (status = 503, body = super::error::ErrorBody, description = "provider_unavailable: the SMS gateway did not answer; nothing was stored"),
        (status = 415, body = super::error::ErrorBody, description = "unsupported_media_type: send Content-Type: application/json")))]
pub async fn create_key(
    State(state): State<AppState>,
    staff: Staff,
    ApiJson(request): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<EnrolmentResponse>), ApiError> {
    staff.require(&[Role::ProvinceAdmin, Role::CityAdmin])?;
    let scope = parse_scope(&request.role, &request.region)?;
    let label = plain_text(&request.label, 100).ok_or_else(|| {
        ApiError::unprocessable(
            ErrorCode::InvalidLabel,
            format!("label is at most 100 characters, {}", super::extract::PLAIN_TEXT_RULE),
        )
    })?;
    let name = plain_text(&request.name, 50).filter(|n| !n.is_empty()).ok_or_else(|| {
        ApiError::unprocessable(
            ErrorCode::InvalidName,
            format!("name is 1 to 50 characters, {}", super::extract::PLAIN_TEXT_RULE),
        )
    })?;
    let phone = Phone::parse(&request.phone).map_err(|e| ApiError::unprocessable(e.code(), e.to_string()))?;
    crate::domain::access::mint_key(&staff.scope, &scope)?;
    let person = staff::Person { name: name.as_str(), phone: &phone };
    let codes = state.citizens().codes();
    let enrolled = staff::enrol(state.store(), codes, scope, label.as_str(), &person, staff.key_id)
        .await
        .map_err(enrol_error)?;
    tracing::info!(enrolment = %enrolled.id, role = %scope.role, region = %scope.region, minted_by = %staff.key_id, "staff key enrolment sent");
    let body = EnrolmentResponse {
        enrolment_id: enrolled.id.as_uuid(),
        expires_at: enrolled.expires_at.to_string(),
        role: scope.role,
        region: scope.region.to_string(),
    };
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// The enrolled person claims their key with the code sent to their phone: 201 with the key,
/// shown this once (never replayed). A wrong code counts a try (five, then `code_locked`); a
/// claimed enrolment is 409 `enrolment_claimed`, a lapsed one 409 `enrolment_expired`.
#[utoipa::path(post, operation_id = "claim_staff_key", path = "/v1/staff/enrolments/{id}/claim", request_body = ClaimRequest,
    params(("id" = uuid::Uuid, Path)),
    responses((status = 201, body = CreateKeyResponse), (status = 401, body = super::error::ErrorBody, description = "invalid_code, code_locked"),
        (status = 403, body = super::error::ErrorBody, description = "key_revoked: the enrolling key was revoked since"),
        (status = 404, body = super::error::ErrorBody, description = "enrolment_not_found"),
        (status = 409, body = super::error::ErrorBody, description = "enrolment_claimed, enrolment_expired"),
        (status = 422, body = super::error::ErrorBody, description = "code_format"),
        (status = 415, body = super::error::ErrorBody, description = "unsupported_media_type: send Content-Type: application/json")))]
pub async fn claim(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<uuid::Uuid>,
    ApiJson(request): ApiJson<ClaimRequest>,
) -> Result<(StatusCode, Json<CreateKeyResponse>), ApiError> {
    let code = super::citizens::parse_code(&request.code)?;
    let codes = state.citizens().codes();
    let id = StaffEnrolmentId::from_uuid(id);
    let (minted, scope) = staff::claim(state.store(), codes, id, &code).await.map_err(enrol_error)?;
    tracing::info!(enrolment = %id, key_id = %minted.id, role = %scope.role, region = %scope.region, "staff key claimed");
    let body = CreateKeyResponse {
        id: minted.id.as_uuid(),
        key: minted.secret,
        role: scope.role,
        region: scope.region.to_string(),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

fn enrol_error(error: EnrolError) -> ApiError {
    let message = error.to_string();
    match error {
        EnrolError::NotFound => ApiError::not_found(ErrorCode::EnrolmentNotFound, message),
        EnrolError::Claimed => ApiError::conflict(ErrorCode::EnrolmentClaimed, message),
        EnrolError::Expired => ApiError::conflict(ErrorCode::EnrolmentExpired, message),
        EnrolError::MinterRevoked => ApiError::forbidden_code(ErrorCode::KeyRevoked, message),
        EnrolError::Code(code) => super::citizens::code_error(code),
        EnrolError::Storage(storage) => storage.into(),
    }
}

/// Who the presented key speaks for, and what it may do.
#[utoipa::path(get, operation_id = "staff_me", path = "/v1/staff/me", security(("staff_key" = [])), responses((status = 200, body = WhoAmI)))]
pub async fn me(staff: Staff) -> Json<WhoAmI> {
    let may = crate::domain::access::capabilities(&staff.scope);
    Json(WhoAmI { key_id: staff.key_id, role: staff.scope.role, region: staff.scope.region.to_string(), may })
}
