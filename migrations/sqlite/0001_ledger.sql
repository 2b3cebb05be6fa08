-- The append-only double-entry ledger, staff keys, and signed checkpoints.
-- Times are INTEGER microseconds since the Unix epoch (UTC), columns named *_at_us.
-- Amounts are INTEGER fen, columns named *_fen.

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    address       TEXT NOT NULL UNIQUE,
    normal_side   TEXT NOT NULL CHECK (normal_side IN ('D', 'C')),
    flags         INTEGER NOT NULL CHECK (flags BETWEEN 0 AND 3),
    created_at_us INTEGER NOT NULL
);

-- Maintained running totals; always equal to the sum of postings (checked by `ledger verify`).
CREATE TABLE account_balances (
    account_id  INTEGER PRIMARY KEY REFERENCES accounts (id),
    debits_fen  INTEGER NOT NULL CHECK (debits_fen >= 0),
    credits_fen INTEGER NOT NULL CHECK (credits_fen >= 0)
);

CREATE TABLE journal_entries (
    seq          INTEGER PRIMARY KEY CHECK (seq > 0),
    id           BLOB NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    reference    TEXT NOT NULL UNIQUE,
    posted_at_us INTEGER NOT NULL,
    prev_hash    BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash         BLOB NOT NULL CHECK (length(hash) = 32)
);

-- No foreign keys here: the only writer inserts a posting with its entry and account in one
-- transaction, and a posting that pointed nowhere would change its entry's hash, which
-- `ledger verify` recomputes. (Foreign-key checks cost two lookups per posting on the hot path.)
CREATE TABLE postings (
    entry_seq  INTEGER NOT NULL,
    idx        INTEGER NOT NULL CHECK (idx >= 0),
    account_id INTEGER NOT NULL,
    side       TEXT NOT NULL CHECK (side IN ('D', 'C')),
    amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),
    PRIMARY KEY (entry_seq, idx)
) WITHOUT ROWID;
CREATE INDEX postings_by_account ON postings (account_id, entry_seq);

-- The end of the chain: one row; writers hold SQLite's write lock (BEGIN IMMEDIATE).
CREATE TABLE ledger_head (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    seq          INTEGER NOT NULL,
    hash         BLOB NOT NULL,
    posted_at_us INTEGER NOT NULL
);
INSERT INTO ledger_head (id, seq, hash, posted_at_us) VALUES (1, 0, zeroblob(32), 0);

CREATE TABLE ledger_checkpoints (
    id           INTEGER PRIMARY KEY,
    seq          INTEGER NOT NULL,
    head_hash    TEXT NOT NULL,
    signed_at_us INTEGER NOT NULL,
    key_id       TEXT NOT NULL,
    signature    TEXT NOT NULL
);

-- The database itself refuses to change or remove ledger rows.
CREATE TRIGGER journal_entries_no_update BEFORE UPDATE ON journal_entries
BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only: UPDATE on journal_entries refused'); END;
CREATE TRIGGER journal_entries_no_delete BEFORE DELETE ON journal_entries
BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only: DELETE on journal_entries refused'); END;
CREATE TRIGGER postings_no_update BEFORE UPDATE ON postings
BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only: UPDATE on postings refused'); END;
CREATE TRIGGER postings_no_delete BEFORE DELETE ON postings
BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only: DELETE on postings refused'); END;
CREATE TRIGGER ledger_checkpoints_no_update BEFORE UPDATE ON ledger_checkpoints
BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only: UPDATE on ledger_checkpoints refused'); END;
CREATE TRIGGER ledger_checkpoints_no_delete BEFORE DELETE ON ledger_checkpoints
BEGIN SELECT RAISE(ABORT, 'ledger rows are append-only: DELETE on ledger_checkpoints refused'); END;

CREATE TABLE staff_keys (
    id            BLOB PRIMARY KEY,
    key_hash      BLOB NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    region        TEXT NOT NULL,
    label         TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    revoked_at_us INTEGER
);
