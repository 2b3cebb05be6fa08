//! An async client for the till's side of the Wenhui API.
//!
//! Every request to a terminal endpoint is signed per [`crate::signing`] with a fresh timestamp
//! and a fresh 16-byte nonce on every attempt, so a retry never replays a nonce. Writes carry an
//! `Idempotency-Key` that stays the same across attempts (and across a crash of the till: it is
//! journaled before the first attempt), so a retry can never redeem twice.
//!
//! Retries happen only where they are safe: after a transport error (the request may or may not
//! have arrived) and after 502, 503 or 504, and, for writes, after a 500 (the service stores no
//! answer for a server error, and a write's outcome behind one may be either: its key makes the
//! retry safe), with exponential backoff (200 ms × 2^n, capped at 2 s, plus 0-100 % random
//! jitter), up to [`ClientOptions::max_attempts`]. Any other answer is final.
//!
//! HTTPS is built in (rustls, with the Mozilla root certificates); use it for every server that
//! is not on the till's own machine. Redirects are never followed: a signed request goes to the
//! server it was signed for or nowhere.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, Url};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::journal::{Journal, JournalLine, now_rfc3339};
use crate::signing::{HEADER_NONCE, HEADER_SIGNATURE, HEADER_TERMINAL, HEADER_TIMESTAMP, SignedParts};
use crate::token::{KeyRing, QrToken, TokenError, TokenPayload};
// The answers are defined once, in `wire`, with the service; re-exported here for the callers
// that name them by their old paths.
pub use crate::wire::{
    CardPayment, CardPaymentView, CardReversal, FunderShare, Quote, QuoteTerms, Redemption, RedemptionView,
    Reversal,
};
use crate::wire::{OrderBody, ReasonBody};

pub const HEADER_IDEMPOTENCY_KEY: &str = "idempotency-key";
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The service answered and said no (any status other than 2xx, after retries).
    #[error("refused with {status} {code}: {message}")]
    Refused { status: u16, code: String, message: String },
    /// No answer: could not connect, timed out, or the connection broke.
    #[error("transport error: {0}")]
    Transport(String),
    /// The QR token did not verify offline.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A local file (key, journal, key cache) could not be read or written.
    #[error("i/o error: {0}")]
    Io(String),
    /// The service answered 2xx with a body that is not what the API promises.
    #[error("unexpected response: {0}")]
    BadResponse(String),
    /// A bad argument or setting: base URL, idempotency key.
    #[error("configuration error: {0}")]
    Config(String),
}

impl ClientError {
    /// The refusal's code from the service, or `qr_invalid`/`qr_expired` (offline verification),
    /// `transport_error`, `io_error`, `bad_response`, `config_error`.
    pub fn code(&self) -> String {
        match self {
            ClientError::Refused { code, .. } => code.clone(),
            ClientError::Transport(_) => "transport_error".into(),
            ClientError::Token(error) => error.code().into(),
            ClientError::Io(_) => "io_error".into(),
            ClientError::BadResponse(_) => "bad_response".into(),
            ClientError::Config(_) => "config_error".into(),
        }
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn io_error(what: &str, path: &Path, error: impl std::fmt::Display) -> ClientError {
    ClientError::Io(format!("{what} {}: {error}", path.display()))
}

/// The till's Ed25519 key pair. The private key never leaves the till; the service holds the
/// public half (registered with [`register_terminal`]).
pub struct TillKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for TillKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TillKey").field("public_key", &self.public_key_base64url()).finish_non_exhaustive()
    }
}

impl TillKey {
    /// A new random key (PKCS#8 v2, from the operating system's random source).
    pub fn generate() -> Result<TillKey, ClientError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| ClientError::Io("could not generate an Ed25519 key".into()))?;
        TillKey::from_pkcs8(pkcs8.as_ref())
    }

    /// A key from its PKCS#8 (DER) encoding, v1 or v2.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<TillKey, ClientError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|e| ClientError::Config(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        Ok(TillKey { pair, pkcs8: pkcs8.to_vec() })
    }

    /// Writes the key (PKCS#8 DER) to a new file with mode 0600; refuses to overwrite a file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ClientError> {
        use std::io::Write;
        let path = path.as_ref();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io_error("creating key", path, e))?;
        file.write_all(&self.pkcs8)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("writing key", path, e))
    }

    pub fn load(path: impl AsRef<Path>) -> Result<TillKey, ClientError> {
        let path = path.as_ref();
        let pkcs8 = std::fs::read(path).map_err(|e| io_error("reading key", path, e))?;
        TillKey::from_pkcs8(&pkcs8).map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))
    }

    /// The raw 32-byte public key, base64url without padding (what registration sends).
    pub fn public_key_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())
    }

    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// For one attempt, from connecting to the last byte of the answer.
    pub timeout: Duration,
    /// Attempts in all, the first included (0 counts as 1).
    pub max_attempts: u32,
    /// At most one refetch of the verification keys in this time, however many tokens name a
    /// key the till does not know: a stream of forged tokens with made-up key ids must not
    /// become a stream of `GET /v1/keys` (each holding up the till's other verifications).
    pub key_refresh_interval: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(5),
            max_attempts: 4,
            key_refresh_interval: Duration::from_secs(30),
        }
    }
}

/// Whether an answer leaves the outcome open, so that the call may be retried (with the same
/// Idempotency-Key, for a write): 502, 503 and 504 always; 500 for a write, whose effect may
/// have been committed before the error (the service stores no answer for a server error, so
/// the retry either replays the first answer or does the write).
pub fn outcome_unknown(status: u16, write: bool) -> bool {
    matches!(status, 502..=504) || (write && status == 500)
}

/// A fresh Idempotency-Key (a UUIDv4), for a caller that wants to know its key before the
/// first attempt: to retry an outcome left unknown (a transport error, a 5xx after the last
/// attempt) with the same key later. [`Journal::unanswered`](crate::journal::unanswered) gives
/// the keys of a journaled till's unknown outcomes too.
pub fn new_idempotency_key() -> String {
    Uuid::new_v4().to_string()
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemRequest {
    /// The scanned QR token (surrounding whitespace is dropped).
    pub qr: String,
    /// The order's total in yuan, e.g. `"100.00"`.
    pub order_amount: String,
    /// The till's own reference for the order.
    pub order_ref: String,
    /// None: the client makes one (a UUIDv4) and journals it before the first attempt.
    pub idempotency_key: Option<String>,
}

/// A scanned token in `Debug`: its length only. The journal keeps the token (the service's
/// request hash covers it); a log line of the till's needs no copy that could still be used.
struct ScannedToken<'a>(&'a str);

impl std::fmt::Debug for ScannedToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<token, {} characters>", self.0.len())
    }
}

/// The fields of a scanned order request (a redemption or a card payment), token withheld.
fn debug_scanned_order(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    (qr, order_amount, order_ref, idempotency_key): (&str, &str, &str, &Option<String>),
) -> std::fmt::Result {
    f.debug_struct(name)
        .field("qr", &ScannedToken(qr))
        .field("order_amount", &order_amount)
        .field("order_ref", &order_ref)
        .field("idempotency_key", idempotency_key)
        .finish()
}

impl std::fmt::Debug for RedeemRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields =
            (self.qr.as_str(), self.order_amount.as_str(), self.order_ref.as_str(), &self.idempotency_key);
        debug_scanned_order(f, "RedeemRequest", fields)
    }
}

impl std::fmt::Debug for CardPaymentRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields =
            (self.qr.as_str(), self.order_amount.as_str(), self.order_ref.as_str(), &self.idempotency_key);
        debug_scanned_order(f, "CardPaymentRequest", fields)
    }
}

/// A payment with the benefit card: `POST /v1/card-payments`. Send the order's full amount; if
/// a voucher is used on the same order too, pay with the card first, then redeem the voucher
/// with the same `order_ref` and the same `order_amount`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardPaymentRequest {
    /// The scanned card QR token (kind 2).
    pub qr: String,
    /// The order's total in yuan, e.g. `"100.00"`.
    pub order_amount: String,
    pub order_ref: String,
    /// None: the client makes one (a UUIDv4) and journals it before the first attempt.
    pub idempotency_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub terminal_id: Uuid,
    #[serde(default)]
    pub merchant_id: Option<Uuid>,
    #[serde(default)]
    pub label: Option<String>,
}

/// The body of a redemption or a card payment (token and amount trimmed), as JSON.
fn order_body(qr: &str, order_amount: &str, order_ref: &str) -> Result<Value, ClientError> {
    let body = OrderBody {
        qr: qr.trim().to_owned(),
        order_amount: order_amount.trim().to_owned(),
        order_ref: order_ref.to_owned(),
    };
    serde_json::to_value(&body).map_err(|e| ClientError::Config(e.to_string()))
}

/// The body of a reversal, as JSON.
fn reason_body(reason: &str) -> Result<Value, ClientError> {
    serde_json::to_value(ReasonBody { reason: reason.to_owned() })
        .map_err(|e| ClientError::Config(e.to_string()))
}

/// How a request authenticates.
enum Auth<'a> {
    None,
    Terminal { id: Uuid, key: &'a TillKey },
    Bearer(&'a str),
}

/// One logical request, sent in one or more attempts.
struct Call<'a> {
    op: &'static str,
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    idempotency_key: Option<String>,
    auth: Auth<'a>,
    /// Where attempts are journaled (with the terminal id), if anywhere.
    journal: Option<(&'a Journal, Uuid)>,
}

impl Call<'_> {
    fn request_json(&self) -> Value {
        self.body.as_deref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_else(|| json!({}))
    }

    fn journal_line(&self, terminal_id: Uuid, phase: &str, attempt: u32) -> JournalLine {
        JournalLine {
            at: now_rfc3339(),
            terminal_id,
            op: self.op.into(),
            phase: phase.into(),
            path: self.path.clone(),
            idempotency_key: self.idempotency_key.clone(),
            attempt,
            request: self.request_json(),
            status: None,
            response: None,
            error: None,
        }
    }
}

/// A status and body from the service.
struct Answer {
    status: u16,
    body: Value,
}

/// The HTTP machinery shared by [`TillClient`] and [`register_terminal`]: attempts, signing,
/// retries, journaling.
struct Http {
    client: reqwest::Client,
    base: String,
    options: ClientOptions,
    random: SystemRandom,
}

impl Http {
    fn new(base_url: &str, options: ClientOptions) -> Result<Http, ClientError> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        let parsed =
            Url::parse(&base).map_err(|e| ClientError::Config(format!("server URL {base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            return Err(ClientError::Config(format!(
                "server URL {base:?} must be http(s)://host[:port][/prefix]"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        Ok(Http { client, base, options, random: SystemRandom::new() })
    }

    /// Sends `call`, retrying where safe, journaling every attempt; the last answer, whatever
    /// its status, or the last transport error.
    async fn call(&self, call: &Call<'_>) -> Result<Answer, ClientError> {
        let attempts = self.options.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let outcome = self.attempt(call).await;
            self.journal_attempt(call, attempt, &outcome).await;
            let retryable = match &outcome {
                Ok(answer) => outcome_unknown(answer.status, call.idempotency_key.is_some()),
                Err(error) => matches!(error, ClientError::Transport(_)),
            };
            if !retryable || attempt >= attempts {
                return outcome;
            }
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// The pause after failed attempt `attempt` (1-based): 200 ms × 2^(attempt-1), capped at
    /// 2 s, plus 0-100 % jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = BACKOFF_BASE.saturating_mul(1u32 << (attempt - 1).min(16)).min(BACKOFF_CAP);
        let mut bytes = [0u8; 4];
        let fraction = match self.random.fill(&mut bytes) {
            Ok(()) => f64::from(u32::from_be_bytes(bytes)) / f64::from(u32::MAX),
            Err(_) => 0.5,
        };
        base + base.mul_f64(fraction)
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| ClientError::Config(format!("URL for {path}: {e}")))
    }

    /// 16 random bytes, base64url: 22 characters.
    fn nonce(&self) -> Result<String, ClientError> {
        let mut bytes = [0u8; 16];
        self.random
            .fill(&mut bytes)
            .map_err(|_| ClientError::Io("the system random source failed".into()))?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// One attempt: signed afresh (new timestamp, new nonce).
    async fn attempt(&self, call: &Call<'_>) -> Result<Answer, ClientError> {
        let url = self.url(&call.path)?;
        let body = call.body.as_deref().unwrap_or_default();
        let mut request = self.client.request(call.method.clone(), url.clone());
        match call.auth {
            Auth::None => {}
            Auth::Bearer(token) => request = request.bearer_auth(token),
            Auth::Terminal { id, key } => {
                let path_and_query = match url.query() {
                    Some(query) => format!("{}?{query}", url.path()),
                    None => url.path().to_owned(),
                };
                let nonce = self.nonce()?;
                let timestamp_s = now_s();
                let parts = SignedParts {
                    method: call.method.as_str(),
                    path_and_query: &path_and_query,
                    timestamp_s,
                    nonce: &nonce,
                    body,
                };
                request = request
                    .header(HEADER_TERMINAL, id.to_string())
                    .header(HEADER_TIMESTAMP, timestamp_s.to_string())
                    .header(HEADER_NONCE, nonce.as_str())
                    .header(HEADER_SIGNATURE, parts.sign(key.key_pair()));
            }
        }
        if let Some(key) = &call.idempotency_key {
            request = request.header(HEADER_IDEMPOTENCY_KEY, key.as_str());
        }
        if let Some(body) = &call.body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(transport_error)?;
        Ok(Answer { status, body: body_json(&bytes) })
    }

    async fn journal_attempt(&self, call: &Call<'_>, attempt: u32, outcome: &Result<Answer, ClientError>) {
        let Some((journal, terminal_id)) = call.journal else { return };
        let mut line = call.journal_line(terminal_id, "attempt", attempt);
        match outcome {
            Ok(answer) => {
                line.status = Some(answer.status);
                line.response = Some(answer.body.clone());
            }
            Err(error) => line.error = Some(error.to_string()),
        }
        if let Err(error) = journal.append_async(line).await {
            journal.note_failure(&error);
        }
    }
}

fn transport_error(error: reqwest::Error) -> ClientError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    // The source chain carries the useful detail (e.g. "Connection refused").
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail = format!("{detail}: {cause}");
        source = cause.source();
    }
    ClientError::Transport(format!("{kind}: {detail}"))
}

fn body_json(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// A 2xx answer as `T`; anything else as [`ClientError::Refused`].
fn decode<T: DeserializeOwned>(answer: Answer) -> Result<T, ClientError> {
    if (200..300).contains(&answer.status) {
        return serde_json::from_value(answer.body)
            .map_err(|e| ClientError::BadResponse(format!("{} answer: {e}", answer.status)));
    }
    let error = answer.body.get("error");
    let text = |field: &str| error.and_then(|e| e.get(field)).and_then(Value::as_str).map(str::to_owned);
    let fallback = match &answer.body {
        Value::String(text) => text.chars().take(500).collect(),
        other => other.to_string(),
    };
    Err(ClientError::Refused {
        status: answer.status,
        code: text("code").unwrap_or_else(|| format!("http_{}", answer.status)),
        message: text("message").unwrap_or(fallback),
    })
}

/// Unix seconds now.
pub fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn check_idempotency_key(key: &str) -> Result<(), ClientError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ClientError::Config("an idempotency key is 1-128 visible ASCII characters".into()));
    }
    Ok(())
}

/// Registers `key` as a terminal of `merchant` (a staff call: `Authorization: Bearer
/// <staff key>`). Retried like any write. The `Idempotency-Key` is derived from the public key
/// (`terminal-<public key>`), so running the registration again with the same key, staff key
/// and label (say, after a transport error) replays the first answer instead of failing.
pub async fn register_terminal(
    server: &str,
    staff_key: &str,
    merchant: Uuid,
    key: &TillKey,
    label: &str,
    options: ClientOptions,
) -> Result<Registration, ClientError> {
    let http = Http::new(server, options)?;
    let body = json!({"public_key": key.public_key_base64url(), "label": label});
    let call = Call {
        op: "register",
        method: Method::POST,
        path: format!("/v1/merchants/{merchant}/terminals"),
        body: Some(body.to_string().into_bytes()),
        idempotency_key: Some(format!("terminal-{}", key.public_key_base64url())),
        auth: Auth::Bearer(staff_key),
        journal: None,
    };
    decode(http.call(&call).await?)
}

/// The verification keys in memory, and when they were last fetched (see
/// [`ClientOptions::key_refresh_interval`]).
#[derive(Default)]
struct HeldKeys {
    ring: Option<KeyRing>,
    fetched_at: Option<std::time::Instant>,
}

/// A till's client: signed, retried, journaled calls, and offline QR verification.
pub struct TillClient {
    http: Http,
    terminal_id: Uuid,
    key: TillKey,
    journal: Journal,
    keys: Mutex<HeldKeys>,
    key_cache: Option<PathBuf>,
}

impl std::fmt::Debug for TillClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TillClient")
            .field("server", &self.http.base)
            .field("terminal_id", &self.terminal_id)
            .field("journal", &self.journal.path())
            .finish_non_exhaustive()
    }
}

impl TillClient {
    pub fn new(
        base_url: &str,
        terminal_id: Uuid,
        key: TillKey,
        journal: Journal,
        options: ClientOptions,
    ) -> Result<TillClient, ClientError> {
        let http = Http::new(base_url, options)?;
        Ok(TillClient {
            http,
            terminal_id,
            key,
            journal,
            keys: Mutex::new(HeldKeys::default()),
            key_cache: None,
        })
    }

    /// Keeps the verification keys in `path` (JSON, the shape of `GET /v1/keys`), so that
    /// [`Self::verify_offline`] works without the network once they have been fetched.
    pub fn with_key_cache(mut self, path: impl Into<PathBuf>) -> TillClient {
        self.key_cache = Some(path.into());
        self
    }

    pub fn terminal_id(&self) -> Uuid {
        self.terminal_id
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    fn signed_call(&self, op: &'static str, method: Method, path: String, body: Option<Value>) -> Call<'_> {
        Call {
            op,
            method,
            path,
            body: body.map(|b| b.to_string().into_bytes()),
            idempotency_key: None,
            auth: Auth::Terminal { id: self.terminal_id, key: &self.key },
            journal: Some((&self.journal, self.terminal_id)),
        }
    }

    /// A write: journal the intent (with its idempotency key) before the first attempt, then
    /// send. If the intent cannot be journaled, nothing is sent.
    async fn write(
        &self,
        mut call: Call<'_>,
        idempotency_key: Option<String>,
    ) -> Result<Answer, ClientError> {
        let key = idempotency_key.unwrap_or_else(new_idempotency_key);
        check_idempotency_key(&key)?;
        call.idempotency_key = Some(key);
        let intent = call.journal_line(self.terminal_id, "intent", 0);
        self.journal.append_async(intent).await.map_err(|e| ClientError::Io(e.to_string()))?;
        self.http.call(&call).await
    }

    /// Redeems a scanned voucher against an order: `POST /v1/redemptions`.
    pub async fn redeem(&self, request: RedeemRequest) -> Result<Redemption, ClientError> {
        let body = order_body(&request.qr, &request.order_amount, &request.order_ref)?;
        let call = self.signed_call("redeem", Method::POST, "/v1/redemptions".into(), Some(body));
        decode(self.write(call, request.idempotency_key).await?)
    }

    /// What redeeming this voucher on this order would take off now, and the voucher's terms:
    /// `POST /v1/redemptions/quote`, the redemption's checks with nothing written (the voucher
    /// stays unused, the QR token unspent). A read: no Idempotency-Key, retried like a GET, and
    /// not journaled (it moves no money; the redemption that follows is journaled). Send the
    /// same `order_ref` a card payment on the order used, so its member discount applies.
    pub async fn quote(&self, qr: &str, order_amount: &str, order_ref: &str) -> Result<Quote, ClientError> {
        let body = order_body(qr, order_amount, order_ref)?;
        let mut call = self.signed_call("quote", Method::POST, "/v1/redemptions/quote".into(), Some(body));
        call.journal = None;
        decode(self.http.call(&call).await?)
    }

    /// Reverses a redemption (the order was cancelled or refunded):
    /// `POST /v1/redemptions/{id}/reversal`.
    pub async fn reverse(
        &self,
        redemption_id: Uuid,
        reason: &str,
        idempotency_key: Option<String>,
    ) -> Result<Reversal, ClientError> {
        let path = format!("/v1/redemptions/{redemption_id}/reversal");
        let call = self.signed_call("reverse", Method::POST, path, Some(reason_body(reason)?));
        decode(self.write(call, idempotency_key).await?)
    }

    /// Pays with the benefit card: `POST /v1/card-payments` (member discount and points).
    pub async fn card_pay(&self, request: CardPaymentRequest) -> Result<CardPayment, ClientError> {
        let body = order_body(&request.qr, &request.order_amount, &request.order_ref)?;
        let call = self.signed_call("card_pay", Method::POST, "/v1/card-payments".into(), Some(body));
        decode(self.write(call, request.idempotency_key).await?)
    }

    /// Reverses a card payment (a refund): `POST /v1/card-payments/{id}/reversal`. Takes back the
    /// points it earned. Reverse a voucher redemption on the same order first.
    pub async fn reverse_card_payment(
        &self,
        card_payment_id: Uuid,
        reason: &str,
        idempotency_key: Option<String>,
    ) -> Result<CardReversal, ClientError> {
        let path = format!("/v1/card-payments/{card_payment_id}/reversal");
        let call = self.signed_call("reverse_card", Method::POST, path, Some(reason_body(reason)?));
        decode(self.write(call, idempotency_key).await?)
    }

    /// A card payment as the service sees it now: `GET /v1/card-payments/{id}`.
    pub async fn get_card_payment(&self, card_payment_id: Uuid) -> Result<CardPaymentView, ClientError> {
        let path = format!("/v1/card-payments/{card_payment_id}");
        let call = self.signed_call("get_card_payment", Method::GET, path, None);
        decode(self.http.call(&call).await?)
    }

    /// Sets this till's merchant's member discount for card holders (`percent` 0-99, `cap` in
    /// yuan or none): `PUT /v1/merchants/{id}/card-terms`, signed as the merchant's terminal.
    /// Safe to repeat (it sets, it does not add).
    pub async fn set_card_terms(
        &self,
        merchant_id: Uuid,
        percent: u32,
        cap: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut body = json!({"percent": percent});
        if let Some(cap) = cap {
            body["cap"] = json!(cap);
        }
        let path = format!("/v1/merchants/{merchant_id}/card-terms");
        let call = self.signed_call("card_terms", Method::PUT, path, Some(body));
        decode(self.http.call(&call).await?)
    }

    /// The merchant's statement for a season (redemptions, reversals, settlements, payouts with
    /// running totals): `GET /v1/merchants/{id}/statement?season=`.
    pub async fn statement(&self, merchant_id: Uuid, season_id: Uuid) -> Result<Value, ClientError> {
        let path = format!("/v1/merchants/{merchant_id}/statement?season={season_id}");
        let call = self.signed_call("statement", Method::GET, path, None);
        decode(self.http.call(&call).await?)
    }

    /// A redemption as the service sees it now: `GET /v1/redemptions/{id}`.
    pub async fn get(&self, redemption_id: Uuid) -> Result<RedemptionView, ClientError> {
        let call = self.signed_call("get", Method::GET, format!("/v1/redemptions/{redemption_id}"), None);
        decode(self.http.call(&call).await?)
    }

    /// The published verification keys: `GET /v1/keys` (unsigned). Does not touch the cache.
    pub async fn fetch_keys(&self) -> Result<KeyRing, ClientError> {
        let call = Call {
            op: "keys",
            method: Method::GET,
            path: "/v1/keys".into(),
            body: None,
            idempotency_key: None,
            auth: Auth::None,
            journal: None,
        };
        decode(self.http.call(&call).await?)
    }

    /// The service's plain Chinese message for every error code it answers, `{"code": "message"}`:
    /// `GET /assets/messages.json` (unsigned), what the service's own pages show. A till's page
    /// shows these instead of keeping a second table.
    pub async fn fetch_messages(&self) -> Result<std::collections::HashMap<String, String>, ClientError> {
        let call = Call {
            op: "messages",
            method: Method::GET,
            path: "/assets/messages.json".into(),
            body: None,
            idempotency_key: None,
            auth: Auth::None,
            journal: None,
        };
        decode(self.http.call(&call).await?)
    }

    /// Fetches the keys (noting when in `held`) and keeps them in the cache file (if any).
    async fn refresh_keys(&self, held: &mut HeldKeys) -> Result<KeyRing, ClientError> {
        held.fetched_at = Some(std::time::Instant::now());
        let ring = self.fetch_keys().await?;
        if let Some(path) = &self.key_cache {
            save_key_cache(path, &ring).await?;
        }
        Ok(ring)
    }

    /// Verifies a QR token offline at `now_s` with the cached keys, fetching them if there are
    /// none, and refreshing them once if the token names an unknown key (at most once per
    /// [`ClientOptions::key_refresh_interval`]). Only a pre-check: the service decides at
    /// redemption (a token can verify and still be spent or revoked).
    pub async fn verify_offline(&self, qr: &str, now_s: i64) -> Result<TokenPayload, ClientError> {
        let token = QrToken::parse(qr)?;
        let mut held = self.keys.lock().await;
        let mut fetched = false;
        let ring = match held.ring.take() {
            Some(ring) => ring,
            None => match self.load_key_cache().await {
                Some(ring) => ring,
                None => {
                    fetched = true;
                    self.refresh_keys(&mut held).await?
                }
            },
        };
        let interval = self.http.options.key_refresh_interval;
        let fetched_recently = fetched || held.fetched_at.is_some_and(|at| at.elapsed() < interval);
        let ring = match ring.verify(&token, now_s) {
            Err(TokenError::UnknownKey(_)) if !fetched_recently => match self.refresh_keys(&mut held).await {
                Ok(fresh) => fresh,
                Err(error) => {
                    held.ring = Some(ring);
                    return Err(error);
                }
            },
            _ => ring,
        };
        let verified = ring.verify(&token, now_s).cloned().map_err(ClientError::from);
        held.ring = Some(ring);
        verified
    }

    /// The cached ring, if the cache file exists and parses (a damaged cache is refetched).
    async fn load_key_cache(&self) -> Option<KeyRing> {
        let bytes = tokio::fs::read(self.key_cache.as_ref()?).await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Writes the key cache atomically (a temporary file, then a rename).
async fn save_key_cache(path: &Path, ring: &KeyRing) -> Result<(), ClientError> {
    let json = serde_json::to_vec_pretty(ring).map_err(|e| ClientError::Io(e.to_string()))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", Uuid::new_v4().simple()));
    let temporary = PathBuf::from(temporary);
    tokio::fs::write(&temporary, json).await.map_err(|e| io_error("writing key cache", &temporary, e))?;
    tokio::fs::rename(&temporary, path).await.map_err(|e| io_error("replacing key cache", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_scanned_token() {
        let token = "WH1.AQABAgMEBQYHCAkKCwwNDg8Q.c2lnbmF0dXJl";
        let redeem = RedeemRequest {
            qr: token.into(),
            order_amount: "100.00".into(),
            order_ref: "A-1".into(),
            idempotency_key: None,
        };
        let card = CardPaymentRequest {
            qr: token.into(),
            order_amount: "100.00".into(),
            order_ref: "A-1".into(),
            idempotency_key: None,
        };
        for shown in [format!("{redeem:?}"), format!("{card:?}")] {
            assert!(!shown.contains("AQAB") && shown.contains("A-1"), "{shown}");
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let http = Http::new("http://127.0.0.1:1", ClientOptions::default()).expect("client");
        for (attempt, base_ms) in [(1, 200), (2, 400), (3, 800), (4, 1600), (5, 2000), (40, 2000)] {
            let pause = http.backoff(attempt);
            let base = Duration::from_millis(base_ms);
            assert!(pause >= base && pause <= base * 2, "attempt {attempt}: {pause:?}");
        }
    }

    #[test]
    fn refusals_are_decoded() {
        let body = json!({"error": {"code": "qr_replayed", "message": "already used"}});
        let refused = decode::<Value>(Answer { status: 409, body }).expect_err("refused");
        assert_eq!(refused.code(), "qr_replayed");
        assert_eq!(refused.status(), Some(409));
        let proxy = decode::<Value>(Answer { status: 502, body: Value::String("<html>bad gateway".into()) });
        assert_eq!(
            proxy,
            Err(ClientError::Refused {
                status: 502,
                code: "http_502".into(),
                message: "<html>bad gateway".into()
            })
        );
        let garbled = decode::<Redemption>(Answer { status: 201, body: json!({"redemption_id": 1}) });
        assert!(matches!(garbled, Err(ClientError::BadResponse(_))));
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(matches!(Http::new("ftp://x", ClientOptions::default()), Err(ClientError::Config(_))));
        assert!(matches!(Http::new("not a url", ClientOptions::default()), Err(ClientError::Config(_))));
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("has space").is_err());
        assert!(check_idempotency_key(&"k".repeat(129)).is_err());
        assert!(check_idempotency_key("0b7e1c2a-5d0f-4a53-9a66-2f1b1a7c9e10").is_ok());
    }

    #[test]
    fn nonces_are_22_fresh_characters() {
        let http = Http::new("http://127.0.0.1:1", ClientOptions::default()).expect("client");
        let (a, b) = (http.nonce().expect("nonce"), http.nonce().expect("nonce"));
        assert_eq!(a.len(), 22);
        assert!(crate::signing::nonce_is_valid(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn key_files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("till.key");
        let key = TillKey::generate().expect("key");
        key.save(&path).expect("save");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(TillKey::generate().expect("key").save(&path), Err(ClientError::Io(_))));
        let loaded = TillKey::load(&path).expect("load");
        assert_eq!(loaded.public_key_base64url(), key.public_key_base64url());
        assert_eq!(URL_SAFE_NO_PAD.decode(key.public_key_base64url()).expect("b64").len(), 32);
        assert!(!format!("{key:?}").contains(&hex::encode(&key.pkcs8)));
    }
}
