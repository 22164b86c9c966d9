-- When each collector was last pulled to the end of its export (PostgreSQL).
-- Keep in step with migrations/sqlite/0016_cursor_caught_up.sql.
--
-- A round of pulls that ends on an empty page has every report the
-- collector received before the round started. A batch report of a period
-- counts every collector's reports only once each collector has been
-- pulled so past the period's end; until then it says which are behind
-- (and the daemon writes it again). NULL until the first such round.
ALTER TABLE pull_cursors ADD COLUMN caught_up_at BIGINT;
