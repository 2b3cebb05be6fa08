//! Till-side SDK for Wenhui (文惠).
//!
//! - [`token`]: the signed QR token format (version 1): parse and verify offline against the
//!   service's published keys (`GET /v1/keys`).
//! - [`signing`]: the terminal request signature (version 1) that every till request carries.
//! - [`client`]: [`TillClient`], an async client that signs, retries safely and journals every
//!   call: redeem, reverse, get, pay with the benefit card and reverse that, set the merchant's
//!   member terms, fetch keys, verify offline (voucher and card tokens alike).
//! - [`journal`]: the till's own append-only record of every intent, attempt and answer.
//! - [`wire`]: the request bodies and answers of the terminal-signed endpoints, the one
//!   definition the service builds and parses too (with `ToSchema` behind the `openapi` feature).
//! - `ui` (feature `ui`, on by default): the till page of `wenhui-till ui`, an axum server on
//!   127.0.0.1. A till that only verifies QR codes or calls the API builds with
//!   `default-features = false` and carries no HTTP server.
//!
//! Both formats are specified in `docs/qr-token.md` and `docs/terminal-signing.md` of the
//! Wenhui repository, with test vectors, so a till vendor can implement them in any language.

pub mod client;
pub mod journal;
pub mod signing;
pub mod token;
#[cfg(feature = "ui")]
pub mod ui;
pub mod wire;

pub use client::{
    CardPaymentRequest, ClientError, ClientOptions, RedeemRequest, Registration, TillClient, TillKey,
    register_terminal,
};
pub use journal::{Journal, JournalError, JournalLine};
pub use wire::{
    CardPayment, CardPaymentView, CardReversal, FunderShare, KeyRing, OrderBody, Quote, QuoteTerms,
    ReasonBody, Redemption, RedemptionView, Reversal, VerificationKey,
};

/// Compiles the README's Rust example as a doctest (it is not run).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
