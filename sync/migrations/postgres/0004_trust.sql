-- Trust at arrival (PostgreSQL): the collector scores each report's sources
-- (installation, source prefix, signature) and the pipeline marks verdicts
-- from low-trust sources, so they are listed apart, never hidden. Keep in
-- step with migrations/sqlite/0004_trust.sql.

-- The report's trust score at arrival (0-100); NULL from receivers that do
-- not score.
ALTER TABLE verdicts ADD COLUMN trust_score SMALLINT CHECK (trust_score BETWEEN 0 AND 100);
ALTER TABLE verdicts ADD COLUMN low_trust BOOLEAN NOT NULL DEFAULT FALSE;
-- The current verdict's mark, for the lists.
ALTER TABLE lines ADD COLUMN low_trust BOOLEAN NOT NULL DEFAULT FALSE;

-- Low-trust lines are few: a partial index lists them apart.
CREATE INDEX lines_low_trust_seen ON lines (last_seen DESC, line_key DESC) WHERE low_trust = TRUE;
