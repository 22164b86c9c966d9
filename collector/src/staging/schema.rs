//! The database file: connections, pragmas and the schema migrations.
//!
//! Migrations are numbered by SQLite's `user_version`: each one runs once, in
//! the same transaction that raises the version, so a crash mid-migration
//! leaves the previous version intact.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::Error;

/// How long a connection waits for another one's lock before failing. In
/// one collector only the checkpoint thread's WAL restart holds the writer
/// off (for the few milliseconds of its last copy and syncs); otherwise
/// only another process writing the same file (a second collector started
/// by mistake, an operator's `sqlite3` shell) makes it wait at all.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the writer looks again for a lock it found taken, during the
/// first [`WRITER_FINE_WAIT`] of a wait; after that, every millisecond.
const WRITER_RETRY: Duration = Duration::from_micros(100);

/// See [`WRITER_RETRY`].
const WRITER_FINE_WAIT: Duration = Duration::from_millis(50);

/// The schema, one entry per version: entry `i` moves version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    //
    // `state` holds the counters that must survive purges and restarts: the
    // highest `seq` ever assigned (never reused) and the acknowledgement
    // cursor. Sequence numbers are dense: every committed report takes the
    // next one, a rolled-back batch takes none.
    //
    // A purged report keeps its row as a tombstone (`json` NULL) so that a
    // late retry of its `report_id` is still answered `duplicate`; tombstones
    // are deleted one retention period after the purge.
    "CREATE TABLE state (
         id          INTEGER PRIMARY KEY CHECK (id = 1),
         node_id     TEXT    NOT NULL,
         highest_seq INTEGER NOT NULL CHECK (highest_seq >= 0),
         acked_up_to INTEGER NOT NULL CHECK (acked_up_to >= 0 AND acked_up_to <= highest_seq)
     );
     CREATE TABLE reports (
         seq            INTEGER PRIMARY KEY,
         report_id      TEXT    NOT NULL UNIQUE,
         received_at_us INTEGER NOT NULL,
         json           BLOB,
         acked_at_us    INTEGER,
         purged_at_us   INTEGER
     );
     CREATE INDEX reports_purgeable ON reports (acked_at_us)
         WHERE json IS NOT NULL AND acked_at_us IS NOT NULL;
     CREATE INDEX reports_tombstones ON reports (purged_at_us)
         WHERE json IS NULL;
     CREATE TABLE manifest (
         id           INTEGER PRIMARY KEY CHECK (id = 1),
         serial       INTEGER NOT NULL,
         signed       BLOB    NOT NULL,
         stored_at_us INTEGER NOT NULL
     );",
    // Version 2: signed probes.
    //
    // `probe_installs` has one row per enrolled `install_id`: when it was
    // first seen, the key it enrolled last and when its key last changed
    // (NULL while it has only ever had one). `probe_keys` is the key
    // history: the keys enrolled for an install, kept so that a contested
    // `install_id` stays visible (up to `signing.max_keys_per_install`; an
    // installation forgotten under `signing.max_enrolled_installs` loses
    // its rows in both). See `crate::enrol` for the policy.
    "CREATE TABLE probe_installs (
         install_id        TEXT    PRIMARY KEY,
         first_seen_us     INTEGER NOT NULL,
         current_key_id    TEXT    NOT NULL,
         key_changed_at_us INTEGER
     );
     CREATE TABLE probe_keys (
         install_id         TEXT    NOT NULL REFERENCES probe_installs (install_id),
         key_id             TEXT    NOT NULL,
         public_key         BLOB    NOT NULL CHECK (length(public_key) = 32),
         enrolled_at_us     INTEGER NOT NULL,
         last_enrolled_at_us INTEGER NOT NULL,
         enrolled_from      TEXT    NOT NULL,
         PRIMARY KEY (install_id, key_id)
     );",
    // Version 3.
    //
    // Trust scores of traffic units (`kind` `prefix` or `install`), kept
    // across restarts. Written in the background by the traffic monitor and
    // pruned to its bound, least recently seen first.
    "CREATE TABLE trust_scores (
         kind                TEXT    NOT NULL CHECK (kind IN ('prefix', 'install')),
         unit                TEXT    NOT NULL,
         score               REAL    NOT NULL CHECK (score >= 0 AND score <= 100),
         accepted            INTEGER NOT NULL CHECK (accepted >= 0),
         rejects             INTEGER NOT NULL CHECK (rejects >= 0),
         anomalies           INTEGER NOT NULL CHECK (anomalies >= 0),
         last_seen_minute    INTEGER NOT NULL,
         last_reject_minute  INTEGER,
         PRIMARY KEY (kind, unit)
     ) WITHOUT ROWID;
     CREATE INDEX trust_scores_seen ON trust_scores (last_seen_minute);",
    // Version 4.
    //
    // `store_id`: drawn at random when the store is made, never changed.
    // Sequence numbers are only unique within one store: a collector whose
    // store was lost and made afresh (or restored) numbers its reports from
    // 1 again under the same node id, and the puller, which knows the store
    // it pulled from, refuses to take those numbers for the old ones.
    "ALTER TABLE state ADD COLUMN store_id TEXT NOT NULL DEFAULT '';
     UPDATE state SET store_id = lower(hex(randomblob(16))) WHERE store_id = '';",
    // Version 5.
    //
    // `keep_until`: the order trust scores are forgotten in
    // (`traffic::TrustRetention::keep_until`), written with each row so that
    // pruning a full table walks an index instead of sorting every row.
    // Existing rows get it for the default initial score, 50; each is
    // rewritten with the configured one the next time its unit is saved.
    "ALTER TABLE trust_scores ADD COLUMN keep_until INTEGER NOT NULL DEFAULT 0;
     UPDATE trust_scores SET keep_until =
         last_seen_minute + CAST(abs(score - 50.0) * 60 AS INTEGER);
     CREATE INDEX trust_scores_keep ON trust_scores (keep_until);
     DROP INDEX trust_scores_seen;",
    // Version 6.
    //
    // The unit's band (`traffic::BandMemory`: median, scale, the minutes of
    // history it was learned from and the minute it was learned for),
    // written with its score so that after a restart a busy unit is judged
    // against its own band instead of the floor. Kept in the score's row,
    // it is pruned with it. All four are set or none (rows of older
    // schemas have none until their unit is saved again).
    "ALTER TABLE trust_scores ADD COLUMN band_median REAL
         CHECK (band_median IS NULL OR band_median >= 0);
     ALTER TABLE trust_scores ADD COLUMN band_scale REAL
         CHECK (band_scale IS NULL OR band_scale >= 1);
     ALTER TABLE trust_scores ADD COLUMN band_minutes INTEGER
         CHECK (band_minutes IS NULL OR band_minutes >= 0);
     ALTER TABLE trust_scores ADD COLUMN band_learned_minute INTEGER;",
    // Version 7.
    //
    // The bands of path units (the configured path patterns), which have
    // no trust score and so no row in `trust_scores` to keep one in: after
    // a restart a busy path is judged against its own band, not the floor.
    // Written by the traffic monitor with the trust scores; a row more than
    // a day older than the newest is deleted then (too old to be used, it
    // was left by a pattern no longer configured).
    "CREATE TABLE path_bands (
         pattern             TEXT    PRIMARY KEY,
         band_median         REAL    NOT NULL CHECK (band_median >= 0),
         band_scale          REAL    NOT NULL CHECK (band_scale >= 1),
         band_minutes        INTEGER NOT NULL CHECK (band_minutes >= 0),
         band_learned_minute INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // Version 8.
    //
    // When each installation was last heard from — its last enrolment, or
    // the first verified report of the latest day it sent one — so that the
    // bound on enrolled installations (`signing.max_enrolled_installs`)
    // forgets the one silent longest. Existing rows start from their last
    // enrolment.
    "ALTER TABLE probe_installs ADD COLUMN last_active_us INTEGER NOT NULL DEFAULT 0;
     UPDATE probe_installs SET last_active_us = coalesce(
         (SELECT max(k.last_enrolled_at_us) FROM probe_keys k
          WHERE k.install_id = probe_installs.install_id),
         first_seen_us);
     CREATE INDEX probe_installs_by_activity ON probe_installs (last_active_us);",
];

/// Wraps a SQLite error with what was being done, and says what to do about
/// the errors an operator can fix.
pub(super) fn sql_error(what: &str, e: &rusqlite::Error) -> Error {
    let hint = match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => {
            "; the disk holding the staging store is full: free space (nothing was stored)"
        }
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            "; make the staging folder writable by the collector"
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            "; another program holds the staging database locked: run one collector per store"
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            "; the staging database is damaged: restore it or move it aside"
        }
        _ => "",
    };
    Error::Staging(format!("{what}: {e}{hint}"))
}

/// Opens the writer's connection: WAL, and every commit synced to disk before
/// it returns.
pub(super) fn open_writer(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(&format!("cannot open {}", path.display()), &e))?;
    configure(&conn, path)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| sql_error("cannot switch to WAL", &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Staging(format!(
            "{} cannot use write-ahead logging (journal mode is {mode}); \
             put the staging store on a local file system",
            path.display()
        )));
    }
    // NORMAL: a commit writes the WAL without syncing it; the sync thread
    // (`walsync`) syncs it before anyone hears of the commit, so a reply
    // still means the report survives power loss. Checkpoints and WAL
    // resets sync as under FULL, which keeps the file consistent.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| sql_error("cannot set synchronous=NORMAL", &e))?;
    // A WAL that grew during a burst is cut back after the next checkpoint
    // instead of keeping its peak size on disk.
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
        .map_err(|e| sql_error("cannot set journal_size_limit", &e))?;
    // Checkpoints run on their own thread (see `checkpoint`), never inside
    // a commit that reports are waiting on.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(|e| sql_error("cannot turn off automatic checkpoints", &e))?;
    conn.busy_handler(Some(writer_busy))
        .map_err(|e| sql_error("cannot configure the writer's lock wait", &e))?;
    Ok(conn)
}

/// The writer's wait for a lock held by another connection (replaces the
/// busy timeout `configure` set): true to try again, false to give up.
///
/// SQLite's own busy timeout sleeps in growing steps (1, 2, 5, 10, 15, 20,
/// 25 ms…), so a writer held off by a 25 ms WAL restart (`checkpoint`)
/// came back only after 33 ms, and every report in flight waited the
/// difference. Looking again every 100 µs brings it back within a fraction
/// of a millisecond of the lock's release, for a few hundred short sleeps
/// per restart; a wait that goes on (another process) backs off to 1 ms.
fn writer_busy(count: i32) -> bool {
    thread_local! {
        /// When the current wait began: SQLite counts the calls of one wait
        /// from 0, and a connection is used by one thread at a time.
        static WAITING_SINCE: std::cell::Cell<Option<Instant>> =
            const { std::cell::Cell::new(None) };
    }
    let now = Instant::now();
    let since = WAITING_SINCE.with(|since| {
        if count == 0 || since.get().is_none() {
            since.set(Some(now));
        }
        since.get().unwrap_or(now)
    });
    match writer_retry_after(now.saturating_duration_since(since)) {
        Some(delay) => {
            std::thread::sleep(delay);
            true
        }
        None => false,
    }
}

/// How long the writer sleeps before looking again at a lock it has
/// waited `waited` for; `None` once it should give up.
fn writer_retry_after(waited: Duration) -> Option<Duration> {
    if waited >= BUSY_TIMEOUT {
        None
    } else if waited < WRITER_FINE_WAIT {
        Some(WRITER_RETRY)
    } else {
        Some(Duration::from_millis(1))
    }
}

/// Bytes of WAL kept after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Opens a read-only connection; WAL lets it read beside the writer.
pub(super) fn open_reader(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(&format!("cannot open {} for reading", path.display()), &e))?;
    configure(&conn, path)?;
    Ok(conn)
}

fn configure(conn: &Connection, path: &Path) -> Result<(), Error> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_error(&format!("cannot configure {}", path.display()), &e))?;
    // Integrity checks must see corruption instead of tolerating it.
    conn.pragma_update(None, "cell_size_check", "ON")
        .map_err(|e| sql_error("cannot enable cell_size_check", &e))?;
    Ok(())
}

/// Brings the schema up to date and makes sure the store belongs to
/// `node_id`.
pub(super) fn migrate(conn: &mut Connection, node_id: &str, path: &Path) -> Result<(), Error> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql_error("cannot start the schema migration", &e))?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| sql_error("cannot read the schema version", &e))?;
    let known = MIGRATIONS.len();
    let start = usize::try_from(version)
        .ok()
        .filter(|v| *v <= known)
        .ok_or_else(|| {
            Error::Staging(format!(
                "{} has schema version {version}, this collector knows up to {known}; \
                 run a newer collector or move the file aside",
                path.display()
            ))
        })?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(sql)
            .map_err(|e| sql_error(&format!("schema migration {}", i + 1), &e))?;
    }
    if start < known {
        let target = i64::try_from(known).unwrap_or(i64::MAX);
        tx.pragma_update(None, "user_version", target)
            .map_err(|e| sql_error("cannot record the schema version", &e))?;
    }
    let owner: Option<String> = tx
        .query_row("SELECT node_id FROM state WHERE id = 1", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(|e| sql_error("cannot read the store's state", &e))?;
    match owner {
        None => {
            tx.execute(
                "INSERT INTO state (id, node_id, highest_seq, acked_up_to, store_id) \
                 VALUES (1, ?1, 0, 0, lower(hex(randomblob(16))))",
                [node_id],
            )
            .map_err(|e| sql_error("cannot initialise the store's state", &e))?;
        }
        Some(owner) if owner == node_id => {}
        Some(owner) => {
            // Sequence numbers are per node: continuing another node's
            // sequence under a new name would confuse the puller's cursors.
            return Err(Error::Config {
                key: "node_id".to_owned(),
                reason: format!(
                    "the staging store {} belongs to node `{owner}`, not `{node_id}`; \
                     set node_id back to `{owner}` or use another data_dir",
                    path.display()
                ),
            });
        }
    }
    tx.commit()
        .map_err(|e| sql_error("cannot commit the schema migration", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_looks_again_often_at_first_then_each_millisecond_then_gives_up() {
        assert_eq!(writer_retry_after(Duration::ZERO), Some(WRITER_RETRY));
        assert_eq!(
            writer_retry_after(WRITER_FINE_WAIT.saturating_sub(Duration::from_micros(1))),
            Some(WRITER_RETRY)
        );
        assert_eq!(
            writer_retry_after(WRITER_FINE_WAIT),
            Some(Duration::from_millis(1))
        );
        assert_eq!(
            writer_retry_after(BUSY_TIMEOUT.saturating_sub(Duration::from_millis(1))),
            Some(Duration::from_millis(1))
        );
        assert_eq!(writer_retry_after(BUSY_TIMEOUT), None);
    }

    /// A store of node `edge-1` at `path` as schema `version` left it, with
    /// `rows` inserted.
    fn older_store(path: &Path, version: usize, rows: &str) -> Connection {
        let conn = Connection::open(path).expect("open");
        for sql in &MIGRATIONS[..version] {
            conn.execute_batch(sql).expect("an older migration");
        }
        conn.execute_batch(&format!(
            "PRAGMA user_version = {version};
             INSERT INTO state (id, node_id, highest_seq, acked_up_to, store_id)
                 VALUES (1, 'edge-1', 0, 0, 'abc');
             {rows}"
        ))
        .expect("an older store");
        conn
    }

    /// A store of schema 5 (scores without bands) is upgraded in place:
    /// its scores are kept, without a band until their units are saved
    /// again, and bands can be stored and read back.
    #[test]
    fn a_schema_5_store_keeps_its_scores_and_gains_bands() {
        use crate::traffic::{BandMemory, TrustRetention, TrustRow, UnitKey};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.sqlite3");
        let mut conn = older_store(
            &path,
            5,
            "INSERT INTO trust_scores (kind, unit, score, accepted, rejects, anomalies,
                 last_seen_minute, last_reject_minute, keep_until)
                 VALUES ('prefix', '203.0.113.0/24', 80.0, 10, 0, 0, 100, NULL, 1900);",
        );
        migrate(&mut conn, "edge-1", &path).expect("upgraded");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("version");
        assert_eq!(version, i64::try_from(MIGRATIONS.len()).expect("few"));
        let retention = TrustRetention {
            max_units: 10,
            initial: 50,
        };
        let rows = super::super::trust::load(&conn, retention).expect("load");
        let unit = UnitKey::prefix_of("203.0.113.9".parse().expect("address"));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].unit, unit);
        assert!((rows[0].entry.score - 80.0).abs() < 1e-9);
        assert_eq!(rows[0].band, None);

        let band = BandMemory::new(600.0, 60.0, 60, 200).expect("a band");
        let tx = conn.transaction().expect("tx");
        let row = TrustRow::new(unit, 81.0, 11, 0, 0, 200, None).with_band(band);
        super::super::trust::save(&tx, &[row], retention).expect("save");
        tx.commit().expect("commit");
        let rows = super::super::trust::load(&conn, retention).expect("load");
        assert_eq!(rows[0].band, Some(band));
        // Opening it again changes nothing.
        migrate(&mut conn, "edge-1", &path).expect("reopened");
        let rows = super::super::trust::load(&conn, retention).expect("load");
        assert_eq!(rows[0].band, Some(band));
    }

    /// A store of schema 6 (scores with bands) is upgraded in place: its
    /// scores and bands are kept, and path bands can be stored beside them.
    #[test]
    fn a_schema_6_store_keeps_its_bands_and_gains_path_bands() {
        use crate::traffic::{BandMemory, PathBand, TrustRetention};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.sqlite3");
        let mut conn = older_store(
            &path,
            6,
            "INSERT INTO trust_scores (kind, unit, score, accepted, rejects, anomalies,
                 last_seen_minute, last_reject_minute, keep_until, band_median, band_scale,
                 band_minutes, band_learned_minute)
                 VALUES ('prefix', '203.0.113.0/24', 80.0, 10, 0, 0, 100, NULL, 1900,
                     600.0, 60.0, 60, 100);",
        );
        migrate(&mut conn, "edge-1", &path).expect("upgraded");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("version");
        assert_eq!(version, i64::try_from(MIGRATIONS.len()).expect("few"));
        let retention = TrustRetention {
            max_units: 10,
            initial: 50,
        };
        let band = BandMemory::new(600.0, 60.0, 60, 100).expect("a band");
        let rows = super::super::trust::load(&conn, retention).expect("load");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].band, Some(band));
        assert!(
            super::super::trust::load_path_bands(&conn)
                .expect("load")
                .is_empty()
        );
        let stored = PathBand {
            pattern: "/api/v1/report".to_owned(),
            band,
        };
        let tx = conn.transaction().expect("tx");
        super::super::trust::save_path_bands(&tx, std::slice::from_ref(&stored)).expect("save");
        tx.commit().expect("commit");
        migrate(&mut conn, "edge-1", &path).expect("reopened");
        assert_eq!(
            super::super::trust::load_path_bands(&conn).expect("load"),
            vec![stored]
        );
    }

    /// A store of schema 7 is upgraded in place: each enrolled
    /// installation was last heard from at its latest enrolment of any key
    /// (its first sighting when no key is left), so the bound on enrolled
    /// installations has an order to forget them in from the start.
    #[test]
    fn a_schema_7_store_dates_each_installation_by_its_latest_enrolment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.sqlite3");
        let mut conn = older_store(
            &path,
            7,
            "INSERT INTO probe_installs (install_id, first_seen_us, current_key_id)
                 VALUES ('two-keys', 100, 'k2'), ('keyless', 150, 'k9');
             INSERT INTO probe_keys (install_id, key_id, public_key, enrolled_at_us,
                 last_enrolled_at_us, enrolled_from)
                 VALUES ('two-keys', 'k1', zeroblob(32), 100, 400, '192.0.2.1'),
                        ('two-keys', 'k2', zeroblob(32), 200, 300, '192.0.2.1');",
        );
        migrate(&mut conn, "edge-1", &path).expect("upgraded");
        let active: Vec<(String, i64)> = conn
            .prepare(
                "SELECT install_id, last_active_us FROM probe_installs ORDER BY last_active_us",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect()
            })
            .expect("read back");
        assert_eq!(
            active,
            vec![("keyless".to_owned(), 150), ("two-keys".to_owned(), 400)]
        );
        // The order the bound forgets in is read through an index.
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT install_id FROM probe_installs \
                 ORDER BY last_active_us LIMIT 1",
                [],
                |row| row.get(3),
            )
            .expect("plan");
        assert!(plan.contains("probe_installs_by_activity"), "{plan}");
    }

    /// The checkpoint thread's WAL restart (or another process) holds the
    /// write lock for a while: the writer waits and then gets it, instead
    /// of failing the batch.
    #[test]
    fn the_writer_waits_for_a_lock_another_connection_holds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.sqlite3");
        let writer = open_writer(&path).expect("writer");
        writer
            .execute_batch("CREATE TABLE t (v INTEGER)")
            .expect("table");
        let other = Connection::open(&path).expect("second connection");
        other.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let hold = Duration::from_millis(40);
        let holder = std::thread::spawn(move || {
            std::thread::sleep(hold);
            other.execute_batch("COMMIT").expect("release");
        });
        let started = Instant::now();
        writer
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT")
            .expect("the writer waits for the lock instead of failing");
        let waited = started.elapsed();
        holder.join().expect("holder");
        assert!(
            waited >= Duration::from_millis(35),
            "got a lock another connection held after {waited:?}"
        );
        let rows: i64 = writer
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .expect("count");
        assert_eq!(rows, 1);
    }
}
