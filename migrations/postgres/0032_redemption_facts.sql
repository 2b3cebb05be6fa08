-- Cash-out scoring reads a season's redemptions in (merchant, time) order with who redeemed,
-- when the voucher was claimed and the citizen's home city. Joined to vouchers and citizens
-- that is a random lookup per redemption (on SQLite most of a 1,000,000-redemption season's
-- 25 s); kept on the redemption row, written once with it, the read is one ordered index scan.
-- `citizen_home_digits`: the first four digits of the citizen's ID number (province and city),
-- which the masked ID number keeps too.
ALTER TABLE redemptions
    ADD COLUMN citizen_id UUID,
    ADD COLUMN claimed_at_us BIGINT,
    ADD COLUMN citizen_home_digits TEXT;

UPDATE redemptions r
SET citizen_id = v.citizen_id,
    claimed_at_us = v.claimed_at_us,
    citizen_home_digits = substr(c.id_masked, 1, 4)
FROM vouchers v
LEFT JOIN citizens c ON c.id = v.citizen_id
WHERE v.id = r.voucher_id;

ALTER TABLE redemptions
    ALTER COLUMN citizen_id SET NOT NULL,
    ALTER COLUMN claimed_at_us SET NOT NULL;

CREATE INDEX redemptions_by_season_merchant ON redemptions (season_id, merchant_id, redeemed_at_us);
