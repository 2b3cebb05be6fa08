//! Verifying the ledger (online against a database, offline against an export), exporting it, and
//! signing checkpoints. This is what `wenhui ledger ...` and `GET /v1/ledger/verify` run.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::signing::SigningKey;
use crate::domain::checkpoint::{Checkpoint, CheckpointError};
use crate::domain::ledger::{ChainBreak, ChainVerifier, EntryHash, PostedEntry, Posting};
use crate::domain::time::Timestamp;
use crate::storage::{BalanceMismatch, LedgerStore, StorageError};

const PAGE_ENTRIES: i64 = 2_000;
pub const EXPORT_FORMAT: &str = "wenhui-ledger-export";
pub const EXPORT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    pub entries_checked: i64,
    pub head_hash: String,
    /// For an export: the sequence number the signed checkpoint covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_seq: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyFailure {
    #[error("{0}")]
    Chain(#[from] ChainBreak),
    #[error("account {}: maintained balance D {} / C {} fen, postings sum to D {} / C {} fen",
        .0.address, .0.maintained.debits_fen, .0.maintained.credits_fen,
        .0.from_postings.debits_fen, .0.from_postings.credits_fen)]
    Balance(BalanceMismatch),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("checkpoint covers seq {seq} with hash {signed}, but the chain has {actual} there")]
    CheckpointMismatch { seq: i64, signed: String, actual: String },
    #[error("checkpoint covers seq {0}, past the end of the export")]
    CheckpointBeyondEnd(i64),
    #[error("export line {line}: {reason}")]
    BadExport { line: usize, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Recomputes the chain from the first entry, checks every entry balances in each unit (fen and
/// points separately, [`crate::domain::ledger::balance_per_unit`]), that the head row
/// agrees, and that every maintained balance equals the sum of its postings.
pub async fn verify_store(store: &dyn LedgerStore) -> Result<VerifyReport, VerifyFailure> {
    let head = store.ledger_head().await?;
    let mut verifier = ChainVerifier::default();
    let mut page = store.entries_after(0, PAGE_ENTRIES).await?;
    // Each page is hashed on the blocking pool while the next one is fetched.
    while let Some(last) = page.last() {
        let after = last.seq;
        let hashing = tokio::task::spawn_blocking(move || {
            page.iter().try_for_each(|entry| verifier.check(entry)).map(|()| verifier)
        });
        let next = async {
            if after < head.seq { store.entries_after(after, PAGE_ENTRIES).await.map(Some) } else { Ok(None) }
        };
        let (hashed, next) = tokio::join!(hashing, next);
        verifier =
            hashed.map_err(|e| StorageError::Corrupt(format!("hashing a page of the chain: {e}")))??;
        match next? {
            Some(fetched) => page = fetched,
            None => break,
        }
    }
    if verifier.checked() != head.seq || verifier.head_hash() != head.hash {
        return Err(ChainBreak::HeadMismatch {
            head_seq: head.seq,
            head_hash: head.hash.to_hex(),
            seq: verifier.checked(),
            hash: verifier.head_hash().to_hex(),
        }
        .into());
    }
    if let Some(mismatch) = store.balance_mismatches().await?.into_iter().next() {
        return Err(VerifyFailure::Balance(mismatch));
    }
    Ok(VerifyReport {
        entries_checked: verifier.checked(),
        head_hash: verifier.head_hash().to_hex(),
        checkpoint_seq: None,
    })
}

/// Signs the current head and records the checkpoint.
pub async fn checkpoint(store: &dyn LedgerStore, key: &SigningKey) -> Result<Checkpoint, StorageError> {
    let head = store.ledger_head().await?;
    let checkpoint = key.sign_checkpoint(&head, Timestamp::now());
    store.insert_checkpoint(&checkpoint).await?;
    Ok(checkpoint)
}

/// One line of an export file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportLine {
    Header { format: String, version: u32, exported_at: Timestamp },
    Checkpoint(Checkpoint),
    Entry(ExportEntry),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportEntry {
    pub seq: i64,
    pub id: Uuid,
    pub kind: String,
    pub reference: String,
    pub posted_at_us: i64,
    pub prev_hash: String,
    pub hash: String,
    pub postings: Vec<Posting>,
}

impl From<&PostedEntry> for ExportEntry {
    fn from(entry: &PostedEntry) -> Self {
        ExportEntry {
            seq: entry.seq,
            id: entry.id,
            kind: entry.kind.clone(),
            reference: entry.reference.clone(),
            posted_at_us: entry.posted_at.unix_us(),
            prev_hash: entry.prev_hash.to_hex(),
            hash: entry.hash.to_hex(),
            postings: entry.postings.clone(),
        }
    }
}

impl ExportEntry {
    fn into_posted(self, line: usize) -> Result<PostedEntry, VerifyFailure> {
        let bad = |reason: &str| VerifyFailure::BadExport { line, reason: reason.to_owned() };
        Ok(PostedEntry {
            seq: self.seq,
            id: self.id,
            kind: self.kind,
            reference: self.reference,
            posted_at: Timestamp::from_unix_us(self.posted_at_us),
            prev_hash: EntryHash::from_hex(&self.prev_hash)
                .ok_or_else(|| bad("prev_hash is not 32 bytes of hex"))?,
            hash: EntryHash::from_hex(&self.hash).ok_or_else(|| bad("hash is not 32 bytes of hex"))?,
            postings: self.postings,
        })
    }
}

/// Writes the header, the latest checkpoint, then every entry in order, as JSON lines.
/// Streams page by page: memory does not grow with the ledger.
pub async fn export(store: &dyn LedgerStore, out: &mut dyn Write) -> Result<i64, VerifyFailure> {
    let header = ExportLine::Header {
        format: EXPORT_FORMAT.into(),
        version: EXPORT_VERSION,
        exported_at: Timestamp::now(),
    };
    write_line(out, &header)?;
    if let Some(checkpoint) = store.latest_checkpoint().await? {
        write_line(out, &ExportLine::Checkpoint(checkpoint))?;
    }
    let mut after = 0;
    loop {
        let page = store.entries_after(after, PAGE_ENTRIES).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for entry in &page {
            write_line(out, &ExportLine::Entry(entry.into()))?;
        }
    }
    out.flush()?;
    Ok(after)
}

fn write_line(out: &mut dyn Write, line: &ExportLine) -> Result<(), VerifyFailure> {
    let json = serde_json::to_string(line).map_err(|e| std::io::Error::other(e.to_string()))?;
    out.write_all(json.as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Verifies an export with no database: the chain, every entry's balance in each unit (the same
/// rule as online and on the write path), and the checkpoint's signature under `public_key` and
/// its agreement with the chain.
pub fn verify_export(input: impl BufRead, public_key: &[u8]) -> Result<VerifyReport, VerifyFailure> {
    let mut verifier = ChainVerifier::default();
    let mut checkpoint: Option<Checkpoint> = None;
    let mut checkpoint_matched = false;
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ExportLine = serde_json::from_str(&line)
            .map_err(|e| VerifyFailure::BadExport { line: number, reason: e.to_string() })?;
        match parsed {
            ExportLine::Header { format, version, .. } => {
                if format != EXPORT_FORMAT || version != EXPORT_VERSION {
                    let reason = format!("unknown format {format} version {version}");
                    return Err(VerifyFailure::BadExport { line: number, reason });
                }
            }
            ExportLine::Checkpoint(found) => {
                found.verify(public_key)?;
                checkpoint_matched = found.seq == 0 && found.head_hash == EntryHash::default().to_hex();
                checkpoint = Some(found);
            }
            ExportLine::Entry(entry) => {
                let entry = entry.into_posted(number)?;
                verifier.check(&entry)?;
                if let Some(cp) = checkpoint.as_ref().filter(|cp| cp.seq == entry.seq) {
                    if cp.head_hash != entry.hash.to_hex() {
                        return Err(VerifyFailure::CheckpointMismatch {
                            seq: cp.seq,
                            signed: cp.head_hash.clone(),
                            actual: entry.hash.to_hex(),
                        });
                    }
                    checkpoint_matched = true;
                }
            }
        }
    }
    let Some(cp) = checkpoint else {
        return Err(VerifyFailure::BadExport {
            line: 0,
            reason: "the export holds no signed checkpoint".into(),
        });
    };
    if !checkpoint_matched {
        return Err(VerifyFailure::CheckpointBeyondEnd(cp.seq));
    }
    Ok(VerifyReport {
        entries_checked: verifier.checked(),
        head_hash: verifier.head_hash().to_hex(),
        checkpoint_seq: Some(cp.seq),
    })
}
