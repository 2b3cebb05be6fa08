-- Settlements, payouts, and the final report of a closed season.

-- A settlement pays merchants for every unsettled, unreversed redemption up to its cut-off.
CREATE TABLE settlements (
    id            UUID PRIMARY KEY,
    season_id     UUID NOT NULL REFERENCES seasons (id),
    cut_off_us    BIGINT NOT NULL,
    total_fen     BIGINT NOT NULL CHECK (total_fen > 0),
    line_count    INTEGER NOT NULL CHECK (line_count > 0),
    created_at_us BIGINT NOT NULL,
    paid_at_us    BIGINT,
    payout_ref    TEXT
);
CREATE INDEX settlements_by_season ON settlements (season_id, created_at_us);

-- One line per merchant: what the bank pays, with the merchant's account as it was at settlement.
CREATE TABLE settlement_lines (
    settlement_id    UUID NOT NULL REFERENCES settlements (id),
    merchant_id      UUID NOT NULL REFERENCES merchants (id),
    redemption_count BIGINT NOT NULL CHECK (redemption_count > 0),
    amount_fen       BIGINT NOT NULL CHECK (amount_fen > 0),
    funders          TEXT NOT NULL,
    bank             TEXT NOT NULL,
    account_no       TEXT NOT NULL,
    account_name     TEXT NOT NULL,
    PRIMARY KEY (settlement_id, merchant_id)
);
CREATE INDEX settlement_lines_by_merchant ON settlement_lines (merchant_id);

ALTER TABLE redemptions ADD COLUMN settlement_id UUID;
-- Reconciliation finds a reversal entry's redemption by its reversal id.
CREATE INDEX redemptions_by_reversal ON redemptions (reversal_id) WHERE reversal_id IS NOT NULL;
-- What the next settlement will pick up.
CREATE INDEX redemptions_unsettled ON redemptions (season_id, redeemed_at_us)
    WHERE settled_at_us IS NULL AND reversed_at_us IS NULL;

-- The report of a closed season, stored once at close and never changed.
CREATE TABLE season_reports (
    season_id      UUID PRIMARY KEY REFERENCES seasons (id),
    report         TEXT NOT NULL,
    reconciliation TEXT NOT NULL,
    checkpoint_seq BIGINT NOT NULL,
    created_at_us  BIGINT NOT NULL
);
CREATE TRIGGER season_reports_append_only BEFORE UPDATE OR DELETE ON season_reports
    FOR EACH ROW EXECUTE FUNCTION wenhui_refuse_ledger_change();
