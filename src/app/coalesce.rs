//! Read coalescing for the till path: concurrent requests that each need one row (a voucher, a
//! request nonce recorded, a card payment on an order) are served by one query per batch
//! instead of one round trip each (the "DataLoader" pattern).
//!
//! A loader task takes what is queued (up to `MAX_BATCH`) whenever its query slot is free, so
//! under load batches grow on their own and when idle a request waits for nobody. One query in
//! flight per loader: with four, batches stayed at two to four keys and each one paid a
//! statement's planning and round trip (`wenhui bench redemptions`, alternating A/B runs: median
//! 2,064 redemptions/s with four slots, 2,291 with one, and PostgreSQL's CPU per redemption
//! 358 against 305 µs). A failed query fails every request of its batch with the same (shared) error.
//! The batching rules that depend on meaning (for nonces: the first of two equal keys in a batch
//! wins) live in the fetch function, which sees the whole batch in arrival order.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::storage::StorageError;

const MAX_BATCH: usize = 512;
const MAX_IN_FLIGHT: usize = 1;
const QUEUE_DEPTH: usize = 8_192;

type Reply<V> = oneshot::Sender<Result<V, Arc<StorageError>>>;

pub struct Coalescer<K, V> {
    queue: mpsc::Sender<(K, Reply<V>)>,
}

impl<K, V> Clone for Coalescer<K, V> {
    fn clone(&self) -> Self {
        Coalescer { queue: self.queue.clone() }
    }
}

impl<K: Send + 'static, V: Send + 'static> Coalescer<K, V> {
    /// Starts the loader task. `fetch` answers a batch of keys with one value per key, in order.
    pub fn spawn<F, Fut>(fetch: F) -> Coalescer<K, V>
    where
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<V>, StorageError>> + Send + 'static,
    {
        let (queue, inbox) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(inbox, Arc::new(fetch)));
        Coalescer { queue }
    }

    /// The value for `key`, from the next batch.
    pub async fn load(&self, key: K) -> Result<V, StorageError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StorageError::Corrupt("a read coalescer stopped".into());
        self.queue.send((key, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(StorageError::Shared)
    }
}

async fn run<K, V, F, Fut>(mut inbox: mpsc::Receiver<(K, Reply<V>)>, fetch: Arc<F>)
where
    K: Send + 'static,
    V: Send + 'static,
    F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<V>, StorageError>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = inbox.recv().await {
        // Waiting for a free slot is what lets the next batch grow while queries are running.
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let fetch = fetch.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (keys, replies): (Vec<K>, Vec<Reply<V>>) = batch.into_iter().unzip();
            let expected = keys.len();
            match fetch(keys).await {
                Ok(values) if values.len() == expected => {
                    for (reply, value) in replies.into_iter().zip(values) {
                        let _ = reply.send(Ok(value));
                    }
                }
                outcome => {
                    let error = Arc::new(match outcome {
                        Err(error) => error,
                        Ok(values) => StorageError::Corrupt(format!(
                            "a batched read answered {} of {expected} keys",
                            values.len()
                        )),
                    });
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_loads_share_queries_and_keep_their_own_answers() {
        let queries = Arc::new(AtomicUsize::new(0));
        let counted = queries.clone();
        let doubler = Coalescer::spawn(move |keys: Vec<u64>| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(keys.into_iter().map(|k| k * 2).collect())
            }
        });
        let tasks: Vec<_> = (0..200u64)
            .map(|k| {
                let doubler = doubler.clone();
                tokio::spawn(async move { (k, doubler.load(k).await.expect("load")) })
            })
            .collect();
        for task in tasks {
            let (key, value) = task.await.expect("task");
            assert_eq!(value, key * 2);
        }
        let used = queries.load(Ordering::SeqCst);
        assert!(used < 200, "200 loads took {used} queries: nothing was coalesced");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_loads() {
        let failing: Coalescer<u8, u8> =
            Coalescer::spawn(|_keys: Vec<u8>| async { Err(StorageError::Corrupt("down".into())) });
        let error = failing.load(1).await.expect_err("fails");
        assert!(error.to_string().contains("down"), "{error}");
    }

    #[tokio::test]
    async fn a_short_answer_is_an_error_not_a_wrong_value() {
        let short: Coalescer<u8, u8> = Coalescer::spawn(|_keys: Vec<u8>| async { Ok(Vec::new()) });
        assert!(short.load(1).await.is_err());
    }
}
