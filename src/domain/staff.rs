//! Staff roles and what a role scoped to a region may do.

use std::fmt;
use std::str::FromStr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
