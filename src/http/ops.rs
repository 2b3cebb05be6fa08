//! Operational endpoints: liveness, readiness, metrics, and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;

use crate::domain::error_code::ErrorCode;

use super::AppState;
use super::error::ApiError;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, operation_id = "healthz", path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// How long the readiness probe waits for the database: a load balancer's health check reads a
/// 503 in time instead of timing out behind the pool's own acquire timeout.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The readiness answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    pub status: &'static str,
    /// The read standby's lag at its last check (every 200 ms), in milliseconds: null without a
    /// standby (`--read-database-url`), or while it does not answer.
    pub replica_lag_ms: Option<u64>,
}

/// The database answers, within [`READY_TIMEOUT`].
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", responses((status = 200, body = Ready), (status = 503, body = super::error::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let refused = match tokio::time::timeout(READY_TIMEOUT, state.store().ping()).await {
        Ok(Ok(())) => {
            let replica_lag_ms = state.reads().standby_lag().map(millis);
            return Ok(Json(Ready { status: "ready", replica_lag_ms }));
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {} ms", READY_TIMEOUT.as_millis()),
    };
    tracing::warn!(error = %refused, "readiness check failed");
    Err(ApiError::unavailable(ErrorCode::DatabaseUnavailable, "the database does not answer"))
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Prometheus text format: request counts and latencies by route.
#[utoipa::path(get, operation_id = "metrics", path = "/metrics", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.0.metrics.render())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi",
    responses((status = 200, description = "the OpenAPI 3.1 document of this service", content_type = "application/json")))]
pub async fn openapi() -> impl IntoResponse {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(super::openapi).clone())
}

pub async fn not_found() -> ApiError {
    ApiError::not_found(ErrorCode::NotFound, "no such endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "method not allowed here",
    )
}
