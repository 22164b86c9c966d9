//! WAL checkpoints off the writer thread.
//!
//! SQLite normally checkpoints inside the commit that crosses the WAL size
//! threshold, on the writer's thread: every report queued behind that commit
//! then waits for pages to be copied into the database and the database to
//! be synced — tens of milliseconds of stall every couple of thousand
//! reports, which is what set ingest's p99. The writer's connection has
//! automatic checkpoints turned off and this thread runs passive checkpoints
//! beside it instead: a passive checkpoint never takes the write lock, so
//! commits go on while it copies.
//!
//! A passive checkpoint beside a busy writer never catches up completely,
//! though, and SQLite starts the WAL over only when one did: under steady
//! load the WAL grew without bound (700 MB in a 30 s benchmark), every
//! commit allocated new blocks, and the eventual cut back to
//! `journal_size_limit` freed hundreds of megabytes at once, stalling a
//! commit for over a second. So once the WAL passes [`RESTART_FRAMES`],
//! this thread runs passive checkpoints back to back until the writer has
//! added only a few frames during one, then a `RESTART` checkpoint: it
//! holds the writer off only while it copies those last frames, after
//! which the next commit writes the WAL from the top again. (The writer finishing
//! the checkpoint itself was tried: its sync of the database then flushed
//! everything this thread had just copied, holding ingest up ~100 ms.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::RestartObserver;
use super::schema::sql_error;
use super::walsync::Durability;
use crate::Error;

/// How long a restart waits for the writer and readers.
const RESTART_WAIT: Duration = Duration::from_millis(100);

/// How often a passive checkpoint runs.
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// WAL frames (pages) after which a checkpoint restarts the WAL: 32 MiB of
/// 4 KiB pages, below `journal_size_limit`, so the WAL file is reused,
/// never cut back.
pub(super) const RESTART_FRAMES: u64 = 8_192;

/// The checkpoint thread; stops when dropped or [`Checkpointer::stop`]ped.
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing `path` every `interval`, telling `on_restart`
    /// about every WAL restart, until a sync of the store fails
    /// (`durability`).
    pub(super) fn spawn(
        path: &Path,
        interval: Duration,
        on_restart: Option<RestartObserver>,
        durability: Arc<Durability>,
    ) -> Result<Self, Error> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_error(&format!("cannot open {} to checkpoint", path.display()), &e))?;
        // A restart waits this long for a gap between the writer's
        // transactions and for readers to move on; else it is retried at
        // the next pass.
        conn.busy_timeout(RESTART_WAIT)
            .map_err(|e| sql_error("cannot configure the checkpoint connection", &e))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let path: PathBuf = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("staging-checkpoint".to_owned())
            .spawn(move || {
                run(
                    &conn,
                    &path,
                    &stopped,
                    interval,
                    on_restart.as_ref(),
                    &durability,
                );
            })
            .map_err(|source| Error::Io {
                what: "cannot start the staging checkpoint thread".to_owned(),
                source,
            })?;
        Ok(Self {
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it (blocking: at most one checkpoint).
    pub(super) fn stop(mut self) {
        self.stop.take();
        if let Some(handle) = self.handle.take() {
            // A panic in the thread was already reported; nothing to add.
            let _ = handle.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Disconnecting the channel ends the thread at its next wake-up;
        // not joined here, since a drop may happen on an async worker.
        self.stop.take();
    }
}

fn run(
    conn: &Connection,
    path: &Path,
    stopped: &mpsc::Receiver<()>,
    interval: Duration,
    on_restart: Option<&RestartObserver>,
    durability: &Durability,
) {
    let mut failing = false;
    loop {
        match stopped.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                // The store stops after its writer and sync thread: a sync
                // that failed since the last pass is known now, and this
                // connection, often the last one open, must not checkpoint
                // (and delete the WAL) when it closes.
                if durability.failure().is_some() {
                    stop_checkpointing(conn, path);
                }
                return;
            }
        }
        if durability.failure().is_some() {
            // After a failed sync the page cache may hold pages the disk
            // never got, or lose them: a checkpoint could copy stale WAL
            // frames over pages that hold acknowledged reports, and a
            // restart would then leave nothing to recover from. The store
            // stays as it is on disk until the collector is restarted (and
            // this connection does not checkpoint on close either).
            tracing::error!(
                path = %path.display(),
                "a sync of the staging store failed: checkpoints stop until the collector is restarted"
            );
            stop_checkpointing(conn, path);
            wait_for_stop(stopped);
            return;
        }
        let result = pass(conn);
        if let (
            Ok(Pass {
                restart: Some(took),
                ..
            }),
            Some(observer),
        ) = (&result, on_restart)
        {
            super::notify("WAL restart", || observer(*took));
        }
        match (result, failing) {
            (Ok(_), true) => {
                tracing::info!(path = %path.display(), "staging checkpoints work again");
                failing = false;
            }
            // Logged once per failing streak: a full disk would otherwise
            // log four lines a second. The WAL only grows meanwhile; nothing
            // committed is at risk.
            (Err(e), false) => {
                tracing::warn!(path = %path.display(), error = %e, "staging checkpoint failed; will retry");
                failing = true;
            }
            (Ok(_), false) | (Err(_), true) => {}
        }
    }
}

/// Makes `conn` leave the WAL alone from now on, also when it closes.
pub(super) fn stop_checkpointing(conn: &Connection, path: &Path) {
    if let Err(e) = conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    ) {
        tracing::warn!(path = %path.display(), error = %e, "cannot turn off the checkpoint on close");
    }
}

fn wait_for_stop(stopped: &mpsc::Receiver<()>) {
    // Whatever arrives (the stop, or the sender gone) ends the wait.
    let _ = stopped.recv();
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pass {
    /// Frames in the WAL when the passive checkpoint ran.
    pub(super) frames: i64,
    /// How long the restart checkpoint that followed took, when one did
    /// and completed; the writer is held off for most of it.
    pub(super) restart: Option<Duration>,
}

/// One passive checkpoint, and a restart once the WAL is long.
pub(super) fn pass(conn: &Connection) -> rusqlite::Result<Pass> {
    // Each returns (busy, frames in the WAL, frames checkpointed).
    let checkpoint = |mode: &str| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })
    };
    let (_, frames) = checkpoint("PASSIVE")?;
    if u64::try_from(frames).map_or(true, |f| f < RESTART_FRAMES) {
        return Ok(Pass {
            frames,
            restart: None,
        });
    }
    // Catch up first: each passive pass copies what the writer appended
    // during the one before, so the passes shrink; once only a few frames
    // came in, the restart, which holds the writer off, copies just those.
    let mut last = frames;
    for _ in 0..CATCH_UP_PASSES {
        let (_, now) = checkpoint("PASSIVE")?;
        let arrived = now.saturating_sub(last);
        last = now;
        if arrived <= RESTART_REMAINDER {
            break;
        }
    }
    let started = Instant::now();
    let restarted = checkpoint("RESTART")?.0 == 0;
    Ok(Pass {
        frames,
        restart: restarted.then(|| started.elapsed()),
    })
}

/// Passive passes at most before a restart.
const CATCH_UP_PASSES: usize = 4;

/// Frames the restart may have left to copy.
const RESTART_REMAINDER: i64 = 256;

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL database with a table `t`, written to without syncs and never
    /// checkpointed by its own connection.
    fn open_writer_without_checkpoints(path: &Path) -> Connection {
        let writer = Connection::open(path).expect("open");
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        writer
            .pragma_update(None, "synchronous", "OFF")
            .expect("sync off");
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no auto checkpoints");
        writer
            .execute_batch("CREATE TABLE t (v BLOB)")
            .expect("table");
        writer
    }

    /// Commits `rows` rows of a page each.
    fn write(conn: &Connection, rows: usize) {
        let tx = conn.unchecked_transaction().expect("begin");
        for _ in 0..rows {
            tx.execute("INSERT INTO t (v) VALUES (zeroblob(3000))", [])
                .expect("insert");
        }
        tx.commit().expect("commit");
    }

    #[test]
    fn a_long_wal_is_restarted_a_short_one_is_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.sqlite3");
        let writer = open_writer_without_checkpoints(&path);
        let checkpointer = Connection::open(&path).expect("open");
        checkpointer
            .busy_timeout(RESTART_WAIT)
            .expect("busy timeout");

        write(&writer, 100);
        let short = pass(&checkpointer).expect("pass");
        assert!(short.restart.is_none(), "{short:?}");
        assert!(short.frames > 0);

        let rows = usize::try_from(RESTART_FRAMES).expect("fits") + 100;
        write(&writer, rows);
        let long = pass(&checkpointer).expect("pass");
        assert!(long.restart.is_some(), "{long:?}");
        assert!(long.frames >= i64::try_from(RESTART_FRAMES).expect("fits"));
        // The next commit writes the WAL from the top.
        write(&writer, 10);
        let after = pass(&checkpointer).expect("pass");
        assert!(after.frames < 100, "the WAL started over: {after:?}");
    }

    /// A store at `path` whose WAL is long enough to be restarted, and its
    /// writer's connection.
    fn long_wal(path: &Path) -> Connection {
        let writer = open_writer_without_checkpoints(path);
        write(
            &writer,
            usize::try_from(RESTART_FRAMES).expect("fits") + 100,
        );
        writer
    }

    /// A checkpointer of `path` every 10 ms under `durability`, and where
    /// it tells of its restarts.
    fn watched(
        path: &Path,
        durability: Arc<Durability>,
    ) -> (Checkpointer, mpsc::Receiver<Duration>) {
        let (told, restarts) = mpsc::channel::<Duration>();
        let observer: RestartObserver = std::sync::Arc::new(move |took| {
            let _ = told.send(took);
        });
        let checkpointer =
            Checkpointer::spawn(path, Duration::from_millis(10), Some(observer), durability)
                .expect("spawn");
        (checkpointer, restarts)
    }

    #[test]
    fn the_thread_tells_its_observer_about_each_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.sqlite3");
        let writer = long_wal(&path);
        let (checkpointer, restarts) = watched(&path, Arc::new(Durability::new(0)));
        let took = restarts
            .recv_timeout(Duration::from_secs(30))
            .expect("a long WAL is restarted and the observer told");
        assert!(took < Duration::from_secs(30), "{took:?}");
        checkpointer.stop();
        // The WAL started over: the next commit writes it from the top.
        write(&writer, 10);
        let frames: i64 = writer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
            .expect("checkpoint");
        assert!(frames < 100, "{frames} frames after the restart");
    }

    #[test]
    fn after_a_failed_sync_nothing_is_checkpointed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.sqlite3");
        let _writer = long_wal(&path);
        let size = || std::fs::metadata(&path).expect("database file").len();
        let before = size();

        let failed = Arc::new(Durability::new(0));
        failed.fail_for_test();
        let (checkpointer, restarts) = watched(&path, failed);
        // Thirty intervals: a working checkpointer copies the WAL into the
        // database file (and restarts it) well within them.
        assert!(
            restarts.recv_timeout(Duration::from_millis(300)).is_err(),
            "the WAL was restarted after a failed sync"
        );
        checkpointer.stop();
        assert_eq!(size(), before, "WAL frames were copied into the database");
    }
}
