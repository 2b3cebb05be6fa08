//! Waitlist batches (docs/waitlist.md), on both backends: citizens join once each (again: the
//! same place; when or how often changes nothing), the opening ranks the whole list in the
//! committed-seed order of the lottery (algorithm 2, so the public audit holds), the stock goes
//! to the first in line, and every voucher that later expires or is forfeited goes to the next,
//! who is texted; never more than the stock, even with two nodes sweeping at once.

use serde_json::{Value, json};
use wenhui::domain::citizen::synthetic_id_number;
use wenhui::domain::ids::{BatchId, CitizenId, SeasonId};
use wenhui::domain::season::Lottery;
use wenhui::domain::time::{Clock, Timestamp};

use crate::both_backends;
use crate::claims::{T0_US, World};
use crate::common::{Backend, code};
use crate::till::Till;

both_backends!(
    a_waitlist_opens_in_seed_order_and_moves_expired_vouchers_on,
    a_forfeited_waitlist_voucher_goes_to_the_next_in_line,
    a_forfeit_whose_value_was_spent_meanwhile_moves_to_nobody_once,
    a_long_line_is_placed_in_order_a_transaction_at_a_time_and_written_again_unchanged,
    two_nodes_sweeping_at_once_move_each_voucher_once,
);

fn sha(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone)]
struct Person {
    citizen: uuid::Uuid,
    token: String,
    phone: String,
}

async fn person(world: &World, n: u16) -> Person {
    let (id_number, phone) = (synthetic_id_number("370202", "19880808", 700 + n), format!("136{:08}", n));
    let (status, registered) =
        world.app.register_citizen(json!({"name": "赵六", "id_number": id_number, "phone": phone})).await;
    assert_eq!(status, 201, "{registered}");
    let citizen = registered["citizen_id"].as_str().expect("id").parse().expect("uuid");
    Person { citizen, token: registered["token"].as_str().expect("token").to_owned(), phone }
}

async fn join(world: &World, batch: &str, person: &Person) -> (u16, Value) {
    let body = json!({"phone": person.phone});
    world.app.post(&format!("/v1/batches/{batch}/waitlist"), Some(&person.token), body).await
}

async fn place(world: &World, batch: &str, person: &Person) -> Value {
    let (status, mine) =
        world.app.get(&format!("/v1/batches/{batch}/waitlist/me"), Some(&person.token)).await;
    assert_eq!(status, 200, "{mine}");
    mine
}

/// A waitlist batch of `stock` whose window closes an hour after `opens`, committed to `seed`.
async fn waitlist_batch(world: &World, seed: &str, stock: i64, opens: i64) -> String {
    let body = json!({"name": "排队券", "stock": stock, "valid_hours": 24, "claim_opens_at": world.at(opens),
        "claim_closes_at": world.at(opens + 3_600), "lottery": {"seed_sha256": hex(&sha(seed.as_bytes())), "waitlist": true}});
    let batch = world.batch(body).await;
    assert_eq!(batch["lottery"]["waitlist"], true, "{batch}");
    batch["id"].as_str().expect("id").to_owned()
}

/// The people in algorithm 2's order for the batch's committed seed and stored salt: computed
/// here from the citizen ids alone (docs/lottery-audit.md).
async fn seed_order<'a>(world: &World, batch: &str, seed: &str, people: &'a [Person]) -> Vec<&'a Person> {
    let batch_id: BatchId = batch.parse().expect("uuid");
    let stored = world.app.store().batch(batch_id).await.expect("read").expect("batch");
    let salt = stored.lottery.expect("lottery").salt;
    let mut ranked: Vec<([u8; 32], &Person)> = people
        .iter()
        .map(|p| {
            let citizen = wenhui::domain::ids::CitizenId::from(p.citizen);
            (Lottery::rank(seed, &Lottery::entrant_hash(&salt, citizen)), p)
        })
        .collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.into_iter().map(|(_, p)| p).collect()
}

async fn stored_batch(world: &World, batch: &str) -> wenhui::domain::season::Batch {
    world.app.store().batch(batch.parse().expect("uuid")).await.expect("read").expect("batch")
}

async fn draw(world: &World, batch: &str, seed: &str) -> Value {
    let path = format!("/v1/batches/{batch}/draw");
    let (status, drawn) =
        world.app.post_idem(&path, Some(&world.province_admin), "open", json!({"seed": seed})).await;
    assert_eq!(status, 200, "{drawn}");
    drawn
}

async fn notices(world: &World, phone: &str) -> Vec<Value> {
    let (status, outbox) = world.app.get(&format!("/v1/dev/sms?phone={phone}"), None).await;
    assert_eq!(status, 200, "{outbox}");
    outbox["notices"].as_array().expect("notices").clone()
}

/// Reconciliation finds no break and the ledger verifies.
async fn books_hold(world: &World) {
    let store = world.app.store();
    let season_id: SeasonId = world.season_id.parse().expect("uuid");
    let season = store.season(season_id).await.expect("read").expect("season");
    let reconciled =
        wenhui::app::finance::reconcile(store, &season, world.clock.now()).await.expect("reconcile");
    assert!(reconciled.ok, "{:?}", reconciled.checks.iter().filter(|c| c.breaks > 0).collect::<Vec<_>>());
    wenhui::app::audit::verify_store(store).await.expect("ledger verifies");
}

async fn a_waitlist_opens_in_seed_order_and_moves_expired_vouchers_on(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let seed = "2026-03-01 排队";
    let batch = waitlist_batch(&world, seed, 2, 0).await;
    let rush = world.batch(json!({})).await["id"].as_str().expect("id").to_owned();
    let mut people = Vec::new();
    for n in 0..6 {
        people.push(person(&world, n).await);
    }

    // Joined in reverse order, the last one three times and first: none of it matters.
    let first = join(&world, &batch, &people[5]).await;
    assert_eq!(first.0, 200, "{}", first.1);
    for p in people.iter().rev() {
        world.clock.set(world.clock.now().plus_seconds(1));
        assert_eq!(join(&world, &batch, p).await.0, 200);
    }
    let again = join(&world, &batch, &people[5]).await;
    assert_eq!(again.1["joined_at"], first.1["joined_at"], "joining again is the first join: {}", again.1);
    // One joins through the lottery's entries, without a phone: on the list, never texted.
    let silent = person(&world, 9).await;
    let (status, entered) =
        world.app.post(&format!("/v1/batches/{batch}/entries"), Some(&silent.token), json!({})).await;
    assert_eq!(status, 200, "{entered}");
    let mismatched = Person { phone: people[0].phone.clone(), ..person(&world, 10).await };
    let (status, refused) = join(&world, &batch, &mismatched).await;
    assert_eq!((status, code(&refused)), (422, "phone_mismatch"), "{refused}");
    let (status, refused) = join(&world, &rush, &people[0]).await;
    assert_eq!((status, code(&refused)), (409, "not_a_waitlist"), "{refused}");
    let (status, refused) = world.claim(&people[0].token, &batch, "claim").await;
    assert_eq!((status, code(&refused)), (409, "lottery_batch"), "no rush on a waitlist: {refused}");
    let before = place(&world, &batch, &people[0]).await;
    assert_eq!((&before["status"], &before["place"]), (&json!("waiting"), &Value::Null), "{before}");
    let (status, refused) = world.app.get(&format!("/v1/batches/{batch}/waitlist/me"), None).await;
    assert_eq!(status, 401, "{refused}");
    let (status, refused) =
        world.app.get(&format!("/v1/batches/{rush}/waitlist/me"), Some(&people[0].token)).await;
    assert_eq!((status, code(&refused)), (409, "not_a_waitlist"), "{refused}");

    // Seven on the list.
    let mut everyone = people;
    everyone.push(silent);
    let order = seed_order(&world, &batch, seed, &everyone).await;
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(3_600));
    let drawn = draw(&world, &batch, seed).await;
    assert_eq!((drawn["entries"].as_u64(), drawn["issued"].as_i64()), (Some(7), Some(2)), "{drawn}");
    for (n, p) in order.iter().enumerate() {
        let mine = place(&world, &batch, p).await;
        let n = n as i64;
        assert_eq!(mine["place"], n + 1, "the place is the seed order's: {mine}");
        if n < 2 {
            assert_eq!(mine["status"], "issued", "{mine}");
            assert!(mine["voucher_id"].is_string());
        } else {
            assert_eq!((&mine["status"], &mine["ahead"]), (&json!("waiting"), &json!(n - 2)), "{mine}");
        }
    }
    let (status, audit) = world.app.get(&format!("/v1/batches/{batch}/draw/audit"), None).await;
    assert_eq!(status, 200, "the lottery's public audit holds for a waitlist: {audit}");
    let stored = world.app.store().batch(batch.parse().expect("uuid")).await.expect("read").expect("batch");
    let salt = stored.lottery.expect("lottery").salt;
    let keyed = |p: &Person| hex(&Lottery::entrant_hash(&salt, p.citizen.into()));
    let winners: Vec<String> = order[..2].iter().map(|p| keyed(p)).collect();
    assert_eq!(audit["winners"], json!(winners));
    for p in &order {
        assert!(notices(&world, &p.phone).await.is_empty(), "nobody is texted at the opening");
    }
    // Only the people still waiting keep a sealed phone (the one who joined without has none).
    let silent_phone = everyone[6].phone.clone();
    let sealed_from = |from: usize| order[from..].iter().filter(|p| p.phone != silent_phone).count() as u64;
    let sealed = "UPDATE lottery_entries SET sealed_phone = sealed_phone WHERE sealed_phone IS NOT NULL";
    assert_eq!(world.app.db.raw(sealed).await, Ok(sealed_from(2)));

    // The two vouchers expire unused: they go to places 3 and 4, who are texted.
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(3_600 + 24 * 3_600 + 1));
    let report = world.app.sweep().await;
    assert_eq!((report.expired, report.moved_on, report.batches_closed), (2, 2, 0), "{report:?}");
    for (n, p) in order.iter().enumerate() {
        let mine = place(&world, &batch, p).await;
        let expected = match n {
            0 | 1 => json!(["passed", "voucher_expired"]),
            2 | 3 => json!(["issued", null]),
            _ => json!(["waiting", null]),
        };
        assert_eq!(json!([mine["status"], mine["passed_reason"]]), expected, "place {}: {mine}", n + 1);
    }
    assert_eq!(place(&world, &batch, order[4]).await["ahead"], 0, "next in line");
    for p in &order[2..4] {
        let texted = notices(&world, &p.phone).await;
        assert_eq!(texted.len(), usize::from(p.phone != silent_phone), "{texted:?}");
        for notice in &texted {
            assert_eq!(notice["purpose"], "waitlist_voucher");
            assert!(notice["text"].as_str().is_some_and(|t| t.contains("排队券")), "{texted:?}");
        }
        let (_, mine) = world.app.get("/v1/me/vouchers", Some(&p.token)).await;
        assert_eq!(mine["vouchers"][0]["status"], "active", "{mine}");
    }
    assert_eq!(world.app.db.raw(sealed).await, Ok(sealed_from(4)));
    let (_, audit) = world.app.get(&format!("/v1/batches/{batch}/draw/audit"), None).await;
    assert_eq!(audit["winners"], json!(winners), "moved-on vouchers are not the draw's");
    let summary_path = format!("/v1/batches/{batch}/waitlist");
    let (status, summary) = world.app.get(&summary_path, Some(&world.province_admin)).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        json!([summary["length"], summary["issued"], summary["moved_on"], summary["waiting"]]),
        json!([7, 4, 2, 3]),
        "{summary}"
    );
    let (status, _) = world.app.get(&summary_path, None).await;
    assert_eq!(status, 401);
    books_hold(&world).await;

    // Again: places 5 and 6; then the last voucher reaches place 7 and the other finds nobody.
    world.clock.set(world.clock.now().plus_seconds(24 * 3_600 + 1));
    assert_eq!(world.app.sweep().await.moved_on, 2);
    world.clock.set(world.clock.now().plus_seconds(24 * 3_600 + 1));
    let report = world.app.sweep().await;
    assert_eq!(
        (report.moved_on, report.batches_closed),
        (2, 1),
        "nobody waits: the batch closes: {report:?}"
    );
    assert_eq!(place(&world, &batch, order[6]).await["status"], "issued");
    let silent_phone = &everyone[6].phone;
    for p in &order[2..] {
        let texted = notices(&world, &p.phone).await.len();
        assert_eq!(
            texted,
            usize::from(&p.phone != silent_phone),
            "one notice each, none without a sealed phone"
        );
    }
    let (_, summary) = world.app.get(&summary_path, Some(&world.province_admin)).await;
    assert_eq!(
        json!([summary["moved_on"], summary["unmoved"], summary["waiting"]]),
        json!([5, 1, 0]),
        "{summary}"
    );
    assert_eq!(world.app.sweep().await, Default::default(), "nothing more to do");
    books_hold(&world).await;
}

/// A waitlist of one voucher in a season whose refunds forfeit the voucher, `people` joined and
/// the line opened: the first in line redeemed their voucher and was refunded (forfeited).
/// The till, the batch and the people in line order.
async fn a_forfeit_in_line(
    backend: Backend,
    seed: &str,
    people: std::ops::Range<u16>,
) -> (Till, String, Vec<Person>) {
    // The window is over by now (real time): the till signs with the real clock.
    let t0_us = (Timestamp::now().unix_us() / 1_000_000 - 7_200) * 1_000_000;
    let till = Till::new_at(backend, json!({"refund_forfeits_voucher": true}), t0_us).await;
    let world = &till.world;
    let batch = waitlist_batch(world, seed, 1, 0).await;
    let mut joined = Vec::new();
    for n in people {
        let p = person(world, n).await;
        assert_eq!(join(world, &batch, &p).await.0, 200);
        joined.push(p);
    }
    let order: Vec<Person> = seed_order(world, &batch, seed, &joined).await.into_iter().cloned().collect();
    world.clock.set(Timestamp::from_unix_us(t0_us).plus_seconds(7_200));
    draw(world, &batch, seed).await;
    let voucher = place(world, &batch, &order[0]).await["voucher_id"].as_str().expect("voucher").to_owned();
    let order_ref = format!("{seed}-1");
    let redeemed =
        till.redeem(&till.qr(&order[0].token, &voucher).await, "100.00", &order_ref).await.expect("redeemed");
    let reversal = till.client.reverse(redeemed.redemption_id, "refund", None).await.expect("reversed");
    assert_eq!(reversal.voucher_status, "forfeited");
    (till, batch, order)
}

/// Guangzhou's refunds forfeit the voucher: a forfeited waitlist voucher goes to the next in
/// line; its value, back in the pool, funds the new one (the stock grows by one).
async fn a_forfeited_waitlist_voucher_goes_to_the_next_in_line(backend: Backend) {
    let (till, batch, order) = a_forfeit_in_line(backend, "forfeit seed", 20..23).await;
    let world = &till.world;
    let report = world.app.sweep().await;
    assert_eq!((report.expired, report.moved_on), (0, 1), "{report:?}");
    let first = place(world, &batch, &order[0]).await;
    assert_eq!((&first["status"], &first["passed_reason"]), (&json!("passed"), &json!("voucher_forfeited")));
    assert_eq!(place(world, &batch, &order[1]).await["status"], "issued");
    assert_eq!(place(world, &batch, &order[2]).await["ahead"], 0);
    assert_eq!(notices(world, &order[1].phone).await.len(), 1);
    let stored = stored_batch(world, &batch).await;
    assert_eq!((stored.stock, stored.claimed_count), (2, 2), "the stock grows by the forfeit");
    assert_eq!(world.app.sweep().await.moved_on, 0, "a voucher moves once");
    books_hold(world).await;
}

/// A forfeit whose value, back in the pool, went to another batch before the sweep: moved to
/// nobody (`pools_spent`) once, not tried again at every sweep; the line keeps waiting.
async fn a_forfeit_whose_value_was_spent_meanwhile_moves_to_nobody_once(backend: Backend) {
    let (till, batch, order) = a_forfeit_in_line(backend, "spent seed", 30..32).await;
    let world = &till.world;

    // Another batch takes what is left in the pool, the forfeit's 10.00 with it.
    let season_id: SeasonId = world.season_id.parse().expect("uuid");
    let pool = wenhui::domain::accounts::pool(season_id, "370000".parse().expect("region"));
    let left = world.app.store().balance(&pool.address).await.expect("read").expect("the pool");
    let vouchers_left = (left.credits_fen - left.debits_fen) / 1_000;
    assert!(vouchers_left >= 1, "the forfeit's value is back in the pool: {left:?}");
    let now = world.clock.now();
    world
        .batch(json!({"name": "余款券", "stock": vouchers_left, "claim_opens_at": now.plus_seconds(60).to_string(),
            "claim_closes_at": now.plus_seconds(3_600).to_string()}))
        .await;

    let report = world.app.sweep().await;
    assert_eq!(report.moved_on, 1, "recorded as moved, to nobody: {report:?}");
    assert_eq!(place(world, &batch, &order[1]).await["status"], "waiting");
    assert_eq!(world.app.sweep().await.moved_on, 0, "not tried again");
    let stored = stored_batch(world, &batch).await;
    assert_eq!((stored.stock, stored.claimed_count), (1, 1), "no voucher issued for it");
    assert!(notices(world, &order[1].phone).await.is_empty(), "nobody told of a voucher");
    books_hold(world).await;
}

/// 25,000 people: placed 1, 2, ... in the order given, across several transactions (10,000
/// people each); an opening stopped part way and sent again writes the same line.
async fn a_long_line_is_placed_in_order_a_transaction_at_a_time_and_written_again_unchanged(
    backend: Backend,
) {
    let db = crate::common::TestDb::new(backend).await;
    let store = db.store().await;
    let batch_id = BatchId::new_v7();
    let order: Vec<CitizenId> = (0..25_000).map(|_| CitizenId::new_v7()).collect();
    store.place_waitlist(batch_id, &order[..12_345]).await.expect("part of the line");
    store.place_waitlist(batch_id, &order).await.expect("the whole line");
    store.place_waitlist(batch_id, &order).await.expect("the whole line again");
    let line = store.waitlist_people(batch_id, 1, 30_000).await.expect("the line");
    let placed: Vec<(i64, CitizenId)> = line.iter().map(|p| (p.place, p.citizen_id)).collect();
    let expected: Vec<(i64, CitizenId)> = order.iter().enumerate().map(|(i, c)| (i as i64 + 1, *c)).collect();
    assert_eq!(placed.len(), expected.len());
    assert!(placed == expected, "every person at their place, once");
}

/// Vouchers freed at once, swept by two nodes at the same moment: each moves once, to one person
/// each, and the live vouchers never exceed the stock (the cursor's compare-and-set, the move's
/// primary key and the stock CHECK, in the database).
async fn two_nodes_sweeping_at_once_move_each_voucher_once(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let seed = "two nodes";
    let batch = waitlist_batch(&world, seed, 3, 0).await;
    let mut people = Vec::new();
    for n in 40..49 {
        let p = person(&world, n).await;
        assert_eq!(join(&world, &batch, &p).await.0, 200);
        people.push(p);
    }
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(3_600));
    draw(&world, &batch, seed).await;
    let other = world.app.spawn_node(|_| {}).await.expect("second node");
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(3_600 + 24 * 3_600 + 1));
    let mine = world.app.server.as_ref().expect("running").writer.clone();
    // Either may meet the other's expiries (refused, the sweep reports it) or its moves.
    let (one, two) = tokio::join!(mine.sweep(), other.writer.sweep());
    // Whatever the two left, a later sweep finishes; never more than the three freed.
    let later = world.app.sweep().await;
    let summary_path = format!("/v1/batches/{batch}/waitlist");
    let (_, summary) = world.app.get(&summary_path, Some(&world.province_admin)).await;
    assert_eq!(
        (summary["moved_on"].as_i64(), summary["unmoved"].as_i64()),
        (Some(3), Some(0)),
        "{one:?} {two:?} {later:?}"
    );
    let stored = stored_batch(&world, &batch).await;
    assert_eq!((stored.stock, stored.claimed_count, stored.returned_count), (3, 6, 3));
    let order = seed_order(&world, &batch, seed, &people).await;
    let statuses: Vec<String> = {
        let mut all = Vec::new();
        for p in &order {
            all.push(place(&world, &batch, p).await["status"].as_str().expect("status").to_owned());
        }
        all
    };
    assert_eq!(
        statuses,
        ["passed", "passed", "passed", "issued", "issued", "issued", "waiting", "waiting", "waiting"]
    );
    books_hold(&world).await;
    other.stop().await.expect("stop");

    // The season ends: the last vouchers expire and move on to nobody, the batch closes, and
    // the phones of the three still waiting are erased with it.
    let sealed = "UPDATE lottery_entries SET sealed_phone = sealed_phone WHERE sealed_phone IS NOT NULL";
    assert_eq!(world.app.db.raw(sealed).await, Ok(3));
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(31 * 86_400));
    let report = world.app.sweep().await;
    assert_eq!((report.expired, report.moved_on, report.batches_closed), (3, 3, 1), "{report:?}");
    let (_, summary) = world.app.get(&summary_path, Some(&world.province_admin)).await;
    assert_eq!((summary["moved_on"].as_i64(), summary["unmoved"].as_i64()), (Some(3), Some(3)), "{summary}");
    assert_eq!(world.app.db.raw(sealed).await, Ok(0), "no phone outlives the line");
    books_hold(&world).await;
}
