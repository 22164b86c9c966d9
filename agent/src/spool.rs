//! The offline spool: reports that no endpoint accepted wait here, one file
//! each, and are retried with exponential backoff and jitter. The spool is
//! bounded: after [`Spool::put`] it holds at most `max_reports` entries,
//! the one just written among them, the oldest others evicted to make room.
//!
//! A spooled report keeps its `report_id` on every retry, so a retry of a
//! report that was in fact stored (the answer was lost) is a duplicate the
//! collector stores once.
//!
//! Evictions are told to a collector in a report's `spool_evicted`, each
//! once. A report takes the evictions not yet told when it is first sent
//! (they leave the spool's tally then, in one step with writing the copy of
//! the report that carries them: see [`Spool::hold_telling_evictions`]) and
//! carries that same count on every retry, so whichever of its copies the collector stored (the first, whose
//! answer was lost, or a later one answered `duplicate`) told them. A report
//! refused as invalid gives its count back to the tally; so does a report
//! that is evicted in turn, with one more for its own eviction. An entry
//! that is gone when it is to be evicted (delivered, or evicted by another
//! writer, who counted it) is not counted again.
//!
//! After a downgrade, entries written by a newer agent version (a report
//! schema or fields this version does not know) are kept: not sent, not
//! deleted for their format, logged once per process and counted in
//! `status`, so that the newer version delivers them once it is back. They
//! count against the bound like any other entry and are evicted in their
//! turn, oldest first, each eviction counted (with the count the entry
//! carried, when it can be read): an older version left running for good
//! cannot let the spool grow past its bound.

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lineprobe_shared::{Report, ReportId, SUPPORTED_REPORT_SCHEMA_VERSIONS};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::state::{
    FileLock, create_private_dir, io, remove_if_present, sweep_stale_temp, write_atomic,
};

const EVICTED_FILE: &str = "evicted";
/// A report's taking of the tally while it is under way (see [`Claim`]).
const CLAIM_FILE: &str = "evicted.claim";
const ENTRY_SUFFIX: &str = ".json";

/// One spooled report and its retry bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolEntry {
    /// The report, with the attempts made so far in `endpoint_attempts`
    /// and, in `spool_evicted`, the evictions it took to tell when it was
    /// first sent.
    pub report: Report,
    /// When it was first spooled.
    pub spooled_at: DateTime<Utc>,
    /// Failed retries since then.
    pub retries: u32,
    /// Not retried before this instant.
    pub next_attempt_at: DateTime<Utc>,
}

/// What one spool file holds, as far as this version can tell.
enum Found {
    /// Nothing (any more).
    Gone,
    /// An entry this version reads and sends.
    Entry(Box<SpoolEntry>),
    /// A JSON object this version cannot read or send: an entry of a newer
    /// version. `told`: the evictions it carries, where they can be read.
    Newer { told: u64, reason: String },
    /// Cannot be read here, or holds another report than its name says;
    /// left where it is.
    Skipped,
}

/// A report taking the evictions no report has told yet: written before
/// the tally is set to zero and removed once the report's copy carrying
/// them is written, all under the tally's locks. A process killed in
/// between leaves it behind, and the next one to take the locks settles it
/// ([`Spool::settle_claim`]): with the copy written the evictions are the
/// report's, without it the tally gets them back. So a kill at any point
/// tells them once, neither twice nor never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Claim {
    report_id: ReportId,
    /// The evictions the report takes.
    told: u64,
    /// The tally before it took them.
    before: u64,
}

impl Claim {
    fn encode(&self) -> String {
        format!("{} {} {}\n", self.report_id, self.told, self.before)
    }

    fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split_whitespace();
        let claim = Self {
            report_id: ReportId::parse(parts.next()?).ok()?,
            told: parts.next()?.parse().ok()?,
            before: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(claim)
    }
}

/// What the handles of one spool in one process share.
#[derive(Debug, Default)]
struct Shared {
    /// Entries of a newer version already logged.
    noted: Mutex<BTreeSet<ReportId>>,
    /// Held while the eviction tally is read and rewritten.
    tally: Mutex<()>,
}

/// The spool folder.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    max_reports: usize,
    shared: Arc<Shared>,
}

impl PartialEq for Spool {
    fn eq(&self, other: &Self) -> bool {
        self.dir == other.dir && self.max_reports == other.max_reports
    }
}

impl Eq for Spool {}

impl Spool {
    /// The spool in `dir`, holding at most `max_reports` (at least 1).
    pub fn new(dir: impl Into<PathBuf>, max_reports: usize) -> Self {
        Self {
            dir: dir.into(),
            max_reports: max_reports.max(1),
            shared: Arc::default(),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ensure_dir(&self) -> Result<(), Error> {
        create_private_dir(&self.dir).map_err(|source| io(&self.dir, "create", source))
    }

    fn entry_path(&self, id: &ReportId) -> PathBuf {
        self.dir.join(format!("{id}{ENTRY_SUFFIX}"))
    }

    /// Writes (or rewrites) an entry atomically and nothing else: no
    /// eviction. For a report on its way, kept here only until its
    /// delivery ends (delivered, refused, or [`Spool::put`] as undelivered),
    /// so that a process killed meanwhile finds it at the next start; the
    /// bound is applied if it is spooled for good.
    pub fn hold(&self, entry: &SpoolEntry) -> Result<(), Error> {
        self.ensure_dir()?;
        let path = self.entry_path(&entry.report.report_id);
        let bytes = serde_json::to_vec(entry).map_err(|e| Error::State {
            path: path.display().to_string(),
            reason: format!("cannot encode the spooled report: {e}"),
        })?;
        write_atomic(&path, &bytes)
    }

    /// Writes (or rewrites) an entry atomically, then evicts the oldest
    /// other entries until at most `max_reports` are left, this one among
    /// them; returns how many were evicted.
    pub fn put(&self, entry: &SpoolEntry) -> Result<u64, Error> {
        self.hold(entry)?;
        sweep_stale_temp(&self.dir);
        let own = entry.report.report_id;
        // This entry takes one place of the bound whatever its age: it was
        // once passed over while counting the list down, which left one
        // entry too many when it was the oldest (a retry of the oldest
        // report while a newer one was on its way, a report made after the
        // clock was put back).
        // Report ids are UUIDv7: sorted, they are oldest first.
        let others: Vec<ReportId> = self.ids()?.into_iter().filter(|id| *id != own).collect();
        let mut over = (others.len() + 1).saturating_sub(self.max_reports);
        if over > 0 {
            self.settle_claim_before_removal()?;
        }
        let mut evicted: u64 = 0;
        let mut returned: u64 = 0;
        for oldest in others {
            if over == 0 {
                break;
            }
            match self.evict(&oldest) {
                Ok(Some(told)) => {
                    evicted += 1;
                    returned = returned.saturating_add(told);
                    over -= 1;
                }
                // Gone meanwhile (delivered, or evicted and counted by
                // another writer): room, but no eviction of ours.
                Ok(None) => over -= 1,
                // One that cannot be deleted (a folder under an entry's
                // name, a file made undeletable) is passed over and not
                // counted against the bound: failing here failed every
                // later `put` after its report was written, and left the
                // spool unbounded.
                Err(e) => {
                    tracing::warn!(report_id = %oldest, error = %e,
                        "spool full: cannot evict an entry; passing it over");
                }
            }
        }
        if evicted > 0 {
            self.evictions_untold(evicted.saturating_add(returned))?;
        }
        Ok(evicted)
    }

    /// Takes the evictions no report has told yet for `entry`'s report,
    /// fresh and on its first send (its `spool_evicted`, carried on every
    /// retry), and writes the entry as [`Spool::hold`] does, in one step
    /// under the tally's locks, a claim file standing for the step while it
    /// is under way (settled by the next process when this one is killed).
    /// Returns how many it took.
    ///
    /// Were a retry to take more, those would be lost when the collector
    /// answers `duplicate` (it stored an earlier copy whose answer was
    /// lost); were the count left in the tally, the next report would tell
    /// it again. When the entry cannot be written, the report still takes
    /// the evictions (it is sent carrying them) and the error is returned.
    pub fn hold_telling_evictions(&self, entry: &mut SpoolEntry) -> Result<u64, Error> {
        let _tally = self.lock_tally()?;
        self.settle_claim()?;
        entry.report.spool_evicted = None;
        let before = self.evicted()?;
        if before == 0 {
            return self.hold(entry).map(|()| 0);
        }
        let claim = Claim {
            report_id: entry.report.report_id,
            told: before,
            before,
        };
        write_atomic(&self.dir.join(CLAIM_FILE), claim.encode().as_bytes())?;
        if let Err(e) = self.set_evicted(0) {
            // The tally kept them: the report takes none.
            let _ = self.clear_claim();
            return Err(e);
        }
        entry.report.spool_evicted = Some(before);
        let held = self.hold(entry);
        self.clear_claim()?;
        held.map(|()| before)
    }

    /// Settles a claim a killed process left (call under the tally's
    /// locks): the evictions stay taken when the report's copy carrying
    /// them was written, else they go back to the tally. Nothing else
    /// changes the tally before the claim is settled (every change settles
    /// first), so the tally is set from the claim's own figures.
    fn settle_claim(&self) -> Result<(), Error> {
        let path = self.dir.join(CLAIM_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(io(&path, "read", source)),
        };
        match Claim::decode(&text) {
            Some(claim) => {
                let written = !matches!(self.find(&claim.report_id)?, Found::Gone);
                let tally = if written {
                    claim.before.saturating_sub(claim.told)
                } else {
                    claim.before
                };
                tracing::info!(report_id = %claim.report_id, told = claim.told, written,
                    "settling the eviction count a report was taking when its process ended");
                self.set_evicted(tally)?;
            }
            None => {
                tracing::warn!(path = %path.display(), "removing an unreadable eviction claim");
            }
        }
        self.clear_claim()
    }

    fn clear_claim(&self) -> Result<(), Error> {
        remove_if_present(&self.dir.join(CLAIM_FILE))?;
        // Flushed, so that a claim settled (or finished) never comes back
        // after a power cut to be settled again against a newer tally.
        let _ = lineprobe_shared::sync_dir(&self.dir);
        Ok(())
    }

    /// Settles a claim a killed process left, before an entry is removed:
    /// once its entry is gone, a claim could no longer tell whether the
    /// report took its evictions. Cheap when there is none (one look).
    fn settle_claim_before_removal(&self) -> Result<(), Error> {
        if !self.dir.join(CLAIM_FILE).exists() {
            return Ok(());
        }
        let _tally = self.lock_tally()?;
        self.settle_claim()
    }

    /// Deletes one entry to make room: the evictions it had taken to tell,
    /// or `None` when it was gone already (not counted again).
    fn evict(&self, id: &ReportId) -> Result<Option<u64>, Error> {
        let told = match self.find(id)? {
            Found::Gone => return Ok(None),
            Found::Entry(entry) => entry.report.spool_evicted.unwrap_or(0),
            Found::Newer { told, .. } => told,
            Found::Skipped => 0,
        };
        let path = self.entry_path(id);
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::warn!(report_id = %id, "spool full: evicted the oldest report");
                Ok(Some(told))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io(&path, "delete", source)),
        }
    }

    /// Ids of the spooled reports, oldest first, those kept for a newer
    /// version among them.
    pub fn ids(&self) -> Result<Vec<ReportId>, Error> {
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(io(&self.dir, "list", source)),
        };
        let mut ids: Vec<ReportId> = listing
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name();
                let stem = name.to_str()?.strip_suffix(ENTRY_SUFFIX)?.to_owned();
                ReportId::parse(&stem).ok()
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// How many reports wait, those kept for a newer version among them.
    pub fn depth(&self) -> Result<usize, Error> {
        Ok(self.ids()?.len())
    }

    /// What the file of `id` holds. A corrupt entry (not JSON: atomic
    /// writes rule it out, short of disk damage) is removed: it could never
    /// be sent. One that cannot be read (a file a `sudo` run left owned by
    /// root, a folder under an entry's name) or that holds another report
    /// than its name says (copied in by hand) is skipped with a warning and
    /// left where it is: an error here stopped every drain and the
    /// next-retry time, so no other spooled report was sent again; and a
    /// misnamed one, once delivered, would delete the other report's file
    /// and be sent again at every drain. A JSON object that is not an entry
    /// of this version, or whose report has a schema this version does not
    /// read, is a newer version's entry: kept, never sent by this one.
    fn find(&self, id: &ReportId) -> Result<Found, Error> {
        let path = self.entry_path(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Found::Gone),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "skipping a spool entry that cannot be read");
                return Ok(Found::Skipped);
            }
        };
        match serde_json::from_slice::<SpoolEntry>(&bytes) {
            Ok(entry) if entry.report.report_id != *id => {
                tracing::warn!(path = %path.display(), report_id = %entry.report.report_id,
                    "skipping a spool file that holds another report than its name says");
                Ok(Found::Skipped)
            }
            Ok(entry) if !SUPPORTED_REPORT_SCHEMA_VERSIONS.contains(&entry.report.schema) => {
                Ok(Found::Newer {
                    told: entry.report.spool_evicted.unwrap_or(0),
                    reason: format!("report schema {}", entry.report.schema),
                })
            }
            Ok(entry) => Ok(Found::Entry(Box::new(entry))),
            Err(e) => {
                if let Ok(serde_json::Value::Object(fields)) =
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                {
                    return Ok(Found::Newer {
                        told: fields
                            .get("report")
                            .and_then(|r| r.get("spool_evicted"))
                            .and_then(serde_json::Value::as_u64)
                            .unwrap_or(0),
                        reason: e.to_string(),
                    });
                }
                tracing::warn!(path = %path.display(), error = %e,
                    "removing a corrupt spool entry");
                remove_if_present(&path)?;
                Ok(Found::Gone)
            }
        }
    }

    /// Reads one entry; `None` when it is gone, cannot be read here, or
    /// was written by a newer version (kept for it, and logged the first
    /// time this process comes across it).
    pub fn get(&self, id: &ReportId) -> Result<Option<SpoolEntry>, Error> {
        Ok(match self.find(id)? {
            Found::Entry(entry) => Some(*entry),
            Found::Newer { reason, .. } => {
                self.note_newer(id, &reason);
                None
            }
            Found::Gone | Found::Skipped => None,
        })
    }

    fn note_newer(&self, id: &ReportId, reason: &str) {
        let first = self
            .shared
            .noted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*id);
        if first {
            tracing::warn!(report_id = %id, %reason,
                "keeping a spooled report this version cannot read (written by a newer \
                 agent version): it is not sent by this one and waits for that version; \
                 it counts against spool.max_reports");
        }
    }

    /// The entries kept for a newer version, oldest first.
    pub fn newer(&self) -> Result<Vec<ReportId>, Error> {
        let mut out = Vec::new();
        for id in self.ids()? {
            if let Found::Newer { reason, .. } = self.find(&id)? {
                self.note_newer(&id, &reason);
                out.push(id);
            }
        }
        Ok(out)
    }

    /// All entries this version can send, oldest first.
    pub fn entries(&self) -> Result<Vec<SpoolEntry>, Error> {
        let mut out = Vec::new();
        for id in self.ids()? {
            if let Some(entry) = self.get(&id)? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Removes a delivered (or refused) report.
    pub fn remove(&self, id: &ReportId) -> Result<(), Error> {
        self.settle_claim_before_removal()?;
        remove_if_present(&self.entry_path(id))
    }

    /// The earliest retry time among the entries this version sends.
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>, Error> {
        Ok(self.entries()?.iter().map(|e| e.next_attempt_at).min())
    }

    /// Evictions no report has taken to tell yet: the next report sent
    /// takes them.
    pub fn evicted(&self) -> Result<u64, Error> {
        let path = self.dir.join(EVICTED_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(source) => Err(io(&path, "read", source)),
        }
    }

    /// Evictions not yet told to a collector: those no report has taken,
    /// and those the spooled reports carry (their own versions' too).
    pub fn untold_evictions(&self) -> Result<u64, Error> {
        let mut untold = self.evicted()?;
        for id in self.ids()? {
            let carried = match self.find(&id)? {
                Found::Entry(entry) => entry.report.spool_evicted.unwrap_or(0),
                Found::Newer { told, .. } => told,
                Found::Gone | Found::Skipped => 0,
            };
            untold = untold.saturating_add(carried);
        }
        Ok(untold)
    }

    /// The tally's locks, held together while it is read and rewritten:
    /// this process's (its threads share one spool) and the file lock
    /// across processes (the daemon and a scheduled `probe` on one state
    /// folder both read and rewrite the count), in that order.
    fn lock_tally(&self) -> Result<(MutexGuard<'_, ()>, FileLock), Error> {
        let threads = self
            .shared
            .tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.ensure_dir()?;
        let processes = FileLock::acquire(&self.dir.join(format!("{EVICTED_FILE}.lock")))?;
        Ok((threads, processes))
    }

    fn set_evicted(&self, count: u64) -> Result<(), Error> {
        self.ensure_dir()?;
        let path = self.dir.join(EVICTED_FILE);
        if count == 0 {
            remove_if_present(&path)
        } else {
            write_atomic(&path, count.to_string().as_bytes())
        }
    }

    /// Adds `count` evictions to those no report has taken: new ones, or
    /// those a report carried that no collector stored (refused, evicted).
    pub fn evictions_untold(&self, count: u64) -> Result<(), Error> {
        self.adjust_tally(count, |tally| tally.saturating_add(count))
    }

    /// Rewrites the tally with `change`, unless `by` is zero: under this
    /// process's lock and the other processes' (the file lock).
    fn adjust_tally(&self, by: u64, change: impl FnOnce(u64) -> u64) -> Result<(), Error> {
        if by == 0 {
            return Ok(());
        }
        let _tally = self.lock_tally()?;
        self.settle_claim()?;
        self.set_evicted(change(self.evicted()?))
    }

    /// Deletes every spooled report (a newer version's too) and the
    /// eviction count.
    pub fn purge(&self) -> Result<usize, Error> {
        let count = self.depth()?;
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(count),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(source) => Err(io(&self.dir, "delete", source)),
        }
    }
}

/// The wait before retry number `retries + 1`: `base · 2^retries`, capped
/// at `max`, then drawn at random from its upper half ("equal jitter") so
/// that probes that went offline together do not come back together. A
/// server's `Retry-After` is a floor, itself capped at `max`: an endpoint
/// (or whatever answers in its name) must not hold a report back for longer
/// than the agent's own longest wait.
pub fn backoff(
    retries: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(retries.min(31)).unwrap_or(u32::MAX));
    let capped = exp.min(max);
    let half = capped / 2;
    let jitter = Duration::from_millis(
        rng.gen_range(0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX)),
    );
    let wait = half + jitter;
    retry_after.map_or(wait, |floor| wait.max(floor.min(max)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_left_by_a_killed_write_are_swept_once_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path(), 10);
        std::fs::create_dir_all(dir.path()).expect("mkdir");
        let stale = dir.path().join(".0190.json.abc.tmp");
        let fresh = dir.path().join(".0190.json.def.tmp");
        let other = dir.path().join("notes.tmp");
        for p in [&stale, &fresh, &other] {
            std::fs::write(p, b"half").expect("write");
        }
        let old = std::time::SystemTime::now() - Duration::from_hours(2);
        for p in [&stale, &other] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .and_then(|f| f.set_modified(old))
                .expect("age it");
        }
        spool.put(&example_entry()).expect("put");
        assert!(!stale.exists(), "a stale temporary file was kept");
        assert!(fresh.exists(), "a write in progress was touched");
        assert!(other.exists(), "not ours");
        assert_eq!(spool.depth().expect("depth"), 1);
    }

    fn example_entry() -> SpoolEntry {
        let report = lineprobe_shared::Report::from_json(
            &std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../config/report.example.json"),
            )
            .expect("example"),
        )
        .expect("report");
        let now = Utc::now();
        SpoolEntry {
            report: Report {
                report_id: ReportId::new_v7(),
                spool_evicted: None,
                ..report
            },
            spooled_at: now,
            retries: 0,
            next_attempt_at: now,
        }
    }

    /// The files a process killed while a report took 5 evictions leaves:
    /// the claim, the tally (5 before it was set to zero, 0 after) and,
    /// when it got that far, the report's copy carrying them.
    fn killed_while_taking(spool: &Spool, tally: u64, copy_written: bool) -> SpoolEntry {
        let mut taking = example_entry();
        let claim = Claim {
            report_id: taking.report.report_id,
            told: 5,
            before: 5,
        };
        spool.ensure_dir().expect("dir");
        write_atomic(&spool.dir.join(CLAIM_FILE), claim.encode().as_bytes()).expect("claim");
        spool.set_evicted(tally).expect("tally");
        if copy_written {
            taking.report.spool_evicted = Some(5);
            spool.hold(&taking).expect("copy");
        }
        taking
    }

    #[test]
    fn evictions_a_killed_report_was_taking_are_told_once() {
        for (tally, copy_written) in [(5, false), (0, false), (0, true)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let spool = Spool::new(dir.path(), 10);
            killed_while_taking(&spool, tally, copy_written);
            // The next report takes them unless the killed one's copy,
            // which carries them, was written.
            let mut next = example_entry();
            let taken = spool.hold_telling_evictions(&mut next).expect("held");
            let case = format!("tally {tally}, copy written: {copy_written}");
            assert_eq!(taken, if copy_written { 0 } else { 5 }, "{case}");
            assert_eq!(spool.untold_evictions().expect("untold"), 5, "{case}");
            assert!(!dir.path().join(CLAIM_FILE).exists(), "{case}");
        }
    }

    #[test]
    fn a_killed_reports_copy_delivered_keeps_its_evictions_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path(), 10);
        let taking = killed_while_taking(&spool, 0, true);
        // Another process delivers the copy before anything else looks at
        // the tally: once the copy is gone, the claim is settled already.
        spool.remove(&taking.report.report_id).expect("delivered");
        spool.evictions_untold(1).expect("one more");
        assert_eq!(spool.evicted().expect("tally"), 1);
        // And evicted instead: its count goes back to the tally, once.
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path(), 1);
        killed_while_taking(&spool, 0, true);
        spool.put(&example_entry()).expect("put");
        assert_eq!(spool.evicted().expect("tally"), 6);
    }

    #[test]
    fn claims_are_read_back_and_damaged_ones_refused() {
        let claim = Claim {
            report_id: ReportId::new_v7(),
            told: 3,
            before: 7,
        };
        assert_eq!(Claim::decode(&claim.encode()), Some(claim));
        for bad in ["", "x 1 2", "0190 1", &format!("{} 1 2 3", claim.report_id)] {
            assert_eq!(Claim::decode(bad), None, "{bad:?}");
        }
        // A damaged claim is removed; the tally stays as it is.
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::new(dir.path(), 10);
        spool.set_evicted(4).expect("tally");
        std::fs::write(dir.path().join(CLAIM_FILE), b"half").expect("claim");
        spool.evictions_untold(1).expect("one more");
        assert_eq!(spool.evicted().expect("tally"), 5);
        assert!(!dir.path().join(CLAIM_FILE).exists());
    }

    #[test]
    fn backoff_grows_is_capped_and_respects_retry_after() {
        let mut rng = rand::thread_rng();
        let base = Duration::from_mins(1);
        let max = Duration::from_hours(1);
        for retries in 0..40 {
            let wait = backoff(retries, base, max, None, &mut rng);
            let full = base.saturating_mul(1 << retries.min(20)).min(max);
            assert!(wait >= full / 2 && wait <= full, "{retries}: {wait:?}");
        }
        let floor = Duration::from_mins(30);
        assert!(backoff(0, base, max, Some(floor), &mut rng) >= floor);
        // A Retry-After beyond the agent's longest wait is cut to it.
        for huge in [Duration::from_hours(2), Duration::from_secs(u64::MAX)] {
            assert_eq!(backoff(0, base, max, Some(huge), &mut rng), max);
        }
    }
}
