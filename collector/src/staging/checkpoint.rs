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
//! though, and SQLite starts the WAL over only when it did: under steady
//! load the WAL grew without bound (700 MB in a 30 s benchmark), every
//! commit allocated new blocks, and the eventual cut back to
//! `journal_size_limit` freed hundreds of megabytes at once, stalling a
//! commit for over a second. So this thread also reports how long the WAL
//! is ([`WalLength`]); once it passes [`RESTART_FRAMES`] the writer, between
//! two transactions, checkpoints the few frames this thread has not yet
//! copied, and its next transaction starts the WAL over from the top.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::schema::sql_error;
use crate::Error;

/// How often a passive checkpoint runs.
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// WAL frames (pages) after which the writer finishes a checkpoint so
/// that the WAL starts over: 32 MiB of 4 KiB pages, below
/// `journal_size_limit`, so the WAL file is reused, never cut back.
pub(super) const RESTART_FRAMES: u64 = 8_192;

/// The WAL's length in frames as the last checkpoint found it; the writer
/// takes it (resetting it to 0) when it acts on it.
#[derive(Debug, Default)]
pub(super) struct WalLength(AtomicU64);

impl WalLength {
    /// The length last reported, if it has reached `frames`; taking it
    /// means the next check waits for the next checkpoint's report.
    pub(super) fn take_if_over(&self, frames: u64) -> Option<u64> {
        let length = self.0.load(Ordering::Acquire);
        (length >= frames && self.0.swap(0, Ordering::AcqRel) >= frames).then_some(length)
    }

    fn report(&self, frames: u64) {
        self.0.store(frames, Ordering::Release);
    }
}

/// The checkpoint thread; stops when dropped or [`Checkpointer::stop`]ped.
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing `path` every `interval`.
    pub(super) fn spawn(
        path: &Path,
        interval: Duration,
        length: Arc<WalLength>,
    ) -> Result<Self, Error> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_error(&format!("cannot open {} to checkpoint", path.display()), &e))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let path: PathBuf = path.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("staging-checkpoint".to_owned())
            .spawn(move || run(&conn, &path, &stopped, interval, &length))
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
    length: &WalLength,
) {
    let mut failing = false;
    loop {
        match stopped.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        // (busy, frames in the WAL, frames checkpointed)
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(1)
        });
        if let Ok(frames) = &result {
            length.report(u64::try_from(*frames).unwrap_or(0));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_wal_is_taken_once_per_report() {
        let length = WalLength::default();
        assert_eq!(length.take_if_over(RESTART_FRAMES), None);
        length.report(RESTART_FRAMES - 1);
        assert_eq!(length.take_if_over(RESTART_FRAMES), None);
        length.report(RESTART_FRAMES + 5);
        assert_eq!(
            length.take_if_over(RESTART_FRAMES),
            Some(RESTART_FRAMES + 5)
        );
        // Taken: the writer acts once, then waits for the next report.
        assert_eq!(length.take_if_over(RESTART_FRAMES), None);
        length.report(RESTART_FRAMES);
        assert_eq!(length.take_if_over(RESTART_FRAMES), Some(RESTART_FRAMES));
    }
}
