//! The rush's public reads from memory (issue 26): the batch list, seasons and keys served from
//! the node's snapshot, with strong ETags and 304s; a claim or a new batch shows in the list.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wenhui::domain::time::Clock;

use crate::both_backends;
use crate::claims::World;
use crate::common::{Backend, read};

both_backends!(
    a_claim_reaches_the_batch_list_within_the_bound,
    an_unchanged_list_answers_304_and_a_claim_changes_its_etag,
    a_batch_created_here_is_listed_at_once,
    seasons_and_keys_carry_etags_and_answer_304,
    many_readers_make_one_rebuild,
    an_aging_snapshot_is_rebuilt_ahead_while_it_is_served,
    the_polls_port_serves_the_public_reads_and_nothing_else,
    the_public_reads_take_their_own_stack_and_hand_on_the_rest,
);

/// A GET with an optional If-None-Match: status, ETag, Cache-Control and body.
async fn conditional_get(world: &World, path: &str, etag: Option<&str>) -> (u16, String, String, Value) {
    let mut request = world.app.client.get(world.app.url(path));
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    let response = request.send().await.expect("send");
    let header = |name: &str| {
        response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    let (tag, cache) = (header("etag"), header("cache-control"));
    let status = response.status().as_u16();
    if status == 304 {
        let body = response.bytes().await.expect("body");
        assert!(body.is_empty(), "a 304 has no body");
        return (status, tag, cache, Value::Null);
    }
    let (status, body) = read(response).await;
    (status, tag, cache, body)
}

fn remaining(list: &Value, batch_id: &str) -> i64 {
    let batch = list.as_array().expect("array").iter().find(|b| b["id"] == batch_id).expect("listed");
    batch["remaining"].as_i64().expect("remaining")
}

async fn a_claim_reaches_the_batch_list_within_the_bound(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let batch = world.batch(json!({"stock": 10})).await;
    let batch_id = batch["id"].as_str().expect("id");
    let path = format!("/v1/seasons/{}/batches", world.season_id);
    assert_eq!(remaining(&world.app.get(&path, None).await.1, batch_id), 10, "the snapshot is built");
    let token = world.citizen(1).await;
    let (status, claimed) = world.claim(&token, batch_id, "claim-1").await;
    assert_eq!(status, 201, "{claimed}");
    let claimed_at = Instant::now();
    loop {
        let (status, list) = world.app.get(&path, None).await;
        assert_eq!(status, 200, "{list}");
        if remaining(&list, batch_id) == 9 {
            break;
        }
        let waited = claimed_at.elapsed();
        assert!(waited < Duration::from_secs(1), "the claim is not in the list after {waited:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_unchanged_list_answers_304_and_a_claim_changes_its_etag(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let batch = world.batch(json!({"stock": 10})).await;
    let batch_id = batch["id"].as_str().expect("id");
    let path = format!("/v1/seasons/{}/batches", world.season_id);
    let (status, etag, cache, list) = conditional_get(&world, &path, None).await;
    assert_eq!(status, 200, "{list}");
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2, "a strong ETag: {etag}");
    assert_eq!(cache, "public, max-age=1, stale-while-revalidate=5");
    assert_eq!(list[0]["server_time"], world.clock.now().to_string(), "the server's time, in each batch");

    let (status, again, _, _) = conditional_get(&world, &path, Some(&etag)).await;
    assert_eq!((status, again.as_str()), (304, etag.as_str()), "an unchanged list is not sent again");
    let (status, _, _, _) = conditional_get(&world, &path, Some("\"something-else\"")).await;
    assert_eq!(status, 200, "another ETag gets the list");

    let token = world.citizen(1).await;
    assert_eq!(world.claim(&token, batch_id, "claim-1").await.0, 201);
    // A commit rebuilds the snapshot at most every 100 ms: the claim shows within that.
    let claimed_at = Instant::now();
    let (after, list) = loop {
        let (status, after, _, list) = conditional_get(&world, &path, Some(&etag)).await;
        if status == 200 {
            break (after, list);
        }
        assert_eq!(status, 304);
        let waited = claimed_at.elapsed();
        assert!(waited < Duration::from_secs(1), "the list did not change with the claim in {waited:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(after, etag, "a new ETag");
    assert_eq!(remaining(&list, batch_id), 9);
    let (status, _, _, _) = conditional_get(&world, &path, Some(&after)).await;
    assert_eq!(status, 304, "the new list is unchanged since");
}

async fn a_batch_created_here_is_listed_at_once(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let path = format!("/v1/seasons/{}/batches", world.season_id);
    let (status, empty) = world.app.get(&path, None).await;
    assert_eq!((status, empty.clone()), (200, json!([])), "no batch yet (the snapshot is built)");
    let batch = world.batch(json!({"stock": 7})).await;
    let (_, list) = world.app.get(&path, None).await;
    assert_eq!(remaining(&list, batch["id"].as_str().expect("id")), 7, "listed at once: {list}");
    // A season created here is in the season list at once too.
    let (_, seasons) = world.app.get("/v1/seasons", None).await;
    assert_eq!(seasons["seasons"][0]["id"], world.season_id.as_str());
    let (status, missing) =
        world.app.get(&format!("/v1/seasons/{}/batches", uuid::Uuid::now_v7()), None).await;
    assert_eq!(status, 404, "{missing}");
}

async fn seasons_and_keys_carry_etags_and_answer_304(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    for (path, cache) in [
        ("/v1/seasons".to_owned(), "public, max-age=5, stale-while-revalidate=30"),
        (format!("/v1/seasons/{}", world.season_id), "public, max-age=5, stale-while-revalidate=30"),
        ("/v1/keys".to_owned(), "public, max-age=60, stale-while-revalidate=60"),
    ] {
        let (status, etag, cache_control, body) = conditional_get(&world, &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(cache_control, cache, "{path}");
        let (status, again, _, _) = conditional_get(&world, &path, Some(&etag)).await;
        assert_eq!((status, again), (304, etag), "{path}");
    }
    // A budget added changes the season's figures: a new answer, with the new amount.
    let (_, etag, _, _) = conditional_get(&world, &format!("/v1/seasons/{}", world.season_id), None).await;
    let budget = json!({"funder": "370000", "amount": "5.00"});
    let path = format!("/v1/seasons/{}/budgets", world.season_id);
    let (status, added) = world.app.post_idem(&path, Some(&world.province_admin), "budget-1", budget).await;
    assert_eq!(status, 201, "{added}");
    let (status, _, _, season) =
        conditional_get(&world, &format!("/v1/seasons/{}", world.season_id), Some(&etag)).await;
    assert_eq!(status, 200);
    assert_eq!(crate::claims::funder(&season, "370000")["appropriated"], "100005.00");
}

async fn many_readers_make_one_rebuild(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    world.batch(json!({"stock": 5})).await;
    let clock = world.clock.clone();
    let reads = std::sync::Arc::new(wenhui::app::public_reads::PublicReads::new(
        world.app.db.store_with_clock(clock).await,
        world.clock.clone(),
    ));
    let season_id: wenhui::domain::ids::SeasonId =
        world.season_id.parse::<uuid::Uuid>().expect("uuid").into();
    let readers: Vec<_> = (0..64)
        .map(|_| {
            let reads = reads.clone();
            tokio::spawn(
                async move { reads.batches(season_id).await.map(|s| s.value.as_ref().map(Vec::len)) },
            )
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await.expect("join").expect("read"), Some(1));
    }
    // Commits elsewhere in this test process may start a rebuild or two more, never one each.
    assert!(reads.rebuilds() < 8, "{} rebuilds for 64 readers", reads.rebuilds());
}

/// Past `REFRESH_AFTER_US`, the next reader rebuilds the snapshot (its `as_of` moves to now) while
/// a reader that finds the rebuild under way is served the snapshot it has: nobody waits for a
/// rebuild the clock alone asked for. Past the whole bound it is never served.
async fn an_aging_snapshot_is_rebuilt_ahead_while_it_is_served(backend: Backend) {
    use wenhui::app::public_reads::{BOUND_US, PublicReads, REFRESH_AFTER_US};
    let world = World::new(backend, "100000.00", None).await;
    world.batch(json!({"stock": 5})).await;
    let reads = std::sync::Arc::new(PublicReads::new(
        world.app.db.store_with_clock(world.clock.clone()).await,
        world.clock.clone(),
    ));
    let season_id: wenhui::domain::ids::SeasonId =
        world.season_id.parse::<uuid::Uuid>().expect("uuid").into();
    let first = reads.batches(season_id).await.expect("read");
    let t0 = first.as_of;
    let at = |us: i64| wenhui::domain::time::Timestamp::from_unix_us(t0.unix_us() + us);

    // Past the refresh age: 64 readers at once; one rebuilds, none is handed anything older
    // than the first snapshot, and afterwards the snapshot is the new one.
    world.clock.set(at(REFRESH_AFTER_US + 1_000));
    for as_of in read_at_once(&reads, season_id).await {
        assert!(as_of >= t0, "never older than the bound allows");
    }
    let now = world.clock.now();
    assert_eq!(reads.batches(season_id).await.expect("read").as_of, now, "rebuilt ahead of the bound");

    // Past the whole bound, a reader never gets the old snapshot.
    world.clock.set(at(REFRESH_AFTER_US + 1_000 + BOUND_US + 1));
    assert_eq!(reads.batches(season_id).await.expect("read").as_of, world.clock.now());

    // A hard change: 64 readers at once all wait for one rebuild and all get it (they wake
    // together on the slot's signal), none the snapshot from before the change.
    world.clock.set(at(REFRESH_AFTER_US + 1_000 + BOUND_US + 2));
    reads.invalidate();
    let rebuilds_before = reads.rebuilds();
    for as_of in read_at_once(&reads, season_id).await {
        assert_eq!(as_of, world.clock.now(), "the rebuilt snapshot");
    }
    let rebuilt = reads.rebuilds() - rebuilds_before;
    assert!((1..8).contains(&rebuilt), "{rebuilt} rebuilds for 64 readers");
}

/// 64 readers of the season's batch list at once: the `as_of` each was given.
async fn read_at_once(
    reads: &std::sync::Arc<wenhui::app::public_reads::PublicReads>,
    season_id: wenhui::domain::ids::SeasonId,
) -> Vec<wenhui::domain::time::Timestamp> {
    let readers: Vec<_> = (0..64)
        .map(|_| {
            let reads = reads.clone();
            tokio::spawn(async move { reads.batches(season_id).await.map(|s| s.as_of) })
        })
        .collect();
    let mut seen = Vec::new();
    for reader in readers {
        seen.push(reader.await.expect("join").expect("read"));
    }
    seen
}

/// `--polls-listen`: the public reads on a second port, the same answers as the main port's
/// (304 included), a claim's effect seen there too; every other request a 404 that changes
/// nothing; and (Linux) its threads under SCHED_IDLE, on the last core (`--polls-cores 1`).
async fn the_polls_port_serves_the_public_reads_and_nothing_else(backend: Backend) {
    let world = World::configured(backend, "100000.00", None, crate::claims::T0_US, json!({}), |config| {
        config.polls_listen = Some("127.0.0.1:0".parse().expect("addr"));
        config.polls_cores = Some(1);
    })
    .await;
    let polls = world.app.server.as_ref().and_then(|s| s.polls_addr).expect("a polls port");
    let polls_url = |path: &str| format!("http://{polls}{path}");
    let batch = world.batch(json!({"stock": 5})).await;
    let batch_id = batch["id"].as_str().expect("id");
    let list = format!("/v1/seasons/{}/batches", world.season_id);

    let (status, main_tag, _, main_list) = conditional_get(&world, &list, None).await;
    assert_eq!(status, 200, "{main_list}");
    let response = world.app.client.get(polls_url(&list)).send().await.expect("send");
    let polls_tag =
        response.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (status, polls_list) = read(response).await;
    assert_eq!((status, &polls_list), (200, &main_list), "the polls port answers as the main port does");
    assert_eq!(polls_tag, main_tag, "with the same ETag");
    let unchanged = world.app.client.get(polls_url(&list)).header("if-none-match", &polls_tag).send().await;
    assert_eq!(unchanged.expect("send").status().as_u16(), 304);
    for path in [format!("/v1/seasons/{}", world.season_id), "/v1/seasons".to_owned(), "/healthz".to_owned()]
    {
        let status = world.app.client.get(polls_url(&path)).send().await.expect("send").status();
        assert_eq!(status.as_u16(), 200, "{path} on the polls port");
    }

    let token = world.citizen(1).await;
    let claim = world
        .app
        .client
        .post(polls_url(&format!("/v1/batches/{batch_id}/claims")))
        .bearer_auth(&token)
        .header("idempotency-key", "polls-claim")
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    let (status, body) = read(claim).await;
    assert_eq!(status, 404, "a claim is not served on the polls port: {body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let mine = world.app.client.get(polls_url("/v1/me/vouchers")).bearer_auth(&token).send().await;
    assert_eq!(mine.expect("send").status().as_u16(), 404, "nor a citizen's own reads");
    assert_eq!(world.batch_state(batch_id).await["remaining"], 5, "the refused claim took nothing");

    let (status, claimed) = world.claim(&token, batch_id, "main-claim").await;
    assert_eq!(status, 201, "{claimed}");
    let deadline = Instant::now() + Duration::from_micros(wenhui::app::public_reads::BOUND_US as u64) * 3;
    loop {
        let (status, list_now) =
            read(world.app.client.get(polls_url(&list)).send().await.expect("send")).await;
        assert_eq!(status, 200, "{list_now}");
        if remaining(&list_now, batch_id) == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the claim never reached the polls port's list: {list_now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[cfg(target_os = "linux")]
    assert_polls_threads_idle();
}

/// Every thread of this process named `polls` runs under SCHED_IDLE (policy 5) on the last of
/// the process's cores only (all of them on a machine of one), and there is one.
#[cfg(target_os = "linux")]
fn assert_polls_threads_idle() {
    const SCHED_IDLE: &str = "5";
    let process_cores = allowed_cores(std::path::Path::new("/proc/self"));
    let last_core = vec![*process_cores.last().expect("a core")];
    let mut polls_threads = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("tasks").flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        if &stat[open + 1..close] != "polls" {
            continue;
        }
        // After the name: state is field 3 of stat(5), policy field 41.
        let policy = stat[close + 2..].split_whitespace().nth(41 - 3).expect("policy");
        assert_eq!(policy, SCHED_IDLE, "a polls thread's scheduling policy");
        assert_eq!(allowed_cores(&task.path()), last_core, "a polls thread's cores, of {process_cores:?}");
        polls_threads += 1;
    }
    assert!(polls_threads >= 1, "no polls thread found");
}

/// The cores a process or thread may run on: its `Cpus_allowed_list` (proc(5)), as "0-3,5".
#[cfg(target_os = "linux")]
fn allowed_cores(task: &std::path::Path) -> Vec<usize> {
    let status = std::fs::read_to_string(task.join("status")).expect("status");
    let list = status.lines().find_map(|line| line.strip_prefix("Cpus_allowed_list:")).expect("the list");
    let mut cores = Vec::new();
    for part in list.trim().split(',') {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        cores.extend(first.parse::<usize>().expect("a core")..=last.parse::<usize>().expect("a core"));
    }
    cores
}

/// The public reads answer on their own, lighter stack (`http::lean`): no request id (a cache
/// would hand it to everyone), counted in the metrics under their route; every other method on
/// their paths, and every other path, goes through the main router as it came (its request id,
/// its JSON errors, its own route in the metrics, not a doubled one).
async fn the_public_reads_take_their_own_stack_and_hand_on_the_rest(backend: Backend) {
    let world = World::new(backend, "100000.00", None).await;
    let list = format!("/v1/seasons/{}/batches", world.season_id);
    let batch = world.batch(json!({"stock": 3})).await;
    assert!(batch["id"].is_string(), "a POST on the list's path is created through the main router: {batch}");

    let answer = world.app.client.get(world.app.url(&list)).send().await.expect("send");
    assert!(answer.headers().get("x-request-id").is_none(), "a public read carries no request id");
    assert!(answer.headers().get("etag").is_some(), "it carries its ETag");
    let (status, body) = read(answer).await;
    assert_eq!((status, remaining(&body, batch["id"].as_str().expect("id"))), (200, 3), "{body}");
    let head = world.app.client.head(world.app.url(&list)).send().await.expect("send");
    assert_eq!(head.status().as_u16(), 200, "HEAD is answered as GET is");

    let put = world.app.client.put(world.app.url(&list)).send().await.expect("send");
    assert!(put.headers().get("x-request-id").is_some(), "another method goes through the main stack");
    let (status, body) = read(put).await;
    assert_eq!((status, body["error"]["code"].as_str()), (405, Some("method_not_allowed")), "{body}");
    let (status, body) = world.app.get(&format!("/v1/seasons/{}/nothing", world.season_id), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");

    let with_body = world.app.client.get(world.app.url(&list)).body("{}").send().await.expect("send");
    let closes = with_body.headers().get("connection").and_then(|v| v.to_str().ok()) == Some("close");
    assert!(closes, "a GET that came with a body is answered with Connection: close");

    let metrics = world.app.client.get(world.app.url("/metrics")).send().await.expect("send");
    let metrics = metrics.text().await.expect("text");
    let series = |method: &str, status: u16| {
        format!(
            "http_requests_total{{route=\"/v1/seasons/{{id}}/batches\",method=\"{method}\",status=\"{status}\"}}"
        )
    };
    for (method, status) in [("GET", 200), ("POST", 201)] {
        assert!(metrics.contains(&series(method, status)), "{} in {metrics}", series(method, status));
    }
    assert!(!metrics.contains("batches/v1"), "a handed-on request is counted under its own route");
}
