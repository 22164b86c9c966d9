//! The staging store: reports are kept here, durably, from the moment ingest
//! acknowledges them until the internal side has pulled and acknowledged
//! them.
//!
//! One SQLite file in WAL mode. All changes go through one writer thread
//! ([`writer`]) that commits concurrent reports together (group commit); a
//! sync thread ([`walsync`]) syncs the WAL after each commit and only then
//! sends the replies, so a reply always means the change survives power
//! loss, while the writer commits the next batch during the sync. Reads use
//! their own read-only connections beside it, and exports stop at the last
//! synced report. Every committed report gets the node's
//! next sequence number (dense, never reused, kept across purges and
//! restarts), which the exported JSON carries in its envelope.

mod checkpoint;
mod enrolment;
mod live;
mod park;
mod schema;
mod stored;
mod trust;
mod walsync;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lineprobe_shared::Report;
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::{Semaphore, mpsc, oneshot};

use self::checkpoint::{CHECKPOINT_INTERVAL, Checkpointer};
use self::enrolment::EnrolledIndex;
pub use self::enrolment::{
    EnrolOutcome, EnrolledKey, EnrolmentBounds, ForgottenInstall, InstallKeys,
};
pub use self::live::PublishedManifest;
use self::live::{Backlog, ManifestCell, ReadinessProbe};
use self::schema::{migrate, open_reader, open_writer, sql_error};
use self::walsync::{Durability, WalSyncer};
use self::writer::{EncodedReport, Request, Writer, to_sql_int};
use crate::{Error, StagingConfig};

/// Most report JSON one export page holds, unpacked: a page is built in
/// memory, and `export.max_batch` (up to 10 000) reports of up to 64 KiB
/// each would otherwise take hundreds of megabytes. At ~2 KB a report a
/// page of 10 000 is about 20 MB, so ordinary pages are not cut; the
/// puller asks again from where a shorter page ends.
pub const EXPORT_PAGE_BYTES: usize = 32 << 20;

/// How long opening waits for the store's lock before calling the store
/// in use.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// Takes the store's lock file (`<store>.lock`, an exclusive `flock`), so
/// that a second collector on the same store is refused at start: each
/// process knows only its own syncs, so one could export (and have
/// acknowledged, then purged) the other's commits before they are on disk.
/// A file system without locks (some network shares) cannot enforce it:
/// the store opens with a warning.
fn lock_store(path: &Path) -> Result<Option<std::fs::File>, Error> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| Error::Io {
            what: format!("cannot open the staging lock {}", lock_path.display()),
            source,
        })?;
    // A lock held only for a moment is waited for: one in a process that
    // is exiting (a restart), or a copy of the descriptor in a child some
    // thread of this process forked that has not yet exec'd (which closes
    // it), as the tests' subprocesses do.
    let deadline = Instant::now() + LOCK_WAIT;
    let mut locked = file.try_lock();
    while matches!(locked, Err(std::fs::TryLockError::WouldBlock)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        locked = file.try_lock();
    }
    match locked {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Staging(format!(
            "the staging store {} is in use by another collector (it holds {}): run one \
             collector per store, stopping the other first or giving this one its own data_dir",
            path.display(),
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!(lock = %lock_path.display(), error = %e,
                "cannot lock the staging store (no file locks here?); make sure no other \
                 collector uses it");
            Ok(None)
        }
    }
}

/// Called after every commit with its duration and the number of reports in it.
pub type CommitObserver = Arc<dyn Fn(Duration, usize) + Send + Sync>;

/// Called after every WAL restart with how long it took: the writer, and
/// with it every report in flight, waits for most of it (`checkpoint`).
pub type RestartObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// Runs an observer's call on a store thread; a panicking observer must
/// not take the thread (and with it every later reply) down.
fn notify(observer: &str, call: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).is_err() {
        tracing::error!("the staging {observer} observer panicked");
    }
}

/// How to open the store.
#[derive(Clone)]
pub struct StagingOptions {
    /// The SQLite database file (its folder is created).
    pub path: PathBuf,
    /// This node's id: acknowledgements must name it.
    pub node_id: String,
    /// Most unacknowledged reports kept; beyond it `stage` fails with `StagingFull`.
    pub max_reports: u64,
    /// `Retry-After` seconds carried by `StagingFull`.
    pub full_retry_after_secs: u64,
    /// Acknowledged reports older than this are purged.
    pub retention: Duration,
    /// Most reports per transaction.
    pub group_commit_max: usize,
    /// The longest the writer holds a commit back for more reports to
    /// join it, counted from its first report.
    pub group_commit_wait: Duration,
    /// The wait ends earlier once no report has arrived for this long;
    /// zero: it always lasts `group_commit_wait`.
    pub group_commit_gap: Duration,
    /// Told about every commit (for the commit-latency metric).
    pub on_commit: Option<CommitObserver>,
    /// Told about every WAL restart (for the restart metric).
    pub on_wal_restart: Option<RestartObserver>,
}

impl StagingOptions {
    /// Options for the store at `path` from the `[staging]` configuration;
    /// no observers.
    pub fn from_config(path: PathBuf, node_id: String, config: &StagingConfig) -> Self {
        Self {
            path,
            node_id,
            max_reports: config.max_reports,
            full_retry_after_secs: config.full_retry_after_secs,
            retention: Duration::from_secs(config.retention_hours.saturating_mul(3600)),
            group_commit_max: config.group_commit_max,
            group_commit_wait: Duration::from_micros(config.group_commit_wait_us),
            group_commit_gap: Duration::from_micros(config.group_commit_gap_us),
            on_commit: None,
            on_wal_restart: None,
        }
    }
}

impl std::fmt::Debug for StagingOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingOptions")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What happened to a staged report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageOutcome {
    /// Newly committed with this sequence number.
    Stored {
        /// The per-node sequence number.
        seq: u64,
    },
    /// The same `report_id` was already stored (with this sequence number).
    Duplicate {
        /// The sequence number of the stored copy.
        seq: u64,
    },
}

/// One committed report, as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedReport {
    /// Its sequence number.
    pub seq: u64,
    /// The stored report JSON, envelope included, on one line.
    pub json: Vec<u8>,
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckOutcome {
    /// Everything up to this sequence number is now acknowledged.
    pub acked_up_to: u64,
    /// How many reports this call newly acknowledged.
    pub newly_acked: u64,
}

/// Figures for health and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingStats {
    /// Reports committed and not yet acknowledged.
    pub unacked: u64,
    /// Highest sequence number ever assigned (0: none).
    pub highest_seq: u64,
    /// Everything up to here is acknowledged.
    pub acked_up_to: u64,
    /// `received_at` of the oldest unacknowledged report.
    pub oldest_unacked: Option<DateTime<Utc>>,
}

/// How busy the store's read side has been (for tests and tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagingReadStats {
    /// Reads run on a reader connection.
    pub reads: u64,
    /// Reader connections opened; never more than [`MAX_READERS`] are open
    /// at once.
    pub connections_opened: u64,
}

/// The durable store (cheap to clone).
#[derive(Clone)]
pub struct Staging {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The lock that keeps a second collector off this store (see
    /// [`lock_store`]); released by `close` or when the store is dropped.
    store_lock: Mutex<Option<std::fs::File>>,
    node_id: String,
    /// This store's random id (see the schema's version 4).
    store_id: String,
    retention: Duration,
    /// The bound on unacknowledged reports, and the `Retry-After` of
    /// `StagingFull` (the writer enforces them; readiness reports them).
    max_reports: u64,
    full_retry_after_secs: u64,
    /// The writer's queue; `None` once closing began.
    sender: RwLock<Option<mpsc::Sender<Request>>>,
    closed: AtomicBool,
    /// Held for the whole of `close`, so a second `close` returns only after
    /// the first one finished.
    writer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// Runs WAL checkpoints beside the writer; stopped after it.
    checkpointer: Mutex<Option<Checkpointer>>,
    /// Idle read-only connections.
    readers: Mutex<Vec<Connection>>,
    /// One permit per reader connection: a read waits for one instead of
    /// opening yet another connection (and taking yet another blocking
    /// thread) however many requests want to read at once.
    reader_permits: Arc<Semaphore>,
    reads: AtomicU64,
    readers_opened: AtomicU64,
    /// The `state` counters as committed, for readiness.
    backlog: Arc<Backlog>,
    /// The current manifest, served to probes from memory.
    manifest: Arc<ManifestCell>,
    /// The last readiness read of the store.
    probe: ReadinessProbe,
    /// Installations that may have enrolled a key.
    enrolled: Arc<EnrolledIndex>,
    /// How far the store is on disk.
    durability: Arc<Durability>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("path", &self.inner.path)
            .field("node_id", &self.inner.node_id)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Most reader connections open at once. Reads are short lookups (keys of
/// signed probes, export pages, figures): a few connections keep them
/// flowing, and more would only take blocking threads and file handles
/// that the writer and the sync thread need under load. Idle ones are kept
/// for reuse.
pub const MAX_READERS: usize = 8;

/// Rows changed per purge transaction, so that a large purge does not hold
/// the writer (and with it ingest) for long.
const PURGE_CHUNK: usize = 2_000;

/// Copies whatever the WAL holds into the database file, syncs it and
/// empties the WAL, before anything in the store is taken as durable.
///
/// A process that stopped after a failed `fdatasync` may have left WAL
/// frames that never reached the disk but are still in the page cache,
/// marked clean: syncing the WAL again succeeds without writing them, and
/// a retry of a report that got an error would be answered `duplicate`
/// from frames a power cut could still take. Checkpointing reads the frames
/// (from the cache when they are only there) and writes them again, into
/// the database file, which is then synced; only then is the WAL emptied.
/// A frame the cache no longer has fails SQLite's checksums and ends the
/// WAL there, as after a crash. If the disk refuses the writes the store
/// does not open, and the WAL stays for the next try.
/// The writer's connection, the schema brought up to date and the WAL
/// checkpointed (see [`checkpoint_on_open`]).
fn open_and_recover(path: &std::path::Path, node_id: &str) -> Result<rusqlite::Connection, Error> {
    let mut conn = open_writer(path)?;
    migrate(&mut conn, node_id, path)?;
    checkpoint_on_open(&conn, path)?;
    Ok(conn)
}

fn checkpoint_on_open(conn: &rusqlite::Connection, path: &std::path::Path) -> Result<(), Error> {
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(|e| {
            sql_error(
                &format!(
                    "cannot copy the WAL of {} into the database and sync it (check the disk; \
                     the WAL is kept and read again at the next start)",
                    path.display()
                ),
                &e,
            )
        })?;
    if busy != 0 {
        return Err(Error::Staging(format!(
            "another connection holds {} open, so its WAL cannot be checkpointed at start; \
             stop the other process using the store",
            path.display()
        )));
    }
    Ok(())
}

impl Staging {
    /// Opens (creating) the store and starts its writer.
    ///
    /// Fails when the store belongs to another `node_id` (sequence numbers
    /// are per node), was written by a newer schema, or cannot use WAL.
    pub fn open(options: StagingOptions) -> Result<Self, Error> {
        if options.node_id.is_empty() {
            return Err(Error::Config {
                key: "node_id".to_owned(),
                reason: "the staging store needs a node id; set node_id".to_owned(),
            });
        }
        if let Some(dir) = options.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                what: format!("cannot create the staging folder {}", dir.display()),
                source,
            })?;
        }
        let store_lock = lock_store(&options.path)?;
        let conn = open_and_recover(&options.path, &options.node_id)?;
        let enrolled = Arc::new(EnrolledIndex::load(&conn)?);
        // The syncer first syncs whatever the WAL holds (commits of a
        // process that crashed may never have been synced), so every seq
        // stored so far is durable before ingest starts.
        let durability = Arc::new(Durability::new(0));
        let syncer = WalSyncer::spawn(
            &options.path,
            Arc::clone(&durability),
            options.on_commit.clone(),
        )?;
        let (highest, acked, store_id): (i64, i64, String) = conn
            .query_row(
                "SELECT highest_seq, acked_up_to, store_id FROM state WHERE id = 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(|e| sql_error("cannot read the store's state", &e))?;
        let highest = u64::try_from(highest).unwrap_or(0);
        durability.durable_up_to(highest);
        let backlog = Arc::new(Backlog::new(highest, u64::try_from(acked).unwrap_or(0)));
        let manifest = Arc::new(ManifestCell::new(
            conn.query_row(
                "SELECT serial, signed FROM manifest WHERE id = 1",
                [],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)),
            )
            .optional()
            .map_err(|e| sql_error("cannot read the current manifest", &e))?
            .map(|(serial, signed)| PublishedManifest {
                serial: u64::try_from(serial).unwrap_or(0),
                signed: signed.into(),
            }),
        ));

        let group_commit_max = options.group_commit_max.max(1);
        let capacity = group_commit_max.saturating_mul(4).clamp(64, 65_536);
        let (sender, receiver) = mpsc::channel(capacity);
        let writer = Writer {
            path: options.path.clone(),
            conn: Some(conn),
            node_id: options.node_id.clone(),
            max_reports: options.max_reports,
            full_retry_after_secs: options.full_retry_after_secs,
            group_commit_max,
            group_commit_wait: options.group_commit_wait,
            group_commit_gap: options.group_commit_gap,
            enrolled: Arc::clone(&enrolled),
            syncer: Some(syncer),
            durability: Arc::clone(&durability),
            backlog: Arc::clone(&backlog),
            manifest: Arc::clone(&manifest),
        };
        let checkpointer = Checkpointer::spawn(
            &options.path,
            CHECKPOINT_INTERVAL,
            options.on_wal_restart.clone(),
            Arc::clone(&durability),
        )?;
        let handle = std::thread::Builder::new()
            .name("staging-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|source| Error::Io {
                what: "cannot start the staging writer thread".to_owned(),
                source,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: options.path,
                store_lock: Mutex::new(store_lock),
                node_id: options.node_id,
                store_id,
                retention: options.retention,
                max_reports: options.max_reports,
                full_retry_after_secs: options.full_retry_after_secs,
                sender: RwLock::new(Some(sender)),
                closed: AtomicBool::new(false),
                writer: tokio::sync::Mutex::new(Some(handle)),
                checkpointer: Mutex::new(Some(checkpointer)),
                readers: Mutex::new(Vec::new()),
                reader_permits: Arc::new(Semaphore::new(MAX_READERS)),
                reads: AtomicU64::new(0),
                readers_opened: AtomicU64::new(0),
                backlog,
                manifest,
                probe: ReadinessProbe::default(),
                enrolled,
                durability,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The highest `seq` durably stored: an export asked for now returns
    /// every report up to it (within its limits).
    pub fn durable_seq(&self) -> u64 {
        self.inner.durability.durable_seq()
    }

    /// The store's id: drawn at random when the store was made. A store
    /// made afresh (the old one lost) has another, so that the puller does
    /// not take its sequence numbers for the old store's.
    pub fn store_id(&self) -> &str {
        &self.inner.store_id
    }

    /// Durably stores `report` (its envelope must be set; `seq` is assigned here).
    ///
    /// Returns only after the transaction holding the report committed to
    /// disk. The envelope's `node_id` is set to the store's node. A
    /// `report_id` already stored (also one purged within the last
    /// retention) is answered `Duplicate` with the original `seq`. Errors:
    /// `StagingFull` at the bound, `Staging` when the store failed (nothing
    /// of the report was kept), `StagingClosed` after [`Staging::close`].
    pub async fn stage(&self, report: Report) -> Result<StageOutcome, Error> {
        self.check_open()?;
        let report = EncodedReport::encode(report, &self.inner.node_id)?;
        self.request(|reply| Request::Stage { report, reply }).await
    }

    /// Durably stores a report as ingest received it: `submitted` is the
    /// JSON the probe sent and `report` its decoded form with the envelope
    /// set. The stored JSON is `submitted` with the envelope appended (the
    /// probe's bytes, not a re-encoding), unless those bytes cannot take it
    /// (pretty-printed, escaped keys); then as [`Staging::stage`]. Outcomes
    /// and errors as [`Staging::stage`].
    pub async fn stage_received(
        &self,
        report: Report,
        submitted: &[u8],
    ) -> Result<StageOutcome, Error> {
        self.check_open()?;
        let report = EncodedReport::encode_received(report, submitted, &self.inner.node_id)?;
        self.request(|reply| Request::Stage { report, reply }).await
    }

    /// Committed reports with `seq > after`, in `seq` order, at most `limit`.
    ///
    /// Acknowledged reports not yet purged are included; purged ones are not.
    pub async fn export_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ExportedReport>, Error> {
        self.export_after_within(after, limit, EXPORT_PAGE_BYTES)
            .await
    }

    /// As [`Staging::export_after`], the page ending once its reports'
    /// JSON reaches `max_bytes` (a first report larger than that still
    /// makes a page of one).
    pub async fn export_after_within(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<ExportedReport>, Error> {
        if limit == 0 || after >= i64::MAX as u64 {
            self.check_open()?;
            return Ok(Vec::new());
        }
        // Only what is on disk: a report committed but not yet synced could
        // still be lost, and its seq then given to another.
        let durable = self.inner.durability.durable_seq();
        self.read(move |conn| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, json FROM reports WHERE seq > ?1 AND seq <= ?3 AND json IS NOT NULL \
                     ORDER BY seq LIMIT ?2",
                )
                .map_err(|e| sql_error("exporting reports", &e))?;
            let rows = stmt
                .query_map([to_sql_int(after), limit, to_sql_int(durable)], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
                })
                .map_err(|e| sql_error("exporting reports", &e))?;
            let mut out = Vec::new();
            let mut bytes = 0_usize;
            for row in rows {
                // A first report always makes a page, whatever the budget.
                if bytes >= max_bytes && !out.is_empty() {
                    break;
                }
                let (seq, stored) = row.map_err(|e| sql_error("exporting reports", &e))?;
                let seq = u64::try_from(seq)
                    .map_err(|_| Error::Staging(format!("negative seq {seq} in the store")))?;
                // The store is the authority on the sequence number: the
                // exported JSON carries the one it is exported under.
                let json = stored::unpack(&stored, seq)?;
                bytes = bytes.saturating_add(json.len());
                out.push(ExportedReport { seq, json });
            }
            Ok(out)
        })
        .await
    }

    /// Acknowledges everything up to `up_to` for `node_id`.
    ///
    /// Idempotent: acknowledging at or below the current cursor changes
    /// nothing and reports the cursor. `BadAck` (nothing changed) when
    /// `node_id` is not this node or `up_to` is beyond the highest `seq`
    /// on disk, the last an export can have returned (a report committed
    /// but not yet synced counts as beyond it).
    pub async fn ack(&self, node_id: &str, up_to: u64) -> Result<AckOutcome, Error> {
        let node_id = node_id.to_owned();
        self.request(|reply| Request::Ack {
            node_id,
            up_to,
            reply,
        })
        .await
    }

    /// Current figures.
    pub async fn stats(&self) -> Result<StagingStats, Error> {
        self.read(|conn| {
            let tx = conn
                .transaction()
                .map_err(|e| sql_error("reading staging figures", &e))?;
            let (highest, acked): (i64, i64) = tx
                .query_row(
                    "SELECT highest_seq, acked_up_to FROM state WHERE id = 1",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(|e| sql_error("reading staging figures", &e))?;
            // Sequence numbers follow arrival, so the first unacknowledged
            // one is the oldest (to within one group commit); reading it is
            // one index lookup instead of a scan of the backlog.
            let oldest_us: Option<i64> = tx
                .query_row(
                    "SELECT received_at_us FROM reports WHERE seq > ?1 ORDER BY seq LIMIT 1",
                    [acked],
                    |row| row.get(0),
                )
                .optional()
                .map_err(|e| sql_error("reading staging figures", &e))?;
            let highest_seq = u64::try_from(highest).unwrap_or(0);
            let acked_up_to = u64::try_from(acked).unwrap_or(0);
            Ok(StagingStats {
                unacked: highest_seq.saturating_sub(acked_up_to),
                highest_seq,
                acked_up_to,
                oldest_unacked: oldest_us.and_then(DateTime::<Utc>::from_timestamp_micros),
            })
        })
        .await
    }

    /// Whether a new report would be stored now, for readiness checks.
    ///
    /// Errors as [`Staging::stage`] would answer: `StagingFull` at the
    /// bound, `Staging` once a failed sync has stopped the store taking
    /// changes until restart (or its writer stopped, or it cannot be read),
    /// `StagingClosed` after [`Staging::close`]. Their messages may name
    /// files: log them, do not send them to clients.
    ///
    /// Everything but "it can be read" is known in memory and answered
    /// exactly; the read behind that is shared by all the checks of a
    /// second, since `/readyz` is open to anyone on the internet.
    pub async fn check_accepting(&self) -> Result<(), Error> {
        self.check_open()?;
        if let Some(failure) = self.inner.durability.failure() {
            return Err(failure);
        }
        let writer_gone = self
            .inner
            .sender
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(mpsc::Sender::is_closed);
        match writer_gone {
            None => return Err(Error::StagingClosed),
            Some(true) => return Err(self.stopped()),
            Some(false) => {}
        }
        if self.inner.backlog.unacked() >= self.inner.max_reports {
            return Err(Error::StagingFull {
                max: self.inner.max_reports,
                retry_after_secs: self.inner.full_retry_after_secs,
            });
        }
        self.probe_readable().await
    }

    /// Whether the database could be read within the last second: reads
    /// it when the last probe is older, once for all the callers waiting.
    async fn probe_readable(&self) -> Result<(), Error> {
        let probe = &self.inner.probe;
        if let Some(outcome) = probe.fresh() {
            return outcome;
        }
        let _running = probe.running().await;
        if let Some(outcome) = probe.fresh() {
            return outcome;
        }
        let outcome = self
            .read(|conn| {
                conn.query_row("SELECT highest_seq FROM state WHERE id = 1", [], |row| {
                    row.get::<_, i64>(0)
                })
                .map(drop)
                .map_err(|e| sql_error("reading the store's state", &e))
            })
            .await;
        // Closing is not an outcome to remember: it is checked first anyway.
        if !matches!(outcome, Err(Error::StagingClosed)) {
            probe.record(&outcome);
        }
        outcome
    }

    /// The current signed manifest, from memory: loaded when the store
    /// opened and replaced as soon as a newer one published with
    /// [`Staging::put_manifest`] is on disk. Unlike
    /// [`Staging::current_manifest`] it never reads the database, so
    /// serving it to probes costs no store read.
    pub fn published_manifest(&self) -> Option<Arc<PublishedManifest>> {
        self.inner.manifest.current()
    }

    /// How busy the read side has been.
    pub fn read_stats(&self) -> StagingReadStats {
        StagingReadStats {
            reads: self.inner.reads.load(Ordering::Relaxed),
            connections_opened: self.inner.readers_opened.load(Ordering::Relaxed),
        }
    }

    /// Makes the store behave as after a failed WAL sync, for tests of
    /// what depends on that state.
    #[cfg(test)]
    pub(crate) fn fail_sync_for_test(&self) {
        self.inner.durability.fail_for_test();
    }

    /// Deletes acknowledged reports older than the retention; returns how many.
    ///
    /// "Older" counts from the acknowledgement. Unacknowledged reports are
    /// never purged. A purged report's id is remembered for one more
    /// retention, so its late retries are still answered `Duplicate`.
    pub async fn purge(&self) -> Result<u64, Error> {
        let retention =
            chrono::Duration::from_std(self.inner.retention).unwrap_or(chrono::Duration::MAX);
        let cutoff_us = Utc::now()
            .checked_sub_signed(retention)
            .map_or(i64::MIN, |t| t.timestamp_micros());
        let mut total = 0_u64;
        loop {
            let chunk = self
                .request(|reply| Request::Purge {
                    cutoff_us,
                    limit: PURGE_CHUNK,
                    reply,
                })
                .await?;
            total = total.saturating_add(chunk.purged);
            if !chunk.more {
                return Ok(total);
            }
        }
    }

    /// Stores a verified signed manifest unless its serial is not newer.
    ///
    /// `ManifestRefused`, naming the current serial, when `serial` is not
    /// above it.
    pub async fn put_manifest(&self, serial: u64, signed: Vec<u8>) -> Result<(), Error> {
        self.request(|reply| Request::PutManifest {
            serial,
            signed,
            reply,
        })
        .await
    }

    /// The current signed manifest and its serial, read from the database
    /// (see [`Staging::published_manifest`] for the copy in memory).
    pub async fn current_manifest(&self) -> Result<Option<(u64, Vec<u8>)>, Error> {
        self.read(|conn| {
            let row: Option<(i64, Vec<u8>)> = conn
                .query_row(
                    "SELECT serial, signed FROM manifest WHERE id = 1",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(|e| sql_error("reading the manifest", &e))?;
            Ok(row.map(|(serial, signed)| (u64::try_from(serial).unwrap_or(0), signed)))
        })
        .await
    }

    /// Writes changed trust scores with their units' bands (a row without
    /// one keeps the band stored before), keeping at most
    /// `retention.max_units` rows (those kept shortest by
    /// [`TrustRetention`] are dropped, bands with them).
    ///
    /// [`TrustRetention`]: crate::traffic::TrustRetention
    pub async fn save_trust(
        &self,
        rows: Vec<crate::traffic::TrustRow>,
        retention: crate::traffic::TrustRetention,
    ) -> Result<(), Error> {
        self.save_trust_and_path_bands(rows, Vec::new(), retention)
            .await
    }

    /// As [`Staging::save_trust`], and in the same transaction stores the
    /// bands of path units (which have no trust score), replacing a
    /// pattern's stored band; bands learned more than a day before the
    /// newest stored are forgotten.
    pub async fn save_trust_and_path_bands(
        &self,
        rows: Vec<crate::traffic::TrustRow>,
        paths: Vec<crate::traffic::PathBand>,
        retention: crate::traffic::TrustRetention,
    ) -> Result<(), Error> {
        self.request(|reply| Request::SaveTrust {
            rows,
            paths,
            retention,
            reply,
        })
        .await
    }

    /// The stored bands of path units.
    pub async fn load_path_bands(&self) -> Result<Vec<crate::traffic::PathBand>, Error> {
        self.read(|conn| trust::load_path_bands(conn)).await
    }

    /// The stored trust scores (with their bands) kept longest by
    /// `retention`, at most `retention.max_units`.
    pub async fn load_trust(
        &self,
        retention: crate::traffic::TrustRetention,
    ) -> Result<Vec<crate::traffic::TrustRow>, Error> {
        self.read(move |conn| trust::load(conn, retention)).await
    }

    /// Runs SQLite's full integrity check on the database file.
    ///
    /// `Staging` error listing the problems when the check finds any.
    pub async fn integrity_check(&self) -> Result<(), Error> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("PRAGMA integrity_check")
                .map_err(|e| sql_error("checking the store", &e))?;
            let problems = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(|e| sql_error("checking the store", &e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| sql_error("checking the store", &e))?;
            if problems.len() == 1 && problems.first().is_some_and(|p| p == "ok") {
                Ok(())
            } else {
                Err(Error::Staging(format!(
                    "the staging database failed its integrity check: {}; \
                     restore it or move it aside",
                    problems.join("; ")
                )))
            }
        })
        .await
    }

    /// Flushes queued writes and stops the writer.
    ///
    /// Requests already queued are still served; afterwards every method
    /// fails with `StagingClosed`. Calling it again does nothing.
    pub async fn close(&self) -> Result<(), Error> {
        let mut writer = self.inner.writer.lock().await;
        self.inner.closed.store(true, Ordering::SeqCst);
        // Dropping the last sender lets the writer drain its queue and stop;
        // stage calls already past `sender()` hold a clone until they sent.
        drop(
            self.inner
                .sender
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(handle) = writer.take() {
            let joined = tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| Error::Staging(format!("waiting for the staging writer: {e}")))?;
            if joined.is_err() {
                return Err(Error::Staging(
                    "the staging writer crashed while closing; see the log".to_owned(),
                ));
            }
        }
        let checkpointer = self
            .inner
            .checkpointer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(checkpointer) = checkpointer {
            tokio::task::spawn_blocking(move || checkpointer.stop())
                .await
                .map_err(|e| Error::Staging(format!("stopping the checkpoint thread: {e}")))?;
        }
        // Reads still waiting for a connection fail as closed.
        self.inner.reader_permits.close();
        self.inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        // Last: another process may take the store once nothing here
        // touches its files.
        drop(
            self.inner
                .store_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        Ok(())
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::SeqCst) {
            Err(Error::StagingClosed)
        } else {
            Ok(())
        }
    }

    /// The error for a request the writer dropped unanswered.
    fn stopped(&self) -> Error {
        if self.inner.closed.load(Ordering::SeqCst) {
            Error::StagingClosed
        } else {
            Error::Staging("the staging writer stopped unexpectedly; see the log".to_owned())
        }
    }

    /// Sends a request to the writer and waits for its answer.
    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Request,
    ) -> Result<T, Error> {
        let sender = self
            .inner
            .sender
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(Error::StagingClosed)?;
        let (reply, answer) = oneshot::channel();
        let sent = sender.send(make(reply)).await;
        drop(sender);
        if sent.is_err() {
            return Err(self.stopped());
        }
        answer.await.map_err(|_| self.stopped())?
    }

    /// Runs `f` on a read-only connection on the blocking pool, once one
    /// of the [`MAX_READERS`] is free.
    ///
    /// The wait for a connection is an ordinary future: a caller whose
    /// deadline passes drops it and leaves the queue. A read that has
    /// started runs to its end on its blocking thread, keeping its permit,
    /// so that the bound holds for connections actually open.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.check_open()?;
        let permit = Arc::clone(&self.inner.reader_permits)
            .acquire_owned()
            .await
            .map_err(|_| Error::StagingClosed)?;
        self.check_open()?;
        self.inner.reads.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idle = inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let mut conn = if let Some(conn) = idle {
                conn
            } else {
                let conn = open_reader(&inner.path)?;
                inner.readers_opened.fetch_add(1, Ordering::Relaxed);
                conn
            };
            let result = f(&mut conn);
            // A connection that failed may be in any state: let it go.
            if result.is_ok() && !inner.closed.load(Ordering::SeqCst) {
                inner
                    .readers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Staging(format!("a staging read failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of node `node-a` with the default settings in `dir`.
    pub(super) fn open(dir: &Path) -> Staging {
        Staging::open(StagingOptions::from_config(
            dir.join("staging.sqlite3"),
            "node-a".to_owned(),
            &StagingConfig::default(),
        ))
        .expect("open")
    }

    /// Takes every reader connection's permit, as reads that run long would.
    async fn hold_every_reader(staging: &Staging) -> tokio::sync::OwnedSemaphorePermit {
        let readers = u32::try_from(MAX_READERS).expect("a small number");
        Arc::clone(&staging.inner.reader_permits)
            .acquire_many_owned(readers)
            .await
            .expect("permits")
    }

    #[tokio::test]
    async fn a_second_collector_on_the_same_store_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = open(dir.path());
        let second = Staging::open(StagingOptions::from_config(
            dir.path().join("staging.sqlite3"),
            "node-a".to_owned(),
            &StagingConfig::default(),
        ));
        let Err(e) = second else {
            panic!("two stores opened on one file");
        };
        assert!(e.to_string().contains("in use by another collector"), "{e}");
        first.close().await.expect("close");
        let again = open(dir.path());
        again.close().await.expect("close");
    }

    #[tokio::test]
    async fn a_read_waiting_for_a_connection_keeps_its_callers_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = open(dir.path());
        let held = hold_every_reader(&staging).await;
        let waited = tokio::time::timeout(Duration::from_millis(50), staging.stats()).await;
        assert!(waited.is_err(), "the read did not wait: {waited:?}");
        assert_eq!(staging.read_stats().reads, 0);
        drop(held);
        assert_eq!(staging.stats().await.expect("stats").unacked, 0);
        // A read still waiting when the store closes fails as closed.
        let held = hold_every_reader(&staging).await;
        let waiting = tokio::spawn({
            let staging = staging.clone();
            async move { staging.stats().await }
        });
        tokio::task::yield_now().await;
        staging.close().await.expect("close");
        assert!(matches!(
            waiting.await.expect("task"),
            Err(Error::StagingClosed)
        ));
        drop(held);
    }

    /// After a failed sync nothing may copy the WAL into the database or
    /// delete it, closing included: the last connection to close (the
    /// checkpoint thread's) would otherwise checkpoint frames whose state
    /// on disk is unknown and remove the WAL they could be recovered from.
    #[tokio::test]
    async fn closing_after_a_failed_sync_leaves_the_wal_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = open(dir.path());
        // The checkpoint thread has made a pass (its connection uses the
        // WAL from then on), and the next is a good while away.
        tokio::time::sleep(CHECKPOINT_INTERVAL + Duration::from_millis(50)).await;
        staging
            .put_manifest(1, b"{}".to_vec())
            .await
            .expect("a change in the WAL");
        // Closed before the checkpoint thread's next pass notices it.
        staging.fail_sync_for_test();
        let db = staging.path().to_owned();
        let wal = dir.path().join("staging.sqlite3-wal");
        let db_len = std::fs::metadata(&db).expect("database").len();
        let wal_len = std::fs::metadata(&wal).expect("WAL").len();
        assert!(wal_len > 0);
        staging.close().await.expect("close");
        assert_eq!(
            std::fs::metadata(&wal).map(|m| m.len()).ok(),
            Some(wal_len),
            "the WAL was checkpointed or removed on close"
        );
        assert_eq!(std::fs::metadata(&db).expect("database").len(), db_len);
    }

    /// What a stopped process left in the WAL is rewritten into the
    /// database and synced at the next start: frames whose sync failed may
    /// sit in the page cache only, and syncing the WAL again would not
    /// write them.
    #[tokio::test]
    async fn opening_rewrites_what_the_wal_holds_into_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = open(dir.path());
        tokio::time::sleep(CHECKPOINT_INTERVAL + Duration::from_millis(50)).await;
        staging
            .put_manifest(7, b"{\"m\":1}".to_vec())
            .await
            .expect("a change in the WAL");
        staging.fail_sync_for_test();
        let wal = dir.path().join("staging.sqlite3-wal");
        staging.close().await.expect("close");
        assert!(std::fs::metadata(&wal).expect("WAL").len() > 0);

        let staging = open(dir.path());
        assert_eq!(
            std::fs::metadata(&wal).map_or(0, |m| m.len()),
            0,
            "the WAL was not checkpointed at start"
        );
        let manifest = staging.current_manifest().await.expect("read");
        assert_eq!(
            manifest,
            Some((7, b"{\"m\":1}".to_vec())),
            "the manifest survived"
        );
        staging.close().await.expect("close");
    }

    fn report() -> Report {
        let mut report = Report::from_json(
            include_str!("../../../shared/tests/fixtures/report/minimal.json").as_bytes(),
        )
        .expect("the fixture is a valid report");
        report.report_id = lineprobe_shared::ReportId::new_v7();
        report.envelope = Some(lineprobe_shared::ReceiverEnvelope {
            received_at: Utc::now(),
            peer_ip: "203.0.113.9".parse().expect("address"),
            peer_port: None,
            path: "/v1/reports".to_owned(),
            headers: lineprobe_shared::EnvelopeHeaders::default(),
            tls: None,
            node_id: String::new(),
            seq: 0,
            trust: None,
        });
        report
    }

    /// A report committed but not yet synced has its seq in the `state`
    /// row, but no export can have returned it: an acknowledgement up to
    /// it is refused and changes nothing, or the report would be marked
    /// acknowledged (and purged after the retention) unseen.
    #[tokio::test]
    async fn an_ack_beyond_the_durable_seq_is_refused_while_the_report_is_not_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = open(dir.path());
        let first = staging.stage(report()).await.expect("staged");
        assert_eq!(first, StageOutcome::Stored { seq: 1 });

        staging.inner.durability.hold_syncs_for_test(true);
        let second = tokio::spawn({
            let staging = staging.clone();
            async move { staging.stage(report()).await }
        });
        // Committed (the readers see it) but not synced.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while staging.stats().await.expect("stats").highest_seq < 2 {
            assert!(std::time::Instant::now() < deadline, "never committed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(staging.inner.durability.durable_seq(), 1);
        let page = staging.export_after(0, 10).await.expect("export");
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);

        let ack = tokio::time::timeout(Duration::from_secs(2), staging.ack("node-a", 2)).await;
        match ack {
            Ok(Err(Error::BadAck(msg))) => assert!(msg.contains("up_to 2"), "{msg}"),
            other => panic!("an ack of a report not on disk was not refused: {other:?}"),
        }
        let stats = staging.stats().await.expect("stats");
        assert_eq!((stats.acked_up_to, stats.unacked), (0, 2));

        staging.inner.durability.hold_syncs_for_test(false);
        let second = second.await.expect("task").expect("staged once synced");
        assert_eq!(second, StageOutcome::Stored { seq: 2 });
        let ack = staging
            .ack("node-a", 2)
            .await
            .expect("acknowledged once on disk");
        assert_eq!((ack.acked_up_to, ack.newly_acked), (2, 2));
        staging.close().await.expect("close");
    }

    #[tokio::test]
    async fn readiness_reads_the_store_at_most_once_a_second_but_sees_changes_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = open(dir.path());
        for _ in 0..100 {
            staging.check_accepting().await.expect("accepting");
        }
        assert_eq!(staging.read_stats().reads, 1);
        // While the last probe is fresh no reader is needed at all.
        let held = hold_every_reader(&staging).await;
        staging.check_accepting().await.expect("accepting");
        drop(held);
        tokio::time::sleep(live::PROBE_FOR + Duration::from_millis(50)).await;
        staging.check_accepting().await.expect("accepting");
        assert_eq!(staging.read_stats().reads, 2);
        // What the store knows in memory is not held back by the cache.
        staging.fail_sync_for_test();
        assert!(matches!(
            staging.check_accepting().await,
            Err(Error::Staging(_))
        ));
        staging.close().await.expect("close");
        assert!(matches!(
            staging.check_accepting().await,
            Err(Error::StagingClosed)
        ));
    }
}
