//! The wire contract: properties of the OpenAPI document the running server serves. The router
//! and the document are built from the same declarations (`utoipa-axum`), so every served route
//! is listed; these tests check that each listed operation says what it takes and answers.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::{Backend, TestApp};

/// Operations whose success answer is not JSON, with the content type they declare instead.
const NON_JSON_ANSWERS: [(&str, &str); 3] =
    [("metrics", "text/plain"), ("payout_csv", "text/csv"), ("openapi", "application/json")];

/// Writes that take no body at all (the path says what to do; a body sent is not read).
const BODILESS_WRITES: [&str; 10] = [
    "suspend_merchant",
    "activate_merchant",
    "revoke_terminal",
    "freeze_card",
    "unfreeze_card",
    "card_qr",
    "close_season",
    "enter_lottery",
    "voucher_qr",
    "revoke_citizen_sessions",
];

/// Writes whose request body is not yet declared: the test fails when one of them gets declared
/// and stays listed, so the list only shrinks.
const UNDECLARED_BODIES: &[&str] = &[];

/// Operations under a per-citizen or per-identity rate (`src/http/rate_limit.rs`): they answer 429.
const RATE_LIMITED: [&str; 8] = [
    "register_citizen",
    "send_code",
    "sign_in",
    "claim_voucher",
    "exchange_for_card_points",
    "card_qr",
    "voucher_qr",
    "enter_lottery",
];

/// Operations whose body is read with `ApiJson`, which refuses another Content-Type with 415.
const JSON_CONTENT_TYPE_REQUIRED: [&str; 4] =
    ["register_citizen", "sign_in", "send_code", "create_staff_key"];

/// The document, fetched from a spawned server (the backend does not change it).
async fn document() -> Value {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (status, document) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200, "{document}");
    document
}

/// Every operation as (method, path, operation).
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let paths = document["paths"].as_object().expect("paths");
    let methods = ["get", "put", "post", "delete", "patch"];
    let mut all = Vec::new();
    for (path, item) in paths {
        for method in methods {
            if let Some(operation) = item.get(method) {
                all.push((method.to_owned(), path.clone(), operation.clone()));
            }
        }
    }
    all
}

fn id(operation: &Value) -> &str {
    operation["operationId"].as_str().unwrap_or("(no operationId)")
}

fn statuses(operation: &Value) -> BTreeSet<String> {
    operation["responses"].as_object().map(|r| r.keys().cloned().collect()).unwrap_or_default()
}

fn parameters_in<'a>(operation: &'a Value, place: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let parameters = operation["parameters"].as_array().map(Vec::as_slice).unwrap_or_default();
    parameters.iter().filter(move |p| p["in"] == place).filter_map(|p| p["name"].as_str())
}

fn scheme_names(operation: &Value) -> Vec<String> {
    let requirements = operation["security"].as_array().map(Vec::as_slice).unwrap_or_default();
    requirements.iter().filter_map(Value::as_object).flat_map(|r| r.keys().cloned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_ids_are_unique_and_every_route_is_listed() {
    let document = document().await;
    let operations = operations(&document);
    let mut seen = BTreeSet::new();
    for (method, path, operation) in &operations {
        assert!(operation["operationId"].is_string(), "{method} {path} has no operationId");
        assert!(seen.insert(id(operation).to_owned()), "operationId {} used twice", id(operation));
    }
    for (method, path) in [
        ("post", "/v1/batches/{id}/entries"),
        ("get", "/v1/batches/{id}/entries"),
        ("post", "/v1/batches/{id}/draw"),
        ("get", "/v1/batches/{id}/draw/audit"),
        ("get", "/openapi.json"),
    ] {
        assert!(document["paths"][path][method].is_object(), "{method} {path} is not in the document");
    }
    assert!(operations.len() >= 60, "only {} operations", operations.len());
    // The lottery's audit is public (no key), and its document a declared schema.
    let audit = &document["paths"]["/v1/batches/{id}/draw/audit"]["get"];
    assert_eq!(scheme_names(audit), Vec::<String>::new(), "the audit takes no key");
    let schema = &document["components"]["schemas"]["LotteryAudit"]["properties"];
    for field in
        ["seed", "seed_sha256", "salt", "salt_sha256", "committed_at", "entrants", "winners", "stock"]
    {
        assert!(schema[field].is_object(), "LotteryAudit declares {field}: {schema}");
    }
    let named = RATE_LIMITED
        .iter()
        .chain(&JSON_CONTENT_TYPE_REQUIRED)
        .chain(&BODILESS_WRITES)
        .chain(UNDECLARED_BODIES)
        .chain(NON_JSON_ANSWERS.iter().map(|(name, _)| name));
    for name in named {
        assert!(seen.contains(*name), "this test names {name}, which is no operation id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_declares_its_success_answer_and_its_body() {
    let document = document().await;
    let (mut missing, mut bodiless) = (BTreeSet::new(), BTreeSet::new());
    for (method, path, operation) in operations(&document) {
        let responses = operation["responses"].as_object().expect("responses");
        let success: Vec<(&String, &Value)> =
            responses.iter().filter(|(status, _)| status.starts_with('2')).collect();
        assert!(!success.is_empty(), "{method} {path} declares no success answer");
        // 204 No Content has no body to describe, and must not claim one.
        let (empty, success): (Vec<_>, Vec<_>) =
            success.into_iter().partition(|(status, _)| *status == "204");
        for (_, answer) in empty {
            assert!(answer["content"].is_null(), "{method} {path}: a 204 with content");
        }
        let success = success.into_iter().map(|(_, answer)| answer);
        let non_json = NON_JSON_ANSWERS.iter().find(|(name, _)| *name == id(&operation));
        for answer in success {
            match non_json {
                Some((_, content_type)) => {
                    assert!(answer["content"][content_type].is_object(), "{method} {path}: no {content_type}")
                }
                None if answer["content"]["application/json"]["schema"].is_object() => {}
                None => {
                    missing.insert(id(&operation).to_owned());
                }
            }
        }
        let writes = method == "post" || method == "put";
        if writes && !BODILESS_WRITES.contains(&id(&operation)) {
            let content = operation["requestBody"]["content"].as_object();
            let declared =
                content.is_some_and(|c| !c.is_empty() && c.values().all(|m| m["schema"].is_object()));
            if !declared {
                bodiless.insert(id(&operation).to_owned());
            }
        }
    }
    let listed = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect::<BTreeSet<_>>();
    assert!(missing.is_empty(), "success answers without a schema: {missing:?}");
    assert_eq!(
        bodiless,
        listed(UNDECLARED_BODIES),
        "writes without a declared body (update UNDECLARED_BODIES)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_declares_the_errors_of_what_it_takes() {
    let document = document().await;
    let schemes = document["components"]["securitySchemes"].as_object().expect("security schemes");
    for name in [
        "staff_key",
        "citizen_token",
        "terminal_id",
        "terminal_timestamp",
        "terminal_nonce",
        "terminal_signature",
    ] {
        assert!(schemes.contains_key(name), "security scheme {name} is not declared");
    }
    for (method, path, operation) in operations(&document) {
        let declared = statuses(&operation);
        let mut needed = vec!["503"];
        let names = scheme_names(&operation);
        for name in &names {
            assert!(schemes.contains_key(name), "{method} {path} names an undeclared scheme {name}");
        }
        if names.iter().any(|n| n.starts_with("terminal_")) {
            assert_eq!(names.len(), 4, "{method} {path}: the four terminal schemes go together");
        }
        if parameters_in(&operation, "header").any(|h| h.starts_with("Wenhui-")) {
            panic!("{method} {path} declares a Wenhui-* header: a terminal signature is a security scheme");
        }
        if !names.is_empty() {
            needed.push("401");
        }
        if names.iter().any(|n| n == "staff_key") {
            needed.push("403");
        }
        if operation["requestBody"].is_object() {
            needed.extend(["400", "413", "422"]);
        }
        if parameters_in(&operation, "query").next().is_some() {
            needed.extend(["400", "422"]);
        }
        if parameters_in(&operation, "path").next().is_some() {
            needed.push("404");
        }
        if parameters_in(&operation, "header").any(|h| h.eq_ignore_ascii_case("idempotency-key")) {
            needed.extend(["400", "409"]);
        }
        if RATE_LIMITED.contains(&id(&operation)) {
            needed.push("429");
        }
        if JSON_CONTENT_TYPE_REQUIRED.contains(&id(&operation)) {
            needed.push("415");
        }
        for status in needed {
            assert!(declared.contains(status), "{method} {path} does not declare {status}");
        }
        for status in declared.iter().filter(|s| s.starts_with('4') || s.starts_with('5')) {
            let schema = &operation["responses"][status]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                schema, "#/components/schemas/ErrorBody",
                "{method} {path} {status}: not the error body"
            );
        }
    }
}

/// `openapi-spec-validator` (PyPI, installed first if it is not) on the served document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_passes_openapi_spec_validator() {
    crate::machine::openapi_validator();
    let document = document().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).expect("write the document");
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "openapi-spec-validator refused the document:\n{said}");
}
