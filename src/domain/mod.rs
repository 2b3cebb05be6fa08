//! The domain: money, regions, the ledger's shapes and rules, staff roles.
//!
//! Nothing in here knows about HTTP or SQL. Values are parsed once at the edge into these types
//! ("parse, don't validate") and carried as such through the service.

pub mod access;
pub mod accounts;
pub mod card;
pub mod checkpoint;
pub mod citizen;
pub mod entries;
pub mod error_code;
pub mod finance;
pub mod fraud;
pub mod funding;
pub mod ids;
pub mod ledger;
pub mod merchant;
pub mod money;
pub mod one_time_code;
pub mod region;
pub mod season;
pub mod staff;
pub mod text;
pub mod time;
