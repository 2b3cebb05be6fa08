//! The one error type of the HTTP layer: `{"error": {"code": "snake_case", "message": "..."}}`
//! with the matching status. Database details never reach the client; they are logged once, here.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::app::error::{AppError, Kind};
use crate::domain::error_code::ErrorCode;
use crate::storage::{PostError, StorageError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Sent as `Retry-After` (seconds), with 429.
    pub retry_after_s: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable, snake_case; one of the stable codes.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
}

/// The codes as a string schema whose `enum` lists every [`ErrorCode`] (written here, not derived
/// in `domain`, so the domain stays free of the OpenAPI library).
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let codes = ErrorCode::ALL.iter().map(|code| code.as_str());
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A stable, machine-readable error code."))
            .enum_values(Some(codes))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after_s: None }
    }

    /// 429 `rate_limited`, to be sent again after `wait` (rounded up to whole seconds).
    pub fn rate_limited(wait: std::time::Duration) -> ApiError {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        let message = format!("too many requests from this account; retry in {seconds} s");
        ApiError {
            retry_after_s: Some(seconds),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, message)
        }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unauthorized(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 403 with a specific code.
    pub fn forbidden_code(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; it has been logged",
        )
    }

    /// 409 `conflict` for a write a database constraint refused that no more specific code
    /// names. The constraint's own text is logged, not sent: database details never reach the
    /// client. Nothing was written.
    pub fn constraint_refusal(detail: &str) -> ApiError {
        tracing::warn!(detail, "write refused by a database constraint");
        ApiError::conflict(
            ErrorCode::Conflict,
            "the write conflicts with the data as it now stands and was not made; read again and retry",
        )
    }

    pub fn unavailable(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// The error body as JSON text, as stored for the replay of a refused keyed write.
    pub fn body_text(&self) -> String {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message.clone() } };
        serde_json::to_string(&body).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        let cause = match &error {
            StorageError::Shared(shared) => shared.as_ref(),
            other => other,
        };
        match cause {
            StorageError::Database(sqlx::Error::PoolTimedOut) => {
                tracing::warn!(%error, "database pool exhausted");
                ApiError::unavailable(ErrorCode::DatabaseBusy, "the database is busy; retry shortly")
            }
            unreachable if unreachable.is_unreachable() => {
                tracing::warn!(%error, "the database is out of reach");
                let message = "the database cannot be reached; retry shortly";
                ApiError {
                    retry_after_s: Some(1),
                    ..ApiError::unavailable(ErrorCode::DatabaseUnavailable, message)
                }
            }
            _ => {
                tracing::error!(%error, "storage error");
                ApiError::internal()
            }
        }
    }
}

/// A read answered 5xx failed on the database's side (or ours): worth a second try on the
/// primary when it ran on the standby (`app::read_side`).
impl crate::app::read_side::ReadFailure for ApiError {
    fn is_database_failure(&self) -> bool {
        self.status.is_server_error()
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Refused { kind, code, message } => {
                let status = match kind {
                    Kind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                    Kind::Forbidden => StatusCode::FORBIDDEN,
                    Kind::NotFound => StatusCode::NOT_FOUND,
                    Kind::Conflict => StatusCode::CONFLICT,
                    Kind::Gone => StatusCode::GONE,
                    Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                };
                ApiError::new(status, code, message)
            }
            AppError::Constraint(detail) => ApiError::constraint_refusal(&detail),
            AppError::Storage(error) => error.into(),
            AppError::Internal(detail) => {
                tracing::error!(detail, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl From<PostError> for ApiError {
    fn from(error: PostError) -> Self {
        match error {
            PostError::Refused(refusal) => {
                ApiError::unprocessable(ErrorCode::LedgerRefused, refusal.to_string())
            }
            PostError::Storage(storage) => storage.into(),
        }
    }
}

/// A serde message without the values it quotes: "invalid type: integer `13812345678`, expected
/// a string" becomes "invalid type: integer, expected a string". A phone, an ID number or an
/// account number sent as a JSON number would otherwise come back in the error (and in any log
/// or proxy that keeps error bodies). Field names, which are not secret, stay.
pub(crate) fn withhold_values(message: &str) -> String {
    let mut kept = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let marker = ["invalid type: ", "invalid value: ", "invalid length "]
            .iter()
            .filter_map(|m| rest.find(m).map(|at| at + m.len()))
            .min();
        let Some(after) = marker else {
            kept.push_str(rest);
            return kept;
        };
        kept.push_str(&rest[..after]);
        let tail = &rest[after..];
        let Some(end) = tail.find(", expected") else {
            kept.push_str("(value withheld)");
            return kept;
        };
        kept.push_str(tail[..end].split(['`', '"']).next().unwrap_or_default().trim_end());
        rest = &tail[end..];
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = withhold_values(&rejection.body_text());
        match rejection {
            JsonRejection::JsonDataError(_) => ApiError::unprocessable(ErrorCode::InvalidBody, message),
            JsonRejection::JsonSyntaxError(_) => ApiError::bad_request(ErrorCode::MalformedJson, message),
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BodyTooLarge,
                "request body is too large",
            ),
            other => ApiError::new(other.status(), ErrorCode::BadRequest, message),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BodyTooLarge, "request body is too large")
        } else {
            ApiError::new(rejection.status(), ErrorCode::UnreadableBody, "the request body could not be read")
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(ErrorCode::InvalidQuery, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::not_found(ErrorCode::NotFound, rejection.body_text())
    }
}

impl From<crate::domain::access::Denied> for ApiError {
    fn from(denied: crate::domain::access::Denied) -> ApiError {
        ApiError::forbidden(denied.0)
    }
}

#[cfg(test)]
mod tests {
    use super::withhold_values;
    use crate::domain::error_code::ErrorCode;

    /// A connection lost under a request (PostgreSQL killed or failed over) is 503
    /// `database_unavailable` with a `Retry-After`, not a 500; any other storage failure is a 500.
    #[test]
    fn a_database_out_of_reach_is_503_not_500() {
        use crate::storage::StorageError;
        let reset = StorageError::Database(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into());
        let answer = super::ApiError::from(StorageError::Shared(std::sync::Arc::new(reset)));
        assert_eq!((answer.status.as_u16(), answer.code), (503, ErrorCode::DatabaseUnavailable));
        assert_eq!(answer.retry_after_s, Some(1));
        let busy = super::ApiError::from(StorageError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!((busy.status.as_u16(), busy.code), (503, ErrorCode::DatabaseBusy));
        let corrupt = super::ApiError::from(StorageError::Corrupt("a hash".into()));
        assert_eq!((corrupt.status.as_u16(), corrupt.code), (500, ErrorCode::Internal));
    }

    #[test]
    fn the_openapi_document_lists_every_code_as_an_enum() {
        let document = serde_json::to_value(crate::http::openapi()).expect("the document serialises");
        let schemas = &document["components"]["schemas"];
        assert_eq!(schemas["ErrorDetail"]["properties"]["code"]["$ref"], "#/components/schemas/ErrorCode");
        let listed = schemas["ErrorCode"]["enum"].as_array().expect("ErrorCode has an enum");
        let expected: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(listed, &expected);
    }

    #[test]
    fn the_body_carries_the_code_string() {
        let answer = super::ApiError::conflict(ErrorCode::SeasonClosed, "closed");
        let body =
            super::ErrorBody { error: super::ErrorDetail { code: answer.code, message: answer.message } };
        let json = serde_json::to_value(body).expect("the body serialises");
        assert_eq!(json, serde_json::json!({"error": {"code": "season_closed", "message": "closed"}}));
    }

    #[test]
    fn serde_messages_keep_field_names_and_lose_values() {
        let cases = [
            (
                "phone: invalid type: integer `13812345678`, expected a string at line 1 column 22",
                "phone: invalid type: integer, expected a string at line 1 column 22",
            ),
            (
                "invalid value: string \"370202199001011234\", expected a region code",
                "invalid value: string, expected a region code",
            ),
            (
                "invalid type: floating point `1.5`, expected i64",
                "invalid type: floating point, expected i64",
            ),
            ("invalid length 3, expected 2 elements", "invalid length 3, expected 2 elements"),
            ("missing field `phone` at line 1 column 2", "missing field `phone` at line 1 column 2"),
            ("unknown field `pin`, expected one of `via`", "unknown field `pin`, expected one of `via`"),
            ("invalid type: integer `1` and no expectation", "invalid type: (value withheld)"),
        ];
        for (serde, expected) in cases {
            assert_eq!(withhold_values(serde), expected);
        }
        let twice = "a: invalid type: integer `111`, expected x; b: invalid type: integer `222`, expected y";
        assert_eq!(
            withhold_values(twice),
            "a: invalid type: integer, expected x; b: invalid type: integer, expected y"
        );
    }
}
