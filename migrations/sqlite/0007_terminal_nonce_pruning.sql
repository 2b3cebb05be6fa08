-- The service forgets request nonces 15 minutes after it first saw them (`src/housekeeping.rs`):
-- a request is refused as stale more than 300 s from its timestamp, so after 600 s a replay can
-- no longer pass the clock check, and the table would otherwise grow by one row per till request
-- for ever. The pruning query finds old rows through this index (PostgreSQL uses BRIN; SQLite
-- has only B-trees).
CREATE INDEX terminal_nonces_by_age ON terminal_nonces (seen_at_us);
