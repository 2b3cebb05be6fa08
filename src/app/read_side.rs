//! Where the read-only requests read: a PostgreSQL hot standby (`--read-database-url`) while it
//! is within the lag bound (`--replica-max-lag-ms`), else the primary. See
//! [docs/operations.md](../../docs/operations.md#reads-from-a-standby).
//!
//! The standby's lag is measured on the standby, every [`CHECK_EVERY`] by a background task,
//! and cached: a read never waits for a check. A read goes to the standby only if the last
//! check found it reachable and its lag, plus the check's age, within the bound. A read the
//! standby fails (a 5xx, a dropped connection) is run again on the primary, and the standby is
//! left alone until the next check. What a write reads, and reconciliation, settlement and
//! close, never come here: they take the primary store themselves.

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::app::error::AppError;
use crate::storage::{StandbyLag, Storage, StorageError};

/// How often the standby's lag is measured.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);

/// How long a measurement may take before the standby counts as unreachable.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// The lag bound when none is configured.
pub const DEFAULT_MAX_LAG: Duration = Duration::from_millis(1000);

/// The gauge of the standby's lag (seconds; +Inf while it is unreachable or its lag unknown).
pub const LAG_GAUGE: &str = crate::telemetry::REPLICA_LAG;

/// An error from a read that says the database failed rather than refused: worth a second try
/// on the primary when the read ran on the standby.
pub trait ReadFailure {
    fn is_database_failure(&self) -> bool;
}

impl ReadFailure for StorageError {
    fn is_database_failure(&self) -> bool {
        match self {
            StorageError::Shared(inner) => inner.is_database_failure(),
            StorageError::Database(_) | StorageError::Corrupt(_) => true,
            _ => false,
        }
    }
}

impl ReadFailure for AppError {
    fn is_database_failure(&self) -> bool {
        match self {
            AppError::Storage(error) => error.is_database_failure(),
            AppError::Internal(_) => true,
            AppError::Refused { .. } | AppError::Constraint(_) => false,
        }
    }
}

/// The last measurement of the standby.
#[derive(Clone, Copy, Debug)]
struct Seen {
    at: Instant,
    /// `None`: unreachable, or behind by an unknown amount.
    lag: Option<Duration>,
}

struct Standby {
    store: Arc<dyn Storage>,
    max_lag: Duration,
    seen: Mutex<Option<Seen>>,
}

impl Standby {
    fn seen(&self) -> Option<Seen> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, lag: Option<Duration>) {
        self.record_at(Instant::now(), lag);
    }

    /// Records the lag measured by a check that started `at` (its age counts from then).
    fn record_at(&self, at: Instant, lag: Option<Duration>) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Seen { at, lag });
        let seconds = lag.map_or(f64::INFINITY, |lag| lag.as_secs_f64());
        metrics::gauge!(LAG_GAUGE).set(seconds);
    }

    /// Whether a read now may go to the standby: the last check's lag, plus its age, is within
    /// the bound.
    fn usable(&self) -> bool {
        self.seen().is_some_and(|seen| seen.lag.is_some_and(|lag| lag + seen.at.elapsed() <= self.max_lag))
    }

    /// Measures the lag once. Without an answer within [`CHECK_TIMEOUT`] the standby counts as
    /// unreachable at once, but the measurement runs on (a connection being opened is not
    /// abandoned, or a slow standby would never be used) and its answer is recorded when it
    /// comes, aged from the check's start.
    async fn check(&self) {
        let started = Instant::now();
        let store = self.store.clone();
        let mut measuring = tokio::spawn(async move { store.standby_lag().await });
        let measured = match tokio::time::timeout(CHECK_TIMEOUT, &mut measuring).await {
            Ok(joined) => joined,
            Err(_) => {
                self.log_unreachable("no answer in time");
                self.record(None);
                measuring.await
            }
        };
        let lag = match measured {
            Ok(Ok(StandbyLag::CaughtUp | StandbyLag::NotAStandby)) => Some(Duration::ZERO),
            Ok(Ok(StandbyLag::Behind(lag))) => lag,
            Ok(Err(error)) => {
                self.log_unreachable(&error.to_string());
                None
            }
            Err(_) => None,
        };
        self.record_at(started, lag);
    }

    /// Logs the standby's failure once per outage, not every check.
    fn log_unreachable(&self, error: &str) {
        let was_reachable = self.seen().is_none_or(|seen| seen.lag.is_some());
        if was_reachable {
            tracing::warn!(error, "the read standby does not answer; reading the primary");
        }
    }
}

/// The read-side handle: the primary, and the standby if one is configured.
pub struct ReadSide {
    primary: Arc<dyn Storage>,
    standby: Option<Standby>,
}

impl ReadSide {
    /// Every read on the primary (no standby configured).
    pub fn primary_only(primary: Arc<dyn Storage>) -> Arc<ReadSide> {
        Arc::new(ReadSide { primary, standby: None })
    }

    /// Reads on `standby` while its lag is within `max_lag`; checks it every [`CHECK_EVERY`]
    /// for as long as the handle lives. Needs a Tokio runtime.
    pub fn with_standby(
        primary: Arc<dyn Storage>,
        standby: Arc<dyn Storage>,
        max_lag: Duration,
    ) -> Arc<ReadSide> {
        let standby = Standby { store: standby, max_lag, seen: Mutex::new(None) };
        let side = Arc::new(ReadSide { primary, standby: Some(standby) });
        spawn_checks(Arc::downgrade(&side));
        side
    }

    /// Whether a standby is configured.
    pub fn has_standby(&self) -> bool {
        self.standby.is_some()
    }

    /// The standby's lag at its last check: `None` without a standby, before the first check,
    /// or while it is unreachable or its lag unknown.
    pub fn standby_lag(&self) -> Option<Duration> {
        self.standby.as_ref()?.seen()?.lag
    }

    /// Measures the standby's lag now (the background task does it every [`CHECK_EVERY`]).
    pub async fn check_now(&self) {
        if let Some(standby) = &self.standby {
            standby.check().await;
        }
    }

    /// The store a read runs on now: the standby if usable, else the primary.
    pub fn store(&self) -> Arc<dyn Storage> {
        match &self.standby {
            Some(standby) if standby.usable() => standby.store.clone(),
            _ => self.primary.clone(),
        }
    }

    /// Runs `read` on the standby if usable, else on the primary; if the standby fails it, marks
    /// the standby unusable until the next check and runs `read` again on the primary.
    pub async fn read<T, E, F, Fut>(&self, read: F) -> Result<T, E>
    where
        F: Fn(Arc<dyn Storage>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: ReadFailure,
    {
        let standby = match &self.standby {
            Some(standby) if standby.usable() => standby,
            _ => return read(self.primary.clone()).await,
        };
        match read(standby.store.clone()).await {
            Err(error) if error.is_database_failure() => {
                standby.log_unreachable("a read failed");
                standby.record(None);
                read(self.primary.clone()).await
            }
            answer => answer,
        }
    }
}

/// Measures the standby every [`CHECK_EVERY`] until the handle is dropped.
fn spawn_checks(side: Weak<ReadSide>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(CHECK_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(side) = side.upgrade() else { return };
            side.check_now().await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> Arc<dyn Storage> {
        crate::storage::connect("sqlite::memory:", crate::storage::ConnectOptions::default()).await.unwrap()
    }

    /// A read side over two stores, without the background checks (the test records the lag).
    async fn side(max_lag: Duration) -> (ReadSide, Arc<dyn Storage>) {
        let standby = store().await;
        let side = ReadSide {
            primary: store().await,
            standby: Some(Standby { store: standby.clone(), max_lag, seen: Mutex::new(None) }),
        };
        (side, standby)
    }

    fn on_standby(side: &ReadSide, standby: &Arc<dyn Storage>) -> bool {
        Arc::ptr_eq(&side.store(), standby)
    }

    #[tokio::test]
    async fn the_standby_is_read_only_within_the_bound() {
        let (side, standby) = side(Duration::from_millis(1_000)).await;
        assert!(!on_standby(&side, &standby), "not before the first check");
        let checked = side.standby.as_ref().unwrap();
        checked.record(Some(Duration::from_millis(100)));
        assert!(on_standby(&side, &standby));
        assert_eq!(side.standby_lag(), Some(Duration::from_millis(100)));
        checked.record(Some(Duration::from_millis(1_001)));
        assert!(!on_standby(&side, &standby), "beyond the bound");
        checked.record(None);
        assert!(!on_standby(&side, &standby), "unreachable");
        assert_eq!(side.standby_lag(), None);
    }

    #[tokio::test]
    async fn a_read_the_standby_fails_runs_on_the_primary() {
        let (side, standby) = side(Duration::from_millis(1_000)).await;
        side.standby.as_ref().unwrap().record(Some(Duration::ZERO));
        let tries = std::sync::atomic::AtomicU32::new(0);
        let read = |store: Arc<dyn Storage>| {
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let failed = Arc::ptr_eq(&store, &standby);
            async move {
                match failed {
                    true => Err(StorageError::Corrupt("the standby failed".into())),
                    false => Ok("from the primary"),
                }
            }
        };
        assert_eq!(side.read(read).await.unwrap(), "from the primary");
        assert_eq!(tries.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(!on_standby(&side, &standby), "left alone until the next check");
    }

    #[tokio::test]
    async fn a_refusal_on_the_standby_is_the_answer() {
        let (side, standby) = side(Duration::from_millis(1_000)).await;
        side.standby.as_ref().unwrap().record(Some(Duration::ZERO));
        let refused = side
            .read(|_| async {
                Err::<(), _>(AppError::not_found(crate::domain::error_code::ErrorCode::NotFound, "no"))
            })
            .await;
        assert!(matches!(refused, Err(AppError::Refused { .. })));
        assert!(on_standby(&side, &standby), "a refusal is no failure of the standby");
    }

    #[tokio::test]
    async fn primary_only_reads_the_primary() {
        let primary = store().await;
        let side = ReadSide::primary_only(primary.clone());
        assert!(Arc::ptr_eq(&side.store(), &primary));
        assert!(!side.has_standby());
        assert_eq!(side.standby_lag(), None);
    }
}
