//! The pages in a real browser: Debian's `chromium` driven through `chromedriver` (WebDriver,
//! with the `fantoccini` client), headless, on a fresh profile. Each test spawns the server over
//! a seeded season, loads the citizen's page at 360×740 and the console at 1280×800, checks
//! what a person sees, that the browser logged no error and asked no other origin, and writes
//! screenshots under `target/screenshots/`. Chromium is installed first if it is not
//! (`machine::browser`); a browser that cannot start fails the test.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::process::{Child, Command};
use wenhui::domain::staff::Role;

use wenhui::domain::citizen::synthetic_id_number;
use wenhui::domain::time::{Clock, Timestamp};

use crate::both_backends;
use crate::claims::World;
use crate::common::{Backend, code};

/// What the browser runs with: no sandbox (containers), nothing fetched in the background.
const CHROMIUM_ARGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// A headless Chromium behind its own chromedriver; both end when this is dropped.
pub struct Browser {
    pub client: Client,
    pub(crate) driver_url: String,
    pub(crate) session: String,
    _driver: Child,
    _profile: TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

impl Browser {
    /// A browser of its own (Chromium and chromedriver are installed first if they are not:
    /// `machine::browser`).
    pub async fn start() -> Browser {
        let (driver, chromium) = crate::machine::browser();
        Browser::launch(driver, chromium).await
    }

    async fn launch(driver: PathBuf, chromium: PathBuf) -> Browser {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..100 {
            if http.get(format!("{driver_url}/status")).send().await.is_ok_and(|r| r.status().is_success()) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not answer on {driver_url}");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let capabilities = capabilities.as_object().cloned().unwrap_or_default();
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver_url)
            .await
            .expect("a browser session");
        let session = client.session_id().await.expect("session id").expect("a session");
        Browser { client, driver_url, session, _driver: child, _profile: profile }
    }

    /// Sets the viewport (the window, less what the browser keeps of it for itself) and checks it.
    /// A resize the browser has not applied yet when asked (seen under load) is made again.
    pub async fn viewport(&self, width: u32, height: u32) {
        let mut inner = (0, 0);
        for _ in 0..5 {
            self.client.set_window_size(width, height).await.expect("window size");
            let first = self.inner_size().await;
            let outer = (2 * width).saturating_sub(first.0);
            self.client
                .set_window_size(outer, (2 * height).saturating_sub(first.1))
                .await
                .expect("window size");
            inner = self.inner_size().await;
            if inner == (width, height) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(inner, (width, height), "the viewport");
    }

    async fn inner_size(&self) -> (u32, u32) {
        let inner = self.client.execute("return [innerWidth, innerHeight]", vec![]).await.expect("size");
        let side = |i: usize| inner[i].as_u64().and_then(|v| u32::try_from(v).ok()).expect("a size");
        (side(0), side(1))
    }

    /// The browser's console entries since the last call (chromedriver's log endpoint).
    pub async fn log(&self) -> Vec<Value> {
        let url = format!("{}/session/{}/se/log", self.driver_url, self.session);
        let answer: Value = reqwest::Client::new()
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("read the browser log")
            .json()
            .await
            .expect("a log");
        answer["value"].as_array().cloned().unwrap_or_default()
    }

    /// The errors the browser logged since the last call (script errors, CSP refusals, failed
    /// loads).
    pub async fn errors(&self) -> Vec<Value> {
        self.log().await.into_iter().filter(|entry| entry["level"] == "SEVERE").collect()
    }

    /// Every URL the page loaded (itself and its resources).
    pub async fn requested(&self) -> Vec<String> {
        let script =
            "return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name))";
        let urls = self.client.execute(script, vec![]).await.expect("resource entries");
        urls.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
    }

    /// Writes a PNG of the viewport to `target/screenshots/{name}.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
        let dir = target.join("screenshots");
        std::fs::create_dir_all(&dir).expect("the screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write a screenshot");
        path
    }

    pub async fn text(&self, css: &str) -> String {
        let element = self.wait_for(css).await;
        element.text().await.expect("text")
    }

    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await.expect("find") {
            texts.push(element.text().await.expect("text"));
        }
        texts
    }

    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
    }
}

/// `00:01:29` or `2天 00:01:29` → seconds.
fn seconds(countdown: &str) -> i64 {
    let clock = countdown.rsplit(' ').next().unwrap_or_default();
    let parts: Vec<i64> = clock.split(':').map(|p| p.parse().expect("a number")).collect();
    assert_eq!(parts.len(), 3, "{countdown}");
    parts[0] * 3600 + parts[1] * 60 + parts[2]
}

both_backends!(the_pages_in_a_real_browser);

/// A season on the server's (manual) clock, which is months behind the phone's: a threshold
/// batch open now, a city's percent batch opening in 90 seconds. The citizen's page shows both
/// in plain words and counts down on the server's clock; the console signs a staff key in.
async fn the_pages_in_a_real_browser(backend: Backend) {
    let browser = Browser::start().await;
    let world = World::new(backend, "100000.00", None).await;
    world
        .batch(json!({"name": "全省书店KTV券", "face_value": "30.00", "min_spend": "100.00",
                      "categories": ["bookstore", "ktv"]}))
        .await;
    let city_admin = world.app.staff_key(Role::CityAdmin, "370200").await;
    let percent = json!({"name": "青岛观影八折券", "issuer": "370200", "kind": "percent", "percent": 20,
        "cap": "50.00", "step": "1.00", "face_value": null, "min_spend": "0.00", "stock": 10,
        "claim_opens_at": world.at(90), "categories": ["cinema", "internet_cafe"]});
    world.batch_as(&city_admin, percent).await;
    citizen_page(&browser, &world, backend).await;
    console_page(&browser, &world, backend).await;
    browser.client.clone().close().await.expect("close the browser");
}

async fn citizen_page(browser: &Browser, world: &World, backend: Backend) {
    let base = &world.app.base;
    browser.viewport(360, 740).await;
    browser.client.goto(&format!("{base}/")).await.expect("load the citizen's page");
    browser.wait_for(".countdown").await;
    assert_eq!(browser.client.title().await.expect("title"), "文惠 · 文化消费券");
    assert_eq!(browser.texts(".season h2").await, ["2026 文化消费季"]);
    let terms = browser.texts(".batch .terms").await;
    assert_eq!(terms, ["满100减30", "8折 最高减50"]);
    let wheres = browser.texts(".batch .where").await;
    assert_eq!(wheres, ["山东省内通用 · 书店、KTV", "限青岛市 · 电影院、网吧"]);
    assert_eq!(browser.texts(".batch .stock").await, ["剩余 100 张 / 共 100 张", "共 10 张"]);
    let states = browser.texts(".batch .state").await;
    assert!(states[0].starts_with("正在领取"), "{states:?}");
    assert!(states[1].ends_with("3月1日 09:01 开抢"), "the opening in Beijing time: {states:?}");
    // The countdown runs on the server's clock (2026-03-01), not the phone's, and it ticks. It
    // starts at 90 s when the page is answered; a loaded machine may take many seconds to show it.
    let first = seconds(&browser.text(".countdown").await);
    assert!((45..=90).contains(&first), "{first} s to the opening");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let later = seconds(&browser.text(".countdown").await);
    assert!((1..=6).contains(&(first - later)), "the countdown went from {first} to {later}");
    browser.screenshot(&format!("citizen-{backend:?}").to_lowercase()).await;
    assert_eq!(browser.errors().await, Vec::<Value>::new(), "the browser logged errors");
    let requested = browser.requested().await;
    assert!(requested.iter().any(|u| u.ends_with("/v1/seasons")), "{requested:?}");
    assert!(requested.iter().all(|u| u.starts_with(&format!("{base}/"))), "another origin: {requested:?}");
}

async fn console_page(browser: &Browser, world: &World, backend: Backend) {
    let base = &world.app.base;
    browser.viewport(1280, 800).await;
    browser.client.goto(&format!("{base}/console/")).await.expect("load the console");
    let input = browser.wait_for("#staff-key").await;
    browser.screenshot(&format!("console-sign-in-{backend:?}").to_lowercase()).await;
    assert_eq!(browser.errors().await, Vec::<Value>::new(), "the browser logged errors");
    // A wrong key: the API's refusal, in Chinese.
    let (status, refusal) = world.app.get("/v1/staff/me", Some("not-a-key")).await;
    assert_eq!(status, 401, "{refusal}");
    let (_, messages) = world.app.get("/assets/messages.json", None).await;
    input.send_keys("not-a-key").await.expect("type");
    browser.client.find(Locator::Css("#sign-in button")).await.expect("button").click().await.expect("click");
    let shown = browser.text("#sign-in-error:not([hidden])").await;
    assert_eq!(shown, messages[code(&refusal)].as_str().expect("a message"), "{refusal}");
    browser.screenshot(&format!("console-refused-{backend:?}").to_lowercase()).await;
    let errors = browser.errors().await;
    assert!(
        errors
            .iter()
            .all(|e| e["message"].as_str().is_some_and(|m| m.contains("/v1/staff/me") && m.contains("401"))),
        "{errors:?}"
    );
    // A finance officer of Qingdao.
    let key = world.app.staff_key(Role::Finance, "370200").await;
    input.clear().await.expect("clear");
    input.send_keys(&key).await.expect("type");
    browser.client.find(Locator::Css("#sign-in button")).await.expect("button").click().await.expect("click");
    assert_eq!(browser.text("#who:not([hidden]) .who").await, "青岛市（370200） · 财务");
    browser.screenshot(&format!("console-{backend:?}").to_lowercase()).await;
    assert_eq!(browser.errors().await, Vec::<Value>::new(), "the browser logged errors");
    let requested = browser.requested().await;
    assert!(requested.iter().all(|u| u.starts_with(&format!("{base}/"))), "another origin: {requested:?}");
}

both_backends!(a_citizen_signs_up_claims_at_the_opening_and_shows_the_qr_code);

/// The citizen's journey at 360 px: sign up with a one-time code (read from the dev SMS
/// route), wait for an opening on the server's clock, double-tap 立即领取 (one voucher), open it
/// full screen, and read its QR code from a screenshot with rqrr: the till accepts the token.
async fn a_citizen_signs_up_claims_at_the_opening_and_shows_the_qr_code(backend: Backend) {
    let browser = Browser::start().await;
    let world = World::new(backend, "100000.00", None).await;
    let batch = world
        .batch(json!({"name": "全省书店券", "face_value": "30.00", "min_spend": "100.00", "stock": 5,
                      "categories": ["bookstore"], "claim_opens_at": world.at(600)}))
        .await;
    let batch_id = batch["id"].as_str().expect("id").to_owned();
    let open = world
        .batch(json!({"name": "全省影院券", "face_value": "10.00", "min_spend": "40.00", "stock": 5,
                                  "categories": ["cinema"]}))
        .await;
    let open_id = open["id"].as_str().expect("id").to_owned();
    let button = format!("button.claim[data-batch-id=\"{batch_id}\"]");
    let base = world.app.base.clone();
    let shot = |step: &str| format!("journey-{step}-{backend:?}").to_lowercase();
    browser.viewport(360, 740).await;
    browser.client.goto(&format!("{base}/")).await.expect("load the citizen's page");
    browser.wait_for(&format!("{button}[disabled]")).await;
    browser.screenshot(&shot("1-batches")).await;
    sign_up(&browser, &world, &shot("2-sign-up")).await;
    // Three seconds before the opening, by the server's clock: the button waits, then goes live
    // at the opening second on the page's own count (the server is moved past it meanwhile).
    let opens = Timestamp::from_unix_us(world.t0_us).plus_seconds(600);
    world.clock.set(opens.plus_seconds(-3));
    browser.client.goto(&format!("{base}/")).await.expect("reload");
    assert_eq!(browser.text(&button).await, "未开抢");
    browser.screenshot(&shot("3-before-opening")).await;
    world.clock.set(opens.plus_seconds(1));
    let live = browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(&format!("{button}:not([disabled])")))
        .await
        .expect("the claim button goes live");
    // A double tap: one intent, one voucher.
    let script = "const b = arguments[0]; b.click(); b.click(); return true";
    browser.client.execute(script, vec![serde_json::to_value(&live).expect("element")]).await.expect("tap");
    let message = browser.text(".claim-message.ok").await;
    assert!(message.starts_with("领取成功"), "{message}");
    browser.screenshot(&shot("4-claimed")).await;
    let token = browser
        .client
        .execute("return JSON.parse(localStorage.getItem('wenhui.citizen')).token", vec![])
        .await
        .expect("the citizen's token");
    let token = token.as_str().expect("a token").to_owned();
    let (status, mine) = world.app.get("/v1/me/vouchers", Some(&token)).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["vouchers"].as_array().map(Vec::len), Some(1), "a double tap gives one voucher: {mine}");
    assert_eq!(mine["vouchers"][0]["batch_id"], batch_id.as_str());
    // An intent whose answer a reload lost is sent again with its key: the server's first
    // answer (here, given to that key already) and still one voucher of the batch.
    let (status, first) = world.claim(&token, &open_id, "intent-before-reload").await;
    assert_eq!(status, 201, "{first}");
    let keep =
        format!("sessionStorage.setItem('wenhui.claim.{open_id}', 'intent-before-reload'); return true");
    browser.client.execute(&keep, vec![]).await.expect("an unanswered intent");
    browser.client.goto(&format!("{base}/")).await.expect("reload");
    let resumed =
        browser.text(&format!("button.claim[data-batch-id=\"{open_id}\"] + .claim-message.ok")).await;
    assert!(resumed.starts_with("领取成功"), "{resumed}");
    let read = format!("return sessionStorage.getItem('wenhui.claim.{open_id}')");
    let left = browser.client.execute(&read, vec![]).await.expect("storage");
    assert_eq!(left, Value::Null, "an answered intent is forgotten");
    let (_, mine) = world.app.get("/v1/me/vouchers", Some(&token)).await;
    assert_eq!(mine["vouchers"].as_array().map(Vec::len), Some(2), "{mine}");
    // Tapping again is refused in plain Chinese (the limit is one a citizen).
    let (_, messages) = world.app.get("/assets/messages.json", None).await;
    browser.client.goto(&format!("{base}/")).await.expect("reload");
    browser.wait_for(&format!("{button}:not([disabled])")).await.click().await.expect("tap again");
    let refused = browser.text(".claim-message.refused").await;
    assert_eq!(refused, messages["limit_reached"].as_str().expect("a message"));
    browser.screenshot(&shot("5-limit-reached")).await;
    show_the_qr_code(&browser, &world, &shot("6-vouchers"), &shot("7-qr")).await;
    assert_eq!(browser.errors().await.iter().filter(|e| !is_expected_refusal(e)).count(), 0);
    let requested = browser.requested().await;
    assert!(requested.iter().all(|u| u.starts_with(&format!("{base}/"))), "another origin: {requested:?}");
    // Signing out ends the session on the server.
    browser.client.find(Locator::Css("#to-account")).await.expect("tab").click().await.expect("tap");
    browser.wait_for("#sign-out").await.click().await.expect("sign out");
    browser.wait_for("#auth:not([hidden])").await;
    let (status, _) = world.app.get("/v1/me/vouchers", Some(&token)).await;
    assert_eq!(status, 401, "the token is revoked");
    browser.client.clone().close().await.expect("close the browser");
}

/// The 409 of the refused second claim is logged by the browser as a failed load.
fn is_expected_refusal(entry: &Value) -> bool {
    entry["message"].as_str().is_some_and(|m| m.contains("/claims") && m.contains("409"))
}

pub(crate) async fn sign_up(browser: &Browser, world: &World, screenshot: &str) {
    browser.client.find(Locator::Css("#to-account")).await.expect("tab").click().await.expect("tap");
    browser.wait_for("#switch-mode").await.click().await.expect("to sign-up");
    let phone = "13912345678";
    browser.wait_for("#name").await.send_keys("张三").await.expect("type");
    browser.wait_for("#phone").await.send_keys(phone).await.expect("type");
    browser
        .wait_for("#id-number")
        .await
        .send_keys(&synthetic_id_number("370202", "19900101", 7))
        .await
        .expect("type");
    browser.client.find(Locator::Css("#send-code")).await.expect("button").click().await.expect("tap");
    assert!(browser.text("#code-sent").await.contains("验证码已发送") || sent(browser).await);
    let (status, outbox) = world.app.get(&format!("/v1/dev/sms?phone={phone}"), None).await;
    assert_eq!(status, 200, "{outbox}");
    let code = outbox["messages"][0]["code"].as_str().expect("a code").to_owned();
    assert_eq!(outbox["messages"][0]["purpose"], "register");
    browser.wait_for("#code").await.send_keys(&code).await.expect("type");
    browser.screenshot(screenshot).await;
    browser.client.find(Locator::Css("#auth-submit")).await.expect("button").click().await.expect("tap");
    browser.wait_for("#batches:not([hidden])").await;
    assert_eq!(browser.text("#to-account").await, "账户", "signed in");
}

/// The note under the code field appears once the code is sent (waited for).
async fn sent(browser: &Browser) -> bool {
    for _ in 0..50 {
        if browser.text("#code-sent").await.contains("验证码已发送") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// My vouchers, then the voucher full screen: its QR code, read from a screenshot, is a token
/// the till redeems.
async fn show_the_qr_code(browser: &Browser, world: &World, list: &str, full: &str) {
    browser.client.find(Locator::Css("#to-mine")).await.expect("tab").click().await.expect("tap");
    browser.wait_for("button.voucher.active").await;
    let terms = browser.texts(".voucher .terms").await;
    let at = terms.iter().position(|t| t == "满100减30").expect("the bookstore voucher");
    assert_eq!(browser.texts(".voucher .where").await[at], "山东省内通用 · 书店");
    assert!(browser.texts(".voucher .status").await.iter().all(|s| s.starts_with("可使用")));
    let cards = browser.client.find_all(Locator::Css("button.voucher.active")).await.expect("cards");
    let card = cards.into_iter().nth(at).expect("the card");
    browser.screenshot(list).await;
    card.click().await.expect("open the voucher");
    browser.wait_for("#qr:not([hidden]) #qr-image[src]").await;
    assert_eq!(browser.text(".qr-show").await, "请向收银员出示");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = browser.screenshot(full).await;
    let token = decode_qr_png(&png);
    let shown = browser.client.execute("return document.getElementById('qr').dataset.token", vec![]).await;
    assert_eq!(shown.expect("token").as_str(), Some(token.as_str()), "the QR code is the served token");
    let admin = world.app.staff_key(Role::CityAdmin, "370200").await;
    let shop = crate::till::merchant(world, &admin, 1, "bookstore", "370200").await;
    let dir = world.app.db.dir.path().to_owned();
    let (_, terminal, key) = crate::till::terminal(world, &admin, &shop, &dir).await;
    let body = json!({"qr": token, "order_amount": "120.00", "order_ref": "browser-1"});
    let ts = world.clock.now().unix_us() / 1_000_000;
    let (status, answer) =
        crate::till::signed(world, terminal, key.key_pair(), ts, "nonce-browser-qr-0000001", &body).await;
    assert!(status == 200 || status == 201, "the till accepts the token: {answer}");
    browser.client.find(Locator::Css("#qr-close")).await.expect("close").click().await.expect("tap");
}

/// The QR code in a PNG screenshot (decoded with `png`, read with `rqrr`).
pub(crate) fn decode_qr_png(path: &std::path::Path) -> String {
    let file = std::fs::File::open(path).expect("the screenshot");
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a size")];
    let frame = reader.next_frame(&mut pixels).expect("a frame");
    let channels = frame.color_type.samples();
    let (width, height) = (frame.width as usize, frame.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
        let at = (y * width + x) * channels;
        let rgb = &pixels[at..at + channels.min(3)];
        (rgb.iter().map(|&v| u32::from(v)).sum::<u32>() / rgb.len() as u32) as u8
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code on the screen");
    grids[0].decode().expect("the QR code decodes").1
}
