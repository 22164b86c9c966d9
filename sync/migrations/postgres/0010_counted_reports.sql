-- One count per report (PostgreSQL). Keep in step with
-- migrations/sqlite/0010_counted_reports.sql.
--
-- The report id is the report's idempotency key, but raw reports are told
-- apart by node and sequence number: a probe that timed out on one
-- collector (which may have stored the report) sends the report again to
-- the next, and the puller stores both copies, exactly as received. The
-- apply counts a report id once: the first copy applied claims it here, and
-- a later copy is decided as a duplicate of it (state `duplicate`, its
-- outcome pointing at the observation the report counted in) and counts
-- nowhere. A claim is never removed, as counts are never taken back.

CREATE TABLE counted_reports (
    report_id TEXT COLLATE "C" PRIMARY KEY,
    raw_id    BIGINT NOT NULL
);

ALTER TABLE raw_outcomes DROP CONSTRAINT raw_outcomes_state_check;
ALTER TABLE raw_outcomes ADD CONSTRAINT raw_outcomes_state_check
    CHECK (state IN ('processed', 'quarantined', 'duplicate'));

-- The reports counted before: each report id by the first of its copies
-- (the report id the puller read from the body, which for a processed
-- report is the validated one). Copies counted twice before stay counted.
INSERT INTO counted_reports (report_id, raw_id)
    SELECT r.report_id, MIN(r.id) FROM raw_outcomes o JOIN raw_reports r ON r.id = o.id
    WHERE o.state = 'processed' AND r.report_id IS NOT NULL
    GROUP BY r.report_id;
