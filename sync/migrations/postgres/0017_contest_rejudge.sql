-- Reports to judge again because sightings pulled later changed a key
-- contest of their installation (PostgreSQL). Keep in step with
-- migrations/sqlite/0017_contest_rejudge.sql.
--
-- A node pulled late can show that two keys signed for an installation
-- when the verdicts of its reports from other nodes were already made.
-- The arrival times where its contests changed are written here in the
-- transaction that records the sightings in install_keys, and deleted
-- once the reports that arrived then have been judged again: a run
-- stopped in between leaves them to the next, which would otherwise see
-- no change.
CREATE TABLE contest_rejudge (
    id         BIGSERIAL PRIMARY KEY,
    install_id TEXT COLLATE "C" NOT NULL,
    from_ms    BIGINT NOT NULL,
    to_ms      BIGINT NOT NULL CHECK (to_ms > from_ms)
);
