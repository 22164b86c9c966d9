-- The internal database of lineprobe-sync (PostgreSQL).
-- Times are Unix milliseconds (BIGINT); JSON payloads are TEXT, kept
-- byte-exact as the pipeline wrote them.
-- Keep this file in step with migrations/sqlite/0001_store.sql.
--
-- The tables of the hot path (observations, verdicts, lines, line_history)
-- carry no foreign keys here: a PostgreSQL foreign key is a trigger that
-- reads and locks the parent row for every row written, which a set-based
-- batch of thousands of rows pays thousands of times. The store is their
-- only writer and keeps the references in one transaction per batch; the
-- SQLite schema keeps the same keys as constraints, and the shared test
-- suite runs there.

-- Where each collector's pull stands.
CREATE TABLE pull_cursors (
    collector     TEXT PRIMARY KEY,
    node_id       TEXT NOT NULL DEFAULT '',
    after_seq     BIGINT NOT NULL DEFAULT 0 CHECK (after_seq >= 0),
    acked_seq     BIGINT NOT NULL DEFAULT 0 CHECK (acked_seq >= 0),
    last_pull_at  BIGINT,
    last_ok_at    BIGINT,
    last_error    TEXT,
    last_error_at BIGINT,
    pulled_total  BIGINT NOT NULL DEFAULT 0 CHECK (pulled_total >= 0)
);

-- Every report exactly as pulled.
CREATE TABLE raw_reports (
    id             BIGSERIAL PRIMARY KEY,
    collector      TEXT NOT NULL,
    node_id        TEXT NOT NULL,
    seq            BIGINT NOT NULL CHECK (seq >= 0),
    report_id      TEXT,
    received_at    BIGINT,
    body           BYTEA NOT NULL,
    pulled_at      BIGINT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'processed', 'quarantined')),
    observation_id BIGINT,
    UNIQUE (node_id, seq)
);
CREATE INDEX raw_reports_pending ON raw_reports (id) WHERE state = 'pending';
-- Report bodies (~2 KB of JSON) are compressed when stored; lz4 costs about
-- half of the default pglz per report. A server built without lz4 keeps
-- pglz.
DO $$
BEGIN
    ALTER TABLE raw_reports ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 is not available (%); raw report bodies use pglz', SQLERRM;
END
$$;

-- Reports that failed validation, with every reason.
CREATE TABLE quarantine (
    id             BIGSERIAL PRIMARY KEY,
    raw_id         BIGINT NOT NULL UNIQUE
                   REFERENCES raw_reports (id),
    report_id      TEXT,
    install_id     TEXT,
    reasons        TEXT NOT NULL,
    summary        TEXT NOT NULL,
    quarantined_at BIGINT NOT NULL
);

-- Identical observations of a line, collapsed with counts.
CREATE TABLE observations (
    id                 BIGSERIAL PRIMARY KEY,
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
    count              BIGINT NOT NULL CHECK (count >= 0),
    first_seen         BIGINT NOT NULL,
    last_seen          BIGINT NOT NULL,
    first_report_id    TEXT NOT NULL,
    last_report_id     TEXT NOT NULL,
    latest_verdict_id  BIGINT,
    latest_verdict_key TEXT
) WITH (fillfactor = 80);
-- fillfactor: a repeat updates count and seen times, none of them indexed;
-- room on the page lets PostgreSQL update in place (HOT), without touching
-- the indexes.
CREATE INDEX observations_line ON observations (line_key);

-- Every distinct verdict an observation received.
CREATE TABLE verdicts (
    id                BIGSERIAL PRIMARY KEY,
    line_key          TEXT NOT NULL,
    observation_id    BIGINT NOT NULL,
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
    observed_at       BIGINT NOT NULL,
    decided_at        BIGINT NOT NULL
);
CREATE INDEX verdicts_line ON verdicts (line_key, id);

-- One current row per line.
CREATE TABLE lines (
    line_key          TEXT PRIMARY KEY,
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
    verdict_id        BIGINT NOT NULL,
    observation_id    BIGINT NOT NULL,
    reports           BIGINT NOT NULL CHECK (reports >= 0),
    first_seen        BIGINT NOT NULL,
    last_seen         BIGINT NOT NULL,
    current_from      BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX lines_verdict ON lines (verdict);
CREATE INDEX lines_declared_province ON lines (declared_province);
CREATE INDEX lines_declared_carrier ON lines (declared_carrier);
CREATE INDEX lines_actual_carrier ON lines (actual_carrier);
CREATE INDEX lines_last_seen ON lines (last_seen);

-- A line's earlier verdicts, written when the current one is replaced.
CREATE TABLE line_history (
    id              BIGSERIAL PRIMARY KEY,
    line_key        TEXT NOT NULL,
    verdict_id      BIGINT NOT NULL,
    verdict         TEXT NOT NULL,
    actual_carrier  TEXT,
    actual_province TEXT,
    actual_city     TEXT,
    current_from    BIGINT NOT NULL,
    replaced_at     BIGINT NOT NULL
);
CREATE INDEX line_history_line ON line_history (line_key, id);

-- Answers of slow address sources (HTTP lookups), with an expiry.
-- facts NULL records that the source knows nothing about the address.
CREATE TABLE resolver_cache (
    source     TEXT NOT NULL,
    ip         TEXT NOT NULL,
    facts      TEXT,
    fetched_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (source, ip)
);
