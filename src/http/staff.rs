//! Staff keys over HTTP: an admin mints keys within its own region.
//!
//! Minting is deliberately not replayed under an Idempotency-Key: the answer holds the secret,
//! and replaying it would mean storing the secret. A retry mints another key; revoke the spare.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, Staff, plain_text};
use crate::app::staff;
use crate::domain::error_code::ErrorCode;
use crate::domain::region::RegionCode;
use crate::domain::staff::{Role, StaffScope};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub role: String,
    pub region: String,
    #[serde(default)]
    pub label: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreateKeyResponse {
    pub id: uuid::Uuid,
    /// The key itself. Shown once; only its hash is stored.
    pub key: String,
    pub role: Role,
    pub region: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub role: Role,
    pub region: String,
}

pub fn parse_scope(role: &str, region: &str) -> Result<StaffScope, ApiError> {
    let role: Role = role.parse().map_err(|e: crate::domain::staff::StaffError| {
        ApiError::unprocessable(ErrorCode::InvalidRole, e.to_string())
    })?;
    let region: RegionCode = region.parse().map_err(|e: crate::domain::region::RegionError| {
        ApiError::unprocessable(ErrorCode::InvalidRegion, e.to_string())
    })?;
    StaffScope::new(role, region).map_err(|e| ApiError::unprocessable(ErrorCode::InvalidScope, e.to_string()))
}

/// Mints a staff key (province_admin for its province and cities; city_admin for its city).
#[utoipa::path(post, operation_id = "create_staff_key", path = "/v1/staff/keys", security(("staff_key" = [])), request_body = CreateKeyRequest,
    responses((status = 201, body = CreateKeyResponse), (status = 403, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody), (status = 415, body = super::error::ErrorBody, description = "unsupported_media_type: send Content-Type: application/json")))]
pub async fn create_key(
    State(state): State<AppState>,
    staff: Staff,
    ApiJson(request): ApiJson<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreateKeyResponse>), ApiError> {
    staff.require(&[Role::ProvinceAdmin, Role::CityAdmin])?;
    let scope = parse_scope(&request.role, &request.region)?;
    let label = plain_text(&request.label, 100).ok_or_else(|| {
        ApiError::unprocessable(
            ErrorCode::InvalidLabel,
            "label is at most 100 characters, none of them control characters",
        )
    })?;
    crate::domain::access::mint_key(&staff.scope, &scope)?;
    let minted = staff::mint(state.store(), scope, label, Some(staff.key_id)).await?;
    tracing::info!(key_id = %minted.id, role = %scope.role, region = %scope.region, "staff key minted");
    let body = CreateKeyResponse {
        id: minted.id.as_uuid(),
        key: minted.secret,
        role: scope.role,
        region: scope.region.to_string(),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Who the presented key speaks for.
#[utoipa::path(get, operation_id = "staff_me", path = "/v1/staff/me", security(("staff_key" = [])), responses((status = 200, body = WhoAmI)))]
pub async fn me(staff: Staff) -> Json<WhoAmI> {
    Json(WhoAmI { role: staff.scope.role, region: staff.scope.region.to_string() })
}
