//! The console's admin side in a real browser (the harness of `browser.rs`), at 1280×800: a
//! province admin makes a season and batches through the page (one refused, its Chinese
//! message next to the field) and draws a lottery; a city admin suspends and activates a
//! merchant and asks to change its settlement account, which its own key may not approve (the
//! API's message is shown) and a second admin's key approves; a city finance officer sees only
//! its city's merchants and is offered no action. No console error but the refusals the journey
//! provokes, no request to another origin; screenshots `target/screenshots/admin-*.png`.

use std::time::Duration;

use fantoccini::Locator;
use serde_json::{Value, json};
use wenhui::domain::staff::Role;
use wenhui::domain::time::Timestamp;

use crate::both_backends;
use crate::browser::Browser;
use crate::claims::World;
use crate::common::Backend;

both_backends!(the_console_admin_side_in_a_real_browser);

async fn the_console_admin_side_in_a_real_browser(backend: Backend) {
    let browser = Browser::start().await;
    let world = World::new(backend, "100000.00", None).await;
    let (_, messages) = world.app.get("/assets/messages.json", None).await;
    let shot = |step: &str| format!("admin-{step}-{backend:?}").to_lowercase();
    browser.viewport(1280, 800).await;
    seasons_and_batches(&browser, &world, &messages, &shot).await;
    merchants(&browser, &world, &messages, &shot).await;
    let unexpected: Vec<Value> =
        browser.errors().await.into_iter().filter(|e| !is_provoked_refusal(e)).collect();
    assert_eq!(unexpected, Vec::<Value>::new(), "the browser logged errors");
    let base = &world.app.base;
    let requested = browser.requested().await;
    assert!(requested.iter().all(|u| u.starts_with(&format!("{base}/"))), "another origin: {requested:?}");
    browser.client.clone().close().await.expect("close the browser");
}

/// The refusals this journey provokes are logged by the browser as failed loads.
fn is_provoked_refusal(entry: &Value) -> bool {
    entry["message"].as_str().is_some_and(|m| {
        (m.contains("/batches") && m.contains("422")) || (m.contains("/approve") && m.contains("403"))
    })
}

/// Waits until the element's text satisfies `ok`, and answers it.
async fn text_when(browser: &Browser, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..150 {
        if let Ok(element) = browser.client.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if ok(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} never showed what was awaited; last: {last:?}");
}

async fn click(browser: &Browser, css: &str) {
    browser.wait_for(css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn type_into(browser: &Browser, css: &str, text: &str) {
    let input = browser.wait_for(css).await;
    input.clear().await.expect("clear");
    input.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

async fn set_value(browser: &Browser, id: &str, value: &str) {
    let script = "const e = document.getElementById(arguments[0]); e.value = arguments[1]; \
                  e.dispatchEvent(new Event('input')); return true";
    browser.client.execute(script, vec![json!(id), json!(value)]).await.expect("set a value");
}

/// Signs a staff key in (signing out first when one is in) and waits for the admin sections.
async fn sign_in(browser: &Browser, world: &World, key: &str) {
    // Signed out (the tab keeps its key in session storage; nothing else of it is dropped).
    let forget = "sessionStorage.removeItem('wenhui.staffKey'); return true";
    browser.client.execute(forget, vec![]).await.expect("sign out");
    browser.client.goto(&format!("{}/console/", world.app.base)).await.expect("load the console");
    type_into(browser, "#staff-key", key).await;
    click(browser, "#sign-in button").await;
    browser.wait_for("#who:not([hidden])").await;
    browser.wait_for("#sections:not([hidden]) button").await;
}

async fn seasons_and_batches(
    browser: &Browser,
    world: &World,
    messages: &Value,
    shot: &impl Fn(&str) -> String,
) {
    sign_in(browser, world, &world.province_admin).await;
    text_when(browser, "#section-seasons", |t| t.contains("这个活动还没有批次")).await;
    // A season, with the province's budget and a city's (amounts in yuan, up to 2 places).
    click(browser, "#open-season-form").await;
    type_into(browser, "#new-season-name", "2027 书香季").await;
    type_into(browser, "#new-season .budget-row input", "50000.00").await;
    click(browser, "#new-season .field[data-field=budgets] button.secondary").await;
    let amounts = browser.client.find_all(Locator::Css("#new-season .budget-row input")).await.expect("rows");
    amounts[1].send_keys("2000.5").await.expect("type");
    browser.screenshot(&shot("1-new-season")).await;
    click(browser, "#new-season button[type=submit]").await;
    text_when(browser, "#section-seasons p.ok", |t| t == "已创建活动“2027 书香季”。").await;
    let (_, page) = world.app.get("/v1/seasons", None).await;
    let made = page["seasons"]
        .as_array()
        .expect("seasons")
        .iter()
        .find(|s| s["name"] == "2027 书香季")
        .expect("made");
    let funders: Vec<(String, String)> = made["funders"]
        .as_array()
        .expect("funders")
        .iter()
        .map(|f| {
            (
                f["funder"].as_str().unwrap_or("").to_owned(),
                f["appropriated"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        funders,
        [("370000".to_owned(), "50000.00".to_owned()), ("370100".to_owned(), "2000.50".to_owned())]
    );
    let season_id = made["id"].as_str().expect("id").to_owned();

    // A threshold batch of the new season (the picker chose it).
    click(browser, "#open-batch-form").await;
    type_into(browser, "#new-batch-name", "书店满100减30").await;
    type_into(browser, "#new-batch-face_value", "30.00").await;
    type_into(browser, "#new-batch-min_spend", "100.00").await;
    click(browser, "#new-batch input[value=bookstore]").await;
    assert_eq!(browser.text("#new-batch .terms-preview").await, "满100减30");
    click(browser, "#new-batch button[type=submit]").await;
    text_when(browser, "#section-seasons p.ok", |t| t.starts_with("已创建批次“书店满100减30”")).await;
    assert_eq!(browser.texts("#batch-table td.terms").await, ["满100减30"]);
    let (_, batches) = world.app.get(&format!("/v1/seasons/{season_id}/batches"), None).await;
    assert_eq!(batches[0]["face_value"], "30.00", "{batches}");
    assert_eq!(batches[0]["min_spend"], "100.00", "{batches}");
    browser.screenshot(&shot("2-batch-made")).await;

    // A batch whose claim window runs past the season's end: the API refuses it, and the page
    // says so in Chinese next to the closing time.
    click(browser, "#open-batch-form").await;
    type_into(browser, "#new-batch-name", "八折券").await;
    browser
        .client
        .execute("const k = document.getElementById('new-batch-kind'); k.value = 'percent'; k.dispatchEvent(new Event('change')); return true", vec![])
        .await
        .expect("kind");
    type_into(browser, "#new-batch-percent", "8").await;
    type_into(browser, "#new-batch-cap", "50").await;
    click(browser, "#new-batch input[value=ktv]").await;
    assert_eq!(browser.text("#new-batch .terms-preview").await, "8折最高减50");
    set_value(browser, "new-batch-claim_closes_at", "2026-06-01T00:00").await;
    click(browser, "#new-batch button[type=submit]").await;
    let expected = messages["invalid_dates"].as_str().expect("a message");
    let hint = text_when(browser, "#new-batch-claim_closes_at-hint:not([hidden])", |t| !t.is_empty()).await;
    assert_eq!(hint, expected);
    let invalid = browser
        .client
        .execute(
            "return document.getElementById('new-batch-claim_closes_at').getAttribute('aria-invalid')",
            vec![],
        )
        .await
        .expect("attribute");
    assert_eq!(invalid, json!("true"));
    browser.screenshot(&shot("3-batch-refused")).await;
    let (_, batches) = world.app.get(&format!("/v1/seasons/{season_id}/batches"), None).await;
    assert_eq!(batches.as_array().map(Vec::len), Some(1), "nothing made: {batches}");

    lottery(browser, world, shot).await;
}

/// A lottery batch of the first season, entered by two citizens, drawn after its entries close
/// with the seed the page made: the result is shown.
async fn lottery(browser: &Browser, world: &World, shot: &impl Fn(&str) -> String) {
    pick_season(browser, &world.season_id).await;
    text_when(browser, "#section-seasons", |t| t.contains("这个活动还没有批次")).await;
    click(browser, "#open-batch-form").await;
    type_into(browser, "#new-batch-name", "书店抽签券").await;
    type_into(browser, "#new-batch-face_value", "50.00").await;
    type_into(browser, "#new-batch-stock", "10").await;
    click(browser, "#new-batch input[value=bookstore]").await;
    click(browser, "#new-batch-lottery").await;
    let commitment = text_when(browser, "#new-batch code.mono", |t| t.len() == 64).await;
    assert!(commitment.chars().all(|c| c.is_ascii_hexdigit()), "{commitment}");
    set_value(browser, "new-batch-claim_opens_at", "2026-03-01T09:00").await;
    set_value(browser, "new-batch-claim_closes_at", "2026-03-01T12:00").await;
    click(browser, "#new-batch button[type=submit]").await;
    text_when(browser, "#section-seasons p.ok", |t| t.contains("开奖种子")).await;
    let (_, batches) = world.app.get(&format!("/v1/seasons/{}/batches", world.season_id), None).await;
    let batch = batches.as_array().and_then(|b| b.first()).cloned().expect("the lottery batch");
    assert_eq!(batch["lottery"]["seed_sha256"], commitment.as_str());
    let id = batch["id"].as_str().expect("id").to_owned();
    for n in 1..=2 {
        let token = world.citizen(n).await;
        let (status, entry) =
            world.app.post(&format!("/v1/batches/{id}/entries"), Some(&token), json!({})).await;
        assert!(status == 200 || status == 201, "{entry}");
    }
    let state = browser.text(&format!("tr[data-batch-id=\"{id}\"] td.state")).await;
    assert!(state.starts_with("报名中") && state.contains("承诺公布于 "), "{state}");
    // The entries close; the page, loaded again, offers the draw with the seed it kept.
    world.clock.set(Timestamp::from_unix_us(world.t0_us).plus_seconds(4 * 3600));
    sign_in(browser, world, &world.province_admin).await;
    pick_season(browser, &world.season_id).await;
    click(browser, &format!("#draw-{id} button[type=submit]")).await;
    let result = text_when(browser, &format!("tr[data-batch-id=\"{id}\"] .result"), |t| !t.is_empty()).await;
    assert!(result.starts_with("“书店抽签券”已开奖：2 人报名，发出 2 张。"), "{result}");
    assert!(result.contains(&commitment), "the published commitment: {result}");
    let audit = browser.wait_for(&format!("tr[data-batch-id=\"{id}\"] .result a.audit-link")).await;
    let href = audit.attr("href").await.expect("href");
    assert_eq!(href.as_deref(), Some(format!("/v1/batches/{id}/draw/audit").as_str()), "the audit's link");
    browser.screenshot(&shot("4-drawn")).await;
    let (_, batches) =
        world.app.get(&format!("/v1/seasons/{}/batches?ended=true", world.season_id), None).await;
    assert_eq!(batches[0]["claimed"], 2, "{batches}");
}

/// Picks a season in the console's season list, once the list holds it.
async fn pick_season(browser: &Browser, id: &str) {
    browser.wait_for(&format!("#season-pick option[value=\"{id}\"]")).await;
    let script = "const p = document.getElementById('season-pick'); p.value = arguments[0]; \
                  p.dispatchEvent(new Event('change')); return true";
    browser.client.execute(script, vec![json!(id)]).await.expect("pick the season");
}

async fn merchant(world: &World, admin: &str, seed: u32, name: &str, category: &str, city: &str) -> String {
    let body = json!({"name": name, "credit_code": crate::till::credit_code(seed), "category": category, "city": city,
        "settlement_account": {"bank": "青岛银行", "account_no": "6222000011112222", "account_name": name}});
    let (status, answer) = world.app.post_idem("/v1/merchants", Some(admin), &format!("m{seed}"), body).await;
    assert_eq!(status, 201, "{answer}");
    answer["id"].as_str().expect("id").to_owned()
}

async fn merchants(browser: &Browser, world: &World, messages: &Value, shot: &impl Fn(&str) -> String) {
    let qingdao = world.app.staff_key(Role::CityAdmin, "370200").await;
    let second = world.app.staff_key(Role::CityAdmin, "370200").await;
    let jinan = world.app.staff_key(Role::CityAdmin, "370100").await;
    let shop = merchant(world, &qingdao, 11, "青岛书城", "bookstore", "370200").await;
    let ktv = merchant(world, &qingdao, 12, "青岛KTV城", "ktv", "370200").await;
    merchant(world, &jinan, 13, "济南书店", "bookstore", "370100").await;
    let row = format!("tr[data-merchant-id=\"{shop}\"]");

    sign_in(browser, world, &qingdao).await;
    click(browser, "nav.sections button[data-section=merchants]").await;
    text_when(browser, "#merchant-table", |t| t.contains("青岛书城") && t.contains("青岛KTV城")).await;
    type_into(browser, "#merchant-name", "书城").await;
    click(browser, "#merchant-search button[type=submit]").await;
    text_when(browser, "#merchant-table", |t| !t.contains("青岛KTV城")).await;
    assert_eq!(browser.texts("#merchant-table tbody tr:not(.detail) strong").await, ["青岛书城"]);
    // Suspend, then activate.
    click(browser, &format!("{row} button.suspend")).await;
    text_when(browser, &format!("{row} td.status"), |t| t == "已暂停").await;
    let status = |body: &Value| body["merchants"][0]["status"].as_str().map(str::to_owned);
    let (_, listed) =
        world.app.get("/v1/merchants?city=370200&name=%E4%B9%A6%E5%9F%8E", Some(&qingdao)).await;
    assert_eq!(status(&listed).as_deref(), Some("suspended"), "{listed}");
    browser.screenshot(&shot("5-suspended")).await;
    click(browser, &format!("{row} button.activate")).await;
    text_when(browser, &format!("{row} td.status"), |t| t == "营业中").await;
    let (_, listed) =
        world.app.get("/v1/merchants?city=370200&name=%E4%B9%A6%E5%9F%8E", Some(&qingdao)).await;
    assert_eq!(status(&listed).as_deref(), Some("active"), "{listed}");

    // A change of settlement account: asked by this key, which may not approve it itself.
    click(browser, &format!("{row} button.account")).await;
    let form = format!("#account-{shop}");
    type_into(browser, &format!("{form}-bank"), "齐鲁银行").await;
    type_into(browser, &format!("{form}-account_no"), "6228000099998888").await;
    type_into(browser, &format!("{form}-account_name"), "青岛书城有限公司").await;
    type_into(browser, &format!("{form}-reason"), "商户来函更换开户行").await;
    click(browser, &format!("{form} button[type=submit]")).await;
    text_when(browser, "#section-merchants p.ok", |t| t == "已提交，等待另一名管理员批准。").await;
    click(browser, "li.request.pending button.approve").await;
    let expected = messages["same_approver"].as_str().expect("a message");
    let shown = text_when(browser, "tr.detail .error[role=alert]:not([hidden])", |t| !t.is_empty()).await;
    assert_eq!(shown, expected);
    browser.screenshot(&shot("6-same-approver")).await;

    // An intent of the second admin's key whose answer a reload lost (a suspension): the page
    // sends it again with its Idempotency-Key once that key signs in, and forgets it when answered.
    let intent = json!({"path": format!("/v1/merchants/{ktv}/suspend"), "method": "POST", "body": {},
        "key": "intent-before-reload", "owner": second[second.len() - 12..]});
    let keep = "sessionStorage.setItem(arguments[0], arguments[1]); return true";
    let name = format!("wenhui.admin.intent.suspend.{ktv}");
    browser.client.execute(keep, vec![json!(name), json!(intent.to_string())]).await.expect("an intent");
    // A second admin's key approves the change.
    sign_in(browser, world, &second).await;
    let (mut suspended, mut forgotten) = (false, false);
    for _ in 0..100 {
        let (_, listed) = world.app.get("/v1/merchants?city=370200&name=KTV", Some(&second)).await;
        suspended = listed["merchants"][0]["status"] == "suspended";
        let left =
            browser.client.execute("return sessionStorage.getItem(arguments[0])", vec![json!(name)]).await;
        forgotten = left.expect("storage") == Value::Null;
        if suspended && forgotten {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(suspended, "the kept intent was sent again");
    assert!(forgotten, "an answered intent is forgotten");
    click(browser, "nav.sections button[data-section=merchants]").await;
    click(browser, &format!("{row} button.account")).await;
    click(browser, "li.request.pending button.approve").await;
    text_when(browser, "#section-merchants p.ok", |t| t.starts_with("已批准")).await;
    text_when(browser, "li.request.approved", |t| t.contains("6228000099998888")).await;
    assert_eq!(
        browser.text(&format!("{row} td.account")).await,
        "齐鲁银行 ****8888",
        "the row shows the new account"
    );
    browser.screenshot(&shot("7-approved")).await;
    let (_, listed) =
        world.app.get("/v1/merchants?city=370200&name=%E4%B9%A6%E5%9F%8E", Some(&qingdao)).await;
    assert_eq!(listed["merchants"][0]["settlement_account"]["account_no"], "6228000099998888", "{listed}");

    // The asker withdraws a second request (a rejection).
    let form = format!("#account-{shop}");
    type_into(browser, &format!("{form}-bank"), "青岛银行").await;
    type_into(browser, &format!("{form}-account_no"), "6222000011113333").await;
    type_into(browser, &format!("{form}-account_name"), "青岛书城有限公司").await;
    type_into(browser, &format!("{form}-reason"), "误填，撤回").await;
    click(browser, &format!("{form} button[type=submit]")).await;
    click(browser, "li.request.pending button.reject").await;
    text_when(browser, "#section-merchants p.ok", |t| t == "已驳回。").await;
    text_when(browser, "li.request.rejected", |t| t.contains("6222000011113333")).await;

    // A co-funded batch of Qingdao, shared with the province.
    click(browser, "nav.sections button[data-section=seasons]").await;
    pick_season(browser, &world.season_id).await;
    click(browser, "#open-batch-form").await;
    type_into(browser, "#new-batch-name", "青岛书店满50减10").await;
    type_into(browser, "#new-batch-face_value", "10.00").await;
    type_into(browser, "#new-batch-min_spend", "50.00").await;
    type_into(browser, "#new-batch-stock", "20").await;
    click(browser, "#new-batch input[value=bookstore]").await;
    click(browser, "#new-batch-cofund").await;
    type_into(browser, "#new-batch-funding", "60").await;
    click(browser, "#new-batch button[type=submit]").await;
    text_when(browser, "#section-seasons p.ok", |t| t.starts_with("已创建批次“青岛书店满50减10”")).await;
    text_when(browser, "#batch-table", |t| t.contains("青岛市60% + 山东省40%")).await;
    browser.screenshot(&shot("8-cofunded")).await;
    let (_, batches) = world.app.get(&format!("/v1/seasons/{}/batches", world.season_id), None).await;
    let made =
        batches.as_array().expect("batches").iter().find(|b| b["name"] == "青岛书店满50减10").expect("made");
    assert_eq!(
        made["funding"],
        json!([{"funder": "370200", "share": 60}, {"funder": "370000", "share": 40}])
    );

    // A finance officer of Qingdao: Qingdao's merchants only, and nothing to do to them.
    let finance = world.app.staff_key(Role::Finance, "370200").await;
    sign_in(browser, world, &finance).await;
    click(browser, "nav.sections button[data-section=merchants]").await;
    text_when(browser, "#merchant-table", |t| t.contains("青岛书城")).await;
    let mut names = browser.texts("#merchant-table tbody tr:not(.detail) strong").await;
    names.sort();
    assert_eq!(names, ["青岛KTV城", "青岛书城"], "no merchant of another city");
    assert_eq!(browser.texts("#merchant-city option").await, ["青岛市"]);
    assert!(
        browser.texts("#merchant-table button.suspend, #merchant-table button.activate").await.is_empty()
    );
    browser.screenshot(&shot("9-finance")).await;
    // Finance opens no season, makes no batch and draws no lottery: the section is not offered.
    let offered = browser.texts("nav.sections button").await;
    assert!(!offered.iter().any(|s| s == "活动与批次"), "finance is offered no writes: {offered:?}");
    assert!(browser.texts("#open-season-form, #open-batch-form, form.draw").await.is_empty());
}
