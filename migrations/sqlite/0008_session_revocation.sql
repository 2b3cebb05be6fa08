-- A citizen's token can be revoked before it expires: by the citizen signing out
-- (`DELETE /v1/me/session`) or by a province_admin for all of a citizen's sessions (a lost phone,
-- an account taken over). A revoked session is kept, with the time it was revoked, so that an
-- auditor can see when a token stopped working. The first index serves revoking by citizen; the
-- second, partial and so tiny, serves the feed every service process polls to drop revoked
-- tokens from its in-memory cache (`src/citizens.rs`).
ALTER TABLE citizen_sessions ADD COLUMN revoked_at_us BIGINT;
CREATE INDEX citizen_sessions_by_citizen ON citizen_sessions (citizen_id);
CREATE INDEX citizen_sessions_revoked ON citizen_sessions (revoked_at_us) WHERE revoked_at_us IS NOT NULL;
