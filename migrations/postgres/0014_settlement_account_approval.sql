-- Four eyes on where government money is paid. A change of a merchant's settlement account is
-- first a request (one staff key), and takes effect only when another staff key approves it;
-- either may reject it instead, and a request left undecided lapses at `expires_at_us`. A merchant
-- has at most one request waiting (checked under the merchant row's lock). Requests and decisions
-- are kept for good: both tables refuse UPDATE and DELETE, like the ledger.
CREATE TABLE merchant_account_requests (
    id               UUID PRIMARY KEY,
    merchant_id      UUID NOT NULL REFERENCES merchants (id),
    seq              BIGINT NOT NULL,
    requested_at_us  BIGINT NOT NULL,
    requested_by     UUID NOT NULL,
    reason           TEXT NOT NULL,
    new_bank         TEXT NOT NULL,
    new_account_no   TEXT NOT NULL,
    new_account_name TEXT NOT NULL,
    expires_at_us    BIGINT NOT NULL
);
CREATE UNIQUE INDEX merchant_account_requests_by_merchant ON merchant_account_requests (merchant_id, seq);
CREATE TRIGGER merchant_account_requests_append_only BEFORE UPDATE OR DELETE ON merchant_account_requests
    FOR EACH ROW EXECUTE FUNCTION wenhui_refuse_ledger_change();
CREATE TRIGGER merchant_account_requests_no_truncate BEFORE TRUNCATE ON merchant_account_requests
    FOR EACH STATEMENT EXECUTE FUNCTION wenhui_refuse_ledger_change();

CREATE TABLE merchant_account_decisions (
    request_id    UUID PRIMARY KEY REFERENCES merchant_account_requests (id),
    decision      TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    decided_at_us BIGINT NOT NULL,
    decided_by    UUID NOT NULL,
    note          TEXT NOT NULL
);
CREATE TRIGGER merchant_account_decisions_append_only BEFORE UPDATE OR DELETE ON merchant_account_decisions
    FOR EACH ROW EXECUTE FUNCTION wenhui_refuse_ledger_change();
CREATE TRIGGER merchant_account_decisions_no_truncate BEFORE TRUNCATE ON merchant_account_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION wenhui_refuse_ledger_change();

-- A change made by approval names its request; `changed_by` is then the approving key. Changes
-- made before this migration (one key) have none.
ALTER TABLE merchant_account_changes ADD COLUMN request_id UUID REFERENCES merchant_account_requests (id);
ALTER TABLE merchant_account_changes ADD COLUMN requested_by UUID;
