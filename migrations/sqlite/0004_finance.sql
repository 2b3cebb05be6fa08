-- Settlements, payouts, and the final report of a closed season.

-- A settlement pays merchants for every unsettled, unreversed redemption up to its cut-off.
CREATE TABLE settlements (
    id            BLOB PRIMARY KEY,
    season_id     BLOB NOT NULL REFERENCES seasons (id),
    cut_off_us    INTEGER NOT NULL,
    total_fen     INTEGER NOT NULL CHECK (total_fen > 0),
    line_count    INTEGER NOT NULL CHECK (line_count > 0),
    created_at_us INTEGER NOT NULL,
    paid_at_us    INTEGER,
    payout_ref    TEXT
);
CREATE INDEX settlements_by_season ON settlements (season_id, created_at_us);

-- One line per merchant: what the bank pays, with the merchant's account as it was at settlement.
CREATE TABLE settlement_lines (
    settlement_id    BLOB NOT NULL REFERENCES settlements (id),
    merchant_id      BLOB NOT NULL REFERENCES merchants (id),
    redemption_count INTEGER NOT NULL CHECK (redemption_count > 0),
    amount_fen       INTEGER NOT NULL CHECK (amount_fen > 0),
    funders          TEXT NOT NULL,
    bank             TEXT NOT NULL,
    account_no       TEXT NOT NULL,
    account_name     TEXT NOT NULL,
    PRIMARY KEY (settlement_id, merchant_id)
);
CREATE INDEX settlement_lines_by_merchant ON settlement_lines (merchant_id);

ALTER TABLE redemptions ADD COLUMN settlement_id BLOB;
-- Reconciliation finds a reversal entry's redemption by its reversal id.
CREATE INDEX redemptions_by_reversal ON redemptions (reversal_id) WHERE reversal_id IS NOT NULL;
-- What the next settlement will pick up.
CREATE INDEX redemptions_unsettled ON redemptions (season_id, redeemed_at_us)
    WHERE settled_at_us IS NULL AND reversed_at_us IS NULL;

-- The report of a closed season, stored once at close and never changed.
CREATE TABLE season_reports (
    season_id      BLOB PRIMARY KEY REFERENCES seasons (id),
    report         TEXT NOT NULL,
    reconciliation TEXT NOT NULL,
    checkpoint_seq INTEGER NOT NULL,
    created_at_us  INTEGER NOT NULL
);
CREATE TRIGGER season_reports_no_update BEFORE UPDATE ON season_reports
BEGIN SELECT RAISE(ABORT, 'a closed season''s report never changes: UPDATE refused'); END;
CREATE TRIGGER season_reports_no_delete BEFORE DELETE ON season_reports
BEGIN SELECT RAISE(ABORT, 'a closed season''s report never changes: DELETE refused'); END;
