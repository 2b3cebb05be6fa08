-- Who minted each staff key: the key that called `POST /v1/staff/keys`, or NULL for a key
-- minted at the command line (`wenhui keys create`, the operator on the server). The minter saw
-- the new key's secret, so a key and the keys minted from it, at any depth, may be one person:
-- four eyes on a settlement account change refuses an approval by any of them.
ALTER TABLE staff_keys ADD COLUMN minted_by BLOB;
