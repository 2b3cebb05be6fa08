-- A season may cap what a citizen claims per calendar month in CST (Wuhan: at most 100 yuan a
-- month and 200 in total), live vouchers only, as the season cap. NULL: no monthly cap.
ALTER TABLE seasons ADD COLUMN per_citizen_monthly_cap_fen INTEGER CHECK (per_citizen_monthly_cap_fen > 0);

-- The citizen totals now have a period: 0 for the whole season (the rows so far), YYYYMM for a
-- calendar month (the claim's, in CST). Each row carries its own cap; the CHECK holds it.
-- SQLite cannot change a primary key in place: the table is rebuilt.
CREATE TABLE citizen_season_totals_by_period (
    season_id   BLOB NOT NULL,
    citizen_id  BLOB NOT NULL,
    claimed_fen INTEGER NOT NULL,
    cap_fen     INTEGER NOT NULL,
    period      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (season_id, citizen_id, period),
    CHECK (claimed_fen >= 0 AND claimed_fen <= cap_fen)
);
INSERT INTO citizen_season_totals_by_period (season_id, citizen_id, claimed_fen, cap_fen, period)
    SELECT season_id, citizen_id, claimed_fen, cap_fen, 0 FROM citizen_season_totals;
DROP TABLE citizen_season_totals;
ALTER TABLE citizen_season_totals_by_period RENAME TO citizen_season_totals;
