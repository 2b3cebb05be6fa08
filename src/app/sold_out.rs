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
//! decides the next claim and marks the batch again if it is still sold out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::domain::ids::BatchId;
use crate::domain::time::Timestamp;

/// The longest a mark holds without being renewed.
pub const SAFETY_TTL: Duration = Duration::from_secs(1);

/// Batches marked before the map is emptied (a mark is a few dozen bytes; batches are few).
const MAX_MARKS: usize = 10_000;

struct Mark {
    until: Timestamp,
    expires: Instant,
    message: String,
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
        if marks.len() >= MAX_MARKS {
            marks.clear();
        }
        marks.insert(batch_id, Mark { until, expires: Instant::now() + SAFETY_TTL, message });
    }

    /// Marks it as [`SoldOutMemory::mark`] does, unless something was forgotten since `epoch`
    /// (the writer read its state before a forget: that state may be stale).
    pub fn mark_unless_forgotten(&self, epoch: u64, batch_id: BatchId, until: Timestamp, message: String) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if marks.len() >= MAX_MARKS {
            marks.clear();
        }
        marks.insert(batch_id, Mark { until, expires: Instant::now() + SAFETY_TTL, message });
    }

    /// The sold-out message if `batch_id` is known sold out at `now`.
    pub fn check(&self, batch_id: BatchId, now: Timestamp) -> Option<String> {
        let marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        let mark = marks.get(&batch_id)?;
        (now < mark.until && Instant::now() < mark.expires).then(|| mark.message.clone())
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
