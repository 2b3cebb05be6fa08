//! The polls port (`wenhui serve --polls-listen`): the public reads a rush's phones poll (the
//! season list, a season, its batch list) and `/healthz`, served by threads of their own under
//! Linux's `SCHED_IDLE` policy, so that when polls saturate a node's cores its claims and
//! redemptions still get the CPU: a request worker that wakes takes the core from a polls
//! thread at once (docs/operations.md#the-polls-port).
//!
//! A load balancer routes those `GET`s here and everything else to the main port. The answers
//! are the main port's (the same handlers, snapshots and stacks); any other request is a 404.
//! Nothing here touches the database directly: a snapshot's rebuild runs on the request
//! workers' runtime (`PublicReads`), so no connection of the pools is driven by these threads.

use std::io;
use std::net::TcpListener as StdListener;

use tokio::runtime::Builder;
use tokio::sync::{oneshot, watch};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, ConnectionLimits, RequestTimeouts, ops};

/// The routes served on the polls port: the public reads on their own stack (`lean`), as on
/// the main port, and `/healthz` with the main router's layers.
pub fn router(state: AppState, timeouts: RequestTimeouts) -> super::lean::ByMethod {
    let routes = OpenApiRouter::new().routes(routes!(ops::healthz));
    let (routes, _) = super::measured(super::time_limited(routes, timeouts.request)).split_for_parts();
    super::lean::router(super::with_layers(routes, state.clone()), state)
}

/// Serves `app` on `listener` from a runtime of `workers` threads of the lowest priority, on
/// the last `cores` of the node's cores when given (`--polls-cores`), until `shutdown` turns
/// true; the receiver completes once its last connection has closed.
pub fn spawn(
    listener: StdListener,
    app: super::lean::ByMethod,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    workers: usize,
    cores: Option<usize>,
) -> io::Result<oneshot::Receiver<()>> {
    listener.set_nonblocking(true)?;
    let placement = Placement::last_cores(cores);
    let runtime = Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name("polls")
        .on_thread_start(move || {
            lowest_priority();
            placement.apply();
        })
        .enable_all()
        .build()?;
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new().name("polls-port".into()).spawn(move || {
        let served = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            // The accept loop on a worker too: this thread only waits.
            let serving = tokio::spawn(super::serve::serve(listener, app, limits, async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            }));
            let _ = serving.await;
            Ok::<(), io::Error>(())
        });
        if let Err(error) = served {
            tracing::error!(%error, "the polls port stopped");
        }
        let _ = done.send(());
    })?;
    Ok(finished)
}

/// Puts the calling thread under `SCHED_IDLE`: it runs only when no ordinary thread wants its
/// core, and an ordinary thread that wakes preempts it at once (Linux; elsewhere a warning).
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let thread = thread_priority::thread_native_id();
        if let Err(error) = thread_priority::set_thread_priority_and_policy(thread, ThreadPriority::Min, idle)
        {
            tracing::warn!(?error, "a polls port thread keeps its priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    tracing::warn!("thread priorities are set on Linux only: the polls port's threads keep theirs");
}

/// Which cores the polls threads may run on: the last `n` of those the process may use. Kept
/// off the other cores, polls leave the claims' threads there their caches and the kernel's
/// attention (docs/operations.md#the-polls-port has what it measured).
#[derive(Debug)]
struct Placement {
    #[cfg(target_os = "linux")]
    cores: Option<nix::sched::CpuSet>,
}

impl Placement {
    /// The last `n` cores; every core (nothing to do) when `n` is none or not fewer than them.
    #[cfg(target_os = "linux")]
    fn last_cores(n: Option<usize>) -> Placement {
        use nix::sched::{CpuSet, sched_getaffinity};
        use nix::unistd::Pid;
        let Some(n) = n else { return Placement { cores: None } };
        let Ok(allowed) = sched_getaffinity(Pid::from_raw(0)) else {
            tracing::warn!("the process's cores are unknown: the polls port's threads run on all of them");
            return Placement { cores: None };
        };
        let usable = cores_in(&allowed);
        if n >= usable.len() {
            return Placement { cores: None };
        }
        let mut cores = CpuSet::new();
        for &cpu in &usable[usable.len() - n..] {
            // In range: `cpu` comes from the set's own count.
            let _ = cores.set(cpu);
        }
        Placement { cores: Some(cores) }
    }

    #[cfg(not(target_os = "linux"))]
    fn last_cores(n: Option<usize>) -> Placement {
        if n.is_some() {
            tracing::warn!(
                "--polls-cores is applied on Linux only: the polls port's threads run on every core"
            );
        }
        Placement {}
    }

    /// Keeps the calling thread on these cores.
    fn apply(&self) {
        #[cfg(target_os = "linux")]
        if let Some(cores) = &self.cores
            && let Err(error) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), cores)
        {
            tracing::warn!(%error, "a polls port thread runs on every core");
        }
    }
}

/// The cores in `set`, in order.
#[cfg(target_os = "linux")]
fn cores_in(set: &nix::sched::CpuSet) -> Vec<usize> {
    (0..nix::sched::CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::{Placement, cores_in};
    use nix::sched::sched_getaffinity;
    use nix::unistd::Pid;

    #[test]
    fn polls_threads_run_on_the_last_cores_asked_for() {
        let allowed = cores_in(&sched_getaffinity(Pid::from_raw(0)).expect("this process's cores"));
        let placement = Placement::last_cores(Some(1));
        let on = std::thread::spawn(move || {
            placement.apply();
            cores_in(&sched_getaffinity(Pid::from_raw(0)).expect("this thread's cores"))
        })
        .join()
        .expect("the thread ends");
        let expected =
            if allowed.len() > 1 { vec![*allowed.last().expect("a core")] } else { allowed.clone() };
        assert_eq!(on, expected, "of {allowed:?}");
        assert!(Placement::last_cores(None).cores.is_none(), "every core unless asked");
        assert!(
            Placement::last_cores(Some(allowed.len())).cores.is_none(),
            "as many as there are: every core"
        );
    }
}
