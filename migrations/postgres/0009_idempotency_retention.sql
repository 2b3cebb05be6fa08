-- Stored answers of citizens' and tills' writes are forgotten after a retention period
-- (`src/housekeeping.rs`, 7 days by default): a phone or a till retries within seconds or
-- minutes, and a season's claims and redemptions would otherwise keep one answer row each for
-- ever. Staff writes keep theirs. The pruning query finds old rows through this index, which
-- holds only the rows that can be pruned. A B-tree, not BRIN: deleted rows' space is reused by
-- new ones, so the table's physical order stops following time and a BRIN index would send
-- every prune through most of the table. The insert lands on the index's right-most page.
CREATE INDEX idempotency_keys_prunable ON idempotency_keys (created_at_us)
    WHERE scope LIKE 'citizen:%' OR scope LIKE 'terminal:%';
