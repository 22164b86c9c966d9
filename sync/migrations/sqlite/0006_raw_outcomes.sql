-- Where a raw report is in the pipeline, kept apart from the report
-- (SQLite). Keep in step with migrations/postgres/0006_raw_outcomes.sql,
-- which says why: a raw report is written once, as pulled, and never again;
-- the pull lists a new report in raw_pending, and the apply that decides it
-- deletes that entry and writes its outcome as a narrow row of its own.

-- Raw reports not applied yet.
CREATE TABLE raw_pending (
    raw_id INTEGER PRIMARY KEY NOT NULL REFERENCES raw_reports (id)
);

-- What the pipeline made of each applied raw report. `id` is the raw
-- report's; the report's collector and times are copied here so that the
-- batch reports' period figures read this narrow table alone.
CREATE TABLE raw_outcomes (
    id             INTEGER PRIMARY KEY NOT NULL REFERENCES raw_reports (id),
    state          TEXT NOT NULL CHECK (state IN ('processed', 'quarantined')),
    observation_id INTEGER REFERENCES observations (id),
    collector      TEXT NOT NULL,
    received_at    INTEGER,
    pulled_at      INTEGER NOT NULL
);

INSERT INTO raw_pending (raw_id)
    SELECT id FROM raw_reports WHERE state = 'pending';
INSERT INTO raw_outcomes (id, state, observation_id, collector, received_at, pulled_at)
    SELECT id, state, observation_id, collector, received_at, pulled_at
    FROM raw_reports WHERE state <> 'pending';

-- The period index moves with the state (see 0002_reports.sql).
DROP INDEX raw_reports_pending;
DROP INDEX raw_reports_received;
CREATE INDEX raw_outcomes_received ON raw_outcomes
    (COALESCE(received_at, pulled_at), state, observation_id, collector, received_at, pulled_at);
ALTER TABLE raw_reports DROP COLUMN state;
ALTER TABLE raw_reports DROP COLUMN observation_id;
