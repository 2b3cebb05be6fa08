//! The citizens' rate buckets shared through Redis (`--rate-limit-store`,
//! `src/http/rate_limit/store.rs`): a citizen sending to two nodes in turn is refused after the
//! documented total, not twice it; and a store that does not answer leaves every node serving
//! and limiting by itself, counted in `/metrics`. Redis is on 127.0.0.1:6379 (or
//! `WENHUI_TEST_REDIS_URL`; `machine::redis` starts the local one if it is down); a test that
//! cannot reach it fails, it never skips.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wenhui::http::rate_limit::{CLAIM_BURST, IDENTITY_BURST, StoreConfig};
use wenhui::server::RunningServer;

use crate::both_backends;
use crate::claims::World;
use crate::common::{Backend, TestApp, code, read};

fn redis_url() -> String {
    std::env::var("WENHUI_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A store config with a key prefix of this test's own, after checking that Redis answers.
async fn live_store() -> StoreConfig {
    crate::machine::redis();
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).expect("a Redis URL");
    let mut connection =
        tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection())
            .await
            .expect("Redis answers within 5 s")
            .unwrap_or_else(|error| panic!("Redis at {url} cannot be reached: {error}"));
    let pong: String = redis::cmd("PING").query_async(&mut connection).await.expect("PING");
    assert_eq!(pong, "PONG");
    let mut store = StoreConfig::new(url, format!("wenhui-test:{}", uuid::Uuid::new_v4()));
    // What is tested here is the sharing; a machine busy with other tests must not make it fall
    // back (the 50 ms default is for production, and the fallback has a test of its own).
    store.timeout = Duration::from_secs(2);
    store
}

/// Nothing listens on port 1.
fn dead_store() -> StoreConfig {
    StoreConfig::new("redis://127.0.0.1:1".into(), format!("wenhui-test:{}", uuid::Uuid::new_v4()))
}

async fn two_nodes(app: &TestApp, store: &StoreConfig) -> [RunningServer; 2] {
    let start = || app.spawn_node(|config| config.rate_limit_store = Some(store.clone()));
    [start().await.expect("node 1 starts"), start().await.expect("node 2 starts")]
}

fn bases(nodes: &[RunningServer; 2]) -> [String; 2] {
    [format!("http://{}", nodes[0].addr), format!("http://{}", nodes[1].addr)]
}

/// An ID number and a phone no other test uses.
fn fresh_identity() -> (String, String) {
    let n = uuid::Uuid::new_v4().as_u128();
    let day = format!("1980{:02}{:02}", 1 + n % 12, 1 + (n >> 8) % 28);
    let id = wenhui::domain::citizen::synthetic_id_number("370202", &day, ((n >> 16) % 1000) as u16);
    (id, format!("137{:08}", (n >> 32) % 100_000_000))
}

/// Sign-in attempts for one identity with a code never sent, to `bases` in turn, until the
/// first 429: how many were answered otherwise first (each a 401), and the 429's answer.
async fn attempts_until_refused(
    client: &reqwest::Client,
    bases: &[String; 2],
    most: usize,
) -> (usize, Value) {
    let (id_number, phone) = fresh_identity();
    let body = json!({"id_number": id_number, "phone": phone, "code": "000000"});
    for n in 0..most {
        let url = format!("{}/v1/citizens/sessions", bases[n % 2]);
        let (status, answer) = read(client.post(url).json(&body).send().await.expect("send")).await;
        if status == 429 {
            return (n, answer);
        }
        assert_eq!((status, code(&answer)), (401, "invalid_code"), "attempt {n}: {answer}");
    }
    panic!("{most} attempts and no 429");
}

async fn stop(nodes: [RunningServer; 2]) {
    for node in nodes {
        node.stop().await.expect("node stops");
    }
}

both_backends!(
    identity_attempts_hold_across_nodes,
    claims_hold_across_nodes,
    a_dead_store_leaves_each_node_limiting_alone
);

/// Registration and sign-in: 5 attempts per ID number and phone, whichever nodes they reach;
/// the sixth is refused by either node.
async fn identity_attempts_hold_across_nodes(backend: Backend) {
    let app = TestApp::spawn_for_nodes(backend, 3, |_| {}).await;
    let nodes = two_nodes(&app, &live_store().await).await;
    let bases = bases(&nodes);
    let (allowed, refused) = attempts_until_refused(&app.client, &bases, 4 * IDENTITY_BURST as usize).await;
    assert_eq!(allowed, IDENTITY_BURST as usize, "the documented burst across both nodes: {refused}");
    assert_eq!(code(&refused), "rate_limited", "{refused}");
    stop(nodes).await;
}

/// A bot sending claims to two nodes in turn gets the documented burst in all (plus the one a
/// second that refills while it sends), not a burst from each node.
async fn claims_hold_across_nodes(backend: Backend) {
    let world = World::for_nodes(backend, "10000.00", None, 3).await;
    let batch = world.batch(json!({"stock": 50})).await;
    let batch_id = batch["id"].as_str().expect("id").to_owned();
    let bot = world.citizen(1).await;
    let nodes = two_nodes(&world.app, &live_store().await).await;
    let bases = bases(&nodes);
    let started = Instant::now();
    let mut statuses = Vec::new();
    let refused = loop {
        let n = statuses.len();
        assert!(n < 3 * CLAIM_BURST as usize, "no 429 after {n} claims: {statuses:?}");
        let url = format!("{}/v1/batches/{batch_id}/claims", bases[n % 2]);
        let request =
            world.app.client.post(url).bearer_auth(&bot).header("idempotency-key", format!("bot-{n}"));
        let (status, body) = read(request.json(&json!({})).send().await.expect("send")).await;
        if status == 429 {
            break body;
        }
        statuses.push(status);
    };
    let refilled = started.elapsed().as_secs() as usize + 1;
    assert_eq!(code(&refused), "rate_limited", "{refused}");
    assert_eq!(statuses[0], 201);
    assert!(statuses[1..].iter().all(|s| *s == 409), "the per-person limit: {statuses:?}");
    let burst = CLAIM_BURST as usize;
    assert!(
        (burst..=burst + refilled).contains(&statuses.len()),
        "{} claims answered before the 429 in {refilled} s; the burst is {burst}",
        statuses.len()
    );
    stop(nodes).await;
}

/// With the store on a dead port, both nodes start, serve claims and limit by themselves: an
/// identity gets the burst from each node. `/metrics` counts the fallbacks.
async fn a_dead_store_leaves_each_node_limiting_alone(backend: Backend) {
    let world = World::for_nodes(backend, "10000.00", None, 3).await;
    let batch = world.batch(json!({"stock": 50})).await;
    let batch_id = batch["id"].as_str().expect("id").to_owned();
    let citizen = world.citizen(1).await;
    let nodes = two_nodes(&world.app, &dead_store()).await;
    let bases = bases(&nodes);
    let fallbacks_before = fallbacks(&world.app.client, &bases[0]).await;

    let url = format!("{}/v1/batches/{batch_id}/claims", bases[0]);
    let request = world.app.client.post(url).bearer_auth(&citizen).header("idempotency-key", "one");
    let (status, body) = read(request.json(&json!({})).send().await.expect("send")).await;
    assert_eq!(status, 201, "a claim is served with the store down: {body}");

    let most = 4 * IDENTITY_BURST as usize;
    let (allowed, refused) = attempts_until_refused(&world.app.client, &bases, most).await;
    assert_eq!(allowed, 2 * IDENTITY_BURST as usize, "each node's own burst: {refused}");
    assert_eq!(code(&refused), "rate_limited", "{refused}");

    let decided = 1 + allowed + 1;
    let fallbacks_after = fallbacks(&world.app.client, &bases[1]).await;
    assert!(
        fallbacks_after >= fallbacks_before + decided as f64,
        "{decided} decisions made per process: {fallbacks_before} then {fallbacks_after}"
    );
    let metrics = metrics_text(&world.app.client, &bases[1]).await;
    assert!(metrics.lines().any(|line| line.starts_with("wenhui_rate_limit_store_up ")), "{metrics}");
    stop(nodes).await;
}

async fn metrics_text(client: &reqwest::Client, base: &str) -> String {
    let response = client.get(format!("{base}/metrics")).send().await.expect("send");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

/// `wenhui_rate_limit_store_fallbacks_total` (0 before the first fallback of this process).
async fn fallbacks(client: &reqwest::Client, base: &str) -> f64 {
    let metrics = metrics_text(client, base).await;
    let line = metrics.lines().find(|line| line.starts_with("wenhui_rate_limit_store_fallbacks_total "));
    line.map_or(0.0, |line| line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number"))
}
