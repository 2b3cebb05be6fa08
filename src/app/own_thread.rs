//! The writers' own thread.
//!
//! A group-commit writer awaits its statements one after another; on the request runtime every
//! await's wake-up queues behind the tasks of every busy connection (on a node loaded by polls,
//! hundreds of them), so each group took as long as that queue many times over. On a thread of
//! their own, with a one-thread runtime, the writers are woken by the operating system's
//! scheduler, beside the request workers rather than behind their tasks.
//!
//! The runtime lives as long as the process: database connections a writer opens are registered
//! with it. On PostgreSQL the writers take their connections from a pool of their own, opened
//! on this thread (`storage::WRITERS_THREAD`), so a statement's reply wakes this thread at once
//! instead of waiting for a busy request worker to next poll for I/O.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle};

static WRITERS: OnceLock<Option<Handle>> = OnceLock::new();

/// Runs `work` on the writers' thread; on the caller's runtime if that thread cannot be made.
pub fn spawn<F: Future<Output = ()> + Send + 'static>(work: F) {
    match WRITERS.get_or_init(start) {
        Some(writers) => drop(writers.spawn(work)),
        None => drop(tokio::spawn(work)),
    }
}

fn start() -> Option<Handle> {
    let runtime = match Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::warn!(%error, "no runtime of their own for the writers; they run with the requests");
            return None;
        }
    };
    let handle = runtime.handle().clone();
    let started = std::thread::Builder::new()
        .name(crate::storage::WRITERS_THREAD.into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()));
    match started {
        Ok(_) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "no thread of their own for the writers; they run with the requests");
            None
        }
    }
}
