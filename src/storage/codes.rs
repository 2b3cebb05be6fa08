//! One-time codes' storage (`one_time_codes`): the trait and its implementation on either
//! backend. One row per phone (its keyed hash) and purpose; the rules are the application's
//! (`app/codes.rs`) and the domain's (`domain/one_time_code.rs`), the store makes each step
//! atomic: a code replaces the last only if no other request replaced it first, a try is
//! counted before the code is compared, and a code is used at most once.

use async_trait::async_trait;

use crate::domain::one_time_code::{CodePurpose, IssueHistory};
use crate::domain::time::Timestamp;
use crate::storage::db::{query, query_as};
use crate::storage::{SqlStore, StorageError};

/// A code to store, in place of the phone's last code for the same purpose.
#[derive(Clone, Debug)]
pub struct NewCode {
    pub phone_hash: Vec<u8>,
    pub purpose: CodePurpose,
    pub code_hash: Vec<u8>,
    pub expires_at: Timestamp,
    pub history: IssueHistory,
}

/// A try at a code, counted: the code's hash to compare with, if the code was still usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeTry {
    /// The try is counted; compare with this hash, then [`CodeStore::use_code`] if it matches.
    Counted { code_hash: Vec<u8> },
    /// No usable code: none sent, used, or expired.
    NoCode,
    /// The code has taken its tries.
    Locked,
}

#[async_trait]
pub trait CodeStore: Send + Sync {
    /// The issuing history of this phone and purpose, if a code was ever sent.
    async fn code_history(
        &self,
        phone_hash: &[u8],
        purpose: CodePurpose,
    ) -> Result<Option<IssueHistory>, StorageError>;

    /// Stores `code` if the history is still `previous` (compare and set on the last issue
    /// time); false if another request stored a code in between.
    async fn put_code(&self, code: &NewCode, previous: Option<IssueHistory>) -> Result<bool, StorageError>;

    /// Counts a try at the phone's code for `purpose` at `now`, if the code is usable and has
    /// taken fewer than `max_tries`.
    async fn try_code(
        &self,
        phone_hash: &[u8],
        purpose: CodePurpose,
        now: Timestamp,
        max_tries: i32,
    ) -> Result<CodeTry, StorageError>;

    /// Uses the code whose hash is `code_hash`: true if it was there and is now gone (false if
    /// another request used it first).
    async fn use_code(
        &self,
        phone_hash: &[u8],
        purpose: CodePurpose,
        code_hash: &[u8],
    ) -> Result<bool, StorageError>;
}

/// A `one_time_codes` row's issue counters.
#[derive(sqlx::FromRow)]
struct IssueHistoryRow {
    issued_at_us: i64,
    day_started_at_us: i64,
    issued_in_day: i32,
}

#[async_trait]
impl CodeStore for SqlStore {
    async fn code_history(
        &self,
        phone_hash: &[u8],
        purpose: CodePurpose,
    ) -> Result<Option<IssueHistory>, StorageError> {
        let row: Option<IssueHistoryRow> = query_as(
            "SELECT issued_at_us, day_started_at_us, issued_in_day FROM one_time_codes \
             WHERE phone_hash = $1 AND purpose = $2",
        )
        .bind(phone_hash)
        .bind(purpose.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| IssueHistory {
            issued_at: Timestamp::from_unix_us(r.issued_at_us),
            day_started_at: Timestamp::from_unix_us(r.day_started_at_us),
            issued_in_day: r.issued_in_day,
        }))
    }

    async fn put_code(&self, code: &NewCode, previous: Option<IssueHistory>) -> Result<bool, StorageError> {
        let sql = match previous {
            None => {
                "INSERT INTO one_time_codes (phone_hash, purpose, code_hash, expires_at_us, tries, \
                 issued_at_us, day_started_at_us, issued_in_day) VALUES ($1, $2, $3, $4, 0, $5, $6, $7) \
                 ON CONFLICT (phone_hash, purpose) DO NOTHING"
            }
            Some(_) => {
                "UPDATE one_time_codes SET code_hash = $3, expires_at_us = $4, tries = 0, issued_at_us = $5, \
                 day_started_at_us = $6, issued_in_day = $7 \
                 WHERE phone_hash = $1 AND purpose = $2 AND issued_at_us = $8"
            }
        };
        let mut statement = query(sql)
            .bind(code.phone_hash.as_slice())
            .bind(code.purpose.as_str())
            .bind(code.code_hash.as_slice())
            .bind(code.expires_at.unix_us())
            .bind(code.history.issued_at.unix_us())
            .bind(code.history.day_started_at.unix_us())
            .bind(code.history.issued_in_day);
        if let Some(previous) = previous {
            statement = statement.bind(previous.issued_at.unix_us());
        }
        Ok(statement.execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn try_code(
        &self,
        phone_hash: &[u8],
        purpose: CodePurpose,
        now: Timestamp,
        max_tries: i32,
    ) -> Result<CodeTry, StorageError> {
        let counted: Option<(Vec<u8>,)> = query_as(
            "UPDATE one_time_codes SET tries = tries + 1 \
             WHERE phone_hash = $1 AND purpose = $2 AND code_hash IS NOT NULL \
             AND expires_at_us > $3 AND tries < $4 RETURNING code_hash",
        )
        .bind(phone_hash)
        .bind(purpose.as_str())
        .bind(now.unix_us())
        .bind(max_tries)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((code_hash,)) = counted {
            return Ok(CodeTry::Counted { code_hash });
        }
        let locked: Option<(i32,)> = query_as(
            "SELECT tries FROM one_time_codes WHERE phone_hash = $1 AND purpose = $2 \
             AND code_hash IS NOT NULL AND expires_at_us > $3 AND tries >= $4",
        )
        .bind(phone_hash)
        .bind(purpose.as_str())
        .bind(now.unix_us())
        .bind(max_tries)
        .fetch_optional(&self.pool)
        .await?;
        Ok(if locked.is_some() { CodeTry::Locked } else { CodeTry::NoCode })
    }

    async fn use_code(
        &self,
        phone_hash: &[u8],
        purpose: CodePurpose,
        code_hash: &[u8],
    ) -> Result<bool, StorageError> {
        let done = query(
            "UPDATE one_time_codes SET code_hash = NULL \
             WHERE phone_hash = $1 AND purpose = $2 AND code_hash = $3",
        )
        .bind(phone_hash)
        .bind(purpose.as_str())
        .bind(code_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
