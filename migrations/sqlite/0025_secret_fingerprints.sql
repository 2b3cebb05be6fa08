-- Every node over one database must hold the same secrets (issue 24): the first node to start
-- records a fingerprint of each (SHA-256 of a domain-separated HMAC under the secret, never the
-- secret itself), and a node whose secret gives another fingerprint refuses to start.
CREATE TABLE secret_fingerprints (
    name           TEXT PRIMARY KEY,
    fingerprint    TEXT NOT NULL,
    recorded_at_us BIGINT NOT NULL
);
