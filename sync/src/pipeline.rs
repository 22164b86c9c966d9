//! The processing pipeline: pulled raw reports → extract and validate
//! (quarantine) → first public hop → resolve → verdict → the database, where
//! identical observations collapse and each line keeps one current verdict.
//!
//! The CPU work (decoding, validation, resolution, the verdict) runs on
//! blocking threads, a batch split among them; the database work of one batch
//! overlaps the CPU work of the next.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lineprobe_shared::{Catalog, Classifier, Report};
use serde::Serialize;

use crate::evidence::evidence_json;
use crate::validate::received_in_time;
use crate::{
    ApplySummary, Attribute, Chain, DeclaredFills, Error, Extracted, KEY_SEEN_RESOLUTION_MS,
    KeyContest, KeySpan, LineEvidence, ObservationFacts, ObservationRecord, Processed,
    QuarantineRecord, RawReport, Resolved, Store, TrustMark, TrustPolicy, Verdict, VerdictRecord,
    contest_changes, extract, judge, key_contest, line_key, observation_key,
};

/// What a pipeline run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PipelineRun {
    /// Raw reports read.
    pub read: u64,
    /// What the database did with them: quarantined, new and repeated
    /// observations, new verdicts, changed lines, skipped records (flat in
    /// the JSON form, beside `read`).
    #[serde(flatten)]
    pub applied: ApplySummary,
    /// Wall time, in milliseconds.
    pub elapsed_ms: u64,
    /// Time spent waiting for pending reports from the database, in
    /// milliseconds (each page after the first is read while the one
    /// before is processed).
    pub fetch_ms: u64,
    /// Wall time of the CPU work (extract, resolve, verdict) on the worker
    /// threads, in milliseconds.
    pub process_ms: u64,
    /// Time the database took to apply the batches, in milliseconds; it
    /// overlaps the CPU work of the next batch.
    pub apply_ms: u64,
    /// Worker threads used for the CPU work.
    pub workers: usize,
    /// Reports an address source failed for, left as they were: pending
    /// ones are judged on a later run (after the source retry window, with
    /// the other sources alone), reprocessed ones keep their verdict.
    pub deferred: u64,
    /// Reports judged again at the end of the run because reports it read
    /// (pulled late from another node) changed a key contest of their
    /// installation at the time they arrived (see
    /// [`crate::contest_changes`]); what the database did with them is in
    /// `applied`.
    pub rejudged: u64,
    /// The ids of the raw reports read, when any were (see
    /// [`Pipeline::reprocess_ids`]); the ones judged again for a key contest
    /// are not among them.
    #[serde(skip)]
    pub raw_ids: Option<RawIdRange>,
}

/// An installation's reports that arrived in `[from_ms, to_ms)` and are to
/// be judged again: a key contest of the installation changed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContestChange {
    /// The installation.
    pub install_id: String,
    /// The earliest arrival concerned (Unix ms).
    pub from_ms: i64,
    /// The end of the arrivals concerned, not included (Unix ms).
    pub to_ms: i64,
}

/// Merges `changes` of the same installation that overlap or touch, so
/// that no report is listed twice.
fn merge_changes(mut changes: Vec<ContestChange>) -> Vec<ContestChange> {
    changes.sort_unstable_by(|a, b| {
        (a.install_id.as_str(), a.from_ms).cmp(&(b.install_id.as_str(), b.from_ms))
    });
    let mut merged: Vec<ContestChange> = Vec::with_capacity(changes.len());
    for c in changes {
        match merged.last_mut() {
            Some(last) if last.install_id == c.install_id && c.from_ms <= last.to_ms => {
                last.to_ms = last.to_ms.max(c.to_ms);
            }
            _ => merged.push(c),
        }
    }
    merged
}

/// A range of raw report ids, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawIdRange {
    /// The lowest id.
    pub first: i64,
    /// The highest id.
    pub last: i64,
}

impl RawIdRange {
    /// The smallest range holding both, or the one there is.
    #[must_use]
    pub fn join(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Self {
                first: a.first.min(b.first),
                last: a.last.max(b.last),
            }),
            (a, b) => a.or(b),
        }
    }
}

impl PipelineRun {
    fn add(&mut self, read: usize, s: &ApplySummary) {
        self.read += read as u64;
        self.applied += s;
    }

    fn saw(&mut self, rows: &[RawReport]) {
        // Pages come in id order.
        let page = rows
            .first()
            .zip(rows.last())
            .map(|(first, last)| RawIdRange {
                first: first.id,
                last: last.id,
            });
        self.raw_ids = RawIdRange::join(self.raw_ids, page);
    }
}

/// The pipeline: catalogs, the address sources and the classifier.
#[derive(Debug, Clone)]
pub struct Pipeline {
    catalog: Arc<Catalog>,
    chain: Arc<Chain>,
    classifier: Arc<Classifier>,
    workers: usize,
    trust: TrustPolicy,
    source_retry: Duration,
}

/// How long a report an address source failed for waits for the source,
/// by default: an hour.
pub const DEFAULT_SOURCE_RETRY: Duration = Duration::from_hours(1);

/// What the workers made of a batch.
#[derive(Debug, Default)]
pub struct ProcessedBatch {
    /// What the database is to apply, in the batch's order.
    pub records: Vec<Processed>,
    /// Reports left as they were (see [`PipelineRun::deferred`]).
    pub deferred: u64,
}

impl Pipeline {
    /// A pipeline over these catalogs, sources and classifier, using every
    /// core for the CPU work.
    pub fn new(catalog: Arc<Catalog>, chain: Arc<Chain>, classifier: Classifier) -> Self {
        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            catalog,
            chain,
            classifier: Arc::new(classifier),
            workers,
            trust: TrustPolicy::default(),
            source_retry: DEFAULT_SOURCE_RETRY,
        }
    }

    /// How long a pending report an address source failed for is left
    /// pending, to be judged again once the source answers; past that it is
    /// judged with the other sources, the failure recorded in its evidence.
    /// Zero judges at once. A reprocessed report an address source fails
    /// for always keeps its verdict: one made without the source must not
    /// replace one made with it.
    #[must_use]
    pub fn with_source_retry(mut self, retry: Duration) -> Self {
        self.source_retry = retry;
        self
    }

    /// Marks verdicts by this policy on the reports' trust at arrival.
    #[must_use]
    pub fn with_trust_policy(mut self, policy: TrustPolicy) -> Self {
        self.trust = policy;
        self
    }

    /// Uses `workers` threads for the CPU work (at least one).
    #[must_use]
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The catalogs.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The address sources.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Turns one raw report into what the database applies: a quarantine
    /// record with reasons, or an observation with its verdict — made with
    /// the sources that answered when one failed (its failure is in the
    /// evidence). Errors only when the verdict cannot be written.
    ///
    /// The report is judged alone: a change of its installation's signing
    /// key seen across receiver nodes (see [`crate::key_contest`]) needs the
    /// store's record of keys, which [`Pipeline::process_batch`] consults.
    pub fn process(
        &self,
        raw: &RawReport,
        reprocess: bool,
        now_ms: i64,
    ) -> Result<Processed, Error> {
        match self.extract_stage(raw, reprocess, now_ms)? {
            Stage::Done(processed) => Ok(processed),
            Stage::Extracted(extracted) => self
                .judge(raw, &extracted, None, reprocess, now_ms)
                .map(|(processed, _)| processed),
        }
    }

    /// The first half of [`Pipeline::process`]: the report decoded and
    /// checked, or its quarantine record.
    fn extract_stage(&self, raw: &RawReport, reprocess: bool, now_ms: i64) -> Result<Stage, Error> {
        match extract(&raw.body, &raw.node_id, &self.catalog)
            .and_then(|x| received_in_time(x, raw.pulled_at_ms))
        {
            Ok(x) => Ok(Stage::Extracted(Box::new(x))),
            Err(q) => Ok(Stage::Done(Processed::Quarantine(QuarantineRecord {
                raw_id: raw.id,
                reprocess,
                report_id: q.report_id.clone(),
                install_id: q.install_id.clone(),
                reasons_json: serde_json::to_string(&q.reasons)
                    .map_err(|e| Error::Output(e.into()))?,
                summary: q.summary(),
                at_ms: now_ms,
            }))),
        }
    }

    /// The second half of [`Pipeline::process`], or `None` when an address
    /// source failed and the report is to be left as it is (see
    /// [`Pipeline::with_source_retry`]).
    fn finish_or_defer(
        &self,
        raw: &RawReport,
        stage: &Stage,
        contest: Option<&KeyContest>,
        reprocess: bool,
        now_ms: i64,
    ) -> Result<Option<Processed>, Error> {
        let extracted = match stage {
            // A quarantine record (rare), copied out of the batch's stages.
            Stage::Done(processed) => return Ok(Some(processed.clone())),
            Stage::Extracted(extracted) => extracted,
        };
        let (processed, sources_failed) = self.judge(raw, extracted, contest, reprocess, now_ms)?;
        let retry_ms = i64::try_from(self.source_retry.as_millis()).unwrap_or(i64::MAX);
        let waiting = now_ms.saturating_sub(raw.pulled_at_ms) < retry_ms;
        Ok((!(sources_failed && (reprocess || waiting))).then_some(processed))
    }

    /// The observation and verdict of an extracted report, and whether an
    /// address source failed for it.
    fn judge(
        &self,
        raw: &RawReport,
        extracted: &Extracted,
        contest: Option<&KeyContest>,
        reprocess: bool,
        now_ms: i64,
    ) -> Result<(Processed, bool), Error> {
        let report = &extracted.report;
        let evidence = LineEvidence::gather(
            report,
            extracted.declared.clone(),
            &self.catalog,
            &self.classifier,
            |ip| self.chain.resolve(&self.catalog, ip),
        )?;
        let sources_failed = evidence.sources_failed();
        let mut verdict = judge(&evidence);
        let envelope = report.envelope.as_ref();
        let trust = self
            .trust
            .mark(envelope.and_then(|e| e.trust.as_ref()), contest);
        verdict.low_trust = trust.low;
        let observed_at_ms =
            envelope.map_or(raw.pulled_at_ms, |e| e.received_at.timestamp_millis());
        let declared = &extracted.declared;
        let first_hop = evidence.public_hops.first();
        let record = ObservationRecord {
            raw_id: raw.id,
            reprocess,
            report_id: report.report_id.to_string(),
            observed_at_ms,
            facts: ObservationFacts {
                // A decided report stays in the observation it counted in.
                obs_key: match (&raw.obs_key, reprocess) {
                    (Some(key), true) => key.clone(),
                    _ => observation_key(report),
                },
                line_key: line_key(&report.account, report.install_id.as_str()),
                install_id: report.install_id.as_str().to_owned(),
                account: report.account.trim().to_owned(),
                // Only what was declared: what the checks filled in is the
                // verdict's (`VerdictRecord::fills`), which the line shows
                // while that verdict is current.
                declared_province: declared.province.as_ref().map(|p| p.as_str().to_owned()),
                declared_city: declared
                    .city_code
                    .as_ref()
                    .map(|c| c.as_str().to_owned())
                    .or_else(|| declared.city.clone()),
                declared_carrier: declared.carrier.as_ref().map(|c| c.as_str().to_owned()),
                egress_ip: envelope.map_or_else(String::new, |e| e.peer_ip.to_string()),
                first_hop_ip: first_hop.map(|h| h.ip.to_string()),
                path_json: path_json(report),
                engine: report.trace.engine.to_string(),
                agent_version: report.device.agent_version.clone(),
                os: report.device.os.clone(),
            },
            verdict: verdict_record(&verdict, &evidence, report, extracted, &trust, now_ms)?,
        };
        Ok((Processed::Observation(Box::new(record)), sources_failed))
    }

    /// Processes a batch on the worker threads, keeping its order: each
    /// report decoded and checked, then the keys its installation was seen
    /// signing with read from `store` and this batch's sightings added to
    /// them (see [`crate::key_contest`]), then each judged.
    pub async fn process_batch(
        &self,
        store: &Store,
        rows: Vec<RawReport>,
        reprocess: bool,
    ) -> Result<ProcessedBatch, Error> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let this = self.clone();
        let (rows, stages) = blocking(move || {
            let stages = this.on_workers(&rows, |raw| this.extract_stage(raw, reprocess, now_ms));
            (rows, stages)
        })
        .await?;
        let stages = stages?;
        let contests = self.key_contests(store, &stages, now_ms).await?;
        let this = self.clone();
        blocking(move || {
            let work: Vec<(&RawReport, &Stage, Option<&KeyContest>)> = rows
                .iter()
                .zip(&stages)
                .zip(&contests)
                .map(|((raw, stage), contest)| (raw, stage, contest.as_ref()))
                .collect();
            let results = this.on_workers(&work, |&(raw, stage, contest)| {
                this.finish_or_defer(raw, stage, contest, reprocess, now_ms)
            })?;
            let mut batch = ProcessedBatch {
                records: Vec::with_capacity(results.len()),
                deferred: 0,
            };
            for record in results {
                match record {
                    Some(record) => batch.records.push(record),
                    None => batch.deferred += 1,
                }
            }
            Ok(batch)
        })
        .await?
    }

    /// For each decoded report of a batch, the key contest its installation
    /// is in at the report's arrival, from the keys `store` has seen for it
    /// and this batch's own; records the batch's sightings that widen what
    /// the store knows and, with them, where they change the contests of
    /// reports judged before (those that arrived by `now_ms`), for the end
    /// of the run to judge again. Reports not signed (or from receivers
    /// that do not name the key) are in none.
    async fn key_contests(
        &self,
        store: &Store,
        stages: &[Stage],
        now_ms: i64,
    ) -> Result<Vec<Option<KeyContest>>, Error> {
        let sightings: Vec<Option<KeySpan>> = stages.iter().map(Stage::key_sighting).collect();
        if sightings.iter().all(Option::is_none) {
            return Ok(vec![None; stages.len()]);
        }
        let mut installs: Vec<&str> = sightings
            .iter()
            .flatten()
            .map(|s| s.install_id.as_str())
            .collect();
        installs.sort_unstable();
        installs.dedup();
        let stored = store.install_keys_seen(&installs).await?;
        let mut book = KeyBook::new(stored);
        for sighting in sightings.iter().flatten() {
            book.sight(sighting);
        }
        let to_write = book.to_write();
        let period = self.trust.key_change_flag_ms();
        // Only what the store is told changes what later batches (and the
        // reports judged before) see.
        let mut touched: Vec<&str> = to_write.iter().map(|s| s.install_id.as_str()).collect();
        touched.sort_unstable();
        touched.dedup();
        let rejudge: Vec<ContestChange> = touched
            .into_iter()
            .flat_map(|install| {
                contest_changes(book.stored_spans(install), book.spans(install), period)
                    .into_iter()
                    .filter(|&(from, _)| from <= now_ms)
                    .map(move |(from, to)| ContestChange {
                        install_id: install.to_owned(),
                        from_ms: from,
                        to_ms: to.min(now_ms.saturating_add(1)),
                    })
            })
            .collect();
        store.record_install_keys(&to_write, &rejudge).await?;
        Ok(sightings
            .iter()
            .map(|s| {
                s.as_ref().and_then(|s| {
                    key_contest(
                        book.spans(&s.install_id),
                        &s.key_id,
                        s.first_seen_ms,
                        period,
                    )
                })
            })
            .collect())
    }

    /// Runs `f` over `items` on the worker threads, keeping their order.
    fn on_workers<T: Sync, R: Send>(
        &self,
        items: &[T],
        f: impl Fn(&T) -> Result<R, Error> + Sync,
    ) -> Result<Vec<R>, Error> {
        let workers = self.workers.min(items.len().max(1));
        if workers <= 1 {
            return items.iter().map(&f).collect();
        }
        let chunk = items.len().div_ceil(workers);
        let f = &f;
        let results: Vec<Result<Vec<R>, Error>> = std::thread::scope(|scope| {
            let handles: Vec<_> = items
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(f).collect()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Internal("a pipeline worker panicked".to_owned()))
                    })
                })
                .collect()
        });
        let mut out = Vec::with_capacity(items.len());
        for part in results {
            out.extend(part?);
        }
        Ok(out)
    }

    /// Processes every pending raw report, `batch` per transaction, calling
    /// `progress` after each batch.
    pub async fn run_pending(
        &self,
        store: &Store,
        batch: u32,
        progress: impl FnMut(&PipelineRun),
    ) -> Result<PipelineRun, Error> {
        self.run(store, batch, Selection::Pending, Ids::ALL, progress)
            .await
    }

    /// Runs the verdicts again for the processed reports received since
    /// `since_ms` (all when `None`), after the address data changed: a
    /// verdict that comes out differently is written as a new verdict with
    /// the data versions it used; counts and seen times do not change.
    pub async fn reprocess(
        &self,
        store: &Store,
        since_ms: Option<i64>,
        batch: u32,
        progress: impl FnMut(&PipelineRun),
    ) -> Result<PipelineRun, Error> {
        self.run(
            store,
            batch,
            Selection::Processed { since_ms },
            Ids::ALL,
            progress,
        )
        .await
    }

    /// [`Pipeline::reprocess`] for the processed reports with ids in
    /// `range`: those a run read (its [`raw_ids`](PipelineRun::raw_ids)),
    /// when the address data changed while it judged them with the data it
    /// started with.
    pub async fn reprocess_ids(
        &self,
        store: &Store,
        range: RawIdRange,
        batch: u32,
        progress: impl FnMut(&PipelineRun),
    ) -> Result<PipelineRun, Error> {
        let ids = Ids {
            after: range.first.saturating_sub(1),
            up_to: range.last,
        };
        self.run(
            store,
            batch,
            Selection::Processed { since_ms: None },
            ids,
            progress,
        )
        .await
    }

    /// Runs the quarantined reports received since `since_ms` (all when
    /// `None`) through validation and the pipeline again, after the
    /// catalogs or this program changed: one that passes now leaves
    /// quarantine and is judged (it counts then, for the first time); one
    /// that still fails keeps its quarantine row with today's reasons.
    pub async fn reprocess_quarantined(
        &self,
        store: &Store,
        since_ms: Option<i64>,
        batch: u32,
        progress: impl FnMut(&PipelineRun),
    ) -> Result<PipelineRun, Error> {
        self.run(
            store,
            batch,
            Selection::Quarantined { since_ms },
            Ids::ALL,
            progress,
        )
        .await
    }

    /// Runs the reports `selection` and `ids` choose, then judges again
    /// the reports queued because sightings changed their key contest (this
    /// run's, or those a run stopped before it could).
    async fn run(
        &self,
        store: &Store,
        batch: u32,
        selection: Selection,
        ids: Ids,
        mut progress: impl FnMut(&PipelineRun),
    ) -> Result<PipelineRun, Error> {
        let started = Instant::now();
        let mut run = self
            .run_pass(store, batch, selection, ids, &mut progress)
            .await?;
        // After the whole run is applied: every report it read is stored,
        // and the store knows every sighting.
        let queued = store.queued_rejudges().await?;
        if queued.is_empty() {
            return Ok(run);
        }
        let (ids, changes): (Vec<i64>, Vec<ContestChange>) = queued.into_iter().unzip();
        for change in merge_changes(changes) {
            let selection = Selection::Contested(Arc::new(change));
            let again = self
                .run_pass(store, batch, selection, Ids::ALL, &mut |_| {})
                .await?;
            run.rejudged += again.read;
            run.applied += &again.applied;
            // A report a source failed for keeps the verdict it has.
            run.deferred += again.deferred;
        }
        // Another run may have judged (and taken off) some already; taking
        // one off twice changes nothing.
        for id in ids {
            store.rejudged(id).await?;
        }
        tracing::info!(
            reports = run.rejudged,
            verdicts_new = run.applied.verdicts_new,
            "judged again: reports pulled in this run changed a key contest of their installation"
        );
        run.elapsed_ms = elapsed_ms(started.elapsed());
        progress(&run);
        Ok(run)
    }

    /// One pass over the reports `selection` and `ids` choose.
    async fn run_pass(
        &self,
        store: &Store,
        batch: u32,
        selection: Selection,
        ids: Ids,
        progress: &mut impl FnMut(&PipelineRun),
    ) -> Result<PipelineRun, Error> {
        let started = Instant::now();
        let mut run = PipelineRun {
            workers: self.workers,
            ..PipelineRun::default()
        };
        let fetch = |after: i64| {
            let store = store.clone();
            let selection = selection.clone();
            async move {
                if after >= ids.up_to {
                    return Ok(Vec::new());
                }
                let mut rows = match selection {
                    Selection::Pending => store.pending_raw(after, batch).await,
                    Selection::Processed { since_ms } => {
                        store.processed_raw(since_ms, after, batch).await
                    }
                    Selection::Quarantined { since_ms } => {
                        store.quarantined_raw(since_ms, after, batch).await
                    }
                    Selection::Contested(change) => {
                        store.contested_raw(&change, after, batch).await
                    }
                }?;
                rows.retain(|r| r.id <= ids.up_to);
                Ok::<_, Error>(rows)
            }
        };
        let mut fetch_time = Duration::ZERO;
        let mut process_time = Duration::ZERO;
        let mut apply_time = Duration::ZERO;
        let t = Instant::now();
        let mut rows = fetch(ids.after).await?;
        fetch_time += t.elapsed();
        // While the database applies one batch, the next is read and
        // processed: the CPU and the database work at the same time.
        let mut pending_apply: Option<(usize, ApplyTask)> = None;
        loop {
            if rows.is_empty() {
                break;
            }
            run.saw(&rows);
            // A short page of a bounded run read past the range's end (or
            // found nothing after it): no need to read past it again.
            let past_end = ids.up_to < i64::MAX && rows.len() < batch as usize;
            let after = match rows.last() {
                Some(last) if !past_end => last.id,
                _ => ids.up_to,
            };
            // The next page is read while this one is processed and the one
            // before is applied: it lists only reports after this page's
            // last, which neither apply touches.
            let next = tokio::spawn(fetch(after));
            let read = rows.len();
            let t = Instant::now();
            let reprocess = selection != Selection::Pending;
            let ProcessedBatch {
                records: processed,
                deferred,
            } = self.process_batch(store, rows, reprocess).await?;
            run.deferred += deferred;
            process_time += t.elapsed();
            if let Some((n, handle)) = pending_apply.take() {
                let (summary, took) = join_apply(handle).await?;
                apply_time += took;
                run.add(n, &summary);
                run.elapsed_ms = elapsed_ms(started.elapsed());
                progress(&run);
            }
            let store2 = store.clone();
            pending_apply = Some((
                read,
                tokio::spawn(async move {
                    let t = Instant::now();
                    let summary = store2.apply(&processed).await?;
                    Ok((summary, t.elapsed()))
                }),
            ));
            let t = Instant::now();
            rows = next
                .await
                .map_err(|e| Error::Internal(format!("pending report reader failed: {e}")))??;
            fetch_time += t.elapsed();
        }
        if let Some((n, handle)) = pending_apply.take() {
            let (summary, took) = join_apply(handle).await?;
            apply_time += took;
            run.add(n, &summary);
        }
        run.fetch_ms = elapsed_ms(fetch_time);
        run.process_ms = elapsed_ms(process_time);
        run.apply_ms = elapsed_ms(apply_time);
        run.elapsed_ms = elapsed_ms(started.elapsed());
        progress(&run);
        Ok(run)
    }
}

/// The ids of the raw reports a run may read: above `after`, at most
/// `up_to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ids {
    after: i64,
    up_to: i64,
}

impl Ids {
    const ALL: Ids = Ids {
        after: 0,
        up_to: i64::MAX,
    };
}

/// Which raw reports a run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selection {
    /// Those not processed yet.
    Pending,
    /// Those processed already, received since `since_ms` (all when `None`).
    Processed { since_ms: Option<i64> },
    /// Those in quarantine, received since `since_ms` (all when `None`).
    Quarantined { since_ms: Option<i64> },
    /// Those processed already of an installation whose key contest
    /// changed when they arrived.
    Contested(Arc<ContestChange>),
}

/// A report half processed: decoded and checked, or already decided
/// (quarantined).
enum Stage {
    Done(Processed),
    Extracted(Box<Extracted>),
}

impl Stage {
    /// The key sighting of a decoded, signed report: its installation, the
    /// key that verified it, when and where it arrived.
    fn key_sighting(&self) -> Option<KeySpan> {
        let Stage::Extracted(x) = self else {
            return None;
        };
        let envelope = x.report.envelope.as_ref()?;
        let key_id = envelope.trust.as_ref()?.key_id.clone()?;
        let at = envelope.received_at.timestamp_millis();
        Some(KeySpan {
            install_id: x.report.install_id.as_str().to_owned(),
            key_id,
            first_seen_ms: at,
            last_seen_ms: at,
            first_node: envelope.node_id.clone(),
        })
    }
}

/// The keys seen for the installations of a batch: the store's record,
/// widened by the batch's sightings.
struct KeyBook {
    spans: HashMap<String, Vec<KeySpan>>,
    /// The store's record before the batch, to tell what to write.
    stored: HashMap<(String, String), (i64, i64)>,
    /// The same, by installation: what the reports judged before saw.
    stored_spans: HashMap<String, Vec<KeySpan>>,
}

impl KeyBook {
    fn new(stored: Vec<KeySpan>) -> Self {
        let mut book = Self {
            spans: HashMap::new(),
            stored: HashMap::new(),
            stored_spans: HashMap::new(),
        };
        for span in stored {
            book.stored.insert(
                (span.install_id.clone(), span.key_id.clone()),
                (span.first_seen_ms, span.last_seen_ms),
            );
            book.spans
                .entry(span.install_id.clone())
                .or_default()
                .push(span);
        }
        book.stored_spans.clone_from(&book.spans);
        book
    }

    fn sight(&mut self, sighting: &KeySpan) {
        let spans = self.spans.entry(sighting.install_id.clone()).or_default();
        match spans.iter_mut().find(|s| s.key_id == sighting.key_id) {
            Some(span) => {
                if sighting.first_seen_ms < span.first_seen_ms {
                    span.first_seen_ms = sighting.first_seen_ms;
                    span.first_node.clone_from(&sighting.first_node);
                }
                span.last_seen_ms = span.last_seen_ms.max(sighting.last_seen_ms);
            }
            None => spans.push(sighting.clone()),
        }
    }

    fn spans(&self, install_id: &str) -> &[KeySpan] {
        self.spans.get(install_id).map_or(&[], Vec::as_slice)
    }

    fn stored_spans(&self, install_id: &str) -> &[KeySpan] {
        self.stored_spans.get(install_id).map_or(&[], Vec::as_slice)
    }

    /// The spans the store does not know well enough: new keys, earlier
    /// first sightings, and last sightings more than
    /// [`KEY_SEEN_RESOLUTION_MS`] after the stored one, in no order
    /// (`Store::record_install_keys` writes them in one order for every
    /// writer).
    fn to_write(&self) -> Vec<KeySpan> {
        self.spans
            .values()
            .flatten()
            .filter(|s| {
                self.stored
                    .get(&(s.install_id.clone(), s.key_id.clone()))
                    .is_none_or(|&(first, last)| {
                        s.first_seen_ms < first
                            || s.last_seen_ms > last.saturating_add(KEY_SEEN_RESOLUTION_MS)
                    })
            })
            .cloned()
            .collect()
    }
}

/// Runs CPU work on a blocking thread.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("pipeline worker failed: {e}")))
}

/// A batch being applied by the database: its summary and how long it took.
type ApplyTask = tokio::task::JoinHandle<Result<(ApplySummary, Duration), Error>>;

async fn join_apply(handle: ApplyTask) -> Result<(ApplySummary, Duration), Error> {
    handle
        .await
        .map_err(|e| Error::Internal(format!("database writer task failed: {e}")))?
}

fn elapsed_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The path as `[[ttl, ["addr", …]], …]`: what dedupe compares.
fn path_json(report: &Report) -> String {
    let hops: Vec<(u8, &[IpAddr])> = report
        .trace
        .hops
        .iter()
        .map(|h| (h.ttl, h.addrs.as_slice()))
        .collect();
    // A list of numbers and addresses always serializes.
    serde_json::to_string(&hops).unwrap_or_else(|_| "[]".to_owned())
}

fn verdict_record(
    verdict: &Verdict,
    evidence: &LineEvidence<'_>,
    report: &Report,
    extracted: &Extracted,
    trust: &TrustMark,
    now_ms: i64,
) -> Result<VerdictRecord, Error> {
    let egress = evidence.egress.as_ref();
    let filled = |attribute: Attribute| {
        verdict
            .filled
            .iter()
            .find(|f| f.attribute == attribute)
            .map(|f| f.value.clone())
    };
    let carrier_of = |r: Option<&Resolved>| {
        r.and_then(|r| r.carrier.as_ref())
            .map(|c| c.value.as_str().to_owned())
    };
    Ok(VerdictRecord {
        verdict_key: verdict.verdict_key(),
        verdict: verdict.kind.as_str().to_owned(),
        reasons_json: serde_json::to_string(&verdict.reasons)
            .map_err(|e| Error::Output(e.into()))?,
        evidence_json: evidence_json(verdict, evidence, report, extracted, trust)?,
        actual_carrier: verdict.actual.carrier.as_ref().map(|a| a.value.clone()),
        actual_province: verdict.actual.province.as_ref().map(|a| a.value.clone()),
        actual_city: verdict.actual.city.as_ref().map(|a| a.value.clone()),
        egress_carrier: carrier_of(egress.map(|e| &e.resolved)),
        first_hop_carrier: carrier_of(evidence.public_hops.first().map(|h| &h.resolved)),
        filled_json: serde_json::to_string(&verdict.filled).map_err(|e| Error::Output(e.into()))?,
        fills: DeclaredFills {
            province: filled(Attribute::Province),
            city: filled(Attribute::City),
            carrier: filled(Attribute::Carrier),
        },
        data_versions_json: serde_json::to_string(&verdict.data_versions)
            .map_err(|e| Error::Output(e.into()))?,
        decided_at_ms: now_ms,
        trust_score: trust.score.map(i16::from),
        low_trust: trust.low,
    })
}

#[cfg(test)]
mod tests {
    use lineprobe_shared::{ArrivalTrust, ClassifierConfig, EnvelopeHeaders, ReceiverEnvelope};
    use serde_json::{Value, json};

    use super::*;
    use crate::{demo_cases, demo_chain};

    #[test]
    fn contest_changes_of_one_installation_merge_where_they_meet() {
        let change = |install: &str, from_ms, to_ms| ContestChange {
            install_id: install.to_owned(),
            from_ms,
            to_ms,
        };
        let merged = merge_changes(vec![
            change("b", 50, 60),
            change("a", 30, 40),
            change("a", 10, 20),
            change("a", 20, 25),
            change("b", 10, 20),
            change("a", 35, 50),
        ]);
        assert_eq!(
            merged,
            [
                change("a", 10, 25),
                change("a", 30, 50),
                change("b", 10, 20),
                change("b", 50, 60),
            ]
        );
    }

    #[test]
    fn a_run_adds_up_its_batches_and_serialises_flat() {
        let mut run = PipelineRun::default();
        let batch = ApplySummary {
            quarantined: 1,
            observations_new: 2,
            observations_repeated: 3,
            duplicates: 7,
            verdicts_new: 4,
            lines_changed: 5,
            skipped: 6,
        };
        run.add(10, &batch);
        run.add(11, &batch);
        assert_eq!(run.read, 21);
        assert_eq!(run.applied.skipped, 12);
        assert_eq!(run.applied.observations_repeated, 6);
        assert_eq!(run.applied.duplicates, 14);
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(json["read"], 21);
        assert_eq!(json["quarantined"], 2);
        assert_eq!(json["lines_changed"], 10);
        assert_eq!(json["duplicates"], 14);
        assert!(json.get("applied").is_none(), "{json}");
    }

    /// The evidence document as it was first written (version 1): a JSON
    /// tree built with `json!`. The document written now must read as it.
    fn evidence_tree(
        verdict: &Verdict,
        evidence: &LineEvidence<'_>,
        report: &Report,
        extracted: &Extracted,
    ) -> Value {
        let resolved_json = |r: &Resolved| serde_json::to_value(r).unwrap();
        let egress = evidence.egress.as_ref();
        let hops: Vec<Value> = evidence
            .public_hops
            .iter()
            .map(|h| json!({ "ttl": h.ttl, "ip": h.ip, "resolved": resolved_json(&h.resolved) }))
            .collect();
        let envelope = report.envelope.as_ref().map(|e| {
            json!({
                "node_id": e.node_id, "seq": e.seq, "received_at": e.received_at,
                "peer_ip": e.peer_ip, "peer_port": e.peer_port, "path": e.path,
            })
        });
        json!({
            "declared": {
                "province": report.declared.province,
                "city": report.declared.city,
                "carrier": report.declared.carrier,
                "address": report.declared.address,
            },
            "declared_ids": extracted.declared,
            "device_proxy": {
                "system_configured": report.device.proxy.system_configured,
                "env_configured": report.device.proxy.env_configured,
                "details": report.device.proxy.details,
            },
            "egress": egress.map(|e| json!({
                "ip": e.ip, "public": e.public, "resolved": resolved_json(&e.resolved),
            })),
            "public_hops": hops,
            "target": report.trace.target_addr,
            "target_carrier": evidence.target_carrier,
            "hops_from_raw": extracted.hops_from_raw,
            "parsed_format": extracted.parsed_format,
            "warnings": extracted.warnings,
            "envelope": envelope,
            "actual": verdict.actual,
        })
    }

    /// The first demo case with a verdict, processed with `trust` in its
    /// envelope.
    fn processed_with_trust(trust: Option<ArrivalTrust>) -> ObservationRecord {
        let catalog = Arc::new(Catalog::embedded().unwrap());
        let chain = Arc::new(demo_chain(&catalog).unwrap());
        let classifier = Classifier::new(&ClassifierConfig::default()).unwrap();
        let pipeline = Pipeline::new(catalog, chain, classifier);
        let case = demo_cases(chrono::Utc::now().fixed_offset())
            .unwrap()
            .into_iter()
            .find(|c| c.expect == "non_compliant")
            .unwrap();
        let mut report = case.report;
        report.envelope = Some(ReceiverEnvelope {
            received_at: chrono::Utc::now(),
            peer_ip: case.egress.unwrap(),
            peer_port: Some(40_000),
            path: "/api/v1/report".to_owned(),
            headers: EnvelopeHeaders::default(),
            tls: None,
            node_id: "n1".to_owned(),
            seq: 1,
            trust,
        });
        let raw = RawReport {
            id: 1,
            collector: "c".to_owned(),
            node_id: "n1".to_owned(),
            seq: 1,
            body: report.to_json().unwrap(),
            pulled_at_ms: chrono::Utc::now().timestamp_millis(),
            obs_key: None,
        };
        match pipeline.process(&raw, false, 0).unwrap() {
            Processed::Observation(o) => *o,
            Processed::Quarantine(q) => panic!("quarantined: {}", q.summary),
        }
    }

    #[test]
    fn a_low_trust_arrival_marks_the_verdict_and_makes_it_a_different_verdict() {
        let score = lineprobe_shared::TrustScore::new(15).unwrap();
        let low = processed_with_trust(Some(ArrivalTrust {
            score,
            install: score,
            prefix: lineprobe_shared::TrustScore::FULL,
            signature: lineprobe_shared::SignatureCheck::Unsigned,
            reasons: vec![lineprobe_shared::TrustReason::AnomalyEpisode],
            key_id: None,
        }));
        let unscored = processed_with_trust(None);
        assert!(low.verdict.low_trust);
        assert_eq!(low.verdict.trust_score, Some(15));
        assert!(!unscored.verdict.low_trust);
        assert_eq!(unscored.verdict.trust_score, None);
        // Same facts, same verdict kind; but a low-trust verdict is listed
        // apart, so it does not collapse into the trusted one.
        assert_eq!(low.verdict.verdict, unscored.verdict.verdict);
        assert_ne!(low.verdict.verdict_key, unscored.verdict.verdict_key);
        let evidence: Value = serde_json::from_str(&low.verdict.evidence_json).unwrap();
        assert_eq!(evidence["trust"]["low"], json!(true));
        assert_eq!(evidence["trust"]["reasons"], json!(["anomaly_episode"]));
        let evidence: Value = serde_json::from_str(&unscored.verdict.evidence_json).unwrap();
        assert!(evidence.get("trust").is_none());
    }

    #[test]
    fn evidence_and_path_documents_read_as_the_json_trees_said() {
        let catalog = Catalog::embedded().unwrap();
        let chain = demo_chain(&catalog).unwrap();
        let classifier = Classifier::new(&ClassifierConfig::default()).unwrap();
        let now = chrono::Utc::now().fixed_offset();
        let mut judged = 0;
        for (i, case) in demo_cases(now).unwrap().into_iter().enumerate() {
            let mut report = case.report;
            report.envelope = Some(ReceiverEnvelope {
                received_at: chrono::Utc::now(),
                peer_ip: case.egress.unwrap_or_else(|| "127.0.0.1".parse().unwrap()),
                peer_port: (i % 2 == 0).then_some(40_000),
                path: "/api/v1/report".to_owned(),
                headers: EnvelopeHeaders::default(),
                tls: None,
                node_id: "n1".to_owned(),
                seq: i as u64 + 1,
                trust: None,
            });
            let body = report.to_json().unwrap();
            let Ok(extracted) = extract(&body, "n1", &catalog) else {
                continue;
            };
            let evidence = LineEvidence::gather(
                &extracted.report,
                extracted.declared.clone(),
                &catalog,
                &classifier,
                |ip| chain.resolve(&catalog, ip),
            )
            .unwrap();
            let verdict = judge(&evidence);
            let json = evidence_json(
                &verdict,
                &evidence,
                &extracted.report,
                &extracted,
                &TrustMark::UNSCORED,
            )
            .unwrap();
            let written: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(
                written["v"],
                json!(crate::EVIDENCE_VERSION),
                "{}",
                case.label
            );
            let tree = evidence_tree(&verdict, &evidence, &extracted.report, &extracted);
            // The compact document reads as the tree, and is smaller.
            assert_eq!(crate::read_evidence(&json).unwrap(), tree, "{}", case.label);
            assert!(json.len() < tree.to_string().len(), "{}", case.label);
            let hops: Vec<Value> = extracted
                .report
                .trace
                .hops
                .iter()
                .map(|h| json!([h.ttl, h.addrs]))
                .collect();
            assert_eq!(
                path_json(&extracted.report),
                Value::Array(hops).to_string(),
                "{}",
                case.label
            );
            judged += 1;
        }
        assert!(judged >= 10, "only {judged} demo cases judged");
    }
}
