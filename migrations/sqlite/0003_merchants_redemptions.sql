-- Merchants, terminals, QR signing keys, and redemptions at the till.

ALTER TABLE seasons ADD COLUMN allow_stacking INTEGER NOT NULL DEFAULT 0;

CREATE TABLE merchants (
    id            BLOB PRIMARY KEY,
    name          TEXT NOT NULL,
    credit_code   TEXT NOT NULL UNIQUE,
    category      TEXT NOT NULL,
    city          TEXT NOT NULL,
    bank          TEXT NOT NULL,
    account_no    TEXT NOT NULL,
    account_name  TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at_us INTEGER NOT NULL
);
CREATE INDEX merchants_by_city ON merchants (city, name);

-- Tills hold their own Ed25519 private keys; only public keys are stored here.
CREATE TABLE terminals (
    id            BLOB PRIMARY KEY,
    merchant_id   BLOB NOT NULL REFERENCES merchants (id),
    public_key    BLOB NOT NULL UNIQUE,
    label         TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    revoked_at_us INTEGER
);

-- Request nonces seen per terminal (replay protection); rows older than the allowed clock skew
-- may be pruned.
CREATE TABLE terminal_nonces (
    terminal_id BLOB NOT NULL,
    nonce       TEXT NOT NULL,
    seen_at_us  INTEGER NOT NULL,
    PRIMARY KEY (terminal_id, nonce)
);

-- Public halves of the QR signing keys and their validity; private keys are files in the data
-- directory (keys/qr/<key_id>.pk8).
CREATE TABLE qr_keys (
    key_id        TEXT PRIMARY KEY,
    public_key    BLOB NOT NULL,
    valid_from_us INTEGER NOT NULL,
    retired_at_us INTEGER
);

-- A QR token's nonce is spent by the redemption that used it.
CREATE TABLE qr_nonces (
    nonce      BLOB PRIMARY KEY,
    subject_id BLOB NOT NULL,
    used_at_us INTEGER NOT NULL
);

CREATE TABLE redemptions (
    id               BLOB PRIMARY KEY,
    voucher_id       BLOB NOT NULL REFERENCES vouchers (id),
    merchant_id      BLOB NOT NULL REFERENCES merchants (id),
    terminal_id      BLOB NOT NULL REFERENCES terminals (id),
    season_id        BLOB NOT NULL REFERENCES seasons (id),
    batch_id         BLOB NOT NULL REFERENCES batches (id),
    order_ref        TEXT NOT NULL,
    order_slot       TEXT NOT NULL,
    order_amount_fen INTEGER NOT NULL CHECK (order_amount_fen > 0),
    discount_fen     INTEGER NOT NULL CHECK (discount_fen > 0 AND discount_fen <= order_amount_fen),
    funders          TEXT NOT NULL,
    redeemed_at_us   INTEGER NOT NULL,
    reversed_at_us   INTEGER,
    reversal_id      BLOB,
    reversal_reason  TEXT,
    settled_at_us    INTEGER
);
-- One voucher per order (per issuer level when the season allows stacking), one live
-- redemption per voucher; a reversed redemption frees both.
CREATE UNIQUE INDEX redemptions_one_per_order ON redemptions (merchant_id, order_ref, order_slot)
    WHERE reversed_at_us IS NULL;
CREATE UNIQUE INDEX redemptions_one_per_voucher ON redemptions (voucher_id) WHERE reversed_at_us IS NULL;
CREATE INDEX redemptions_by_merchant ON redemptions (merchant_id, redeemed_at_us);
