-- A season may limit how many of a citizen's vouchers one merchant redeems (Shandong 2020: at
-- most 5 purchases per person at one merchant), against cash-out through a single colluding
-- merchant. Reversed redemptions do not count. NULL: no limit (the default, as before).
ALTER TABLE seasons ADD COLUMN merchant_redemption_limit INTEGER CHECK (merchant_redemption_limit > 0);
