//! Wenhui (文惠): the transactional service behind a province's cultural consumption season.
//! See ARCHITECTURE.md for the bird's-eye view and the code map.

pub mod app;
pub mod cli;
pub mod demo;
pub mod domain;
pub mod http;
pub mod providers;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod web;
