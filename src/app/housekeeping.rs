//! Background upkeep of tables that only need to remember for a while: request nonces, spent
//! QR token nonces and the stored answers of citizens' and tills' retried writes.
//!
//! **Request nonces.** A terminal request is refused as stale when its timestamp is more than
//! [`MAX_SKEW_S`](wenhui_merchant_sdk::signing::MAX_SKEW_S) seconds from the service's clock, so a
//! request first seen at `t` carries a timestamp of at most `t + 300 s`, and a replay of it is
//! stale from `t + 600 s` on. Its nonce is kept for [`NONCE_RETENTION_S`] (more than that, for
//! clock differences between service processes) and then deleted, so `terminal_nonces` holds
//! minutes of traffic instead of a whole season's.
//!
//! **Spent QR token nonces** (`qr_nonces`). A token lives at most
//! [`MAX_LIFETIME_S`](wenhui_merchant_sdk::token::MAX_LIFETIME_S) and is honoured at most
//! [`CLOCK_SKEW_S`](wenhui_merchant_sdk::token::CLOCK_SKEW_S) before its issue time, so a token
//! spent at `t` expires by `t + 150 s`, and a replay of it is refused as `qr_expired` before its
//! nonce is looked at. The nonce is kept for [`QR_NONCE_RETENTION_S`] (an hour, for clock
//! differences between service processes) and then deleted. Nothing else reads it: a redemption
//! and a card payment keep their own rows.
//!
//! **Stored answers** (`idempotency_keys`). A retry returns the first answer for as long as the
//! answer is kept: [`IDEMPOTENCY_RETENTION`] (7 days) by default for citizen and terminal scopes,
//! for ever for staff scopes. Phones and tills retry within seconds or minutes; a season's
//! claims and redemptions would otherwise keep a row each for ever. A retry that comes after its
//! answer was pruned is decided afresh and can do no harm: a redemption's QR token has long
//! expired (`qr_expired`) or been spent (`qr_replayed`), a reversal finds the redemption already
//! reversed, a claim is decided as a new claim, within the per-person limit and the season cap.
//! (The claim writer also keeps recent answers in memory, bounded, so a process may replay a
//! little longer.) Staff writes (seasons, batches, settlements) are few, and a finance officer
//! may retry one days later, so theirs are kept.

use std::sync::Arc;
use std::time::Duration;

use wenhui_merchant_sdk::signing::MAX_SKEW_S;
use wenhui_merchant_sdk::token::{CLOCK_SKEW_S, MAX_LIFETIME_S};

use crate::domain::time::{Clock, Timestamp};
use crate::storage::{Storage, StorageError, TillStore};

/// How long a request nonce is remembered: twice the allowed clock skew, plus five minutes.
pub const NONCE_RETENTION_S: i64 = 2 * MAX_SKEW_S + 300;

// A replay passes the clock check until its timestamp (at most first sight + skew) + skew.
const _: () = assert!(NONCE_RETENTION_S > 2 * MAX_SKEW_S);

/// How long a spent QR token's nonce is remembered: an hour.
pub const QR_NONCE_RETENTION_S: i64 = 3_600;

// A replay passes the expiry check until the token expires: at most lifetime + skew after use.
const _: () = assert!(QR_NONCE_RETENTION_S > MAX_LIFETIME_S + CLOCK_SKEW_S);

/// Rows deleted per statement, so that no prune holds SQLite's write lock for long.
const PRUNE_BATCH_ROWS: u32 = 5_000;

/// How long the answer to a citizen's or a till's write is kept for its retries, by default.
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// The shortest retention the service accepts: a day, far beyond any client's retry window.
pub const MIN_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(86_400);

/// Deletes every request nonce older than the retention at `now`, in batches; returns how many.
pub async fn prune_terminal_nonces(store: &dyn TillStore, now: Timestamp) -> Result<u64, StorageError> {
    let seen_before = now.plus_seconds(-NONCE_RETENTION_S);
    in_batches(|| store.prune_terminal_nonces(seen_before, PRUNE_BATCH_ROWS)).await
}

/// Deletes every spent QR token nonce older than the retention at `now`, in batches; returns how
/// many.
pub async fn prune_qr_nonces(store: &dyn TillStore, now: Timestamp) -> Result<u64, StorageError> {
    let used_before = now.plus_seconds(-QR_NONCE_RETENTION_S);
    in_batches(|| store.prune_qr_nonces(used_before, PRUNE_BATCH_ROWS)).await
}

/// Deletes the stored answers of citizens' and tills' writes older than `retention` at `now`,
/// in batches; returns how many.
///
/// # Panics
/// If `retention` is shorter than [`MIN_IDEMPOTENCY_RETENTION`] (a configuration the command
/// line refuses).
pub async fn prune_idempotency_answers(
    store: &dyn Storage,
    now: Timestamp,
    retention: Duration,
) -> Result<u64, StorageError> {
    assert!(retention >= MIN_IDEMPOTENCY_RETENTION, "idempotency retention below the minimum");
    let retention_us = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    let created_before = Timestamp::from_unix_us(now.unix_us().saturating_sub(retention_us));
    in_batches(|| store.prune_idempotency_answers(created_before, PRUNE_BATCH_ROWS)).await
}

/// Runs `delete_batch` (which deletes at most [`PRUNE_BATCH_ROWS`]) until a batch comes back
/// short; returns how many rows were deleted in all.
async fn in_batches<F, Fut>(mut delete_batch: F) -> Result<u64, StorageError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StorageError>>,
{
    let mut total = 0;
    loop {
        let deleted = delete_batch().await?;
        total += deleted;
        if deleted < u64::from(PRUNE_BATCH_ROWS) {
            return Ok(total);
        }
    }
}

/// Prunes request nonces, spent QR token nonces, and stored answers past
/// `idempotency_retention`, every `every`, for as long as the task runs.
pub fn spawn_pruning(
    store: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    every: Duration,
    idempotency_retention: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = every_from_now(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let store = store.as_ref();
            logged("request nonces", prune_terminal_nonces(store, clock.now()).await);
            logged("spent QR token nonces", prune_qr_nonces(store, clock.now()).await);
            logged(
                "stored answers",
                prune_idempotency_answers(store, clock.now(), idempotency_retention).await,
            );
        }
    })
}

/// Ticks every `every` (at least 10 ms), the first one `every` after now, not at once: for the
/// background jobs that read the clock when they run (the sweep, the pruning). A first run
/// queued as the server starts and run late (the machine loaded) ran at whatever time the clock
/// said then: in a test whose clock had moved on meanwhile, in the middle of what the test did.
pub fn every_from_now(every: Duration) -> tokio::time::Interval {
    let every = every.max(Duration::from_millis(10));
    tokio::time::interval_at(tokio::time::Instant::now() + every, every)
}

/// Logs what one prune did: nothing when it deleted nothing.
fn logged(rows: &'static str, outcome: Result<u64, StorageError>) {
    match outcome {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, rows, "pruned"),
        Err(error) => tracing::warn!(%error, rows, "pruning failed"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::every_from_now;

    /// No sweep or prune as the server starts: the first tick comes one interval later, then one
    /// each interval (the suite's servers, whose intervals are an hour, never run them behind a
    /// test).
    #[tokio::test(start_paused = true)]
    async fn the_first_tick_comes_one_interval_after_the_start() {
        let every = Duration::from_secs(5);
        let started = tokio::time::Instant::now();
        let mut ticker = every_from_now(every);
        let first = tokio::time::timeout(every - Duration::from_millis(1), ticker.tick()).await;
        assert!(first.is_err(), "no tick before one interval");
        assert_eq!(ticker.tick().await - started, every);
        assert_eq!(ticker.tick().await - started, 2 * every);
        let (mut fast, made) = (every_from_now(Duration::ZERO), tokio::time::Instant::now());
        assert_eq!(fast.tick().await - made, Duration::from_millis(10), "at least 10 ms");
    }
}
