//! The integration suite: one test binary (one link step) holding every module. Each test that
//! touches a database runs on both backends through the `both_backends!` macro.

mod common;

mod architecture;
mod authz_matrix;
mod browser;
mod browser_admin;
mod browser_citizen;
mod browser_console;
mod browser_risk;
mod browser_till;
mod card;
mod claims;
mod cli;
mod codes;
mod crash;
mod demo;
mod finance;
mod finance_files;
mod finance_props;
mod fraud;
mod hardening;
mod holds;
mod http_foundation;
mod ledger;
mod ledger_props;
mod lottery_audit;
mod machine;
mod migrations;
mod nodes;
mod openapi;
mod ops_metrics;
mod pages;
mod public_reads;
mod rate_store;
mod replica;
mod sessions;
mod staff_people;
mod till;
mod till_cli;
mod till_quote;
mod waitlist;
