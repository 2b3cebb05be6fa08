//! Idempotency for writes a client may retry: the `Idempotency-Key` header, the request hash,
//! and replaying a stored answer. Answers are stored by the storage layer in the same
//! transaction as the effect (see `IdemRecord`), so a stored answer means the effect happened.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ring::digest;

use super::error::ApiError;
use crate::domain::error_code::ErrorCode;
use crate::storage::{Storage, StoredAnswer};

pub const MAX_KEY_LEN: usize = 128;

/// The required `Idempotency-Key` header: 1-128 visible ASCII characters, sent once (400
/// `duplicate_idempotency_key` for two or more).
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all("idempotency-key").iter();
        let value = values.next().ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::MissingIdempotencyKey,
                "this write needs an Idempotency-Key header",
            )
        })?;
        if values.next().is_some() {
            return Err(ApiError::bad_request(
                ErrorCode::DuplicateIdempotencyKey,
                "send one Idempotency-Key header, not several",
            ));
        }
        let key = value
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic()));
        key.map(|k| IdempotencyKey(k.to_owned())).ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidIdempotencyKey,
                "Idempotency-Key must be 1-128 visible ASCII characters",
            )
        })
    }
}

/// SHA-256 over the method, the path and the body: what "the same request" means.
pub fn request_hash(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(method.as_bytes());
    context.update(b" ");
    context.update(path.as_bytes());
    context.update(b"\n");
    context.update(body);
    context.finish().as_ref().to_vec()
}

/// A JSON response from a status and a body already rendered to text.
pub fn json_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A replayed answer: the stored one, marked `idempotent-replayed: true`.
fn replayed_response(status: u16, body: String) -> Response {
    let mut response = json_response(status, body);
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// The claim writer's answer (a claim, a points exchange), marked when it is a replay.
pub fn writer_response(answer: crate::app::claims::Answer) -> Response {
    if answer.replayed {
        replayed_response(answer.status, answer.body)
    } else {
        json_response(answer.status, answer.body)
    }
}

pub fn replay(stored: &StoredAnswer, request_hash: &[u8]) -> Result<Response, ApiError> {
    if stored.request_hash == request_hash {
        Ok(replayed_response(stored.status, stored.body.clone()))
    } else {
        Err(ApiError::unprocessable(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request",
        ))
    }
}

/// The stored answer for this key, replayed, if there is one.
pub async fn replay_if_known(
    store: &dyn Storage,
    scope: &str,
    key: &str,
    request_hash: &[u8],
) -> Result<Option<Response>, ApiError> {
    match store.idempotent_answer(scope, key).await? {
        Some(stored) => replay(&stored, request_hash).map(Some),
        None => Ok(None),
    }
}

/// Parses a JSON body read as bytes (so it can be hashed) with our error codes.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|error| {
        use serde_json::error::Category;
        match error.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                ErrorCode::MalformedJson,
                format!("the body is not valid JSON: {error}"),
            ),
            Category::Data => ApiError::unprocessable(
                ErrorCode::InvalidBody,
                super::error::withhold_values(&error.to_string()),
            ),
        }
    })
}

/// The start of every keyed staff write: the request hash, the key's scope, and the stored
/// answer if this key was used before.
pub enum Prelude {
    Replay(Response),
    Fresh { scope: String, hash: Vec<u8> },
}

pub async fn staff_prelude(
    store: &dyn Storage,
    staff_key_id: crate::domain::ids::StaffKeyId,
    path: &str,
    key: &str,
    body: &[u8],
) -> Result<Prelude, ApiError> {
    let hash = request_hash("POST", path, body);
    let scope = format!("staff:{staff_key_id}");
    Ok(match replay_if_known(store, &scope, key, &hash).await? {
        Some(replayed) => Prelude::Replay(replayed),
        None => Prelude::Fresh { scope, hash },
    })
}

/// The answer to a keyed write the storage layer carried out (or refused): the stored answer,
/// a replay if a twin committed first, or the refusal. `on_conflict` answers a refusal the storage
/// decided or a constraint refused (`WriteError::Refused` or `WriteError::Constraint`).
pub async fn write_outcome(
    store: &dyn Storage,
    outcome: Result<(), crate::storage::WriteError>,
    record: crate::storage::IdemRecord,
    on_conflict: impl FnOnce(crate::storage::WriteError) -> ApiError,
) -> Result<Response, ApiError> {
    use crate::domain::ledger::LedgerError;
    use crate::storage::WriteError;
    match outcome {
        Ok(()) => Ok(json_response(record.status, record.body)),
        Err(WriteError::IdempotencyTaken) => {
            replay_if_known(store, &record.scope, &record.key, &record.request_hash)
                .await?
                .ok_or_else(ApiError::internal)
        }
        Err(WriteError::Ledger(refusal)) => match refusal.error {
            LedgerError::LimitExceeded { address, .. } => Err(ApiError::conflict(
                ErrorCode::BudgetExceeded,
                format!("not enough money left in {address}"),
            )),
            other => Err(ApiError::unprocessable(ErrorCode::LedgerRefused, other.to_string())),
        },
        Err(refused @ (WriteError::Refused(_) | WriteError::Constraint(_))) => Err(on_conflict(refused)),
        Err(WriteError::Storage(error)) => Err(error.into()),
    }
}
