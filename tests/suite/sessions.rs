//! Citizen sessions: signing out, a province_admin revoking every session of a citizen, and a
//! revocation made elsewhere reaching a server that has the token cached.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wenhui::domain::citizen::synthetic_id_number;
use wenhui::domain::staff::Role;
use wenhui::domain::time::Timestamp;

use crate::both_backends;
use crate::common::{Backend, TestApp, code, read};

both_backends!(
    signing_out_ends_only_that_session,
    a_province_admin_revokes_every_session_of_a_citizen,
    a_revocation_made_elsewhere_applies_within_the_poll,
    more_revocations_than_a_page_clear_the_token_cache,
    sign_in_attempts_are_limited_per_id_number_and_per_phone,
    a_phone_sent_as_a_number_is_not_echoed_back,
    a_plugged_in_identity_verifier_decides_registration,
);

/// A province's real-name register: knows one person, by their phone.
#[derive(Debug)]
struct OnePersonVerifier {
    phone: String,
}

#[async_trait::async_trait]
impl wenhui::app::providers::IdentityVerifier for OnePersonVerifier {
    async fn verify_registration(
        &self,
        _: &wenhui::domain::citizen::CitizenName,
        _: &wenhui::domain::citizen::IdNumber,
        phone: &wenhui::domain::citizen::Phone,
    ) -> Result<(), wenhui::app::providers::ProviderError> {
        (phone.as_str() == self.phone).then_some(()).ok_or_else(|| {
            wenhui::app::providers::ProviderError::Refused("the phone is not in this person's name".into())
        })
    }
}

/// `ServeConfig::identity_verifier` is where a deployment's real-name check plugs in (the
/// `http` one, or its own): registration goes through it, and a refusal is 422
/// `identity_rejected`, whose message does not repeat the provider's reason.
async fn a_plugged_in_identity_verifier_decides_registration(backend: Backend) {
    let phone = identity(9)["phone"].as_str().expect("phone").to_owned();
    let verifier = std::sync::Arc::new(OnePersonVerifier { phone });
    let app = TestApp::spawn_configured(backend, |config| config.identity_verifier = verifier).await;
    let mut stranger = identity(10);
    stranger["name"] = json!("李四");
    let (status, answer) = app.register_citizen(stranger).await;
    assert_eq!((status, code(&answer)), (422, "identity_rejected"), "{answer}");
    assert!(!answer.to_string().contains("this person's name"), "{answer}");
    register(&app, 9).await;
}

/// serde's message quotes the value of a field of the wrong type; for a phone or an ID number
/// that would send it back in the error body. The field's name stays, the value goes.
async fn a_phone_sent_as_a_number_is_not_echoed_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut body = identity(8);
    body["name"] = json!("张三");
    body["phone"] = json!(13_912_345_678_u64);
    body["code"] = json!("123456");
    for path in ["/v1/citizens", "/v1/citizens/sessions"] {
        let mut body = body.clone();
        if path.ends_with("sessions") {
            body.as_object_mut().expect("object").remove("name");
        }
        let (status, answer) = app.post(path, None, body).await;
        assert_eq!((status, code(&answer)), (422, "invalid_body"), "{answer}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains("phone") && !message.contains("13912345678"), "{message}");
    }
}

fn identity(n: u16) -> Value {
    json!({"id_number": synthetic_id_number("370202", "19900101", n), "phone": format!("139{:08}", n)})
}

/// Registers citizen `n`; returns its id and first token.
async fn register(app: &TestApp, n: u16) -> (String, String) {
    let mut body = identity(n);
    body["name"] = json!("张三");
    let (status, answer) = app.register_citizen(body).await;
    assert_eq!(status, 201, "{answer}");
    (
        answer["citizen_id"].as_str().expect("id").to_owned(),
        answer["token"].as_str().expect("token").to_owned(),
    )
}

/// A guesser at the sign-in (a one-time code, a phone for a known ID number) gets the burst,
/// then 429 `rate_limited` with `Retry-After`, whatever phone it tries with the ID number.
async fn sign_in_attempts_are_limited_per_id_number_and_per_phone(backend: Backend) {
    use wenhui::http::rate_limit::IDENTITY_BURST;
    let app = TestApp::spawn(backend).await;
    register(&app, 7).await;
    let mut answers = Vec::new();
    for attempt in 1..IDENTITY_BURST + 3 {
        let mut guess = identity(7);
        guess["code"] = json!("000000");
        if attempt % 2 == 0 {
            guess["phone"] = json!(format!("137{attempt:08}"));
        } else if answers.len() < IDENTITY_BURST as usize - 1 {
            guess["code"] = json!(app.sms_code(&format!("139{:08}", 7), "sign_in").await);
        }
        let response =
            app.client.post(app.url("/v1/citizens/sessions")).json(&guess).send().await.expect("send");
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (status, body) = read(response).await;
        answers.push((status, code(&body).to_owned(), retry_after));
    }
    // Registration was the first attempt with this ID number and phone.
    let burst = IDENTITY_BURST as usize - 1;
    for (n, (status, code, _)) in answers[..burst].iter().enumerate() {
        let expected = if n % 2 == 0 { (201, "<no error code>") } else { (401, "invalid_code") };
        assert_eq!((*status, code.as_str()), expected, "attempt {}: {answers:?}", n + 1);
    }
    for (status, code, retry_after) in &answers[burst..] {
        assert_eq!((*status, code.as_str()), (429, "rate_limited"), "{answers:?}");
        let wait_s: u64 =
            retry_after.as_deref().and_then(|s| s.parse().ok()).expect("Retry-After in seconds");
        assert!((1..=60).contains(&wait_s), "{wait_s}");
    }
    let (status, refused) = app.sign_in_citizen(identity(7)).await;
    assert_eq!((status, code(&refused)), (429, "rate_limited"), "the right phone too: {refused}");
    let (status, answer) = app.sign_in_citizen(identity(8)).await;
    assert_eq!(
        (status, code(&answer)),
        (401, "unknown_citizen"),
        "another identity has its own bucket: {answer}"
    );
    let (_, other) = register(&app, 9).await;
    assert_eq!(whoami(&app, &other).await.0, 200, "and registers");
}

async fn sign_in(app: &TestApp, n: u16) -> String {
    let (status, answer) = app.sign_in_citizen(identity(n)).await;
    assert_eq!(status, 201, "{answer}");
    answer["token"].as_str().expect("token").to_owned()
}

/// The status of an authenticated citizen read, and the error code if refused.
async fn whoami(app: &TestApp, token: &str) -> (u16, String) {
    let (status, body) = app.get("/v1/me/vouchers", Some(token)).await;
    (status, if status == 200 { String::new() } else { code(&body).to_owned() })
}

async fn sign_out(app: &TestApp, token: Option<&str>) -> (u16, Value) {
    let mut request = app.client.delete(app.url("/v1/me/session"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    read(request.send().await.expect("send")).await
}

async fn signing_out_ends_only_that_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, phone_token) = register(&app, 1).await;
    let tablet_token = sign_in(&app, 1).await;
    assert_eq!(whoami(&app, &phone_token).await.0, 200);

    let (status, body) = sign_out(&app, Some(&phone_token)).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(whoami(&app, &phone_token).await, (401, "invalid_token".to_owned()));
    assert_eq!(whoami(&app, &tablet_token).await.0, 200, "the citizen's other session is untouched");

    let (status, body) = sign_out(&app, Some(&phone_token)).await;
    assert_eq!(status, 204, "a retried sign-out gets the first answer: {body}");
    let (status, body) = sign_out(&app, None).await;
    assert_eq!((status, code(&body)), (401, "unauthenticated"));
    let (status, _) = sign_out(&app, Some("wh_ct_not-a-token")).await;
    assert_eq!(status, 204, "a malformed token names no session, so there is nothing to end");

    let claim = app.post_idem(
        "/v1/batches/00000000-0000-0000-0000-000000000000/claims",
        Some(&phone_token),
        "k1",
        json!({}),
    );
    let (status, body) = claim.await;
    assert_eq!((status, code(&body)), (401, "invalid_token"), "a revoked token cannot claim");
}

async fn a_province_admin_revokes_every_session_of_a_citizen(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (citizen_id, first) = register(&app, 2).await;
    let second = sign_in(&app, 2).await;
    let (_, bystander) = register(&app, 3).await;
    let path = format!("/v1/citizens/{citizen_id}/sessions/revoke");

    let city_admin = app.staff_key(Role::CityAdmin, "370200").await;
    let (status, body) = app.post(&path, Some(&city_admin), json!({})).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    assert_eq!(whoami(&app, &first).await.0, 200, "a refused revocation revokes nothing");

    let province_admin = app.staff_key(Role::ProvinceAdmin, "370000").await;
    let (status, body) = app.post(&path, Some(&province_admin), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"citizen_id": citizen_id, "sessions_revoked": true}));
    assert_eq!(whoami(&app, &first).await, (401, "invalid_token".to_owned()));
    assert_eq!(whoami(&app, &second).await, (401, "invalid_token".to_owned()));
    assert_eq!(whoami(&app, &bystander).await.0, 200, "another citizen is untouched");

    let (status, retried) = app.post(&path, Some(&province_admin), json!({})).await;
    assert_eq!((status, &retried), (200, &body), "a retry gets the first answer");
    let unknown = format!("/v1/citizens/{}/sessions/revoke", uuid::Uuid::now_v7());
    let (status, body) = app.post(&unknown, Some(&province_admin), json!({})).await;
    assert_eq!((status, code(&body)), (404, "citizen_not_found"));

    let fresh = sign_in(&app, 2).await;
    assert_eq!(whoami(&app, &fresh).await.0, 200, "signing in again gives a working token");
}

/// Another instance revoked the session: this server, which has the token cached, refuses it
/// once it has read the revocation feed.
async fn a_revocation_made_elsewhere_applies_within_the_poll(backend: Backend) {
    let poll = Duration::from_millis(200);
    let app = TestApp::spawn_configured(backend, |config| config.revocation_poll = poll).await;
    let (citizen_id, token) = register(&app, 4).await;
    assert_eq!(whoami(&app, &token).await.0, 200);

    let revoked_elsewhere = app
        .db
        .raw(&format!(
            "UPDATE citizen_sessions SET revoked_at_us = {} WHERE citizen_id = {}",
            Timestamp::now().unix_us(),
            uuid_literal(backend, &citizen_id)
        ))
        .await
        .expect("revoke behind the server's back");
    assert_eq!(revoked_elsewhere, 1);

    let deadline = Instant::now() + poll + Duration::from_secs(10);
    loop {
        match whoami(&app, &token).await {
            (401, code) => {
                assert_eq!(code, "invalid_token");
                break;
            }
            (200, _) => {
                assert!(Instant::now() < deadline, "the revoked token still works long after the poll")
            }
            other => panic!("unexpected answer {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A UUID as each backend stores it: PostgreSQL's uuid type, SQLite's 16-byte blob.
fn uuid_literal(backend: Backend, id: &str) -> String {
    match backend {
        Backend::Postgres => format!("'{id}'"),
        Backend::Sqlite => format!("x'{}'", id.replace('-', "")),
    }
}

/// A poll of the revocation feed that finds a page of revocations or more forgets every cached
/// token instead of dropping them one by one: the revoked tokens are refused, the others are
/// read from the database again and still work. A poll with room in its page drops only those.
async fn more_revocations_than_a_page_clear_the_token_cache(backend: Backend) {
    use std::sync::Arc;
    use wenhui::app::citizens::{Citizens, DevIdentityVerifier, FeedPoll};
    use wenhui::app::codes::Codes;
    use wenhui::app::providers::DevSms;
    use wenhui::domain::citizen::{CitizenName, IdNumber, Phone};
    use wenhui::domain::one_time_code::{CodePolicy, CodePurpose, OneTimeCode};
    use wenhui::domain::time::{Clock, SystemClock};

    let db = crate::common::TestDb::new(backend).await;
    let store = db.store().await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let sms = Arc::new(DevSms::default());
    let codes = Codes::new(store.clone(), clock.clone(), &[7; 32], sms.clone(), CodePolicy::default());
    let verifier = Arc::new(DevIdentityVerifier);
    let citizens = Citizens::new(store.clone(), clock.clone(), vec![7; 32], verifier, codes);
    let mut sessions = Vec::new();
    for n in 1..=4 {
        let id = IdNumber::parse(&synthetic_id_number("370202", "19900101", n)).expect("id number");
        let phone = Phone::parse(&format!("139{n:08}")).expect("phone");
        let name = CitizenName::parse("张三").expect("name");
        citizens.codes().send(&phone, CodePurpose::Register).await.expect("code sent");
        let code = OneTimeCode::parse(&sms.sent_to(&phone)[0].code).expect("code");
        sessions.push(citizens.register(name, id, phone, &code).await.expect("registered"));
    }
    let signed_in = |token: String| {
        let citizens = &citizens;
        async move { citizens.authenticate(&token).await.expect("authenticate").is_some() }
    };
    let since = clock.now();
    for session in &sessions[..3] {
        // Revoked by another process: this one still has the tokens in memory.
        store.revoke_citizen_sessions(session.citizen_id, clock.now()).await.expect("revoke");
    }
    assert!(signed_in(sessions[0].token.clone()).await, "served from memory until the feed is read");

    let poll = citizens.drop_revoked_since(since, 2).await.expect("poll");
    assert_eq!(poll, FeedPoll::ForgotEveryToken, "three revocations, a page of two");
    for (n, session) in sessions.iter().enumerate() {
        assert_eq!(signed_in(session.token.clone()).await, n == 3, "session {n}");
    }

    store.revoke_citizen_sessions(sessions[3].citizen_id, clock.now()).await.expect("revoke");
    assert!(signed_in(sessions[3].token.clone()).await, "cached again after the clear");
    let poll = citizens.drop_revoked_since(since, 10).await.expect("poll");
    assert_eq!(poll, FeedPoll::Dropped(4), "room in the page: dropped one by one");
    assert!(!signed_in(sessions[3].token.clone()).await);
}
