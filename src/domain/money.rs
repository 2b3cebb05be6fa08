//! Money: integer fen everywhere inside; yuan decimal strings only at the API edge.
//!
//! Rounding rule (documented in ARCHITECTURE.md): amounts arriving at the API must already be exact
//! to the fen (at most two decimal places); anything finer is refused, never rounded. Rates and
//! splits computed inside the service round *down* to the fen, and any remainder is assigned by the
//! function that does the split, so parts always add up to the whole.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount of money in fen (1 yuan = 100 fen). Never negative; arithmetic is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fen(i64);

/// The largest amount the service accepts anywhere: 10 billion yuan. Far above any real season,
/// far below i64 overflow even when thousands are summed.
pub const MAX_AMOUNT_FEN: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must be a decimal string in yuan, like \"30.00\"")]
    NotDecimal,
    #[error("amount has more than two decimal places")]
    TooPrecise,
    #[error("amount must not be negative")]
    Negative,
    #[error("amount exceeds the maximum of 10000000000.00 yuan")]
    TooLarge,
}

impl Fen {
    pub const ZERO: Fen = Fen(0);

    /// Builds an amount from fen; refuses negative and oversized values.
    pub fn new(fen: i64) -> Result<Fen, MoneyError> {
        if fen < 0 {
            return Err(MoneyError::Negative);
        }
        if fen > MAX_AMOUNT_FEN {
            return Err(MoneyError::TooLarge);
        }
        Ok(Fen(fen))
    }

    /// For values the program itself guarantees are in range (constants, sums of checked values).
    pub fn from_fen_unchecked(fen: i64) -> Fen {
        assert!(fen >= 0, "negative amount {fen} fen");
        Fen(fen)
    }

    pub fn as_fen(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Fen) -> Option<Fen> {
        self.0.checked_add(other.0).map(Fen)
    }

    pub fn checked_sub(self, other: Fen) -> Option<Fen> {
        self.0.checked_sub(other.0).filter(|v| *v >= 0).map(Fen)
    }

    pub fn checked_mul(self, count: i64) -> Option<Fen> {
        self.0.checked_mul(count).filter(|v| *v >= 0).map(Fen)
    }

    /// Parses yuan as written at the API: `"30"`, `"30.5"`, `"30.00"`: ASCII digits, then at
    /// most two decimal places after a point. Nothing else is a yuan amount here: no sign, no
    /// exponent, no digit separators (`1_000`), no bare point (`.5`, `5.`), no white space
    /// around it (`" 100.00"`), and no third place, even a zero (`1.230`): an amount that is not
    /// written exactly is refused, never rounded.
    pub fn parse_yuan(text: &str) -> Result<Fen, MoneyError> {
        if text.len() > 32 {
            return Err(MoneyError::NotDecimal);
        }
        if text.starts_with('-') {
            return Err(MoneyError::Negative);
        }
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        let (whole, places) = text.split_once('.').map_or((text, None), |(w, p)| (w, Some(p)));
        if !digits(whole) || places.is_some_and(|p| !digits(p)) {
            return Err(MoneyError::NotDecimal);
        }
        if places.is_some_and(|p| p.len() > 2) {
            return Err(MoneyError::TooPrecise);
        }
        let decimal = Decimal::from_str(text).map_err(|_| MoneyError::NotDecimal)?;
        Fen::from_yuan_decimal(decimal)
    }

    pub fn from_yuan_decimal(yuan: Decimal) -> Result<Fen, MoneyError> {
        if yuan.is_sign_negative() && !yuan.is_zero() {
            return Err(MoneyError::Negative);
        }
        let normalized = yuan.normalize();
        if normalized.scale() > 2 {
            return Err(MoneyError::TooPrecise);
        }
        let fen = normalized.checked_mul(Decimal::ONE_HUNDRED).ok_or(MoneyError::TooLarge)?;
        let fen: i64 = fen.try_into().map_err(|_| MoneyError::TooLarge)?;
        Fen::new(fen)
    }

    /// The amount in yuan, exact, with two decimal places.
    pub fn to_yuan_decimal(self) -> Decimal {
        Decimal::new(self.0, 2)
    }
}

impl fmt::Display for Fen {
    /// Yuan with exactly two decimals: `30.00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// An amount as it crosses the API: serialized as a yuan decimal string with two places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Yuan(pub Fen);

impl Serialize for Yuan {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Yuan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Fen::parse_yuan(&text).map(Yuan).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Yuan {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("Amount in yuan, a decimal string with at most two places"))
            .examples([serde_json::json!("30.00")])
            .into()
    }
}

impl utoipa::ToSchema for Yuan {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_yuan_strings_exactly() {
        assert_eq!(Fen::parse_yuan("30.00"), Ok(Fen(3000)));
        assert_eq!(Fen::parse_yuan("30"), Ok(Fen(3000)));
        assert_eq!(Fen::parse_yuan("0.01"), Ok(Fen(1)));
        assert_eq!(Fen::parse_yuan("12.5"), Ok(Fen(1250)));
        assert_eq!(Fen::parse_yuan("0"), Ok(Fen(0)));
    }

    #[test]
    fn refuses_bad_amounts() {
        assert_eq!(Fen::parse_yuan("0.001"), Err(MoneyError::TooPrecise));
        assert_eq!(Fen::parse_yuan("-1.00"), Err(MoneyError::Negative));
        assert_eq!(Fen::parse_yuan("abc"), Err(MoneyError::NotDecimal));
        assert_eq!(Fen::parse_yuan(""), Err(MoneyError::NotDecimal));
        assert_eq!(Fen::parse_yuan("1e3"), Err(MoneyError::NotDecimal));
        assert_eq!(Fen::parse_yuan("1.230"), Err(MoneyError::TooPrecise), "a third place, even a zero");
        assert_eq!(Fen::parse_yuan("-0.00"), Err(MoneyError::Negative));
        for not_yuan in [
            "1_000.00", "+5", ".5", "5.", "1.2.3", "１２", "1,000", "0x10", " ", "NaN", " 100.00", "100.00 ",
            "\t1",
        ] {
            assert_eq!(Fen::parse_yuan(not_yuan), Err(MoneyError::NotDecimal), "{not_yuan}");
        }
        assert_eq!(Fen::parse_yuan("10000000000.01"), Err(MoneyError::TooLarge));
        assert_eq!(Fen::parse_yuan("99999999999999999999999"), Err(MoneyError::TooLarge));
    }

    #[test]
    fn displays_two_places() {
        assert_eq!(Fen(3000).to_string(), "30.00");
        assert_eq!(Fen(5).to_string(), "0.05");
        assert_eq!(Fen(123456).to_string(), "1234.56");
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(fen in 0..=MAX_AMOUNT_FEN) {
            let amount = Fen(fen);
            prop_assert_eq!(Fen::parse_yuan(&amount.to_string()), Ok(amount));
        }

        #[test]
        fn parser_never_panics(text in ".{0,40}") {
            let _ = Fen::parse_yuan(&text);
        }
    }
}
