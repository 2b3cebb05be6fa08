//! One-time codes and the providers that deliver and check: a fake SMS gateway and a fake
//! real-name register (small axum servers in the test) receive real, signed HTTP calls; codes
//! expire, are used once, serve one purpose, lock after five tries, and are sent at most once a
//! minute and ten times a day; a provider down is a clean 503 with nothing stored; and the
//! binary refuses development providers in production.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use wenhui::domain::citizen::synthetic_id_number;
use wenhui::domain::one_time_code::CodePolicy;
use wenhui::domain::time::{ManualClock, Timestamp};
use wenhui::providers::{HttpIdentityVerifier, HttpProviderConfig, HttpSms};

use crate::both_backends;
use crate::common::{Backend, TestApp, code as error_code};

both_backends!(
    codes_travel_through_signed_http_providers,
    a_provider_down_is_a_clean_503_and_nothing_is_stored,
    codes_expire_and_are_sent_once_a_minute_and_ten_a_day,
    five_wrong_tries_lock_a_code_and_a_used_code_is_gone,
);

const SECRET: &[u8] = b"a secret shared with the provider";

/// How a fake provider answers a signed call: a status and a JSON body.
type Answerer = Arc<dyn Fn(&Value) -> (u16, Value) + Send + Sync>;

/// A provider's side: checks each call's signature and keeps the bodies of the signed ones.
#[derive(Clone)]
struct FakeProvider {
    calls: Arc<Mutex<Vec<Value>>>,
    badly_signed: Arc<Mutex<u32>>,
    /// What it answers a signed call.
    answer: Answerer,
}

impl FakeProvider {
    async fn spawn(
        answer: impl Fn(&Value) -> (u16, Value) + Send + Sync + 'static,
    ) -> (FakeProvider, String) {
        let fake =
            FakeProvider { calls: Arc::default(), badly_signed: Arc::default(), answer: Arc::new(answer) };
        let app = axum::Router::new().fallback(receive).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/call", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, url)
    }

    fn calls(&self) -> Vec<Value> {
        assert_eq!(*self.badly_signed.lock().expect("lock"), 0, "every call is signed");
        self.calls.lock().expect("lock").clone()
    }
}

async fn receive(State(fake): State<FakeProvider>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let timestamp: i64 = header("x-wenhui-timestamp").parse().unwrap_or_default();
    let fresh = (Timestamp::now().unix_us() / 1_000_000 - timestamp).abs() < 300;
    let expected = wenhui::providers::signature(SECRET, timestamp, &body);
    if !fresh || header("x-wenhui-signature") != expected {
        *fake.badly_signed.lock().expect("lock") += 1;
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let call: Value = serde_json::from_slice(&body).expect("a JSON body");
    fake.calls.lock().expect("lock").push(call.clone());
    let (status, answer) = (fake.answer)(&call);
    (StatusCode::from_u16(status).expect("status"), answer.to_string())
}

fn http(url: &str) -> HttpProviderConfig {
    HttpProviderConfig {
        url: url.to_owned(),
        secret: SECRET.to_vec(),
        timeout: Duration::from_secs(2),
        retries: 1,
    }
}

fn person(n: u16, phone: &str) -> Value {
    json!({"name": "张三", "id_number": synthetic_id_number("370202", "19900101", n), "phone": phone})
}

async fn ask_code(app: &TestApp, phone: &str, purpose: &str) -> (u16, Value, Option<String>) {
    let body = json!({"phone": phone, "purpose": purpose});
    let response = app.client.post(app.url("/v1/citizens/codes")).json(&body).send().await.expect("send");
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (status, answer) = crate::common::read(response).await;
    (status, answer, retry_after)
}

/// The code the fake gateway received last for `phone`.
fn sent_code(gateway: &FakeProvider, phone: &str) -> String {
    let calls = gateway.calls();
    let last = calls.iter().rev().find(|c| c["phone"] == phone).expect("a message to the phone");
    last["code"].as_str().expect("code").to_owned()
}

async fn with_code(app: &TestApp, path: &str, mut body: Value, code: &str) -> (u16, Value) {
    body["code"] = json!(code);
    app.post(path, None, body).await
}

async fn codes_travel_through_signed_http_providers(backend: Backend) {
    const KNOWN: &str = "13912340001";
    let (gateway, sms_url) = FakeProvider::spawn(|_| (200, json!({"queued": true}))).await;
    let (register, register_url) = FakeProvider::spawn(|call| {
        (200, json!({"match": call["phone"] == KNOWN, "reason": "not in the register"}))
    })
    .await;
    let sms = Arc::new(HttpSms::new(http(&sms_url)).expect("client"));
    let verifier = Arc::new(HttpIdentityVerifier::new(http(&register_url)).expect("client"));
    let notices = sms.clone();
    let app = TestApp::spawn_configured(backend, |config| {
        config.sms_sender = sms;
        config.identity_verifier = verifier;
    })
    .await;
    let (status, _) = app.get(&format!("/v1/dev/sms?phone={KNOWN}"), None).await;
    assert_eq!(status, 404, "no development outbox with a real gateway");
    // A notice (a waitlist's voucher, docs/waitlist.md) goes the same signed way, with its text.
    let phone = wenhui::domain::citizen::Phone::parse(KNOWN).expect("phone");
    use wenhui::app::providers::SmsSender;
    notices.send_notice(&phone, "waitlist_voucher", "排队轮到你了").await.expect("sent");
    assert_eq!(
        gateway.calls(),
        [json!({"phone": KNOWN, "purpose": "waitlist_voucher", "text": "排队轮到你了"})]
    );
    gateway.calls.lock().expect("lock").clear();

    let (status, answer, _) = ask_code(&app, KNOWN, "register").await;
    assert_eq!(status, 202, "{answer}");
    let code = sent_code(&gateway, KNOWN);
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    assert!(!answer.to_string().contains(&code), "the answer never holds the code: {answer}");
    assert_eq!(
        gateway.calls()[0],
        json!({"phone": KNOWN, "purpose": "register", "code": code, "ttl_s": 300})
    );

    let (status, registered) = with_code(&app, "/v1/citizens", person(1, KNOWN), &code).await;
    assert_eq!(status, 201, "{registered}");
    let checked = register.calls();
    assert_eq!(checked.len(), 1);
    assert_eq!(checked[0]["phone"], KNOWN);
    assert_eq!(checked[0]["id_number"], person(1, KNOWN)["id_number"]);
    let (status, reused) = with_code(&app, "/v1/citizens", person(2, KNOWN), &code).await;
    assert_eq!((status, error_code(&reused)), (401, "invalid_code"), "a used code is gone: {reused}");

    // A code for registration does not sign in; one for sign-in does.
    assert_eq!(ask_code(&app, KNOWN, "register").await.0, 202);
    let for_registration = sent_code(&gateway, KNOWN);
    let sign_in = json!({"id_number": person(1, KNOWN)["id_number"], "phone": KNOWN});
    let (status, refused) =
        with_code(&app, "/v1/citizens/sessions", sign_in.clone(), &for_registration).await;
    assert_eq!((status, error_code(&refused)), (401, "invalid_code"), "{refused}");
    assert_eq!(ask_code(&app, KNOWN, "sign_in").await.0, 202);
    let for_sign_in = sent_code(&gateway, KNOWN);
    let (status, session) = with_code(&app, "/v1/citizens/sessions", sign_in, &for_sign_in).await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["citizen_id"], registered["citizen_id"]);

    // Someone the register does not know.
    const STRANGER: &str = "13912340002";
    assert_eq!(ask_code(&app, STRANGER, "register").await.0, 202);
    let code = sent_code(&gateway, STRANGER);
    let (status, refused) = with_code(&app, "/v1/citizens", person(3, STRANGER), &code).await;
    assert_eq!((status, error_code(&refused)), (422, "identity_rejected"), "{refused}");
    assert!(!refused.to_string().contains("not in the register"), "the provider's words stay inside");
}

async fn a_provider_down_is_a_clean_503_and_nothing_is_stored(backend: Backend) {
    // A port nobody listens on: the gateway is down.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let down_url = format!("http://{}/sms", closed.local_addr().expect("addr"));
    drop(closed);
    let register_up = Arc::new(AtomicBool::new(false));
    let up = register_up.clone();
    let (register, register_url) = FakeProvider::spawn(move |_| match up.load(Ordering::SeqCst) {
        true => (200, json!({"match": true})),
        false => (500, json!({"error": "maintenance"})),
    })
    .await;
    let verifier = Arc::new(HttpIdentityVerifier::new(http(&register_url)).expect("client"));
    let sms = Arc::new(HttpSms::new(http(&down_url)).expect("client"));
    let app = TestApp::spawn_configured(backend, |config| {
        config.sms_sender = sms;
        config.identity_verifier = verifier;
    })
    .await;
    let (status, answer, _) = ask_code(&app, "13912340003", "register").await;
    assert_eq!((status, error_code(&answer)), (503, "provider_unavailable"), "{answer}");
    assert_eq!(app.db.raw("SELECT 1 FROM one_time_codes").await, Ok(0), "nothing stored");
    let (status, refused) = with_code(&app, "/v1/citizens", person(4, "13912340003"), "123456").await;
    assert_eq!((status, error_code(&refused)), (401, "invalid_code"), "no code was stored to use");

    // The register fails (after its retry): 503, nobody registered, and the code still holds.
    let mut app = app;
    app.reconfigure(|config| config.sms_sender = Arc::new(wenhui::app::providers::DevSms::default()));
    app.restart().await;
    let phone = "13912340004";
    let code = app.sms_code(phone, "register").await;
    let (status, answer) = with_code(&app, "/v1/citizens", person(5, phone), &code).await;
    assert_eq!((status, error_code(&answer)), (503, "provider_unavailable"), "{answer}");
    assert_eq!(register.calls().len(), 2, "one call and one retry");
    assert_eq!(app.db.raw("SELECT 1 FROM citizens").await, Ok(0), "nobody registered");
    register_up.store(true, Ordering::SeqCst);
    let (status, answer) = with_code(&app, "/v1/citizens", person(5, phone), &code).await;
    assert_eq!(status, 201, "the code was not used up by the outage: {answer}");
}

async fn codes_expire_and_are_sent_once_a_minute_and_ten_a_day(backend: Backend) {
    let clock = Arc::new(ManualClock::new(Timestamp::now()));
    let manual = clock.clone();
    let app = TestApp::spawn_configured(backend, |config| {
        config.clock = manual;
        config.code_policy = CodePolicy::default();
    })
    .await;
    let phone = "13912340005";
    let first = app.sms_code(phone, "register").await;
    let (status, answer, retry_after) = ask_code(&app, phone, "register").await;
    assert_eq!((status, error_code(&answer)), (429, "rate_limited"), "{answer}");
    assert_eq!(retry_after.as_deref(), Some("60"));
    assert_eq!(ask_code(&app, phone, "sign_in").await.0, 202, "another purpose has its own minute");

    clock.advance_us(301 * 1_000_000);
    let (status, expired) = with_code(&app, "/v1/citizens", person(6, phone), &first).await;
    assert_eq!((status, error_code(&expired)), (401, "invalid_code"), "expired: {expired}");
    let fresh = app.sms_code(phone, "register").await;
    let (status, answer) = with_code(&app, "/v1/citizens", person(6, phone), &fresh).await;
    assert_eq!(status, 201, "{answer}");

    let busy = "13912340006";
    for n in 0..10 {
        assert_eq!(ask_code(&app, busy, "sign_in").await.0, 202, "code {n}");
        clock.advance_us(61 * 1_000_000);
    }
    let (status, answer, retry_after) = ask_code(&app, busy, "sign_in").await;
    assert_eq!((status, error_code(&answer)), (429, "rate_limited"), "the eleventh today: {answer}");
    let wait: i64 = retry_after.as_deref().and_then(|s| s.parse().ok()).expect("Retry-After");
    assert!(wait > 80_000 && wait <= 86_400, "until the day is over: {wait}");
    clock.advance_us(wait * 1_000_000);
    assert_eq!(ask_code(&app, busy, "sign_in").await.0, 202, "a new day");
}

/// At the application's level, so the per-phone request rate of the HTTP layer does not stop
/// the guesser first: five wrong tries lock the code, even against the right one after.
async fn five_wrong_tries_lock_a_code_and_a_used_code_is_gone(backend: Backend) {
    use wenhui::app::codes::{CodeError, Codes};
    use wenhui::app::providers::DevSms;
    use wenhui::domain::citizen::Phone;
    use wenhui::domain::one_time_code::{CodePurpose, OneTimeCode};

    let db = crate::common::TestDb::new(backend).await;
    let clock = Arc::new(ManualClock::new(Timestamp::now()));
    let store = db.store_with_clock(clock.clone()).await;
    let sms = Arc::new(DevSms::default());
    let codes = Codes::new(store, clock.clone(), &[9; 32], sms.clone(), CodePolicy::default());
    let phone = Phone::parse("13912340007").expect("phone");
    let sent = |sms: &DevSms| OneTimeCode::parse(&sms.sent_to(&phone)[0].code).expect("code");

    codes.send(&phone, CodePurpose::SignIn).await.expect("sent");
    let right = sent(&sms);
    let wrong = OneTimeCode::from_number((right.as_str().parse::<u32>().expect("digits") + 1) % 1_000_000);
    for n in 1..=5 {
        let refused = codes.check(&phone, CodePurpose::SignIn, &wrong).await;
        assert!(matches!(refused, Err(CodeError::Invalid)), "try {n}: {refused:?}");
    }
    let locked = codes.check(&phone, CodePurpose::SignIn, &right).await;
    assert!(matches!(locked, Err(CodeError::Locked)), "the right code after five wrong: {locked:?}");

    clock.advance_us(60 * 1_000_000);
    codes.send(&phone, CodePurpose::SignIn).await.expect("a new code, with its own tries");
    let right = sent(&sms);
    let other_purpose = codes.check(&phone, CodePurpose::Register, &right).await;
    assert!(matches!(other_purpose, Err(CodeError::Invalid)), "{other_purpose:?}");
    let matched = codes.check(&phone, CodePurpose::SignIn, &right).await.expect("the right code");
    codes.spend(matched).await.expect("used");
    let again = codes.check(&phone, CodePurpose::SignIn, &right).await;
    assert!(matches!(again, Err(CodeError::Invalid)), "a used code is gone: {again:?}");
}

/// `wenhui serve --production` (or `WENHUI_ENV=production`) with a development provider exits
/// at once, non-zero, and says why.
#[test]
fn the_binary_refuses_development_providers_in_production() {
    for (flag, env) in [(Some("--production"), None), (None, Some(("WENHUI_ENV", "production")))] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_wenhui"));
        command.arg("serve").args(flag).current_dir(dir.path()).stdout(Stdio::null()).stderr(Stdio::piped());
        command.env("WENHUI_DATA_DIR", dir.path().join("data")).env("WENHUI_LISTEN", "127.0.0.1:0");
        command.env_remove("DATABASE_URL").env_remove("WENHUI_ENV");
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().expect("kill");
                panic!("the server started in production with development providers");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read");
        assert!(!status.success(), "{status}");
        assert!(stderr.contains("refusing to start in production"), "{stderr}");
        assert!(
            stderr.contains("--sms-provider dev") && stderr.contains("--identity-provider dev"),
            "{stderr}"
        );
    }
}
