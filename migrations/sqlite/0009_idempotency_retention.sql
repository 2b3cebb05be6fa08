-- Stored answers of citizens' and tills' writes are forgotten after a retention period
-- (`src/housekeeping.rs`, 7 days by default): a phone or a till retries within seconds or
-- minutes, and a season's claims and redemptions would otherwise keep one answer row each for
-- ever. Staff writes keep theirs. The pruning query finds old rows through this index, which
-- holds only the rows that can be pruned (the query repeats its WHERE term exactly, as SQLite
-- needs to use a partial index).
CREATE INDEX idempotency_keys_prunable ON idempotency_keys (created_at_us)
    WHERE scope LIKE 'citizen:%' OR scope LIKE 'terminal:%';
