-- A season may make a refunded sale forfeit its voucher (Guangzhou) instead of giving it back
-- (Shandong, and the default): the voucher is then 'forfeited', which keeps its holder's claim
-- slot and caps while its value goes back to the funders' pools.
ALTER TABLE seasons ADD COLUMN refund_forfeits_voucher INTEGER NOT NULL DEFAULT 0;
ALTER TABLE vouchers DROP CONSTRAINT vouchers_status_check;
ALTER TABLE vouchers ADD CONSTRAINT vouchers_status_check
    CHECK (status IN ('active', 'redeemed', 'expired', 'forfeited'));
