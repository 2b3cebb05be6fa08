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

/// A TCP proxy in front of PostgreSQL that the test can hold: while held it passes nothing on,
/// in either direction, on old connections and new ones alike (a database that hangs).
struct HeldProxy {
    addr: std::net::SocketAddr,
    held: Arc<std::sync::atomic::AtomicBool>,
}

impl HeldProxy {
    async fn start(upstream: String) -> HeldProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = held.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pass(client_read, server_write, flag.clone()));
                tokio::spawn(pass(server_read, client_write, flag.clone()));
            }
        });
        HeldProxy { addr, held }
    }

    fn hold(&self) {
        self.held.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    held: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while held.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// With PostgreSQL hanging (every connection held), `/readyz` answers 503 within about a
/// second, not after the pool's acquire timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_within_a_second_when_postgres_hangs() {
    let admin = reqwest::Url::parse(&crate::common::pg_admin_url()).expect("admin url");
    let upstream = format!("{}:{}", admin.host_str().expect("host"), admin.port().unwrap_or(5432));
    let proxy = HeldProxy::start(upstream).await;
    let proxy_port = proxy.addr.port();
    let app = crate::common::TestApp::spawn_configured(Backend::Postgres, |config| {
        let mut url = reqwest::Url::parse(&config.database_url).expect("database url");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(proxy_port)).expect("port");
        config.database_url = url.to_string();
    })
    .await;
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
    node.stop().await.expect("stops");

    // The same secret, but a QR key file that is another key under the current key's name.
    let qr = std::fs::read_dir(shared.path().join("qr")).expect("qr").next().expect("a key").expect("entry");
    std::fs::remove_file(qr.path()).expect("remove");
    wenhui::app::signing::SigningKey::load_or_create(&qr.path()).expect("another key");
    let refused = app.spawn_node(|config| config.keys_dir = shared.path().to_owned()).await;
    let message = format!("{:#}", refused.err().expect("a foreign QR key is refused"));
    assert!(message.contains("QR signing key"), "{message}");
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
