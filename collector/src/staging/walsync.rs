//! WAL syncs beside the writer: a commit is made durable by this thread,
//! not by the writer's own `COMMIT`.
//!
//! With `synchronous=FULL` every commit waits for its `fsync` on the writer
//! thread, and the writer can do nothing else meanwhile: at ingest's rates
//! it spent about half its time waiting on the disk while reports queued
//! behind it. Here the writer's connection runs with `synchronous=NORMAL`
//! (in WAL mode: a commit is written to the WAL but not synced; checkpoints
//! and WAL resets still sync, so the file stays consistent whatever
//! happens) and hands each committed transaction's replies to this thread,
//! which syncs the WAL file and only then sends them. The writer meanwhile
//! commits the next batch, and one sync covers every transaction written
//! before it started: the same group commit, with the disk and the writer
//! working at once.
//!
//! Nothing is answered before it is on disk: a reply (stored, duplicate,
//! acknowledged, enrolled…) waits for the first sync that began after its
//! transaction committed. Exports stop at the durable sequence number, so
//! the puller never sees a report that a power loss could still take back
//! (its `seq` would then be given to another report). When a sync fails
//! the page cache can no longer be trusted to hold what it did not write
//! (a later sync may succeed with earlier pages lost), so the store stops
//! accepting changes until the collector is restarted, as PostgreSQL does.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::Notify;

use super::CommitObserver;
use crate::Error;

/// What to do once a committed transaction is durable (`Ok`) or its sync
/// failed (`Err`, with the reason).
pub(super) type OnSynced = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// One committed transaction waiting for its sync.
pub(super) struct Committed {
    /// Sends its replies.
    pub(super) on_synced: OnSynced,
    /// The highest report `seq` it stored, if it stored any.
    pub(super) highest_seq: Option<u64>,
    /// When its batch started, for the commit-latency observer; `None`
    /// for transactions that are not report batches.
    pub(super) batch: Option<(Instant, usize)>,
}

/// State shared by the writer, the sync thread and readers.
#[derive(Debug)]
pub(super) struct Durability {
    /// Every report with `seq` up to this is on disk.
    durable_seq: AtomicU64,
    /// A sync failed: the store takes no more changes.
    failed: AtomicBool,
    /// Transactions handed over and not yet answered.
    in_flight: AtomicUsize,
    /// Told when `in_flight` drops to zero.
    idle: Notify,
    /// Set by a test to keep the sync thread from syncing: transactions
    /// then stay committed but not durable ([`Durability::hold_syncs_for_test`]).
    #[cfg(test)]
    held: AtomicBool,
}

impl Durability {
    pub(super) fn new(durable_seq: u64) -> Self {
        Self {
            durable_seq: AtomicU64::new(durable_seq),
            failed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            #[cfg(test)]
            held: AtomicBool::new(false),
        }
    }

    /// Whether the sync thread has transactions to sync.
    pub(super) fn syncing(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Resolves once the sync thread has answered everything handed over
    /// (possibly at once, for an earlier idle moment nobody waited for).
    pub(super) async fn until_idle(&self) {
        self.idle.notified().await;
    }

    /// `count` handed-over transactions were answered.
    fn answered(&self, count: usize) {
        if self.in_flight.fetch_sub(count, Ordering::AcqRel) == count {
            self.idle.notify_one();
        }
    }

    /// Records that every report up to `seq` is durable.
    pub(super) fn durable_up_to(&self, seq: u64) {
        self.durable_seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// Every report up to this `seq` is durable.
    pub(super) fn durable_seq(&self) -> u64 {
        self.durable_seq.load(Ordering::Acquire)
    }

    /// Keeps the sync thread from syncing (and so from answering or
    /// advancing the durable seq) while `held`.
    #[cfg(test)]
    pub(super) fn hold_syncs_for_test(&self, held: bool) {
        self.held.store(held, Ordering::Release);
    }

    /// Marks a sync as failed, as `run` does when one fails.
    #[cfg(test)]
    pub(super) fn fail_for_test(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// The error for changes after a failed sync; `None` while syncs work.
    pub(super) fn failure(&self) -> Option<Error> {
        self.failed.load(Ordering::Acquire).then(|| {
            Error::Staging(
                "syncing the staging store to disk failed earlier, so nothing more is accepted: \
                 check the disk, then restart the collector (everything acknowledged before the \
                 failure is kept)"
                    .to_owned(),
            )
        })
    }
}

/// The sync thread's handle. Dropping the sender ([`WalSyncer::finish`])
/// lets it sync what is left and stop.
pub(super) struct WalSyncer {
    sender: Option<Sender<Committed>>,
    handle: Option<JoinHandle<()>>,
    durability: Arc<Durability>,
}

impl WalSyncer {
    /// Opens the WAL of the database at `db` and starts syncing it.
    ///
    /// The WAL file must exist (the writer's connection creates it when it
    /// opens the database in WAL mode). Everything already in it is synced
    /// first: a store reopened after a crash of the process (not of the
    /// machine) may hold commits that were never synced.
    pub(super) fn spawn(
        db: &Path,
        durability: Arc<Durability>,
        on_commit: Option<CommitObserver>,
    ) -> Result<Self, Error> {
        let mut wal = WalFile::open(db)?;
        wal.sync().map_err(|e| Error::Io {
            what: format!("cannot sync {}", wal.path.display()),
            source: e,
        })?;
        // Unbounded: the writer never waits for a sync. It commits what
        // arrived during the last commit and goes on, and each sync covers
        // every commit made before it began, so a report waits for at most
        // the sync in progress and the next one. (A bounded hand-over made
        // the writer wait with a commit ready, adding a third.) What is
        // queued here is bounded by the requests in flight.
        let (sender, receiver) = channel();
        let handle = std::thread::Builder::new()
            .name("staging-sync".to_owned())
            .spawn({
                let durability = Arc::clone(&durability);
                move || run(wal, &receiver, &durability, on_commit.as_ref())
            })
            .map_err(|source| Error::Io {
                what: "cannot start the staging sync thread".to_owned(),
                source,
            })?;
        Ok(Self {
            sender: Some(sender),
            handle: Some(handle),
            durability,
        })
    }

    /// Hands over a committed transaction.
    pub(super) fn hand_over(&self, committed: Committed) {
        self.durability.in_flight.fetch_add(1, Ordering::AcqRel);
        let sent = match &self.sender {
            Some(sender) => sender.send(committed).map_err(|e| e.0),
            None => Err(committed),
        };
        if let Err(committed) = sent {
            self.durability.answered(1);
            (committed.on_synced)(Err("the staging sync thread has stopped"));
        }
    }

    /// Syncs and answers everything handed over, then stops the thread.
    pub(super) fn finish(mut self) {
        self.sender.take();
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            tracing::error!("the staging sync thread panicked");
        }
    }
}

impl Drop for WalSyncer {
    fn drop(&mut self) {
        // Only reached when `finish` was not called (the writer panicked):
        // disconnecting still lets the thread answer what it holds.
        self.sender.take();
    }
}

fn run(
    mut wal: WalFile,
    receiver: &Receiver<Committed>,
    durability: &Durability,
    on_commit: Option<&CommitObserver>,
) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        batch.extend(receiver.try_iter());
        #[cfg(test)]
        while durability.held.load(Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let result = if durability.failed.load(Ordering::Acquire) {
            Err("an earlier sync of the staging store failed".to_owned())
        } else {
            wal.sync().map_err(|e| {
                tracing::error!(path = %wal.path.display(), error = %e,
                    "syncing the staging WAL failed; refusing further changes until restart");
                durability.failed.store(true, Ordering::Release);
                format!("syncing {} failed: {e}", wal.path.display())
            })
        };
        if result.is_ok()
            && let Some(highest) = batch.iter().filter_map(|c| c.highest_seq).max()
        {
            durability.durable_up_to(highest);
        }
        let synced_at = Instant::now();
        let answered = batch.len();
        for committed in batch {
            if let (Some(observer), Some((started, count)), Ok(())) =
                (on_commit, committed.batch, &result)
            {
                let took = synced_at.duration_since(started);
                super::notify("commit", || observer(took, count));
            }
            (committed.on_synced)(result.as_ref().copied().map_err(String::as_str));
        }
        durability.answered(answered);
    }
}

/// Opens a file to be synced and never written. Read-only is enough for
/// `fdatasync`; Windows' `FlushFileBuffers` refuses a handle without write
/// access.
fn open_for_sync(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(cfg!(windows))
        .open(path)
}

/// The open WAL file.
struct WalFile {
    path: PathBuf,
    file: File,
}

impl WalFile {
    fn open(db: &Path) -> Result<Self, Error> {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        let path = PathBuf::from(path);
        let file = open_for_sync(&path).map_err(|source| Error::Io {
            what: format!(
                "cannot open the staging WAL {} (the store must be in WAL mode on a local file system)",
                path.display()
            ),
            source,
        })?;
        Ok(Self { path, file })
    }

    /// `fdatasync` of the WAL. Should the file have been replaced (SQLite
    /// deletes the WAL when its last connection closes and recreates it on
    /// the next open; the checkpoint thread's connection normally prevents
    /// that), the current one is opened and synced as well.
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        if self.replaced()? {
            let current = open_for_sync(&self.path)?;
            current.sync_data()?;
            self.file = current;
        }
        Ok(())
    }

    #[cfg(not(unix))]
    #[allow(clippy::unnecessary_wraps, clippy::unused_self)]
    fn replaced(&self) -> std::io::Result<bool> {
        Ok(false)
    }

    #[cfg(unix)]
    fn replaced(&self) -> std::io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let open = self.file.metadata()?;
        match std::fs::metadata(&self.path) {
            Ok(current) => Ok(current.ino() != open.ino() || current.dev() != open.dev()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn wal_beside(dir: &Path) -> PathBuf {
        let db = dir.join("store.sqlite3");
        std::fs::write(dir.join("store.sqlite3-wal"), b"frames").expect("write a WAL file");
        db
    }

    #[test]
    fn replies_follow_the_sync_and_the_durable_seq_advances() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = wal_beside(dir.path());
        let durability = Arc::new(Durability::new(0));
        let counted = Arc::new(AtomicUsize::new(0));
        let observer: CommitObserver = {
            let counted = Arc::clone(&counted);
            Arc::new(move |_, count| {
                counted.fetch_add(count, Ordering::SeqCst);
            })
        };
        let syncer =
            WalSyncer::spawn(&db, Arc::clone(&durability), Some(observer)).expect("syncer");
        let answers = Arc::new(Mutex::new(Vec::new()));
        for (i, seq) in [Some(3), None, Some(7), Some(5)].into_iter().enumerate() {
            let answers = Arc::clone(&answers);
            let durable = Arc::clone(&durability);
            syncer.hand_over(Committed {
                on_synced: Box::new(move |synced| {
                    // Durable before anyone hears of it.
                    if let Some(seq) = seq {
                        assert!(durable.durable_seq() >= seq);
                    }
                    answers
                        .lock()
                        .expect("answers")
                        .push((i, synced.map_err(str::to_owned)));
                }),
                highest_seq: seq,
                batch: seq.map(|_| (Instant::now(), 2)),
            });
        }
        syncer.finish();
        let answers = answers.lock().expect("answers").clone();
        assert_eq!(
            answers,
            vec![(0, Ok(())), (1, Ok(())), (2, Ok(())), (3, Ok(()))],
            "every transaction answered, in order"
        );
        assert_eq!(durability.durable_seq(), 7);
        assert!(!durability.syncing());
        assert_eq!(
            counted.load(Ordering::SeqCst),
            6,
            "three report batches of 2"
        );
        assert!(durability.failure().is_none());
    }

    #[test]
    fn a_replaced_wal_file_is_synced_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = wal_beside(dir.path());
        let mut wal = WalFile::open(&db).expect("open");
        let first = wal.file.metadata().expect("metadata");
        // As when SQLite deletes the WAL and a later connection creates it.
        let fresh = dir.path().join("fresh");
        std::fs::write(&fresh, b"new frames").expect("write");
        std::fs::rename(&fresh, &wal.path).expect("replace the WAL");
        wal.sync().expect("sync");
        let now = wal.file.metadata().expect("metadata");
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            assert_ne!(first.ino(), now.ino(), "the current file is the one held");
        }
        assert_eq!(first.len(), 6);
        assert_eq!(now.len(), 10);
    }

    #[test]
    fn a_store_without_a_wal_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        let Err(e) = WalSyncer::spawn(
            &dir.path().join("none.sqlite3"),
            Arc::new(Durability::new(0)),
            None,
        ) else {
            panic!("a missing WAL must be an error");
        };
        assert!(e.to_string().contains("WAL"), "{e}");
    }
}
