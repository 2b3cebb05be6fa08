//! Operating a fleet: `/metrics` serves every business metric with its help text from the
//! start, counts claims, redemptions and reversals, shows the node's writers and ledger;
//! `/readyz` reports the node's state; the alert rules and the dashboard in `ops/` parse and
//! name only metrics a running server serves.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use wenhui::telemetry as t;

use crate::both_backends;
use crate::common::{Backend, TestApp, code};
use crate::till::Till;

/// Every metric of the service's own (the process metrics are checked apart).
const SERVICE_METRICS: [&str; 19] = [
    t::HTTP_REQUESTS,
    t::HTTP_REQUEST_DURATION,
    t::CLAIMS,
    t::CLAIMS_SOLD_OUT_FROM_MEMORY,
    t::REDEMPTIONS,
    t::REVERSALS,
    t::WRITER_GROUP_SIZE,
    t::WRITER_COMMIT_SECONDS,
    t::WRITER_QUEUE_DEPTH,
    t::WRITER_LAST_COMMIT_AGE,
    t::LEDGER_HEAD_SEQ,
    t::CHECKPOINT_AGE,
    t::DATABASE_UP,
    t::REPLICA_LAG,
    t::RATE_LIMITED,
    t::RATE_LIMIT_STORE_FALLBACKS,
    t::RATE_LIMIT_STORE_UP,
    t::WAITLIST_MOVES,
    t::WAITLIST_NOTICES,
];

pub async fn scrape(app: &TestApp) -> String {
    let response = app.client.get(app.url("/metrics")).send().await.expect("send");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

/// A scrape once both writers' queues are empty: on a busy machine a writer may not yet have
/// taken what the test sent it when the first scrape comes. The last scrape after five seconds
/// otherwise (the caller's assertions then say what waits).
async fn scrape_once_writers_idle(app: &TestApp) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = scrape(app).await;
        let idle = [t::CLAIM_WRITER, t::REDEMPTION_WRITER].iter().all(|writer| {
            sample(&text, &format!("{}{{writer=\"{writer}\"}}", t::WRITER_QUEUE_DEPTH)) == Some(0.0)
        });
        if idle || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The value of one series, named with its labels as rendered (`name{label="value"}`).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
}

/// The names of the samples in an exposition (a histogram's `_bucket`, `_sum` and `_count` too).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next().map(str::to_owned))
        .collect()
}

both_backends!(every_metric_is_described_and_present_from_the_start);

/// On a fresh server, before any claim: each metric has its `# HELP` and `# TYPE`, and a series
/// (the counters at zero, one per outcome, kind and writer).
async fn every_metric_is_described_and_present_from_the_start(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The HTTP metrics are labelled by route: the first request makes them.
    let (status, _) = app.get("/healthz", None).await;
    assert_eq!(status, 200);
    let text = scrape_once_writers_idle(&app).await;
    let names = sample_names(&text);
    for name in SERVICE_METRICS {
        assert!(text.contains(&format!("# HELP {name} ")), "no help text for {name}:\n{text}");
        assert!(text.contains(&format!("# TYPE {name} ")), "no type for {name}");
        let present =
            names.iter().any(|n| n == name || n.strip_prefix(name).is_some_and(|s| s.starts_with('_')));
        assert!(present, "no series of {name}:\n{text}");
    }
    for outcome in t::CLAIM_OUTCOMES {
        let series = format!("{}{{outcome=\"{outcome}\"}}", t::CLAIMS);
        assert!(sample(&text, &series).is_some(), "{series} missing");
    }
    for kind in [t::VOUCHER, t::CARD_PAYMENT] {
        for counter in [t::REDEMPTIONS, t::REVERSALS] {
            assert!(sample(&text, &format!("{counter}{{kind=\"{kind}\"}}")).is_some(), "{counter} {kind}");
        }
    }
    for writer in [t::CLAIM_WRITER, t::REDEMPTION_WRITER] {
        let labels = format!("{{writer=\"{writer}\"}}");
        assert_eq!(sample(&text, &format!("{}{labels}", t::WRITER_QUEUE_DEPTH)), Some(0.0), "{writer}");
        assert!(sample(&text, &format!("{}_count{labels}", t::WRITER_COMMIT_SECONDS)).is_some(), "{writer}");
        let buckets = format!("{}_bucket{{writer=\"{writer}\",le=", t::WRITER_GROUP_SIZE);
        assert!(text.contains(&buckets), "{buckets} missing:\n{text}");
    }
    // A fresh database: the head is the genesis, nothing waits for a checkpoint.
    assert_eq!(sample(&text, t::DATABASE_UP), Some(1.0));
    assert_eq!(sample(&text, t::LEDGER_HEAD_SEQ), Some(0.0));
    assert_eq!(sample(&text, t::CHECKPOINT_AGE), Some(0.0));
    if cfg!(target_os = "linux") {
        for name in t::PROCESS_METRICS {
            assert!(names.contains(name), "no {name}:\n{text}");
        }
        assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|rss| rss > 1e6));
    }
}

both_backends!(claims_redemptions_and_the_ledger_are_counted_and_shown);

/// Counters move by what happened (they are process-wide and other tests run alongside, so by
/// at least that much); the node's gauges are this node's own, exact.
async fn claims_redemptions_and_the_ledger_are_counted_and_shown(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let app = &till.world.app;
    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["seconds_since_last_commit"], Value::Null, "no commit yet: {ready}");
    let before = scrape(app).await;
    let batch = till.world.batch(json!({"stock": 1})).await;
    let batch_id = batch["id"].as_str().expect("id");
    let (citizen, voucher) = till.voucher(1, batch_id).await;
    let other = till.world.citizen(2).await;
    let (status, body) = till.world.claim(&other, batch_id, "late").await;
    assert_eq!((status, code(&body)), (409, "sold_out"), "{body}");
    let (status, _) = till.world.claim(&other, batch_id, "late").await;
    assert_eq!(status, 409, "the retry is answered the same");
    // A sold-out answer from memory is not stored (docs/claims.md), so the replay is of a 201.
    let spare = till.world.batch(json!({"stock": 5})).await;
    let spare_id = spare["id"].as_str().expect("id");
    for _ in 0..2 {
        let (status, body) = till.world.claim(&other, spare_id, "twice").await;
        assert_eq!(status, 201, "{body}");
    }
    let qr = till.qr(&citizen, &voucher).await;
    let redeemed = till.redeem(&qr, "100.00", "order-1").await.expect("redeemed");
    till.client.reverse(redeemed.redemption_id, "refund", None).await.expect("reversed");
    till.world.clock.advance_us(90_000_000);
    let after = scrape(app).await;

    let moved = |series: &str| {
        let (was, is) = (sample(&before, series), sample(&after, series));
        is.unwrap_or(0.0) - was.unwrap_or(0.0)
    };
    let claims = |outcome: &str| format!("{}{{outcome=\"{outcome}\"}}", t::CLAIMS);
    assert!(moved(&claims("issued")) >= 1.0, "{after}");
    assert!(moved(&claims("sold_out")) >= 1.0);
    assert!(moved(&claims("replayed")) >= 1.0);
    assert!(moved(&format!("{}{{kind=\"voucher\"}}", t::REDEMPTIONS)) >= 1.0);
    assert!(moved(&format!("{}{{kind=\"voucher\"}}", t::REVERSALS)) >= 1.0);
    let claim_groups = format!("{}_count{{writer=\"claims\"}}", t::WRITER_GROUP_SIZE);
    assert!(moved(&claim_groups) >= 2.0, "the claim and the refusal each committed");
    let redemption_commits = format!("{}_count{{writer=\"redemptions\"}}", t::WRITER_COMMIT_SECONDS);
    assert!(moved(&redemption_commits) >= 1.0);

    let head = till.head().await;
    assert!(head > 0);
    assert_eq!(sample(&after, t::LEDGER_HEAD_SEQ), Some(head as f64));
    let age = sample(&after, t::CHECKPOINT_AGE).expect("checkpoint age");
    assert!((90.0..200.0).contains(&age), "the entries went unsigned for the 90 s the clock moved: {age}");
    let since_commit = format!("{}{{writer=\"claims\"}}", t::WRITER_LAST_COMMIT_AGE);
    assert!(sample(&after, &since_commit).is_some_and(|s| s < 60.0), "{after}");

    let key = wenhui::app::signing::SigningKey::from_pkcs8(&crate::ledger::test_key()).expect("key");
    wenhui::app::audit::checkpoint(app.store(), &key).await.expect("checkpoint");
    assert_eq!(sample(&scrape(app).await, t::CHECKPOINT_AGE), Some(0.0), "the checkpoint covers the head");

    let (status, ready) = app.get("/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["ledger_head_seq"], head);
    assert_eq!(ready["writer_queue_depth"], json!({"claims": 0, "redemptions": 0}));
    let since = ready["seconds_since_last_commit"].as_f64().expect("a commit was made");
    assert!((0.0..60.0).contains(&since), "{ready}");
    assert_eq!(ready["replica_lag_ms"], Value::Null, "no replica: {ready}");
}

/// The metric names a PromQL expression uses: the service's (`wenhui_`, `http_`) and the
/// process's (`process_`); functions, labels and Prometheus's own `up` are not ours.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let tail = &rest[start..];
        let end =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
        let word = &tail[..end];
        let quoted = rest[..start].ends_with('"');
        if !quoted && ["wenhui_", "http_", "process_"].iter().any(|p| word.starts_with(p)) {
            names.push(word.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Every string of a Grafana dashboard that Prometheus evaluates: panel targets and variables.
fn dashboard_queries(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition" | "query", Value::String(query)) => found.push(query.clone()),
                    _ => dashboard_queries(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| dashboard_queries(item, found)),
        _ => {}
    }
}

#[derive(serde::Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(serde::Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(serde::Deserialize)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    hold: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
}

/// The alert rules and the dashboard shipped in `ops/` parse, and every metric they name is
/// served by a running server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_and_the_dashboard_name_only_served_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ops");
    let rules = std::fs::read_to_string(root.join("prometheus/alerts.yml")).expect("alerts.yml");
    let rules: RuleFile = yaml_serde::from_str(&rules).expect("alerts.yml is a Prometheus rule file");
    let rules: Vec<Rule> = rules.groups.into_iter().flat_map(|group| group.rules).collect();
    let alerts: BTreeSet<&str> = rules.iter().map(|rule| rule.alert.as_str()).collect();
    for wanted in [
        "WenhuiHigh5xxRate",
        "WenhuiNotReady",
        "WenhuiWriterQueueHigh",
        "WenhuiCommitSlow",
        "WenhuiCheckpointLate",
        "WenhuiReplicaLagging",
        "WenhuiRateLimitStoreDown",
    ] {
        assert!(alerts.contains(wanted), "no alert {wanted}: {alerts:?}");
    }
    for rule in &rules {
        assert!(
            rule.hold.is_some() && rule.labels.contains_key("severity"),
            "{} needs for and severity",
            rule.alert
        );
    }
    let dashboard = std::fs::read_to_string(root.join("grafana/wenhui.json")).expect("wenhui.json");
    let dashboard: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|panels| panels.len() >= 10));
    let mut queries: Vec<String> = rules.iter().map(|rule| rule.expr.clone()).collect();
    dashboard_queries(&dashboard, &mut queries);

    let app = TestApp::spawn(Backend::Sqlite).await;
    let (status, _) = app.get("/healthz", None).await;
    assert_eq!(status, 200);
    let served = sample_names(&scrape(&app).await);
    let named: BTreeSet<String> = queries.iter().flat_map(|query| metric_names(query)).collect();
    for wanted in SERVICE_METRICS.iter().filter(|name| name.starts_with("wenhui_")) {
        let used =
            named.iter().any(|n| n == wanted || n.strip_prefix(wanted).is_some_and(|s| s.starts_with('_')));
        assert!(used, "neither the alerts nor the dashboard show {wanted}");
    }
    let missing: Vec<&String> = named.iter().filter(|name| !served.contains(*name)).collect();
    assert!(missing.is_empty(), "named in ops/ but not served: {missing:?}");
}

#[test]
fn metric_names_are_read_out_of_expressions() {
    let expr = r#"histogram_quantile(0.99, sum by (le) (rate(wenhui_writer_commit_seconds_bucket{writer="claims",x="wenhui_no"}[5m]))) > 0.25 and up{job="wenhui"}"#;
    assert_eq!(metric_names(expr), ["wenhui_writer_commit_seconds_bucket"]);
    assert_eq!(
        metric_names("process_open_fds / process_max_fds > 0.8"),
        ["process_open_fds", "process_max_fds"]
    );
}
