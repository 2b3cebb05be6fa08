//! A lottery the public can check (docs/lottery-audit.md): its audit is refused before the draw;
//! after it, the document (fetched with no key) holds no personal data, `wenhui lottery verify`
//! (the binary, as a process) accepts it and refuses a tampered copy, and each citizen finds
//! their own keyed hash among the entrants, and among the winners when they won.

use std::path::Path;

use serde_json::{Value, json};
use wenhui::domain::citizen::synthetic_id_number;
use wenhui::domain::ids::BatchId;
use wenhui::domain::season::Lottery;
use wenhui::domain::time::Timestamp;

use crate::both_backends;
use crate::claims::{T0_US, World, at};
use crate::common::{Backend, code};

both_backends!(the_public_checks_a_draw_from_its_audit);

fn sha(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256(salt, citizen id as 36 lowercase characters), computed here from the spec.
fn entrant_hash(salt: &[u8], citizen: &uuid::Uuid) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, salt);
    hex(ring::hmac::sign(&key, citizen.hyphenated().to_string().as_bytes()).as_ref())
}

struct Entrant {
    citizen: uuid::Uuid,
    token: String,
    id_number: String,
    phone: String,
}

async fn enter_six(world: &World, batch: &str) -> Vec<Entrant> {
    let mut entrants = Vec::new();
    for n in 0..6u16 {
        let (id_number, phone) = (synthetic_id_number("370202", "19920202", 600 + n), format!("137{:08}", n));
        let body = json!({"name": "王五", "id_number": id_number, "phone": phone});
        let (status, registered) = world.app.register_citizen(body).await;
        assert_eq!(status, 201, "{registered}");
        let citizen = registered["citizen_id"].as_str().expect("id").parse().expect("uuid");
        let token = registered["token"].as_str().expect("token").to_owned();
        let (status, entered) =
            world.app.post(&format!("/v1/batches/{batch}/entries"), Some(&token), json!({})).await;
        assert_eq!(status, 200, "{entered}");
        entrants.push(Entrant { citizen, token, id_number, phone });
    }
    entrants
}

/// `wenhui lottery verify --file <document>` (and `extra` arguments): exit code and output.
fn verify(dir: &Path, url: &str, document: &Value, extra: &[&str]) -> (Option<i32>, String) {
    let file = dir.join("audit.json");
    std::fs::write(&file, serde_json::to_vec_pretty(document).expect("json")).expect("write");
    let file = file.to_str().expect("path");
    let mut args = vec!["lottery", "verify", "--file", file];
    args.extend_from_slice(extra);
    let output = crate::cli::wenhui(dir, url, &args);
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

async fn the_public_checks_a_draw_from_its_audit(backend: Backend) {
    // A season cap of one voucher's worth: an entrant holding a voucher already is skipped.
    let world = World::new(backend, "100000.00", Some("10.00")).await;
    let rush = world.batch(json!({})).await["id"].as_str().expect("id").to_owned();
    let seed = "2026-03-01 公开摇号";
    let lottery = json!({"stock": 3, "claim_closes_at": at(3_600), "lottery": {"seed_sha256": hex(&sha(seed.as_bytes()))}});
    let batch = world.batch(lottery).await;
    let id = batch["id"].as_str().expect("id").to_owned();
    let published = batch["lottery"].clone();
    assert_eq!(published["committed_at"], at(0), "committed when made: {published}");
    let audit_path = format!("/v1/batches/{id}/draw/audit");
    let (status, body) =
        world.app.get(&format!("/v1/batches/{}/draw/audit", uuid::Uuid::now_v7()), None).await;
    assert_eq!((status, code(&body)), (404, "batch_not_found"), "{body}");
    let (status, body) = world.app.get(&format!("/v1/batches/{rush}/draw/audit"), None).await;
    assert_eq!((status, code(&body)), (409, "not_a_lottery"), "{body}");

    let entrants = enter_six(&world, &id).await;
    let (status, body) = world.app.get(&audit_path, None).await;
    assert_eq!((status, code(&body)), (409, "not_drawn"), "the salt stays secret until the draw: {body}");
    let (_, mine) = world.app.get(&format!("/v1/batches/{id}/entries/me"), Some(&entrants[0].token)).await;
    assert_eq!(mine["entrant_hash"], Value::Null, "no hash before the draw: {mine}");

    // The draw order, recomputed here from the salt the store holds: the first in it claims a
    // voucher in the rush, which fills their season cap, so the draw passes over them.
    let batch_id: BatchId = id.parse().expect("uuid");
    let stored = world.app.store().batch(batch_id).await.expect("read").expect("batch");
    let salt = stored.lottery.expect("lottery").salt.0;
    let mut ranked: Vec<(Vec<u8>, usize)> = entrants
        .iter()
        .enumerate()
        .map(|(n, e)| {
            let entrant = entrant_hash(&salt, &e.citizen);
            (sha(&[seed.as_bytes(), &Lottery::parse_commitment(&entrant).expect("32")].concat()), n)
        })
        .collect();
    ranked.sort();
    let capped = &entrants[ranked[0].1];
    assert_eq!(world.claim(&capped.token, &rush, "rush").await.0, 201);
    world.clock.set(Timestamp::from_unix_us(T0_US).plus_seconds(3_600));
    let draw = format!("/v1/batches/{id}/draw");
    let (status, drawn) =
        world.app.post_idem(&draw, Some(&world.province_admin), "draw", json!({"seed": seed})).await;
    assert_eq!((status, drawn["issued"].as_u64()), (200, Some(3)), "{drawn}");

    let (status, audit) = world.app.get(&audit_path, None).await;
    assert_eq!(status, 200, "public, no key: {audit}");
    let text = audit.to_string();
    for e in &entrants {
        for personal in
            [e.citizen.to_string(), e.citizen.simple().to_string(), e.id_number.clone(), e.phone.clone()]
        {
            assert!(!text.contains(&personal), "the audit shows {personal}");
        }
    }
    assert_eq!(
        (&audit["seed"], &audit["seed_sha256"], &audit["salt_sha256"], &audit["committed_at"]),
        (&json!(seed), &published["seed_sha256"], &published["salt_sha256"], &published["committed_at"]),
        "the audit reveals what the batch committed to"
    );
    assert_eq!(audit["salt"], hex(&salt));
    assert_eq!((audit["stock"].as_i64(), audit["algorithm"].as_u64()), (Some(3), Some(2)));
    let list = |name: &str| -> Vec<String> {
        audit[name].as_array().expect("list").iter().map(|h| h.as_str().expect("hex").to_owned()).collect()
    };
    let winners: Vec<String> =
        ranked[1..4].iter().map(|(_, n)| entrant_hash(&salt, &entrants[*n].citizen)).collect();
    assert_eq!(list("winners"), winners, "the next three in draw order, in that order");
    assert_eq!(list("skipped"), [entrant_hash(&salt, &capped.citizen)]);
    assert_eq!(list("entrants").len(), 6);

    // Each citizen finds their own hash (and recomputes it from their id and the salt).
    for e in &entrants {
        let (_, mine) = world.app.get(&format!("/v1/batches/{id}/entries/me"), Some(&e.token)).await;
        let hash = mine["entrant_hash"].as_str().expect("the hash after the draw").to_owned();
        assert_eq!((hash.clone(), &mine["citizen_id"]), (entrant_hash(&salt, &e.citizen), &json!(e.citizen)));
        assert!(list("entrants").contains(&hash), "{mine}");
        assert_eq!(list("winners").contains(&hash), mine["result"] == "won", "{mine}");
    }

    // The verifier, as a process: the document verifies; a tampered one does not.
    let (dir, url) = (world.app.db.dir.path(), world.app.db.url.as_str());
    let winner = entrants
        .iter()
        .find(|e| e.citizen != capped.citizen && winners.contains(&entrant_hash(&salt, &e.citizen)));
    let winner = winner.expect("a winner").citizen.to_string();
    let (exit, out) = verify(dir, url, &audit, &["--citizen-id", &winner]);
    assert_eq!(exit, Some(0), "{out}");
    assert!(
        out.contains("OK: seed and salt match their commitments; 6 entrants, 3 winners, 1 skipped"),
        "{out}"
    );
    assert!(out.contains("among the entrants and among the winners"), "{out}");
    // The last in draw order put in the place of the third winner.
    let mut swapped = audit.clone();
    swapped["winners"][2] = json!(entrant_hash(&salt, &entrants[ranked[5].1].citizen));
    let (exit, out) = verify(dir, url, &swapped, &[]);
    assert_eq!(exit, Some(1), "{out}");
    assert!(out.contains("MISMATCH: winners by the draw but not published"), "{out}");
    let mut reseeded = audit.clone();
    reseeded["seed"] = json!("another seed");
    let (exit, out) = verify(dir, url, &reseeded, &[]);
    assert_eq!(exit, Some(1), "{out}");
    assert!(out.contains("MISMATCH: SHA-256 of the seed is not seed_sha256"), "{out}");

    // A batch drawn before the audit existed (algorithm 1) has none.
    let old =
        format!("UPDATE batches SET lottery_algorithm = 1 WHERE {}", world.app.db.uuid_equals("id", &id));
    assert_eq!(world.app.db.raw(&old).await, Ok(1));
    let (status, body) = world.app.get(&audit_path, None).await;
    assert_eq!((status, code(&body)), (409, "draw_not_auditable"), "{body}");
}
