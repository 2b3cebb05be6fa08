//! Settlement holds on both backends (docs/settlement-holds.md): a merchant held by hand, its
//! line held at settlement and left out of the payout file, released and paid by the next
//! payout, held again and rejected with four eyes (the subsidy back in the funder's pool); every
//! identity and `wenhui ledger verify` hold throughout. The season's threshold and the scorer's
//! call (`hold_by_score`). A hold lifted: the next settlement pays the merchant, the line held
//! before stays held, a score does not hold it again, a hold by hand does.

use serde_json::{Value, json};
use wenhui::domain::finance::HoldSource;
use wenhui::domain::staff::Role;
use wenhui::domain::time::Timestamp;

use crate::both_backends;
use crate::claims::World;
use crate::common::{Backend, code};
use crate::finance::Script;
use crate::finance_files::{chinese_csv, download};

both_backends!(
    a_held_merchant_is_released_then_rejected_with_four_eyes,
    the_season_sets_the_hold_threshold,
    a_lifted_hold_lets_the_next_settlement_pay
);

async fn payout_csv(s: &Script, settlement: &str) -> String {
    let url = s.world.app.url(&format!("/v1/settlements/{settlement}/payout.csv?lang=en"));
    let response = s.world.app.client.get(url).bearer_auth(&s.finance).send().await.expect("payout");
    assert_eq!(response.status(), 200);
    response.text().await.expect("csv")
}

/// The province funder's row of the season report.
async fn province_row(s: &Script) -> Value {
    let (status, report) = s.get(&format!("/v1/seasons/{}/report", s.world.season_id), &s.finance).await;
    assert_eq!(status, 200, "{report}");
    report["funders"]
        .as_array()
        .expect("funders")
        .iter()
        .find(|f| f["funder"] == "370000")
        .expect("the province")
        .clone()
}

fn ledger_verifies(s: &Script) {
    let (dir, url) = (s.world.app.db.dir.path(), &s.world.app.db.url);
    let out = crate::cli::wenhui(dir, url, &["ledger", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

fn fen(yuan: &Value) -> i64 {
    wenhui::domain::money::Fen::parse_yuan(yuan.as_str().expect("yuan")).expect("amount").as_fen()
}

async fn a_held_merchant_is_released_then_rejected_with_four_eyes(backend: Backend) {
    // The bookstore and the cinema each redeemed a 10.00 provincial voucher.
    let (s, more, _) = Script::two_redeemed_two_claimed(backend).await;
    let season = s.world.season_id.clone();
    let (bookstore, cinema) = (s.bookstore.0.clone(), s.cinema.0.clone());
    let holds = format!("/v1/seasons/{season}/holds");
    let hold = json!({"merchant_id": bookstore, "reason": "投诉：疑似满额套现"});

    // Only the province's finance holds; the reason is required; then a retry answers the same.
    let auditor = s.world.app.staff_key(Role::Auditor, "370000").await;
    let (status, body) = s.world.app.post_idem(&holds, Some(&auditor), "hold-a", hold.clone()).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let blank = json!({"merchant_id": bookstore, "reason": "  "});
    let (status, body) = s.world.app.post_idem(&holds, Some(&s.finance), "hold-0", blank).await;
    assert_eq!((status, code(&body)), (422, "invalid_field"), "{body}");
    let (status, body) = s.world.app.post(&holds, Some(&s.finance), hold.clone()).await;
    assert_eq!((status, code(&body)), (400, "missing_idempotency_key"), "{body}");
    let (status, held) = s.world.app.post_idem(&holds, Some(&s.finance), "hold-1", hold.clone()).await;
    assert_eq!(status, 201, "{held}");
    assert_eq!((held["source"].as_str(), held["score"].is_null()), (Some("manual"), true));
    let (status, again) = s.world.app.post_idem(&holds, Some(&s.finance), "hold-2", hold).await;
    assert_eq!((status, &again), (201, &held), "the first hold stands");

    // The settlement runs: the bookstore's line is held, not in the payout file.
    s.set_clock(s.now.plus_seconds(10));
    let (status, first) = s.settle("settle-1").await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(
        (first["total"].as_str(), first["held"].as_i64(), first["held_total"].as_str()),
        (Some("20.00"), Some(1), Some("10.00"))
    );
    assert_eq!(first["payout_total"].as_str(), Some("10.00"));
    let first_id = first["settlement_id"].as_str().expect("id").to_owned();
    let (_, with_lines) = s.get(&format!("/v1/settlements/{first_id}"), &s.finance).await;
    let status_of = |lines: &Value, merchant: &str| {
        lines["lines"].as_array().expect("lines").iter().find(|l| l["merchant_id"] == merchant).expect("line")
            ["status"]
            .clone()
    };
    assert_eq!(status_of(&with_lines, &bookstore), "held");
    assert_eq!(status_of(&with_lines, &cinema), "none");
    let payout = payout_csv(&s, &first_id).await;
    assert!(!payout.contains(&bookstore), "a held line is not paid: {payout}");
    assert!(payout.contains(&cinema), "{payout}");
    s.reconciles().await;
    ledger_verifies(&s);
    let row = province_row(&s).await;
    assert_eq!((row["held"].as_str(), row["settled"].as_str()), (Some("10.00"), Some("10.00")), "{row}");
    let (status, listed) = s.get(&holds, &s.finance).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["holds"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["lines"][0]["status"], "held");
    assert_eq!(listed["lines"][0]["reason"], "投诉：疑似满额套现");
    // A city's finance sees its own merchants' holds and lines only (the bookstore is Qingdao's).
    for (city, seen) in [("370200", 1), ("370100", 0)] {
        let key = s.world.app.staff_key(Role::Finance, city).await;
        let (status, listed) = s.get(&holds, &key).await;
        assert_eq!(status, 200, "{listed}");
        let counts = (listed["holds"].as_array().map(Vec::len), listed["lines"].as_array().map(Vec::len));
        assert_eq!(counts, (Some(seen), Some(seen)), "{city}: {listed}");
        if seen == 1 {
            assert_eq!(listed["holds"][0]["merchant_id"], bookstore.as_str(), "{listed}");
        }
    }

    // The bank pays the first payout; the bookstore is still held.
    let (status, paid) = s
        .world
        .app
        .post_idem(
            &format!("/v1/settlements/{first_id}/paid"),
            Some(&s.finance),
            "paid-1",
            json!({"payout_ref": "B-1"}),
        )
        .await;
    assert_eq!(status, 201, "{paid}");
    s.reconciles().await;

    // Finance releases it; the next settlement (nothing new to settle) pays it.
    let line = format!("/v1/settlements/{first_id}/holds/{bookstore}");
    let (status, body) =
        s.world.app.post_idem(&format!("{line}/release"), Some(&s.finance), "r-0", json!({})).await;
    assert_eq!((status, code(&body)), (422, "invalid_field"), "a release needs a note: {body}");
    let note = json!({"note": "核实为正常交易，放行"});
    let (status, released) =
        s.world.app.post_idem(&format!("{line}/release"), Some(&s.finance), "r-1", note.clone()).await;
    assert_eq!((status, released["status"].as_str()), (200, Some("released")), "{released}");
    let (status, again) =
        s.world.app.post_idem(&format!("{line}/release"), Some(&s.finance), "r-2", note).await;
    assert_eq!((status, &again), (200, &released), "the same decision again answers the same");
    s.reconciles().await;
    s.set_clock(s.now.plus_seconds(20));
    let (status, second) = s.settle("settle-2").await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(
        (second["merchants"].as_i64(), second["released"].as_i64(), second["payout_total"].as_str()),
        (Some(0), Some(1), Some("10.00"))
    );
    let second_id = second["settlement_id"].as_str().expect("id").to_owned();
    let payout = payout_csv(&s, &second_id).await;
    let bookstore_line = payout.lines().find(|l| l.contains(&bookstore)).expect("the released line is paid");
    assert!(bookstore_line.ends_with(",1,10.00,10.00"), "{bookstore_line}");
    let (status, paid) = s
        .world
        .app
        .post_idem(
            &format!("/v1/settlements/{second_id}/paid"),
            Some(&s.finance),
            "paid-2",
            json!({"payout_ref": "B-2"}),
        )
        .await;
    assert_eq!(status, 201, "{paid}");
    s.reconciles().await;
    let row = province_row(&s).await;
    assert_eq!(
        (row["held"].as_str(), row["released"].as_str(), row["paid"].as_str()),
        (Some("0.00"), Some("10.00"), Some("20.00"))
    );
    let statement = format!("/v1/merchants/{bookstore}/statement?season={season}");
    let (status, lines) = s.get(&statement, &s.finance).await;
    assert_eq!(status, 200, "{lines}");
    let kinds: Vec<&str> =
        lines["lines"].as_array().expect("lines").iter().map(|l| l["kind"].as_str().expect("kind")).collect();
    assert_eq!(kinds, ["redemption", "held", "released", "payout"], "{lines}");
    assert_eq!(lines["lines"][3]["paid"], "10.00");

    // Held again (still on hold): a rejection takes two people.
    s.redeem(&s.bookstore.1, 3, &more, "100.00", "P-3").await;
    s.set_clock(s.now.plus_seconds(30));
    let (status, third) = s.settle("settle-3").await;
    assert_eq!((status, third["held"].as_i64()), (201, Some(1)), "{third}");
    let third_id = third["settlement_id"].as_str().expect("id").to_owned();
    let line = format!("/v1/settlements/{third_id}/holds/{bookstore}");
    let available_before = fen(&province_row(&s).await["available"]);
    let (status, body) =
        s.world.app.post_idem(&format!("{line}/reject/approve"), Some(&s.finance), "a-0", json!({})).await;
    assert_eq!((status, code(&body)), (409, "rejection_not_proposed"), "{body}");
    let (status, body) = s
        .world
        .app
        .post_idem(
            &format!("/v1/settlements/{first_id}/holds/{cinema}/release"),
            Some(&s.finance),
            "x",
            json!({"note": "x"}),
        )
        .await;
    assert_eq!((status, code(&body)), (404, "hold_not_found"), "a line never held: {body}");
    let told = json!({"note": "同一顾客一小时内反复满额消费，补贴不予结算"});
    let (status, proposed) =
        s.world.app.post_idem(&format!("{line}/reject"), Some(&s.finance), "p-1", told).await;
    assert_eq!((status, proposed["status"].as_str()), (200, Some("held")), "{proposed}");
    assert!(proposed["reject_proposed_by"].is_string(), "{proposed}");
    let (status, body) =
        s.world.app.post_idem(&format!("{line}/reject/approve"), Some(&s.finance), "a-1", json!({})).await;
    assert_eq!((status, code(&body)), (403, "same_approver"), "the proposer cannot approve: {body}");
    s.reconciles().await;
    let second_person = s.world.app.staff_key(Role::Finance, "370000").await;
    let (status, rejected) = s
        .world
        .app
        .post_idem(&format!("{line}/reject/approve"), Some(&second_person), "a-2", json!({}))
        .await;
    assert_eq!((status, rejected["status"].as_str()), (200, Some("rejected")), "{rejected}");
    assert_eq!(rejected["reject_note"], "同一顾客一小时内反复满额消费，补贴不予结算");
    assert_ne!(rejected["rejected_by"], rejected["reject_proposed_by"]);
    let (status, again) = s
        .world
        .app
        .post_idem(&format!("{line}/reject/approve"), Some(&second_person), "a-3", json!({}))
        .await;
    assert_eq!((status, &again), (200, &rejected));
    let (status, body) = s
        .world
        .app
        .post_idem(&format!("{line}/release"), Some(&s.finance), "r-3", json!({"note": "n"}))
        .await;
    assert_eq!((status, code(&body)), (409, "hold_decided"), "{body}");

    // The subsidy is back in the province's pool; every identity holds.
    let row = province_row(&s).await;
    assert_eq!(fen(&row["available"]) - available_before, 1_000, "{row}");
    assert_eq!((row["rejected"].as_str(), row["held"].as_str()), (Some("10.00"), Some("0.00")), "{row}");
    assert!(!payout_csv(&s, &third_id).await.contains(&bookstore));
    s.reconciles().await;
    ledger_verifies(&s);
    let (_, lines) = s.get(&statement, &s.finance).await;
    let last = lines["lines"].as_array().expect("lines").last().expect("a line").clone();
    assert_eq!(
        (last["kind"].as_str(), last["unsettled"].as_str()),
        (Some("rejected"), Some("0.00")),
        "{lines}"
    );
    let holds = lines["holds"].as_array().expect("holds");
    let told = holds.iter().find(|h| h["status"] == "rejected").expect("the rejection");
    assert_eq!(told["note"], "同一顾客一小时内反复满额消费，补贴不予结算", "the merchant is told why");

    // The statement's CSV tells it too, on the rejected line (and the release's note on the
    // released one), in English and in Chinese.
    let en = String::from_utf8(download(&s, &format!("{statement}&format=csv&lang=en")).await).expect("utf8");
    let rows: Vec<&str> = en.lines().collect();
    assert!(rows[0].ends_with(",unsettled,note"), "{en}");
    let rejected_row = rows.iter().find(|r| r.contains(",rejected,")).expect("the rejected line");
    assert!(rejected_row.ends_with(",0.00,同一顾客一小时内反复满额消费，补贴不予结算"), "{en}");
    let released_row = rows.iter().find(|r| r.contains(",released,")).expect("the released line");
    assert!(released_row.ends_with(",核实为正常交易，放行"), "{en}");
    let zh = chinese_csv(&download(&s, &format!("{statement}&format=csv")).await);
    let rows: Vec<&str> = zh.lines().collect();
    assert!(rows[0].ends_with(",未结算,说明"), "{zh}");
    let rejected_row = rows.iter().find(|r| r.contains(",拒付,")).expect("the rejected line");
    assert!(rejected_row.ends_with(",0.00,同一顾客一小时内反复满额消费，补贴不予结算"), "{zh}");
}

/// The season stores its threshold (0 to 100); the scorer's call holds at or above it only.
async fn the_season_sets_the_hold_threshold(backend: Backend) {
    let t0 = Timestamp::now().unix_us();
    let refused = json!({"hold_score_threshold": 101});
    let world = World::new_at(backend, "1000.00", None, t0, json!({"hold_score_threshold": 70})).await;
    let (status, season) =
        world.app.get(&format!("/v1/seasons/{}", world.season_id), Some(&world.province_admin)).await;
    assert_eq!((status, season["hold_score_threshold"].as_i64()), (200, Some(70)), "{season}");
    let mut body = json!({
        "name": "分数线", "province": "370000", "starts_at": world.at(0), "ends_at": world.at(86_400),
        "budgets": [{"funder": "370000", "amount": "10.00"}],
    });
    body["hold_score_threshold"] = refused["hold_score_threshold"].clone();
    let (status, body) = world.app.post_idem("/v1/seasons", Some(&world.province_admin), "s-101", body).await;
    assert_eq!((status, code(&body)), (422, "invalid_hold_threshold"), "{body}");

    let path = format!("/v1/seasons/{}/hold-threshold", world.season_id);
    let put = |body: Value| {
        world.app.client.put(world.app.url(&path)).bearer_auth(&world.province_admin).json(&body)
    };
    let (status, body) =
        crate::common::read(put(json!({"hold_score_threshold": 101})).send().await.expect("put")).await;
    assert_eq!((status, code(&body)), (422, "invalid_hold_threshold"), "{body}");
    let (status, body) =
        crate::common::read(put(json!({"hold_score_threshold": null})).send().await.expect("put")).await;
    assert_eq!((status, body["hold_score_threshold"].is_null()), (200, true), "{body}");
    let (status, body) =
        crate::common::read(put(json!({"hold_score_threshold": 70})).send().await.expect("put")).await;
    assert_eq!((status, body["hold_score_threshold"].as_i64()), (200, Some(70)), "{body}");
    let store = world.app.store();
    let season = store.season(world.season_id.parse().expect("id")).await.expect("read").expect("season");
    let merchant: wenhui::domain::ids::MerchantId =
        crate::till::merchant(&world, &world.province_admin, 41, "ktv", "370200").await.parse().expect("id");
    let now = Timestamp::now();
    let below =
        wenhui::app::finance::holds::hold_by_score(store, &season, merchant, 69, "threshold orders", now);
    assert!(below.await.expect("score").is_none(), "69 < 70: no hold");
    let hold =
        wenhui::app::finance::holds::hold_by_score(store, &season, merchant, 70, "threshold orders", now)
            .await
            .expect("score")
            .expect("held at 70");
    assert_eq!(hold.source, HoldSource::Score(70));
    assert!(hold.reason.starts_with("score 70 >= 70"), "{}", hold.reason);
    let (status, listed) =
        world.app.get(&format!("/v1/seasons/{}/holds", world.season_id), Some(&world.province_admin)).await;
    assert_eq!(status, 403, "an admin is not finance: {listed}");
}

/// The line of `merchant` in a settlement: its status.
async fn line_status(s: &Script, settlement: &str, merchant: &str) -> Value {
    let (status, body) = s.get(&format!("/v1/settlements/{settlement}"), &s.finance).await;
    assert_eq!(status, 200, "{body}");
    body["lines"].as_array().expect("lines").iter().find(|l| l["merchant_id"] == merchant).expect("line")
        ["status"]
        .clone()
}

/// Hold, settle (held), lift with a note: the next settlement pays the merchant, the earlier
/// line stays held until released; a score does not hold it again; a hold by hand does.
async fn a_lifted_hold_lets_the_next_settlement_pay(backend: Backend) {
    let (s, more, more_2) = Script::two_redeemed_two_claimed(backend).await;
    let season = s.world.season_id.clone();
    let bookstore = s.bookstore.0.clone();
    let holds = format!("/v1/seasons/{season}/holds");
    let lift = format!("{holds}/{bookstore}/lift");
    let checked = json!({"note": "已核实：门店正常经营，解除暂扣"});

    // No hold, nothing to lift.
    let (status, body) = s.world.app.post_idem(&lift, Some(&s.finance), "l-0", checked.clone()).await;
    assert_eq!((status, code(&body)), (404, "hold_not_found"), "{body}");

    let hold = json!({"merchant_id": bookstore, "reason": "投诉：疑似套现"});
    let (status, held) = s.world.app.post_idem(&holds, Some(&s.finance), "h-1", hold).await;
    assert_eq!((status, held["in_force"].as_bool()), (201, Some(true)), "{held}");
    s.set_clock(s.now.plus_seconds(10));
    let (status, first) = s.settle("settle-1").await;
    assert_eq!((status, first["held"].as_i64()), (201, Some(1)), "{first}");
    let first_id = first["settlement_id"].as_str().expect("id").to_owned();
    assert_eq!(line_status(&s, &first_id, &bookstore).await, "held");

    // Only the province's finance lifts (a city's finance, of another city or its own, is
    // refused); the note is required; the Idempotency-Key too.
    for city in ["370100", "370200"] {
        let key = s.world.app.staff_key(Role::Finance, city).await;
        let (status, body) = s.world.app.post_idem(&lift, Some(&key), "l-city", checked.clone()).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "{city}: {body}");
    }
    let (status, body) = s.world.app.post_idem(&lift, Some(&s.finance), "l-1", json!({"note": " "})).await;
    assert_eq!((status, code(&body)), (422, "invalid_field"), "{body}");
    let (status, body) = s.world.app.post(&lift, Some(&s.finance), checked.clone()).await;
    assert_eq!((status, code(&body)), (400, "missing_idempotency_key"), "{body}");
    let (status, lifted) = s.world.app.post_idem(&lift, Some(&s.finance), "l-2", checked.clone()).await;
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(
        (lifted["in_force"].as_bool(), lifted["lift_note"].as_str()),
        (Some(false), checked["note"].as_str())
    );
    assert!(lifted["lifted_by"].is_string() && lifted["lifted_at"].is_string(), "{lifted}");
    assert_eq!(lifted["reason"], "投诉：疑似套现", "the hold's reason stays");
    let other = json!({"note": "再次解除"});
    let (status, again) = s.world.app.post_idem(&lift, Some(&s.finance), "l-3", other).await;
    assert_eq!((status, &again), (200, &lifted), "a lifted hold answers as it is");

    // The next settlement pays the bookstore; its first line stays held.
    s.redeem(&s.bookstore.1, 3, &more, "100.00", "P-3").await;
    s.set_clock(s.now.plus_seconds(20));
    let (status, second) = s.settle("settle-2").await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(
        (second["held"].as_i64(), second["payout_total"].as_str()),
        (Some(0), Some("10.00")),
        "{second}"
    );
    let second_id = second["settlement_id"].as_str().expect("id").to_owned();
    assert_eq!(line_status(&s, &second_id, &bookstore).await, "none");
    assert!(payout_csv(&s, &second_id).await.contains(&bookstore), "the lifted merchant is paid");
    assert!(!payout_csv(&s, &first_id).await.contains(&bookstore));
    let (status, listed) = s.get(&holds, &s.finance).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["holds"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed["holds"][0], lifted, "the list shows the lift: who, when, why");
    assert_eq!(listed["lines"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed["lines"][0]["status"], "held", "a line held before the lift stays held");
    s.reconciles().await;
    ledger_verifies(&s);

    // A score at the threshold does not hold the merchant again this season: a person decided.
    let store = s.world.app.store();
    let mut scored = store.season(season.parse().expect("id")).await.expect("read").expect("season");
    scored.hold_score_threshold = Some(60);
    let merchant = bookstore.parse().expect("merchant id");
    let again = wenhui::app::finance::holds::hold_by_score(
        store,
        &scored,
        merchant,
        95,
        "满额集中",
        Timestamp::now(),
    )
    .await
    .expect("score");
    assert!(again.is_none(), "no automatic hold after a lift: {again:?}");
    let (_, listed) = s.get(&holds, &s.finance).await;
    assert_eq!(listed["holds"][0], lifted, "still lifted");

    // By hand it is held again: the new reason, the lift cleared; the next line is held.
    let rehold = json!({"merchant_id": bookstore, "reason": "新的投诉"});
    let (status, reheld) = s.world.app.post_idem(&holds, Some(&s.finance), "h-2", rehold).await;
    assert_eq!(status, 201, "{reheld}");
    assert_eq!((reheld["in_force"].as_bool(), reheld["reason"].as_str()), (Some(true), Some("新的投诉")));
    assert!(reheld["lifted_by"].is_null() && reheld["lift_note"].is_null(), "{reheld}");
    s.redeem(&s.bookstore.1, 4, &more_2, "100.00", "P-4").await;
    s.set_clock(s.now.plus_seconds(30));
    let (status, third) = s.settle("settle-3").await;
    assert_eq!((status, third["held"].as_i64()), (201, Some(1)), "{third}");
    let third_id = third["settlement_id"].as_str().expect("id").to_owned();
    assert_eq!(line_status(&s, &third_id, &bookstore).await, "held");

    // The first held line is released as usual; the books hold.
    let release = format!("/v1/settlements/{first_id}/holds/{bookstore}/release");
    let (status, released) =
        s.world.app.post_idem(&release, Some(&s.finance), "r-1", json!({"note": "核实后放行"})).await;
    assert_eq!((status, released["status"].as_str()), (200, Some("released")), "{released}");
    s.reconciles().await;
    ledger_verifies(&s);
}
