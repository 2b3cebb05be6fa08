-- PostgreSQL's 0020 adds TRUNCATE triggers to ledger_checkpoints and season_reports. SQLite has
-- no TRUNCATE (an unqualified DELETE fires the DELETE triggers the tables already have); this
-- file keeps the two backends' migration versions the same.
SELECT 1;
