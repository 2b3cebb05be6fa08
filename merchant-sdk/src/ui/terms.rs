//! A quote as the cashier reads it: the voucher's terms in plain Chinese (满100减30, 8折 最高减50),
//! where it is accepted (限青岛市 · 书店), and until when.

use chrono::{DateTime, FixedOffset};

use super::money;
use crate::wire::{Quote, QuoteTerms};

/// `"100.00"` → `"100"`, `"12.50"` → `"12.5"`: an amount as a voucher's terms print it.
fn terse(text: &str) -> String {
    match money::parse_fen(text) {
        Some(fen) if fen % 100 == 0 => (fen / 100).to_string(),
        Some(fen) if fen % 10 == 0 => format!("{}.{}", fen / 100, (fen % 100) / 10),
        Some(fen) => money::plain(fen),
        None => text.to_owned(),
    }
}

/// 满100减30, 无门槛减5; 8折 最高减50, 8.5折 最高减20 (`percent` is the share taken off: 20 → 8折),
/// 免单 最高减50.
pub fn terms_text(terms: &QuoteTerms) -> String {
    match terms {
        QuoteTerms::Threshold { face_value, min_spend } if money::parse_fen(min_spend) == Some(0) => {
            format!("无门槛减{}", terse(face_value))
        }
        QuoteTerms::Threshold { face_value, min_spend } => {
            format!("满{}减{}", terse(min_spend), terse(face_value))
        }
        QuoteTerms::Percent { percent, cap, min_spend, .. } => {
            let rest = 100u32.saturating_sub(*percent);
            let zhe = match rest {
                0 => "免单".to_owned(),
                r if r % 10 == 0 => format!("{}折", r / 10),
                r => format!("{}.{}折", r / 10, r % 10),
            };
            let floor = match money::parse_fen(min_spend) {
                Some(0) | None => String::new(),
                Some(_) => format!("满{}可用 ", terse(min_spend)),
            };
            format!("{floor}{zhe} 最高减{}", terse(cap))
        }
    }
}

/// 限青岛市 · 书店、电影院; 山东省内通用 · 书店 (a province's code ends in 0000).
pub fn where_text(quote: &Quote) -> String {
    let area = if quote.issuer.ends_with("0000") {
        format!("{}内通用", quote.issuer_name)
    } else {
        format!("限{}", quote.issuer_name)
    };
    format!("{area} · {}", quote.category_names.join("、"))
}

/// `2026-12-31T15:59:00Z` → `2026-12-31 23:59` (China Standard Time).
pub fn until_text(at: &str) -> String {
    let cst = FixedOffset::east_opt(8 * 3600);
    match (DateTime::parse_from_rfc3339(at), cst) {
        (Ok(t), Some(cst)) => t.with_timezone(&cst).format("%Y-%m-%d %H:%M").to_string(),
        _ => at.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threshold(face: &str, min: &str) -> QuoteTerms {
        QuoteTerms::Threshold { face_value: face.into(), min_spend: min.into() }
    }

    fn percent(percent: u32, cap: &str, min: &str) -> QuoteTerms {
        QuoteTerms::Percent { percent, cap: cap.into(), step: "1.00".into(), min_spend: min.into() }
    }

    #[test]
    fn terms_read_as_the_posters_print_them() {
        assert_eq!(terms_text(&threshold("30.00", "100.00")), "满100减30");
        assert_eq!(terms_text(&threshold("5.00", "0.00")), "无门槛减5");
        assert_eq!(terms_text(&threshold("12.50", "99.90")), "满99.9减12.5");
        assert_eq!(terms_text(&percent(20, "50.00", "0.00")), "8折 最高减50");
        assert_eq!(terms_text(&percent(15, "20.00", "0.00")), "8.5折 最高减20");
        assert_eq!(terms_text(&percent(20, "50.00", "10.00")), "满10可用 8折 最高减50");
        assert_eq!(terms_text(&percent(100, "50.00", "0.00")), "免单 最高减50");
    }

    #[test]
    fn where_and_until_read_in_chinese() {
        let quote: Quote = serde_json::from_value(serde_json::json!({
            "voucher_id": "0190f5a0-0000-7000-8000-000000000001", "batch_name": "书香青岛",
            "terms": {"kind": "threshold", "face_value": "30.00", "min_spend": "100.00"},
            "issuer": "370200", "issuer_name": "青岛市", "categories": ["bookstore", "cinema"],
            "category_names": ["书店", "电影院"], "expires_at": "2026-12-31T15:59:00.000000Z",
            "order_amount": "120.00", "voucher_basis": "120.00", "discount": "30.00", "payable": "90.00",
            "funders": []
        }))
        .expect("a quote");
        assert_eq!(where_text(&quote), "限青岛市 · 书店、电影院");
        let provincial = Quote { issuer: "370000".into(), issuer_name: "山东省".into(), ..quote.clone() };
        assert_eq!(where_text(&provincial), "山东省内通用 · 书店、电影院");
        assert_eq!(until_text(&quote.expires_at), "2026-12-31 23:59");
    }
}
