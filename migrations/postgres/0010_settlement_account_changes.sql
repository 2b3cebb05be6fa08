-- A merchant's settlement (payout) account can change: a new bank, a renamed account. Changing
-- where government money is paid is the classic way to divert it, so every change is kept here:
-- when, by which staff key, why, and from what to what. Like the ledger, the table refuses
-- UPDATE and DELETE. Settlement lines keep their own copy of the account they were settled to,
-- so a change never redirects a settlement already made.
CREATE TABLE merchant_account_changes (
    id               UUID PRIMARY KEY,
    merchant_id      UUID NOT NULL REFERENCES merchants (id),
    seq              BIGINT NOT NULL,
    changed_at_us    BIGINT NOT NULL,
    changed_by       UUID NOT NULL,
    reason           TEXT NOT NULL,
    old_bank         TEXT NOT NULL,
    old_account_no   TEXT NOT NULL,
    old_account_name TEXT NOT NULL,
    new_bank         TEXT NOT NULL,
    new_account_no   TEXT NOT NULL,
    new_account_name TEXT NOT NULL
);
-- Changes are numbered per merchant, 1, 2, 3 ..., under the merchant row's lock: the history's
-- order is the order the changes were made in, whatever the clocks said.
CREATE UNIQUE INDEX merchant_account_changes_by_merchant ON merchant_account_changes (merchant_id, seq);
CREATE TRIGGER merchant_account_changes_append_only BEFORE UPDATE OR DELETE ON merchant_account_changes
    FOR EACH ROW EXECUTE FUNCTION wenhui_refuse_ledger_change();
CREATE TRIGGER merchant_account_changes_no_truncate BEFORE TRUNCATE ON merchant_account_changes
    FOR EACH STATEMENT EXECUTE FUNCTION wenhui_refuse_ledger_change();
