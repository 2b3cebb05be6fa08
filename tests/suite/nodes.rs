//! Several service nodes over one database: a claim another node got to first is decided again
//! (never a 503 with the database up), and a node whose secrets differ refuses to start.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::both_backends;
use crate::claims::World;
use crate::common::{Backend, code, read};

both_backends!(a_writer_with_a_stale_view_answers_sold_out_not_503);

/// Node A has read the batch with stock left; node B then claims the rest. A's next claim is
/// decided on A's stale view, refused by the database, and decided again on fresh state: 409
/// `sold_out`, never 503.
async fn a_writer_with_a_stale_view_answers_sold_out_not_503(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let node_b = world.app.spawn_node(|_| {}).await.expect("a second node starts");
    let base_b = format!("http://{}", node_b.addr);
    let batch = world.batch(json!({"stock": 3})).await;
    let batch_id = batch["id"].as_str().expect("id").to_owned();
    let mut tokens = Vec::new();
    for n in 0..4 {
        tokens.push(world.citizen(n).await);
    }
    let (status, body) = world.claim(&tokens[0], &batch_id, "k0").await;
    assert_eq!(status, 201, "{body}");
    for token in &tokens[1..3] {
        let (status, body) = claim_at(&world, &base_b, token, &batch_id, "k").await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = world.claim(&tokens[3], &batch_id, "k3").await;
    assert_eq!((status, code(&body)), (409, "sold_out"), "{body}");
    // The same key through the other node: the same answer.
    let (again, replayed) = claim_at(&world, &base_b, &tokens[3], &batch_id, "k3").await;
    assert_eq!((again, &replayed), (409, &body));
    assert_eq!(world.batch_state(&batch_id).await["remaining"], 0);
    node_b.stop().await.expect("node b stops");
}

async fn claim_at(world: &World, base: &str, token: &str, batch_id: &str, key: &str) -> (u16, Value) {
    let response = world
        .app
        .client
        .post(format!("{base}/v1/batches/{batch_id}/claims"))
        .header("idempotency-key", key)
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    read(response).await
}

/// Two nodes on one PostgreSQL database, a rush through both near the sell-out, several times:
/// every answer is 201 or 409 `sold_out`, the stock is exact, and a retry through the other
/// node is answered the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_rush_one_batch_without_a_503() {
    const STOCK: i64 = 30;
    const CITIZENS: u32 = 120;
    let world = World::new(Backend::Postgres, "100000.00", None).await;
    let node_b = world.app.spawn_node(|_| {}).await.expect("a second node starts");
    let bases = [world.app.base.clone(), format!("http://{}", node_b.addr)];
    let mut tokens = Vec::new();
    for n in 0..CITIZENS {
        tokens.push(world.citizen(n).await);
    }
    let world = Arc::new(world);
    for round in 0..3 {
        let batch = world.batch(json!({"stock": STOCK})).await;
        let batch_id = batch["id"].as_str().expect("id").to_owned();
        let mut tasks = Vec::new();
        for (n, token) in tokens.iter().enumerate() {
            let (world, batch_id, token) = (world.clone(), batch_id.clone(), token.clone());
            let base = bases[n % 2].clone();
            let key = format!("r{round}-{n}");
            tasks.push(tokio::spawn(async move {
                let answer = claim_at(&world, &base, &token, &batch_id, &key).await;
                (n, key, answer)
            }));
        }
        let mut created = 0;
        let mut answers = Vec::new();
        for task in tasks {
            let (n, key, (status, body)) = task.await.expect("join");
            match (status, code(&body)) {
                (201, _) => created += 1,
                (409, "sold_out") => {}
                other => panic!("round {round}: unexpected answer {other:?}: {body}"),
            }
            answers.push((n, key, status, body));
        }
        assert_eq!(created, STOCK, "round {round}: exactly the stock is issued");
        assert_eq!(world.batch_state(&batch_id).await["remaining"], 0);
        for (n, key, status, body) in answers.iter().step_by(7) {
            let other = &bases[(n + 1) % 2];
            let (again, replayed) = claim_at(&world, other, &tokens[*n], &batch_id, key).await;
            assert_eq!((again, &replayed), (*status, body), "a retry through the other node");
        }
    }
    wenhui::app::audit::verify_store(world.app.store()).await.expect("ledger verifies");
    node_b.stop().await.expect("node b stops");
}

/// A TCP proxy in front of PostgreSQL that the test can hold or cut. Held, it passes nothing
/// on, in either direction, on old connections and new ones alike (a database that hangs). Cut,
/// it closes every connection it carries and closes new ones at once (a database killed or
/// failed over), until it is restored.
struct HeldProxy {
    addr: std::net::SocketAddr,
    held: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<bool>,
}

impl HeldProxy {
    async fn start(upstream: String) -> HeldProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cut, is_cut) = tokio::sync::watch::channel(false);
        let flag = held.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *is_cut.borrow() {
                    continue; // dropped: closed at once
                }
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pass(client_read, server_write, flag.clone(), is_cut.clone()));
                tokio::spawn(pass(server_read, client_write, flag.clone(), is_cut.clone()));
            }
        });
        HeldProxy { addr, held, cut }
    }

    /// The URL of `database_url`'s database through this proxy.
    fn url_of(&self, database_url: &str) -> String {
        let mut url = reqwest::Url::parse(database_url).expect("database url");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(self.addr.port())).expect("port");
        url.to_string()
    }

    fn hold(&self) {
        self.held.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn cut(&self) {
        self.cut.send_replace(true);
        self.held.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// Copies `from` to `to` until either closes or the proxy is cut (then both are dropped, and
/// the connection closes).
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    held: Arc<std::sync::atomic::AtomicBool>,
    mut cut: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = cut.wait_for(|cut| *cut) => return,
        };
        while held.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if *cut.borrow() || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// A server on PostgreSQL through a proxy the test holds or cuts.
async fn behind_proxy() -> (HeldProxy, crate::common::TestApp) {
    let admin = reqwest::Url::parse(&crate::common::pg_admin_url()).expect("admin url");
    let upstream = format!("{}:{}", admin.host_str().expect("host"), admin.port().unwrap_or(5432));
    let proxy = HeldProxy::start(upstream).await;
    let app = crate::common::TestApp::spawn_configured(Backend::Postgres, |config| {
        config.database_url = proxy.url_of(&config.database_url);
    })
    .await;
    (proxy, app)
}

/// PostgreSQL killed under a request, then out of reach: the request in flight and the ones
/// after are answered 503 `database_unavailable` with a `Retry-After`, at once (not a 500, not
/// after the pool's timeout); once the database is back, the same node answers again (a
/// connection that died idle may cost one more 503 within its first second back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_killed_under_requests_is_503_then_the_node_recovers() {
    let (proxy, app) = behind_proxy().await;
    let ask_code = |phone: String| {
        let (client, url) = (app.client.clone(), app.url("/v1/citizens/codes"));
        async move {
            let body = json!({"phone": phone, "purpose": "register"});
            let response = client.post(url).json(&body).send().await.expect("send");
            let retry_after =
                response.headers().get("retry-after").map(|v| v.to_str().expect("ascii").to_owned());
            let (status, body) = read(response).await;
            (status, code(&body).to_owned(), retry_after)
        }
    };
    assert_eq!(ask_code(crate::common::fresh_phone()).await.0, 202, "through the proxy");
    proxy.hold();
    let in_flight = tokio::spawn(ask_code(crate::common::fresh_phone()));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!in_flight.is_finished(), "the request waits on the held database");
    let started = std::time::Instant::now();
    proxy.cut();
    let unavailable = (503, "database_unavailable".to_owned(), Some("1".to_owned()));
    assert_eq!(in_flight.await.expect("joined"), unavailable, "the request in flight");
    assert_eq!(ask_code(crate::common::fresh_phone()).await, unavailable, "a request after");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(3),
        "answered at once, not after the pool's timeout: {took:?}"
    );
    proxy.restore();
    // A pooled connection idle for a second is pinged before use (`storage::postgres`): past
    // that, none of the dead ones is handed out again.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let recovered = ask_code(crate::common::fresh_phone()).await;
    assert_eq!(recovered.0, 202, "the node recovers: {recovered:?}");
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, 200, "{body}");
}

/// With PostgreSQL hanging (every connection held), `/readyz` answers 503 within about a
/// second, not after the pool's acquire timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_within_a_second_when_postgres_hangs() {
    let (proxy, app) = behind_proxy().await;
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")), "{body}");
    proxy.hold();
    let started = std::time::Instant::now();
    let (status, body) = app.get("/readyz", None).await;
    let took = started.elapsed();
    assert_eq!((status, code(&body)), (503, "database_unavailable"), "{body}");
    assert!(took < std::time::Duration::from_millis(2_000), "readyz took {took:?}");
    // Not stopped cleanly (its connections hang by design); the test database is dropped directly.
    drop(app);
}

both_backends!(readyz_answers_fast);

/// On a database that answers, readiness is well within its timeout on both backends.
async fn readyz_answers_fast(backend: Backend) {
    let app = crate::common::TestApp::spawn(backend).await;
    let started = std::time::Instant::now();
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_millis(1_000));
}

both_backends!(a_node_with_its_own_citizen_secret_refuses_to_start);

/// A second node whose keys directory holds the QR keys but a citizen HMAC secret of its own
/// refuses to start, naming the secret and where it read it; with a copy of the first node's
/// keys directory it starts. A QR key file that is not the recorded key is refused too.
async fn a_node_with_its_own_citizen_secret_refuses_to_start(backend: Backend) {
    let app = crate::common::TestApp::spawn(backend).await;
    let keys = app.db.dir.path().join("data").join("keys");
    let copy = |to: &std::path::Path| {
        std::fs::create_dir_all(to.join("qr")).expect("mkdir");
        for file in std::fs::read_dir(keys.join("qr")).expect("qr keys") {
            let file = file.expect("entry");
            std::fs::copy(file.path(), to.join("qr").join(file.file_name())).expect("copy qr key");
        }
    };
    let foreign = tempfile::tempdir().expect("tempdir");
    copy(foreign.path());
    std::fs::write(foreign.path().join("citizen-hmac.key"), [7u8; 32]).expect("own secret");
    let refused = app.spawn_node(|config| config.keys_dir = foreign.path().to_owned()).await;
    let message = format!("{:#}", refused.err().expect("a foreign citizen secret is refused"));
    assert!(message.contains("citizen HMAC secret"), "{message}");
    assert!(message.contains(&foreign.path().join("citizen-hmac.key").display().to_string()), "{message}");

    let shared = tempfile::tempdir().expect("tempdir");
    copy(shared.path());
    std::fs::copy(keys.join("citizen-hmac.key"), shared.path().join("citizen-hmac.key")).expect("copy");
    std::fs::copy(keys.join("ledger-checkpoint.pk8"), shared.path().join("ledger-checkpoint.pk8"))
        .expect("copy");
    let node = app.spawn_node(|config| config.keys_dir = shared.path().to_owned()).await.expect("starts");
    app.stop_node(node).await;

    // The same secret, but a QR key file that is another key under the current key's name.
    let qr = std::fs::read_dir(shared.path().join("qr")).expect("qr").next().expect("a key").expect("entry");
    std::fs::remove_file(qr.path()).expect("remove");
    wenhui::app::signing::SigningKey::load_or_create(&qr.path()).expect("another key");
    let refused = app.spawn_node(|config| config.keys_dir = shared.path().to_owned()).await;
    let message = format!("{:#}", refused.err().expect("a foreign QR key is refused"));
    assert!(message.contains("QR signing key"), "{message}");
}

both_backends!(changes_reach_another_node_in_this_process);

/// Two nodes in one process (SQLite: the in-process channel; PostgreSQL: LISTEN/NOTIFY): a batch
/// sold out on A is answered `sold_out` from memory on B (a key answered before still gets its
/// first answer there), stock returned on A reaches B at once, and a session revoked on A is
/// refused on B well before the revocation poll.
async fn changes_reach_another_node_in_this_process(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let node_b = world.app.spawn_node(|_| {}).await.expect("a second node starts");
    let base_b = format!("http://{}", node_b.addr);
    let batch = world.batch(json!({"stock": 1, "valid_hours": 1})).await;
    let batch_id = batch["id"].as_str().expect("id").to_owned();
    let (first, second) = (world.citizen(1).await, world.citizen(2).await);
    let (status, claimed) = world.claim(&first, &batch_id, "a-1").await;
    assert_eq!(status, 201, "{claimed}");

    // B has never decided a claim of this batch: only A's notice can make its answer. (A
    // notice takes milliseconds; the memory holds a second.)
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let served = node_b.writer.answered_from_memory();
    let (status, refused) = claim_at(&world, &base_b, &second, &batch_id, "b-1").await;
    assert_eq!((status, code(&refused)), (409, "sold_out"), "{refused}");
    assert_eq!(node_b.writer.answered_from_memory(), served + 1, "answered from memory");
    let (status, replayed) = claim_at(&world, &base_b, &first, &batch_id, "a-1").await;
    assert_eq!((status, &replayed), (201, &claimed), "a key answered before gets its first answer");

    // The voucher expires; A's sweep returns it to the stock and B hears of it.
    world.clock.advance_us(2 * 3_600 * 1_000_000);
    assert_eq!(world.app.sweep().await.expired, 1);
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (status, body) =
            claim_at(&world, &base_b, &second, &batch_id, &format!("b-after-{attempt}")).await;
        if status == 201 {
            break;
        }
        assert_eq!((status, code(&body)), (409, "sold_out"), "{body}");
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1_000),
            "stock returned on A not seen on B"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // A session used on B, revoked on A: refused on B within about a second.
    let (status, _) = get_at(&world, &base_b, "/v1/me/vouchers", &second).await;
    assert_eq!(status, 200);
    let signed_out =
        world.app.client.delete(world.app.url("/v1/me/session")).bearer_auth(&second).send().await;
    assert_eq!(signed_out.expect("send").status().as_u16(), 204);
    wait_for_status(&world, &base_b, "/v1/me/vouchers", &second, 401).await;
    node_b.stop().await.expect("node b stops");
}

async fn get_at(world: &World, base: &str, path: &str, token: &str) -> (u16, Value) {
    let response =
        world.app.client.get(format!("{base}{path}")).bearer_auth(token).send().await.expect("send");
    read(response).await
}

/// Polls `path` on `base` until it answers `status`; fails after 1.5 s.
async fn wait_for_status(world: &World, base: &str, path: &str, token: &str, status: u16) {
    let started = std::time::Instant::now();
    loop {
        let (now, body) = get_at(world, base, path, token).await;
        if now == status {
            return;
        }
        let waited = started.elapsed();
        assert!(waited < std::time::Duration::from_millis(1_500), "still {now} after {waited:?}: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// A `wenhui serve` process over the test's database and data directory; killed when dropped,
/// so that a failed assertion leaves none behind.
struct Process {
    child: std::process::Child,
    base: String,
}

impl Process {
    fn start(db: &crate::common::TestDb) -> Process {
        db.start_node(crate::common::TEST_POOL_SIZE);
        let dir = db.dir.path();
        let listen = format!("127.0.0.1:{}", crate::cli::free_port());
        let data_dir = dir.join("data");
        let envs = [
            ("DATABASE_URL", db.url.as_str()),
            ("WENHUI_LISTEN", listen.as_str()),
            ("WENHUI_DATA_DIR", data_dir.to_str().expect("utf8")),
            ("RUST_LOG", "warn,wenhui::server=info"),
        ];
        let child = tokio::task::block_in_place(|| crate::cli::spawn_serve(dir, &envs, false));
        Process { child, base: format!("http://{listen}") }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three `wenhui serve` processes on one PostgreSQL database, and a client.
struct Fleet {
    // Dropped in this order: the processes are killed before their database is dropped.
    nodes: Vec<Process>,
    client: reqwest::Client,
    db: crate::common::TestDb,
}

impl Fleet {
    async fn send(&self, request: reqwest::RequestBuilder, token: Option<&str>) -> (u16, Value) {
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        read(request.send().await.expect("send")).await
    }

    async fn post(
        &self,
        node: usize,
        path: &str,
        token: Option<&str>,
        key: &str,
        body: Value,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.nodes[node].base);
        self.send(self.client.post(url).header("idempotency-key", key).json(&body), token).await
    }

    async fn get(&self, node: usize, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.nodes[node].base)), token).await
    }

    async fn claim(&self, node: usize, token: &str, batch_id: &str, key: &str) -> (u16, Value) {
        self.post(node, &format!("/v1/batches/{batch_id}/claims"), Some(token), key, json!({})).await
    }

    /// A counter's value in a node's `/metrics` (0 before its first increment).
    async fn counter(&self, node: usize, name: &str) -> f64 {
        let url = format!("{}/metrics", self.nodes[node].base);
        let text = self.client.get(url).send().await.expect("send").text().await.expect("text");
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(name));
        line.and_then(|l| l.split_whitespace().nth(1)).map_or(0.0, |v| v.parse().expect("a number"))
    }

    /// A batch of `stock` open now for an hour, in `season`.
    async fn batch(&self, staff: &str, season: &str, stock: i64) -> String {
        let now = wenhui::domain::time::Timestamp::now();
        let body = json!({"name": "b", "issuer": "370000", "kind": "threshold", "face_value": "5.00",
            "min_spend": "20.00", "stock": stock, "per_citizen_limit": 1, "valid_hours": 24,
            "claim_opens_at": now.plus_seconds(-30).to_string(), "claim_closes_at": now.plus_seconds(3_600).to_string(),
            "categories": ["bookstore"]});
        let key = uuid::Uuid::new_v4().to_string();
        let (status, batch) =
            self.post(0, &format!("/v1/seasons/{season}/batches"), Some(staff), &key, body).await;
        assert_eq!(status, 201, "{batch}");
        batch["id"].as_str().expect("id").to_owned()
    }

    async fn citizen(&self, n: u32) -> String {
        let id_number = wenhui::domain::citizen::synthetic_id_number("370202", "19800101", n as u16);
        let phone = format!("137{n:08}");
        let code = crate::common::dev_code(&self.client, &self.nodes[0].base, &phone, "register").await;
        let body = json!({"name": "王五", "id_number": id_number, "phone": phone, "code": code});
        let url = format!("{}/v1/citizens", self.nodes[0].base);
        let (status, answer) = self.send(self.client.post(url).json(&body), None).await;
        assert_eq!(status, 201, "{answer}");
        answer["token"].as_str().expect("token").to_owned()
    }

    /// Polls `path` on `node` until it answers `status`; fails after 1.5 s.
    async fn wait_for(&self, node: usize, path: &str, token: &str, status: u16) {
        let started = std::time::Instant::now();
        loop {
            let (now, body) = self.get(node, path, Some(token)).await;
            if now == status {
                return;
            }
            let waited = started.elapsed();
            assert!(
                waited < std::time::Duration::from_millis(1_500),
                "node {node}: {now} after {waited:?}: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
}

fn staff_key(db: &crate::common::TestDb, role: &str, region: &str) -> String {
    let output =
        crate::cli::wenhui(db.dir.path(), &db.url, &["keys", "create", "--role", role, "--region", region]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Three `wenhui serve` processes on one PostgreSQL database: a rush through all of them sells
/// exactly the stock, with no 5xx, and a retry through another node gets the first answer; a
/// batch sold out on node 1 is answered from memory on node 2; a session revoked on node 1 and
/// a terminal revoked on node 1 are refused on nodes 2 and 3 within about a second and a half
/// (the revocation poll takes 5 s, the till cache 2 s: only the notices are that fast).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_serve_processes_share_a_rush_and_their_changes() {
    const STOCK: i64 = 30;
    const CITIZENS: u32 = 90;
    let db = crate::common::TestDb::for_nodes(Backend::Postgres, 3).await;
    let province = staff_key(&db, "province_admin", "370000");
    let city = staff_key(&db, "city_admin", "370200");
    let first = Process::start(&db);
    let nodes = vec![first, Process::start(&db), Process::start(&db)];
    let client =
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().expect("client");
    let fleet = Arc::new(Fleet { nodes, client, db });
    let now = wenhui::domain::time::Timestamp::now();
    let season = json!({"name": "fleet", "province": "370000", "starts_at": now.plus_seconds(-60).to_string(),
        "ends_at": now.plus_seconds(86_400).to_string(), "budgets": [{"funder": "370000", "amount": "100000.00"}]});
    let (status, season) = fleet.post(0, "/v1/seasons", Some(&province), "season", season).await;
    assert_eq!(status, 201, "{season}");
    let season = season["id"].as_str().expect("id").to_owned();
    let mut tokens = Vec::new();
    for n in 0..CITIZENS {
        tokens.push(fleet.citizen(n).await);
    }

    let batch = fleet.batch(&province, &season, STOCK).await;
    let mut tasks = Vec::new();
    for (n, token) in tokens.iter().enumerate() {
        let (fleet, batch, token) = (fleet.clone(), batch.clone(), token.clone());
        tasks.push(tokio::spawn(
            async move { fleet.claim(n % 3, &token, &batch, &format!("rush-{n}")).await },
        ));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("join"));
    }
    let created = answers.iter().filter(|(status, _)| *status == 201).count() as i64;
    for (status, body) in &answers {
        assert!(*status == 201 || (*status, code(body)) == (409, "sold_out"), "{status}: {body}");
    }
    assert_eq!(created, STOCK, "exactly the stock, through three nodes");
    for (n, (status, body)) in answers.iter().enumerate() {
        let again = fleet.claim((n + 1) % 3, &tokens[n], &batch, &format!("rush-{n}")).await;
        assert_eq!((again.0, &again.1), (*status, body), "citizen {n}'s retry through another node");
    }
    // The pools keep what the rush opened: no more than docs/operations.md counts per node.
    let most = 3 * wenhui::storage::postgres_connections_per_node(crate::common::TEST_POOL_SIZE);
    let open = fleet.db.pg_connections().await;
    assert!(open > 3 && open <= i64::from(most), "{open} connections for three nodes, at most {most}");

    // Sold out through node 1; node 2 has never decided a claim of it.
    let small = fleet.batch(&province, &season, 2).await;
    for token in &tokens[..2] {
        let (status, body) = fleet.claim(0, token, &small, "small").await;
        assert_eq!(status, 201, "{body}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let metric = "wenhui_claims_sold_out_from_memory_total";
    let before = fleet.counter(1, metric).await;
    let (status, body) = fleet.claim(1, &tokens[2], &small, "small").await;
    assert_eq!((status, code(&body)), (409, "sold_out"), "{body}");
    assert_eq!(fleet.counter(1, metric).await, before + 1.0, "node 2 answered from memory");

    // A session used on nodes 2 and 3, revoked on node 1.
    for node in [1, 2] {
        assert_eq!(fleet.get(node, "/v1/me/vouchers", Some(&tokens[5])).await.0, 200);
    }
    let url = format!("{}/v1/me/session", fleet.nodes[0].base);
    let (status, _) = fleet.send(fleet.client.delete(url), Some(&tokens[5])).await;
    assert_eq!(status, 204);
    for node in [1, 2] {
        fleet.wait_for(node, "/v1/me/vouchers", &tokens[5], 401).await;
    }

    terminal_revoked_on_one_node_is_refused_on_the_others(&fleet, &city).await;
    let verify = crate::cli::wenhui(fleet.db.dir.path(), &fleet.db.url, &["ledger", "verify"]);
    let (out, err) = (String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    assert!(verify.status.success(), "ledger verify failed:\n{out}\n{err}");
}

/// A terminal whose tills on nodes 2 and 3 have been authenticated (so cached), revoked on node
/// 1: refused on both within 1.5 s.
async fn terminal_revoked_on_one_node_is_refused_on_the_others(fleet: &Fleet, city: &str) {
    use wenhui_merchant_sdk::client::{ClientOptions, TillClient, TillKey, register_terminal};
    let body = json!({"name": "店", "credit_code": crate::till::credit_code(77), "category": "bookstore", "city": "370200",
        "settlement_account": {"bank": "青岛银行", "account_no": "6222000011112222", "account_name": "某书店"}});
    let (status, merchant) = fleet.post(0, "/v1/merchants", Some(city), "merchant", body).await;
    assert_eq!(status, 201, "{merchant}");
    let merchant: uuid::Uuid = merchant["id"].as_str().expect("id").parse().expect("uuid");
    let key = TillKey::generate().expect("key");
    let registration =
        register_terminal(&fleet.nodes[0].base, city, merchant, &key, "till", ClientOptions::default())
            .await
            .expect("register");
    let terminal = registration.terminal_id;
    let dir = fleet.db.dir.path();
    let key_file = dir.join("till.key");
    key.save(&key_file).expect("save key");
    let mut tills = Vec::new();
    for node in [1, 2] {
        let journal = wenhui_merchant_sdk::journal::Journal::open(dir.join(format!("till-{node}.jsonl")))
            .expect("journal");
        let key = TillKey::load(&key_file).expect("load key");
        let base = &fleet.nodes[node].base;
        let till = TillClient::new(base, terminal, key, journal, ClientOptions::default()).expect("client");
        let unknown = till.get(uuid::Uuid::new_v4()).await.expect_err("no such redemption").code();
        assert_eq!(unknown, "redemption_not_found", "node {node} knows the terminal");
        tills.push(till);
    }
    let path = format!("/v1/merchants/{merchant}/terminals/{terminal}/revoke");
    let (status, body) = fleet.post(0, &path, Some(city), "revoke", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let started = std::time::Instant::now();
    for till in &tills {
        loop {
            let refused = till.get(uuid::Uuid::new_v4()).await.expect_err("refused").code();
            if refused == "terminal_revoked" {
                break;
            }
            assert_eq!(refused, "redemption_not_found");
            let waited = started.elapsed();
            assert!(waited < std::time::Duration::from_millis(1_500), "still accepted after {waited:?}");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
}

both_backends!(a_node_with_its_own_ledger_key_refuses_to_start);

/// A second node with the first node's citizen secret and QR keys but a ledger checkpoint key
/// of its own refuses to start: its checkpoints would not verify against the first node's key.
async fn a_node_with_its_own_ledger_key_refuses_to_start(backend: Backend) {
    let app = crate::common::TestApp::spawn(backend).await;
    let keys = app.db.dir.path().join("data").join("keys");
    let foreign = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(foreign.path().join("qr")).expect("mkdir");
    for file in std::fs::read_dir(keys.join("qr")).expect("qr keys") {
        let file = file.expect("entry");
        std::fs::copy(file.path(), foreign.path().join("qr").join(file.file_name())).expect("copy qr key");
    }
    std::fs::copy(keys.join("citizen-hmac.key"), foreign.path().join("citizen-hmac.key")).expect("copy");
    let refused = app.spawn_node(|config| config.keys_dir = foreign.path().to_owned()).await;
    let message = format!("{:#}", refused.err().expect("a foreign ledger key is refused"));
    assert!(message.contains("ledger checkpoint key"), "{message}");
    let key_path = foreign.path().join("ledger-checkpoint.pk8");
    assert!(message.contains(&key_path.display().to_string()), "{message}");

    std::fs::copy(keys.join("ledger-checkpoint.pk8"), &key_path).expect("copy the first node's key");
    let node = app.spawn_node(|config| config.keys_dir = foreign.path().to_owned()).await.expect("starts");
    node.stop().await.expect("stops");
}

both_backends!(a_sold_out_batch_reads_only_the_keys_that_may_have_an_answer);

/// Once a batch is sold out and its answered keys are loaded, a fresh key is answered 409
/// `sold_out` without reading its stored answer, and every key that may have one still gets
/// its first answer, on both nodes: a 201 claimed on the other node (the one that sold it out),
/// a 201 of this node, and a refusal stored before the sell-out for a citizen who holds none of
/// the batch (the season cap).
async fn a_sold_out_batch_reads_only_the_keys_that_may_have_an_answer(backend: Backend) {
    let world = World::new(backend, "100000.00", Some("10.00")).await;
    let node_b = world.app.spawn_node(|_| {}).await.expect("a second node starts");
    let base_b = format!("http://{}", node_b.addr);
    let base_a = world.app.base.clone();
    let other = world.batch(json!({"stock": 5, "name": "other"})).await;
    let batch = world.batch(json!({"stock": 2})).await;
    let (other, batch) = (id_of(&other), id_of(&batch));
    let capped = world.citizen(1).await;
    assert_eq!(world.claim(&capped, &other, "o-1").await.0, 201);
    let (status, capped_answer) = world.claim(&capped, &batch, "c-1").await;
    assert_eq!((status, code(&capped_answer)), (409, "limit_reached"), "{capped_answer}");
    let (on_a, on_b) = (world.citizen(2).await, world.citizen(3).await);
    let (status, first) = world.claim(&on_a, &batch, "a-1").await;
    assert_eq!(status, 201, "{first}");
    let (status, last) = claim_at(&world, &base_b, &on_b, &batch, "b-1").await;
    assert_eq!(status, 201, "{last}");
    let fresh = world.citizen(4).await;

    let writer_a = world.app.server.as_ref().expect("running").writer.clone();
    for (node, base, writer) in [("a", &base_a, &writer_a), ("b", &base_b, &node_b.writer)] {
        // The first sold-out answers read their keys while the node loads the batch's keys.
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let before = writer.answered_without_read();
        while writer.answered_without_read() == before {
            attempt += 1;
            let key = format!("fresh-{node}-{attempt}");
            let (status, body) = claim_at(&world, base, &fresh, &batch, &key).await;
            assert_eq!((status, code(&body)), (409, "sold_out"), "{node}: {body}");
            assert!(started.elapsed() < std::time::Duration::from_secs(5), "{node}: keys never loaded");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let unread = writer.answered_without_read();
        assert_eq!(claim_at(&world, base, &on_a, &batch, "a-1").await, (201, first.clone()), "{node}");
        assert_eq!(claim_at(&world, base, &on_b, &batch, "b-1").await, (201, last.clone()), "{node}");
        let replayed = claim_at(&world, base, &capped, &batch, "c-1").await;
        assert_eq!(replayed, (409, capped_answer.clone()), "{node}: a refusal stored before the sell-out");
        let (status, body) = claim_at(&world, base, &on_a, &batch, &format!("a-again-{node}")).await;
        assert_eq!((status, code(&body)), (409, "sold_out"), "{node}: a holder's new key: {body}");
        assert_eq!(writer.answered_without_read(), unread, "{node}: each of those read its key");
    }
    assert_eq!(world.batch_state(&batch).await["remaining"], 0);
    node_b.stop().await.expect("node b stops");
}

both_backends!(a_group_decided_on_a_stale_view_is_decided_again_whole);

/// Node A has read the batch with 9 left; node B then claims 8. A's next claims, decided
/// together on its stale view, are refused by the database and decided again on fresh state:
/// one 201, the rest `sold_out`, none 503; and A then knows the batch sold out (from memory).
async fn a_group_decided_on_a_stale_view_is_decided_again_whole(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let node_b = world.app.spawn_node(|_| {}).await.expect("a second node starts");
    let base_b = format!("http://{}", node_b.addr);
    let batch = world.batch(json!({"stock": 10})).await;
    let batch = id_of(&batch);
    let mut tokens = Vec::new();
    for n in 0..15 {
        tokens.push(world.citizen(n).await);
    }
    assert_eq!(world.claim(&tokens[0], &batch, "k").await.0, 201);
    for token in &tokens[1..9] {
        let (status, body) = claim_at(&world, &base_b, token, &batch, "k").await;
        assert_eq!(status, 201, "{body}");
    }
    let claims = tokens[9..14].iter().map(|token| world.claim(token, &batch, "k"));
    let answers = futures_util::future::join_all(claims).await;
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    for (status, body) in &answers {
        assert!(*status == 201 || (*status, code(body)) == (409, "sold_out"), "{status}: {body}");
    }
    assert_eq!(created, 1, "{answers:?}");
    assert_eq!(world.batch_state(&batch).await["remaining"], 0);
    let writer_a = world.app.server.as_ref().expect("running").writer.clone();
    let served = writer_a.answered_from_memory();
    let (status, body) = world.claim(&tokens[14], &batch, "k").await;
    assert_eq!((status, code(&body)), (409, "sold_out"), "{body}");
    assert_eq!(writer_a.answered_from_memory(), served + 1, "A marked the batch when it saw it sold out");
    node_b.stop().await.expect("node b stops");
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

both_backends!(a_flood_keeps_a_sold_out_mark_renewed);

/// Claims keep coming after a sell-out for well over the mark's second: the node reads the batch
/// again before the mark lapses and marks it again, so they are answered from memory instead of
/// one of them going to the writer each second.
async fn a_flood_keeps_a_sold_out_mark_renewed(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let batch = world.batch(json!({"stock": 1})).await;
    let batch = id_of(&batch);
    let first = world.citizen(1).await;
    let mut flood = Vec::new();
    for n in 2..7 {
        // Five citizens, each within the claim rate's burst.
        flood.push(world.citizen(n).await);
    }
    assert_eq!(world.claim(&first, &batch, "k").await.0, 201);
    let writer = world.app.server.as_ref().expect("running").writer.clone();
    let served = writer.answered_from_memory();
    let sent: u64 = 50;
    for n in 0..sent as usize {
        let (status, body) = world.claim(&flood[n % flood.len()], &batch, &format!("flood-{n}")).await;
        assert_eq!((status, code(&body)), (409, "sold_out"), "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let through_writer = sent - (writer.answered_from_memory() - served);
    assert!(through_writer <= 1, "{through_writer} of {sent} claims over 2.5 s went to the writer");
}
