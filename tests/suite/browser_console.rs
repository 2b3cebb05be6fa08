//! The finance console's money side in a real browser (the harness of `browser.rs`): on a fresh
//! server with a season and two redemptions, the province's finance officer signs in, reads the
//! dashboard (every figure compared with the JSON report), sees reconciliation without a break,
//! runs a settlement, downloads its payout file (compared with the API's, byte for byte) and
//! records the bank's payout, and closes the season after its confirmation; a city's finance
//! officer sees its own city's merchants and figures only, and is not offered what it may not do.
//! No console error, no request to another origin; screenshots at 1280×800 under
//! `target/screenshots/console-*.png`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fantoccini::Locator;
use serde_json::{Value, json};
use wenhui::domain::staff::Role;

use crate::both_backends;
use crate::browser::Browser;
use crate::common::Backend;
use crate::finance::Script;

/// Every figure table of the page: caption → row key → field → the cell's text.
type Figures = BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>;

async fn figures(browser: &Browser) -> Figures {
    let script = "const out = {};
        for (const table of document.querySelectorAll('#view table.figures')) {
          const caption = table.querySelector('caption');
          const rows = {};
          for (const tr of table.querySelectorAll('tbody tr[data-key]')) {
            const cells = {};
            for (const cell of tr.querySelectorAll('[data-field]')) cells[cell.dataset.field] = cell.textContent;
            rows[tr.dataset.key] = cells;
          }
          out[caption ? caption.textContent : ''] = rows;
        }
        return out;";
    let value = browser.client.execute(script, vec![]).await.expect("the figures");
    serde_json::from_value(value).expect("figures")
}

/// `¥1,234.50` → `1234.50`; a count as it is.
fn plain(text: &str) -> String {
    text.replace(['¥', ','], "")
}

/// The page's row `key` of the table `caption`.
fn row<'a>(figures: &'a Figures, caption: &str, key: &str) -> &'a BTreeMap<String, String> {
    figures
        .get(caption)
        .and_then(|rows| rows.get(key))
        .unwrap_or_else(|| panic!("no row {key} in the table {caption}: {figures:#?}"))
}

/// Each of `fields` of every JSON row equals the page's row of the same key.
fn same_rows(figures: &Figures, caption: &str, rows: &Value, key: &str, fields: &[&str]) {
    let rows = rows.as_array().expect("rows");
    assert_eq!(figures.get(caption).map(BTreeMap::len), Some(rows.len()), "{caption}: {figures:#?}");
    for json_row in rows {
        let shown = row(figures, caption, json_row[key].as_str().expect("a key"));
        for field in fields {
            let expected = match &json_row[*field] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            assert_eq!(plain(&shown[*field]), expected, "{caption} {key} {field}");
        }
    }
}

fn fen(yuan: &str) -> i64 {
    wenhui::domain::money::Fen::parse_yuan(yuan).expect("yuan").as_fen()
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

pub(crate) async fn sign_in(browser: &Browser, base: &str, key: &str) {
    browser.client.goto(&format!("{base}/console/")).await.expect("load the console");
    let input = browser.wait_for("#staff-key").await;
    input.send_keys(key).await.expect("type");
    browser.client.find(Locator::Css("#sign-in button")).await.expect("button").click().await.expect("click");
    browser.wait_for("#who:not([hidden]) .who").await;
}

async fn sign_out(browser: &Browser) {
    browser.wait_for("#sign-out").await.click().await.expect("sign out");
    browser.wait_for("#sign-in:not([hidden])").await;
}

/// Opens a section from the nav and waits until it is drawn.
pub(crate) async fn open(browser: &Browser, section: &str) {
    let button = format!("#sections button[data-section=\"{section}\"]");
    browser.wait_for(&button).await.click().await.expect("open the section");
    browser.wait_for(&format!(".pane[data-section=\"{section}\"]:not([aria-busy])")).await;
}

/// Waits until every chart of the dashboard is shown (its SVG fetched with the key).
async fn charts_drawn(browser: &Browser) {
    for _ in 0..100 {
        let drawn = browser
            .client
            .execute("return [...document.querySelectorAll('.chart img')].filter(i => i.complete && i.naturalWidth > 0 && i.src.startsWith('data:image/svg+xml')).length", vec![])
            .await
            .expect("charts");
        if drawn.as_u64() == Some(5) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the five charts were not drawn");
}

/// Whether the element `css` comes to contain `text` within 10 s (read in the page, so a section
/// drawn again meanwhile is read afresh).
async fn shows(browser: &Browser, css: &str, text: &str) -> bool {
    let script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''";
    for _ in 0..100 {
        let now = browser.client.execute(script, vec![json!(css)]).await.expect("read");
        if now.as_str().is_some_and(|t| t.contains(text)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn nav(browser: &Browser) -> Vec<String> {
    browser.texts("#sections button").await
}

/// Requests the page made, less the charts' and the payout file's in-page URLs (data:, blob:),
/// which are not requests to any origin.
async fn requested(browser: &Browser) -> Vec<String> {
    browser
        .requested()
        .await
        .into_iter()
        .filter(|u| !u.starts_with("data:") && !u.starts_with("blob:"))
        .collect()
}

pub(crate) async fn clean(browser: &Browser, base: &str) {
    assert_eq!(browser.errors().await, Vec::<Value>::new(), "the browser logged errors");
    let requested = requested(browser).await;
    assert!(requested.iter().all(|u| u.starts_with(&format!("{base}/"))), "another origin: {requested:?}");
}

/// Downloads go to `dir` (chromedriver's Chromium command endpoint, CDP).
async fn downloads_to(browser: &Browser, dir: &Path) {
    let url = format!("{}/session/{}/chromium/send_command", browser.driver_url, browser.session);
    let command = json!({"cmd": "Page.setDownloadBehavior",
                         "params": {"behavior": "allow", "downloadPath": dir.display().to_string()}});
    let answer = reqwest::Client::new().post(url).json(&command).send().await.expect("send a command");
    assert!(answer.status().is_success(), "{:?}", answer.text().await);
}

async fn downloaded(path: &Path) -> Vec<u8> {
    for _ in 0..100 {
        if let Ok(bytes) = std::fs::read(path)
            && !bytes.is_empty()
        {
            return bytes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} was not downloaded", path.display());
}

both_backends!(the_finance_console_in_a_real_browser);

async fn the_finance_console_in_a_real_browser(backend: Backend) {
    let browser = Browser::start().await;
    // Two vouchers redeemed: at a Qingdao bookstore and a Jinan cinema.
    let (s, _, _) = Script::two_redeemed_two_claimed(backend).await;
    let base = s.world.app.base.clone();
    let season = s.world.season_id.clone();
    let shot = |name: &str| format!("console-{name}-{backend:?}").to_lowercase();
    browser.viewport(1280, 800).await;

    // The province's finance officer: the dashboard equals the JSON report.
    sign_in(&browser, &base, &s.finance).await;
    let offered = nav(&browser).await;
    assert_eq!(offered[..4], ["活动看板", "对账", "结算", "结季"], "the money sections first: {offered:?}");
    // Finance opens no season or batch: the admin side's seasons section is not offered.
    assert!(!offered.iter().any(|s| s == "活动与批次"), "{offered:?}");
    browser.wait_for(".pane[data-section=\"dashboard\"]:not([aria-busy])").await;
    charts_drawn(&browser).await;
    let (status, report) = s.world.app.get(&format!("/v1/seasons/{season}/report"), Some(&s.finance)).await;
    assert_eq!(status, 200, "{report}");
    let shown = figures(&browser).await;
    let tile = |field: &str| format!(".tiles [data-field=\"{field}\"]");
    assert_eq!(
        plain(&browser.text(&tile("discount")).await),
        report["totals"]["discount"].as_str().expect("discount")
    );
    assert_eq!(report["totals"]["discount"], "20.00", "two vouchers of 10.00 redeemed");
    assert_eq!(
        plain(&browser.text(&tile("order_amount")).await),
        report["totals"]["order_amount"].as_str().expect("order amount")
    );
    assert_eq!(
        browser.text(&tile("leverage")).await,
        format!("{} 倍", report["totals"]["leverage"].as_str().expect("leverage"))
    );
    let money = ["appropriated", "reserved", "outstanding", "redeemed", "settled", "paid", "available"];
    same_rows(&shown, "各出资方资金", &report["funders"], "funder", &money);
    same_rows(&shown, "批次", &report["batches"], "batch_id", &["stock", "claimed", "redeemed", "expired"]);
    let sales = ["redemptions", "reversals", "discount", "order_amount"];
    same_rows(&shown, "各品类核销", &report["categories"], "key", &sales);
    same_rows(&shown, "商户", &report["merchants"], "key", &sales);
    // By city: the JSON report's merchants summed per city, in fen.
    let mut cities: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for m in report["merchants"].as_array().expect("merchants") {
        let city = cities.entry(m["city"].as_str().expect("city").to_owned()).or_default();
        city.0 += m["redemptions"].as_i64().expect("count");
        city.1 += fen(m["discount"].as_str().expect("discount"));
        city.2 += fen(m["order_amount"].as_str().expect("order amount"));
    }
    assert_eq!(cities.keys().collect::<Vec<_>>(), ["370100", "370200"]);
    assert_eq!(shown["各城市核销"].len(), cities.len());
    for (city, (n, discount, order)) in &cities {
        let shown = row(&shown, "各城市核销", city);
        assert_eq!(shown["redemptions"], n.to_string(), "{city}");
        assert_eq!(plain(&shown["discount"]), yuan(*discount), "{city}");
        assert_eq!(plain(&shown["order_amount"]), yuan(*order), "{city}");
    }
    assert_eq!(row(&shown, "各出资方资金", "370000")["funder"], "山东省（370000）");
    // The charts are the API's, behind its access checks, labelled in Chinese.
    let chart = format!("/v1/seasons/{season}/report?format=svg&view=funders");
    let svg =
        s.world.app.client.get(s.world.app.url(&chart)).bearer_auth(&s.finance).send().await.expect("chart");
    assert_eq!(svg.status(), 200);
    assert_eq!(svg.headers()["content-type"], "image/svg+xml; charset=utf-8");
    let svg = svg.text().await.expect("svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("山东省") && svg.contains("青岛市") && svg.contains("拨付")
    );
    assert!(svg.contains("¥"), "amounts in yuan: {svg}");
    let (status, _) = s.world.app.get(&chart, None).await;
    assert_eq!(status, 401, "a chart needs a staff key");
    let nope = format!("/v1/seasons/{season}/report?format=svg&view=nope");
    let (status, refusal) = s.world.app.get(&nope, Some(&s.finance)).await;
    assert_eq!((status, crate::common::code(&refusal)), (422, "invalid_view"), "{refusal}");
    let other = s.world.app.staff_key(Role::Finance, "330000").await;
    let (status, _) = s.world.app.get(&chart, Some(&other)).await;
    assert_eq!(status, 403, "another province's finance sees no chart of this season");
    browser.screenshot(&shot("dashboard")).await;
    let scroll = "document.querySelector(arguments[0]).scrollIntoView(); return true";
    browser.client.execute(scroll, vec![json!(".charts .chart:nth-child(2)")]).await.expect("scroll");
    browser.screenshot(&shot("dashboard-charts")).await;
    browser.client.execute(scroll, vec![json!("table.figures")]).await.expect("scroll");
    browser.screenshot(&shot("dashboard-tables")).await;
    clean(&browser, &base).await;

    // Reconciliation: every check passes.
    open(&browser, "reconciliation").await;
    assert!(browser.text(".banner.ok").await.starts_with("对账无差异"));
    let checks = figures(&browser).await;
    let (_, reconciliation) =
        s.world.app.get(&format!("/v1/seasons/{season}/reconciliation"), Some(&s.finance)).await;
    let rows = &checks[""];
    assert_eq!(rows.len(), reconciliation["checks"].as_array().map(Vec::len).expect("checks"));
    assert!(rows.values().all(|r| r["ok"] == "通过" && r["breaks"] == "0"), "{rows:#?}");
    browser.screenshot(&shot("reconciliation")).await;

    // A settlement up to now by the server's clock (which the test moves past the page's).
    s.world.clock.set(s.now.plus_seconds(600));
    open(&browser, "settlements").await;
    browser.wait_for("#no-settlements").await;
    browser.wait_for("#run-settlement").await.click().await.expect("run");
    let settled_row = "table.settlements tbody tr[data-key]";
    browser.wait_for(settled_row).await;
    let (_, page) = s.world.app.get(&format!("/v1/seasons/{season}/settlements"), Some(&s.finance)).await;
    let settlement = &page["settlements"][0];
    assert_eq!(page["settlements"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(settlement["total"], "20.00");
    let id = settlement["settlement_id"].as_str().expect("id").to_owned();
    let listed = figures(&browser).await;
    let listed = row(&listed, "结算记录（最新在前）", &id);
    assert_eq!(plain(&listed["total"]), "20.00");
    assert_eq!(listed["merchants"], "2");
    assert_eq!(listed["status"], "已完成");
    // The payout file, as the bank gets it: the API's file, byte for byte.
    let dir = tempfile::tempdir().expect("a download folder");
    downloads_to(&browser, dir.path()).await;
    browser.wait_for("button[data-action=\"download\"]").await.click().await.expect("download");
    let file = downloaded(&dir.path().join(format!("payout-{id}.csv"))).await;
    let api_file = s
        .world
        .app
        .client
        .get(s.world.app.url(&format!("/v1/settlements/{id}/payout.csv")))
        .bearer_auth(&s.finance)
        .send()
        .await
        .expect("payout file")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(file, api_file.to_vec(), "the downloaded payout file is the API's");
    let text = String::from_utf8(file).expect("UTF-8");
    assert!(text.starts_with('\u{feff}'), "a byte-order mark for Excel");
    assert_eq!(text.lines().filter(|l| l.contains("10.00")).count(), 2, "a line per merchant: {text}");
    assert!(text.lines().next().is_some_and(|h| h.contains("商户")), "Chinese headers: {text}");
    // The bank's payout, recorded once.
    browser
        .wait_for("form[data-action=\"paid\"] input")
        .await
        .send_keys("BANK-2026-001")
        .await
        .expect("type");
    browser
        .client
        .find(Locator::Css("form[data-action=\"paid\"] button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("record");
    let paid_cell = format!("tr[data-key=\"{id}\"] td[data-field=\"paid\"]");
    assert!(shows(&browser, &paid_cell, "BANK-2026-001").await, "the payout is shown");
    let (_, paid) = s.world.app.get(&format!("/v1/settlements/{id}"), Some(&s.finance)).await;
    assert_eq!(paid["settlement"]["payout_ref"], "BANK-2026-001", "{paid}");

    assert_eq!(browser.texts("form[data-action=\"paid\"]").await.len(), 0, "paid: no second payout offered");
    browser.screenshot(&shot("settlements")).await;
    open(&browser, "reconciliation").await;
    assert!(browser.text(".banner.ok").await.starts_with("对账无差异"), "no break after the settlement");
    clean(&browser, &base).await;
    sign_out(&browser).await;

    // Qingdao's finance officer: its own city's merchants and figures, and no action it may not take.
    let city = s.world.app.staff_key(Role::Finance, "370200").await;
    sign_in(&browser, &base, &city).await;
    assert_eq!(browser.text(".who").await, "青岛市（370200） · 财务");
    let offered = nav(&browser).await;
    assert_eq!(offered[..2], ["活动看板", "结算"], "{offered:?}");
    assert!(
        !offered.iter().any(|s| s == "对账" || s == "结季"),
        "no reconciliation or closing for a city: {offered:?}"
    );
    browser.wait_for(".pane[data-section=\"dashboard\"]:not([aria-busy])").await;
    charts_drawn(&browser).await;
    let (_, city_report) = s.world.app.get(&format!("/v1/seasons/{season}/report"), Some(&city)).await;
    assert_eq!(city_report["city"], "370200");
    let shown = figures(&browser).await;
    same_rows(&shown, "各出资方资金", &city_report["funders"], "funder", &money);
    same_rows(&shown, "商户", &city_report["merchants"], "key", &sales);
    assert_eq!(shown["各出资方资金"].keys().collect::<Vec<_>>(), ["370200"]);
    assert_eq!(shown["各城市核销"].keys().collect::<Vec<_>>(), ["370200"], "no other city's figures");
    let merchants: Vec<&String> = shown["商户"].keys().collect();
    assert_eq!(merchants, [&s.bookstore.0], "the Qingdao bookstore only, not the Jinan cinema");
    assert!(!shown["商户"].contains_key(&s.cinema.0));
    let page_text = browser.text("#view").await;
    assert!(!page_text.contains("济南"), "nothing of Jinan: {page_text}");
    assert_eq!(
        plain(&browser.text(&tile("discount")).await),
        city_report["totals"]["discount"].as_str().expect("discount")
    );
    browser.screenshot(&shot("city")).await;
    open(&browser, "settlements").await;
    assert_eq!(browser.texts("#run-settlement").await.len(), 0, "a city's finance does not settle");
    assert_eq!(browser.texts("form[data-action=\"paid\"]").await.len(), 0);
    clean(&browser, &base).await;
    sign_out(&browser).await;

    // Closing, after the season ended: a confirmation that names the season first.
    s.world.clock.set(s.now.plus_seconds(2 * 3_600));
    sign_in(&browser, &base, &s.finance).await;
    open(&browser, "close").await;
    browser.wait_for("#close-season").await.click().await.expect("close");
    let confirm = browser.wait_for("#close-confirm").await;
    assert!(confirm.attr("disabled").await.expect("attr").is_some(), "not before the name is typed");
    browser.wait_for("#close-confirm-name").await.send_keys("2026 文化消费季").await.expect("type");
    browser.screenshot(&shot("close-confirm")).await;
    confirm.click().await.expect("confirm");
    let closed = browser.text("[data-field=\"closed\"]").await;
    assert!(closed.starts_with("已结季") && closed.ends_with("对账无差异。"), "{closed}");
    let (_, after) = s.world.app.get(&format!("/v1/seasons/{season}"), None).await;
    assert_eq!(after["status"], "closed", "{after}");
    browser.screenshot(&shot("closed")).await;
    clean(&browser, &base).await;
    browser.client.clone().close().await.expect("close the browser");
}

both_backends!(the_holds_section_in_a_real_browser);

/// The 暂扣结算 section: finance holds the bookstore and the cinema from the page, the settlement
/// holds both lines, one officer releases the cinema's and proposes rejecting the bookstore's
/// (the approve button is disabled for them), a second officer approves the rejection.
async fn the_holds_section_in_a_real_browser(backend: Backend) {
    let browser = Browser::start().await;
    let (s, _, _) = Script::two_redeemed_two_claimed(backend).await;
    let base = s.world.app.base.clone();
    let season = s.world.season_id.clone();
    let shot = |name: &str| format!("console-holds-{name}-{backend:?}").to_lowercase();
    browser.viewport(1280, 800).await;
    sign_in(&browser, &base, &s.finance).await;
    open(&browser, "holds").await;
    for (merchant, reason) in [(&s.bookstore.0, "投诉：疑似满额套现"), (&s.cinema.0, "投诉：票价虚高")]
    {
        let pick = "document.querySelector('#hold-merchant').value = arguments[0]; return true";
        browser.client.execute(pick, vec![json!(merchant)]).await.expect("pick the merchant");
        browser.wait_for("#hold-reason").await.send_keys(reason).await.expect("type the reason");
        browser
            .client
            .find(Locator::Css("#hold-form button"))
            .await
            .expect("button")
            .click()
            .await
            .expect("hold");
        let cell = format!("tr[data-key=\"{merchant}\"] td[data-field=\"reason\"]");
        assert!(shows(&browser, &cell, reason).await, "the hold is listed");
    }
    let (_, holds) = s.world.app.get(&format!("/v1/seasons/{season}/holds"), Some(&s.finance)).await;
    assert_eq!(holds["holds"].as_array().map(Vec::len), Some(2), "{holds}");

    // The settlement holds both lines; the section lists them.
    s.world.clock.set(s.now.plus_seconds(600));
    let (status, settled) = s.settle("holds-1").await;
    assert_eq!((status, settled["held"].as_i64()), (201, Some(2)), "{settled}");
    let id = settled["settlement_id"].as_str().expect("id").to_owned();
    open(&browser, "settlements").await;
    open(&browser, "holds").await;
    let line = |merchant: &str| format!("tr[data-key=\"{id}:{merchant}\"]");
    let (bookstore, cinema) = (line(&s.bookstore.0), line(&s.cinema.0));
    assert!(shows(&browser, &format!("{bookstore} td[data-field=\"status\"]"), "暂扣中").await);
    assert_eq!(plain(&browser.text(&format!("{cinema} td[data-field=\"amount\"]")).await), "10.00");

    // Release the cinema's line; propose rejecting the bookstore's.
    let note_form = |row: &str, action: &str| format!("{row} form[data-action=\"{action}\"]");
    browser
        .wait_for(&format!("{} input", note_form(&cinema, "release")))
        .await
        .send_keys("核实为正常交易")
        .await
        .expect("type");
    browser
        .wait_for(&format!("{} button", note_form(&cinema, "release")))
        .await
        .click()
        .await
        .expect("release");
    assert!(shows(&browser, &format!("{cinema} td[data-field=\"status\"]"), "已放行").await, "released");
    let propose = note_form(&bookstore, "propose-reject");
    browser
        .wait_for(&format!("{propose} input"))
        .await
        .send_keys("同一顾客反复满额消费，补贴不予结算")
        .await
        .expect("type");
    browser.wait_for(&format!("{propose} button")).await.click().await.expect("propose");
    let approve = format!("{bookstore} button[data-action=\"approve-reject\"]");
    browser.wait_for(&approve).await;
    let disabled = browser
        .client
        .execute("return document.querySelector(arguments[0]).disabled", vec![json!(approve)])
        .await
        .expect("read");
    assert_eq!(disabled, json!(true), "the proposer cannot approve");
    assert!(shows(&browser, &format!("{bookstore} td[data-field=\"notes\"]"), "待批准").await);
    browser.screenshot(&shot("proposed")).await;
    // A merchant's name stays on one line beside the action forms, up to 12 Chinese characters.
    let lines_of_names = "return [...document.querySelectorAll('table.holds [data-field=merchant_name], \
        table.held-lines [data-field=merchant_name]')].map((cell) => { if (arguments[0]) cell.textContent = arguments[0]; \
        const range = document.createRange(); range.selectNodeContents(cell); \
        return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size; })";
    for name in [Value::Null, json!("青岛市市南区新华书店总店")] {
        let lines = browser.client.execute(lines_of_names, vec![name.clone()]).await.expect("measure");
        assert_eq!(lines, json!([1, 1, 1, 1]), "one line per name ({name}): {lines}");
    }
    browser.screenshot(&shot("long-name")).await;
    clean(&browser, &base).await;
    sign_out(&browser).await;

    // A second finance officer approves the rejection.
    let second = s.world.app.staff_key(Role::Finance, "370000").await;
    sign_in(&browser, &base, &second).await;
    open(&browser, "holds").await;
    browser.wait_for(&format!("{approve}:not([disabled])")).await.click().await.expect("approve");
    assert!(shows(&browser, &format!("{bookstore} td[data-field=\"status\"]"), "已拒付").await, "rejected");
    let (_, holds) = s.world.app.get(&format!("/v1/seasons/{season}/holds"), Some(&s.finance)).await;
    let statuses: Vec<&str> = holds["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "rejected").count(), 1, "{holds}");
    assert_eq!(statuses.iter().filter(|s| **s == "released").count(), 1, "{holds}");
    browser.screenshot(&shot("decided")).await;

    // The cinema's hold is lifted with a note: the list shows it lifted, with the note.
    let hold = format!("tr[data-key=\"{}\"]", s.cinema.0);
    let lift = format!("{hold} form[data-action=\"lift\"]");
    browser.wait_for(&format!("{lift} input")).await.send_keys("已核实票价正常").await.expect("type");
    browser.wait_for(&format!("{lift} button")).await.click().await.expect("lift");
    assert!(shows(&browser, &format!("{hold} td[data-field=\"in_force\"]"), "已解除").await, "lifted");
    assert!(shows(&browser, &format!("{hold} td[data-field=\"lift_note\"]"), "已核实票价正常").await);
    let bookstore_hold = format!("tr[data-key=\"{}\"] form[data-action=\"lift\"]", s.bookstore.0);
    browser.wait_for(&bookstore_hold).await;
    let (_, holds) = s.world.app.get(&format!("/v1/seasons/{season}/holds"), Some(&s.finance)).await;
    let lifted = holds["holds"].as_array().expect("holds").iter().filter(|h| h["in_force"] == false).count();
    assert_eq!(lifted, 1, "{holds}");
    browser.screenshot(&shot("lifted")).await;
    open(&browser, "reconciliation").await;
    assert!(browser.text(".banner.ok").await.starts_with("对账无差异"), "no break with held money");
    clean(&browser, &base).await;
}
