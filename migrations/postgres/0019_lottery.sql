-- A batch may be given out by lottery (摇号) instead of a rush: citizens enter during the claim
-- window, and after it the issuer draws with a seed whose SHA-256 (hex) it published when it
-- created the batch. NULL: a rush batch, as before. The seed and the draw's time are written
-- once, when the issuer draws.
ALTER TABLE batches ADD COLUMN lottery_seed_sha256 TEXT;
ALTER TABLE batches ADD COLUMN lottery_seed TEXT;
ALTER TABLE batches ADD COLUMN drawn_at_us BIGINT;

-- One entry per citizen per lottery batch.
CREATE TABLE lottery_entries (
    batch_id      UUID NOT NULL,
    citizen_id    UUID NOT NULL,
    entered_at_us BIGINT NOT NULL,
    PRIMARY KEY (batch_id, citizen_id)
);
