-- Settlement holds (docs/settlement-holds.md): finance holds a merchant's settlement for a season
-- (by hand on a complaint, or, once scoring lands, when its cash-out score reaches the season's
-- threshold). A held merchant's settlement lines are written `held`: its money moves from
-- payable to a held account and is not in the payout file until finance releases it (paid in
-- the next payout) or rejects it with four eyes (the subsidy goes back to the funders' pools).

-- The score (0..=100) at or above which a merchant's settlement is held; NULL: no automatic holds.
ALTER TABLE seasons ADD COLUMN hold_score_threshold INTEGER
    CHECK (hold_score_threshold BETWEEN 0 AND 100);

-- One hold per (season, merchant): why, from where, who and when.
CREATE TABLE merchant_holds (
    season_id   UUID NOT NULL REFERENCES seasons (id),
    merchant_id UUID NOT NULL REFERENCES merchants (id),
    source      TEXT NOT NULL CHECK (source IN ('manual', 'score')),
    -- The score that held it (source 'score'); NULL for a manual hold.
    score       INTEGER CHECK (score BETWEEN 0 AND 100),
    reason      TEXT NOT NULL,
    -- The staff key that held it by hand; NULL for a hold by score.
    held_by     UUID,
    held_at_us  BIGINT NOT NULL,
    PRIMARY KEY (season_id, merchant_id),
    CHECK ((source = 'manual') = (held_by IS NOT NULL) AND (source = 'score') = (score IS NOT NULL))
);

-- A settlement may hold every merchant it lines (its total is then all held), or carry only lines
-- released since the last one (no line of its own): it still has a payout file.
ALTER TABLE settlements DROP CONSTRAINT settlements_total_fen_check;
ALTER TABLE settlements DROP CONSTRAINT settlements_line_count_check;
ALTER TABLE settlements ADD CONSTRAINT settlements_total_fen_check CHECK (total_fen >= 0);
ALTER TABLE settlements ADD CONSTRAINT settlements_line_count_check CHECK (line_count >= 0);
-- Of its lines, those held (count and amount), and the lines released since the previous
-- settlement that its payout pays.
ALTER TABLE settlements ADD COLUMN held_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE settlements ADD COLUMN held_fen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE settlements ADD COLUMN released_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE settlements ADD COLUMN released_fen BIGINT NOT NULL DEFAULT 0;

-- A line is paid normally ('none'), or held, then released or rejected; a rejection is
-- proposed by one person and approved by another.
ALTER TABLE settlement_lines ADD COLUMN hold_status TEXT NOT NULL DEFAULT 'none'
    CHECK (hold_status IN ('none', 'held', 'released', 'rejected'));
ALTER TABLE settlement_lines ADD COLUMN hold_reason TEXT;
ALTER TABLE settlement_lines ADD COLUMN release_note TEXT;
ALTER TABLE settlement_lines ADD COLUMN released_by UUID;
ALTER TABLE settlement_lines ADD COLUMN released_at_us BIGINT;
-- The settlement whose payout pays the released line (the next one to complete).
ALTER TABLE settlement_lines ADD COLUMN paid_in_settlement_id UUID;
ALTER TABLE settlement_lines ADD COLUMN reject_note TEXT;
ALTER TABLE settlement_lines ADD COLUMN reject_proposed_by UUID;
ALTER TABLE settlement_lines ADD COLUMN reject_proposed_at_us BIGINT;
ALTER TABLE settlement_lines ADD COLUMN rejected_by UUID;
ALTER TABLE settlement_lines ADD COLUMN rejected_at_us BIGINT;
CREATE INDEX settlement_lines_on_hold ON settlement_lines (settlement_id) WHERE hold_status <> 'none';
CREATE INDEX settlement_lines_paid_in ON settlement_lines (paid_in_settlement_id)
    WHERE paid_in_settlement_id IS NOT NULL;
