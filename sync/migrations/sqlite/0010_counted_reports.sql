-- One count per report (SQLite). Keep in step with
-- migrations/postgres/0010_counted_reports.sql, which says why: the first
-- copy of a report applied claims its report id here, and a later copy
-- (pulled from another collector) is decided as a duplicate of it.

CREATE TABLE counted_reports (
    report_id TEXT PRIMARY KEY NOT NULL,
    raw_id    INTEGER NOT NULL REFERENCES raw_reports (id)
) WITHOUT ROWID;

INSERT INTO counted_reports (report_id, raw_id)
    SELECT r.report_id, MIN(r.id) FROM raw_outcomes o JOIN raw_reports r ON r.id = o.id
    WHERE o.state = 'processed' AND r.report_id IS NOT NULL
    GROUP BY r.report_id;

-- The outcomes' states gain `duplicate`. SQLite cannot change a CHECK
-- constraint in place: the table is built again, with the same columns and
-- index as migration 0006 gave it. Nothing refers to it.
CREATE TABLE raw_outcomes_new (
    id             INTEGER PRIMARY KEY NOT NULL REFERENCES raw_reports (id),
    state          TEXT NOT NULL CHECK (state IN ('processed', 'quarantined', 'duplicate')),
    observation_id INTEGER REFERENCES observations (id),
    collector      TEXT NOT NULL,
    received_at    INTEGER,
    pulled_at      INTEGER NOT NULL
);
INSERT INTO raw_outcomes_new (id, state, observation_id, collector, received_at, pulled_at)
    SELECT id, state, observation_id, collector, received_at, pulled_at FROM raw_outcomes;
DROP TABLE raw_outcomes;
ALTER TABLE raw_outcomes_new RENAME TO raw_outcomes;
CREATE INDEX raw_outcomes_received ON raw_outcomes
    (COALESCE(received_at, pulled_at), state, observation_id, collector, received_at, pulled_at);
