-- The append-only double-entry ledger, staff keys, and signed checkpoints.
-- Times are BIGINT microseconds since the Unix epoch (UTC), columns named *_at_us.
-- Amounts are BIGINT fen, columns named *_fen.

CREATE TABLE accounts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address       TEXT NOT NULL UNIQUE,
    normal_side   TEXT NOT NULL CHECK (normal_side IN ('D', 'C')),
    flags         INTEGER NOT NULL CHECK (flags BETWEEN 0 AND 3),
    created_at_us BIGINT NOT NULL
);

-- Maintained running totals; always equal to the sum of postings (checked by `ledger verify`).
CREATE TABLE account_balances (
    account_id  BIGINT PRIMARY KEY REFERENCES accounts (id),
    debits_fen  BIGINT NOT NULL CHECK (debits_fen >= 0),
    credits_fen BIGINT NOT NULL CHECK (credits_fen >= 0)
);

CREATE TABLE journal_entries (
    seq          BIGINT PRIMARY KEY CHECK (seq > 0),
    id           UUID NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    reference    TEXT NOT NULL UNIQUE,
    posted_at_us BIGINT NOT NULL,
    prev_hash    BYTEA NOT NULL CHECK (length(prev_hash) = 32),
    hash         BYTEA NOT NULL CHECK (length(hash) = 32)
);

-- No foreign keys here: the only writer inserts a posting with its entry and account in one
-- transaction, and a posting that pointed nowhere would change its entry's hash, which
-- `ledger verify` recomputes. (Foreign-key checks cost two lookups per posting on the hot path.)
CREATE TABLE postings (
    entry_seq  BIGINT NOT NULL,
    idx        INTEGER NOT NULL CHECK (idx >= 0),
    account_id BIGINT NOT NULL,
    side       TEXT NOT NULL CHECK (side IN ('D', 'C')),
    amount_fen BIGINT NOT NULL CHECK (amount_fen > 0),
    PRIMARY KEY (entry_seq, idx)
);
CREATE INDEX postings_by_account ON postings (account_id, entry_seq);

-- The end of the chain: one row, locked by every writer, so sequence numbers are gapless.
CREATE TABLE ledger_head (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    seq          BIGINT NOT NULL,
    hash         BYTEA NOT NULL,
    posted_at_us BIGINT NOT NULL
);
INSERT INTO ledger_head (id, seq, hash, posted_at_us)
VALUES (1, 0, decode(repeat('00', 32), 'hex'), 0);

CREATE TABLE ledger_checkpoints (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq          BIGINT NOT NULL,
    head_hash    TEXT NOT NULL,
    signed_at_us BIGINT NOT NULL,
    key_id       TEXT NOT NULL,
    signature    TEXT NOT NULL
);

-- The database itself refuses to change or remove ledger rows.
CREATE FUNCTION wenhui_refuse_ledger_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION wenhui_refuse_ledger_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION wenhui_refuse_ledger_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION wenhui_refuse_ledger_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION wenhui_refuse_ledger_change();
CREATE TRIGGER ledger_checkpoints_append_only BEFORE UPDATE OR DELETE ON ledger_checkpoints
    FOR EACH ROW EXECUTE FUNCTION wenhui_refuse_ledger_change();

CREATE TABLE staff_keys (
    id            UUID PRIMARY KEY,
    key_hash      BYTEA NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    region        TEXT NOT NULL,
    label         TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT
);
