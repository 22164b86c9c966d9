//! What the store answers: plain structs mirroring the tables, serializable
//! so the command line can print them as JSON or CSV. Times are Unix ms.

use serde::Serialize;

use super::records::{ObservationFacts, VerdictRecord};

/// Where one collector's pull stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PullCursor {
    /// The collector's configured name.
    pub collector: String,
    /// The collector node the cursor belongs to (empty until a pull
    /// succeeded).
    pub node_id: String,
    /// The next pull asks for reports after this sequence number.
    #[sqlx(try_from = "i64")]
    pub after_seq: u64,
    /// The collector was told it may drop reports up to this number.
    #[sqlx(try_from = "i64")]
    pub acked_seq: u64,
    /// The last pull attempt.
    pub last_pull_at_ms: Option<i64>,
    /// The last successful pull.
    pub last_ok_at_ms: Option<i64>,
    /// The error of the last pull, cleared by a successful one.
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at_ms: Option<i64>,
    /// Reports stored from this collector, duplicates not counted.
    #[sqlx(try_from = "i64")]
    pub pulled_total: u64,
    /// The start of the last round that pulled the collector to the end of
    /// its export: every report it received before then is stored.
    pub caught_up_at_ms: Option<i64>,
}

/// A stored report, exactly as pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RawReport {
    /// The store's id of the report (increasing in pull order).
    pub id: i64,
    /// The collector it was pulled from.
    pub collector: String,
    /// The collector node that numbered it.
    pub node_id: String,
    /// The node's sequence number.
    #[sqlx(try_from = "i64")]
    pub seq: u64,
    /// The exact bytes as pulled.
    pub body: Vec<u8>,
    /// When it was pulled.
    pub pulled_at_ms: i64,
    /// The key of the observation it counted in, for a report already
    /// decided (`reprocess`): re-deciding a report never moves it to
    /// another observation, even when the observation key is now computed
    /// otherwise. `None` for a pending report.
    #[sqlx(default)]
    pub obs_key: Option<String>,
}

/// One line and its current truth.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LineRow {
    /// The line.
    pub line_key: String,
    /// The broadband account.
    pub account: String,
    /// The installation reporting the line.
    pub install_id: String,
    /// Declared (or filled) province.
    pub declared_province: Option<String>,
    /// Declared (or filled) city.
    pub declared_city: Option<String>,
    /// Declared (or filled) carrier.
    pub declared_carrier: Option<String>,
    /// Actual carrier.
    pub actual_carrier: Option<String>,
    /// Actual province.
    pub actual_province: Option<String>,
    /// Actual city.
    pub actual_city: Option<String>,
    /// The egress address of the current observation.
    pub egress_ip: String,
    /// The first public hop of the current observation.
    pub first_hop_ip: Option<String>,
    /// The current verdict.
    pub verdict: String,
    /// The current verdict's row.
    pub verdict_id: i64,
    /// Whether the current verdict came from a low-trust source.
    pub low_trust: bool,
    /// The current observation (the one seen last).
    pub observation_id: i64,
    /// Reports of the line.
    #[sqlx(try_from = "i64")]
    pub reports: u64,
    /// First report of the line.
    pub first_seen_ms: i64,
    /// Last report of the line.
    pub last_seen_ms: i64,
    /// Since when the current verdict is the line's (the decision time of
    /// the report that made it current).
    pub current_from_ms: i64,
    /// Last change of the row (a decision time).
    pub updated_at_ms: i64,
}

/// Identical observations of a line, collapsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ObservationRow {
    /// The observation's row.
    pub id: i64,
    /// What was observed.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub facts: ObservationFacts,
    /// Reports of this observation.
    #[sqlx(try_from = "i64")]
    pub count: u64,
    /// First report.
    pub first_seen_ms: i64,
    /// Last report.
    pub last_seen_ms: i64,
    /// The id of the first report.
    pub first_report_id: String,
    /// The id of the last report.
    pub last_report_id: String,
    /// The latest verdict's row.
    pub latest_verdict_id: Option<i64>,
    /// The latest verdict's key.
    pub latest_verdict_key: Option<String>,
}

/// A verdict on one observation of a line: the verdict as the pipeline
/// decided it, where it is stored and what it judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct VerdictRow {
    /// The verdict's row.
    pub id: i64,
    /// The line.
    pub line_key: String,
    /// The observation judged.
    pub observation_id: i64,
    /// The report that brought the verdict.
    pub report_id: String,
    /// When the report was observed.
    pub observed_at_ms: i64,
    /// The verdict itself.
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub record: VerdictRecord,
}

/// A verdict that was a line's current one and was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LineHistoryRow {
    /// The history row.
    pub id: i64,
    /// The line.
    pub line_key: String,
    /// The replaced verdict's row.
    pub verdict_id: i64,
    /// The replaced verdict.
    pub verdict: String,
    /// Its actual carrier.
    pub actual_carrier: Option<String>,
    /// Its actual province.
    pub actual_province: Option<String>,
    /// Its actual city.
    pub actual_city: Option<String>,
    /// Since when it was current.
    pub current_from_ms: i64,
    /// When it was replaced.
    pub replaced_at_ms: i64,
}

/// A quarantined report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct QuarantineRow {
    /// The quarantine row.
    pub id: i64,
    /// The raw report.
    pub raw_id: i64,
    /// The collector it was pulled from.
    pub collector: String,
    /// The collector node that numbered it.
    pub node_id: String,
    /// The node's sequence number.
    #[sqlx(try_from = "i64")]
    pub seq: u64,
    /// The report's id, when it could be read.
    pub report_id: Option<String>,
    /// The installation, when it could be read.
    pub install_id: Option<String>,
    /// Every reason, as JSON.
    pub reasons_json: String,
    /// One human sentence.
    pub summary: String,
    /// When it was quarantined.
    pub quarantined_at_ms: i64,
}

/// How many rows each table holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StoreCounts {
    /// Raw reports.
    #[sqlx(try_from = "i64")]
    pub raw: u64,
    /// Raw reports not applied yet.
    #[sqlx(try_from = "i64")]
    pub pending: u64,
    /// Raw reports applied as observations.
    #[sqlx(try_from = "i64")]
    pub processed: u64,
    /// Raw reports quarantined.
    #[sqlx(try_from = "i64")]
    pub quarantined: u64,
    /// Raw reports that are copies of a report counted from another raw
    /// report (the same report id, pulled from another collector).
    #[sqlx(try_from = "i64")]
    pub duplicates: u64,
    /// Distinct observations.
    #[sqlx(try_from = "i64")]
    pub observations: u64,
    /// Verdicts.
    #[sqlx(try_from = "i64")]
    pub verdicts: u64,
    /// Lines.
    #[sqlx(try_from = "i64")]
    pub lines: u64,
    /// Replaced verdicts of lines.
    #[sqlx(try_from = "i64")]
    pub line_history: u64,
}
