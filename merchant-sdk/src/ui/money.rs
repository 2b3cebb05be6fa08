//! Amounts at the till page: the cashier's decimal string in, integer fen inside, `¥1,234.50`
//! out. Never a float: `rust_decimal` parses, fen are `i64`.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// The largest order the page takes: ¥100,000,000.00.
const MAX_FEN: i64 = 10_000_000_000;

/// A positive amount in yuan with at most two places (`"120"`, `"120.5"`, `"120.50"`), in fen.
pub fn parse_order_amount(text: &str) -> Option<i64> {
    let fen = parse_fen(text)?;
    (fen > 0).then_some(fen)
}

/// An amount of the service's answers (`"0.00"` and up, two places), in fen.
pub fn parse_fen(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let amount = Decimal::from_str_exact(text).ok()?;
    if amount.scale() > 2 || amount.is_sign_negative() {
        return None;
    }
    let fen = (amount * Decimal::ONE_HUNDRED).to_i64()?;
    (fen <= MAX_FEN).then_some(fen)
}

/// `12345` → `"123.45"`: what the API takes.
pub fn plain(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// `123450` → `"¥1,234.50"`: what a person reads.
pub fn yuan(fen: i64) -> String {
    let digits = (fen / 100).to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("¥{grouped}.{:02}", fen % 100)
}

/// An answer's amount as `¥1,234.50` (the text as it came if it is not an amount).
pub fn shown(text: &str) -> String {
    parse_fen(text).map_or_else(|| text.to_owned(), yuan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_amounts_are_exact_to_the_fen() {
        assert_eq!(parse_order_amount("120"), Some(12_000));
        assert_eq!(parse_order_amount(" 120.5 "), Some(12_050));
        assert_eq!(parse_order_amount("0.01"), Some(1));
        assert_eq!(parse_order_amount("1234.50"), Some(123_450));
        for bad in ["", "0", "0.00", "-1", "1.005", "1e3", "1,000", "abc", "12.3.4", "100000000.01", "+5"] {
            assert_eq!(parse_order_amount(bad), None, "{bad}");
        }
        assert_eq!(parse_fen("0.00"), Some(0));
    }

    #[test]
    fn amounts_read_as_people_write_them() {
        assert_eq!(yuan(123_450), "¥1,234.50");
        assert_eq!(yuan(5), "¥0.05");
        assert_eq!(yuan(100_000_000), "¥1,000,000.00");
        assert_eq!(yuan(99_999), "¥999.99");
        assert_eq!(plain(12_000), "120.00");
        assert_eq!(shown("63.00"), "¥63.00");
    }
}
