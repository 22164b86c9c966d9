-- Quarantine ids are never given twice: SQLite only. Keep in step with
-- migrations/sqlite/0015_quarantine_ids_kept.sql, which builds SQLite's
-- table again with AUTOINCREMENT. Here the id comes from a sequence, which
-- never hands out a value twice already; this migration keeps the two
-- lists of migrations numbered alike.
SELECT 1;
