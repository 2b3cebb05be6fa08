-- A lottery the public can check (docs/lottery-audit.md). Each lottery batch gets a random
-- 32-byte salt at its creation, kept secret until the draw and revealed with the seed: the
-- audit publishes each entrant as HMAC-SHA256(salt, citizen id) and ranks by
-- SHA-256(seed || that hash) (draw algorithm 2). Its SHA-256 is published from the start, with
-- the seed's; lottery_committed_at_us is when both commitments were first shown.
ALTER TABLE batches ADD COLUMN lottery_salt BLOB;
ALTER TABLE batches ADD COLUMN lottery_committed_at_us INTEGER;
ALTER TABLE batches ADD COLUMN lottery_algorithm INTEGER;

-- Lottery batches made before this migration: a salt now (randomblob, SQLite's generator
-- seeded by the operating system), committed now (this migration's time). Batches drawn
-- already were drawn by algorithm 1, SHA-256(seed || citizen id), which cannot be published
-- without the citizen ids: their audit is refused (409 draw_not_auditable).
UPDATE batches
SET lottery_salt = randomblob(32),
    lottery_committed_at_us = CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER),
    lottery_algorithm = CASE WHEN drawn_at_us IS NULL THEN 2 ELSE 1 END
WHERE lottery_seed_sha256 IS NOT NULL;
