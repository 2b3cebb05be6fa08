//! The chart of accounts: every ledger address the service uses is built here, and nowhere else.
//!
//! | account | side | limit | meaning |
//! |---|---|---|---|
//! | `season:S:funder:F:appropriation` | D | none | what funder F appropriated to season S (the source) |
//! | `season:S:funder:F:pool` | C | >= 0 | F's money in S not yet reserved for a batch |
//! | `season:S:batch:B:funder:F:reserve` | C | >= 0 | reserved for batch B's unclaimed vouchers |
//! | `season:S:batch:B:funder:F:issued` | C | >= 0 | voucher liability: claimed, not yet redeemed or expired |
//! | `season:S:merchant:M:funder:F:payable` | C | >= 0 | redeemed discounts owed to merchant M, not yet settled |
//!
//! A funder's money in a season always satisfies
//! `appropriated = pool + reserved + issued (+ the later stages: payable, settled, paid)`.

use uuid::Uuid;

use super::ledger::{AccountAddress, AccountSpec};
use super::region::RegionCode;

fn seg(id: Uuid) -> String {
    id.hyphenated().to_string()
}

pub fn appropriation(season: Uuid, funder: RegionCode) -> AccountSpec {
    let (s, f) = (seg(season), funder.to_string());
    AccountSpec::debit_unlimited(AccountAddress::from_segments(&[
        "season",
        &s,
        "funder",
        &f,
        "appropriation",
    ]))
}

pub fn pool(season: Uuid, funder: RegionCode) -> AccountSpec {
    let (s, f) = (seg(season), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&["season", &s, "funder", &f, "pool"]))
}

pub fn reserve(season: Uuid, batch: Uuid, funder: RegionCode) -> AccountSpec {
    let (s, b, f) = (seg(season), seg(batch), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "season", &s, "batch", &b, "funder", &f, "reserve",
    ]))
}

pub fn issued(season: Uuid, batch: Uuid, funder: RegionCode) -> AccountSpec {
    let (s, b, f) = (seg(season), seg(batch), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "season", &s, "batch", &b, "funder", &f, "issued",
    ]))
}

/// A SQL LIKE pattern matching one kind of per-batch account of a funder across a season's batches.
pub fn per_batch_pattern(season: Uuid, funder: RegionCode, kind: &str) -> String {
    format!("season:{}:batch:%:funder:{}:{}", seg(season), funder, kind)
}

pub fn payable(season: Uuid, merchant: Uuid, funder: RegionCode) -> AccountSpec {
    let (s, m, f) = (seg(season), seg(merchant), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "season", &s, "merchant", &m, "funder", &f, "payable",
    ]))
}

/// A SQL LIKE pattern matching every merchant's payable account of a funder in a season.
pub fn payable_pattern(season: Uuid, funder: RegionCode) -> String {
    format!("season:{}:merchant:%:funder:{}:payable", seg(season), funder)
}
