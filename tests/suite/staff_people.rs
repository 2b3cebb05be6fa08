//! Staff keys belong to named people (issue 22, defect 1): an admin enrols a person, the person
//! claims the key with the code sent to their phone, and four eyes compares people.

use serde_json::{Value, json};

use crate::both_backends;
use crate::claims::World;
use crate::common::{code, fresh_phone};
use crate::till::merchant;

both_backends!(
    siblings_of_one_person_are_one_pair_of_eyes,
    cousins_of_one_phone_are_one_person,
    a_shared_minter_may_not_approve_for_either,
    the_minters_other_key_is_still_the_minter,
    a_key_is_claimed_once_with_its_code,
);

/// Enrols a person (`phone`) for a city_admin key of Qingdao with `by`, and claims it.
async fn enrol(world: &World, by: &str, phone: &str) -> String {
    let body =
        json!({"role": "city_admin", "region": "370200", "label": "qingdao", "name": "某人", "phone": phone});
    let claimed = world.app.enrol_key_for(by, body).await;
    claimed["key"].as_str().expect("key").to_owned()
}

/// A merchant (made by `admin`) whose settlement account `asker` asks to change: the path of
/// the approval.
async fn asked(world: &World, admin: &str, asker: &str, seed: u32) -> String {
    let merchant_id = merchant(world, admin, seed, "bookstore", "370200").await;
    let path = format!("/v1/merchants/{merchant_id}/settlement-account");
    let account = json!({"bank": "中国银行", "account_no": "6217000099998888", "account_name": "某书店有限公司",
        "reason": "the merchant's letter"});
    let request = world.app.client.put(world.app.url(&path)).bearer_auth(asker).json(&account);
    let (status, asked) = crate::common::read(request.send().await.expect("send")).await;
    assert_eq!(status, 202, "{asked}");
    format!("{path}/requests/{}/approve", asked["request"]["id"].as_str().expect("id"))
}

async fn approve(world: &World, path: &str, approver: &str) -> (u16, Value) {
    world.app.post(path, Some(approver), json!({"note": "checked"})).await
}

/// One city admin enrols two keys: for one person (one phone) they are one pair of eyes; for
/// two people, two.
async fn siblings_of_one_person_are_one_pair_of_eyes(backend: crate::common::Backend) {
    let world = World::new(backend, "1000.00", None).await;
    let admin = enrol(&world, &world.province_admin, &fresh_phone()).await;
    let phone = fresh_phone();
    let x = enrol(&world, &admin, &phone).await;
    let y = enrol(&world, &admin, &phone).await;
    let path = asked(&world, &admin, &x, 41).await;
    let (status, body) = approve(&world, &path, &y).await;
    assert_eq!((status, code(&body)), (403, "same_approver"), "{body}");
    let z = enrol(&world, &admin, &fresh_phone()).await;
    let (status, body) = approve(&world, &path, &z).await;
    assert_eq!((status, body["request"]["status"].as_str()), (200, Some("approved")), "{body}");
}

/// Two admins enrol keys for the same phone: cousins in the tree, one person.
async fn cousins_of_one_phone_are_one_person(backend: crate::common::Backend) {
    let world = World::new(backend, "1000.00", None).await;
    let first_admin = enrol(&world, &world.province_admin, &fresh_phone()).await;
    let second_admin = enrol(&world, &world.province_admin, &fresh_phone()).await;
    let phone = fresh_phone();
    let x = enrol(&world, &first_admin, &phone).await;
    let w = enrol(&world, &second_admin, &phone).await;
    let path = asked(&world, &first_admin, &x, 42).await;
    let (status, body) = approve(&world, &path, &w).await;
    assert_eq!((status, code(&body)), (403, "same_approver"), "{body}");
    let other = enrol(&world, &second_admin, &fresh_phone()).await;
    let (status, body) = approve(&world, &path, &other).await;
    assert_eq!((status, body["request"]["status"].as_str()), (200, Some("approved")), "{body}");
}

/// A province admin enrols two people: each may approve the other's request; the province admin,
/// who minted both keys, approves neither's.
async fn a_shared_minter_may_not_approve_for_either(backend: crate::common::Backend) {
    let world = World::new(backend, "1000.00", None).await;
    let minter = enrol_province(&world, &fresh_phone()).await;
    let first = enrol(&world, &minter, &fresh_phone()).await;
    let second = enrol(&world, &minter, &fresh_phone()).await;
    let first_asks = asked(&world, &first, &first, 43).await;
    let second_asks = asked(&world, &second, &second, 44).await;
    for path in [&first_asks, &second_asks] {
        let (status, body) = approve(&world, path, &minter).await;
        assert_eq!((status, code(&body)), (403, "same_approver"), "{body}");
    }
    let (status, body) = approve(&world, &first_asks, &second).await;
    assert_eq!((status, body["request"]["status"].as_str()), (200, Some("approved")), "{body}");
    let (status, body) = approve(&world, &second_asks, &first).await;
    assert_eq!((status, body["request"]["status"].as_str()), (200, Some("approved")), "{body}");
}

/// A province admin key enrolled by the console's root for `phone`.
async fn enrol_province(world: &World, phone: &str) -> String {
    let body = json!({"role": "province_admin", "region": "370000", "name": "省管理员", "phone": phone});
    let claimed = world.app.enrol_key_for(&world.province_admin, body).await;
    claimed["key"].as_str().expect("key").to_owned()
}

/// The person who enrolled the asker's key may not approve with another of their keys (one
/// phone, one person), even one from another branch of the tree.
async fn the_minters_other_key_is_still_the_minter(backend: crate::common::Backend) {
    let world = World::new(backend, "1000.00", None).await;
    let admin_phone = fresh_phone();
    let admin = enrol(&world, &world.province_admin, &admin_phone).await;
    let x = enrol(&world, &admin, &fresh_phone()).await;
    let path = asked(&world, &admin, &x, 45).await;
    let admins_other_key = enrol(&world, &world.province_admin, &admin_phone).await;
    let (status, body) = approve(&world, &path, &admins_other_key).await;
    assert_eq!((status, code(&body)), (403, "same_approver"), "{body}");
    // Nor may a key the asker's person enrols: the asker minted it.
    let own_below = enrol(&world, &x, &fresh_phone()).await;
    let (status, body) = approve(&world, &path, &own_below).await;
    assert_eq!((status, code(&body)), (403, "same_approver"), "{body}");
}

/// The claim: only with the code sent to the person's phone, once, before the enrolment lapses;
/// five wrong codes lock it; the secret is in the claim's answer and nowhere else.
async fn a_key_is_claimed_once_with_its_code(backend: crate::common::Backend) {
    let world = World::new(backend, "1000.00", None).await;
    let app = &world.app;
    let phone = fresh_phone();
    let body =
        json!({"role": "finance", "region": "370200", "label": "ledger", "name": "某人", "phone": phone});
    let (status, enrolment) = app.post("/v1/staff/keys", Some(&world.province_admin), body.clone()).await;
    assert_eq!(status, 202, "{enrolment}");
    assert!(enrolment.get("key").is_none() && !enrolment.to_string().contains("wh_sk_"), "{enrolment}");
    let id = enrolment["enrolment_id"].as_str().expect("id").to_owned();
    let claim = format!("/v1/staff/enrolments/{id}/claim");
    let right = app.staff_code(&phone).await;
    let wrong = format!("{:06}", (right.parse::<u32>().expect("digits") + 1) % 1_000_000);
    let (status, body_) = app.post(&claim, None, json!({"code": wrong})).await;
    assert_eq!((status, code(&body_)), (401, "invalid_code"), "{body_}");
    let (status, body_) = app.post(&claim, None, json!({"code": "12ab"})).await;
    assert_eq!((status, code(&body_)), (422, "code_format"), "{body_}");
    let (status, claimed) = app.post(&claim, None, json!({"code": right})).await;
    assert_eq!(status, 201, "{claimed}");
    let key = claimed["key"].as_str().expect("key").to_owned();
    assert!(key.starts_with("wh_sk_"));
    let (status, me) = app.get("/v1/staff/me", Some(&key)).await;
    assert_eq!((status, me["role"].as_str()), (200, Some("finance")), "{me}");
    let (status, again) = app.post(&claim, None, json!({"code": right})).await;
    assert_eq!((status, code(&again)), (409, "enrolment_claimed"), "{again}");
    assert!(!again.to_string().contains(&key));
    let (_, outbox) = app.get(&format!("/v1/dev/sms?phone={phone}"), None).await;
    assert!(!outbox.to_string().contains(&key), "the secret is sent nowhere");
    let unknown = format!("/v1/staff/enrolments/{}/claim", uuid::Uuid::now_v7());
    let (status, body_) = app.post(&unknown, None, json!({"code": right})).await;
    assert_eq!((status, code(&body_)), (404, "enrolment_not_found"), "{body_}");

    // Five wrong codes lock an enrolment: the right one is refused after them.
    let (status, second) = app.post("/v1/staff/keys", Some(&world.province_admin), body.clone()).await;
    assert_eq!(status, 202, "{second}");
    let second = format!("/v1/staff/enrolments/{}/claim", second["enrolment_id"].as_str().expect("id"));
    let right = app.staff_code(&phone).await;
    let wrong = format!("{:06}", (right.parse::<u32>().expect("digits") + 1) % 1_000_000);
    for _ in 0..5 {
        let (status, _) = app.post(&second, None, json!({"code": wrong})).await;
        assert_eq!(status, 401);
    }
    let (status, body_) = app.post(&second, None, json!({"code": right})).await;
    assert_eq!((status, code(&body_)), (401, "code_locked"), "{body_}");

    // An enrolment unclaimed for a day lapses.
    let (status, third) = app.post("/v1/staff/keys", Some(&world.province_admin), body).await;
    assert_eq!(status, 202, "{third}");
    let third = format!("/v1/staff/enrolments/{}/claim", third["enrolment_id"].as_str().expect("id"));
    let right = app.staff_code(&phone).await;
    world.clock.advance_us(86_400 * 1_000_000);
    let (status, body_) = app.post(&third, None, json!({"code": right})).await;
    assert_eq!((status, code(&body_)), (409, "enrolment_expired"), "{body_}");

    // A citizen cannot ask for a staff enrolment's code.
    let (status, body_) =
        app.post("/v1/citizens/codes", None, json!({"phone": phone, "purpose": "staff_enrol"})).await;
    assert_eq!((status, code(&body_)), (422, "invalid_field"), "{body_}");
}
