//! `POST /v1/redemptions/quote`: the redemption's checks and plan with nothing written. A quote
//! answers the discount the redemption that follows gives, spends neither the voucher nor its QR
//! code, and refuses with the code the redemption would answer.

use serde_json::json;
use uuid::Uuid;
use wenhui_merchant_sdk::{CardPaymentRequest, QuoteTerms};

use crate::both_backends;
use crate::common::Backend;
use crate::till::Till;

both_backends!(a_quote_answers_the_redemptions_discount_and_spends_nothing);

async fn a_quote_answers_the_redemptions_discount_and_spends_nothing(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let batch = till.world.batch(json!({"per_citizen_limit": 2})).await;
    let batch = batch["id"].as_str().expect("id").to_owned();
    let (citizen, voucher) = till.voucher(1, &batch).await;
    let qr = till.qr(&citizen, &voucher).await;
    let head = till.head().await;

    let quote = till.client.quote(&qr, "120", "Q-1").await.expect("a quote");
    assert_eq!(quote.voucher_id.to_string(), voucher);
    assert_eq!(quote.terms, QuoteTerms::Threshold { face_value: "10.00".into(), min_spend: "40.00".into() });
    assert_eq!((quote.issuer.as_str(), quote.issuer_name.as_str()), ("370000", "山东省"));
    assert_eq!(quote.categories, ["bookstore", "cinema"]);
    assert_eq!(quote.category_names, ["书店", "电影院"]);
    assert_eq!((quote.order_amount.as_str(), quote.voucher_basis.as_str()), ("120.00", "120.00"));
    assert_eq!((quote.discount.as_str(), quote.payable.as_str()), ("10.00", "110.00"));
    assert_eq!(quote.member_discount, None);
    assert!(quote.expires_at.ends_with('Z'), "{}", quote.expires_at);
    // Asked again: the same answer, nothing written, the code not spent.
    assert_eq!(till.client.quote(&qr, "120", "Q-1").await.expect("again"), quote);
    assert_eq!(till.head().await, head, "a quote writes nothing to the ledger");
    let (_, vouchers) = till.world.app.get("/v1/me/vouchers", Some(&citizen)).await;
    let listed = vouchers.to_string();
    assert!(listed.contains("\"active\"") && !listed.contains("\"used\""), "{listed}");

    // The redemption that follows, with the same code, gives what was quoted.
    let redeemed = till.redeem(&qr, "120", "Q-1").await.expect("redeemed after the quote");
    assert_eq!((redeemed.discount.as_str(), redeemed.payable.as_str()), ("10.00", "110.00"));
    assert_eq!(redeemed.funders, quote.funders);

    // A used voucher (a used one gets no new code): the quote refuses as the redemption does.
    let again = till.redeem(&qr, "120", "Q-2").await.expect_err("the code is spent");
    let quoted = till.client.quote(&qr, "120", "Q-2").await.expect_err("the code is spent");
    assert_eq!((quoted.code(), again.as_str()), ("qr_replayed".to_owned(), "qr_replayed"));
}

both_backends!(a_quote_refuses_with_the_redemptions_codes);

async fn a_quote_refuses_with_the_redemptions_codes(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let batch = till.world.batch(json!({"per_citizen_limit": 2})).await;
    let batch = batch["id"].as_str().expect("id").to_owned();
    let ktv = till.world.batch(json!({"name": "KTV券", "categories": ["ktv"]})).await;
    let ktv = ktv["id"].as_str().expect("id").to_owned();
    let (citizen, voucher) = till.voucher(1, &batch).await;
    let (status, claim) = till.world.claim(&citizen, &ktv, "claim-ktv").await;
    assert_eq!(status, 201, "{claim}");
    let other = claim["voucher"]["id"].as_str().expect("id").to_owned();
    let qr = till.qr(&citizen, &voucher).await;
    let ktv_qr = till.qr(&citizen, &other).await;
    let head = till.head().await;
    // (code, amount, the refusal both answer)
    let cases = [
        (&qr, "30.50", "below_min_spend"),
        (&ktv_qr, "120", "merchant_not_eligible"),
        (&qr, "0", "invalid_body"),
        (&"WH1.not.a-token".to_owned(), "120", "qr_invalid"),
    ];
    for (n, (code, amount, expected)) in cases.into_iter().enumerate() {
        let order_ref = format!("R-{n}");
        let quoted = till.client.quote(code, amount, &order_ref).await.expect_err("refused");
        let redeemed = till.redeem(code, amount, &order_ref).await.expect_err("refused");
        assert_eq!((quoted.code().as_str(), redeemed.as_str()), (expected, expected), "{amount}");
        assert_eq!(quoted.status(), Some(redemption_status(expected)), "{expected}");
    }
    assert_eq!(till.head().await, head, "nothing was redeemed");
    // Unsigned, it is refused like every terminal request.
    let body = json!({"qr": qr, "order_amount": "120", "order_ref": "R-9"});
    let (status, answer) = till.world.app.post("/v1/redemptions/quote", None, body).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("missing_signature")), "{answer}");
    // The voucher is still good.
    let redeemed = till.redeem(&qr, "120", "R-10").await.expect("still redeemable");
    assert_eq!(redeemed.discount, "10.00");
}

fn redemption_status(code: &str) -> u16 {
    match code {
        "merchant_not_eligible" => 403,
        _ => 422,
    }
}

both_backends!(a_quote_after_a_card_payment_applies_the_member_discount_first);

async fn a_quote_after_a_card_payment_applies_the_member_discount_first(backend: Backend) {
    let till = Till::new(backend, json!({})).await;
    let world = &till.world;
    let batch = world.batch(json!({})).await;
    let batch = batch["id"].as_str().expect("id").to_owned();
    let merchant: Uuid = till.bookstore.parse().expect("uuid");
    till.client.set_card_terms(merchant, 20, None).await.expect("a 20% member discount");
    let (citizen, voucher) = till.voucher(1, &batch).await;
    let (status, card) = world.app.post("/v1/me/card", Some(&citizen), json!({"via": "mobile"})).await;
    assert_eq!(status, 201, "{card}");
    let (status, card_qr) = world.app.post("/v1/me/card/qr", Some(&citizen), json!({})).await;
    assert_eq!(status, 200, "{card_qr}");
    let card_qr = card_qr["token"].as_str().expect("token").to_owned();
    let qr = till.qr(&citizen, &voucher).await;
    let paid = till
        .client
        .card_pay(CardPaymentRequest {
            qr: card_qr,
            order_amount: "100".into(),
            order_ref: "C-1".into(),
            idempotency_key: None,
        })
        .await
        .expect("paid by card");
    assert_eq!(paid.member_discount, "20.00");
    let quote = till.client.quote(&qr, "100", "C-1").await.expect("a quote");
    assert_eq!(quote.member_discount.as_deref(), Some("20.00"));
    assert_eq!(
        (quote.voucher_basis.as_str(), quote.discount.as_str(), quote.payable.as_str()),
        ("80.00", "10.00", "70.00")
    );
    let quoted = till.client.quote(&qr, "90", "C-1").await.expect_err("another amount than the card's");
    assert_eq!(quoted.code(), "order_amount_mismatch");
    let redeemed = till.redeem(&qr, "100", "C-1").await.expect("redeemed");
    assert_eq!((redeemed.discount.as_str(), redeemed.payable.as_str()), ("10.00", "70.00"));
}
