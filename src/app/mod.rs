//! The application: what the service does, between the HTTP layer and the command line above
//! and the domain and storage below. It knows neither axum nor SQL: it takes parsed values,
//! applies the domain's rules, and reads and writes through the storage traits.
//!
//! One module per capability: `claims` (the claim rush's writer and the sweeper), `seasons`
//! (seasons, budgets, batches, lottery draws), `lottery_audit` (a draw's public audit and its verifier), `till` (redemptions and reversals), `card` (the
//! benefit card), `merchants` (settlement account changes), `finance`, `audit` (the ledger's
//! verification, export and checkpoints), `citizens`, `codes` (one-time codes by SMS),
//! `providers` (the SMS gateway and the real-name check, as traits), `staff`, `qr`,
//! `housekeeping`, `health` (the node's state for `/readyz` and `/metrics`), `read_side` (which
//! store the read-only requests read: a standby or the primary), and `signing` (the service's own
//! Ed25519 keys). What they refuse is an
//! [`error::AppError`].

pub mod audit;
pub mod card;
pub mod citizens;
pub mod claims;
pub mod coalesce;
pub mod codes;
pub mod error;
pub mod events;
pub mod finance;
pub mod fraud;
pub mod health;
pub mod housekeeping;
pub mod lottery_audit;
pub mod merchants;
pub mod own_thread;
pub mod providers;
pub mod public_reads;
pub mod qr;
pub mod read_side;
pub mod seasons;
pub mod secrets;
pub mod signing;
pub mod sold_out;
pub mod staff;
pub mod till;
pub mod waitlist;
pub mod zh;
