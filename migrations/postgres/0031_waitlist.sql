-- A waitlist batch (docs/waitlist.md): a lottery batch whose whole list of entrants is ranked at
-- the opening (the draw), the stock going to the first; every voucher of it that later expires
-- or is forfeited goes to the next in line. waitlist_next_place: the first place not reached
-- yet (NULL before the opening); moved on only by a compare-and-set in the move's transaction.
ALTER TABLE batches ADD COLUMN waitlist INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN waitlist_next_place BIGINT;

-- The line, written at the opening: place 1, 2, ... in the draw's order (algorithm 2).
-- passed_reason: why a person reached got nothing (a per-person cap refused them).
CREATE TABLE waitlist_places (
    batch_id      UUID NOT NULL,
    place         BIGINT NOT NULL CHECK (place > 0),
    citizen_id    UUID NOT NULL,
    passed_reason TEXT,
    PRIMARY KEY (batch_id, place),
    UNIQUE (batch_id, citizen_id)
);

-- Each expired or forfeited voucher of a waitlist batch moves on once (the primary key):
-- to the voucher it became (NULL: nobody was left to take it, or the season was over).
CREATE TABLE waitlist_moves (
    voucher_id     UUID PRIMARY KEY,
    batch_id       UUID NOT NULL,
    new_voucher_id UUID,
    outcome        TEXT NOT NULL,
    moved_at_us    BIGINT NOT NULL
);
CREATE INDEX waitlist_moves_by_batch ON waitlist_moves (batch_id);

-- A waiting person's phone, sealed (AEAD, the key in the keys directory), to text them when a
-- voucher comes to them; erased once they are reached (issued or passed).
ALTER TABLE lottery_entries ADD COLUMN sealed_phone BYTEA;

-- The freed vouchers of a batch, found by the sweep (not on the claim's hot insert: partial).
CREATE INDEX vouchers_freed ON vouchers (batch_id) WHERE status IN ('expired', 'forfeited');
