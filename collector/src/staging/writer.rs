//! The single writer: every change to the store goes through one thread that
//! owns the read-write connection.
//!
//! Stage requests that queue up while a commit is running are committed
//! together in the next transaction (group commit). A caller hears back
//! only after its transaction committed and the sync thread (`walsync`)
//! synced it, so a success always means the report is on disk; when a
//! transaction fails, every request in it fails and nothing of it is kept.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use lineprobe_shared::{ReceiverEnvelope, Report};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::park::Parker;
use super::schema::{open_writer, sql_error};
use super::stored::{SEQ_PLACEHOLDER_TAIL, pack};
use super::walsync::{Committed, Durability, WalSyncer};
use super::{AckOutcome, StageOutcome};
use crate::Error;

/// The reply half of a request.
pub(super) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// One change for the writer.
pub(super) enum Request {
    /// Store a report.
    Stage {
        /// The report, encoded by the caller.
        report: EncodedReport,
        /// Where the outcome goes.
        reply: Reply<StageOutcome>,
    },
    /// Acknowledge up to a sequence number.
    Ack {
        /// The node the acknowledgement names.
        node_id: String,
        /// The new cursor.
        up_to: u64,
        /// Where the outcome goes.
        reply: Reply<AckOutcome>,
    },
    /// Purge one chunk of old acknowledged reports and old tombstones.
    Purge {
        /// Acknowledged (or purged) at or before this instant, in µs since
        /// the epoch.
        cutoff_us: i64,
        /// Most rows touched per kind.
        limit: usize,
        /// How many reports were purged and whether more work remains.
        reply: Reply<PurgeChunk>,
    },
    /// Store changed trust scores and path bands (`staging::trust`).
    SaveTrust {
        /// The changed rows.
        rows: Vec<crate::traffic::TrustRow>,
        /// The changed bands of path units.
        paths: Vec<crate::traffic::PathBand>,
        /// Which rows are kept.
        retention: crate::traffic::TrustRetention,
        /// Where the outcome goes.
        reply: Reply<()>,
    },
    /// Record a probe's key enrolment.
    Enrol {
        /// The enrolment.
        enrolment: super::enrolment::Enrolment,
        /// Where the outcome goes.
        reply: Reply<super::EnrolOutcome>,
    },
    /// Note that an installation was heard from (`Staging::note_active`);
    /// nobody waits for it.
    Touch {
        /// The installation.
        install_id: String,
        /// When, in µs since the epoch.
        at_us: i64,
    },
    /// Replace the manifest.
    PutManifest {
        /// Its serial.
        serial: u64,
        /// The signed bytes.
        signed: Vec<u8>,
        /// Where the outcome goes.
        reply: Reply<()>,
    },
}

/// What one purge chunk did.
#[derive(Debug, Clone, Copy)]
pub(super) struct PurgeChunk {
    /// Reports whose content was deleted.
    pub(super) purged: u64,
    /// Whether a chunk limit was reached, so another chunk may find more.
    pub(super) more: bool,
}

/// The writer's settings and its connection.
pub(super) struct Writer {
    pub(super) path: PathBuf,
    pub(super) conn: Option<Connection>,
    pub(super) node_id: String,
    pub(super) max_reports: u64,
    pub(super) full_retry_after_secs: u64,
    pub(super) group_commit_max: usize,
    pub(super) group_commit_wait: Duration,
    pub(super) group_commit_gap: Duration,
    /// Installations that may have enrolled; see `EnrolledIndex`.
    pub(super) enrolled: Arc<super::enrolment::EnrolledIndex>,
    /// Makes commits durable and sends their replies (`walsync`); taken
    /// when the writer stops.
    pub(super) syncer: Option<WalSyncer>,
    /// Whether syncs still work.
    pub(super) durability: Arc<Durability>,
    /// The `state` counters, kept up to date after every commit.
    pub(super) backlog: Arc<super::live::Backlog>,
    /// The manifest served from memory, replaced once a new one is durable.
    pub(super) manifest: Arc<super::live::ManifestCell>,
}

/// A batch this large is committed while the previous one is still being
/// synced (see `Writer::gather`).
const OVERLAP_BATCH: usize = 32;

/// How often a batch waiting for the sync thread looks for new reports.
const QUEUE_LOOK: Duration = Duration::from_micros(200);

/// One queued stage request.
type Pending = (EncodedReport, Reply<StageOutcome>);

/// `at + by`, but at most a year on: the options are public, and a
/// `Duration::MAX` added to an `Instant` panicked the writer.
fn later(at: Instant, by: Duration) -> Instant {
    const FAR: Duration = Duration::from_hours(365 * 24);
    at.checked_add(by.min(FAR)).unwrap_or(at)
}

impl Writer {
    /// Serves requests until every sender is gone, then returns.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let parker = Parker::for_this_thread();
        while let Some(Some(first)) = parker.block_until(rx.recv(), None) {
            let mut batch = vec![first];
            if matches!(batch.first(), Some(Request::Stage { .. })) {
                self.gather(&parker, &mut rx, &mut batch);
            }
            self.serve(batch);
        }
        // Every sender is gone: answer what waits for a sync, then close
        // the connection, which checkpoints the WAL into the main file.
        if let Some(syncer) = self.syncer.take() {
            syncer.finish();
        }
        if let Some(conn) = &self.conn
            && self.durability.failure().is_some()
        {
            // Not after a failed sync: see `checkpoint::stop_checkpointing`.
            super::checkpoint::stop_checkpointing(conn, &self.path);
        }
        if let Some(conn) = self.conn.take()
            && let Err((_, e)) = conn.close()
        {
            tracing::warn!("closing the staging store: {e}");
        }
    }

    /// Adds requests to a batch that starts with a stage request until it
    /// should be committed:
    ///
    /// - at once when it is full (`group_commit_max`);
    /// - while the sync thread is busy, a batch waits for more reports or
    ///   for the sync to end, whichever comes first: committed now it would
    ///   wait for the next sync all the same, and a train of tiny
    ///   transactions costs more per report (each rewrites the index and
    ///   state pages). A batch of [`OVERLAP_BATCH`] is committed at once,
    ///   so that under load the next commit is ready when the sync ends;
    /// - once the sync thread is idle, the batch lingers while reports keep
    ///   arriving: until a look after `group_commit_gap` finds none new (0:
    ///   no such early end), and never past `group_commit_wait` after its
    ///   first report. Every commit and every sync has a fixed cost (on a VM
    ///   an `fdatasync` alone is some 100 µs of CPU), so under load a batch
    ///   a millisecond longer leaves more CPU to the requests themselves;
    ///   when reports stop coming the gap ends the wait, so a lone report
    ///   waits one gap more, not the whole `group_commit_wait`.
    fn gather(&self, parker: &Parker, rx: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>) {
        let first_at = Instant::now();
        let cap = later(first_at, self.group_commit_wait);
        let mut last_at = first_at;
        loop {
            let before = batch.len();
            while batch.len() < self.group_commit_max {
                match rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            if batch.len() > before {
                last_at = now;
            }
            if batch.len() >= self.group_commit_max {
                return;
            }
            // The waits below do not listen on the queue: woken by every
            // report, this thread would cost each one a context switch;
            // looking at the queue now and then costs a few per commit.
            if self.durability.syncing() {
                if batch.len() >= OVERLAP_BATCH.min(self.group_commit_max) {
                    return;
                }
                parker.block_until(self.durability.until_idle(), Some(now + QUEUE_LOOK));
                continue;
            }
            let until = if self.group_commit_gap.is_zero() {
                cap
            } else {
                cap.min(later(last_at, self.group_commit_gap))
            };
            if now >= until {
                return;
            }
            std::thread::sleep(until - now);
        }
    }

    /// Serves a batch in order; runs of stage requests share one transaction.
    fn serve(&mut self, batch: Vec<Request>) {
        let mut stages: Vec<Pending> = Vec::new();
        for request in batch {
            match request {
                Request::Stage { report, reply } => stages.push((report, reply)),
                other => {
                    self.stage_batch(std::mem::take(&mut stages));
                    self.serve_one(other);
                }
            }
        }
        self.stage_batch(stages);
    }

    fn serve_one(&mut self, request: Request) {
        match request {
            Request::Stage { report, reply } => self.stage_batch(vec![(report, reply)]),
            Request::Ack {
                node_id,
                up_to,
                reply,
            } => {
                // Read before the transaction: it only grows, so a seq
                // durable now is durable when the acknowledgement commits.
                let durable = self.durability.durable_seq();
                let result = self.transact("acknowledging", |tx, node| {
                    ack(tx, node, &node_id, up_to, durable)
                });
                if let Ok(outcome) = &result {
                    self.backlog.acked_up_to(outcome.acked_up_to);
                }
                self.reply_when_durable(reply, result);
            }
            Request::Purge {
                cutoff_us,
                limit,
                reply,
            } => {
                let result = self.transact("purging", |tx, _| purge(tx, cutoff_us, limit));
                self.reply_when_durable(reply, result);
            }
            Request::PutManifest {
                serial,
                signed,
                reply,
            } => {
                let result = self.transact("storing the manifest", |tx, _| {
                    put_manifest(tx, serial, &signed)
                });
                if let Err(e) = result {
                    let _ = reply.send(Err(e));
                    return;
                }
                // Replaced here rather than by the caller, whose future may
                // be dropped (the publisher hung up) after the commit: the
                // stored manifest must be the one served all the same.
                let manifest = Arc::clone(&self.manifest);
                self.hand_over(Committed {
                    on_synced: Box::new(move |synced| {
                        if synced.is_ok() {
                            manifest.publish(super::PublishedManifest {
                                serial,
                                signed: signed.into(),
                            });
                        }
                        let _ = reply.send(synced.map_err(|why| Error::Staging(why.to_owned())));
                    }),
                    highest_seq: None,
                    batch: None,
                });
            }
            Request::SaveTrust {
                rows,
                paths,
                retention,
                reply,
            } => {
                let result = self.transact("storing trust scores", |tx, _| {
                    super::trust::save(tx, &rows, retention)
                        .and_then(|()| super::trust::save_path_bands(tx, &paths))
                        .map_err(TxError::Sql)
                });
                self.reply_when_durable(reply, result);
            }
            Request::Enrol { enrolment, reply } => {
                let index = Arc::clone(&self.enrolled);
                let installs = index.installs();
                let result = self.transact("recording an enrolment", |tx, _| {
                    let outcome = super::enrolment::enrol(tx, &enrolment, installs)?;
                    // Before the commit, so that no unsigned report of an
                    // installation that has enrolled is let through
                    // unchecked.
                    if matches!(outcome, super::EnrolOutcome::New { .. }) {
                        index.insert(&enrolment.install_id, enrolment.now_us);
                    } else {
                        index.mark_active(&enrolment.install_id, enrolment.now_us);
                    }
                    Ok(outcome)
                });
                // After it: until then a forgotten installation is looked
                // up in the store, which still answers for it.
                if let Ok(super::EnrolOutcome::New { forgotten }) = &result {
                    for gone in forgotten {
                        index.remove(&gone.install_id);
                    }
                    index.counted(1, forgotten.len() as u64);
                }
                self.reply_when_durable(reply, result);
            }
            Request::Touch { install_id, at_us } => {
                // Committed now and made durable by the next sync: losing
                // it to a crash costs only a day's precision in the order
                // installations are forgotten in.
                if let Err(e) = self.transact("noting an installation's activity", |tx, _| {
                    super::enrolment::touch(tx, &install_id, at_us)
                }) {
                    tracing::debug!(error = %e, "an installation's activity was not noted");
                }
            }
        }
    }

    /// The connection, reopened if an earlier failure dropped it.
    fn connection(&mut self) -> Result<&mut Connection, Error> {
        if self.conn.is_none() {
            self.conn = Some(open_writer(&self.path)?);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| Error::Staging("the staging connection is gone".to_owned()))
    }

    /// Runs `f` in an immediate transaction and commits when it succeeds.
    /// Errors of the request itself (`Op`) change nothing; store errors
    /// drop the connection so that the next request starts clean.
    fn transact<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &str) -> Result<T, TxError>,
    ) -> Result<T, Error> {
        if let Some(e) = self.durability.failure() {
            return Err(e);
        }
        let node_id = self.node_id.clone();
        let result = (|| {
            let conn = self.connection().map_err(TxError::Op)?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| TxError::Sql(sql_error(what, &e)))?;
            let value = f(&tx, &node_id)?;
            tx.commit().map_err(|e| TxError::Sql(sql_error(what, &e)))?;
            Ok(value)
        })();
        result.map_err(|e| match e {
            TxError::Op(e) => e,
            TxError::Sql(e) => {
                self.conn = None;
                e
            }
        })
    }

    /// Commits a batch of stage requests in one transaction; the replies
    /// go out once the sync thread has made it durable.
    fn stage_batch(&mut self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        let count = batch.len();
        let (reports, replies): (Vec<EncodedReport>, Vec<_>) = batch.into_iter().unzip();
        let max_reports = self.max_reports;
        let retry_after_secs = self.full_retry_after_secs;
        let result = self.transact("committing reports", |tx, _node_id| {
            stage_all(tx, reports, max_reports, retry_after_secs)
        });
        match result {
            Ok(outcomes) => {
                let highest_seq = outcomes
                    .iter()
                    .filter_map(|o| match o {
                        Ok(StageOutcome::Stored { seq }) => Some(*seq),
                        _ => None,
                    })
                    .max();
                if let Some(seq) = highest_seq {
                    self.backlog.stored_up_to(seq);
                }
                let on_synced = Box::new(move |synced: Result<(), &str>| {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        // A duplicate waits for the sync too: its original
                        // may be in a transaction that is not yet on disk.
                        let outcome = match (synced, outcome) {
                            (Ok(()), outcome) | (Err(_), outcome @ Err(_)) => outcome,
                            (Err(why), Ok(_)) => Err(Error::Staging(why.to_owned())),
                        };
                        let _ = reply.send(outcome);
                    }
                });
                self.hand_over(Committed {
                    on_synced,
                    highest_seq,
                    batch: Some((started, count)),
                });
            }
            Err(e) => {
                tracing::error!("staging commit of {count} report(s) failed: {e}");
                let message = match e {
                    Error::Staging(message) => message,
                    other => other.to_string(),
                };
                for reply in replies {
                    let _ = reply.send(Err(Error::Staging(message.clone())));
                }
            }
        }
    }

    /// Answers a request whose transaction committed once it is durable;
    /// one that failed (and so changed nothing) at once.
    fn reply_when_durable<T: Send + 'static>(&self, reply: Reply<T>, result: Result<T, Error>) {
        match result {
            Ok(value) => self.hand_over(Committed {
                on_synced: Box::new(move |synced| {
                    let _ = reply.send(
                        synced
                            .map(|()| value)
                            .map_err(|why| Error::Staging(why.to_owned())),
                    );
                }),
                highest_seq: None,
                batch: None,
            }),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn hand_over(&self, committed: Committed) {
        match &self.syncer {
            Some(syncer) => syncer.hand_over(committed),
            None => (committed.on_synced)(Err("the staging store is closing")),
        }
    }
}

/// Why a transaction did not commit.
pub(super) enum TxError {
    /// The request was refused or could not start; the connection is fine.
    Op(Error),
    /// The store failed; the transaction was rolled back.
    Sql(Error),
}

pub(super) fn sql(what: &'static str) -> impl Fn(rusqlite::Error) -> TxError {
    move |e| TxError::Sql(sql_error(what, &e))
}

/// The counters of the `state` row.
fn read_state(tx: &rusqlite::Transaction<'_>) -> Result<(u64, u64), TxError> {
    let (highest, acked): (i64, i64) = tx
        .prepare_cached("SELECT highest_seq, acked_up_to FROM state WHERE id = 1")
        .and_then(|mut stmt| stmt.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(sql("reading the store's state"))?;
    let highest = u64::try_from(highest).map_err(|_| corrupt("highest_seq"))?;
    let acked = u64::try_from(acked).map_err(|_| corrupt("acked_up_to"))?;
    Ok((highest, acked))
}

fn corrupt(what: &str) -> TxError {
    TxError::Sql(Error::Staging(format!(
        "the store's {what} is negative; the staging database is damaged: restore it or move it aside"
    )))
}

/// A `u64` as SQLite's integer; sequence numbers never come near the limit.
pub(super) fn to_sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn stage_all(
    tx: &rusqlite::Transaction<'_>,
    reports: Vec<EncodedReport>,
    max_reports: u64,
    retry_after_secs: u64,
) -> Result<Vec<Result<StageOutcome, Error>>, TxError> {
    let (mut highest, acked) = read_state(tx)?;
    let first_highest = highest;
    let mut outcomes = Vec::with_capacity(reports.len());
    // Ids committed by this batch: a retry racing its original lands in the
    // same batch and must not become a second row.
    let mut in_batch: HashMap<String, u64> = HashMap::new();
    {
        let mut find = tx
            .prepare_cached("SELECT seq FROM reports WHERE report_id = ?1")
            .map_err(sql("preparing the duplicate check"))?;
        // A repeated id is the rare case: the insert itself finds it (the
        // UNIQUE index is probed either way), and only then is its stored
        // seq looked up.
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO reports (seq, report_id, received_at_us, json) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (report_id) DO NOTHING",
            )
            .map_err(sql("preparing the insert"))?;
        let mut stored_seq = |id: &str| -> Result<Option<u64>, TxError> {
            let stored: Option<i64> = find
                .query_row([id], |row| row.get(0))
                .optional()
                .map_err(sql("looking for a duplicate"))?;
            stored
                .map(|seq| u64::try_from(seq).map_err(|_| corrupt("seq")))
                .transpose()
        };
        for report in reports {
            let EncodedReport {
                id,
                received_at_us,
                stored,
            } = report;
            if let Some(seq) = in_batch.get(&id) {
                outcomes.push(Ok(StageOutcome::Duplicate { seq: *seq }));
                continue;
            }
            if highest.saturating_sub(acked) >= max_reports {
                // Full: a repeat of a stored report is still answered
                // `duplicate`, anything new waits.
                outcomes.push(match stored_seq(&id)? {
                    Some(seq) => Ok(StageOutcome::Duplicate { seq }),
                    None => Err(Error::StagingFull {
                        max: max_reports,
                        retry_after_secs,
                    }),
                });
                continue;
            }
            let seq = highest + 1;
            let inserted = insert
                .execute(params![to_sql_int(seq), id, received_at_us, stored])
                .map_err(sql("inserting a report"))?;
            if inserted == 0 {
                let seq = stored_seq(&id)?.ok_or_else(|| {
                    TxError::Sql(Error::Staging(format!(
                        "report {id} was neither inserted nor found; the staging database is damaged: \
                         restore it or move it aside"
                    )))
                })?;
                outcomes.push(Ok(StageOutcome::Duplicate { seq }));
                continue;
            }
            highest = seq;
            in_batch.insert(id, seq);
            outcomes.push(Ok(StageOutcome::Stored { seq }));
        }
    }
    if highest != first_highest {
        tx.prepare_cached("UPDATE state SET highest_seq = ?1 WHERE id = 1")
            .and_then(|mut stmt| stmt.execute([to_sql_int(highest)]))
            .map_err(sql("advancing the sequence number"))?;
    }
    Ok(outcomes)
}

/// Acknowledges up to `up_to`, which must be at most `durable`, the
/// highest seq on disk: exports stop there, so nothing above it can have
/// been pulled. The `state` row's `highest_seq` is not the bound: it counts
/// reports committed but not yet synced (a power loss could still take
/// them back, their seqs then given to others), and an acknowledgement of
/// one of those, bogus or racing the sync, would mark a report the puller
/// never received as acknowledged, to be purged after the retention.
fn ack(
    tx: &rusqlite::Transaction<'_>,
    own_node: &str,
    node_id: &str,
    up_to: u64,
    durable: u64,
) -> Result<AckOutcome, TxError> {
    if node_id != own_node {
        return Err(TxError::Op(Error::BadAck(format!(
            "this is node `{own_node}`, the acknowledgement names `{node_id}`; \
             acknowledge each node's reports at that node"
        ))));
    }
    let (highest, acked) = read_state(tx)?;
    let exportable = highest.min(durable);
    if up_to > exportable {
        return Err(TxError::Op(Error::BadAck(format!(
            "up_to {up_to} is beyond the highest sequence number {exportable} on disk at node \
             `{own_node}`; acknowledge only reports you have exported"
        ))));
    }
    if up_to <= acked {
        // Already acknowledged: a repeated acknowledgement changes nothing.
        return Ok(AckOutcome {
            acked_up_to: acked,
            newly_acked: 0,
        });
    }
    let now_us = Utc::now().timestamp_micros();
    let newly = tx
        .execute(
            "UPDATE reports SET acked_at_us = ?1 WHERE seq > ?2 AND seq <= ?3",
            params![now_us, to_sql_int(acked), to_sql_int(up_to)],
        )
        .map_err(sql("acknowledging reports"))?;
    tx.execute(
        "UPDATE state SET acked_up_to = ?1 WHERE id = 1",
        [to_sql_int(up_to)],
    )
    .map_err(sql("advancing the acknowledgement cursor"))?;
    Ok(AckOutcome {
        acked_up_to: up_to,
        newly_acked: u64::try_from(newly).unwrap_or(u64::MAX),
    })
}

fn purge(
    tx: &rusqlite::Transaction<'_>,
    cutoff_us: i64,
    limit: usize,
) -> Result<PurgeChunk, TxError> {
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
    let now_us = Utc::now().timestamp_micros();
    // The `seq <= acked_up_to` guard repeats what `acked_at_us` says, so that
    // an unacknowledged report cannot be purged whatever the timestamps.
    let purged = tx
        .execute(
            "UPDATE reports SET json = NULL, purged_at_us = ?1
             WHERE seq IN (
                 SELECT seq FROM reports
                 WHERE json IS NOT NULL AND acked_at_us IS NOT NULL AND acked_at_us <= ?2
                   AND seq <= (SELECT acked_up_to FROM state WHERE id = 1)
                 LIMIT ?3)",
            params![now_us, cutoff_us, limit_sql],
        )
        .map_err(sql("purging acknowledged reports"))?;
    // Tombstones outlive their report by one more retention period, so a
    // late retry of a purged report is still recognised.
    let forgotten = tx
        .execute(
            "DELETE FROM reports WHERE seq IN (
                 SELECT seq FROM reports
                 WHERE json IS NULL AND purged_at_us <= ?1
                 LIMIT ?2)",
            params![cutoff_us, limit_sql],
        )
        .map_err(sql("forgetting old report ids"))?;
    Ok(PurgeChunk {
        purged: u64::try_from(purged).unwrap_or(u64::MAX),
        more: purged >= limit || forgotten >= limit,
    })
}

fn put_manifest(tx: &rusqlite::Transaction<'_>, serial: u64, signed: &[u8]) -> Result<(), TxError> {
    let current: Option<i64> = tx
        .query_row("SELECT serial FROM manifest WHERE id = 1", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(sql("reading the current manifest"))?;
    if let Some(current) = current {
        let current = u64::try_from(current).unwrap_or(0);
        if serial <= current {
            return Err(TxError::Op(Error::ManifestRefused(format!(
                "serial {serial} is not newer than the current serial {current}; \
                 publish the manifest with a serial above {current}"
            ))));
        }
    }
    let serial_sql = i64::try_from(serial).map_err(|_| {
        TxError::Op(Error::ManifestRefused(format!(
            "serial {serial} is too large; use a serial up to {}",
            i64::MAX
        )))
    })?;
    tx.execute(
        "INSERT INTO manifest (id, serial, signed, stored_at_us) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET
             serial = excluded.serial, signed = excluded.signed, stored_at_us = excluded.stored_at_us",
        params![serial_sql, signed, Utc::now().timestamp_micros()],
    )
    .map_err(sql("storing the manifest"))?;
    Ok(())
}

/// A report encoded for the store by the caller, so that the single writer
/// thread only inserts: serialising a report costs about as much as
/// inserting it, and callers run in parallel while the writer does not.
pub(super) struct EncodedReport {
    /// The idempotency key.
    pub(super) id: String,
    /// The receiver's clock, µs since the epoch.
    pub(super) received_at_us: i64,
    /// The stored form (`stored::pack`) of the JSON with `"seq":0` as its
    /// very last member; the export puts the real sequence number there.
    pub(super) stored: Vec<u8>,
}

impl EncodedReport {
    /// Encodes `report` for the store of `node_id` (the store is the
    /// authority on the envelope's node and sequence number).
    pub(super) fn encode(mut report: Report, node_id: &str) -> Result<Self, Error> {
        let id = report.report_id.to_string();
        let received_at_us = stamp(report.envelope.as_mut().ok_or_else(no_envelope)?, node_id);
        let json = report
            .to_json()
            .map_err(|e| Error::Staging(format!("cannot encode report {id}: {e}")))?;
        Self::packed(
            id,
            received_at_us,
            &json,
            "its JSON does not end with the envelope's seq; the report type's field order changed",
        )
    }

    /// Encodes a report that ingest decoded from `submitted`: the bytes the
    /// probe sent with the receiver's envelope appended as the last member.
    ///
    /// Keeping the probe's own bytes is both cheaper than encoding the whole
    /// report again (the largest single cost of staging after decoding) and
    /// more faithful: the internal side receives exactly what was sent.
    /// `report` must be the decoded `submitted` with its envelope set; when
    /// the bytes cannot be extended safely (see [`spliceable`]) the report is
    /// encoded as by [`EncodedReport::encode`].
    pub(super) fn encode_received(
        mut report: Report,
        submitted: &[u8],
        node_id: &str,
    ) -> Result<Self, Error> {
        let Some(object) = spliceable(submitted) else {
            return Self::encode(report, node_id);
        };
        let id = report.report_id.to_string();
        let mut envelope = report.envelope.take().ok_or_else(no_envelope)?;
        let received_at_us = stamp(&mut envelope, node_id);
        // `object` ends with its closing brace; the envelope goes before it.
        let open = object.get(..object.len() - 1).unwrap_or_default();
        let mut json = Vec::with_capacity(object.len() + 512);
        json.extend_from_slice(open);
        json.extend_from_slice(b",\"envelope\":");
        serde_json::to_writer(&mut json, &envelope)
            .map_err(|e| Error::Staging(format!("cannot encode the envelope of {id}: {e}")))?;
        json.push(b'}');
        Self::packed(
            id,
            received_at_us,
            &json,
            "its envelope does not end with seq; the envelope type's field order changed",
        )
    }

    /// The stored form of `json`, which must end with the seq placeholder
    /// (`broken` says why it would not).
    fn packed(id: String, received_at_us: i64, json: &[u8], broken: &str) -> Result<Self, Error> {
        // The envelope adds up to a few KB to a report ingest let through:
        // what would pass the schema's limit could be committed but never
        // pulled (the internal side refuses it, and export could not read
        // it back), so it is refused here, before anything is stored.
        let limit = lineprobe_shared::ReportLimits::MAX_REPORT_BYTES;
        if json.len() > limit {
            return Err(Error::ReportTooLarge {
                bytes: json.len(),
                limit,
            });
        }
        if !json.ends_with(SEQ_PLACEHOLDER_TAIL) {
            return Err(Error::Staging(format!(
                "cannot encode report {id}: {broken}"
            )));
        }
        Ok(Self {
            id,
            received_at_us,
            stored: pack(json),
        })
    }
}

/// Makes the store the authority on the envelope's node and sequence
/// number (the placeholder 0, filled in at export); returns `received_at`
/// in µs since the epoch.
fn stamp(envelope: &mut ReceiverEnvelope, node_id: &str) -> i64 {
    envelope.seq = 0;
    node_id.clone_into(&mut envelope.node_id);
    envelope.received_at.timestamp_micros()
}

fn no_envelope() -> Error {
    Error::Staging(
        "the report has no receiver envelope; ingest must set it before staging".to_owned(),
    )
}

/// The submitted object without surrounding whitespace, when appending the
/// envelope to it gives a correct stored report; `None` otherwise.
///
/// The bytes already decoded as a report, so they are one JSON object with
/// only known members, no repeated key and no envelope *value*. Three
/// things still rule splicing out:
/// - a line break anywhere: exported reports are one NDJSON line each (JSON
///   strings cannot hold a raw line break, so it is formatting);
/// - the text `envelope`, or any `\u` escape (which could spell it): a
///   submitted `"envelope": null` decodes as no envelope, and appending one
///   would repeat the key;
/// - anything but `{…}` around the whitespace.
fn spliceable(submitted: &[u8]) -> Option<&[u8]> {
    let start = submitted.iter().position(|b| !b.is_ascii_whitespace())?;
    let end = submitted.iter().rposition(|b| !b.is_ascii_whitespace())?;
    let object = submitted.get(start..=end)?;
    let braced = object.len() >= 2 && object.first() == Some(&b'{') && object.last() == Some(&b'}');
    let unsafe_text = memchr::memchr2(b'\n', b'\r', object).is_some()
        || memchr::memmem::find(object, b"envelope").is_some()
        || memchr::memmem::find(object, b"\\u").is_some();
    (braced && !unsafe_text).then_some(object)
}
