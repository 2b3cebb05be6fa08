//! Group commit for redemptions, as for claims (`app/claims.rs`): handlers verify the terminal, the
//! token and the voucher with reads, then hand the redemption to one writer task per process,
//! which commits everything queued in one transaction. Each redemption is re-checked under the
//! ledger lock inside that transaction (QR nonce, voucher state, order reference, idempotency
//! key), so a group never lets through what a single transaction would refuse. If the database
//! refuses the group as a whole, each redemption is retried in a transaction of its own.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::storage::{NewRedemption, Refusal, Storage, WriteError};
use crate::telemetry::WriterStats;

const MAX_GROUP: usize = 256;
const QUEUE_DEPTH: usize = 8_192;

type Reply = oneshot::Sender<Result<(), WriteError>>;

#[derive(Clone)]
pub struct RedemptionWriter {
    queue: mpsc::Sender<(NewRedemption, Reply)>,
    stats: Arc<WriterStats>,
}

impl RedemptionWriter {
    pub fn spawn(store: Arc<dyn Storage>) -> RedemptionWriter {
        let (queue, inbox) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::new(crate::telemetry::REDEMPTION_WRITER));
        crate::app::own_thread::spawn(run(store, inbox, stats.clone()));
        RedemptionWriter { queue, stats }
    }

    /// Redemptions waiting in the writer's queue.
    pub fn queue_depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// The writer's commits: group sizes, commit times, the last one.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Queues a redemption and waits until its group has committed (or it was refused).
    pub async fn commit(&self, redemption: NewRedemption) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        let stopped =
            || WriteError::Storage(crate::storage::StorageError::Corrupt("redemption writer stopped".into()));
        self.queue.send((redemption, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(
    store: Arc<dyn Storage>,
    mut inbox: mpsc::Receiver<(NewRedemption, Reply)>,
    stats: Arc<WriterStats>,
) {
    while let Some(first) = inbox.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match inbox.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (redemptions, replies): (Vec<NewRedemption>, Vec<Reply>) = group.into_iter().unzip();
        let started = std::time::Instant::now();
        let committed = store.commit_redemptions(&redemptions).await;
        tracing::debug!(
            size = redemptions.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "redemption group"
        );
        match committed {
            Ok(outcomes) => {
                stats.committed(redemptions.len(), started.elapsed());
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(counted(outcome.map_err(refusal)));
                }
            }
            Err(error) => {
                tracing::warn!(%error, "redemption group refused; committing one by one");
                for (redemption, reply) in redemptions.iter().zip(replies) {
                    let started = std::time::Instant::now();
                    let outcome = commit_one(store.as_ref(), redemption).await;
                    if outcome.is_ok() {
                        stats.committed(1, started.elapsed());
                    }
                    let _ = reply.send(counted(outcome));
                }
            }
        }
    }
}

/// Counts a committed redemption ([`crate::telemetry::REDEMPTIONS`]).
fn counted(outcome: Result<(), WriteError>) -> Result<(), WriteError> {
    if outcome.is_ok() {
        crate::telemetry::redeemed(crate::telemetry::VOUCHER);
    }
    outcome
}

fn refusal(refused: Refusal) -> WriteError {
    match refused {
        Refusal::IdempotencyTaken => WriteError::IdempotencyTaken,
        other => WriteError::Refused(other),
    }
}

/// Most times one redemption is committed again after the database refused it outright.
const MAX_TRIES: u32 = 4;

/// A group of one: the same checks under the lock, in a transaction of its own. A constraint
/// that refuses it (another process committed in between) or a transient conflict sends it
/// round again: the checks under the lock then see what the other process committed and
/// answer with the refusal it calls for, instead of a 503.
async fn commit_one(store: &dyn Storage, redemption: &NewRedemption) -> Result<(), WriteError> {
    let mut attempt = 1;
    loop {
        let outcome = match store.commit_redemptions(std::slice::from_ref(redemption)).await {
            Ok(mut outcomes) => outcomes
                .pop()
                .unwrap_or_else(|| Err(Refusal::VoucherState("unknown".into())))
                .map_err(refusal),
            Err(error) => Err(error),
        };
        let again = match &outcome {
            Err(WriteError::Constraint(_)) => true,
            Err(WriteError::Storage(error)) => error.is_transient_conflict(),
            _ => false,
        };
        if !again || attempt == MAX_TRIES {
            return outcome;
        }
        if let Err(error) = &outcome {
            tracing::info!(%error, attempt, "single redemption refused by the database; committing it again");
        }
        attempt += 1;
    }
}
