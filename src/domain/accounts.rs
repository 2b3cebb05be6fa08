//! The chart of accounts: every ledger address the service uses is built here, and nowhere else.
//!
//! | account | side | limit | meaning |
//! |---|---|---|---|
//! | `season:S:funder:F:appropriation` | D | none | what funder F appropriated to season S (the source) |
//! | `season:S:funder:F:pool` | C | >= 0 | F's money in S not yet reserved for a batch |
//! | `season:S:batch:B:funder:F:reserve` | C | >= 0 | reserved for batch B's unclaimed vouchers |
//! | `season:S:batch:B:funder:F:issued` | C | >= 0 | voucher liability: claimed, not yet redeemed or expired |
//! | `season:S:merchant:M:funder:F:payable` | C | >= 0 | redeemed discounts owed to merchant M, not yet settled |
//! | `season:S:merchant:M:funder:F:settled` | C | >= 0 | settled (in a payout file), not yet paid by the bank |
//! | `season:S:merchant:M:funder:F:paid` | C | >= 0 | paid out to merchant M (the end of the money's road) |
//!
//! A funder's money in a season always satisfies
//! `appropriated = pool + reserved + issued + payable + settled + paid` (balances), which
//! `wenhui reconcile` checks per funder together with the business rows behind each term.

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

pub fn settled(season: Uuid, merchant: Uuid, funder: RegionCode) -> AccountSpec {
    let (s, m, f) = (seg(season), seg(merchant), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "season", &s, "merchant", &m, "funder", &f, "settled",
    ]))
}

pub fn paid(season: Uuid, merchant: Uuid, funder: RegionCode) -> AccountSpec {
    let (s, m, f) = (seg(season), seg(merchant), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "season", &s, "merchant", &m, "funder", &f, "paid",
    ]))
}

/// A SQL LIKE pattern matching every account of a season.
pub fn season_pattern(season: Uuid) -> String {
    format!("season:{}:%", seg(season))
}

/// What an account of a season is, parsed back from its address (the inverse of the builders above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeasonAccount {
    Appropriation { funder: RegionCode },
    Pool { funder: RegionCode },
    Reserve { batch: Uuid, funder: RegionCode },
    Issued { batch: Uuid, funder: RegionCode },
    Payable { merchant: Uuid, funder: RegionCode },
    Settled { merchant: Uuid, funder: RegionCode },
    Paid { merchant: Uuid, funder: RegionCode },
}

impl SeasonAccount {
    /// Parses `address` if it is one of `season`'s accounts in this chart.
    pub fn parse(season: Uuid, address: &str) -> Option<SeasonAccount> {
        let parts: Vec<&str> = address.split(':').collect();
        if parts.first() != Some(&"season") || parts.get(1) != Some(&seg(season).as_str()) {
            return None;
        }
        let region = |text: &str| text.parse::<RegionCode>().ok();
        match parts.as_slice() {
            [_, _, "funder", f, "appropriation"] => Some(SeasonAccount::Appropriation { funder: region(f)? }),
            [_, _, "funder", f, "pool"] => Some(SeasonAccount::Pool { funder: region(f)? }),
            [_, _, "batch", b, "funder", f, kind] => {
                let (batch, funder) = (b.parse().ok()?, region(f)?);
                match *kind {
                    "reserve" => Some(SeasonAccount::Reserve { batch, funder }),
                    "issued" => Some(SeasonAccount::Issued { batch, funder }),
                    _ => None,
                }
            }
            [_, _, "merchant", m, "funder", f, kind] => {
                let (merchant, funder) = (m.parse().ok()?, region(f)?);
                match *kind {
                    "payable" => Some(SeasonAccount::Payable { merchant, funder }),
                    "settled" => Some(SeasonAccount::Settled { merchant, funder }),
                    "paid" => Some(SeasonAccount::Paid { merchant, funder }),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    pub fn funder(self) -> RegionCode {
        match self {
            SeasonAccount::Appropriation { funder }
            | SeasonAccount::Pool { funder }
            | SeasonAccount::Reserve { funder, .. }
            | SeasonAccount::Issued { funder, .. }
            | SeasonAccount::Payable { funder, .. }
            | SeasonAccount::Settled { funder, .. }
            | SeasonAccount::Paid { funder, .. } => funder,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_season_account_parses_back() {
        let (s, b, m) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let f: RegionCode = "440000".parse().expect("region");
        let cases = [
            (appropriation(s, f), SeasonAccount::Appropriation { funder: f }),
            (pool(s, f), SeasonAccount::Pool { funder: f }),
            (reserve(s, b, f), SeasonAccount::Reserve { batch: b, funder: f }),
            (issued(s, b, f), SeasonAccount::Issued { batch: b, funder: f }),
            (payable(s, m, f), SeasonAccount::Payable { merchant: m, funder: f }),
            (settled(s, m, f), SeasonAccount::Settled { merchant: m, funder: f }),
            (paid(s, m, f), SeasonAccount::Paid { merchant: m, funder: f }),
        ];
        for (spec, expected) in cases {
            assert_eq!(SeasonAccount::parse(s, spec.address.as_str()), Some(expected));
            assert_eq!(SeasonAccount::parse(Uuid::now_v7(), spec.address.as_str()), None);
        }
    }
}
