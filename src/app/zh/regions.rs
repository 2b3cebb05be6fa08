//! GB/T 2260 names of the provinces and prefecture-level divisions, from `gbt2260.tsv` beside
//! this file (compiled in). A county has no entry: it is shown by its city's name.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::domain::region::{RegionCode, RegionLevel};

const TABLE: &str = include_str!("gbt2260.tsv");

/// The names the standard gives a municipality's or a province's directly administered parts,
/// which read as their province's name (北京市 for 110100).
const PARTS_OF_THEIR_PROVINCE: [&str; 2] = ["市辖区", "县"];
const DIRECTLY_ADMINISTERED: [&str; 2] = ["省直辖县级行政区划", "自治区直辖县级行政区划"];

/// The table as the standard writes it, code → name; read once.
fn table() -> &'static BTreeMap<u32, &'static str> {
    static TABLE_MAP: OnceLock<BTreeMap<u32, &'static str>> = OnceLock::new();
    TABLE_MAP.get_or_init(|| parse(TABLE))
}

/// The lines `code TAB name`; `#` comments and blank lines skipped, a malformed line too
/// (the tests check that none is).
fn parse(text: &'static str) -> BTreeMap<u32, &'static str> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (code, name) = line.split_once('\t')?;
            let code: RegionCode = code.parse().ok()?;
            Some((code.as_u32(), name.trim()))
        })
        .collect()
}

/// The name to show for a region code: a province's or city's own name, a municipality's
/// districts as the municipality (110100 → 北京市), a county by its city. `None` for a code
/// the table does not hold.
pub fn region_name(code: RegionCode) -> Option<String> {
    let province = *table().get(&code.province().as_u32())?;
    let Some(city) = code.city() else { return Some(province.to_owned()) };
    let name = *table().get(&city.as_u32())?;
    if PARTS_OF_THEIR_PROVINCE.contains(&name) {
        Some(province.to_owned())
    } else if DIRECTLY_ADMINISTERED.contains(&name) {
        Some(format!("{province}直辖县级"))
    } else {
        Some(name.to_owned())
    }
}

/// Every province and city code with the name [`region_name`] shows for it, in code order.
pub fn regions() -> Vec<(RegionCode, String)> {
    table()
        .keys()
        .filter_map(|code| code.to_string().parse::<RegionCode>().ok())
        .filter(|code| code.level() != RegionLevel::County)
        .filter_map(|code| Some((code, region_name(code)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(code: &str) -> Option<String> {
        region_name(code.parse().unwrap())
    }

    #[test]
    fn every_line_of_the_table_is_a_code_and_a_name() {
        let lines = TABLE.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
        let mut count = 0;
        for line in lines {
            let (code, name) = line.split_once('\t').unwrap_or_else(|| panic!("no tab: {line}"));
            let code: RegionCode = code.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_ne!(code.level(), RegionLevel::County, "{line}: only provinces and cities");
            assert!(!name.trim().is_empty(), "{line}: no name");
            assert!(table().contains_key(&code.province().as_u32()), "{line}: no province");
            count += 1;
        }
        assert_eq!(count, table().len(), "a code is listed twice");
    }

    #[test]
    fn the_table_holds_all_34_provinces_and_their_cities() {
        let provinces = table().keys().filter(|c| **c % 10_000 == 0).count();
        assert_eq!(provinces, 34);
        let cities = table().len() - provinces;
        assert!(cities >= 333, "{cities} prefecture-level divisions");
        // Every province code the domain accepts has a name.
        for prefix in [
            11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
            53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
        ] {
            assert!(name(&format!("{prefix}0000")).is_some(), "{prefix}0000 has no name");
        }
    }

    #[test]
    fn a_code_is_shown_by_its_name() {
        assert_eq!(name("370000").as_deref(), Some("山东省"));
        assert_eq!(name("370100").as_deref(), Some("济南市"));
        assert_eq!(name("370200").as_deref(), Some("青岛市"));
        assert_eq!(name("370102").as_deref(), Some("济南市"), "a county by its city");
        assert_eq!(name("110000").as_deref(), Some("北京市"));
        assert_eq!(name("110100").as_deref(), Some("北京市"), "a municipality's districts");
        assert_eq!(name("500200").as_deref(), Some("重庆市"));
        assert_eq!(name("419000").as_deref(), Some("河南省直辖县级"));
        assert_eq!(name("652300").as_deref(), Some("昌吉回族自治州"));
        assert_eq!(name("379900"), None, "no such city");
    }

    #[test]
    fn the_list_for_the_pages_holds_provinces_and_cities() {
        let all = regions();
        assert_eq!(all.len(), table().len());
        assert!(all.iter().any(|(code, name)| code.as_u32() == 440300 && name == "深圳市"));
    }
}
