//! Test harness: fresh databases per test on both backends, an in-process server on a random
//! port, and helpers. PostgreSQL tests never skip: if the server cannot be reached they fail.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use tempfile::TempDir;
use wenhui::domain::finance::SettlementChunking;
use wenhui::domain::staff::{Role, StaffScope};
use wenhui::domain::time::Clock;
use wenhui::server::{RunningServer, ServeConfig};
use wenhui::storage::{self, ConnectOptions, Storage};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `mod $name { sqlite, postgres }` tests calling `$name(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    )+};
}

pub fn pg_admin_url() -> String {
    std::env::var("WENHUI_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The main pool of every node a test starts, in the process or as `wenhui serve` (the
/// service's default is 16): tests run at once, and their nodes share PostgreSQL's connections.
pub const TEST_POOL_SIZE: u32 = 8;

/// PostgreSQL nodes (servers, stores) a test may start on its database unless it reserves more
/// with [`TestDb::for_nodes`].
pub const DEFAULT_NODES: u32 = 2;

/// A test's connections beside its nodes': creating and dropping its database, `raw`, the
/// command line's.
const TEST_OWN_CONNECTIONS: u32 = 4;

/// Connections the suite leaves to everything else on the server (psql, a bench).
const OUTSIDE_CONNECTIONS: u32 = 10;

/// PostgreSQL refuses a connection beyond its `max_connections` ("too many clients already"),
/// and a request waiting for one answers 503 `database_busy` after the pool's 10 s: a fleet test
/// beside another multi-node test once went over. So each PostgreSQL test takes, before its
/// database is made and all at once, the connections its nodes may open, and gives them back
/// when the database is dropped. A test holds one PostgreSQL database, so no test waits for
/// connections while it holds some, and the suite cannot deadlock on them.
static PG_CONNECTIONS: tokio::sync::OnceCell<(Arc<tokio::sync::Semaphore>, u32)> =
    tokio::sync::OnceCell::const_new();

/// The suite's connections, and how many they are in all.
async fn pg_connection_budget() -> (Arc<tokio::sync::Semaphore>, u32) {
    let budget = PG_CONNECTIONS.get_or_init(|| async {
        let mut conn = pg_admin_connection().await;
        let (max, reserved): (i32, i32) = sqlx::query_as(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int",
        )
        .fetch_one(&mut conn)
        .await
        .expect("PostgreSQL's connection settings");
        let total = ((max - reserved).max(0) as u32).saturating_sub(OUTSIDE_CONNECTIONS);
        (Arc::new(tokio::sync::Semaphore::new(total as usize)), total)
    });
    budget.await.clone()
}

async fn pg_admin_connection() -> sqlx::PgConnection {
    let admin = pg_admin_url();
    sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL test database server unreachable at {admin}: {e}. Start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
    })
}

/// What a test of `nodes` PostgreSQL nodes may open at most.
fn pg_connections_for(nodes: u32) -> u32 {
    nodes * storage::postgres_connections_per_node(TEST_POOL_SIZE) + TEST_OWN_CONNECTIONS
}

/// A database of the test's own, removed when dropped.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pg_name: Option<String>,
    pub dir: TempDir,
    /// PostgreSQL's connections this test may open, and how many its nodes started so far may.
    reserved_connections: u32,
    started_connections: std::sync::atomic::AtomicU32,
    /// Given back after the database (and every connection to it) is dropped.
    _connections: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        TestDb::for_nodes(backend, DEFAULT_NODES).await
    }

    /// A database for a test that starts `nodes` nodes on it (servers in the process, `wenhui
    /// serve` processes, stores): on PostgreSQL, once their connections are free.
    pub async fn for_nodes(backend: Backend, nodes: u32) -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let started_connections = std::sync::atomic::AtomicU32::new(0);
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                let reserved_connections = 0;
                TestDb {
                    backend,
                    url,
                    pg_name: None,
                    dir,
                    reserved_connections,
                    started_connections,
                    _connections: None,
                }
            }
            Backend::Postgres => {
                let reserved_connections = pg_connections_for(nodes);
                let (budget, total) = pg_connection_budget().await;
                assert!(
                    reserved_connections <= total,
                    "PostgreSQL's max_connections leaves the suite {total} connections, fewer than a \
                     test of {nodes} nodes may open ({reserved_connections})"
                );
                let permit =
                    budget.acquire_many_owned(reserved_connections).await.expect("the budget stays open");
                let name = format!("wenhui_t_{}", uuid::Uuid::new_v4().simple());
                let admin = pg_admin_url();
                let mut conn = pg_admin_connection().await;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).expect("url with a database");
                let url = format!("{base}/{name}");
                let (pg_name, _connections) = (Some(name), Some(permit));
                TestDb { backend, url, pg_name, dir, reserved_connections, started_connections, _connections }
            }
        }
    }

    /// Counts a node about to start on this database with a main pool of `main_pool`; a test
    /// that starts more than it reserved is wrong (it could take connections another test
    /// counts on), and fails here.
    pub fn start_node(&self, main_pool: u32) {
        if self.backend == Backend::Sqlite {
            return;
        }
        let node = storage::postgres_connections_per_node(main_pool);
        let before = self.started_connections.fetch_add(node, std::sync::atomic::Ordering::SeqCst);
        assert!(
            before + node + TEST_OWN_CONNECTIONS <= self.reserved_connections,
            "this test starts more PostgreSQL nodes than it reserved: make its database with TestDb::for_nodes"
        );
    }

    /// Takes back [`TestDb::start_node`] for a node that did not start or has stopped.
    pub fn node_gone(&self, main_pool: u32) {
        if self.backend == Backend::Postgres {
            let node = storage::postgres_connections_per_node(main_pool);
            self.started_connections.fetch_sub(node, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The connections open to this PostgreSQL database now.
    pub async fn pg_connections(&self) -> i64 {
        let name = self.pg_name.as_deref().expect("a PostgreSQL database");
        let mut conn = pg_admin_connection().await;
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .expect("count the connections")
    }

    pub async fn store(&self) -> Arc<dyn Storage> {
        self.store_with_clock(Arc::new(wenhui::domain::time::SystemClock)).await
    }

    pub async fn store_with_clock(&self, clock: Arc<dyn Clock>) -> Arc<dyn Storage> {
        self.start_node(TEST_POOL_SIZE);
        let options = ConnectOptions { max_connections: TEST_POOL_SIZE, clock };
        let store = storage::connect(&self.url, options).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }

    /// SQL: `column` equals the UUID `id`, in this backend's storage of UUIDs (for `raw`).
    pub fn uuid_equals(&self, column: &str, id: &str) -> String {
        let id: uuid::Uuid = id.parse().expect("a uuid");
        match self.backend {
            Backend::Sqlite => format!("{column} = X'{}'", id.simple()),
            Backend::Postgres => format!("{column} = '{id}'::uuid"),
        }
    }

    /// Runs raw SQL as the database owner, bypassing the service.
    pub async fn raw(&self, sql: &str) -> Result<u64, String> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.map_err(|e| e.to_string())?;
                sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(|e| e.to_string())
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.map_err(|e| e.to_string())?;
                sqlx::raw_sql(sql)
                    .execute(&mut conn)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Changes one posting's amount behind the triggers' back: what a tamperer with owner rights does.
    pub async fn tamper_posting_amount(&self, entry_seq: i64, new_amount_fen: i64) {
        let sql = match self.backend {
            Backend::Sqlite => format!(
                "DROP TRIGGER postings_no_update; \
                 UPDATE postings SET amount_fen = {new_amount_fen} WHERE entry_seq = {entry_seq} AND idx = 0;"
            ),
            Backend::Postgres => format!(
                "ALTER TABLE postings DISABLE TRIGGER postings_append_only; \
                 UPDATE postings SET amount_fen = {new_amount_fen} WHERE entry_seq = {entry_seq} AND idx = 0; \
                 ALTER TABLE postings ENABLE TRIGGER postings_append_only;"
            ),
        };
        let changed = self.raw(&sql).await.expect("tamper");
        assert!(changed >= 1, "tampering changed no row");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        let admin = pg_admin_url();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.ok()
            })
        })
        .join();
    }
}

/// A server running in the test process on a random port, over a fresh database.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub server: Option<RunningServer>,
    config: ServeConfig,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with_clock(backend, Arc::new(wenhui::domain::time::SystemClock)).await
    }

    /// A server whose clock the test moves; the background sweep and pruning are off (their
    /// first runs would come an hour after the start; tests call [`TestApp::sweep`]).
    pub async fn spawn_with_clock(backend: Backend, clock: Arc<dyn Clock>) -> TestApp {
        TestApp::spawn_configured(backend, |config| config.clock = clock).await
    }

    /// A server with the test defaults, then `configure` applied to its configuration.
    pub async fn spawn_configured(backend: Backend, configure: impl FnOnce(&mut ServeConfig)) -> TestApp {
        TestApp::spawn_for_nodes(backend, DEFAULT_NODES, configure).await
    }

    /// The same, on a database reserved for `nodes` nodes, this one and those of
    /// [`TestApp::spawn_node`] (see [`TestDb::for_nodes`]).
    pub async fn spawn_for_nodes(
        backend: Backend,
        nodes: u32,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> TestApp {
        let db = TestDb::for_nodes(backend, nodes).await;
        let mut config = ServeConfig::new(
            db.url.clone(),
            "127.0.0.1:0".parse().expect("addr"),
            db.dir.path().join("data"),
        );
        config.checkpoint_interval = Duration::from_secs(3600);
        config.sweep_interval = Duration::from_secs(3600);
        // No pruning behind a test either (tests/suite/till.rs prunes at the times it sets).
        config.prune_interval = Duration::from_secs(3600);
        // Small settlement chunks, so that every settlement in the tests runs in several.
        config.settlement_chunking = Some(SettlementChunking { max_rows: 2, max_merchants: 2 });
        // A phone may get one-time codes back to back (tests sign the same citizen in again);
        // the one-a-minute rule itself is tested with the default policy (tests/suite/codes.rs).
        config.code_policy.resend_after_s = 0;
        config.db_pool_size = TEST_POOL_SIZE;
        configure(&mut config);
        db.start_node(config.db_pool_size);
        let server = wenhui::server::start(config.clone()).await.expect("server starts");
        let base = format!("http://{}", server.addr);
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        TestApp { base, client, db, server: Some(server), config }
    }

    /// Stops the server and starts it again over the same database and data directory, on the
    /// same address.
    pub async fn restart(&mut self) {
        let server = self.server.take().expect("running");
        let addr = server.addr;
        server.stop().await.expect("server stops");
        let mut config = self.config.clone();
        config.listen = addr;
        let server = wenhui::server::start(config).await.expect("server starts again");
        self.server = Some(server);
        // Connections kept alive to the stopped server are gone.
        self.client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    }

    /// Changes the configuration the next [`TestApp::restart`] starts with.
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut ServeConfig)) {
        change(&mut self.config);
    }

    /// Another node over the same database and data directory (so the same keys), on a port of
    /// its own, with `configure` applied to a copy of this server's configuration.
    pub async fn spawn_node(
        &self,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> anyhow::Result<RunningServer> {
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().expect("addr");
        configure(&mut config);
        self.db.start_node(config.db_pool_size);
        let started = wenhui::server::start(config.clone()).await;
        if started.is_err() {
            // A node refused at start has closed its connections.
            self.db.node_gone(config.db_pool_size);
        }
        started
    }

    /// Stops a node of [`TestApp::spawn_node`] started with this app's pool size, giving back
    /// its connections.
    pub async fn stop_node(&self, node: RunningServer) {
        node.stop().await.expect("the node stops");
        self.db.node_gone(self.config.db_pool_size);
    }

    pub fn store(&self) -> &dyn Storage {
        self.server.as_ref().expect("running").store.as_ref()
    }

    /// Runs the expiry and batch-close sweep now.
    pub async fn sweep(&self) -> wenhui::app::claims::SweepReport {
        self.server.as_ref().expect("running").writer.sweep().await.expect("sweep")
    }

    pub async fn post_idem(
        &self,
        path: &str,
        token: Option<&str>,
        key: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut request = self.client.post(self.url(path)).header("idempotency-key", key).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("send")).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Mints a staff key directly through the service's own code.
    pub async fn staff_key(&self, role: Role, region: &str) -> String {
        let scope = StaffScope::new(role, region.parse().expect("region")).expect("scope");
        wenhui::app::staff::mint(self.store(), scope, "test", None).await.expect("mint").secret
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = self.client.get(self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("send");
        read(response).await
    }

    pub async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut request = self.client.post(self.url(path)).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("send");
        read(response).await
    }
}

impl TestApp {
    /// Asks for a one-time code for `phone` and `purpose` ("register", "sign_in") and reads it
    /// from the development SMS provider's route.
    pub async fn sms_code(&self, phone: &str, purpose: &str) -> String {
        dev_code(&self.client, &self.base, phone, purpose).await
    }

    /// `POST /v1/citizens` with `body` (name, id_number, phone) and a fresh registration code.
    pub async fn register_citizen(&self, mut body: serde_json::Value) -> (u16, serde_json::Value) {
        let phone = body["phone"].as_str().expect("phone").to_owned();
        body["code"] = self.sms_code(&phone, "register").await.into();
        self.post("/v1/citizens", None, body).await
    }

    /// `POST /v1/citizens/sessions` with `body` (id_number, phone) and a fresh sign-in code.
    pub async fn sign_in_citizen(&self, mut body: serde_json::Value) -> (u16, serde_json::Value) {
        let phone = body["phone"].as_str().expect("phone").to_owned();
        body["code"] = self.sms_code(&phone, "sign_in").await.into();
        self.post("/v1/citizens/sessions", None, body).await
    }
}

/// A mobile number no other staff person of this test process has (`199` and eight digits).
pub fn fresh_phone() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    format!("199{:08}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

impl TestApp {
    /// The newest staff enrolment code the development SMS provider kept for `phone`.
    pub async fn staff_code(&self, phone: &str) -> String {
        let (status, outbox) = self.get(&format!("/v1/dev/sms?phone={phone}"), None).await;
        assert_eq!(status, 200, "{outbox}");
        let messages = outbox["messages"].as_array().expect("messages");
        let newest = messages.iter().find(|m| m["purpose"] == "staff_enrol").expect("an enrolment code");
        newest["code"].as_str().expect("code").to_owned()
    }

    /// `POST /v1/staff/enrolments/{id}/claim` with the code sent to `phone`.
    pub async fn claim_enrolment(&self, enrolment_id: &str, phone: &str) -> (u16, serde_json::Value) {
        let code = self.staff_code(phone).await;
        let path = format!("/v1/staff/enrolments/{enrolment_id}/claim");
        self.post(&path, None, serde_json::json!({ "code": code })).await
    }

    /// `POST /v1/staff/keys` by `by` with `body` (role, region, label?, name, phone), then the
    /// person's claim with the code from the development SMS provider: the claim's answer (id,
    /// key, role, region).
    pub async fn enrol_key_for(&self, by: &str, body: serde_json::Value) -> serde_json::Value {
        let phone = body["phone"].as_str().expect("phone").to_owned();
        let (status, enrolment) = self.post("/v1/staff/keys", Some(by), body).await;
        assert_eq!(status, 202, "an enrolment: {enrolment}");
        let id = enrolment["enrolment_id"].as_str().expect("enrolment_id");
        let (status, claimed) = self.claim_enrolment(id, &phone).await;
        assert_eq!(status, 201, "a claim: {claimed}");
        claimed
    }

    /// A key of `role` over `region` enrolled by `by` for a new person (a fresh phone) and
    /// claimed: its id and its secret.
    pub async fn enrol_key(&self, by: &str, role: &str, region: &str) -> (String, String) {
        let phone = fresh_phone();
        let body = serde_json::json!({"role": role, "region": region, "label": "person", "name": "某人", "phone": phone});
        let claimed = self.enrol_key_for(by, body).await;
        (claimed["id"].as_str().expect("id").to_owned(), claimed["key"].as_str().expect("key").to_owned())
    }
}

/// Asks the server at `base` for a one-time code and reads it from `GET /v1/dev/sms`.
pub async fn dev_code(client: &reqwest::Client, base: &str, phone: &str, purpose: &str) -> String {
    let body = serde_json::json!({"phone": phone, "purpose": purpose});
    let sent = client.post(format!("{base}/v1/citizens/codes")).json(&body).send().await.expect("send");
    let (status, answer) = read(sent).await;
    assert_eq!(status, 202, "a code is sent: {answer}");
    let outbox = client.get(format!("{base}/v1/dev/sms?phone={phone}")).send().await.expect("send");
    let (status, outbox) = read(outbox).await;
    assert_eq!(status, 200, "{outbox}");
    let messages = outbox["messages"].as_array().expect("messages");
    let newest = messages.iter().find(|m| m["purpose"] == purpose).expect("a code for the purpose");
    newest["code"].as_str().expect("code").to_owned()
}

pub async fn read(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

/// The error code of an error body.
pub fn code(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}
