-- The most of an order a season's vouchers may pay at a merchant of a category (Shandong 2020:
-- 50% of a transaction for performances, 20% for other items): `category:percent` pairs joined
-- by commas, e.g. `performance:50,bookstore:20`. NULL: no ceiling (the default, as before). Set
-- when the season is created and never changes.
ALTER TABLE seasons ADD COLUMN subsidy_ceilings TEXT;
