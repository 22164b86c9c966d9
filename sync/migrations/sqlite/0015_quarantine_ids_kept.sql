-- Quarantine ids are never given twice (SQLite). Keep in step with
-- migrations/postgres/0015_quarantine_ids_kept.sql.
--
-- The back office pages the quarantine by id and links entries by it. A
-- plain INTEGER PRIMARY KEY takes the highest id in use plus one, so when
-- the newest entry left quarantine (its report judged again and passing)
-- the next entry got its id; AUTOINCREMENT never hands out an id it gave
-- before. (An id already freed so before this migration can still come
-- back once: SQLite has no record of it.) The table is built again, as
-- SQLite cannot add AUTOINCREMENT to a table; nothing refers to its ids.

CREATE TABLE quarantine_kept (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    raw_id         INTEGER NOT NULL UNIQUE
                   REFERENCES raw_reports (id),
    report_id      TEXT,
    install_id     TEXT,
    reasons        TEXT NOT NULL,
    summary        TEXT NOT NULL,
    quarantined_at INTEGER NOT NULL
);

INSERT INTO quarantine_kept
    (id, raw_id, report_id, install_id, reasons, summary, quarantined_at)
SELECT id, raw_id, report_id, install_id, reasons, summary, quarantined_at
FROM quarantine;

DROP TABLE quarantine;
ALTER TABLE quarantine_kept RENAME TO quarantine;
