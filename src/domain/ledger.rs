//! The append-only double-entry ledger: accounts, entries, postings, and the hash chain.
//!
//! Storage persists these shapes; the rules live here so that both backends, `ledger verify` and
//! the offline verifier of an export apply exactly the same ones.
//!
//! # Canonical encoding, version 1
//!
//! An entry's hash is `SHA-256(prev_hash || canonical_v1(entry))` where `prev_hash` is the 32-byte
//! hash of the entry before it (32 zero bytes for the first entry) and `canonical_v1` is:
//!
//! ```text
//! "wenhui-ledger-entry" 0x00 0x01          tag and format version (1)
//! u64 BE  seq
//! 16 B    id (UUID bytes)
//! str     kind
//! str     reference
//! i64 BE  posted_at (microseconds since the Unix epoch, UTC)
//! u32 BE  number of postings
//! per posting, in order:
//!   str     account address
//!   u8      side: 'D' (0x44) or 'C' (0x43)
//!   i64 BE  amount in fen
//! ```
//! where `str` is a u32 BE byte length followed by the UTF-8 bytes. Every field has a fixed width
//! or a length prefix, so no two different entries encode to the same bytes.

use std::collections::HashMap;
use std::fmt;

use ring::digest;
use uuid::Uuid;

use super::money::Fen;
use super::time::Timestamp;

/// Most postings one entry may carry: a redemption splits across a handful of funders.
pub const MAX_POSTINGS_PER_ENTRY: usize = 64;
/// Most entries one atomic batch may carry.
pub const MAX_ENTRIES_PER_BATCH: usize = 8_190;
const MAX_ADDRESS_LEN: usize = 200;
const MAX_KIND_LEN: usize = 64;
const MAX_REFERENCE_LEN: usize = 200;
const ENCODING_TAG: &[u8] = b"wenhui-ledger-entry\x00\x01";
pub const GENESIS_HASH: EntryHash = EntryHash([0; 32]);

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EntryHash(pub [u8; 32]);

impl EntryHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<EntryHash> {
        let bytes = hex::decode(text).ok()?;
        Some(EntryHash(bytes.try_into().ok()?))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<EntryHash> {
        Some(EntryHash(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({})", self.to_hex())
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Side {
    #[serde(rename = "D")]
    Debit,
    #[serde(rename = "C")]
    Credit,
}

impl Side {
    pub fn code(self) -> &'static str {
        match self {
            Side::Debit => "D",
            Side::Credit => "C",
        }
    }

    pub fn from_code(code: &str) -> Option<Side> {
        match code {
            "D" => Some(Side::Debit),
            "C" => Some(Side::Credit),
            _ => None,
        }
    }
}

/// What an account counts. The chart of accounts (`accounts.rs`) keeps the benefit card's points
/// under addresses whose first segment is `points` or `card`; every other account counts fen.
/// An entry balances in each unit separately: one that debits 5 points and credits 5 fen balances
/// in neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    Fen,
    Points,
}

impl Unit {
    pub fn of(address: &str) -> Unit {
        match address.split(':').next() {
            Some("points" | "card") => Unit::Points,
            _ => Unit::Fen,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Fen => "fen",
            Unit::Points => "points",
        }
    }
}

/// The first unit (fen, then points) in which an entry's debits and credits differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("debits {debits} {} != credits {credits} {}", .unit.name(), .unit.name())]
pub struct UnitImbalance {
    pub unit: Unit,
    pub debits: i128,
    pub credits: i128,
}

/// Sums debits and credits per unit over `(account, side, amount)` postings; `Err` names the first
/// unit that does not balance. The one balance rule of the write path and of both verifiers.
pub fn balance_per_unit<'a>(
    postings: impl IntoIterator<Item = (&'a str, Side, i64)>,
) -> Result<(), UnitImbalance> {
    let mut fen = UnitImbalance { unit: Unit::Fen, debits: 0, credits: 0 };
    let mut points = UnitImbalance { unit: Unit::Points, debits: 0, credits: 0 };
    for (account, side, amount) in postings {
        let totals = match Unit::of(account) {
            Unit::Fen => &mut fen,
            Unit::Points => &mut points,
        };
        match side {
            Side::Debit => totals.debits += i128::from(amount),
            Side::Credit => totals.credits += i128::from(amount),
        }
    }
    match [fen, points].into_iter().find(|totals| totals.debits != totals.credits) {
        Some(imbalance) => Err(imbalance),
        None => Ok(()),
    }
}

/// Balance limits, after TigerBeetle's account flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AccountFlags(u32);

impl AccountFlags {
    pub const NONE: AccountFlags = AccountFlags(0);
    /// A credit-normal account that must never go below zero (a pool, a reserve, a liability).
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: AccountFlags = AccountFlags(1);
    /// A debit-normal account that must never go below zero.
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: AccountFlags = AccountFlags(2);

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn from_bits(bits: u32) -> Option<AccountFlags> {
        (bits & !3 == 0).then_some(AccountFlags(bits))
    }

    pub fn contains(self, other: AccountFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// A structured account address: `:`-separated segments of `[a-z0-9_-]`, such as
/// `season:0190c0de-7a1b-7c3d-8e4f-0123456789ab:funder:370000:pool` (the chart is `accounts.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountAddress(String);

impl AccountAddress {
    pub fn parse(text: &str) -> Result<AccountAddress, LedgerError> {
        let valid_segment = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        if text.len() > MAX_ADDRESS_LEN || !text.split(':').all(valid_segment) {
            return Err(LedgerError::BadAddress(text.chars().take(80).collect()));
        }
        Ok(AccountAddress(text.to_owned()))
    }

    /// Builds an address from segments the program itself produced.
    pub fn from_segments(segments: &[&str]) -> AccountAddress {
        let text = segments.join(":");
        AccountAddress::parse(&text).unwrap_or_else(|e| panic!("programmer error: {e}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an account is: where it lives, which side it normally grows on, and its limits.
/// Accounts open on first use; a later use with a different spec is refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccountSpec {
    pub address: AccountAddress,
    pub normal_side: Side,
    pub flags: AccountFlags,
}

impl AccountSpec {
    /// A credit-normal account that must never go below zero.
    pub fn credit_limited(address: AccountAddress) -> AccountSpec {
        AccountSpec {
            address,
            normal_side: Side::Credit,
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        }
    }

    /// A debit-normal account with no limit (a source of funds outside the programme).
    pub fn debit_unlimited(address: AccountAddress) -> AccountSpec {
        AccountSpec { address, normal_side: Side::Debit, flags: AccountFlags::NONE }
    }

    /// A debit-normal account that must never go below zero.
    pub fn debit_limited(address: AccountAddress) -> AccountSpec {
        AccountSpec { address, normal_side: Side::Debit, flags: AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPosting {
    pub account: AccountSpec,
    pub side: Side,
    /// Signed so that a bad caller's negative amount reaches validation instead of a panic.
    pub amount_fen: i64,
}

/// An entry as a caller proposes it. `id` is the caller's (UUIDv7), `reference` its idempotency
/// reference: posting the same reference again with the same content is a no-op that returns the
/// first receipt; with different content it is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    pub id: Uuid,
    pub kind: String,
    pub reference: String,
    pub postings: Vec<NewPosting>,
}

impl NewEntry {
    pub fn new(kind: &str, reference: impl Into<String>, postings: Vec<NewPosting>) -> NewEntry {
        NewEntry { id: Uuid::now_v7(), kind: kind.to_owned(), reference: reference.into(), postings }
    }

    /// A simple two-posting transfer: `amount` leaves `from` (debit) and reaches `to` (credit).
    pub fn transfer(
        kind: &str,
        reference: impl Into<String>,
        from: AccountSpec,
        to: AccountSpec,
        amount: Fen,
    ) -> NewEntry {
        let amount_fen = amount.as_fen();
        NewEntry::new(
            kind,
            reference,
            vec![
                NewPosting { account: from, side: Side::Debit, amount_fen },
                NewPosting { account: to, side: Side::Credit, amount_fen },
            ],
        )
    }

    /// The rules every entry obeys before anything is written.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let kind_ok = !self.kind.is_empty()
            && self.kind.len() <= MAX_KIND_LEN
            && self.kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit());
        if !kind_ok {
            return Err(LedgerError::BadKind);
        }
        if self.reference.is_empty() || self.reference.len() > MAX_REFERENCE_LEN {
            return Err(LedgerError::BadReference);
        }
        if self.postings.len() < 2 {
            return Err(LedgerError::TooFewPostings);
        }
        if self.postings.len() > MAX_POSTINGS_PER_ENTRY {
            return Err(LedgerError::TooManyPostings);
        }
        let (mut debits, mut credits) = (0i64, 0i64);
        for posting in &self.postings {
            let amount =
                Fen::new(posting.amount_fen).map_err(|_| LedgerError::BadAmount(posting.amount_fen))?;
            if amount.is_zero() {
                return Err(LedgerError::BadAmount(0));
            }
            let total = match posting.side {
                Side::Debit => &mut debits,
                Side::Credit => &mut credits,
            };
            *total = total.checked_add(amount.as_fen()).ok_or(LedgerError::BadAmount(i64::MAX))?;
        }
        if debits == 0 || credits == 0 {
            return Err(LedgerError::OneSided);
        }
        if debits != credits {
            return Err(LedgerError::Unbalanced { debits_fen: debits, credits_fen: credits });
        }
        let postings = self.postings.iter().map(|p| (p.account.address.as_str(), p.side, p.amount_fen));
        balance_per_unit(postings).map_err(LedgerError::UnbalancedUnit)
    }
}

/// A posting as recorded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Posting {
    pub account: String,
    pub side: Side,
    pub amount_fen: i64,
}

/// An entry as recorded in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostedEntry {
    pub seq: i64,
    pub id: Uuid,
    pub kind: String,
    pub reference: String,
    pub posted_at: Timestamp,
    pub prev_hash: EntryHash,
    pub hash: EntryHash,
    pub postings: Vec<Posting>,
}

/// What posting one entry produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostReceipt {
    pub entry_id: Uuid,
    pub seq: i64,
    pub hash: EntryHash,
    pub posted_at: Timestamp,
    /// False when the reference had already been posted with the same content.
    pub newly_posted: bool,
}

/// The end of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerHead {
    pub seq: i64,
    pub hash: EntryHash,
    pub posted_at: Timestamp,
}

impl LedgerHead {
    pub const GENESIS: LedgerHead = LedgerHead { seq: 0, hash: GENESIS_HASH, posted_at: Timestamp::EPOCH };
}

/// An account's running totals, maintained beside the postings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Balance {
    pub debits_fen: i64,
    pub credits_fen: i64,
}

impl Balance {
    pub fn apply(&mut self, side: Side, amount_fen: i64) -> Option<()> {
        let total = match side {
            Side::Debit => &mut self.debits_fen,
            Side::Credit => &mut self.credits_fen,
        };
        *total = total.checked_add(amount_fen)?;
        Some(())
    }

    /// The balance on the account's normal side (may be negative for unlimited accounts).
    pub fn net_fen(&self, normal_side: Side) -> i64 {
        match normal_side {
            Side::Credit => self.credits_fen - self.debits_fen,
            Side::Debit => self.debits_fen - self.credits_fen,
        }
    }

    pub fn violates(&self, flags: AccountFlags) -> bool {
        (flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS) && self.debits_fen > self.credits_fen)
            || (flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
                && self.credits_fen > self.debits_fen)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("an entry needs at least two postings")]
    TooFewPostings,
    #[error("an entry may carry at most {MAX_POSTINGS_PER_ENTRY} postings")]
    TooManyPostings,
    #[error("an entry needs both a debit and a credit")]
    OneSided,
    #[error("posting amounts must be positive and at most the maximum amount (got {0} fen)")]
    BadAmount(i64),
    #[error("debits ({debits_fen} fen) do not equal credits ({credits_fen} fen)")]
    Unbalanced { debits_fen: i64, credits_fen: i64 },
    #[error("debits and credits must balance in each unit: {0}")]
    UnbalancedUnit(UnitImbalance),
    #[error("entry kind must be 1-64 characters of [a-z0-9_]")]
    BadKind,
    #[error("entry reference must be 1-200 bytes")]
    BadReference,
    #[error("bad account address {0:?}")]
    BadAddress(String),
    #[error("a batch holds 1 to {MAX_ENTRIES_PER_BATCH} entries")]
    BadBatchSize,
    #[error("account {address} already exists with a different side or flags")]
    AccountSpecConflict { address: String },
    #[error("entry {index} of the batch would take account {address} past its limit")]
    LimitExceeded { index: usize, address: String },
    #[error("reference {reference:?} was already posted with different content")]
    ReferenceConflict { reference: String },
    #[error("reference {reference:?} appears twice in one batch")]
    DuplicateInBatch { reference: String },
}

impl LedgerError {
    /// The batch index of the entry at fault, where the error names one.
    pub fn with_index(self, index: usize) -> IndexedLedgerError {
        IndexedLedgerError { index, error: self }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entry {index} of the batch: {error}")]
pub struct IndexedLedgerError {
    pub index: usize,
    pub error: LedgerError,
}

/// The fields that go into an entry's hash, borrowed from either a new or a recorded entry.
pub struct HashInput<'a> {
    pub seq: i64,
    pub id: Uuid,
    pub kind: &'a str,
    pub reference: &'a str,
    pub posted_at: Timestamp,
    pub postings: &'a [(&'a str, Side, i64)],
}

fn push_str(buffer: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    buffer.extend_from_slice(&len.to_be_bytes());
    buffer.extend_from_slice(text.as_bytes());
}

/// The canonical bytes of an entry, format version 1 (see the module documentation).
pub fn canonical_v1(input: &HashInput<'_>) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(128 + input.postings.len() * 64);
    buffer.extend_from_slice(ENCODING_TAG);
    buffer.extend_from_slice(&(input.seq as u64).to_be_bytes());
    buffer.extend_from_slice(input.id.as_bytes());
    push_str(&mut buffer, input.kind);
    push_str(&mut buffer, input.reference);
    buffer.extend_from_slice(&input.posted_at.unix_us().to_be_bytes());
    let count = u32::try_from(input.postings.len()).unwrap_or(u32::MAX);
    buffer.extend_from_slice(&count.to_be_bytes());
    for (account, side, amount_fen) in input.postings {
        push_str(&mut buffer, account);
        buffer.push(side.code().as_bytes()[0]);
        buffer.extend_from_slice(&amount_fen.to_be_bytes());
    }
    buffer
}

pub fn entry_hash(prev: &EntryHash, input: &HashInput<'_>) -> EntryHash {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(&prev.0);
    context.update(&canonical_v1(input));
    let digest = context.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    EntryHash(out)
}

impl PostedEntry {
    pub fn compute_hash(&self, prev: &EntryHash) -> EntryHash {
        let postings: Vec<(&str, Side, i64)> =
            self.postings.iter().map(|p| (p.account.as_str(), p.side, p.amount_fen)).collect();
        entry_hash(
            prev,
            &HashInput {
                seq: self.seq,
                id: self.id,
                kind: &self.kind,
                reference: &self.reference,
                posted_at: self.posted_at,
                postings: &postings,
            },
        )
    }
}

/// What is wrong with a recorded entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("entry seq {seq} ({id}): expected sequence number {expected}")]
    SequenceGap { seq: i64, id: Uuid, expected: i64 },
    #[error("entry seq {seq} ({id}): prev_hash does not match the previous entry's hash")]
    PrevHashMismatch { seq: i64, id: Uuid },
    #[error("entry seq {seq} ({id}): stored hash does not match its contents (tampered?)")]
    HashMismatch { seq: i64, id: Uuid },
    #[error("entry seq {seq} ({id}): unbalanced or malformed: {reason}")]
    Malformed { seq: i64, id: Uuid, reason: String },
    #[error("ledger head says seq {head_seq} hash {head_hash}, but the chain ends at seq {seq} hash {hash}")]
    HeadMismatch { head_seq: i64, head_hash: String, seq: i64, hash: String },
}

/// Walks a chain from the first entry, one entry at a time, so that a ledger of any size is
/// verified in constant memory.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: EntryHash,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { next_seq: 1, prev_hash: GENESIS_HASH }
    }
}

impl ChainVerifier {
    pub fn check(&mut self, entry: &PostedEntry) -> Result<(), ChainBreak> {
        let (seq, id) = (entry.seq, entry.id);
        if seq != self.next_seq {
            return Err(ChainBreak::SequenceGap { seq, id, expected: self.next_seq });
        }
        if entry.prev_hash != self.prev_hash {
            return Err(ChainBreak::PrevHashMismatch { seq, id });
        }
        if entry.compute_hash(&self.prev_hash) != entry.hash {
            return Err(ChainBreak::HashMismatch { seq, id });
        }
        check_balanced(entry).map_err(|reason| ChainBreak::Malformed { seq, id, reason })?;
        self.next_seq += 1;
        self.prev_hash = entry.hash;
        Ok(())
    }

    /// Entries checked so far.
    pub fn checked(&self) -> i64 {
        self.next_seq - 1
    }

    pub fn head_hash(&self) -> EntryHash {
        self.prev_hash
    }
}

fn check_balanced(entry: &PostedEntry) -> Result<(), String> {
    if entry.postings.len() < 2 {
        return Err("fewer than two postings".into());
    }
    if let Some(posting) = entry.postings.iter().find(|p| p.amount_fen <= 0) {
        return Err(format!(
            "non-positive amount {} {}",
            posting.amount_fen,
            Unit::of(&posting.account).name()
        ));
    }
    balance_per_unit(entry.postings.iter().map(|p| (p.account.as_str(), p.side, p.amount_fen)))
        .map_err(|imbalance| imbalance.to_string())
}

/// An entry whose place in the chain is fixed: ready to be written.
#[derive(Debug)]
pub struct Sealed<'a> {
    pub entry: &'a NewEntry,
    pub seq: i64,
    pub posted_at: Timestamp,
    pub prev_hash: EntryHash,
    pub hash: EntryHash,
}

/// Applies `fresh` (each with its index in the caller's batch) to `balances`, keyed by account
/// address, in order, and chains them after `head`, all posted at `posted_at`.
///
/// An entry is atomic: account limits hold for the balances after the whole entry, not between
/// its postings. The first entry that would take an account past its limit (or overflow a
/// total) refuses the whole batch; `balances` is then partly applied and must be dropped.
/// Accounts missing from `balances` start at zero.
pub fn seal<'a>(
    head: &LedgerHead,
    posted_at: Timestamp,
    fresh: &[(usize, &'a NewEntry)],
    balances: &mut HashMap<&'a str, Balance>,
) -> Result<Vec<Sealed<'a>>, IndexedLedgerError> {
    let (mut seq, mut prev_hash) = (head.seq, head.hash);
    let mut sealed = Vec::with_capacity(fresh.len());
    for &(index, entry) in fresh {
        apply_within_limits(entry, balances).map_err(|address| {
            LedgerError::LimitExceeded { index, address: address.to_owned() }.with_index(index)
        })?;
        seq += 1;
        let hash = entry_hash(&prev_hash, &entry.hash_input(seq, posted_at, &entry.posting_triples()));
        sealed.push(Sealed { entry, seq, posted_at, prev_hash, hash });
        prev_hash = hash;
    }
    Ok(sealed)
}

/// Adds `entry`'s postings to `balances`; the address of the first account past its limit
/// (or whose total would overflow) if any.
fn apply_within_limits<'a>(
    entry: &'a NewEntry,
    balances: &mut HashMap<&'a str, Balance>,
) -> Result<(), &'a str> {
    for posting in &entry.postings {
        let address = posting.account.address.as_str();
        let balance = balances.entry(address).or_default();
        balance.apply(posting.side, posting.amount_fen).ok_or(address)?;
    }
    for posting in &entry.postings {
        let address = posting.account.address.as_str();
        if balances.get(address).is_some_and(|b| b.violates(posting.account.flags)) {
            return Err(address);
        }
    }
    Ok(())
}

impl NewEntry {
    /// The postings as the hash takes them: address, side, amount.
    fn posting_triples(&self) -> Vec<(&str, Side, i64)> {
        self.postings.iter().map(|p| (p.account.address.as_str(), p.side, p.amount_fen)).collect()
    }

    fn hash_input<'a>(
        &'a self,
        seq: i64,
        posted_at: Timestamp,
        postings: &'a [(&'a str, Side, i64)],
    ) -> HashInput<'a> {
        HashInput { seq, id: self.id, kind: &self.kind, reference: &self.reference, posted_at, postings }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> AccountSpec {
        AccountSpec::credit_limited(AccountAddress::parse(name).expect("valid"))
    }

    fn posting(name: &str, side: Side, amount_fen: i64) -> NewPosting {
        NewPosting { account: account(name), side, amount_fen }
    }

    /// A posting to a debit-normal account with no limit: a source of funds.
    fn source(name: &str, side: Side, amount_fen: i64) -> NewPosting {
        let account = AccountSpec::debit_unlimited(AccountAddress::parse(name).expect("valid"));
        NewPosting { account, side, amount_fen }
    }

    fn entry(reference: &str, postings: Vec<NewPosting>) -> NewEntry {
        NewEntry::new("t", reference, postings)
    }

    #[test]
    fn seal_chains_entries_after_the_head() {
        let a = entry("r1", vec![source("x", Side::Debit, 5), posting("b", Side::Credit, 5)]);
        let b = entry("r2", vec![posting("b", Side::Debit, 3), source("x", Side::Credit, 3)]);
        let at = Timestamp::from_unix_us(1_000);
        let mut balances = HashMap::from([("b", Balance { debits_fen: 0, credits_fen: 10 })]);
        let sealed = seal(&LedgerHead::GENESIS, at, &[(0, &a), (1, &b)], &mut balances).expect("sealed");
        assert_eq!(sealed.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(sealed[0].prev_hash, GENESIS_HASH);
        assert_eq!(sealed[1].prev_hash, sealed[0].hash);
        let postings = a.posting_triples();
        assert_eq!(sealed[0].hash, entry_hash(&GENESIS_HASH, &a.hash_input(1, at, &postings)));
        assert!(sealed.iter().all(|s| s.posted_at == at));
        assert_eq!(balances["x"], Balance { debits_fen: 5, credits_fen: 3 });
        assert_eq!(balances["b"], Balance { debits_fen: 3, credits_fen: 15 });
    }

    #[test]
    fn seal_refuses_the_first_entry_past_a_limit_with_its_batch_index() {
        // "a" is credit limited: its debits may not exceed its credits.
        let fine = entry("r1", vec![posting("a", Side::Credit, 5), source("x", Side::Debit, 5)]);
        let over = entry("r2", vec![posting("a", Side::Debit, 6), source("x", Side::Credit, 6)]);
        let mut balances = HashMap::new();
        let refused = seal(&LedgerHead::GENESIS, Timestamp::EPOCH, &[(3, &fine), (7, &over)], &mut balances)
            .expect_err("a goes to -1");
        assert_eq!(refused.index, 7);
        assert_eq!(refused.error, LedgerError::LimitExceeded { index: 7, address: "a".into() });
    }

    #[test]
    fn seal_judges_limits_after_the_whole_entry() {
        // Debiting "a" before crediting it within one entry is fine: the entry is atomic.
        let swap = entry(
            "r1",
            vec![
                posting("a", Side::Debit, 4),
                posting("a", Side::Credit, 4),
                source("x", Side::Debit, 1),
                posting("y", Side::Credit, 1),
            ],
        );
        let mut balances = HashMap::new();
        assert!(seal(&LedgerHead::GENESIS, Timestamp::EPOCH, &[(0, &swap)], &mut balances).is_ok());
        // A debit-limited account may not take more credits than debits.
        let limited = AccountSpec::debit_limited(AccountAddress::parse("d").expect("valid"));
        let over = entry(
            "r2",
            vec![
                NewPosting { account: limited, side: Side::Credit, amount_fen: 2 },
                source("x", Side::Debit, 2),
            ],
        );
        let refused = seal(&LedgerHead::GENESIS, Timestamp::EPOCH, &[(0, &over)], &mut balances);
        let refused = refused.expect_err("d past its limit");
        assert_eq!(refused.error, LedgerError::LimitExceeded { index: 0, address: "d".into() });
    }

    #[test]
    fn seal_refuses_a_total_that_would_overflow() {
        let big = entry("r1", vec![source("x", Side::Debit, 1), posting("y", Side::Credit, 1)]);
        let mut balances = HashMap::from([("x", Balance { debits_fen: i64::MAX, credits_fen: 0 })]);
        let refused = seal(&LedgerHead::GENESIS, Timestamp::EPOCH, &[(0, &big)], &mut balances);
        let refused = refused.expect_err("overflow");
        assert_eq!(refused.error, LedgerError::LimitExceeded { index: 0, address: "x".into() });
    }

    #[test]
    fn validation_rules() {
        let ok = NewEntry::new("t", "r", vec![posting("a", Side::Debit, 5), posting("b", Side::Credit, 5)]);
        assert_eq!(ok.validate(), Ok(()));
        let unbalanced =
            NewEntry::new("t", "r", vec![posting("a", Side::Debit, 5), posting("b", Side::Credit, 4)]);
        assert!(matches!(unbalanced.validate(), Err(LedgerError::Unbalanced { .. })));
        let one_sided =
            NewEntry::new("t", "r", vec![posting("a", Side::Debit, 5), posting("b", Side::Debit, 5)]);
        assert_eq!(one_sided.validate(), Err(LedgerError::OneSided));
        let zero = NewEntry::new("t", "r", vec![posting("a", Side::Debit, 0), posting("b", Side::Credit, 0)]);
        assert_eq!(zero.validate(), Err(LedgerError::BadAmount(0)));
        let negative =
            NewEntry::new("t", "r", vec![posting("a", Side::Debit, -5), posting("b", Side::Credit, -5)]);
        assert_eq!(negative.validate(), Err(LedgerError::BadAmount(-5)));
        let empty = NewEntry::new("t", "r", vec![]);
        assert_eq!(empty.validate(), Err(LedgerError::TooFewPostings));
    }

    #[test]
    fn the_unit_of_an_account_follows_the_chart() {
        use crate::domain::accounts;
        let (season, card) = (crate::domain::ids::SeasonId::new_v7(), crate::domain::ids::CardId::new_v7());
        let (batch, merchant) =
            (crate::domain::ids::BatchId::new_v7(), crate::domain::ids::MerchantId::new_v7());
        let funder = "370000".parse().expect("region");
        let points = [
            accounts::points_earned(season),
            accounts::points_exchanged(season),
            accounts::points_expired(season),
            accounts::points_reversed(season),
            accounts::card_points(card, season),
            accounts::card_points_debt(card, season),
        ];
        for spec in points {
            assert_eq!(Unit::of(spec.address.as_str()), Unit::Points, "{}", spec.address);
        }
        let fen = [
            accounts::appropriation(season, funder),
            accounts::pool(season, funder),
            accounts::reserve(season, batch, funder),
            accounts::issued(season, batch, funder),
            accounts::payable(season, merchant, funder),
            accounts::settled(season, merchant, funder),
            accounts::paid(season, merchant, funder),
        ];
        for spec in fen {
            assert_eq!(Unit::of(spec.address.as_str()), Unit::Fen, "{}", spec.address);
        }
        // A fen account whose name merely contains "points" stays fen.
        assert_eq!(Unit::of("season:s:pointsless"), Unit::Fen);
    }

    /// Debits 5 points, credits 5 fen: the totals agree, each unit does not.
    fn mixed_postings() -> Vec<NewPosting> {
        let card_points =
            AccountSpec::credit_limited(AccountAddress::from_segments(&["card", "c", "points"]));
        vec![
            NewPosting { account: card_points, side: Side::Debit, amount_fen: 5 },
            posting("season:s:pool", Side::Credit, 5),
        ]
    }

    #[test]
    fn an_entry_balances_in_each_unit_separately() {
        let mixed = NewEntry::new("t", "r", mixed_postings());
        assert_eq!(
            mixed.validate(),
            Err(LedgerError::UnbalancedUnit(UnitImbalance { unit: Unit::Fen, debits: 0, credits: 5 }))
        );
        let points = |name: &str, side| {
            let account = AccountSpec::credit_limited(AccountAddress::parse(name).expect("valid"));
            NewPosting { account, side, amount_fen: 7 }
        };
        let both_balanced = NewEntry::new(
            "t",
            "r",
            vec![
                points("points:s:earned", Side::Debit),
                points("card:c:season:s:points", Side::Credit),
                posting("a", Side::Debit, 3),
                posting("b", Side::Credit, 3),
            ],
        );
        assert_eq!(both_balanced.validate(), Ok(()));
    }

    #[test]
    fn the_chain_verifier_refuses_a_well_chained_entry_that_mixes_units() {
        let postings: Vec<Posting> = mixed_postings()
            .into_iter()
            .map(|p| Posting {
                account: p.account.address.to_string(),
                side: p.side,
                amount_fen: p.amount_fen,
            })
            .collect();
        let mut entry = PostedEntry {
            seq: 1,
            id: Uuid::nil(),
            kind: "forged".into(),
            reference: "forged:1".into(),
            posted_at: Timestamp::EPOCH,
            prev_hash: GENESIS_HASH,
            hash: GENESIS_HASH,
            postings,
        };
        entry.hash = entry.compute_hash(&GENESIS_HASH);
        let refused = ChainVerifier::default().check(&entry);
        assert_eq!(
            refused,
            Err(ChainBreak::Malformed {
                seq: 1,
                id: Uuid::nil(),
                reason: "debits 0 fen != credits 5 fen".into()
            })
        );
    }

    #[test]
    fn addresses_are_structured() {
        assert!(AccountAddress::parse("season:0190c0de-0000-7000-8000-000000000000:pool:370000").is_ok());
        assert!(AccountAddress::parse("Season:x").is_err());
        assert!(AccountAddress::parse("a::b").is_err());
        assert!(AccountAddress::parse("").is_err());
        assert!(AccountAddress::parse("a b").is_err());
    }

    #[test]
    fn encoding_is_unambiguous_between_fields() {
        let postings = [("a", Side::Debit, 1), ("b", Side::Credit, 1)];
        let base = HashInput {
            seq: 1,
            id: Uuid::nil(),
            kind: "ab",
            reference: "c",
            posted_at: Timestamp::EPOCH,
            postings: &postings,
        };
        let shifted = HashInput { kind: "a", reference: "bc", ..base };
        assert_ne!(entry_hash(&GENESIS_HASH, &base), entry_hash(&GENESIS_HASH, &shifted));
    }

    #[test]
    fn known_vector_for_the_documented_encoding() {
        // Pins format version 1: changing the encoding must change this test deliberately.
        let postings =
            [("world:treasury:370000", Side::Debit, 100), ("season:s:pool:370000", Side::Credit, 100)];
        let input = HashInput {
            seq: 1,
            id: Uuid::nil(),
            kind: "budget",
            reference: "budget:1",
            posted_at: Timestamp::from_unix_us(1_700_000_000_000_000),
            postings: &postings,
        };
        let bytes = canonical_v1(&input);
        assert_eq!(&bytes[..21], b"wenhui-ledger-entry\x00\x01");
        assert_eq!(
            bytes.len(),
            21 + 8 + 16 + (4 + 6) + (4 + 8) + 8 + 4 + (4 + 21 + 1 + 8) + (4 + 20 + 1 + 8)
        );
        let hash = entry_hash(&GENESIS_HASH, &input);
        let again = entry_hash(&GENESIS_HASH, &input);
        assert_eq!(hash, again);
        assert_ne!(hash, entry_hash(&hash, &input));
    }
}
