//! Sold-out batches this node knows of, so that the flood after a sell-out is answered 409
//! `sold_out` from memory instead of through the claim writer and the database
//! ([docs/claims.md](../../docs/claims.md#sold-out-from-memory)).
//!
//! A batch is marked by this node's writer when a committed group leaves it with nothing
//! released left, or by another node's [`NodeEvent::SoldOut`](super::events::NodeEvent). The mark
//! holds until the first of: the batch's next release, the end of its claim window or season
//! (all in the service's clock, known when marked); a forget (stock returned here or by
//! another node, a season closed, a listener that reconnected); and [`SAFETY_TTL`] of monotonic
//! time, so that even a lost notice keeps a wrong `sold_out` at most that long: the writer then
//! decides the next claim and marks the batch again if it is still sold out, or, while claims
//! keep coming, one of them has the batch read again shortly before ([`SoldOut::renew`]).
//!
//! With a mark goes, once loaded, the batch's [`AnsweredKeys`]: the (citizen, key) pairs that
//! may have a stored answer. A key outside them is answered from memory without a database read;
//! a key inside them reads its stored answer (see docs/claims.md, "Sold out from memory", for why
//! the set is complete).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::ids::{BatchId, CitizenId};
use crate::domain::time::Timestamp;

/// The longest a mark holds without being renewed.
pub const SAFETY_TTL: Duration = Duration::from_secs(1);

/// Batches marked before the map is emptied (a mark is a few dozen bytes; batches are few).
const MAX_MARKS: usize = 10_000;

struct Mark {
    until: Timestamp,
    expires: Instant,
    message: String,
    /// The keys that may have a stored answer, once loaded for this mark's `until`.
    keys: Option<Arc<AnsweredKeys>>,
    /// A load of `keys` was handed out (one at a time), or they are too many to hold.
    loading: bool,
    /// After a failed load, the next one waits until then.
    load_after: Option<Instant>,
    /// A renewal was handed out (one at a time).
    renewing: bool,
}

impl Mark {
    fn new(until: Timestamp, message: String) -> Mark {
        let expires = Instant::now() + SAFETY_TTL;
        Mark { until, expires, message, keys: None, loading: false, load_after: None, renewing: false }
    }
}

/// How long a failed load of a batch's keys holds back the next.
const LOAD_RETRY: Duration = Duration::from_secs(1);

/// How long before a mark lapses a claim asks for it to be renewed (read again): a flood then
/// keeps being answered from memory instead of going to the writer each second.
const RENEW_AHEAD: Duration = Duration::from_millis(500);

/// What a load of a batch's keys came to.
pub enum Loaded {
    Keys(AnsweredKeys),
    /// More than the memory holds: every key of this mark reads its answer.
    TooMany,
    /// The database failed: loaded again after [`LOAD_RETRY`].
    Failed,
}

/// The (citizen, key) pairs of a sold-out batch that may have a stored answer: every key of a
/// citizen holding one of its vouchers, and the keys of stored refusals (by keyed hash: a false
/// match only costs a read).
pub struct AnsweredKeys {
    holders: HashSet<CitizenId>,
    refused: HashSet<u64>,
    hasher: RandomState,
}

impl AnsweredKeys {
    /// From the batch's holders and the (citizen, key) pairs of stored refusals.
    pub fn new(
        holders: impl IntoIterator<Item = CitizenId>,
        refused: &[(CitizenId, String)],
    ) -> AnsweredKeys {
        let hasher = RandomState::new();
        let refused = refused.iter().map(|(citizen, key)| keyed_hash(&hasher, *citizen, key)).collect();
        AnsweredKeys { holders: holders.into_iter().collect(), refused, hasher }
    }

    /// Whether `citizen`'s `key` may have a stored answer (false: it has none).
    pub fn may_have_answer(&self, citizen: CitizenId, key: &str) -> bool {
        self.holders.contains(&citizen) || self.refused.contains(&keyed_hash(&self.hasher, citizen, key))
    }

    pub fn len(&self) -> usize {
        self.holders.len() + self.refused.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn keyed_hash(hasher: &RandomState, citizen: CitizenId, key: &str) -> u64 {
    let mut state = hasher.build_hasher();
    citizen.hash(&mut state);
    key.hash(&mut state);
    state.finish()
}

/// A batch known sold out, as [`SoldOutMemory::check`] finds it.
pub struct SoldOut {
    pub message: String,
    pub keys: KeysState,
    /// The mark lapses soon and this caller is to read the batch again: marked again (with
    /// [`SoldOutMemory::mark_unless_forgotten`] from `epoch`) if it is still sold out, then
    /// [`SoldOutMemory::renewed`] either way.
    pub renew: Option<u64>,
}

/// What the node knows of the keys of a batch known sold out.
pub enum KeysState {
    /// Loaded: a key outside them has no stored answer.
    Known(Arc<AnsweredKeys>),
    /// Not loaded, and this caller is to load them (then [`SoldOutMemory::install_keys`]).
    Load(KeysTicket),
    /// Not loaded (yet): every key reads its stored answer.
    Unknown,
}

/// The right to load one batch's keys, for the mark as it was when handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeysTicket {
    pub batch_id: BatchId,
    until: Timestamp,
    epoch: u64,
}

#[derive(Default)]
pub struct SoldOutMemory {
    marks: Mutex<HashMap<BatchId, Mark>>,
    /// Moves on every forget: a mark decided on state read before a forget is not made.
    epoch: AtomicU64,
}

impl SoldOutMemory {
    /// The forget count now: what [`SoldOutMemory::mark_unless_forgotten`] compares against.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Marks `batch_id` sold out until `until`, answered with `message`.
    pub fn mark(&self, batch_id: BatchId, until: Timestamp, message: String) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        Self::insert(&mut marks, batch_id, until, message);
    }

    /// A mark renewed for the same `until` keeps its keys: no voucher of the batch can have been
    /// issued meanwhile (that takes stock back, a forget, or the time `until`).
    fn insert(marks: &mut HashMap<BatchId, Mark>, batch_id: BatchId, until: Timestamp, message: String) {
        if marks.len() >= MAX_MARKS && !marks.contains_key(&batch_id) {
            marks.clear();
        }
        match marks.get_mut(&batch_id) {
            Some(mark) if mark.until == until => {
                mark.expires = Instant::now() + SAFETY_TTL;
                mark.message = message;
                mark.renewing = false;
            }
            _ => {
                marks.insert(batch_id, Mark::new(until, message));
            }
        }
    }

    /// Marks it as [`SoldOutMemory::mark`] does, unless something was forgotten since `epoch`
    /// (the writer read its state before a forget: that state may be stale).
    pub fn mark_unless_forgotten(&self, epoch: u64, batch_id: BatchId, until: Timestamp, message: String) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        Self::insert(&mut marks, batch_id, until, message);
    }

    /// The sold-out message if `batch_id` is known sold out at `now`.
    pub fn check(&self, batch_id: BatchId, now: Timestamp) -> Option<String> {
        self.check_keys(batch_id, now).map(|sold_out| sold_out.message)
    }

    /// The sold-out message and what is known of the keys, if `batch_id` is known sold out at
    /// `now`. The first caller to find the keys not loaded gets the ticket to load them.
    pub fn check_keys(&self, batch_id: BatchId, now: Timestamp) -> Option<SoldOut> {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        let mark = marks.get_mut(&batch_id)?;
        if now >= mark.until || Instant::now() >= mark.expires {
            return None;
        }
        let renew = (!mark.renewing && mark.expires < Instant::now() + RENEW_AHEAD).then(|| {
            mark.renewing = true;
            self.epoch.load(Ordering::Acquire)
        });
        let held_back = mark.load_after.is_some_and(|at| Instant::now() < at);
        let keys = match &mark.keys {
            Some(keys) => KeysState::Known(keys.clone()),
            None if mark.loading || held_back => KeysState::Unknown,
            None => {
                mark.loading = true;
                let epoch = self.epoch.load(Ordering::Acquire);
                KeysState::Load(KeysTicket { batch_id, until: mark.until, epoch })
            }
        };
        Some(SoldOut { message: mark.message.clone(), keys, renew })
    }

    /// A renewal handed out by [`SoldOutMemory::check_keys`] is over (the batch marked again,
    /// or found not sold out: then the mark lapses): the next may be handed out.
    pub fn renewed(&self, batch_id: BatchId) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mark) = marks.get_mut(&batch_id) {
            mark.renewing = false;
        }
    }

    /// Installs the keys loaded with `ticket` (every read made after it was handed out), unless
    /// something was forgotten since (the load may have read state from before it: the next
    /// caller loads again) or the mark is now another.
    pub fn install_keys(&self, ticket: KeysTicket, loaded: Loaded) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.epoch.load(Ordering::Acquire) == ticket.epoch;
        let Some(mark) = marks.get_mut(&ticket.batch_id) else { return };
        if mark.until != ticket.until || mark.keys.is_some() {
            return;
        }
        match loaded {
            _ if !current => mark.loading = false,
            Loaded::Keys(keys) => mark.keys = Some(Arc::new(keys)),
            Loaded::TooMany => {}
            Loaded::Failed => {
                mark.loading = false;
                mark.load_after = Some(Instant::now() + LOAD_RETRY);
            }
        }
    }

    /// Stock of `batch_id` came back: its mark goes.
    pub fn forget(&self, batch_id: BatchId) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        marks.remove(&batch_id);
    }

    /// Every mark goes (a season closed, a lost connection: anything may have changed).
    pub fn forget_all(&self) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        marks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn batch(n: u128) -> BatchId {
        BatchId::from_uuid(Uuid::from_u128(n))
    }

    #[test]
    fn a_mark_holds_until_its_time_or_a_forget() {
        let memory = SoldOutMemory::default();
        let (now, later) = (Timestamp::from_unix_us(100), Timestamp::from_unix_us(200));
        memory.mark(batch(1), later, "sold out".into());
        assert_eq!(memory.check(batch(1), now).as_deref(), Some("sold out"));
        assert_eq!(memory.check(batch(1), later), None, "the next release has come");
        assert_eq!(memory.check(batch(2), now), None);
        memory.forget(batch(1));
        assert_eq!(memory.check(batch(1), now), None);
        memory.mark(batch(1), later, "sold out".into());
        memory.forget_all();
        assert_eq!(memory.check(batch(1), now), None);
    }

    #[test]
    fn a_mark_decided_before_a_forget_is_not_made() {
        let memory = SoldOutMemory::default();
        let (now, later) = (Timestamp::from_unix_us(100), Timestamp::from_unix_us(200));
        let epoch = memory.epoch();
        memory.forget(batch(9));
        memory.mark_unless_forgotten(epoch, batch(1), later, "sold out".into());
        assert_eq!(memory.check(batch(1), now), None);
        memory.mark_unless_forgotten(memory.epoch(), batch(1), later, "sold out".into());
        assert_eq!(memory.check(batch(1), now).as_deref(), Some("sold out"));
    }

    fn citizen(n: u128) -> CitizenId {
        CitizenId::from_uuid(Uuid::from_u128(n))
    }

    fn ticket(memory: &SoldOutMemory, batch_id: BatchId, now: Timestamp) -> Option<KeysTicket> {
        match memory.check_keys(batch_id, now)?.keys {
            KeysState::Load(ticket) => Some(ticket),
            _ => None,
        }
    }

    fn known(memory: &SoldOutMemory, batch_id: BatchId, now: Timestamp) -> Option<Arc<AnsweredKeys>> {
        match memory.check_keys(batch_id, now)?.keys {
            KeysState::Known(keys) => Some(keys),
            _ => None,
        }
    }

    #[test]
    fn the_keys_are_loaded_once_and_kept_while_the_mark_is_renewed() {
        let memory = SoldOutMemory::default();
        let (now, later) = (Timestamp::from_unix_us(100), Timestamp::from_unix_us(200));
        memory.mark(batch(1), later, "sold out".into());
        let first = ticket(&memory, batch(1), now).expect("the first caller loads");
        assert!(ticket(&memory, batch(1), now).is_none(), "one load at a time");
        let keys = AnsweredKeys::new([citizen(1)], &[(citizen(2), "k".to_owned())]);
        memory.install_keys(first, Loaded::Keys(keys));
        let keys = known(&memory, batch(1), now).expect("loaded");
        assert!(keys.may_have_answer(citizen(1), "any key of a holder"));
        assert!(keys.may_have_answer(citizen(2), "k"));
        assert!(!keys.may_have_answer(citizen(2), "another"));
        assert!(!keys.may_have_answer(citizen(3), "k"));
        memory.mark(batch(1), later, "sold out".into());
        assert!(known(&memory, batch(1), now).is_some(), "renewed for the same time: kept");
        memory.mark(batch(1), Timestamp::from_unix_us(300), "sold out".into());
        assert!(ticket(&memory, batch(1), now).is_some(), "another mark: loaded again");
    }

    #[test]
    fn keys_loaded_across_a_forget_are_not_installed() {
        let memory = SoldOutMemory::default();
        let (now, later) = (Timestamp::from_unix_us(100), Timestamp::from_unix_us(200));
        memory.mark(batch(1), later, "sold out".into());
        let stale = ticket(&memory, batch(1), now).expect("a load");
        memory.forget(batch(1));
        memory.mark(batch(1), later, "sold out".into());
        let fresh = ticket(&memory, batch(1), now).expect("the new mark loads");
        memory.install_keys(stale, Loaded::Keys(AnsweredKeys::new([], &[])));
        assert!(known(&memory, batch(1), now).is_none(), "read before the forget");
        memory.install_keys(fresh, Loaded::Keys(AnsweredKeys::new([], &[])));
        assert!(known(&memory, batch(1), now).is_some());

        // A forget of another batch during a load: that load is refused, the next one is not.
        memory.mark(batch(2), later, "sold out".into());
        let during = ticket(&memory, batch(2), now).expect("a load");
        memory.forget(batch(3));
        memory.install_keys(during, Loaded::Keys(AnsweredKeys::new([], &[])));
        let again = ticket(&memory, batch(2), now).expect("not installed: loaded again");
        memory.install_keys(again, Loaded::Failed);
        assert!(ticket(&memory, batch(2), now).is_none(), "not again at once after a failure");
        memory.marks.lock().expect("lock").get_mut(&batch(2)).expect("marked").load_after = None;
        let last = ticket(&memory, batch(2), now).expect("loaded again later");
        memory.install_keys(last, Loaded::TooMany);
        assert!(matches!(memory.check_keys(batch(2), now).map(|s| s.keys), Some(KeysState::Unknown)));
        assert!(ticket(&memory, batch(2), now).is_none(), "too many: not loaded again for this mark");
    }

    #[test]
    fn a_mark_about_to_lapse_is_renewed_by_one_caller() {
        let memory = SoldOutMemory::default();
        let (now, later) = (Timestamp::from_unix_us(100), Timestamp::from_unix_us(200));
        memory.mark(batch(1), later, "sold out".into());
        assert_eq!(memory.check_keys(batch(1), now).and_then(|s| s.renew), None, "fresh");
        let soon = Instant::now() + RENEW_AHEAD / 2;
        memory.marks.lock().expect("lock").get_mut(&batch(1)).expect("marked").expires = soon;
        let epoch = memory.check_keys(batch(1), now).and_then(|s| s.renew).expect("renew it");
        assert_eq!(memory.check_keys(batch(1), now).and_then(|s| s.renew), None, "one at a time");
        memory.mark_unless_forgotten(epoch, batch(1), later, "sold out".into());
        let marks = memory.marks.lock().expect("lock").get(&batch(1)).map(|m| (m.expires, m.renewing));
        assert!(marks.is_some_and(|(at, renewing)| at > soon && !renewing), "renewed");
        memory.marks.lock().expect("lock").get_mut(&batch(1)).expect("marked").expires = soon;
        assert!(memory.check_keys(batch(1), now).and_then(|s| s.renew).is_some());
        memory.renewed(batch(1));
        assert!(memory.check_keys(batch(1), now).and_then(|s| s.renew).is_some(), "not renewed: asked again");
    }

    #[test]
    fn a_mark_lapses_after_the_safety_ttl() {
        let memory = SoldOutMemory::default();
        memory.mark(batch(1), Timestamp::from_unix_us(i64::MAX), "sold out".into());
        let marks = memory.marks.lock().expect("lock").get(&batch(1)).map(|m| m.expires);
        assert!(marks.is_some_and(|at| at <= Instant::now() + SAFETY_TTL));
        std::thread::sleep(SAFETY_TTL + Duration::from_millis(20));
        assert_eq!(memory.check(batch(1), Timestamp::from_unix_us(0)), None);
    }
}
