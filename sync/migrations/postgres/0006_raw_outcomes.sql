-- Where a raw report is in the pipeline, kept apart from the report
-- (PostgreSQL). Keep in step with migrations/sqlite/0006_raw_outcomes.sql.
--
-- A raw report (~2 KB) is written once, as pulled, and never again. Its
-- state used to be two columns of its own row: every apply then rewrote the
-- whole row, and since the state was indexed, every index of the table with
-- it (about 5 KB of WAL and 40-80 µs of the server's CPU a report, the
-- largest single write of an apply). Now the pull lists a new report in
-- raw_pending (a bare id), and the apply that decides it deletes that entry
-- and writes its outcome as a narrow row of its own.

-- Raw reports not applied yet.
CREATE TABLE raw_pending (
    raw_id BIGINT PRIMARY KEY
);

-- What the pipeline made of each applied raw report. `id` is the raw
-- report's; the report's collector and times are copied here so that the
-- batch reports' period figures read this narrow table alone.
CREATE TABLE raw_outcomes (
    id             BIGINT PRIMARY KEY,
    state          TEXT NOT NULL CHECK (state IN ('processed', 'quarantined')),
    observation_id BIGINT,
    collector      TEXT NOT NULL,
    received_at    BIGINT,
    pulled_at      BIGINT NOT NULL
);

INSERT INTO raw_pending (raw_id)
    SELECT id FROM raw_reports WHERE state = 'pending';
INSERT INTO raw_outcomes (id, state, observation_id, collector, received_at, pulled_at)
    SELECT id, state, observation_id, collector, received_at, pulled_at
    FROM raw_reports WHERE state <> 'pending';

-- The period index moves with the state (see 0002_reports.sql: the
-- expression must match the queries in src/store/period.rs exactly).
DROP INDEX raw_reports_pending;
DROP INDEX raw_reports_received;
CREATE INDEX raw_outcomes_received ON raw_outcomes ((COALESCE(received_at, pulled_at)), state)
    INCLUDE (observation_id, collector, id, received_at, pulled_at);
ALTER TABLE raw_reports DROP COLUMN state;
ALTER TABLE raw_reports DROP COLUMN observation_id;
