-- A lottery the public can check (docs/lottery-audit.md). Each lottery batch gets a random
-- 32-byte salt at its creation, kept secret until the draw and revealed with the seed: the
-- audit publishes each entrant as HMAC-SHA256(salt, citizen id) and ranks by
-- SHA-256(seed || that hash) (draw algorithm 2). Its SHA-256 is published from the start, with
-- the seed's; lottery_committed_at_us is when both commitments were first shown.
ALTER TABLE batches ADD COLUMN lottery_salt BYTEA;
ALTER TABLE batches ADD COLUMN lottery_committed_at_us BIGINT;
ALTER TABLE batches ADD COLUMN lottery_algorithm INTEGER;

-- Lottery batches made before this migration: a salt now (two random v4 UUIDs, 244 random
-- bits from the server's strong generator), committed now (this migration's time). Batches
-- drawn already were drawn by algorithm 1, SHA-256(seed || citizen id), which cannot be
-- published without the citizen ids: their audit is refused (409 draw_not_auditable).
UPDATE batches
SET lottery_salt = decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'),
    lottery_committed_at_us = (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
    lottery_algorithm = CASE WHEN drawn_at_us IS NULL THEN 2 ELSE 1 END
WHERE lottery_seed_sha256 IS NOT NULL;
