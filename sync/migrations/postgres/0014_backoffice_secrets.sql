-- The back office's own secrets (PostgreSQL). Keep in step with
-- migrations/sqlite/0014_backoffice_secrets.sql.
--
-- `line_refs`: the key under which page links name a line by an encrypted
-- reference instead of its key, which holds the subscriber's account (see
-- src/backoffice/lineref.rs). Made at random on first use; kept so that a
-- link stays valid, and shared by every back office on the database.

CREATE TABLE backoffice_secrets (
    name   TEXT COLLATE "C" PRIMARY KEY,
    secret BYTEA NOT NULL
);
