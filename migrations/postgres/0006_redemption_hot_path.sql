-- The redemption writer inserts every redemption of a group in one statement, and each foreign
-- key made PostgreSQL run a row-locking lookup per row (five per redemption: about 4 ms of a
-- 5 ms insert for a group of 26 in `wenhui bench redemptions`). The writer checks each of these
-- references itself, under the ledger lock, in the same transaction: the voucher is read there
-- (it must exist and be active), its batch and season come from that voucher, the terminal and
-- its merchant from the authenticated request; none of the referenced rows is ever deleted.
-- `wenhui reconcile` checks every redemption against its voucher and ledger entry.
ALTER TABLE redemptions DROP CONSTRAINT redemptions_voucher_id_fkey;
ALTER TABLE redemptions DROP CONSTRAINT redemptions_merchant_id_fkey;
ALTER TABLE redemptions DROP CONSTRAINT redemptions_terminal_id_fkey;
ALTER TABLE redemptions DROP CONSTRAINT redemptions_season_id_fkey;
ALTER TABLE redemptions DROP CONSTRAINT redemptions_batch_id_fkey;
