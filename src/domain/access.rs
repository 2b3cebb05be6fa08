//! Who may do what, where: every decision about a staff key's access to a resource, one
//! function per capability, each taking the key's scope and the region of the resource.
//!
//! The handlers load the resource (a 404 comes first when it does not exist), ask here, and
//! answer a refusal with 403. The rules are stated in one table in `docs/staff.md`, which
//! `tests/suite/authz_matrix.rs` walks role by region by endpoint.

use std::fmt;

use super::region::{RegionCode, RegionLevel};
use super::staff::{Role, StaffScope};

/// A refusal: the key may not do this (answered 403 `forbidden`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied(pub String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Finance and auditors: the readers of money.
const READERS: [Role; 2] = [Role::Finance, Role::Auditor];
/// The admins: they manage merchants, seasons and keys.
const ADMINS: [Role; 2] = [Role::ProvinceAdmin, Role::CityAdmin];

/// The key holds one of `roles` (any region).
pub fn holds(scope: &StaffScope, roles: &[Role]) -> Result<(), Denied> {
    if roles.contains(&scope.role) {
        return Ok(());
    }
    let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Err(Denied(format!("this needs one of the roles {}; the key is {}", allowed.join(", "), scope.role)))
}

/// The key holds one of `roles` over a region that covers `region` (its own, or a city of its
/// province).
fn holds_over(scope: &StaffScope, roles: &[Role], region: RegionCode, what: &str) -> Result<(), Denied> {
    holds(scope, roles)?;
    if scope.covers(region) {
        Ok(())
    } else {
        Err(Denied(format!("a {} of {} cannot {what} of {region}", scope.role, scope.region)))
    }
}

/// How much of a season's finance a key reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeasonView {
    /// All of it: finance or an auditor of the season's province.
    Whole,
    /// A city's funder figures, batches and merchants: finance or an auditor of that city.
    City(RegionCode),
}

/// Reading a season's report, settlements and payout file: finance and auditors of the
/// season's province (all of it) or of one of its cities (that city's part).
pub fn read_season_finance(scope: &StaffScope, province: RegionCode) -> Result<SeasonView, Denied> {
    holds(scope, &READERS)?;
    if scope.region == province {
        Ok(SeasonView::Whole)
    } else if province.contains(scope.region) {
        Ok(SeasonView::City(scope.region))
    } else {
        Err(Denied(format!("a {} of {} cannot see a season of {province}", scope.role, scope.region)))
    }
}

/// Reconciling a season, which covers all of it: finance and auditors of its province.
pub fn reconcile_season(scope: &StaffScope, province: RegionCode) -> Result<(), Denied> {
    match read_season_finance(scope, province)? {
        SeasonView::Whole => Ok(()),
        SeasonView::City(_) => {
            Err(Denied("reconciliation covers the whole season: its province's finance or auditor".into()))
        }
    }
}

/// Settling, recording payouts and closing a season: the finance office of its province.
pub fn settle_season(scope: &StaffScope, province: RegionCode) -> Result<(), Denied> {
    holds(scope, &[Role::Finance])?;
    if scope.region == province {
        Ok(())
    } else {
        Err(Denied(format!("only the finance office of {province} settles and closes this season")))
    }
}

/// Reading a merchant's money (its statement): finance and auditors over the merchant's city.
pub fn read_merchant_money(scope: &StaffScope, city: RegionCode) -> Result<(), Denied> {
    holds_over(scope, &READERS, city, "read the money of a merchant")
}

/// Uploading a merchant's till journal to match it: finance over the merchant's city.
/// Auditors change nothing and upload nothing.
pub fn match_till_journal(scope: &StaffScope, city: RegionCode) -> Result<(), Denied> {
    holds_over(scope, &[Role::Finance], city, "match the journal of a merchant")
}

/// Seeing merchants (the list, a merchant's account history): any role over the region.
pub fn see_merchants(scope: &StaffScope, region: RegionCode) -> Result<(), Denied> {
    holds_over(scope, &Role::ALL, region, "see merchants")
}

/// Managing a merchant (create, suspend, terminals, settlement account, card terms): the
/// admins over its city.
pub fn manage_merchant(scope: &StaffScope, city: RegionCode) -> Result<(), Denied> {
    holds_over(scope, &ADMINS, city, "manage merchants")
}

/// Acting on a citizen (freezing their card, revoking their sessions): the province admin of
/// the citizen's home region (the first digits of their ID number).
pub fn act_for_citizen(scope: &StaffScope, home: RegionCode) -> Result<(), Denied> {
    holds_over(scope, &[Role::ProvinceAdmin], home, "act for a citizen")
}

/// Verifying the whole ledger (one chain for every region): finance and auditors.
pub fn verify_ledger(scope: &StaffScope) -> Result<(), Denied> {
    holds(scope, &READERS)
}

/// Minting a key for `new`: an admin, within its own region.
pub fn mint_key(scope: &StaffScope, new: &StaffScope) -> Result<(), Denied> {
    holds(scope, &ADMINS)?;
    if scope.may_grant(new) {
        Ok(())
    } else {
        Err(Denied(format!(
            "a {} of {} cannot mint a {} key for {}",
            scope.role, scope.region, new.role, new.region
        )))
    }
}

/// Opening a season for a province: its province admin.
pub fn open_season(scope: &StaffScope, province: RegionCode) -> Result<(), Denied> {
    holds(scope, &[Role::ProvinceAdmin])?;
    if province.level() == RegionLevel::Province && scope.covers(province) {
        Ok(())
    } else {
        Err(Denied(format!("a province_admin of {} cannot open a season for {province}", scope.region)))
    }
}

/// Setting a season's points rate: the admin of its province.
pub fn set_season_points(scope: &StaffScope, province: RegionCode) -> Result<(), Denied> {
    holds_over(scope, &[Role::ProvinceAdmin], province, "set the points of a season")
}

/// Adding to a funder's budget, issuing and drawing its batches: the admin of exactly that
/// region (a province admin does not act for its cities' budgets).
pub fn act_as_funder(scope: &StaffScope, funder: RegionCode) -> Result<(), Denied> {
    holds(scope, &ADMINS)?;
    if scope.region == funder {
        Ok(())
    } else {
        Err(Denied(format!("only the admin of {funder} acts for its budget and batches")))
    }
}

/// Reading a batch's lottery entrants: any role over the batch's issuer.
pub fn read_batch_entrants(scope: &StaffScope, issuer: RegionCode) -> Result<(), Denied> {
    holds_over(scope, &Role::ALL, issuer, "see the entrants of a batch")
}

/// What a key may do, by the name of each capability above, each asked of the key's own region:
/// a season is of the key's province (its own, or its city's), a merchant of the key's region.
/// The console asks this (through `GET /v1/staff/me`) before it offers an action; the handlers
/// still ask the capability itself of the resource, so this list grants nothing.
pub fn capabilities(scope: &StaffScope) -> Vec<&'static str> {
    let province = scope.region.province();
    let own = scope.region;
    let asked: [(&'static str, bool); 14] = [
        ("read_season_finance", read_season_finance(scope, province).is_ok()),
        ("reconcile_season", reconcile_season(scope, province).is_ok()),
        ("settle_season", settle_season(scope, province).is_ok()),
        ("read_merchant_money", read_merchant_money(scope, own).is_ok()),
        ("match_till_journal", match_till_journal(scope, own).is_ok()),
        ("see_merchants", see_merchants(scope, own).is_ok()),
        ("manage_merchant", manage_merchant(scope, own).is_ok()),
        ("act_for_citizen", act_for_citizen(scope, own).is_ok()),
        ("verify_ledger", verify_ledger(scope).is_ok()),
        ("mint_key", mint_key(scope, scope).is_ok()),
        ("open_season", open_season(scope, province).is_ok()),
        ("set_season_points", set_season_points(scope, province).is_ok()),
        ("act_as_funder", act_as_funder(scope, own).is_ok()),
        ("read_batch_entrants", read_batch_entrants(scope, own).is_ok()),
    ];
    asked.into_iter().filter(|(_, allowed)| *allowed).map(|(name, _)| name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(role: Role, region: &str) -> StaffScope {
        StaffScope::new(role, region.parse().expect("region")).expect("scope")
    }

    fn region(code: &str) -> RegionCode {
        code.parse().expect("region")
    }

    #[test]
    fn auditors_read_their_region_only() {
        let shandong = region("370000");
        let qingdao = region("370200");
        assert_eq!(read_season_finance(&scope(Role::Auditor, "370000"), shandong), Ok(SeasonView::Whole));
        assert_eq!(
            read_season_finance(&scope(Role::Auditor, "370200"), shandong),
            Ok(SeasonView::City(qingdao))
        );
        assert!(read_season_finance(&scope(Role::Auditor, "330000"), shandong).is_err());
        assert!(reconcile_season(&scope(Role::Auditor, "370200"), shandong).is_err());
        assert!(read_merchant_money(&scope(Role::Auditor, "370100"), qingdao).is_err());
        assert!(read_merchant_money(&scope(Role::Auditor, "370000"), qingdao).is_ok());
        assert!(match_till_journal(&scope(Role::Auditor, "370000"), qingdao).is_err());
        assert!(match_till_journal(&scope(Role::Finance, "370200"), qingdao).is_ok());
    }

    #[test]
    fn citizens_are_acted_for_by_their_own_province() {
        let home = region("370200");
        assert!(act_for_citizen(&scope(Role::ProvinceAdmin, "370000"), home).is_ok());
        assert!(act_for_citizen(&scope(Role::ProvinceAdmin, "330000"), home).is_err());
        assert!(act_for_citizen(&scope(Role::CityAdmin, "370200"), home).is_err());
    }

    #[test]
    fn capabilities_follow_the_rules() {
        let province_finance = capabilities(&scope(Role::Finance, "370000"));
        for action in ["read_season_finance", "reconcile_season", "settle_season", "verify_ledger"] {
            assert!(province_finance.contains(&action), "{action}");
        }
        assert!(!province_finance.contains(&"manage_merchant"));
        let city_finance = capabilities(&scope(Role::Finance, "370200"));
        assert!(city_finance.contains(&"read_season_finance"));
        assert!(!city_finance.contains(&"reconcile_season"));
        assert!(!city_finance.contains(&"settle_season"));
        let auditor = capabilities(&scope(Role::Auditor, "370000"));
        assert!(auditor.contains(&"reconcile_season") && !auditor.contains(&"settle_season"));
        let city_admin = capabilities(&scope(Role::CityAdmin, "370200"));
        assert!(city_admin.contains(&"manage_merchant") && city_admin.contains(&"act_as_funder"));
        assert!(!city_admin.contains(&"open_season") && !city_admin.contains(&"read_season_finance"));
        assert!(capabilities(&scope(Role::ProvinceAdmin, "370000")).contains(&"open_season"));
    }
}
