//! Staff roles and what a role scoped to a region may do.

use std::fmt;
use std::str::FromStr;

use super::ids::{StaffKeyId, StaffPersonId};
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

/// How long an enrolment waits to be claimed: a day. Its one-time code lives as long (six
/// digits, five tries: a guess has at most a 1 in 200,000 chance).
pub const ENROLMENT_TTL_S: i64 = 86_400;

/// How many claims an enrolment takes before it is locked (`code_locked`).
pub const ENROLMENT_MAX_TRIES: i32 = 5;

/// Who holds a staff key, as four eyes sees it: the named person it belongs to, or, for a key
/// from before keys named people, the key itself (its own person).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Holder {
    Person(StaffPersonId),
    Key(StaffKeyId),
}

/// One link of a key's chain as stored: the key and its person, if it names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainLink {
    pub key: StaffKeyId,
    pub person: Option<StaffPersonId>,
}

/// A staff key's holder and the holders of the keys that minted it, nearest first, up to a key
/// minted at the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLineage {
    pub key: StaffKeyId,
    pub holder: Holder,
    pub minters: Vec<Holder>,
}

impl KeyLineage {
    /// From the key's chain, the key first and its minters after it, nearest first. A key with no
    /// person is held by its minter's holder when it has a minter (minted through the API before
    /// enrolment, its minter saw the secret), else by itself.
    pub fn from_chain(chain: &[ChainLink]) -> Option<KeyLineage> {
        let first = chain.first()?;
        let mut holders: Vec<Holder> = Vec::with_capacity(chain.len());
        for link in chain.iter().rev() {
            let holder = match (link.person, holders.last()) {
                (Some(person), _) => Holder::Person(person),
                (None, Some(minter)) => *minter,
                (None, None) => Holder::Key(link.key),
            };
            holders.push(holder);
        }
        holders.reverse();
        Some(KeyLineage { key: first.key, holder: holders[0], minters: holders[1..].to_vec() })
    }

    /// Whether one person may hold both keys: the same holder, or the holder of one minted the
    /// other (at any depth). Two keys minted by a third for two people are not related: the
    /// third is neither of them, though it may not approve for either.
    pub fn may_share_holder(&self, other: &KeyLineage) -> bool {
        self.holder == other.holder
            || self.minters.contains(&other.holder)
            || other.minters.contains(&self.holder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_shares_a_holder_with_its_minters_and_what_it_minted() {
        let key = |n: u128| StaffKeyId::from_uuid(uuid::Uuid::from_u128(n));
        let person = |n: u128| Some(StaffPersonId::from_uuid(uuid::Uuid::from_u128(100 + n)));
        let link = |k: u128, p: Option<StaffPersonId>| ChainLink { key: key(k), person: p };
        let lineage = |links: &[ChainLink]| KeyLineage::from_chain(links).expect("a chain");
        // Operator -> 1 (province admin, person A) -> 2 (city admin, B) -> 3 and 6 (people C, D);
        // 1 -> 4 (another city, E); 2 -> 7 (C again: the same phone).
        let province = lineage(&[link(1, person(1))]);
        let city = lineage(&[link(2, person(2)), link(1, person(1))]);
        let third = lineage(&[link(3, person(3)), link(2, person(2)), link(1, person(1))]);
        let sibling = lineage(&[link(6, person(4)), link(2, person(2)), link(1, person(1))]);
        let same_phone = lineage(&[link(7, person(3)), link(2, person(2)), link(1, person(1))]);
        let other_city = lineage(&[link(4, person(5)), link(1, person(1))]);
        assert!(city.may_share_holder(&city));
        assert!(city.may_share_holder(&third) && third.may_share_holder(&city));
        assert!(province.may_share_holder(&third) && third.may_share_holder(&province));
        assert!(!third.may_share_holder(&sibling), "siblings held by two people");
        assert!(third.may_share_holder(&same_phone), "one phone, one person");
        assert!(!city.may_share_holder(&other_city) && !other_city.may_share_holder(&third));
        // Before enrolment: a key minted through the API is its minter's; one at the console its own.
        let legacy_root = lineage(&[link(8, None)]);
        let legacy_a = lineage(&[link(9, None), link(8, None)]);
        let legacy_b = lineage(&[link(10, None), link(8, None)]);
        assert!(legacy_a.may_share_holder(&legacy_b), "legacy siblings: their minter saw both");
        assert!(!legacy_root.may_share_holder(&province));
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
