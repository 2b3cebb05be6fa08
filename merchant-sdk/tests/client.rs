//! The client against the mock service: signatures, retries, refusals, timeouts, keys.

mod common;

use std::time::{Duration, Instant};

use common::{
    ISSUED_AT, Mock, dead_url, qr_key, redemption_json, redemption_view_json, token, verification_key,
};
use ring::signature::KeyPair;
use serde_json::{Value, json};
use uuid::Uuid;
use wenhui_merchant_sdk::journal::unanswered;
use wenhui_merchant_sdk::token::{KeyRing, TokenError};
use wenhui_merchant_sdk::{ClientError, ClientOptions, Journal, RedeemRequest, TillClient, TillKey};

struct Till {
    client: TillClient,
    journal_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn till(mock: &Mock, options: ClientOptions) -> Till {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TillKey::generate().expect("key");
    let terminal_id = Uuid::new_v4();
    mock.trust(terminal_id, key.key_pair().public_key().as_ref());
    let journal_path = dir.path().join("journal.jsonl");
    let journal = Journal::open(&journal_path).expect("journal");
    let client = TillClient::new(&mock.url, terminal_id, key, journal, options).expect("client");
    let client = client.with_key_cache(dir.path().join("keys.json"));
    Till { client, journal_path, _dir: dir }
}

fn redeem_request(key: Option<&str>) -> RedeemRequest {
    RedeemRequest {
        qr: "WH1.payload.signature\r\n".into(),
        order_amount: "100.00".into(),
        order_ref: "A-1".into(),
        idempotency_key: key.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_503_is_retried_with_the_same_key_and_a_fresh_nonce() {
    let mock = Mock::start().await;
    let till = till(&mock, ClientOptions::default());
    mock.answer(503, json!({"error": {"code": "database_busy", "message": "retry shortly"}}));
    mock.answer(201, redemption_json());

    let redemption = till.client.redeem(redeem_request(None)).await.expect("redeemed");
    assert_eq!(redemption.redemption_id, Uuid::from_u128(100));
    assert_eq!((redemption.discount.as_str(), redemption.payable.as_str()), ("10.00", "90.00"));
    assert_eq!(redemption.funders.len(), 2);

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.signed_ok && s.method == "POST" && s.path == "/v1/redemptions"));
    assert_eq!(seen[0].idempotency_key, seen[1].idempotency_key);
    assert_ne!(seen[0].nonce, seen[1].nonce);
    assert_eq!(seen[0].nonce.as_deref().map(str::len), Some(22));
    assert_eq!(seen[0].body, seen[1].body);
    let body: Value = serde_json::from_slice(&seen[0].body).expect("json body");
    assert_eq!(body, json!({"qr": "WH1.payload.signature", "order_amount": "100.00", "order_ref": "A-1"}));

    let lines = Journal::read(&till.journal_path).expect("journal");
    let phases: Vec<_> = lines.iter().map(|l| (l.phase.as_str(), l.attempt, l.status)).collect();
    assert_eq!(phases, [("intent", 0, None), ("attempt", 1, Some(503)), ("attempt", 2, Some(201))]);
    assert!(lines.iter().all(|l| l.idempotency_key == seen[0].idempotency_key && l.request == body));
    assert_eq!(lines[2].response.as_ref(), Some(&redemption_json()));
    assert!(unanswered(&lines).is_empty());
    assert_eq!(till.client.journal().last_failure(), None);
}

#[tokio::test]
async fn a_500_on_a_write_is_retried_with_the_same_key() {
    // The service stores no answer for a server error, and the write may have committed before
    // it: the retry with the same key replays the first answer or does the write.
    let mock = Mock::start().await;
    let till = till(&mock, ClientOptions::default());
    mock.answer(500, json!({"error": {"code": "internal", "message": "internal error"}}));
    mock.answer(201, redemption_json());
    let redemption = till.client.redeem(redeem_request(None)).await.expect("redeemed on the retry");
    assert_eq!(redemption.redemption_id, Uuid::from_u128(100));
    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].idempotency_key, seen[1].idempotency_key);
    let lines = Journal::read(&till.journal_path).expect("journal");
    assert!(!lines[1].is_final_answer() && lines[2].is_final_answer(), "the 500 left the outcome open");

    // A read is not retried after a 500: it changes nothing, and the answer is the answer.
    mock.answer(500, json!({"error": {"code": "internal", "message": "internal error"}}));
    let read = till.client.get(Uuid::new_v4()).await.expect_err("a 500");
    assert_eq!((read.status(), mock.seen().len()), (Some(500), 3));
}

#[tokio::test]
async fn forged_key_ids_refetch_the_keys_at_most_once_per_interval() {
    let mock = Mock::start().await;
    let known = qr_key(7);
    mock.state().ring = KeyRing { keys: vec![verification_key(&known)] };
    let till = till(&mock, ClientOptions::default());
    let now = ISSUED_AT + 10;
    till.client.verify_offline(&token(&known, ISSUED_AT), now).await.expect("valid");
    for seed in 20..30 {
        let forged = till.client.verify_offline(&token(&qr_key(seed), ISSUED_AT), now).await;
        assert!(matches!(forged, Err(ClientError::Token(TokenError::UnknownKey(_)))), "{forged:?}");
    }
    assert_eq!(mock.state().key_fetches, 1, "the first fetch was just now: no refetch in the interval");
}

#[tokio::test]
async fn https_is_spoken() {
    // The mock speaks plain HTTP: over https:// the client must attempt a TLS handshake (and
    // fail it), not refuse the scheme as a client built without TLS does.
    let mock = Mock::start().await;
    let https = mock.url.replacen("http://", "https://", 1);
    let once = ClientOptions { max_attempts: 1, ..ClientOptions::default() };
    let client =
        TillClient::new(&https, Uuid::new_v4(), TillKey::generate().expect("key"), Journal::disabled(), once)
            .expect("an https server is accepted");
    let error = client.fetch_keys().await.expect_err("not TLS on the other side");
    assert_eq!(error.code(), "transport_error");
    assert!(!format!("{error:?}").contains("scheme is not http"), "{error:?}");
    assert_eq!(mock.seen().len(), 0, "nothing reached the handler");
}

#[tokio::test]
async fn a_refusal_is_final_and_its_code_surfaces() {
    let mock = Mock::start().await;
    let till = till(&mock, ClientOptions::default());
    mock.answer(409, json!({"error": {"code": "qr_replayed", "message": "this QR code was already used"}}));
    let refused = till.client.redeem(redeem_request(Some("till-7-order-A-1"))).await.expect_err("refused");
    assert_eq!(
        refused,
        ClientError::Refused {
            status: 409,
            code: "qr_replayed".into(),
            message: "this QR code was already used".into()
        }
    );
    assert_eq!(refused.code(), "qr_replayed");
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].idempotency_key.as_deref(), Some("till-7-order-A-1"));
    let lines = Journal::read(&till.journal_path).expect("journal");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1].status, Some(409));
    assert!(unanswered(&lines).is_empty(), "a refusal is a final answer");

    // A 500 is not a refusal: a write's outcome behind it is open. Retried with the same key
    // (the mock answers 500 to every attempt), then reported, and left unanswered in the journal.
    mock.answer(500, json!({"error": {"code": "internal", "message": "logged"}}));
    let internal = till.client.redeem(redeem_request(None)).await.expect_err("500");
    assert_eq!((internal.code(), internal.status()), ("unscripted".to_owned(), Some(500)), "the last");
    assert_eq!(mock.seen().len(), 1 + 4, "four attempts in all");
    let lines = Journal::read(&till.journal_path).expect("journal");
    assert_eq!(unanswered(&lines).len(), 1, "the 500's outcome is unknown");
}

#[tokio::test]
async fn a_timeout_is_retried_then_reported_and_left_unanswered() {
    let mock = Mock::start().await;
    let options =
        ClientOptions { timeout: Duration::from_millis(150), max_attempts: 2, ..ClientOptions::default() };
    let till = till(&mock, options);
    mock.answer_after(201, redemption_json(), Duration::from_secs(3));
    mock.answer_after(201, redemption_json(), Duration::from_secs(3));
    let started = Instant::now();
    let error = till.client.redeem(redeem_request(None)).await.expect_err("timed out");
    assert!(matches!(&error, ClientError::Transport(m) if m.contains("timed out")), "{error:?}");
    assert_eq!(error.code(), "transport_error");
    assert!(started.elapsed() < Duration::from_secs(2));

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].idempotency_key, seen[1].idempotency_key);
    assert_ne!(seen[0].nonce, seen[1].nonce);
    let lines = Journal::read(&till.journal_path).expect("journal");
    assert_eq!(lines.len(), 3);
    assert!(lines[1..].iter().all(|l| l.status.is_none() && l.error.is_some()));
    let pending = unanswered(&lines);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].idempotency_key, seen[0].idempotency_key);
}

#[tokio::test]
async fn no_server_is_a_transport_error() {
    let mock = Mock::start().await;
    let options =
        ClientOptions { timeout: Duration::from_millis(500), max_attempts: 2, ..ClientOptions::default() };
    let till = till(&mock, options);
    let client = TillClient::new(
        &dead_url().await,
        Uuid::new_v4(),
        TillKey::generate().expect("key"),
        Journal::disabled(),
        options,
    )
    .expect("client");
    let error = client.get(Uuid::new_v4()).await.expect_err("no server");
    assert!(matches!(&error, ClientError::Transport(m) if m.contains("could not connect")), "{error:?}");
    drop(till);
}

#[tokio::test]
async fn reverse_and_get_are_signed() {
    let mock = Mock::start().await;
    let till = till(&mock, ClientOptions::default());
    let redemption_id = Uuid::from_u128(100);
    let reversal = json!({
        "reversal_id": Uuid::from_u128(101), "redemption_id": redemption_id, "voucher_id": Uuid::from_u128(42),
        "voucher_status": "active", "amount": "10.00",
    });
    mock.answer(201, reversal);
    mock.answer(200, redemption_view_json());
    let reversed = till.client.reverse(redemption_id, "order cancelled", None).await.expect("reversed");
    assert_eq!((reversed.voucher_status.as_str(), reversed.amount.as_str()), ("active", "10.00"));
    let got = till.client.get(redemption_id).await.expect("got");
    assert!(got.reversed && got.reversal_id == Some(Uuid::from_u128(101)), "{got:?}");

    let seen = mock.seen();
    assert!(seen.iter().all(|s| s.signed_ok));
    assert_eq!(seen[0].path, format!("/v1/redemptions/{redemption_id}/reversal"));
    assert_eq!(
        serde_json::from_slice::<Value>(&seen[0].body).expect("json"),
        json!({"reason": "order cancelled"})
    );
    assert!(seen[0].idempotency_key.is_some());
    assert_eq!((seen[1].method.as_str(), seen[1].body.len()), ("GET", 0));
    assert_eq!(seen[1].idempotency_key, None);

    let lines = Journal::read(&till.journal_path).expect("journal");
    let ops: Vec<_> = lines.iter().map(|l| (l.op.as_str(), l.phase.as_str())).collect();
    assert_eq!(ops, [("reverse", "intent"), ("reverse", "attempt"), ("get", "attempt")]);
    assert_eq!(lines[0].path, format!("/v1/redemptions/{redemption_id}/reversal"));
    assert_eq!(lines[2].request, json!({}));
}

#[tokio::test]
async fn a_bad_signature_is_refused_by_the_mock() {
    let mock = Mock::start().await;
    let till = till(&mock, ClientOptions::default());
    // The service trusts another key for this terminal.
    mock.trust(till.client.terminal_id(), TillKey::generate().expect("key").key_pair().public_key().as_ref());
    let refused = till.client.get(Uuid::new_v4()).await.expect_err("refused");
    assert_eq!((refused.code(), refused.status()), ("bad_signature".to_owned(), Some(401)));
}

#[tokio::test]
async fn offline_verification_fetches_refreshes_once_and_caches() {
    let mock = Mock::start().await;
    let (old, new) = (qr_key(7), qr_key(8));
    mock.state().ring = KeyRing { keys: vec![verification_key(&old)] };
    let eager = ClientOptions { key_refresh_interval: Duration::ZERO, ..ClientOptions::default() };
    let till = till(&mock, eager);
    let now = ISSUED_AT + 10;

    let payload = till.client.verify_offline(&token(&old, ISSUED_AT), now).await.expect("valid");
    assert_eq!(payload.subject, Uuid::from_u128(42));
    assert_eq!(mock.state().key_fetches, 1);
    till.client.verify_offline(&token(&old, ISSUED_AT), now).await.expect("valid again");
    assert_eq!(mock.state().key_fetches, 1, "the cached ring is used");

    let unknown = till.client.verify_offline(&token(&new, ISSUED_AT), now).await.expect_err("unknown key");
    assert!(matches!(unknown, ClientError::Token(TokenError::UnknownKey(_))));
    assert_eq!(mock.state().key_fetches, 2, "one refresh, then refuse");

    mock.state().ring = KeyRing { keys: vec![verification_key(&new), verification_key(&old)] };
    till.client.verify_offline(&token(&new, ISSUED_AT), now).await.expect("rotated key");
    assert_eq!(mock.state().key_fetches, 3);

    let expired =
        till.client.verify_offline(&token(&old, ISSUED_AT), ISSUED_AT + 90).await.expect_err("expired");
    assert_eq!(expired.code(), "qr_expired");
    let garbage = till.client.verify_offline("WH1.nope", now).await.expect_err("garbage");
    assert_eq!(garbage.code(), "qr_invalid");

    // With the cache on disk, a till with no network verifies.
    let cache = till._dir.path().join("keys.json");
    let once = ClientOptions { max_attempts: 1, ..ClientOptions::default() };
    let offline = TillClient::new(
        &dead_url().await,
        Uuid::new_v4(),
        TillKey::generate().expect("key"),
        Journal::disabled(),
        once,
    )
    .expect("client")
    .with_key_cache(&cache);
    offline.verify_offline(&token(&new, ISSUED_AT), now).await.expect("offline");
    let fetched = offline.fetch_keys().await.expect_err("no network");
    assert_eq!(fetched.code(), "transport_error");
}
