//! `wenhui-till` end to end against the mock service: keygen, register, verify, redeem,
//! reverse, get, journal, and the exit codes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{
    Mock, STAFF_KEY, dead_url, qr_key, redemption_json, redemption_view_json, token, verification_key,
};
use serde_json::{Value, json};
use uuid::Uuid;
use wenhui_merchant_sdk::client::now_s;
use wenhui_merchant_sdk::token::KeyRing;

/// Runs `wenhui-till` in `dir` (off the runtime's threads, so the mock keeps serving).
async fn till(dir: &Path, args: &[&str]) -> (i32, Value) {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wenhui-till"))
            .args(&args)
            .current_dir(&dir)
            .env("WENHUI_STAFF_KEY", STAFF_KEY)
            .output()
            .expect("run wenhui-till")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout:?}"));
    (output.status.code().unwrap_or(-1), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_till_from_keygen_to_journal() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    keygen_and_register(d, &mock).await;
    let qr = verify(d, &mock).await;
    redeem_reverse_get(d, &mock, &qr).await;

    let (code, journal) = till(d, &["journal"]).await;
    assert_eq!(code, 0);
    let journal_mode = std::fs::metadata(d.join("till-journal.jsonl")).expect("journal").permissions().mode();
    assert_eq!(journal_mode & 0o777, 0o600, "the journal holds scanned tokens: the till's user only");
    let ops: Vec<_> =
        journal.as_array().expect("array").iter().map(|l| l["op"].as_str().unwrap_or("")).collect();
    assert_eq!(ops, [&["redeem"; 8][..], &["reverse", "reverse", "get"]].concat());
    let (code, pending) = till(d, &["journal", "--unanswered"]).await;
    assert_eq!((code, pending), (0, json!([])));
}

async fn keygen_and_register(d: &Path, mock: &Mock) {
    let (code, keygen) = till(d, &["keygen"]).await;
    assert_eq!(code, 0, "{keygen}");
    assert_eq!(keygen["public_key"].as_str().map(str::len), Some(43));
    assert_eq!(std::fs::metadata(d.join("till.key")).expect("key").permissions().mode() & 0o777, 0o600);
    let (code, again) = till(d, &["keygen"]).await;
    assert_eq!((code, again["error"]["code"].as_str()), (2, Some("config_error")));

    let merchant = Uuid::new_v4().to_string();
    let register = ["register", "--server", &mock.url, "--merchant", &merchant, "--label", "till 1"];
    let (code, registered) = till(d, &register).await;
    assert_eq!(code, 0, "{registered}");
    let terminal_id = mock.state().terminal.as_ref().map(|(id, _)| id.to_string());
    let derived_key = keygen["public_key"].as_str().map(|k| format!("terminal-{k}"));
    assert_eq!(mock.state().registration_key, derived_key);
    assert_eq!(registered["terminal_id"].as_str(), terminal_id.as_deref());
    let config: Value =
        serde_json::from_slice(&std::fs::read(d.join("till.json")).expect("config")).expect("json");
    assert_eq!(config["server"].as_str(), Some(mock.url.as_str()));
    assert_eq!(
        (config["key_file"].as_str(), config["journal"].as_str()),
        (Some("till.key"), Some("till-journal.jsonl"))
    );
    let (code, twice) = till(d, &register).await;
    assert_eq!((code, twice["error"]["code"].as_str()), (2, Some("config_error")));
}

async fn verify(d: &Path, mock: &Mock) -> String {
    let qr_signer = qr_key(7);
    mock.state().ring = KeyRing { keys: vec![verification_key(&qr_signer)] };
    let qr = token(&qr_signer, now_s());
    let (code, verified) = till(d, &["verify", "--qr", &qr]).await;
    assert_eq!(code, 0, "{verified}");
    let subject = Uuid::from_u128(42);
    assert_eq!(
        verified,
        json!({"valid": true, "kind": "voucher", "subject": subject, "expires_at_s": verified["expires_at_s"]})
    );
    assert!(d.join("till-keys.json").exists());
    let (code, stale) = till(d, &["verify", "--qr", &token(&qr_signer, now_s() - 600)]).await;
    assert_eq!(
        (code, stale["valid"].as_bool(), stale["error"]["code"].as_str()),
        (1, Some(false), Some("qr_expired"))
    );
    qr
}

async fn redeem_reverse_get(d: &Path, mock: &Mock, qr: &str) {
    mock.answer(201, redemption_json());
    let (code, redeemed) = till(d, &["redeem", "--qr", qr, "--amount", "100.00", "--order-ref", "A-1"]).await;
    assert_eq!((code, &redeemed), (0, &redemption_json()));

    mock.answer(409, json!({"error": {"code": "qr_replayed", "message": "already used"}}));
    let (code, replayed) = till(d, &["redeem", "--qr", qr, "--amount", "100.00", "--order-ref", "A-2"]).await;
    assert_eq!(code, 1);
    assert_eq!(replayed, json!({"error": {"code": "qr_replayed", "message": "already used", "status": 409}}));

    mock.answer(503, json!({"error": {"code": "database_busy", "message": "retry shortly"}}));
    let args = ["--max-attempts", "1", "redeem", "--qr", qr, "--amount", "50.00", "--order-ref", "A-3"];
    let (code, busy) = till(d, &args).await;
    assert_eq!(
        (code, busy["error"]["code"].as_str(), busy["error"]["status"].as_u64()),
        (2, Some("database_busy"), Some(503))
    );
    let key = busy["error"]["idempotency_key"].as_str().expect("the key to retry with").to_owned();
    mock.answer(201, redemption_json());
    let args = ["redeem", "--qr", qr, "--amount", "50.00", "--order-ref", "A-3", "--idempotency-key", &key];
    assert_eq!(till(d, &args).await, (0, redemption_json()));
    let seen = mock.seen();
    let last_two: Vec<_> = seen[seen.len() - 2..].iter().map(|s| s.idempotency_key.as_deref()).collect();
    assert_eq!(last_two, [Some(key.as_str()), Some(key.as_str())]);

    let reversal = json!({"reversal_id": Uuid::from_u128(101), "redemption_id": Uuid::from_u128(100),
        "voucher_id": Uuid::from_u128(42), "voucher_status": "active", "amount": "10.00"});
    mock.answer(201, reversal.clone());
    let redemption_id = Uuid::from_u128(100).to_string();
    let (code, reversed) =
        till(d, &["reverse", "--redemption", &redemption_id, "--reason", "cancelled"]).await;
    assert_eq!((code, reversed), (0, reversal));
    mock.answer(200, redemption_view_json());
    let (code, got) = till(d, &["get", "--redemption", &redemption_id]).await;
    assert_eq!((code, got), (0, redemption_view_json()), "printed as answered");
    assert!(mock.seen().iter().all(|s| s.signed_ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (code, usage) = till(d, &["redeem", "--qr"]).await;
    assert_eq!((code, usage["error"]["code"].as_str()), (2, Some("usage_error")));
    let (code, missing) = till(d, &["get", "--redemption", &Uuid::new_v4().to_string()]).await;
    assert_eq!((code, missing["error"]["code"].as_str()), (2, Some("config_error")));

    let (code, _) = till(d, &["keygen", "--key-file", "k.key"]).await;
    assert_eq!(code, 0);
    let config = json!({"server": dead_url().await, "terminal_id": Uuid::new_v4(), "key_file": "k.key",
        "journal": "j.jsonl", "keys_cache": "keys.json"});
    std::fs::write(d.join("other.json"), config.to_string()).expect("config");
    let args = [
        "--config",
        "other.json",
        "--max-attempts",
        "1",
        "redeem",
        "--qr",
        "WH1.a.b",
        "--amount",
        "1.00",
        "--order-ref",
        "X",
    ];
    let (code, failed) = till(d, &args).await;
    assert_eq!((code, failed["error"]["code"].as_str()), (2, Some("transport_error")), "{failed}");
    let key = failed["error"]["idempotency_key"].as_str().expect("the key to retry with").to_owned();
    let (code, pending) = till(d, &["--config", "other.json", "journal", "--unanswered"]).await;
    assert_eq!(code, 0);
    assert_eq!(pending[0]["idempotency_key"].as_str(), Some(key.as_str()));
    assert_eq!(pending[0]["request"]["order_ref"].as_str(), Some("X"));
}
