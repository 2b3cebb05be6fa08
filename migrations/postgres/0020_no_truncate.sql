-- TRUNCATE fires no row triggers, so every append-only table needs its own statement trigger.
-- 0001 gave one to journal_entries and postings but not to ledger_checkpoints; 0004's
-- season_reports (a closed season's final report) had none. (SQLite has no TRUNCATE: its
-- DELETE triggers already cover an unqualified DELETE.)
CREATE TRIGGER ledger_checkpoints_no_truncate BEFORE TRUNCATE ON ledger_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION wenhui_refuse_ledger_change();
CREATE TRIGGER season_reports_no_truncate BEFORE TRUNCATE ON season_reports
    FOR EACH STATEMENT EXECUTE FUNCTION wenhui_refuse_ledger_change();
