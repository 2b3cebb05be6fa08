//! PostgreSQL: the production backend. Writers serialize on the `ledger_head` row
//! (`SELECT ... FOR UPDATE`), which is what keeps sequence numbers gapless across processes.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::ConnectOptions;
use super::season_sql::season_store;
use super::sql::{AccountCache, sql_store};
use super::till_sql::till_store;
use crate::domain::time::Clock;

const BACKEND: Backend = Backend::Postgres;
const LOCK_HEAD_SQL: &str = "SELECT seq, hash, posted_at_us FROM ledger_head WHERE id = 1 FOR UPDATE";
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    accounts: AccountCache,
    clock: Arc<dyn Clock>,
}

impl PgStore {
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<PgStore, StorageError> {
        let connect = PgConnectOptions::from_str(url)?.application_name("wenhui");
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        Ok(PgStore { pool, accounts: AccountCache::default(), clock: options.clock })
    }

    /// A transaction for appending; the head row lock is taken by `append`.
    pub(crate) async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        self.pool.begin().await
    }
}

sql_store!(PgStore, sqlx::Postgres);
season_store!(PgStore, sqlx::Postgres);
till_store!(PgStore, sqlx::Postgres);
