//! Staff roles and what a role scoped to a region may do.

use std::fmt;
use std::str::FromStr;

use super::ids::StaffKeyId;
use super::region::{RegionCode, RegionLevel};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    ProvinceAdmin,
    CityAdmin,
    Finance,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::ProvinceAdmin, Role::CityAdmin, Role::Finance, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ProvinceAdmin => "province_admin",
            Role::CityAdmin => "city_admin",
            Role::Finance => "finance",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaffError {
    #[error("unknown role; expected one of province_admin, city_admin, finance, auditor")]
    UnknownRole,
    #[error("a {role} is scoped to a {expected} code")]
    WrongScope { role: Role, expected: &'static str },
}

impl FromStr for Role {
    type Err = StaffError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == text).ok_or(StaffError::UnknownRole)
    }
}

/// A role held over a region: who a staff key speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaffScope {
    pub role: Role,
    pub region: RegionCode,
}

impl StaffScope {
    /// Checks the role fits the region: province admins hold a province, city admins a city;
    /// finance and auditors a province or a city. County codes are not staff scopes.
    pub fn new(role: Role, region: RegionCode) -> Result<StaffScope, StaffError> {
        let fits = matches!(
            (role, region.level()),
            (Role::ProvinceAdmin, RegionLevel::Province)
                | (Role::CityAdmin, RegionLevel::City)
                | (Role::Finance | Role::Auditor, RegionLevel::Province | RegionLevel::City)
        );
        if fits {
            Ok(StaffScope { role, region })
        } else {
            let expected = match role {
                Role::ProvinceAdmin => "province (xx0000)",
                Role::CityAdmin => "city (xxxx00)",
                Role::Finance | Role::Auditor => "province or city",
            };
            Err(StaffError::WrongScope { role, expected })
        }
    }

    /// Whether this scope may act for `region`: its own region and, for a province, its cities.
    pub fn covers(&self, region: RegionCode) -> bool {
        self.region.contains(region)
    }

    /// Whether this scope may mint a key for `other`: admins only, and only within their region.
    pub fn may_grant(&self, other: &StaffScope) -> bool {
        matches!(self.role, Role::ProvinceAdmin | Role::CityAdmin) && self.covers(other.region)
    }
}

/// The most minters a lineage follows. Keys are minted by people, a few levels deep
/// (operator, province, city); the bound only keeps a corrupt cycle finite.
pub const MAX_LINEAGE_DEPTH: usize = 32;

/// A staff key and the keys that minted it, nearest first, up to a key minted at the command
/// line. Whoever minted a key saw its secret, and so could use it and every key minted from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLineage {
    pub key: StaffKeyId,
    pub minted_by: Vec<StaffKeyId>,
}

impl KeyLineage {
    /// Whether one person may hold both keys: the same key, or one minted from the other at any
    /// depth. Two keys minted by a third are not related here: the third is neither of them.
    pub fn may_share_holder(&self, other: &KeyLineage) -> bool {
        self.key == other.key || self.minted_by.contains(&other.key) || other.minted_by.contains(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_shares_a_holder_with_its_minters_and_what_it_minted() {
        let key = |n: u128| StaffKeyId::from_uuid(uuid::Uuid::from_u128(n));
        // Operator -> 1 (province admin) -> 2 (city admin) -> 3 (its second key); 1 -> 4 (another city).
        let province = KeyLineage { key: key(1), minted_by: vec![] };
        let city = KeyLineage { key: key(2), minted_by: vec![key(1)] };
        let second = KeyLineage { key: key(3), minted_by: vec![key(2), key(1)] };
        let other_city = KeyLineage { key: key(4), minted_by: vec![key(1)] };
        assert!(city.may_share_holder(&city));
        assert!(city.may_share_holder(&second) && second.may_share_holder(&city));
        assert!(province.may_share_holder(&second) && second.may_share_holder(&province));
        assert!(!city.may_share_holder(&other_city) && !other_city.may_share_holder(&second));
        let elsewhere = KeyLineage { key: key(5), minted_by: vec![] };
        assert!(!elsewhere.may_share_holder(&province));
    }

    fn region(code: &str) -> RegionCode {
        code.parse().expect("valid region")
    }

    #[test]
    fn scope_must_fit_role() {
        assert!(StaffScope::new(Role::ProvinceAdmin, region("370200")).is_err());
        assert!(StaffScope::new(Role::CityAdmin, region("370000")).is_err());
        assert!(StaffScope::new(Role::Finance, region("370201")).is_err());
        assert!(StaffScope::new(Role::Auditor, region("370200")).is_ok());
    }

    #[test]
    fn city_admin_cannot_grant_outside_its_city() {
        let qingdao_admin = StaffScope::new(Role::CityAdmin, region("370200")).expect("ok");
        let jinan_finance = StaffScope::new(Role::Finance, region("370100")).expect("ok");
        let province_finance = StaffScope::new(Role::Finance, region("370000")).expect("ok");
        let qingdao_finance = StaffScope::new(Role::Finance, region("370200")).expect("ok");
        assert!(!qingdao_admin.may_grant(&jinan_finance));
        assert!(!qingdao_admin.may_grant(&province_finance));
        assert!(qingdao_admin.may_grant(&qingdao_finance));
    }
}
