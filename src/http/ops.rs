//! Operational endpoints: liveness, readiness, metrics, and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Serialize;

use crate::app::health;
use crate::domain::error_code::ErrorCode;
use crate::telemetry;

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

/// How long the readiness probe (and a scrape of `/metrics`) waits for the database: a load
/// balancer's health check reads a 503 in time instead of timing out behind the pool's own
/// acquire timeout.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The node is ready: the database answered, and the node's state as it stands.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: &'static str,
    /// Requests waiting in this node's writers' queues.
    pub writer_queue_depth: WriterQueues,
    /// Seconds since a writer on this node last committed a group; null before the first.
    pub seconds_since_last_commit: Option<f64>,
    /// The ledger head's sequence number, as the database answered this probe.
    pub ledger_head_seq: i64,
    /// How far the read replica is behind the primary, in milliseconds; null without a replica.
    pub replica_lag_ms: Option<u64>,
}

/// Requests waiting in each of the node's group writers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WriterQueues {
    pub claims: u64,
    pub redemptions: u64,
}

/// The database answers, within [`READY_TIMEOUT`]; with the node's state.
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", responses((status = 200, body = Readiness), (status = 503, body = super::error::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let ledger_head_seq = match health::ledger_head_seq(state.store(), READY_TIMEOUT).await {
        Ok(seq) => seq,
        Err(refused) => {
            tracing::warn!(error = %refused, "readiness check failed");
            let message = "the database does not answer";
            return Err(ApiError::unavailable(ErrorCode::DatabaseUnavailable, message));
        }
    };
    let (claims, redemptions) = (state.writer(), state.redemptions());
    let last = [claims.stats().since_last_commit(), redemptions.stats().since_last_commit()];
    Ok(Json(Readiness {
        status: "ready",
        writer_queue_depth: WriterQueues {
            claims: claims.queue_depth() as u64,
            redemptions: redemptions.queue_depth() as u64,
        },
        seconds_since_last_commit: last.into_iter().flatten().min().map(|since| since.as_secs_f64()),
        ledger_head_seq,
        replica_lag_ms: None,
    }))
}

/// Prometheus text format: requests, claims, redemptions, the writers, the ledger, the process
/// (every name in `crate::telemetry`; docs/operations.md lists them).
#[utoipa::path(get, operation_id = "metrics", path = "/metrics", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let now = state.clock().now();
    let ledger = match health::ledger_state(state.store(), now, READY_TIMEOUT).await {
        Ok(ledger) => {
            Some(telemetry::LedgerGauges { head_seq: ledger.head_seq, checkpoint_age: ledger.checkpoint_age })
        }
        Err(error) => {
            tracing::warn!(%error, "metrics: the ledger's state could not be read");
            None
        }
    };
    let (claims, redemptions) = (state.writer(), state.redemptions());
    let writers = [
        telemetry::WriterGauges {
            writer: telemetry::CLAIM_WRITER,
            queue_depth: claims.queue_depth(),
            last_commit_age: claims.stats().last_commit_age(),
        },
        telemetry::WriterGauges {
            writer: telemetry::REDEMPTION_WRITER,
            queue_depth: redemptions.queue_depth(),
            last_commit_age: redemptions.stats().last_commit_age(),
        },
    ];
    let (process, node) = &state.inner().metrics;
    node.set(&writers, ledger);
    telemetry::collect_process_metrics();
    let mut text = process.as_ref().map(|handle| handle.render()).unwrap_or_default();
    text.push_str(&node.render());
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
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
