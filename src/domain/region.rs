//! Administrative region codes (GB/T 2260): six digits. A province is `xx0000`, a city (prefecture)
//! is `xxxx00`, and a city belongs to the province with the same first two digits.

use std::fmt;
use std::str::FromStr;

/// The two-digit province prefixes in GB/T 2260 (mainland provinces, autonomous regions,
/// municipalities, Taiwan, Hong Kong and Macao).
const PROVINCE_PREFIXES: [u32; 34] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52, 53, 54,
    61, 62, 63, 64, 65, 71, 81, 82,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionCode(u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionLevel {
    Province,
    City,
    County,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("a region code is six digits (GB/T 2260)")]
    NotSixDigits,
    #[error("no province has the prefix {0:02}")]
    UnknownProvince(u32),
}

impl RegionCode {
    pub fn level(self) -> RegionLevel {
        if self.0.is_multiple_of(10_000) {
            RegionLevel::Province
        } else if self.0.is_multiple_of(100) {
            RegionLevel::City
        } else {
            RegionLevel::County
        }
    }

    pub fn province(self) -> RegionCode {
        RegionCode(self.0 / 10_000 * 10_000)
    }

    /// The city (prefecture) a code belongs to; a province has none.
    pub fn city(self) -> Option<RegionCode> {
        match self.level() {
            RegionLevel::Province => None,
            _ => Some(RegionCode(self.0 / 100 * 100)),
        }
    }

    /// Whether `other` lies inside this region (a region contains itself).
    pub fn contains(self, other: RegionCode) -> bool {
        match self.level() {
            RegionLevel::Province => other.province() == self,
            RegionLevel::City => other.city() == Some(self),
            RegionLevel::County => other == self,
        }
    }

    pub fn as_u32(self) -> u32 {
        self.0
    }
}

impl FromStr for RegionCode {
    type Err = RegionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RegionError::NotSixDigits);
        }
        let code: u32 = text.parse().map_err(|_| RegionError::NotSixDigits)?;
        let prefix = code / 10_000;
        if !PROVINCE_PREFIXES.contains(&prefix) {
            return Err(RegionError::UnknownProvince(prefix));
        }
        Ok(RegionCode(code))
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

impl serde::Serialize for RegionCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RegionCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_containment() {
        let shandong: RegionCode = "370000".parse().expect("valid");
        let qingdao: RegionCode = "370200".parse().expect("valid");
        let jinan: RegionCode = "370100".parse().expect("valid");
        let beijing: RegionCode = "110000".parse().expect("valid");
        assert_eq!(shandong.level(), RegionLevel::Province);
        assert_eq!(qingdao.level(), RegionLevel::City);
        assert!(shandong.contains(qingdao));
        assert!(!qingdao.contains(jinan));
        assert!(!qingdao.contains(shandong));
        assert!(!beijing.contains(qingdao));
        assert_eq!(qingdao.province(), shandong);
    }

    #[test]
    fn refuses_malformed_codes() {
        assert_eq!("37000".parse::<RegionCode>(), Err(RegionError::NotSixDigits));
        assert_eq!("37000a".parse::<RegionCode>(), Err(RegionError::NotSixDigits));
        assert_eq!("990000".parse::<RegionCode>(), Err(RegionError::UnknownProvince(99)));
        assert_eq!("+37000".parse::<RegionCode>(), Err(RegionError::NotSixDigits));
    }
}
