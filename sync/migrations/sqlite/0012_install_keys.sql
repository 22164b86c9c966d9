-- The signing keys seen for each installation (SQLite). Keep in step with
-- migrations/postgres/0012_install_keys.sql.
--
-- Each receiver node enrols probe keys on its own, so a key enrolled for a
-- victim's install_id at a node the victim never used is "verified" there.
-- Reports name the key that verified them; this table keeps, per
-- installation and key, the arrival times of the first and last report it
-- signed (the last to within an hour, so that not every report rewrites
-- it) and the node that received the first, for the pipeline to mark an
-- installation's reports around a change of key, and for as long as two
-- keys sign at once.

CREATE TABLE install_keys (
    install_id    TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    first_node    TEXT NOT NULL,
    PRIMARY KEY (install_id, key_id)
) WITHOUT ROWID;
