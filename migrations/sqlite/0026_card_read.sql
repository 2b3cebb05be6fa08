-- GET /v1/me/card reads the seasons a card has payments in (then their points accounts) in the
-- same statement as the card: (card_id, season_id) serves that DISTINCT from the index alone.
-- It replaces (card_id, paid_at_us), which nothing reads in that order.
CREATE INDEX card_payments_by_card_season ON card_payments (card_id, season_id);
DROP INDEX card_payments_by_card;
