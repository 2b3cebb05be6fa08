-- GET /v1/me/vouchers reads a citizen's vouchers newest first, a page at a time, ordered by
-- (claimed_at_us, id) and continued after a page's last: this index serves the whole of it, the
-- order and the cursor, in one range scan. It replaces (citizen_id, claimed_at_us).
CREATE INDEX vouchers_by_citizen_page ON vouchers (citizen_id, claimed_at_us, id);
DROP INDEX vouchers_by_citizen;
