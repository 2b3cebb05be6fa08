//! `wenhui demo`: seeds the embedded SQLite database of a fresh data directory with a realistic
//! season, through the service's own HTTP API (every check, idempotency key and ledger entry
//! applies, as for any client), then serves it like `wenhui serve` (or exits with `--seed-only`).
//!
//! The season: the province of Shandong (370000) and two of its cities, Jinan (370100) and
//! Qingdao (370200), fund it; a provincial threshold batch (满100减30), a Jinan percent batch
//! (8折最高减50), a Qingdao batch co-funded by the province (满50减15), and a provincial rush
//! batch opening a minute after the start; a bookstore, a KTV and an internet cafe in each city,
//! each with a till whose configuration `wenhui-till --config` reads; twelve citizens, their
//! claims, redemptions signed by the tills through the merchant SDK, and one settlement. What it
//! holds is listed in docs/operations.md ("The demo").
//!
//! The first key, the province admin's, is minted at the console as `wenhui keys create` does;
//! every other key is enrolled for its person through the API, with the one-time code read from
//! the development SMS provider (`GET /v1/dev/sms`), which a production server never has: the
//! demo refuses to run with `--production` or `WENHUI_ENV=production`, on any database but the
//! embedded SQLite default, and on a database that already holds a season.

#![allow(clippy::print_stdout, reason = "the demo prints its addresses and keys on stdout")]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use wenhui_merchant_sdk::client::{ClientOptions, RedeemRequest, TillClient, TillKey, register_terminal};
use wenhui_merchant_sdk::journal::Journal;

use crate::app::zh;
use crate::domain::citizen::synthetic_id_number;
use crate::domain::merchant::credit_check_char;
use crate::domain::money::Fen;
use crate::domain::region::RegionCode;
use crate::domain::staff::{Role, StaffScope};
use crate::domain::time::Timestamp;
use crate::server::{self, RunningServer, ServeConfig, ShutdownSignal};

/// The season's name, as the citizen's page and the console show it.
pub const SEASON_NAME: &str = "2026 山东文化消费季";
/// Where the tills' keys, configurations and journals are written, under the data directory.
pub const TILLS_DIR: &str = "demo-tills";

const PROVINCE: &str = "370000";
const JINAN: &str = "370100";
const QINGDAO: &str = "370200";

/// The staff people and their keys: (role, region, name, phone). The first is minted at the
/// console; the others are enrolled by the admin of their region.
const STAFF: [(Role, &str, &str, &str); 6] = [
    (Role::ProvinceAdmin, PROVINCE, "王建国", "13800000001"),
    (Role::CityAdmin, JINAN, "李明", "13800000002"),
    (Role::CityAdmin, QINGDAO, "陈刚", "13800000003"),
    (Role::Finance, PROVINCE, "刘芳", "13800000004"),
    (Role::Finance, QINGDAO, "孙丽", "13800000005"),
    (Role::Auditor, PROVINCE, "赵静", "13800000006"),
];

/// Merchants: (directory name, name, category, city, bank).
const MERCHANTS: [(&str, &str, &str, &str, &str); 6] = [
    ("jinan-bookstore", "泉城书房", "bookstore", JINAN, "齐鲁银行"),
    ("jinan-ktv", "济南星光KTV", "ktv", JINAN, "齐鲁银行"),
    ("jinan-internet-cafe", "济南极速网咖", "internet_cafe", JINAN, "齐鲁银行"),
    ("qingdao-bookstore", "青岛海边书店", "bookstore", QINGDAO, "青岛银行"),
    ("qingdao-ktv", "青岛麦霸KTV", "ktv", QINGDAO, "青岛银行"),
    ("qingdao-internet-cafe", "青岛网鱼网咖", "internet_cafe", QINGDAO, "青岛银行"),
];

/// Citizens: (name, home district, phone). The first six live in Jinan, the others in Qingdao.
const CITIZENS: [(&str, &str, &str); 12] = [
    ("张伟", "370102", "13900000001"),
    ("王芳", "370102", "13900000002"),
    ("李娜", "370103", "13900000003"),
    ("刘洋", "370103", "13900000004"),
    ("陈静", "370104", "13900000005"),
    ("杨磊", "370104", "13900000006"),
    ("赵敏", "370202", "13900000007"),
    ("黄强", "370202", "13900000008"),
    ("周婷", "370203", "13900000009"),
    ("吴杰", "370203", "13900000010"),
    ("徐丽", "370211", "13900000011"),
    ("孙浩", "370211", "13900000012"),
];

/// The batches, by the letter the plan below names them with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BatchName {
    /// The province's 满100减30, usable in both cities.
    Province,
    /// Jinan's 8折最高减50.
    JinanPercent,
    /// Qingdao's 满50减15, 40% paid by the province.
    QingdaoCoFunded,
    /// The province's 满200减60, opening a minute after the start.
    Rush,
}

/// A redemption of the plan: the citizen (index in [`CITIZENS`]), the batch of their voucher,
/// the till (index in [`MERCHANTS`]), and the order's amount in fen (`12_800` is ¥128.00).
struct PlannedRedemption {
    citizen: usize,
    batch: BatchName,
    till: usize,
    order_fen: i64,
}

const fn redeem(citizen: usize, batch: BatchName, till: usize, order_fen: i64) -> PlannedRedemption {
    PlannedRedemption { citizen, batch, till, order_fen }
}

/// Redeemed, then settled.
const BEFORE_SETTLEMENT: [PlannedRedemption; 8] = [
    redeem(0, BatchName::Province, 0, 12_800),
    redeem(1, BatchName::Province, 1, 16_800),
    redeem(2, BatchName::JinanPercent, 2, 8_000),
    redeem(3, BatchName::JinanPercent, 1, 30_000),
    redeem(6, BatchName::Province, 3, 10_000),
    redeem(7, BatchName::QingdaoCoFunded, 5, 5_800),
    redeem(8, BatchName::QingdaoCoFunded, 4, 12_000),
    redeem(9, BatchName::Province, 4, 23_600),
];

/// Redeemed after the settlement: waiting for the next one.
const AFTER_SETTLEMENT: [PlannedRedemption; 2] =
    [redeem(4, BatchName::JinanPercent, 0, 4_500), redeem(10, BatchName::QingdaoCoFunded, 3, 6_600)];

/// `wenhui demo`'s settings.
pub struct DemoConfig {
    pub database_url: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub production: bool,
    pub seed_only: bool,
}

/// Seeds, prints, and serves until SIGTERM or Ctrl-C (or returns after seeding, `seed_only`).
pub async fn run(config: DemoConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.production,
        "refusing to run the demo in production: it seeds made-up people and money and needs the \
         development SMS provider"
    );
    anyhow::ensure!(
        config.database_url.starts_with("sqlite:"),
        "the demo seeds the embedded SQLite database only: unset DATABASE_URL (or --database-url) \
         and give it a fresh --data-dir"
    );
    refuse_a_used_database(&config).await?;
    let stop = ShutdownSignal::install()?;
    let serve = ServeConfig::new(config.database_url.clone(), config.listen, config.data_dir.clone());
    let server = server::start(serve).await?;
    let seeded = match seed(&server, &config.data_dir).await {
        Ok(seeded) => seeded,
        Err(error) => {
            let _ = server.stop().await;
            return Err(error.context("seeding the demo"));
        }
    };
    println!("{}", seeded.text(&config.data_dir));
    if config.seed_only {
        return server.stop().await;
    }
    println!("serving; stop with Ctrl-C (`wenhui serve` with the same --data-dir serves it again)");
    stop.wait().await;
    tracing::info!("shutting down");
    server.stop().await
}

/// A demo goes into a database with no season and a data directory with no demo tills.
async fn refuse_a_used_database(config: &DemoConfig) -> anyhow::Result<()> {
    let fresh_dir = "run `wenhui demo --data-dir <a new directory>` to seed a fresh one";
    let store = server::open_store(&config.database_url, &config.data_dir).await?;
    let seasons = store.seasons(None, None, 1).await?;
    anyhow::ensure!(
        seasons.is_empty(),
        "the database in {} already has seasons; the demo seeds only an empty one: {fresh_dir}, or \
         `wenhui serve` to serve this one",
        config.data_dir.display()
    );
    let tills = config.data_dir.join(TILLS_DIR);
    anyhow::ensure!(!tills.exists(), "{} holds the tills of an earlier demo; {fresh_dir}", tills.display());
    Ok(())
}

/// The address a client on this machine reaches the server at.
fn client_base(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip if ip.is_unspecified() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// An amount in fen as the API takes it: `128.00`.
fn yuan(fen: i64) -> String {
    Fen::from_fen_unchecked(fen).to_string()
}

/// A whole number of yuan as the API takes it: `30.00`.
fn whole_yuan(yuan: i64) -> String {
    format!("{yuan}.00")
}

fn fen(answer: &Value, field: &str) -> anyhow::Result<i64> {
    let text = answer[field].as_str().with_context(|| format!("no {field} in {answer}"))?;
    Ok(Fen::parse_yuan(text).map_err(|e| anyhow::anyhow!("{field} {text}: {e}"))?.as_fen())
}

fn text_field(answer: &Value, field: &str) -> anyhow::Result<String> {
    answer[field].as_str().map(str::to_owned).with_context(|| format!("no {field} in {answer}"))
}

/// The service's HTTP API, as the demo's client.
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    /// Sends a request; the answer's JSON if its status is one of `ok`, else an error naming the
    /// request and the service's refusal.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
        idempotency_key: Option<&str>,
        ok: &[u16],
    ) -> anyhow::Result<Value> {
        let mut request = self.client.request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = auth {
            request = request.bearer_auth(token);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.with_context(|| format!("{method} {path}: reading the answer"))?;
        let answer = serde_json::from_str(&text).unwrap_or(Value::String(text));
        anyhow::ensure!(ok.contains(&status), "{method} {path} answered {status}: {answer}");
        Ok(answer)
    }

    async fn get(&self, path: &str, auth: Option<&str>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, auth, None, None, &[200]).await
    }

    /// A write under an Idempotency-Key, as every retried write of a client is sent.
    async fn post(&self, path: &str, auth: Option<&str>, key: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, auth, Some(body), Some(key), &[200, 201, 202]).await
    }

    /// A write that takes no Idempotency-Key (codes, registration, enrolments).
    async fn post_plain(&self, path: &str, auth: Option<&str>, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, auth, Some(body), None, &[200, 201, 202]).await
    }

    /// The newest code the development SMS provider kept for `phone` and `purpose`.
    async fn dev_code(&self, phone: &str, purpose: &str) -> anyhow::Result<String> {
        let outbox = self.get(&format!("/v1/dev/sms?phone={phone}"), None).await?;
        let messages = outbox["messages"].as_array().context("the dev SMS outbox lists messages")?;
        let newest = messages
            .iter()
            .find(|m| m["purpose"] == purpose)
            .with_context(|| format!("no {purpose} code for {phone} in the dev SMS outbox"))?;
        text_field(newest, "code")
    }
}

/// A staff key the demo prints.
struct StaffKey {
    role: Role,
    region: &'static str,
    name: &'static str,
    secret: String,
}

/// A till the demo registered and wrote a configuration for.
struct DemoTill {
    merchant: &'static str,
    category: &'static str,
    city: String,
    config: PathBuf,
    client: TillClient,
}

/// A citizen the demo registered.
struct DemoCitizen {
    token: String,
    id_number: String,
    /// Their vouchers: the batch and the voucher's id.
    vouchers: Vec<(BatchName, String)>,
}

/// What the demo made, for the printout.
struct Seeded {
    base: String,
    season_id: String,
    staff: Vec<StaffKey>,
    tills: Vec<(&'static str, &'static str, String, PathBuf)>,
    citizen: (&'static str, &'static str, String),
    rush_opens_at: Timestamp,
    claims: usize,
    redemptions: usize,
    discount_fen: i64,
    order_fen: i64,
    settled_fen: i64,
    unsettled: usize,
}

impl Seeded {
    fn text(&self, data_dir: &Path) -> String {
        let base = &self.base;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "文惠 demo: season {SEASON_NAME} ({}) seeded in {}",
            self.season_id,
            data_dir.display()
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "  citizen page   {base}/");
        let _ = writeln!(out, "  console        {base}/console/");
        let _ = writeln!(out, "  dev SMS codes  {base}/v1/dev/sms?phone={}", self.citizen.1);
        let _ = writeln!(out);
        let _ = writeln!(out, "staff keys (each shown this once; sign in to the console with one):");
        for key in &self.staff {
            let region = key.region.parse::<RegionCode>().ok().and_then(zh::region_name).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<15}{} {:<6}{} ({})  {}",
                key.role.as_str(),
                key.region,
                region,
                key.name,
                zh::role_name(key.role),
                key.secret
            );
        }
        let _ = writeln!(out);
        let (name, phone, id_number) = &self.citizen;
        let _ = writeln!(
            out,
            "citizen to sign in as: {name}, phone {phone}, ID number {id_number} (ask for a code on \
             the citizen page; the dev SMS route above shows it)"
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "tills (`wenhui-till --config <till.json> ui` serves the till page on 127.0.0.1:8700; also redeem, reverse, journal):"
        );
        for (merchant, category, city, config) in &self.tills {
            let _ = writeln!(out, "  {merchant} ({city} {category})  {}", config.display());
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "figures: {} claims, {} redemptions (discount {} on orders of {}), settled {}, {} \
             redemptions waiting for the next settlement",
            self.claims,
            self.redemptions,
            zh::yuan_text(self.discount_fen),
            zh::yuan_text(self.order_fen),
            zh::yuan_text(self.settled_fen),
            self.unsettled
        );
        let _ = write!(
            out,
            "the rush batch 周末抢券 opens at {} (Beijing time): watch its countdown on the citizen page",
            zh::cst_second(self.rush_opens_at)
        );
        out
    }
}

/// The whole seeding, through the running server's API.
async fn seed(server: &RunningServer, data_dir: &Path) -> anyhow::Result<Seeded> {
    let base = client_base(server.addr);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let api = Api { client, base: base.clone() };
    let now = Timestamp::now();

    let staff = staff_keys(server, &api, data_dir).await?;
    let key_of = |role: Role, region: &str| -> anyhow::Result<&str> {
        let key = staff.iter().find(|k| k.role == role && k.region == region);
        key.map(|k| k.secret.as_str()).with_context(|| format!("no {role} key of {region}"))
    };
    let province_admin = key_of(Role::ProvinceAdmin, PROVINCE)?;
    let jinan_admin = key_of(Role::CityAdmin, JINAN)?;
    let qingdao_admin = key_of(Role::CityAdmin, QINGDAO)?;
    let finance = key_of(Role::Finance, PROVINCE)?;

    let season_body = json!({
        "name": SEASON_NAME, "province": PROVINCE,
        "starts_at": now.plus_seconds(-86_400).to_string(), "ends_at": now.plus_seconds(60 * 86_400).to_string(),
        "budgets": [{"funder": PROVINCE, "amount": whole_yuan(300_000)}, {"funder": JINAN, "amount": whole_yuan(100_000)},
                    {"funder": QINGDAO, "amount": whole_yuan(100_000)}],
    });
    let season = api.post("/v1/seasons", Some(province_admin), "demo-season", season_body).await?;
    let season_id = text_field(&season, "id")?;

    let rush_opens_at = now.plus_seconds(60);
    let batches =
        create_batches(&api, &season_id, now, rush_opens_at, [province_admin, jinan_admin, qingdao_admin])
            .await?;

    let tills = merchants_and_tills(&api, data_dir, jinan_admin, qingdao_admin).await?;
    let mut citizens = register_citizens(&api).await?;

    let mut claims = 0;
    for (n, citizen) in citizens.iter_mut().enumerate() {
        let city_batch = if n < 6 { BatchName::JinanPercent } else { BatchName::QingdaoCoFunded };
        for batch in [BatchName::Province, city_batch] {
            let batch_id = batch_id(&batches, batch)?;
            let key = format!("demo-claim-{n}-{batch:?}");
            let path = format!("/v1/batches/{batch_id}/claims");
            let claim = api.post(&path, Some(&citizen.token), &key, json!({})).await?;
            let voucher = text_field(&claim["voucher"], "id")?;
            citizen.vouchers.push((batch, voucher));
            claims += 1;
        }
    }

    let mut sales = Sales::default();
    for planned in &BEFORE_SETTLEMENT {
        sales.redeem(&api, &citizens, &tills, planned).await?;
    }
    // The settlement's cut-off is now, not in the future; the redemptions above are before it.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let cut_off = Timestamp::now();
    let settlement = api
        .post(
            "/v1/settlements",
            Some(finance),
            "demo-settlement-1",
            json!({"season_id": season_id, "cut_off": cut_off.to_string()}),
        )
        .await?;
    let settled_fen = fen(&settlement, "total")?;
    let settled_count = sales.count;
    for planned in &AFTER_SETTLEMENT {
        sales.redeem(&api, &citizens, &tills, planned).await?;
    }

    let (first_name, _, first_phone) = CITIZENS[0];
    let first = citizens.first().context("a citizen")?;
    Ok(Seeded {
        base,
        season_id,
        staff,
        tills: tills.into_iter().map(|t| (t.merchant, t.category, t.city, t.config)).collect(),
        citizen: (first_name, first_phone, first.id_number.clone()),
        rush_opens_at,
        claims,
        redemptions: sales.count,
        discount_fen: sales.discount_fen,
        order_fen: sales.order_fen,
        settled_fen,
        unsettled: sales.count - settled_count,
    })
}

/// The province admin's key minted at the console (as `wenhui keys create --name --phone`),
/// then every other person's key enrolled by an admin and claimed with the code sent to them.
async fn staff_keys(server: &RunningServer, api: &Api, data_dir: &Path) -> anyhow::Result<Vec<StaffKey>> {
    let mut keys = Vec::new();
    let (role, region, name, phone) = STAFF[0];
    let person = crate::cli::console_person(data_dir, Some(name), Some(phone))?;
    let scope = StaffScope::new(role, region.parse::<RegionCode>().map_err(|e| anyhow::anyhow!("{e}"))?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let minted = crate::app::staff::mint_for(server.store.as_ref(), scope, "demo", person).await?;
    keys.push(StaffKey { role, region, name, secret: minted.secret });
    for (role, region, name, phone) in STAFF.into_iter().skip(1) {
        // A city's admin enrols nobody here: the province's admin enrols everyone, as at the start
        // of a season.
        let admin = keys.first().map(|k| k.secret.clone()).context("the province admin's key")?;
        let body =
            json!({"role": role.as_str(), "region": region, "label": "demo", "name": name, "phone": phone});
        let enrolment = api.post_plain("/v1/staff/keys", Some(&admin), body).await?;
        let enrolment_id = text_field(&enrolment, "enrolment_id")?;
        let code = api.dev_code(phone, "staff_enrol").await?;
        let path = format!("/v1/staff/enrolments/{enrolment_id}/claim");
        let claimed = api.post_plain(&path, None, json!({"code": code})).await?;
        keys.push(StaffKey { role, region, name, secret: text_field(&claimed, "key")? });
    }
    Ok(keys)
}

fn batch_id(batches: &[(BatchName, String)], name: BatchName) -> anyhow::Result<&str> {
    let found = batches.iter().find(|(n, _)| *n == name);
    found.map(|(_, id)| id.as_str()).with_context(|| format!("no batch {name:?}"))
}

/// The four batches: each by the admin of its issuer.
async fn create_batches(
    api: &Api,
    season_id: &str,
    now: Timestamp,
    rush_opens_at: Timestamp,
    [province_admin, jinan_admin, qingdao_admin]: [&str; 3],
) -> anyhow::Result<Vec<(BatchName, String)>> {
    let opens = now.plus_seconds(-3_600).to_string();
    let closes = now.plus_seconds(59 * 86_400).to_string();
    let all = ["bookstore", "ktv", "internet_cafe"];
    let common = json!({"per_citizen_limit": 1, "valid_hours": 720, "claim_opens_at": opens,
                        "claim_closes_at": closes, "categories": all});
    let specs = [
        (
            BatchName::Province,
            province_admin,
            json!({"name": "山东省文化消费券", "issuer": PROVINCE, "kind": "threshold", "face_value": whole_yuan(30),
                   "min_spend": whole_yuan(100), "stock": 2_000}),
        ),
        (
            BatchName::JinanPercent,
            jinan_admin,
            json!({"name": "济南文化惠民券", "issuer": JINAN, "kind": "percent", "percent": 20, "cap": whole_yuan(50),
                   "step": whole_yuan(1), "min_spend": whole_yuan(0), "stock": 1_000}),
        ),
        (
            BatchName::QingdaoCoFunded,
            qingdao_admin,
            json!({"name": "青岛省市联合消费券", "issuer": QINGDAO, "kind": "threshold", "face_value": whole_yuan(15),
                   "min_spend": whole_yuan(50), "stock": 1_000,
                   "funding": [{"funder": PROVINCE, "share": 40}, {"funder": QINGDAO, "share": 60}]}),
        ),
        (
            BatchName::Rush,
            province_admin,
            json!({"name": "周末抢券", "issuer": PROVINCE, "kind": "threshold", "face_value": whole_yuan(60),
                   "min_spend": whole_yuan(200), "stock": 500, "claim_opens_at": rush_opens_at.to_string()}),
        ),
    ];
    let mut batches = Vec::new();
    for (name, admin, spec) in specs {
        let mut body = common.clone();
        for (field, value) in spec.as_object().into_iter().flatten() {
            body[field] = value.clone();
        }
        let path = format!("/v1/seasons/{season_id}/batches");
        let batch = api.post(&path, Some(admin), &format!("demo-batch-{name:?}"), body).await?;
        batches.push((name, text_field(&batch, "id")?));
    }
    Ok(batches)
}

/// A unified social credit code (GB 32100) registered in `city`, with its check character.
fn credit_code(city: &str, n: usize) -> anyhow::Result<String> {
    let first = format!("91{city}{:09}", 100_000 + n);
    let check = credit_check_char(first.as_bytes()).context("a credit code of valid characters")?;
    Ok(format!("{first}{check}"))
}

/// The six merchants, each with a till: a new key, registered through the SDK by the city's
/// admin, and the till's `till.json` beside it (the shape `wenhui-till register` writes).
async fn merchants_and_tills(
    api: &Api,
    data_dir: &Path,
    jinan_admin: &str,
    qingdao_admin: &str,
) -> anyhow::Result<Vec<DemoTill>> {
    let tills_dir = data_dir.join(TILLS_DIR);
    let mut tills = Vec::new();
    for (n, (dir_name, name, category, city, bank)) in MERCHANTS.into_iter().enumerate() {
        let admin = if city == JINAN { jinan_admin } else { qingdao_admin };
        let body = json!({"name": name, "credit_code": credit_code(city, n)?, "category": category, "city": city,
            "settlement_account": {"bank": bank, "account_no": format!("62220000{:08}", 1_000 + n), "account_name": name}});
        let merchant = api.post("/v1/merchants", Some(admin), &format!("demo-merchant-{n}"), body).await?;
        let merchant_id: uuid::Uuid = text_field(&merchant, "id")?.parse()?;

        let dir = tills_dir.join(dir_name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = TillKey::generate()?;
        let key_file = dir.join("till.key");
        key.save(&key_file)?;
        let options = ClientOptions::default();
        let registration =
            register_terminal(&api.base, admin, merchant_id, &key, &format!("{name} 1号收银台"), options)
                .await?;
        let config = dir.join("till.json");
        let text = serde_json::to_string_pretty(&json!({
            "server": api.base, "terminal_id": registration.terminal_id, "key_file": "till.key",
            "journal": "till-journal.jsonl", "keys_cache": "till-keys.json",
        }))?;
        std::fs::write(&config, format!("{text}\n"))
            .with_context(|| format!("writing {}", config.display()))?;
        let journal = Journal::open(dir.join("till-journal.jsonl"))?;
        let client = TillClient::new(&api.base, registration.terminal_id, key, journal, options)?
            .with_key_cache(dir.join("till-keys.json"));
        let category_name = crate::domain::season::Category::ALL
            .into_iter()
            .find(|c| c.as_str() == category)
            .map(zh::category_name)
            .unwrap_or(category);
        let city_name = city.parse::<RegionCode>().ok().and_then(zh::region_name).unwrap_or_default();
        tills.push(DemoTill { merchant: name, category: category_name, city: city_name, config, client });
    }
    Ok(tills)
}

/// Each citizen signs up with a registration code from the development SMS provider.
async fn register_citizens(api: &Api) -> anyhow::Result<Vec<DemoCitizen>> {
    let mut citizens = Vec::new();
    for (n, (name, district, phone)) in CITIZENS.into_iter().enumerate() {
        let sequence = u16::try_from(10 + 2 * n).unwrap_or(0);
        let id_number =
            synthetic_id_number(district, &format!("19{:02}0{}15", 70 + 2 * n, 1 + n % 9), sequence);
        api.post_plain("/v1/citizens/codes", None, json!({"phone": phone, "purpose": "register"})).await?;
        let code = api.dev_code(phone, "register").await?;
        let body = json!({"name": name, "id_number": id_number, "phone": phone, "code": code});
        let session = api.post_plain("/v1/citizens", None, body).await?;
        citizens.push(DemoCitizen { token: text_field(&session, "token")?, id_number, vouchers: Vec::new() });
    }
    Ok(citizens)
}

/// The redemptions made so far.
#[derive(Default)]
struct Sales {
    count: usize,
    discount_fen: i64,
    order_fen: i64,
}

impl Sales {
    /// The citizen shows their voucher's QR code and the till redeems it, signed by its key.
    async fn redeem(
        &mut self,
        api: &Api,
        citizens: &[DemoCitizen],
        tills: &[DemoTill],
        planned: &PlannedRedemption,
    ) -> anyhow::Result<()> {
        let citizen = citizens.get(planned.citizen).context("a planned citizen")?;
        let till = tills.get(planned.till).context("a planned till")?;
        let voucher = citizen
            .vouchers
            .iter()
            .find(|(batch, _)| *batch == planned.batch)
            .map(|(_, id)| id)
            .context("the planned voucher was claimed")?;
        let qr =
            api.post_plain(&format!("/v1/vouchers/{voucher}/qr"), Some(&citizen.token), json!({})).await?;
        let request = RedeemRequest {
            qr: text_field(&qr, "token")?,
            order_amount: yuan(planned.order_fen),
            order_ref: format!("DEMO-{:04}", self.count + 1),
            idempotency_key: None,
        };
        let redemption = till
            .client
            .redeem(request)
            .await
            .map_err(|e| anyhow::anyhow!("{} redeeming a voucher: {e}", till.merchant))?;
        let discount = Fen::parse_yuan(&redemption.discount).map_err(|e| anyhow::anyhow!("discount: {e}"))?;
        self.count += 1;
        self.discount_fen += discount.as_fen();
        self.order_fen += planned.order_fen;
        Ok(())
    }
}
