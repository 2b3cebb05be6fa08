//! The till's own journal: an append-only JSON-lines file with one line per intent and per
//! attempt, written before the answer is acted on.
//!
//! Every line is written with a single `write_all` (line and newline together), then flushed
//! and `sync_data`ed, under an advisory lock, so a line is either wholly on disk or is a torn
//! tail left by a crash. [`Journal::open`] repairs a torn tail (drops it, or terminates it if it
//! is a whole line that only lacks its newline) and [`Journal::read`] skips one.
//!
//! After a crash, [`unanswered`] lists the intents whose outcome the till never learned: retry
//! each with its `idempotency_key` (and the same request) to learn it without doing it twice.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalLine {
    /// When the line was written, RFC 3339 in UTC.
    pub at: String,
    pub terminal_id: Uuid,
    /// The call: `"redeem"`, `"reverse"`, `"card_pay"`, `"reverse_card"` (writes); `"get"`,
    /// `"get_card_payment"`, `"statement"`, `"card_terms"`; `"register"` and `"keys"` are not
    /// journaled by a till's client.
    pub op: String,
    /// `"intent"` (before the first attempt) or `"attempt"` (after each attempt's outcome).
    pub phase: String,
    /// The request path, e.g. `/v1/redemptions/<id>/reversal`.
    #[serde(default)]
    pub path: String,
    /// The `Idempotency-Key` of a write; null for reads.
    pub idempotency_key: Option<String>,
    /// 0 for an intent; 1, 2, ... for attempts.
    pub attempt: u32,
    /// The JSON body sent (`{}` for a request without a body).
    pub request: Value,
    /// The HTTP status of the answer; null when no answer came (transport error) and for intents.
    pub status: Option<u16>,
    /// The answer's JSON body (a JSON string if it was not JSON); null when there was none.
    pub response: Option<Value>,
    /// Why no answer came (transport error), or null.
    pub error: Option<String>,
}

impl JournalLine {
    /// Whether this attempt settled the outcome: the service answered with something that does
    /// not leave it open ([`crate::client::outcome_unknown`]: 502, 503, 504, and 500 on a write).
    pub fn is_final_answer(&self) -> bool {
        let write = self.idempotency_key.is_some();
        self.phase == "attempt" && self.status.is_some_and(|s| !crate::client::outcome_unknown(s, write))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("journal {path}, line {line}: {message}")]
    Corrupt { path: PathBuf, line: usize, message: String },
}

/// An append-only journal file, shared by clones (one file handle behind a mutex).
#[derive(Clone, Debug)]
pub struct Journal {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    file: Mutex<File>,
    /// The last append that failed after the service had answered (see [`Journal::last_failure`]).
    failure: Mutex<Option<String>>,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` for appending, repairing a torn tail.
    pub fn open(path: impl AsRef<Path>) -> Result<Journal, JournalError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| JournalError::Io { path: path.clone(), source };
        // 0600 when created: the lines hold the scanned QR tokens, which the till's own user only
        // should read (each is good for one use within two minutes, but no one else needs it).
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(&path).map_err(io)?;
        file.lock().map_err(io)?;
        let repaired = repair_tail(&mut file);
        let unlocked = file.unlock();
        repaired.map_err(io)?;
        unlocked.map_err(io)?;
        Ok(Journal {
            inner: Some(Arc::new(Inner { path, file: Mutex::new(file), failure: Mutex::new(None) })),
        })
    }

    /// A journal that records nothing (tests, or a till that keeps its own records).
    pub fn disabled() -> Journal {
        Journal { inner: None }
    }

    pub fn path(&self) -> Option<&Path> {
        self.inner.as_ref().map(|inner| inner.path.as_path())
    }

    /// The last failure to record an attempt's outcome. The client does not turn such a failure
    /// into an error (the service has acted; hiding its answer would be worse), so a till should
    /// check this after each call and warn the operator.
    pub fn last_failure(&self) -> Option<String> {
        let inner = self.inner.as_ref()?;
        inner.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub(crate) fn note_failure(&self, error: &JournalError) {
        if let Some(inner) = &self.inner {
            *inner.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error.to_string());
        }
    }

    /// Appends one line: a single write of the line and its newline, then flush and sync_data.
    pub fn append(&self, line: &JournalLine) -> Result<(), JournalError> {
        let Some(inner) = &self.inner else { return Ok(()) };
        let io = |source| JournalError::Io { path: inner.path.clone(), source };
        let mut bytes = serde_json::to_vec(line).map_err(|e| io(std::io::Error::other(e)))?;
        bytes.push(b'\n');
        let mut file = inner.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        file.lock().map_err(io)?;
        let written = append_line(&mut file, &bytes);
        let unlocked = file.unlock();
        written.map_err(io)?;
        unlocked.map_err(io)
    }

    /// Appends from async code without blocking the runtime's worker on the disk.
    pub async fn append_async(&self, line: JournalLine) -> Result<(), JournalError> {
        if self.inner.is_none() {
            return Ok(());
        }
        let journal = self.clone();
        let path = self.path().map(Path::to_path_buf).unwrap_or_default();
        match tokio::task::spawn_blocking(move || journal.append(&line)).await {
            Ok(result) => result,
            Err(join) => Err(JournalError::Io { path, source: std::io::Error::other(join.to_string()) }),
        }
    }

    /// Every line of the journal at `path` (none if the file does not exist). A torn last line
    /// (no newline, not valid JSON) is skipped; any other bad line is an error.
    pub fn read(path: impl AsRef<Path>) -> Result<Vec<JournalLine>, JournalError> {
        let path = path.as_ref();
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(JournalError::Io { path: path.to_path_buf(), source }),
        };
        let complete = text.ends_with(b"\n");
        let segments: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|s| !s.is_empty()).collect();
        let mut lines = Vec::with_capacity(segments.len());
        for (index, segment) in segments.iter().enumerate() {
            match serde_json::from_slice::<JournalLine>(segment) {
                Ok(line) => lines.push(line),
                Err(_) if index + 1 == segments.len() && !complete => {}
                Err(e) => {
                    let message = e.to_string();
                    return Err(JournalError::Corrupt { path: path.to_path_buf(), line: index + 1, message });
                }
            }
        }
        Ok(lines)
    }
}

/// Makes the file end at a line boundary: a whole line missing only its newline gets one; a
/// torn fragment is cut off.
/// Appends one line under the file lock. A torn tail (a writer in another process died
/// mid-line) is mended first, or this line would be glued to it and the journal unreadable;
/// a write that fails part way is cut back off, so it leaves no fragment for the next line.
fn append_line(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    let len = file.seek(SeekFrom::End(0))?;
    if len > 0 {
        file.seek(SeekFrom::End(-1))?;
        let mut last = [0u8];
        file.read_exact(&mut last)?;
        if last != *b"\n" {
            repair_tail(file)?;
        }
    }
    let start = file.seek(SeekFrom::End(0))?;
    let written = file.write_all(bytes).and_then(|()| file.flush()).and_then(|()| file.sync_data());
    if written.is_err() {
        let _ = file.set_len(start);
    }
    written
}

fn repair_tail(file: &mut File) -> std::io::Result<()> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(());
    }
    let window = len.min(1 << 20);
    file.seek(SeekFrom::Start(len - window))?;
    let mut tail = Vec::with_capacity(window as usize);
    file.read_to_end(&mut tail)?;
    if tail.ends_with(b"\n") {
        return Ok(());
    }
    let start = match tail.iter().rposition(|&b| b == b'\n') {
        Some(newline) => newline + 1,
        None if window < len => return Ok(()),
        None => 0,
    };
    if serde_json::from_slice::<JournalLine>(&tail[start..]).is_ok() {
        file.write_all(b"\n")?;
    } else {
        file.set_len(len - window + start as u64)?;
    }
    file.sync_data()
}

/// The intents that have no final answer: for each, the intent line. Retry each with its
/// idempotency key and the same request (`request`, `path`) to learn what happened. An answer
/// counts for an intent only if it answered that very request: the same key sent with another
/// request (422 `idempotency_key_reused`) says nothing of the first.
pub fn unanswered(lines: &[JournalLine]) -> Vec<&JournalLine> {
    let answered: std::collections::HashSet<Asked<'_>> =
        lines.iter().filter(|line| line.is_final_answer()).map(asked).collect();
    lines.iter().filter(|line| line.phase == "intent" && !answered.contains(&asked(line))).collect()
}

/// What a line asked: its key, operation, path and request body.
type Asked<'a> = (Option<&'a str>, &'a str, &'a str, String);

fn asked(line: &JournalLine) -> Asked<'_> {
    (line.idempotency_key.as_deref(), line.op.as_str(), line.path.as_str(), line.request.to_string())
}

/// The current time as RFC 3339 in UTC, with milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(phase: &str, key: &str, attempt: u32, status: Option<u16>) -> JournalLine {
        JournalLine {
            at: now_rfc3339(),
            terminal_id: Uuid::from_u128(1),
            op: "redeem".into(),
            phase: phase.into(),
            path: "/v1/redemptions".into(),
            idempotency_key: Some(key.into()),
            attempt,
            request: json!({"qr": "WH1.x.y", "order_amount": "100.00", "order_ref": "A-1"}),
            status,
            response: status.map(|_| json!({"redemption_id": Uuid::from_u128(2)})),
            error: None,
        }
    }

    #[test]
    fn a_torn_line_left_by_another_writer_is_mended_before_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.jsonl");
        let journal = Journal::open(&path).expect("open");
        journal.append(&line("intent", "k1", 0, None)).expect("append");
        // Another process sharing the file dies half way through its line.
        let mut sibling = OpenOptions::new().append(true).open(&path).expect("sibling");
        sibling.write_all(br#"{"at":"2026-11-27T00:00:00Z","terminal_id":"#).expect("torn write");
        journal.append(&line("attempt", "k1", 1, Some(201))).expect("append after the torn line");
        let read = Journal::read(&path).expect("still readable");
        assert_eq!(read.iter().map(|l| l.phase.as_str()).collect::<Vec<_>>(), ["intent", "attempt"]);
    }

    #[test]
    fn an_answer_to_another_request_under_the_same_key_leaves_the_intent_open() {
        let intent = line("intent", "k1", 0, None);
        let mut other = line("attempt", "k1", 1, Some(422));
        other.request = json!({"qr": "WH1.other.token", "order_amount": "100.00", "order_ref": "A-1"});
        other.response = Some(json!({"error": {"code": "idempotency_key_reused"}}));
        let lines = [intent.clone(), other];
        assert_eq!(unanswered(&lines), [&intent]);
        let answered = [intent.clone(), line("attempt", "k1", 1, Some(201))];
        assert!(unanswered(&answered).is_empty());
    }

    #[test]
    fn append_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.jsonl");
        let journal = Journal::open(&path).expect("open");
        let written = [line("intent", "k1", 0, None), line("attempt", "k1", 1, Some(201))];
        for l in &written {
            journal.append(l).expect("append");
        }
        drop(journal);
        let again = Journal::open(&path).expect("reopen");
        again.append(&line("intent", "k2", 0, None)).expect("append");
        let read = Journal::read(&path).expect("read");
        assert_eq!(read.len(), 3);
        assert_eq!(read[..2], written);
        let text = std::fs::read_to_string(&path).expect("text");
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
        assert_eq!(
            unanswered(&read).iter().map(|l| l.idempotency_key.as_deref()).collect::<Vec<_>>(),
            [Some("k2")]
        );
    }

    #[test]
    fn torn_last_line_is_skipped_then_repaired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.jsonl");
        let journal = Journal::open(&path).expect("open");
        journal.append(&line("intent", "k1", 0, None)).expect("append");
        drop(journal);
        let whole = serde_json::to_string(&line("attempt", "k1", 1, Some(503))).expect("json");
        let mut file = OpenOptions::new().append(true).open(&path).expect("open raw");
        file.write_all(&whole.as_bytes()[..whole.len() / 2]).expect("torn write");
        drop(file);
        assert_eq!(Journal::read(&path).expect("read torn").len(), 1);

        let journal = Journal::open(&path).expect("reopen repairs");
        journal.append(&line("attempt", "k1", 2, Some(201))).expect("append");
        let read = Journal::read(&path).expect("read");
        assert_eq!(read.iter().map(|l| l.attempt).collect::<Vec<_>>(), [0, 2]);
        assert!(unanswered(&read).is_empty());
    }

    #[test]
    fn whole_line_missing_its_newline_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.jsonl");
        let whole = serde_json::to_string(&line("intent", "k1", 0, None)).expect("json");
        std::fs::write(&path, whole).expect("write");
        assert_eq!(Journal::read(&path).expect("read").len(), 1);
        Journal::open(&path).expect("open").append(&line("attempt", "k1", 1, Some(409))).expect("append");
        assert_eq!(Journal::read(&path).expect("read").len(), 2);
    }

    #[test]
    fn corrupt_middle_line_is_an_error_and_missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.jsonl");
        assert!(Journal::read(&path).expect("missing").is_empty());
        let whole = serde_json::to_string(&line("intent", "k1", 0, None)).expect("json");
        std::fs::write(&path, format!("{{not json\n{whole}\n")).expect("write");
        assert!(matches!(Journal::read(&path), Err(JournalError::Corrupt { line: 1, .. })));
    }

    #[test]
    fn retryable_statuses_are_not_final() {
        assert!(!line("attempt", "k", 1, Some(503)).is_final_answer());
        assert!(!line("attempt", "k", 1, None).is_final_answer());
        assert!(line("attempt", "k", 1, Some(409)).is_final_answer());
        assert!(!line("intent", "k", 0, Some(201)).is_final_answer());
    }

    #[test]
    fn disabled_journal_writes_nothing() {
        let journal = Journal::disabled();
        assert!(journal.path().is_none());
        journal.append(&line("intent", "k", 0, None)).expect("no-op");
    }
}
