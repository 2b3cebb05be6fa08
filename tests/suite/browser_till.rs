//! The till page (`wenhui-till ui`) in a real browser: the till program runs as a child
//! process on 127.0.0.1 with a registered terminal, talking to the service through a proxy the
//! test can cut (no network). The page gets each QR code typed in as a scanner gun does (the
//! text, then Enter, into the focused field) and the order amount and reference from the
//! keyboard; it shows the amount to collect, reverses from today's journal, says in Chinese
//! why a code is refused, keeps an order whose answer was lost pending until the network is
//! back, loads nothing from another origin and logs no error. Screenshots at 1280×800 go to
//! `target/screenshots/till-*.png`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::Locator;
use fantoccini::key::Key;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::both_backends;
use crate::browser::Browser;
use crate::common::Backend;
use crate::till::Till;

/// `wenhui-till`, built beside `wenhui` by `cargo test --workspace`.
fn till_binary() -> PathBuf {
    let till = Path::new(env!("CARGO_BIN_EXE_wenhui")).with_file_name("wenhui-till");
    assert!(till.exists(), "{} is missing: run the suite with `cargo test --workspace`", till.display());
    till
}

/// A TCP proxy between the till and the service that the test can take down (every
/// connection cut, new ones refused) and bring back.
struct Proxy {
    base: String,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: &str) -> Proxy {
        let target = target.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (flag, open) = (up.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                open.lock().expect("lock").push(task.abort_handle());
            }
        });
        Proxy { base, up, connections, accept }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().expect("lock").drain(..) {
            connection.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
        self.accept.abort();
    }
}

/// `wenhui-till ui` over a till configuration written for the test's terminal.
struct TillPage {
    base: String,
    config: PathBuf,
    _process: Child,
}

impl TillPage {
    async fn start(till: &Till, server: &str) -> TillPage {
        let dir = till.world.app.db.dir.path().join("till-ui");
        std::fs::create_dir_all(&dir).expect("the till's folder");
        let key_file = till.world.app.db.dir.path().join(format!("{}.key", till.terminal_id));
        let config = dir.join("till.json");
        let settings = json!({"server": server, "terminal_id": till.terminal_id, "key_file": key_file,
            "journal": "till-journal.jsonl", "keys_cache": "till-keys.json"});
        std::fs::write(&config, settings.to_string()).expect("write till.json");
        let mut process = Command::new(till_binary())
            .arg("--config")
            .arg(&config)
            .args(["--max-attempts", "2", "--timeout-ms", "2000", "ui", "--listen", "127.0.0.1:0"])
            .args(["--retry-every-s", "1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start wenhui-till ui");
        let stdout = process.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("wenhui-till ui says where it listens")
            .expect("read stdout")
            .expect("a line");
        let ready: Value = serde_json::from_str(&first).expect("JSON");
        let base = ready["listening"].as_str().expect("an address").trim_end_matches('/').to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        TillPage { base, config, _process: process }
    }
}

/// A voucher of `batch` for `citizen` (claimed under `key`) and its QR token.
async fn voucher_qr(till: &Till, citizen: &str, batch: &str, key: &str) -> String {
    let (status, claim) = till.world.claim(citizen, batch, key).await;
    assert_eq!(status, 201, "{claim}");
    till.qr(citizen, claim["voucher"]["id"].as_str().expect("id")).await
}

/// The scanner gun: the code's text and Enter, into whatever field has the focus.
async fn scan(browser: &Browser, qr: &str) {
    browser.wait_for("#scan:focus").await;
    type_here(browser, &format!("{qr}{}", char::from(Key::Enter))).await;
}

async fn type_here(browser: &Browser, text: &str) {
    let focused = browser.client.active_element().await.expect("the focused field");
    focused.send_keys(text).await.expect("type");
}

/// Scans `codes`, types the amount and the order reference, each with Enter, and waits for
/// the voucher's quote (terms, discount, amount to collect), shown before the cashier confirms.
async fn quote(browser: &Browser, codes: &[&str], amount: &str, order_ref: &str) {
    for (n, qr) in codes.iter().enumerate() {
        scan(browser, qr).await;
        browser.wait_for(&format!("#scanned li:nth-child({})", n + 1)).await;
        if n + 1 < codes.len() {
            browser.wait_for("#amount:focus").await;
            browser
                .client
                .find(Locator::Css("#scan"))
                .await
                .expect("scan field")
                .click()
                .await
                .expect("focus");
        }
    }
    browser.wait_for("#amount:focus").await;
    type_here(browser, &format!("{amount}{}", char::from(Key::Enter))).await;
    browser.wait_for("#order-ref:focus").await;
    type_here(browser, &format!("{order_ref}{}", char::from(Key::Enter))).await;
    browser.wait_for("#quote:not([hidden])").await;
}

/// Enter on 确认收款 (which has the focus once the quote is shown), and the answer.
async fn confirm(browser: &Browser) {
    browser.wait_for("#confirm:focus").await;
    type_here(browser, &char::from(Key::Enter).to_string()).await;
    browser.wait_for("#result:not([hidden])").await;
}

/// Esc: the order cleared, the scan field ready for the next one.
async fn clear_order(browser: &Browser) {
    type_here(browser, &char::from(Key::Escape).to_string()).await;
    browser.wait_for("#scan:focus").await;
}

/// The next order (Enter on 下一单, which has the focus).
async fn next_order(browser: &Browser) {
    browser.wait_for("#next:focus").await;
    type_here(browser, &char::from(Key::Enter).to_string()).await;
    browser.wait_for("#scan:focus").await;
}

/// The journal's row for `order_ref`, once its state cell reads `state`.
async fn row_state(browser: &Browser, order_ref: &str, state: &str) -> String {
    let script =
        "return [...document.querySelectorAll('#lines tr')].map(r => [...r.cells].map(c => c.innerText))";
    let mut rows = Value::Null;
    for _ in 0..200 {
        rows = browser.client.execute(script, vec![]).await.expect("the journal's rows");
        for row in rows.as_array().into_iter().flatten() {
            let texts: Vec<&str> = row.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if texts.get(2) == Some(&order_ref) && texts.get(6).is_some_and(|s| s.starts_with(state)) {
                return texts.join(" | ");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no journal row for {order_ref} in state {state}: {rows}");
}

fn shot(name: &str, backend: Backend) -> String {
    format!("till-{name}-{backend:?}").to_lowercase()
}

both_backends!(the_till_page_redeems_reverses_and_refuses_in_plain_chinese);

async fn the_till_page_redeems_reverses_and_refuses_in_plain_chinese(backend: Backend) {
    let browser = Browser::start().await;
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    // 满40减10 at bookstores and cinemas; a KTV-only batch (the till is a bookstore's).
    let batch = world.batch(json!({"stock": 20, "per_citizen_limit": 5})).await;
    let batch = batch["id"].as_str().expect("id").to_owned();
    let ktv = world.batch(json!({"name": "KTV券", "categories": ["ktv"]})).await;
    let ktv = ktv["id"].as_str().expect("id").to_owned();
    let merchant: Uuid = till.bookstore.parse().expect("uuid");
    till.client.set_card_terms(merchant, 20, None).await.expect("a 20% member discount");
    let citizen = world.citizen(1).await;
    let (status, card) = world.app.post("/v1/me/card", Some(&citizen), json!({"via": "mobile"})).await;
    assert_eq!(status, 201, "{card}");
    let (_, messages) = world.app.get("/assets/messages.json", None).await;
    let message =
        |code: &str| messages[code].as_str().unwrap_or_else(|| panic!("a message for {code}")).to_owned();

    let proxy = Proxy::start(&world.app.base).await;
    let page = TillPage::start(&till, &proxy.base).await;
    browser.viewport(1280, 800).await;
    browser.client.goto(&format!("{}/", page.base)).await.expect("load the till page");
    browser.wait_for("#scan:focus").await;
    assert_eq!(browser.client.title().await.expect("title"), "文惠 · 收银台");
    assert_eq!(browser.text("#empty").await, "今天还没有交易。");
    browser.screenshot(&shot("1-ready", backend)).await;

    // A voucher: scanned, checked offline, 120.00 → ¥110.00 to collect.
    let qr = voucher_qr(&till, &citizen, &batch, "v1").await;
    scan(&browser, &qr).await;
    let scanned = browser.text("#scanned li.voucher .what").await;
    assert!(scanned.starts_with("消费券 · 已用缓存密钥离线核验"), "{scanned}");
    browser.wait_for("#amount:focus").await;
    type_here(&browser, &format!("120{}", char::from(Key::Enter))).await;
    browser.wait_for("#order-ref:focus").await;
    browser.screenshot(&shot("2-scanned", backend)).await;
    // Enter: the voucher's terms and the amount to collect, from the service's quote, before
    // anything is redeemed; Enter again confirms.
    type_here(&browser, &format!("A-1001{}", char::from(Key::Enter))).await;
    assert_eq!(browser.text("#quote:not([hidden]) #quote-terms").await, "满40减10");
    let until = browser.text("#quote-where").await;
    assert!(until.starts_with("山东省内通用 · 书店、电影院 · 有效期至 20"), "{until}");
    assert_eq!(browser.text("#quote-lines").await, "订单金额 ¥120.00 · 消费券优惠 ¥10.00");
    assert_eq!(browser.text("#quote-collect").await, "¥110.00");
    assert_eq!(browser.text("#empty").await, "今天还没有交易。", "a quote writes nothing");
    browser.screenshot(&shot("2b-quote", backend)).await;
    confirm(&browser).await;
    assert_eq!(browser.text("#result:not([hidden]) #collect").await, "¥110.00");
    assert_eq!(
        browser.texts("#result-lines .line").await,
        ["订单 A-1001 · 订单金额 ¥120.00", "消费券：优惠 ¥10.00"]
    );
    let row = row_state(&browser, "A-1001", "成功").await;
    assert!(row.contains("¥120.00 | ¥10.00 | ¥110.00"), "{row}");
    browser.screenshot(&shot("3-collect", backend)).await;

    // Reversed from today's journal (a second press confirms).
    let reverse = "#lines tr.done:not(.reversed) button.reverse";
    let id = browser.wait_for("#lines tr.done").await.attr("data-id").await.expect("attr").expect("an id");
    browser.wait_for(reverse).await.click().await.expect("撤销");
    assert_eq!(browser.text(reverse).await, "确认撤销");
    browser.wait_for(reverse).await.click().await.expect("确认撤销");
    row_state(&browser, "A-1001", "已撤销").await;
    let redemption = till.client.get(id.parse().expect("uuid")).await.expect("the redemption");
    assert!(redemption.reversed, "reversed at the service");
    browser.screenshot(&shot("4-reversed", backend)).await;

    // Refusals in the service's own Chinese words: a used code, below the minimum spend, a
    // voucher for another category.
    browser.wait_for("#next").await.click().await.expect("下一单");
    browser.wait_for("#scan:focus").await;
    quote(&browser, &[&qr], "120", "A-1002").await;
    assert_eq!(browser.text("#quote-message").await, message("qr_replayed"));
    assert!(
        browser.wait_for("#confirm").await.attr("disabled").await.expect("attr").is_some(),
        "no confirming"
    );
    browser.screenshot(&shot("5-used", backend)).await;
    clear_order(&browser).await;
    let low = voucher_qr(&till, &citizen, &batch, "v2").await;
    quote(&browser, &[&low], "30.5", "A-1003").await;
    assert_eq!(browser.text("#quote-message").await, message("below_min_spend"));
    clear_order(&browser).await;
    let other = voucher_qr(&till, &citizen, &ktv, "k1").await;
    quote(&browser, &[&other], "120", "A-1004").await;
    assert_eq!(browser.text("#quote-message").await, message("merchant_not_eligible"));
    let rows = browser.texts("#lines tr").await;
    assert!(
        rows.iter().all(|r| !["A-1002", "A-1003", "A-1004"].iter().any(|o| r.contains(o))),
        "refused at quote time, nothing was sent: {rows:?}"
    );
    browser.screenshot(&shot("6-wrong-category", backend)).await;
    clear_order(&browser).await;

    // Card and voucher on one order, the card first: 100.00 - 20.00 member - 10.00 = 70.00.
    let (status, card_qr) = world.app.post("/v1/me/card/qr", Some(&citizen), json!({})).await;
    assert_eq!(status, 200, "{card_qr}");
    let card_qr = card_qr["token"].as_str().expect("token").to_owned();
    let voucher = voucher_qr(&till, &citizen, &batch, "v3").await;
    quote(&browser, &[&voucher, &card_qr], "100", "A-1005").await;
    assert_eq!(browser.text("#quote-terms").await, "满40减10");
    assert_eq!(
        browser.text("#quote-lines").await,
        "订单金额 ¥100.00 · 先刷文惠卡享会员优惠，消费券按刷卡后金额计算"
    );
    confirm(&browser).await;
    assert_eq!(browser.text("#collect").await, "¥70.00");
    let lines = browser.texts("#result-lines .line").await;
    assert_eq!(
        lines[1..],
        ["文惠卡：会员优惠 ¥20.00".to_owned(), "消费券：优惠 ¥10.00".to_owned()],
        "{lines:?}"
    );
    row_state(&browser, "A-1005", "成功").await;
    browser.screenshot(&shot("7-card-and-voucher", backend)).await;

    // No network: the order is kept and shown pending, then sent again once the network is
    // back (the till retries by itself).
    next_order(&browser).await;
    let offline = voucher_qr(&till, &citizen, &batch, "v4").await;
    proxy.down();
    quote(&browser, &[&offline], "88.80", "A-1006").await;
    let unavailable = browser.text("#quote-message.pending").await;
    assert!(unavailable.starts_with("暂时无法向服务器核对优惠"), "{unavailable}");
    assert_eq!(browser.text("#confirm").await, "仍然确认收款");
    browser.screenshot(&shot("8a-no-quote", backend)).await;
    confirm(&browser).await;
    let pending = browser.text(".result .line.pending").await;
    assert!(pending.starts_with("消费券：连不上文惠服务器"), "{pending}");
    assert_eq!(browser.text("#collect").await, "待确认");
    row_state(&browser, "A-1006", "待确认").await;
    assert!(browser.text("#net.down").await.contains("1 笔待确认"));
    browser.screenshot(&shot("8-no-network", backend)).await;
    proxy.up();
    let row = row_state(&browser, "A-1006", "成功").await;
    assert!(row.contains("¥88.80 | ¥10.00 | ¥78.80"), "{row}");
    assert_eq!(browser.text(".result .line.done").await, "网络恢复，已补发成功：优惠 ¥10.00");
    assert_eq!(browser.text("#collect").await, "¥78.80");
    let rows = browser.texts("#lines tr").await;
    assert_eq!(
        rows.iter().filter(|r| r.contains("A-1006")).count(),
        1,
        "one row for a resent order: {rows:?}"
    );
    browser.screenshot(&shot("9-retried", backend)).await;

    assert_eq!(browser.errors().await, Vec::<Value>::new(), "the browser logged errors");
    let requested = browser.requested().await;
    assert!(
        requested.iter().all(|u| u.starts_with(&format!("{}/", page.base))),
        "another origin: {requested:?}"
    );
    browser.client.clone().close().await.expect("close the browser");
    the_local_endpoints_refuse_other_pages(&page).await;
}

/// Another page on the machine cannot use the till: the token, the Host and the Origin are
/// checked; the page is never framed; the till does not listen beyond this machine.
async fn the_local_endpoints_refuse_other_pages(page: &TillPage) {
    let http = reqwest::Client::new();
    let home = http.get(format!("{}/", page.base)).send().await.expect("the page");
    let headers = home.headers().clone();
    assert_eq!(headers["x-frame-options"], "DENY");
    let csp = headers["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = home.text().await.expect("html");
    let token = html.split("name=\"till-token\" content=\"").nth(1).and_then(|t| t.split('"').next());
    let token = token.expect("the page's token").to_owned();
    let scan = format!("{}/api/scan", page.base);
    let body = json!({"qr": "WH1.x.y"});
    let ok = http.post(&scan).header("x-till-token", &token).json(&body).send().await.expect("send");
    assert_eq!(ok.status(), 200);
    let refusals = [
        http.post(&scan).json(&body),
        http.post(&scan).header("x-till-token", "guess").json(&body),
        http.post(&scan).header("x-till-token", &token).header("origin", "http://evil.example").json(&body),
        http.post(&scan).header("x-till-token", &token).header("host", "evil.example").json(&body),
        http.post(&scan)
            .header("x-till-token", &token)
            .header("content-type", "text/plain")
            .body(body.to_string()),
        http.get(format!("{}/", page.base)).header("host", "rebound.example"),
    ];
    for request in refusals {
        let answer = request.send().await.expect("send");
        assert_eq!(answer.status(), 403, "{:?}", answer.url());
    }
    let output = std::process::Command::new(till_binary())
        .arg("--config")
        .arg(&page.config)
        .args(["ui", "--listen", "0.0.0.0:0"])
        .output()
        .expect("run wenhui-till ui");
    assert_eq!(output.status.code(), Some(2));
    let refused: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(refused["error"]["code"], "config_error", "{refused}");
}
