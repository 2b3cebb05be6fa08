//! The till: a redemption and a reversal decided (`redeem`) and committed in groups (`writer`), the reads they coalesce (`coalesce`) and
//! cache (`ttl_cache`), and a till's journal matched against the server's record
//! (`journal_match`).

pub mod journal_match;
pub mod redeem;
pub mod ttl_cache;
pub mod writer;
