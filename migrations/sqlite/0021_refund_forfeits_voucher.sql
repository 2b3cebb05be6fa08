-- no-transaction
-- A season may make a refunded sale forfeit its voucher (Guangzhou) instead of giving it back
-- (Shandong, and the default): the voucher is then 'forfeited', which keeps its holder's claim
-- slot and caps while its value goes back to the funders' pools.
--
-- SQLite cannot change a CHECK in place: the vouchers table is rebuilt as SQLite's ALTER TABLE
-- documentation prescribes (new table, copy, drop, rename, indexes again), with foreign keys
-- off so that dropping the old table does not trip `redemptions.voucher_id`, which resolves to
-- the new table once it has the old name. Foreign keys can only be switched outside a
-- transaction, hence `no-transaction` above and the explicit one below.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
ALTER TABLE seasons ADD COLUMN refund_forfeits_voucher INTEGER NOT NULL DEFAULT 0;
CREATE TABLE vouchers_rebuilt (
    id            BLOB PRIMARY KEY,
    batch_id      BLOB NOT NULL,
    season_id     BLOB NOT NULL,
    citizen_id    BLOB NOT NULL,
    slot          INTEGER NOT NULL CHECK (slot > 0),
    status        TEXT NOT NULL CHECK (status IN ('active', 'redeemed', 'expired', 'forfeited')),
    value_fen     INTEGER NOT NULL CHECK (value_fen > 0),
    claimed_at_us INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL,
    expired_at_us INTEGER
);
INSERT INTO vouchers_rebuilt (id, batch_id, season_id, citizen_id, slot, status, value_fen, claimed_at_us,
                              expires_at_us, expired_at_us)
    SELECT id, batch_id, season_id, citizen_id, slot, status, value_fen, claimed_at_us, expires_at_us, expired_at_us
    FROM vouchers;
DROP TABLE vouchers;
ALTER TABLE vouchers_rebuilt RENAME TO vouchers;
-- Per-person limit, held by the database: one live voucher per (batch, citizen, slot).
CREATE UNIQUE INDEX vouchers_live_slot ON vouchers (batch_id, citizen_id, slot) WHERE status <> 'expired';
CREATE INDEX vouchers_by_citizen ON vouchers (citizen_id, claimed_at_us);
CREATE INDEX vouchers_due ON vouchers (expires_at_us) WHERE status = 'active';
COMMIT;
PRAGMA foreign_keys = ON;
