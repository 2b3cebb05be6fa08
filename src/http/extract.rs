//! Extractors: JSON, query and path whose rejections speak our error format, and the staff
//! principal from `Authorization: Bearer <key>`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::app::staff;
use crate::domain::error_code::ErrorCode;
use crate::domain::ids::StaffKeyId;
use crate::domain::region::RegionCode;
use crate::domain::staff::{Role, StaffScope};

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// A JSON body as bytes (kept as bytes so it can be hashed for idempotency and request
/// signatures), whose rejections (over the size limit, a broken stream) speak our error format.
/// A body that is not empty must say `Content-Type: application/json` (or `application/*+json`),
/// as [`ApiJson`] requires: 415 `unsupported_media_type` otherwise.
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers());
        let ApiRawBytes(body) = ApiRawBytes::from_request(request, state).await?;
        if !body.is_empty() && !json {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ));
        }
        Ok(ApiBytes(body))
    }
}

/// Whether the request says its body is JSON: `application/json` or `application/*+json`.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json"
        || essence.strip_prefix("application/").is_some_and(|sub| sub.ends_with("+json"))
}

/// A body of any type as bytes (a till's JSON-lines journal), with our error format.
pub struct ApiRawBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiRawBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state).await.map(ApiRawBytes).map_err(ApiError::from)
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

pub(crate) use crate::domain::text::{PLAIN_TEXT_RULE, plain_text};

/// An authenticated member of staff.
#[derive(Clone, Copy, Debug)]
pub struct Staff {
    pub scope: StaffScope,
    pub key_id: StaffKeyId,
}

impl Staff {
    /// Refuses with 403 unless the key holds one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<StaffScope, ApiError> {
        crate::domain::access::holds(&self.scope, roles)?;
        Ok(self.scope)
    }

    /// Asks `rule` (a capability of `crate::domain::access`) about the resource's region.
    pub fn may<T>(
        &self,
        rule: fn(&StaffScope, RegionCode) -> Result<T, crate::domain::access::Denied>,
        region: RegionCode,
    ) -> Result<T, ApiError> {
        Ok(rule(&self.scope, region)?)
    }
}

pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or_else(|| {
            ApiError::unauthorized(
                ErrorCode::Unauthenticated,
                "send a staff key as Authorization: Bearer <key>",
            )
        })?;
        let invalid = || ApiError::unauthorized(ErrorCode::InvalidKey, "the staff key is not valid");
        if !staff::looks_like_key(token) {
            return Err(invalid());
        }
        let record = state
            .store()
            .staff_key_by_hash(&staff::hash_key(token))
            .await?
            .filter(|r| !r.revoked)
            .ok_or_else(invalid)?;
        Ok(Staff { scope: record.scope, key_id: record.id })
    }
}

impl OptionalFromRequestParts<AppState> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        if bearer_token(parts).is_none() {
            return Ok(None);
        }
        <Staff as FromRequestParts<AppState>>::from_request_parts(parts, state).await.map(Some)
    }
}

/// The query of a list paged by a row's id: `after` (the previous page's `next_after`, the typed
/// id of the list's rows, e.g. `PageQuery<VoucherId>`) and `limit`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery<Id> {
    /// Absent: the first page (serde reads a missing `Option` as `None`).
    pub after: Option<Id>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// The page size asked for, `default` when none was, refused outside 1..=`max`.
pub(crate) fn page_limit(asked: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match asked.unwrap_or(default) {
        limit @ 1.. if limit <= max => Ok(limit),
        _ => Err(ApiError::unprocessable(ErrorCode::InvalidLimit, format!("limit is 1 to {max}"))),
    }
}

/// Given a page read with one row more than `limit`, drops that extra row and returns the
/// page's last row when there is a next page.
pub(crate) fn next_cursor<T>(rows: &mut Vec<T>, limit: u32) -> Option<&T> {
    let limit = limit as usize;
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last()
    } else {
        None
    }
}
