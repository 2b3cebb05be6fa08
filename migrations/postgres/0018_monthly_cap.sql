-- A season may cap what a citizen claims per calendar month in CST (Wuhan: at most 100 yuan a
-- month and 200 in total), live vouchers only, as the season cap. NULL: no monthly cap.
ALTER TABLE seasons ADD COLUMN per_citizen_monthly_cap_fen BIGINT CHECK (per_citizen_monthly_cap_fen > 0);

-- The citizen totals now have a period: 0 for the whole season (the rows so far), YYYYMM for a
-- calendar month (the claim's, in CST). Each row carries its own cap; the CHECK holds it.
ALTER TABLE citizen_season_totals ADD COLUMN period INTEGER NOT NULL DEFAULT 0;
ALTER TABLE citizen_season_totals DROP CONSTRAINT citizen_season_totals_pkey;
ALTER TABLE citizen_season_totals ADD PRIMARY KEY (season_id, citizen_id, period);
