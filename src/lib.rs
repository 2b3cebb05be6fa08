//! Wenhui (文惠): the transactional service behind a province's cultural consumption season.
//! See ARCHITECTURE.md for the bird's-eye view and the code map.

pub mod audit;
pub mod citizens;
pub mod cli;
pub mod coalesce;
pub mod domain;
pub mod finance;
pub mod housekeeping;
pub mod http;
pub mod journal_match;
pub mod qr;
pub mod qr_image;
pub mod redeem_writer;
pub mod report_files;
pub mod rush;
pub mod server;
pub mod signing;
pub mod staff_keys;
pub mod storage;
pub mod telemetry;
pub mod ttl_cache;
