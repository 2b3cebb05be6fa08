-- Settlements run in chunks of merchants, each chunk its own transaction (finance::settle), so
-- that a settlement of a whole season does not hold up the tills: SQLite has one writer at a
-- time, and on PostgreSQL every chunk posts under the ledger head for a moment only.

-- NULL while the settlement is in progress: its lines so far are settled and posted, but more
-- merchants may follow, and it cannot be paid out. Settlements made before this migration ran in
-- one transaction: they completed when they were made.
ALTER TABLE settlements ADD COLUMN completed_at_us BIGINT;
UPDATE settlements SET completed_at_us = created_at_us;

-- What the next settlement will pick up, by merchant: a chunk settles a list of merchants
-- (`season_id = $1 AND merchant_id IN (...)`), and the scan that plans the chunks counts
-- each merchant's rows from the index alone.
DROP INDEX redemptions_unsettled;
CREATE INDEX redemptions_unsettled ON redemptions (season_id, merchant_id, redeemed_at_us)
    WHERE settled_at_us IS NULL AND reversed_at_us IS NULL;
