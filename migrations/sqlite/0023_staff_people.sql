-- Staff keys belong to named people (issue 22, four eyes). A person is known by the keyed hash
-- of their phone (HMAC-SHA256 under the server's citizen secret, as `citizens.phone_hash`):
-- one phone, one person. A key minted at the command line with `--name --phone`, or claimed
-- from an enrolment, names its person; a key from before this migration has none, and four
-- eyes treats it as its own person (or, when minted through the API, as its minter's: whoever
-- minted it then saw its secret).
CREATE TABLE staff_people (
    id            BLOB PRIMARY KEY,
    name          TEXT NOT NULL,
    phone_hash    BLOB NOT NULL UNIQUE,
    created_at_us INTEGER NOT NULL
);
ALTER TABLE staff_keys ADD COLUMN person_id BLOB REFERENCES staff_people (id);

-- An admin's `POST /v1/staff/keys` makes an enrolment for a named person; the key exists only
-- once that person claims it with the one-time code sent to their phone. The code is kept as
-- its keyed hash bound to the enrolment's id; `tries` counts every claim. `key_id` is set once,
-- when claimed.
CREATE TABLE staff_enrolments (
    id             BLOB PRIMARY KEY,
    person_name    TEXT NOT NULL,
    phone_hash     BLOB NOT NULL,
    role           TEXT NOT NULL,
    region         TEXT NOT NULL,
    label          TEXT NOT NULL,
    minted_by      BLOB NOT NULL REFERENCES staff_keys (id),
    created_at_us  INTEGER NOT NULL,
    expires_at_us  INTEGER NOT NULL,
    code_hash      BLOB NOT NULL,
    tries          INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0),
    claimed_at_us  INTEGER,
    key_id         BLOB REFERENCES staff_keys (id)
);
