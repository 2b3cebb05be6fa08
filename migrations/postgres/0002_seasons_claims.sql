-- Seasons, batches, citizens, vouchers, and idempotency keys.

CREATE TABLE seasons (
    id                  UUID PRIMARY KEY,
    name                TEXT NOT NULL,
    province            TEXT NOT NULL,
    starts_at_us        BIGINT NOT NULL,
    ends_at_us          BIGINT NOT NULL,
    per_citizen_cap_fen BIGINT CHECK (per_citizen_cap_fen > 0),
    closed_at_us        BIGINT,
    created_at_us       BIGINT NOT NULL,
    CHECK (ends_at_us > starts_at_us)
);

CREATE TABLE season_funders (
    season_id UUID NOT NULL REFERENCES seasons (id),
    funder    TEXT NOT NULL,
    PRIMARY KEY (season_id, funder)
);

CREATE TABLE batches (
    id                     UUID PRIMARY KEY,
    season_id              UUID NOT NULL REFERENCES seasons (id),
    name                   TEXT NOT NULL,
    issuer                 TEXT NOT NULL,
    kind                   TEXT NOT NULL CHECK (kind IN ('threshold', 'percent')),
    face_value_fen         BIGINT,
    percent                INTEGER,
    cap_fen                BIGINT,
    step_fen               BIGINT,
    min_spend_fen          BIGINT NOT NULL CHECK (min_spend_fen >= 0),
    max_value_fen          BIGINT NOT NULL CHECK (max_value_fen > 0),
    stock                  BIGINT NOT NULL CHECK (stock > 0),
    per_citizen_limit      INTEGER NOT NULL CHECK (per_citizen_limit > 0),
    valid_hours            INTEGER NOT NULL CHECK (valid_hours > 0),
    claim_opens_at_us      BIGINT NOT NULL,
    claim_closes_at_us     BIGINT NOT NULL,
    categories             TEXT NOT NULL,
    funding                TEXT NOT NULL,
    releases               TEXT NOT NULL,
    claimed_count          BIGINT NOT NULL DEFAULT 0,
    returned_count         BIGINT NOT NULL DEFAULT 0,
    reserve_returned_at_us BIGINT,
    created_at_us          BIGINT NOT NULL,
    -- No oversell, whatever the application does: live vouchers never exceed the stock.
    CHECK (returned_count >= 0 AND returned_count <= claimed_count AND claimed_count - returned_count <= stock),
    CHECK (claim_closes_at_us > claim_opens_at_us)
);
CREATE INDEX batches_by_season ON batches (season_id);

CREATE TABLE citizens (
    id            UUID PRIMARY KEY,
    id_hash       BYTEA NOT NULL UNIQUE,
    id_masked     TEXT NOT NULL,
    name_masked   TEXT NOT NULL,
    phone_hash    BYTEA NOT NULL,
    phone_masked  TEXT NOT NULL,
    created_at_us BIGINT NOT NULL
);

CREATE TABLE citizen_sessions (
    token_hash    BYTEA PRIMARY KEY,
    citizen_id    UUID NOT NULL REFERENCES citizens (id),
    expires_at_us BIGINT NOT NULL,
    created_at_us BIGINT NOT NULL
);

-- No foreign keys on the claim path's tables: the claim writer inserts vouchers only for the
-- batch, season and citizen it has just read, and three foreign-key checks per voucher were half
-- the cost of a claim group on PostgreSQL (measured with sqlx statement timing).
CREATE TABLE vouchers (
    id            UUID PRIMARY KEY,
    batch_id      UUID NOT NULL,
    season_id     UUID NOT NULL,
    citizen_id    UUID NOT NULL,
    slot          INTEGER NOT NULL CHECK (slot > 0),
    status        TEXT NOT NULL CHECK (status IN ('active', 'redeemed', 'expired')),
    value_fen     BIGINT NOT NULL CHECK (value_fen > 0),
    claimed_at_us BIGINT NOT NULL,
    expires_at_us BIGINT NOT NULL,
    expired_at_us BIGINT
);
-- Per-person limit, held by the database: one live voucher per (batch, citizen, slot).
CREATE UNIQUE INDEX vouchers_live_slot ON vouchers (batch_id, citizen_id, slot) WHERE status <> 'expired';
CREATE INDEX vouchers_by_citizen ON vouchers (citizen_id, claimed_at_us);
CREATE INDEX vouchers_due ON vouchers (expires_at_us) WHERE status = 'active';

-- Season cap per person, held by the database: the CHECK refuses any total above the cap.
CREATE TABLE citizen_season_totals (
    season_id   UUID NOT NULL,
    citizen_id  UUID NOT NULL,
    claimed_fen BIGINT NOT NULL,
    cap_fen     BIGINT NOT NULL,
    PRIMARY KEY (season_id, citizen_id),
    CHECK (claimed_fen >= 0 AND claimed_fen <= cap_fen)
);

-- A retried write returns its first answer. Rows are written in the same transaction as the
-- effect they describe, so an answer is stored if and only if the effect happened.
CREATE TABLE idempotency_keys (
    scope         TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    request_hash  BYTEA NOT NULL,
    status        INTEGER NOT NULL,
    body          TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
