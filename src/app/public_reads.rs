//! The public reads of a rush from memory: the season list, a season, a season's batches. Every
//! phone polls the batch list before it claims, so these answers come from a per-node snapshot
//! instead of the database. See [docs/claims.md](../../docs/claims.md#public-reads-from-memory).
//!
//! A snapshot is rebuilt on the next read when something it shows may have changed:
//! - **a commit in this process** ([`crate::storage::committed_writes`]: the claim writer's groups,
//!   the sweep's expiries, batch and season creation, budgets, redemptions): a *soft* change,
//!   rebuilt at most once per [`SOFT_REBUILD_EVERY`] (monotonic time), so that a rush's stream of
//!   commits does not rebuild it back to back;
//! - **[`PublicReads::invalidate`]**: a *hard* change (a batch or season created here, and the hook
//!   the other nodes' notifications call);
//! - **time**: a snapshot is at most [`BOUND_US`] old (releases, claim windows, other nodes),
//!   and is rebuilt ahead, from [`REFRESH_AFTER_US`] on, while the others still serve it.
//!
//! Readers that must wait for a rebuild (a hard change, or a snapshot past its bound) wait for
//! the slot's `rebuilt` signal and wake together, not for its lock one after another.
//!
//! Under load it is built once, not once per request (single flight): one reader rebuilds while
//! the others serve the previous snapshot if only a soft change made it stale and it is within the
//! bound, or else wait for the rebuild. So the database sees at most one rebuild of a key at a
//! time, whatever the number of readers.
//!
//! Each snapshot also memoises its rendered answer ([`Rendered`]: bytes and a strong ETag), so
//! the HTTP layer serialises it once per rebuild.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::app::error::{AppError, Kind};
use crate::app::read_side::ReadSide;
use crate::domain::error_code::ErrorCode;
use crate::domain::finance::FunderFigures;
use crate::domain::ids::SeasonId;
use crate::domain::region::RegionCode;
use crate::domain::season::{Batch, Season};
use crate::domain::time::{Clock, Timestamp};
use crate::storage::{Storage, StorageError};

/// The most a snapshot lags behind the clock: 1 s.
pub const BOUND_US: i64 = 1_000_000;

/// A snapshot this old (a quarter of the bound) is rebuilt by the next reader while the others
/// go on serving it (it is good to serve up to [`BOUND_US`]): the clock alone never makes readers
/// wait for a rebuild, as they all did when it was rebuilt only once past the bound. A rebuild's
/// few awaits queue behind every busy connection of a loaded node: it took up to 300 ms under
/// wrk's 1,000 connections, so it starts three quarters of the bound early.
pub const REFRESH_AFTER_US: i64 = BOUND_US / 4;

/// The least time between two rebuilds of a snapshot for commits alone (soft changes); a hard
/// change rebuilds at once. Measured on the monotonic clock, not the service's (tests freeze it).
pub const SOFT_REBUILD_EVERY: Duration = Duration::from_millis(100);

/// The longest a read waits for a snapshot to be rebuilt, by itself or by another reader, before
/// it is answered 503 `timeout`: the public reads run without the per-request timeout of the
/// other routes (`http::lean`), and a fresh snapshot is served without any timer.
pub const SLOW_READ_LIMIT: Duration = Duration::from_secs(10);

/// Keys held per kind before the map is emptied (ids from the path are anyone's to choose).
const MAX_KEYS: usize = 4_096;

/// A season with each funder's figures, in the order storage lists its funders.
#[derive(Clone, Debug)]
pub struct SeasonFigures {
    pub season: Season,
    pub funders: Vec<(RegionCode, FunderFigures)>,
}

/// A page of the season list. `cursor_known` is false when `after` named no season.
#[derive(Clone, Debug)]
pub struct SeasonsPage {
    pub cursor_known: bool,
    pub seasons: Vec<SeasonFigures>,
    pub next_after: Option<SeasonId>,
}

/// A season's batches (all of them, `ended` filters at rendering), or `None` for no such season.
pub type SeasonBatches = Option<Vec<Batch>>;

/// An answer rendered once per snapshot: its bytes and a strong ETag over them.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub body: bytes::Bytes,
    pub etag: String,
}

impl Rendered {
    /// `body` with its ETag: the first 128 bits of its SHA-256, in hex, quoted.
    pub fn new(body: Vec<u8>) -> Rendered {
        let digest = ring::digest::digest(&ring::digest::SHA256, &body);
        let etag = format!("\"{}\"", hex::encode(&digest.as_ref()[..16]));
        Rendered { body: body.into(), etag }
    }
}

/// One snapshot: the value, the clock time it was read at (its answers' `server_time`), the
/// generations it saw, and its answer once rendered.
#[derive(Debug)]
pub struct Snapshot<V> {
    pub value: V,
    pub as_of: Timestamp,
    hard: u64,
    soft: u64,
    /// When it was built, on the monotonic clock.
    built: Instant,
    rendered: OnceLock<Rendered>,
}

impl<V> Snapshot<V> {
    /// The rendered answer, rendering it on the first call.
    pub fn rendered(&self, render: impl FnOnce(&V, Timestamp) -> Vec<u8>) -> &Rendered {
        self.rendered.get_or_init(|| Rendered::new(render(&self.value, self.as_of)))
    }

    /// Read less than `age_us` ago (and not in the clock's future).
    fn younger_than(&self, now: Timestamp, age_us: i64) -> bool {
        let age = now.unix_us() - self.as_of.unix_us();
        (0..age_us).contains(&age)
    }
}

struct Slot<V> {
    current: Mutex<Option<Arc<Snapshot<V>>>>,
    building: tokio::sync::Mutex<()>,
    /// Moved on after every rebuild, built or failed, once `building` is free again: the
    /// readers waiting for it wake together (waiting on `building` itself, a loaded node's
    /// thousand readers were handed the lock one by one, for a second and more).
    rebuilt: tokio::sync::watch::Sender<u64>,
}

/// A reader's turn to rebuild a slot: frees the slot's lock, then wakes its waiters.
struct Building<'a, V> {
    lock: Option<tokio::sync::MutexGuard<'a, ()>>,
    slot: &'a Slot<V>,
}

impl<V> Drop for Building<'_, V> {
    fn drop(&mut self) {
        drop(self.lock.take());
        self.slot.rebuilt.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Snapshots of one kind, by key, each rebuilt by one reader at a time.
struct Snapshots<K, V> {
    slots: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

impl<K: Eq + Hash + Clone, V> Snapshots<K, V> {
    fn new() -> Self {
        Snapshots { slots: Mutex::new(HashMap::new()) }
    }

    fn slot(&self, key: &K) -> Arc<Slot<V>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        if slots.len() >= MAX_KEYS {
            slots.clear();
        }
        let slot = Arc::new(Slot {
            current: Mutex::new(None),
            building: tokio::sync::Mutex::new(()),
            rebuilt: tokio::sync::watch::Sender::new(0),
        });
        slots.insert(key.clone(), slot.clone());
        slot
    }
}

impl<V> Slot<V> {
    fn current(&self) -> Option<Arc<Snapshot<V>>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for the rebuild under way: the snapshot it left if `good` takes it, else the
    /// slot's lock, to rebuild (the rebuild failed, or predates what this reader must see).
    async fn wait_for_rebuild(
        &self,
        good: impl Fn(&Snapshot<V>) -> bool,
    ) -> Result<Arc<Snapshot<V>>, tokio::sync::MutexGuard<'_, ()>> {
        let mut rebuilt = self.rebuilt.subscribe();
        loop {
            // Checked after subscribing: a rebuild that ended before is seen here, one that
            // ends after wakes `changed`.
            if let Some(snapshot) = self.current().filter(|s| good(s)) {
                return Ok(snapshot);
            }
            if let Ok(guard) = self.building.try_lock() {
                return Err(guard);
            }
            if rebuilt.changed().await.is_err() {
                // The sender lives as long as the slot: not reached; take the lock in turn.
                return Err(self.building.lock().await);
            }
        }
    }
}

/// The generations a read must see: hard (invalidations) and soft (commits).
#[derive(Clone, Copy)]
struct Generation {
    hard: u64,
    soft: u64,
}

impl Generation {
    /// No hard change since it was built, younger than [`REFRESH_AFTER_US`], and either no
    /// commit since or built less than [`SOFT_REBUILD_EVERY`] ago.
    fn fresh<V>(self, snapshot: &Snapshot<V>, now: Timestamp) -> bool {
        let soft = snapshot.soft >= self.soft || snapshot.built.elapsed() < SOFT_REBUILD_EVERY;
        snapshot.hard >= self.hard && soft && snapshot.younger_than(now, REFRESH_AFTER_US)
    }

    /// Good enough to serve while another reader rebuilds: no hard change, within the bound.
    fn acceptable<V>(self, snapshot: &Snapshot<V>, now: Timestamp) -> bool {
        snapshot.hard >= self.hard && snapshot.younger_than(now, BOUND_US)
    }
}

/// The node's snapshots of the public reads.
pub struct PublicReads {
    /// Snapshots are read on the standby when one is within its lag bound (`app::read_side`).
    reads: Arc<ReadSide>,
    clock: Arc<dyn Clock>,
    /// The runtime the snapshots are built on: the one this was made on (the request workers').
    /// A read served on another runtime (the polls port's, `http::polls`) builds there, so that
    /// a database connection the build opens is driven by the request workers, not by threads
    /// of lower priority that the writers would then wait on.
    home: Option<tokio::runtime::Handle>,
    hard: AtomicU64,
    seasons: Snapshots<(Option<SeasonId>, u32), SeasonsPage>,
    season: Snapshots<SeasonId, Option<SeasonFigures>>,
    batches: Snapshots<SeasonId, SeasonBatches>,
    rebuilds: AtomicU64,
}

impl PublicReads {
    pub fn new(store: Arc<dyn Storage>, clock: Arc<dyn Clock>) -> PublicReads {
        PublicReads::with_read_side(ReadSide::primary_only(store), clock)
    }

    /// Snapshots read through `reads`: on a standby while it is within its lag bound.
    pub fn with_read_side(reads: Arc<ReadSide>, clock: Arc<dyn Clock>) -> PublicReads {
        PublicReads {
            reads,
            clock,
            home: tokio::runtime::Handle::try_current().ok(),
            hard: AtomicU64::new(0),
            seasons: Snapshots::new(),
            season: Snapshots::new(),
            batches: Snapshots::new(),
            rebuilds: AtomicU64::new(0),
        }
    }

    /// Something the snapshots show changed: the next read of each rebuilds it, and no reader
    /// serves a snapshot from before this call. Called after this node creates a season or a
    /// batch, and the hook for other nodes' change notifications.
    pub fn invalidate(&self) {
        self.hard.fetch_add(1, Ordering::AcqRel);
    }

    /// How many snapshots were built since the start (a test and a metric see single flight).
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }

    fn generation(&self) -> Generation {
        Generation { hard: self.hard.load(Ordering::Acquire), soft: crate::storage::committed_writes() }
    }

    /// A page of seasons, latest start first.
    pub async fn seasons(
        &self,
        after: Option<SeasonId>,
        limit: u32,
    ) -> Result<Arc<Snapshot<SeasonsPage>>, AppError> {
        let reads = self.reads.clone();
        let build = move |store: Arc<dyn Storage>| async move {
            let after = match after {
                Some(id) => match store.season(id).await? {
                    Some(season) => Some(season),
                    None => {
                        return Ok(SeasonsPage {
                            cursor_known: false,
                            seasons: Vec::new(),
                            next_after: None,
                        });
                    }
                },
                None => None,
            };
            let mut page = store.seasons(None, after.as_ref(), i64::from(limit) + 1).await?;
            let next_after = if page.len() > limit as usize {
                page.truncate(limit as usize);
                page.last().map(|s| s.id)
            } else {
                None
            };
            let mut seasons = Vec::with_capacity(page.len());
            for season in page {
                seasons.push(season_figures(store.as_ref(), season).await?);
            }
            Ok::<_, StorageError>(SeasonsPage { cursor_known: true, seasons, next_after })
        };
        self.read(&self.seasons, (after, limit), move || async move { reads.read(build).await }).await
    }

    /// A season with its funders' figures, or `None`.
    pub async fn season(&self, id: SeasonId) -> Result<Arc<Snapshot<Option<SeasonFigures>>>, AppError> {
        let reads = self.reads.clone();
        let build = move |store: Arc<dyn Storage>| async move {
            match store.season(id).await? {
                Some(season) => Ok(Some(season_figures(store.as_ref(), season).await?)),
                None => Ok::<_, StorageError>(None),
            }
        };
        self.read(&self.season, id, move || async move { reads.read(build).await }).await
    }

    /// A season's batches (`None`: no such season).
    pub async fn batches(&self, season_id: SeasonId) -> Result<Arc<Snapshot<SeasonBatches>>, AppError> {
        let reads = self.reads.clone();
        let build = move |store: Arc<dyn Storage>| async move {
            if store.season(season_id).await?.is_none() {
                return Ok(None);
            }
            Ok::<_, StorageError>(Some(store.season_batches(season_id).await?))
        };
        self.read(&self.batches, season_id, move || async move { reads.read(build).await }).await
    }

    /// The batches named, from the season snapshots as last read, whatever their age: for what
    /// never changes in a batch (its name, terms and categories), as a citizen's vouchers show
    /// them. A season's snapshot is read again only when it lacks a batch asked for.
    pub async fn batches_known(
        &self,
        wanted: impl IntoIterator<Item = (SeasonId, crate::domain::ids::BatchId)>,
    ) -> Result<HashMap<crate::domain::ids::BatchId, Batch>, AppError> {
        let mut found = HashMap::new();
        for (season_id, batch_id) in wanted {
            if found.contains_key(&batch_id) {
                continue;
            }
            let known = |snapshot: &Snapshot<SeasonBatches>| {
                snapshot.value.iter().flatten().find(|b| b.id == batch_id).cloned()
            };
            let held = self.batches.slot(&season_id).current();
            let batch = match held.as_deref().and_then(known) {
                Some(batch) => Some(batch),
                None => known(&*self.batches(season_id).await?),
            };
            if let Some(batch) = batch {
                found.insert(batch_id, batch);
            }
        }
        Ok(found)
    }

    /// The snapshot of `key`: the current one if fresh; else one reader rebuilds while the
    /// others serve the previous one (soft change, within the bound) or wait for the rebuild.
    async fn read<K, V, F, Fut>(
        &self,
        kind: &Snapshots<K, V>,
        key: K,
        build: F,
    ) -> Result<Arc<Snapshot<V>>, AppError>
    where
        K: Eq + Hash + Clone,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, StorageError>> + Send + 'static,
        V: Send + 'static,
    {
        let slot = kind.slot(&key);
        let generation = self.generation();
        let now = self.clock.now();
        let current = slot.current();
        if let Some(snapshot) = current.as_ref().filter(|s| generation.fresh(s, now)) {
            return Ok(snapshot.clone());
        }
        let slow = self.rebuilt_or_acceptable(&slot, current, generation, now, build);
        match tokio::time::timeout(SLOW_READ_LIMIT, slow).await {
            Ok(read) => read,
            Err(_) => Err(AppError::refused(
                Kind::Unavailable,
                ErrorCode::Timeout,
                "the season's figures could not be read in time; retry",
            )),
        }
    }

    /// The slow path of [`PublicReads::read`]: the previous snapshot while another reader
    /// rebuilds it (if acceptable), or the rebuilt one, built here or by that reader.
    async fn rebuilt_or_acceptable<V, F, Fut>(
        &self,
        slot: &Slot<V>,
        current: Option<Arc<Snapshot<V>>>,
        generation: Generation,
        now: Timestamp,
        build: F,
    ) -> Result<Arc<Snapshot<V>>, AppError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, StorageError>> + Send + 'static,
        V: Send + 'static,
    {
        let _building = match slot.building.try_lock() {
            Ok(guard) => Building { lock: Some(guard), slot },
            Err(_) => {
                if let Some(snapshot) = current.filter(|s| generation.acceptable(s, now)) {
                    return Ok(snapshot);
                }
                match slot.wait_for_rebuild(|s| generation.acceptable(s, self.clock.now())).await {
                    Ok(snapshot) => return Ok(snapshot),
                    Err(guard) => Building { lock: Some(guard), slot },
                }
            }
        };
        // Read the generations before the data: a commit during the build leaves it stale.
        let generation = self.generation();
        let as_of = self.clock.now();
        if let Some(snapshot) = slot.current().filter(|s| generation.fresh(s, as_of)) {
            return Ok(snapshot); // built by the reader before us
        }
        let value = match &self.home {
            Some(home) => match home.spawn(build()).await {
                Ok(built) => built?,
                Err(stopped) if stopped.is_panic() => std::panic::resume_unwind(stopped.into_panic()),
                // The home runtime is shutting down: so is the node.
                Err(_) => {
                    let message = "the node is stopping; retry on another";
                    return Err(AppError::refused(
                        Kind::Unavailable,
                        ErrorCode::DatabaseUnavailable,
                        message,
                    ));
                }
            },
            None => build().await?,
        };
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
        let snapshot = Arc::new(Snapshot {
            value,
            as_of,
            hard: generation.hard,
            soft: generation.soft,
            built: Instant::now(),
            rendered: OnceLock::new(),
        });
        *slot.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
        Ok(snapshot)
    }
}

/// A season with each funder's figures: one read of the season's accounts, one of its funders.
async fn season_figures(store: &dyn Storage, season: Season) -> Result<SeasonFigures, StorageError> {
    let figures = crate::domain::finance::funder_figures(season.id, &store.season_balances(season.id).await?);
    let funders = store
        .season_funders(season.id)
        .await?
        .into_iter()
        .map(|funder| (funder, figures.get(&funder).cloned().unwrap_or_default()))
        .collect();
    Ok(SeasonFigures { season, funders })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::SystemClock;

    /// A rebuild that never ends (a database that hangs) is answered 503 `timeout` after
    /// [`SLOW_READ_LIMIT`]: the public reads have no per-request timeout of their own.
    #[tokio::test]
    async fn a_rebuild_that_never_ends_is_answered_timeout() {
        let store = crate::storage::connect("sqlite::memory:", crate::storage::ConnectOptions::default())
            .await
            .expect("an in-memory store");
        let reads = PublicReads::new(store, Arc::new(SystemClock));
        let kind: Snapshots<u8, u8> = Snapshots::new();
        tokio::time::pause(); // after connecting: the pool's own timers run on real time
        let started = tokio::time::Instant::now();
        let hanging = || std::future::pending::<Result<u8, StorageError>>();
        let refused = reads.read(&kind, 1, hanging).await.expect_err("no snapshot");
        assert!(
            matches!(refused, AppError::Refused { kind: Kind::Unavailable, code: ErrorCode::Timeout, .. }),
            "{refused:?}"
        );
        let waited = started.elapsed();
        assert!(
            (SLOW_READ_LIMIT..SLOW_READ_LIMIT + Duration::from_millis(10)).contains(&waited),
            "{waited:?}"
        );
        let built = reads.read(&kind, 1, || async { Ok::<u8, StorageError>(7) }).await.expect("rebuilt");
        assert_eq!(built.value, 7, "the next reader rebuilds it");
    }
}
