//! A small mock of the Wenhui API for the SDK's tests: it checks terminal signatures with
//! `SignedParts::verify`, refuses replayed nonces, records every request, and answers from a
//! script.

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use uuid::Uuid;
use wenhui_merchant_sdk::client::now_s;
use wenhui_merchant_sdk::signing::{
    HEADER_NONCE, HEADER_SIGNATURE, HEADER_TERMINAL, HEADER_TIMESTAMP, SignedParts,
};
use wenhui_merchant_sdk::token::{KeyRing, TokenKind, TokenPayload, VerificationKey, key_id_for};

pub const STAFF_KEY: &str = "staff-secret";
pub const ISSUED_AT: i64 = 1_767_225_600;

/// A request as the mock saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub nonce: Option<String>,
    pub body: Vec<u8>,
    /// For terminal requests: whether the signature verified.
    pub signed_ok: bool,
}

/// One scripted answer, given after `delay`.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub status: u16,
    pub body: Value,
    pub delay: Duration,
}

#[derive(Default)]
pub struct MockState {
    pub terminal: Option<(Uuid, Vec<u8>)>,
    pub nonces: HashSet<String>,
    pub seen: Vec<Seen>,
    pub script: VecDeque<Scripted>,
    pub ring: KeyRing,
    pub key_fetches: usize,
    /// The Idempotency-Key of the last registration.
    pub registration_key: Option<String>,
}

pub struct Mock {
    pub url: String,
    pub state: Arc<Mutex<MockState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Mock {
    pub async fn start() -> Mock {
        let state = Arc::new(Mutex::new(MockState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Mock { url, state, server }
    }

    pub fn state(&self) -> MutexGuard<'_, MockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn trust(&self, terminal_id: Uuid, public_key: &[u8]) {
        self.state().terminal = Some((terminal_id, public_key.to_vec()));
    }

    pub fn answer(&self, status: u16, body: Value) {
        self.answer_after(status, body, Duration::ZERO);
    }

    pub fn answer_after(&self, status: u16, body: Value, delay: Duration) {
        self.state().script.push_back(Scripted { status, body, delay });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }
}

/// A URL where nothing listens.
pub async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    url
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn handle(
    State(state): State<Arc<Mutex<MockState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    if method == Method::GET && path == "/v1/keys" {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.key_fetches += 1;
        return axum::Json(json!(state.ring)).into_response();
    }
    if path.starts_with("/v1/merchants/") {
        return register(&state, &headers, &path, &body);
    }
    let (signed_ok, refusal) = check_signature(&state, &method, &path, &headers, &body);
    let scripted = {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.seen.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            idempotency_key: header(&headers, "idempotency-key"),
            nonce: header(&headers, HEADER_NONCE),
            body: body.to_vec(),
            signed_ok,
        });
        if let Some(refusal) = refusal {
            return refusal;
        }
        state.script.pop_front()
    };
    let Some(scripted) = scripted else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "unscripted", "the mock has no answer scripted");
    };
    tokio::time::sleep(scripted.delay).await;
    let status = StatusCode::from_u16(scripted.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(scripted.body)).into_response()
}

/// Checks the four signature headers as the service does; a refusal to answer if they fail.
fn check_signature(
    state: &Mutex<MockState>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> (bool, Option<Response>) {
    let unauthorized = |code: &str| Some(error(StatusCode::UNAUTHORIZED, code, code));
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    let Some((terminal_id, public_key)) = state.terminal.clone() else {
        return (false, unauthorized("bad_signature"));
    };
    let parts = (
        header(headers, HEADER_TERMINAL),
        header(headers, HEADER_TIMESTAMP).and_then(|t| t.parse::<i64>().ok()),
        header(headers, HEADER_NONCE),
        header(headers, HEADER_SIGNATURE),
    );
    let (Some(terminal), Some(timestamp_s), Some(nonce), Some(signature)) = parts else {
        return (false, unauthorized("bad_signature"));
    };
    if terminal != terminal_id.to_string() {
        return (false, unauthorized("bad_signature"));
    }
    let signed =
        SignedParts { method: method.as_str(), path_and_query: path, timestamp_s, nonce: &nonce, body };
    if signed.verify(&public_key, &signature, now_s()).is_err() {
        return (false, unauthorized("bad_signature"));
    }
    if !state.nonces.insert(nonce) {
        return (true, unauthorized("replayed_request"));
    }
    (true, None)
}

fn register(state: &Mutex<MockState>, headers: &HeaderMap, path: &str, body: &[u8]) -> Response {
    if header(headers, "authorization").as_deref() != Some(&format!("Bearer {STAFF_KEY}")) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "bad staff key");
    }
    let Some(idempotency_key) = header(headers, "idempotency-key") else {
        return error(StatusCode::BAD_REQUEST, "missing_idempotency_key", "no key");
    };
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let public_key = request["public_key"].as_str().and_then(|k| URL_SAFE_NO_PAD.decode(k).ok());
    let Some(public_key) = public_key.filter(|k| k.len() == 32) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_public_key", "bad key");
    };
    let merchant = path.trim_start_matches("/v1/merchants/").trim_end_matches("/terminals").to_owned();
    let terminal_id = Uuid::new_v4();
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    state.terminal = Some((terminal_id, public_key));
    state.registration_key = Some(idempotency_key);
    let answer = json!({"terminal_id": terminal_id, "merchant_id": merchant, "label": request["label"]});
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// The service's QR signing key for tests (seed `seed` x 32).
pub fn qr_key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("seed")
}

pub fn verification_key(pair: &Ed25519KeyPair) -> VerificationKey {
    VerificationKey {
        key_id: hex::encode(key_id_for(pair.public_key().as_ref())),
        public_key: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        status: "current".into(),
        valid_from_s: ISSUED_AT - 3600,
        valid_until_s: None,
    }
}

/// A voucher token for subject 42 issued at `issued_at_s`, valid for 90 s.
pub fn token(pair: &Ed25519KeyPair, issued_at_s: i64) -> String {
    let payload = TokenPayload {
        kind: TokenKind::Voucher,
        key_id: key_id_for(pair.public_key().as_ref()),
        subject: Uuid::from_u128(42),
        nonce: [9; 16],
        issued_at_s,
        expires_at_s: issued_at_s + 90,
    };
    payload.encode(pair.sign(&payload.signing_input()).as_ref())
}

/// The redemption of [`redemption_json`] as `GET /v1/redemptions/{id}` answers it, reversed.
pub fn redemption_view_json() -> Value {
    let mut view = redemption_json();
    view["terminal_id"] = json!(Uuid::from_u128(8));
    view["redeemed_at"] = json!("2026-01-01T00:00:00.000000Z");
    view["reversed"] = json!(true);
    view["reversed_at"] = json!("2026-01-01T00:05:00.000000Z");
    view["reversal_id"] = json!(Uuid::from_u128(101));
    view["settled"] = json!(false);
    view
}

pub fn redemption_json() -> Value {
    json!({
        "redemption_id": Uuid::from_u128(100),
        "voucher_id": Uuid::from_u128(42),
        "merchant_id": Uuid::from_u128(7),
        "order_ref": "A-1",
        "order_amount": "100.00",
        "discount": "10.00",
        "payable": "90.00",
        "funders": [{"funder": "370000", "amount": "6.00"}, {"funder": "370100", "amount": "4.00"}],
    })
}
