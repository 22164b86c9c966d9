-- The lines list's carrier indexes: PostgreSQL only. Keep in step with
-- migrations/postgres/0008_lines_carrier_index.sql, which folds two of
-- PostgreSQL's indexes on the lines table into one. SQLite's list is led
-- by the index a filter names (see LineLead in src/store/backoffice.rs)
-- and keeps its indexes; this migration keeps the two lists of migrations
-- numbered alike.
SELECT 1;
