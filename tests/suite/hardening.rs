//! The defects of an outside security test (issue 22), each held by a test: exports a
//! spreadsheet cannot run, slow and idle clients cut off, an early refusal that tells a
//! keep-alive client to go, and the small refusals (replayed claims, two Idempotency-Keys, the
//! wrong Content-Type, seasons out of any sane range, invisible characters in names, an amount
//! with a space).

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wenhui::domain::staff::Role;
use wenhui::http::ConnectionLimits;
use wenhui_merchant_sdk::client::RedeemRequest;

use crate::both_backends;
use crate::common::{Backend, TestApp, code, read};
use crate::till::{Till, credit_code, signed, terminal};

both_backends!(
    exports_do_not_run_formulas,
    slow_and_idle_connections_are_closed,
    connections_beyond_the_limit_wait,
    an_answer_before_the_body_says_connection_close,
    small_refusals,
    invisible_characters_in_names_are_refused,
);

/// The rows of a CSV text, header included.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|record| record.expect("a CSV record").iter().map(str::to_owned).collect())
        .collect()
}

async fn get_text(app: &TestApp, path: &str, key: &str) -> String {
    let response = app.client.get(app.url(path)).bearer_auth(key).send().await.expect("send");
    assert_eq!(response.status().as_u16(), 200, "{path}");
    response.text().await.expect("text")
}

const FORMULA_NAME: &str = "=HYPERLINK(\"http://x/\",\"Click\")";
const FORMULA_BANK: &str = "@SUM(1+1)";
const FORMULA_HOLDER: &str = "+cmd|' /C calc'!A0";

/// A merchant named like a formula, paid to a bank and a holder named like formulas, redeems a
/// voucher on an order `=2+3`: the payout file, the statement and the report, as CSV, carry
/// each as text behind a `'`; the workbook holds them as strings, never formulas.
async fn exports_do_not_run_formulas(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    let body = json!({"name": FORMULA_NAME, "credit_code": credit_code(41), "category": "bookstore", "city": "370200",
        "settlement_account": {"bank": FORMULA_BANK, "account_no": "6222000011114444", "account_name": FORMULA_HOLDER}});
    let (status, created) =
        world.app.post_idem("/v1/merchants", Some(&till.qingdao_admin), "formula-merchant", body).await;
    assert_eq!(status, 201, "{created}");
    let merchant = created["id"].as_str().expect("id").to_owned();
    let dir = world.app.db.dir.path().to_owned();
    let (client, _, _) = terminal(world, &till.qingdao_admin, &merchant, &dir).await;
    let batch = world.batch(json!({})).await;
    let (citizen, voucher) = till.voucher(1, batch["id"].as_str().expect("id")).await;
    let qr = till.qr(&citizen, &voucher).await;
    let order =
        RedeemRequest { qr, order_amount: "100.00".into(), order_ref: "=2+3".into(), idempotency_key: None };
    client.redeem(order).await.expect("redeem");
    world.clock.advance_us(60_000_000);
    let finance = world.app.staff_key(Role::Finance, "370000").await;
    let cut_off = wenhui::domain::time::Clock::now(world.clock.as_ref()).to_string();
    let body = json!({"season_id": world.season_id, "cut_off": cut_off});
    let (status, settled) = world.app.post_idem("/v1/settlements", Some(&finance), "settle", body).await;
    assert_eq!(status, 201, "{settled}");
    let settlement = settled["settlement_id"].as_str().expect("id");

    let payout = get_text(&world.app, &format!("/v1/settlements/{settlement}/payout.csv"), &finance).await;
    let rows = csv_rows(&payout);
    let line = rows.iter().find(|r| r[1] == merchant).expect("the merchant's line");
    let expected = [format!("'{FORMULA_NAME}"), format!("'{FORMULA_BANK}"), "6222000011114444".into()];
    assert_eq!(line[2..5], expected, "{payout}");
    assert_eq!((line[5].as_str(), line[7].as_str()), (format!("'{FORMULA_HOLDER}").as_str(), "10.00"));

    let season = &world.season_id;
    let path = format!("/v1/merchants/{merchant}/statement?season={season}&format=csv");
    let statement = csv_rows(&get_text(&world.app, &path, &finance).await);
    assert_eq!(statement[0][3], "订单号");
    let redemption = statement.iter().find(|r| r[1] == "核销").expect("the redemption");
    assert_eq!((redemption[3].as_str(), redemption[5].as_str()), ("'=2+3", "10.00"));

    let path = format!("/v1/seasons/{season}/report?format=csv&view=merchants");
    let report = csv_rows(&get_text(&world.app, &path, &finance).await);
    let row = report.iter().find(|r| r[0] == merchant).expect("the merchant's row");
    assert_eq!((row[1].as_str(), row[7].as_str()), (format!("'{FORMULA_NAME}").as_str(), "10.00"));
    // In English (lang=en) too.
    let report = csv_rows(&get_text(&world.app, &format!("{path}&lang=en"), &finance).await);
    let row = report.iter().find(|r| r[0] == merchant).expect("the merchant's row");
    assert_eq!((row[1].as_str(), row[6].as_str()), (format!("'{FORMULA_NAME}").as_str(), "10.00"));

    let response = world
        .app
        .client
        .get(world.app.url(&format!("/v1/seasons/{season}/report?format=xlsx")))
        .bearer_auth(&finance)
        .send()
        .await
        .expect("xlsx");
    let bytes = response.bytes().await.expect("bytes");
    let mut workbook = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).expect("a zip archive");
    let mut strings = String::new();
    for index in 0..workbook.len() {
        let mut file = workbook.by_index(index).expect("a file");
        let name = file.name().expect("a file name").into_owned();
        let mut xml = String::new();
        file.read_to_string(&mut xml).expect("xml");
        if name.starts_with("xl/worksheets/") {
            assert!(!xml.contains("<f>") && !xml.contains("<f "), "a formula cell in {name}");
        }
        if name == "xl/sharedStrings.xml" {
            strings = xml;
        }
    }
    assert!(strings.contains("=HYPERLINK("), "the name is a string cell: {strings}");
}

fn server_addr(app: &TestApp) -> SocketAddr {
    app.server.as_ref().expect("running").addr
}

/// Reads until the server closes the connection; how long that took, None if it did not
/// within `patience`.
async fn closed_within(stream: &mut TcpStream, patience: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(patience, read_all).await.ok().map(|()| started.elapsed())
}

/// One HTTP/1.1 answer read off a connection: its head (lower case) and its body.
async fn read_answer(stream: &mut TcpStream) -> (String, String) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(read > 0, "the connection closed before an answer: {}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("a length"))
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(read > 0, "the connection closed within a body");
        bytes.extend_from_slice(&chunk[..read]);
    }
    (head, String::from_utf8_lossy(&bytes[head_end..head_end + length]).into_owned())
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: wenhui\r\n\r\n";

/// Half a request is cut off after the header read time; a new connection that sends nothing
/// too; a kept-alive connection may stay silent longer than that between requests, but not
/// longer than the idle time.
async fn slow_and_idle_connections_are_closed(backend: Backend) {
    let limits = ConnectionLimits {
        header_read: Duration::from_millis(500),
        keep_alive_idle: Duration::from_millis(2_000),
        max_connections: 100,
    };
    let app = TestApp::spawn_configured(backend, |config| config.connection_limits = limits).await;
    let addr = server_addr(&app);

    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: wenhui\r\n").await.expect("write");
    let waited = closed_within(&mut half, Duration::from_secs(5)).await;
    let waited = waited.expect("half a request is closed, not kept open");
    assert!(waited >= Duration::from_millis(400), "not before its time: {waited:?}");

    let mut silent = TcpStream::connect(addr).await.expect("connect");
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await.is_some(), "a silent connection too");

    let mut kept = TcpStream::connect(addr).await.expect("connect");
    kept.write_all(HEALTHZ).await.expect("write");
    let (head, _) = read_answer(&mut kept).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    kept.write_all(HEALTHZ).await.expect("write after a pause longer than the header time");
    let (head, _) = read_answer(&mut kept).await;
    assert!(head.starts_with("http/1.1 200"), "kept alive between requests: {head}");
    let waited = closed_within(&mut kept, Duration::from_secs(6)).await;
    let waited = waited.expect("an idle kept-alive connection is closed");
    assert!(waited >= Duration::from_millis(1_500), "after the idle time, not the header time: {waited:?}");

    // Half a head on a kept-alive connection: the header time runs from its first byte, though
    // the idle time would allow longer.
    let mut slow_next = TcpStream::connect(addr).await.expect("connect");
    slow_next.write_all(HEALTHZ).await.expect("write");
    let (head, _) = read_answer(&mut slow_next).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    slow_next.write_all(b"GET /healthz HTTP/1.1\r\n").await.expect("write half the next head");
    let waited = closed_within(&mut slow_next, Duration::from_secs(5)).await;
    let waited = waited.expect("half a head on a kept-alive connection is closed");
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(1_200)).contains(&waited),
        "the header time from the head's first byte, not the idle time: {waited:?}"
    );
}

/// With room for two connections, a third waits unanswered until one of the two closes.
async fn connections_beyond_the_limit_wait(backend: Backend) {
    let limits = ConnectionLimits { max_connections: 2, ..ConnectionLimits::default() };
    let app = TestApp::spawn_configured(backend, |config| config.connection_limits = limits).await;
    let addr = server_addr(&app);
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(HEALTHZ).await.expect("write");
        let (head, _) = read_answer(&mut stream).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        open.push(stream);
    }
    let mut third = TcpStream::connect(addr).await.expect("the kernel takes it into the backlog");
    third.write_all(HEALTHZ).await.expect("write");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut byte)).await;
    assert!(early.is_err(), "the third connection is not served while two are open: {early:?}");
    drop(open.pop());
    let (head, _) = read_answer(&mut third).await;
    assert!(head.starts_with("http/1.1 200"), "served once there is room: {head}");
}

/// A POST whose body is still coming is refused 401 before it is read: the answer says
/// `Connection: close`, so a keep-alive client does not send its next request on a connection
/// the server is closing. An answer that read its request whole keeps the connection.
async fn an_answer_before_the_body_says_connection_close(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let addr = server_addr(&app);
    let body = json!({"role": "finance", "region": "370000", "label": "x".repeat(60)}).to_string();
    let head = format!(
        "POST /v1/staff/keys HTTP/1.1\r\nHost: wenhui\r\nAuthorization: Bearer wh_sk_not_a_key\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write the head");
    stream.write_all(&body.as_bytes()[..10]).await.expect("write part of the body");
    let (answer, error) = read_answer(&mut stream).await;
    assert!(answer.starts_with("http/1.1 401"), "{answer}{error}");
    let closes = answer.lines().any(|l| l.trim() == "connection: close");
    if !closes {
        // Without the header, the client may use the connection again: it must then work.
        stream.write_all(&body.as_bytes()[10..]).await.expect("the rest of the body");
        stream.write_all(HEALTHZ).await.expect("the next request");
        let (next, _) = read_answer(&mut stream).await;
        assert!(next.starts_with("http/1.1 200"), "{next}");
    }

    // A refusal of a request read whole (a GET) keeps the connection alive.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = b"GET /v1/staff/me HTTP/1.1\r\nHost: wenhui\r\nAuthorization: Bearer nope\r\n\r\n";
    stream.write_all(request).await.expect("write");
    let (answer, _) = read_answer(&mut stream).await;
    assert!(answer.starts_with("http/1.1 401") && !answer.contains("connection: close"), "{answer}");
    stream.write_all(HEALTHZ).await.expect("the next request");
    let (next, _) = read_answer(&mut stream).await;
    assert!(next.starts_with("http/1.1 200"), "{next}");
}

async fn post_raw(
    app: &TestApp,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut request = app.client.post(app.url(path)).bearer_auth(key).body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(request.send().await.expect("send")).await
}

/// The small ones: a replayed claim says so; two Idempotency-Keys, a body that is not JSON, a
/// season of ten thousand years and an amount with a space are refused.
async fn small_refusals(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    let batch = world.batch(json!({})).await;
    let batch = batch["id"].as_str().expect("id").to_owned();
    let citizen = world.citizen(1).await;
    let claim = || {
        world
            .app
            .client
            .post(world.app.url(&format!("/v1/batches/{batch}/claims")))
            .bearer_auth(&citizen)
            .header("idempotency-key", "claim-once")
            .json(&json!({}))
    };
    let first = claim().send().await.expect("claim");
    assert_eq!(first.status().as_u16(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none(), "the first answer is no replay");
    let again = claim().send().await.expect("claim again");
    assert_eq!(again.status().as_u16(), 201);
    assert_eq!(again.headers().get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));

    let admin = till.qingdao_admin.clone();
    let merchant = json!({"name": "书店", "credit_code": credit_code(42), "category": "bookstore", "city": "370200",
        "settlement_account": {"bank": "青岛银行", "account_no": "6222000011115555", "account_name": "某书店"}})
    .to_string();
    let json_type = ("content-type", "application/json");
    let twice = [json_type, ("idempotency-key", "m-1"), ("idempotency-key", "m-2")];
    let (status, answer) = post_raw(&world.app, "/v1/merchants", &admin, &twice, &merchant).await;
    assert_eq!((status, code(&answer)), (400, "duplicate_idempotency_key"), "{answer}");
    let plain = [("content-type", "text/plain"), ("idempotency-key", "m-3")];
    let (status, answer) = post_raw(&world.app, "/v1/merchants", &admin, &plain, &merchant).await;
    assert_eq!((status, code(&answer)), (415, "unsupported_media_type"), "{answer}");
    let (status, answer) =
        post_raw(&world.app, "/v1/merchants", &admin, &[json_type, ("idempotency-key", "m-4")], &merchant)
            .await;
    assert_eq!(status, 201, "the same request, well typed: {answer}");

    let season = |starts: &str, ends: &str| {
        json!({"name": "季", "province": "370000", "starts_at": starts, "ends_at": ends,
               "budgets": [{"funder": "370000", "amount": "100.00"}]})
    };
    for (n, (starts, ends)) in [
        ("0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z"),
        ("1999-12-31T00:00:00Z", "2000-06-01T00:00:00Z"),
        ("2100-06-01T00:00:00Z", "2101-06-01T00:00:00Z"),
        ("2026-01-01T00:00:00Z", "2032-01-01T00:00:00Z"),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("bad-season-{n}");
        let (status, answer) =
            world.app.post_idem("/v1/seasons", Some(&world.province_admin), &key, season(starts, ends)).await;
        assert_eq!((status, code(&answer)), (422, "invalid_dates"), "{starts} to {ends}: {answer}");
    }
    let key = "season-ok";
    let body = season("2026-01-01T00:00:00Z", "2030-12-31T00:00:00Z");
    let (status, answer) = world.app.post_idem("/v1/seasons", Some(&world.province_admin), key, body).await;
    assert_eq!(status, 201, "five years less a day: {answer}");

    let (citizen, voucher) = till.voucher(2, &batch).await;
    let qr = till.qr(&citizen, &voucher).await;
    let now_s = wenhui::domain::time::Timestamp::now().unix_us() / 1_000_000;
    let body = json!({"qr": qr, "order_amount": " 100.00", "order_ref": "space-1"});
    let (status, answer) =
        signed(world, till.terminal_id, till.key.key_pair(), now_s, "nonce-space-amount-0001", &body).await;
    assert_eq!((status, code(&answer)), (422, "invalid_body"), "{answer}");
    let redeemed = till.redeem(&qr, "100.00", "space-2").await.expect("the voucher is still active");
    assert_eq!(redeemed.discount, "10.00");
}

/// Names and labels with a direction override, a zero-width character or a byte-order mark,
/// or made only of U+0085 or U+2028, are refused 422 rather than stored.
async fn invisible_characters_in_names_are_refused(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    let admin = till.qingdao_admin.clone();
    for (n, name) in
        ["书\u{202E}店", "书\u{200B}店", "\u{FEFF}书店", "书\u{2066}店\u{2069}", "\u{2028}", "\u{85}"]
            .into_iter()
            .enumerate()
    {
        let merchant = json!({"name": name, "credit_code": credit_code(50 + n as u32), "category": "bookstore",
            "city": "370200", "settlement_account": {"bank": "青岛银行", "account_no": "6222000011116666", "account_name": "某书店"}});
        let key = format!("hidden-{n}");
        let (status, answer) = world.app.post_idem("/v1/merchants", Some(&admin), &key, merchant).await;
        assert_eq!((status, code(&answer)), (422, "invalid_field"), "{name:?}: {answer}");

        let body = json!({"role": "finance", "region": "370200", "label": name, "name": "某人", "phone": "13800138000"});
        let (status, answer) = world.app.post("/v1/staff/keys", Some(&admin), body).await;
        assert_eq!((status, code(&answer)), (422, "invalid_label"), "{name:?}: {answer}");
        let body = json!({"role": "finance", "region": "370200", "name": name, "phone": "13800138000"});
        let (status, answer) = world.app.post("/v1/staff/keys", Some(&admin), body).await;
        assert_eq!((status, code(&answer)), (422, "invalid_name"), "a person's {name:?}: {answer}");
    }
    let body = json!({"name": "季\u{202E}", "province": "370000", "starts_at": world.at(0), "ends_at": world.at(86_400),
        "budgets": [{"funder": "370000", "amount": "100.00"}]});
    let (status, answer) =
        world.app.post_idem("/v1/seasons", Some(&world.province_admin), "hidden-season", body).await;
    assert_eq!((status, code(&answer)), (422, "invalid_name"), "{answer}");
    let body =
        json!({"role": "finance", "region": "370200", "label": "", "name": "某人", "phone": "13800138000"});
    let (status, answer) = world.app.post("/v1/staff/keys", Some(&admin), body).await;
    assert_eq!(status, 202, "an empty label is still allowed: {answer}");
}
