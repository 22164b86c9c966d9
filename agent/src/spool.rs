//! The offline spool: reports that no endpoint accepted wait here, one file
//! each, and are retried with exponential backoff and jitter. The spool is
//! bounded; the oldest report is evicted to make room, and how many were
//! evicted travels in the next report that gets stored.
//!
//! A spooled report keeps its `report_id` on every retry, so a retry of a
//! report that was in fact stored (the answer was lost) is a duplicate the
//! collector stores once.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lineprobe_shared::{Report, ReportId};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::state::{
    create_private_dir, io, read_json, remove_if_present, sweep_stale_temp, write_atomic,
};

const EVICTED_FILE: &str = "evicted";
const ENTRY_SUFFIX: &str = ".json";

/// One spooled report and its retry bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolEntry {
    /// The report, with the attempts made so far in `endpoint_attempts`.
    pub report: Report,
    /// When it was first spooled.
    pub spooled_at: DateTime<Utc>,
    /// Failed retries since then.
    pub retries: u32,
    /// Not retried before this instant.
    pub next_attempt_at: DateTime<Utc>,
}

/// The spool folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spool {
    dir: PathBuf,
    max_reports: usize,
}

impl Spool {
    /// The spool in `dir`, holding at most `max_reports` (at least 1).
    pub fn new(dir: impl Into<PathBuf>, max_reports: usize) -> Self {
        Self {
            dir: dir.into(),
            max_reports: max_reports.max(1),
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

    /// Writes (or rewrites) an entry atomically, evicting the oldest other
    /// entries beyond the bound; returns how many were evicted.
    pub fn put(&self, entry: &SpoolEntry) -> Result<u64, Error> {
        self.hold(entry)?;
        sweep_stale_temp(&self.dir);
        let mut ids = self.ids()?;
        let mut evicted = 0;
        // Report ids are UUIDv7: sorted, they are oldest first.
        while ids.len() > self.max_reports {
            let oldest = ids.remove(0);
            if oldest == entry.report.report_id {
                continue;
            }
            // One that cannot be deleted (a folder under an entry's name,
            // a file made undeletable) is passed over and not counted
            // against the bound: failing here failed every later `put`
            // after its report was written, and left the spool unbounded.
            if let Err(e) = remove_if_present(&self.entry_path(&oldest)) {
                tracing::warn!(report_id = %oldest, error = %e,
                    "spool full: cannot evict an entry; passing it over");
                continue;
            }
            evicted += 1;
            tracing::warn!(report_id = %oldest, "spool full: evicted the oldest report");
        }
        if evicted > 0 {
            self.set_evicted(self.evicted()?.saturating_add(evicted))?;
        }
        Ok(evicted)
    }

    /// Ids of the spooled reports, oldest first.
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

    /// How many reports wait.
    pub fn depth(&self) -> Result<usize, Error> {
        Ok(self.ids()?.len())
    }

    /// Reads one entry; `None` when it is gone. A corrupt entry (which
    /// atomic writes rule out, short of disk damage) is removed: it could
    /// never be sent. One that cannot be read (a file a `sudo` run left
    /// owned by root, a folder under an entry's name) or that holds another
    /// report than its name says (copied in by hand) is skipped with a
    /// warning and left where it is: an error here stopped every drain and
    /// the next-retry time, so no other spooled report was sent again; and
    /// a misnamed one, once delivered, would delete the other report's file
    /// and be sent again at every drain.
    pub fn get(&self, id: &ReportId) -> Result<Option<SpoolEntry>, Error> {
        let path = self.entry_path(id);
        match read_json::<SpoolEntry>(&path) {
            Ok(Some(entry)) if entry.report.report_id != *id => {
                tracing::warn!(path = %path.display(), report_id = %entry.report.report_id,
                    "skipping a spool file that holds another report than its name says");
                Ok(None)
            }
            Ok(entry) => Ok(entry),
            Err(Error::State { reason, .. }) => {
                tracing::warn!(path = %path.display(), %reason, "removing a corrupt spool entry");
                remove_if_present(&path)?;
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping a spool entry that cannot be read");
                Ok(None)
            }
        }
    }

    /// All entries, oldest first.
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
        remove_if_present(&self.entry_path(id))
    }

    /// The earliest retry time among the entries.
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>, Error> {
        Ok(self.entries()?.iter().map(|e| e.next_attempt_at).min())
    }

    /// Reports evicted and not yet told to a collector.
    pub fn evicted(&self) -> Result<u64, Error> {
        let path = self.dir.join(EVICTED_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(source) => Err(io(&path, "read", source)),
        }
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

    /// Records that a stored report told the collector about `told`
    /// evictions; evictions since then stay counted.
    pub fn evictions_reported(&self, told: u64) -> Result<(), Error> {
        if told == 0 {
            return Ok(());
        }
        self.set_evicted(self.evicted()?.saturating_sub(told))
    }

    /// Deletes every spooled report and the eviction count.
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
        let report = lineprobe_shared::Report::from_json(
            &std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../config/report.example.json"),
            )
            .expect("example"),
        )
        .expect("report");
        let now = Utc::now();
        spool
            .put(&SpoolEntry {
                report,
                spooled_at: now,
                retries: 0,
                next_attempt_at: now,
            })
            .expect("put");
        assert!(!stale.exists(), "a stale temporary file was kept");
        assert!(fresh.exists(), "a write in progress was touched");
        assert!(other.exists(), "not ours");
        assert_eq!(spool.depth().expect("depth"), 1);
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
