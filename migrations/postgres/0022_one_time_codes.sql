-- One-time codes sent by SMS (`src/app/codes.rs`): one row per phone and purpose, holding the
-- current code's keyed hash (HMAC-SHA256 under a server secret, never the code), when it
-- expires, how many tries it has taken, and the issuing history the resend interval and the
-- daily cap are counted on. A used code's hash is set to NULL; the row stays for the history.
-- The purpose is the application's enum as text (`domain::one_time_code::CodePurpose`), with no
-- CHECK, so a new purpose needs no migration.
CREATE TABLE one_time_codes (
    phone_hash        BYTEA NOT NULL,
    purpose           TEXT NOT NULL,
    code_hash         BYTEA,
    expires_at_us     BIGINT NOT NULL,
    tries             INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0),
    issued_at_us      BIGINT NOT NULL,
    day_started_at_us BIGINT NOT NULL,
    issued_in_day     INTEGER NOT NULL CHECK (issued_in_day >= 1),
    PRIMARY KEY (phone_hash, purpose)
);
