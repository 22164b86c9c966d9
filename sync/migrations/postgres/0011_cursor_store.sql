-- The collector's staging store a cursor's reports came from (its
-- X-LineProbe-Store): sequence numbers are unique only within one store, so
-- a collector whose store was made afresh under the same node id is refused
-- instead of having its new reports taken for ones already pulled. NULL
-- until the first pull from a collector that sends it.
ALTER TABLE pull_cursors ADD COLUMN store_id TEXT;
