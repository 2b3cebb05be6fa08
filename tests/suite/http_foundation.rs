//! The HTTP skeleton: operational endpoints, the error format, limits, and staff authentication.

use serde_json::json;
use wenhui::domain::staff::Role;

use crate::both_backends;
use crate::common::{Backend, TestApp, code};

both_backends!(
    operational_endpoints,
    staff_keys_are_checked,
    bad_input_gets_clear_errors,
    slow_requests_time_out_cleanly
);

async fn operational_endpoints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = app.get("/healthz", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, _) = app.get("/readyz", None).await;
    assert_eq!(status, 200);
    let (status, openapi) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(openapi["paths"]["/v1/ledger/verify"].is_object(), "openapi lists the ledger routes");
    let response = app.client.get(app.url("/healthz")).send().await.expect("send");
    assert!(response.headers().get("x-request-id").is_some(), "every response carries a request id");
    let metrics = app.client.get(app.url("/metrics")).send().await.expect("send").text().await.expect("text");
    assert!(metrics.contains("http_requests_total{route=\"/healthz\""), "{metrics}");
    assert!(metrics.contains("http_request_duration_seconds_bucket"), "latency histogram present");
}

async fn staff_keys_are_checked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = app.get("/v1/ledger/verify", None).await;
    assert_eq!((status, code(&body)), (401, "unauthenticated"));
    let forged = "wh_sk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (status, body) = app.get("/v1/ledger/verify", Some(forged)).await;
    assert_eq!((status, code(&body)), (401, "invalid_key"));
    let (status, body) = app.get("/v1/ledger/verify", Some("garbage")).await;
    assert_eq!((status, code(&body)), (401, "invalid_key"));

    let auditor = app.staff_key(Role::Auditor, "370000").await;
    let (status, body) = app.get("/v1/ledger/verify", Some(&auditor)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], true);

    let qingdao_admin = app.staff_key(Role::CityAdmin, "370200").await;
    let (status, body) = app.get("/v1/ledger/verify", Some(&qingdao_admin)).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "wrong role");
    let (status, _) = app
        .post(
            "/v1/staff/keys",
            Some(&auditor),
            json!({"role": "auditor", "region": "370000", "name": "某人", "phone": "13800138000"}),
        )
        .await;
    assert_eq!(status, 403, "auditors change nothing");

    // A city admin cannot act for another city or for the province.
    for (role, region) in [("finance", "370100"), ("finance", "370000"), ("province_admin", "370000")] {
        let (status, body) = app
            .post(
                "/v1/staff/keys",
                Some(&qingdao_admin),
                json!({"role": role, "region": region, "name": "某人", "phone": "13800138000"}),
            )
            .await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "{role} {region}");
    }
    let (_, minted) = app.enrol_key(&qingdao_admin, "finance", "370200").await;
    let (status, me) = app.get("/v1/staff/me", Some(&minted)).await;
    assert_eq!((status, me["role"].as_str(), me["region"].as_str()), (200, Some("finance"), Some("370200")));

    let province_admin = app.staff_key(Role::ProvinceAdmin, "370000").await;
    app.enrol_key(&province_admin, "city_admin", "370200").await;
    let person = json!({"role": "city_admin", "region": "110100", "name": "某人", "phone": "13800138000"});
    let (status, _) = app.post("/v1/staff/keys", Some(&province_admin), person).await;
    assert_eq!(status, 403, "another province");
}

async fn bad_input_gets_clear_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.staff_key(Role::ProvinceAdmin, "370000").await;
    let cases = [
        (json!({"role": "finance", "region": "37000"}), 422, "invalid_region"),
        (json!({"role": "finance", "region": "990000"}), 422, "invalid_region"),
        (json!({"role": "wizard", "region": "370000"}), 422, "invalid_role"),
        (json!({"role": "city_admin", "region": "370000"}), 422, "invalid_scope"),
        (json!({"role": "finance", "region": "370000", "phone": "12345"}), 422, "phone_format"),
        (json!({"role": "finance", "region": "370000", "name": " "}), 422, "invalid_name"),
        (json!({"role": "finance"}), 422, "invalid_body"),
        (json!({"role": "finance", "region": "370000", "extra": 1}), 422, "invalid_body"),
    ];
    for (mut body, status, expected) in cases {
        for (field, value) in [("name", "某人"), ("phone", "13800138000")] {
            if body.get("role").is_some() && body.get("region").is_some() && body.get(field).is_none() {
                body[field] = value.into();
            }
        }
        let (got, answer) = app.post("/v1/staff/keys", Some(&admin), body.clone()).await;
        assert_eq!((got, code(&answer)), (status, expected), "{body}");
    }
    let malformed = app
        .client
        .post(app.url("/v1/staff/keys"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    let (status, body) = crate::common::read(malformed).await;
    assert_eq!((status, code(&body)), (400, "malformed_json"));
    let huge =
        format!("{{\"role\":\"finance\",\"region\":\"370000\",\"label\":\"{}\"}}", "x".repeat(200_000));
    let response = app
        .client
        .post(app.url("/v1/staff/keys"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        // The server answers 413 before reading the body and drops the connection; keep the
        // client from pooling it for the next request (which then failed with a broken pipe).
        .header("connection", "close")
        .body(huge)
        .send()
        .await
        .expect("send");
    let (status, body) = crate::common::read(response).await;
    assert_eq!((status, code(&body)), (413, "body_too_large"));
    let (status, body) = app.get("/v1/nothing-here", None).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let response = app.client.delete(app.url("/healthz")).send().await.expect("send");
    let (status, body) = crate::common::read(response).await;
    assert_eq!((status, code(&body)), (405, "method_not_allowed"));
}

/// A request that outlives its time limit is answered 503 `timeout` (retry with the same
/// Idempotency-Key) and leaves nothing half written; the season-wide finance calls (reconcile,
/// close, settle) have their own, longer limit.
async fn slow_requests_time_out_cleanly(backend: Backend) {
    let app = TestApp::spawn_configured(backend, |config| {
        config.request_timeouts.request = std::time::Duration::from_millis(300);
    })
    .await;
    let admin = app.staff_key(Role::ProvinceAdmin, "370000").await;
    let body = json!({"name": "书店", "credit_code": crate::till::credit_code(77), "category": "bookstore",
        "city": "370200", "settlement_account": {"bank": "青岛银行", "account_no": "6222000011112222", "account_name": "某书店"}});
    // Another session holds a lock the merchant insert needs, so the request is slow for sure
    // (a zero time limit raced the handler on a loaded machine).
    let blocker = hold_merchants_lock(backend, &app.db.url).await;
    for _ in 0..2 {
        let (status, answer) =
            app.post_idem("/v1/merchants", Some(&admin), "slow-merchant", body.clone()).await;
        assert_eq!((status, code(&answer)), (503, "timeout"), "{answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("Idempotency-Key")));
    }
    drop(blocker);
    let region = "370000".parse().expect("region");
    assert!(
        app.store().merchants_in(region, None, 10).await.expect("merchants").is_empty(),
        "nothing written"
    );
    wenhui::app::audit::verify_store(app.store()).await.expect("ledger verifies");
    let unknown = uuid::Uuid::now_v7();
    let (status, answer) = app.get(&format!("/v1/seasons/{unknown}/reconciliation"), Some(&admin)).await;
    assert_eq!(status, 404, "the season-wide limit applies, not the short one: {answer}");
}

/// A connection in an open transaction that blocks inserts into `merchants` until dropped:
/// SQLite's write lock (`BEGIN IMMEDIATE`), or PostgreSQL's `LOCK TABLE ... IN EXCLUSIVE MODE`.
async fn hold_merchants_lock(backend: Backend, url: &str) -> Box<dyn std::any::Any + Send> {
    use sqlx::Connection;
    match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.expect("connect");
            sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut conn).await.expect("lock");
            Box::new(conn)
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::raw_sql("BEGIN; LOCK TABLE merchants IN EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .expect("lock");
            Box::new(conn)
        }
    }
}

/// The listening socket takes a rush's burst of handshakes: its accept queue is as long as the
/// kernel allows (`net.core.somaxconn`), not tokio's default of 1,024 (`ss` shows a listening
/// socket's queue limit as its Send-Q).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_queue_is_as_long_as_the_kernel_allows() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let port = app.base.rsplit(':').next().expect("a port").trim_end_matches('/');
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .expect("a number");
    let filter = format!("sport = :{port}");
    let listed = std::process::Command::new("ss").args(["-ltnH", &filter]).output().expect("run ss");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let queue: u32 = listed
        .split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no listening socket on port {port}: {listed}"));
    assert_eq!(queue, somaxconn.min(65_535), "{listed}");
    assert!(queue > 1_024 || somaxconn <= 1_024, "{listed}");
}
