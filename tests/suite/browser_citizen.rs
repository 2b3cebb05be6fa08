//! The citizen's page in a real browser, journey by journey, at 360×740 (the harness is in
//! `browser.rs`): a double tap on claim gives one voucher and a sold-out batch says so; a 429 is
//! waited out and the claim sent again by itself; the voucher's QR code renews without a tap
//! before it expires; the benefit card (take it, points, its QR code at the till, an exchange);
//! a lottery (enter, the staff's draw, won and lost); and the terms, places, stock and countdown
//! of every kind of batch. Each journey writes `target/screenshots/citizen-*.png`, checks that
//! nothing is wider than the screen and every visible button is at least 44 px tall, and that the
//! browser logged no error but the refusals the journey provokes.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::{Value, json};
use wenhui::domain::citizen::synthetic_id_number;
use wenhui::domain::time::Timestamp;

use crate::both_backends;
use crate::browser::{Browser, decode_qr_png, sign_up};
use crate::claims::World;
use crate::common::Backend;
use crate::till::Till;

both_backends!(
    a_double_tap_gives_one_voucher_and_sold_out_says_so,
    a_429_is_waited_out_and_the_claim_sent_again,
    the_voucher_qr_code_renews_itself_before_it_expires,
    the_benefit_card_taken_shown_paid_with_and_exchanged,
    a_lottery_entered_drawn_won_and_lost,
    every_kind_of_batch_in_plain_words,
);

/// A browser on the citizen's page, signed up as a new citizen: (browser, token, citizen id).
async fn signed_up(world: &World, name: &str) -> (Browser, String, String) {
    let browser = Browser::start().await;
    browser.viewport(360, 740).await;
    browser.client.goto(&format!("{}/", world.app.base)).await.expect("load the citizen's page");
    browser.wait_for(".season").await;
    sign_up(&browser, world, &format!("citizen-{name}-sign-up")).await;
    let saved = browser
        .client
        .execute("return JSON.parse(localStorage.getItem('wenhui.citizen'))", vec![])
        .await
        .expect("the saved session");
    let token = saved["token"].as_str().expect("a token").to_owned();
    let citizen = saved["citizen_id"].as_str().expect("a citizen id").to_owned();
    (browser, token, citizen)
}

fn shot(name: &str, backend: Backend) -> String {
    format!("citizen-{name}-{backend:?}").to_lowercase()
}

/// Nothing wider than the 360 px screen (less the desktop browser's scroll bar), and every
/// visible button at least 44 px tall.
async fn assert_fits(browser: &Browser, what: &str) {
    let script = "const small = [...document.querySelectorAll('button')].filter((b) => b.offsetParent !== null) \
                    .map((b) => [b.textContent.trim(), b.getBoundingClientRect().height]) \
                    .filter(([, h]) => h < 44); \
                  return [document.documentElement.scrollWidth, document.documentElement.clientWidth, small]";
    let measured = browser.client.execute(script, vec![]).await.expect("measure");
    assert_eq!(measured[0], measured[1], "{what}: the page is wider than the screen: {measured}");
    assert_eq!(measured[2], json!([]), "{what}: tap targets under 44 px");
}

/// The errors the browser logged, but the refusals (`status` on a path containing `path`) the
/// journey provoked on purpose.
async fn unexpected_errors(browser: &Browser, expected: &[(&str, &str)]) -> Vec<Value> {
    let errors = browser.errors().await;
    errors
        .into_iter()
        .filter(|e| {
            let message = e["message"].as_str().unwrap_or_default();
            !expected.iter().any(|(path, status)| message.contains(path) && message.contains(status))
        })
        .collect()
}

async fn my_vouchers(world: &World, token: &str) -> Vec<Value> {
    let (status, mine) = world.app.get("/v1/me/vouchers", Some(token)).await;
    assert_eq!(status, 200, "{mine}");
    mine["vouchers"].as_array().cloned().unwrap_or_default()
}

async fn messages(world: &World) -> Value {
    world.app.get("/assets/messages.json", None).await.1
}

fn id(batch: &Value) -> String {
    batch["id"].as_str().expect("id").to_owned()
}

async fn a_double_tap_gives_one_voucher_and_sold_out_says_so(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let open = id(&world.batch(json!({"name": "全省书店券", "stock": 5})).await);
    let last = id(&world
        .batch(json!({"name": "最后一张", "stock": 1, "face_value": "20.00", "min_spend": "60.00"}))
        .await);
    let (browser, token, _) = signed_up(&world, "double-tap").await;
    let button = format!("button.claim[data-batch-id=\"{open}\"]");
    let live = browser.wait_for(&format!("{button}:not([disabled])")).await;
    // Two taps at once and a third a moment later: one intent, one key, one voucher.
    let script = "const b = arguments[0]; b.click(); b.click(); setTimeout(() => b.click(), 30); return true";
    browser.client.execute(script, vec![serde_json::to_value(&live).expect("element")]).await.expect("tap");
    let claimed = browser.text(&format!("{button} + .claim-message.ok")).await;
    assert!(claimed.starts_with("领取成功"), "{claimed}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let vouchers = my_vouchers(&world, &token).await;
    assert_eq!(vouchers.len(), 1, "a double tap gives one voucher: {vouchers:?}");
    assert_eq!(browser.text(&button).await, "已领取");
    let stock = format!("article.batch[data-batch-id=\"{open}\"] .stock");
    assert_eq!(browser.text(&stock).await, "剩余 4 张 / 共 5 张");
    // Someone else takes the last voucher while the page still shows one left.
    let other = world.citizen(5).await;
    assert_eq!(world.claim(&other, &last, "the-last-one").await.0, 201);
    let last_button = format!("button.claim[data-batch-id=\"{last}\"]");
    browser.wait_for(&format!("{last_button}:not([disabled])")).await.click().await.expect("tap");
    let refused = browser.text(&format!("{last_button} + .claim-message.refused")).await;
    assert_eq!(refused, messages(&world).await["sold_out"].as_str().expect("a message"));
    assert_eq!(refused, "这批券已经领完了。");
    let stock = format!("article.batch[data-batch-id=\"{last}\"] .stock");
    assert_eq!(browser.text(&stock).await, "剩余 0 张 / 共 1 张");
    assert_eq!(browser.text(&last_button).await, "已领完");
    assert_eq!(browser.text(&format!("article.batch[data-batch-id=\"{last}\"] .state")).await, "已领完");
    let center = format!(
        "document.querySelector('{last_button} + .claim-message').scrollIntoView({{block: 'center'}}); return true"
    );
    browser.client.execute(&center, vec![]).await.expect("scroll");
    assert_fits(&browser, "sold out").await;
    browser.screenshot(&shot("sold-out", backend)).await;
    assert_eq!(my_vouchers(&world, &token).await.len(), 1);
    // Read again, the batch says it is gone and its button cannot be tapped.
    browser.client.refresh().await.expect("reload");
    assert_eq!(browser.text(&format!("{last_button}[disabled]")).await, "已领完");
    let card = format!("article.batch[data-batch-id=\"{last}\"] .state.out");
    assert_eq!(browser.text(&card).await, "已领完");
    assert_eq!(unexpected_errors(&browser, &[("/claims", "409")]).await, Vec::<Value>::new());
    browser.client.clone().close().await.expect("close the browser");
}

async fn a_429_is_waited_out_and_the_claim_sent_again(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let batch = id(&world.batch(json!({"name": "全省书店券", "stock": 5})).await);
    let (browser, token, _) = signed_up(&world, "rate-limited").await;
    let button = format!("button.claim[data-batch-id=\"{batch}\"]");
    let live = browser.wait_for(&format!("{button}:not([disabled])")).await;
    // Every message the claim shows, as it shows it.
    let watch = "window.seen = []; new MutationObserver(() => { \
                   for (const m of document.querySelectorAll('.claim-message:not([hidden])')) { \
                     const line = m.className + '|' + m.textContent; \
                     if (window.seen[window.seen.length - 1] !== line) window.seen.push(line); } }) \
                 .observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true}); \
                 return true";
    browser.client.execute(watch, vec![]).await.expect("watch");
    // The citizen's claim rate, spent by the same citizen elsewhere (the per-citizen bucket:
    // 20 at once, then one a second), until the server answers 429.
    let (client, base, spender_token) = (world.app.client.clone(), world.app.base.clone(), token.clone());
    let spend = move |n: u32| {
        let (client, base, token) = (client.clone(), base.clone(), spender_token.clone());
        async move {
            let path = format!("{base}/v1/batches/{}/claims", uuid::Uuid::new_v4());
            let sent = client
                .post(path)
                .bearer_auth(token)
                .header("Idempotency-Key", format!("spend-{n}"))
                .json(&json!({}));
            sent.send().await.expect("send").status().as_u16()
        }
    };
    let mut n = 0;
    while spend(n).await != 429 {
        n += 1;
        assert!(n < 60, "the citizen's claims are rate limited");
    }
    // The bucket is kept empty (each token refilled is spent at once) until the page has said it
    // waits, so its first claim is surely answered 429, however slow the machine.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spender = {
        let stop = stop.clone();
        let spend = spend.clone();
        tokio::spawn(async move {
            let mut n = 1_000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                spend(n).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    browser
        .client
        .execute("arguments[0].click(); return true", vec![serde_json::to_value(&live).expect("element")])
        .await
        .expect("tap");
    browser.wait_for(&format!("{button} + .claim-message.wait")).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    spender.await.expect("the spender");
    browser.screenshot(&shot("rate-limited-waiting", backend)).await;
    let claimed = browser.text(&format!("{button} + .claim-message.ok")).await;
    assert!(claimed.starts_with("领取成功"), "{claimed}");
    let seen = browser.client.execute("return window.seen", vec![]).await.expect("seen");
    let seen: Vec<&str> = seen.as_array().expect("lines").iter().filter_map(Value::as_str).collect();
    assert!(
        seen.first()
            .is_some_and(|l| l.starts_with("claim-message wait|排队中，") && l.ends_with("秒后自动重试…")),
        "the page said it waits: {seen:?}"
    );
    assert!(seen.last().is_some_and(|l| l.starts_with("claim-message ok|领取成功")), "{seen:?}");
    let errors = browser.errors().await;
    assert!(
        errors
            .iter()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains("/claims") && m.contains("429"))),
        "the page's first claim was answered 429: {errors:?}"
    );
    assert!(
        errors
            .iter()
            .all(|e| e["message"].as_str().is_some_and(|m| m.contains("/claims") && m.contains("429"))),
        "{errors:?}"
    );
    let vouchers = my_vouchers(&world, &token).await;
    assert_eq!(vouchers.len(), 1, "one voucher after the wait: {vouchers:?}");
    assert_eq!(vouchers[0]["batch_id"], batch.as_str());
    assert_fits(&browser, "after the wait").await;
    browser.screenshot(&shot("rate-limited-claimed", backend)).await;
    browser.client.clone().close().await.expect("close the browser");
}

/// A token lives 90 s on the server's clock. The page reckons a token's time left on its own
/// copy of the server's clock, taken when the page was served; the test serves the page 80 s
/// ahead of the clock the token is then signed on, so the page sees a token with 10 s to live
/// and must renew it by itself within those 10 s, with no tap.
async fn the_voucher_qr_code_renews_itself_before_it_expires(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let batch = id(&world.batch(json!({"name": "全省书店券", "stock": 5})).await);
    let (browser, token, _) = signed_up(&world, "qr").await;
    assert_eq!(world.claim(&token, &batch, "qr-voucher").await.0, 201);
    let t0 = Timestamp::from_unix_us(world.t0_us);
    world.clock.set(t0.plus_seconds(80));
    browser.client.refresh().await.expect("reload");
    browser.wait_for(".season").await;
    world.clock.set(t0.plus_seconds(1));
    browser.client.find(Locator::Css("#to-mine")).await.expect("tab").click().await.expect("tap");
    browser.wait_for("button.voucher.active").await.click().await.expect("open the voucher");
    browser.wait_for("#qr:not([hidden]) #qr-image[src]").await;
    let read =
        "const q = document.getElementById('qr'); return [q.dataset.token, Number(q.dataset.renewals)]";
    let first = browser.client.execute(read, vec![]).await.expect("token");
    assert_eq!(first[1], 1, "{first}");
    let opened = Instant::now();
    let renewed = loop {
        let now = browser.client.execute(read, vec![]).await.expect("token");
        if now[1].as_u64() >= Some(2) {
            break now;
        }
        assert!(opened.elapsed() < Duration::from_secs(10), "the QR code was not renewed before it expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(opened.elapsed() < Duration::from_secs(10), "renewed within the token's 10 s left");
    assert_ne!(renewed[0], first[0], "a fresh token");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = browser.screenshot(&shot("qr-renewed", backend)).await;
    assert_eq!(Some(decode_qr_png(&png).as_str()), renewed[0].as_str(), "the screen shows the fresh token");
    assert_eq!(browser.text(".qr-show").await, "请向收银员出示");
    assert!(browser.text("#qr-state").await.starts_with("二维码会自动刷新，无需操作"));
    assert_fits(&browser, "the QR code").await;
    assert_eq!(unexpected_errors(&browser, &[]).await, Vec::<Value>::new());
    browser.client.clone().close().await.expect("close the browser");
}

async fn a_lottery_entered_drawn_won_and_lost(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let (browser, token, me) = signed_up(&world, "lottery").await;
    let me: uuid::Uuid = me.parse().expect("uuid");
    let body = json!({"name": "李四", "id_number": synthetic_id_number("370202", "19910101", 42), "phone": "13800000042"});
    let (status, other) = world.app.register_citizen(body).await;
    assert_eq!(status, 201, "{other}");
    let other_token = other["token"].as_str().expect("token").to_owned();
    let other: uuid::Uuid = other["citizen_id"].as_str().expect("id").parse().expect("uuid");
    // Two draws of one voucher each between the two entrants: seeds under which the page's
    // citizen ranks first in one and second in the other (SHA-256(seed || HMAC-SHA256(salt,
    // citizen id)), lowest first), under a salt the test gives both batches (the server draws
    // a random one, secret until the draw).
    let sha = |bytes: &[u8]| ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec();
    let salt = [0x5au8; 32];
    let entrant = |who: uuid::Uuid| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt);
        ring::hmac::sign(&key, who.hyphenated().to_string().as_bytes()).as_ref().to_vec()
    };
    let rank = |seed: &str, who: uuid::Uuid| sha(&[seed.as_bytes(), &entrant(who)].concat());
    let seed_for = |first: uuid::Uuid, second: uuid::Uuid| {
        (0..).map(|n| format!("seed-{n}")).find(|s| rank(s, first) < rank(s, second)).expect("a seed")
    };
    let (won_seed, lost_seed) = (seed_for(me, other), seed_for(other, me));
    let lottery = |name: &str, seed: &str| {
        let hex: String = sha(seed.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        json!({"name": name, "stock": 1, "face_value": "50.00", "min_spend": "100.00",
               "claim_closes_at": world.at(3_600), "lottery": {"seed_sha256": hex}})
    };
    let won = id(&world.batch(lottery("书店摇号券", &won_seed)).await);
    let lost = id(&world.batch(lottery("影院摇号券", &lost_seed)).await);
    for batch in [&won, &lost] {
        let salt_hex: String = salt.iter().map(|b| format!("{b:02x}")).collect();
        let literal = match backend {
            Backend::Sqlite => format!("X'{salt_hex}'"),
            Backend::Postgres => format!("decode('{salt_hex}', 'hex')"),
        };
        let set = format!(
            "UPDATE batches SET lottery_salt = {literal} WHERE {}",
            world.app.db.uuid_equals("id", batch)
        );
        assert_eq!(world.app.db.raw(&set).await, Ok(1));
    }
    browser.client.refresh().await.expect("reload");
    for batch in [&won, &lost] {
        let card = format!("article.batch[data-batch-id=\"{batch}\"]");
        assert_eq!(browser.text(&format!("{card} .stock")).await, "共 1 张 · 报名后抽签发放");
        assert!(browser.text(&format!("{card} .state")).await.starts_with("抽签报名中"));
        browser.wait_for(&format!("{card} button.enter:not([disabled])")).await.click().await.expect("enter");
        let entered = browser.text(&format!("{card} .claim-message.ok")).await;
        assert_eq!(entered, "已报名，3月1日 10:00 后开奖");
        let (status, _) =
            world.app.post(&format!("/v1/batches/{batch}/entries"), Some(&other_token), json!({})).await;
        assert_eq!(status, 200);
    }
    assert_fits(&browser, "entered").await;
    browser.screenshot(&shot("lottery-entered", backend)).await;
    // Read again: the server says the citizen is entered (no button to enter twice).
    browser.client.refresh().await.expect("reload");
    let card = format!("article.batch[data-batch-id=\"{won}\"]");
    assert!(browser.text(&format!("{card} .claim-message.ok")).await.starts_with("已报名"));
    assert_eq!(browser.texts(&format!("{card} button.enter:not([hidden])")).await, Vec::<String>::new());
    // After the window the issuer draws both.
    world.clock.set(Timestamp::from_unix_us(world.t0_us).plus_seconds(3_601));
    for (batch, seed) in [(&won, &won_seed), (&lost, &lost_seed)] {
        let path = format!("/v1/batches/{batch}/draw");
        let (status, drawn) =
            world.app.post_idem(&path, Some(&world.province_admin), batch, json!({"seed": seed})).await;
        assert_eq!((status, drawn["issued"].as_u64()), (200, Some(1)), "{drawn}");
    }
    browser.client.refresh().await.expect("reload");
    browser.wait_for(".season").await;
    browser.client.find(Locator::Css("#to-mine")).await.expect("tab").click().await.expect("tap");
    browser.wait_for(".lottery-result").await;
    assert_eq!(browser.texts(".voucher .terms").await, ["满100减50"], "the voucher won");
    assert_eq!(browser.texts(".voucher .name").await, ["书店摇号券"]);
    let results = browser.texts(".lottery-result").await;
    let result = |batch: &str, name: &str| {
        let at = results
            .iter()
            .position(|r| r.starts_with(name))
            .unwrap_or_else(|| panic!("{batch}: {results:?}"));
        results[at].clone()
    };
    assert_eq!(result(&won, "书店摇号券"), "书店摇号券\n恭喜中签！券已放入“我的券”。\n公开核验");
    assert_eq!(result(&lost, "影院摇号券"), "影院摇号券\n很遗憾，这次没有中签。\n公开核验");
    // The public check: opened, it finds the citizen's hash in the draw's published lists.
    for (batch, verdict) in
        [(&won, "报名名单和中签名单中都有您的凭据。"), (&lost, "报名名单中有您的凭据，中签名单中没有。")]
    {
        let check = format!(".lottery-result[data-batch-id=\"{batch}\"] .audit-check");
        browser.wait_for(&format!("{check} summary")).await.click().await.expect("open the check");
        let hash = hex_of(&entrant(me));
        assert_eq!(browser.text(&format!("{check} code.hash")).await, hash);
        assert_eq!(wait_text(&browser, &format!("{check} .verdict"), verdict).await, verdict);
        let link = browser.wait_for(&format!("{check} a.audit-link")).await.attr("href").await.expect("href");
        assert_eq!(link.as_deref(), Some(format!("/v1/batches/{batch}/draw/audit").as_str()));
    }
    let vouchers = my_vouchers(&world, &token).await;
    assert_eq!((vouchers.len(), &vouchers[0]["batch_id"]), (1, &json!(won)), "{vouchers:?}");
    assert_fits(&browser, "results").await;
    browser.screenshot(&shot("lottery-result", backend)).await;
    assert_eq!(unexpected_errors(&browser, &[]).await, Vec::<Value>::new());
    browser.client.clone().close().await.expect("close the browser");
}

async fn the_benefit_card_taken_shown_paid_with_and_exchanged(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    till.terms(0, None).await;
    // One point a yuan, expiring at a fixed time (60 days on).
    let path = format!("/v1/seasons/{}/points-rate", world.season_id);
    let rate = json!({"points_per_yuan": 1, "points_expire_at": world.at(60 * 86_400)});
    let response = world
        .app
        .client
        .put(world.app.url(&path))
        .bearer_auth(&world.province_admin)
        .json(&rate)
        .send()
        .await;
    assert_eq!(response.expect("send").status(), 200);
    let offer = id(&world.batch(json!({"name": "积分换书店券", "stock": 5, "points_price": 60})).await);
    let (browser, token, _) = signed_up(world, "card").await;
    browser.client.find(Locator::Css("#to-card")).await.expect("tab").click().await.expect("tap");
    browser.wait_for("#card-mobile").await;
    assert_fits(&browser, "take the card").await;
    browser.screenshot(&shot("card-take", backend)).await;
    // A bank card number that fails its check digit: refused in Chinese; then by phone.
    browser.wait_for("#bank-card").await.send_keys("6222021234567890127").await.expect("type");
    browser.client.find(Locator::Css("#card-bank")).await.expect("button").click().await.expect("tap");
    let refused = browser.text(".take-card .error:not([hidden])").await;
    assert_eq!(refused, messages(world).await["bank_card_check_digit"].as_str().expect("a message"));
    browser.client.find(Locator::Css("#card-mobile")).await.expect("button").click().await.expect("tap");
    assert_eq!(browser.text(".member-points").await, "0 积分");
    assert_eq!(browser.text(".member-via").await, "手机号开卡");
    let (status, card) = world.app.get("/v1/me/card", Some(&token)).await;
    assert_eq!(status, 200, "{card}");
    // 100 yuan paid with the card at the bookstore: 100 points.
    let qr = till.card_qr(&token).await;
    till.pay(&qr, "100.00", "card-order-1").await.expect("paid by card");
    browser.client.find(Locator::Css("#to-card")).await.expect("tab").click().await.expect("tap");
    browser.wait_for(".season-points").await;
    assert_eq!(browser.text(".member-points").await, "100 积分");
    let line = browser.text(".season-points").await;
    assert!(line.starts_with("2026 文化消费季：100 积分"), "{line}");
    assert!(line.contains("到期"), "points show when they expire: {line}");
    let number = browser.text(".member-number").await;
    assert_eq!(number.replace(' ', ""), card["number"].as_str().expect("number"));
    // The card's QR code full screen, read from a screenshot, pays at the till.
    browser.client.find(Locator::Css("#card-qr")).await.expect("button").click().await.expect("tap");
    browser.wait_for("#qr:not([hidden]) #qr-image[src]").await;
    assert_eq!(browser.text("#qr-title").await, "文惠卡");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = browser.screenshot(&shot("card-qr", backend)).await;
    let token_shown = decode_qr_png(&png);
    till.pay(&token_shown, "50.00", "card-order-2").await.expect("the till takes the card's QR code");
    browser.client.find(Locator::Css("#qr-close")).await.expect("close").click().await.expect("tap");
    browser.client.find(Locator::Css("#to-card")).await.expect("tab").click().await.expect("tap");
    browser.wait_for(".offer").await;
    assert_eq!(browser.text(".member-points").await, "150 积分");
    // 60 points for a voucher, with a double tap: one exchange.
    let button = format!("button.exchange[data-batch-id=\"{offer}\"]");
    let live = browser.wait_for(&format!("{button}:not([disabled])")).await;
    assert_eq!(live.text().await.expect("text"), "兑换");
    let script = "const b = arguments[0]; b.click(); b.click(); return true";
    browser.client.execute(script, vec![serde_json::to_value(&live).expect("element")]).await.expect("tap");
    let done = browser.text(&format!("article.offer[data-batch-id=\"{offer}\"] .claim-message.ok")).await;
    assert!(done.starts_with("兑换成功"), "{done}");
    assert_eq!(browser.text(".member-points").await, "90 积分");
    assert!(
        browser.text(".season-points").await.starts_with("2026 文化消费季：90 积分"),
        "read again after the exchange"
    );
    let vouchers = my_vouchers(world, &token).await;
    assert_eq!(vouchers.len(), 1, "{vouchers:?}");
    assert_eq!(vouchers[0]["batch_id"], offer.as_str());
    let (_, card) = world.app.get("/v1/me/card", Some(&token)).await;
    assert_eq!(card["points"], 90, "{card}");
    assert_fits(&browser, "the card").await;
    browser.screenshot(&shot("card", backend)).await;
    assert_eq!(
        unexpected_errors(&browser, &[("/v1/me/card", "404"), ("/v1/me/card", "422")]).await,
        Vec::<Value>::new()
    );
    browser.client.clone().close().await.expect("close the browser");
}

/// Threshold with and without a minimum, percent with a cap, a city's batch co-funded by the
/// province, tranches (stock left now, and the next release), a lottery, and a countdown.
async fn every_kind_of_batch_in_plain_words(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    world.batch(json!({"name": "全省书店KTV券", "face_value": "30.00", "min_spend": "100.00", "categories": ["bookstore", "ktv"]})).await;
    world
        .batch(
            json!({"name": "无门槛券", "face_value": "5.00", "min_spend": "0.00", "categories": ["cinema"]}),
        )
        .await;
    let city = world.app.staff_key(wenhui::domain::staff::Role::CityAdmin, "370200").await;
    world
        .batch_as(&city, json!({"name": "青岛观影八五折券", "issuer": "370200", "kind": "percent", "percent": 15, "cap": "50.00",
            "step": "1.00", "face_value": null, "min_spend": "20.00", "stock": 10, "categories": ["cinema", "internet_cafe"],
            "funding": [{"funder": "370200", "share": 60}, {"funder": "370000", "share": 40}]}))
        .await;
    world
        .batch(json!({"name": "分批放券", "stock": 2, "categories": ["museum"],
            "releases": [{"at": world.at(0), "quantity": 1}, {"at": world.at(7_200), "quantity": 1}]}))
        .await;
    let sha: String = ring::digest::digest(&ring::digest::SHA256, b"s")
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    world.batch(json!({"name": "摇号券", "stock": 3, "claim_closes_at": world.at(3_600), "lottery": {"seed_sha256": sha}})).await;
    world.batch(json!({"name": "稍后开抢", "stock": 7, "claim_opens_at": world.at(125)})).await;
    let browser = Browser::start().await;
    browser.viewport(360, 740).await;
    browser.client.goto(&format!("{}/", world.app.base)).await.expect("load");
    browser.wait_for(".countdown").await;
    let other = world.citizen(3).await;
    let tranche = world.batch_state_named("分批放券").await;
    assert_eq!(world.claim(&other, &tranche, "first-tranche").await.0, 201);
    browser.client.refresh().await.expect("reload");
    browser.wait_for(".countdown").await;
    assert_eq!(
        browser.texts(".batch .terms").await,
        ["满100减30", "无门槛减5", "8.5折 最高减50", "满40减10", "满40减10", "满40减10"]
    );
    assert_eq!(
        browser.texts(".batch h3").await,
        ["全省书店KTV券", "无门槛券", "青岛观影八五折券", "分批放券", "摇号券", "稍后开抢"]
    );
    assert_eq!(
        browser.texts(".batch .condition").await,
        [
            "消费满100元可用",
            "任意金额可用",
            "满20元可用，按1元取整",
            "消费满40元可用",
            "消费满40元可用",
            "消费满40元可用"
        ]
    );
    let wheres = browser.texts(".batch .where").await;
    assert_eq!(wheres[0], "山东省内通用 · 书店、KTV");
    assert_eq!(wheres[2], "限青岛市 · 电影院、网吧");
    let funded = browser.texts(".batch .funded").await;
    assert!(funded == ["青岛市、山东省共同出资"] || funded == ["山东省、青岛市共同出资"], "{funded:?}");
    assert_eq!(
        browser.texts(".batch .stock").await,
        [
            "剩余 100 张 / 共 100 张",
            "剩余 100 张 / 共 100 张",
            "剩余 10 张 / 共 10 张",
            "剩余 0 张 / 共 2 张",
            "共 3 张 · 报名后抽签发放",
            "共 7 张"
        ]
    );
    let states = browser.texts(".batch .state").await;
    assert!(states[3].starts_with("已领完，") && states[3].ends_with("补放"), "the next tranche: {states:?}");
    assert!(states[4].starts_with("抽签报名中"), "{states:?}");
    // 125 s on the server's clock when the page was served, counted down since on the page's.
    let left = states[5].strip_prefix("距开抢 00:").and_then(|rest| rest.get(..5)).expect("a countdown");
    let (minutes, seconds) = left.split_once(':').expect("mm:ss");
    let left = minutes.parse::<u32>().expect("minutes") * 60 + seconds.parse::<u32>().expect("seconds");
    assert!((30..=125).contains(&left), "{states:?}");
    assert!(states[5].ends_with("3月1日 09:02 开抢"), "{states:?}");
    assert_fits(&browser, "the batches").await;
    browser.screenshot(&shot("batches-every-kind", backend)).await;
    browser
        .client
        .execute("window.scrollTo(0, document.body.scrollHeight); return true", vec![])
        .await
        .expect("scroll");
    browser.screenshot(&shot("batches-every-kind-end", backend)).await;
    assert_eq!(unexpected_errors(&browser, &[]).await, Vec::<Value>::new());
    browser.client.clone().close().await.expect("close the browser");
}

impl World {
    /// The id of the open batch called `name`.
    async fn batch_state_named(&self, name: &str) -> String {
        let (_, list) = self.app.get(&format!("/v1/seasons/{}/batches", self.season_id), None).await;
        let batch = list.as_array().expect("array").iter().find(|b| b["name"] == name).cloned();
        id(&batch.unwrap_or_else(|| panic!("no batch {name}")))
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until the element's text is `wanted`, and answers the last text read.
async fn wait_text(browser: &Browser, css: &str, wanted: &str) -> String {
    let mut last = String::new();
    for _ in 0..150 {
        if let Ok(element) = browser.client.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if last == wanted {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}
