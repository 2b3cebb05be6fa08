//! Seasons, batches, citizens and the claim rush, over HTTP, on both backends.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};
use wenhui::domain::citizen::synthetic_id_number;
use wenhui::domain::staff::Role;
use wenhui::domain::time::{Clock, ManualClock, Timestamp};

use crate::both_backends;
use crate::common::{Backend, TestApp, code};

pub const T0_US: i64 = 1_772_326_800_000_000; // 2026-03-01T01:00:00Z

pub fn at(offset_s: i64) -> String {
    Timestamp::from_unix_us(T0_US).plus_seconds(offset_s).to_string()
}

pub struct World {
    pub app: TestApp,
    pub clock: Arc<ManualClock>,
    pub province_admin: String,
    pub season_id: String,
    pub t0_us: i64,
}

impl World {
    /// A season open from T0 for 30 days, with the province funding `province_budget` yuan.
    pub async fn new(backend: Backend, province_budget: &str, cap: Option<&str>) -> World {
        World::new_at(backend, province_budget, cap, T0_US, json!({})).await
    }

    /// The same, with the clock starting at `t0_us` and extra season fields.
    pub async fn new_at(
        backend: Backend,
        province_budget: &str,
        cap: Option<&str>,
        t0_us: i64,
        extra: Value,
    ) -> World {
        World::configured(backend, province_budget, cap, t0_us, extra, |_| {}).await
    }

    /// The same as [`World::new`], on a database reserved for `nodes` nodes, this one and
    /// those of `app.spawn_node` (see `TestDb::for_nodes`).
    pub async fn for_nodes(backend: Backend, province_budget: &str, cap: Option<&str>, nodes: u32) -> World {
        World::build(backend, nodes, province_budget, cap, T0_US, json!({}), |_| {}).await
    }

    /// The same, with `configure` applied to the server's configuration.
    pub async fn configured(
        backend: Backend,
        province_budget: &str,
        cap: Option<&str>,
        t0_us: i64,
        extra: Value,
        configure: impl FnOnce(&mut wenhui::server::ServeConfig),
    ) -> World {
        let nodes = crate::common::DEFAULT_NODES;
        World::build(backend, nodes, province_budget, cap, t0_us, extra, configure).await
    }

    async fn build(
        backend: Backend,
        nodes: u32,
        province_budget: &str,
        cap: Option<&str>,
        t0_us: i64,
        extra: Value,
        configure: impl FnOnce(&mut wenhui::server::ServeConfig),
    ) -> World {
        let at = |offset_s: i64| Timestamp::from_unix_us(t0_us).plus_seconds(offset_s).to_string();
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_us(t0_us)));
        let manual: Arc<dyn Clock> = clock.clone();
        let app = TestApp::spawn_for_nodes(backend, nodes, |config| {
            config.clock = manual;
            configure(config);
        })
        .await;
        let province_admin = app.staff_key(Role::ProvinceAdmin, "370000").await;
        let mut body = json!({
            "name": "2026 文化消费季", "province": "370000", "starts_at": at(0), "ends_at": at(30 * 86_400),
            "budgets": [{"funder": "370000", "amount": province_budget}, {"funder": "370200", "amount": "1000.00"}],
        });
        if let Some(cap) = cap {
            body["per_citizen_cap"] = json!(cap);
        }
        for (key, value) in extra.as_object().into_iter().flatten() {
            body[key] = value.clone();
        }
        let (status, season) = app.post_idem("/v1/seasons", Some(&province_admin), "season-1", body).await;
        assert_eq!(status, 201, "{season}");
        let season_id = season["id"].as_str().expect("id").to_owned();
        World { app, clock, province_admin, season_id, t0_us }
    }

    pub fn at(&self, offset_s: i64) -> String {
        Timestamp::from_unix_us(self.t0_us).plus_seconds(offset_s).to_string()
    }

    pub async fn batch(&self, overrides: Value) -> Value {
        self.batch_as(&self.province_admin.clone(), overrides).await
    }

    pub async fn batch_as(&self, admin: &str, overrides: Value) -> Value {
        let mut body = json!({
            "name": "满40减10", "issuer": "370000", "kind": "threshold", "face_value": "10.00", "min_spend": "40.00",
            "stock": 100, "per_citizen_limit": 1, "valid_hours": 48,
            "claim_opens_at": self.at(0), "claim_closes_at": self.at(10 * 86_400), "categories": ["bookstore", "cinema"],
        });
        for (key, value) in overrides.as_object().expect("object") {
            body[key] = value.clone();
        }
        let key = uuid::Uuid::new_v4().to_string();
        let path = format!("/v1/seasons/{}/batches", self.season_id);
        let (status, batch) = self.app.post_idem(&path, Some(admin), &key, body).await;
        assert_eq!(status, 201, "{batch}");
        batch
    }

    pub async fn citizen(&self, n: u32) -> String {
        let id_number = synthetic_id_number("370202", "19900101", (n % 1000) as u16);
        let id_number = if n >= 1000 {
            synthetic_id_number(
                "370202",
                &format!("1990{:02}{:02}", 1 + (n / 1000) % 12, 1 + (n / 12_000) % 28),
                (n % 1000) as u16,
            )
        } else {
            id_number
        };
        let body = json!({"name": "张三", "id_number": id_number, "phone": format!("139{:08}", n)});
        let (status, answer) = self.app.register_citizen(body).await;
        assert_eq!(status, 201, "{answer}");
        answer["token"].as_str().expect("token").to_owned()
    }

    pub async fn claim(&self, token: &str, batch_id: &str, key: &str) -> (u16, Value) {
        self.app.post_idem(&format!("/v1/batches/{batch_id}/claims"), Some(token), key, json!({})).await
    }

    /// The season as the public read shows it, with every commit made before the call (as
    /// [`World::batch_state`]).
    pub async fn season(&self) -> Value {
        tokio::time::sleep(wenhui::app::public_reads::SOFT_REBUILD_EVERY).await;
        self.app.get(&format!("/v1/seasons/{}", self.season_id), None).await.1
    }

    /// The batch as the public list shows it, with every commit made before the call: the
    /// list rebuilds for commits at most every `SOFT_REBUILD_EVERY`, so this waits that long.
    pub async fn batch_state(&self, batch_id: &str) -> Value {
        tokio::time::sleep(wenhui::app::public_reads::SOFT_REBUILD_EVERY).await;
        let (_, list) = self.app.get(&format!("/v1/seasons/{}/batches", self.season_id), None).await;
        list.as_array().expect("array").iter().find(|b| b["id"] == batch_id).cloned().unwrap_or(Value::Null)
    }
}

pub fn funder<'a>(season: &'a Value, region: &str) -> &'a Value {
    season["funders"].as_array().expect("funders").iter().find(|f| f["funder"] == region).expect("funder")
}

both_backends!(
    ended_batches_are_listed_when_asked,
    rush_500_citizens_stock_100_no_oversell,
    one_citizen_concurrent_claims_limit_one,
    season_cap_and_budget_exceeded,
    expiry_returns_stock_and_releases_open_on_time,
    a_refused_expiry_holds_back_no_other,
    a_monthly_cap_starts_afresh_each_calendar_month,
    a_citizen_past_the_rate_gets_429_and_nothing_is_written,
    a_lottery_batch_is_entered_then_drawn_with_the_committed_seed,
    registration_validates_identity,
    seasons_and_batches_validate_input,
    the_database_refuses_claims_on_a_closed_batch,
    vouchers_and_seasons_come_a_page_at_a_time,
    many_citizens_first_pages_are_read_together_each_their_own,
    a_season_holds_at_most_max_batches,
    an_expiry_planned_before_its_batch_closed_is_refused,
    a_new_season_answers_with_its_funders_as_a_get_does,
);

/// The 201 of `POST /v1/seasons` is the season as a GET right after shows it: each funder with
/// its budget appropriated and available, listed by code whatever the order of the budgets; a
/// replay of the same key answers the same.
async fn a_new_season_answers_with_its_funders_as_a_get_does(backend: Backend) {
    let clock = Arc::new(ManualClock::new(Timestamp::from_unix_us(T0_US)));
    let app = TestApp::spawn_with_clock(backend, clock).await;
    let province_admin = app.staff_key(Role::ProvinceAdmin, "370000").await;
    let body = json!({
        "name": "2026 文化消费季", "province": "370000", "starts_at": at(0), "ends_at": at(30 * 86_400),
        "budgets": [{"funder": "370200", "amount": "1000.00"}, {"funder": "370000", "amount": "2500.50"}],
    });
    let (status, created) = app.post_idem("/v1/seasons", Some(&province_admin), "s-1", body.clone()).await;
    assert_eq!(status, 201, "{created}");
    let expected_funders = json!([
        {"funder": "370000", "appropriated": "2500.50", "reserved": "0.00", "committed": "0.00", "available": "2500.50"},
        {"funder": "370200", "appropriated": "1000.00", "reserved": "0.00", "committed": "0.00", "available": "1000.00"},
    ]);
    assert_eq!(created["funders"], expected_funders, "{created}");
    let id = created["id"].as_str().expect("id");
    let (status, read) = app.get(&format!("/v1/seasons/{id}"), None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(created["funders"], read["funders"]);
    assert_eq!(created, read, "the whole answer, not only the funders");
    let (status, replayed) = app.post_idem("/v1/seasons", Some(&province_admin), "s-1", body).await;
    assert_eq!((status, &replayed), (201, &created));
}

/// An expired voucher's value goes back to its batch's reserve while the batch is open, to the
/// pool once it has closed. Expiries planned while the batch was open and committed after its
/// close (another process's sweep, say) are refused under the ledger head; the next sweep plans
/// them again, to the pool, and the season reconciles.
async fn an_expiry_planned_before_its_batch_closed_is_refused(backend: Backend) {
    use wenhui::domain::accounts;
    use wenhui::domain::ledger::{NewEntry, NewPosting, Side};
    use wenhui::storage::{ExpiryCommit, Refusal, WriteError};
    let world = World::new(backend, "10000.00", None).await;
    let batch = world.batch(json!({"stock": 2, "valid_hours": 1, "claim_closes_at": world.at(3_600)})).await;
    let batch_id: wenhui::domain::ids::BatchId = batch["id"].as_str().expect("id").parse().expect("uuid");
    let citizen = world.citizen(1).await;
    let (status, claim) = world.claim(&citizen, &batch_id.to_string(), "c-1").await;
    assert_eq!(status, 201, "{claim}");
    let voucher_id: wenhui::domain::ids::VoucherId =
        claim["voucher"]["id"].as_str().expect("id").parse().expect("uuid");
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(2 * 3_600));
    let store = world.app.store();
    let open = store.batch(batch_id).await.expect("read").expect("batch");
    let (season_id, funder) = (open.season_id, "370000".parse().expect("region"));
    let posting = |account, side| NewPosting { account, side, amount_fen: 1_000 };
    let planned_open = ExpiryCommit {
        voucher_ids: vec![voucher_id],
        expired_at: world.clock.now(),
        batch_returns: vec![(batch_id, 1)],
        planned_reserves: vec![(batch_id, false)],
        season_totals: Vec::new(),
        entries: vec![NewEntry::new(
            "expiry",
            format!("expiry:{voucher_id}"),
            vec![
                posting(accounts::issued(season_id, batch_id, funder), Side::Debit),
                posting(accounts::reserve(season_id, batch_id, funder), Side::Credit),
            ],
        )],
        notices: Vec::new(),
    };
    let entry = wenhui::app::claims::close_entry(store, &open).await.expect("close entry");
    store.close_batch_reserve(batch_id, world.clock.now(), entry.as_ref()).await.expect("closed");
    let refused = store.commit_expiries(&planned_open).await;
    assert!(
        matches!(&refused, Err(WriteError::Refused(Refusal::Changed(what))) if what.contains("closed while")),
        "{refused:?}"
    );
    assert_eq!(world.app.sweep().await.expired, 1, "planned again, to the pool");
    let season = store.season(season_id).await.expect("read").expect("season");
    let reconciled =
        wenhui::app::finance::reconcile(store, &season, world.clock.now()).await.expect("reconcile");
    assert!(reconciled.ok, "{:?}", reconciled.checks.iter().filter(|c| c.breaks > 0).collect::<Vec<_>>());
}

/// The public list of a season's open batches is one unpaged answer, so a season's batches are
/// bounded: the one past `MAX_BATCHES_PER_SEASON` is 409 `too_many_batches`, and writes nothing.
async fn a_season_holds_at_most_max_batches(backend: Backend) {
    use wenhui::domain::season::MAX_BATCHES_PER_SEASON;
    let world = World::new(backend, "100000.00", None).await;
    for _ in 0..MAX_BATCHES_PER_SEASON {
        world.batch(json!({"stock": 1})).await;
    }
    let head = world.app.store().ledger_head().await.expect("head").seq;
    let path = format!("/v1/seasons/{}/batches", world.season_id);
    let (_, listed) = world.app.get(&path, None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(MAX_BATCHES_PER_SEASON));
    let one_more = json!({"name": "one more", "issuer": "370000", "kind": "threshold", "face_value": "10.00",
        "min_spend": "40.00", "stock": 1, "per_citizen_limit": 1, "valid_hours": 48,
        "claim_opens_at": world.at(0), "claim_closes_at": world.at(86_400), "categories": ["bookstore"]});
    let (status, answer) =
        world.app.post_idem(&path, Some(&world.province_admin), "one-more", one_more).await;
    assert_eq!((status, code(&answer)), (409, "too_many_batches"), "{answer}");
    assert_eq!(world.app.store().ledger_head().await.expect("head").seq, head, "nothing reserved");
}

/// Walks a listing's pages (`limit` each) and returns every row's id, in order.
async fn walk_pages(app: &TestApp, path: &str, field: &str, limit: u32, token: Option<&str>) -> Vec<String> {
    let (mut ids, mut after) = (Vec::new(), None::<String>);
    loop {
        let cursor = after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
        let (status, page) = app.get(&format!("{path}?limit={limit}{cursor}"), token).await;
        assert_eq!(status, 200, "{page}");
        let rows = page[field].as_array().expect("rows");
        assert!(rows.len() <= limit as usize && !rows.is_empty(), "{page}");
        ids.extend(rows.iter().map(|r| r["id"].as_str().expect("id").to_owned()));
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return ids,
        }
    }
}

/// A citizen's vouchers and the seasons are listed newest first, a page at a time: every row
/// once, in order across pages (ties on the claim time broken by id); bad limits and cursors
/// (another citizen's voucher) are refused with 422.
async fn vouchers_and_seasons_come_a_page_at_a_time(backend: Backend) {
    let world = World::new(backend, "10000.00", None).await;
    let batch = world.batch(json!({"stock": 10, "per_citizen_limit": 4})).await;
    let id = batch["id"].as_str().expect("id");
    let (first, second) = (world.citizen(1).await, world.citizen(2).await);
    for key in ["a", "b", "c"] {
        assert_eq!(world.claim(&first, id, key).await.0, 201);
    }
    world.clock.set(Timestamp::from_unix_us(world.t0_us).plus_seconds(60));
    assert_eq!(world.claim(&first, id, "d").await.0, 201);
    let (status, others) = world.claim(&second, id, "e").await;
    assert_eq!(status, 201, "{others}");

    let (_, all) = world.app.get("/v1/me/vouchers", Some(&first)).await;
    let all_ids: Vec<&str> =
        all["vouchers"].as_array().expect("vouchers").iter().filter_map(|v| v["id"].as_str()).collect();
    assert_eq!((all_ids.len(), &all["next_after"]), (4, &Value::Null), "{all}");
    for limit in [1, 2, 3] {
        let paged = walk_pages(&world.app, "/v1/me/vouchers", "vouchers", limit, Some(&first)).await;
        assert_eq!(paged, all_ids, "pages of {limit}");
    }
    let (_, newest) = world.app.get("/v1/me/vouchers?limit=1", Some(&first)).await;
    assert_eq!(newest["vouchers"][0]["claimed_at"], world.at(60), "newest first: {newest}");
    let others_voucher = others["voucher"]["id"].as_str().expect("id");
    for query in
        ["limit=0", "limit=201", &format!("after={others_voucher}"), &format!("after={}", uuid::Uuid::nil())]
    {
        let (status, refused) = world.app.get(&format!("/v1/me/vouchers?{query}"), Some(&first)).await;
        assert_eq!(status, 422, "{query}: {refused}");
        assert!(["invalid_limit", "invalid_cursor"].contains(&code(&refused)), "{refused}");
    }

    for (n, starts_s) in [(2, 86_400), (3, 2 * 86_400), (4, 86_400)] {
        let body = json!({
            "name": format!("季 {n}"), "province": "370000", "starts_at": world.at(starts_s), "ends_at": world.at(40 * 86_400),
            "budgets": [{"funder": "370000", "amount": "100.00"}],
        });
        let key = format!("season-{n}");
        let (status, season) =
            world.app.post_idem("/v1/seasons", Some(&world.province_admin), &key, body).await;
        assert_eq!(status, 201, "{season}");
    }
    let (_, all) = world.app.get("/v1/seasons", None).await;
    let seasons = all["seasons"].as_array().expect("seasons");
    let starts: Vec<&str> = seasons.iter().filter_map(|s| s["starts_at"].as_str()).collect();
    let expected = [world.at(2 * 86_400), world.at(86_400), world.at(86_400), world.at(0)];
    assert_eq!(starts, expected, "latest start first");
    let all_ids: Vec<&str> = seasons.iter().filter_map(|s| s["id"].as_str()).collect();
    for limit in [1, 3] {
        assert_eq!(
            walk_pages(&world.app, "/v1/seasons", "seasons", limit, None).await,
            all_ids,
            "pages of {limit}"
        );
    }
    let (status, refused) = world.app.get(&format!("/v1/seasons?after={}", uuid::Uuid::nil()), None).await;
    assert_eq!((status, code(&refused)), (422, "invalid_cursor"));
    let (status, refused) = world.app.get("/v1/seasons?limit=101", None).await;
    assert_eq!((status, code(&refused)), (422, "invalid_limit"));
}

/// The storage's read behind the coalesced first page of "my vouchers": one page per pair asked,
/// in the order asked, each newest first and cut to its own limit (a citizen asked twice with
/// two limits gets two pages), nobody else's vouchers, and an empty page for a citizen with none.
async fn many_citizens_first_pages_are_read_together_each_their_own(backend: Backend) {
    use wenhui::domain::ids::{CitizenId, VoucherId};
    let world = World::new(backend, "10000.00", None).await;
    let batch = world.batch(json!({"stock": 10, "per_citizen_limit": 4})).await;
    let id = batch["id"].as_str().expect("id");
    let (first, second) = (world.citizen(1).await, world.citizen(2).await);
    let mut firsts = Vec::new();
    for (n, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
        world.clock.set(Timestamp::from_unix_us(world.t0_us).plus_seconds(60 * n as i64));
        let (status, claimed) = world.claim(&first, id, key).await;
        assert_eq!(status, 201, "{claimed}");
        firsts.push(claimed["voucher"]["id"].as_str().expect("id").parse::<VoucherId>().expect("uuid"));
    }
    let (status, claimed) = world.claim(&second, id, "e").await;
    assert_eq!(status, 201, "{claimed}");
    let seconds_voucher: VoucherId = claimed["voucher"]["id"].as_str().expect("id").parse().expect("uuid");
    let store = world.app.store();
    let holder =
        |voucher| async move { store.voucher(voucher).await.expect("read").expect("voucher").citizen_id };
    let (first_id, second_id) = (holder(firsts[0]).await, holder(seconds_voucher).await);
    let nobody = CitizenId::new_v7();
    let asked = [(first_id, 2), (second_id, 5), (nobody, 5), (first_id, 10)];
    let pages = store.first_voucher_pages(&asked).await.expect("pages");
    let ids = |page: &Vec<wenhui::domain::season::Voucher>| page.iter().map(|v| v.id).collect::<Vec<_>>();
    let newest_first: Vec<VoucherId> = firsts.iter().rev().copied().collect();
    assert_eq!(pages.len(), 4);
    assert_eq!(ids(&pages[0]), newest_first[..2].to_vec(), "cut to its limit, newest first");
    assert_eq!(ids(&pages[1]), vec![seconds_voucher], "only the second citizen's own");
    assert!(pages[2].is_empty(), "a citizen with no voucher");
    assert_eq!(ids(&pages[3]), newest_first, "the same citizen again, with its own limit");
}

/// Defence in depth below the claim writer: once a batch's reserve has gone back (its claim
/// window closed, or the season closed), the claim transaction itself refuses its vouchers.
async fn the_database_refuses_claims_on_a_closed_batch(backend: Backend) {
    use wenhui::domain::season::{Voucher, VoucherStatus};
    use wenhui::storage::{ClaimCommit, Refusal, WriteError};
    let world = World::new(backend, "100000.00", None).await;
    let batch = world.batch(json!({"stock": 10})).await;
    let batch_id: wenhui::domain::ids::BatchId = batch["id"].as_str().expect("id").parse().expect("uuid");
    let store = world.app.store();
    let stored = store.batch(batch_id).await.expect("read").expect("batch");
    let now = Timestamp::from_unix_us(world.t0_us);
    let claim = |id| ClaimCommit {
        vouchers: vec![Voucher {
            id,
            batch_id,
            season_id: stored.season_id,
            citizen_id: wenhui::domain::ids::CitizenId::new_v7(),
            slot: 1,
            status: VoucherStatus::Active,
            value: stored.voucher_value(),
            claimed_at: now,
            expires_at: now.plus_seconds(3_600),
        }],
        batch_claims: vec![(batch_id, 1, stored.stock)],
        ..ClaimCommit::default()
    };
    store
        .commit_claims(&claim(wenhui::domain::ids::VoucherId::new_v7()))
        .await
        .expect("an open batch takes the claim");
    // A close planned from nothing left is refused: the reserve still holds the unclaimed stock.
    let refused = store.close_batch_reserve(batch_id, now, None).await;
    assert!(matches!(refused, Err(WriteError::Refused(Refusal::Changed(_)))), "{refused:?}");
    let stored = store.batch(batch_id).await.expect("read").expect("batch");
    let entry = wenhui::app::claims::close_entry(store, &stored).await.expect("the close's entry");
    store.close_batch_reserve(batch_id, now, entry.as_ref()).await.expect("close the reserve");
    let refused = store.commit_claims(&claim(wenhui::domain::ids::VoucherId::new_v7())).await;
    assert!(matches!(refused, Err(WriteError::Refused(Refusal::Changed(_)))), "{refused:?}");
    let after = store.batch(batch_id).await.expect("read").expect("batch");
    assert_eq!(after.claimed_count, 1, "the refused claim wrote nothing");
}

async fn rush_500_citizens_stock_100_no_oversell(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let batch = world.batch(json!({"stock": 100})).await;
    let batch_id = batch["id"].as_str().expect("id").to_owned();
    let season = world.season().await;
    assert_eq!(funder(&season, "370000")["reserved"], "1000.00");
    assert_eq!(funder(&season, "370000")["available"], "99000.00");
    let mut tokens = Vec::new();
    for n in 0..500 {
        tokens.push(world.citizen(n).await);
    }
    let world = Arc::new(world);
    let mut tasks = Vec::new();
    for token in tokens {
        let world = world.clone();
        let batch_id = batch_id.clone();
        tasks.push(tokio::spawn(async move {
            let (status, body) = world.claim(&token, &batch_id, &uuid::Uuid::new_v4().to_string()).await;
            (token, status, body)
        }));
    }
    let (mut created, mut sold_out, mut voucher_ids) = (0, 0, HashSet::new());
    let mut holders = Vec::new();
    for task in tasks {
        let (token, status, body) = task.await.expect("join");
        let held = body["voucher"]["id"].as_str().map(str::to_owned);
        holders.push((token, held));
        match (status, code(&body)) {
            (201, _) => {
                created += 1;
                voucher_ids.insert(body["voucher"]["id"].as_str().expect("id").to_owned());
                assert_eq!(body["voucher"]["status"], "active");
                assert_eq!(body["voucher"]["face_value"], "10.00");
            }
            (409, "sold_out") => sold_out += 1,
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }
    assert_eq!((created, sold_out, voucher_ids.len()), (100, 400, 100));
    assert_eq!(world.batch_state(&batch_id).await["remaining"], 0);
    let season = world.season().await;
    let province = funder(&season, "370000");
    assert_eq!(province["appropriated"], "100000.00");
    assert_eq!(province["reserved"], "0.00");
    assert_eq!(province["committed"], "1000.00");
    assert_eq!(province["available"], "99000.00");
    wenhui::app::audit::verify_store(world.app.store()).await.expect("ledger verifies");
    everyone_sees_only_their_own_voucher(&world, holders).await;
}

/// All of them open "my vouchers" at once (many citizens' first pages are read together): each
/// sees the one voucher their claim answered, or none.
async fn everyone_sees_only_their_own_voucher(world: &Arc<World>, holders: Vec<(String, Option<String>)>) {
    let reads: Vec<_> = holders
        .into_iter()
        .map(|(token, held)| {
            let world = world.clone();
            tokio::spawn(async move { (held, world.app.get("/v1/me/vouchers", Some(&token)).await) })
        })
        .collect();
    for read in reads {
        let (held, (status, page)) = read.await.expect("join");
        assert_eq!(status, 200, "{page}");
        let seen: Vec<String> = page["vouchers"]
            .as_array()
            .expect("vouchers")
            .iter()
            .filter_map(|v| v["id"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(seen, held.into_iter().collect::<Vec<_>>(), "{page}");
    }
}

async fn one_citizen_concurrent_claims_limit_one(backend: Backend) {
    let world = Arc::new(World::new(backend, "100000.00", None).await);
    let batch = world.batch(json!({"stock": 50})).await;
    let batch_id = batch["id"].as_str().expect("id").to_owned();
    let token = world.citizen(1).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (world, token, batch_id) = (world.clone(), token.clone(), batch_id.clone());
        tasks.push(tokio::spawn(
            async move { world.claim(&token, &batch_id, &format!("different-{i}")).await },
        ));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("join"));
    }
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let limited = answers.iter().filter(|(s, b)| *s == 409 && code(b) == "limit_reached").count();
    assert_eq!((created, limited), (1, 19));

    let other = world.citizen(2).await;
    let mut tasks = Vec::new();
    // 19 and the one below: the citizen's burst of claim requests (`CLAIM_BURST`, 20).
    for _ in 0..19 {
        let (world, token, batch_id) = (world.clone(), other.clone(), batch_id.clone());
        tasks.push(tokio::spawn(async move { world.claim(&token, &batch_id, "the-same-key").await }));
    }
    let mut bodies = HashSet::new();
    for task in tasks {
        let (status, body) = task.await.expect("join");
        assert_eq!(status, 201, "{body}");
        bodies.insert(body.to_string());
    }
    assert_eq!(bodies.len(), 1, "19 identical answers");
    let (status, vouchers) = world.app.get("/v1/me/vouchers", Some(&other)).await;
    assert_eq!(status, 200);
    assert_eq!(vouchers["vouchers"].as_array().expect("list").len(), 1, "one voucher");
    let path = format!("/v1/batches/{batch_id}/claims");
    let (status, body) = world.app.post_idem(&path, Some(&other), "the-same-key", json!({"x": 1})).await;
    assert_eq!(status, 422, "another body under the same key: {body}");
    let response = world
        .app
        .client
        .post(world.app.url(&path))
        .bearer_auth(&other)
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    let (status, body) = crate::common::read(response).await;
    assert_eq!((status, code(&body)), (400, "missing_idempotency_key"));
    assert_eq!(world.batch_state(&batch_id).await["remaining"], 48);
    wenhui::app::audit::verify_store(world.app.store()).await.expect("ledger verifies");
}

async fn season_cap_and_budget_exceeded(backend: Backend) {
    let world = World::new(backend, "1000.00", Some("25.00")).await;
    let a = world.batch(json!({"stock": 10, "face_value": "10.00", "per_citizen_limit": 5})).await;
    let b = world.batch(json!({"stock": 10, "face_value": "10.00", "name": "second"})).await;
    let token = world.citizen(7).await;
    let (a, b) = (a["id"].as_str().expect("id"), b["id"].as_str().expect("id"));
    assert_eq!(world.claim(&token, a, "k1").await.0, 201);
    assert_eq!(world.claim(&token, a, "k2").await.0, 201);
    let (status, body) = world.claim(&token, b, "k3").await;
    assert_eq!((status, code(&body)), (409, "limit_reached"), "cap of 25 across batches: {body}");
    // 200 of 1000 yuan is reserved; a batch needing 900 more is refused with nothing written.
    let key = "too-big";
    let body = json!({
        "name": "too big", "issuer": "370000", "kind": "threshold", "face_value": "30.00", "min_spend": "100.00",
        "stock": 30, "per_citizen_limit": 1, "valid_hours": 48, "claim_opens_at": at(0),
        "claim_closes_at": at(86_400), "categories": ["ktv"],
    });
    let path = format!("/v1/seasons/{}/batches", world.season_id);
    let (status, answer) = world.app.post_idem(&path, Some(&world.province_admin), key, body).await;
    assert_eq!((status, code(&answer)), (409, "budget_exceeded"), "{answer}");
    let season = world.season().await;
    assert_eq!(funder(&season, "370000")["available"], "800.00");
    assert_eq!(funder(&season, "370000")["reserved"], "180.00");
    assert_eq!(funder(&season, "370000")["committed"], "20.00");
    let (_, batches) = world.app.get(&path, None).await;
    assert_eq!(batches.as_array().expect("list").len(), 2, "the refused batch was not written");
    // Expired vouchers no longer count against the cap: the sweeper lowers the citizen's season
    // total (an UPDATE: as an upsert, its negative row broke the table's CHECK).
    world.clock.advance_us(49 * 3_600 * 1_000_000);
    assert_eq!(world.app.sweep().await.expired, 2);
    let (status, body) = world.claim(&token, b, "k4").await;
    assert_eq!(status, 201, "the cap counts live vouchers only: {body}");
}

/// A lottery batch (Beijing 2021, 摇号): citizens enter during the window, once each; claims
/// are refused; after the window the issuer draws with the seed it committed to, and the stock
/// goes to the entries with the lowest SHA-256(seed || HMAC-SHA256(salt, citizen id)), which the
/// test recomputes, skipping one a per-person cap refuses.
async fn a_lottery_batch_is_entered_then_drawn_with_the_committed_seed(backend: Backend) {
    // A season cap of one voucher's worth: a winner who holds a voucher already is skipped.
    let world = World::new(backend, "100000.00", Some("10.00")).await;
    let rush = world.batch(json!({})).await;
    let seed = "2026-03-01 draw of the Shandong culture season";
    let sha = |bytes: &[u8]| ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec();
    let hex: String = sha(seed.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let lottery = json!({"stock": 3, "per_citizen_limit": 1, "claim_closes_at": at(3_600), "lottery": {"seed_sha256": hex}});
    let path = format!("/v1/seasons/{}/batches", world.season_id);
    for (bad, n) in [(json!({"per_citizen_limit": 2}), 1), (json!({"lottery": {"seed_sha256": "+f"}}), 2)] {
        let mut body = json!({"name": "摇号", "issuer": "370000", "kind": "threshold", "face_value": "10.00",
            "min_spend": "40.00", "stock": 3, "per_citizen_limit": 1, "valid_hours": 48, "claim_opens_at": at(0),
            "claim_closes_at": at(3_600), "categories": ["bookstore"], "lottery": {"seed_sha256": hex}});
        for (field, value) in bad.as_object().expect("object") {
            body[field] = value.clone();
        }
        let (status, refused) =
            world.app.post_idem(&path, Some(&world.province_admin), &format!("bad-{n}"), body).await;
        assert_eq!((status, code(&refused)), (422, "invalid_lottery"), "{refused}");
    }
    let batch = world.batch(lottery.clone()).await;
    let id = batch["id"].as_str().expect("id").to_owned();
    let undrawn = world.batch(lottery.clone()).await;
    // A draw of several groups (the writer issues 1,000 winners a turn): 3,000 entries written
    // straight into the table, 2,500 vouchers.
    let mut big = lottery.clone();
    big["stock"] = json!(2_500);
    let big = world.batch(big).await;
    let big_id: uuid::Uuid = big["id"].as_str().expect("id").parse().expect("uuid");
    // And one drawn by two twin requests at once (the same key).
    let mut twin = lottery;
    twin["stock"] = json!(2);
    let twin_id = world.batch(twin).await["id"].as_str().expect("id").to_owned();
    let entries_sql = |batch: &str, count: u32| {
        let batch: uuid::Uuid = batch.parse().expect("uuid");
        match world.app.db.backend {
            Backend::Sqlite => format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
                 INSERT INTO lottery_entries (batch_id, citizen_id, entered_at_us) SELECT X'{}', randomblob(16), 0 FROM n",
                batch.simple()
            ),
            Backend::Postgres => format!(
                "INSERT INTO lottery_entries (batch_id, citizen_id, entered_at_us) SELECT '{batch}'::uuid, gen_random_uuid(), 0 FROM generate_series(1, {count})"
            ),
        }
    };
    assert_eq!(world.app.db.raw(&entries_sql(&big_id.to_string(), 3_000)).await, Ok(3_000));
    assert_eq!(world.app.db.raw(&entries_sql(&twin_id, 3)).await, Ok(3));
    assert_eq!(
        (batch["lottery"]["seed_sha256"].as_str(), &batch["lottery"]["drawn_at"]),
        (Some(hex.as_str()), &Value::Null)
    );

    let mut entrants = Vec::new();
    for n in 0..6u32 {
        let body = json!({"name": "李四", "id_number": synthetic_id_number("370202", "19910101", 500 + n as u16),
            "phone": format!("138{:08}", n)});
        let (status, registered) = world.app.register_citizen(body).await;
        assert_eq!(status, 201, "{registered}");
        let citizen: uuid::Uuid = registered["citizen_id"].as_str().expect("id").parse().expect("uuid");
        let token = registered["token"].as_str().expect("token").to_owned();
        let entries = format!("/v1/batches/{id}/entries");
        let (status, entered) = world.app.post(&entries, Some(&token), json!({})).await;
        assert_eq!(status, 200, "{entered}");
        let (_, again) = world.app.post(&entries, Some(&token), json!({})).await;
        assert_eq!(again, entered, "entering again answers the same");
        entrants.push((citizen, token));
    }
    let (status, refused) = world.claim(&entrants[0].1, &id, "a-claim").await;
    assert_eq!((status, code(&refused)), (409, "lottery_batch"), "{refused}");
    // The draw order, recomputed here with the batch's salt (secret until the draw; read from
    // the store): SHA-256(seed || HMAC-SHA256(salt, citizen id as text)), lowest first. The
    // first in it claims a voucher in the rush, which fills their season cap.
    let batch_id: wenhui::domain::ids::BatchId = id.parse().expect("uuid");
    let stored = wenhui::storage::SeasonStore::batch(world.app.store(), batch_id).await.expect("read");
    let salt = stored.and_then(|b| b.lottery).expect("a lottery").salt.0;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt);
    let mut ranked: Vec<(Vec<u8>, uuid::Uuid)> = entrants
        .iter()
        .map(|(citizen, _)| {
            let entrant = ring::hmac::sign(&key, citizen.hyphenated().to_string().as_bytes());
            (sha(&[seed.as_bytes(), entrant.as_ref()].concat()), *citizen)
        })
        .collect();
    ranked.sort();
    let first = entrants.iter().find(|(c, _)| *c == ranked[0].1).expect("entrant");
    assert_eq!(world.claim(&first.1, rush["id"].as_str().expect("id"), "rush").await.0, 201);
    let draw = format!("/v1/batches/{id}/draw");
    let (status, early) =
        world.app.post_idem(&draw, Some(&world.province_admin), "early", json!({"seed": seed})).await;
    assert_eq!((status, code(&early)), (409, "draw_too_early"), "{early}");

    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(3_600));
    let late = world.app.post(&format!("/v1/batches/{id}/entries"), Some(&entrants[0].1), json!({})).await;
    assert_eq!((late.0, code(&late.1)), (409, "not_open"), "{}", late.1);
    let (status, wrong) =
        world.app.post_idem(&draw, Some(&world.province_admin), "wrong", json!({"seed": "a guess"})).await;
    assert_eq!((status, code(&wrong)), (422, "seed_mismatch"), "{wrong}");
    // Stored as text with the draw: a NUL is refused on both backends, not a 500 on PostgreSQL.
    let nul_seed = json!({"seed": "seed\u{0}"});
    let (status, refused) =
        world.app.post_idem(&draw, Some(&world.province_admin), "nul-seed", nul_seed).await;
    assert_eq!((status, code(&refused)), (422, "invalid_seed"), "{refused}");
    let (status, drawn) =
        world.app.post_idem(&draw, Some(&world.province_admin), "draw", json!({"seed": seed})).await;
    assert_eq!(status, 200, "{drawn}");
    assert_eq!(
        (drawn["entries"].as_u64(), drawn["issued"].as_u64(), drawn["seed"].as_str()),
        (Some(6), Some(3), Some(seed))
    );

    // The winners: the next three in draw order after the capped first.
    let winners: HashSet<uuid::Uuid> = ranked[1..4].iter().map(|(_, c)| *c).collect();
    for (citizen, token) in &entrants {
        let (_, mine) = world.app.get("/v1/me/vouchers", Some(token)).await;
        let held = mine["vouchers"]
            .as_array()
            .expect("vouchers")
            .iter()
            .filter(|v| v["batch_id"] == id.as_str())
            .count();
        assert_eq!(held, usize::from(winners.contains(citizen)), "citizen {citizen}: {mine}");
    }
    let big_draw = format!("/v1/batches/{big_id}/draw");
    let (status, drawn_big) =
        world.app.post_idem(&big_draw, Some(&world.province_admin), "big", json!({"seed": seed})).await;
    assert_eq!(
        (status, drawn_big["entries"].as_u64(), drawn_big["issued"].as_u64()),
        (200, Some(3_000), Some(2_500)),
        "{drawn_big}"
    );
    let issued_sql = format!(
        "UPDATE vouchers SET status = status WHERE {}",
        world.app.db.uuid_equals("batch_id", &big_id.to_string())
    );
    assert_eq!(world.app.db.raw(&issued_sql).await, Ok(2_500));
    let twin_draw = format!("/v1/batches/{twin_id}/draw");
    let (first, second) = tokio::join!(
        world.app.post_idem(&twin_draw, Some(&world.province_admin), "twin", json!({"seed": seed})),
        world.app.post_idem(&twin_draw, Some(&world.province_admin), "twin", json!({"seed": seed}))
    );
    assert_eq!((first.0, second.0), (200, 200), "{first:?} {second:?}");
    assert_eq!(first.1, second.1, "twins get one answer");
    assert_eq!(first.1["issued"].as_u64(), Some(2), "the whole stock, once: {}", first.1);
    // An auditor reads the entrants a page at a time (all an outside check of the draw needs,
    // with the seed); a city's staff cannot read a provincial batch's.
    let auditor = world.app.staff_key(Role::Auditor, "370000").await;
    let (mut listed, mut after) = (Vec::new(), String::new());
    loop {
        let (status, page) =
            world.app.get(&format!("/v1/batches/{id}/entries?limit=4{after}"), Some(&auditor)).await;
        assert_eq!(status, 200, "{page}");
        let ids = page["entries"].as_array().expect("entries").iter();
        listed.extend(ids.map(|e| e.as_str().expect("id").parse::<uuid::Uuid>().expect("uuid")));
        match page["next_after"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    let mut expected: Vec<uuid::Uuid> = entrants.iter().map(|(c, _)| *c).collect();
    expected.sort();
    assert_eq!(listed, expected, "every entrant once, by id");
    let jinan = world.app.staff_key(Role::Finance, "370100").await;
    assert_eq!(world.app.get(&format!("/v1/batches/{id}/entries"), Some(&jinan)).await.0, 403);
    let (status, replayed) =
        world.app.post_idem(&draw, Some(&world.province_admin), "draw", json!({"seed": seed})).await;
    assert_eq!((status, &replayed), (200, &drawn), "a retry gets the first answer");
    let (status, twice) =
        world.app.post_idem(&draw, Some(&world.province_admin), "again", json!({"seed": seed})).await;
    assert_eq!((status, code(&twice)), (409, "already_drawn"), "{twice}");
    assert_eq!(
        world.app.sweep().await.batches_closed,
        3,
        "drawn, the batches close; the undrawn one stays open"
    );
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(31 * 86_400));
    let late_draw = format!("/v1/batches/{}/draw", undrawn["id"].as_str().expect("id"));
    let (status, refused) =
        world.app.post_idem(&late_draw, Some(&world.province_admin), "late", json!({"seed": seed})).await;
    assert_eq!((status, code(&refused)), (409, "season_closed"), "after the season's end: {refused}");
    wenhui::app::audit::verify_store(world.app.store()).await.expect("ledger verifies");
    let season_id: wenhui::domain::ids::SeasonId = world.season_id.parse().expect("uuid");
    let season = world.app.store().season(season_id).await.expect("read").expect("season");
    let reconciled = wenhui::app::finance::reconcile(world.app.store(), &season, world.clock.now())
        .await
        .expect("reconcile");
    assert!(reconciled.ok, "{:?}", reconciled.checks.iter().filter(|c| !c.ok).collect::<Vec<_>>());
}

/// One account hammering the claim path (a bot behind a real name) gets its burst, then 429
/// `rate_limited` with `Retry-After`; nothing is stored for a refused request, so the same key
/// sent again later gets a real answer. Other citizens are unaffected; QR codes have their own.
async fn a_citizen_past_the_rate_gets_429_and_nothing_is_written(backend: Backend) {
    use wenhui::http::rate_limit::{CLAIM_BURST, QR_BURST};
    let world = World::new(backend, "10000.00", None).await;
    let batch = world.batch(json!({"stock": 50})).await;
    let id = batch["id"].as_str().expect("id");
    let bot = world.citizen(1).await;
    let post = |key: String| {
        let request = world.app.client.post(world.app.url(&format!("/v1/batches/{id}/claims")));
        request.bearer_auth(&bot).header("idempotency-key", key).json(&json!({})).send()
    };
    let mut statuses = Vec::new();
    let mut limited = None;
    for n in 0..CLAIM_BURST + 10 {
        let response = post(format!("bot-{n}")).await.expect("send");
        if response.status() == 429 {
            let retry_after =
                response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let (_, body) = crate::common::read(response).await;
            limited = Some((n, retry_after, body));
            break;
        }
        statuses.push(response.status().as_u16());
    }
    let (n, retry_after, body) = limited.expect("the bot is limited");
    assert!(statuses.len() >= CLAIM_BURST as usize, "the burst first: {statuses:?}");
    assert_eq!(statuses[0], 201);
    assert!(statuses[1..].iter().all(|s| *s == 409), "the per-person limit: {statuses:?}");
    assert_eq!(code(&body), "rate_limited", "{body}");
    let wait_s: u64 = retry_after.as_deref().and_then(|s| s.parse().ok()).expect("Retry-After in seconds");
    assert!((1..=2).contains(&wait_s), "{wait_s}");
    assert_eq!(
        world.claim(&world.citizen(2).await, id, "someone-else").await.0,
        201,
        "others are not limited"
    );
    tokio::time::sleep(std::time::Duration::from_secs(wait_s)).await;
    let (status, again) = crate::common::read(post(format!("bot-{n}")).await.expect("send")).await;
    assert_eq!((status, code(&again)), (409, "limit_reached"), "a real answer for the refused key: {again}");

    let (_, mine) = world.app.get("/v1/me/vouchers", Some(&bot)).await;
    let voucher = mine["vouchers"][0]["id"].as_str().expect("id").to_owned();
    let mut qr_statuses = Vec::new();
    for _ in 0..QR_BURST + 5 {
        let (status, _) = world.app.post(&format!("/v1/vouchers/{voucher}/qr"), Some(&bot), json!({})).await;
        qr_statuses.push(status);
    }
    assert!(qr_statuses[..QR_BURST as usize].iter().all(|s| *s == 200), "{qr_statuses:?}");
    assert_eq!(qr_statuses.last(), Some(&429), "{qr_statuses:?}");
}

/// A season's monthly cap (Wuhan: at most 100 yuan a month) counts the face value of a
/// citizen's live vouchers claimed in the calendar month in China Standard Time: the next claim
/// past it is refused until midnight CST, expiry gives it back, and reconciliation checks each
/// month's counter against the vouchers, with the month computed in SQL.
async fn a_monthly_cap_starts_afresh_each_calendar_month(backend: Backend) {
    let t0 = Timestamp::parse_rfc3339("2026-03-31T15:00:00Z").expect("t0"); // 23:00 in CST
    let extra = json!({"per_citizen_monthly_cap": "20.00", "ends_at": Timestamp::from_unix_us(t0.unix_us()).plus_seconds(30 * 86_400).to_string()});
    let world = World::new_at(backend, "1000.00", Some("50.00"), t0.unix_us(), extra).await;
    assert_eq!(world.season().await["per_citizen_monthly_cap"], "20.00");
    let batch = world.batch(json!({"stock": 20, "face_value": "10.00", "per_citizen_limit": 6})).await;
    let id = batch["id"].as_str().expect("id");
    let token = world.citizen(1).await;
    let claim = |key: &'static str| world.claim(&token, id, key);
    assert_eq!((claim("m1").await.0, claim("m2").await.0), (201, 201));
    let (status, refused) = claim("m3").await;
    assert_eq!((status, code(&refused)), (409, "limit_reached"), "{refused}");
    assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains("a month")), "{refused}");

    world.clock.set(t0.plus_seconds(3_600)); // 2026-04-01 00:00 in CST
    assert_eq!((claim("m4").await.0, claim("m5").await.0), (201, 201), "April starts afresh");
    assert_eq!(claim("m6").await.0, 409);
    let season_id: wenhui::domain::ids::SeasonId = world.season_id.parse().expect("uuid");
    let breaks = || async {
        let store = world.app.store();
        let season = store.season(season_id).await.expect("read").expect("season");
        let result =
            wenhui::app::finance::reconcile(store, &season, world.clock.now()).await.expect("reconcile");
        let check = result.checks.iter().find(|c| c.name == "citizen_month_total_disagrees").expect("check");
        (check.breaks, result.ok)
    };
    assert_eq!(breaks().await, (0, true), "the counters of March and April agree with the vouchers");

    // Expired (valid 48 hours), the vouchers give both months back; April's cap allows 20 again.
    world.clock.set(t0.plus_seconds(50 * 3_600));
    assert_eq!(world.app.sweep().await.expired, 4);
    assert_eq!((claim("m7").await.0, claim("m8").await.0), (201, 201));
    assert_eq!(claim("m9").await.0, 409);
    assert_eq!(breaks().await, (0, true));
    let tamper = "UPDATE citizen_season_totals SET claimed_fen = 500 WHERE period = 202603";
    assert_eq!(world.app.db.raw(tamper).await, Ok(1));
    assert_eq!(breaks().await, (1, false), "a month's counter without vouchers behind it");
}

/// A voucher whose expiry the database refuses (here: its holder's season total was lowered
/// behind the service's back, so the decrement breaks the CHECK) is skipped: the sweeper
/// expires the other due vouchers and closes the batch's reserve, and expires it once mended.
async fn a_refused_expiry_holds_back_no_other(backend: Backend) {
    let world = World::new(backend, "1000.00", Some("100.00")).await;
    let batch = world.batch(json!({"stock": 10, "valid_hours": 4, "claim_closes_at": at(2 * 3600)})).await;
    let id = batch["id"].as_str().expect("id");
    let (first, second) = (world.citizen(1).await, world.citizen(2).await);
    assert_eq!(world.claim(&first, id, "a").await.0, 201);
    assert_eq!(world.claim(&second, id, "b").await.0, 201);
    let (_, mine) = world.app.get("/v1/me/vouchers", Some(&first)).await;
    let poisoned = mine["vouchers"][0]["id"].as_str().expect("id").to_owned();
    let lower = format!(
        "UPDATE citizen_season_totals SET claimed_fen = 0 WHERE citizen_id = \
         (SELECT citizen_id FROM vouchers WHERE {})",
        world.app.db.uuid_equals("id", &poisoned)
    );
    assert_eq!(world.app.db.raw(&lower).await, Ok(1));
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(5 * 3600));
    let report = world.app.sweep().await;
    assert_eq!((report.expired, report.batches_closed), (1, 1), "the other voucher, and the batch");
    // (The API shows a voucher past its expiry as expired; the rows say what the sweeper did.)
    let still_active = "UPDATE vouchers SET status = status WHERE status = 'active'";
    assert_eq!(world.app.db.raw(still_active).await, Ok(1), "the refused one");
    let mend = lower.replace("claimed_fen = 0", "claimed_fen = 1000");
    assert_eq!(world.app.db.raw(&mend).await, Ok(1));
    assert_eq!(world.app.sweep().await.expired, 1, "mended, it expires");
    assert_eq!(world.app.db.raw(still_active).await, Ok(0));
    wenhui::app::audit::verify_store(world.app.store()).await.expect("ledger verifies");
}

async fn expiry_returns_stock_and_releases_open_on_time(backend: Backend) {
    let world = World::new(backend, "10000.00", None).await;
    let batch = world
        .batch(json!({"stock": 2, "valid_hours": 4, "releases": [{"at": at(3600), "quantity": 1}, {"at": at(7200), "quantity": 1}]}))
        .await;
    let id = batch["id"].as_str().expect("id");
    let (first, second, third) = (world.citizen(1).await, world.citizen(2).await, world.citizen(3).await);
    let (status, body) = world.claim(&first, id, "a").await;
    assert_eq!((status, code(&body)), (409, "not_open"), "before the first release");
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(3600));
    assert_eq!(world.claim(&first, id, "b").await.0, 201);
    let (status, body) = world.claim(&second, id, "c").await;
    assert_eq!((status, code(&body)), (409, "sold_out"), "the first tranche is gone: {body}");
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(7200));
    assert_eq!(world.claim(&second, id, "d").await.0, 201);
    assert_eq!(code(&world.claim(&third, id, "e").await.1), "sold_out");
    // The first voucher (claimed at +1h, valid 4h) expires at +5h and goes back to the batch.
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(5 * 3600 + 1));
    let report = world.app.sweep().await;
    assert_eq!(report.expired, 1);
    let (_, mine) = world.app.get("/v1/me/vouchers", Some(&first)).await;
    assert_eq!(mine["vouchers"][0]["status"], "expired");
    let (status, body) = world.claim(&third, id, "f").await;
    assert_eq!(status, 201, "a later claimer gets the returned voucher: {body}");
    let season = world.season().await;
    assert_eq!(funder(&season, "370000")["committed"], "20.00");
    assert_eq!(funder(&season, "370000")["reserved"], "0.00");
    // After the claim window closes, the unclaimed reserve returns to the pool.
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(10 * 86_400 + 1));
    let report = world.app.sweep().await;
    assert_eq!((report.expired, report.batches_closed), (2, 1));
    let season = world.season().await;
    assert_eq!(funder(&season, "370000")["available"], "10000.00");
    assert_eq!(funder(&season, "370000")["committed"], "0.00");
    wenhui::app::audit::verify_store(world.app.store()).await.expect("ledger verifies");
}

async fn registration_validates_identity(backend: Backend) {
    let world = World::new(backend, "100.00", None).await;
    let good = synthetic_id_number("370202", "19850615", 123);
    let mut wrong_check = good.clone();
    let last = wrong_check.pop().expect("char");
    wrong_check.push(if last == '0' { '1' } else { '0' });
    let cases = [
        (json!({"name": "李四", "id_number": wrong_check, "phone": "13800138000"}), "id_number_check_digit"),
        (
            json!({"name": "李四", "id_number": synthetic_id_number("370202", "20230229", 1), "phone": "13800138000"}),
            "id_number_birth_date",
        ),
        (json!({"name": "李四", "id_number": "37020219850615", "phone": "13800138000"}), "id_number_format"),
        (
            json!({"name": "李四", "id_number": synthetic_id_number("990202", "19850615", 1), "phone": "13800138000"}),
            "id_number_region",
        ),
        (json!({"name": "李四", "id_number": good, "phone": "1380013800"}), "phone_format"),
        (json!({"name": "李四", "id_number": good, "phone": "12800138000"}), "phone_format"),
        (json!({"name": "", "id_number": good, "phone": "13800138000"}), "name_format"),
    ];
    for (mut body, expected) in cases {
        body["code"] = json!("000000");
        let (status, answer) = world.app.post("/v1/citizens", None, body.clone()).await;
        assert_eq!((status, code(&answer)), (422, expected), "{body}");
    }
    let body = json!({"name": "李四", "id_number": good, "phone": "13800138000"});
    let (status, first) = world.app.register_citizen(body.clone()).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = world.app.register_citizen(body).await;
    assert_eq!((status, code(&again)), (409, "already_registered"));
    let (status, session) =
        world.app.sign_in_citizen(json!({"id_number": good, "phone": "13800138000"})).await;
    assert_eq!(status, 201);
    assert_eq!(session["citizen_id"], first["citizen_id"]);
    let (status, wrong) = world.app.sign_in_citizen(json!({"id_number": good, "phone": "13900000000"})).await;
    assert_eq!((status, code(&wrong)), (401, "unknown_citizen"), "wrong phone");
    let (status, _) =
        world.app.get("/v1/me/vouchers", Some("wh_ct_not-a-real-token-at-all-0000000000000000000")).await;
    assert_eq!(status, 401);
    let leaked = world
        .app
        .db
        .raw(&format!("SELECT 1 FROM citizens WHERE id_masked = '{good}' OR phone_masked = '13800138000'"))
        .await
        .expect("query");
    assert_eq!(leaked, 0, "no plain identity stored");
}

async fn seasons_and_batches_validate_input(backend: Backend) {
    let world = World::new(backend, "1000.00", None).await;
    let qingdao_admin = world.app.staff_key(Role::CityAdmin, "370200").await;
    let path = format!("/v1/seasons/{}/batches", world.season_id);
    let base = json!({
        "name": "x", "issuer": "370200", "kind": "percent", "percent": 30, "cap": "30.00", "step": "5.00",
        "stock": 10, "per_citizen_limit": 1, "valid_hours": 48, "claim_opens_at": at(0),
        "claim_closes_at": at(86_400), "categories": ["bookstore"],
        "funding": [{"funder": "370000", "share": 50}, {"funder": "370200", "share": 50}],
    });
    let (status, batch) = world.app.post_idem(&path, Some(&qingdao_admin), "co-funded", base.clone()).await;
    assert_eq!(status, 201, "{batch}");
    let season = world.season().await;
    assert_eq!(funder(&season, "370000")["reserved"], "150.00");
    assert_eq!(funder(&season, "370200")["reserved"], "150.00");
    let (status, replay) = world.app.post_idem(&path, Some(&qingdao_admin), "co-funded", base.clone()).await;
    assert_eq!((status, &replay), (201, &batch), "a retry returns the first answer");
    let mut other_city = base.clone();
    other_city["issuer"] = json!("370100");
    let (status, _) = world.app.post_idem(&path, Some(&qingdao_admin), "other-city", other_city).await;
    assert_eq!(status, 403, "a city admin issues only its own city's batches");
    let bad_cases = [
        (json!({"stock": 0}), "invalid_stock"),
        (json!({"percent": 130}), "invalid_terms"),
        (json!({"step": "50.00"}), "invalid_terms"),
        (json!({"categories": ["casino"]}), "invalid_category"),
        (json!({"claim_closes_at": at(31 * 86_400)}), "invalid_dates"),
        (json!({"funding": [{"funder": "370200", "share": 60}]}), "funding_shares_sum"),
        (json!({"kind": "lottery"}), "invalid_kind"),
        (json!({"releases": [{"at": at(10), "quantity": 3}]}), "invalid_releases"),
        // Two huge quantities and 12 wrap to the stock (10) in unchecked i64 arithmetic.
        (
            json!({"releases": [{"at": at(10), "quantity": i64::MAX}, {"at": at(20), "quantity": i64::MAX},
                {"at": at(30), "quantity": 12}]}),
            "invalid_releases",
        ),
        (json!({"daily_release": {"first_at": at(10), "quantity": i64::MAX}}), "invalid_releases"),
    ];
    for (change, expected) in bad_cases {
        let mut body = base.clone();
        for (key, value) in change.as_object().expect("object") {
            body[key] = value.clone();
        }
        let key = uuid::Uuid::new_v4().to_string();
        let (status, answer) = world.app.post_idem(&path, Some(&qingdao_admin), &key, body).await;
        assert_eq!((status, code(&answer)), (422, expected), "{change}: {answer}");
    }
    let (status, answer) =
        world.app.post("/v1/seasons", Some(&world.province_admin), json!({"name": "no key"})).await;
    assert_eq!((status, code(&answer)), (400, "missing_idempotency_key"));
}

both_backends!(a_citizen_learns_whether_they_won_a_lottery);

/// `GET /v1/batches/{id}/entries/me`: a citizen learns whether they entered a lottery batch,
/// and after the draw whether they won (the voucher, also in their vouchers) or lost.
async fn a_citizen_learns_whether_they_won_a_lottery(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let mut citizens = Vec::new();
    for n in 0..3u32 {
        let body = json!({"name": "王五", "id_number": synthetic_id_number("370202", "19920101", 700 + n as u16),
            "phone": format!("137{:08}", n)});
        let (status, registered) = world.app.register_citizen(body).await;
        assert_eq!(status, 201, "{registered}");
        let id: uuid::Uuid = registered["citizen_id"].as_str().expect("id").parse().expect("uuid");
        citizens.push((id, registered["token"].as_str().expect("token").to_owned()));
    }
    // One voucher, two entries: which of the two wins depends on the batch's salt, secret until
    // the draw, so the test reads the winner off the answers and holds the other to "lost".
    let seed = "seed-0";
    let sha = |bytes: &[u8]| ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec();
    let hex: String = sha(seed.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let batch = world
        .batch(json!({"name": "摇号券", "stock": 1, "claim_closes_at": at(3_600), "lottery": {"seed_sha256": hex}}))
        .await;
    let id = batch["id"].as_str().expect("id").to_owned();
    let mine = format!("/v1/batches/{id}/entries/me");
    let standing =
        |answer: &Value| (answer["result"].as_str().map(str::to_owned), answer["voucher_id"].clone());
    let (status, answer) = world.app.get(&mine, Some(&citizens[0].1)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(standing(&answer), (Some("not_entered".to_owned()), Value::Null));
    assert_eq!(
        (&answer["batch_name"], &answer["entered_at"], &answer["drawn_at"]),
        (&json!("摇号券"), &Value::Null, &Value::Null)
    );
    for (_, token) in &citizens[..2] {
        let (status, entered) =
            world.app.post(&format!("/v1/batches/{id}/entries"), Some(token), json!({})).await;
        assert_eq!(status, 200, "{entered}");
        let (_, answer) = world.app.get(&mine, Some(token)).await;
        assert_eq!(standing(&answer), (Some("pending".to_owned()), Value::Null), "{answer}");
        assert_eq!(answer["entered_at"], entered["entered_at"]);
    }
    // Not a lottery, no such batch, no citizen.
    let rush = world.batch(json!({})).await;
    let (status, refused) = world
        .app
        .get(&format!("/v1/batches/{}/entries/me", rush["id"].as_str().expect("id")), Some(&citizens[0].1))
        .await;
    assert_eq!((status, code(&refused)), (409, "not_a_lottery"), "{refused}");
    let (status, refused) = world
        .app
        .get(&format!("/v1/batches/{}/entries/me", uuid::Uuid::new_v4()), Some(&citizens[0].1))
        .await;
    assert_eq!((status, code(&refused)), (404, "batch_not_found"), "{refused}");
    let (status, _) = world.app.get(&mine, None).await;
    assert_eq!(status, 401);
    // The draw, after the window: one of the two entrants won, the other lost, the third never
    // entered.
    world.clock.set(Timestamp::from_unix_us(world.t0_us).plus_seconds(3_601));
    let (status, drawn) = world
        .app
        .post_idem(
            &format!("/v1/batches/{id}/draw"),
            Some(&world.province_admin),
            "draw",
            json!({"seed": seed}),
        )
        .await;
    assert_eq!((status, drawn["issued"].as_u64()), (200, Some(1)), "{drawn}");
    let (_, first) = world.app.get(&mine, Some(&citizens[0].1)).await;
    let (winner, loser) = if first["result"] == "won" { (0, 1) } else { (1, 0) };
    let (_, won) = world.app.get(&mine, Some(&citizens[winner].1)).await;
    let (_, vouchers) = world.app.get("/v1/me/vouchers", Some(&citizens[winner].1)).await;
    assert_eq!(
        standing(&won),
        (Some("won".to_owned()), vouchers["vouchers"][0]["id"].clone()),
        "{won} {vouchers}"
    );
    assert_eq!(won["drawn_at"], drawn["drawn_at"]);
    let (_, lost) = world.app.get(&mine, Some(&citizens[loser].1)).await;
    assert_eq!(standing(&lost), (Some("lost".to_owned()), Value::Null), "{lost}");
    assert_eq!(lost["drawn_at"], drawn["drawn_at"]);
    let (_, absent) = world.app.get(&mine, Some(&citizens[2].1)).await;
    assert_eq!(standing(&absent), (Some("not_entered".to_owned()), Value::Null), "{absent}");
}

/// A batch whose claim window has closed leaves the season's list, unless `ended=true` asks
/// for it too (the console finds a lottery waiting for its draw so).
async fn ended_batches_are_listed_when_asked(backend: Backend) {
    let world = World::new(backend, "10000.00", None).await;
    let ended = world.batch(json!({"name": "一分钟券", "claim_closes_at": world.at(60)})).await;
    let open = world.batch(json!({"name": "十天券"})).await;
    world.clock.set(Timestamp::from_unix_us(world.t0_us).plus_seconds(120));
    let ids = |list: &Value| -> Vec<String> {
        list.as_array().expect("batches").iter().filter_map(|b| b["id"].as_str().map(str::to_owned)).collect()
    };
    let path = format!("/v1/seasons/{}/batches", world.season_id);
    let (status, listed) = world.app.get(&path, None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(ids(&listed), [open["id"].as_str().expect("id")]);
    let (status, all) = world.app.get(&format!("{path}?ended=true"), None).await;
    assert_eq!(status, 200, "{all}");
    let mut every = ids(&all);
    every.sort();
    let mut expected =
        vec![ended["id"].as_str().expect("id").to_owned(), open["id"].as_str().expect("id").to_owned()];
    expected.sort();
    assert_eq!(every, expected);
    let (status, refused) = world.app.get(&format!("{path}?ended=perhaps"), None).await;
    assert_eq!((status, code(&refused)), (400, "invalid_query"), "{refused}");
}

/// The claim writer reads a group's live slots with one probe of `vouchers_live_slot` per
/// citizen, whatever the batch holds: 20,000 vouchers in one batch, a group of 100 citizens of
/// whom 50 hold one. Read as `citizen_id = ANY(..)` beside `batch_id = ..`, PostgreSQL's
/// planner (its statistics lagging a rush's inserts) fetched every live voucher of the batch
/// and filtered them, 1.2 ms a group at 20,000 vouchers, growing with the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_slots_are_read_per_citizen_not_per_batch() {
    use sqlx::Connection;
    let db = crate::common::TestDb::new(Backend::Postgres).await;
    db.store().await;
    let batch = uuid::Uuid::now_v7();
    let holders: Vec<uuid::Uuid> = (0..50).map(|_| uuid::Uuid::now_v7()).collect();
    let others: Vec<uuid::Uuid> = (0..50).map(|_| uuid::Uuid::now_v7()).collect();
    let seed = |citizens: &str| {
        format!(
            "INSERT INTO vouchers (id, batch_id, season_id, citizen_id, slot, status, value_fen, claimed_at_us, \
             expires_at_us) SELECT gen_random_uuid(), '{batch}', '{batch}', {citizens}, 1, 'active', 3000, 0, 1"
        )
    };
    db.raw(&format!("{} FROM generate_series(1, 19950)", seed("gen_random_uuid()")))
        .await
        .expect("the batch");
    let listed = holders.iter().map(|c| format!("'{c}'::uuid")).collect::<Vec<_>>().join(", ");
    db.raw(&format!("{} FROM UNNEST(ARRAY[{listed}]) AS c", seed("c"))).await.expect("the holders");
    let group: Vec<uuid::Uuid> = holders.iter().chain(&others).copied().collect();

    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let explain = format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", wenhui::storage::POSTGRES_HOLDING_SLOTS_SQL);
    let row = sqlx::query(sqlx::AssertSqlSafe(explain)).bind(batch).bind(&group).fetch_one(&mut conn).await;
    // `json` arrives as its text: read without the type check (sqlx's `json` feature is off).
    let text: String = sqlx::Row::try_get_unchecked(&row.expect("explain"), 0).expect("the plan's text");
    let plan: Value = serde_json::from_str(&text).expect("a JSON plan");
    let plan = &plan[0]["Plan"];
    assert_eq!(plan["Actual Rows"], 50, "each holder's slot, no other: {plan}");
    let touched = vouchers_rows_touched(plan);
    assert!(touched <= 50, "the read touched {touched} voucher rows for 50 held slots: {plan}");
}

/// The same read on SQLite searches `vouchers_live_slot` on the batch and the citizen, one probe
/// per citizen of the group, not the batch's every voucher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_slots_are_searched_per_citizen_on_sqlite() {
    use sqlx::Connection;
    let db = crate::common::TestDb::new(Backend::Sqlite).await;
    db.store().await;
    let (citizens_in, batch_is) = wenhui::storage::SQLITE_HOLDING_SLOTS_SQL;
    let statement = format!("EXPLAIN QUERY PLAN {citizens_in}?, ?, ?){batch_is}?");
    let mut conn = sqlx::SqliteConnection::connect(&db.url).await.expect("connect");
    let steps: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(statement))
        .bind(uuid::Uuid::now_v7())
        .bind(uuid::Uuid::now_v7())
        .bind(uuid::Uuid::now_v7())
        .bind(uuid::Uuid::now_v7())
        .fetch_all(&mut conn)
        .await
        .expect("the plan");
    let details: Vec<&str> = steps.iter().map(|(_, _, _, detail)| detail.as_str()).collect();
    assert_eq!(
        details,
        ["SEARCH vouchers USING INDEX vouchers_live_slot (batch_id=? AND citizen_id=?)"],
        "one search of the live slots by batch and citizen"
    );
}

/// The rows every node of `plan` that reads `vouchers` (a table or an index scan) produced or
/// filtered out, over all its loops.
fn vouchers_rows_touched(plan: &Value) -> i64 {
    let on_vouchers = plan["Relation Name"] == "vouchers"
        || plan["Index Name"].as_str().is_some_and(|index| index.starts_with("vouchers"));
    let own = match on_vouchers {
        true => {
            let per_loop = ["Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck"]
                .iter()
                .filter_map(|field| plan[*field].as_i64())
                .sum::<i64>();
            per_loop * plan["Actual Loops"].as_i64().unwrap_or(1)
        }
        false => 0,
    };
    let children = plan["Plans"].as_array().map_or(0, |plans| plans.iter().map(vouchers_rows_touched).sum());
    own + children
}
