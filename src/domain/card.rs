//! The cultural benefit card (文惠卡): card numbers, bank card numbers, member discount terms,
//! and the pure arithmetic of points (earning, debt repayment, reversal, expiry).
//!
//! # Numbers
//!
//! - A [`CardNumber`] is the service's own: 16 digits, the issuer prefix `9156`, 11 random
//!   digits, and a Luhn check digit, so a mistyped number is caught before any lookup.
//! - A [`BankCardNumber`] is a payment card a citizen proves ownership of when taking the card
//!   `via: "bank_card"`: 13 to 19 digits with a valid Luhn check digit. Only its bank
//!   identification number (the first 6 digits) and its last 4 digits are kept; `Debug` prints
//!   only that masked form, and nothing here serializes the full number.
//!
//! # Points
//!
//! Points are earned at participating merchants on the amount actually paid (after the member
//! discount and any voucher): `points = floor(paid_fen x points_per_yuan / 100)`, that is whole
//! points per whole yuan, rounded down ([`points_for`]). A card that owes points (a reversal found
//! them already spent) pays its debt first from new earnings ([`plan_earning`]); a reversal takes
//! back what it can from the season's balance and records the rest as debt ([`plan_reversal`]).
//! Points earned in a season expire at the end of the second later season of the same province
//! ([`points_expiry`]) unless the province fixed another moment.

use std::fmt;

use crate::domain::error_code::ErrorCode;

use super::accounts;
use super::ledger::{NewEntry, NewPosting, Side};
use super::money::Fen;
use super::season::Season;
use super::time::Timestamp;
use crate::domain::ids::{CardId, CardPaymentId, CitizenId, ReversalId, SeasonId, VoucherId};

/// The service's card-number prefix (an issuer identification of our own).
pub const CARD_PREFIX: &str = "9156";
pub const CARD_NUMBER_LEN: usize = 16;
/// Most points per yuan a season may award.
pub const MAX_POINTS_PER_YUAN: u32 = 100;
/// Most points one exchange may cost (a batch's points price).
pub const MAX_POINTS_PRICE: i64 = 10_000_000;

/// The Luhn (ISO/IEC 7812-1 annex B) check digit for `payload` digits (the number without its
/// check digit). Non-digit bytes give a meaningless but non-panicking result.
pub fn luhn_check_digit(payload: &[u8]) -> u8 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b.wrapping_sub(b'0') % 10);
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    b'0' + ((10 - sum % 10) % 10) as u8
}

/// Whether an all-digit number ends with its correct Luhn check digit.
pub fn luhn_valid(digits: &[u8]) -> bool {
    match digits.split_last() {
        Some((last, payload)) if !payload.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            luhn_check_digit(payload) == *last
        }
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CardNumberError {
    #[error("a bank card number has 13 to 19 digits")]
    BankCardFormat,
    #[error("the bank card number's check digit is wrong (Luhn); the number is mistyped")]
    BankCardCheckDigit,
    #[error("a card number has 16 digits and starts with 9156")]
    CardFormat,
    #[error("the card number's check digit is wrong (Luhn)")]
    CardCheckDigit,
}

impl CardNumberError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CardNumberError::BankCardFormat => ErrorCode::BankCardFormat,
            CardNumberError::BankCardCheckDigit => ErrorCode::BankCardCheckDigit,
            CardNumberError::CardFormat => ErrorCode::CardNumberFormat,
            CardNumberError::CardCheckDigit => ErrorCode::CardNumberCheckDigit,
        }
    }
}

/// A payment card number, checked (Luhn). Holds the digits only for as long as it takes to
/// extract the prefix and the last four; never stored, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct BankCardNumber(String);

impl BankCardNumber {
    /// Spaces and dashes between digit groups are dropped; the error never repeats the input.
    pub fn parse(text: &str) -> Result<BankCardNumber, CardNumberError> {
        let digits: String = text.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if !(13..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardNumberError::BankCardFormat);
        }
        if !luhn_valid(digits.as_bytes()) {
            return Err(CardNumberError::BankCardCheckDigit);
        }
        Ok(BankCardNumber(digits))
    }

    /// The bank identification number: the first six digits.
    pub fn bin(&self) -> &str {
        &self.0[..6]
    }

    pub fn last4(&self) -> &str {
        &self.0[self.0.len() - 4..]
    }

    /// `622202******1234`: what may be shown and stored.
    pub fn masked(&self) -> String {
        mask_bank_card(self.bin(), self.last4())
    }
}

/// The displayable form of a bank card from the parts the service keeps.
pub fn mask_bank_card(bin: &str, last4: &str) -> String {
    format!("{bin}******{last4}")
}

impl fmt::Debug for BankCardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BankCardNumber({})", self.masked())
    }
}

/// The service's card number: `9156` + 11 digits + a Luhn check digit.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CardNumber(String);

impl CardNumber {
    /// A number from 11 digits' worth of randomness (`random` is reduced modulo 10^11).
    pub fn from_random(random: u64) -> CardNumber {
        let payload = format!("{CARD_PREFIX}{:011}", random % 100_000_000_000);
        let check = luhn_check_digit(payload.as_bytes()) as char;
        CardNumber(format!("{payload}{check}"))
    }

    pub fn parse(text: &str) -> Result<CardNumber, CardNumberError> {
        let digits: String = text.chars().filter(|c| *c != ' ').collect();
        if digits.len() != CARD_NUMBER_LEN
            || !digits.starts_with(CARD_PREFIX)
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(CardNumberError::CardFormat);
        }
        if !luhn_valid(digits.as_bytes()) {
            return Err(CardNumberError::CardCheckDigit);
        }
        Ok(CardNumber(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `9156 **** **** 1234`: the form shown to anyone but the holder (a till, staff).
    pub fn masked(&self) -> String {
        format!("{} **** **** {}", &self.0[..4], &self.0[12..])
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber({})", self.masked())
    }
}

impl fmt::Display for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the citizen obtained the card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CardVia {
    Mobile,
    /// The bank card's BIN (6 digits) and last four digits; nothing else of it is kept.
    BankCard {
        bin: String,
        last4: String,
    },
}

impl CardVia {
    pub fn as_str(&self) -> &'static str {
        match self {
            CardVia::Mobile => "mobile",
            CardVia::BankCard { .. } => "bank_card",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardStatus {
    Active,
    Frozen,
}

impl CardStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CardStatus::Active => "active",
            CardStatus::Frozen => "frozen",
        }
    }

    pub fn parse(text: &str) -> Option<CardStatus> {
        match text {
            "active" => Some(CardStatus::Active),
            "frozen" => Some(CardStatus::Frozen),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Card {
    pub id: CardId,
    pub citizen_id: CitizenId,
    pub number: CardNumber,
    pub via: CardVia,
    pub status: CardStatus,
    pub issued_at: Timestamp,
}

/// A merchant's member discount for card holders: `percent`% off the order (0-99), at most `cap`
/// per order, rounded down to the fen. The merchant funds it: no government money moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberTerms {
    pub percent: u32,
    pub cap: Option<Fen>,
}

impl MemberTerms {
    pub fn new(percent: u32, cap: Option<Fen>) -> Result<MemberTerms, String> {
        if percent > 99 {
            return Err("percent must be 0 to 99".into());
        }
        if cap.is_some_and(Fen::is_zero) {
            return Err("cap must be above 0.00 when given".into());
        }
        Ok(MemberTerms { percent, cap })
    }

    /// `floor(order x percent / 100)`, at most `cap`; never more than the order.
    pub fn discount(&self, order: Fen) -> Fen {
        let raw = i128::from(order.as_fen()) * i128::from(self.percent) / 100;
        let capped = match self.cap {
            Some(cap) => raw.min(i128::from(cap.as_fen())),
            None => raw,
        };
        let fen = i64::try_from(capped.clamp(0, i128::from(order.as_fen()))).unwrap_or(0);
        Fen::from_fen_unchecked(fen)
    }
}

/// Points for an amount paid: whole points per whole yuan, rounded down.
/// `points = floor(paid_fen x points_per_yuan / 100)`.
pub fn points_for(paid: Fen, points_per_yuan: u32) -> i64 {
    let points = i128::from(paid.as_fen()) * i128::from(points_per_yuan) / 100;
    i64::try_from(points).unwrap_or(i64::MAX)
}

/// A debt of points a card owes, booked against the season whose reversal created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PointsDebt {
    pub season_id: SeasonId,
    pub points: i64,
}

/// How newly earned points are used: first to repay debts (in the order given: oldest first),
/// the rest kept on the card.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Earning {
    pub repaid: Vec<PointsDebt>,
    pub kept: i64,
}

pub fn plan_earning(points: i64, debts: &[PointsDebt]) -> Earning {
    let mut left = points.max(0);
    let mut repaid = Vec::new();
    for debt in debts {
        if left == 0 {
            break;
        }
        let part = left.min(debt.points.max(0));
        if part > 0 {
            repaid.push(PointsDebt { season_id: debt.season_id, points: part });
            left -= part;
        }
    }
    Earning { repaid, kept: left }
}

/// What a reversal of an earning does to the points kept on the card: takes back what the
/// season's balance still holds, records the rest as debt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Clawback {
    pub taken: i64,
    pub debt: i64,
}

pub fn plan_reversal(kept: i64, balance: i64) -> Clawback {
    let kept = kept.max(0);
    let taken = kept.min(balance.max(0));
    Clawback { taken, debt: kept - taken }
}

/// Spends `price` points from balances ordered oldest first; `None` if they do not reach.
pub fn spend_oldest_first(balances: &[(SeasonId, i64)], price: i64) -> Option<Vec<(SeasonId, i64)>> {
    let mut left = price;
    let mut parts = Vec::new();
    for (season, balance) in balances {
        if left == 0 {
            break;
        }
        let part = left.min((*balance).max(0));
        if part > 0 {
            parts.push((*season, part));
            left -= part;
        }
    }
    (left == 0 && price > 0).then_some(parts)
}

/// When points earned in `season` expire: at `fixed` if the province set a moment; otherwise at
/// the end of the season after next, that is the `ends_at` of the second season of the same
/// province that starts after `season` starts (ordered by start, then id). While fewer than two
/// such seasons exist, the points do not expire.
pub fn points_expiry(season: &Season, fixed: Option<Timestamp>, all: &[Season]) -> Option<Timestamp> {
    if fixed.is_some() {
        return fixed;
    }
    let mut later: Vec<&Season> = all
        .iter()
        .filter(|s| s.province == season.province && s.id != season.id && s.starts_at > season.starts_at)
        .collect();
    later.sort_by_key(|s| (s.starts_at, s.id));
    later.get(1).map(|s| s.ends_at)
}

/// The entry for the points a card payment earned (`None` when it earned none): debts repaid
/// first (booked as earned in the debt's season), the rest onto the card's balance for `season`.
pub fn earning_entry(
    payment: CardPaymentId,
    card: CardId,
    season: SeasonId,
    earning: &Earning,
) -> Option<NewEntry> {
    let mut postings = Vec::new();
    for debt in earning.repaid.iter().filter(|d| d.points > 0) {
        postings.push(posting(accounts::points_earned(debt.season_id), Side::Debit, debt.points));
        postings.push(posting(accounts::card_points_debt(card, debt.season_id), Side::Credit, debt.points));
    }
    if earning.kept > 0 {
        postings.push(posting(accounts::points_earned(season), Side::Debit, earning.kept));
        postings.push(posting(accounts::card_points(card, season), Side::Credit, earning.kept));
    }
    (!postings.is_empty()).then(|| NewEntry::new("card_payment", format!("card_payment:{payment}"), postings))
}

/// The entry taking back what a reversed payment earned: repaid debts come back as debt; the
/// kept points leave the card as far as its balance reaches, the rest becomes debt.
pub fn reversal_entry(
    reversal: ReversalId,
    card: CardId,
    season: SeasonId,
    repaid: &[PointsDebt],
    clawback: Clawback,
) -> Option<NewEntry> {
    let mut postings = Vec::new();
    for debt in repaid.iter().filter(|d| d.points > 0) {
        postings.push(posting(accounts::card_points_debt(card, debt.season_id), Side::Debit, debt.points));
        postings.push(posting(accounts::points_reversed(debt.season_id), Side::Credit, debt.points));
    }
    if clawback.taken > 0 {
        postings.push(posting(accounts::card_points(card, season), Side::Debit, clawback.taken));
    }
    if clawback.debt > 0 {
        postings.push(posting(accounts::card_points_debt(card, season), Side::Debit, clawback.debt));
    }
    let kept = clawback.taken + clawback.debt;
    if kept > 0 {
        postings.push(posting(accounts::points_reversed(season), Side::Credit, kept));
    }
    (!postings.is_empty())
        .then(|| NewEntry::new("card_reversal", format!("card_reversal:{reversal}"), postings))
}

/// Points spent on a voucher, oldest season first: `parts` are (season, points).
pub fn exchange_entry(voucher: VoucherId, card: CardId, parts: &[(SeasonId, i64)]) -> NewEntry {
    let mut postings = Vec::new();
    for (season, points) in parts.iter().filter(|(_, p)| *p > 0) {
        postings.push(posting(accounts::card_points(card, *season), Side::Debit, *points));
        postings.push(posting(accounts::points_exchanged(*season), Side::Credit, *points));
    }
    NewEntry::new("points_exchange", format!("points_exchange:{voucher}"), postings)
}

/// One card's remaining points of `season` expire.
pub fn expiry_entry(season: SeasonId, card: CardId, points: i64) -> NewEntry {
    NewEntry::new(
        "points_expiry",
        format!("points_expiry:{season}:{card}"),
        vec![
            posting(accounts::card_points(card, season), Side::Debit, points),
            posting(accounts::points_expired(season), Side::Credit, points),
        ],
    )
}

fn posting(account: super::ledger::AccountSpec, side: Side, points: i64) -> NewPosting {
    NewPosting { account, side, amount_fen: points }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    #[test]
    fn luhn_known_numbers() {
        // The classic example and well-known test card numbers.
        assert!(luhn_valid(b"79927398713"));
        assert!(!luhn_valid(b"79927398710"));
        assert!(luhn_valid(b"4111111111111111"));
        assert_eq!(luhn_check_digit(b"7992739871"), b'3');
        assert_eq!(luhn_check_digit(b"411111111111111"), b'1');
        assert!(!luhn_valid(b""));
        assert!(!luhn_valid(b"0"));
        assert!(!luhn_valid(b"41111111111111a1"));
    }

    #[test]
    fn bank_card_keeps_only_bin_and_last4() {
        let card = BankCardNumber::parse("4111 1111 1111 1111").expect("valid");
        assert_eq!((card.bin(), card.last4()), ("411111", "1111"));
        assert_eq!(card.masked(), "411111******1111");
        assert_eq!(format!("{card:?}"), "BankCardNumber(411111******1111)");
        assert_eq!(BankCardNumber::parse("4111111111111112"), Err(CardNumberError::BankCardCheckDigit));
        assert_eq!(BankCardNumber::parse("41111"), Err(CardNumberError::BankCardFormat));
        assert_eq!(BankCardNumber::parse("4111x11111111111"), Err(CardNumberError::BankCardFormat));
        assert_eq!(BankCardNumber::parse(""), Err(CardNumberError::BankCardFormat));
    }

    #[test]
    fn card_numbers_carry_a_check_digit() {
        let number = CardNumber::from_random(12_345_678_901);
        assert_eq!(number.as_str(), "9156123456789018");
        assert_eq!(CardNumber::parse(number.as_str()), Ok(number.clone()));
        assert_eq!(number.masked(), "9156 **** **** 9018");
        assert_eq!(CardNumber::parse("9156123456789013"), Err(CardNumberError::CardCheckDigit));
        assert_eq!(CardNumber::parse("1234123456789018"), Err(CardNumberError::CardFormat));
        assert_eq!(CardNumber::from_random(u64::MAX).as_str().len(), CARD_NUMBER_LEN);
    }

    #[test]
    fn member_discount_rounds_down_and_caps() {
        let terms = MemberTerms::new(15, None).expect("terms");
        assert_eq!(terms.discount(Fen::from_fen_unchecked(10_000)).as_fen(), 1_500);
        assert_eq!(terms.discount(Fen::from_fen_unchecked(333)).as_fen(), 49);
        let capped = MemberTerms::new(50, Some(Fen::from_fen_unchecked(2_000))).expect("terms");
        assert_eq!(capped.discount(Fen::from_fen_unchecked(10_000)).as_fen(), 2_000);
        assert!(MemberTerms::new(100, None).is_err());
        assert!(MemberTerms::new(10, Some(Fen::ZERO)).is_err());
    }

    #[test]
    fn points_round_down_to_whole_yuan() {
        assert_eq!(points_for(Fen::from_fen_unchecked(8_999), 1), 89);
        assert_eq!(points_for(Fen::from_fen_unchecked(8_999), 2), 179);
        assert_eq!(points_for(Fen::from_fen_unchecked(99), 1), 0);
        assert_eq!(points_for(Fen::from_fen_unchecked(100), 0), 0);
    }

    #[test]
    fn earning_repays_debt_oldest_first() {
        let (a, b) = (SeasonId::from_uuid(Uuid::from_u128(1)), SeasonId::from_uuid(Uuid::from_u128(2)));
        let debts = [PointsDebt { season_id: a, points: 30 }, PointsDebt { season_id: b, points: 50 }];
        let earning = plan_earning(60, &debts);
        assert_eq!(earning.repaid, vec![debts[0], PointsDebt { season_id: b, points: 30 }]);
        assert_eq!(earning.kept, 0);
        assert_eq!(plan_earning(100, &debts).kept, 20);
        assert_eq!(plan_reversal(80, 30), Clawback { taken: 30, debt: 50 });
        assert_eq!(plan_reversal(80, 100), Clawback { taken: 80, debt: 0 });
        assert_eq!(spend_oldest_first(&[(a, 10), (b, 50)], 40), Some(vec![(a, 10), (b, 30)]));
        assert_eq!(spend_oldest_first(&[(a, 10), (b, 5)], 40), None);
    }

    fn season(n: u128, province: &str, starts_day: i64, days: i64) -> Season {
        let start = Timestamp::from_unix_us(0).plus_seconds(starts_day * 86_400);
        Season {
            id: SeasonId::from_uuid(Uuid::from_u128(n)),
            name: format!("s{n}"),
            province: province.parse().expect("province"),
            starts_at: start,
            ends_at: start.plus_seconds(days * 86_400),
            per_citizen_cap: None,
            per_citizen_monthly_cap: None,
            allow_stacking: false,
            refund_forfeits_voucher: false,
            merchant_redemption_limit: None,
            subsidy_ceilings: Default::default(),
            hold_score_threshold: None,
            closed_at: None,
        }
    }

    #[test]
    fn points_expire_at_the_end_of_the_season_after_next() {
        let s1 = season(1, "370000", 0, 30);
        let s2 = season(2, "370000", 100, 30);
        let other = season(9, "440000", 50, 30);
        assert_eq!(points_expiry(&s1, None, &[s1.clone(), s2.clone(), other.clone()]), None);
        let s3 = season(3, "370000", 200, 30);
        let all = [s3.clone(), s1.clone(), other, s2.clone()];
        assert_eq!(points_expiry(&s1, None, &all), Some(s3.ends_at));
        assert_eq!(points_expiry(&s2, None, &all), None);
        let fixed = Timestamp::from_unix_us(42);
        assert_eq!(points_expiry(&s2, Some(fixed), &all), Some(fixed));
    }

    #[test]
    fn entries_balance_and_name_their_accounts() {
        let (card, s1, s2) = (
            CardId::from_uuid(Uuid::from_u128(5)),
            SeasonId::from_uuid(Uuid::from_u128(1)),
            SeasonId::from_uuid(Uuid::from_u128(2)),
        );
        let earning = plan_earning(100, &[PointsDebt { season_id: s1, points: 30 }]);
        let entry = earning_entry(Uuid::from_u128(8).into(), card, s2, &earning).expect("entry");
        entry.validate().expect("balanced");
        let lines: Vec<(String, Side, i64)> =
            entry.postings.iter().map(|p| (p.account.address.to_string(), p.side, p.amount_fen)).collect();
        assert_eq!(lines[1], (accounts::card_points_debt(card, s1).address.to_string(), Side::Credit, 30));
        assert_eq!(lines[3], (accounts::card_points(card, s2).address.to_string(), Side::Credit, 70));
        let reversal =
            reversal_entry(Uuid::from_u128(9).into(), card, s2, &earning.repaid, plan_reversal(70, 20))
                .expect("entry");
        reversal.validate().expect("balanced");
        assert_eq!(reversal.postings.len(), 5);
        assert!(earning_entry(Uuid::from_u128(8).into(), card, s2, &Earning::default()).is_none());
        exchange_entry(VoucherId::from_uuid(Uuid::from_u128(3)), card, &[(s1, 5), (s2, 7)])
            .validate()
            .expect("balanced");
        expiry_entry(s1, card, 4).validate().expect("balanced");
    }

    proptest! {
        /// Earning then reversing conserves points: what is repaid plus kept is what was
        /// earned, and a reversal's taken plus debt is what was kept, whatever the balances.
        #[test]
        fn points_arithmetic_conserves(points in 0i64..1_000_000,
                                       debts in proptest::collection::vec(0i64..100_000, 0..5),
                                       balance in 0i64..2_000_000,
                                       paid_fen in 0i64..100_000_000, rate in 0u32..=100) {
            let debts: Vec<PointsDebt> = debts.iter().enumerate()
                .map(|(i, p)| PointsDebt { season_id: SeasonId::from_uuid(Uuid::from_u128(i as u128)), points: *p }).collect();
            let earning = plan_earning(points, &debts);
            let repaid: i64 = earning.repaid.iter().map(|d| d.points).sum();
            prop_assert_eq!(repaid + earning.kept, points);
            prop_assert!(earning.kept >= 0);
            for (part, debt) in earning.repaid.iter().zip(&debts) {
                prop_assert!(part.points <= debt.points);
            }
            let total_debt: i64 = debts.iter().map(|d| d.points).sum();
            prop_assert!(earning.kept == 0 || repaid == total_debt, "debt is repaid before keeping");
            let clawback = plan_reversal(earning.kept, balance);
            prop_assert_eq!(clawback.taken + clawback.debt, earning.kept);
            prop_assert!(clawback.taken <= balance && clawback.taken >= 0 && clawback.debt >= 0);
            let earned = points_for(Fen::from_fen_unchecked(paid_fen), rate);
            prop_assert!(earned * 100 <= paid_fen * i64::from(rate));
            prop_assert!((earned + 1) * 100 > paid_fen * i64::from(rate));
        }

        #[test]
        fn card_number_check_digit_catches_any_single_digit_change(random in 0u64..100_000_000_000,
                                                                   index in 4usize..16, delta in 1u8..10) {
            let number = CardNumber::from_random(random);
            let mut digits = number.as_str().as_bytes().to_vec();
            digits[index] = b'0' + (digits[index] - b'0' + delta) % 10;
            let changed = String::from_utf8(digits).expect("ascii");
            prop_assert!(CardNumber::parse(&changed).is_err());
        }

        #[test]
        fn bank_card_parser_never_panics(text in ".{0,40}") {
            let _ = BankCardNumber::parse(&text);
            let _ = CardNumber::parse(&text);
        }
    }
}
