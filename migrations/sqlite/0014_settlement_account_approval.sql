-- Four eyes on where government money is paid. A change of a merchant's settlement account is
-- first a request (one staff key), and takes effect only when another staff key approves it;
-- either may reject it instead, and a request left undecided lapses at `expires_at_us`. A merchant
-- has at most one request waiting (checked under the write lock). Requests and decisions are
-- kept for good: both tables refuse UPDATE and DELETE, like the ledger.
CREATE TABLE merchant_account_requests (
    id               BLOB PRIMARY KEY,
    merchant_id      BLOB NOT NULL REFERENCES merchants (id),
    seq              INTEGER NOT NULL,
    requested_at_us  INTEGER NOT NULL,
    requested_by     BLOB NOT NULL,
    reason           TEXT NOT NULL,
    new_bank         TEXT NOT NULL,
    new_account_no   TEXT NOT NULL,
    new_account_name TEXT NOT NULL,
    expires_at_us    INTEGER NOT NULL
);
CREATE UNIQUE INDEX merchant_account_requests_by_merchant ON merchant_account_requests (merchant_id, seq);
CREATE TRIGGER merchant_account_requests_no_update BEFORE UPDATE ON merchant_account_requests
BEGIN SELECT RAISE(ABORT, 'settlement account requests are append-only: UPDATE refused'); END;
CREATE TRIGGER merchant_account_requests_no_delete BEFORE DELETE ON merchant_account_requests
BEGIN SELECT RAISE(ABORT, 'settlement account requests are append-only: DELETE refused'); END;

CREATE TABLE merchant_account_decisions (
    request_id    BLOB PRIMARY KEY REFERENCES merchant_account_requests (id),
    decision      TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    decided_at_us INTEGER NOT NULL,
    decided_by    BLOB NOT NULL,
    note          TEXT NOT NULL
);
CREATE TRIGGER merchant_account_decisions_no_update BEFORE UPDATE ON merchant_account_decisions
BEGIN SELECT RAISE(ABORT, 'settlement account decisions are append-only: UPDATE refused'); END;
CREATE TRIGGER merchant_account_decisions_no_delete BEFORE DELETE ON merchant_account_decisions
BEGIN SELECT RAISE(ABORT, 'settlement account decisions are append-only: DELETE refused'); END;

-- A change made by approval names its request; `changed_by` is then the approving key. Changes
-- made before this migration (one key) have none.
ALTER TABLE merchant_account_changes ADD COLUMN request_id BLOB REFERENCES merchant_account_requests (id);
ALTER TABLE merchant_account_changes ADD COLUMN requested_by BLOB;
