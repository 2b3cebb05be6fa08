-- The service forgets request nonces 15 minutes after it first saw them (`src/housekeeping.rs`):
-- a request is refused as stale more than 300 s from its timestamp, so after 600 s a replay can
-- no longer pass the clock check, and the table would otherwise grow by one row per till request
-- for ever. The pruning query finds old rows through this index. BRIN: rows arrive in time order
-- and the index costs next to nothing on the request path's insert.
CREATE INDEX terminal_nonces_by_age ON terminal_nonces USING brin (seen_at_us);
