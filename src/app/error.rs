//! What the application refuses: a kind (what sort of refusal it is), a stable code and a message
//! for people. The HTTP layer chooses the status from the kind (`http::error`); nothing here
//! knows about HTTP.

use crate::domain::error_code::ErrorCode;
use crate::storage::StorageError;

/// What sort of refusal: the request asks for what the rules do not allow (`Invalid`), by
/// someone who may not (`Forbidden`), about something that does not exist (`NotFound`), against
/// the state as it stands (`Conflict`), with a token that is no longer valid (`Gone`), or at a
/// moment the service cannot do it (`Unavailable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Invalid,
    Forbidden,
    NotFound,
    Conflict,
    Gone,
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{code}: {message}")]
    Refused { kind: Kind, code: ErrorCode, message: String },
    /// A write a database constraint refused that no more specific code names (the detail is
    /// logged, not sent).
    #[error("refused by a database constraint: {0}")]
    Constraint(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A fault of ours (the detail is logged, not sent).
    #[error("internal error: {0}")]
    Internal(String),
}

/// A capability of `domain::access` not held: 403 `forbidden`.
impl From<crate::domain::access::Denied> for AppError {
    fn from(denied: crate::domain::access::Denied) -> AppError {
        AppError::forbidden(ErrorCode::Forbidden, denied.0)
    }
}

impl AppError {
    pub fn refused(kind: Kind, code: ErrorCode, message: impl Into<String>) -> AppError {
        AppError::Refused { kind, code, message: message.into() }
    }

    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> AppError {
        AppError::refused(Kind::Invalid, code, message)
    }

    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> AppError {
        AppError::refused(Kind::Forbidden, code, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> AppError {
        AppError::refused(Kind::NotFound, code, message)
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> AppError {
        AppError::refused(Kind::Conflict, code, message)
    }

    pub fn internal(detail: impl Into<String>) -> AppError {
        AppError::Internal(detail.into())
    }

    /// The code of a refusal, if this is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AppError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}
