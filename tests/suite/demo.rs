//! `wenhui demo` as a newcomer runs it: the real binary seeds a fresh data directory's embedded
//! database, prints the pages' addresses and a key for each role; `wenhui serve` then serves the
//! season, whose figures, ledger, keys and tills all work; a second demo there is refused.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{free_port, spawn_serve, unsafe_kill};
use crate::common::read;
use crate::till_cli::till_binary;

const BIN: &str = env!("CARGO_BIN_EXE_wenhui");

/// `wenhui ARGS` on the embedded default of `data` (no DATABASE_URL), listening on `listen`.
fn wenhui(dir: &Path, data: &Path, listen: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("WENHUI_ENV")
        .env("WENHUI_DATA_DIR", data)
        .env("WENHUI_LISTEN", listen)
        .envs(envs.iter().copied())
        .output()
        .expect("run wenhui")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The printed staff keys: (role, region, key).
fn printed_keys(stdout: &str) -> Vec<(String, String, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let key = words.iter().find(|w| w.starts_with("wh_sk_"))?;
            Some((words.first()?.to_string(), words.get(1)?.to_string(), key.to_string()))
        })
        .collect()
}

/// The word after `label` on the line that starts with it (after indentation).
fn printed(stdout: &str, label: &str) -> String {
    let line = stdout.lines().map(str::trim).find(|l| l.starts_with(label)).unwrap_or_default();
    line[label.len().min(line.len())..].split_whitespace().next().unwrap_or_default().to_owned()
}

#[test]
fn a_demo_seeds_a_fresh_data_directory_and_refuses_a_used_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");

    let seeded = wenhui(dir.path(), &data, &listen, &["demo", "--seed-only"], &[]);
    let stdout = text(&seeded.stdout);
    assert!(seeded.status.success(), "{stdout}\n{}", text(&seeded.stderr));
    assert_eq!(printed(&stdout, "citizen page"), format!("{base}/"), "{stdout}");
    assert_eq!(printed(&stdout, "console"), format!("{base}/console/"), "{stdout}");
    let keys = printed_keys(&stdout);
    let roles: BTreeSet<&str> = keys.iter().map(|(role, _, _)| role.as_str()).collect();
    assert_eq!(roles, BTreeSet::from(["auditor", "city_admin", "finance", "province_admin"]), "{stdout}");
    assert!(
        stdout.contains("24 claims, 10 redemptions (discount ¥240.00 on orders of ¥1,301.00), settled ¥216.00, 2 redemptions waiting"),
        "{stdout}"
    );
    assert!(stdout.contains("phone 13900000001, ID number 370102"), "{stdout}");
    let season_id = stdout
        .lines()
        .next()
        .and_then(|l| l.split(['(', ')']).nth(1))
        .expect("the season's id on the first line")
        .to_owned();

    // The ledger verifies and the season reconciles, from the command line.
    let verify = wenhui(dir.path(), &data, &listen, &["ledger", "verify"], &[]);
    assert!(verify.status.success(), "{}{}", text(&verify.stdout), text(&verify.stderr));
    assert!(text(&verify.stdout).starts_with("ok: "), "{}", text(&verify.stdout));
    let reconcile = wenhui(dir.path(), &data, &listen, &["reconcile", "--season", &season_id], &[]);
    assert!(reconcile.status.success(), "{}{}", text(&reconcile.stdout), text(&reconcile.stderr));

    // Six tills, each with a configuration pointing at the demo's address.
    let tills = data.join("demo-tills");
    let configs: Vec<_> =
        std::fs::read_dir(&tills).expect("tills").map(|e| e.expect("entry").path()).collect();
    assert_eq!(configs.len(), 6, "{configs:?}");
    for dir in &configs {
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("till.json")).expect("till.json"))
                .expect("json");
        assert_eq!(config["server"], base.as_str(), "{config}");
        assert!(stdout.contains(&dir.join("till.json").display().to_string()), "{stdout}");
    }

    let data_text = data.to_str().expect("utf8");
    let envs = [("WENHUI_DATA_DIR", data_text), ("WENHUI_LISTEN", listen.as_str())];
    let mut server = spawn_serve(dir.path(), &envs, true);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(served(&base, &season_id, &keys, &stdout, &tills));
    unsafe_kill(&mut server, "TERM");
    let _ = server.wait();

    // A second demo on the same directory is refused, and says why.
    let again = wenhui(dir.path(), &data, &listen, &["demo", "--seed-only"], &[]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again.stdout));
    assert!(text(&again.stderr).contains("already has seasons"), "{}", text(&again.stderr));
    assert!(!text(&again.stdout).contains("wh_sk_"), "{}", text(&again.stdout));

    // Never in production, by flag or by environment, and never on another database.
    let fresh = dir.path().join("fresh");
    let fresh_listen = format!("127.0.0.1:{}", free_port());
    for (args, envs) in [
        (&["demo", "--seed-only", "--production"][..], &[][..]),
        (&["demo", "--seed-only"][..], &[("WENHUI_ENV", "production")][..]),
        (
            &["demo", "--seed-only"][..],
            &[("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")][..],
        ),
    ] {
        let refused = wenhui(dir.path(), &fresh, &fresh_listen, args, envs);
        assert_eq!(refused.status.code(), Some(2), "{args:?} {envs:?}: {}", text(&refused.stdout));
        let why = text(&refused.stderr);
        assert!(why.contains("production") || why.contains("SQLite"), "{why}");
        assert!(!fresh.join("wenhui.db").exists(), "nothing seeded for {args:?} {envs:?}");
    }
}

async fn served(base: &str, season_id: &str, keys: &[(String, String, String)], stdout: &str, tills: &Path) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let get = |path: String, key: Option<String>| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move { read(request.send().await.expect("send")).await }
    };

    let (status, seasons) = get("/v1/seasons".into(), None).await;
    assert_eq!(status, 200, "{seasons}");
    let listed = seasons.as_array().or_else(|| seasons["seasons"].as_array()).expect("a list of seasons");
    assert_eq!(listed.len(), 1, "{seasons}");
    assert_eq!(listed[0]["id"], season_id, "{seasons}");
    assert_eq!(listed[0]["name"], "2026 山东文化消费季", "{seasons}");

    // Each printed key speaks for its role and region.
    for (role, region, key) in keys {
        let (status, me) = get("/v1/staff/me".into(), Some(key.clone())).await;
        assert_eq!(status, 200, "{role}: {me}");
        assert_eq!(
            (me["role"].as_str(), me["region"].as_str()),
            (Some(role.as_str()), Some(region.as_str()))
        );
    }

    // The report's figures are the ones printed.
    let finance =
        keys.iter().find(|(r, g, _)| r == "finance" && g == "370000").expect("province finance").2.clone();
    let (status, report) = get(format!("/v1/seasons/{season_id}/report"), Some(finance.clone())).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["totals"]["discount"], "240.00", "{report}");
    assert_eq!(report["totals"]["order_amount"], "1301.00", "{report}");
    let batches = report["batches"].as_array().expect("batches");
    assert_eq!(batches.len(), 4, "{report}");
    let sum = |field: &str| batches.iter().map(|b| b[field].as_i64().expect("count")).sum::<i64>();
    assert_eq!((sum("claimed"), sum("redeemed")), (24, 10), "{report}");
    let funders = report["funders"].as_array().expect("funders");
    let funder_codes: BTreeSet<&str> = funders.iter().filter_map(|f| f["funder"].as_str()).collect();
    assert_eq!(funder_codes, BTreeSet::from(["370000", "370100", "370200"]));
    let settled_fen: i64 = funders
        .iter()
        .map(|f| {
            let (yuan, fen) = f["settled"].as_str().expect("settled").split_once('.').expect("decimal");
            yuan.parse::<i64>().expect("yuan") * 100 + fen.parse::<i64>().expect("fen")
        })
        .sum();
    assert_eq!(settled_fen, 21_600, "{report}");
    let (status, settlements) =
        get(format!("/v1/seasons/{season_id}/settlements"), Some(finance.clone())).await;
    assert_eq!(status, 200, "{settlements}");
    assert!(settlements.to_string().contains("\"216.00\""), "{settlements}");
    let (status, reconciliation) =
        get(format!("/v1/seasons/{season_id}/reconciliation"), Some(finance)).await;
    assert_eq!((status, &reconciliation["ok"]), (200, &json!(true)), "{reconciliation}");

    // The printed citizen signs in (the dev SMS route shows the code) and the demo's Jinan KTV
    // till, from its written configuration, redeems their unused 8折 voucher.
    let phone = "13900000001";
    let id_number = stdout
        .split("ID number ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the citizen's ID number");
    let code = crate::common::dev_code(&client, base, phone, "sign_in").await;
    let body = json!({"id_number": id_number, "phone": phone, "code": code});
    let signed_in =
        client.post(format!("{base}/v1/citizens/sessions")).json(&body).send().await.expect("send");
    let (status, session) = read(signed_in).await;
    assert_eq!(status, 201, "{session}");
    let token = session["token"].as_str().expect("token").to_owned();
    let (status, mine) = get("/v1/me/vouchers".into(), Some(token.clone())).await;
    assert_eq!(status, 200, "{mine}");
    let vouchers = mine.as_array().or_else(|| mine["vouchers"].as_array()).expect("vouchers");
    assert_eq!(vouchers.len(), 2, "{mine}");
    let unused = vouchers.iter().find(|v| v["status"] == "active").expect("an unused voucher");
    let voucher = unused["id"].as_str().expect("id");
    let qr = client
        .post(format!("{base}/v1/vouchers/{voucher}/qr"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    let (status, qr) = read(qr).await;
    assert!(status == 200 || status == 201, "{qr}");
    let config = tills.join("jinan-ktv").join("till.json");
    let redeemed = Command::new(till_binary())
        .args([
            "--config",
            config.to_str().expect("utf8"),
            "redeem",
            "--qr",
            qr["token"].as_str().expect("token"),
        ])
        .args(["--amount", "100.00", "--order-ref", "AFTER-DEMO-1"])
        .env_remove("WENHUI_STAFF_KEY")
        .output()
        .expect("run wenhui-till");
    let answer: Value = serde_json::from_slice(&redeemed.stdout).expect("json");
    assert!(redeemed.status.success(), "{answer}");
    assert_eq!(answer["discount"], "20.00", "{answer}");
}
