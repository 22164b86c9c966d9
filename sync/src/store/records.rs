//! What the puller and the pipeline hand the store: plain row-shaped
//! records. The store only persists them, with its dedupe and current-line
//! rules; it does not interpret report bodies or JSON payloads.

/// One report as pulled from a collector, before any check: the puller's
/// own record, stored as it is (no copy of the body between the two).
pub type PulledReport = crate::PulledLine;

/// One pull from a collector, committed in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct PullBatch<'a> {
    /// The collector's configured name.
    pub collector: &'a str,
    /// The node id the collector reported for this export.
    pub node_id: &'a str,
    /// The reports of the export.
    pub reports: &'a [PulledReport],
    /// The sequence number to pull after next time.
    pub next_after: u64,
    /// When the pull happened (Unix ms).
    pub pulled_at_ms: i64,
}

/// What [`Store::commit_pull`](super::Store::commit_pull) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PullCommit {
    /// Reports stored for the first time.
    pub inserted: u64,
    /// Reports that were already stored (a re-pull); no second row.
    pub duplicates: u64,
    /// The collector's cursor after the commit (never moves back).
    pub after_seq: u64,
}

/// The result of the pipeline for one raw report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// The report failed validation.
    Quarantine(QuarantineRecord),
    /// The report is a valid observation of a line, with its verdict.
    Observation(Box<ObservationRecord>),
}

impl Processed {
    /// The raw report the record was made from.
    pub fn raw_id(&self) -> i64 {
        match self {
            Self::Quarantine(q) => q.raw_id,
            Self::Observation(o) => o.raw_id,
        }
    }

    /// Whether the record re-decides a report that was already applied.
    pub fn reprocess(&self) -> bool {
        match self {
            Self::Quarantine(q) => q.reprocess,
            Self::Observation(o) => o.reprocess,
        }
    }
}

/// A report that failed validation, with every reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRecord {
    /// The raw report.
    pub raw_id: i64,
    /// Set by `reprocess`: the raw report was applied before and this
    /// record replaces what was decided then (for a quarantined report, its
    /// reasons).
    pub reprocess: bool,
    /// The report's id, when it could be read.
    pub report_id: Option<String>,
    /// The installation, when it could be read.
    pub install_id: Option<String>,
    /// Every reason, as JSON.
    pub reasons_json: String,
    /// One human sentence for the back office.
    pub summary: String,
    /// When the report was quarantined (Unix ms).
    pub at_ms: i64,
}

/// What an observation is of: the line, what was declared for it, and the
/// egress, path and device the report saw. Identical facts of a line are one
/// observation, however many reports bring them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct ObservationFacts {
    /// The dedupe key: identical observations of a line share it.
    pub obs_key: String,
    /// The line the observation is of.
    pub line_key: String,
    /// The installation (terminal id).
    pub install_id: String,
    /// The broadband account (may be empty).
    pub account: String,
    /// The declared province (ISO 3166-2:CN), when declared.
    pub declared_province: Option<String>,
    /// The declared city (its code when the catalog knows it), when declared.
    pub declared_city: Option<String>,
    /// The declared carrier (catalog id), when declared.
    pub declared_carrier: Option<String>,
    /// The egress address as the receiver saw it.
    pub egress_ip: String,
    /// The first public hop, when the trace found one.
    pub first_hop_ip: Option<String>,
    /// The trace path, as JSON.
    pub path_json: String,
    /// The trace engine.
    pub engine: String,
    /// The agent version.
    pub agent_version: String,
    /// The device operating system.
    pub os: String,
}

/// A valid report: one observation of a line and the verdict on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationRecord {
    /// The raw report.
    pub raw_id: i64,
    /// Set by `reprocess`: the raw report was applied before; counts and
    /// seen times stay as they are, only the verdict is decided again.
    pub reprocess: bool,
    /// The report's id.
    pub report_id: String,
    /// When the observation was made (Unix ms).
    pub observed_at_ms: i64,
    /// What was observed.
    pub facts: ObservationFacts,
    /// The verdict on this observation.
    pub verdict: VerdictRecord,
}

/// The declared attributes a verdict filled from the actual ones (catalog
/// ids; a city by its code). They belong to the verdict, not to the
/// observation: reports of one observation agree on what was declared but
/// may be judged on different data, and only a verdict whose IP check passed
/// fills anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeclaredFills {
    /// The filled province.
    pub province: Option<String>,
    /// The filled city.
    pub city: Option<String>,
    /// The filled carrier.
    pub carrier: Option<String>,
}

/// A verdict on an observation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct VerdictRecord {
    /// Identifies the verdict's content: two verdicts with the same key are
    /// the same verdict, and the store keeps only the first.
    pub verdict_key: String,
    /// The verdict (`compliant`, `non_compliant`…).
    pub verdict: String,
    /// Every reason, as JSON.
    pub reasons_json: String,
    /// The evidence of each reason, as JSON.
    pub evidence_json: String,
    /// The line's actual carrier, when resolved.
    pub actual_carrier: Option<String>,
    /// The line's actual province, when resolved.
    pub actual_province: Option<String>,
    /// The line's actual city, when resolved.
    pub actual_city: Option<String>,
    /// The egress address's carrier, when resolved.
    pub egress_carrier: Option<String>,
    /// The first public hop's carrier, when resolved.
    pub first_hop_carrier: Option<String>,
    /// The declared attributes filled from the actual ones, as JSON.
    pub filled_json: String,
    /// The same fills' values: a line whose current verdict this is shows
    /// them in place of what was not declared.
    #[sqlx(skip)]
    pub fills: DeclaredFills,
    /// The versions of the data the verdict was decided on, as JSON.
    pub data_versions_json: String,
    /// The report's trust score at arrival (0–100), when its receiver
    /// scored it.
    pub trust_score: Option<i16>,
    /// Whether the report came from a low-trust source.
    pub low_trust: bool,
    /// When the verdict was decided (Unix ms).
    pub decided_at_ms: i64,
}

/// What [`Store::apply`](super::Store::apply) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplySummary {
    /// Quarantine records applied.
    pub quarantined: u64,
    /// Observation records that created a new observation.
    pub observations_new: u64,
    /// Observation records folded into an existing observation (reprocessed
    /// ones included, though they leave its counts alone).
    pub observations_repeated: u64,
    /// Observation records of a report already counted from another raw
    /// report (the same report id, pulled from another collector): marked
    /// duplicates, counted nowhere.
    pub duplicates: u64,
    /// Verdict rows written (a verdict identical to the observation's latest
    /// one writes none).
    pub verdicts_new: u64,
    /// Lines that were created or whose current verdict changed.
    pub lines_changed: u64,
    /// Records skipped because their raw report was already applied and
    /// they were not marked `reprocess`.
    pub skipped: u64,
}

impl std::ops::AddAssign<&ApplySummary> for ApplySummary {
    /// Adds what another part of a batch (or another batch) did.
    fn add_assign(&mut self, part: &ApplySummary) {
        // Destructured, so that a new counter cannot be forgotten here.
        let ApplySummary {
            quarantined,
            observations_new,
            observations_repeated,
            duplicates,
            verdicts_new,
            lines_changed,
            skipped,
        } = *part;
        self.quarantined += quarantined;
        self.observations_new += observations_new;
        self.observations_repeated += observations_repeated;
        self.duplicates += duplicates;
        self.verdicts_new += verdicts_new;
        self.lines_changed += lines_changed;
        self.skipped += skipped;
    }
}

/// Which lines [`Store::lines`](super::Store::lines) returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFilter {
    /// Declared province (ISO 3166-2:CN code), exact.
    pub province: Option<String>,
    /// Only lines whose province was not declared (nor filled).
    pub province_not_declared: bool,
    /// Declared city, exact.
    pub city: Option<String>,
    /// Declared carrier (catalog id), exact.
    pub declared_carrier: Option<String>,
    /// Only lines whose carrier was not declared (nor filled).
    pub carrier_not_declared: bool,
    /// Actual carrier (catalog id), exact.
    pub actual_carrier: Option<String>,
    /// Current verdict, exact.
    pub verdict: Option<String>,
    /// Only lines whose current verdict is (`true`) or is not (`false`)
    /// from a low-trust source.
    pub low_trust: Option<bool>,
    /// Only lines last seen at or after this time (Unix ms).
    pub seen_since_ms: Option<i64>,
    /// Only lines last seen at or before this time (Unix ms).
    pub seen_until_ms: Option<i64>,
    /// At most this many lines.
    pub limit: u32,
    /// Skip this many lines first.
    pub offset: u32,
}

impl LineFilter {
    /// What the filter asks of the declared province.
    pub fn wanted_province(&self) -> Wanted<'_> {
        Wanted::declared(self.province.as_deref(), self.province_not_declared)
    }

    /// What the filter asks of the declared carrier.
    pub fn wanted_declared_carrier(&self) -> Wanted<'_> {
        Wanted::declared(self.declared_carrier.as_deref(), self.carrier_not_declared)
    }
}

/// What a [`LineFilter`] asks of one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted<'a> {
    /// Any value, or none: the filter does not look at the column.
    Any,
    /// This value.
    Is(&'a str),
    /// No value (not declared, nor filled).
    Missing,
}

impl<'a> Wanted<'a> {
    /// An exact value when set, any otherwise.
    pub fn exact(value: Option<&'a str>) -> Self {
        value.map_or(Self::Any, Self::Is)
    }

    /// "Not declared" wins over a value: the form never sends both.
    fn declared(value: Option<&'a str>, not_declared: bool) -> Self {
        if not_declared {
            Self::Missing
        } else {
            Self::exact(value)
        }
    }

    /// Whether a line with `have` in the column passes.
    pub fn keeps(self, have: Option<&str>) -> bool {
        match self {
            Self::Any => true,
            Self::Is(want) => have == Some(want),
            Self::Missing => have.is_none(),
        }
    }
}

impl Default for LineFilter {
    fn default() -> Self {
        Self {
            province: None,
            province_not_declared: false,
            city: None,
            declared_carrier: None,
            carrier_not_declared: false,
            actual_carrier: None,
            verdict: None,
            low_trust: None,
            seen_since_ms: None,
            seen_until_ms: None,
            limit: 100,
            offset: 0,
        }
    }
}

/// One answer of a slow address source, kept until it expires.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct CachedAnswer {
    /// The source's configured name.
    pub source: String,
    /// The address, as text.
    pub ip: String,
    /// What the source said, as JSON; `None` when it knows nothing.
    pub facts_json: Option<String>,
    /// When the answer was fetched (Unix ms).
    pub fetched_at_ms: i64,
    /// When the answer stops being used (Unix ms).
    pub expires_at_ms: i64,
}
