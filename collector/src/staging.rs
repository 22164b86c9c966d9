//! The staging store. SKELETON: the staging work replaces this file; the
//! signatures are the contract the rest of the collector codes against.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lineprobe_shared::Report;

use crate::Error;

/// Called after every commit with its duration and the number of reports in it.
pub type CommitObserver = Arc<dyn Fn(Duration, usize) + Send + Sync>;

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
    /// How long the writer waits for more reports to join a commit.
    pub group_commit_wait: Duration,
    /// Told about every commit (for the commit-latency metric).
    pub on_commit: Option<CommitObserver>,
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

/// The durable store (cheap to clone).
#[derive(Debug, Clone)]
pub struct Staging {
    _private: (),
}

impl Staging {
    /// Opens (creating) the store and starts its writer.
    pub fn open(options: StagingOptions) -> Result<Self, Error> {
        let _ = options;
        Err(Error::Staging("not built yet".to_owned()))
    }

    /// Durably stores `report` (its envelope must be set; `seq` is assigned here).
    pub async fn stage(&self, report: Report) -> Result<StageOutcome, Error> {
        let _ = report;
        Err(Error::Staging("not built yet".to_owned()))
    }

    /// Committed reports with `seq > after`, in `seq` order, at most `limit`.
    pub async fn export_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ExportedReport>, Error> {
        let _ = (after, limit);
        Err(Error::Staging("not built yet".to_owned()))
    }

    /// Acknowledges everything up to `up_to` for `node_id`.
    pub async fn ack(&self, node_id: &str, up_to: u64) -> Result<AckOutcome, Error> {
        let _ = (node_id, up_to);
        Err(Error::Staging("not built yet".to_owned()))
    }

    /// Current figures.
    pub async fn stats(&self) -> Result<StagingStats, Error> {
        Err(Error::Staging("not built yet".to_owned()))
    }

    /// Deletes acknowledged reports older than the retention; returns how many.
    pub async fn purge(&self) -> Result<u64, Error> {
        Err(Error::Staging("not built yet".to_owned()))
    }

    /// Stores a verified signed manifest unless its serial is not newer.
    pub async fn put_manifest(&self, serial: u64, signed: Vec<u8>) -> Result<(), Error> {
        let _ = (serial, signed);
        Err(Error::Staging("not built yet".to_owned()))
    }

    /// The current signed manifest and its serial.
    pub async fn current_manifest(&self) -> Result<Option<(u64, Vec<u8>)>, Error> {
        Err(Error::Staging("not built yet".to_owned()))
    }

    /// Flushes queued writes and stops the writer.
    pub async fn close(&self) -> Result<(), Error> {
        Ok(())
    }
}
