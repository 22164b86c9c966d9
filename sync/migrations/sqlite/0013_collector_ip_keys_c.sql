-- Collector names and cached addresses in the "C" collation: PostgreSQL
-- only. Keep in step with migrations/postgres/0013_collector_ip_keys_c.sql,
-- which moves pull_cursors.collector, raw_reports.collector,
-- raw_outcomes.collector and resolver_cache.ip to byte order. SQLite
-- compares text bytewise (BINARY) unless a column says otherwise, and none
-- of these does, so they already compare that way; this migration keeps
-- the two lists of migrations numbered alike.
SELECT 1;
