-- Indexes for the batch reports (lineprobe-sync report).
-- Keep this file in step with migrations/sqlite/0002_reports.sql.

-- The reports received in a period: a report belongs to the period its
-- receive time falls in (the pull time when its envelope could not be read).
-- The expression must match the queries in src/store/period.rs exactly. The
-- included columns allow index-only scans for those queries (the planner
-- wants the expression's own columns too), so a report's period figures
-- never read the report bodies.
CREATE INDEX raw_reports_received ON raw_reports ((COALESCE(received_at, pulled_at)), state)
    INCLUDE (observation_id, collector, id, received_at, pulled_at);

-- A line's verdict for a period: the newest verdict of an observation
-- decided for a report received before the period's end.
CREATE INDEX verdicts_observation ON verdicts (observation_id, id);
