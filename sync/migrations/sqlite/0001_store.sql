-- The internal database of lineprobe-sync (SQLite).
-- Times are Unix milliseconds (INTEGER); JSON payloads are TEXT.
-- Keep this file in step with migrations/postgres/0001_store.sql.
--
-- Foreign keys are immediate and the store writes parents before children:
-- SQLite checks a child against its parent's primary key (cheap), and an
-- insert into a parent costs nothing while no violation is outstanding.

-- Where each collector's pull stands.
CREATE TABLE pull_cursors (
    collector     TEXT PRIMARY KEY NOT NULL,
    node_id       TEXT NOT NULL DEFAULT '',
    after_seq     INTEGER NOT NULL DEFAULT 0 CHECK (after_seq >= 0),
    acked_seq     INTEGER NOT NULL DEFAULT 0 CHECK (acked_seq >= 0),
    last_pull_at  INTEGER,
    last_ok_at    INTEGER,
    last_error    TEXT,
    last_error_at INTEGER,
    pulled_total  INTEGER NOT NULL DEFAULT 0 CHECK (pulled_total >= 0)
);

-- Every report exactly as pulled. AUTOINCREMENT: ids are never reused, so
-- paging by id (pending, reprocess) never skips a row.
CREATE TABLE raw_reports (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    collector      TEXT NOT NULL,
    node_id        TEXT NOT NULL,
    seq            INTEGER NOT NULL CHECK (seq >= 0),
    report_id      TEXT,
    received_at    INTEGER,
    body           BLOB NOT NULL,
    pulled_at      INTEGER NOT NULL,
    state          TEXT NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'processed', 'quarantined')),
    observation_id INTEGER,
    UNIQUE (node_id, seq)
);
CREATE INDEX raw_reports_pending ON raw_reports (id) WHERE state = 'pending';

-- Reports that failed validation, with every reason.
CREATE TABLE quarantine (
    id             INTEGER PRIMARY KEY,
    raw_id         INTEGER NOT NULL UNIQUE
                   REFERENCES raw_reports (id),
    report_id      TEXT,
    install_id     TEXT,
    reasons        TEXT NOT NULL,
    summary        TEXT NOT NULL,
    quarantined_at INTEGER NOT NULL
);

-- Identical observations of a line, collapsed with counts.
CREATE TABLE observations (
    id                 INTEGER PRIMARY KEY,
    obs_key            TEXT NOT NULL UNIQUE,
    line_key           TEXT NOT NULL,
    install_id         TEXT NOT NULL,
    account            TEXT NOT NULL,
    declared_province  TEXT,
    declared_city      TEXT,
    declared_carrier   TEXT,
    egress_ip          TEXT NOT NULL,
    first_hop_ip       TEXT,
    path               TEXT NOT NULL,
    engine             TEXT NOT NULL,
    agent_version      TEXT NOT NULL,
    os                 TEXT NOT NULL,
    count              INTEGER NOT NULL CHECK (count >= 0),
    first_seen         INTEGER NOT NULL,
    last_seen          INTEGER NOT NULL,
    first_report_id    TEXT NOT NULL,
    last_report_id     TEXT NOT NULL,
    -- No foreign key: it would close a cycle with verdicts.observation_id.
    latest_verdict_id  INTEGER,
    latest_verdict_key TEXT
);
CREATE INDEX observations_line ON observations (line_key);

-- Every distinct verdict an observation received.
CREATE TABLE verdicts (
    id                INTEGER PRIMARY KEY,
    line_key          TEXT NOT NULL,
    observation_id    INTEGER NOT NULL
                      REFERENCES observations (id),
    report_id         TEXT NOT NULL,
    verdict           TEXT NOT NULL,
    verdict_key       TEXT NOT NULL,
    reasons           TEXT NOT NULL,
    evidence          TEXT NOT NULL,
    actual_carrier    TEXT,
    actual_province   TEXT,
    actual_city       TEXT,
    egress_carrier    TEXT,
    first_hop_carrier TEXT,
    filled            TEXT NOT NULL,
    data_versions     TEXT NOT NULL,
    observed_at       INTEGER NOT NULL,
    decided_at        INTEGER NOT NULL
);
CREATE INDEX verdicts_line ON verdicts (line_key, id);

-- One current row per line.
CREATE TABLE lines (
    line_key          TEXT PRIMARY KEY NOT NULL,
    account           TEXT NOT NULL,
    install_id        TEXT NOT NULL,
    declared_province TEXT,
    declared_city     TEXT,
    declared_carrier  TEXT,
    actual_carrier    TEXT,
    actual_province   TEXT,
    actual_city       TEXT,
    egress_ip         TEXT NOT NULL,
    first_hop_ip      TEXT,
    verdict           TEXT NOT NULL,
    verdict_id        INTEGER NOT NULL
                      REFERENCES verdicts (id),
    observation_id    INTEGER NOT NULL
                      REFERENCES observations (id),
    reports           INTEGER NOT NULL CHECK (reports >= 0),
    first_seen        INTEGER NOT NULL,
    last_seen         INTEGER NOT NULL,
    current_from      INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX lines_verdict ON lines (verdict);
CREATE INDEX lines_declared_province ON lines (declared_province);
CREATE INDEX lines_declared_carrier ON lines (declared_carrier);
CREATE INDEX lines_actual_carrier ON lines (actual_carrier);
CREATE INDEX lines_last_seen ON lines (last_seen);

-- A line's earlier verdicts, written when the current one is replaced.
CREATE TABLE line_history (
    id              INTEGER PRIMARY KEY,
    line_key        TEXT NOT NULL,
    verdict_id      INTEGER NOT NULL
                    REFERENCES verdicts (id),
    verdict         TEXT NOT NULL,
    actual_carrier  TEXT,
    actual_province TEXT,
    actual_city     TEXT,
    current_from    INTEGER NOT NULL,
    replaced_at     INTEGER NOT NULL
);
CREATE INDEX line_history_line ON line_history (line_key, id);

-- Answers of slow address sources (HTTP lookups), with an expiry.
-- facts NULL records that the source knows nothing about the address.
CREATE TABLE resolver_cache (
    source     TEXT NOT NULL,
    ip         TEXT NOT NULL,
    facts      TEXT,
    fetched_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (source, ip)
);
