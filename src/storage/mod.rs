//! Storage: the traits the application uses, and one store ([`SqlStore`]) that implements them
//! on either backend, chosen by the URL scheme.
//!
//! The logic is written once, in plain Rust, against `db.rs` (statements that run on either
//! backend; SQLite accepts the same `$N` placeholders): `ledger.rs`, `seasons.rs`, `till.rs`,
//! `card.rs`, `finance.rs`, `codes.rs`. What differs by backend (how a write transaction
//! begins, how the chain head is locked, the statements whose fast form differs) is the
//! `SqlBackend` trait (`backend.rs`), implemented in `postgres/` and `sqlite/`.

use std::sync::Arc;

use async_trait::async_trait;

use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::{StaffEnrolmentId, StaffKeyId};
use crate::domain::ledger::{
    AccountAddress, Balance, IndexedLedgerError, LedgerHead, NewEntry, PostReceipt, PostedEntry,
};
use crate::domain::staff::StaffScope;
use crate::domain::time::{Clock, Timestamp};

mod backend;
mod card;
mod codes;
mod constraint;
mod db;
mod finance;
mod fraud;
mod holds;
mod ledger;
mod notices;
mod postgres;
mod seasons;
mod sqlite;
mod staff;
mod till;
mod types;

pub use backend::SqlStore;
pub use codes::{CodeStore, CodeTry, NewCode};
pub use constraint::Constraint;
pub use db::committed_writes;
pub use finance::{
    DayActivity, FinalReport, FinanceStore, LinkBreaks, MAX_BREAKS_LISTED, MAX_REPORT_ROWS, MerchantMoney,
    MerchantSales, SettlementLineRecord, SettlementPlan, SettlementRecord, StatementEvent,
    VoucherStatusCount,
};
pub use fraud::{FactSink, FraudStore, MerchantLabel};
pub use holds::{HeldLineRecord, HoldDecision, HoldLift, HoldRecord, LiftHold, MAX_HELD_LINES, NewHold};
pub use notices::{CHANNEL as NOTICE_CHANNEL, Notice, NoticeFeed};
#[doc(hidden)]
pub use postgres::HOLDING_SLOTS_SQL as POSTGRES_HOLDING_SLOTS_SQL;
pub use postgres::connections_per_node as postgres_connections_per_node;
#[doc(hidden)]
pub use sqlite::HOLDING_SLOTS_SQL as SQLITE_HOLDING_SLOTS_SQL;

/// The name of the thread the group-commit writers run on (`app::own_thread`): there,
/// PostgreSQL's writes and the writers' reads use connections of the writers' own.
pub const WRITERS_THREAD: &str = "writers";
pub use staff::{ClaimOutcome, EnrolmentTry, NewEnrolment, NewStaffPerson};
pub use types::*;

pub use card::{
    CardFigures, CardHolding, CardPaymentRecord, CardPointsLine, CardSeasonPoints, CardStore, HeldPoints,
    NewCardPayment, NewCardReversal, PointsPolicy,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// How a settlement on this backend is cut into transactions.
    pub fn settlement_chunking(self) -> crate::domain::finance::SettlementChunking {
        use crate::domain::finance::SettlementChunking;
        match self {
            Backend::Postgres => SettlementChunking::ROW_LOCKS,
            Backend::Sqlite => SettlementChunking::ONE_WRITER,
        }
    }

    /// The backend a database URL names: `postgres://` / `postgresql://` or `sqlite:`.
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: expected postgres://... or sqlite://...")]
    UnsupportedUrl(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// One failure shared by every request of a coalesced read (`src/app/coalesce.rs`).
    #[error(transparent)]
    Shared(std::sync::Arc<StorageError>),
}

impl StorageError {
    /// The database refused the transaction because another one conflicted with it (a
    /// PostgreSQL serialization failure or deadlock, SQLite busy), not because it is out of
    /// reach: the same work tried again on fresh state may well commit.
    pub fn is_transient_conflict(&self) -> bool {
        match self {
            StorageError::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("40001" | "40P01" | "5" | "517"))
            }
            StorageError::Shared(inner) => inner.is_transient_conflict(),
            _ => false,
        }
    }

    /// The database is out of reach, not refusing this work: the connection broke (PostgreSQL
    /// killed, restarted or failed over; the network), the server is shutting down or starting
    /// (SQLSTATE `57P01` to `57P03`), a connection exception (class `08`), or no connection slot
    /// left (`53300`). The same request may well succeed a moment later, on this node or another.
    pub fn is_unreachable(&self) -> bool {
        use sqlx::Error as E;
        match self {
            StorageError::Database(E::Io(_) | E::Tls(_) | E::PoolClosed | E::WorkerCrashed) => true,
            StorageError::Database(E::Database(db)) => db.code().is_some_and(|code| {
                code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
            }),
            StorageError::Shared(inner) => inner.is_unreachable(),
            _ => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error(transparent)]
    Refused(#[from] IndexedLedgerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for PostError {
    fn from(error: sqlx::Error) -> Self {
        PostError::Storage(StorageError::Database(error))
    }
}

/// A maintained balance that does not equal the sum of its postings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceMismatch {
    pub address: String,
    pub maintained: Balance,
    pub from_postings: Balance,
}

#[derive(Clone, Debug)]
pub struct NewStaffKey {
    pub id: StaffKeyId,
    pub key_hash: Vec<u8>,
    pub scope: StaffScope,
    pub label: String,
    pub created_at: Timestamp,
    /// The key that minted it through the API; None at the command line.
    pub minted_by: Option<StaffKeyId>,
    /// The person it belongs to (found by phone, made if new); None for a console key minted
    /// without `--name` and `--phone`.
    pub person: Option<NewStaffPerson>,
}

#[derive(Clone, Debug)]
pub struct StaffKeyRecord {
    pub id: StaffKeyId,
    pub scope: StaffScope,
    pub label: String,
    pub revoked: bool,
}

/// A staff key as `wenhui keys list` shows it: never its secret, nor the secret's hash.
#[derive(Clone, Debug)]
pub struct StaffKeyListing {
    pub id: StaffKeyId,
    pub scope: StaffScope,
    pub label: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub minted_by: Option<StaffKeyId>,
}

/// A revoked key and every key minted below it, all revoked now.
#[derive(Clone, Debug)]
pub struct RevokedKeys {
    pub key: StaffKeyListing,
    pub below: Vec<StaffKeyListing>,
}

/// Everything the service stores, on one backend: the narrow stores together, and the
/// database itself. A caller that needs one part takes that part (`&dyn LedgerStore`, ...);
/// `&dyn Storage` coerces to any of them.
#[async_trait]
pub trait Storage:
    LedgerStore
    + StaffStore
    + SeasonStore
    + TillStore
    + CardStore
    + FinanceStore
    + CodeStore
    + FraudStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;

    /// Applies the embedded migrations for this backend.
    async fn migrate(&self) -> Result<(), StorageError>;

    /// One cheap round trip: is the database reachable?
    async fn ping(&self) -> Result<(), StorageError>;

    /// Sends a change notice to every node over this database, this one included
    /// (`notices.rs`; what it means is `app::events`).
    async fn publish_notice(&self, notice: &str) -> Result<(), StorageError>;

    /// Every node's change notices from now on, starting with [`Notice::Resync`].
    fn notices(&self) -> NoticeFeed;

    /// Records `fingerprint` as the fingerprint of the secret `name` unless one is recorded
    /// already, and returns the recorded one (the first node's).
    async fn secret_fingerprint(
        &self,
        name: &str,
        fingerprint: &str,
        now_us: i64,
    ) -> Result<String, StorageError>;

    /// How far behind its primary this database is, as it sees itself: for a PostgreSQL hot
    /// standby (`app::read_side`). A primary, and SQLite, answer [`StandbyLag::NotAStandby`].
    async fn standby_lag(&self) -> Result<StandbyLag, StorageError>;
}

/// How far a hot standby is behind its primary, measured on the standby.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StandbyLag {
    /// Not in recovery: a primary (or a promoted standby), behind nothing.
    NotAStandby,
    /// Everything the standby has received is replayed (`pg_last_wal_receive_lsn() =
    /// pg_last_wal_replay_lsn()`).
    CaughtUp,
    /// Behind: the time since the commit of the last transaction replayed
    /// (`now() - pg_last_xact_replay_timestamp()`), or `None` if none was replayed yet.
    Behind(Option<std::time::Duration>),
}

/// The ledger: the hash chain of journal entries, the maintained balances, and the signed
/// checkpoints of the chain's head.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Posts a batch of entries atomically and in order, in one database transaction: either every
    /// entry is appended to the chain (or recognised as already posted) or nothing is written.
    async fn post_entries(&self, entries: &[NewEntry]) -> Result<Vec<PostReceipt>, PostError>;

    async fn ledger_head(&self) -> Result<LedgerHead, StorageError>;

    /// Up to `limit` entries with `seq > after_seq`, in order, with their postings.
    async fn entries_after(&self, after_seq: i64, limit: i64) -> Result<Vec<PostedEntry>, StorageError>;

    async fn balance(&self, address: &AccountAddress) -> Result<Option<Balance>, StorageError>;

    /// Every account whose maintained balance differs from the sum of its postings.
    async fn balance_mismatches(&self) -> Result<Vec<BalanceMismatch>, StorageError>;

    async fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StorageError>;

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StorageError>;
}

/// Staff API keys: their hashes, scopes, lineage and revocation.
#[async_trait]
pub trait StaffStore: Send + Sync {
    async fn insert_staff_key(&self, key: &NewStaffKey) -> Result<(), StorageError>;

    async fn staff_key_by_hash(&self, key_hash: &[u8]) -> Result<Option<StaffKeyRecord>, StorageError>;

    /// Stores an admin's enrolment of a person for a key (no key exists until it is claimed).
    async fn insert_enrolment(&self, enrolment: &NewEnrolment) -> Result<(), StorageError>;

    /// Counts a claim at an enrolment at `now`, if it is unclaimed, unexpired and has taken fewer
    /// than `max_tries`: the code's hash to compare with.
    async fn try_enrolment(
        &self,
        id: StaffEnrolmentId,
        now: Timestamp,
        max_tries: i32,
    ) -> Result<EnrolmentTry, StorageError>;

    /// Claims a matched enrolment: mints its key for its person and marks it claimed, at most once.
    async fn claim_enrolment(
        &self,
        id: StaffEnrolmentId,
        key_id: StaffKeyId,
        key_hash: &[u8],
        at: Timestamp,
    ) -> Result<ClaimOutcome, StorageError>;

    /// Every staff key, oldest first.
    async fn staff_keys(&self) -> Result<Vec<StaffKeyListing>, StorageError>;

    /// Revokes a key from `at` on, and with it every key minted below it at any depth (whoever
    /// holds a key could have handed out those it minted): the key as it now stands and the
    /// keys below it (None if there is no such key). A key revoked before keeps its first
    /// revocation time.
    async fn revoke_staff_key(
        &self,
        id: StaffKeyId,
        at: Timestamp,
    ) -> Result<Option<RevokedKeys>, StorageError>;
}

/// Connection settings shared by both backends.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub max_connections: u32,
    pub clock: Arc<dyn Clock>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions { max_connections: 16, clock: Arc::new(crate::domain::time::SystemClock) }
    }
}

/// Opens the store the URL names: `postgres://` / `postgresql://` or `sqlite://`.
pub async fn connect(url: &str, options: ConnectOptions) -> Result<Arc<dyn Storage>, StorageError> {
    match Backend::of_url(url) {
        Some(Backend::Postgres) => {
            let backend = postgres::PgBackend::connect(url, options.max_connections).await?;
            Ok(Arc::new(SqlStore::new(Box::new(backend), options.clock)))
        }
        Some(Backend::Sqlite) => {
            let backend = sqlite::SqliteBackend::connect(url, options.max_connections).await?;
            Ok(Arc::new(SqlStore::new(Box::new(backend), options.clock)))
        }
        None => Err(StorageError::UnsupportedUrl(redact_url(url))),
    }
}

/// Opens a PostgreSQL hot standby for reads (`--read-database-url`): lazily (a standby down at
/// start does not stop the start; reads go to the primary until it answers), with a short
/// acquire timeout, never migrated. Any other URL is refused: only PostgreSQL has standbys.
pub fn connect_standby(url: &str, options: ConnectOptions) -> Result<Arc<dyn Storage>, StorageError> {
    match Backend::of_url(url) {
        Some(Backend::Postgres) => {
            let backend = postgres::PgBackend::connect_standby(url, options.max_connections)?;
            Ok(Arc::new(SqlStore::new(Box::new(backend), options.clock)))
        }
        _ => Err(StorageError::UnsupportedUrl(redact_url(url))),
    }
}

/// A URL with any password removed, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::StorageError;

    /// A database's error with a SQLSTATE (or SQLite code), as a driver would return it.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "code {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn coded(code: &'static str) -> StorageError {
        StorageError::Database(sqlx::Error::Database(Box::new(Coded(code))))
    }

    #[test]
    fn a_broken_connection_or_a_stopping_server_is_out_of_reach_a_refusal_is_not() {
        let reset =
            || StorageError::Database(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into());
        assert!(reset().is_unreachable());
        assert!(StorageError::Shared(std::sync::Arc::new(reset())).is_unreachable());
        assert!(StorageError::Database(sqlx::Error::PoolClosed).is_unreachable());
        // Terminated by an administrator (a fast shutdown, a failover), crash, starting up,
        // a connection failure, no connection slot left.
        for code in ["57P01", "57P02", "57P03", "08006", "08001", "53300"] {
            assert!(coded(code).is_unreachable(), "{code}");
        }
        // A unique violation, a serialization failure, SQLite busy and read-only, a check.
        for code in ["23505", "40001", "5", "8", "23514"] {
            assert!(!coded(code).is_unreachable(), "{code}");
        }
        assert!(!StorageError::Database(sqlx::Error::RowNotFound).is_unreachable());
        assert!(!StorageError::Database(sqlx::Error::PoolTimedOut).is_unreachable(), "busy, not gone");
        assert!(!StorageError::Corrupt("hash".into()).is_unreachable());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact_url("sqlite://data/w.db"), "sqlite://data/w.db");
    }

    #[test]
    fn a_url_names_its_backend() {
        use super::Backend;
        assert_eq!(Backend::of_url("postgres://u@h/db"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("postgresql://u@h/db"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("sqlite://data/w.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("sqlite:w.db?mode=rwc"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("mysql://u@h/db"), None);
    }
}
