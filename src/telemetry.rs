//! Logging and metrics, set up in one place.
//!
//! Logs: readable text by default, JSON lines with `--log-format json`. Log once where an error
//! is handled; never log secrets (keys, tokens, ID numbers).
//!
//! Metrics: every name `/metrics` serves is a constant here, described here (`# HELP`), and
//! present from the start (registered at zero), so a dashboard never meets a missing series.
//! Counters and histograms go to the process-wide recorder; the node's state (writer queues,
//! last commits, ledger head, checkpoint age) is read when `/metrics` is scraped
//! ([`NodeGauges`]). docs/operations.md lists them; `ops/` holds alerts and a dashboard on them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
    // A second init (tests spawn several servers in one process) keeps the first subscriber.
    let _ = result;
}

// The names. Counters end in `_total`; a `writer` label is `claims` or `redemptions`.
pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "http_request_duration_seconds";
pub const CLAIMS: &str = "wenhui_claims_total";
pub const CLAIMS_SOLD_OUT_FROM_MEMORY: &str = "wenhui_claims_sold_out_from_memory_total";
pub const REDEMPTIONS: &str = "wenhui_redemptions_total";
pub const REVERSALS: &str = "wenhui_reversals_total";
pub const WRITER_GROUP_SIZE: &str = "wenhui_writer_group_size";
pub const WRITER_COMMIT_SECONDS: &str = "wenhui_writer_commit_seconds";
pub const WRITER_QUEUE_DEPTH: &str = "wenhui_writer_queue_depth";
pub const WRITER_LAST_COMMIT_AGE: &str = "wenhui_writer_last_commit_age_seconds";
pub const LEDGER_HEAD_SEQ: &str = "wenhui_ledger_head_seq";
pub const CHECKPOINT_AGE: &str = "wenhui_checkpoint_age_seconds";
pub const DATABASE_UP: &str = "wenhui_database_up";
pub const REPLICA_LAG: &str = "wenhui_replica_lag_seconds";
pub const RATE_LIMITED: &str = "wenhui_rate_limited_total";
pub const RATE_LIMIT_STORE_FALLBACKS: &str = "wenhui_rate_limit_store_fallbacks_total";
pub const RATE_LIMIT_STORE_UP: &str = "wenhui_rate_limit_store_up";
pub const WAITLIST_MOVES: &str = "wenhui_waitlist_moves_total";
pub const WAITLIST_NOTICES: &str = "wenhui_waitlist_notices_total";
/// Outcomes of a waitlist move (docs/waitlist.md).
pub const WAITLIST_MOVE_OUTCOMES: [&str; 5] =
    ["issued", "list_end", "season_over", "batch_closed", "pools_spent"];
/// Outcomes of a waitlist notice.
pub const WAITLIST_NOTICE_OUTCOMES: [&str; 4] = ["sent", "sent_later", "failed", "no_phone"];

/// The claim writer and the redemption writer, as the `writer` label names them.
pub const CLAIM_WRITER: &str = "claims";
pub const REDEMPTION_WRITER: &str = "redemptions";
/// What a redemption or a reversal was of, as the `kind` label names it.
pub const VOUCHER: &str = "voucher";
pub const CARD_PAYMENT: &str = "card_payment";

/// Every `outcome` of [`CLAIMS`]: a claim or points exchange as answered.
pub const CLAIM_OUTCOMES: [&str; 8] =
    ["issued", "replayed", "sold_out", "limit_reached", "not_open", "refused", "unavailable", "failed"];

/// The process metrics on Linux (`metrics-process` names and describes them).
pub const PROCESS_METRICS: [&str; 6] = [
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

const SECONDS_BUCKETS: [f64; 13] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const GROUP_BUCKETS: [f64; 11] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0];

/// The process-wide recorder, installed on first use (a process has one), with every metric
/// described and registered. `None` when another recorder was installed first.
pub fn recorder() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(install).clone()
}

fn install() -> Option<PrometheusHandle> {
    let buckets = [
        (HTTP_REQUEST_DURATION, &SECONDS_BUCKETS[1..]),
        (WRITER_COMMIT_SECONDS, &SECONDS_BUCKETS[..]),
        (WRITER_GROUP_SIZE, &GROUP_BUCKETS[..]),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in buckets {
        builder = match builder.set_buckets_for_metric(Matcher::Full(name.into()), buckets) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(%error, name, "histogram buckets refused");
                PrometheusBuilder::new()
            }
        };
    }
    match builder.install_recorder() {
        Ok(handle) => {
            describe_and_register();
            Some(handle)
        }
        Err(error) => {
            tracing::warn!(%error, "a metrics recorder was installed already; /metrics serves the node's state only");
            None
        }
    }
}

fn describe_and_register() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route, method and status.");
    describe_histogram!(HTTP_REQUEST_DURATION, "Time to answer an HTTP request, by route and method.");
    describe_counter!(CLAIMS, "Claims and points exchanges answered, by outcome.");
    describe_counter!(
        CLAIMS_SOLD_OUT_FROM_MEMORY,
        "Claims answered sold_out from this node's memory, without the writer or the database."
    );
    describe_counter!(REDEMPTIONS, "Redemptions committed, by kind (voucher or card_payment).");
    describe_counter!(REVERSALS, "Reversals committed, by kind (voucher or card_payment).");
    describe_histogram!(WRITER_GROUP_SIZE, "Requests committed in one transaction by a writer.");
    describe_histogram!(WRITER_COMMIT_SECONDS, "Time a writer's group transaction took to commit.");
    describe_gauge!(
        REPLICA_LAG,
        "How far the read replica is behind the primary (0 without a replica; +Inf while it does not answer)."
    );
    describe_counter!(RATE_LIMITED, "Requests refused 429 rate_limited.");
    describe_counter!(
        RATE_LIMIT_STORE_FALLBACKS,
        "Rate-limit checks that fell back to per-process limits because the shared store failed."
    );
    describe_gauge!(
        RATE_LIMIT_STORE_UP,
        "1 while the shared rate-limit store answers (or none is configured), 0 while limits are per process."
    );
    describe_counter!(WAITLIST_MOVES, "Expired or forfeited waitlist vouchers moved on, by outcome.");
    describe_counter!(WAITLIST_NOTICES, "SMS notices to the next in line of a waitlist, by outcome.");
    for outcome in CLAIM_OUTCOMES {
        metrics::counter!(CLAIMS, "outcome" => outcome).increment(0);
    }
    for outcome in WAITLIST_MOVE_OUTCOMES {
        metrics::counter!(WAITLIST_MOVES, "outcome" => outcome).increment(0);
    }
    for outcome in WAITLIST_NOTICE_OUTCOMES {
        metrics::counter!(WAITLIST_NOTICES, "outcome" => outcome).increment(0);
    }
    for kind in [VOUCHER, CARD_PAYMENT] {
        metrics::counter!(REDEMPTIONS, "kind" => kind).increment(0);
        metrics::counter!(REVERSALS, "kind" => kind).increment(0);
    }
    for writer in [CLAIM_WRITER, REDEMPTION_WRITER] {
        let _ = metrics::histogram!(WRITER_GROUP_SIZE, "writer" => writer);
        let _ = metrics::histogram!(WRITER_COMMIT_SECONDS, "writer" => writer);
    }
    for counter in [CLAIMS_SOLD_OUT_FROM_MEMORY, RATE_LIMITED, RATE_LIMIT_STORE_FALLBACKS] {
        metrics::counter!(counter).increment(0);
    }
    metrics::gauge!(REPLICA_LAG).set(0.0);
    metrics::gauge!(RATE_LIMIT_STORE_UP).set(1.0);
    let process = process_collector();
    process.describe();
    process.collect();
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Reads the process metrics (memory, CPU, file descriptors) now, for a scrape.
pub fn collect_process_metrics() {
    process_collector().collect();
}

/// Counts a claim's (or points exchange's) answer under its outcome.
pub fn claim_answered(status: u16, replayed: bool, body: &str) {
    metrics::counter!(CLAIMS, "outcome" => claim_outcome(status, replayed, body)).increment(1);
}

/// One of [`CLAIM_OUTCOMES`]: a refusal by its error code (read from the answer's body).
pub fn claim_outcome(status: u16, replayed: bool, body: &str) -> &'static str {
    #[derive(serde::Deserialize)]
    struct Refusal {
        error: Code,
    }
    #[derive(serde::Deserialize)]
    struct Code {
        code: String,
    }
    match (replayed, status) {
        (true, _) => "replayed",
        (false, 200..=299) => "issued",
        (false, 503) => "unavailable",
        (false, 500..) => "failed",
        _ => match serde_json::from_str::<Refusal>(body).map(|r| r.error.code) {
            Ok(code) if code == "sold_out" => "sold_out",
            Ok(code) if code == "limit_reached" => "limit_reached",
            Ok(code) if code == "not_open" => "not_open",
            _ => "refused",
        },
    }
}

/// A redemption or card payment committed.
pub fn redeemed(kind: &'static str) {
    metrics::counter!(REDEMPTIONS, "kind" => kind).increment(1);
}

/// A reversal of a redemption or card payment committed.
pub fn reversed(kind: &'static str) {
    metrics::counter!(REVERSALS, "kind" => kind).increment(1);
}

/// A group writer's own figures: its commits go to the histograms, its last commit is kept for
/// `/readyz` and [`WRITER_LAST_COMMIT_AGE`].
#[derive(Debug)]
pub struct WriterStats {
    writer: &'static str,
    started: Instant,
    /// Nanoseconds from `started` to the last commit, plus one; 0 before the first.
    last_commit: AtomicU64,
}

impl WriterStats {
    pub fn new(writer: &'static str) -> WriterStats {
        WriterStats { writer, started: Instant::now(), last_commit: AtomicU64::new(0) }
    }

    /// A group of `size` requests committed in `took`.
    pub fn committed(&self, size: usize, took: Duration) {
        metrics::histogram!(WRITER_GROUP_SIZE, "writer" => self.writer).record(size as f64);
        metrics::histogram!(WRITER_COMMIT_SECONDS, "writer" => self.writer).record(took.as_secs_f64());
        let at = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.last_commit.store(at.saturating_add(1), Ordering::Relaxed);
    }

    /// Time since the last commit, `None` before the first.
    pub fn since_last_commit(&self) -> Option<Duration> {
        match self.last_commit.load(Ordering::Relaxed) {
            0 => None,
            at => Some(self.started.elapsed().saturating_sub(Duration::from_nanos(at - 1))),
        }
    }

    /// Time since the last commit, or since the writer started before the first.
    pub fn last_commit_age(&self) -> Duration {
        self.since_last_commit().unwrap_or_else(|| self.started.elapsed())
    }
}

/// One writer's state at a scrape.
#[derive(Clone, Copy, Debug)]
pub struct WriterGauges {
    pub writer: &'static str,
    pub queue_depth: usize,
    pub last_commit_age: Duration,
}

/// The ledger as the database answered a scrape.
#[derive(Clone, Copy, Debug)]
pub struct LedgerGauges {
    pub head_seq: i64,
    pub checkpoint_age: Duration,
}

/// A node's state, read when `/metrics` is scraped and rendered from a recorder of the node's
/// own: in one process (the tests run several servers) each node shows its own figures.
pub struct NodeGauges {
    recorder: PrometheusRecorder,
}

impl Default for NodeGauges {
    fn default() -> NodeGauges {
        let recorder = PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            describe_gauge!(WRITER_QUEUE_DEPTH, "Requests waiting in a writer's queue on this node.");
            describe_gauge!(
                WRITER_LAST_COMMIT_AGE,
                "Seconds since a writer on this node last committed a group (since its start, before the first)."
            );
            describe_gauge!(LEDGER_HEAD_SEQ, "The ledger head's sequence number, as the database answered.");
            describe_gauge!(
                CHECKPOINT_AGE,
                "Seconds since the oldest ledger entry not yet covered by a signed checkpoint (0 when all are)."
            );
            describe_gauge!(
                DATABASE_UP,
                "1 when the database answered the last scrape within a second, else 0."
            );
            metrics::gauge!(LEDGER_HEAD_SEQ).set(0.0);
            metrics::gauge!(CHECKPOINT_AGE).set(0.0);
            metrics::gauge!(DATABASE_UP).set(0.0);
        });
        NodeGauges { recorder }
    }
}

impl NodeGauges {
    /// Sets the node's gauges; `ledger` is `None` when the database did not answer (the ledger
    /// gauges keep their last values, [`DATABASE_UP`] goes to 0).
    pub fn set(&self, writers: &[WriterGauges], ledger: Option<LedgerGauges>) {
        metrics::with_local_recorder(&self.recorder, || {
            for w in writers {
                metrics::gauge!(WRITER_QUEUE_DEPTH, "writer" => w.writer).set(w.queue_depth as f64);
                let age = w.last_commit_age.as_secs_f64();
                metrics::gauge!(WRITER_LAST_COMMIT_AGE, "writer" => w.writer).set(age);
            }
            metrics::gauge!(DATABASE_UP).set(if ledger.is_some() { 1.0 } else { 0.0 });
            if let Some(ledger) = ledger {
                metrics::gauge!(LEDGER_HEAD_SEQ).set(ledger.head_seq as f64);
                metrics::gauge!(CHECKPOINT_AGE).set(ledger.checkpoint_age.as_secs_f64());
            }
        });
    }

    /// The node's gauges in the Prometheus text format.
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(code: &str) -> String {
        serde_json::json!({"error": {"code": code, "message": "m"}}).to_string()
    }

    #[test]
    fn a_claim_answer_is_counted_under_its_outcome() {
        assert_eq!(claim_outcome(201, false, "{\"voucher\":{}}"), "issued");
        assert_eq!(claim_outcome(201, true, "{\"voucher\":{}}"), "replayed");
        assert_eq!(claim_outcome(409, true, &refusal("sold_out")), "replayed");
        assert_eq!(claim_outcome(409, false, &refusal("sold_out")), "sold_out");
        assert_eq!(claim_outcome(409, false, &refusal("limit_reached")), "limit_reached");
        assert_eq!(claim_outcome(409, false, &refusal("not_open")), "not_open");
        assert_eq!(claim_outcome(404, false, &refusal("batch_not_found")), "refused");
        assert_eq!(claim_outcome(422, false, "not json"), "refused");
        assert_eq!(claim_outcome(503, false, &refusal("database_unavailable")), "unavailable");
        assert_eq!(claim_outcome(500, false, &refusal("internal")), "failed");
        for status in [201, 409, 503, 500] {
            assert!(CLAIM_OUTCOMES.contains(&claim_outcome(status, false, &refusal("x"))));
        }
    }

    #[test]
    fn a_writer_knows_when_it_last_committed() {
        let stats = WriterStats::new(CLAIM_WRITER);
        assert_eq!(stats.since_last_commit(), None);
        std::thread::sleep(Duration::from_millis(20));
        assert!(stats.last_commit_age() >= Duration::from_millis(20), "since the start before the first");
        stats.committed(3, Duration::from_millis(2));
        let since = stats.since_last_commit().expect("committed");
        assert!(since < Duration::from_millis(20), "{since:?}");
        assert!(stats.last_commit_age() >= since, "the age is the last commit's once there is one");
    }
}
