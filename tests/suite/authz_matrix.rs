//! The authorization matrix: every staff-facing operation, called by every role from every
//! region relation, against a seeded season of Shandong (370000) with money in two of its
//! cities. The expected outcomes are [`TABLE`], which must equal the table in docs/staff.md,
//! and every operation the OpenAPI document secures with a staff key must have a row: a new
//! route is refused by this test until its rule is written down and holds.
//!
//! Region relations, to the resource: `P` a key of the resource's province (370000), `C` of
//! its city (Qingdao, 370200: the merchant, the citizen, the city batch), `O` of another city of
//! the province (Jinan, 370100), `X` of another province (330000 or 330100).

use serde_json::{Value, json};
use wenhui::domain::staff::Role;
use wenhui_merchant_sdk::client::TillKey;

use crate::both_backends;
use crate::common::{Backend, read};
use crate::finance::Script;

/// One row: the operation, then the relations allowed for province_admin, city_admin,
/// finance and auditor ("-" for none).
type Row = (&'static str, [&'static str; 4]);

/// The rules, as stated in docs/staff.md ("Who may do what, where").
const TABLE: &[Row] = &[
    ("season_report", ["-", "-", "PCO", "PCO"]),
    ("reconcile_season", ["-", "-", "P", "P"]),
    ("list_season_settlements", ["-", "-", "PCO", "PCO"]),
    ("season_fraud_scores", ["-", "-", "PCO", "PCO"]),
    ("get_settlement", ["-", "-", "PCO", "PCO"]),
    ("payout_csv", ["-", "-", "PCO", "PCO"]),
    ("settle", ["-", "-", "P", "-"]),
    ("mark_settlement_paid", ["-", "-", "P", "-"]),
    ("close_season", ["-", "-", "P", "-"]),
    ("hold_merchant", ["-", "-", "P", "-"]),
    ("season_holds", ["-", "-", "PCO", "PCO"]),
    ("lift_hold", ["-", "-", "P", "-"]),
    ("release_held_line", ["-", "-", "P", "-"]),
    ("propose_held_line_rejection", ["-", "-", "P", "-"]),
    ("approve_held_line_rejection", ["-", "-", "P", "-"]),
    ("create_season", ["P", "-", "-", "-"]),
    ("set_points_rate", ["P", "-", "-", "-"]),
    ("set_hold_threshold", ["P", "-", "-", "-"]),
    ("add_budget", ["-", "C", "-", "-"]),
    ("create_batch", ["-", "C", "-", "-"]),
    ("draw_lottery", ["-", "C", "-", "-"]),
    ("list_lottery_entrants", ["P", "C", "PC", "PC"]),
    ("waitlist_summary", ["P", "C", "PC", "PC"]),
    ("list_merchants", ["P", "C", "PC", "PC"]),
    ("create_merchant", ["P", "C", "-", "-"]),
    ("suspend_merchant", ["P", "C", "-", "-"]),
    ("activate_merchant", ["P", "C", "-", "-"]),
    ("register_terminal", ["P", "C", "-", "-"]),
    ("revoke_terminal", ["P", "C", "-", "-"]),
    ("set_card_terms", ["P", "C", "-", "-"]),
    ("change_settlement_account", ["P", "C", "-", "-"]),
    ("approve_settlement_account_request", ["P", "C", "-", "-"]),
    ("reject_settlement_account_request", ["P", "C", "-", "-"]),
    ("list_settlement_account_requests", ["P", "C", "PC", "PC"]),
    ("list_settlement_account_changes", ["P", "C", "PC", "PC"]),
    ("merchant_statement", ["-", "-", "PC", "PC"]),
    ("reconcile_merchant_journal", ["-", "-", "PC", "-"]),
    ("freeze_card", ["P", "-", "-", "-"]),
    ("unfreeze_card", ["P", "-", "-", "-"]),
    ("revoke_citizen_sessions", ["P", "-", "-", "-"]),
    ("create_staff_key", ["P", "C", "-", "-"]),
    ("verify_ledger", ["-", "-", "PCOX", "PCOX"]),
    ("latest_checkpoint", ["PX", "COX", "PCOX", "PCOX"]),
    ("staff_me", ["PX", "COX", "PCOX", "PCOX"]),
];

/// The callers: a role, its relation to the resources, its region.
const CALLERS: &[(Role, char, &str)] = &[
    (Role::ProvinceAdmin, 'P', "370000"),
    (Role::ProvinceAdmin, 'X', "330000"),
    (Role::CityAdmin, 'C', "370200"),
    (Role::CityAdmin, 'O', "370100"),
    (Role::CityAdmin, 'X', "330100"),
    (Role::Finance, 'P', "370000"),
    (Role::Finance, 'C', "370200"),
    (Role::Finance, 'O', "370100"),
    (Role::Finance, 'X', "330000"),
    (Role::Finance, 'X', "330100"),
    (Role::Auditor, 'P', "370000"),
    (Role::Auditor, 'C', "370200"),
    (Role::Auditor, 'O', "370100"),
    (Role::Auditor, 'X', "330000"),
    (Role::Auditor, 'X', "330100"),
];

fn column(role: Role) -> usize {
    match role {
        Role::ProvinceAdmin => 0,
        Role::CityAdmin => 1,
        Role::Finance => 2,
        Role::Auditor => 3,
    }
}

/// The seeded world the matrix runs against.
struct Seed {
    s: Script,
    season: String,
    settlement: String,
    merchant: String,
    terminal: String,
    lottery: String,
    waitlist: String,
    card: String,
    citizen: String,
    request: String,
    public_key: String,
}

async fn seed(backend: Backend) -> Seed {
    let (s, _, _) = Script::two_redeemed_two_claimed(backend).await;
    let season = s.world.season_id.clone();
    // The bookstore on hold: its line is held, for the decisions on it.
    let hold = json!({"merchant_id": s.bookstore.0, "reason": "矩阵"});
    let (status, held) = s
        .world
        .app
        .post_idem(&format!("/v1/seasons/{season}/holds"), Some(&s.finance), "matrix-hold", hold)
        .await;
    assert_eq!(status, 201, "{held}");
    let (status, settled) = s.settle("matrix-seed").await;
    assert_eq!(status, 201, "{settled}");
    let settlement = settled["settlement_id"].as_str().expect("settlement").to_owned();
    let merchant = s.bookstore.0.clone();
    let admin = s.world.province_admin.clone();
    let dir = s.world.app.db.dir.path().to_owned();
    let (_, terminal, _) = crate::till::terminal(&s.world, &admin, &merchant, &dir).await;
    let city_admin = s.world.app.staff_key(Role::CityAdmin, "370200").await;
    let hex = "ab".repeat(32);
    let lottery = s
        .world
        .batch_as(
            &city_admin,
            json!({"name": "摇号", "issuer": "370200", "face_value": "5.00", "min_spend": "20.00", "stock": 5,
                   "claim_closes_at": s.world.at(4 * 3_600), "lottery": {"seed_sha256": hex}}),
        )
        .await;
    let lottery = lottery["id"].as_str().expect("lottery batch").to_owned();
    let waitlist = s
        .world
        .batch_as(
            &city_admin,
            json!({"name": "排队", "issuer": "370200", "face_value": "5.00", "min_spend": "20.00", "stock": 5,
                   "claim_closes_at": s.world.at(4 * 3_600), "lottery": {"seed_sha256": hex, "waitlist": true}}),
        )
        .await;
    let waitlist = waitlist["id"].as_str().expect("waitlist batch").to_owned();
    // A citizen of Qingdao (370202...) with a card.
    let id_number = wenhui::domain::citizen::synthetic_id_number("370202", "19850505", 77);
    let body = json!({"name": "李四", "id_number": id_number, "phone": "13700000077"});
    let (status, citizen) = s.world.app.register_citizen(body).await;
    assert_eq!(status, 201, "{citizen}");
    let token = citizen["token"].as_str().expect("token").to_owned();
    let citizen = citizen["citizen_id"].as_str().expect("citizen").to_owned();
    let (status, card) = s.world.app.post("/v1/me/card", Some(&token), json!({"via": "mobile"})).await;
    assert_eq!(status, 201, "{card}");
    let card = card["id"].as_str().expect("card").to_owned();
    // A settlement-account request asked by a key outside the matrix, so that every matrix
    // admin is another person than the asker.
    let path = format!("/v1/merchants/{merchant}/settlement-account");
    let body = json!({"bank": "工商银行", "account_no": "6222000033334444", "account_name": "某书店", "reason": "换行"});
    let (status, asked) = put(&s, &path, &admin, body).await;
    assert_eq!(status, 202, "{asked}");
    let request = asked["request"]["id"].as_str().expect("request").to_owned();
    let key = wenhui::app::signing::SigningKey::from_pkcs8(&crate::ledger::test_key()).expect("key");
    wenhui::app::audit::checkpoint(s.world.app.store(), &key).await.expect("checkpoint");
    let public_key = TillKey::generate().expect("till key").public_key_base64url();
    Seed {
        s,
        season,
        settlement,
        merchant,
        terminal: terminal.to_string(),
        lottery,
        waitlist,
        card,
        citizen,
        request,
        public_key,
    }
}

async fn put(s: &Script, path: &str, key: &str, body: Value) -> (u16, Value) {
    let app = &s.world.app;
    read(app.client.put(app.url(path)).bearer_auth(key).json(&body).send().await.expect("send")).await
}

type Request = (&'static str, String, Option<Value>);

/// The request an operation makes: method, path, body (JSON unless the path is the journal's).
fn request(op: &str, seed: &Seed) -> Request {
    season_request(op, seed).unwrap_or_else(|| other_request(op, seed))
}

/// The requests about the season, its money and its batches.
fn season_request(op: &str, seed: &Seed) -> Option<Request> {
    let (season, settlement) = (&seed.season, &seed.settlement);
    let now = seed.s.now;
    Some(match op {
        "season_report" => ("GET", format!("/v1/seasons/{season}/report"), None),
        "reconcile_season" => ("GET", format!("/v1/seasons/{season}/reconciliation"), None),
        "list_season_settlements" => ("GET", format!("/v1/seasons/{season}/settlements"), None),
        "season_fraud_scores" => ("GET", format!("/v1/seasons/{season}/fraud/scores"), None),
        "get_settlement" => ("GET", format!("/v1/settlements/{settlement}"), None),
        "payout_csv" => ("GET", format!("/v1/settlements/{settlement}/payout.csv"), None),
        "settle" => {
            ("POST", "/v1/settlements".into(), Some(json!({"season_id": season, "cut_off": now.to_string()})))
        }
        "hold_merchant" => (
            "POST",
            format!("/v1/seasons/{season}/holds"),
            Some(json!({"merchant_id": seed.merchant, "reason": "投诉"})),
        ),
        "season_holds" => ("GET", format!("/v1/seasons/{season}/holds"), None),
        "lift_hold" => (
            "POST",
            format!("/v1/seasons/{season}/holds/{}/lift", seed.merchant),
            Some(json!({"note": "核实无误"})),
        ),
        "release_held_line" => (
            "POST",
            format!("/v1/settlements/{settlement}/holds/{}/release", seed.merchant),
            Some(json!({"note": "放行"})),
        ),
        "propose_held_line_rejection" => (
            "POST",
            format!("/v1/settlements/{settlement}/holds/{}/reject", seed.merchant),
            Some(json!({"note": "拒付"})),
        ),
        "approve_held_line_rejection" => (
            "POST",
            format!("/v1/settlements/{settlement}/holds/{}/reject/approve", seed.merchant),
            Some(json!({})),
        ),
        "mark_settlement_paid" => {
            ("POST", format!("/v1/settlements/{settlement}/paid"), Some(json!({"payout_ref": "BANK-1"})))
        }
        "close_season" => ("POST", format!("/v1/seasons/{season}/close"), Some(json!({}))),
        "create_season" => {
            let body = json!({"name": "另一季", "province": "370000", "starts_at": now.to_string(),
                "ends_at": now.plus_seconds(86_400).to_string(), "budgets": [{"funder": "370000", "amount": "1.00"}]});
            ("POST", "/v1/seasons".into(), Some(body))
        }
        "set_hold_threshold" => {
            ("PUT", format!("/v1/seasons/{season}/hold-threshold"), Some(json!({"hold_score_threshold": 80})))
        }
        "set_points_rate" => {
            ("PUT", format!("/v1/seasons/{season}/points-rate"), Some(json!({"points_per_yuan": 1})))
        }
        "add_budget" => (
            "POST",
            format!("/v1/seasons/{season}/budgets"),
            Some(json!({"funder": "370200", "amount": "1.00"})),
        ),
        "create_batch" => {
            let body = json!({"name": "矩阵券", "issuer": "370200", "kind": "threshold", "face_value": "1.00",
                "min_spend": "10.00", "stock": 1, "per_citizen_limit": 1, "valid_hours": 48,
                "claim_opens_at": now.to_string(), "claim_closes_at": now.plus_seconds(3_600).to_string(),
                "categories": ["bookstore"]});
            ("POST", format!("/v1/seasons/{season}/batches"), Some(body))
        }
        "draw_lottery" => ("POST", format!("/v1/batches/{}/draw", seed.lottery), Some(json!({"seed": "x"}))),
        "list_lottery_entrants" => ("GET", format!("/v1/batches/{}/entries", seed.lottery), None),
        "waitlist_summary" => ("GET", format!("/v1/batches/{}/waitlist", seed.waitlist), None),
        _ => return None,
    })
}

/// The requests about the merchant, the citizen, keys and the ledger.
fn other_request(op: &str, seed: &Seed) -> Request {
    let (season, merchant) = (&seed.season, &seed.merchant);
    let account = || json!({"bank": "农业银行", "account_no": "6222000055556666", "account_name": "某书店", "reason": "再换"});
    match op {
        "list_merchants" => ("GET", "/v1/merchants?city=370200".into(), None),
        "create_merchant" => {
            let body = json!({"name": "矩阵店", "credit_code": crate::till::credit_code(901), "category": "bookstore",
                "city": "370200", "settlement_account": {"bank": "青岛银行", "account_no": "6222000011119999", "account_name": "矩阵店"}});
            ("POST", "/v1/merchants".into(), Some(body))
        }
        "suspend_merchant" => ("POST", format!("/v1/merchants/{merchant}/suspend"), Some(json!({}))),
        "activate_merchant" => ("POST", format!("/v1/merchants/{merchant}/activate"), Some(json!({}))),
        "register_terminal" => (
            "POST",
            format!("/v1/merchants/{merchant}/terminals"),
            Some(json!({"public_key": seed.public_key, "label": "matrix"})),
        ),
        "revoke_terminal" => {
            ("POST", format!("/v1/merchants/{merchant}/terminals/{}/revoke", seed.terminal), Some(json!({})))
        }
        "set_card_terms" => {
            ("PUT", format!("/v1/merchants/{merchant}/card-terms"), Some(json!({"percent": 5})))
        }
        "change_settlement_account" => {
            ("PUT", format!("/v1/merchants/{merchant}/settlement-account"), Some(account()))
        }
        "approve_settlement_account_request" => (
            "POST",
            format!("/v1/merchants/{merchant}/settlement-account/requests/{}/approve", seed.request),
            Some(json!({})),
        ),
        "reject_settlement_account_request" => (
            "POST",
            format!("/v1/merchants/{merchant}/settlement-account/requests/{}/reject", seed.request),
            Some(json!({})),
        ),
        "list_settlement_account_requests" => {
            ("GET", format!("/v1/merchants/{merchant}/settlement-account/requests"), None)
        }
        "list_settlement_account_changes" => {
            ("GET", format!("/v1/merchants/{merchant}/settlement-account/changes"), None)
        }
        "merchant_statement" => ("GET", format!("/v1/merchants/{merchant}/statement?season={season}"), None),
        "reconcile_merchant_journal" => (
            "POST",
            format!("/v1/seasons/{season}/reconciliation/merchant-journal?merchant={merchant}"),
            None,
        ),
        "freeze_card" => ("POST", format!("/v1/cards/{}/freeze", seed.card), Some(json!({}))),
        "unfreeze_card" => ("POST", format!("/v1/cards/{}/unfreeze", seed.card), Some(json!({}))),
        "revoke_citizen_sessions" => {
            ("POST", format!("/v1/citizens/{}/sessions/revoke", seed.citizen), Some(json!({})))
        }
        "create_staff_key" => (
            "POST",
            "/v1/staff/keys".into(),
            Some(
                json!({"role": "finance", "region": "370200", "label": "matrix", "name": "某人", "phone": "13800138000"}),
            ),
        ),
        "verify_ledger" => ("GET", "/v1/ledger/verify".into(), None),
        "latest_checkpoint" => ("GET", "/v1/ledger/checkpoints/latest".into(), None),
        "staff_me" => ("GET", "/v1/staff/me".into(), None),
        other => panic!("the matrix has no request for {other}: add one with its row"),
    }
}

async fn call(seed: &Seed, key: &str, op: &str, n: usize) -> (u16, String) {
    let app = &seed.s.world.app;
    let (method, path, body) = request(op, seed);
    let url = app.url(&path);
    let builder = match method {
        "GET" => app.client.get(url),
        "PUT" => app.client.put(url),
        _ => app.client.post(url).header("idempotency-key", format!("matrix-{op}-{n}")),
    };
    let builder = builder.bearer_auth(key);
    let builder = match body {
        Some(body) => builder.json(&body),
        None if method == "POST" => builder.header("content-type", "application/x-ndjson").body(""),
        None => builder,
    };
    let response = builder.send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

async fn walk_the_matrix(backend: Backend) {
    let seed = seed(backend).await;
    let mut keys = Vec::new();
    for (role, relation, region) in CALLERS {
        keys.push((*role, *relation, *region, seed.s.world.app.staff_key(*role, region).await));
    }
    let mut failures = Vec::new();
    let mut n = 0;
    for (op, allowed) in TABLE {
        for (role, relation, region, key) in &keys {
            n += 1;
            let expect_allowed = allowed[column(*role)].contains(*relation);
            let (status, body) = call(&seed, key, op, n).await;
            let is_get = request(op, &seed).0 == "GET";
            // A read passes with 2xx; a write the walk repeats may meet its business rules
            // (409, 422) once authorized. A refusal is 403, or 404 where it hides the resource.
            let ok = if expect_allowed {
                if is_get {
                    (200..300).contains(&status)
                } else {
                    status < 500 && ![401, 403, 404].contains(&status)
                }
            } else {
                status == 403 || status == 404
            };
            if !ok {
                let verdict = if expect_allowed { "allowed" } else { "refused" };
                failures.push(format!(
                    "{op} by {role}@{region} ({relation}): expected {verdict}, got {status} {body:.200}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {n} cases broke the table:\n{}", failures.len(), failures.join("\n"));
    staff_routes_are_all_in_the_table(&seed).await;
}

/// Every operation secured by a staff key has a row: a new route fails here until its rule is
/// stated in the table (and in docs/staff.md).
async fn staff_routes_are_all_in_the_table(seed: &Seed) {
    let (status, document) = seed.s.world.app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    let mut missing = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let staff = operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("staff_key").is_some()));
            let id = operation["operationId"].as_str().unwrap_or_default();
            if staff && !TABLE.iter().any(|(op, _)| *op == id) {
                missing.push(format!("{method} {path} ({id})"));
            }
        }
    }
    assert!(missing.is_empty(), "staff operations with no row in the authorization table: {missing:?}");
}

/// The table in docs/staff.md is the test's table, row for row.
#[test]
fn the_documented_table_is_the_tested_table() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/staff.md"))
        .expect("docs/staff.md");
    let section = doc.split("## Who may do what, where").nth(1).expect("the section");
    let rows: Vec<(String, [String; 4])> = section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let op = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let cell = |i: usize| cells.get(i).map(|c| c.replace('—', "-")).unwrap_or_default();
            Some((op.to_owned(), [cell(3), cell(4), cell(5), cell(6)]))
        })
        .collect();
    let table: Vec<(String, [String; 4])> =
        TABLE.iter().map(|(op, cells)| ((*op).to_owned(), cells.map(str::to_owned))).collect();
    assert_eq!(rows, table, "docs/staff.md's table and TABLE differ");
}

both_backends!(walk_the_matrix);
