//! Reads from a PostgreSQL hot standby (`--read-database-url`): a real standby of the machine's
//! PostgreSQL, made with `pg_basebackup -R` into a temporary directory and started on a port of
//! its own as the `postgres` OS user. The primary must accept a replication connection from
//! 127.0.0.1 (`machine::replication` adds the `pg_hba.conf` line if it is not there). A standby
//! that cannot be made fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use tempfile::TempDir;
use wenhui::domain::staff::Role;
use wenhui::server::RunningServer;

use crate::both_backends;
use crate::common::{Backend, TestApp, read};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Runs `program args` as the `postgres` OS user (the server refuses to run as root).
fn as_postgres(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--", program])
        .args(args)
        .output()
        .map_err(|e| format!("runuser {program}: {e}"))?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match output.status.success() {
        true => Ok(text(&output.stdout)),
        false => Err(format!("{program} {args:?}: {}{}", text(&output.stdout), text(&output.stderr))),
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

/// A hot standby of the test PostgreSQL server, stopped and removed when dropped.
pub struct Standby {
    pub port: u16,
    data: PathBuf,
    _dir: TempDir,
}

impl Standby {
    /// A running standby (the primary is first made to accept its replication connection).
    pub async fn make() -> Standby {
        crate::machine::replication();
        Standby::try_make().await.unwrap_or_else(|error| panic!("a standby cannot be made: {error}"))
    }

    async fn try_make() -> Result<Standby, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let chown = Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status();
        if !chown.is_ok_and(|s| s.success()) {
            return Err("cannot hand a temporary directory to the postgres user".into());
        }
        let data = dir.path().join("data");
        let (host, primary_port) = primary_address();
        as_postgres(
            &format!("{PG_BIN}/pg_basebackup"),
            &[
                "-R",
                "-D",
                &data.display().to_string(),
                "-h",
                &host,
                "-p",
                &primary_port.to_string(),
                "-U",
                "postgres",
                "-X",
                "stream",
                "--checkpoint=fast",
            ],
        )?;
        let port = free_port();
        write_config(&data, dir.path(), port).await?;
        let log = dir.path().join("standby.log").display().to_string();
        let ctl = format!("{PG_BIN}/pg_ctl");
        let data_arg = data.display().to_string();
        as_postgres(&ctl, &["-D", &data_arg, "-l", &log, "-w", "-t", "60", "start"])
            .map_err(|e| format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()))?;
        Ok(Standby { port, data, _dir: dir })
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `database_url` (of the primary) with this standby's port.
    pub fn url_of(&self, database_url: &str) -> String {
        let mut url = reqwest::Url::parse(database_url).expect("database url");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(self.port)).expect("port");
        url.to_string()
    }

    async fn sql(&self, sql: &str) -> String {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url()).await.expect("the standby answers");
        let (answer,): (String,) =
            sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&mut conn).await.expect(sql);
        answer
    }

    /// Stops replaying WAL (it still receives it), and waits until it has stopped.
    pub async fn pause_replay(&self) {
        self.sql("SELECT pg_wal_replay_pause()::text").await;
        let started = Instant::now();
        while self.sql("SELECT pg_get_wal_replay_pause_state()").await != "paused" {
            assert!(started.elapsed() < Duration::from_secs(10), "replay does not pause");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn resume_replay(&self) {
        self.sql("SELECT pg_wal_replay_resume()::text").await;
    }

    /// Stops the standby (fast shutdown: its connections are cut).
    pub fn stop(&self) {
        let ctl = format!("{PG_BIN}/pg_ctl");
        as_postgres(&ctl, &["-D", &self.data.display().to_string(), "-m", "fast", "-w", "stop"])
            .expect("the standby stops");
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let ctl = format!("{PG_BIN}/pg_ctl");
        let _ = as_postgres(&ctl, &["-D", &self.data.display().to_string(), "-m", "immediate", "stop"]);
    }
}

/// The standby tests run one at a time: each takes a base backup of the whole server and
/// streams from it, and two at once under a loaded suite have left a standby that never
/// reported a lag.
static ONE_STANDBY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The host and port of the test PostgreSQL server.
fn primary_address() -> (String, u16) {
    let admin = reqwest::Url::parse(&crate::common::pg_admin_url()).expect("admin url");
    (admin.host_str().unwrap_or("127.0.0.1").to_owned(), admin.port().unwrap_or(5432))
}

/// The standby's own configuration: Debian keeps the primary's in /etc, so the base backup has
/// none. The settings a hot standby must not have below the primary's are copied from it.
async fn write_config(data: &Path, socket_dir: &Path, port: u16) -> Result<(), String> {
    let mut conn =
        sqlx::PgConnection::connect(&crate::common::pg_admin_url()).await.map_err(|e| e.to_string())?;
    let mut config = format!(
        "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
         hot_standby = on\nhot_standby_feedback = on\nshared_buffers = '32MB'\nfsync = off\n",
        socket_dir.display()
    );
    let not_below_the_primary = [
        "max_connections",
        "max_worker_processes",
        "max_wal_senders",
        "max_prepared_transactions",
        "max_locks_per_transaction",
    ];
    for name in not_below_the_primary {
        let (value,): (String,) = sqlx::query_as("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        config.push_str(&format!("{name} = {value}\n"));
    }
    let hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n";
    for (file, text) in [("postgresql.conf", config.as_str()), ("pg_hba.conf", hba), ("pg_ident.conf", "")] {
        let path = data.join(file);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        let owned = Command::new("chown").args(["postgres:postgres"]).arg(&path).status();
        if !owned.is_ok_and(|s| s.success()) {
            return Err(format!("cannot hand {} to the postgres user", path.display()));
        }
    }
    Ok(())
}

/// A node over the test database reading from `standby` with the lag bound `max_lag_ms`, and
/// its base URL.
async fn node_reading(app: &TestApp, standby: &Standby, max_lag_ms: u64) -> (RunningServer, String) {
    let read_url = standby.url_of(&app.db.url);
    let node = app
        .spawn_node(|config| {
            config.read_database_url = Some(read_url);
            config.replica_max_lag = Duration::from_millis(max_lag_ms);
        })
        .await
        .expect("a node with a standby starts");
    let base = format!("http://{}", node.addr);
    (node, base)
}

async fn get(app: &TestApp, base: &str, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = app.client.get(format!("{base}{path}"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    read(request.send().await.expect("send")).await
}

/// Waits until the node reads from its standby: `/readyz` shows a lag (the standby answers, has
/// replayed the creation of the test database, and a commit after its start).
async fn wait_for_standby(app: &TestApp, base: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, ready) = get(app, base, "/readyz", None).await;
        assert_eq!(status, 200, "{ready}");
        if ready["replica_lag_ms"].is_u64() {
            return ready;
        }
        if started.elapsed() > Duration::from_secs(60) {
            panic!("the standby is never used: {ready}\n{}", standby_state(app, base).await);
        }
        // A commit to replay: a standby that has replayed none yet has no lag to measure.
        app.staff_key(Role::Auditor, "370000").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the primary knows of its replication connections, for a failure's message.
async fn standby_state(_app: &TestApp, base: &str) -> String {
    let Ok(mut conn) = sqlx::PgConnection::connect(&crate::common::pg_admin_url()).await else {
        return "the primary does not answer".into();
    };
    let rows: Result<Vec<(Option<String>, Option<String>)>, _> =
        sqlx::query_as("SELECT application_name, state FROM pg_stat_replication").fetch_all(&mut conn).await;
    format!("node {base}; the primary's replication connections (name, state): {rows:?}")
}

async fn create_merchant(app: &TestApp, admin: &str, seed: u32) -> String {
    let body = json!({"name": format!("书店{seed}"), "credit_code": crate::till::credit_code(900 + seed),
        "category": "bookstore", "city": "370200",
        "settlement_account": {"bank": "青岛银行", "account_no": "6222000011112222", "account_name": "某书店"}});
    let (status, merchant) = app.post_idem("/v1/merchants", Some(admin), &format!("m{seed}"), body).await;
    assert_eq!(status, 201, "{merchant}");
    merchant["id"].as_str().expect("id").to_owned()
}

/// The merchants of Qingdao as a node lists them (a staff list: the read side).
async fn listed(app: &TestApp, base: &str, admin: &str) -> Vec<String> {
    let (status, page) = get(app, base, "/v1/merchants?city=370200", Some(admin)).await;
    assert_eq!(status, 200, "{page}");
    let merchants = page["merchants"].as_array().expect("merchants");
    merchants.iter().map(|m| m["id"].as_str().expect("id").to_owned()).collect()
}

async fn wait_listed(app: &TestApp, base: &str, admin: &str, id: &str) {
    let started = Instant::now();
    while !listed(app, base, admin).await.contains(&id.to_owned()) {
        assert!(started.elapsed() < Duration::from_secs(30), "merchant {id} is never listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two nodes read from one standby: `near` with a bound of a minute, `strict` with 1 s. A
/// write is seen through the standby once replayed. With replay paused, a new merchant is
/// missing from `near`'s list (it reads the standby, behind), and once the standby is more than
/// a second behind `strict` lists it (it reads the primary). Replay resumed, `near` sees it too.
/// The standby stopped, both answer from the primary: 200, nothing missing, no lag in `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_standby_within_the_lag_bound_and_to_the_primary_beyond() {
    let _one_at_a_time = ONE_STANDBY.lock().await;
    let standby = Standby::make().await;
    let app = TestApp::spawn_for_nodes(Backend::Postgres, 3, |_| {}).await;
    let admin = app.staff_key(Role::ProvinceAdmin, "370000").await;
    let (near_node, near) = node_reading(&app, &standby, 60_000).await;
    let (strict_node, strict) = node_reading(&app, &standby, 1_000).await;
    wait_for_standby(&app, &near).await;

    let first = create_merchant(&app, &admin, 1).await;
    wait_listed(&app, &near, &admin, &first).await;

    standby.pause_replay().await;
    let second = create_merchant(&app, &admin, 2).await;
    assert!(listed(&app, &app.base, &admin).await.contains(&second), "the primary has it");
    assert!(!listed(&app, &near, &admin).await.contains(&second), "near reads the paused standby");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(listed(&app, &strict, &admin).await.contains(&second), "strict reads the primary");
    assert!(!listed(&app, &near, &admin).await.contains(&second), "near still reads the standby");
    let (_, ready) = get(&app, &strict, "/readyz", None).await;
    assert!(ready["replica_lag_ms"].as_u64().is_some_and(|ms| ms >= 1_000), "{ready}");

    standby.resume_replay().await;
    wait_listed(&app, &near, &admin, &second).await;

    standby.stop();
    for base in [&near, &strict] {
        let listed = listed(&app, base, &admin).await;
        assert!(listed.contains(&first) && listed.contains(&second), "{listed:?}");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, ready) = get(&app, &near, "/readyz", None).await;
    assert_eq!((status, &ready["replica_lag_ms"]), (200, &Value::Null), "{ready}");
    let (_, metrics) = get(&app, &near, "/metrics", None).await;
    assert!(metrics.as_str().expect("text").contains("wenhui_replica_lag_seconds"), "{metrics}");
    near_node.stop().await.expect("stops");
    strict_node.stop().await.expect("stops");
}

/// The season report, the public season list and a citizen's vouchers answer through a standby,
/// and, the standby stopped, from the primary, at once: 200 every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_lists_and_vouchers_answer_when_the_standby_stops() {
    let _one_at_a_time = ONE_STANDBY.lock().await;
    let standby = Standby::make().await;
    let world = crate::claims::World::new(Backend::Postgres, "100000.00", None).await;
    let batch = world.batch(json!({"stock": 5})).await;
    let token = world.citizen(1).await;
    let (status, claimed) = world.claim(&token, batch["id"].as_str().expect("id"), "k1").await;
    assert_eq!(status, 201, "{claimed}");
    let finance = world.app.staff_key(Role::Finance, "370000").await;
    let (node, base) = node_reading(&world.app, &standby, 60_000).await;
    wait_for_standby(&world.app, &base).await;
    let report = format!("/v1/seasons/{}/report", world.season_id);
    let (app, finance, token) = (&world.app, finance.as_str(), token.as_str());
    // Through the standby, the claim shows once replayed.
    let started = Instant::now();
    while vouchers(app, &base, token).await.len() != 1 {
        assert!(started.elapsed() < Duration::from_secs(30), "the claim is never replayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for stage in ["through the standby", "the standby stopped"] {
        if stage == "the standby stopped" {
            standby.stop();
        }
        assert_eq!(vouchers(app, &base, token).await.len(), 1, "{stage}");
        let (status, body) = get(app, &base, &report, Some(finance)).await;
        assert_eq!((status, &body["season_id"]), (200, &json!(world.season_id)), "{stage}: {body}");
        let (status, seasons) = get(app, &base, "/v1/seasons", None).await;
        assert_eq!(status, 200, "{stage}: {seasons}");
    }
    node.stop().await.expect("stops");
}

/// The citizen's vouchers as a node lists them (200 asserted).
async fn vouchers(app: &TestApp, base: &str, token: &str) -> Vec<Value> {
    let (status, mine) = get(app, base, "/v1/me/vouchers", Some(token)).await;
    assert_eq!(status, 200, "{mine}");
    mine["vouchers"].as_array().expect("vouchers").clone()
}

both_backends!(a_read_database_url_is_for_postgresql_only);

/// `--read-database-url` over SQLite is refused, saying why; over PostgreSQL, a URL that is
/// not PostgreSQL's is refused.
async fn a_read_database_url_is_for_postgresql_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (url, says) = match backend {
        Backend::Sqlite => ("postgres://postgres@127.0.0.1:5432/postgres", "SQLite has no standby"),
        Backend::Postgres => ("sqlite://elsewhere.db", "must name a PostgreSQL hot standby"),
    };
    let refused = app.spawn_node(|config| config.read_database_url = Some(url.into())).await;
    let message = format!("{:#}", refused.err().expect("refused"));
    assert!(message.contains("--read-database-url") && message.contains(says), "{message}");
}
