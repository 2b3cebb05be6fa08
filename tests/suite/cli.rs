//! The `wenhui` binary itself: serve with no configuration, keys, verify, export, tamper.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use wenhui::domain::ledger::{AccountAddress, AccountSpec, NewEntry};
use wenhui::domain::money::Fen;

use crate::both_backends;
use crate::common::{Backend, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_wenhui");

pub fn wenhui(dir: &Path, url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("DATABASE_URL", url)
        .env("WENHUI_DATA_DIR", dir.join("data"))
        .env_remove("WENHUI_LISTEN")
        .output()
        .expect("run wenhui")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts `wenhui serve` and waits for its "listening" line.
pub fn spawn_serve(dir: &Path, envs: &[(&str, &str)], clear_env: bool) -> Child {
    let mut command = Command::new(BIN);
    command.arg("serve").current_dir(dir).stdout(Stdio::null()).stderr(Stdio::piped());
    if clear_env {
        command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    }
    command.env("WENHUI_LOG_FORMAT", "json");
    // The pool a test's database reserved connections for (`common::TestDb::start_node`).
    command.env("WENHUI_DB_POOL_SIZE", crate::common::TEST_POOL_SIZE.to_string());
    for (key, value) in envs {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.expect("log line");
        if line.contains("wenhui listening") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

fn post_some_entries(db: &TestDb) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store = db.store().await;
        let source =
            AccountSpec::debit_unlimited(AccountAddress::from_segments(&["world", "treasury", "370000"]));
        for i in 0..6 {
            let pool = AccountSpec::credit_limited(AccountAddress::from_segments(&["test", "pool", "a"]));
            let entry = NewEntry::transfer(
                "budget",
                format!("cli-{i}"),
                source.clone(),
                pool,
                Fen::new(100 + i).expect("fen"),
            );
            store.post_entries(&[entry]).await.expect("post");
        }
    });
}

#[test]
fn serve_with_no_configuration_answers_healthz() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = spawn_serve(dir.path(), &[], true);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let answer = runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        client.get("http://127.0.0.1:8080/healthz").send().await.expect("healthz").text().await.expect("text")
    });
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("the process's status");
    unsafe_kill(&mut child, "TERM");
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "graceful shutdown on SIGTERM exits 0, got {exit}");
    // src/main.rs: no transparent huge pages (a page fault zeroing 2 MiB on the claim writer's thread).
    assert!(status.lines().any(|line| line.split_whitespace().eq(["THP_enabled:", "0"])), "{status}");
    assert!(answer.contains("ok"), "{answer}");
    assert!(dir.path().join("data/wenhui.db").exists(), "embedded database in the data directory");
    let key = dir.path().join("data/keys/ledger-checkpoint.pk8");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(key).expect("key file").permissions().mode() & 0o777, 0o600);
}

/// Sends a signal by name with the system `kill` (keeps the test free of unsafe code).
pub fn unsafe_kill(child: &mut Child, signal: &str) {
    let status =
        Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

both_backends!(
    keys_create_prints_a_working_key,
    verify_export_and_tamper_from_the_command_line,
    revoking_a_key_revokes_every_key_minted_below_it,
    a_console_key_belongs_to_its_person
);

/// `keys create --name --phone` names the console key's person: a second console key for the
/// same phone is the same person, who may not approve a request of a key they enrolled; a
/// console key of another person may.
async fn a_console_key_belongs_to_its_person(backend: Backend) {
    use serde_json::json;
    let app = crate::common::TestApp::spawn(backend).await;
    let dir = app.db.dir.path();
    let create = |extra: &[&str]| {
        let mut args = vec!["keys", "create", "--role", "province_admin", "--region", "370000"];
        args.extend_from_slice(extra);
        let output = wenhui(dir, &app.db.url, &args);
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout).trim().to_owned()
    };
    let person = ["--name", "省管理员", "--phone", "13900000001"];
    let root = create(&person);
    let same_person = create(&person);
    let other_person = create(&["--name", "另一人", "--phone", "13900000002"]);
    let half = wenhui(
        dir,
        &app.db.url,
        &["keys", "create", "--role", "auditor", "--region", "370000", "--name", "x"],
    );
    assert!(!half.status.success(), "--name needs --phone");
    let (_, asker) = app.enrol_key(&root, "city_admin", "370200").await;
    let body = json!({"name": "店", "credit_code": crate::till::credit_code(7), "category": "bookstore", "city": "370200",
        "settlement_account": {"bank": "青岛银行", "account_no": "6222000011112222", "account_name": "某书店"}});
    let (status, merchant) = app.post_idem("/v1/merchants", Some(&asker), "m-cli", body).await;
    assert_eq!(status, 201, "{merchant}");
    let path = format!("/v1/merchants/{}/settlement-account", merchant["id"].as_str().expect("id"));
    let account = json!({"bank": "中国银行", "account_no": "6217000099998888", "account_name": "某书店有限公司",
        "reason": "the merchant's letter"});
    let request = app.client.put(app.url(&path)).bearer_auth(&asker).json(&account);
    let (status, asked) = crate::common::read(request.send().await.expect("send")).await;
    assert_eq!(status, 202, "{asked}");
    let approve = format!("{path}/requests/{}/approve", asked["request"]["id"].as_str().expect("id"));
    let (status, body) = app.post(&approve, Some(&same_person), json!({})).await;
    assert_eq!((status, crate::common::code(&body)), (403, "same_approver"), "{body}");
    let (status, body) = app.post(&approve, Some(&other_person), json!({})).await;
    assert_eq!((status, body["request"]["status"].as_str()), (200, Some("approved")), "{body}");
}

/// `wenhui keys revoke` reaches every key minted below the key, at any depth, and nothing else:
/// not the key's minter, nor a sibling minted by the same minter.
async fn revoking_a_key_revokes_every_key_minted_below_it(backend: Backend) {
    use wenhui::domain::staff::{Role, StaffScope};
    let app = crate::common::TestApp::spawn(backend).await;
    let scope = StaffScope::new(Role::ProvinceAdmin, "370000".parse().expect("region")).expect("scope");
    let root = wenhui::app::staff::mint(app.store(), scope, "root", None).await.expect("mint").secret;
    let mint = |by: String, role: &'static str, region: &'static str| {
        let app = &app;
        async move { app.enrol_key(&by, role, region).await }
    };
    let (city_id, city) = mint(root.clone(), "city_admin", "370200").await;
    let (child_id, child) = mint(city.clone(), "city_admin", "370200").await;
    let (grandchild_id, grandchild) = mint(child.clone(), "finance", "370200").await;
    let (_, sibling) = mint(root.clone(), "city_admin", "370100").await;
    let revoked = wenhui(app.db.dir.path(), &app.db.url, &["keys", "revoke", &city_id]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let revoked: serde_json::Value = serde_json::from_slice(&revoked.stdout).expect("json");
    let mut below: Vec<&str> =
        revoked["revoked_below"].as_array().expect("below").iter().filter_map(|v| v.as_str()).collect();
    below.sort_unstable();
    let mut expected = vec![child_id.as_str(), grandchild_id.as_str()];
    expected.sort_unstable();
    assert_eq!(below, expected);
    for key in [&city, &child, &grandchild] {
        let (status, body) = app.get("/v1/staff/me", Some(key)).await;
        assert_eq!((status, crate::common::code(&body)), (401, "invalid_key"), "{body}");
    }
    for key in [&root, &sibling] {
        assert_eq!(app.get("/v1/staff/me", Some(key)).await.0, 200);
    }
}

async fn keys_create_prints_a_working_key(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = db.dir.path().to_owned();
    let out = wenhui(&dir, &db.url, &["keys", "create", "--role", "finance", "--region", "370200"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout);
    let key = key.trim_end_matches('\n');
    assert!(!key.contains('\n') && key.starts_with("wh_sk_"), "the key alone on stdout: {key:?}");
    let bad = wenhui(&dir, &db.url, &["keys", "create", "--role", "finance", "--region", "370201"]);
    assert!(!bad.status.success(), "a county code is not a staff scope");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let data_dir = dir.join("data");
    let envs = [
        ("DATABASE_URL", db.url.as_str()),
        ("WENHUI_LISTEN", listen.as_str()),
        ("WENHUI_DATA_DIR", data_dir.to_str().expect("utf8")),
    ];
    db.start_node(crate::common::TEST_POOL_SIZE);
    let mut child = spawn_serve(&dir, &envs, false);
    let client = reqwest::Client::new();
    let me_url = format!("http://{listen}/v1/staff/me");
    let me = client.get(&me_url).bearer_auth(key).send().await.expect("send");
    let status = me.status().as_u16();
    let body = me.text().await.expect("text");

    // Listed without its secret; revoked, it stops working at once on the running server.
    let listed = wenhui(&dir, &db.url, &["keys", "list"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listing = text(&listed.stdout);
    assert!(!listing.contains(key) && !listing.contains("wh_sk_"), "no secret in the listing: {listing}");
    let listing: serde_json::Value = serde_json::from_str(&listing).expect("json");
    let keys = listing["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0]["role"].as_str(), keys[0]["region"].as_str()), (Some("finance"), Some("370200")));
    assert!(keys[0]["revoked_at"].is_null());
    assert!(keys[0]["minted_by"].is_null(), "minted at the command line: {}", keys[0]);
    let id = keys[0]["id"].as_str().expect("id").to_owned();
    let revoked = wenhui(&dir, &db.url, &["keys", "revoke", &id]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let revoked: serde_json::Value = serde_json::from_slice(&revoked.stdout).expect("json");
    let revoked_at = revoked["revoked_at"].as_str().expect("revoked_at").to_owned();
    let after = client.get(&me_url).bearer_auth(key).send().await.expect("send");
    let after_status = after.status().as_u16();
    let after_body = after.text().await.expect("text");
    unsafe_kill(&mut child, "TERM");
    child.wait().expect("wait");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("370200"));
    assert_eq!(after_status, 401, "{after_body}");
    assert!(after_body.contains("invalid_key"), "{after_body}");
    // Revoking twice keeps the first time; an unknown id is an error.
    let again = wenhui(&dir, &db.url, &["keys", "revoke", &id]);
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(again["revoked_at"].as_str(), Some(revoked_at.as_str()));
    let unknown = wenhui(&dir, &db.url, &["keys", "revoke", &uuid::Uuid::now_v7().to_string()]);
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("no staff key"));
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn verify_export_and_tamper_from_the_command_line(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = db.dir.path().to_owned();
    let url = db.url.clone();
    {
        let db_ref = &db;
        tokio::task::block_in_place(|| post_some_entries(db_ref));
    }
    let verify = wenhui(&dir, &url, &["ledger", "verify"]);
    assert!(verify.status.success(), "{}{}", text(&verify.stdout), text(&verify.stderr));
    assert!(text(&verify.stdout).contains("6 entries checked"), "{}", text(&verify.stdout));
    let checkpoint = wenhui(&dir, &url, &["ledger", "checkpoint"]);
    assert!(checkpoint.status.success(), "{}", text(&checkpoint.stderr));
    let public_key = text(&wenhui(&dir, &url, &["ledger", "public-key"]).stdout).trim().to_owned();
    let export_path = dir.join("export.jsonl");
    let export = wenhui(&dir, &url, &["ledger", "export", "--out", export_path.to_str().expect("utf8")]);
    assert!(export.status.success(), "{}", text(&export.stderr));
    let offline = |file: &Path| {
        Command::new(BIN)
            .args(["ledger", "verify", "--file", file.to_str().expect("utf8"), "--public-key", &public_key])
            .env_remove("DATABASE_URL")
            .output()
            .expect("run")
    };
    let good = offline(&export_path);
    assert!(good.status.success(), "{}{}", text(&good.stdout), text(&good.stderr));
    let exported = std::fs::read_to_string(&export_path).expect("read");
    let forged_path = dir.join("forged.jsonl");
    std::fs::write(&forged_path, crate::ledger::append_mixed_unit_entry(&exported)).expect("write");
    let forged = offline(&forged_path);
    assert_eq!(forged.status.code(), Some(1), "5 points for 5 fen must fail: {}", text(&forged.stdout));
    let said = text(&forged.stdout);
    assert!(said.contains("seq 7") && said.contains("debits 0 fen != credits 5 fen"), "{said}");
    let edited_path = dir.join("edited.jsonl");
    std::fs::write(&edited_path, exported.replacen("\"amount_fen\":103", "\"amount_fen\":104", 1))
        .expect("write");
    let bad = offline(&edited_path);
    assert!(!bad.status.success(), "an edited export must fail");
    assert!(text(&bad.stdout).contains("seq 4"), "names the entry: {}", text(&bad.stdout));

    db.tamper_posting_amount(2, 5_000).await;
    let tampered = wenhui(&dir, &url, &["ledger", "verify"]);
    assert_eq!(tampered.status.code(), Some(1), "{}{}", text(&tampered.stdout), text(&tampered.stderr));
    assert!(text(&tampered.stdout).contains("seq 2"), "names the entry: {}", text(&tampered.stdout));
}
