//! A node's state for `/readyz` and `/metrics`: the ledger as the database answers within a
//! short timeout (so a probe reads "not ready" in time instead of waiting on the pool), and how
//! long the oldest ledger entry has gone without a signed checkpoint.

use std::time::Duration;

use crate::domain::time::Timestamp;
use crate::storage::LedgerStore;

/// The ledger's head and how far the signed checkpoints lag behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerState {
    pub head_seq: i64,
    /// Since the oldest entry no checkpoint covers yet; zero when the latest covers the head.
    pub checkpoint_age: Duration,
}

/// The ledger head's sequence number, or why the database did not give it within `within`.
pub async fn ledger_head_seq(store: &dyn LedgerStore, within: Duration) -> Result<i64, String> {
    match tokio::time::timeout(within, store.ledger_head()).await {
        Ok(Ok(head)) => Ok(head.seq),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} ms", within.as_millis())),
    }
}

/// The head and the checkpoint lag at `now`, or why the database did not give them in time.
pub async fn ledger_state(
    store: &dyn LedgerStore,
    now: Timestamp,
    within: Duration,
) -> Result<LedgerState, String> {
    match tokio::time::timeout(within, read_ledger_state(store, now)).await {
        Ok(Ok(state)) => Ok(state),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} ms", within.as_millis())),
    }
}

async fn read_ledger_state(
    store: &dyn LedgerStore,
    now: Timestamp,
) -> Result<LedgerState, crate::storage::StorageError> {
    let head = store.ledger_head().await?;
    let signed = store.latest_checkpoint().await?.map(|checkpoint| checkpoint.seq).unwrap_or(0);
    if head.seq <= signed {
        return Ok(LedgerState { head_seq: head.seq, checkpoint_age: Duration::ZERO });
    }
    let oldest_unsigned = store.entries_after(signed, 1).await?;
    let since = oldest_unsigned.first().map(|entry| entry.posted_at).unwrap_or(head.posted_at);
    let age_us = u64::try_from(now.unix_us().saturating_sub(since.unix_us())).unwrap_or(0);
    Ok(LedgerState { head_seq: head.seq, checkpoint_age: Duration::from_micros(age_us) })
}
