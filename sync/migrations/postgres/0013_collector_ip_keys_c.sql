-- Collector names and cached addresses in the "C" collation (PostgreSQL).
-- Keep in step with migrations/sqlite/0013_collector_ip_keys_c.sql.
--
-- 0007_text_keys_c.sql moved the text keys to byte order but left these
-- columns in the database's collation, so the orders they are read in
-- followed the server's locale rather than byte order, as SQLite, the
-- other backend, gives them: the collectors' cursors (ORDER BY collector,
-- and the collector named when another one already pulls a node), and the
-- resolver cache as loaded (ORDER BY ip). Under en_US.UTF-8 or an ICU
-- locale "a" sorts before "B" and "1::1" before "10::1"; in "C" it is the
-- other way round in both.
--
-- raw_reports.collector moves with raw_outcomes.collector: the report
-- counts (src/store/period.rs) group a UNION ALL of the two, which needs
-- one collation on both sides. Equality is unchanged; indexes on these
-- columns are rebuilt, the rows are not rewritten.
ALTER TABLE pull_cursors
    ALTER COLUMN collector TYPE TEXT COLLATE "C";
ALTER TABLE raw_reports
    ALTER COLUMN collector TYPE TEXT COLLATE "C";
ALTER TABLE raw_outcomes
    ALTER COLUMN collector TYPE TEXT COLLATE "C";
ALTER TABLE resolver_cache
    ALTER COLUMN ip TYPE TEXT COLLATE "C";
