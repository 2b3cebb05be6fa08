-- no-transaction
-- Settlement holds (docs/settlement-holds.md): finance holds a merchant's settlement for a season
-- (by hand on a complaint, or, once scoring lands, when its cash-out score reaches the season's
-- threshold). A held merchant's settlement lines are written `held`: its money moves from
-- payable to a held account and is not in the payout file until finance releases it (paid in
-- the next payout) or rejects it with four eyes (the subsidy goes back to the funders' pools).

-- A settlement may hold every merchant it lines (its total is then all held), or carry only lines
-- released since the last one (no line of its own): it still has a payout file. SQLite cannot
-- change a CHECK in place: the table is rebuilt (see 0021), with foreign keys off so that
-- `settlement_lines.settlement_id` resolves to the new table once it has the old name; hence
-- `no-transaction` above and the explicit transaction here.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE settlements_rebuilt (
    id              BLOB PRIMARY KEY,
    season_id       BLOB NOT NULL REFERENCES seasons (id),
    cut_off_us      INTEGER NOT NULL,
    total_fen       INTEGER NOT NULL CHECK (total_fen >= 0),
    line_count      INTEGER NOT NULL CHECK (line_count >= 0),
    created_at_us   INTEGER NOT NULL,
    paid_at_us      INTEGER,
    payout_ref      TEXT,
    completed_at_us INTEGER,
    held_count      INTEGER NOT NULL DEFAULT 0,
    held_fen        INTEGER NOT NULL DEFAULT 0,
    released_count  INTEGER NOT NULL DEFAULT 0,
    released_fen    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO settlements_rebuilt (id, season_id, cut_off_us, total_fen, line_count, created_at_us, paid_at_us,
                                 payout_ref, completed_at_us)
    SELECT id, season_id, cut_off_us, total_fen, line_count, created_at_us, paid_at_us, payout_ref, completed_at_us
    FROM settlements;
DROP TABLE settlements;
ALTER TABLE settlements_rebuilt RENAME TO settlements;
CREATE INDEX settlements_by_season ON settlements (season_id, created_at_us);
-- The score (0..=100) at or above which a merchant's settlement is held; NULL: no automatic holds.
ALTER TABLE seasons ADD COLUMN hold_score_threshold INTEGER
    CHECK (hold_score_threshold BETWEEN 0 AND 100);

-- One hold per (season, merchant): why, from where, who and when.
CREATE TABLE merchant_holds (
    season_id   BLOB NOT NULL REFERENCES seasons (id),
    merchant_id BLOB NOT NULL REFERENCES merchants (id),
    source      TEXT NOT NULL CHECK (source IN ('manual', 'score')),
    -- The score that held it (source 'score'); NULL for a manual hold.
    score       INTEGER CHECK (score BETWEEN 0 AND 100),
    reason      TEXT NOT NULL,
    -- The staff key that held it by hand; NULL for a hold by score.
    held_by     BLOB,
    held_at_us  INTEGER NOT NULL,
    PRIMARY KEY (season_id, merchant_id),
    CHECK ((source = 'manual') = (held_by IS NOT NULL) AND (source = 'score') = (score IS NOT NULL))
);

-- A line is paid normally ('none'), or held, then released or rejected; a rejection is
-- proposed by one person and approved by another.
ALTER TABLE settlement_lines ADD COLUMN hold_status TEXT NOT NULL DEFAULT 'none'
    CHECK (hold_status IN ('none', 'held', 'released', 'rejected'));
ALTER TABLE settlement_lines ADD COLUMN hold_reason TEXT;
ALTER TABLE settlement_lines ADD COLUMN release_note TEXT;
ALTER TABLE settlement_lines ADD COLUMN released_by BLOB;
ALTER TABLE settlement_lines ADD COLUMN released_at_us INTEGER;
-- The settlement whose payout pays the released line (the next one to complete).
ALTER TABLE settlement_lines ADD COLUMN paid_in_settlement_id BLOB;
ALTER TABLE settlement_lines ADD COLUMN reject_note TEXT;
ALTER TABLE settlement_lines ADD COLUMN reject_proposed_by BLOB;
ALTER TABLE settlement_lines ADD COLUMN reject_proposed_at_us INTEGER;
ALTER TABLE settlement_lines ADD COLUMN rejected_by BLOB;
ALTER TABLE settlement_lines ADD COLUMN rejected_at_us INTEGER;
CREATE INDEX settlement_lines_on_hold ON settlement_lines (settlement_id) WHERE hold_status <> 'none';
CREATE INDEX settlement_lines_paid_in ON settlement_lines (paid_in_settlement_id)
    WHERE paid_in_settlement_id IS NOT NULL;
COMMIT;
PRAGMA foreign_keys = ON;
