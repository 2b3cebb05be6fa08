//! `wenhui-till` redeems against a running `wenhui serve` (a child process) on both backends.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wenhui::domain::citizen::synthetic_id_number;
use wenhui::domain::time::Timestamp;

use crate::both_backends;
use crate::cli::{free_port, spawn_serve, unsafe_kill, wenhui};
use crate::common::{Backend, TestDb, read};
use crate::till::credit_code;

/// `wenhui-till`, built beside `wenhui` by `cargo test --workspace`.
pub(crate) fn till_binary() -> std::path::PathBuf {
    let wenhui = Path::new(env!("CARGO_BIN_EXE_wenhui"));
    let till = wenhui.with_file_name("wenhui-till");
    assert!(till.exists(), "{} is missing: run the suite with `cargo test --workspace`", till.display());
    till
}

fn till(dir: &Path, args: &[&str]) -> (i32, Value) {
    till_with_env(dir, args, &[])
}

fn till_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let mut command = Command::new(till_binary());
    command.args(args).current_dir(dir).env_remove("WENHUI_STAFF_KEY").envs(env.iter().copied());
    let output = command.output().expect("run wenhui-till");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::String(stdout.into_owned()));
    (output.status.code().unwrap_or(-1), json)
}

async fn post(client: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
    let request =
        client.post(url).bearer_auth(token).header("idempotency-key", uuid::Uuid::new_v4().to_string());
    let (status, answer) = read(request.json(&body).send().await.expect("send")).await;
    assert!(status == 200 || status == 201, "{answer}");
    answer
}

both_backends!(wenhui_till_redeems_against_a_running_server);

async fn wenhui_till_redeems_against_a_running_server(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = db.dir.path().to_owned();
    let staff_out =
        wenhui(&dir, &db.url, &["keys", "create", "--role", "province_admin", "--region", "370000"]);
    let staff = String::from_utf8_lossy(&staff_out.stdout).trim().to_owned();
    let listen = format!("127.0.0.1:{}", free_port());
    let data_dir = dir.join("data");
    let envs = [
        ("DATABASE_URL", db.url.as_str()),
        ("WENHUI_LISTEN", listen.as_str()),
        ("WENHUI_DATA_DIR", data_dir.to_str().expect("utf8")),
    ];
    db.start_node(crate::common::TEST_POOL_SIZE);
    let mut server = spawn_serve(&dir, &envs, false);
    let base = format!("http://{listen}");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let now = Timestamp::now();
    let season = post(
        &client,
        format!("{base}/v1/seasons"),
        &staff,
        json!({"name": "till", "province": "370000",
        "starts_at": now.plus_seconds(-60).to_string(), "ends_at": now.plus_seconds(86_400).to_string(),
        "budgets": [{"funder": "370000", "amount": "1000.00"}]}),
    )
    .await;
    let season_id = season["id"].as_str().expect("id");
    let batch = post(&client, format!("{base}/v1/seasons/{season_id}/batches"), &staff, json!({"name": "b", "issuer": "370000",
        "kind": "percent", "percent": 30, "cap": "30.00", "step": "5.00", "stock": 5, "per_citizen_limit": 1, "valid_hours": 24,
        "claim_opens_at": now.plus_seconds(-30).to_string(), "claim_closes_at": now.plus_seconds(3_600).to_string(),
        "categories": ["bookstore"]})).await;
    let merchant = post(
        &client,
        format!("{base}/v1/merchants"),
        &staff,
        json!({"name": "书店", "credit_code": credit_code(9),
        "category": "bookstore", "city": "370200",
        "settlement_account": {"bank": "b", "account_no": "6222000011112222", "account_name": "n"}}),
    )
    .await;
    let code = crate::common::dev_code(&client, &base, "13600000005", "register").await;
    let citizen = client
        .post(format!("{base}/v1/citizens"))
        .json(&json!({"name": "赵六",
        "id_number": synthetic_id_number("370202", "19700101", 5), "phone": "13600000005", "code": code}))
        .send()
        .await
        .expect("send");
    let citizen = read(citizen).await.1["token"].as_str().expect("token").to_owned();
    let claim = post(
        &client,
        format!("{base}/v1/batches/{}/claims", batch["id"].as_str().expect("id")),
        &citizen,
        json!({}),
    )
    .await;
    let voucher = claim["voucher"]["id"].as_str().expect("id");
    let qr = post(&client, format!("{base}/v1/vouchers/{voucher}/qr"), &citizen, json!({})).await;
    let qr = qr["token"].as_str().expect("token").to_owned();

    let work = dir.join("till");
    std::fs::create_dir_all(&work).expect("dir");
    let (code, key) = till(&work, &["keygen"]);
    assert_eq!(code, 0, "{key}");
    let merchant_id = merchant["id"].as_str().expect("id");
    let register = ["register", "--server", &base, "--merchant", merchant_id];
    // The staff key comes from the environment only: on the command line `ps` would show it.
    let (code, refused) = till(&work, &["register", "--server", &base, "--staff-key", &staff]);
    assert_ne!(code, 0, "{refused}");
    let (code, refused) = till(&work, &register);
    assert_ne!(code, 0, "{refused}");
    assert!(refused.to_string().contains("WENHUI_STAFF_KEY"), "{refused}");
    let (code, registered) = till_with_env(&work, &register, &[("WENHUI_STAFF_KEY", &staff)]);
    assert_eq!(code, 0, "{registered}");
    let (code, verified) = till(&work, &["verify", "--qr", &qr]);
    assert_eq!((code, verified["valid"].as_bool()), (0, Some(true)), "{verified}");
    let (code, redeemed) = till(&work, &["redeem", "--qr", &qr, "--amount", "88.00", "--order-ref", "T-1"]);
    assert_eq!(code, 0, "{redeemed}");
    assert_eq!(
        (redeemed["discount"].as_str(), redeemed["payable"].as_str()),
        (Some("25.00"), Some("63.00")),
        "30% of 88 = 26.40, down to 5-yuan steps"
    );
    let (code, refused) = till(&work, &["redeem", "--qr", &qr, "--amount", "88.00", "--order-ref", "T-2"]);
    assert_eq!((code, refused["error"]["code"].as_str()), (1, Some("qr_replayed")), "{refused}");
    let redemption = redeemed["redemption_id"].as_str().expect("id");
    let (code, reversed) = till(&work, &["reverse", "--redemption", redemption, "--reason", "refund"]);
    assert_eq!((code, reversed["voucher_status"].as_str()), (0, Some("active")), "{reversed}");
    let (code, journal) = till(&work, &["journal"]);
    assert_eq!(code, 0);
    assert!(journal.to_string().contains(redemption), "the journal records the redemption: {journal}");

    // Rotating the QR key while the server runs never breaks a token in flight.
    let in_flight = post(&client, format!("{base}/v1/vouchers/{voucher}/qr"), &citizen, json!({})).await;
    let in_flight = in_flight["token"].as_str().expect("token").to_owned();
    let rotated = wenhui(&dir, &db.url, &["keys", "rotate-qr"]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let keys: Value =
        client.get(format!("{base}/v1/keys")).send().await.expect("send").json().await.expect("json");
    let statuses: Vec<&str> =
        keys["keys"].as_array().expect("keys").iter().filter_map(|k| k["status"].as_str()).collect();
    assert_eq!(statuses, ["current", "previous"], "{keys}");
    std::fs::remove_file(work.join("till-keys.json")).ok();
    let (code, redeemed) =
        till(&work, &["redeem", "--qr", &in_flight, "--amount", "40.00", "--order-ref", "T-3"]);
    assert_eq!(code, 0, "a token signed before the rotation still redeems: {redeemed}");

    // The benefit card at the same till: card-pay and reverse-card.
    for (path, body) in [
        (format!("/v1/merchants/{merchant_id}/card-terms"), json!({"percent": 10})),
        (format!("/v1/seasons/{season_id}/points-rate"), json!({"points_per_yuan": 1})),
    ] {
        let response = client.put(format!("{base}{path}")).bearer_auth(&staff).json(&body).send().await;
        let (status, answer) = read(response.expect("send")).await;
        assert_eq!(status, 200, "{answer}");
    }
    post(&client, format!("{base}/v1/me/card"), &citizen, json!({"via": "mobile"})).await;
    let card_qr = post(&client, format!("{base}/v1/me/card/qr"), &citizen, json!({})).await;
    let card_qr = card_qr["token"].as_str().expect("token").to_owned();
    let (code, verified) = till(&work, &["verify", "--qr", &card_qr]);
    assert_eq!((code, verified["kind"].as_str()), (0, Some("card")), "{verified}");
    let (code, paid) =
        till(&work, &["card-pay", "--qr", &card_qr, "--amount", "88.00", "--order-ref", "T-5"]);
    assert_eq!(code, 0, "{paid}");
    assert_eq!(
        (
            paid["member_discount"].as_str(),
            paid["amount_after_discount"].as_str(),
            paid["points_earned"].as_i64()
        ),
        (Some("8.80"), Some("79.20"), Some(79))
    );
    let (code, refused) =
        till(&work, &["card-pay", "--qr", &card_qr, "--amount", "88.00", "--order-ref", "T-6"]);
    assert_eq!((code, refused["error"]["code"].as_str()), (1, Some("qr_replayed")), "{refused}");
    let payment = paid["card_payment_id"].as_str().expect("id");
    let (code, reversed) = till(&work, &["reverse-card", "--payment", payment, "--reason", "refund"]);
    assert_eq!((code, reversed["points_taken_back"].as_i64()), (0, Some(79)), "{reversed}");
    // The CLI works against the same database while the server runs.
    let verify = wenhui(&dir, &db.url, &["ledger", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    unsafe_kill(&mut server, "TERM");
    server.wait().expect("wait");
    let verify = wenhui(&dir, &db.url, &["ledger", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}
