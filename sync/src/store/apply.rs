//! The rules of [`Store::apply`](super::Store::apply), worked out in memory.
//!
//! Both backends load the rows a batch touches, let [`plan`] replay the
//! batch record by record against them, and write the final state of every
//! touched row. So the rules live in one place, the two backends cannot
//! drift apart, and PostgreSQL can write each table with one set-based
//! statement in which no row appears twice.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};

use super::records::{
    ApplySummary, ObservationFacts, ObservationRecord, Processed, QuarantineRecord, VerdictRecord,
};
use super::rows::LineRow;
use crate::Error;

/// Where a raw report is in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RawState {
    /// Stored, not applied yet.
    Pending,
    /// Applied as an observation.
    Processed,
    /// Applied as a quarantined report.
    Quarantined,
    /// A copy of a report counted from another raw report (the same report
    /// id, pulled from another collector): decided, and counted nowhere.
    Duplicate,
}

impl RawState {
    /// The spelling in the `state` column.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Quarantined => "quarantined",
            Self::Duplicate => "duplicate",
        }
    }

    /// Reads the `state` column.
    pub(super) fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "pending" => Ok(Self::Pending),
            "processed" => Ok(Self::Processed),
            "quarantined" => Ok(Self::Quarantined),
            "duplicate" => Ok(Self::Duplicate),
            other => Err(Error::StoreInput(format!(
                "the database holds a raw report in the unknown state `{other}`; \
                 was it written by a newer lineprobe-sync?"
            ))),
        }
    }
}

/// A raw report of a batch as loaded: its state, and what its outcome row
/// copies from it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct RawStateRow {
    id: i64,
    state: String,
    collector: String,
    received_at: Option<i64>,
    pulled_at: i64,
}

/// What a raw report's outcome row copies from the report, so that the
/// period figures read the outcomes alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawOrigin {
    pub(super) collector: String,
    pub(super) received_at: Option<i64>,
    pub(super) pulled_at: i64,
}

/// The raw reports of a batch by id: their states, and their origins.
pub(super) type RawRows = (HashMap<i64, RawState>, HashMap<i64, RawOrigin>);

/// Splits the loaded raw reports into their states and origins.
pub(super) fn raw_rows(rows: Vec<RawStateRow>) -> Result<RawRows, Error> {
    let mut states = HashMap::with_capacity(rows.len());
    let mut origins = HashMap::with_capacity(rows.len());
    for row in rows {
        states.insert(row.id, RawState::parse(&row.state)?);
        origins.insert(
            row.id,
            RawOrigin {
                collector: row.collector,
                received_at: row.received_at,
                pulled_at: row.pulled_at,
            },
        );
    }
    Ok((states, origins))
}

/// A report id the pipeline counted, as loaded.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(super) struct CountedReport {
    pub(super) report_id: String,
    /// The raw report whose copy counted.
    pub(super) first_copy: i64,
    /// The observation that copy is decided as now (none when it was
    /// quarantined since).
    pub(super) counted_in: Option<i64>,
}

/// A `counted_reports` row to write: `report_id` counted, from raw report
/// `raw_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NewCount<'a> {
    pub(super) report_id: &'a str,
    pub(super) raw_id: i64,
}

/// An observation row as loaded and as written.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(super) struct ObservationState {
    pub(super) id: i64,
    #[sqlx(flatten)]
    pub(super) facts: ObservationFacts,
    pub(super) count: i64,
    pub(super) first_seen: i64,
    pub(super) last_seen: i64,
    pub(super) first_report_id: String,
    pub(super) last_report_id: String,
    pub(super) latest_verdict_id: Option<i64>,
    pub(super) latest_verdict_key: Option<String>,
}

/// A line row as loaded, with the last-seen time of its current observation
/// (which decides whether another observation takes over).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct LineState {
    #[sqlx(flatten)]
    pub(super) line: LineRow,
    pub(super) current_seen: Option<i64>,
}

/// A line-history row to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HistoryEntry {
    pub(super) line_key: String,
    pub(super) verdict_id: i64,
    pub(super) verdict: String,
    pub(super) actual_carrier: Option<String>,
    pub(super) actual_province: Option<String>,
    pub(super) actual_city: Option<String>,
    pub(super) current_from: i64,
    pub(super) replaced_at: i64,
}

/// The final state of a raw report the batch touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RawWrite {
    pub(super) id: i64,
    pub(super) state: RawState,
    pub(super) observation_id: Option<i64>,
    /// It was pending when the batch was loaded: it has no outcome row yet.
    pub(super) was_pending: bool,
}

/// Everything one batch writes. New observations and verdicts carry
/// temporary negative ids until [`Plan::assign_ids`] gives them real ones.
#[derive(Debug, Default)]
pub(super) struct Plan<'a> {
    /// Observations to insert.
    pub(super) new_observations: Vec<ObservationState>,
    /// Existing observations whose counts, seen times or latest verdict
    /// changed.
    pub(super) changed_observations: Vec<ObservationState>,
    /// Verdicts to insert.
    pub(super) verdicts: Vec<NewVerdict<'a>>,
    /// Lines to insert.
    pub(super) new_lines: Vec<LineRow>,
    /// Existing lines to replace, each once.
    pub(super) changed_lines: Vec<LineRow>,
    /// Line-history rows to insert.
    pub(super) history: Vec<HistoryEntry>,
    /// Quarantine rows to insert or replace, each raw report once.
    pub(super) quarantine: Vec<QuarantineRecord>,
    /// Raw reports that left quarantine: their quarantine rows go.
    pub(super) unquarantine: Vec<i64>,
    /// Raw reports to update, each once.
    pub(super) raws: Vec<RawWrite>,
    /// Report ids counted for the first time.
    pub(super) counted: Vec<NewCount<'a>>,
    /// What the batch did.
    pub(super) summary: ApplySummary,
}

/// A verdict to insert, its documents borrowed from the batch's record: a
/// verdict's reasons and evidence are some 4.5 KB, and copying them into
/// the plan was a third of the process's copying.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewVerdict<'a> {
    pub(super) id: i64,
    pub(super) line_key: &'a str,
    pub(super) observation_id: i64,
    pub(super) report_id: &'a str,
    pub(super) observed_at_ms: i64,
    pub(super) record: &'a VerdictRecord,
}

impl Plan<'_> {
    /// Replaces the temporary ids with the ones the database allocated:
    /// `observation_ids[i]` for temporary observation id `-(i + 1)`, and
    /// likewise for verdicts.
    pub(super) fn assign_ids(&mut self, observation_ids: &[i64], verdict_ids: &[i64]) {
        let obs = |id: i64| real_id(id, observation_ids);
        let verdict = |id: i64| real_id(id, verdict_ids);
        for o in self
            .new_observations
            .iter_mut()
            .chain(self.changed_observations.iter_mut())
        {
            o.id = obs(o.id);
            o.latest_verdict_id = o.latest_verdict_id.map(verdict);
        }
        for v in &mut self.verdicts {
            v.id = verdict(v.id);
            v.observation_id = obs(v.observation_id);
        }
        for l in self
            .new_lines
            .iter_mut()
            .chain(self.changed_lines.iter_mut())
        {
            l.verdict_id = verdict(l.verdict_id);
            l.observation_id = obs(l.observation_id);
        }
        for h in &mut self.history {
            h.verdict_id = verdict(h.verdict_id);
        }
        for r in &mut self.raws {
            r.observation_id = r.observation_id.map(obs);
        }
    }
}

/// The temporary id of the `index`-th new row.
fn temp_id(index: usize) -> i64 {
    -1 - i64::try_from(index).unwrap_or(i64::MAX - 1)
}

fn real_id(id: i64, allocated: &[i64]) -> i64 {
    if id >= 0 {
        return id;
    }
    usize::try_from(-1 - id)
        .ok()
        .and_then(|i| allocated.get(i).copied())
        .unwrap_or(id)
}

/// The raw ids of a batch that the database does not hold, as an error.
pub(super) fn check_raws_exist(
    batch: &[Processed],
    raws: &HashMap<i64, RawState>,
) -> Result<(), Error> {
    let mut missing: Vec<i64> = batch
        .iter()
        .map(Processed::raw_id)
        .filter(|id| !raws.contains_key(id))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort_unstable();
    missing.dedup();
    let shown: Vec<String> = missing.iter().take(10).map(i64::to_string).collect();
    Err(Error::StoreInput(format!(
        "cannot apply results for raw reports that the database does not hold (ids {}{}); \
         apply only results of reports listed by pending_raw or processed_raw of this database",
        shown.join(", "),
        if missing.len() > 10 { ", …" } else { "" }
    )))
}

/// Which records of a batch apply: a record applies when its raw report is
/// still pending, or when it is marked `reprocess`. A record applied earlier
/// in the batch counts, so one report twice in a batch applies once.
pub(super) fn eligible(batch: &[Processed], raws: &HashMap<i64, RawState>) -> Vec<bool> {
    let mut state = raws.clone();
    batch
        .iter()
        .map(|record| {
            let Some(current) = state.get_mut(&record.raw_id()) else {
                return false;
            };
            let applies = *current == RawState::Pending || record.reprocess();
            if applies {
                *current = match record {
                    Processed::Quarantine(_) => RawState::Quarantined,
                    Processed::Observation(_) => RawState::Processed,
                };
            }
            applies
        })
        .collect()
}

/// The rows the applying records of a batch touch, by key: what each
/// backend loads before [`plan`].
#[derive(Debug, Default)]
pub(super) struct TouchedKeys {
    /// Observation keys.
    pub(super) observations: Vec<String>,
    /// Line keys.
    pub(super) lines: Vec<String>,
    /// Report ids (their `counted_reports` rows).
    pub(super) reports: Vec<String>,
}

/// The observation and line keys and the report ids the applying records
/// of a batch touch.
pub(super) fn touched_keys<R: Borrow<Processed>>(batch: &[R], eligible: &[bool]) -> TouchedKeys {
    let mut obs = HashSet::new();
    let mut lines = HashSet::new();
    let mut reports = HashSet::new();
    for (record, applies) in batch.iter().zip(eligible) {
        if let (Processed::Observation(o), true) = (record.borrow(), applies) {
            obs.insert(o.facts.obs_key.as_str());
            lines.insert(o.facts.line_key.as_str());
            reports.insert(o.report_id.as_str());
        }
    }
    let owned = |keys: HashSet<&str>| keys.into_iter().map(str::to_owned).collect();
    TouchedKeys {
        observations: owned(obs),
        lines: owned(lines),
        reports: owned(reports),
    }
}

/// The rows a batch touches, as loaded (see [`TouchedKeys`]).
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub(super) observations: Vec<ObservationState>,
    pub(super) lines: Vec<LineState>,
    pub(super) counted: Vec<CountedReport>,
}

/// Replays a batch against the rows it touches and returns what to write.
pub(super) fn plan<'a, R: Borrow<Processed>>(
    batch: &'a [R],
    eligible: &[bool],
    raws: &HashMap<i64, RawState>,
    loaded: Loaded,
) -> Plan<'a> {
    let mut planner = Planner::new(raws, loaded);
    for (record, &applies) in batch.iter().zip(eligible) {
        if !applies {
            planner.summary.skipped += 1;
            continue;
        }
        match record.borrow() {
            Processed::Quarantine(q) => planner.quarantine(q),
            Processed::Observation(o) => planner.observe(o),
        }
    }
    planner.finish()
}

struct RawTrack {
    initial: RawState,
    state: RawState,
    observation_id: Option<i64>,
    touched: bool,
}

struct ObsSlot {
    row: ObservationState,
    is_new: bool,
    dirty: bool,
}

struct LineSlot {
    line: LineRow,
    /// The last-seen time of the current observation.
    current_seen: i64,
    is_new: bool,
    dirty: bool,
}

/// A counted report id: the raw report whose copy counted, and the
/// observation it counted in.
struct Count {
    raw_id: i64,
    observation_id: Option<i64>,
}

struct Planner<'a> {
    raws: HashMap<i64, RawTrack>,
    /// Raw ids in the order the batch first touched them.
    raw_order: Vec<i64>,
    observations: Vec<ObsSlot>,
    obs_index: HashMap<String, usize>,
    new_observations: usize,
    lines: Vec<LineSlot>,
    line_index: HashMap<String, usize>,
    verdicts: Vec<NewVerdict<'a>>,
    /// The verdicts this batch wrote, by observation slot and verdict key:
    /// an older report's verdict is not its observation's latest, so the
    /// latest alone cannot tell that it was written already.
    written: HashMap<(usize, &'a str), i64>,
    history: Vec<HistoryEntry>,
    quarantine: HashMap<i64, &'a QuarantineRecord>,
    changed_lines: HashSet<usize>,
    /// The report ids counted, by report id.
    counted: HashMap<String, Count>,
    new_counts: Vec<NewCount<'a>>,
    summary: ApplySummary,
}

impl<'a> Planner<'a> {
    fn new(raws: &HashMap<i64, RawState>, loaded: Loaded) -> Self {
        let Loaded {
            observations,
            lines,
            counted,
        } = loaded;
        let raws = raws
            .iter()
            .map(|(&id, &state)| {
                let track = RawTrack {
                    initial: state,
                    state,
                    observation_id: None,
                    touched: false,
                };
                (id, track)
            })
            .collect();
        let obs_index = observations
            .iter()
            .enumerate()
            .map(|(i, o)| (o.facts.obs_key.clone(), i))
            .collect();
        let observations = observations
            .into_iter()
            .map(|row| ObsSlot {
                row,
                is_new: false,
                dirty: false,
            })
            .collect();
        let line_index = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (l.line.line_key.clone(), i))
            .collect();
        let lines = lines
            .into_iter()
            .map(|l| LineSlot {
                current_seen: l.current_seen.unwrap_or(i64::MIN),
                line: l.line,
                is_new: false,
                dirty: false,
            })
            .collect();
        Self {
            raws,
            raw_order: Vec::new(),
            observations,
            obs_index,
            new_observations: 0,
            lines,
            line_index,
            verdicts: Vec::new(),
            written: HashMap::new(),
            history: Vec::new(),
            quarantine: HashMap::new(),
            changed_lines: HashSet::new(),
            counted: counted
                .into_iter()
                .map(|c| {
                    let count = Count {
                        raw_id: c.first_copy,
                        observation_id: c.counted_in,
                    };
                    (c.report_id, count)
                })
                .collect(),
            new_counts: Vec::new(),
            summary: ApplySummary::default(),
        }
    }

    /// Moves a raw report to its new state; returns the state it had.
    fn move_raw(&mut self, id: i64, state: RawState, observation_id: Option<i64>) -> RawState {
        let Some(track) = self.raws.get_mut(&id) else {
            // check_raws_exist ran before; a missing id cannot get here.
            return RawState::Pending;
        };
        if !track.touched {
            track.touched = true;
            self.raw_order.push(id);
        }
        let before = track.state;
        track.state = state;
        track.observation_id = observation_id;
        before
    }

    fn quarantine(&mut self, record: &'a QuarantineRecord) {
        self.move_raw(record.raw_id, RawState::Quarantined, None);
        self.quarantine.insert(record.raw_id, record);
        self.summary.quarantined += 1;
    }

    fn observe(&mut self, record: &'a ObservationRecord) {
        let decided_before = self
            .raws
            .get(&record.raw_id)
            .is_some_and(|t| t.state == RawState::Processed);
        let count = self
            .counted
            .get(&record.report_id)
            .map(|c| (c.raw_id, c.observation_id));
        // The report id is the report's idempotency key. A probe that timed
        // out on one collector (which may have stored the report) sends it
        // again to the next, and the puller pulls both copies: the one
        // applied second is a duplicate of the first, kept as received and
        // counted nowhere. (A report decided as an observation before its
        // copy was known stays one: reprocess leaves counts alone.)
        if let Some((first_raw, observation_id)) = count
            && first_raw != record.raw_id
            && !decided_before
        {
            self.move_raw(record.raw_id, RawState::Duplicate, observation_id);
            self.summary.duplicates += 1;
            return;
        }
        // A report counts (count, seen times, line reports) the first time
        // it becomes an observation; re-deciding it does not, nor does
        // deciding again a report that was quarantined after it counted.
        let first_count = count.is_none();
        let counted = first_count && !decided_before;
        let oi = self.observation(record, counted);
        let o = &self.observations[oi].row;
        // Only the observation's newest report (ties: the one applied later)
        // decides its current verdict: a report pulled late — from a probe's
        // offline spool, or a collector that was down — has its verdict kept
        // as history. It may differ from the newest one's in what the
        // observation key leaves out (a proxy set on the device, the
        // source's trust).
        let newest = record.observed_at_ms >= o.last_seen;
        let observation_id = o.id;
        let verdict_id = self.verdict(oi, record, newest);
        self.line(oi, verdict_id, record, counted, newest);
        self.move_raw(record.raw_id, RawState::Processed, Some(observation_id));
        if first_count {
            let count = Count {
                raw_id: record.raw_id,
                observation_id: Some(observation_id),
            };
            self.counted.insert(record.report_id.clone(), count);
            self.new_counts.push(NewCount {
                report_id: &record.report_id,
                raw_id: record.raw_id,
            });
        }
    }

    /// Folds the record into its observation (new or existing); returns the
    /// observation's slot.
    fn observation(&mut self, r: &ObservationRecord, counted: bool) -> usize {
        let at = r.observed_at_ms;
        if let Some(&i) = self.obs_index.get(&r.facts.obs_key) {
            self.summary.observations_repeated += 1;
            let slot = &mut self.observations[i];
            slot.dirty = true;
            if counted {
                let o = &mut slot.row;
                o.count = o.count.saturating_add(1);
                if at < o.first_seen {
                    o.first_seen = at;
                    o.first_report_id.clone_from(&r.report_id);
                }
                // Ties go to the report applied later.
                if at >= o.last_seen {
                    o.last_seen = at;
                    o.last_report_id.clone_from(&r.report_id);
                }
            }
            return i;
        }
        self.summary.observations_new += 1;
        let row = ObservationState {
            id: temp_id(self.new_observations),
            facts: r.facts.clone(),
            count: 1,
            first_seen: at,
            last_seen: at,
            first_report_id: r.report_id.clone(),
            last_report_id: r.report_id.clone(),
            latest_verdict_id: None,
            latest_verdict_key: None,
        };
        self.new_observations += 1;
        self.observations.push(ObsSlot {
            row,
            is_new: true,
            dirty: true,
        });
        let i = self.observations.len() - 1;
        self.obs_index.insert(r.facts.obs_key.clone(), i);
        i
    }

    /// Records the verdict unless it repeats the observation's latest one
    /// (or, for an older report, one this batch wrote for the observation
    /// as history); when the record is
    /// the observation's `newest` report, its verdict becomes the latest.
    /// Returns the record's verdict id.
    fn verdict(&mut self, oi: usize, r: &'a ObservationRecord, newest: bool) -> i64 {
        let o = &mut self.observations[oi].row;
        let v = &r.verdict;
        // A verdict this batch wrote for an older report is history: the
        // newest report does not take it over, or the current verdict would
        // carry the older report's id and time (which the batch reports
        // pick a window's verdict by) — and differ from what the same two
        // reports make in two batches.
        let repeated = match (o.latest_verdict_id, o.latest_verdict_key.as_deref()) {
            (Some(id), Some(key)) if key == v.verdict_key => Some(id),
            _ if newest => None,
            _ => self.written.get(&(oi, v.verdict_key.as_str())).copied(),
        };
        let id = repeated.unwrap_or_else(|| {
            let id = temp_id(self.verdicts.len());
            self.verdicts.push(NewVerdict {
                id,
                line_key: &r.facts.line_key,
                observation_id: o.id,
                report_id: &r.report_id,
                observed_at_ms: r.observed_at_ms,
                record: v,
            });
            self.written.insert((oi, v.verdict_key.as_str()), id);
            self.summary.verdicts_new += 1;
            id
        });
        if newest {
            o.latest_verdict_id = Some(id);
            o.latest_verdict_key = Some(v.verdict_key.clone());
        }
        id
    }

    /// Keeps one truth per line: the observation seen last is current, and
    /// the line follows its latest verdict, which only the observation's
    /// `newest` report decides.
    fn line(
        &mut self,
        oi: usize,
        verdict_id: i64,
        r: &ObservationRecord,
        counted: bool,
        newest: bool,
    ) {
        let o = &self.observations[oi].row;
        let v = &r.verdict;
        let decided = v.decided_at_ms;
        let Some(&li) = self.line_index.get(&r.facts.line_key) else {
            let mut line = LineRow {
                line_key: r.facts.line_key.clone(),
                reports: 1,
                first_seen_ms: r.observed_at_ms,
                last_seen_ms: r.observed_at_ms,
                current_from_ms: decided,
                updated_at_ms: decided,
                ..LineRow::default()
            };
            follow(&mut line, o, verdict_id, v);
            self.lines.push(LineSlot {
                line,
                current_seen: o.last_seen,
                is_new: true,
                dirty: true,
            });
            let li = self.lines.len() - 1;
            self.line_index.insert(r.facts.line_key.clone(), li);
            self.changed_lines.insert(li);
            return;
        };
        let slot = &mut self.lines[li];
        slot.dirty = true;
        let line = &mut slot.line;
        // Ties go to the observation applied later. An older report of an
        // observation changes neither which observation is current (a tie
        // with the current one is not its to break) nor its verdict.
        let current = newest && (line.observation_id == o.id || o.last_seen >= slot.current_seen);
        if current {
            if line.verdict_id != verdict_id {
                self.history.push(HistoryEntry {
                    line_key: line.line_key.clone(),
                    verdict_id: line.verdict_id,
                    verdict: line.verdict.clone(),
                    actual_carrier: line.actual_carrier.clone(),
                    actual_province: line.actual_province.clone(),
                    actual_city: line.actual_city.clone(),
                    current_from: line.current_from_ms,
                    replaced_at: decided,
                });
                line.current_from_ms = decided;
                self.changed_lines.insert(li);
            }
            slot.current_seen = o.last_seen;
            follow(line, o, verdict_id, v);
        }
        if counted {
            line.reports = line.reports.saturating_add(1);
            line.first_seen_ms = line.first_seen_ms.min(r.observed_at_ms);
            line.last_seen_ms = line.last_seen_ms.max(r.observed_at_ms);
        }
        line.updated_at_ms = line.updated_at_ms.max(decided);
    }

    fn finish(self) -> Plan<'a> {
        let mut plan = Plan {
            summary: self.summary,
            verdicts: self.verdicts,
            history: self.history,
            counted: self.new_counts,
            ..Plan::default()
        };
        plan.summary.lines_changed = self.changed_lines.len() as u64;
        for slot in self.observations {
            match (slot.is_new, slot.dirty) {
                (true, _) => plan.new_observations.push(slot.row),
                (false, true) => plan.changed_observations.push(slot.row),
                (false, false) => {}
            }
        }
        for slot in self.lines {
            match (slot.is_new, slot.dirty) {
                (true, _) => plan.new_lines.push(slot.line),
                (false, true) => plan.changed_lines.push(slot.line),
                (false, false) => {}
            }
        }
        for id in self.raw_order {
            let Some(track) = self.raws.get(&id) else {
                continue;
            };
            plan.raws.push(RawWrite {
                id,
                state: track.state,
                observation_id: track.observation_id,
                was_pending: track.initial == RawState::Pending,
            });
            match track.state {
                RawState::Quarantined => {
                    if let Some(record) = self.quarantine.get(&id) {
                        plan.quarantine.push((*record).clone());
                    }
                }
                RawState::Processed | RawState::Duplicate
                    if track.initial == RawState::Quarantined =>
                {
                    plan.unquarantine.push(id);
                }
                RawState::Processed | RawState::Duplicate | RawState::Pending => {}
            }
        }
        plan
    }
}

/// Makes the observation and its verdict the line's current truth: what
/// was declared and observed comes from the observation, what is actual and
/// what was filled from it from the verdict (a fill of an earlier verdict
/// must not outlive it). A repeated verdict key means the same verdict, so
/// the record's copy of it is as good as the stored one.
fn follow(line: &mut LineRow, o: &ObservationState, verdict_id: i64, v: &VerdictRecord) {
    let facts = &o.facts;
    let declared_or_filled = |declared: &Option<String>, filled: &Option<String>| {
        declared.as_ref().or(filled.as_ref()).cloned()
    };
    line.account.clone_from(&facts.account);
    line.install_id.clone_from(&facts.install_id);
    line.declared_province = declared_or_filled(&facts.declared_province, &v.fills.province);
    line.declared_city = declared_or_filled(&facts.declared_city, &v.fills.city);
    line.declared_carrier = declared_or_filled(&facts.declared_carrier, &v.fills.carrier);
    line.egress_ip.clone_from(&facts.egress_ip);
    line.first_hop_ip.clone_from(&facts.first_hop_ip);
    line.observation_id = o.id;
    line.verdict_id = verdict_id;
    line.verdict.clone_from(&v.verdict);
    line.low_trust = v.low_trust;
    line.actual_carrier.clone_from(&v.actual_carrier);
    line.actual_province.clone_from(&v.actual_province);
    line.actual_city.clone_from(&v.actual_city);
}

/// Splits a batch into at most `parts` groups of record indices (each in
/// batch order) such that no raw report, observation, line or report id is
/// touched by records of two groups, and the quarantine records are in one
/// group:
/// records that share any of these are connected, and
/// a connected set goes whole into one group. Each group can then be
/// planned and written on its own — in its own transaction, at the same
/// time as the others — and reads and writes only rows no other group
/// touches. Connected sets are dealt out largest first to the group with
/// the fewest records, so the groups come out about even.
pub(super) fn partition(batch: &[Processed], parts: usize) -> Vec<Vec<usize>> {
    let parts = parts.max(1);
    if parts == 1 || batch.len() < 2 {
        return vec![(0..batch.len()).collect()];
    }
    let mut sets = DisjointSets::new(batch.len());
    let mut by_raw: HashMap<i64, usize> = HashMap::with_capacity(batch.len());
    let mut by_obs: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    let mut by_line: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    // Copies of one report must meet in one group, which alone can tell
    // which of them counts.
    let mut by_report: HashMap<&str, usize> = HashMap::with_capacity(batch.len());
    // The quarantine is listed in the order its rows were written (their
    // ids): all of a batch's quarantine records go into one group, so they
    // are written in batch order. They are few.
    let mut first_quarantined = None;
    for (i, record) in batch.iter().enumerate() {
        let first = *by_raw.entry(record.raw_id()).or_insert(i);
        sets.union(first, i);
        match record {
            Processed::Observation(o) => {
                let first = *by_obs.entry(o.facts.obs_key.as_str()).or_insert(i);
                sets.union(first, i);
                let first = *by_line.entry(o.facts.line_key.as_str()).or_insert(i);
                sets.union(first, i);
                let first = *by_report.entry(o.report_id.as_str()).or_insert(i);
                sets.union(first, i);
            }
            Processed::Quarantine(_) => {
                let first = *first_quarantined.get_or_insert(i);
                sets.union(first, i);
            }
        }
    }
    // Connected sets in the order of their first record, then largest first
    // (a stable sort keeps ties in batch order, so the split is the same
    // every time for the same batch).
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for i in 0..batch.len() {
        let root = sets.find(i);
        let set = members.entry(root).or_default();
        if set.is_empty() {
            roots.push(root);
        }
        set.push(i);
    }
    let mut connected: Vec<Vec<usize>> = roots
        .iter()
        .filter_map(|root| members.remove(root))
        .collect();
    connected.sort_by_key(|set| std::cmp::Reverse(set.len()));
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); parts.min(connected.len())];
    for set in connected {
        if let Some(smallest) = groups.iter_mut().min_by_key(|g| g.len()) {
            smallest.extend(set);
        }
    }
    for group in &mut groups {
        group.sort_unstable();
    }
    groups
}

/// Union–find over record indices.
struct DisjointSets {
    parent: Vec<usize>,
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            // Path halving: each visited node skips to its grandparent.
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // The smaller index stays the root.
            let (root, child) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[child] = root;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VerdictRecord;

    fn obs(raw_id: i64, obs_key: &str, line_key: &str) -> Processed {
        let text = String::new;
        Processed::Observation(Box::new(ObservationRecord {
            raw_id,
            reprocess: false,
            facts: ObservationFacts {
                obs_key: obs_key.to_owned(),
                line_key: line_key.to_owned(),
                install_id: text(),
                account: text(),
                declared_province: None,
                declared_city: None,
                declared_carrier: None,
                egress_ip: text(),
                first_hop_ip: None,
                path_json: text(),
                engine: text(),
                agent_version: text(),
                os: text(),
            },
            // Each raw report a report of its own.
            report_id: format!("report-{raw_id}"),
            observed_at_ms: 0,
            verdict: VerdictRecord {
                verdict_key: text(),
                verdict: text(),
                reasons_json: text(),
                evidence_json: text(),
                actual_carrier: None,
                actual_province: None,
                actual_city: None,
                egress_carrier: None,
                first_hop_carrier: None,
                filled_json: text(),
                fills: crate::DeclaredFills::default(),
                data_versions_json: text(),
                trust_score: None,
                low_trust: false,
                decided_at_ms: 0,
            },
        }))
    }

    fn quarantine(raw_id: i64) -> Processed {
        Processed::Quarantine(QuarantineRecord {
            raw_id,
            reprocess: false,
            report_id: None,
            install_id: None,
            reasons_json: "[]".to_owned(),
            summary: String::new(),
            at_ms: 0,
        })
    }

    /// Which group each record landed in.
    fn group_of(groups: &[Vec<usize>], n: usize) -> Vec<usize> {
        let mut of = vec![usize::MAX; n];
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                assert_eq!(of[i], usize::MAX, "record {i} is in two groups");
                of[i] = g;
            }
        }
        assert!(
            of.iter().all(|&g| g != usize::MAX),
            "a record is in no group"
        );
        of
    }

    #[test]
    fn records_that_share_a_raw_report_observation_or_line_stay_together() {
        let batch = vec![
            obs(1, "o1", "l1"),
            obs(2, "o2", "l2"),
            obs(3, "o3", "l1"), // line of record 0
            obs(4, "o2", "l9"), // observation of record 1 (with another line)
            quarantine(2),      // raw report of record 1
            obs(5, "o5", "l5"),
            obs(6, "o6", "l6"),
            quarantine(7),      // quarantined, as record 4
            obs(8, "o8", "l9"), // line of record 3
            obs(9, "o9", "l10"),
            obs(10, "o10", "l11"),
            obs(11, "o11", "l12"),
        ];
        let groups = partition(&batch, 2);
        assert_eq!(groups.len(), 2);
        let of = group_of(&groups, batch.len());
        assert_eq!(of[0], of[2]);
        assert_eq!(of[1], of[3]);
        assert_eq!(of[1], of[4]);
        assert_eq!(of[3], of[8]);
        assert_eq!(of[4], of[7], "the quarantine is written by one group");
        for group in &groups {
            assert!(group.windows(2).all(|w| w[0] < w[1]), "not in batch order");
        }
        // The largest connected set (records 1, 3, 4, 7, 8) is joined
        // only by single records; the groups come out even.
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().max(), Some(&6), "uneven groups: {sizes:?}");
    }

    /// `obs` of `report`, with a verdict key and the reprocess flag.
    fn seen(raw_id: i64, report: &Received, key: &str, again: bool) -> Processed {
        let mut record = obs(raw_id, &report.obs_key, &report.line_key);
        if let Processed::Observation(o) = &mut record {
            o.report_id.clone_from(&report.report_id);
            o.observed_at_ms = report.at;
            o.reprocess = again;
            o.verdict.verdict_key = key.to_owned();
            o.verdict.decided_at_ms = raw_id;
        }
        record
    }

    /// What a raw report of a replay brings.
    #[derive(Debug, Clone)]
    struct Received {
        report_id: String,
        obs_key: String,
        line_key: String,
        at: i64,
    }

    /// The rows a replay of random batches holds, as a database would, and
    /// what the rules of the apply say they must hold.
    #[derive(Default)]
    struct Replay {
        seed: u64,
        states: HashMap<i64, RawState>,
        records: HashMap<i64, Received>,
        observations: HashMap<String, ObservationState>,
        lines: HashMap<String, LineRow>,
        /// Report id → the raw report that counted it.
        counted: HashMap<String, i64>,
        /// Verdict id → its key.
        verdict_keys: HashMap<i64, String>,
        ids: (i64, i64, i64),
        expected: Expected,
    }

    /// What the rules say, worked out record by record.
    #[derive(Default)]
    struct Expected {
        /// Report id → the raw report that counts it.
        counted: HashMap<String, i64>,
        /// Reports counted per observation and per line.
        obs_counts: HashMap<String, i64>,
        line_reports: HashMap<String, u64>,
        /// Per observation, its newest report's time and verdict key (ties:
        /// the one applied later).
        newest: HashMap<String, (i64, String)>,
        /// Raw reports decided as duplicates.
        duplicates: HashSet<i64>,
    }

    impl Expected {
        fn record(&mut self, record: &ObservationRecord) {
            let r = record;
            match self.counted.get(&r.report_id) {
                Some(&first) if first != r.raw_id => {
                    self.duplicates.insert(r.raw_id);
                    return;
                }
                Some(_) => {}
                None => {
                    self.counted.insert(r.report_id.clone(), r.raw_id);
                    *self.obs_counts.entry(r.facts.obs_key.clone()).or_default() += 1;
                    *self
                        .line_reports
                        .entry(r.facts.line_key.clone())
                        .or_default() += 1;
                }
            }
            let newest = self
                .newest
                .entry(r.facts.obs_key.clone())
                .or_insert((i64::MIN, String::new()));
            if r.observed_at_ms >= newest.0 {
                *newest = (r.observed_at_ms, r.verdict.verdict_key.clone());
            }
        }
    }

    impl Replay {
        fn next(&mut self, n: usize) -> usize {
            self.seed = self
                .seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(self.seed >> 33).unwrap() % n
        }

        /// New reports at random times (out of order, repeating an
        /// observation now and then), copies of reports pulled from another
        /// collector, and re-decided processed ones.
        fn batch(&mut self) -> Vec<Processed> {
            let mut batch = Vec::new();
            for _ in 0..=self.next(12) {
                let key = format!("v{}", self.next(3));
                let mut processed: Vec<i64> = self
                    .states
                    .iter()
                    .filter(|(_, s)| **s == RawState::Processed)
                    .map(|(id, _)| *id)
                    .collect();
                if !processed.is_empty() && self.next(5) == 0 {
                    processed.sort_unstable();
                    let id = processed[self.next(processed.len())];
                    let report = self.records[&id].clone();
                    batch.push(seen(id, &report, &key, true));
                    continue;
                }
                self.ids.0 += 1;
                let id = self.ids.0;
                let report = if id > 1 && self.next(6) == 0 {
                    // Another node received it a little later.
                    let of = i64::try_from(self.next(usize::try_from(id - 1).unwrap())).unwrap();
                    let mut copy = self.records[&(of + 1)].clone();
                    copy.at += i64::try_from(self.next(50)).unwrap();
                    copy
                } else {
                    let line_key = format!("line{}", self.next(4));
                    Received {
                        report_id: format!("report-{id}"),
                        obs_key: format!("{line_key}/obs{}", self.next(4)),
                        line_key,
                        at: i64::try_from(self.next(1000)).unwrap(),
                    }
                };
                self.states.insert(id, RawState::Pending);
                batch.push(seen(id, &report, &key, false));
                self.records.insert(id, report);
            }
            batch
        }

        /// The observation `id`.
        fn observation(&self, id: i64) -> Option<&ObservationState> {
            self.observations.values().find(|o| o.id == id)
        }

        /// The last seen time of the observation `id`.
        fn seen_of(&self, id: i64) -> Option<i64> {
            self.observation(id).map(|o| o.last_seen)
        }

        /// Plans `batch` against the rows it touches, loading each line
        /// with its current observation's own time (what the store read
        /// before), and keeps what it writes.
        fn apply(&mut self, batch: &[Processed]) {
            let eligible = eligible(batch, &self.states);
            for (record, &applies) in batch.iter().zip(&eligible) {
                if let (Processed::Observation(o), true) = (record, applies) {
                    self.expected.record(o);
                }
            }
            let touched = touched_keys(batch, &eligible);
            let observations = touched
                .observations
                .iter()
                .filter_map(|k| self.observations.get(k).cloned())
                .collect();
            let lines = touched
                .lines
                .iter()
                .filter_map(|k| self.lines.get(k))
                .map(|line| LineState {
                    line: line.clone(),
                    current_seen: self.seen_of(line.observation_id),
                })
                .collect();
            let counted = touched
                .reports
                .iter()
                .filter_map(|k| {
                    let &raw_id = self.counted.get(k)?;
                    Some(CountedReport {
                        report_id: k.clone(),
                        first_copy: raw_id,
                        counted_in: None,
                    })
                })
                .collect();
            let loaded = Loaded {
                observations,
                lines,
                counted,
            };
            let mut plan = plan(batch, &eligible, &self.states, loaded);
            let allocate = |n: usize, last: &mut i64| -> Vec<i64> {
                (0..n)
                    .map(|_| {
                        *last += 1;
                        *last
                    })
                    .collect()
            };
            let obs_ids = allocate(plan.new_observations.len(), &mut self.ids.1);
            let verdict_ids = allocate(plan.verdicts.len(), &mut self.ids.2);
            plan.assign_ids(&obs_ids, &verdict_ids);
            for v in &plan.verdicts {
                self.verdict_keys.insert(v.id, v.record.verdict_key.clone());
            }
            for c in &plan.counted {
                let before = self.counted.insert(c.report_id.to_owned(), c.raw_id);
                assert_eq!(before, None, "report {} counted twice", c.report_id);
            }
            for o in plan
                .new_observations
                .into_iter()
                .chain(plan.changed_observations)
            {
                self.observations.insert(o.facts.obs_key.clone(), o);
            }
            for l in plan.new_lines.into_iter().chain(plan.changed_lines) {
                self.lines.insert(l.line_key.clone(), l);
            }
            for r in plan.raws {
                self.states.insert(r.id, r.state);
            }
        }

        /// The verdict key of the verdict `id`.
        fn key_of(&self, id: Option<i64>) -> Option<&str> {
            id.and_then(|id| self.verdict_keys.get(&id))
                .map(String::as_str)
        }
    }

    /// `line_states` reads a line's current observation's last seen time
    /// from the line itself: that holds only if the current observation is
    /// always one seen last. Replays random batches (reports out of order,
    /// repeats, re-decided reports) through `plan` and checks every line
    /// against its observations after each.
    #[test]
    fn the_current_observation_is_always_one_seen_last() {
        let mut replay = Replay {
            seed: 0x5EED_1234_ABCD,
            ..Replay::default()
        };
        for _ in 0..300 {
            let batch = replay.batch();
            replay.apply(&batch);
            for line in replay.lines.values() {
                let current = replay.seen_of(line.observation_id);
                assert_eq!(
                    current,
                    Some(line.last_seen_ms),
                    "line {} follows an observation last seen at {current:?}, but was \
                     seen at {}",
                    line.line_key,
                    line.last_seen_ms
                );
                let latest = replay
                    .observations
                    .values()
                    .filter(|o| o.facts.line_key == line.line_key)
                    .map(|o| o.last_seen)
                    .max();
                assert_eq!(latest, Some(line.last_seen_ms));
            }
        }
        assert!(
            replay.lines.len() == 4 && replay.observations.len() > 10,
            "the replay covers too little"
        );
    }

    /// Replays random batches — reports out of order, copies of a report
    /// pulled from another collector, in the batch of the first copy or a
    /// later one, re-decided reports — and checks after each what the
    /// rules say, worked out record by record: a report id counts once, its
    /// later copies are duplicates; an observation's latest verdict is its
    /// newest report's, and its line's verdict is its current
    /// observation's latest.
    #[test]
    fn a_report_counts_once_and_the_newest_report_decides() {
        let mut replay = Replay {
            seed: 0xC0FF_EE12_3456,
            ..Replay::default()
        };
        for _ in 0..300 {
            let batch = replay.batch();
            replay.apply(&batch);
            let expected = &replay.expected;
            for o in replay.observations.values() {
                let key = &o.facts.obs_key;
                assert_eq!(Some(&o.count), expected.obs_counts.get(key), "{key}");
                let newest = expected.newest.get(key).map(|(_, k)| k.as_str());
                assert_eq!(replay.key_of(o.latest_verdict_id), newest, "{key}");
            }
            for line in replay.lines.values() {
                let key = &line.line_key;
                assert_eq!(Some(&line.reports), expected.line_reports.get(key), "{key}");
                let current = replay.observation(line.observation_id).unwrap();
                assert_eq!(Some(line.verdict_id), current.latest_verdict_id, "{key}");
            }
            for (id, state) in &replay.states {
                let duplicate = expected.duplicates.contains(id);
                assert_eq!(*state == RawState::Duplicate, duplicate, "raw report {id}");
            }
        }
        let duplicates = replay.expected.duplicates.len();
        assert!(
            duplicates > 20 && replay.observations.len() > 10,
            "the replay covers too little: {duplicates} duplicates"
        );
    }

    #[test]
    fn a_batch_of_one_line_is_one_group_and_one_part_is_the_whole_batch() {
        let batch: Vec<Processed> = (0..5).map(|i| obs(i, &format!("o{i}"), "l")).collect();
        assert_eq!(partition(&batch, 2), vec![vec![0, 1, 2, 3, 4]]);
        let mixed = vec![obs(1, "a", "x"), obs(2, "b", "y"), quarantine(3)];
        assert_eq!(partition(&mixed, 1), vec![vec![0, 1, 2]]);
        assert_eq!(partition(&[], 2), vec![Vec::<usize>::new()]);
        let groups = partition(&mixed, 8);
        assert_eq!(groups.len(), 3, "no more groups than connected sets");
    }

    /// A line shows the fills of its current verdict only: a later report of
    /// the same observation judged without them (its IP check failed on newer
    /// data) takes them off, and one that fills puts them on.
    #[test]
    fn a_line_shows_only_its_current_verdicts_fills() {
        let report = |n: i64| Received {
            report_id: format!("report-{n}"),
            obs_key: "o1".to_owned(),
            line_key: "l1".to_owned(),
            at: n * 10,
        };
        let filling = |raw_id: i64, key: &str, city: Option<&str>| {
            let mut record = seen(raw_id, &report(raw_id), key, false);
            if let Processed::Observation(o) = &mut record {
                o.verdict.fills.city = city.map(str::to_owned);
            }
            record
        };
        let mut replay = Replay::default();
        let pulled = |replay: &mut Replay, record: Processed| {
            replay.states.insert(record.raw_id(), RawState::Pending);
            replay.apply(&[record]);
            replay.lines["l1"].declared_city.clone()
        };

        let city = pulled(&mut replay, filling(1, "compliant+city", Some("440300")));
        assert_eq!(city.as_deref(), Some("440300"));
        let city = pulled(&mut replay, filling(2, "violating_ip", None));
        assert_eq!(city, None, "the fill outlived its verdict");
        let city = pulled(&mut replay, filling(3, "compliant+city", Some("440300")));
        assert_eq!(city.as_deref(), Some("440300"));
        // An older report's verdict is history: it changes nothing.
        let city = pulled(&mut replay, filling(0, "violating_ip", None));
        assert_eq!(city.as_deref(), Some("440300"));
    }
}
