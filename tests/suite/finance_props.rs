//! Property test: random sequences of claims, redemptions, reversals, expiries (the clock moves
//! on), settlements and payouts, then closing. After every step the season reconciles: every
//! identity of `finance::reconcile` holds, on both backends.

use proptest::prelude::*;
use ring::signature::Ed25519KeyPair;
use serde_json::{Value, json};
use uuid::Uuid;
use wenhui::domain::staff::Role;
use wenhui::domain::time::{Clock, Timestamp};

use crate::claims::World;
use crate::common::Backend;
use crate::till::merchant;
use wenhui::domain::ids::SeasonId;

#[derive(Clone, Debug)]
enum Op {
    Claim { citizen: u32, batch: usize },
    Redeem { voucher: usize, amount_fen: i64 },
    Reverse { redemption: usize },
    Advance { hours: i64 },
    Settle,
    Pay { settlement: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1..7u32, 0..2usize).prop_map(|(citizen, batch)| Op::Claim { citizen, batch }),
        5 => (0..16usize, 1_000..12_000i64).prop_map(|(voucher, amount_fen)| Op::Redeem { voucher, amount_fen }),
        2 => (0..8usize).prop_map(|redemption| Op::Reverse { redemption }),
        2 => (1..30i64).prop_map(|hours| Op::Advance { hours }),
        2 => Just(Op::Settle),
        1 => (0..4usize).prop_map(|settlement| Op::Pay { settlement }),
    ]
}

struct Season {
    world: World,
    finance: String,
    merchant: String,
    terminal: Uuid,
    key: Ed25519KeyPair,
    batches: Vec<String>,
    citizens: Vec<(u32, String)>,
    vouchers: Vec<(String, String)>,
    redemptions: Vec<String>,
    settlements: Vec<String>,
    counter: u64,
}

impl Season {
    async fn new(backend: Backend) -> Season {
        let t0 = Timestamp::now().unix_us() / 1_000_000 * 1_000_000;
        let world = World::new_at(
            backend,
            "100000.00",
            None,
            t0,
            // The per-person limits, tight enough to refuse some claims and redemptions, so
            // that their counters are reconciled through every step too; and a subsidy ceiling
            // that cuts some discounts short, leaving part of a voucher's value to go back.
            json!({"ends_at": Timestamp::from_unix_us(t0).plus_seconds(10 * 86_400).to_string(),
                   "per_citizen_cap": "40.00", "per_citizen_monthly_cap": "30.00", "merchant_redemption_limit": 2,
                   "subsidy_ceilings": {"bookstore": 20}}),
        )
        .await;
        let city_admin = world.app.staff_key(Role::CityAdmin, "370200").await;
        let closes = world.at(3 * 86_400);
        let provincial = world
            .batch(json!({"stock": 4, "per_citizen_limit": 2, "valid_hours": 12, "claim_closes_at": closes}))
            .await;
        let co_funded = world
            .batch_as(
                &city_admin,
                json!({"issuer": "370200", "kind": "percent", "percent": 30, "cap": "25.00",
                "step": "0.50", "face_value": null, "min_spend": "0.00", "stock": 3, "valid_hours": 24,
                "claim_closes_at": closes, "categories": ["bookstore"],
                "funding": [{"funder": "370000", "share": 65}, {"funder": "370200", "share": 35}]}),
            )
            .await;
        let merchant = merchant(&world, &world.province_admin, 21, "bookstore", "370200").await;
        let (terminal, key) =
            crate::till::raw_terminal(&world, &world.province_admin, &merchant, "terminal", "prop").await;
        let finance = world.app.staff_key(Role::Finance, "370000").await;
        let batches =
            [provincial, co_funded].iter().map(|b| b["id"].as_str().expect("id").to_owned()).collect();
        Season {
            world,
            finance,
            merchant,
            terminal,
            key,
            batches,
            citizens: Vec::new(),
            vouchers: Vec::new(),
            redemptions: Vec::new(),
            settlements: Vec::new(),
            counter: 0,
        }
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    async fn citizen(&mut self, n: u32) -> String {
        if let Some((_, token)) = self.citizens.iter().find(|(c, _)| *c == n) {
            return token.clone();
        }
        let token = self.world.citizen(n).await;
        self.citizens.push((n, token.clone()));
        token
    }

    /// A terminal request signed at the service's (manual) clock.
    async fn signed(&mut self, path: &str, body: Value) -> (u16, Value) {
        let ts = self.world.clock.now().unix_us().div_euclid(1_000_000);
        let nonce = format!("prop-nonce-{:016}", self.next());
        crate::till::signed_to(&self.world, path, self.terminal, &self.key, ts, &nonce, &body).await
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Claim { citizen, batch } => {
                let token = self.citizen(citizen).await;
                let key = format!("claim-{}", self.next());
                let (status, answer) = self.world.claim(&token, &self.batches[batch].clone(), &key).await;
                match status {
                    201 => {
                        self.vouchers.push((token, answer["voucher"]["id"].as_str().expect("id").to_owned()))
                    }
                    409 => {}
                    other => panic!("claim answered {other}: {answer}"),
                }
            }
            Op::Redeem { voucher, amount_fen } => {
                let Some((token, voucher)) = self.vouchers.get(voucher % self.vouchers.len().max(1)).cloned()
                else {
                    return;
                };
                let (status, qr) =
                    self.world.app.post(&format!("/v1/vouchers/{voucher}/qr"), Some(&token), json!({})).await;
                if status >= 400 {
                    return; // not active any more: expired or redeemed
                }
                let amount = format!("{}.{:02}", amount_fen / 100, amount_fen % 100);
                let order = format!("order-{}", self.next());
                let body = json!({"qr": qr["token"], "order_amount": amount, "order_ref": order});
                let (status, answer) = self.signed("/v1/redemptions", body).await;
                match status {
                    201 => self.redemptions.push(answer["redemption_id"].as_str().expect("id").to_owned()),
                    409 | 410 | 422 => {}
                    other => panic!("redemption answered {other}: {answer}"),
                }
            }
            Op::Reverse { redemption } => {
                let Some(id) = self.redemptions.get(redemption).cloned() else { return };
                let (status, answer) =
                    self.signed(&format!("/v1/redemptions/{id}/reversal"), json!({"reason": "refund"})).await;
                assert!(matches!(status, 201 | 409), "reversal answered {status}: {answer}");
            }
            Op::Advance { hours } => {
                self.world.clock.advance_us(hours * 3_600_000_000);
                self.world.app.sweep().await;
            }
            Op::Settle => {
                let body =
                    json!({"season_id": self.world.season_id, "cut_off": self.world.clock.now().to_string()});
                let key = format!("settle-{}", self.next());
                let (status, answer) =
                    self.world.app.post_idem("/v1/settlements", Some(&self.finance), &key, body).await;
                match status {
                    201 => self.settlements.push(answer["settlement_id"].as_str().expect("id").to_owned()),
                    409 => {}
                    other => panic!("settlement answered {other}: {answer}"),
                }
            }
            Op::Pay { settlement } => {
                let Some(id) = self.settlements.get(settlement).cloned() else { return };
                let key = format!("pay-{}", self.next());
                let (status, answer) = self
                    .world
                    .app
                    .post_idem(
                        &format!("/v1/settlements/{id}/paid"),
                        Some(&self.finance),
                        &key,
                        json!({"payout_ref": "BANK"}),
                    )
                    .await;
                assert!(matches!(status, 201 | 409), "payout answered {status}: {answer}");
            }
        }
    }

    async fn reconciles(&self) -> Result<(), TestCaseError> {
        let season_id: SeasonId = self.world.season_id.parse().expect("uuid");
        let season = self.world.app.store().season(season_id).await.expect("season").expect("exists");
        let result = wenhui::app::finance::reconcile(self.world.app.store(), &season, self.world.clock.now())
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let broken: Vec<_> = result.checks.iter().filter(|c| !c.ok).collect();
        prop_assert!(broken.is_empty(), "breaks: {:#?}", broken);
        Ok(())
    }

    async fn close(&mut self) -> Result<(), TestCaseError> {
        self.world.clock.advance_us(11 * 86_400 * 1_000_000);
        let path = format!("/v1/seasons/{}/close", self.world.season_id);
        let (status, closed) = self.world.app.post_idem(&path, Some(&self.finance), "close", json!({})).await;
        prop_assert_eq!(status, 200, "{}", closed);
        prop_assert_eq!(closed["reconciled"].as_bool(), Some(true), "{}", closed);
        let (_, report) = self
            .world
            .app
            .get(&format!("/v1/seasons/{}/report", self.world.season_id), Some(&self.finance))
            .await;
        for funder in report["funders"].as_array().expect("funders") {
            prop_assert_eq!(&funder["reserved"], "0.00");
            prop_assert_eq!(&funder["outstanding"], "0.00");
        }
        let _ = &self.merchant;
        self.reconciles().await
    }
}

fn run_property(backend: Backend) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let exercised = std::cell::Cell::new(0usize);
    let config = ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(ops in proptest::collection::vec(op(), 8..40))| {
        runtime.block_on(async {
            let mut season = Season::new(backend).await;
            for op in &ops {
                season.apply(op).await;
                season.reconciles().await?;
            }
            exercised.set(exercised.get() + season.redemptions.len() + season.settlements.len());
            season.close().await
        })?;
    });
    assert!(exercised.get() > 0, "no case redeemed or settled anything: the strategy exercises nothing");
}

#[test]
fn random_seasons_always_reconcile_sqlite() {
    run_property(Backend::Sqlite);
}

#[test]
fn random_seasons_always_reconcile_postgres() {
    run_property(Backend::Postgres);
}
