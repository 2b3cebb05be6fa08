-- Lifting a settlement hold (docs/settlement-holds.md#lifting-a-hold): a finance officer who
-- has checked the merchant lifts its hold, with a note. A lifted hold is not in force: the next
-- settlements pay the merchant normally (lines held before stay held until released or
-- rejected), and a score no longer holds the merchant for the season; a hold by hand may put it
-- in force again (the row is rewritten with the new reason, the lift cleared).
ALTER TABLE merchant_holds ADD COLUMN lifted_at_us INTEGER;
-- The staff key that lifted it.
ALTER TABLE merchant_holds ADD COLUMN lifted_by BLOB;
-- Why (what finance checked). SQLite adds no table CHECK to an existing table: the column's
-- CHECK states the three are set together.
ALTER TABLE merchant_holds ADD COLUMN lift_note TEXT
    CHECK ((lifted_at_us IS NULL) = (lifted_by IS NULL) AND (lifted_at_us IS NULL) = (lift_note IS NULL));
