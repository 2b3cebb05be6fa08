//! Finance on both backends: a scripted season asserted to the fen, settlements and payouts,
//! closing, statements, till-journal matching, a tampered ledger, and who may see what.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;
use wenhui::app::finance::{self, FinanceError};
use wenhui::domain::finance::{SettlementChunking, cst_day_number, day_label};
use wenhui::domain::staff::Role;
use wenhui::domain::time::Timestamp;
use wenhui::storage::{IdemRecord, SettlementPlan};
use wenhui_merchant_sdk::client::{RedeemRequest, TillClient};

use crate::both_backends;
use crate::claims::World;
use crate::common::{Backend, code};
use crate::finance_files::{check_report_files, chinese_csv, download};
use crate::till::{merchant, terminal};
use wenhui::domain::ids::SeasonId;

const HOUR_S: i64 = 3_600;

/// The season of the script: it started three hours ago and ends in an hour, so the tills
/// (which sign with the real time) can work at "now" while claims and expiries happened earlier.
pub(crate) struct Script {
    pub(crate) world: World,
    pub(crate) t0: Timestamp,
    pub(crate) now: Timestamp,
    pub(crate) finance: String,
    pub(crate) bookstore: (String, TillClient),
    pub(crate) cinema: (String, TillClient),
    pub(crate) ktv: (String, TillClient),
    pub(crate) batches: BTreeMap<&'static str, String>,
    pub(crate) citizens: BTreeMap<u32, String>,
    pub(crate) claimed_at: Vec<(Timestamp, i64)>,
    pub(crate) redeemed_at: std::cell::RefCell<Vec<(Timestamp, i64, i64)>>,
}

impl Script {
    async fn new(backend: Backend) -> Script {
        let now = Timestamp::from_unix_us(Timestamp::now().unix_us() / 1_000_000 * 1_000_000);
        let t0 = now.plus_seconds(-3 * HOUR_S);
        let ends_at = now.plus_seconds(HOUR_S).to_string();
        let world =
            World::new_at(backend, "100000.00", None, t0.unix_us(), json!({"ends_at": ends_at})).await;
        let admin = world.province_admin.clone();
        let dir = world.app.db.dir.path().to_owned();
        let mut tills = Vec::new();
        for (seed, category, city) in
            [(11, "bookstore", "370200"), (12, "cinema", "370100"), (13, "ktv", "370200")]
        {
            let id = merchant(&world, &admin, seed, category, city).await;
            let (client, _, _) = terminal(&world, &admin, &id, &dir).await;
            tills.push((id, client));
        }
        let ktv = tills.pop().expect("ktv");
        let cinema = tills.pop().expect("cinema");
        let bookstore = tills.pop().expect("bookstore");
        let finance = world.app.staff_key(Role::Finance, "370000").await;
        let mut script = Script {
            world,
            t0,
            now,
            finance,
            bookstore,
            cinema,
            ktv,
            batches: BTreeMap::new(),
            citizens: BTreeMap::new(),
            claimed_at: Vec::new(),
            redeemed_at: std::cell::RefCell::new(Vec::new()),
        };
        script.create_batches().await;
        script
    }

    async fn create_batches(&mut self) {
        let closes = self.world.at(4 * HOUR_S);
        let provincial = self
            .world
            .batch(json!({"name": "省级满40减10", "claim_closes_at": closes, "categories": ["bookstore", "cinema"]}))
            .await;
        let city_admin = self.world.app.staff_key(Role::CityAdmin, "370200").await;
        let city = self
            .world
            .batch_as(
                &city_admin,
                json!({"name": "青岛满20减5", "issuer": "370200", "face_value": "5.00", "min_spend": "20.00", "stock": 50,
                       "claim_closes_at": closes, "categories": ["ktv", "bookstore"]}),
            )
            .await;
        let co_funded = self
            .world
            .batch_as(&city_admin, json!({"name": "联合八折", "issuer": "370200", "kind": "percent", "percent": 20, "cap": "30.00", "step": "1.00",
                          "face_value": null, "min_spend": "0.00", "stock": 10, "claim_closes_at": closes,
                          "funding": [{"funder": "370000", "share": 70}, {"funder": "370200", "share": 30}]}))
            .await;
        let short = self
            .world
            .batch(json!({"name": "一小时券", "face_value": "8.00", "min_spend": "10.00", "stock": 2, "valid_hours": 1,
                          "claim_closes_at": closes, "categories": ["bookstore"]}))
            .await;
        for (name, batch) in [("A", provincial), ("B", city), ("C", co_funded), ("E", short)] {
            self.batches.insert(name, batch["id"].as_str().expect("batch id").to_owned());
        }
    }

    async fn claim(&mut self, citizen: u32, batch: &str, value_fen: i64) -> String {
        let token = match self.citizens.get(&citizen) {
            Some(token) => token.clone(),
            None => {
                let token = self.world.citizen(citizen).await;
                self.citizens.insert(citizen, token.clone());
                token
            }
        };
        let batch_id = self.batches[batch].clone();
        let (status, claim) = self.world.claim(&token, &batch_id, &format!("c{citizen}{batch}")).await;
        assert_eq!(status, 201, "{claim}");
        self.claimed_at.push((self.world.clock.now_ts(), value_fen));
        claim["voucher"]["id"].as_str().expect("voucher id").to_owned()
    }

    async fn qr(&self, citizen: u32, voucher: &str) -> String {
        let path = format!("/v1/vouchers/{voucher}/qr");
        let (status, qr) = self.world.app.post(&path, Some(&self.citizens[&citizen]), json!({})).await;
        assert!(status == 200 || status == 201, "{qr}");
        qr["token"].as_str().expect("token").to_owned()
    }

    pub(crate) async fn redeem(
        &self,
        till: &TillClient,
        citizen: u32,
        voucher: &str,
        amount: &str,
        order: &str,
    ) -> Uuid {
        let qr = self.qr(citizen, voucher).await;
        let request =
            RedeemRequest { qr, order_amount: amount.into(), order_ref: order.into(), idempotency_key: None };
        let redemption = till.redeem(request).await.expect("redeem");
        let fen = |yuan: &str| wenhui::domain::money::Fen::parse_yuan(yuan).expect("yuan").as_fen();
        self.redeemed_at.borrow_mut().push((
            self.world.clock.now_ts(),
            fen(&redemption.order_amount),
            fen(&redemption.discount),
        ));
        redemption.redemption_id
    }

    pub(crate) fn set_clock(&self, at: Timestamp) {
        self.world.clock.set(at);
    }

    pub(crate) async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.world.app.get(path, Some(key)).await
    }

    pub(crate) async fn reconciles(&self) -> Value {
        let (status, reconciliation) =
            self.get(&format!("/v1/seasons/{}/reconciliation", self.world.season_id), &self.finance).await;
        assert_eq!(status, 200, "{reconciliation}");
        assert_eq!(reconciliation["ok"], true, "{reconciliation:#}");
        reconciliation
    }

    async fn upload_journal(&self, merchant: &str, journal: String) -> (u16, Value) {
        let path = format!(
            "/v1/seasons/{}/reconciliation/merchant-journal?merchant={merchant}",
            self.world.season_id
        );
        let response = self
            .world
            .app
            .client
            .post(self.world.app.url(&path))
            .bearer_auth(&self.finance)
            .header("content-type", "application/x-ndjson")
            .body(journal)
            .send()
            .await
            .expect("post");
        crate::common::read(response).await
    }

    /// A fresh season with one redemption: citizen 1's provincial voucher at the bookstore, on
    /// an order of 100.00 (discount 10.00).
    /// Four vouchers claimed at the start; the first redeemed at the bookstore and the second at
    /// the cinema; returns the script and the other two vouchers, still active.
    pub(crate) async fn two_redeemed_two_claimed(backend: Backend) -> (Script, String, String) {
        let mut s = Script::new(backend).await;
        s.set_clock(s.now);
        let vouchers = [s.claim(1, "A", 1_000).await, s.claim(2, "A", 1_000).await];
        let (more, more_2) = (s.claim(3, "A", 1_000).await, s.claim(4, "A", 1_000).await);
        s.redeem(&s.bookstore.1, 1, &vouchers[0], "100.00", "P-1").await;
        s.redeem(&s.cinema.1, 2, &vouchers[1], "100.00", "P-2").await;
        (s, more, more_2)
    }

    async fn with_one_redemption(backend: Backend, order_ref: &str) -> Script {
        let mut s = Script::new(backend).await;
        let voucher = s.claim(1, "A", 1_000).await;
        s.set_clock(s.now);
        s.redeem(&s.bookstore.1, 1, &voucher, "100.00", order_ref).await;
        s
    }

    /// `wenhui reconcile` from the command line.
    fn reconcile_cli(&self) -> std::process::Output {
        let (dir, url) = (self.world.app.db.dir.path(), &self.world.app.db.url);
        crate::cli::wenhui(dir, url, &["reconcile", "--season", &self.world.season_id])
    }

    /// `wenhui reconcile` from the command line, which must find breaks: its JSON.
    fn reconcile_cli_breaks(&self) -> Value {
        let broken = self.reconcile_cli();
        assert_eq!(broken.status.code(), Some(1), "{}", String::from_utf8_lossy(&broken.stdout));
        serde_json::from_slice(&broken.stdout).expect("json")
    }

    pub(crate) async fn settle(&self, key: &str) -> (u16, Value) {
        let body =
            json!({"season_id": self.world.season_id, "cut_off": self.world.clock.now_ts().to_string()});
        self.world.app.post_idem("/v1/settlements", Some(&self.finance), key, body).await
    }
}

trait NowTs {
    fn now_ts(&self) -> Timestamp;
}

impl NowTs for wenhui::domain::time::ManualClock {
    fn now_ts(&self) -> Timestamp {
        wenhui::domain::time::Clock::now(self)
    }
}

fn row<'a>(rows: &'a Value, field: &str, key: &str) -> &'a Value {
    rows.as_array()
        .expect("rows")
        .iter()
        .find(|r| r[field] == key)
        .unwrap_or_else(|| panic!("no row with {field} = {key} in {rows:#}"))
}

/// The check called `name` in a reconciliation's JSON.
fn check_named<'a>(reconciliation: &'a Value, name: &str) -> &'a Value {
    row(&reconciliation["checks"], "name", name)
}

fn assert_funder(report: &Value, funder: &str, expected: [(&str, &str); 10]) {
    let got = row(&report["funders"], "funder", funder);
    for (field, value) in expected {
        assert_eq!(got[field], value, "funder {funder} {field}: {got:#}");
    }
}

fn assert_sales(rows: &Value, key: &str, redemptions: i64, reversals: i64, discount: &str, order: &str) {
    let got = row(rows, "key", key);
    assert_eq!(
        (
            got["redemptions"].as_i64(),
            got["reversals"].as_i64(),
            got["discount"].as_str(),
            got["order_amount"].as_str()
        ),
        (Some(redemptions), Some(reversals), Some(discount), Some(order)),
        "{key}: {got:#}"
    );
}

async fn scripted_season(backend: Backend) {
    let mut s = Script::new(backend).await;
    let season = s.world.season_id.clone();
    // At the start: claims in every batch; the one-hour batch sells out.
    let a1 = s.claim(1, "A", 1_000).await;
    let b1 = s.claim(1, "B", 500).await;
    let a2 = s.claim(2, "A", 1_000).await;
    let c3 = s.claim(3, "C", 3_000).await;
    let b4 = s.claim(4, "B", 500).await;
    s.claim(5, "E", 800).await;
    s.claim(6, "E", 800).await;
    // An hour later both one-hour vouchers expire and their stock is claimed again (re-issued).
    s.set_clock(s.t0.plus_seconds(HOUR_S + 1));
    assert_eq!(s.world.app.sweep().await.expired, 2);
    s.claim(7, "E", 800).await;
    // Now, at the tills.
    s.set_clock(s.now);
    assert_eq!(s.world.app.sweep().await.expired, 1, "the re-issued voucher expired too");
    let a8 = s.claim(8, "A", 1_000).await;
    let (bookstore, cinema, ktv) = (&s.bookstore.1, &s.cinema.1, &s.ktv.1);
    s.redeem(bookstore, 1, &a1, "100.00", "B-1").await;
    s.redeem(cinema, 2, &a2, "50.00", "C-1").await;
    s.redeem(ktv, 1, &b1, "30.00", "K-1").await;
    s.redeem(bookstore, 3, &c3, "80.00", "B-2").await;
    let refunded = s.redeem(ktv, 4, &b4, "25.00", "K-2").await;
    ktv.reverse(refunded, "refund", None).await.expect("reverse");
    s.reconciles().await;

    // Settlement 1 takes everything so far; a second run with a new key settles nothing twice.
    s.set_clock(s.now.plus_seconds(10));
    let (status, first) = s.settle("settle-1").await;
    assert_eq!(status, 201, "{first}");
    assert_eq!((first["total"].as_str(), first["merchants"].as_i64()), (Some("41.00"), Some(3)));
    let (status, again) = s.settle("settle-1").await;
    assert_eq!((status, &again), (201, &first), "a retry returns the first answer");
    let (status, twice) = s.settle("settle-1b").await;
    assert_eq!((status, code(&twice)), (409, "nothing_to_settle"));
    let (status, replayed) = s.settle("settle-1b").await;
    assert_eq!((status, &replayed), (409, &twice), "a refusal is replayed too");
    let settlement_1 = first["settlement_id"].as_str().expect("id").to_owned();
    // A settled redemption can no longer be reversed.
    let (_, settled) = s.get(&format!("/v1/settlements/{settlement_1}"), &s.finance).await;
    assert_eq!(settled["lines"].as_array().map(Vec::len), Some(3));
    let b1_redemption =
        s.world.app.store().terminal_redemptions(&[ktv.terminal_id().into()], s.t0, 10).await.expect("rows");
    let b1_id = b1_redemption.iter().find(|r| r.order_ref == "K-1").expect("K-1").id.as_uuid();
    let refused = ktv.reverse(b1_id, "too late", None).await.expect_err("settled");
    assert_eq!(refused.code(), "already_settled");

    // The refunded voucher is used again; settlement 2 takes it alone.
    s.set_clock(s.now.plus_seconds(20));
    s.redeem(ktv, 4, &b4, "40.00", "K-3").await;
    s.set_clock(s.now.plus_seconds(30));
    let (status, second) = s.settle("settle-2").await;
    assert_eq!(status, 201, "{second}");
    assert_eq!((second["total"].as_str(), second["merchants"].as_i64()), (Some("5.00"), Some(1)));

    // The bank pays settlement 1.
    s.set_clock(s.now.plus_seconds(40));
    let paid_path = format!("/v1/settlements/{settlement_1}/paid");
    let nul_ref = json!({"payout_ref": "BANK\u{0}0001"});
    let (status, refused) = s.world.app.post_idem(&paid_path, Some(&s.finance), "paid-nul", nul_ref).await;
    assert_eq!((status, code(&refused)), (422, "invalid_payout_ref"), "{refused}");
    let (status, paid) = s
        .world
        .app
        .post_idem(&paid_path, Some(&s.finance), "paid-1", json!({"payout_ref": "BANK-0001"}))
        .await;
    assert_eq!(status, 201, "{paid}");
    let (status, repaid) = s
        .world
        .app
        .post_idem(&paid_path, Some(&s.finance), "paid-1b", json!({"payout_ref": "BANK-0001"}))
        .await;
    assert_eq!((status, code(&repaid)), (409, "already_paid"));
    // The season's settlements, oldest first, a page at a time.
    let list = format!("/v1/seasons/{season}/settlements");
    let (status, page_1) = s.get(&format!("{list}?limit=1"), &s.finance).await;
    assert_eq!(status, 200, "{page_1}");
    let listed = |page: &Value| -> Vec<(String, String, bool)> {
        page["settlements"]
            .as_array()
            .expect("settlements")
            .iter()
            .map(|s| {
                (
                    s["total"].as_str().expect("total").to_owned(),
                    s["status"].as_str().expect("status").to_owned(),
                    s["paid_at"].is_null(),
                )
            })
            .collect()
    };
    assert_eq!(listed(&page_1), [("41.00".to_owned(), "complete".to_owned(), false)]);
    assert_eq!(page_1["next_after"].as_str(), Some(settlement_1.as_str()));
    let (_, page_2) = s.get(&format!("{list}?limit=1&after={settlement_1}"), &s.finance).await;
    assert_eq!(listed(&page_2), [("5.00".to_owned(), "complete".to_owned(), true)]);
    assert!(page_2["next_after"].is_null(), "{page_2}");
    let (_, whole) = s.get(&list, &s.finance).await;
    assert_eq!(whole["settlements"].as_array().map(Vec::len), Some(2));
    for (query, expected) in [
        ("limit=0", "invalid_limit"),
        ("limit=501", "invalid_limit"),
        (&format!("after={}", Uuid::nil()), "invalid_cursor"),
    ] {
        let (status, refused) = s.get(&format!("{list}?{query}"), &s.finance).await;
        assert_eq!((status, code(&refused)), (422, expected), "{query}");
    }
    let payout = s
        .world
        .app
        .client
        .get(s.world.app.url(&format!("/v1/settlements/{settlement_1}/payout.csv?lang=en")))
        .bearer_auth(&s.finance)
        .send()
        .await
        .expect("payout");
    let payout = payout.text().await.expect("csv");
    let mut payout_lines: Vec<&str> = payout.lines().collect();
    assert_eq!(
        payout_lines.remove(0),
        "settlement_id,merchant_id,merchant_name,bank,account_no,account_name,redemptions,amount,funder_370000,funder_370200"
    );
    let bookstore_line = payout_lines.iter().find(|l| l.contains(&s.bookstore.0)).expect("bookstore line");
    assert!(bookstore_line.ends_with(",2,26.00,21.20,4.80"), "{bookstore_line}");
    let payout_zh = download(&s, &format!("/v1/settlements/{settlement_1}/payout.csv")).await;
    let payout_zh = chinese_csv(&payout_zh);
    let zh_lines: Vec<&str> = payout_zh.lines().collect();
    assert_eq!(
        zh_lines[0],
        "结算单ID,商户ID,商户名称,开户银行,银行账号,账户名称,核销笔数,结算金额,山东省 (370000),青岛市 (370200)"
    );
    assert!(zh_lines.iter().any(|l| l.contains(&s.bookstore.0) && l.ends_with(",2,26.00,21.20,4.80")));
    let totals = zh_lines.last().expect("totals");
    assert!(totals.starts_with("合计,,,,,,"), "{payout_zh}");
    assert_eq!(totals.split(',').nth(7), Some(settled_total(&payout).as_str()), "{payout_zh}");
    s.reconciles().await;

    // A code shown just before the close, scanned just after it.
    let late_qr = s.qr(8, &a8).await;
    // Closing: not before the season ends, not by an auditor; then idempotent.
    let close = format!("/v1/seasons/{season}/close");
    let (status, early) = s.world.app.post_idem(&close, Some(&s.finance), "close-early", json!({})).await;
    assert_eq!((status, code(&early)), (409, "season_not_ended"));
    let auditor = s.world.app.staff_key(Role::Auditor, "370000").await;
    let (status, _) = s.world.app.post_idem(&close, Some(&auditor), "close-auditor", json!({})).await;
    assert_eq!(status, 403);
    s.set_clock(s.now.plus_seconds(HOUR_S + 1));
    let (status, closed) = s.world.app.post_idem(&close, Some(&s.finance), "close-1", json!({})).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(
        (closed["reconciled"].as_bool(), closed["breaks"].as_i64()),
        (Some(true), Some(0)),
        "{closed}"
    );
    let (status, closed_again) = s.world.app.post_idem(&close, Some(&s.finance), "close-2", json!({})).await;
    assert_eq!((status, &closed_again), (200, &closed));
    // A closed season takes no more money: a budget or a batch would be stranded in it.
    let head = s.world.app.store().ledger_head().await.expect("head").seq;
    let admin = s.world.province_admin.clone();
    let budget = json!({"funder": "370000", "amount": "100.00"});
    let path = format!("/v1/seasons/{season}/budgets");
    let (status, answer) = s.world.app.post_idem(&path, Some(&admin), "late-budget", budget).await;
    assert_eq!((status, code(&answer)), (409, "season_closed"), "{answer}");
    let batch = json!({"name": "late", "issuer": "370000", "kind": "threshold", "face_value": "10.00",
        "min_spend": "40.00", "stock": 1, "per_citizen_limit": 1, "valid_hours": 48,
        "claim_opens_at": s.world.at(0), "claim_closes_at": s.world.at(60), "categories": ["bookstore"]});
    let path = format!("/v1/seasons/{season}/batches");
    let (status, answer) = s.world.app.post_idem(&path, Some(&admin), "late-batch", batch).await;
    assert_eq!((status, code(&answer)), (409, "season_closed"), "{answer}");
    // Past the handler's check too: the write itself reads the season under the ledger head, so
    // a budget that raced the close is refused.
    let season_id: SeasonId = season.parse().expect("uuid");
    let funder = "370000".parse().expect("region");
    let amount = wenhui::domain::money::Fen::new(10_000).expect("fen");
    let entry = wenhui::domain::ledger::NewEntry::transfer(
        "budget",
        "budget:raced-the-close",
        wenhui::domain::accounts::appropriation(season_id, funder),
        wenhui::domain::accounts::pool(season_id, funder),
        amount,
    );
    let record = IdemRecord {
        scope: "test:raced".into(),
        key: "raced".into(),
        request_hash: vec![1],
        status: 201,
        body: "{}".into(),
    };
    let raced = s.world.app.store().add_budget(season_id, funder, &entry, &record).await;
    assert!(
        matches!(
            &raced,
            Err(wenhui::storage::WriteError::Refused(wenhui::storage::Refusal::Code(
                wenhui::domain::error_code::ErrorCode::SeasonClosed
            )))
        ),
        "{raced:?}"
    );
    assert_eq!(s.world.app.store().ledger_head().await.expect("head").seq, head, "nothing posted");

    let reconciliation = s.reconciles().await;
    let checks: Vec<&str> = reconciliation["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(checks.contains(&"clearing_after_close") && checks.contains(&"funder_identity"), "{checks:?}");

    let (status, report) = s.get(&format!("/v1/seasons/{season}/report"), &s.finance).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["final"], true);
    assert_report(&s, &report);

    // Closed: no claims, no redemptions, no reversals (the tills sign with the real time).
    s.set_clock(s.now.plus_seconds(50));
    let token = s.citizens[&2].clone();
    let (status, refused) = s.world.claim(&token, &s.batches["B"], "after-close").await;
    assert_eq!((status, code(&refused)), (409, "season_closed"));
    let k3 =
        s.world.app.store().terminal_redemptions(&[ktv.terminal_id().into()], s.t0, 10).await.expect("rows");
    let k3 = k3.iter().find(|r| r.order_ref == "K-3").expect("K-3").id.as_uuid();
    let refused = ktv.reverse(k3, "after close", None).await.expect_err("closed");
    assert_eq!(refused.code(), "season_closed");
    let late = RedeemRequest {
        qr: late_qr,
        order_amount: "100.00".into(),
        order_ref: "B-late".into(),
        idempotency_key: None,
    };
    let refused = bookstore.redeem(late).await.expect_err("closed");
    assert_eq!(refused.code(), "season_closed");

    // The stored report never changes, in every format.
    let (_, stored) = s.get(&format!("/v1/seasons/{season}/report"), &s.finance).await;
    assert_eq!(stored, report);
    let csv = s
        .world
        .app
        .client
        .get(s.world.app.url(&format!("/v1/seasons/{season}/report?format=csv&view=categories&lang=en")))
        .bearer_auth(&s.finance)
        .send()
        .await
        .expect("csv")
        .text()
        .await
        .expect("text");
    assert_eq!(
        csv,
        "key,name,city,category,redemptions,reversals,discount,order_amount\n\
         bookstore,bookstore,,bookstore,2,0,26.00,180.00\ncinema,cinema,,cinema,1,0,10.00,50.00\nktv,ktv,,ktv,2,1,10.00,70.00\n"
    );
    let xlsx = s
        .world
        .app
        .client
        .get(s.world.app.url(&format!("/v1/seasons/{season}/report?format=xlsx")))
        .bearer_auth(&s.finance)
        .send()
        .await
        .expect("xlsx");
    assert_eq!(
        xlsx.headers()["content-type"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let bytes = xlsx.bytes().await.expect("bytes");
    assert!(bytes.starts_with(b"PK"), "an xlsx file is a zip archive");
    assert!(bytes.windows(b"xl/worksheets/sheet7.xml".len()).any(|w| w == b"xl/worksheets/sheet7.xml"));
    check_report_files(&s, &season, &stored).await;

    // The KTV's statement, with running totals.
    let path = format!("/v1/merchants/{}/statement?season={season}", s.ktv.0);
    let (status, statement) = s.get(&path, &s.finance).await;
    assert_eq!(status, 200, "{statement}");
    let kinds: Vec<&str> =
        statement["lines"].as_array().expect("lines").iter().filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["redemption", "redemption", "reversal", "settlement", "redemption", "settlement", "payout"]
    );
    let last = statement["lines"].as_array().and_then(|l| l.last()).expect("last");
    assert_eq!(
        (last["redeemed_net"].as_str(), last["settled"].as_str(), last["paid"].as_str()),
        (Some("10.00"), Some("10.00"), Some("5.00"))
    );
    let csv = s
        .world
        .app
        .client
        .get(s.world.app.url(&format!("{path}&format=csv&lang=en")))
        .bearer_auth(&s.finance)
        .send()
        .await
        .expect("statement csv")
        .text()
        .await
        .expect("text");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "at,kind,id,order_ref,order_amount,amount,redeemed_net,settled,paid,unsettled,note");
    assert_eq!(rows.len(), 8, "{csv}");
    assert!(
        rows[7].starts_with(&last["at"].as_str().expect("at").to_string())
            && rows[7].ends_with(",10.00,10.00,5.00,0.00,"),
        "{csv}"
    );
    let statement_zh = chinese_csv(&download(&s, &format!("{path}&format=csv")).await);
    let zh_rows: Vec<&str> = statement_zh.lines().collect();
    assert!(zh_rows[0].starts_with("时间（北京时间）,类型,流水ID,订单号,"), "{statement_zh}");
    assert_eq!(zh_rows.len(), 8, "{statement_zh}");
    assert!(
        zh_rows[7].contains(",付款,") && zh_rows[7].ends_with(",10.00,10.00,5.00,0.00,"),
        "{statement_zh}"
    );
    let from_till = ktv
        .statement(s.ktv.0.parse().expect("uuid"), season.parse().expect("uuid"))
        .await
        .expect("till statement");
    assert_eq!(
        from_till["lines"], statement["lines"],
        "the merchant's own terminal reads the same statement"
    );
}

fn assert_report(s: &Script, report: &Value) {
    assert_funder(
        report,
        "370000",
        [
            ("appropriated", "100000.00"),
            ("available", "99968.80"),
            ("reserved", "0.00"),
            ("outstanding", "0.00"),
            ("redeemed", "31.20"),
            ("reversed", "0.00"),
            ("returned_by_expiry", "34.00"),
            ("payable", "0.00"),
            ("settled", "0.00"),
            ("paid", "31.20"),
        ],
    );
    assert_funder(
        report,
        "370200",
        [
            ("appropriated", "1000.00"),
            ("available", "985.20"),
            ("reserved", "0.00"),
            ("outstanding", "0.00"),
            ("redeemed", "19.80"),
            ("reversed", "5.00"),
            ("returned_by_expiry", "0.00"),
            ("payable", "0.00"),
            ("settled", "5.00"),
            ("paid", "9.80"),
        ],
    );
    let batch = |name: &str| row(&report["batches"], "batch_id", &s.batches[name]).clone();
    let counts = |b: &Value| {
        ["stock", "claimed", "redeemed", "expired", "active", "reissued"]
            .map(|f| b[f].as_i64().expect("count"))
    };
    assert_eq!(counts(&batch("A")), [100, 3, 2, 1, 0, 0]);
    assert_eq!(counts(&batch("B")), [50, 2, 2, 0, 0, 0]);
    assert_eq!(counts(&batch("C")), [10, 1, 1, 0, 0, 0]);
    assert_eq!(counts(&batch("E")), [2, 3, 0, 3, 0, 1]);
    let amounts = |b: &Value| {
        ["claimed_amount", "expired_amount", "reissued_amount", "discount_paid", "order_amount"]
            .map(|f| b[f].as_str().expect("amount").to_owned())
    };
    assert_eq!(amounts(&batch("A")), ["30.00", "10.00", "0.00", "20.00", "150.00"]);
    assert_eq!(amounts(&batch("B")), ["10.00", "0.00", "0.00", "10.00", "70.00"]);
    assert_eq!(amounts(&batch("C")), ["30.00", "0.00", "0.00", "16.00", "80.00"]);
    assert_eq!(amounts(&batch("E")), ["24.00", "24.00", "8.00", "0.00", "0.00"]);
    assert_sales(&report["merchants"], &s.bookstore.0, 2, 0, "26.00", "180.00");
    assert_sales(&report["merchants"], &s.cinema.0, 1, 0, "10.00", "50.00");
    assert_sales(&report["merchants"], &s.ktv.0, 2, 1, "10.00", "70.00");
    assert_sales(&report["categories"], "bookstore", 2, 0, "26.00", "180.00");
    assert_sales(&report["categories"], "cinema", 1, 0, "10.00", "50.00");
    assert_sales(&report["categories"], "ktv", 2, 1, "10.00", "70.00");
    assert_eq!(report["totals"], json!({"discount": "46.00", "order_amount": "300.00", "leverage": "6.52"}));
    // Per day, from the times the script recorded (days are Beijing days).
    let mut days: BTreeMap<String, (i64, i64, i64, i64, i64)> = BTreeMap::new();
    for (at, value) in &s.claimed_at {
        let day = days.entry(day_label(cst_day_number(*at))).or_default();
        day.0 += 1;
        day.1 += value;
    }
    // The reversed K-2 redemption counts as a reversal on its day, not as a redemption.
    for (index, (at, order, discount)) in s.redeemed_at.borrow().iter().enumerate() {
        let day = days.entry(day_label(cst_day_number(*at))).or_default();
        if index == 4 {
            day.4 += 1;
        } else {
            day.2 += 1;
            day.3 += discount;
            let _ = order;
        }
    }
    let got: BTreeMap<String, (i64, i64, i64, i64, i64)> = report["days"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| {
            let fen = |f: &str| {
                wenhui::domain::money::Fen::parse_yuan(d[f].as_str().expect("amount")).expect("fen").as_fen()
            };
            let n = |f: &str| d[f].as_i64().expect("count");
            (
                d["day"].as_str().expect("day").to_owned(),
                (n("claims"), fen("claimed_amount"), n("redemptions"), fen("discount"), n("reversals")),
            )
        })
        .collect();
    assert_eq!(got, days);
    let cards = &report["cards"];
    assert_eq!(cards["cards_issued_mobile"], 0, "{cards}");
}

/// Journal matching: all four outcomes.
async fn merchant_journal(backend: Backend) {
    let mut s = Script::new(backend).await;
    let a1 = s.claim(1, "A", 1_000).await;
    let a2 = s.claim(2, "A", 1_000).await;
    let a3 = s.claim(3, "A", 1_000).await;
    s.set_clock(s.now);
    let bookstore = &s.bookstore.1;
    let matched = s.redeem(bookstore, 1, &a1, "100.00", "J-1").await;
    let mismatched = s.redeem(bookstore, 2, &a2, "60.00", "J-2").await;
    // The same terminal redeems through a second client whose journal the merchant does not upload.
    let dir = s.world.app.db.dir.path().to_owned();
    let other_journal =
        wenhui_merchant_sdk::journal::Journal::open(dir.join("other.jsonl")).expect("journal");
    let key =
        wenhui_merchant_sdk::client::TillKey::load(dir.join(format!("{}.key", bookstore.terminal_id())))
            .expect("key");
    let other =
        TillClient::new(&s.world.app.base, bookstore.terminal_id(), key, other_journal, Default::default())
            .expect("client");
    let unseen = s.redeem(&other, 3, &a3, "70.00", "J-3").await;
    let mut journal =
        std::fs::read_to_string(bookstore.journal().path().expect("journal path")).expect("journal");
    // The till's copy of J-2 says 60.00 was discounted at 50.00 (a corrupted till record) ...
    journal = journal.replace("\"order_amount\":\"60.00\"", "\"order_amount\":\"50.00\"");
    // ... and it holds a redemption the server never made.
    let phantom = Uuid::now_v7();
    let line = json!({
        "at": s.now.to_string(), "terminal_id": bookstore.terminal_id(), "op": "redeem", "phase": "attempt",
        "path": "/v1/redemptions", "idempotency_key": "phantom", "attempt": 1, "request": {}, "status": 201,
        "response": {"redemption_id": phantom, "order_ref": "J-9", "order_amount": "20.00", "discount": "10.00"},
        "error": null,
    });
    journal.push_str(&format!("{line}\n"));
    let (status, outcome) = s.upload_journal(&s.bookstore.0, journal).await;
    assert_eq!(status, 200, "{outcome}");
    let ids = |list: &str| -> Vec<String> {
        outcome[list]
            .as_array()
            .expect("list")
            .iter()
            .map(|r| r["redemption_id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(ids("matched"), [matched.to_string()]);
    assert_eq!(ids("missing_on_server"), [phantom.to_string()]);
    assert_eq!(ids("missing_in_till"), [unseen.to_string()]);
    assert_eq!(
        outcome["mismatched"],
        json!([{"redemption_id": mismatched, "field": "order_amount", "till": "50.00", "server": "60.00"}])
    );
    // A journal naming another merchant's terminal is refused.
    let foreign = format!(
        "{}\n",
        json!({"at": s.now.to_string(), "terminal_id": s.ktv.1.terminal_id(), "op": "get",
        "phase": "intent", "path": "/", "idempotency_key": null, "attempt": 0, "request": {}, "status": null, "response": null, "error": null})
    );
    let (status, refused) = s.upload_journal(&s.bookstore.0, foreign).await;
    assert_eq!((status, code(&refused)), (422, "invalid_journal"));
}

/// A ledger tampered with by the database owner: reconcile lists the break and exits non-zero.
async fn tampered_ledger_breaks_reconciliation(backend: Backend) {
    let s = Script::with_one_redemption(backend, "T-1").await;
    let season = s.world.season_id.clone();
    let dir = s.world.app.db.dir.path().to_owned();
    let url = s.world.app.db.url.clone();
    // Settling from the command line (T+1 in practice; here up to now), once.
    let cut_off = Timestamp::now().to_string();
    let settled = crate::cli::wenhui(&dir, &url, &["settle", "--season", &season, "--cut-off", &cut_off]);
    assert!(settled.status.success(), "{}", String::from_utf8_lossy(&settled.stderr));
    let settlement: Value = serde_json::from_slice(&settled.stdout).expect("json");
    assert_eq!((settlement["total"].as_str(), settlement["merchants"].as_i64()), (Some("10.00"), Some(1)));
    let again = crate::cli::wenhui(&dir, &url, &["settle", "--season", &season, "--cut-off", &cut_off]);
    assert_eq!(again.status.code(), Some(1), "nothing is settled twice");
    let clean = s.reconcile_cli();
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    let head = s.world.app.store().ledger_head().await.expect("head").seq;
    s.world.app.db.tamper_posting_amount(head, 1).await;
    let result = s.reconcile_cli_breaks();
    let failed: Vec<&str> = result["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["ok"] == false)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(failed.contains(&"ledger_chain"), "{failed:?}");
}

/// A redemption row that no longer agrees with its voucher (here: moved to another batch by
/// the database owner) is a break: reconciliation does the checking the foreign keys did.
async fn redemption_with_broken_reference(backend: Backend) {
    let mut s = Script::with_one_redemption(backend, "R-1").await;
    s.claim(1, "B", 500).await;
    let clean = s.reconcile_cli();
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stdout));
    let moved = s
        .world
        .app
        .db
        .raw("UPDATE redemptions SET batch_id = (SELECT v.batch_id FROM vouchers v WHERE v.batch_id <> redemptions.batch_id LIMIT 1)")
        .await
        .expect("tamper");
    assert_eq!(moved, 1);
    let result = s.reconcile_cli_breaks();
    let check = check_named(&result, "redemption_with_broken_reference");
    assert_eq!((check["ok"].as_bool(), check["breaks"].as_i64()), (Some(false), Some(1)), "{check}");
}

/// Who sees what: a city's finance sees its own money and merchants only; an auditor reads
/// everything and changes nothing.
async fn access(backend: Backend) {
    let mut s = Script::new(backend).await;
    let season = s.world.season_id.clone();
    let a1 = s.claim(1, "A", 1_000).await;
    let b1 = s.claim(1, "B", 500).await;
    s.set_clock(s.now);
    s.redeem(&s.bookstore.1, 1, &b1, "30.00", "A-1").await;
    s.redeem(&s.cinema.1, 1, &a1, "50.00", "A-2").await;
    let jinan = s.world.app.staff_key(Role::Finance, "370100").await;
    let qingdao = s.world.app.staff_key(Role::Finance, "370200").await;
    let auditor = s.world.app.staff_key(Role::Auditor, "370000").await;
    let statement = |merchant: &str| format!("/v1/merchants/{merchant}/statement?season={season}");
    assert_eq!(
        s.get(&statement(&s.bookstore.0), &jinan).await.0,
        403,
        "Jinan's finance cannot see a Qingdao merchant"
    );
    assert_eq!(s.get(&statement(&s.bookstore.0), &qingdao).await.0, 200);
    assert_eq!(s.get(&statement(&s.bookstore.0), &auditor).await.0, 200);
    let (status, report) = s.get(&format!("/v1/seasons/{season}/report"), &qingdao).await;
    assert_eq!(status, 200, "{report}");
    let merchants: Vec<&str> =
        report["merchants"].as_array().expect("m").iter().filter_map(|m| m["key"].as_str()).collect();
    assert_eq!(merchants, [s.bookstore.0.as_str()]);
    let funders: Vec<&str> =
        report["funders"].as_array().expect("f").iter().filter_map(|f| f["funder"].as_str()).collect();
    assert_eq!(funders, ["370200"]);
    assert_eq!(s.get(&format!("/v1/seasons/{season}/reconciliation"), &qingdao).await.0, 403);
    assert_eq!(s.get(&format!("/v1/seasons/{season}/reconciliation"), &auditor).await.0, 200);
    let body = json!({"season_id": season, "cut_off": s.now.to_string()});
    for key in [&auditor, &qingdao] {
        let (status, refused) =
            s.world.app.post_idem("/v1/settlements", Some(key), "settle-x", body.clone()).await;
        assert_eq!(status, 403, "{refused}");
    }
    let (status, _) = s.world.app.post_idem("/v1/settlements", Some(&s.finance), "settle-ok", body).await;
    assert_eq!(status, 201);
    // A city's finance sees the season's settlements, and only its own city's lines of one.
    let (status, listed) = s.get(&format!("/v1/seasons/{season}/settlements"), &qingdao).await;
    assert_eq!(status, 200, "{listed}");
    let first = listed["settlements"][0]["settlement_id"].as_str().expect("a settlement");
    let (_, seen) = s.get(&format!("/v1/settlements/{first}"), &qingdao).await;
    assert_eq!(seen["lines"].as_array().map(Vec::len), Some(1), "{seen}");
    let (status, future) = s
        .world
        .app
        .post_idem(
            "/v1/settlements",
            Some(&s.finance),
            "settle-future",
            json!({"season_id": season, "cut_off": s.now.plus_seconds(86_400).to_string()}),
        )
        .await;
    assert_eq!((status, code(&future)), (422, "invalid_cut_off"));
}

/// Ledger entries that name a row which does not exist (or no row at all) are breaks of the
/// entries-to-rows checks, whose SQL differs per backend (a text join on PostgreSQL, the UUID
/// parsed out of the reference on SQLite).
async fn entries_naming_no_row(backend: Backend) {
    use wenhui::domain::ledger::{AccountAddress, AccountSpec, NewEntry};
    let s = Script::with_one_redemption(backend, "R-1").await;
    let reconciliation = s.reconciles().await;
    let orphans = [
        ("claim", format!("claim:{}", Uuid::now_v7())),
        ("claim", "claim:not-a-uuid".to_owned()),
        ("expiry", format!("expiry:{}", Uuid::now_v7())),
        ("redemption", format!("redemption:{}", Uuid::now_v7())),
        ("reversal", format!("reversal:{}", Uuid::now_v7())),
    ];
    let account = |name: &str| AccountAddress::from_segments(&["test", "orphan", name]);
    for (kind, reference) in orphans {
        let entry = NewEntry::transfer(
            kind,
            reference,
            AccountSpec::debit_unlimited(account("from")),
            AccountSpec::credit_limited(account("to")),
            wenhui::domain::money::Fen::new(1).expect("fen"),
        );
        s.world.app.store().post_entries(&[entry]).await.expect("post");
    }
    let result = s.reconcile_cli_breaks();
    let breaks = |name: &str| check_named(&result, name)["breaks"].as_i64().expect("a count of breaks");
    assert_eq!(
        [
            breaks("claim_entry_without_voucher"),
            breaks("expiry_entry_disagrees"),
            breaks("redemption_entry_without_redemption"),
            breaks("reversal_entry_disagrees"),
        ],
        [2, 1, 1, 1],
        "{result:#}"
    );
    // Nothing else broke: the rows-to-entries checks still find every row's entry.
    let clean_before = reconciliation["checks"].as_array().expect("checks").len();
    let failing = result["checks"].as_array().expect("checks").iter().filter(|c| c["ok"] == false).count();
    assert_eq!((result["checks"].as_array().map(Vec::len), failing), (Some(clean_before), 4), "{result:#}");
}

/// Reversals racing a settlement: every redemption ends either reversed and unsettled, or
/// settled with its reversal refused as `already_settled`; the settlement sums exactly what it
/// took, and the books reconcile. On PostgreSQL this runs the writers' lock order (the
/// redemption rows, then the write gate, then the ledger head) under contention.
async fn settlement_races_reversals(backend: Backend) {
    const REDEMPTIONS: u32 = 6;
    let mut s = Script::new(backend).await;
    s.set_clock(s.now);
    let mut redemptions = Vec::new();
    for citizen in 1..=REDEMPTIONS {
        let voucher = s.claim(citizen, "A", 1_000).await;
        let order = format!("R-{citizen}");
        redemptions.push(s.redeem(&s.bookstore.1, citizen, &voucher, "100.00", &order).await);
    }
    s.set_clock(s.now.plus_seconds(10));
    let till = &s.bookstore.1;
    let reversals =
        futures_util::future::join_all(redemptions.iter().map(|id| till.reverse(*id, "refund", None)));
    let ((status, settlement), reversals) = tokio::join!(s.settle("settle-race"), reversals);
    let mut reversed = 0;
    for outcome in reversals {
        match outcome {
            Ok(_) => reversed += 1,
            Err(refused) => assert_eq!(refused.code(), "already_settled", "{refused:?}"),
        }
    }
    let settled = i64::from(REDEMPTIONS) - reversed;
    if settled == 0 {
        assert_eq!((status, code(&settlement)), (409, "nothing_to_settle"));
    } else {
        assert_eq!(status, 201, "{settlement}");
        let total = format!("{settled}0.00");
        assert_eq!(settlement["total"].as_str(), Some(total.as_str()), "{reversed} reversed: {settlement}");
    }
    let mut unsettled = 0;
    for id in &redemptions {
        let record = till.get(*id).await.expect("get");
        let (reversed, settled) = (Some(record.reversed), Some(record.settled));
        assert!(
            matches!((reversed, settled), (Some(true), Some(false)) | (Some(false), Some(true))),
            "each redemption is reversed or settled: {record:?}"
        );
        unsettled += i64::from(settled == Some(false));
    }
    assert_eq!(unsettled, reversed);
    s.reconciles().await;
}

/// While a settlement works through the redemption rows (here held up by another session's
/// lock on one of them), tills go on redeeming: the settlement takes the write gate and the
/// ledger head only to post its entries. PostgreSQL only: SQLite has one writer at a time, so
/// there a settlement holds up the tills for each of its chunks (one transaction each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_in_progress_does_not_hold_up_the_tills() {
    let mut s = Script::new(Backend::Postgres).await;
    s.set_clock(s.now);
    let a1 = s.claim(1, "A", 1_000).await;
    let a2 = s.claim(2, "A", 1_000).await;
    let a3 = s.claim(3, "A", 1_000).await;
    let bookstore = &s.bookstore.1;
    let held = s.redeem(bookstore, 1, &a1, "100.00", "L-1").await;
    s.redeem(bookstore, 2, &a2, "100.00", "L-2").await;
    let url = s.world.app.db.url.clone();
    let mut holder = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql("BEGIN").execute(&mut holder).await.expect("begin");
    sqlx::query("SELECT id FROM redemptions WHERE id = $1 FOR UPDATE")
        .bind(held)
        .execute(&mut holder)
        .await
        .expect("lock the row");
    s.set_clock(s.now.plus_seconds(10));
    let tills = async {
        wait_for_lock_wait(&url, "UPDATE redemptions SET settled_at_us").await;
        let during = s.redeem(bookstore, 3, &a3, "100.00", "L-3");
        let redeemed = tokio::time::timeout(std::time::Duration::from_secs(10), during).await;
        sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.expect("release the row");
        redeemed
    };
    let ((status, settlement), redeemed) = tokio::join!(s.settle("settle-held"), tills);
    redeemed.expect("a till redeems while the settlement waits for a row");
    assert_eq!(status, 201, "{settlement}");
    assert_eq!((settlement["total"].as_str(), settlement["merchants"].as_i64()), (Some("20.00"), Some(1)));
    // The redemption made meanwhile was not in the settlement's snapshot: the next one takes it.
    s.set_clock(s.now.plus_seconds(20));
    let (status, next) = s.settle("settle-next").await;
    assert_eq!(status, 201, "{next}");
    assert_eq!(next["total"].as_str(), Some("10.00"));
    s.reconciles().await;
}

/// Waits until a session of this database waits for a lock in a statement starting with `query`.
async fn wait_for_lock_wait(url: &str, query: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND starts_with(query, $1)",
        )
        .bind(query)
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no session came to wait on a lock in `{query}`");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A settlement run that stops part way (here its first chunk is written through storage and
/// the run goes no further, as a crash would leave it) is a consistent state: the books
/// reconcile, and the settlement shows as in progress and cannot be paid out. A retry with its
/// key finishes it under the same id and created_at; the next settlement of the season, under
/// any key, finishes every other settlement left in progress first.
async fn a_settlement_left_in_progress_is_finished(backend: Backend) {
    let (s, more, more_2) = Script::two_redeemed_two_claimed(backend).await;
    let bookstore: wenhui::domain::ids::MerchantId = s.bookstore.0.parse().expect("uuid");
    let cinema: wenhui::domain::ids::MerchantId = s.cinema.0.parse().expect("uuid");
    let season_id: SeasonId = s.world.season_id.parse().expect("uuid");
    let season = s.world.app.store().season(season_id).await.expect("read").expect("season");

    s.set_clock(s.now.plus_seconds(10));
    let cut_off = s.world.clock.now_ts();
    let crashed = |key: &str, cut_off: Timestamp| crashed_plan(season_id, key, cut_off);
    let plan = crashed("k1", cut_off);
    assert_eq!(s.world.app.store().settle_merchants(&plan, &[bookstore]).await.expect("chunk"), 1);
    let path = format!("/v1/settlements/{}", plan.id);
    let (status, seen) = s.get(&path, &s.finance).await;
    assert_eq!(status, 200, "{seen}");
    let seen = &seen["settlement"];
    assert_eq!(
        (seen["status"].as_str(), seen["merchants"].as_i64(), seen["total"].as_str()),
        (Some("in_progress"), Some(1), Some("10.00"))
    );
    let (status, refused) = s
        .world
        .app
        .post_idem(&format!("{path}/paid"), Some(&s.finance), "pay-early", json!({"payout_ref": "B-1"}))
        .await;
    assert_eq!((status, code(&refused)), (409, "settlement_in_progress"));
    let (status, refused) = s.get(&format!("{path}/payout.csv"), &s.finance).await;
    assert_eq!((status, code(&refused)), (409, "settlement_in_progress"));
    let (_, listed) = s.get(&format!("/v1/seasons/{season_id}/settlements"), &s.finance).await;
    assert_eq!(listed["settlements"][0]["status"].as_str(), Some("in_progress"), "{listed}");
    s.reconciles().await;

    // The retry with its key goes on from where the run stopped.
    let store = s.world.app.store();
    let chunking = SettlementChunking::ONE_WRITER;
    let done =
        finance::settle(store, &season, cut_off, s.world.clock.now_ts(), crashed_answer("k1"), chunking)
            .await
            .expect("the retry finishes the settlement");
    assert_eq!((done.id, done.line_count, done.total_fen, done.created_at), (plan.id, 2, 2_000, cut_off));
    assert!(done.completed_at.is_some());
    let stored = store.idempotent_answer("test:crashed", "k1").await.expect("read").expect("answer stored");
    assert_eq!(stored.body, finance::SettlementAnswer::text(&done));
    let again =
        finance::settle(store, &season, cut_off, s.world.clock.now_ts(), crashed_answer("k1"), chunking)
            .await;
    assert!(matches!(again, Err(FinanceError::Replay)), "{again:?}");
    let earlier = cut_off.plus_seconds(-1);
    let reused =
        finance::settle(store, &season, earlier, s.world.clock.now_ts(), crashed_answer("k1"), chunking)
            .await;
    assert!(matches!(reused, Err(FinanceError::KeyReused)), "{reused:?}");

    // Another run stops part way; the next settlement under another key finishes it first.
    s.set_clock(s.now.plus_seconds(20));
    s.redeem(&s.bookstore.1, 3, &more, "100.00", "P-3").await;
    s.redeem(&s.cinema.1, 4, &more_2, "100.00", "P-4").await;
    s.set_clock(s.now.plus_seconds(30));
    let plan_2 = crashed("k2", s.world.clock.now_ts());
    assert_eq!(s.world.app.store().settle_merchants(&plan_2, &[cinema]).await.expect("chunk"), 1);
    let (status, answer) = s.settle("settle-after-crash").await;
    assert_eq!((status, code(&answer)), (409, "nothing_to_settle"), "the earlier run took every redemption");
    let path_2 = format!("/v1/settlements/{}", plan_2.id);
    let (_, seen) = s.get(&path_2, &s.finance).await;
    let seen = &seen["settlement"];
    assert_eq!(
        (seen["status"].as_str(), seen["merchants"].as_i64(), seen["total"].as_str()),
        (Some("complete"), Some(2), Some("20.00"))
    );
    let (status, paid) = s
        .world
        .app
        .post_idem(&format!("{path_2}/paid"), Some(&s.finance), "pay-2", json!({"payout_ref": "B-2"}))
        .await;
    assert_eq!(status, 201, "{paid}");
    // The first run's retry then answers with the settlement, as finished and paid.
    let now = s.world.clock.now_ts();
    let retried = finance::settle(store, &season, plan_2.cut_off, now, crashed_answer("k2"), chunking)
        .await
        .expect("the retry answers with the finished settlement");
    assert_eq!((retried.id, retried.line_count, retried.total_fen), (plan_2.id, 2, 2_000));
    assert!(retried.paid_at.is_some());
    let stored = store.idempotent_answer("test:crashed", "k2").await.expect("read").expect("answer stored");
    assert_eq!(stored.body, finance::SettlementAnswer::text(&retried));
    s.reconciles().await;
}

/// The server finishes settlements left in progress when it starts, and closing a season
/// finishes the season's before it closes: no settlement waits for its key's retry.
async fn restart_and_close_finish_settlements_left_in_progress(backend: Backend) {
    let (mut s, more, more_2) = Script::two_redeemed_two_claimed(backend).await;
    let season_id: SeasonId = s.world.season_id.parse().expect("uuid");
    let merchant_id =
        |till: &(String, TillClient)| -> wenhui::domain::ids::MerchantId { till.0.parse().expect("uuid") };
    let crashed = |key: &str, cut_off: Timestamp| crashed_plan(season_id, key, cut_off);

    s.set_clock(s.now.plus_seconds(10));
    let plan = crashed("k1", s.world.clock.now_ts());
    let written = s.world.app.store().settle_merchants(&plan, &[merchant_id(&s.bookstore)]).await;
    assert_eq!(written.expect("chunk"), 1);
    s.world.app.restart().await;
    let path = format!("/v1/settlements/{}", plan.id);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let finished = loop {
        let (status, seen) = s.get(&path, &s.finance).await;
        assert_eq!(status, 200, "{seen}");
        if seen["settlement"]["status"] == "complete" || std::time::Instant::now() > deadline {
            break seen["settlement"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (finished["status"].as_str(), finished["merchants"].as_i64(), finished["total"].as_str()),
        (Some("complete"), Some(2), Some("20.00")),
        "the restarted server finishes the settlement"
    );
    s.reconciles().await;

    // Another run stops part way; the season's close finishes it before closing.
    s.set_clock(s.now.plus_seconds(20));
    s.redeem(&s.cinema.1, 3, &more, "100.00", "P-3").await;
    s.redeem(&s.bookstore.1, 4, &more_2, "100.00", "P-4").await;
    s.set_clock(s.now.plus_seconds(30));
    let plan_2 = crashed("k2", s.world.clock.now_ts());
    let written = s.world.app.store().settle_merchants(&plan_2, &[merchant_id(&s.cinema)]).await;
    assert_eq!(written.expect("chunk"), 1);
    s.set_clock(s.now.plus_seconds(HOUR_S + 1));
    let close = format!("/v1/seasons/{season_id}/close");
    let (status, closed) = s.world.app.post_idem(&close, Some(&s.finance), "close-1", json!({})).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!((closed["reconciled"].as_bool(), closed["breaks"].as_i64()), (Some(true), Some(0)));
    let (_, seen) = s.get(&format!("/v1/settlements/{}", plan_2.id), &s.finance).await;
    let seen = &seen["settlement"];
    assert_eq!(
        (seen["status"].as_str(), seen["merchants"].as_i64(), seen["total"].as_str()),
        (Some("complete"), Some(2), Some("20.00"))
    );
    let (_, listed) = s.get(&format!("/v1/seasons/{season_id}/settlements"), &s.finance).await;
    let statuses: Vec<&str> =
        listed["settlements"].as_array().expect("list").iter().filter_map(|l| l["status"].as_str()).collect();
    assert_eq!(statuses, ["complete", "complete"], "{listed}");
}

/// The plan of a settlement run under `key` (scope `test:crashed`) that a test stops part way.
fn crashed_plan(season_id: SeasonId, key: &str, cut_off: Timestamp) -> SettlementPlan {
    SettlementPlan {
        id: finance::settlement_id("test:crashed", key),
        season_id,
        cut_off,
        created_at: cut_off,
        answer: Some(crashed_answer(key)),
        render: finance::SettlementAnswer::text,
    }
}

fn crashed_answer(key: &str) -> IdemRecord {
    IdemRecord {
        scope: "test:crashed".into(),
        key: key.into(),
        request_hash: key.as_bytes().to_vec(),
        status: 201,
        body: String::new(),
    }
}

both_backends!(
    scripted_season,
    merchant_journal,
    tampered_ledger_breaks_reconciliation,
    redemption_with_broken_reference,
    access,
    settlement_races_reversals,
    entries_naming_no_row,
    settlement_account_changes,
    a_revoked_keys_account_request_is_not_approved,
    a_settlement_left_in_progress_is_finished,
    restart_and_close_finish_settlements_left_in_progress
);

/// A merchant's payout account changes only with four eyes: one admin's key asks, another's
/// approves (the asker cannot), either may reject; a request lapses after a week; one waits at a
/// time. Every request, decision and change is kept (append-only, with keys, times and reasons);
/// a settlement already made keeps the old account and the next one pays the new.
async fn settlement_account_changes(backend: Backend) {
    let mut s = Script::with_one_redemption(backend, "T-1").await;
    let (status, first) = s.settle("settle-1").await;
    assert_eq!(status, 201, "{first}");
    let first_id = first["settlement_id"].as_str().expect("id").to_owned();
    let bookstore = s.bookstore.0.clone();
    let path = format!("/v1/merchants/{bookstore}/settlement-account");
    let account = |no: &str| {
        json!({"bank": "中国银行", "account_no": no, "account_name": "某书店有限公司",
               "reason": "the merchant's letter of 2026-11-20"})
    };
    let new_account = account("6217000099998888");

    let jinan_admin = s.world.app.staff_key(Role::CityAdmin, "370100").await;
    let (status, body) = put(&s, &path, &jinan_admin, new_account.clone()).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "another city's admin: {body}");
    let admin = s.world.province_admin.clone();
    let mut bad = new_account.clone();
    bad["account_no"] = json!("6217-0000");
    let (status, body) = put(&s, &path, &admin, bad).await;
    assert_eq!((status, code(&body)), (422, "invalid_account"));
    let mut unexplained = new_account.clone();
    unexplained["reason"] = json!("  ");
    let (status, body) = put(&s, &path, &admin, unexplained).await;
    assert_eq!((status, code(&body)), (422, "invalid_field"), "a change needs a reason: {body}");

    // One key asks: nothing changes yet; asking again answers the same; another account waits.
    let (status, asked) = put(&s, &path, &admin, new_account.clone()).await;
    assert_eq!(status, 202, "{asked}");
    assert_eq!(asked["request"]["status"], "pending");
    assert_eq!(asked["merchant"]["settlement_account"]["account_no"], "6222000011112222", "not yet");
    let (status, again) = put(&s, &path, &admin, new_account.clone()).await;
    assert_eq!((status, &again), (202, &asked), "a retry gets the first answer");
    let (status, body) = put(&s, &path, &admin, account("6217000011110009")).await;
    assert_eq!((status, code(&body)), (409, "change_pending"), "{body}");
    let request_id = asked["request"]["id"].as_str().expect("id").to_owned();
    let decide = |verb: &str| format!("{path}/requests/{request_id}/{verb}");
    let (status, body) = s.world.app.post(&decide("approve"), Some(&admin), json!({})).await;
    assert_eq!((status, code(&body)), (403, "same_approver"), "{body}");
    let (status, body) = s.world.app.post(&decide("approve"), Some(&jinan_admin), json!({})).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) =
        s.world.app.post(&format!("{path}/requests/{}/approve", Uuid::nil()), Some(&admin), json!({})).await;
    assert_eq!((status, code(&body)), (404, "request_not_found"), "{body}");
    assert_eq!(payout_account(&s, &first_id).await, "6222000011112222");

    // A second key approves: from now on the merchant is paid to the new account.
    let qingdao_admin = s.world.app.staff_key(Role::CityAdmin, "370200").await;
    let note = json!({"note": "called the merchant back on its registered number"});
    let (status, approved) = s.world.app.post(&decide("approve"), Some(&qingdao_admin), note.clone()).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["merchant"]["settlement_account"]["account_no"], "6217000099998888");
    assert_eq!(approved["request"]["status"], "approved");
    assert_eq!(approved["request"]["decision"]["note"], "called the merchant back on its registered number");
    let (status, again) = s.world.app.post(&decide("approve"), Some(&qingdao_admin), note).await;
    assert_eq!((status, &again), (200, &approved), "a retry gets the same answer");
    let (status, body) = s.world.app.post(&decide("reject"), Some(&admin), json!({})).await;
    assert_eq!((status, code(&body)), (409, "request_decided"), "{body}");

    let history_path = format!("{path}/changes");
    let (status, history) = s.get(&history_path, &s.finance).await;
    assert_eq!(status, 200, "{history}");
    let changes = history["changes"].as_array().expect("changes").clone();
    assert_eq!(changes.len(), 1, "{history}");
    assert_eq!(changes[0]["reason"], "the merchant's letter of 2026-11-20");
    assert_eq!(changes[0]["from"]["account_no"], "6222000011112222");
    assert_eq!(changes[0]["request_id"], request_id.as_str());
    assert_eq!(changes[0]["requested_by_key"], asked["request"]["requested_by_key"]);
    assert_eq!(changes[0]["changed_by_key"], approved["request"]["decision"]["decided_by_key"]);
    assert_ne!(changes[0]["changed_by_key"], changes[0]["requested_by_key"], "two keys");
    let (status, same) = put(&s, &path, &admin, new_account.clone()).await;
    assert_eq!((status, &same["last_change"]), (200, &changes[0]), "the account it has: nothing to ask");
    let (status, body) = s.get(&history_path, &jinan_admin).await;
    assert_eq!((status, code(&body)), (403, "forbidden"));

    assert_eq!(payout_account(&s, &first_id).await, "6222000011112222", "settled before the change");
    let voucher = s.claim(2, "A", 1_000).await;
    s.redeem(&s.bookstore.1, 2, &voucher, "100.00", "T-2").await;
    let (status, second) = s.settle("settle-2").await;
    assert_eq!(status, 201, "{second}");
    let second_id = second["settlement_id"].as_str().expect("id").to_owned();
    assert_eq!(payout_account(&s, &second_id).await, "6217000099998888", "settled after the change");

    // The asker withdraws a request; two at once: one waits, the other is refused.
    let (_, withdrawn) = put(&s, &path, &admin, account("6217000011110001")).await;
    let withdraw = format!("{path}/requests/{}/reject", withdrawn["request"]["id"].as_str().expect("id"));
    let (status, body) =
        s.world.app.post(&withdraw, Some(&admin), json!({"note": "typed the wrong number"})).await;
    assert_eq!((status, body["request"]["status"].as_str()), (200, Some("rejected")), "{body}");
    let (first_put, second_put) = tokio::join!(
        put(&s, &path, &admin, account("6217000011110002")),
        put(&s, &path, &admin, account("6217000011110003"))
    );
    let mut statuses = [first_put.0, second_put.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 409], "{first_put:?} {second_put:?}");
    let waiting = if first_put.0 == 202 { &first_put.1 } else { &second_put.1 };
    let approve_waiting =
        format!("{path}/requests/{}/approve", waiting["request"]["id"].as_str().expect("id"));
    let (status, body) = s.world.app.post(&approve_waiting, Some(&qingdao_admin), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, history) = s.get(&history_path, &s.finance).await;
    let changes = history["changes"].as_array().expect("changes");
    let numbers: Vec<i64> = changes.iter().filter_map(|c| c["seq"].as_i64()).collect();
    assert_eq!(numbers, [1, 2], "{history}");
    assert_eq!(changes[1]["from"], changes[0]["to"], "each change starts where the last ended");
    let (_, first_page) = s.get(&format!("{history_path}?limit=1"), &s.finance).await;
    assert_eq!(
        (first_page["changes"].as_array().map(Vec::len), &first_page["next_after_seq"]),
        (Some(1), &json!(1))
    );
    let (_, listed) = s.get("/v1/merchants?city=370200", &admin).await;
    let now_paid_to = listed["merchants"]
        .as_array()
        .and_then(|all| all.iter().find(|m| m["id"] == bookstore.as_str()))
        .map(|m| m["settlement_account"].clone());
    assert_eq!(now_paid_to.as_ref(), Some(&changes[1]["to"]), "the account is the last change's");

    // A request nobody decides lapses after a week, and no longer blocks the next.
    let (_, lapsing) = put(&s, &path, &admin, account("6217000011110004")).await;
    s.set_clock(s.world.clock.now_ts().plus_seconds(7 * 86_400));
    let lapsed = format!("{path}/requests/{}/approve", lapsing["request"]["id"].as_str().expect("id"));
    let (status, body) = s.world.app.post(&lapsed, Some(&qingdao_admin), json!({})).await;
    assert_eq!((status, code(&body)), (409, "request_expired"), "{body}");
    let (status, next) = put(&s, &path, &admin, account("6217000011110005")).await;
    assert_eq!(status, 202, "{next}");
    let (status, requests) = s.get(&format!("{path}/requests"), &s.finance).await;
    assert_eq!(status, 200, "{requests}");
    let statuses: Vec<&str> = requests["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert_eq!(statuses, ["approved", "rejected", "approved", "expired", "pending"], "{requests}");
    let (_, page) = s.get(&format!("{path}/requests?limit=2&after_seq=2"), &s.finance).await;
    assert_eq!(page["requests"].as_array().map(Vec::len), Some(2), "{page}");
    assert_eq!(page["next_after_seq"], 4, "{page}");
    let (status, body) = s.get(&format!("{path}/requests"), &jinan_admin).await;
    assert_eq!((status, code(&body)), (403, "forbidden"));

    // A second person is no approver when the asker minted their key, at any depth, nor when
    // they minted the asker's.
    let mint = |minter: String| {
        let app = &s.world.app;
        async move {
            let phone = crate::common::fresh_phone();
            let body = json!({"role": "city_admin", "region": "370200", "label": "second", "name": "某人", "phone": phone});
            app.enrol_key_for(&minter, body).await["key"].as_str().expect("key").to_owned()
        }
    };
    let own_second = mint(admin.clone()).await;
    let own_third = mint(own_second.clone()).await;
    let approve_next = format!("{path}/requests/{}/approve", next["request"]["id"].as_str().expect("id"));
    for related in [&own_second, &own_third] {
        let (status, body) = s.world.app.post(&approve_next, Some(related), json!({})).await;
        assert_eq!((status, code(&body)), (403, "same_approver"), "{body}");
    }
    let reject_next = format!("{path}/requests/{}/reject", next["request"]["id"].as_str().expect("id"));
    let (status, _) = s.world.app.post(&reject_next, Some(&own_third), json!({})).await;
    assert_eq!(status, 200, "any admin over the merchant may reject");
    let (status, asked_by_minted) = put(&s, &path, &own_third, account("6217000011110006")).await;
    assert_eq!(status, 202, "{asked_by_minted}");
    let approve =
        format!("{path}/requests/{}/approve", asked_by_minted["request"]["id"].as_str().expect("id"));
    for related in [&admin, &own_second] {
        let (status, body) = s.world.app.post(&approve, Some(related), json!({})).await;
        assert_eq!((status, code(&body)), (403, "same_approver"), "its minters: {body}");
    }
    let (status, body) = s.world.app.post(&approve, Some(&qingdao_admin), json!({})).await;
    assert_eq!(status, 200, "a key minted elsewhere: {body}");
    // Each key records its minter: the two minted here, one by the other.
    let keys = s.world.app.store().staff_keys().await.expect("keys");
    let minted: Vec<_> = keys.iter().filter(|k| k.label == "second").collect();
    assert_eq!(minted.len(), 2);
    assert!(minted[0].minted_by.is_some() && minted[1].minted_by == Some(minted[0].id), "{minted:?}");

    for sql in [
        "UPDATE merchant_account_changes SET new_account_no = '1'",
        "DELETE FROM merchant_account_changes",
        "UPDATE merchant_account_requests SET new_account_no = '1'",
        "DELETE FROM merchant_account_requests",
        "UPDATE merchant_account_decisions SET decision = 'approved'",
        "DELETE FROM merchant_account_decisions",
    ] {
        assert!(s.world.app.db.raw(sql).await.is_err(), "the history refuses: {sql}");
    }
    s.reconciles().await;
}

/// The sum of the amount column (the 8th) of an English payout file, as yuan text, summed in fen.
fn settled_total(payout: &str) -> String {
    let fen: i64 = payout
        .lines()
        .skip(1)
        .map(|l| {
            let amount = l.split(',').nth(7).expect("amount");
            let (whole, places) = amount.split_once('.').expect("two places");
            whole.parse::<i64>().expect("yuan") * 100 + places.parse::<i64>().expect("fen")
        })
        .sum();
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// The bookstore's account number on a settlement's payout file.
async fn payout_account(s: &Script, settlement: &str) -> String {
    let url = s.world.app.url(&format!("/v1/settlements/{settlement}/payout.csv"));
    let response = s.world.app.client.get(url).bearer_auth(&s.finance).send().await.expect("payout");
    let csv = response.text().await.expect("csv");
    let line = csv.lines().find(|l| l.contains(&s.bookstore.0)).expect("bookstore line").to_owned();
    line.split(',').nth(4).expect("account_no column").to_owned()
}

/// A key's revocation is checked when it authenticates; the decision on a settlement account
/// change reads it again in its transaction: a request asked by a key revoked since (a leaked
/// key's, say) is not approved, though it may be rejected.
async fn a_revoked_keys_account_request_is_not_approved(backend: Backend) {
    let world = World::new(backend, "1000.00", None).await;
    let (asker_id, asker) = world.app.enrol_key(&world.province_admin, "city_admin", "370200").await;
    let asker_id: Uuid = asker_id.parse().expect("uuid");
    let approver = world.app.staff_key(Role::ProvinceAdmin, "370000").await;
    let merchant_id = merchant(&world, &asker, 31, "bookstore", "370200").await;
    let path = format!("/v1/merchants/{merchant_id}/settlement-account");
    let account = json!({"bank": "中国银行", "account_no": "6217000099998888", "account_name": "某书店有限公司",
        "reason": "the merchant's letter"});
    let request = world.app.client.put(world.app.url(&path)).bearer_auth(&asker).json(&account);
    let (status, asked) = crate::common::read(request.send().await.expect("send")).await;
    assert_eq!(status, 202, "{asked}");
    let request_id = asked["request"]["id"].as_str().expect("id");
    world
        .app
        .store()
        .revoke_staff_key(asker_id.into(), Timestamp::now())
        .await
        .expect("revoke")
        .expect("the key");
    let decide = |verb: &str| format!("{path}/requests/{request_id}/{verb}");
    let (status, body) = world.app.post(&decide("approve"), Some(&approver), json!({})).await;
    assert_eq!((status, code(&body)), (403, "key_revoked"), "{body}");
    let (status, body) = world.app.post(&decide("reject"), Some(&approver), json!({})).await;
    assert_eq!((status, body["request"]["status"].as_str()), (200, Some("rejected")), "{body}");
}

async fn put(s: &Script, path: &str, key: &str, body: Value) -> (u16, Value) {
    let request = s.world.app.client.put(s.world.app.url(path)).bearer_auth(key).json(&body);
    crate::common::read(request.send().await.expect("send")).await
}
