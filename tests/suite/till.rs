//! Redemption at the till, over HTTP through the merchant SDK, on both backends.

use std::sync::Arc;

use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use uuid::Uuid;
use wenhui::domain::merchant::credit_check_char;
use wenhui::domain::staff::Role;
use wenhui::domain::time::{Clock, Timestamp};
use wenhui_merchant_sdk::client::{ClientOptions, RedeemRequest, TillClient, TillKey, register_terminal};
use wenhui_merchant_sdk::journal::Journal;
use wenhui_merchant_sdk::signing::SignedParts;
use wenhui_merchant_sdk::token::{QrToken, TokenKind, TokenPayload, key_id_for};

use crate::both_backends;
use crate::claims::World;
use crate::common::{Backend, code, read};
use wenhui::domain::ids::{BatchId, SeasonId};

pub fn credit_code(seed: u32) -> String {
    let first = format!("9137020{:010}", seed);
    let check = credit_check_char(first.as_bytes()).expect("valid characters");
    format!("{first}{check}")
}

pub struct Till {
    pub world: World,
    pub qingdao_admin: String,
    pub bookstore: String,
    pub client: TillClient,
    pub terminal_id: Uuid,
    pub key: TillKey,
}

pub async fn merchant(world: &World, admin: &str, seed: u32, category: &str, city: &str) -> String {
    let body = json!({"name": format!("店{seed}"), "credit_code": credit_code(seed), "category": category, "city": city,
        "settlement_account": {"bank": "青岛银行", "account_no": "6222000011112222", "account_name": "某书店"}});
    let (status, answer) = world.app.post_idem("/v1/merchants", Some(admin), &format!("m{seed}"), body).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["settlement_account"]["account_no"], "************2222", "kept masked for retries");
    answer["id"].as_str().expect("id").to_owned()
}

pub async fn terminal(
    world: &World,
    admin: &str,
    merchant: &str,
    dir: &std::path::Path,
) -> (TillClient, Uuid, TillKey) {
    let key = TillKey::generate().expect("key");
    let merchant: Uuid = merchant.parse().expect("uuid");
    let registration =
        register_terminal(&world.app.base, admin, merchant, &key, "till", ClientOptions::default())
            .await
            .expect("register");
    let journal = Journal::open(dir.join(format!("{}.jsonl", registration.terminal_id))).expect("journal");
    let key_file = dir.join(format!("{}.key", registration.terminal_id));
    key.save(&key_file).expect("save key");
    let reload = TillKey::load(&key_file).expect("load key");
    let client =
        TillClient::new(&world.app.base, registration.terminal_id, reload, journal, ClientOptions::default())
            .expect("client");
    (client, registration.terminal_id, key)
}

impl Till {
    pub async fn new(backend: Backend, extra: Value) -> Till {
        let now_us = Timestamp::now().unix_us() / 1_000_000 * 1_000_000;
        Till::new_at(backend, extra, now_us).await
    }

    /// The same, with the world's clock starting at `t0_us`.
    pub async fn new_at(backend: Backend, extra: Value, t0_us: i64) -> Till {
        let world = World::new_at(backend, "100000.00", None, t0_us, extra).await;
        let qingdao_admin = world.app.staff_key(Role::CityAdmin, "370200").await;
        let bookstore = merchant(&world, &qingdao_admin, 1, "bookstore", "370200").await;
        let dir = world.app.db.dir.path().to_owned();
        let (client, terminal_id, key) = terminal(&world, &qingdao_admin, &bookstore, &dir).await;
        Till { world, qingdao_admin, bookstore, client, terminal_id, key }
    }

    /// A citizen with one claimed voucher of `batch`; returns (citizen token, voucher id).
    pub async fn voucher(&self, n: u32, batch: &str) -> (String, String) {
        let token = self.world.citizen(n).await;
        let (status, claim) = self.world.claim(&token, batch, &format!("claim-{n}-{batch}")).await;
        assert_eq!(status, 201, "{claim}");
        (token, claim["voucher"]["id"].as_str().expect("id").to_owned())
    }

    pub async fn qr(&self, citizen: &str, voucher: &str) -> String {
        let (status, qr) =
            self.world.app.post(&format!("/v1/vouchers/{voucher}/qr"), Some(citizen), json!({})).await;
        assert!(status == 200 || status == 201, "{qr}");
        assert!(qr["svg"].as_str().is_some_and(|s| s.starts_with("<?xml") || s.contains("<svg")));
        qr["token"].as_str().expect("token").to_owned()
    }

    pub async fn redeem(
        &self,
        qr: &str,
        amount: &str,
        order_ref: &str,
    ) -> Result<wenhui_merchant_sdk::client::Redemption, String> {
        let request = RedeemRequest {
            qr: qr.into(),
            order_amount: amount.into(),
            order_ref: order_ref.into(),
            idempotency_key: None,
        };
        self.client.redeem(request).await.map_err(|e| e.code())
    }

    pub async fn head(&self) -> i64 {
        self.world.app.store().ledger_head().await.expect("head").seq
    }
}

/// A raw signed redemption request, for the refusals the SDK would never produce.
pub async fn signed(
    world: &World,
    terminal: Uuid,
    key: &Ed25519KeyPair,
    ts: i64,
    nonce: &str,
    body: &Value,
) -> (u16, Value) {
    signed_to(world, "/v1/redemptions", terminal, key, ts, nonce, body).await
}

/// A terminal of `merchant` registered by `admin` with a fresh key of the test's own, for raw
/// signed requests (`signed_to`): (terminal id, its key).
pub(crate) async fn raw_terminal(
    world: &World,
    admin: &str,
    merchant: &str,
    idem_key: &str,
    label: &str,
) -> (Uuid, Ed25519KeyPair) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("generate");
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let public_key =
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, key.public_key().as_ref());
    let (status, terminal) = world
        .app
        .post_idem(
            &format!("/v1/merchants/{merchant}/terminals"),
            Some(admin),
            idem_key,
            json!({"public_key": public_key, "label": label}),
        )
        .await;
    assert_eq!(status, 201, "{terminal}");
    (terminal["terminal_id"].as_str().expect("terminal").parse().expect("uuid"), key)
}

/// A raw signed POST to `path`, at a timestamp of the test's choosing (the SDK signs at the
/// real time, the service may run on a manual clock).
pub async fn signed_to(
    world: &World,
    path: &str,
    terminal: Uuid,
    key: &Ed25519KeyPair,
    ts: i64,
    nonce: &str,
    body: &Value,
) -> (u16, Value) {
    let body = body.to_string();
    let parts =
        SignedParts { method: "POST", path_and_query: path, timestamp_s: ts, nonce, body: body.as_bytes() };
    let response = world
        .app
        .client
        .post(world.app.url(path))
        .header("content-type", "application/json")
        .header("idempotency-key", Uuid::new_v4().to_string())
        .header("wenhui-terminal", terminal.to_string())
        .header("wenhui-timestamp", ts.to_string())
        .header("wenhui-nonce", nonce)
        .header("wenhui-signature", parts.sign(key))
        .body(body)
        .send()
        .await
        .expect("send");
    read(response).await
}

fn now_s() -> i64 {
    Timestamp::now().unix_us() / 1_000_000
}

both_backends!(
    whole_path_redeem_reverse_redeem_again,
    every_refusal_has_its_code_and_writes_nothing,
    two_terminals_one_voucher,
    batched_nonces_and_voucher_reads,
    request_nonces_are_forgotten_after_their_retention,
    stored_answers_are_forgotten_after_their_retention_except_staff,
    served_qr_svg_decodes_to_its_token,
    merchants_are_listed_a_page_at_a_time,
    spent_qr_nonces_are_forgotten_after_their_retention,
    a_season_limits_a_citizen_at_one_merchant,
    reconciliation_checks_the_limit_counters,
    a_season_ceiling_caps_the_subsidy_by_category,
    control_characters_and_huge_bodies_get_a_code_not_a_500,
    a_retry_after_suspension_or_revocation_gets_the_first_answer,
    a_refund_forfeits_the_voucher_when_the_season_says_so,
    a_reversal_planned_before_its_batch_closed_is_planned_again,
    a_timestamp_in_another_form_is_refused_as_malformed,
);

/// A redemption whose `Wenhui-Timestamp` header is `sent`, signed over `signed_ts` in the
/// canonical string (the header as sent, or another text to sign).
async fn signed_with_timestamp_text(till: &Till, sent: &str, signed_ts: &str, nonce: &str) -> (u16, Value) {
    use base64::Engine;
    let world = &till.world;
    let body = json!({"qr": "WH1.x.y", "order_amount": "100.00", "order_ref": nonce}).to_string();
    let body_hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()));
    let canonical = format!("WENHUI-TERMINAL-V1\nPOST\n/v1/redemptions\n{signed_ts}\n{nonce}\n{body_hash}");
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(till.key.key_pair().sign(canonical.as_bytes()));
    let response = world
        .app
        .client
        .post(world.app.url("/v1/redemptions"))
        .header("content-type", "application/json")
        .header("idempotency-key", Uuid::new_v4().to_string())
        .header("wenhui-terminal", till.terminal_id.to_string())
        .header("wenhui-timestamp", sent)
        .header("wenhui-nonce", nonce)
        .header("wenhui-signature", signature)
        .body(body)
        .send()
        .await
        .expect("send");
    read(response).await
}

/// `Wenhui-Timestamp` has one form (digits, no sign, no leading zero): the canonical string holds
/// it as sent, which is then also the integer's decimal form. `0<ts>` and `+<ts>`, signed as sent
/// or over the plain digits, are 401 `timestamp_malformed` (not `bad_signature`), before the nonce
/// is recorded: the same nonce then serves a well-formed request.
async fn a_timestamp_in_another_form_is_refused_as_malformed(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let ts = now_s().to_string();
    let nonce = "nonce-timestamp-form-0001";
    for sent in [format!("0{ts}"), format!("+{ts}"), format!("{ts}.0"), format!("-{ts}"), "now".to_owned()] {
        for signed_ts in [sent.as_str(), ts.as_str()] {
            let (status, answer) = signed_with_timestamp_text(&till, &sent, signed_ts, nonce).await;
            assert_eq!((status, code(&answer)), (401, "timestamp_malformed"), "{sent} signed as {signed_ts}");
            assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("no leading zero")));
        }
    }
    let (status, answer) = signed_with_timestamp_text(&till, &ts, &ts, nonce).await;
    assert_eq!((status, code(&answer)), (422, "qr_invalid"), "the documented form passes: {answer}");
    let (status, answer) = signed_with_timestamp_text(&till, &ts, &ts, nonce).await;
    assert_eq!((status, code(&answer)), (401, "replayed_request"), "{answer}");
}

/// Redeems the citizen's voucher for 50.00 on a fresh QR code through `client`.
async fn redeem_with(
    till: &Till,
    client: &TillClient,
    citizen: &str,
    voucher: &str,
    order_ref: &str,
) -> Result<wenhui_merchant_sdk::client::Redemption, String> {
    let qr = till.qr(citizen, voucher).await;
    let request = RedeemRequest {
        qr,
        order_amount: "50.00".into(),
        order_ref: order_ref.into(),
        idempotency_key: None,
    };
    client.redeem(request).await.map_err(|e| e.code())
}

/// `count` vouchers of `batch` claimed by `citizen`: their ids.
async fn claim_vouchers(world: &World, citizen: &str, batch: &str, count: u32) -> Vec<String> {
    let mut vouchers = Vec::new();
    for n in 0..count {
        let (status, claim) = world.claim(citizen, batch, &format!("claim-{n}")).await;
        assert_eq!(status, 201, "{claim}");
        vouchers.push(claim["voucher"]["id"].as_str().expect("id").to_owned());
    }
    vouchers
}

/// A season's `merchant_redemption_limit` (Shandong: at most 5 purchases per person at one
/// merchant) caps a citizen's live redemptions at each merchant: the next is refused with
/// `merchant_limit_reached` and writes nothing; other citizens and other merchants are not
/// affected; a reversal frees its place; two at once for the last place: exactly one.
async fn a_season_limits_a_citizen_at_one_merchant(backend: Backend) {
    let till = Till::new(backend, json!({"merchant_redemption_limit": 2})).await;
    let world = &till.world;
    assert_eq!(world.season().await["merchant_redemption_limit"], 2);
    let batch = world.batch(json!({"stock": 10, "per_citizen_limit": 4})).await;
    let batch_id = batch["id"].as_str().expect("id");
    let citizen = world.citizen(1).await;
    let vouchers = claim_vouchers(world, &citizen, batch_id, 4).await;
    let first = redeem_with(&till, &till.client, &citizen, &vouchers[0], "o-1").await.expect("first");
    redeem_with(&till, &till.client, &citizen, &vouchers[1], "o-2").await.expect("second");
    let head = till.head().await;
    let refused = redeem_with(&till, &till.client, &citizen, &vouchers[2], "o-3").await;
    assert_eq!(refused.err().as_deref(), Some("merchant_limit_reached"));
    assert_eq!(till.head().await, head, "the refusal wrote nothing");

    let (other_citizen, other_voucher) = till.voucher(2, batch_id).await;
    let qr = till.qr(&other_citizen, &other_voucher).await;
    till.redeem(&qr, "50.00", "o-4").await.expect("another citizen at the same merchant");
    let cinema = merchant(world, &till.qingdao_admin, 2, "cinema", "370200").await;
    let dir = world.app.db.dir.path().to_owned();
    let (cinema_till, _, _) = terminal(world, &till.qingdao_admin, &cinema, &dir).await;
    redeem_with(&till, &cinema_till, &citizen, &vouchers[2], "c-1")
        .await
        .expect("the same citizen at another merchant");

    till.client.reverse(first.redemption_id, "refund", None).await.expect("reversed");
    let fourth = redeem_with(&till, &till.client, &citizen, &vouchers[3], "o-5")
        .await
        .expect("the reversal freed a place");
    // Free one place again, and redeem the citizen's two active vouchers at once from two tills.
    till.client.reverse(fourth.redemption_id, "refund", None).await.expect("reversed");
    let (second_till, _, _) = terminal(world, &till.qingdao_admin, &till.bookstore, &dir).await;
    let (a, b) = tokio::join!(
        redeem_with(&till, &till.client, &citizen, &vouchers[0], "o-6"),
        redeem_with(&till, &second_till, &citizen, &vouchers[3], "o-7")
    );
    let still_active = if a.is_err() { &vouchers[0] } else { &vouchers[3] };
    let mut outcomes = [a.err(), b.err()];
    outcomes.sort();
    assert_eq!(outcomes, [None, Some("merchant_limit_reached".to_owned())], "exactly one of two");
    // The counts the group keeps: the citizen at the bookstore is at the limit (and only they
    // are), and the database itself refuses a count above it.
    let at_limit = "UPDATE merchant_redemption_counts SET live_count = live_count WHERE live_count = 2";
    assert_eq!(world.app.db.raw(at_limit).await, Ok(1));
    let over = "UPDATE merchant_redemption_counts SET live_count = live_count + 1 WHERE live_count = 2";
    assert!(world.app.db.raw(over).await.is_err(), "the CHECK refuses a count above the limit");
    // Two citizens at once, one at the limit and one under it, so that one group may read
    // both counters: the one at the limit is refused, the other takes its last place.
    let (status, claimed) = world.claim(&other_citizen, batch_id, "other-second").await;
    assert_eq!(status, 201, "{claimed}");
    let other_second = claimed["voucher"]["id"].as_str().expect("id").to_owned();
    let (at_limit_again, under) = tokio::join!(
        redeem_with(&till, &till.client, &citizen, still_active, "o-8"),
        redeem_with(&till, &second_till, &other_citizen, &other_second, "o-9")
    );
    assert_eq!(at_limit_again.err().as_deref(), Some("merchant_limit_reached"));
    under.expect("the other citizen's second redemption at the bookstore");
    assert_eq!(world.app.db.raw(at_limit).await, Ok(2), "both citizens are now at the limit");

    let body = json!({"name": "季", "province": "370000", "starts_at": world.at(0), "ends_at": world.at(86_400),
        "budgets": [{"funder": "370000", "amount": "100.00"}], "merchant_redemption_limit": 0});
    let (status, refused) =
        world.app.post_idem("/v1/seasons", Some(&world.province_admin), "s-0", body).await;
    assert_eq!((status, code(&refused)), (422, "invalid_merchant_redemption_limit"), "{refused}");
    wenhui::app::audit::verify_store(world.app.store()).await.expect("ledger verifies");
}

/// Citizen `n` claims a voucher of `batch` and redeems it through `client` on an order of `amount`.
async fn redeem_new(
    till: &Till,
    batch: &str,
    n: u32,
    client: &TillClient,
    amount: &str,
) -> wenhui_merchant_sdk::client::Redemption {
    let (citizen, voucher) = till.voucher(n, batch).await;
    let qr = till.qr(&citizen, &voucher).await;
    let request = RedeemRequest {
        qr,
        order_amount: amount.into(),
        order_ref: format!("order-{n}"),
        idempotency_key: None,
    };
    client.redeem(request).await.expect("redeemed")
}

/// A season's subsidy ceiling (Shandong 2020: 20% of a transaction for other than
/// performances) caps what a voucher pays at a merchant of that category: 满40减10 takes 8.00
/// off 40.00 at a bookstore, split between its funders, and the whole 10.00 from 50.00, or at
/// a cinema, which has no ceiling. Ceilings out of range or of unknown categories are refused.
async fn a_season_ceiling_caps_the_subsidy_by_category(backend: Backend) {
    let till = Till::new(backend, json!({"subsidy_ceilings": {"bookstore": 20}})).await;
    let world = &till.world;
    assert_eq!(world.season().await["subsidy_ceilings"], json!({"bookstore": 20}));
    let batch = world
        .batch_as(
            &till.qingdao_admin,
            json!({"issuer": "370200", "funding": [{"funder": "370000", "share": 70}, {"funder": "370200", "share": 30}]}),
        )
        .await;
    let batch_id = batch["id"].as_str().expect("id");
    let parts = |r: &wenhui_merchant_sdk::client::Redemption| {
        r.funders.iter().map(|f| (f.funder.clone(), f.amount.clone())).collect::<Vec<_>>()
    };
    let capped = redeem_new(&till, batch_id, 1, &till.client, "40.00").await;
    assert_eq!((capped.discount.as_str(), capped.payable.as_str()), ("8.00", "32.00"));
    assert_eq!(
        parts(&capped),
        [("370000".to_owned(), "5.60".to_owned()), ("370200".to_owned(), "2.40".to_owned())]
    );
    let whole = redeem_new(&till, batch_id, 2, &till.client, "50.00").await;
    assert_eq!((whole.discount.as_str(), whole.payable.as_str()), ("10.00", "40.00"));
    let cinema = merchant(world, &till.qingdao_admin, 2, "cinema", "370200").await;
    let (cinema_till, _, _) = terminal(world, &till.qingdao_admin, &cinema, world.app.db.dir.path()).await;
    let uncapped = redeem_new(&till, batch_id, 3, &cinema_till, "40.00").await;
    assert_eq!(uncapped.discount, "10.00", "no ceiling for cinemas in this season");

    for (ceilings, n) in [(json!({"opera": 20}), 1), (json!({"ktv": 0}), 2), (json!({"ktv": 101}), 3)] {
        let body = json!({"name": "季", "province": "370000", "starts_at": world.at(0), "ends_at": world.at(86_400),
            "budgets": [{"funder": "370000", "amount": "100.00"}], "subsidy_ceilings": ceilings});
        let (status, refused) =
            world.app.post_idem("/v1/seasons", Some(&world.province_admin), &format!("s-{n}"), body).await;
        assert_eq!((status, code(&refused)), (422, "invalid_subsidy_ceiling"), "{refused}");
    }
    let season_id: SeasonId = world.season_id.parse().expect("uuid");
    let over_ceiling = || async {
        let store = world.app.store();
        let season = store.season(season_id).await.expect("read").expect("season");
        let result =
            wenhui::app::finance::reconcile(store, &season, world.clock.now()).await.expect("reconcile");
        let check =
            result.checks.iter().find(|c| c.name == "redemption_over_subsidy_ceiling").expect("check");
        (check.breaks, result.ok)
    };
    assert_eq!(over_ceiling().await, (0, true));
    // A discount above the ceiling, written behind the service's back, is a break (8.01 of 40.00).
    let raised = "UPDATE redemptions SET discount_fen = 801 WHERE discount_fen = 800";
    assert_eq!(world.app.db.raw(raised).await, Ok(1));
    assert_eq!(over_ceiling().await.0, 1);
}

/// The two counters behind the per-person limits (`citizen_season_totals` for the season cap,
/// `merchant_redemption_counts` for the per-merchant limit) reconcile with the vouchers and
/// redemptions they count, through claims, redemptions and a reversal; a counter changed behind
/// the service's back, missing, stray, or carrying another limit is a break of its check.
async fn reconciliation_checks_the_limit_counters(backend: Backend) {
    let till = Till::new(backend, json!({"merchant_redemption_limit": 3, "per_citizen_cap": "100.00"})).await;
    let world = &till.world;
    let batch = world.batch(json!({"stock": 10, "per_citizen_limit": 3})).await;
    let batch_id = batch["id"].as_str().expect("id");
    let citizen = world.citizen(1).await;
    let vouchers = claim_vouchers(world, &citizen, batch_id, 3).await;
    let first = redeem_with(&till, &till.client, &citizen, &vouchers[0], "o-1").await.expect("first");
    let second = redeem_with(&till, &till.client, &citizen, &vouchers[1], "o-2").await.expect("second");
    till.client.reverse(first.redemption_id, "refund", None).await.expect("reversed");
    let (other, other_voucher) = till.voucher(2, batch_id).await;
    let other_redemption =
        redeem_with(&till, &till.client, &other, &other_voucher, "o-3").await.expect("another citizen");

    // The other citizen's voucher expires (valid 48 hours) while redeemed; reversing the
    // redemption then expires it, which lowers their season total too.
    world.clock.advance_us(49 * 3_600 * 1_000_000);
    let later_s = world.clock.now().unix_us() / 1_000_000;
    let path = format!("/v1/redemptions/{}/reversal", other_redemption.redemption_id);
    let (status, reversed) = signed_to(
        world,
        &path,
        till.terminal_id,
        till.key.key_pair(),
        later_s,
        "late-reversal-nonce-1",
        &json!({"reason": "refund"}),
    )
    .await;
    assert_eq!((status, reversed["voucher_status"].as_str()), (201, Some("expired")), "{reversed}");
    world.app.sweep().await;

    let season_id: SeasonId = world.season_id.parse().expect("uuid");
    let breaks = || async {
        let store = world.app.store();
        let season = store.season(season_id).await.expect("read").expect("season");
        let result =
            wenhui::app::finance::reconcile(store, &season, world.clock.now()).await.expect("reconcile");
        let count = |name: &str| result.checks.iter().find(|c| c.name == name).map(|c| c.breaks);
        (count("citizen_season_total_disagrees"), count("merchant_redemption_count_disagrees"), result.ok)
    };
    assert_eq!(breaks().await, (Some(0), Some(0), true), "the counters agree with the rows");
    // Citizen 1 holds one redeemed voucher (1,000 fen; a live count of 1 at the bookstore);
    // citizen 2 holds none (a total of 0; a count of 0). Each change adds a break, but the
    // re-inserted count, which mends the one deleted before it.
    let tampered = [
        ("UPDATE citizen_season_totals SET cap_fen = 20000 WHERE claimed_fen = 1000", (1, 0)),
        ("UPDATE citizen_season_totals SET claimed_fen = 700 WHERE claimed_fen = 0", (2, 0)),
        ("DELETE FROM merchant_redemption_counts WHERE live_count = 1", (2, 1)),
        (
            "INSERT INTO merchant_redemption_counts SELECT r.season_id, v.citizen_id, r.merchant_id, 1, 3 \
          FROM redemptions r JOIN vouchers v ON v.id = r.voucher_id WHERE r.reversed_at_us IS NULL",
            (2, 0),
        ),
        ("UPDATE merchant_redemption_counts SET limit_count = 5 WHERE live_count = 1", (2, 1)),
        ("UPDATE merchant_redemption_counts SET live_count = 2 WHERE live_count = 0", (2, 2)),
        (
            "INSERT INTO merchant_redemption_counts SELECT season_id, citizen_id, season_id, 1, 3 \
          FROM citizen_season_totals LIMIT 1",
            (2, 3),
        ),
    ];
    for (sql, (citizen_breaks, merchant_breaks)) in tampered {
        assert_eq!(world.app.db.raw(sql).await, Ok(1), "{sql}");
        assert_eq!(breaks().await, (Some(citizen_breaks), Some(merchant_breaks), false), "after {sql}");
    }

    // A write a constraint refuses (here: reversing citizen 1's redemption would take their
    // tampered total below zero) is 409 `conflict`, without the database's own words.
    let lowered = "UPDATE citizen_season_totals SET claimed_fen = 0 WHERE cap_fen = 20000";
    assert_eq!(world.app.db.raw(lowered).await, Ok(1));
    let path = format!("/v1/redemptions/{}/reversal", second.redemption_id);
    let key = till.key.key_pair();
    let (status, refused) = signed_to(
        world,
        &path,
        till.terminal_id,
        key,
        later_s,
        "late-reversal-nonce-2",
        &json!({"reason": "refund"}),
    )
    .await;
    assert_eq!((status, code(&refused)), (409, "conflict"), "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(!message.contains("check") && !message.contains("citizen_season_totals"), "{refused}");
}

/// Housekeeping forgets a spent QR token's nonce after the retention (an hour), not before; by
/// then the token has long expired, so a replay of it is still refused, as expired.
async fn spent_qr_nonces_are_forgotten_after_their_retention(backend: Backend) {
    use wenhui::app::housekeeping::{QR_NONCE_RETENTION_S, prune_qr_nonces};
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    let batch = world.batch(json!({})).await;
    let (citizen, voucher) = till.voucher(1, batch["id"].as_str().expect("id")).await;
    let qr = till.qr(&citizen, &voucher).await;
    let spent_at = world.clock.now();
    till.redeem(&qr, "50.00", "order-1").await.expect("redeemed");
    let nonce = QrToken::parse(&qr).expect("token").payload.nonce;
    let store = world.app.store();
    let still_known = || async { store.qr_nonce_used(&nonce).await.expect("read") };
    assert!(still_known().await, "spent");

    let early = spent_at.plus_seconds(QR_NONCE_RETENTION_S - 60);
    assert_eq!(prune_qr_nonces(store, early).await.expect("prune"), 0);
    assert!(still_known().await, "kept until the retention");
    let later = spent_at.plus_seconds(QR_NONCE_RETENTION_S + 1);
    assert_eq!(prune_qr_nonces(store, later).await.expect("prune"), 1);
    assert!(!still_known().await, "forgotten after it");

    world.clock.set(later);
    let before = till.head().await;
    let body = json!({"qr": qr, "order_amount": "50.00", "order_ref": "order-2"});
    let later_s = later.unix_us() / 1_000_000;
    let (status, answer) =
        signed(world, till.terminal_id, till.key.key_pair(), later_s, "nonce-replay-after-prune", &body)
            .await;
    assert_eq!((status, code(&answer)), (410, "qr_expired"), "{answer}");
    assert_eq!(till.head().await, before, "nothing written");
}

/// A city's merchants come a page at a time, by name; every merchant exactly once, and
/// `next_after` null on the last page. Bad page sizes and cursors are refused.
async fn merchants_are_listed_a_page_at_a_time(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let admin = &till.qingdao_admin;
    for seed in 2..=5 {
        merchant(&till.world, admin, seed, "ktv", "370200").await;
    }
    let mut names = Vec::new();
    let mut path = "/v1/merchants?city=370200&limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = till.world.app.get(&path, Some(admin)).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let merchants = page["merchants"].as_array().expect("merchants");
        assert!(merchants.len() <= 2, "{page}");
        names.extend(merchants.iter().filter_map(|m| m["name"].as_str().map(str::to_owned)));
        match page["next_after"].as_str() {
            Some(after) => path = format!("/v1/merchants?city=370200&limit=2&after={after}"),
            None => break,
        }
    }
    assert_eq!(names, ["店1", "店2", "店3", "店4", "店5"]);
    assert_eq!(pages, 3);
    let (_, whole) = till.world.app.get("/v1/merchants?city=370200", Some(admin)).await;
    assert_eq!(whole["merchants"].as_array().map(Vec::len), Some(5), "{whole}");
    assert_eq!(whole["next_after"], Value::Null);
    let account = &whole["merchants"][0]["settlement_account"]["account_no"];
    assert_eq!(account, "6222000011112222", "staff reading the merchant see the whole number");

    // A part of the name, letters without case, a page at a time like the rest.
    let body = json!({"name": "Sunny Books", "credit_code": credit_code(9), "category": "bookstore", "city": "370200",
        "settlement_account": {"bank": "青岛银行", "account_no": "6222000011112222", "account_name": "Sunny"}});
    let (status, sunny) = till.world.app.post_idem("/v1/merchants", Some(admin), "m-sunny", body).await;
    assert_eq!(status, 201, "{sunny}");
    let named = |page: &Value| -> Vec<String> {
        page["merchants"]
            .as_array()
            .expect("merchants")
            .iter()
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .collect()
    };
    let (status, found) = till.world.app.get("/v1/merchants?city=370200&name=sUNNY", Some(admin)).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(named(&found), ["Sunny Books"]);
    let (_, first) =
        till.world.app.get("/v1/merchants?city=370200&name=%E5%BA%97&limit=3", Some(admin)).await;
    assert_eq!(named(&first), ["店1", "店2", "店3"], "{first}");
    let after = first["next_after"].as_str().expect("a next page");
    let (_, rest) = till
        .world
        .app
        .get(&format!("/v1/merchants?city=370200&name=%E5%BA%97&limit=3&after={after}"), Some(admin))
        .await;
    assert_eq!(named(&rest), ["店4", "店5"], "{rest}");
    assert_eq!(rest["next_after"], Value::Null);
    let (_, none) = till.world.app.get("/v1/merchants?city=370200&name=KTV%E5%9F%8E", Some(admin)).await;
    assert_eq!(named(&none), Vec::<String>::new());
    let (_, blank) = till.world.app.get("/v1/merchants?city=370200&name=%20", Some(admin)).await;
    assert_eq!(named(&blank).len(), 6, "a blank name lists them all: {blank}");
    let long = "a".repeat(51);
    let (status, refused) =
        till.world.app.get(&format!("/v1/merchants?city=370200&name={long}"), Some(admin)).await;
    assert_eq!((status, code(&refused)), (422, "invalid_field"), "{refused}");

    for (query, status_expected, code_expected) in [
        ("limit=0", 422, "invalid_limit"),
        ("limit=501", 422, "invalid_limit"),
        ("after=0190a0b0-0000-7000-8000-000000000000", 422, "invalid_cursor"),
        ("after=not-an-id", 400, "invalid_query"),
    ] {
        let (status, body) =
            till.world.app.get(&format!("/v1/merchants?city=370200&{query}"), Some(admin)).await;
        assert_eq!((status, code(&body)), (status_expected, code_expected), "{query}: {body}");
    }
}

/// Housekeeping deletes request nonces past their retention (and only those): a nonce seen
/// 16 minutes ago is new again, one seen 14 minutes ago is still a replay.
async fn request_nonces_are_forgotten_after_their_retention(backend: Backend) {
    let db = crate::common::TestDb::new(backend).await;
    let store = db.store().await;
    let t = wenhui::domain::ids::TerminalId::new_v7();
    let now = Timestamp::now();
    let minutes_ago = |m: i64| Timestamp::from_unix_us(now.unix_us() - m * 60_000_000);
    let key = |nonce: &str| (t, nonce.to_owned());
    let old: Vec<_> = (0..12_000).map(|n| key(&format!("old-{n:05}"))).collect();
    assert!(store.record_nonces(&old, minutes_ago(16)).await.expect("old nonces").iter().all(|new| *new));
    assert_eq!(store.record_nonces(&[key("recent")], minutes_ago(14)).await.expect("recent"), [true]);
    let pruned = wenhui::app::housekeeping::prune_terminal_nonces(store.as_ref(), now).await.expect("pruned");
    assert_eq!(pruned, 12_000, "every nonce past the retention, over several batches");
    let again =
        store.record_nonces(&[key("old-00000"), key("old-11999"), key("recent")], now).await.expect("again");
    assert_eq!(again, [true, true, false]);
    assert_eq!(
        wenhui::app::housekeeping::prune_terminal_nonces(store.as_ref(), now).await.expect("pruned"),
        0
    );
}

/// Housekeeping forgets the stored answers of citizens' and tills' writes after the retention,
/// never staff's: until then a retry gets the first answer; after it a retry is decided afresh
/// and refused (the voucher is spent), while the staff write's retry still replays.
async fn stored_answers_are_forgotten_after_their_retention_except_staff(backend: Backend) {
    use wenhui::app::housekeeping::{IDEMPOTENCY_RETENTION, prune_idempotency_answers};
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    let batch = world.batch(json!({})).await;
    let batch_id = batch["id"].as_str().expect("id");
    let (citizen, voucher) = till.voucher(1, batch_id).await;
    let qr = till.qr(&citizen, &voucher).await;
    let redeem = || {
        let request = RedeemRequest {
            qr: qr.clone(),
            order_amount: "50.00".into(),
            order_ref: "order-1".into(),
            idempotency_key: Some("till-txn-1".into()),
        };
        till.client.redeem(request)
    };
    let first = redeem().await.expect("redeemed");
    let claim_key = format!("claim-1-{batch_id}");
    let retention_s = IDEMPOTENCY_RETENTION.as_secs() as i64;
    let store = world.app.store();
    let now = Timestamp::now();
    let holder =
        store.voucher(voucher.parse().expect("uuid")).await.expect("read").expect("voucher").citizen_id;
    let claim_scope = wenhui::app::claims::citizen_scope(holder);

    let early = now.plus_seconds(retention_s - 3_600);
    assert_eq!(prune_idempotency_answers(store, early, IDEMPOTENCY_RETENTION).await.expect("prune"), 0);
    assert_eq!(redeem().await.expect("replayed").redemption_id, first.redemption_id);
    let (status, claim) = world.claim(&citizen, batch_id, &claim_key).await;
    assert_eq!((status, claim["voucher"]["id"].as_str()), (201, Some(voucher.as_str())), "{claim}");
    assert!(store.idempotent_answer(&claim_scope, &claim_key).await.expect("read").is_some());

    let late = now.plus_seconds(retention_s + 3_600);
    let head = till.head().await;
    let pruned = prune_idempotency_answers(store, late, IDEMPOTENCY_RETENTION).await.expect("prune");
    assert_eq!(pruned, 2, "the claim's and the redemption's answers; the staff writes' stay");
    assert_eq!(till.head().await, head, "pruning posts nothing");
    assert_eq!(redeem().await.map(|r| r.redemption_id).map_err(|e| e.code()), Err("qr_replayed".to_owned()));
    assert!(store.idempotent_answer(&claim_scope, &claim_key).await.expect("read").is_none());
    // The claim writer also remembers answers in memory (bounded), so this process may still
    // replay; one without that memory decides afresh and meets the per-person limit.
    let (status, claim) = world.claim(&citizen, batch_id, &claim_key).await;
    let replayed = status == 201 && claim["voucher"]["id"].as_str() == Some(voucher.as_str());
    assert!(replayed || (status, code(&claim)) == (409, "limit_reached"), "{status} {claim}");
    let (_, mine) = world.app.get("/v1/me/vouchers", Some(&citizen)).await;
    assert_eq!(mine["vouchers"].as_array().map(Vec::len), Some(1), "no second voucher: {mine}");
    let (status, season) = world
        .app
        .post_idem(
            "/v1/seasons",
            Some(&world.province_admin),
            "season-1",
            json!({"name": "a different body"}),
        )
        .await;
    assert_eq!(status, 422, "a staff key's answer is kept: the reused key is still known: {season}");
    assert_eq!(code(&season), "idempotency_key_reused");
}

/// The batched forms the till path's coalesced reads use: the first of two equal nonces in a
/// batch is new, a nonce seen before is not, terminals do not share nonces; unknown vouchers
/// read as none, in order.
async fn batched_nonces_and_voucher_reads(backend: Backend) {
    let db = crate::common::TestDb::new(backend).await;
    let store = db.store().await;
    let (t, u) = (wenhui::domain::ids::TerminalId::new_v7(), wenhui::domain::ids::TerminalId::new_v7());
    let now = Timestamp::now();
    let key = |terminal: wenhui::domain::ids::TerminalId, nonce: &str| (terminal, nonce.to_owned());
    let first = store
        .record_nonces(&[key(t, "n-aaaa"), key(t, "n-bbbb"), key(t, "n-aaaa")], now)
        .await
        .expect("nonces");
    assert_eq!(first, [true, true, false]);
    let second = store.record_nonces(&[key(t, "n-aaaa"), key(u, "n-aaaa")], now).await.expect("nonces");
    assert_eq!(second, [false, true]);
    assert_eq!(store.record_nonces(&[key(u, "n-aaaa")], now).await.expect("nonce"), [false]);
    let read = store
        .vouchers(&[wenhui::domain::ids::VoucherId::new_v7(), wenhui::domain::ids::VoucherId::new_v7()])
        .await
        .expect("vouchers");
    assert_eq!(read.len(), 2);
    assert!(read.iter().all(Option::is_none));
}

async fn whole_path_redeem_reverse_redeem_again(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let batch = till.world.batch(json!({"stock": 10})).await;
    let (citizen, voucher) = till.voucher(1, batch["id"].as_str().expect("id")).await;
    let qr = till.qr(&citizen, &voucher).await;
    let offline = till.client.verify_offline(&qr, now_s()).await.expect("verifies offline");
    assert_eq!((offline.kind, offline.subject.to_string()), (TokenKind::Voucher, voucher.clone()));
    let first = till.redeem(&qr, "100.00", "order-1").await.expect("redeemed");
    assert_eq!((first.discount.as_str(), first.payable.as_str()), ("10.00", "90.00"));
    assert_eq!(first.funders.len(), 1);
    assert_eq!((first.funders[0].funder.as_str(), first.funders[0].amount.as_str()), ("370000", "10.00"));
    let (_, mine) = till.world.app.get("/v1/me/vouchers", Some(&citizen)).await;
    assert_eq!(mine["vouchers"][0]["status"], "redeemed");
    let fetched = till.client.get(first.redemption_id).await.expect("get");
    assert_eq!(fetched.discount, "10.00");
    let reversal = till.client.reverse(first.redemption_id, "refund", None).await.expect("reversed");
    assert_eq!(reversal.voucher_status, "active");
    let again = till.client.reverse(first.redemption_id, "refund", None).await.expect_err("twice");
    assert_eq!(again.code(), "already_reversed");
    let qr = till.qr(&citizen, &voucher).await;
    let second = till.redeem(&qr, "55.00", "order-2").await.expect("redeemed again");
    assert_eq!(second.payable, "45.00");
    let lines = Journal::read(till.client.journal().path().expect("path")).expect("journal");
    assert!(
        lines.iter().filter(|l| l.op == "redeem").count() >= 4,
        "intent and attempt lines for each redeem"
    );
    wenhui::app::audit::verify_store(till.world.app.store()).await.expect("ledger verifies");
}

fn forge(subject: Uuid, key: &Ed25519KeyPair, issued_at_s: i64, lifetime_s: i64) -> String {
    let payload = TokenPayload {
        kind: TokenKind::Voucher,
        key_id: key_id_for(key.public_key().as_ref()),
        subject,
        nonce: *Uuid::new_v4().as_bytes(),
        issued_at_s,
        expires_at_s: issued_at_s + lifetime_s,
    };
    payload.encode(key.sign(&payload.signing_input()).as_ref())
}

fn service_qr_key(till: &Till) -> Ed25519KeyPair {
    let dir = till.world.app.db.dir.path().join("data/keys/qr");
    let file = std::fs::read_dir(&dir).expect("key dir").next().expect("a key").expect("entry").path();
    Ed25519KeyPair::from_pkcs8(&std::fs::read(file).expect("read")).expect("pkcs8")
}

async fn every_refusal_has_its_code_and_writes_nothing(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    let province = world.batch(json!({"stock": 20, "categories": ["bookstore"]})).await;
    let province = province["id"].as_str().expect("id").to_owned();
    let city = world
        .batch_as(
            &till.qingdao_admin,
            json!({"issuer": "370200", "stock": 5, "face_value": "5.00",
        "min_spend": "20.00", "categories": ["bookstore"]}),
        )
        .await;
    let city = city["id"].as_str().expect("id").to_owned();
    let (citizen, voucher) = till.voucher(1, &province).await;
    let (citizen2, city_voucher) = till.voucher(2, &city).await;
    let qr = till.qr(&citizen, &voucher).await;
    let before = till.head().await;

    // Token form, signature, expiry.
    let mut changed = qr.clone().into_bytes();
    let at = changed.len() - 10;
    changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        till.redeem(&String::from_utf8(changed).expect("ascii"), "100.00", "r1").await.err().as_deref(),
        Some("qr_invalid")
    );
    let stranger = Ed25519KeyPair::from_seed_unchecked(&[3u8; 32]).expect("seed");
    let foreign = forge(voucher.parse().expect("uuid"), &stranger, now_s(), 90);
    assert_eq!(till.redeem(&foreign, "100.00", "r2").await.err().as_deref(), Some("qr_invalid"));
    let ours = service_qr_key(&till);
    let expired = forge(voucher.parse().expect("uuid"), &ours, now_s() - 200, 90);
    assert_eq!(till.redeem(&expired, "100.00", "r3").await.err().as_deref(), Some("qr_expired"));
    let unknown = forge(Uuid::now_v7(), &ours, now_s(), 90);
    assert_eq!(till.redeem(&unknown, "100.00", "r4").await.err().as_deref(), Some("voucher_not_found"));
    // Threshold, category, region.
    assert_eq!(till.redeem(&qr, "30.00", "r5").await.err().as_deref(), Some("below_min_spend"));
    let ktv = merchant(world, &till.qingdao_admin, 2, "ktv", "370200").await;
    let dir = world.app.db.dir.path().to_owned();
    let (ktv_till, _, _) = terminal(world, &till.qingdao_admin, &ktv, &dir).await;
    let request = |qr: &str, order: &str| RedeemRequest {
        qr: qr.into(),
        order_amount: "100.00".into(),
        order_ref: order.into(),
        idempotency_key: None,
    };
    assert_eq!(
        ktv_till.redeem(request(&qr, "r6")).await.err().map(|e| e.code()).as_deref(),
        Some("merchant_not_eligible")
    );
    let jinan_admin = world.app.staff_key(Role::CityAdmin, "370100").await;
    let jinan = merchant(world, &jinan_admin, 3, "bookstore", "370100").await;
    let (jinan_till, _, _) = terminal(world, &jinan_admin, &jinan, &dir).await;
    let city_qr = till.qr(&citizen2, &city_voucher).await;
    assert_eq!(
        jinan_till.redeem(request(&city_qr, "r7")).await.err().map(|e| e.code()).as_deref(),
        Some("merchant_not_eligible")
    );
    // Suspended merchant, revoked terminal.
    let (status, _) = world
        .app
        .post(&format!("/v1/merchants/{}/suspend", till.bookstore), Some(&till.qingdao_admin), json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(till.redeem(&qr, "100.00", "r8").await.err().as_deref(), Some("merchant_suspended"));
    world
        .app
        .post(&format!("/v1/merchants/{}/activate", till.bookstore), Some(&till.qingdao_admin), json!({}))
        .await;
    let (revoked_till, revoked_id, _) = terminal(world, &till.qingdao_admin, &till.bookstore, &dir).await;
    let path = format!("/v1/merchants/{}/terminals/{revoked_id}/revoke", till.bookstore);
    assert_eq!(world.app.post(&path, Some(&till.qingdao_admin), json!({})).await.0, 200);
    assert_eq!(
        revoked_till.redeem(request(&qr, "r9")).await.err().map(|e| e.code()).as_deref(),
        Some("terminal_revoked")
    );
    // Request signatures: bad signature, stale timestamp, reused nonce.
    let body = json!({"qr": qr, "order_amount": "100.00", "order_ref": "r10"});
    let (status, answer) =
        signed(world, till.terminal_id, &stranger, now_s(), "nonce-bad-signature-0001", &body).await;
    assert_eq!((status, code(&answer)), (401, "bad_signature"));
    let pair = till.key.key_pair();
    let (status, answer) =
        signed(world, till.terminal_id, pair, now_s() - 600, "nonce-stale-request-00001", &body).await;
    assert_eq!((status, code(&answer)), (401, "stale_request"));
    let below = json!({"qr": qr, "order_amount": "10.00", "order_ref": "r11"});
    let (status, answer) =
        signed(world, till.terminal_id, pair, now_s(), "nonce-used-twice-0000001", &below).await;
    assert_eq!((status, code(&answer)), (422, "below_min_spend"));
    let (status, answer) =
        signed(world, till.terminal_id, pair, now_s(), "nonce-used-twice-0000001", &below).await;
    assert_eq!((status, code(&answer)), (401, "replayed_request"));
    assert_eq!(till.head().await, before, "no refusal wrote to the ledger");

    // Replayed token, reused order_ref, stacking.
    till.redeem(&qr, "100.00", "order-A").await.expect("redeems");
    assert_eq!(till.redeem(&qr, "100.00", "order-B").await.err().as_deref(), Some("qr_replayed"));
    let (citizen3, voucher3) = till.voucher(3, &province).await;
    let qr3 = till.qr(&citizen3, &voucher3).await;
    let before = till.head().await;
    assert_eq!(till.redeem(&qr3, "100.00", "order-A").await.err().as_deref(), Some("order_ref_used"));
    let city_qr = till.qr(&citizen2, &city_voucher).await;
    assert_eq!(
        till.redeem(&city_qr, "100.00", "order-A").await.err().as_deref(),
        Some("stacking_not_allowed")
    );
    assert_eq!(till.head().await, before, "refused redemptions wrote nothing");
    wenhui::app::audit::verify_store(world.app.store()).await.expect("ledger verifies");
}

/// Free text holding a NUL (which PostgreSQL refuses in text) is refused with its code on both
/// backends, and a redemption whose order_ref holds one, sent at the same moment as a good one
/// from another terminal, does not fail the good one (their order lookups share a coalesced
/// statement). Bodies over the limit get the JSON 413 on the routes that read raw bytes too.
async fn control_characters_and_huge_bodies_get_a_code_not_a_500(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    let batch = world.batch(json!({"stock": 10})).await;
    let batch = batch["id"].as_str().expect("id").to_owned();
    let (citizen1, voucher1) = till.voucher(1, &batch).await;
    let (citizen2, voucher2) = till.voucher(2, &batch).await;
    let (qr1, qr2) = (till.qr(&citizen1, &voucher1).await, till.qr(&citizen2, &voucher2).await);
    let dir = world.app.db.dir.path().to_owned();
    let (other_till, other_id, other_key) = terminal(world, &till.qingdao_admin, &till.bookstore, &dir).await;
    let before = till.head().await;
    let nul_order = json!({"qr": qr1, "order_amount": "100.00", "order_ref": "A\u{0}1"});
    let good = RedeemRequest {
        qr: qr2,
        order_amount: "100.00".into(),
        order_ref: "good-1".into(),
        idempotency_key: None,
    };
    let ((status, answer), redeemed) = tokio::join!(
        signed(world, other_id, other_key.key_pair(), now_s(), "nonce-nul-order-ref-0001", &nul_order),
        till.client.redeem(good)
    );
    assert_eq!((status, code(&answer)), (422, "invalid_body"), "{answer}");
    let redeemed = redeemed.expect("the good redemption is not failed by its neighbour");
    assert_eq!(till.head().await, before + 1, "only the good redemption wrote");
    let redeemed_again =
        till.redeem(&qr1, "100.00", "A1").await.expect("the refused voucher is still active");
    assert_eq!(redeemed_again.discount, "10.00");

    let reversal = format!("/v1/redemptions/{}/reversal", redeemed.redemption_id);
    let nul_reason = json!({"reason": "refund\u{0}"});
    let (status, answer) = signed_to(
        world,
        &reversal,
        other_id,
        other_key.key_pair(),
        now_s(),
        "nonce-nul-reason-00001",
        &nul_reason,
    )
    .await;
    assert_eq!((status, code(&answer)), (422, "invalid_body"), "{answer}");
    drop(other_till);

    let terminals = format!("/v1/merchants/{}/terminals", till.bookstore);
    let public_key = TillKey::generate().expect("key").public_key_base64url();
    let body = json!({"public_key": public_key, "label": "front\u{0}till"});
    let (status, answer) =
        world.app.post_idem(&terminals, Some(&till.qingdao_admin), "nul-label", body).await;
    assert_eq!((status, code(&answer)), (422, "invalid_field"), "{answer}");
    let body = json!({"role": "finance", "region": "370200", "label": "a\u{7}b", "name": "某人", "phone": "13800138000"});
    let (status, answer) = world.app.post("/v1/staff/keys", Some(&till.qingdao_admin), body).await;
    assert_eq!((status, code(&answer)), (422, "invalid_label"), "{answer}");

    let huge = json!({"name": "x".repeat(100 * 1024)}).to_string();
    let response = world
        .app
        .client
        .post(world.app.url("/v1/seasons"))
        .bearer_auth(&world.province_admin)
        .header("content-type", "application/json")
        .header("idempotency-key", "huge-body")
        .header("connection", "close")
        .body(huge)
        .send()
        .await
        .expect("send");
    let (status, answer) = read(response).await;
    assert_eq!((status, code(&answer)), (413, "body_too_large"), "{answer}");
    assert_eq!(till.head().await, before + 2, "the refusals wrote nothing");
    wenhui::app::audit::verify_store(world.app.store()).await.expect("ledger verifies");
}

/// A till whose 201 was lost retries with the same Idempotency-Key: it gets that first answer
/// even if the merchant was suspended or the terminal revoked in between (its journal must
/// agree with the service); a new write is refused.
async fn a_retry_after_suspension_or_revocation_gets_the_first_answer(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    let batch = world.batch(json!({"stock": 10})).await;
    let batch = batch["id"].as_str().expect("id").to_owned();
    let (citizen, voucher) = till.voucher(1, &batch).await;
    let (citizen2, voucher2) = till.voucher(2, &batch).await;
    let request = RedeemRequest {
        qr: till.qr(&citizen, &voucher).await,
        order_amount: "100.00".into(),
        order_ref: "retry-1".into(),
        idempotency_key: Some("till-txn-1".into()),
    };
    let first = till.client.redeem(request.clone()).await.expect("redeemed");
    let merchant = format!("/v1/merchants/{}", till.bookstore);
    let (status, _) =
        world.app.post(&format!("{merchant}/suspend"), Some(&till.qingdao_admin), json!({})).await;
    assert_eq!(status, 200);
    let retried = till.client.redeem(request).await.expect("a retry gets the first answer");
    assert_eq!(retried, first);
    let qr2 = till.qr(&citizen2, &voucher2).await;
    assert_eq!(till.redeem(&qr2, "100.00", "retry-2").await.err().as_deref(), Some("merchant_suspended"));
    let (status, _) =
        world.app.post(&format!("{merchant}/activate"), Some(&till.qingdao_admin), json!({})).await;
    assert_eq!(status, 200);

    let reversal = till
        .client
        .reverse(first.redemption_id, "refund", Some("till-txn-2".into()))
        .await
        .expect("reversed");
    let revoke = format!("{merchant}/terminals/{}/revoke", till.terminal_id);
    assert_eq!(world.app.post(&revoke, Some(&till.qingdao_admin), json!({})).await.0, 200);
    let again = till.client.reverse(first.redemption_id, "refund", Some("till-txn-2".into())).await;
    assert_eq!(again.expect("a retry gets the first answer").reversal_id, reversal.reversal_id);
    let fresh = till.client.reverse(first.redemption_id, "refund", Some("till-txn-3".into())).await;
    assert_eq!(fresh.expect_err("a new write is refused").code(), "terminal_revoked");
    let read = till.client.get(first.redemption_id).await;
    assert_eq!(read.expect_err("reads are refused").code(), "terminal_revoked");
    wenhui::app::audit::verify_store(world.app.store()).await.expect("ledger verifies");
}

/// Guangzhou: a refund forfeits the voucher. In a season with `refund_forfeits_voucher` the
/// reversal leaves the voucher `forfeited`: it cannot be shown or redeemed again, it keeps its
/// holder's slot (a second claim meets the per-person limit), the stock does not come back,
/// and the discount goes back to the pool. The report counts it and reconciliation agrees.
async fn a_refund_forfeits_the_voucher_when_the_season_says_so(backend: Backend) {
    let till = Till::new(backend, json!({"refund_forfeits_voucher": true})).await;
    let world = &till.world;
    let season_path = format!("/v1/seasons/{}", world.season_id);
    let (_, season) = world.app.get(&season_path, Some(&world.province_admin)).await;
    assert_eq!(season["refund_forfeits_voucher"], true);
    let available =
        |season: &Value| season["funders"][0]["available"].as_str().expect("available").to_owned();
    let batch = world.batch(json!({"stock": 2})).await;
    let batch = batch["id"].as_str().expect("id").to_owned();
    let (citizen, voucher) = till.voucher(1, &batch).await;
    let redeemed = till.redeem(&till.qr(&citizen, &voucher).await, "100.00", "f-1").await.expect("redeemed");
    assert_eq!(redeemed.discount, "10.00");
    let before = world.season().await;

    let reversal = till.client.reverse(redeemed.redemption_id, "refund", None).await.expect("reversed");
    assert_eq!((reversal.voucher_status.as_str(), reversal.amount.as_str()), ("forfeited", "10.00"));
    let after = world.season().await;
    let cents = |yuan: String| yuan.replace('.', "").parse::<i64>().expect("amount");
    assert_eq!(
        cents(available(&after)) - cents(available(&before)),
        1_000,
        "the discount is back in the pool"
    );
    let (_, mine) = world.app.get("/v1/me/vouchers", Some(&citizen)).await;
    assert_eq!(mine["vouchers"][0]["status"], "forfeited");
    let (status, answer) =
        world.app.post(&format!("/v1/vouchers/{voucher}/qr"), Some(&citizen), json!({})).await;
    assert_eq!((status, code(&answer)), (409, "voucher_not_redeemable"), "{answer}");
    let (status, answer) = world.claim(&citizen, &batch, "claim-again").await;
    assert_eq!(
        (status, code(&answer)),
        (409, "limit_reached"),
        "the forfeited voucher holds its slot: {answer}"
    );
    assert_eq!(world.batch_state(&batch).await["remaining"], 1, "the stock does not come back");
    till.voucher(2, &batch).await;

    let season_id: SeasonId = world.season_id.parse().expect("uuid");
    let store = world.app.store();
    let season = store.season(season_id).await.expect("read").expect("season");
    let now = world.clock.now();
    let report = wenhui::app::finance::build_report(store, &season, None, now).await.expect("report");
    let row = report.batches.iter().find(|b| b.batch_id.to_string() == batch).expect("the batch");
    assert_eq!((row.claimed, row.redeemed, row.forfeited, row.expired, row.active), (2, 0, 1, 0, 1));
    let reconciled = wenhui::app::finance::reconcile(store, &season, now).await.expect("reconcile");
    assert!(reconciled.ok, "{:?}", reconciled.checks.iter().filter(|c| c.breaks > 0).collect::<Vec<_>>());
    wenhui::app::audit::verify_store(store).await.expect("ledger verifies");
}

/// An expired voucher's value goes back to its batch's reserve while the batch is open, to the
/// pool once it has closed. A reversal planned before the close and committed after it would
/// credit a closed batch's reserve: the commit reads the batch under the ledger head and
/// refuses, and the service plans again.
async fn a_reversal_planned_before_its_batch_closed_is_planned_again(backend: Backend) {
    use wenhui::domain::accounts;
    use wenhui::domain::ledger::{NewEntry, NewPosting, Side};
    use wenhui::storage::{IdemRecord, NewReversal, Refusal, WriteError};
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    let batch = world.batch(json!({"stock": 2, "claim_closes_at": world.at(86_400)})).await;
    let batch_id: BatchId = batch["id"].as_str().expect("id").parse().expect("uuid");
    let (citizen, voucher) = till.voucher(1, &batch_id.to_string()).await;
    let redeemed =
        till.redeem(&till.qr(&citizen, &voucher).await, "100.00", "late-1").await.expect("redeemed");
    world.clock.advance_us(3 * 86_400 * 1_000_000);
    let record =
        world.app.store().redemption(redeemed.redemption_id.into()).await.expect("read").expect("redemption");

    // Planned while the batch was open: the voucher expires, its value back to the reserve.
    let funder = "370000".parse().expect("region");
    let posting = |account, side, amount_fen| NewPosting { account, side, amount_fen };
    let reversal_id = wenhui::domain::ids::ReversalId::new_v7();
    let stale = NewReversal {
        redemption_id: record.id,
        reversal_id,
        voucher_id: record.voucher_id,
        batch_id,
        reason: "refund".into(),
        at: world.clock.now(),
        voucher_status: "expired",
        reserve_returned: false,
        season_totals: Vec::new(),
        entry: NewEntry::new(
            "reversal",
            format!("reversal:{reversal_id}"),
            vec![
                posting(accounts::payable(record.season_id, record.merchant_id, funder), Side::Debit, 1_000),
                posting(accounts::reserve(record.season_id, batch_id, funder), Side::Credit, 1_000),
            ],
        ),
        answer: IdemRecord {
            scope: format!("terminal:{}", till.terminal_id),
            key: "planned-before-the-close".into(),
            request_hash: vec![1],
            status: 201,
            body: "{}".into(),
        },
    };
    world.app.sweep().await;
    let (_, closed) = world.app.get(&format!("/v1/seasons/{}/batches", world.season_id), None).await;
    assert!(closed.as_array().is_some_and(|b| b.is_empty()), "the batch has closed: {closed}");
    let refused = world.app.store().commit_reversal(&stale).await;
    assert!(matches!(&refused, Err(WriteError::Refused(Refusal::BatchClosedMeanwhile))), "{refused:?}");
    // Through the service (signed at its clock, three days on): planned afresh, to the pool.
    let path = format!("/v1/redemptions/{}/reversal", redeemed.redemption_id);
    let later_s = world.clock.now().unix_us() / 1_000_000;
    let body = json!({"reason": "refund"});
    let (status, reversal) = signed_to(
        world,
        &path,
        till.terminal_id,
        till.key.key_pair(),
        later_s,
        "after-the-close-nonce-1",
        &body,
    )
    .await;
    assert_eq!((status, reversal["voucher_status"].as_str()), (201, Some("expired")), "{reversal}");
    let season_id: SeasonId = world.season_id.parse().expect("uuid");
    let store = world.app.store();
    let season = store.season(season_id).await.expect("read").expect("season");
    let reconciled =
        wenhui::app::finance::reconcile(store, &season, world.clock.now()).await.expect("reconcile");
    assert!(reconciled.ok, "{:?}", reconciled.checks.iter().filter(|c| c.breaks > 0).collect::<Vec<_>>());
}

async fn two_terminals_one_voucher(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let batch = till.world.batch(json!({"stock": 5})).await;
    let (citizen, voucher) = till.voucher(1, batch["id"].as_str().expect("id")).await;
    let qr = till.qr(&citizen, &voucher).await;
    let dir = till.world.app.db.dir.path().to_owned();
    let (other, _, _) = terminal(&till.world, &till.qingdao_admin, &till.bookstore, &dir).await;
    let other = Arc::new(other);
    let request = |order: &str| RedeemRequest {
        qr: qr.clone(),
        order_amount: "100.00".into(),
        order_ref: order.into(),
        idempotency_key: None,
    };
    let (a, b) = tokio::join!(till.client.redeem(request("x-1")), other.redeem(request("x-2")));
    let successes = [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count();
    assert_eq!(successes, 1, "exactly one terminal redeems: {a:?} {b:?}");
    let refused = a.err().or(b.err()).expect("one refusal");
    assert!(
        ["qr_replayed", "voucher_not_redeemable"].contains(&refused.code().as_str()),
        "{}",
        refused.code()
    );
    wenhui::app::audit::verify_store(till.world.app.store()).await.expect("ledger verifies");
}

/// The QR code drawn to an image and read back by a real decoder gives the token: tokens with
/// many different masks chosen, each drawn as the service's SVG, rasterised and decoded by rqrr.
#[tokio::test]
async fn qr_code_image_decodes_to_the_token() {
    let key = Ed25519KeyPair::from_seed_unchecked(&[5u8; 32]).expect("seed");
    let mut masks = std::collections::BTreeSet::new();
    for n in 0..24u8 {
        let payload = TokenPayload {
            kind: TokenKind::Voucher,
            key_id: key_id_for(key.public_key().as_ref()),
            subject: Uuid::from_u128(u128::from(n) * 7_919),
            nonce: [n; 16],
            issued_at_s: 1_767_225_600,
            expires_at_s: 1_767_225_690,
        };
        let token = payload.encode(key.sign(&payload.signing_input()).as_ref());
        assert!(QrToken::parse(&token).is_ok());
        let symbol = wenhui::app::qr::image::QrSymbol::encode(token.as_bytes()).expect("encodes");
        masks.insert(symbol.mask);
        assert_eq!(decode_svg(&symbol.svg()), token, "mask {}", symbol.mask);
    }
    assert!(masks.len() >= 4, "the tokens exercise several masks: {masks:?}");
}

/// The voucher QR endpoint's SVG decodes to the token it returns.
async fn served_qr_svg_decodes_to_its_token(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let batch = till.world.batch(json!({"stock": 1, "categories": ["bookstore"]})).await;
    let (citizen, voucher) = till.voucher(1, batch["id"].as_str().expect("id")).await;
    let (status, qr) =
        till.world.app.post(&format!("/v1/vouchers/{voucher}/qr"), Some(&citizen), json!({})).await;
    assert_eq!(status, 200, "{qr}");
    assert_eq!(decode_svg(qr["svg"].as_str().expect("svg")), qr["token"].as_str().expect("token"));
}

/// Rasterises the service's SVG (a square `viewBox` in modules, one path of `M x y h w v1 h-w z`
/// runs) at 4 pixels per module and decodes it with rqrr.
fn decode_svg(svg: &str) -> String {
    let side: usize = svg
        .split("viewBox=\"0 0 ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("viewBox");
    let path = svg.split(" d=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("path");
    let mut dark = vec![false; side * side];
    for run in path.split('M').filter(|r| !r.is_empty()) {
        let numbers: Vec<usize> = run
            .split(|c: char| !c.is_ascii_digit())
            .filter(|n| !n.is_empty())
            .map(|n| n.parse().expect("number"))
            .collect();
        let [x, y, width, ..] = numbers[..] else { panic!("run {run}") };
        dark[y * side + x..y * side + x + width].fill(true);
    }
    let scale = 4;
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(side * scale, side * scale, |x, y| {
        if dark[(y / scale) * side + x / scale] { 0 } else { 255 }
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one symbol");
    grids[0].decode().expect("decodes").1
}

both_backends!(a_taken_credit_code_or_terminal_key_gets_its_code);

/// The database's unique constraints on a merchant's credit code and a terminal's public key are
/// recognised by name (PostgreSQL) or table and column (SQLite) and answered with their codes;
/// nothing is written.
async fn a_taken_credit_code_or_terminal_key_gets_its_code(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    let admin = Some(till.qingdao_admin.as_str());
    let body = json!({"name": "另一家店", "credit_code": credit_code(1), "category": "cinema", "city": "370200",
        "settlement_account": {"bank": "青岛银行", "account_no": "6222000033334444", "account_name": "某影院"}});
    let (status, answer) = world.app.post_idem("/v1/merchants", admin, "same-credit-code", body).await;
    assert_eq!((status, code(&answer)), (409, "merchant_exists"), "{answer}");
    let (status, listed) = world.app.get("/v1/merchants?city=370200", admin).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["merchants"].as_array().map(Vec::len), Some(1), "{listed}");

    let terminals = format!("/v1/merchants/{}/terminals", till.bookstore);
    let body = json!({"public_key": till.key.public_key_base64url(), "label": "second till"});
    let (status, answer) = world.app.post_idem(&terminals, admin, "same-public-key", body).await;
    assert_eq!((status, code(&answer)), (409, "terminal_exists"), "{answer}");
}
