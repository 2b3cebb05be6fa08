-- The cultural benefit card (文惠卡): cards, member discount terms, points policy per season,
-- card payments at the till, and the points price of a voucher batch.
-- Times are INTEGER microseconds (*_at_us); money is INTEGER fen (*_fen); points are INTEGER counts.

-- A batch may be exchanged for points (NULL: it cannot).
ALTER TABLE batches ADD COLUMN points_price INTEGER CHECK (points_price > 0);

-- One card per citizen, held by the database (UNIQUE citizen_id). Of a bank card only its
-- identification prefix (BIN) and last four digits are kept.
CREATE TABLE cards (
    id                   BLOB PRIMARY KEY,
    citizen_id           BLOB NOT NULL UNIQUE REFERENCES citizens (id),
    card_number          TEXT NOT NULL UNIQUE,
    via                  TEXT NOT NULL CHECK (via IN ('mobile', 'bank_card')),
    bank_bin             TEXT,
    bank_last4           TEXT,
    status               TEXT NOT NULL CHECK (status IN ('active', 'frozen')),
    issued_at_us         INTEGER NOT NULL,
    status_changed_at_us INTEGER,
    CHECK ((via = 'bank_card' AND length(bank_bin) = 6 AND length(bank_last4) = 4)
        OR (via = 'mobile' AND bank_bin IS NULL AND bank_last4 IS NULL))
);

-- A merchant's member discount for card holders, funded by the merchant (no ledger movement).
CREATE TABLE merchant_card_terms (
    merchant_id   BLOB PRIMARY KEY REFERENCES merchants (id),
    percent       INTEGER NOT NULL CHECK (percent BETWEEN 0 AND 99),
    cap_fen       INTEGER CHECK (cap_fen > 0),
    updated_at_us INTEGER NOT NULL
);

-- The province's points policy for a season: the rate, an optional fixed expiry, and when the
-- sweeper expired the season's points.
CREATE TABLE season_points (
    season_id       BLOB PRIMARY KEY REFERENCES seasons (id),
    points_per_yuan INTEGER NOT NULL CHECK (points_per_yuan BETWEEN 0 AND 100),
    expire_at_us    INTEGER,
    expired_at_us   INTEGER,
    updated_at_us   INTEGER NOT NULL
);

CREATE TABLE card_payments (
    id                  BLOB PRIMARY KEY,
    card_id             BLOB NOT NULL REFERENCES cards (id),
    merchant_id         BLOB NOT NULL REFERENCES merchants (id),
    terminal_id         BLOB NOT NULL REFERENCES terminals (id),
    season_id           BLOB REFERENCES seasons (id),
    order_ref           TEXT NOT NULL,
    order_amount_fen    INTEGER NOT NULL CHECK (order_amount_fen > 0),
    discount_fen        INTEGER NOT NULL CHECK (discount_fen >= 0 AND discount_fen <= order_amount_fen),
    points              INTEGER NOT NULL CHECK (points >= 0),
    -- JSON [{"season_id", "points"}]: the part of `points` that repaid the card's debts.
    debt_repaid         TEXT NOT NULL,
    paid_at_us          INTEGER NOT NULL,
    reversed_at_us      INTEGER,
    reversal_id         BLOB UNIQUE,
    reversal_reason     TEXT,
    points_taken_back   INTEGER CHECK (points_taken_back >= 0),
    points_debt_added   INTEGER CHECK (points_debt_added >= 0),
    CHECK ((season_id IS NOT NULL) OR points = 0)
);
-- One live card payment per order at a merchant; a reversed one frees the order.
CREATE UNIQUE INDEX card_payments_one_per_order ON card_payments (merchant_id, order_ref)
    WHERE reversed_at_us IS NULL;
-- The redemption group commit looks up the live card payments of its orders by reference.
CREATE INDEX card_payments_by_order_ref ON card_payments (order_ref) WHERE reversed_at_us IS NULL;
CREATE INDEX card_payments_by_season ON card_payments (season_id);
CREATE INDEX card_payments_by_card ON card_payments (card_id, paid_at_us);
