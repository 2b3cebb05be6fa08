use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    no_transparent_huge_pages();
    wenhui::cli::main(wenhui::cli::Cli::parse()).await
}

/// Turns transparent huge pages off for this process (Linux's `PR_SET_THP_DISABLE`, which also
/// overrides mimalloc's `madvise(MADV_HUGEPAGE)` on its regions). With them on, each 2 MiB of
/// fresh heap the claim writer touched during a rush was zeroed at once inside a page fault on
/// the writer's own thread, the one every claim waits on: 7% of the server's CPU; with them off
/// the rush's p99 fell from 25-49 ms to 19-23 ms (BENCHMARKS.md, "The claim rush"). Without the
/// flag (a kernel before 3.15, a sandbox refusing `prctl`) the process runs as before.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
}
