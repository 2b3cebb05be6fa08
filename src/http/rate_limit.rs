//! Per-citizen request rates on the citizen paths a bot would hammer: claims and QR codes;
//! and per-identity rates on registration and sign-in, which come before any account.
//!
//! The per-person limits already make a second claim worthless, but each attempt still costs
//! the claim writer a decision and a stored answer, and each QR code an Ed25519 signature: one
//! real-name account sending hundreds a second would crowd out everyone else in a rush. So
//! each citizen gets a bucket per path (GCRA, `governor`), in memory and per process, keyed by
//! the authenticated citizen (never by IP: mobile carriers put many phones behind one
//! address). A refusal is 429 `rate_limited` with `Retry-After`, checked before anything is
//! read or written, so the request may simply be sent again later with the same key.
//!
//! Registration and sign-in have no account to key by yet. Each asks an outside service (the
//! real-name register, the SMS code) about an ID number and a phone, and sign-in is where a
//! one-time code would be guessed. So each attempt counts against both the ID number and the
//! phone, keyed by their keyed hashes (never the numbers themselves).
//!
//! With `--rate-limit-store redis://...` the same buckets live in Redis (`store.rs`) and hold
//! across every node; the per-process buckets then decide only while Redis is down or slow.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::domain::ids::CitizenId;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;

pub mod store;

pub use store::{RateStore, StoreConfig};
use store::{StoreQuota, Verdict};

/// A phone in a rush taps "claim" again and again and the app retries; 20 at once, then one a
/// second, is more than a person does and far less than a bot.
pub const CLAIM_BURST: u32 = 20;
pub const CLAIMS_PER_MINUTE: u32 = 60;
/// A phone refreshes its QR code every minute or so (a token lives 60 to 120 s); 20 at once,
/// then one every two seconds, covers reopening the page and several vouchers.
pub const QR_BURST: u32 = 20;
pub const QR_CODES_PER_MINUTE: u32 = 30;
/// Registering or signing in with one ID number or one phone: 5 at once (a mistyped code or
/// two), then one a minute. A six-digit code living five minutes then falls to a guesser about
/// once in 100,000 codes.
pub const IDENTITY_BURST: u32 = 5;
pub const IDENTITY_ATTEMPTS_PER_MINUTE: u32 = 1;

/// The keyed hash of an ID number or a phone: what identity attempts are counted by.
pub type IdentityKey = [u8; 32];

/// The buckets of one path: a burst at once, then `per_minute` evenly spread.
#[derive(Clone, Copy, Debug)]
struct Rate {
    /// The path's name in the store's keys.
    bucket: &'static str,
    per_minute: u32,
    burst: u32,
}

const CLAIMS: Rate = Rate { bucket: "claims", per_minute: CLAIMS_PER_MINUTE, burst: CLAIM_BURST };
const QR_CODES: Rate = Rate { bucket: "qr", per_minute: QR_CODES_PER_MINUTE, burst: QR_BURST };
const IDENTITIES: Rate =
    Rate { bucket: "identity", per_minute: IDENTITY_ATTEMPTS_PER_MINUTE, burst: IDENTITY_BURST };

impl Rate {
    fn quota(self) -> Quota {
        let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Quota::per_minute(nonzero(self.per_minute)).allow_burst(nonzero(self.burst))
    }

    fn store_quota(self) -> StoreQuota {
        StoreQuota { interval_ms: 60_000 / u64::from(self.per_minute.max(1)), burst: self.burst.max(1) }
    }
}

pub struct CitizenRates {
    claims: DefaultKeyedRateLimiter<CitizenId>,
    qr_codes: DefaultKeyedRateLimiter<CitizenId>,
    identities: DefaultKeyedRateLimiter<IdentityKey>,
    clock: DefaultClock,
    /// The buckets shared by every node, if configured; the ones above decide while it fails.
    store: Option<RateStore>,
}

impl Default for CitizenRates {
    fn default() -> Self {
        CitizenRates::new(None)
    }
}

impl CitizenRates {
    pub fn new(store: Option<RateStore>) -> CitizenRates {
        CitizenRates {
            claims: RateLimiter::keyed(CLAIMS.quota()),
            qr_codes: RateLimiter::keyed(QR_CODES.quota()),
            identities: RateLimiter::keyed(IDENTITIES.quota()),
            clock: DefaultClock::default(),
            store,
        }
    }

    pub fn store(&self) -> Option<&RateStore> {
        self.store.as_ref()
    }

    /// One claim attempt by `citizen`, or 429 `rate_limited`.
    pub async fn claim(&self, citizen: CitizenId) -> Result<(), ApiError> {
        let shared = self.shared(CLAIMS, &[citizen.to_string()]).await;
        shared.unwrap_or_else(|| self.local(&self.claims, citizen)).map_err(refused)
    }

    /// One QR code (voucher or card) for `citizen`, or 429 `rate_limited`.
    pub async fn qr_code(&self, citizen: CitizenId) -> Result<(), ApiError> {
        let shared = self.shared(QR_CODES, &[citizen.to_string()]).await;
        shared.unwrap_or_else(|| self.local(&self.qr_codes, citizen)).map_err(refused)
    }

    /// One registration or sign-in naming these identities (the ID number's and the phone's
    /// keyed hashes), or 429 `rate_limited` if any of them is past its rate.
    pub async fn identity_attempt(&self, keys: &[IdentityKey]) -> Result<(), ApiError> {
        let hex_keys: Vec<String> = keys.iter().map(hex::encode).collect();
        let shared = self.shared(IDENTITIES, &hex_keys).await;
        let verdict =
            shared.unwrap_or_else(|| keys.iter().try_for_each(|key| self.local(&self.identities, *key)));
        verdict.map_err(refused)
    }

    /// The shared buckets' verdict, or `None` without a store or while it fails.
    async fn shared(&self, rate: Rate, keys: &[String]) -> Option<Verdict> {
        self.store.as_ref()?.check(rate.bucket, rate.store_quota(), keys).await
    }

    fn local<K>(&self, limiter: &DefaultKeyedRateLimiter<K>, key: K) -> Verdict
    where
        K: std::hash::Hash + Eq + Clone,
    {
        limiter.check_key(&key).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets the citizens whose buckets are full again (a bucket refills within a minute), so
    /// memory follows the citizens active now, not everyone who ever claimed.
    pub fn forget_idle(&self) {
        for limiter in [&self.claims, &self.qr_codes] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.identities.retain_recent();
        self.identities.shrink_to_fit();
    }

    /// Citizens and identities with a bucket not yet full, on any path (in this process).
    pub fn tracked(&self) -> usize {
        self.claims.len() + self.qr_codes.len() + self.identities.len()
    }
}

/// 429 `rate_limited`, counted.
fn refused(wait: Duration) -> ApiError {
    metrics::counter!(crate::telemetry::RATE_LIMITED).increment(1);
    ApiError::rate_limited(wait)
}

/// How often `forget_idle` runs.
pub const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::error_code::ErrorCode;
    use uuid::Uuid;

    #[tokio::test]
    async fn a_citizen_gets_the_burst_then_waits_and_others_are_unaffected() {
        let rates = CitizenRates::default();
        let (one, other) =
            (CitizenId::from_uuid(Uuid::from_u128(1)), CitizenId::from_uuid(Uuid::from_u128(2)));
        for _ in 0..CLAIM_BURST {
            assert_eq!(rates.claim(one).await, Ok(()));
        }
        let refused = rates.claim(one).await.expect_err("past the burst");
        assert_eq!((refused.status.as_u16(), refused.code), (429, ErrorCode::RateLimited));
        assert!(refused.retry_after_s.is_some_and(|s| (1..=2).contains(&s)), "{refused:?}");
        assert_eq!(rates.claim(other).await, Ok(()), "another citizen has a bucket of its own");
        assert_eq!(rates.qr_code(one).await, Ok(()), "and so has another path");
        rates.forget_idle();
        assert!(rates.tracked() >= 1, "a bucket in use is kept");
    }

    #[tokio::test]
    async fn an_identity_is_limited_by_its_id_number_or_its_phone() {
        let rates = CitizenRates::default();
        let (id, phone, other_phone, other_id) = ([1u8; 32], [2u8; 32], [3u8; 32], [4u8; 32]);
        for _ in 0..IDENTITY_BURST {
            assert_eq!(rates.identity_attempt(&[id, phone]).await, Ok(()));
        }
        let refused = rates.identity_attempt(&[id, phone]).await.expect_err("past the burst");
        assert_eq!((refused.status.as_u16(), refused.code), (429, ErrorCode::RateLimited));
        assert!(refused.retry_after_s.is_some_and(|s| (1..=60).contains(&s)), "{refused:?}");
        assert!(
            rates.identity_attempt(&[id, other_phone]).await.is_err(),
            "the ID number is limited with any phone"
        );
        assert!(
            rates.identity_attempt(&[other_id, phone]).await.is_err(),
            "and the phone with any ID number"
        );
        assert_eq!(rates.identity_attempt(&[other_id, [5u8; 32]]).await, Ok(()));
    }

    #[tokio::test]
    async fn with_the_store_down_the_process_limits_by_itself() {
        let config = StoreConfig::new("redis://127.0.0.1:1".into(), "wenhui-test".into());
        let rates = CitizenRates::new(Some(RateStore::open(&config).expect("opens lazily")));
        let citizen = CitizenId::from_uuid(Uuid::from_u128(1));
        for _ in 0..CLAIM_BURST {
            assert_eq!(rates.claim(citizen).await, Ok(()));
        }
        let refused = rates.claim(citizen).await.expect_err("past the burst, per process");
        assert_eq!((refused.status.as_u16(), refused.code), (429, ErrorCode::RateLimited));
    }
}
