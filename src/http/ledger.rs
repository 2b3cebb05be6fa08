//! Ledger endpoints for finance and auditors.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::extract::Staff;
use crate::app::audit::{self, VerifyFailure};
use crate::domain::checkpoint::Checkpoint;
use crate::domain::error_code::ErrorCode;

#[derive(Serialize, utoipa::ToSchema)]
pub struct VerifyResponse {
    pub ok: bool,
    pub entries_checked: Option<i64>,
    pub head_hash: Option<String>,
    /// What is broken, when `ok` is false.
    pub problem: Option<String>,
}

/// Recomputes the hash chain and balances now (finance, auditor).
#[utoipa::path(get, operation_id = "verify_ledger", path = "/v1/ledger/verify", security(("staff_key" = [])),
    responses((status = 200, body = VerifyResponse), (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn verify(State(state): State<AppState>, staff: Staff) -> Result<Json<VerifyResponse>, ApiError> {
    crate::domain::access::verify_ledger(&staff.scope)?;
    match audit::verify_store(state.store()).await {
        Ok(report) => Ok(Json(VerifyResponse {
            ok: true,
            entries_checked: Some(report.entries_checked),
            head_hash: Some(report.head_hash),
            problem: None,
        })),
        Err(VerifyFailure::Storage(error)) => Err(error.into()),
        Err(failure) => {
            tracing::error!(%failure, "ledger verification failed");
            Ok(Json(VerifyResponse {
                ok: false,
                entries_checked: None,
                head_hash: None,
                problem: Some(failure.to_string()),
            }))
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckpointResponse {
    pub seq: i64,
    pub head_hash: String,
    pub signed_at: String,
    pub key_id: String,
    pub signature: String,
    /// The Ed25519 public key (base64url) that verifies the signature.
    pub public_key: String,
}

/// The latest signed checkpoint of the ledger (any staff role).
#[utoipa::path(get, operation_id = "latest_checkpoint", path = "/v1/ledger/checkpoints/latest", security(("staff_key" = [])),
    responses((status = 200, body = CheckpointResponse), (status = 404, body = super::error::ErrorBody)))]
pub async fn latest_checkpoint(
    State(state): State<AppState>,
    _staff: Staff,
) -> Result<Json<CheckpointResponse>, ApiError> {
    let checkpoint: Checkpoint =
        state.store().latest_checkpoint().await?.ok_or_else(|| {
            ApiError::not_found(ErrorCode::NoCheckpoint, "no checkpoint has been signed yet")
        })?;
    Ok(Json(CheckpointResponse {
        seq: checkpoint.seq,
        head_hash: checkpoint.head_hash,
        signed_at: checkpoint.signed_at.to_string(),
        key_id: checkpoint.key_id,
        signature: checkpoint.signature,
        public_key: state.ledger_key().public_key_base64url(),
    }))
}
