-- PostgreSQL drops the foreign keys of `redemptions` in this migration (see its file): there
-- each one cost a row-locking lookup per inserted row. SQLite checks a foreign key with one
-- in-process index probe, cheap enough to keep, and dropping one would need a table rebuild.
SELECT 1;
