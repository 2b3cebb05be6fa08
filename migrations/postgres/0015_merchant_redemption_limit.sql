-- A season may limit how many of a citizen's vouchers one merchant redeems (Shandong 2020: at
-- most 5 purchases per person at one merchant), against cash-out through a single colluding
-- merchant. Reversed redemptions do not count. NULL: no limit (the default, as before). The
-- limit is set when the season is created and never changes.
ALTER TABLE seasons ADD COLUMN merchant_redemption_limit INTEGER CHECK (merchant_redemption_limit > 0);

-- In seasons with the limit: each citizen's live redemptions per merchant, kept by the
-- redemption group (under the ledger lock) and by reversals. The CHECK is the database's own
-- word on the limit, as `citizen_season_totals`' is on the season cap.
CREATE TABLE merchant_redemption_counts (
    season_id   UUID NOT NULL,
    citizen_id  UUID NOT NULL,
    merchant_id UUID NOT NULL,
    live_count  INTEGER NOT NULL,
    limit_count INTEGER NOT NULL,
    PRIMARY KEY (season_id, citizen_id, merchant_id),
    CHECK (live_count >= 0 AND live_count <= limit_count)
);
