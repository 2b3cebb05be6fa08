-- The service forgets a spent QR token's nonce an hour after it was used (`src/housekeeping.rs`):
-- a token lives at most 120 s and is honoured at most 30 s before its issue time, so from 150 s
-- after its use the expiry check refuses a replay before the nonce is looked at, and the table
-- would otherwise grow by one row per redemption and card payment for ever. The pruning query
-- finds old rows through this index. A B-tree, not BRIN: once pruning frees pages, new rows fill
-- them, the table's physical order stops following time, and a BRIN range's summary never
-- narrows, so every prune would read the whole table.
CREATE INDEX qr_nonces_by_use ON qr_nonces (used_at_us);

-- Request nonces the same way, for the same reason: the BRIN index of migration 0007 stops
-- narrowing the prune once the table's freed pages are reused.
DROP INDEX terminal_nonces_by_age;
CREATE INDEX terminal_nonces_by_age ON terminal_nonces (seen_at_us);
