//! Durability: `wenhui serve` killed with SIGKILL in the middle of a claim rush loses no claim it
//! acknowledged, oversells nothing, and its ledger verifies after restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use wenhui::domain::citizen::synthetic_id_number;
use wenhui::domain::time::Timestamp;

use crate::both_backends;
use crate::cli::{free_port, spawn_serve, unsafe_kill, wenhui};
use crate::common::{Backend, TestDb, read};

const STOCK: i64 = 100;

/// A claim attempt: citizen index, token, and the answer if one arrived before the kill.
type Attempt = (usize, String, Option<(u16, Value)>);
const CITIZENS: u32 = 160;

struct Server {
    child: std::process::Child,
    base: String,
}

fn start(db: &TestDb) -> Server {
    let dir = db.dir.path();
    let listen = format!("127.0.0.1:{}", free_port());
    let data_dir = dir.join("data");
    let envs = [
        ("DATABASE_URL", db.url.as_str()),
        ("WENHUI_LISTEN", listen.as_str()),
        ("WENHUI_DATA_DIR", data_dir.to_str().expect("utf8")),
        ("RUST_LOG", "warn,wenhui::server=info"),
    ];
    Server { child: spawn_serve(dir, &envs, false), base: format!("http://{listen}") }
}

async fn post(client: &reqwest::Client, url: String, token: &str, key: &str, body: Value) -> (u16, Value) {
    let request = client.post(url).bearer_auth(token).header("idempotency-key", key).json(&body);
    read(request.send().await.expect("send")).await
}

async fn setup(client: &reqwest::Client, server: &Server, staff: &str) -> (String, Vec<String>) {
    let now = Timestamp::now();
    let season = json!({"name": "crash", "province": "370000", "starts_at": now.plus_seconds(-60).to_string(),
        "ends_at": now.plus_seconds(86_400).to_string(), "budgets": [{"funder": "370000", "amount": "100000.00"}]});
    let (status, season) = post(client, format!("{}/v1/seasons", server.base), staff, "s", season).await;
    assert_eq!(status, 201, "{season}");
    let batch = json!({"name": "b", "issuer": "370000", "kind": "threshold", "face_value": "5.00", "min_spend": "20.00",
        "stock": STOCK, "per_citizen_limit": 1, "valid_hours": 24, "claim_opens_at": now.plus_seconds(-30).to_string(),
        "claim_closes_at": now.plus_seconds(3_600).to_string(), "categories": ["bookstore"]});
    let path = format!("{}/v1/seasons/{}/batches", server.base, season["id"].as_str().expect("id"));
    let (status, batch) = post(client, path, staff, "b", batch).await;
    assert_eq!(status, 201, "{batch}");
    let mut tokens = Vec::new();
    for n in 0..CITIZENS {
        let mut body = json!({"name": "王五", "id_number": synthetic_id_number("370202", "19800101", n as u16),
            "phone": format!("137{:08}", n)});
        let phone = body["phone"].as_str().expect("phone").to_owned();
        body["code"] = crate::common::dev_code(client, &server.base, &phone, "register").await.into();
        let response =
            client.post(format!("{}/v1/citizens", server.base)).json(&body).send().await.expect("send");
        let (status, answer) = read(response).await;
        assert_eq!(status, 201, "{answer}");
        tokens.push(answer["token"].as_str().expect("token").to_owned());
    }
    (batch["id"].as_str().expect("id").to_owned(), tokens)
}

both_backends!(sigkill_mid_rush_loses_no_acknowledged_claim);

#[allow(clippy::print_stderr, reason = "it reports what the kill cut off, for whoever reads the test output")]
async fn sigkill_mid_rush_loses_no_acknowledged_claim(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = db.dir.path().to_owned();
    let key_out =
        wenhui(&dir, &db.url, &["keys", "create", "--role", "province_admin", "--region", "370000"]);
    let staff = String::from_utf8_lossy(&key_out.stdout).trim().to_owned();
    // One node at a time: each restart follows the kill of the one before.
    db.start_node(crate::common::TEST_POOL_SIZE);
    let mut server = start(&db);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let (batch_id, tokens) = setup(&client, &server, &staff).await;

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (n, token) in tokens.iter().enumerate() {
        let (client, acknowledged) = (client.clone(), acknowledged.clone());
        let url = format!("{}/v1/batches/{batch_id}/claims", server.base);
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis((n as u64 % 40) * 2)).await;
            let request = client
                .post(url)
                .bearer_auth(&token)
                .header("idempotency-key", format!("k{n}"))
                .json(&json!({}));
            let answer = match request.send().await {
                Ok(response) => Some(read(response).await),
                Err(_) => None,
            };
            if matches!(answer, Some((201, _))) {
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            (n, token, answer)
        }));
    }
    while acknowledged.load(Ordering::SeqCst) < 10 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    unsafe_kill(&mut server.child, "KILL");
    server.child.wait().expect("wait");
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("join"));
    }
    let acked: Vec<&Attempt> = answers.iter().filter(|(_, _, a)| matches!(a, Some((201, _)))).collect();
    assert!(!acked.is_empty(), "some claims were acknowledged before the kill");
    let unanswered = answers.iter().filter(|(_, _, a)| a.is_none()).count();
    eprintln!("{backend:?}: {} acknowledged, {unanswered} cut off by the kill", acked.len());

    let mut server = start(&db);
    for (_, token, answer) in &acked {
        let voucher_id = answer.as_ref().expect("answer").1["voucher"]["id"].clone();
        let response = client
            .get(format!("{}/v1/me/vouchers", server.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        let (status, mine) = read(response).await;
        assert_eq!(status, 200);
        assert_eq!(mine["vouchers"][0]["id"], voucher_id, "an acknowledged claim survived the kill");
    }
    // Retrying every claim with its own key: acknowledged ones replay, the rest are decided now.
    let mut vouchers = 0;
    for (n, token, first) in &answers {
        let url = format!("{}/v1/batches/{batch_id}/claims", server.base);
        let (status, body) = post(&client, url, token, &format!("k{n}"), json!({})).await;
        if let Some((201, first_body)) = first {
            assert_eq!((status, &body), (201, first_body), "a retry returns the first answer");
        }
        if status == 201 {
            vouchers += 1;
        }
    }
    assert_eq!(vouchers, STOCK, "exactly the stock was sold, never more");
    unsafe_kill(&mut server.child, "TERM");
    server.child.wait().expect("wait");
    let verify = wenhui(&dir, &db.url, &["ledger", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}
