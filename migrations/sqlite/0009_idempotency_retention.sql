-- Stored answers of citizens' and tills' writes are forgotten after a retention period
-- (`src/housekeeping.rs`, 7 days by default): a phone or a till retries within seconds or
-- minutes, and a season's claims and redemptions would otherwise keep one answer row each for
-- ever. Staff writes keep theirs. The pruning query finds old rows through this index
-- (PostgreSQL uses BRIN; SQLite has only B-trees).
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_us);
