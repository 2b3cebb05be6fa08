//! `wenhui-till ui`: the till page (收银台), served by the till's own process on 127.0.0.1.
//!
//! The page (Chinese, our own CSS and JavaScript compiled in, nothing from another origin)
//! talks only to this process's small JSON endpoints under `/api/`, and they call the SDK's
//! [`TillClient`]: the terminal's private key never leaves this process, and every call is
//! signed, retried and journaled as the command line's are.
//!
//! Any web page the cashier opens can make the browser POST to 127.0.0.1, so every request must
//! name this address in `Host` (a DNS-rebinding page names its own), every `/api/` request
//! carries the per-run random token the page was served with (`X-Till-Token`; another origin
//! cannot read the page to learn it), a POST must be JSON (a cross-origin JSON POST needs a
//! preflight this server never grants) and, when the browser says where it comes from, come
//! from this origin.
//!
//! A write whose outcome is unknown (no network, a 5xx after the last retry) stays an intent in
//! the journal: a background task resends it with its Idempotency-Key until the service
//! answers, and the page shows it pending until then.
//!
//! An order with a voucher is confirmed in two presses of Enter (a busy cashier never reaches
//! for the mouse): the first, after the amount and the order reference, asks the service for a
//! quote (`POST /v1/redemptions/quote`: nothing written, the QR code not spent) and shows the
//! voucher's terms in plain Chinese (满40减10, 8折 最高减50; 山东省内通用 · 书店; until when), the
//! discount and the amount to collect, with the focus on 确认收款; the second redeems. A
//! refusal (a used code, below the minimum spend, another category or city...) shows at the
//! quote, and 确认收款 stays disabled until the voucher is taken off (去掉: the full amount) or
//! scanned afresh: nothing is sent that the service has just refused. Any change to the codes,
//! the amount or the reference drops the quote. With a benefit card on the order too, the card
//! pays first and its member discount sets what the voucher applies to, so the quote shows the
//! terms and says the discount follows the card, rather than guess it. With no network the quote
//! is unavailable: the page says so and offers 仍然确认收款, because the customer is at the
//! counter and the till can still take the order: the journal keeps the intent, it is resent
//! until answered, and the discount and the amount to collect show once it is (pending until then).

pub mod money;
mod terms;
mod view;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::client::{ClientError, TillClient, new_idempotency_key, now_s};
use crate::journal::{Journal, unanswered};
use crate::token::TokenKind;
use crate::{CardPaymentRequest, RedeemRequest};

const PAGE: &str = include_str!("static/index.html");
const SCRIPT: &str = include_str!("static/till.js");
const STYLE: &str = include_str!("static/till.css");
const ICON: &str = include_str!("static/icon.svg");

/// Nothing but this origin's own files; no inline script or style; never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The header that carries the per-run token on every `/api/` request.
const TOKEN_HEADER: &str = "x-till-token";

/// How the page is served.
#[derive(Clone, Debug)]
pub struct UiOptions {
    /// A loopback address (127.0.0.1 or ::1); anything else is refused.
    pub listen: SocketAddr,
    /// Where the service's table of Chinese messages is kept between runs (for a start with
    /// no network).
    pub messages_cache: Option<PathBuf>,
    /// How often unanswered intents are sent again.
    pub retry_every: Duration,
}

/// Codes only the till gives (its own checks, and no answer at all); every code the service
/// answers has its message in the service's table (`GET /assets/messages.json`), fetched and
/// kept, so the till writes none of those twice.
fn local_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "transport_error" => {
            "连不上文惠服务器（网络中断）。已记入本机流水，正在自动重试；结果出来前请勿重复收款。"
        }
        "bad_response" => "服务器的回答无法识别。已记入本机流水，正在自动重试。",
        "pending" => "结果待确认：已记入本机流水，正在自动重试。",
        "io_error" => "收银台无法读写本机文件（流水或密钥缓存），请联系管理员。",
        "config_error" => "收银台配置有误，请联系管理员。",
        "amount_invalid" => "请输入订单金额（元），如 120 或 120.50，最多两位小数。",
        "order_ref_invalid" => "请输入订单号（1 到 64 个字符）。",
        "nothing_scanned" => "请先扫描消费券或文惠卡的二维码。",
        "two_vouchers" => "一笔订单只能用一张消费券。",
        "two_cards" => "一笔订单只能刷一张文惠卡。",
        "card_not_paid" => "文惠卡没有付款成功，消费券没有使用。可去掉文惠卡后重新确认。",
        "card_pending" => "文惠卡付款待确认（正在自动重试），消费券没有使用。",
        "reason_invalid" => "请填写撤销原因。",
        "quote_unavailable" => {
            "暂时无法向服务器核对优惠（网络中断）。仍可确认收款：本单记入本机流水，联网后自动补发，优惠和应收以补发结果为准。"
        }
        _ => return None,
    })
}

/// The process's state: the client (with the key), the page's token, the message table.
struct Till {
    client: TillClient,
    token: String,
    /// The `Host` values this server answers to.
    hosts: Vec<String>,
    page: String,
    messages: RwLock<HashMap<String, String>>,
    messages_cache: Option<PathBuf>,
    /// Idempotency keys being sent right now (by a request or by the retrier).
    in_flight: Mutex<HashSet<String>>,
}

impl Till {
    fn message(&self, code: &str, fallback: &str) -> String {
        let table = self.messages.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        match table.get(code) {
            Some(message) => message.clone(),
            None => local_message(code).map_or_else(|| fallback.to_owned(), str::to_owned),
        }
    }

    /// A refusal or an unknown outcome as the page shows it.
    fn failure(&self, error: &ClientError) -> Value {
        let code = error.code();
        let pending = outcome_unknown(error);
        let fallback = match error {
            ClientError::Refused { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let message = if pending && !matches!(error, ClientError::Transport(_) | ClientError::BadResponse(_))
        {
            self.message("pending", &fallback)
        } else {
            self.message(&code, &fallback)
        };
        let status = if pending { "pending" } else { "refused" };
        json!({"status": status, "code": code, "message": message})
    }

    fn refusal(&self, code: &str) -> Value {
        json!({"status": "refused", "code": code, "message": self.message(code, code)})
    }

    async fn load_messages(&self) {
        if let Some(path) = &self.messages_cache
            && let Ok(bytes) = tokio::fs::read(path).await
            && let Ok(table) = serde_json::from_slice::<HashMap<String, String>>(&bytes)
        {
            self.set_messages(table);
        }
        self.refresh_messages().await;
    }

    async fn refresh_messages(&self) {
        let Ok(table) = self.client.fetch_messages().await else { return };
        if let Some(path) = &self.messages_cache
            && let Ok(bytes) = serde_json::to_vec(&table)
        {
            let _ = tokio::fs::write(path, bytes).await;
        }
        self.set_messages(table);
    }

    fn set_messages(&self, table: HashMap<String, String>) {
        *self.messages.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = table;
    }

    fn has_messages(&self) -> bool {
        !self.messages.read().unwrap_or_else(|poisoned| poisoned.into_inner()).is_empty()
    }

    /// Marks `key` as being sent; false if it already is.
    fn begin(&self, key: &str) -> bool {
        self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key.to_owned())
    }

    fn end(&self, key: &str) {
        self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(key);
    }

    fn journal(&self) -> &Journal {
        self.client.journal()
    }
}

/// Whether a write that failed this way may still have happened (so it is retried).
fn outcome_unknown(error: &ClientError) -> bool {
    match error {
        ClientError::Transport(_) | ClientError::BadResponse(_) => true,
        ClientError::Refused { status, .. } => crate::client::outcome_unknown(*status, true),
        _ => false,
    }
}

/// Serves the till page at `options.listen` until `shutdown` completes. `ready` is told the
/// bound address once the server accepts connections.
pub async fn serve(
    client: TillClient,
    options: UiOptions,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ClientError> {
    if !options.listen.ip().is_loopback() {
        return Err(ClientError::Config(format!(
            "--listen {}: the till page is served on this machine only (127.0.0.1 or [::1])",
            options.listen
        )));
    }
    if client.journal().path().is_none() {
        return Err(ClientError::Config("the till page needs the till's journal".into()));
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| ClientError::Io(format!("listening on {}: {e}", options.listen)))?;
    let address = listener.local_addr().map_err(|e| ClientError::Io(e.to_string()))?;
    let token = random_token()?;
    let port = address.port();
    let mut hosts = vec![format!("localhost:{port}")];
    hosts.push(match address {
        SocketAddr::V4(v4) => format!("{}:{port}", v4.ip()),
        SocketAddr::V6(v6) => format!("[{}]:{port}", v6.ip()),
    });
    let html = PAGE.replace("{{token}}", &token).replace("{{terminal}}", &client.terminal_id().to_string());
    let till = Arc::new(Till {
        client,
        token,
        hosts,
        page: html,
        messages: RwLock::new(HashMap::new()),
        messages_cache: options.messages_cache.clone(),
        in_flight: Mutex::new(HashSet::new()),
    });
    let loader = till.clone();
    tokio::spawn(async move { loader.load_messages().await });
    let retrier = tokio::spawn(retry_forever(till.clone(), options.retry_every));
    let app = routes(till);
    ready(address);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ClientError::Io(format!("serving the till page: {e}")));
    retrier.abort();
    served
}

/// The page, its assets and its JSON endpoints, behind [`guard`].
#[expect(
    clippy::disallowed_methods,
    reason = "the till's own page on 127.0.0.1, not the service's API: no OpenAPI document lists it"
)]
fn routes(till: Arc<Till>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/assets/till.js", get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/assets/till.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
        .route("/assets/icon.svg", get(|| async { asset(ICON, "image/svg+xml") }))
        .route("/api/state", get(state))
        .route("/api/scan", post(scan))
        .route("/api/quote", post(quote))
        .route("/api/order", post(order))
        .route("/api/reverse", post(reverse))
        .route("/api/journal", get(journal))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn_with_state(till.clone(), guard))
        .with_state(till)
}

fn random_token() -> Result<String, ClientError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ClientError::Io("the system random source failed".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Equal, in time that does not depend on where the two differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn forbidden(why: &'static str) -> Response {
    let body = json!({"error": {"code": "forbidden", "message": why}});
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

/// The checks every request passes (see the module's documentation), and the headers every
/// answer carries.
async fn guard(State(till): State<Arc<Till>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !till.hosts.iter().any(|allowed| allowed == host) {
        return forbidden("this till page answers on its own address only");
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && origin.to_str().ok() != Some(format!("http://{host}").as_str())
    {
        return forbidden("requests from another origin are refused");
    }
    if request.uri().path().starts_with("/api/") {
        let token = headers.get(TOKEN_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
        if !same_secret(token, till.token.as_bytes()) {
            return forbidden("the page's token is missing or wrong: reload the page");
        }
        if request.method() == axum::http::Method::POST && !is_json(headers) {
            return forbidden("a POST must be application/json");
        }
    } else if request.method() != axum::http::Method::GET {
        return forbidden("only GET here");
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn page(State(till): State<Arc<Till>>) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], till.page.clone()).into_response()
}

/// The terminal, and the messages the page itself shows (its own checks).
async fn state(State(till): State<Arc<Till>>) -> Json<Value> {
    let codes = ["amount_invalid", "order_ref_invalid", "nothing_scanned", "reason_invalid"];
    let messages: HashMap<&str, String> =
        codes.iter().map(|code| (*code, till.message(code, code))).collect();
    Json(json!({"terminal_id": till.client.terminal_id(), "messages": messages}))
}

#[derive(Deserialize)]
struct ScanBody {
    qr: String,
}

/// A scanned code checked offline against the cached keys: kind, and seconds left.
async fn scan(State(till): State<Arc<Till>>, Json(body): Json<ScanBody>) -> Json<Value> {
    let now = now_s();
    Json(match till.client.verify_offline(&body.qr, now).await {
        Ok(payload) => json!({
            "status": "valid",
            "kind": kind_name(payload.kind),
            "subject": payload.subject,
            "seconds_left": (payload.expires_at_s - now).max(0),
        }),
        Err(error) => till.failure(&error),
    })
}

fn kind_name(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Voucher => "voucher",
        TokenKind::Card => "card",
    }
}

/// The scanned codes of an order, checked offline: the voucher's and the card's, one each.
fn sort_codes(
    codes: &[String],
    verified: impl Fn(&str) -> Option<TokenKind>,
) -> (Option<String>, Option<String>) {
    let (mut card, mut voucher) = (None, None);
    for code in codes.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        match verified(code) {
            Some(TokenKind::Card) => card = Some(code.to_owned()),
            Some(TokenKind::Voucher) => voucher = Some(code.to_owned()),
            None => {}
        }
    }
    (card, voucher)
}

/// Before the cashier confirms: the voucher's terms and what it takes off this order, from the
/// service's quote (nothing written, the QR code not spent). `none` when no voucher is scanned
/// (a card alone has nothing to quote); `after_card` when a card is scanned too, whose member
/// discount comes first, so the voucher's discount is known only once the card has paid (the
/// terms are shown, the discount is not guessed); `unavailable` when the service cannot be
/// reached (the cashier may still confirm: the journal keeps the intent and resends it).
async fn quote(State(till): State<Arc<Till>>, Json(body): Json<OrderRequest>) -> Json<Value> {
    let Some(amount_fen) = money::parse_order_amount(&body.amount) else {
        return Json(till.refusal("amount_invalid"));
    };
    let order_ref = body.order_ref.trim().to_owned();
    if order_ref.is_empty() || order_ref.len() > 64 || order_ref.chars().any(char::is_control) {
        return Json(till.refusal("order_ref_invalid"));
    }
    let mut kinds = HashMap::new();
    for code in body.codes.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        match till.client.verify_offline(code, now_s()).await {
            Ok(payload) => kinds.insert(code.to_owned(), payload.kind),
            Err(error) => return Json(till.failure(&error)),
        };
    }
    let (card, voucher) = sort_codes(&body.codes, |code| kinds.get(code).copied());
    let Some(qr) = voucher else { return Json(json!({"status": "none"})) };
    match till.client.quote(&qr, &money::plain(amount_fen), &order_ref).await {
        Ok(quote) => {
            let mut shown = json!({
                "status": "quoted",
                "terms": terms::terms_text(&quote.terms),
                "where": terms::where_text(&quote),
                "until": terms::until_text(&quote.expires_at),
                "batch": quote.batch_name,
                "order_amount": money::shown(&quote.order_amount),
            });
            if card.is_some() {
                shown["after_card"] = json!(true);
            } else {
                shown["discount"] = json!(money::shown(&quote.discount));
                shown["collect"] = json!(money::shown(&quote.payable));
            }
            Json(shown)
        }
        Err(error) if outcome_unknown(&error) => Json(
            json!({"status": "unavailable", "message": till.message("quote_unavailable", "quote_unavailable")}),
        ),
        Err(error) => Json(till.failure(&error)),
    }
}

#[derive(Deserialize)]
struct OrderRequest {
    /// The scanned codes: at most one voucher and one benefit card.
    codes: Vec<String>,
    amount: String,
    order_ref: String,
}

/// One order: the card first (its member discount), then the voucher on what is left, the
/// same amount and reference sent to both (the service applies the voucher to the amount after
/// the member discount).
async fn order(State(till): State<Arc<Till>>, Json(body): Json<OrderRequest>) -> Json<Value> {
    let refuse = |code: &str| Json(json!({"status": "refused", "error": till.refusal(code)}));
    let Some(amount_fen) = money::parse_order_amount(&body.amount) else { return refuse("amount_invalid") };
    let order_ref = body.order_ref.trim().to_owned();
    if order_ref.is_empty() || order_ref.len() > 64 || order_ref.chars().any(char::is_control) {
        return refuse("order_ref_invalid");
    }
    let (mut card, mut voucher) = (None, None);
    for code in body.codes.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        match till.client.verify_offline(code, now_s()).await {
            Ok(payload) => {
                let slot = if payload.kind == TokenKind::Card { &mut card } else { &mut voucher };
                if slot.replace(code.to_owned()).is_some() {
                    return refuse(if payload.kind == TokenKind::Card {
                        "two_cards"
                    } else {
                        "two_vouchers"
                    });
                }
            }
            Err(error) => return Json(json!({"status": "refused", "error": till.failure(&error)})),
        }
    }
    if card.is_none() && voucher.is_none() {
        return refuse("nothing_scanned");
    }
    let amount = money::plain(amount_fen);
    let mut answer = json!({"order_ref": order_ref, "order_amount": money::yuan(amount_fen)});
    let mut collect = Some(amount_fen);
    let mut card_done = card.is_none();
    if let Some(qr) = card {
        let key = new_idempotency_key();
        till.begin(&key);
        let request = CardPaymentRequest {
            qr,
            order_amount: amount.clone(),
            order_ref: order_ref.clone(),
            idempotency_key: Some(key.clone()),
        };
        let paid = till.client.card_pay(request).await;
        till.end(&key);
        answer["card"] = match paid {
            Ok(payment) => {
                card_done = true;
                collect = money::parse_fen(&payment.amount_after_discount);
                answer["member_discount"] = json!(money::shown(&payment.member_discount));
                json!({"status": "done", "card_number": payment.card_number, "points_earned": payment.points_earned,
                       "member_discount": money::shown(&payment.member_discount), "id": payment.card_payment_id})
            }
            Err(error) => {
                if outcome_unknown(&error) {
                    collect = None;
                }
                with_key(till.failure(&error), &key)
            }
        };
    }
    if let Some(qr) = voucher {
        answer["voucher"] = if !card_done {
            let pending = answer["card"]["status"] == "pending";
            till.refusal(if pending { "card_pending" } else { "card_not_paid" })
        } else {
            let key = new_idempotency_key();
            till.begin(&key);
            let request = RedeemRequest {
                qr,
                order_amount: amount.clone(),
                order_ref: order_ref.clone(),
                idempotency_key: Some(key.clone()),
            };
            let redeemed = till.client.redeem(request).await;
            till.end(&key);
            match redeemed {
                Ok(redemption) => {
                    collect = money::parse_fen(&redemption.payable);
                    answer["discount"] = json!(money::shown(&redemption.discount));
                    json!({"status": "done", "discount": money::shown(&redemption.discount), "id": redemption.redemption_id})
                }
                Err(error) => {
                    if outcome_unknown(&error) {
                        collect = None;
                    }
                    with_key(till.failure(&error), &key)
                }
            }
        };
    }
    answer["collect"] = json!(collect.map(money::yuan));
    if let Some(failure) = till.journal().last_failure() {
        answer["journal_warning"] = json!(format!("{} ({failure})", till.message("io_error", "io_error")));
    }
    Json(answer)
}

/// A step's answer with the write's Idempotency-Key, so the page can follow a pending one in
/// the journal until it is answered.
fn with_key(mut step: Value, key: &str) -> Value {
    step["key"] = json!(key);
    step
}

#[derive(Deserialize)]
struct ReverseRequest {
    /// `redeem` (a voucher) or `card_pay`.
    op: String,
    id: Uuid,
    reason: String,
}

async fn reverse(State(till): State<Arc<Till>>, Json(body): Json<ReverseRequest>) -> Json<Value> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().any(char::is_control) {
        return Json(till.refusal("reason_invalid"));
    }
    let key = new_idempotency_key();
    till.begin(&key);
    let reversed = match body.op.as_str() {
        "redeem" => till.client.reverse(body.id, reason, Some(key.clone())).await.map(|r| r.amount),
        "card_pay" => till
            .client
            .reverse_card_payment(body.id, reason, Some(key.clone()))
            .await
            .map(|r| r.points_reversed.to_string()),
        _ => Err(ClientError::Config("unknown operation".into())),
    };
    till.end(&key);
    Json(match reversed {
        Ok(_) => json!({"status": "done"}),
        Err(error) => till.failure(&error),
    })
}

/// Today's lines (China Standard Time), newest first.
async fn journal(State(till): State<Arc<Till>>) -> Json<Value> {
    let Some(path) = till.journal().path().map(std::path::Path::to_path_buf) else {
        return Json(json!({"lines": []}));
    };
    let read = tokio::task::spawn_blocking(move || Journal::read(path)).await;
    let lines = match read {
        Ok(Ok(lines)) => lines,
        _ => return Json(json!({"error": till.refusal("io_error")})),
    };
    let in_flight = till.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    let message = |code: &str, fallback: &str| till.message(code, fallback);
    Json(json!({"lines": view::today(&lines, &in_flight, &message)}))
}

/// Sends every unanswered write of today again, with its key and its request, until the
/// service answers (one pass per `every`).
async fn retry_forever(till: Arc<Till>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if !till.has_messages() {
            till.refresh_messages().await;
        }
        let Some(path) = till.journal().path().map(std::path::Path::to_path_buf) else { return };
        let Ok(Ok(lines)) = tokio::task::spawn_blocking(move || Journal::read(path)).await else { continue };
        let today = view::today_cst();
        // A resent write journals its intent again: each key once.
        let mut keys = HashSet::new();
        let open: Vec<_> = unanswered(&lines)
            .into_iter()
            .filter(|line| view::cst_day(&line.at).as_deref() == Some(today.as_str()))
            .filter(|line| line.idempotency_key.as_ref().is_some_and(|key| keys.insert(key.clone())))
            .cloned()
            .collect();
        for intent in open {
            let Some(key) = intent.idempotency_key.clone() else { continue };
            if !till.begin(&key) {
                continue;
            }
            resend(&till.client, &intent, key.clone()).await;
            till.end(&key);
        }
    }
}

/// One intent sent again (the outcome lands in the journal; the page reads it there).
async fn resend(client: &TillClient, intent: &crate::JournalLine, key: String) {
    let text = |field: &str| intent.request.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
    let target = || intent.path.split('/').nth(3).and_then(|id| id.parse::<Uuid>().ok());
    match intent.op.as_str() {
        "redeem" => {
            let request = RedeemRequest {
                qr: text("qr"),
                order_amount: text("order_amount"),
                order_ref: text("order_ref"),
                idempotency_key: Some(key),
            };
            let _ = client.redeem(request).await;
        }
        "card_pay" => {
            let request = CardPaymentRequest {
                qr: text("qr"),
                order_amount: text("order_amount"),
                order_ref: text("order_ref"),
                idempotency_key: Some(key),
            };
            let _ = client.card_pay(request).await;
        }
        "reverse" => {
            if let Some(id) = target() {
                let _ = client.reverse(id, &text("reason"), Some(key)).await;
            }
        }
        "reverse_card" => {
            if let Some(id) = target() {
                let _ = client.reverse_card_payment(id, &text("reason"), Some(key)).await;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
        assert!(!same_secret(b"", b"a"));
    }

    fn till_with(messages: &[(&str, &str)]) -> Till {
        let key = crate::TillKey::generate().expect("key");
        let client = TillClient::new(
            "http://127.0.0.1:1",
            Uuid::from_u128(1),
            key,
            Journal::disabled(),
            Default::default(),
        )
        .expect("client");
        let table = messages.iter().map(|(code, text)| ((*code).to_owned(), (*text).to_owned())).collect();
        Till {
            client,
            token: "t".into(),
            hosts: vec![],
            page: String::new(),
            messages: RwLock::new(table),
            messages_cache: None,
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    #[test]
    fn refusals_read_from_the_services_table_and_unknown_outcomes_are_pending() {
        let till = till_with(&[
            ("qr_expired", "二维码已过期，请让顾客刷新。"),
            ("qr_replayed", "这个二维码已经用过了。"),
        ]);
        let expired = till.failure(&ClientError::Token(crate::token::TokenError::Expired(0)));
        assert_eq!(
            expired,
            json!({"status": "refused", "code": "qr_expired", "message": "二维码已过期，请让顾客刷新。"})
        );
        let used = ClientError::Refused { status: 409, code: "qr_replayed".into(), message: "used".into() };
        assert_eq!(till.failure(&used)["message"], "这个二维码已经用过了。");
        let unknown_code =
            ClientError::Refused { status: 422, code: "new_code".into(), message: "as sent".into() };
        assert_eq!(till.failure(&unknown_code)["message"], "as sent", "the service's own words, not nothing");
        let offline = till.failure(&ClientError::Transport("could not connect".into()));
        assert_eq!(
            (offline["status"].as_str(), offline["code"].as_str()),
            (Some("pending"), Some("transport_error"))
        );
        assert!(offline["message"].as_str().is_some_and(|m| m.starts_with("连不上文惠服务器")));
        let busy = ClientError::Refused { status: 503, code: "database_busy".into(), message: "busy".into() };
        assert_eq!(till.failure(&busy)["status"], "pending", "a write behind a 503 may have happened");
    }

    #[test]
    fn the_till_names_its_own_codes_in_chinese() {
        for code in ["transport_error", "amount_invalid", "nothing_scanned", "card_not_paid", "card_pending"]
        {
            assert!(local_message(code).is_some_and(|m| m.ends_with('。')), "{code}");
        }
        assert_eq!(local_message("qr_replayed"), None, "the service's codes come from its table");
    }
}
