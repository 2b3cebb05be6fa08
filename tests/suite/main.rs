//! The integration suite: one test binary (one link step) holding every module. Each test that
//! touches a database runs on both backends through the `both_backends!` macro.

mod common;

mod architecture;
mod authz_matrix;
mod card;
mod claims;
mod cli;
mod codes;
mod crash;
mod finance;
mod finance_props;
mod http_foundation;
mod ledger;
mod ledger_props;
mod migrations;
mod openapi;
mod sessions;
mod till;
mod till_cli;
