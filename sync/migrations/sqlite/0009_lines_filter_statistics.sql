-- Statistics on the lines list's filter pairs: PostgreSQL only. Keep in
-- step with migrations/postgres/0009_lines_filter_statistics.sql, which
-- gives PostgreSQL's planner the joint distribution of verdict and actual
-- carrier. SQLite's list is led by the index a filter names (see LineLead
-- in src/store/backoffice.rs); this migration keeps the two lists of
-- migrations numbered alike.
SELECT 1;
