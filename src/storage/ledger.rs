//! The ledger on either backend: appending entries to the hash chain (with their accounts and
//! balances), reading entries, balances and checkpoints, and staff keys.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::domain::checkpoint::Checkpoint;
use crate::domain::ids::{StaffEnrolmentId, StaffKeyId};
use crate::domain::ledger::{
    AccountAddress, AccountFlags, AccountSpec, Balance, EntryHash, LedgerError, LedgerHead,
    MAX_ENTRIES_PER_BATCH, NewEntry, PostReceipt, PostedEntry, Posting, Sealed, Side, seal,
};
use crate::domain::staff::{Role, StaffScope};
use crate::domain::time::Timestamp;
use crate::storage::backend::AccountBalanceRow;
use crate::storage::db::{Exec, QueryBuilder, Tx, query, query_as};
use crate::storage::{
    Backend, BalanceMismatch, ClaimOutcome, EnrolmentTry, LedgerStore, NewEnrolment, NewStaffKey, PostError,
    SqlStore, StaffKeyRecord, StaffStore, Storage, StorageError,
};

/// Rows per multi-row INSERT: keeps every statement under SQLite's 32,766 bound parameters.
pub(crate) const INSERT_CHUNK_ROWS: usize = 1_000;
const ACCOUNT_CACHE_MAX: usize = 200_000;

/// An account as the database knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KnownAccount {
    pub id: i64,
    pub normal_side: Side,
    pub flags: AccountFlags,
}

impl KnownAccount {
    pub fn matches(&self, spec: &AccountSpec) -> bool {
        self.normal_side == spec.normal_side && self.flags == spec.flags
    }
}

/// Accounts never change once opened, so their ids and specs are cached in process. Only
/// committed accounts enter the cache.
#[derive(Debug, Default)]
pub(crate) struct AccountCache(Mutex<HashMap<String, KnownAccount>>);

impl AccountCache {
    pub fn get(&self, address: &str) -> Option<KnownAccount> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(address).cloned()
    }

    pub fn extend(&self, accounts: HashMap<String, KnownAccount>) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() + accounts.len() > ACCOUNT_CACHE_MAX {
            cache.clear();
        }
        cache.extend(accounts);
    }
}

/// A journal entry row as read.
#[derive(sqlx::FromRow)]
pub(crate) struct EntryRow {
    seq: i64,
    id: uuid::Uuid,
    kind: String,
    reference: String,
    posted_at_us: i64,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

/// A posting row as read, with its account's address.
#[derive(sqlx::FromRow)]
struct PostingRow {
    entry_seq: i64,
    address: String,
    side: String,
    amount_fen: i64,
}

/// An `accounts` row as posting resolves an address.
#[derive(sqlx::FromRow)]
struct AccountRow {
    address: String,
    id: i64,
    normal_side: String,
    flags: i32,
}

/// An account's maintained balance; both are NULL for an account never posted to.
#[derive(sqlx::FromRow)]
struct BalanceRow {
    debits_fen: Option<i64>,
    credits_fen: Option<i64>,
}

/// An account's address with its balance.
#[derive(sqlx::FromRow)]
pub(crate) struct AddressBalanceRow {
    pub address: String,
    pub debits_fen: i64,
    pub credits_fen: i64,
}

impl AddressBalanceRow {
    pub(crate) fn into_pair(self) -> (String, Balance) {
        (self.address, Balance { debits_fen: self.debits_fen, credits_fen: self.credits_fen })
    }
}

/// An account whose maintained balance differs from its postings' sums.
#[derive(sqlx::FromRow)]
pub(crate) struct BalanceMismatchRow {
    pub address: String,
    pub debits_fen: i64,
    pub credits_fen: i64,
    pub posted_debits_fen: i64,
    pub posted_credits_fen: i64,
}

/// A `ledger_checkpoints` row.
#[derive(sqlx::FromRow)]
struct CheckpointRow {
    seq: i64,
    head_hash: String,
    signed_at_us: i64,
    key_id: String,
    signature: String,
}

/// A journal entry row as inserted.
pub(crate) struct EntryInsert {
    pub seq: i64,
    pub id: uuid::Uuid,
    pub kind: String,
    pub reference: String,
    pub posted_at_us: i64,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// A posting row as inserted.
pub(crate) struct PostingInsert {
    pub entry_seq: i64,
    pub idx: i32,
    pub account_id: i64,
    pub side: &'static str,
    pub amount_fen: i64,
}

/// What an append writes once its entries are sealed: the touched accounts' new balances, the
/// entries and their postings, and the chain's new head (the last entry's).
pub(crate) struct SealedRows {
    pub balances: Vec<AccountBalanceRow>,
    pub entries: Vec<EntryInsert>,
    pub postings: Vec<PostingInsert>,
    pub head: LedgerHead,
}

/// The rows of `sealed`, its accounts' ids taken from `accounts`; `None` for no entry.
fn sealed_rows(
    sealed: &[Sealed<'_>],
    balances: Vec<AccountBalanceRow>,
    accounts: &HashMap<String, KnownAccount>,
) -> Option<SealedRows> {
    let last = sealed.last()?;
    let head = LedgerHead { seq: last.seq, hash: last.hash, posted_at: last.posted_at };
    let entries = sealed
        .iter()
        .map(|s| EntryInsert {
            seq: s.seq,
            id: s.entry.id,
            kind: s.entry.kind.clone(),
            reference: s.entry.reference.clone(),
            posted_at_us: s.posted_at.unix_us(),
            prev_hash: s.prev_hash.0.to_vec(),
            hash: s.hash.0.to_vec(),
        })
        .collect();
    let postings = sealed
        .iter()
        .flat_map(|s| {
            s.entry.postings.iter().enumerate().map(move |(idx, p)| PostingInsert {
                entry_seq: s.seq,
                idx: idx as i32,
                account_id: accounts[p.account.address.as_str()].id,
                side: p.side.code(),
                amount_fen: p.amount_fen,
            })
        })
        .collect();
    Some(SealedRows { balances, entries, postings, head })
}

pub(crate) fn side_from_db(code: &str) -> Result<Side, crate::storage::StorageError> {
    Side::from_code(code).ok_or_else(|| crate::storage::StorageError::Corrupt(format!("bad side {code:?}")))
}

impl SqlStore {
    pub(crate) async fn lock_head(&self, tx: &mut Tx) -> Result<LedgerHead, StorageError> {
        let (seq, hash, posted_at_us): (i64, Vec<u8>, i64) =
            query_as(self.backend.lock_head_sql()).fetch_one(&mut *tx).await?;
        let hash =
            EntryHash::from_slice(&hash).ok_or_else(|| StorageError::Corrupt("ledger head hash".into()))?;
        Ok(LedgerHead { seq, hash, posted_at: Timestamp::from_unix_us(posted_at_us) })
    }

    /// Appends `entries` inside `tx`, which the caller commits. The caller must have begun
    /// `tx` with `begin_write`. Returns one receipt per entry, in order, and the accounts
    /// it opened (to be cached once the transaction commits).
    pub(crate) async fn append(
        &self,
        tx: &mut Tx,
        entries: &[NewEntry],
    ) -> Result<(Vec<PostReceipt>, HashMap<String, KnownAccount>), PostError> {
        self.append_known_new(tx, entries, |_| false).await
    }

    /// As [`SqlStore::append`], but the entries `known_new` picks are not looked up first: the
    /// caller knows none with their reference exists (it names a row the same transaction has
    /// inserted under a primary key). Were one there, the reference's UNIQUE constraint would
    /// still refuse the transaction.
    pub(crate) async fn append_known_new(
        &self,
        tx: &mut Tx,
        entries: &[NewEntry],
        known_new: impl Fn(&NewEntry) -> bool,
    ) -> Result<(Vec<PostReceipt>, HashMap<String, KnownAccount>), PostError> {
        check_batch(entries)?;
        let head = self.lock_head(tx).await?;
        let existing = self.find_existing(tx, entries, known_new).await?;
        let fresh: Vec<(usize, &NewEntry)> =
            entries.iter().enumerate().filter(|(_, e)| !existing.contains_key(&e.reference)).collect();
        let accounts = self.resolve_accounts(tx, &fresh).await?;
        let (sealed, balances) = self.seal(tx, &head, &fresh, &accounts).await?;
        if let Some(rows) = sealed_rows(&sealed, balances, &accounts) {
            self.backend.write_sealed(tx, &rows).await?;
        }
        let mut by_reference: HashMap<&str, PostReceipt> = existing
            .into_iter()
            .map(|(reference, receipt)| {
                let key = entries
                    .iter()
                    .find(|e| e.reference == reference)
                    .map(|e| e.reference.as_str())
                    .unwrap_or_default();
                (key, receipt)
            })
            .collect();
        for s in &sealed {
            by_reference.insert(
                s.entry.reference.as_str(),
                PostReceipt {
                    entry_id: s.entry.id,
                    seq: s.seq,
                    hash: s.hash,
                    posted_at: s.posted_at,
                    newly_posted: true,
                },
            );
        }
        let receipts = entries
            .iter()
            .map(|e| by_reference.remove(e.reference.as_str()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| StorageError::Corrupt("a receipt went missing".into()))?;
        Ok((receipts, accounts))
    }

    /// Entries whose reference is already in the ledger: the same content is a no-op
    /// returning the first receipt; different content is refused.
    async fn find_existing(
        &self,
        tx: &mut Tx,
        entries: &[NewEntry],
        known_new: impl Fn(&NewEntry) -> bool,
    ) -> Result<HashMap<String, PostReceipt>, PostError> {
        let mut found = HashMap::new();
        let looked_up: Vec<&NewEntry> = entries.iter().filter(|e| !known_new(e)).collect();
        for chunk in looked_up.chunks(INSERT_CHUNK_ROWS) {
            let references: Vec<String> = chunk.iter().map(|e| e.reference.clone()).collect();
            let rows: Vec<EntryRow> = self.backend.entries_by_reference(tx, references).await?;
            for row in rows {
                let recorded = Self::with_postings(&mut *tx, vec![row]).await?;
                for posted in recorded {
                    found.insert(posted.reference.clone(), posted);
                }
            }
        }
        let mut receipts = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            if let Some(posted) = found.get(&entry.reference) {
                if !same_content(entry, posted) {
                    let reference = entry.reference.clone();
                    return Err(LedgerError::ReferenceConflict { reference }.with_index(index).into());
                }
                receipts.insert(
                    entry.reference.clone(),
                    PostReceipt {
                        entry_id: posted.id,
                        seq: posted.seq,
                        hash: posted.hash,
                        posted_at: posted.posted_at,
                        newly_posted: false,
                    },
                );
            }
        }
        Ok(receipts)
    }

    /// Finds or opens every account the entries touch; refuses a spec that differs from
    /// the account's recorded side or flags.
    async fn resolve_accounts(
        &self,
        tx: &mut Tx,
        fresh: &[(usize, &NewEntry)],
    ) -> Result<HashMap<String, KnownAccount>, PostError> {
        let mut wanted: Vec<(usize, &AccountSpec)> = Vec::new();
        let mut seen = HashSet::new();
        let mut known = HashMap::new();
        for (index, entry) in fresh {
            for posting in &entry.postings {
                let spec = &posting.account;
                if !seen.insert(spec.address.as_str()) {
                    continue;
                }
                match self.accounts.get(spec.address.as_str()) {
                    Some(account) => {
                        known.insert(spec.address.as_str().to_owned(), account);
                    }
                    None => wanted.push((*index, spec)),
                }
            }
        }
        let now_us = self.clock.now().unix_us();
        for chunk in wanted.chunks(INSERT_CHUNK_ROWS) {
            let mut insert =
                QueryBuilder::new("INSERT INTO accounts (address, normal_side, flags, created_at_us) ");
            insert.push_values(chunk, |mut row, (_, spec)| {
                row.push_bind(spec.address.as_str().to_owned())
                    .push_bind(spec.normal_side.code())
                    .push_bind(spec.flags.bits() as i32)
                    .push_bind(now_us);
            });
            insert.push(" ON CONFLICT (address) DO NOTHING");
            insert.build().execute(&mut *tx).await?;
            let mut select =
                QueryBuilder::new("SELECT address, id, normal_side, flags FROM accounts WHERE address IN (");
            let mut list = select.separated(", ");
            for (_, spec) in chunk {
                list.push_bind(spec.address.as_str().to_owned());
            }
            select.push(")");
            let rows: Vec<AccountRow> = select.build_query_as().fetch_all(&mut *tx).await?;
            for row in rows {
                let flags = AccountFlags::from_bits(row.flags as u32)
                    .ok_or_else(|| StorageError::Corrupt(format!("flags of {}", row.address)))?;
                let account =
                    KnownAccount { id: row.id, normal_side: side_from_db(&row.normal_side)?, flags };
                known.insert(row.address, account);
            }
        }
        for (index, spec) in wanted {
            let account = known
                .get(spec.address.as_str())
                .ok_or_else(|| StorageError::Corrupt(format!("account {} not found", spec.address)))?;
            if !account.matches(spec) {
                let address = spec.address.to_string();
                return Err(LedgerError::AccountSpecConflict { address }.with_index(index).into());
            }
        }
        for (index, entry) in fresh {
            for posting in &entry.postings {
                let spec = &posting.account;
                let matches = known.get(spec.address.as_str()).is_some_and(|a| a.matches(spec));
                if !matches {
                    let address = spec.address.to_string();
                    return Err(LedgerError::AccountSpecConflict { address }.with_index(*index).into());
                }
            }
        }
        Ok(known)
    }

    /// Applies the entries to the balances in order, refusing any that breaks a limit
    /// (`domain::ledger::seal`), writes the new balances, and fixes each entry's place in the
    /// chain.
    async fn seal<'a>(
        &self,
        tx: &mut Tx,
        head: &LedgerHead,
        fresh: &[(usize, &'a NewEntry)],
        accounts: &HashMap<String, KnownAccount>,
    ) -> Result<(Vec<Sealed<'a>>, Vec<AccountBalanceRow>), PostError> {
        let by_id = self.load_balances(tx, accounts).await?;
        let mut balances: HashMap<&'a str, Balance> = HashMap::with_capacity(by_id.len());
        for posting in fresh.iter().flat_map(|(_, entry)| &entry.postings) {
            let address = posting.account.address.as_str();
            if let Some(balance) = accounts.get(address).and_then(|a| by_id.get(&a.id)) {
                balances.insert(address, *balance);
            }
        }
        let posted_at = self.clock.now().max(head.posted_at);
        let sealed = seal(head, posted_at, fresh, &mut balances)?;
        let rows = balances
            .into_iter()
            .map(|(address, b)| {
                let account = accounts
                    .get(address)
                    .ok_or_else(|| StorageError::Corrupt(format!("account {address}")))?;
                Ok(AccountBalanceRow {
                    account_id: account.id,
                    debits_fen: b.debits_fen,
                    credits_fen: b.credits_fen,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok((sealed, rows))
    }

    async fn load_balances(
        &self,
        tx: &mut Tx,
        accounts: &HashMap<String, KnownAccount>,
    ) -> Result<HashMap<i64, Balance>, StorageError> {
        let ids: Vec<i64> = accounts.values().map(|a| a.id).collect();
        let mut balances = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK_ROWS) {
            for row in self.backend.balance_rows(tx, chunk.to_vec()).await? {
                balances.insert(
                    row.account_id,
                    Balance { debits_fen: row.debits_fen, credits_fen: row.credits_fen },
                );
            }
        }
        Ok(balances)
    }

    /// Attaches postings (with account addresses) to entry rows.
    pub(crate) async fn with_postings<'e>(
        executor: impl Into<Exec<'e>>,
        rows: Vec<EntryRow>,
    ) -> Result<Vec<PostedEntry>, StorageError> {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(Vec::new());
        };
        let (first_seq, last_seq) = (first.seq, last.seq);
        let postings: Vec<PostingRow> = query_as(
            "SELECT p.entry_seq, a.address, p.side, p.amount_fen FROM postings p JOIN accounts a ON a.id = p.account_id WHERE p.entry_seq >= $1 AND p.entry_seq <= $2 ORDER BY p.entry_seq, p.idx",
        )
        .bind(first_seq)
        .bind(last_seq)
        .fetch_all(executor)
        .await?;
        let mut by_seq: HashMap<i64, Vec<Posting>> = HashMap::with_capacity(rows.len());
        for row in postings {
            let side = side_from_db(&row.side)?;
            let posting = Posting { account: row.address, side, amount_fen: row.amount_fen };
            by_seq.entry(row.entry_seq).or_default().push(posting);
        }
        rows.into_iter()
            .map(|row| {
                let corrupt = || StorageError::Corrupt(format!("hash of entry {}", row.seq));
                Ok(PostedEntry {
                    seq: row.seq,
                    id: row.id,
                    kind: row.kind,
                    reference: row.reference,
                    posted_at: Timestamp::from_unix_us(row.posted_at_us),
                    prev_hash: EntryHash::from_slice(&row.prev_hash).ok_or_else(corrupt)?,
                    hash: EntryHash::from_slice(&row.hash).ok_or_else(corrupt)?,
                    postings: by_seq.remove(&row.seq).unwrap_or_default(),
                })
            })
            .collect()
    }
}

fn check_batch(entries: &[NewEntry]) -> Result<(), PostError> {
    if entries.is_empty() || entries.len() > MAX_ENTRIES_PER_BATCH {
        return Err(LedgerError::BadBatchSize.with_index(0).into());
    }
    let mut references = HashSet::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        entry.validate().map_err(|e| e.with_index(index))?;
        if !references.insert(entry.reference.as_str()) {
            let reference = entry.reference.clone();
            return Err(LedgerError::DuplicateInBatch { reference }.with_index(index).into());
        }
    }
    Ok(())
}

fn same_content(entry: &NewEntry, posted: &PostedEntry) -> bool {
    entry.kind == posted.kind
        && entry.postings.len() == posted.postings.len()
        && entry.postings.iter().zip(&posted.postings).all(|(a, b)| {
            a.account.address.as_str() == b.account && a.side == b.side && a.amount_fen == b.amount_fen
        })
}

/// A `staff_keys` row as listings read it ([`STAFF_KEY_COLUMNS`]).
#[derive(sqlx::FromRow)]
struct StaffKeyRow {
    id: StaffKeyId,
    role: String,
    region: String,
    label: String,
    created_at_us: i64,
    revoked_at_us: Option<i64>,
    minted_by: Option<StaffKeyId>,
}

/// A `staff_keys` row as authentication reads it.
#[derive(sqlx::FromRow)]
struct StaffKeyAuthRow {
    id: StaffKeyId,
    role: String,
    region: String,
    label: String,
    revoked_at_us: Option<i64>,
}

/// The columns of a [`StaffKeyRow`].
/// The key `$1` and every key minted below it, at any depth.
const KEY_TREE: &str = "WITH RECURSIVE tree(id) AS (SELECT id FROM staff_keys WHERE id = $1 \
     UNION SELECT k.id FROM staff_keys k JOIN tree t ON k.minted_by = t.id)";
const STAFF_KEY_COLUMNS: &str = "id, role, region, label, created_at_us, revoked_at_us, minted_by";

fn staff_key_listing(row: StaffKeyRow) -> Result<crate::storage::StaffKeyListing, StorageError> {
    Ok(crate::storage::StaffKeyListing {
        id: row.id,
        scope: scope_from_db(&row.role, &row.region)?,
        label: row.label,
        created_at: Timestamp::from_unix_us(row.created_at_us),
        revoked_at: row.revoked_at_us.map(Timestamp::from_unix_us),
        minted_by: row.minted_by,
    })
}

pub(crate) fn scope_from_db(role: &str, region: &str) -> Result<StaffScope, StorageError> {
    let corrupt = || StorageError::Corrupt(format!("staff scope {role}/{region}"));
    let role: Role = role.parse().map_err(|_| corrupt())?;
    let region = region.parse().map_err(|_| corrupt())?;
    StaffScope::new(role, region).map_err(|_| corrupt())
}

#[async_trait]
impl Storage for SqlStore {
    fn backend(&self) -> Backend {
        self.backend.kind()
    }

    async fn migrate(&self) -> Result<(), StorageError> {
        self.backend.migrate().await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn standby_lag(&self) -> Result<super::StandbyLag, StorageError> {
        if self.backend.kind() != Backend::Postgres {
            return Ok(super::StandbyLag::NotAStandby);
        }
        let (in_recovery, caught_up, behind_ms): (bool, bool, Option<i64>) = query_as(
            "SELECT pg_is_in_recovery(), \
             COALESCE(pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false), \
             (EXTRACT(EPOCH FROM (clock_timestamp() - pg_last_xact_replay_timestamp())) * 1000)::BIGINT",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(match (in_recovery, caught_up) {
            (false, _) => super::StandbyLag::NotAStandby,
            (true, true) => super::StandbyLag::CaughtUp,
            (true, false) => super::StandbyLag::Behind(
                behind_ms.map(|ms| std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
            ),
        })
    }

    async fn publish_notice(&self, notice: &str) -> Result<(), StorageError> {
        self.backend.publish(notice).await?;
        Ok(())
    }

    fn notices(&self) -> super::NoticeFeed {
        self.backend.subscribe()
    }

    async fn secret_fingerprint(
        &self,
        name: &str,
        fingerprint: &str,
        now_us: i64,
    ) -> Result<String, StorageError> {
        query(
            "INSERT INTO secret_fingerprints (name, fingerprint, recorded_at_us) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(fingerprint)
        .bind(now_us)
        .execute(&self.pool)
        .await?;
        let (recorded,): (String,) = query_as("SELECT fingerprint FROM secret_fingerprints WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(recorded)
    }
}

#[async_trait]
impl LedgerStore for SqlStore {
    async fn post_entries(&self, entries: &[NewEntry]) -> Result<Vec<PostReceipt>, PostError> {
        check_batch(entries)?;
        // One writer at a time in this process: waiting here is cheaper than on the database lock.
        let _gate = self.write_gate.lock().await;
        let mut tx = self.begin_write().await?;
        let (receipts, opened) = self.append(&mut tx, entries).await?;
        self.commit_and_cache(tx, opened).await?;
        Ok(receipts)
    }

    async fn ledger_head(&self) -> Result<LedgerHead, StorageError> {
        let (seq, hash, posted_at_us): (i64, Vec<u8>, i64) =
            query_as("SELECT seq, hash, posted_at_us FROM ledger_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        let hash =
            EntryHash::from_slice(&hash).ok_or_else(|| StorageError::Corrupt("ledger head hash".into()))?;
        Ok(LedgerHead { seq, hash, posted_at: Timestamp::from_unix_us(posted_at_us) })
    }

    async fn entries_after(&self, after_seq: i64, limit: i64) -> Result<Vec<PostedEntry>, StorageError> {
        let mut conn = self.pool.acquire().await?;
        let rows: Vec<EntryRow> = query_as(
            "SELECT seq, id, kind, reference, posted_at_us, prev_hash, hash FROM journal_entries WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&mut conn)
        .await?;
        Self::with_postings(&mut conn, rows).await
    }

    async fn balance(&self, address: &AccountAddress) -> Result<Option<Balance>, StorageError> {
        let row: Option<BalanceRow> = query_as(
            "SELECT b.debits_fen, b.credits_fen FROM accounts a LEFT JOIN account_balances b ON b.account_id = a.id WHERE a.address = $1",
        )
        .bind(address.as_str().to_owned())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Balance {
            debits_fen: r.debits_fen.unwrap_or(0),
            credits_fen: r.credits_fen.unwrap_or(0),
        }))
    }

    async fn balance_mismatches(&self) -> Result<Vec<BalanceMismatch>, StorageError> {
        let rows: Vec<BalanceMismatchRow> = query_as(
            "SELECT a.address, COALESCE(b.debits_fen, 0) AS debits_fen, COALESCE(b.credits_fen, 0) AS credits_fen, \
                    COALESCE(s.debits_fen, 0) AS posted_debits_fen, COALESCE(s.credits_fen, 0) AS posted_credits_fen \
             FROM accounts a \
             LEFT JOIN account_balances b ON b.account_id = a.id \
             LEFT JOIN (SELECT account_id, \
                           CAST(SUM(CASE WHEN side = 'D' THEN amount_fen ELSE 0 END) AS BIGINT) AS debits_fen, \
                           CAST(SUM(CASE WHEN side = 'C' THEN amount_fen ELSE 0 END) AS BIGINT) AS credits_fen \
                        FROM postings GROUP BY account_id) s ON s.account_id = a.id \
             WHERE COALESCE(b.debits_fen, 0) <> COALESCE(s.debits_fen, 0) \
                OR COALESCE(b.credits_fen, 0) <> COALESCE(s.credits_fen, 0) \
             ORDER BY a.address LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| BalanceMismatch {
                address: r.address,
                maintained: Balance { debits_fen: r.debits_fen, credits_fen: r.credits_fen },
                from_postings: Balance { debits_fen: r.posted_debits_fen, credits_fen: r.posted_credits_fen },
            })
            .collect())
    }

    async fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StorageError> {
        query(
            "INSERT INTO ledger_checkpoints (seq, head_hash, signed_at_us, key_id, signature) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(checkpoint.seq)
        .bind(checkpoint.head_hash.clone())
        .bind(checkpoint.signed_at.unix_us())
        .bind(checkpoint.key_id.clone())
        .bind(checkpoint.signature.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StorageError> {
        let row: Option<CheckpointRow> = query_as(
            "SELECT seq, head_hash, signed_at_us, key_id, signature FROM ledger_checkpoints ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Checkpoint {
            seq: r.seq,
            head_hash: r.head_hash,
            signed_at: Timestamp::from_unix_us(r.signed_at_us),
            key_id: r.key_id,
            signature: r.signature,
        }))
    }
}

#[async_trait]
impl StaffStore for SqlStore {
    async fn insert_staff_key(&self, key: &NewStaffKey) -> Result<(), StorageError> {
        let mut tx = self.begin_write().await?;
        let person = match &key.person {
            Some(person) => Some(Self::person_for(&mut tx, person, key.created_at).await?),
            None => None,
        };
        query(
            "INSERT INTO staff_keys (id, key_hash, role, region, label, created_at_us, minted_by, person_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(key.id)
        .bind(key.key_hash.clone())
        .bind(key.scope.role.as_str())
        .bind(key.scope.region.to_string())
        .bind(key.label.clone())
        .bind(key.created_at.unix_us())
        .bind(key.minted_by)
        .bind(person)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_enrolment(&self, enrolment: &NewEnrolment) -> Result<(), StorageError> {
        self.insert_enrolment_row(enrolment).await
    }

    async fn try_enrolment(
        &self,
        id: StaffEnrolmentId,
        now: Timestamp,
        max_tries: i32,
    ) -> Result<EnrolmentTry, StorageError> {
        self.try_enrolment_row(id, now, max_tries).await
    }

    async fn claim_enrolment(
        &self,
        id: StaffEnrolmentId,
        key_id: StaffKeyId,
        key_hash: &[u8],
        at: Timestamp,
    ) -> Result<ClaimOutcome, StorageError> {
        self.claim_enrolment_row(id, key_id, key_hash, at).await
    }

    async fn staff_key_by_hash(&self, key_hash: &[u8]) -> Result<Option<StaffKeyRecord>, StorageError> {
        let row: Option<StaffKeyAuthRow> =
            query_as("SELECT id, role, region, label, revoked_at_us FROM staff_keys WHERE key_hash = $1")
                .bind(key_hash.to_vec())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| {
            Ok(StaffKeyRecord {
                id: row.id,
                scope: scope_from_db(&row.role, &row.region)?,
                label: row.label,
                revoked: row.revoked_at_us.is_some(),
            })
        })
        .transpose()
    }

    async fn staff_keys(&self) -> Result<Vec<crate::storage::StaffKeyListing>, StorageError> {
        let sql = format!("SELECT {STAFF_KEY_COLUMNS} FROM staff_keys ORDER BY created_at_us, id");
        let rows: Vec<StaffKeyRow> = query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        rows.into_iter().map(staff_key_listing).collect()
    }

    async fn revoke_staff_key(
        &self,
        id: StaffKeyId,
        at: Timestamp,
    ) -> Result<Option<crate::storage::RevokedKeys>, StorageError> {
        // One statement: the key and its descendants (UNION stops at a corrupt cycle).
        let sql = format!(
            "{KEY_TREE} UPDATE staff_keys SET revoked_at_us = $2 \
             WHERE id IN (SELECT id FROM tree) AND revoked_at_us IS NULL"
        );
        query(sqlx::AssertSqlSafe(sql)).bind(id).bind(at.unix_us()).execute(&self.pool).await?;
        let sql = format!(
            "{KEY_TREE} SELECT {STAFF_KEY_COLUMNS} FROM staff_keys WHERE id IN (SELECT id FROM tree) \
             ORDER BY created_at_us, id"
        );
        let rows: Vec<StaffKeyRow> =
            query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(&self.pool).await?;
        let mut keys = rows.into_iter().map(staff_key_listing).collect::<Result<Vec<_>, _>>()?;
        let Some(index) = keys.iter().position(|k| k.id == id) else {
            return Ok(None);
        };
        let key = keys.remove(index);
        Ok(Some(crate::storage::RevokedKeys { key, below: keys }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::ledger::NewPosting;

    fn transfer(reference: &str) -> NewEntry {
        let treasury = AccountSpec::debit_unlimited(AccountAddress::from_segments(&["world", "treasury"]));
        let pool = AccountSpec::credit_limited(AccountAddress::from_segments(&["test", "pool"]));
        NewEntry::new(
            "t",
            reference,
            vec![
                NewPosting { account: treasury, side: Side::Debit, amount_fen: 100 },
                NewPosting { account: pool, side: Side::Credit, amount_fen: 100 },
            ],
        )
    }

    /// Skipping the lookup of a reference said to be new is safe: if one did exist, the
    /// reference's UNIQUE constraint refuses the transaction, and nothing is written.
    #[tokio::test]
    async fn an_entry_said_to_be_new_whose_reference_exists_is_refused_by_the_database() {
        let backend =
            crate::storage::sqlite::SqliteBackend::connect("sqlite::memory:", 1).await.expect("open");
        let store = SqlStore::new(Box::new(backend), Arc::new(crate::domain::time::SystemClock));
        store.migrate().await.expect("migrate");
        store.post_entries(&[transfer("claim:once")]).await.expect("first post");
        let mut tx = store.begin_write().await.expect("begin");
        let again = store.append_known_new(&mut tx, &[transfer("claim:once")], |_| true).await;
        assert!(again.is_err(), "a second entry with one reference was appended");
        drop(tx);
        assert_eq!(store.ledger_head().await.expect("head").seq, 1, "only the first entry is in the ledger");
    }
}
