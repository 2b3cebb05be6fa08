//! Per-citizen request rates on the citizen paths a bot would hammer: claims and QR codes.
//!
//! The per-person limits already make a second claim worthless, but each attempt still costs
//! the claim writer a decision and a stored answer, and each QR code an Ed25519 signature: one
//! real-name account sending hundreds a second would crowd out everyone else in a rush. So
//! each citizen gets a bucket per path (GCRA, `governor`), in memory and per process, keyed by
//! the authenticated citizen (never by IP: mobile carriers put many phones behind one
//! address). A refusal is 429 `rate_limited` with `Retry-After`, checked before anything is
//! read or written, so the request may simply be sent again later with the same key.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use super::error::ApiError;

/// A phone in a rush taps "claim" again and again and the app retries; 20 at once, then one a
/// second, is more than a person does and far less than a bot.
pub const CLAIM_BURST: u32 = 20;
pub const CLAIMS_PER_MINUTE: u32 = 60;
/// A phone refreshes its QR code every minute or so (a token lives 60 to 120 s); 20 at once,
/// then one every two seconds, covers reopening the page and several vouchers.
pub const QR_BURST: u32 = 20;
pub const QR_CODES_PER_MINUTE: u32 = 30;

pub struct CitizenRates {
    claims: DefaultKeyedRateLimiter<Uuid>,
    qr_codes: DefaultKeyedRateLimiter<Uuid>,
    clock: DefaultClock,
}

impl Default for CitizenRates {
    fn default() -> Self {
        CitizenRates {
            claims: RateLimiter::keyed(quota(CLAIMS_PER_MINUTE, CLAIM_BURST)),
            qr_codes: RateLimiter::keyed(quota(QR_CODES_PER_MINUTE, QR_BURST)),
            clock: DefaultClock::default(),
        }
    }
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(nonzero(per_minute)).allow_burst(nonzero(burst))
}

impl CitizenRates {
    /// One claim attempt by `citizen`, or 429 `rate_limited`.
    pub fn claim(&self, citizen: Uuid) -> Result<(), ApiError> {
        self.check(&self.claims, citizen)
    }

    /// One QR code (voucher or card) for `citizen`, or 429 `rate_limited`.
    pub fn qr_code(&self, citizen: Uuid) -> Result<(), ApiError> {
        self.check(&self.qr_codes, citizen)
    }

    fn check(&self, limiter: &DefaultKeyedRateLimiter<Uuid>, citizen: Uuid) -> Result<(), ApiError> {
        limiter.check_key(&citizen).map_err(|not_until| {
            metrics::counter!("wenhui_rate_limited_total").increment(1);
            ApiError::rate_limited(not_until.wait_time_from(self.clock.now()))
        })
    }

    /// Forgets the citizens whose buckets are full again (a bucket refills within a minute), so
    /// memory follows the citizens active now, not everyone who ever claimed.
    pub fn forget_idle(&self) {
        for limiter in [&self.claims, &self.qr_codes] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Citizens with a bucket not yet full, on either path.
    pub fn tracked(&self) -> usize {
        self.claims.len() + self.qr_codes.len()
    }
}

/// How often `forget_idle` runs.
pub const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_citizen_gets_the_burst_then_waits_and_others_are_unaffected() {
        let rates = CitizenRates::default();
        let (one, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for _ in 0..CLAIM_BURST {
            assert_eq!(rates.claim(one), Ok(()));
        }
        let refused = rates.claim(one).expect_err("past the burst");
        assert_eq!((refused.status.as_u16(), refused.code), (429, "rate_limited"));
        assert!(refused.retry_after_s.is_some_and(|s| (1..=2).contains(&s)), "{refused:?}");
        assert_eq!(rates.claim(other), Ok(()), "another citizen has a bucket of its own");
        assert_eq!(rates.qr_code(one), Ok(()), "and so has another path");
        rates.forget_idle();
        assert!(rates.tracked() >= 1, "a bucket in use is kept");
    }
}
