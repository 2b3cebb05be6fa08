//! Change notices between the nodes over one database: short text payloads every node receives,
//! this one included (the application gives them meaning: `app::events`).
//!
//! On PostgreSQL they travel by `LISTEN`/`NOTIFY` on [`CHANNEL`]: a notice sent in a transaction
//! (`pg_notify`) is delivered only if it commits, and in commit order; each node holds one
//! listening connection and, when it drops, reconnects and reports [`Notice::Resync`] (what was
//! sent meanwhile is lost, so the node forgets what it caches). On SQLite (one process) the same
//! notices go through an in-process channel, one per database file.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "wenhui_events";

/// Notices buffered per subscriber before the oldest are dropped (then a [`Notice::Resync`]).
const BUFFER: usize = 4_096;

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A notice some node sent.
    Received(String),
    /// The feed (re)started: notices sent before may have been lost. Always the first item.
    Resync,
}

/// Every node's notices, from the moment the first [`Notice::Resync`] arrives; the task feeding
/// it stops when this is dropped.
pub struct NoticeFeed {
    receiver: mpsc::Receiver<Notice>,
    task: JoinHandle<()>,
}

impl NoticeFeed {
    pub(crate) fn new(receiver: mpsc::Receiver<Notice>, task: JoinHandle<()>) -> NoticeFeed {
        NoticeFeed { receiver, task }
    }

    /// The next notice; `None` once the feed has stopped.
    pub async fn next(&mut self) -> Option<Notice> {
        self.receiver.recv().await
    }

    /// A channel for a feed's task to send into.
    pub(crate) fn channel() -> (mpsc::Sender<Notice>, mpsc::Receiver<Notice>) {
        mpsc::channel(BUFFER)
    }
}

impl Drop for NoticeFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The in-process channel of the database `key` (its URL): every store opened on it in this
/// process shares it.
pub(crate) fn local_hub(key: &str) -> broadcast::Sender<String> {
    static HUBS: OnceLock<Mutex<HashMap<String, broadcast::Sender<String>>>> = OnceLock::new();
    let mut hubs = HUBS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    hubs.entry(key.to_owned()).or_insert_with(|| broadcast::channel(BUFFER).0).clone()
}

/// A feed of the in-process channel `hub`.
pub(crate) fn local_feed(hub: &broadcast::Sender<String>) -> NoticeFeed {
    let mut incoming = hub.subscribe();
    let (sender, receiver) = NoticeFeed::channel();
    let task = tokio::spawn(async move {
        if sender.send(Notice::Resync).await.is_err() {
            return;
        }
        loop {
            let notice = match incoming.recv().await {
                Ok(payload) => Notice::Received(payload),
                Err(broadcast::error::RecvError::Lagged(_)) => Notice::Resync,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if sender.send(notice).await.is_err() {
                return;
            }
        }
    });
    NoticeFeed::new(receiver, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_feed_starts_with_a_resync_then_gets_every_notice_of_its_database() {
        let hub = local_hub("sqlite://notices-test-a.db");
        let mut feed = local_feed(&hub);
        assert_eq!(feed.next().await, Some(Notice::Resync));
        local_hub("sqlite://notices-test-b.db").send("elsewhere".into()).ok();
        local_hub("sqlite://notices-test-a.db").send("one".into()).expect("a subscriber");
        assert_eq!(feed.next().await, Some(Notice::Received("one".into())));
    }
}
