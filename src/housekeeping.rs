//! Background upkeep of tables that only need to remember for a while: request nonces.
//!
//! A terminal request is refused as stale when its timestamp is more than
//! [`MAX_SKEW_S`](wenhui_merchant_sdk::signing::MAX_SKEW_S) seconds from the service's clock, so a
//! request first seen at `t` carries a timestamp of at most `t + 300 s`, and a replay of it is
//! stale from `t + 600 s` on. Its nonce is kept for [`NONCE_RETENTION_S`] (more than that, for
//! clock differences between service processes) and then deleted, so `terminal_nonces` holds
//! minutes of traffic instead of a whole season's.

use std::sync::Arc;
use std::time::Duration;

use wenhui_merchant_sdk::signing::MAX_SKEW_S;

use crate::domain::time::{Clock, Timestamp};
use crate::storage::{Storage, StorageError};

/// How long a request nonce is remembered: twice the allowed clock skew, plus five minutes.
pub const NONCE_RETENTION_S: i64 = 2 * MAX_SKEW_S + 300;

// A replay passes the clock check until its timestamp (at most first sight + skew) + skew.
const _: () = assert!(NONCE_RETENTION_S > 2 * MAX_SKEW_S);

/// Rows deleted per statement, so that no prune holds SQLite's write lock for long.
const PRUNE_BATCH_ROWS: u32 = 5_000;

/// Deletes every request nonce older than the retention at `now`, in batches; returns how many.
pub async fn prune_terminal_nonces(store: &dyn Storage, now: Timestamp) -> Result<u64, StorageError> {
    let seen_before = Timestamp::from_unix_us(now.unix_us() - NONCE_RETENTION_S * 1_000_000);
    let mut total = 0;
    loop {
        let deleted = store.prune_terminal_nonces(seen_before, PRUNE_BATCH_ROWS).await?;
        total += deleted;
        if deleted < u64::from(PRUNE_BATCH_ROWS) {
            return Ok(total);
        }
    }
}

/// Prunes request nonces every `every`, for as long as the task runs.
pub fn spawn_nonce_pruning(
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match prune_terminal_nonces(store.as_ref(), clock.now()).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "pruned request nonces"),
                Err(error) => tracing::warn!(%error, "pruning request nonces failed"),
            }
        }
    })
}
