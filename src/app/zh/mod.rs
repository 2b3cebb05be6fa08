//! zh-CN presentation: what a Chinese reader sees of our values. Region names (GB/T 2260),
//! amounts as `¥1,234.50`, instants in China Standard Time, and a plain Chinese message for every
//! error code. Pure functions over the domain's types: the pages (`src/web`) and the finance
//! files use the same words.

pub mod fraud;
mod messages;
mod regions;

pub use messages::message;
pub use regions::{region_name, regions};

use chrono::{FixedOffset, Offset};

use crate::domain::finance::CST_OFFSET_S;
use crate::domain::season::Category;
use crate::domain::staff::Role;
use crate::domain::time::Timestamp;

/// A merchant category as a citizen says it.
pub fn category_name(category: Category) -> &'static str {
    match category {
        Category::Bookstore => "书店",
        Category::Ktv => "KTV",
        Category::InternetCafe => "网吧",
        Category::Cinema => "电影院",
        Category::Theatre => "剧场",
        Category::Museum => "博物馆",
        Category::Performance => "演出",
        Category::Sports => "体育",
        Category::ScenicSpot => "景区",
    }
}

/// A staff role as the console names it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::ProvinceAdmin => "省级管理员",
        Role::CityAdmin => "市级管理员",
        Role::Finance => "财务",
        Role::Auditor => "审计",
    }
}

/// An amount in fen as yuan with thousands separators and two decimals: `¥1,234.50`; a negative
/// amount `-¥12.00`. Integer arithmetic only.
pub fn yuan_text(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let fen = fen.unsigned_abs();
    let (whole, cents) = (fen / 100, fen % 100);
    let digits = whole.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}¥{grouped}.{cents:02}")
}

/// An instant as a Beijing wall-clock time to the minute: `2026-03-01 10:00`.
pub fn cst_minute(at: Timestamp) -> String {
    cst(at).format("%Y-%m-%d %H:%M").to_string()
}

/// An instant as a Beijing wall-clock time to the second, as the finance files show it:
/// `2026-12-02 22:04:05`.
pub fn cst_second(at: Timestamp) -> String {
    cst(at).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An instant as a Beijing date: `2026年3月1日`.
pub fn cst_date(at: Timestamp) -> String {
    cst(at).format("%Y年%-m月%-d日").to_string()
}

fn cst(at: Timestamp) -> chrono::DateTime<FixedOffset> {
    let offset = FixedOffset::east_opt(CST_OFFSET_S).unwrap_or(chrono::Utc.fix());
    at.to_datetime().with_timezone(&offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_yuan_with_separators_and_two_decimals() {
        for (fen, text) in [
            (0, "¥0.00"),
            (5, "¥0.05"),
            (3_000, "¥30.00"),
            (123_450, "¥1,234.50"),
            (99_999, "¥999.99"),
            (100_000, "¥1,000.00"),
            (12_345_678_901, "¥123,456,789.01"),
            (-1_200, "-¥12.00"),
            (i64::MAX, "¥92,233,720,368,547,758.07"),
            (i64::MIN, "-¥92,233,720,368,547,758.08"),
        ] {
            assert_eq!(yuan_text(fen), text);
        }
    }

    #[test]
    fn times_are_shown_in_china_standard_time() {
        let at = Timestamp::parse_rfc3339("2026-11-30T16:30:00Z").unwrap();
        assert_eq!(cst_minute(at), "2026-12-01 00:30");
        assert_eq!(
            cst_second(Timestamp::parse_rfc3339("2026-12-02T14:04:05.9Z").unwrap()),
            "2026-12-02 22:04:05"
        );
        assert_eq!(cst_date(at), "2026年12月1日");
        let noon = Timestamp::parse_rfc3339("2026-03-01T10:00:59+08:00").unwrap();
        assert_eq!(cst_minute(noon), "2026-03-01 10:00");
        assert_eq!(cst_date(noon), "2026年3月1日");
    }
}
