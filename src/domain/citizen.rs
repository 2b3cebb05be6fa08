//! Who a citizen is: the resident identity number, a mobile number, a name.
//!
//! These are personal data. None of the types here derives `Serialize`, and their `Debug` output
//! shows only the masked form, so that a stray `{:?}` in a log line never leaks a number. Store
//! and look numbers up by [`IdNumber::keyed_hash`] / [`Phone::keyed_hash`] (HMAC-SHA256 under a
//! server secret), never by the plain text. Error messages never repeat the input.

use std::fmt;

use chrono::{NaiveDate, Utc};
use ring::hmac;

use crate::domain::error_code::ErrorCode;

use super::region::RegionCode;

/// ISO 7064 MOD 11-2 weights for the first 17 characters (2^(18-i) mod 11).
const CHECK_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// The check character for each value of the weighted sum mod 11.
const CHECK_CHARACTERS: [u8; 11] = *b"10X98765432";

/// The check character for the first 17 characters of an identity number. Any byte that is not
/// an ASCII digit gives a meaningless (but non-panicking) result.
fn check_character(first17: &[u8]) -> u8 {
    let sum: u32 = first17
        .iter()
        .zip(CHECK_WEIGHTS)
        .map(|(byte, weight)| u32::from(byte.wrapping_sub(b'0') % 10) * weight)
        .sum();
    CHECK_CHARACTERS[(sum % 11) as usize]
}

/// HMAC-SHA256 of `message` under `secret`.
fn hmac_sha256(secret: &[u8], message: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, message);
    let mut out = [0u8; 32];
    out.iter_mut().zip(tag.as_ref()).for_each(|(o, t)| *o = *t);
    out
}

// ---------------------------------------------------------------------------------------------
// Identity number
// ---------------------------------------------------------------------------------------------

/// An 18-character PRC resident identity number (GB 11643-1999), checked and normalised (a
/// lowercase `x` check character becomes `X`).
///
/// Layout: six-digit address code, eight-digit date of birth `YYYYMMDD`, three-digit sequence,
/// one check character (ISO 7064 MOD 11-2).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdNumber {
    text: String,
    birth_date: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    #[error("an identity number has 18 characters; this one has {0}")]
    WrongLength(usize),
    #[error("the first 17 characters of an identity number must be digits 0-9")]
    NotDigits,
    #[error("the last character of an identity number must be a digit 0-9 or X")]
    BadLastCharacter,
    #[error(
        "the address code of the identity number does not start with a known province prefix (GB/T 2260)"
    )]
    UnknownRegion,
    #[error("the date of birth in the identity number (characters 7-14) is not a real calendar date")]
    NotADate,
    #[error("the date of birth in the identity number is before 1900")]
    BornBefore1900,
    #[error("the date of birth in the identity number is in the future")]
    BornInFuture,
    #[error(
        "the check character of the identity number is wrong (ISO 7064 MOD 11-2); the number is mistyped"
    )]
    CheckDigit,
}

impl IdNumberError {
    /// The machine-readable error code for API responses.
    pub fn code(&self) -> ErrorCode {
        match self {
            IdNumberError::WrongLength(_) | IdNumberError::NotDigits | IdNumberError::BadLastCharacter => {
                ErrorCode::IdNumberFormat
            }
            IdNumberError::UnknownRegion => ErrorCode::IdNumberRegion,
            IdNumberError::NotADate | IdNumberError::BornBefore1900 | IdNumberError::BornInFuture => {
                ErrorCode::IdNumberBirthDate
            }
            IdNumberError::CheckDigit => ErrorCode::IdNumberCheckDigit,
        }
    }
}

/// Reads `digits` (all ASCII digits, at most 9 of them) as a number.
fn digits_value(digits: &[u8]) -> u32 {
    digits.iter().fold(0u32, |acc, d| acc.wrapping_mul(10).wrapping_add(u32::from(d.wrapping_sub(b'0'))))
}

impl IdNumber {
    /// Parses against today's date in UTC (for the "not born in the future" rule).
    pub fn parse(text: &str) -> Result<IdNumber, IdNumberError> {
        IdNumber::parse_at(text, Utc::now().date_naive())
    }

    /// Parses, treating `today` as the latest possible date of birth.
    pub fn parse_at(text: &str, today: NaiveDate) -> Result<IdNumber, IdNumberError> {
        let trimmed = text.trim();
        let length = trimmed.chars().count();
        if length != 18 {
            return Err(IdNumberError::WrongLength(length));
        }
        let mut normalised = [0u8; 18];
        for (index, ch) in trimmed.chars().enumerate() {
            let byte = match (index, ch) {
                (_, '0'..='9') => ch as u8,
                (17, 'X' | 'x') => b'X',
                (17, _) => return Err(IdNumberError::BadLastCharacter),
                _ => return Err(IdNumberError::NotDigits),
            };
            if let Some(slot) = normalised.get_mut(index) {
                *slot = byte;
            }
        }

        let province = format!("{}{}0000", char::from(normalised[0]), char::from(normalised[1]));
        if province.parse::<RegionCode>().is_err() {
            return Err(IdNumberError::UnknownRegion);
        }

        let year = digits_value(&normalised[6..10]);
        let month = digits_value(&normalised[10..12]);
        let day = digits_value(&normalised[12..14]);
        let year = i32::try_from(year).map_err(|_| IdNumberError::NotADate)?;
        let birth_date = NaiveDate::from_ymd_opt(year, month, day).ok_or(IdNumberError::NotADate)?;
        if year < 1900 {
            return Err(IdNumberError::BornBefore1900);
        }
        if birth_date > today {
            return Err(IdNumberError::BornInFuture);
        }

        if check_character(&normalised[..17]) != normalised[17] {
            return Err(IdNumberError::CheckDigit);
        }

        let text = normalised.iter().map(|b| char::from(*b)).collect();
        Ok(IdNumber { text, birth_date })
    }

    /// The normalised number (uppercase `X`). Personal data: do not log it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The citizen's home region: the city (or, for `xx00`, the province) of the first four
    /// digits, which the masked form keeps too ([`home_region_of_masked`]).
    pub fn home_region(&self) -> Option<RegionCode> {
        home_region_of_masked(&self.masked())
    }

    /// The first four and last four characters, ten asterisks between: `3702**********123X`.
    pub fn masked(&self) -> String {
        let head: String = self.text.chars().take(4).collect();
        let tail: String = self.text.chars().skip(14).collect();
        format!("{head}**********{tail}")
    }

    pub fn birth_date(&self) -> NaiveDate {
        self.birth_date
    }

    /// HMAC-SHA256 of the normalised number under `secret`: the form to store and index.
    pub fn keyed_hash(&self, secret: &[u8]) -> [u8; 32] {
        hmac_sha256(secret, self.text.as_bytes())
    }
}

impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdNumber").field(&self.masked()).finish()
    }
}

/// Builds an identity number with the correct check character, for tests and the load generator.
///
/// `region6` should be six digits with a known province prefix and `birth_yyyymmdd` a real date
/// from 1900 on; `sequence3` is taken mod 1000 and zero-padded. With such inputs the result
/// parses; with other inputs it still returns a string (that will not parse) and never panics.
pub fn synthetic_id_number(region6: &str, birth_yyyymmdd: &str, sequence3: u16) -> String {
    let mut number = format!("{region6}{birth_yyyymmdd}{:03}", sequence3 % 1000);
    let check = check_character(number.as_bytes());
    number.push(char::from(check));
    number
}

// ---------------------------------------------------------------------------------------------
// Mobile number
// ---------------------------------------------------------------------------------------------

/// An 11-digit mainland mobile number (`1[3-9]xxxxxxxxx`), stored without prefix or separators.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("a mobile number may contain only digits, spaces and hyphens, after an optional +86 prefix")]
    NotDigits,
    #[error("a mobile number has 11 digits (not counting a +86 prefix); this one has {0}")]
    WrongLength(usize),
    #[error("a mainland mobile number starts with 13 to 19")]
    NotMobile,
}

impl PhoneError {
    /// The machine-readable error code for API responses.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::PhoneFormat
    }
}

impl Phone {
    /// Accepts `13812345678`, `138 1234 5678`, `138-1234-5678`, `+86 138 1234 5678`,
    /// `8613812345678`.
    pub fn parse(text: &str) -> Result<Phone, PhoneError> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
        let digits = if let Some(rest) = compact.strip_prefix("+86") {
            rest
        } else if compact.len() == 13 && compact.starts_with("86") {
            compact.get(2..).unwrap_or_default()
        } else {
            compact.as_str()
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PhoneError::NotDigits);
        }
        if digits.len() != 11 {
            return Err(PhoneError::WrongLength(digits.len()));
        }
        let bytes = digits.as_bytes();
        if bytes[0] != b'1' || !(b'3'..=b'9').contains(&bytes[1]) {
            return Err(PhoneError::NotMobile);
        }
        Ok(Phone(digits.to_owned()))
    }

    /// The 11 digits. Personal data: do not log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first three and last four digits: `138****1234`.
    pub fn masked(&self) -> String {
        format!("{}****{}", self.0.get(..3).unwrap_or_default(), self.0.get(7..).unwrap_or_default())
    }

    /// HMAC-SHA256 of the 11 digits under `secret`: the form to store and index.
    pub fn keyed_hash(&self, secret: &[u8]) -> [u8; 32] {
        hmac_sha256(secret, self.0.as_bytes())
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Phone").field(&self.masked()).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Name
// ---------------------------------------------------------------------------------------------

/// The most characters (not bytes) a name may have.
pub const MAX_NAME_CHARS: usize = 50;

/// A citizen's name as written: trimmed, 1 to 50 characters, no control characters. Its `Debug`
/// output is masked too.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CitizenName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name must not be empty")]
    Empty,
    #[error("a name has at most 50 characters; this one has {0}")]
    TooLong(usize),
    #[error("a name must not contain control characters (such as line breaks or tabs)")]
    ControlCharacter,
    #[error(
        "a name must not contain invisible formatting characters (direction overrides, zero-width characters, byte-order marks)"
    )]
    Invisible,
}

impl NameError {
    /// The machine-readable error code for API responses.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::NameFormat
    }
}

impl CitizenName {
    pub fn parse(text: &str) -> Result<CitizenName, NameError> {
        let trimmed = text.trim();
        let length = trimmed.chars().count();
        if length == 0 {
            return Err(NameError::Empty);
        }
        if length > MAX_NAME_CHARS {
            return Err(NameError::TooLong(length));
        }
        // The rule of all free text (`domain::text`), on the length checked above.
        match super::text::PlainText::parse(trimmed, MAX_NAME_CHARS) {
            Err(super::text::TextError::Invisible) => Err(NameError::Invisible),
            Err(_) => Err(NameError::ControlCharacter),
            Ok(name) => Ok(CitizenName(name.into_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first character, then one `*` per remaining character: `张*`, `欧阳**`. A one-character
    /// name is shown as `*`.
    pub fn masked(&self) -> String {
        let count = self.0.chars().count();
        match self.0.chars().next() {
            Some(first) if count > 1 => {
                let mut out = String::from(first);
                out.extend(std::iter::repeat_n('*', count - 1));
                out
            }
            _ => "*".to_owned(),
        }
    }
}

impl fmt::Debug for CitizenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CitizenName").field(&self.masked()).finish()
    }
}

/// The home region of a citizen from the stored masked ID number (`3702**********123X`): its
/// first four digits and `00`, a city, or the province when the city digits are `00`.
pub fn home_region_of_masked(masked: &str) -> Option<RegionCode> {
    let head = masked.get(..4).filter(|h| h.bytes().all(|b| b.is_ascii_digit()))?;
    format!("{head}00").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_home_region_is_the_city_of_the_first_four_digits() {
        let id = IdNumber::parse(&synthetic_id_number("370202", "19900101", 1)).expect("valid");
        assert_eq!(id.home_region(), "370200".parse().ok());
        assert_eq!(home_region_of_masked("1100**********123X"), "110000".parse().ok());
        assert_eq!(home_region_of_masked("99**"), None);
        assert_eq!(home_region_of_masked(""), None);
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
    }

    fn today() -> NaiveDate {
        date(2026, 3, 1)
    }

    fn parse(text: &str) -> Result<IdNumber, IdNumberError> {
        IdNumber::parse_at(text, today())
    }

    fn code_of(text: &str) -> &'static str {
        parse(text).expect_err("should be refused").code().as_str()
    }

    #[test]
    fn well_known_example_is_valid() {
        // 1*7 + 1*9 + 0*10 + 1*5 + 0*8 + 5*4 + 1*2 + 9*1 + 4*6 + 9*3 + 1*7 + 2*9 + 3*10 + 1*5 + 0*8
        // + 0*4 + 2*2 = 167; 167 mod 11 = 2; "10X98765432"[2] = 'X'.
        let id = parse("11010519491231002X").expect("valid");
        assert_eq!(id.as_str(), "11010519491231002X");
        assert_eq!(id.birth_date(), date(1949, 12, 31));
        assert_eq!(synthetic_id_number("110105", "19491231", 2), "11010519491231002X");
    }

    #[test]
    fn hand_checked_synthetic_numbers() {
        // 3*7 + 7*9 + 0*10 + 2*5 + 0*8 + 2*4 + 1*2 + 9*1 + 9*6 + 0*3 + 0*7 + 1*9 + 0*10 + 1*5
        // + 1*8 + 2*4 + 3*2 = 203; 203 mod 11 = 5; "10X98765432"[5] = '7'.
        assert_eq!(synthetic_id_number("370202", "19900101", 123), "370202199001011237");
        // 4*7 + 4*9 + 0*10 + 3*5 + 0*8 + 5*4 + 2*2 + 0*1 + 0*6 + 0*3 + 0*7 + 2*9 + 2*10 + 9*5
        // + 0*8 + 0*4 + 7*2 = 200; 200 mod 11 = 2; 'X'. Sequence 1007 wraps to 007.
        assert_eq!(synthetic_id_number("440305", "20000229", 1007), "44030520000229007X");
        assert!(parse("370202199001011237").is_ok());
        assert!(parse("44030520000229007X").is_ok());
    }

    #[test]
    fn lowercase_x_and_whitespace_are_normalised() {
        let id = parse("  11010519491231002x\n").expect("valid");
        assert_eq!(id.as_str(), "11010519491231002X");
    }

    #[test]
    fn masks_and_never_debugs_the_number() {
        let id = parse("370202199001011237").expect("valid");
        assert_eq!(id.masked(), "3702**********1237");
        let debug = format!("{id:?}");
        assert_eq!(debug, "IdNumber(\"3702**********1237\")");
        assert!(!debug.contains("19900101"));
    }

    #[test]
    fn refuses_wrong_check_digit() {
        assert_eq!(parse("110105194912310021"), Err(IdNumberError::CheckDigit));
        assert_eq!(code_of("370202199001011238"), "id_number_check_digit");
    }

    #[test]
    fn refuses_impossible_and_out_of_range_dates() {
        let feb30 = synthetic_id_number("370202", "20230230", 1);
        assert_eq!(parse(&feb30), Err(IdNumberError::NotADate));
        let feb29 = synthetic_id_number("370202", "20230229", 1);
        assert_eq!(parse(&feb29), Err(IdNumberError::NotADate));
        let month13 = synthetic_id_number("370202", "19901301", 1);
        assert_eq!(parse(&month13), Err(IdNumberError::NotADate));
        let day00 = synthetic_id_number("370202", "19900100", 1);
        assert_eq!(parse(&day00), Err(IdNumberError::NotADate));
        let old = synthetic_id_number("370202", "18991231", 1);
        assert_eq!(parse(&old), Err(IdNumberError::BornBefore1900));
        assert!(parse(&synthetic_id_number("370202", "19000101", 1)).is_ok());
        assert_eq!(code_of(&feb30), "id_number_birth_date");
    }

    #[test]
    fn refuses_future_birth_date() {
        let tomorrow = synthetic_id_number("370202", "20260302", 1);
        assert_eq!(parse(&tomorrow), Err(IdNumberError::BornInFuture));
        assert_eq!(code_of(&tomorrow), "id_number_birth_date");
        let born_today = synthetic_id_number("370202", "20260301", 1);
        assert_eq!(parse(&born_today).map(|id| id.birth_date()), Ok(today()));
    }

    #[test]
    fn refuses_unknown_province_prefix() {
        let bad = synthetic_id_number("990101", "19900101", 1);
        assert_eq!(parse(&bad), Err(IdNumberError::UnknownRegion));
        assert_eq!(code_of(&bad), "id_number_region");
        let zero = synthetic_id_number("000000", "19900101", 1);
        assert_eq!(parse(&zero), Err(IdNumberError::UnknownRegion));
        // A county-level address code is fine: only the province prefix is checked.
        assert!(parse(&synthetic_id_number("370283", "19900101", 1)).is_ok());
    }

    #[test]
    fn refuses_malformed_numbers() {
        assert_eq!(parse(""), Err(IdNumberError::WrongLength(0)));
        assert_eq!(parse("11010519491231002"), Err(IdNumberError::WrongLength(17)));
        assert_eq!(parse("11010519491231002X1"), Err(IdNumberError::WrongLength(19)));
        assert_eq!(parse("110105194912310 2X"), Err(IdNumberError::NotDigits));
        assert_eq!(parse("X10105194912310020"), Err(IdNumberError::NotDigits));
        assert_eq!(parse("11010519491231002Y"), Err(IdNumberError::BadLastCharacter));
        assert_eq!(parse("１1010519491231002X"), Err(IdNumberError::NotDigits));
        assert_eq!(code_of("1101051949123100"), "id_number_format");
        assert_eq!(code_of("11010519491231002Y"), "id_number_format");
    }

    #[test]
    fn keyed_hash_is_hmac_sha256_of_normalised_text() {
        let lower = parse("11010519491231002x").expect("valid");
        let upper = parse("11010519491231002X").expect("valid");
        assert_eq!(lower.keyed_hash(b"secret"), upper.keyed_hash(b"secret"));
        assert_ne!(upper.keyed_hash(b"secret"), upper.keyed_hash(b"other"));
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"secret");
        let expected = hmac::sign(&key, b"11010519491231002X");
        assert_eq!(&upper.keyed_hash(b"secret")[..], expected.as_ref());
    }

    #[test]
    fn phones() {
        for text in [
            "13812341234",
            "138 1234 1234",
            "138-1234-1234",
            "+86 138 1234 1234",
            "8613812341234",
            "+8613812341234",
        ] {
            assert_eq!(
                Phone::parse(text).map(|p| p.as_str().to_owned()),
                Ok("13812341234".to_owned()),
                "{text}"
            );
        }
        let phone = Phone::parse("13812341234").expect("valid");
        assert_eq!(phone.masked(), "138****1234");
        assert_eq!(format!("{phone:?}"), "Phone(\"138****1234\")");
        assert_ne!(phone.keyed_hash(b"k"), [0u8; 32]);
        assert_eq!(Phone::parse("12812341234"), Err(PhoneError::NotMobile));
        assert_eq!(Phone::parse("23812341234"), Err(PhoneError::NotMobile));
        assert_eq!(Phone::parse("1381234123"), Err(PhoneError::WrongLength(10)));
        assert_eq!(Phone::parse("138123412345"), Err(PhoneError::WrongLength(12)));
        assert_eq!(Phone::parse("+1 138 1234 1234"), Err(PhoneError::NotDigits));
        assert_eq!(Phone::parse("138.1234.1234"), Err(PhoneError::NotDigits));
        assert_eq!(Phone::parse(""), Err(PhoneError::WrongLength(0)));
        assert_eq!(Phone::parse("１3812341234").map_err(|e| e.code().as_str()), Err("phone_format"));
    }

    #[test]
    fn names() {
        assert_eq!(CitizenName::parse(" 张三 ").map(|n| n.masked()), Ok("张*".to_owned()));
        assert_eq!(CitizenName::parse("欧阳修文").map(|n| n.masked()), Ok("欧***".to_owned()));
        assert_eq!(CitizenName::parse("欧阳娜").map(|n| n.masked()), Ok("欧**".to_owned()));
        assert_eq!(CitizenName::parse("李").map(|n| n.masked()), Ok("*".to_owned()));
        assert_eq!(
            CitizenName::parse("买买提·艾力").map(|n| n.as_str().to_owned()),
            Ok("买买提·艾力".to_owned())
        );
        let name = CitizenName::parse("张三").expect("valid");
        assert_eq!(format!("{name:?}"), "CitizenName(\"张*\")");
        assert_eq!(CitizenName::parse("   "), Err(NameError::Empty));
        assert_eq!(CitizenName::parse(&"张".repeat(50)).map(|n| n.as_str().chars().count()), Ok(50));
        assert_eq!(CitizenName::parse(&"张".repeat(51)), Err(NameError::TooLong(51)));
        assert_eq!(CitizenName::parse("张\n三"), Err(NameError::ControlCharacter));
        assert_eq!(CitizenName::parse("张\u{0}").map_err(|e| e.code().as_str()), Err("name_format"));
    }

    const PREFIXES: [&str; 34] = [
        "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42",
        "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71", "81", "82",
    ];

    fn synthetic() -> impl Strategy<Value = (String, NaiveDate)> {
        let first = date(1900, 1, 1);
        let span = (today() - first).num_days();
        (prop::sample::select(&PREFIXES[..]), 0u32..10_000, 0..=span, any::<u16>()).prop_map(
            move |(prefix, rest, offset, sequence)| {
                let birth = first + chrono::Duration::days(offset);
                let region = format!("{prefix}{rest:04}");
                (synthetic_id_number(&region, &birth.format("%Y%m%d").to_string(), sequence), birth)
            },
        )
    }

    proptest! {
        #[test]
        fn id_parser_never_panics(text in ".{0,40}") {
            let _ = parse(&text);
        }

        #[test]
        fn id_parser_never_panics_on_near_misses(text in "[0-9xX ]{15,21}") {
            let _ = parse(&text);
        }

        #[test]
        fn phone_and_name_parsers_never_panic(text in ".{0,80}") {
            let _ = Phone::parse(&text).map(|p| p.masked());
            let _ = CitizenName::parse(&text).map(|n| n.masked());
        }

        #[test]
        fn every_synthetic_number_parses((number, birth) in synthetic()) {
            let id = parse(&number);
            prop_assert!(id.is_ok(), "{} refused: {:?}", number, id);
            let id = id.expect("checked");
            prop_assert_eq!(id.birth_date(), birth);
            prop_assert_eq!(id.as_str(), number.as_str());
        }

        #[test]
        fn any_single_digit_change_is_refused(
            (number, _) in synthetic(),
            position in 0usize..17,
            delta in 1u8..10,
        ) {
            let mut bytes = number.into_bytes();
            let original_check = bytes[17];
            bytes[position] = b'0' + (bytes[position] - b'0' + delta) % 10;
            prop_assert_ne!(check_character(&bytes[..17]), original_check);
            let mutated = String::from_utf8(bytes).expect("ascii");
            prop_assert!(parse(&mutated).is_err());
        }
    }
}
