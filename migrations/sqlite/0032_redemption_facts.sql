-- Cash-out scoring reads a season's redemptions in (merchant, time) order with who redeemed,
-- when the voucher was claimed and the citizen's home city. Joined to vouchers and citizens
-- that is a random lookup per redemption (on SQLite most of a 1,000,000-redemption season's
-- 25 s); kept on the redemption row, written once with it, the read is one ordered index scan.
-- `citizen_home_digits`: the first four digits of the citizen's ID number (province and city),
-- which the masked ID number keeps too. SQLite cannot add a NOT NULL column to a table with
-- rows: a trigger refuses a redemption without its citizen or claim time instead, as
-- PostgreSQL's NOT NULL does.
ALTER TABLE redemptions ADD COLUMN citizen_id BLOB;
ALTER TABLE redemptions ADD COLUMN claimed_at_us INTEGER;
ALTER TABLE redemptions ADD COLUMN citizen_home_digits TEXT;

UPDATE redemptions
SET citizen_id = v.citizen_id,
    claimed_at_us = v.claimed_at_us,
    citizen_home_digits = (SELECT substr(c.id_masked, 1, 4) FROM citizens c WHERE c.id = v.citizen_id)
FROM vouchers v
WHERE v.id = redemptions.voucher_id;

CREATE INDEX redemptions_by_season_merchant ON redemptions (season_id, merchant_id, redeemed_at_us);

CREATE TRIGGER redemptions_carry_their_citizen BEFORE INSERT ON redemptions
WHEN NEW.citizen_id IS NULL OR NEW.claimed_at_us IS NULL
BEGIN
    SELECT RAISE(ABORT, 'NOT NULL constraint failed: redemptions.citizen_id, redemptions.claimed_at_us');
END;
