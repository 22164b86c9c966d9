-- Reports to judge again because sightings pulled later changed a key
-- contest of their installation (SQLite). Keep in step with
-- migrations/postgres/0017_contest_rejudge.sql, which says why.
CREATE TABLE contest_rejudge (
    id         INTEGER PRIMARY KEY NOT NULL,
    install_id TEXT NOT NULL,
    from_ms    INTEGER NOT NULL,
    to_ms      INTEGER NOT NULL CHECK (to_ms > from_ms)
);
