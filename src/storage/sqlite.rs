//! SQLite: the embedded default. WAL journal, `synchronous = FULL` (an acknowledged write
//! survives power loss, not only a crash), and every write transaction begins `IMMEDIATE` so it
//! waits for the single writer's lock instead of failing with SQLITE_BUSY halfway through.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::ConnectOptions;
use super::season_sql::season_store;
use super::sql::{AccountCache, sql_store};
use super::till_sql::till_store;
use crate::domain::time::Clock;

const BACKEND: Backend = Backend::Sqlite;
const LOCK_HEAD_SQL: &str = "SELECT seq, hash, posted_at_us FROM ledger_head WHERE id = 1";
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    accounts: AccountCache,
    clock: Arc<dyn Clock>,
}

impl SqliteStore {
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<SqliteStore, StorageError> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.clamp(1, 16))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect)
            .await?;
        Ok(SqliteStore { pool, accounts: AccountCache::default(), clock: options.clock })
    }

    /// `BEGIN IMMEDIATE`: takes SQLite's write lock now, so the transaction is the only writer.
    pub(crate) async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

sql_store!(SqliteStore, sqlx::Sqlite);
season_store!(SqliteStore, sqlx::Sqlite);
till_store!(SqliteStore, sqlx::Sqlite);
