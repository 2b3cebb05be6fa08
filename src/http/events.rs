//! Applying the other nodes' change notices (`app::events`) to this node's caches, and
//! announcing this node's changes to them.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::AppState;
use crate::app::events::NodeEvent;
use crate::storage::{Notice, NoticeFeed};

/// How long a start waits for the notices' listener before going on without it.
const READY_WAIT: Duration = Duration::from_secs(5);

impl AppState {
    /// Applies `event` here and sends it to the other nodes; a change the caller has committed.
    /// A notice that cannot be sent is logged: the other nodes' caches lapse on their own.
    pub async fn announce(&self, event: NodeEvent) {
        self.apply(&event).await;
        if let Err(error) = self.store().publish_notice(&event.encode()).await {
            // Not the payload: a session's carries its token hash.
            tracing::warn!(%error, "could not notify the other nodes of a change");
        }
    }

    /// Makes this node's caches follow `event`.
    pub async fn apply(&self, event: &NodeEvent) {
        let inner = self.inner();
        match event {
            NodeEvent::SoldOut { batch_id, until, message } => {
                self.writer().sold_out().mark(*batch_id, *until, message.clone());
                inner.public_reads.invalidate();
            }
            NodeEvent::StockReturned(batch_id) => {
                self.writer().stock_returned(*batch_id).await;
                inner.public_reads.invalidate();
            }
            NodeEvent::ClaimsChanged => {
                self.writer().invalidate().await;
                inner.batches.clear();
                inner.public_reads.invalidate();
            }
            NodeEvent::SessionRevoked(hash) => self.citizens().forget_token(hash),
            NodeEvent::CitizenSessionsRevoked(citizen_id) => self.citizens().forget_citizen(*citizen_id),
            NodeEvent::MerchantChanged(_) | NodeEvent::TerminalChanged(_) => inner.tills.clear(),
            NodeEvent::QrKeysRotated => {
                self.qr().reload();
                inner.public_reads.invalidate();
            }
            NodeEvent::CatalogChanged => inner.public_reads.invalidate(),
        }
    }

    /// The notices' feed (re)started and may have missed some: every cache is forgotten.
    async fn forget_everything(&self) {
        let inner = self.inner();
        self.writer().invalidate().await;
        inner.batches.clear();
        inner.tills.clear();
        inner.public_reads.invalidate();
        self.citizens().forget_every_token();
        self.qr().reload();
    }
}

/// Applies every notice of `feed` to `state` until the feed ends. Waits (at most
/// [`READY_WAIT`]) for the feed to be listening first, so that a node that has started hears
/// every change made after.
pub async fn spawn_node_events(state: AppState, mut feed: NoticeFeed) -> JoinHandle<()> {
    match tokio::time::timeout(READY_WAIT, feed.next()).await {
        Ok(Some(first)) => handle(&state, first).await,
        Ok(None) => tracing::warn!("the notices' feed ended at once"),
        Err(_) => tracing::warn!(
            "not yet listening for the other nodes' notices; caches lapse on their own until then"
        ),
    }
    tokio::spawn(async move {
        while let Some(notice) = feed.next().await {
            handle(&state, notice).await;
        }
    })
}

async fn handle(state: &AppState, notice: Notice) {
    match notice {
        Notice::Resync => state.forget_everything().await,
        Notice::Received(payload) => match NodeEvent::parse(&payload) {
            Some(event) => state.apply(&event).await,
            None => tracing::debug!(bytes = payload.len(), "a notice this version does not know; ignored"),
        },
    }
}
