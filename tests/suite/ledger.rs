//! The ledger through the storage trait, on both backends.

use std::sync::Arc;

use sqlx::Connection;

use wenhui::app::audit::{self, VerifyFailure};
use wenhui::app::signing::SigningKey;
use wenhui::domain::ledger::{
    AccountAddress, AccountSpec, ChainBreak, LedgerError, NewEntry, NewPosting, Side,
};
use wenhui::domain::money::Fen;
use wenhui::domain::time::{ManualClock, Timestamp};
use wenhui::storage::{PostError, Storage};

use crate::both_backends;
use crate::common::{Backend, TestDb};

fn treasury() -> AccountSpec {
    AccountSpec::debit_unlimited(AccountAddress::from_segments(&["world", "treasury", "370000"]))
}

fn pool(name: &str) -> AccountSpec {
    AccountSpec::credit_limited(AccountAddress::from_segments(&["test", "pool", name]))
}

fn fund(reference: &str, to: &str, fen: i64) -> NewEntry {
    NewEntry::transfer("budget", reference, treasury(), pool(to), Fen::new(fen).expect("amount"))
}

fn move_between(reference: &str, from: &str, to: &str, fen: i64) -> NewEntry {
    NewEntry::transfer("transfer", reference, pool(from), pool(to), Fen::new(fen).expect("amount"))
}

fn refusal(result: Result<Vec<wenhui::domain::ledger::PostReceipt>, PostError>) -> LedgerError {
    match result {
        Err(PostError::Refused(indexed)) => indexed.error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

type RefusalCheck = fn(&LedgerError) -> bool;

async fn entry_count(store: &dyn Storage) -> i64 {
    store.ledger_head().await.expect("head").seq
}

both_backends!(
    balanced_accepted_invalid_refused_with_nothing_written,
    limit_flag_refuses_overdraft_and_batch_is_atomic,
    limit_holds_under_concurrent_posting,
    reference_is_idempotent,
    raw_update_and_delete_refused_by_database,
    tampered_amount_is_found_by_verify,
    tamper_past_the_first_page_is_found,
    export_verifies_offline_and_edits_fail,
    an_appended_entry_mixing_points_and_fen_fails_offline,
    concurrent_posting_keeps_sequence_gapless,
    warming_the_claim_path_writes_nothing,
);

async fn balanced_accepted_invalid_refused_with_nothing_written(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let receipts = store.post_entries(&[fund("f1", "a", 10_000)]).await.expect("balanced entry");
    assert_eq!(receipts[0].seq, 1);
    assert!(receipts[0].newly_posted);

    let ghost = || AccountSpec::credit_limited(AccountAddress::from_segments(&["test", "ghost"]));
    let posting = |account: AccountSpec, side, amount_fen| NewPosting { account, side, amount_fen };
    let cases: Vec<(NewEntry, RefusalCheck)> = vec![
        (
            NewEntry::new(
                "t",
                "unbalanced",
                vec![posting(treasury(), Side::Debit, 5), posting(ghost(), Side::Credit, 4)],
            ),
            |e| matches!(e, LedgerError::Unbalanced { .. }),
        ),
        (NewEntry::new("t", "empty", vec![]), |e| matches!(e, LedgerError::TooFewPostings)),
        (NewEntry::new("t", "single", vec![posting(ghost(), Side::Credit, 4)]), |e| {
            matches!(e, LedgerError::TooFewPostings)
        }),
        (
            NewEntry::new(
                "t",
                "one-sided",
                vec![posting(treasury(), Side::Debit, 5), posting(ghost(), Side::Debit, 5)],
            ),
            |e| matches!(e, LedgerError::OneSided),
        ),
        (
            NewEntry::new(
                "t",
                "zero",
                vec![posting(treasury(), Side::Debit, 0), posting(ghost(), Side::Credit, 0)],
            ),
            |e| matches!(e, LedgerError::BadAmount(0)),
        ),
        (
            NewEntry::new(
                "t",
                "negative",
                vec![posting(treasury(), Side::Debit, -7), posting(ghost(), Side::Credit, -7)],
            ),
            |e| matches!(e, LedgerError::BadAmount(-7)),
        ),
    ];
    for (entry, expected) in cases {
        let error = refusal(store.post_entries(std::slice::from_ref(&entry)).await);
        assert!(expected(&error), "{}: unexpected refusal {error:?}", entry.reference);
        // A batch with a good entry before the bad one writes nothing either.
        let batch = [fund(&format!("good-before-{}", entry.reference), "a", 1), entry.clone()];
        refusal(store.post_entries(&batch).await);
    }
    assert_eq!(entry_count(store.as_ref()).await, 1, "nothing written by refused entries");
    let ghost_address = AccountAddress::from_segments(&["test", "ghost"]);
    assert_eq!(store.balance(&ghost_address).await.expect("balance"), None, "no account opened");
    let a = store.balance(&pool("a").address).await.expect("balance").expect("exists");
    assert_eq!(a.credits_fen, 10_000);
    audit::verify_store(store.as_ref()).await.expect("verifies");
}

async fn limit_flag_refuses_overdraft_and_batch_is_atomic(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    store.post_entries(&[fund("f", "a", 100)]).await.expect("fund");
    store.post_entries(&[move_between("m1", "a", "b", 60)]).await.expect("within limit");
    let error = refusal(store.post_entries(&[move_between("m2", "a", "b", 60)]).await);
    assert!(
        matches!(error, LedgerError::LimitExceeded { ref address, .. } if address == "test:pool:a"),
        "{error:?}"
    );
    // Refill then overdraw in one batch: the later entry breaks the limit, so nothing is written.
    let batch = [fund("f2", "a", 10), move_between("m3", "a", "b", 100)];
    assert!(matches!(refusal(store.post_entries(&batch).await), LedgerError::LimitExceeded { index: 1, .. }));
    let a = store.balance(&pool("a").address).await.expect("ok").expect("exists");
    assert_eq!(a.credits_fen - a.debits_fen, 40);
    assert_eq!(entry_count(store.as_ref()).await, 2);
    audit::verify_store(store.as_ref()).await.expect("verifies");
}

async fn limit_holds_under_concurrent_posting(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    store.post_entries(&[fund("f", "a", 1_000)]).await.expect("fund");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.post_entries(&[move_between(&format!("spend-{i}"), "a", "b", 100)]).await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.expect("join") {
            Ok(_) => accepted += 1,
            Err(PostError::Refused(r)) => assert!(matches!(r.error, LedgerError::LimitExceeded { .. })),
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(accepted, 10, "exactly the funded amount is spent");
    let a = store.balance(&pool("a").address).await.expect("ok").expect("exists");
    assert_eq!(a.credits_fen - a.debits_fen, 0);
    audit::verify_store(store.as_ref()).await.expect("verifies");
}

/// The claim writer warms its connections when it starts, in transactions rolled back: the
/// ledger's head, its entries and the balances stay as they were, and posting goes on after.
async fn warming_the_claim_path_writes_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    store.post_entries(&[fund("f", "a", 100)]).await.expect("fund");
    let before = store.ledger_head().await.expect("head");
    store.warm_claim_path().await.expect("warmed");
    store.warm_claim_path().await.expect("warmed again");
    if backend == Backend::Postgres {
        // It opened the connections it warms (six: the test's store draws from a pool of eight,
        // where the writers' own holds six), not one reused six times.
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        let (opened,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'wenhui'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_activity");
        assert!(opened >= 6, "the warm-up opened {opened} connections");
    }
    let after = store.ledger_head().await.expect("head");
    assert_eq!((after.seq, after.hash, after.posted_at), (before.seq, before.hash, before.posted_at));
    store.post_entries(&[move_between("m", "a", "b", 40)]).await.expect("posts after");
    assert_eq!(entry_count(store.as_ref()).await, 2);
    let a = store.balance(&pool("a").address).await.expect("ok").expect("exists");
    assert_eq!(a.credits_fen - a.debits_fen, 60);
    audit::verify_store(store.as_ref()).await.expect("verifies");
}

async fn reference_is_idempotent(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let first = store.post_entries(&[fund("same", "a", 500)]).await.expect("first");
    let again = store.post_entries(&[fund("same", "a", 500)]).await.expect("retry");
    assert_eq!(again[0].seq, first[0].seq);
    assert_eq!(again[0].hash, first[0].hash);
    assert!(!again[0].newly_posted);
    assert!(matches!(
        refusal(store.post_entries(&[fund("same", "a", 501)]).await),
        LedgerError::ReferenceConflict { .. }
    ));
    let dup = [fund("twice", "a", 1), fund("twice", "a", 1)];
    assert!(matches!(refusal(store.post_entries(&dup).await), LedgerError::DuplicateInBatch { .. }));
    assert_eq!(entry_count(store.as_ref()).await, 1);
    let a = store.balance(&pool("a").address).await.expect("ok").expect("exists");
    assert_eq!(a.credits_fen, 500, "the retry moved nothing");
}

async fn raw_update_and_delete_refused_by_database(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    store.post_entries(&[fund("f", "a", 100)]).await.expect("fund");
    store
        .insert_checkpoint(
            &SigningKey::from_pkcs8(&test_key())
                .expect("key")
                .sign_checkpoint(&store.ledger_head().await.expect("head"), Timestamp::now()),
        )
        .await
        .expect("checkpoint");
    for sql in [
        "UPDATE postings SET amount_fen = 1",
        "DELETE FROM postings",
        "UPDATE journal_entries SET kind = 'forged'",
        "DELETE FROM journal_entries",
        "UPDATE ledger_checkpoints SET seq = 9",
        "DELETE FROM ledger_checkpoints",
    ] {
        let result = db.raw(sql).await;
        let error = result.expect_err(sql);
        assert!(error.contains("append-only"), "{sql}: {error}");
    }
    if backend == Backend::Postgres {
        // Every append-only table (TRUNCATE fires no row trigger): each needs its own.
        let append_only = "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
             JOIN pg_proc p ON p.oid = t.tgfoid WHERE p.proname = 'wenhui_refuse_ledger_change' \
             AND NOT t.tgisinternal GROUP BY c.relname ORDER BY c.relname";
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        let tables: Vec<String> =
            sqlx::query_scalar(append_only).fetch_all(&mut conn).await.expect("the append-only tables");
        assert!(tables.len() >= 7, "{tables:?}");
        for table in tables {
            let error = db.raw(&format!("TRUNCATE {table} CASCADE")).await.expect_err(&table);
            assert!(error.contains("append-only"), "{table}: {error}");
        }
    }
    audit::verify_store(store.as_ref()).await.expect("still verifies");
}

pub fn test_key() -> Vec<u8> {
    use ring::signature::Ed25519KeyPair;
    Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("key").as_ref().to_vec()
}

async fn tampered_amount_is_found_by_verify(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    for i in 0..5 {
        store.post_entries(&[fund(&format!("f{i}"), "a", 100)]).await.expect("fund");
    }
    db.tamper_posting_amount(3, 99_999).await;
    match audit::verify_store(store.as_ref()).await {
        Err(VerifyFailure::Chain(ChainBreak::HashMismatch { seq: 3, .. })) => {}
        other => panic!("expected a hash mismatch at seq 3, got {other:?}"),
    }
}

/// `verify_store` reads the chain in pages of 2,000 entries and hashes each page while it
/// fetches the next: a chain of several pages verifies whole, and a change in a later page is
/// found at its place.
async fn tamper_past_the_first_page_is_found(backend: Backend) {
    const ENTRIES: usize = 4_500;
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let entries: Vec<NewEntry> = (0..ENTRIES).map(|i| fund(&format!("f{i}"), "a", 100)).collect();
    for group in entries.chunks(500) {
        store.post_entries(group).await.expect("fund");
    }
    let report = audit::verify_store(store.as_ref()).await.expect("verifies");
    assert_eq!(report.entries_checked, ENTRIES as i64);
    db.tamper_posting_amount(4_321, 99_999).await;
    match audit::verify_store(store.as_ref()).await {
        Err(VerifyFailure::Chain(ChainBreak::HashMismatch { seq: 4_321, .. })) => {}
        other => panic!("expected a hash mismatch at seq 4321, got {other:?}"),
    }
}

async fn export_verifies_offline_and_edits_fail(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let key = SigningKey::from_pkcs8(&test_key()).expect("key");
    for i in 0..4 {
        store.post_entries(&[fund(&format!("f{i}"), "a", 100 + i)]).await.expect("fund");
    }
    audit::checkpoint(store.as_ref(), &key).await.expect("checkpoint");
    store.post_entries(&[fund("after", "a", 1)]).await.expect("after checkpoint");
    let mut export = Vec::new();
    audit::export(store.as_ref(), &mut export).await.expect("export");
    let report = audit::verify_export(export.as_slice(), key.public_key()).expect("verifies offline");
    assert_eq!(report.entries_checked, 5);
    assert_eq!(report.checkpoint_seq, Some(4));

    let text = String::from_utf8(export).expect("utf8");
    let edited = text.replacen("\"amount_fen\":102", "\"amount_fen\":902", 1);
    assert_ne!(edited, text);
    assert!(matches!(
        audit::verify_export(edited.as_bytes(), key.public_key()),
        Err(VerifyFailure::Chain(ChainBreak::HashMismatch { seq: 3, .. }))
    ));
    let other_key = SigningKey::from_pkcs8(&test_key()).expect("key");
    assert!(
        audit::verify_export(text.as_bytes(), other_key.public_key()).is_err(),
        "another key must not verify"
    );
    let dropped: String =
        text.lines().filter(|l| !l.contains("\"seq\":2,")).map(|l| format!("{l}\n")).collect();
    assert!(matches!(
        audit::verify_export(dropped.as_bytes(), key.public_key()),
        Err(VerifyFailure::Chain(ChainBreak::SequenceGap { .. }))
    ));
}

/// An export with one more entry appended to its chain, correctly hashed, that debits 5 points
/// (a card's points account) and credits 5 fen: only the per-unit balance rule can catch it.
pub fn append_mixed_unit_entry(export: &str) -> String {
    use wenhui::app::audit::ExportLine;
    use wenhui::domain::ledger::{EntryHash, PostedEntry, Posting};
    let last = export
        .lines()
        .rev()
        .find_map(|line| match serde_json::from_str(line) {
            Ok(ExportLine::Entry(entry)) => Some(entry),
            _ => None,
        })
        .expect("the export holds an entry");
    let prev_hash = EntryHash::from_hex(&last.hash).expect("hash");
    let card = wenhui::domain::ids::CardId::new_v7();
    let points = wenhui::domain::accounts::card_points(card, wenhui::domain::ids::SeasonId::new_v7())
        .address
        .to_string();
    let mut forged = PostedEntry {
        seq: last.seq + 1,
        id: uuid::Uuid::now_v7(),
        kind: "forged".into(),
        reference: format!("forged:{card}"),
        posted_at: Timestamp::from_unix_us(last.posted_at_us + 1),
        prev_hash,
        hash: prev_hash,
        postings: vec![
            Posting { account: points, side: Side::Debit, amount_fen: 5 },
            Posting { account: pool("a").address.to_string(), side: Side::Credit, amount_fen: 5 },
        ],
    };
    forged.hash = forged.compute_hash(&prev_hash);
    let line = serde_json::to_string(&ExportLine::Entry((&forged).into())).expect("json");
    format!("{}\n{line}\n", export.trim_end())
}

/// Offline verification balances each unit separately, as the write path does: an appended,
/// well-chained entry that debits 5 points and credits 5 fen is refused, and names its seq.
async fn an_appended_entry_mixing_points_and_fen_fails_offline(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let key = SigningKey::from_pkcs8(&test_key()).expect("key");
    for i in 0..3 {
        store.post_entries(&[fund(&format!("f{i}"), "a", 100)]).await.expect("fund");
    }
    audit::checkpoint(store.as_ref(), &key).await.expect("checkpoint");
    let mut export = Vec::new();
    audit::export(store.as_ref(), &mut export).await.expect("export");
    let export = String::from_utf8(export).expect("utf8");
    audit::verify_export(export.as_bytes(), key.public_key()).expect("the export verifies");

    let forged = append_mixed_unit_entry(&export);
    match audit::verify_export(forged.as_bytes(), key.public_key()) {
        Err(VerifyFailure::Chain(ChainBreak::Malformed { seq: 4, reason, .. })) => {
            assert_eq!(reason, "debits 0 fen != credits 5 fen");
        }
        other => panic!("expected entry 4 refused as unbalanced per unit, got {other:?}"),
    }
    // The write path refuses the same postings: such an entry is never in a true ledger.
    let mixed = NewEntry::new(
        "forged",
        "forged:online",
        vec![
            NewPosting {
                account: wenhui::domain::accounts::card_points(
                    wenhui::domain::ids::CardId::new_v7(),
                    wenhui::domain::ids::SeasonId::new_v7(),
                ),
                side: Side::Debit,
                amount_fen: 5,
            },
            NewPosting { account: pool("a"), side: Side::Credit, amount_fen: 5 },
        ],
    );
    let error = refusal(store.post_entries(&[mixed]).await);
    assert!(matches!(error, LedgerError::UnbalancedUnit(_)), "{error:?}");
    assert_eq!(entry_count(store.as_ref()).await, 3, "nothing written");
}

async fn concurrent_posting_keeps_sequence_gapless(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store: Arc<dyn Storage> = store.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..15 {
                let size = 1 + (round % 4);
                let batch: Vec<NewEntry> = (0..size)
                    .map(|i| fund(&format!("t{task}-r{round}-{i}"), &format!("p{task}"), 1 + i as i64))
                    .collect();
                store.post_entries(&batch).await.expect("post");
            }
        }));
    }
    for task in tasks {
        task.await.expect("join");
    }
    let expected: i64 = 8 * (0..15).map(|r| 1 + (r % 4)).sum::<i64>();
    let report = audit::verify_store(store.as_ref()).await.expect("chain verifies");
    assert_eq!(report.entries_checked, expected);
    let entries = store.entries_after(0, 10_000).await.expect("entries");
    assert!(entries.iter().enumerate().all(|(i, e)| e.seq == i as i64 + 1), "gapless");
    assert!(entries.windows(2).all(|w| w[0].posted_at <= w[1].posted_at), "time never goes backwards");
}

/// The same entries, with the same ids and clock, end on the same head hash on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_same_head_hash_on_both_backends() {
    let mut heads = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_us(1_767_225_600_000_000)));
        let store = db.store_with_clock(clock.clone()).await;
        for i in 0..30u128 {
            let mut entry = if i % 3 == 2 {
                move_between(&format!("d{i}"), "a", "b", 7)
            } else {
                fund(&format!("d{i}"), "a", 100 + i as i64)
            };
            entry.id = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + i);
            store.post_entries(&[entry]).await.expect("post");
            clock.advance_us(1_000);
        }
        let bad = move_between("d-overdraft", "a", "b", 1_000_000);
        assert!(store.post_entries(&[bad]).await.is_err());
        heads.push(store.ledger_head().await.expect("head"));
        audit::verify_store(store.as_ref()).await.expect("verifies");
    }
    assert_eq!(heads[0], heads[1], "SQLite and PostgreSQL disagree");
    assert_eq!(heads[0].seq, 30);
}
