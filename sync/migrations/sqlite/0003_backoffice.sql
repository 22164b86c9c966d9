-- The compliance back office (SQLite): accounts, sessions, login
-- throttling, the audit log and the published probe manifests; and the
-- indexes its pages page through. Keep in step with
-- migrations/postgres/0003_backoffice.sql.

-- Back-office accounts. password_hash is an argon2id PHC string.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'admin')),
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    last_login_at INTEGER
);

-- Signed-in sessions. Only the SHA-256 of the cookie's token is kept, so a
-- copy of the database signs nobody in.
CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY NOT NULL,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    source_ip    TEXT NOT NULL,
    user_agent   TEXT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- Failed sign-ins per key (`user:NAME` or `addr:IP`) and the backoff they
-- earned.
CREATE TABLE login_throttle (
    key          TEXT PRIMARY KEY NOT NULL,
    failures     INTEGER NOT NULL CHECK (failures >= 0),
    last_failure INTEGER NOT NULL,
    locked_until INTEGER NOT NULL
);

-- Who did what: sign-ins (also failed), configuration changes, exports.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX audit_log_action ON audit_log (action, id);

-- Every probe manifest signed here, as signed.
CREATE TABLE manifests (
    serial     INTEGER PRIMARY KEY NOT NULL CHECK (serial > 0),
    manifest   TEXT NOT NULL,
    signed     TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);

-- Each attempt to publish a manifest to a collector, and its answer.
CREATE TABLE manifest_publications (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    serial           INTEGER NOT NULL REFERENCES manifests (serial),
    collector        TEXT NOT NULL,
    at               INTEGER NOT NULL,
    accepted         INTEGER NOT NULL CHECK (accepted IN (0, 1)),
    http_status      INTEGER,
    collector_serial INTEGER,
    message          TEXT NOT NULL
);
CREATE INDEX manifest_publications_serial ON manifest_publications (serial, collector, id);

-- The lines list pages by (last_seen, line_key) under any one filter; each
-- index below serves one filter in that order without sorting, and its
-- equality lookups as the single-column index it replaces did. lines_seen
-- also carries the verdict, and lines_breakdown the dashboard's columns,
-- so that the dashboard's counts read indexes only (a pass over a million
-- table rows in index order would be random reads).
DROP INDEX lines_verdict;
DROP INDEX lines_declared_province;
DROP INDEX lines_declared_carrier;
DROP INDEX lines_actual_carrier;
DROP INDEX lines_last_seen;
CREATE INDEX lines_seen ON lines (last_seen, line_key, verdict);
CREATE INDEX lines_breakdown ON lines (declared_province, declared_carrier, actual_carrier, verdict);
CREATE INDEX lines_verdict_seen ON lines (verdict, last_seen, line_key);
CREATE INDEX lines_province_seen ON lines (declared_province, last_seen, line_key);
CREATE INDEX lines_city_seen ON lines (declared_city, last_seen, line_key);
CREATE INDEX lines_carrier_seen ON lines (declared_carrier, last_seen, line_key);
CREATE INDEX lines_actual_carrier_seen ON lines (actual_carrier, last_seen, line_key);
-- The compliance team's first question, "declared X but runs on Y", in
-- order; also when no line is both (the other indexes would walk every
-- line of one carrier to find none).
CREATE INDEX lines_carriers_seen ON lines (declared_carrier, actual_carrier, last_seen, line_key);

-- The probes page reads each probe's latest report for its endpoint
-- attempts.
CREATE INDEX raw_reports_report_id ON raw_reports (report_id);
