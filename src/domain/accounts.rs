//! The chart of accounts: every ledger address the service uses is built here, and nowhere else.
//!
//! | account | side | limit | meaning |
//! |---|---|---|---|
//! | `season:S:funder:F:appropriation` | D | none | what funder F appropriated to season S (the source) |
//! | `season:S:funder:F:pool` | C | >= 0 | F's money in S not yet reserved for a batch |
//! | `season:S:batch:B:funder:F:reserve` | C | >= 0 | reserved for batch B's unclaimed vouchers |
//! | `season:S:batch:B:funder:F:issued` | C | >= 0 | voucher liability: claimed, not yet redeemed or expired |
//! | `season:S:merchant:M:funder:F:payable` | C | >= 0 | redeemed discounts owed to merchant M, not yet settled |
//! | `season:S:merchant:M:funder:F:held` | C | >= 0 | settled while the merchant is on hold: not in a payout file until released |
//! | `season:S:merchant:M:funder:F:settled` | C | >= 0 | settled (in a payout file), not yet paid by the bank |
//! | `season:S:merchant:M:funder:F:paid` | C | >= 0 | paid out to merchant M (the end of the money's road) |
//!
//! A funder's money in a season always satisfies
//! `appropriated = pool + reserved + issued + payable + held + settled + paid` (balances), which
//! `wenhui reconcile` checks per funder together with the business rows behind each term.
//!
//! # Points (the benefit card)
//!
//! Points are a liability of the province that runs the season, kept in accounts of their own
//! whose unit is **one point, not one fen** (the ledger's amount column is `amount_fen`; for these
//! accounts it counts points). An entry never mixes fen accounts and points accounts: every
//! points entry (`card_payment`, `card_reversal`, `points_exchange`, `points_expiry`) touches only
//! the accounts below, and an exchange writes its voucher's fen `claim` entry separately, in the
//! same transaction.
//!
//! | account | side | limit | meaning |
//! |---|---|---|---|
//! | `points:season:S:earned` | D | none | points the province awarded in season S (the source) |
//! | `card:C:season:S:points` | C | >= 0 | card C's points earned in S, not yet spent, expired or taken back |
//! | `card:C:season:S:points_debt` | D | >= 0 | points card C owes: a reversal of an S payment found them spent |
//! | `points:season:S:exchanged` | C | >= 0 | S points spent on vouchers |
//! | `points:season:S:expired` | C | >= 0 | S points that expired |
//! | `points:season:S:reversed` | C | >= 0 | S points taken back by reversals (from the card or as debt) |
//!
//! New points repay a card's debts first; the repaid part is booked as earned in the season the
//! debt belongs to, so every season's points close on their own:
//! `earned - exchanged - expired - reversed = outstanding - debt`, where `outstanding` is the sum
//! of the cards' `points` accounts and `debt` the sum of their `points_debt` accounts in S.

use uuid::Uuid;

use super::ledger::{AccountAddress, AccountSpec};
use super::region::RegionCode;
use crate::domain::ids::{BatchId, CardId, MerchantId, SeasonId};

fn seg(id: impl Into<Uuid>) -> String {
    id.into().hyphenated().to_string()
}

pub fn appropriation(season: SeasonId, funder: RegionCode) -> AccountSpec {
    let (s, f) = (seg(season), funder.to_string());
    AccountSpec::debit_unlimited(AccountAddress::from_segments(&[
        "season",
        &s,
        "funder",
        &f,
        "appropriation",
    ]))
}

pub fn pool(season: SeasonId, funder: RegionCode) -> AccountSpec {
    let (s, f) = (seg(season), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&["season", &s, "funder", &f, "pool"]))
}

pub fn reserve(season: SeasonId, batch: BatchId, funder: RegionCode) -> AccountSpec {
    let (s, b, f) = (seg(season), seg(batch), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "season", &s, "batch", &b, "funder", &f, "reserve",
    ]))
}

pub fn issued(season: SeasonId, batch: BatchId, funder: RegionCode) -> AccountSpec {
    let (s, b, f) = (seg(season), seg(batch), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "season", &s, "batch", &b, "funder", &f, "issued",
    ]))
}

pub fn payable(season: SeasonId, merchant: MerchantId, funder: RegionCode) -> AccountSpec {
    let (s, m, f) = (seg(season), seg(merchant), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "season", &s, "merchant", &m, "funder", &f, "payable",
    ]))
}

/// A held merchant's settled money, waiting for finance to release or reject it
/// (docs/settlement-holds.md).
pub fn held(season: SeasonId, merchant: MerchantId, funder: RegionCode) -> AccountSpec {
    let (s, m, f) = (seg(season), seg(merchant), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "season", &s, "merchant", &m, "funder", &f, "held",
    ]))
}

pub fn settled(season: SeasonId, merchant: MerchantId, funder: RegionCode) -> AccountSpec {
    let (s, m, f) = (seg(season), seg(merchant), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "season", &s, "merchant", &m, "funder", &f, "settled",
    ]))
}

pub fn paid(season: SeasonId, merchant: MerchantId, funder: RegionCode) -> AccountSpec {
    let (s, m, f) = (seg(season), seg(merchant), funder.to_string());
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "season", &s, "merchant", &m, "funder", &f, "paid",
    ]))
}

/// A SQL LIKE pattern matching every account of a season.
pub fn season_pattern(season: SeasonId) -> String {
    format!("season:{}:%", seg(season))
}

/// What an account of a season is, parsed back from its address (the inverse of the builders above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeasonAccount {
    Appropriation { funder: RegionCode },
    Pool { funder: RegionCode },
    Reserve { batch: BatchId, funder: RegionCode },
    Issued { batch: BatchId, funder: RegionCode },
    Payable { merchant: MerchantId, funder: RegionCode },
    Held { merchant: MerchantId, funder: RegionCode },
    Settled { merchant: MerchantId, funder: RegionCode },
    Paid { merchant: MerchantId, funder: RegionCode },
}

impl SeasonAccount {
    /// Parses `address` if it is one of `season`'s accounts in this chart.
    pub fn parse(season: SeasonId, address: &str) -> Option<SeasonAccount> {
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
                    "held" => Some(SeasonAccount::Held { merchant, funder }),
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
            | SeasonAccount::Held { funder, .. }
            | SeasonAccount::Settled { funder, .. }
            | SeasonAccount::Paid { funder, .. } => funder,
        }
    }
}

pub fn points_earned(season: SeasonId) -> AccountSpec {
    AccountSpec::debit_unlimited(AccountAddress::from_segments(&["points", "season", &seg(season), "earned"]))
}

pub fn points_exchanged(season: SeasonId) -> AccountSpec {
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "points",
        "season",
        &seg(season),
        "exchanged",
    ]))
}

pub fn points_expired(season: SeasonId) -> AccountSpec {
    AccountSpec::credit_limited(AccountAddress::from_segments(&["points", "season", &seg(season), "expired"]))
}

pub fn points_reversed(season: SeasonId) -> AccountSpec {
    AccountSpec::credit_limited(AccountAddress::from_segments(&[
        "points",
        "season",
        &seg(season),
        "reversed",
    ]))
}

pub fn card_points(card: CardId, season: SeasonId) -> AccountSpec {
    let (c, s) = (seg(card), seg(season));
    AccountSpec::credit_limited(AccountAddress::from_segments(&["card", &c, "season", &s, "points"]))
}

pub fn card_points_debt(card: CardId, season: SeasonId) -> AccountSpec {
    let (c, s) = (seg(card), seg(season));
    AccountSpec::debit_limited(AccountAddress::from_segments(&["card", &c, "season", &s, "points_debt"]))
}

/// A SQL LIKE pattern for one card's points accounts (`kind`: `points` or `points_debt`) across
/// seasons.
pub fn card_pattern(card: CardId, kind: &str) -> String {
    format!("card:{}:season:%:{kind}", seg(card))
}

/// A SQL LIKE pattern for every card's points accounts (`kind`: `points` or `points_debt`) of
/// one season.
pub fn season_cards_pattern(season: SeasonId, kind: &str) -> String {
    format!("card:%:season:{}:{kind}", seg(season))
}

/// The card and season a card points account (`card:C:season:S:points` or `..:points_debt`)
/// belongs to.
pub fn parse_card_account(address: &str) -> Option<(CardId, SeasonId, &str)> {
    let mut parts = address.split(':');
    let (Some("card"), Some(card), Some("season"), Some(season), Some(kind), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some((card.parse().ok()?, season.parse().ok()?, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_season_account_parses_back() {
        let (s, b, m) = (SeasonId::new_v7(), BatchId::new_v7(), MerchantId::new_v7());
        let f: RegionCode = "440000".parse().expect("region");
        let cases = [
            (appropriation(s, f), SeasonAccount::Appropriation { funder: f }),
            (pool(s, f), SeasonAccount::Pool { funder: f }),
            (reserve(s, b, f), SeasonAccount::Reserve { batch: b, funder: f }),
            (issued(s, b, f), SeasonAccount::Issued { batch: b, funder: f }),
            (payable(s, m, f), SeasonAccount::Payable { merchant: m, funder: f }),
            (held(s, m, f), SeasonAccount::Held { merchant: m, funder: f }),
            (settled(s, m, f), SeasonAccount::Settled { merchant: m, funder: f }),
            (paid(s, m, f), SeasonAccount::Paid { merchant: m, funder: f }),
        ];
        for (spec, expected) in cases {
            assert_eq!(SeasonAccount::parse(s, spec.address.as_str()), Some(expected));
            assert_eq!(SeasonAccount::parse(SeasonId::new_v7(), spec.address.as_str()), None);
        }
    }

    #[test]
    fn card_accounts_parse_back() {
        let (card, season) = (CardId::from_uuid(Uuid::from_u128(7)), SeasonId::from_uuid(Uuid::from_u128(9)));
        let address = card_points(card, season).address;
        assert_eq!(parse_card_account(address.as_str()), Some((card, season, "points")));
        let debt = card_points_debt(card, season).address;
        assert_eq!(parse_card_account(debt.as_str()), Some((card, season, "points_debt")));
        assert_eq!(parse_card_account(points_earned(season).address.as_str()), None);
        assert_eq!(card_pattern(card, "points"), format!("card:{card}:season:%:points"));
    }
}
