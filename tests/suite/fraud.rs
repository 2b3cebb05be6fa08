//! Cash-out scoring on both backends: a synthetic season made through the API (citizens
//! registered, vouchers claimed, redeemed at signed tills, on a clock the test sets) with an
//! honest bookstore, a KTV cashing out at the threshold at night, and a phone farm; the scores
//! and their reasons through `GET /v1/seasons/{id}/fraud/scores` and `app::fraud`.

use ring::signature::Ed25519KeyPair;
use serde_json::{Value, json};
use uuid::Uuid;
use wenhui::domain::citizen::synthetic_id_number;
use wenhui::domain::staff::Role;
use wenhui::domain::time::Timestamp;

use crate::both_backends;
use crate::claims::World;
use crate::common::{Backend, code, read};
use crate::till::merchant;
use wenhui::domain::ids::SeasonId;

both_backends!(
    the_ktv_and_the_phone_farm_score_high_the_bookstore_low,
    a_settlement_holds_the_two_frauds_and_pays_the_bookstore,
    pages_walk_one_scoring_until_it_is_a_minute_old,
    concurrent_requests_wait_for_one_scoring,
);

/// A merchant and the key of its one till.
pub(crate) struct Shop {
    pub(crate) id: String,
    terminal: Uuid,
    key: Ed25519KeyPair,
}

/// A season under construction: the world, its 满100减30 batch, and a nonce counter.
pub(crate) struct Synthetic {
    pub(crate) world: World,
    batch: String,
    counter: u64,
}

/// CST day `day` (0: the season's first, 2026-03-01), at `hour:minute:second` Beijing time.
pub(crate) fn cst(day: i64, hour: i64, minute: i64, second: i64) -> Timestamp {
    // 2026-03-01T00:00:00+08:00.
    Timestamp::from_unix_us(1_772_294_400_000_000)
        .plus_seconds(((day * 24 + hour) * 60 + minute) * 60 + second)
}

impl Synthetic {
    pub(crate) async fn new(backend: Backend) -> Synthetic {
        let world = World::new(backend, "100000.00", None).await;
        let batch = world
            .batch(json!({"name": "满100减30", "face_value": "30.00", "min_spend": "100.00", "stock": 500,
                           "valid_hours": 120, "categories": ["bookstore", "ktv", "internet_cafe"]}))
            .await;
        Synthetic { world, batch: batch["id"].as_str().expect("batch").to_owned(), counter: 0 }
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    pub(crate) async fn shop(&self, seed: u32, category: &str) -> Shop {
        let admin = self.world.province_admin.clone();
        let id = merchant(&self.world, &admin, seed, category, "370200").await;
        let terminal_key = format!("terminal-{seed}");
        let (terminal, key) =
            crate::till::raw_terminal(&self.world, &admin, &id, &terminal_key, "till").await;
        Shop { id, terminal, key }
    }

    /// A citizen of `home` (a county code) registered and holding a claimed voucher, at `at`:
    /// (session token, voucher id).
    pub(crate) async fn holder(&mut self, n: u32, home: &str, at: Timestamp) -> (String, String) {
        self.world.clock.set(at);
        let id_number = synthetic_id_number(
            home,
            &format!("1990{:02}{:02}", 1 + n / 28 % 12, 1 + n % 28),
            (n % 1000) as u16,
        );
        let body = json!({"name": "张三", "id_number": id_number, "phone": format!("137{n:08}")});
        let (status, answer) = self.world.app.register_citizen(body).await;
        assert_eq!(status, 201, "{answer}");
        let token = answer["token"].as_str().expect("token").to_owned();
        let key = format!("claim-{}", self.next());
        let (status, claim) = self.world.claim(&token, &self.batch.clone(), &key).await;
        assert_eq!(status, 201, "{claim}");
        (token, claim["voucher"]["id"].as_str().expect("voucher").to_owned())
    }

    /// Redeems the voucher at `shop` for an order of `amount` yuan, at `at`.
    pub(crate) async fn redeem(
        &mut self,
        shop: &Shop,
        holder: &(String, String),
        amount: &str,
        at: Timestamp,
    ) {
        self.world.clock.set(at);
        let (token, voucher) = holder;
        let (status, qr) =
            self.world.app.post(&format!("/v1/vouchers/{voucher}/qr"), Some(token), json!({})).await;
        assert!(status == 200 || status == 201, "{qr}");
        let order = format!("order-{}", self.next());
        let body = json!({"qr": qr["token"], "order_amount": amount, "order_ref": order});
        let ts = at.unix_us().div_euclid(1_000_000);
        let nonce = format!("fraud-nonce-{:016}", self.next());
        let (status, answer) = crate::till::signed_to(
            &self.world,
            "/v1/redemptions",
            shop.terminal,
            &shop.key,
            ts,
            &nonce,
            &body,
        )
        .await;
        assert_eq!(status, 201, "{answer}");
    }
}

/// What the synthetic season does, in time order.
enum Step {
    /// A citizen `n` of `home` registers and claims (holder `slot`).
    Claim { n: u32, home: &'static str, slot: usize },
    /// Holder `slot` redeems at shop `shop` for `fen`.
    Redeem { shop: usize, slot: usize, fen: i64 },
}

/// The three merchants of the issue: (season, bookstore, KTV, farm). Every step happens at its
/// own time on the service's clock, in time order.
pub(crate) async fn three_merchants(backend: Backend) -> (Synthetic, String, String, String) {
    let mut s = Synthetic::new(backend).await;
    let shops = [s.shop(41, "bookstore").await, s.shop(42, "ktv").await, s.shop(43, "internet_cafe").await];
    let mut steps: Vec<(Timestamp, Step)> = Vec::new();
    // The bookstore: Qingdao citizens, claimed the first morning, redeemed over three days in
    // opening hours, amounts of every kind (one of them exactly 100.00).
    for i in 0..24usize {
        let n = 1_000 + i as u32;
        let m = i as i64;
        steps.push((cst(0, 10, m, 0), Step::Claim { n, home: "370202", slot: i }));
        let at = cst(1 + m % 3, 10 + m % 9, m, 0);
        steps.push((at, Step::Redeem { shop: 0, slot: i, fen: 10_000 + 1_337 * m }));
    }
    // The KTV: 21 of 24 orders exactly at the threshold, two in three between 01:00 and 05:00.
    for i in 0..24usize {
        let (slot, m) = (24 + i, i as i64);
        steps.push((cst(0, 11, m, 0), Step::Claim { n: 2_000 + i as u32, home: "370202", slot }));
        let fen = if i % 8 == 7 { 12_800 } else { 10_000 };
        let hour = if i % 3 == 0 { 20 } else { 1 + m % 4 };
        steps.push((cst(1 + m % 4, hour, m, 0), Step::Redeem { shop: 1, slot, fen }));
    }
    // The phone farm: 30 Guangzhou accounts claim within minutes, and all redeem within five
    // minutes at an internet cafe in Qingdao.
    for i in 0..30usize {
        let (slot, m) = (48 + i, i as i64);
        steps.push((cst(2, 14, 0, 15 * m), Step::Claim { n: 3_000 + i as u32, home: "440106", slot }));
        steps.push((cst(2, 14, 8, 10 * m), Step::Redeem { shop: 2, slot, fen: 10_500 + 211 * m }));
    }
    steps.sort_by_key(|(at, _)| *at);
    let mut holders: Vec<Option<(String, String)>> = vec![None; 78];
    for (at, step) in steps {
        match step {
            Step::Claim { n, home, slot } => holders[slot] = Some(s.holder(n, home, at).await),
            Step::Redeem { shop, slot, fen } => {
                let holder = holders[slot].clone().expect("claimed first");
                s.redeem(&shops[shop], &holder, &format!("{}.{:02}", fen / 100, fen % 100), at).await;
            }
        }
    }
    let [bookstore, ktv, farm] = shops;
    (s, bookstore.id, ktv.id, farm.id)
}

fn merchant_of<'a>(page: &'a Value, id: &str) -> &'a Value {
    page["merchants"]
        .as_array()
        .expect("merchants")
        .iter()
        .find(|m| m["merchant_id"] == id)
        .expect("merchant listed")
}

fn signals(merchant: &Value) -> Vec<&str> {
    merchant["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r["signal"].as_str().expect("signal"))
        .collect()
}

async fn the_ktv_and_the_phone_farm_score_high_the_bookstore_low(backend: Backend) {
    let (s, bookstore, ktv, farm) = three_merchants(backend).await;
    let app = &s.world.app;
    let finance = app.staff_key(Role::Finance, "370000").await;
    let until = cst(6, 0, 0, 0);
    let path = format!("/v1/seasons/{}/fraud/scores?until={}", s.world.season_id, until);
    let (status, page) = app.get(&path, Some(&finance)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["redemptions"], 78);
    assert_eq!(page["merchants_matching"], 3);

    let ktv_score = merchant_of(&page, &ktv);
    assert!(ktv_score["score"].as_u64().expect("score") > 60, "{ktv_score}");
    assert_eq!(signals(ktv_score)[..2], ["at_threshold", "odd_hours"], "{ktv_score}");
    let at_threshold = &ktv_score["reasons"][0];
    assert_eq!(at_threshold["figures"]["at_threshold"], 21, "{at_threshold}");
    assert_eq!(at_threshold["figures"]["with_threshold"], 24, "{at_threshold}");
    let text = at_threshold["explanation_zh"].as_str().expect("explanation");
    assert!(text.contains("21 笔") && text.contains("门槛"), "{text}");
    assert_eq!(ktv_score["merchant_name"], "店42");
    assert_eq!(ktv_score["category"], "ktv");

    let farm_score = merchant_of(&page, &farm);
    assert!(farm_score["score"].as_u64().expect("score") > 60, "{farm_score}");
    let farm_signals = signals(farm_score);
    assert!(
        farm_signals.contains(&"distinct_burst") && farm_signals.contains(&"far_and_fast"),
        "{farm_score}"
    );
    let days = farm_score["days"].as_array().expect("days");
    assert_eq!(days.len(), 1, "{farm_score}");
    assert_eq!(days[0]["day"], "2026-03-03");
    assert_eq!(days[0]["far_and_fast"], 30);
    assert_eq!(days[0]["max_distinct_in_window"], 30);

    let bookstore_score = merchant_of(&page, &bookstore);
    assert!(bookstore_score["score"].as_u64().expect("score") < 20, "{bookstore_score}");
    assert_eq!(page["merchants"][2]["merchant_id"], bookstore, "highest score first");

    // Same data, same scores: again over HTTP, and from the app function the lead calls.
    let (_, again) = app.get(&path, Some(&finance)).await;
    assert_eq!(again, page);
    let season_id: SeasonId = s.world.season_id.parse().expect("season id");
    let season = app.store().season(season_id).await.expect("read").expect("season");
    let scored = wenhui::app::fraud::score_season(app.store(), &season, until).await.expect("scores");
    let by_app: Vec<(String, u16)> =
        scored.merchants.iter().map(|m| (m.merchant_id.to_string(), m.score)).collect();
    let by_api = ids_and_scores(&page);
    assert_eq!(by_app, by_api);

    // The command line scores the same; piped, it draws no progress bar.
    let dir = app.db.dir.path().to_owned();
    let args = ["fraud", "score", "--season", &s.world.season_id, "--until", &until.to_string(), "--format"];
    let json_run = tokio::task::block_in_place(|| {
        crate::cli::wenhui(&dir, &app.db.url, &[&args[..], &["json"]].concat())
    });
    assert!(json_run.status.success(), "{}", String::from_utf8_lossy(&json_run.stderr));
    let printed: Value = serde_json::from_slice(&json_run.stdout).expect("json on stdout");
    let by_cli = ids_and_scores(&printed);
    assert_eq!(by_cli, by_api);
    assert!(!String::from_utf8_lossy(&json_run.stderr).contains("redemptions read"));
    let table_run = tokio::task::block_in_place(|| {
        crate::cli::wenhui(&dir, &app.db.url, &[&args[..], &["table"]].concat())
    });
    let table = String::from_utf8_lossy(&table_run.stdout);
    assert!(
        table.contains("78 redemptions, 3 merchants") && table.contains("店42") && table.contains("门槛"),
        "{table}"
    );

    // Before the farm's day, the farm has nothing to score.
    let early = format!("/v1/seasons/{}/fraud/scores?until={}", s.world.season_id, cst(2, 0, 0, 0));
    let (_, before) = app.get(&early, Some(&finance)).await;
    assert_eq!(before["merchants_matching"], 2, "{before}");

    // min_score, a page at a time.
    let (_, first) = app.get(&format!("{path}&min_score=60&limit=1"), Some(&finance)).await;
    assert_eq!(first["merchants_matching"], 2, "{first}");
    assert_eq!(first["merchants"].as_array().map(Vec::len), Some(1));
    let after = first["next_after"].as_str().expect("a next page").to_owned();
    let (_, second) = app.get(&format!("{path}&min_score=60&limit=1&after={after}"), Some(&finance)).await;
    assert_eq!(second["merchants"].as_array().map(Vec::len), Some(1));
    assert_eq!(second["next_after"], Value::Null);
    let mut frauds =
        [first["merchants"][0]["merchant_id"].clone(), second["merchants"][0]["merchant_id"].clone()];
    frauds.sort_by_key(|v| v.to_string());
    let mut expected = [json!(ktv), json!(farm)];
    expected.sort_by_key(|v| v.to_string());
    assert_eq!(frauds, expected);

    // A city's finance sees its own city's merchants (all three are in Qingdao).
    let qingdao = app.staff_key(Role::Finance, "370200").await;
    let jinan = app.staff_key(Role::Auditor, "370100").await;
    assert_eq!(app.get(&path, Some(&qingdao)).await.1["merchants_matching"], 3);
    assert_eq!(app.get(&path, Some(&jinan)).await.1["merchants_matching"], 0);

    // Bad input is a 422 with its code; an unknown season a 404.
    for (query, expected) in [
        ("min_score=101", "invalid_query"),
        ("until=yesterday", "invalid_query"),
        ("limit=0", "invalid_limit"),
        ("after=6c2b4f0e-0000-4000-8000-000000000000", "invalid_cursor"),
    ] {
        let (status, body) =
            app.get(&format!("/v1/seasons/{}/fraud/scores?{query}", s.world.season_id), Some(&finance)).await;
        assert_eq!((status, code(&body)), (422, expected), "{query}: {body}");
    }
    let (status, body) =
        app.get(&format!("/v1/seasons/{}/fraud/scores", Uuid::new_v4()), Some(&finance)).await;
    assert_eq!((status, code(&body)), (404, "season_not_found"), "{body}");
}

/// The end to end: with the season's threshold at 60, the settlement scores the season up
/// to its cut-off and holds the KTV's and the farm's lines (score, reasons), pays the bookstore,
/// and every identity holds (reconciliation, the ledger's chain).
async fn a_settlement_holds_the_two_frauds_and_pays_the_bookstore(backend: Backend) {
    let (s, bookstore, ktv, farm) = three_merchants(backend).await;
    let app = &s.world.app;
    let season = &s.world.season_id;
    let finance = app.staff_key(Role::Finance, "370000").await;
    let threshold = app
        .client
        .put(app.url(&format!("/v1/seasons/{season}/hold-threshold")))
        .bearer_auth(&s.world.province_admin)
        .json(&json!({"hold_score_threshold": 60}))
        .send()
        .await
        .expect("put the threshold");
    let (status, body) = read(threshold).await;
    assert_eq!(status, 200, "{body}");

    let cut_off = cst(6, 0, 0, 0);
    s.world.clock.set(cut_off);
    let body = json!({"season_id": season, "cut_off": cut_off.to_string()});
    let (status, settlement) = app.post_idem("/v1/settlements", Some(&finance), "settle-1", body).await;
    assert_eq!(status, 201, "{settlement}");
    assert_eq!(
        (settlement["merchants"].as_i64(), settlement["held"].as_i64()),
        (Some(3), Some(2)),
        "{settlement}"
    );
    let id = settlement["settlement_id"].as_str().expect("settlement id");

    let (status, holds) = app.get(&format!("/v1/seasons/{season}/holds"), Some(&finance)).await;
    assert_eq!(status, 200, "{holds}");
    let held: Vec<&Value> = holds["holds"].as_array().expect("holds").iter().collect();
    let mut held_ids: Vec<&str> = held.iter().map(|h| h["merchant_id"].as_str().expect("id")).collect();
    held_ids.sort_unstable();
    let mut frauds = [ktv.as_str(), farm.as_str()];
    frauds.sort_unstable();
    assert_eq!(held_ids, frauds, "{holds}");
    for hold in &held {
        assert_eq!(hold["source"], "score", "{hold}");
        assert!(hold["score"].as_u64().is_some_and(|score| score >= 60), "{hold}");
        let reason = hold["reason"].as_str().expect("reason");
        assert!(reason.contains(">= 60") && !reason.is_empty(), "{reason}");
    }
    let ktv_hold = held.iter().find(|h| h["merchant_id"] == ktv.as_str()).expect("the KTV's hold");
    assert!(ktv_hold["reason"].as_str().is_some_and(|r| r.contains("门槛")), "{ktv_hold}");

    let payout = app.client.get(app.url(&format!("/v1/settlements/{id}/payout.csv?lang=en")));
    let payout = payout.bearer_auth(&finance).send().await.expect("payout file");
    assert_eq!(payout.status(), 200);
    let payout = payout.text().await.expect("csv");
    assert!(payout.contains(&bookstore), "the bookstore is paid:\n{payout}");
    assert!(!payout.contains(&ktv) && !payout.contains(&farm), "the frauds are not:\n{payout}");

    let (status, reconciliation) =
        app.get(&format!("/v1/seasons/{season}/reconciliation"), Some(&finance)).await;
    assert_eq!((status, &reconciliation["ok"]), (200, &json!(true)), "{reconciliation:#}");
    let out = crate::cli::wenhui(app.db.dir.path(), &app.db.url, &["ledger", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Two shops with a redemption each, on the service's clock (left a minute after the last):
/// (season, the shops, a third holder's claimed voucher).
async fn two_shops(backend: Backend) -> (Synthetic, [Shop; 2], (String, String)) {
    let mut s = Synthetic::new(backend).await;
    let shops = [s.shop(51, "bookstore").await, s.shop(52, "ktv").await];
    let t = cst(1, 10, 0, 0);
    let first = s.holder(5_001, "370202", t).await;
    let second = s.holder(5_002, "370202", t).await;
    let third = s.holder(5_003, "370202", t).await;
    s.redeem(&shops[0], &first, "100.00", t.plus_seconds(60)).await;
    s.redeem(&shops[1], &second, "120.00", t.plus_seconds(120)).await;
    s.world.clock.set(t.plus_seconds(180));
    (s, shops, third)
}

/// Without `until`, the pages asked within SCORES_FRESH_FOR_S walk one scoring (its `until`
/// the time it was made): a redemption made meanwhile is not on the second page, and is
/// counted once the scoring is a minute old.
async fn pages_walk_one_scoring_until_it_is_a_minute_old(backend: Backend) {
    use wenhui::app::fraud::SCORES_FRESH_FOR_S;
    use wenhui::domain::time::Clock;
    let (mut s, shops, third) = two_shops(backend).await;
    let finance = s.world.app.staff_key(Role::Finance, "370000").await;
    let path = format!("/v1/seasons/{}/fraud/scores", s.world.season_id);
    let scored_at = s.world.clock.now();
    let (status, first) = s.world.app.get(&format!("{path}?limit=1"), Some(&finance)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!((first["redemptions"].as_u64(), first["merchants_matching"].as_u64()), (Some(2), Some(2)));
    assert_eq!(first["until"], json!(scored_at), "a scoring of now shows its time");
    let after = first["next_after"].as_str().expect("a second page").to_owned();

    // A redemption during the walk: the second page is of the same scoring.
    s.redeem(&shops[0], &third, "100.00", scored_at.plus_seconds(10)).await;
    let (status, second) = s.world.app.get(&format!("{path}?limit=1&after={after}"), Some(&finance)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!((&second["until"], second["redemptions"].as_u64()), (&first["until"], Some(2)), "{second}");
    assert_eq!(second["next_after"], Value::Null);
    assert_ne!(second["merchants"][0]["merchant_id"], first["merchants"][0]["merchant_id"]);
    let mut walked =
        [first["merchants"][0]["merchant_id"].clone(), second["merchants"][0]["merchant_id"].clone()];
    walked.sort_by_key(|v| v.to_string());
    let mut expected = [json!(shops[0].id), json!(shops[1].id)];
    expected.sort_by_key(|v| v.to_string());
    assert_eq!(walked, expected);

    // Just before the bound, still that scoring; at the bound, a new one counts the redemption.
    s.world.clock.set(scored_at.plus_seconds(SCORES_FRESH_FOR_S - 1));
    let (_, still) = s.world.app.get(&path, Some(&finance)).await;
    assert_eq!((&still["until"], still["redemptions"].as_u64()), (&first["until"], Some(2)), "{still}");
    let later = scored_at.plus_seconds(SCORES_FRESH_FOR_S);
    s.world.clock.set(later);
    let (_, fresh) = s.world.app.get(&path, Some(&finance)).await;
    assert_eq!((&fresh["until"], fresh["redemptions"].as_u64()), (&json!(later), Some(3)), "{fresh}");

    // An explicit `until` scores that cut-off.
    let (_, before) =
        s.world.app.get(&format!("{path}?until={}", scored_at.plus_seconds(5)), Some(&finance)).await;
    assert_eq!(before["redemptions"].as_u64(), Some(2), "{before}");
}

/// Requests for one season at one time wait for one scoring and share it; an explicit `until`
/// is its own scoring; once SCORES_FRESH_FOR_S has passed, the season is scored again.
async fn concurrent_requests_wait_for_one_scoring(backend: Backend) {
    use std::sync::Arc;
    use wenhui::app::fraud::{SCORES_FRESH_FOR_S, ScoresCache};
    use wenhui::app::read_side::ReadSide;
    use wenhui::domain::time::Clock;
    let (s, _, _) = two_shops(backend).await;
    let store = s.world.app.server.as_ref().expect("running").store.clone();
    let clock: Arc<dyn Clock> = s.world.clock.clone();
    let cache = ScoresCache::new(ReadSide::primary_only(store.clone()), clock);
    let season_id: SeasonId = s.world.season_id.parse().expect("season id");
    let season = store.season(season_id).await.expect("read").expect("season");

    let answers = futures_util::future::join_all((0..8).map(|_| cache.scores(&season, None))).await;
    let answers: Vec<_> = answers.into_iter().map(|a| a.expect("scores")).collect();
    assert_eq!(cache.scorings_made(), 1, "eight requests, one scoring");
    assert!(answers.iter().all(|a| Arc::ptr_eq(a, &answers[0])));
    assert_eq!(answers[0].redemptions, 2);

    let cut_off = cst(1, 10, 1, 30);
    let (early, again) =
        tokio::join!(cache.scores(&season, Some(cut_off)), cache.scores(&season, Some(cut_off)));
    let (early, again) = (early.expect("scores"), again.expect("scores"));
    assert_eq!((cache.scorings_made(), early.redemptions, early.until), (2, 1, cut_off));
    assert!(Arc::ptr_eq(&early, &again));

    s.world.clock.set(s.world.clock.now().plus_seconds(SCORES_FRESH_FOR_S));
    let fresh = cache.scores(&season, None).await.expect("scores");
    assert_eq!(cache.scorings_made(), 3, "a minute later, scored again");
    assert!(!Arc::ptr_eq(&fresh, &answers[0]));
}

/// A scores answer's (merchant id, score) pairs, in its order.
fn ids_and_scores(scores: &Value) -> Vec<(String, u16)> {
    let merchants = scores["merchants"].as_array().expect("merchants");
    merchants
        .iter()
        .map(|m| {
            let score = u16::try_from(m["score"].as_u64().expect("score")).expect("0 to 100");
            (m["merchant_id"].as_str().expect("id").to_owned(), score)
        })
        .collect()
}
