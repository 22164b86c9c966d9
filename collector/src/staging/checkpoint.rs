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

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::schema::sql_error;
use crate::Error;

/// How often a passive checkpoint runs.
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// The checkpoint thread; stops when dropped or [`Checkpointer::stop`]ped.
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing `path` every `interval`.
    pub(super) fn spawn(path: &Path, interval: Duration) -> Result<Self, Error> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_error(&format!("cannot open {} to checkpoint", path.display()), &e))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let path: PathBuf = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("staging-checkpoint".to_owned())
            .spawn(move || run(&conn, &path, &stopped, interval))
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

fn run(conn: &Connection, path: &Path, stopped: &mpsc::Receiver<()>, interval: Duration) {
    let mut failing = false;
    loop {
        match stopped.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(0)
        });
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
