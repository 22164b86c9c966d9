-- Text keys in the "C" collation (PostgreSQL). Keep in step with
-- migrations/sqlite/0007_text_keys_c.sql.
--
-- A text column compares in the database's collation unless it says
-- otherwise. Under a locale such as C.UTF-8 or en_US.UTF-8 every
-- comparison goes through strcoll on NUL-terminated copies of both values;
-- inserting a report's rows descends about twenty B-tree indexes on text
-- keys, and those comparisons were about 6 % of the server's CPU in the
-- pipeline benchmark. In "C" they are a memcmp. The keys are identifiers
-- (line and observation keys, catalog ids, verdict and state names, node
-- and report ids): only their equality and a stable order matter, and
-- byte order is what SQLite, the other backend, uses for them already.
-- Equality is unchanged. Indexes on these columns are rebuilt; the rows
-- are not rewritten.
ALTER TABLE lines
    ALTER COLUMN line_key TYPE TEXT COLLATE "C",
    ALTER COLUMN verdict TYPE TEXT COLLATE "C",
    ALTER COLUMN declared_province TYPE TEXT COLLATE "C",
    ALTER COLUMN declared_city TYPE TEXT COLLATE "C",
    ALTER COLUMN declared_carrier TYPE TEXT COLLATE "C",
    ALTER COLUMN actual_carrier TYPE TEXT COLLATE "C";
ALTER TABLE observations
    ALTER COLUMN obs_key TYPE TEXT COLLATE "C",
    ALTER COLUMN line_key TYPE TEXT COLLATE "C";
ALTER TABLE verdicts
    ALTER COLUMN line_key TYPE TEXT COLLATE "C";
ALTER TABLE line_history
    ALTER COLUMN line_key TYPE TEXT COLLATE "C";
ALTER TABLE raw_reports
    ALTER COLUMN node_id TYPE TEXT COLLATE "C",
    ALTER COLUMN report_id TYPE TEXT COLLATE "C";
ALTER TABLE raw_outcomes
    ALTER COLUMN state TYPE TEXT COLLATE "C";
