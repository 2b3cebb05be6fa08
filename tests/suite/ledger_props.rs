//! Property test: random sequences of valid and invalid entries. After each step every maintained
//! balance equals the sum of its postings, equals a simple in-memory model, and the chain verifies.

use std::collections::HashMap;

use proptest::prelude::*;
use wenhui::app::audit;
use wenhui::domain::ledger::{AccountAddress, AccountSpec, NewEntry, NewPosting, Side};
use wenhui::storage::Storage;

use crate::common::{Backend, TestDb};

#[derive(Clone, Debug)]
enum Op {
    Fund { to: usize, fen: i64 },
    Move { from: usize, to: usize, fen: i64 },
    Split { from: usize, fen: i64 },
    Unbalanced { fen: i64 },
    NonPositive { fen: i64 },
    OneSided { fen: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 1..5_000i64).prop_map(|(to, fen)| Op::Fund { to, fen }),
        4 => (0..3usize, 0..3usize, 1..5_000i64).prop_map(|(from, to, fen)| Op::Move { from, to, fen }),
        1 => (0..3usize, 2..5_000i64).prop_map(|(from, fen)| Op::Split { from, fen }),
        1 => (1..5_000i64).prop_map(|fen| Op::Unbalanced { fen }),
        1 => (-5_000..=0i64).prop_map(|fen| Op::NonPositive { fen }),
        1 => (1..5_000i64).prop_map(|fen| Op::OneSided { fen }),
    ]
}

fn pool(i: usize) -> AccountSpec {
    AccountSpec::credit_limited(AccountAddress::from_segments(&["prop", "pool", &i.to_string()]))
}

fn source() -> AccountSpec {
    AccountSpec::debit_unlimited(AccountAddress::from_segments(&["prop", "source"]))
}

fn posting(account: AccountSpec, side: Side, amount_fen: i64) -> NewPosting {
    NewPosting { account, side, amount_fen }
}

/// The entry for an op, and the model's change to pool balances if it is valid.
fn build(op: &Op, reference: String) -> (NewEntry, Vec<(usize, i64)>) {
    match *op {
        Op::Fund { to, fen } => (
            NewEntry::new(
                "fund",
                reference,
                vec![posting(source(), Side::Debit, fen), posting(pool(to), Side::Credit, fen)],
            ),
            vec![(to, fen)],
        ),
        Op::Move { from, to, fen } => (
            NewEntry::new(
                "move",
                reference,
                vec![posting(pool(from), Side::Debit, fen), posting(pool(to), Side::Credit, fen)],
            ),
            vec![(from, -fen), (to, fen)],
        ),
        Op::Split { from, fen } => {
            let half = fen / 2;
            let postings = vec![
                posting(pool(from), Side::Debit, fen),
                posting(pool((from + 1) % 3), Side::Credit, half),
                posting(pool((from + 2) % 3), Side::Credit, fen - half),
            ];
            (
                NewEntry::new("split", reference, postings),
                vec![(from, -fen), ((from + 1) % 3, half), ((from + 2) % 3, fen - half)],
            )
        }
        Op::Unbalanced { fen } => (
            NewEntry::new(
                "bad",
                reference,
                vec![posting(source(), Side::Debit, fen), posting(pool(0), Side::Credit, fen + 1)],
            ),
            vec![],
        ),
        Op::NonPositive { fen } => (
            NewEntry::new(
                "bad",
                reference,
                vec![posting(source(), Side::Debit, fen), posting(pool(0), Side::Credit, fen)],
            ),
            vec![],
        ),
        Op::OneSided { fen } => (
            NewEntry::new(
                "bad",
                reference,
                vec![posting(source(), Side::Credit, fen), posting(pool(0), Side::Credit, fen)],
            ),
            vec![],
        ),
    }
}

async fn check_step(store: &dyn Storage, model: &HashMap<usize, i64>) -> Result<(), TestCaseError> {
    prop_assert!(store.balance_mismatches().await.expect("query").is_empty());
    audit::verify_store(store).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    for i in 0..3 {
        let balance = store.balance(&pool(i).address).await.expect("balance").unwrap_or_default();
        prop_assert_eq!(balance.credits_fen - balance.debits_fen, *model.get(&i).unwrap_or(&0));
    }
    Ok(())
}

fn run_property(backend: Backend) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let db = runtime.block_on(TestDb::new(backend));
    let store = runtime.block_on(db.store());
    let model: std::cell::RefCell<HashMap<usize, i64>> = Default::default();
    let counter = std::cell::Cell::new(0u64);
    let config = ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..12))| {
        for op in &ops {
            counter.set(counter.get() + 1);
            let (entry, delta) = build(op, format!("prop-{}", counter.get()));
            let mut next = model.borrow().clone();
            for (pool, change) in &delta {
                *next.entry(*pool).or_default() += change;
            }
            let should_succeed = !delta.is_empty() && next.values().all(|v| *v >= 0);
            let result = runtime.block_on(store.post_entries(&[entry]));
            prop_assert_eq!(result.is_ok(), should_succeed, "op {:?}: {:?}", op, result);
            if should_succeed {
                *model.borrow_mut() = next;
            }
            runtime.block_on(check_step(store.as_ref(), &model.borrow()))?;
        }
    });
}

#[test]
fn random_entries_keep_balances_and_chain_sqlite() {
    run_property(Backend::Sqlite);
}

#[test]
fn random_entries_keep_balances_and_chain_postgres() {
    run_property(Backend::Postgres);
}
