//! Merchants: the unified social credit code (GB 32100), categories, eligibility, and statuses.

use std::fmt;

use uuid::Uuid;

use super::region::{RegionCode, RegionLevel};
use super::season::{Batch, Category};

/// The 31 characters of GB 32100 codes (no I, O, S, V, Z), in value order.
const CHARSET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// An 18-character unified social credit code with a valid check character.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CreditCode(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditCodeError {
    #[error("a unified social credit code is 18 characters")]
    Length,
    #[error("a unified social credit code uses only 0-9 and A-Y without I, O, S, V, Z")]
    Charset,
    #[error("the check character of the unified social credit code is wrong")]
    CheckCharacter,
}

impl CreditCodeError {
    pub fn code(&self) -> &'static str {
        match self {
            CreditCodeError::CheckCharacter => "credit_code_check",
            _ => "credit_code_format",
        }
    }
}

fn value_of(byte: u8) -> Option<u32> {
    CHARSET.iter().position(|c| *c == byte).map(|p| p as u32)
}

/// The check character for the first 17 characters (GB 32100-2015, section 5).
pub fn credit_check_char(first17: &[u8]) -> Option<char> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (byte, weight) in first17.iter().zip(WEIGHTS) {
        sum += value_of(*byte)? * weight;
    }
    let check = (31 - sum % 31) % 31;
    Some(CHARSET[check as usize] as char)
}

impl CreditCode {
    pub fn parse(text: &str) -> Result<CreditCode, CreditCodeError> {
        let code = text.trim().to_ascii_uppercase();
        if code.len() != 18 {
            return Err(CreditCodeError::Length);
        }
        let bytes = code.as_bytes();
        if !bytes.iter().all(|b| value_of(*b).is_some()) {
            return Err(CreditCodeError::Charset);
        }
        if credit_check_char(&bytes[..17]) != Some(bytes[17] as char) {
            return Err(CreditCodeError::CheckCharacter);
        }
        Ok(CreditCode(code))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CreditCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CreditCode({})", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MerchantStatus {
    Active,
    Suspended,
}

impl MerchantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MerchantStatus::Active => "active",
            MerchantStatus::Suspended => "suspended",
        }
    }

    pub fn parse(text: &str) -> Option<MerchantStatus> {
        match text {
            "active" => Some(MerchantStatus::Active),
            "suspended" => Some(MerchantStatus::Suspended),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementAccount {
    pub bank: String,
    pub account_no: String,
    pub account_name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merchant {
    pub id: Uuid,
    pub name: String,
    pub credit_code: CreditCode,
    pub category: Category,
    pub city: RegionCode,
    pub settlement: SettlementAccount,
    pub status: MerchantStatus,
}

impl Merchant {
    /// City vouchers only at that city's merchants; provincial ones anywhere in the province;
    /// and only in the batch's categories.
    pub fn eligible_for(&self, batch: &Batch) -> Result<(), String> {
        if !batch.categories.contains(&self.category) {
            return Err(format!("{} vouchers are not accepted at a {}", batch.name, self.category));
        }
        let region_ok = match batch.issuer.level() {
            RegionLevel::Province => batch.issuer.contains(self.city),
            _ => batch.issuer == self.city,
        };
        if !region_ok {
            return Err(format!("vouchers issued by {} are not accepted in {}", batch.issuer, self.city));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_codes() {
        // Published codes: the State Administration for Market Regulation's own, and a computed one.
        let computed: String = format!("91370200MA3C{}", "0000A");
        let check = credit_check_char(computed.as_bytes()).expect("valid chars");
        let full = format!("{computed}{check}");
        assert!(CreditCode::parse(&full).is_ok());
        assert!(CreditCode::parse("11100000000013127D").is_ok(), "SAMR's code");
        assert_eq!(
            CreditCode::parse("11100000000013127E").err().map(|e| e.code()),
            Some("credit_code_check")
        );
        assert_eq!(CreditCode::parse("1110000000001312").err(), Some(CreditCodeError::Length));
        assert_eq!(CreditCode::parse("1110000000001312IO").err(), Some(CreditCodeError::Charset));
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in ".{0,30}") {
            let _ = CreditCode::parse(&text);
        }

        #[test]
        fn every_computed_code_parses(indices in proptest::collection::vec(0usize..31, 17)) {
            let first: Vec<u8> = indices.iter().map(|i| CHARSET[*i]).collect();
            let check = credit_check_char(&first).expect("valid");
            let code = format!("{}{check}", String::from_utf8(first).expect("ascii"));
            prop_assert!(CreditCode::parse(&code).is_ok());
        }
    }
}
