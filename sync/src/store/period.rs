//! What the batch reports read: set-based aggregates over one window of
//! time, all taken in one read transaction so the figures of a report agree
//! with each other even while the pipeline writes.
//!
//! A raw report belongs to the window its receive time falls in: the
//! receiver's `received_at`, or the pull time for a report whose envelope
//! could not be read (`COALESCE(received_at, pulled_at)`, indexed by
//! migration 0002 and, on the outcomes it moved to, 0006). Processed and
//! quarantined reports are read from `raw_outcomes`, which copies those
//! times, so the figures never read the report bodies.
//!
//! A line is *observed* in a window when at least one of its processed
//! reports was received in it. Its *verdict for the window* is the one its
//! last report in the window (receive time, then id) was judged with: the
//! newest verdict of that report's observation decided for a report
//! received before the window's end. (When reports of one observation were
//! applied out of receive order, the observation may hold no verdict that
//! old; its first verdict is taken then.) The line is grouped by what that
//! observation declares: province, city, carrier.

use serde::Serialize;
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use super::{Backend, Store};
use crate::Error;

/// The window a report covers: `[from_ms, until_ms)`, cut into buckets of
/// `bucket_ms` for the trend. Times are Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PeriodWindow {
    /// The first millisecond in the window.
    pub from_ms: i64,
    /// The first millisecond after the window.
    pub until_ms: i64,
    /// The length of one trend bucket (an hour, a day).
    pub bucket_ms: i64,
}

/// Lines observed in a window, counted by what they declare, their actual
/// carrier and their verdict for the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PeriodLineGroup {
    /// Declared province.
    pub declared_province: Option<String>,
    /// Declared city.
    pub declared_city: Option<String>,
    /// Declared carrier.
    pub declared_carrier: Option<String>,
    /// The actual carrier of the verdict.
    pub actual_carrier: Option<String>,
    /// The verdict for the window.
    pub verdict: String,
    /// Lines.
    #[sqlx(try_from = "i64")]
    pub lines: u64,
    /// Their processed reports received in the window.
    #[sqlx(try_from = "i64")]
    pub reports: u64,
}

/// One line observed in a window whose verdict for the window is one of
/// those asked for, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PeriodLine {
    /// The line.
    pub line_key: String,
    /// The broadband account.
    pub account: String,
    /// The installation of the last report.
    pub install_id: String,
    /// Declared province.
    pub declared_province: Option<String>,
    /// Declared city.
    pub declared_city: Option<String>,
    /// Declared carrier.
    pub declared_carrier: Option<String>,
    /// Actual province.
    pub actual_province: Option<String>,
    /// Actual city.
    pub actual_city: Option<String>,
    /// Actual carrier.
    pub actual_carrier: Option<String>,
    /// The egress address.
    pub egress_ip: String,
    /// The egress address's carrier.
    pub egress_carrier: Option<String>,
    /// The first public hop.
    pub first_hop_ip: Option<String>,
    /// The first public hop's carrier.
    pub first_hop_carrier: Option<String>,
    /// The verdict for the window.
    pub verdict: String,
    /// The verdict's row.
    pub verdict_id: i64,
    /// Every finding of the verdict, as JSON.
    pub reasons_json: String,
    /// Processed reports of the line received in the window.
    #[sqlx(try_from = "i64")]
    pub reports: u64,
    /// When the last of them was received.
    pub last_report_ms: i64,
    /// Whether the verdict came from a low-trust source.
    pub low_trust: bool,
}

/// Lines observed in one trend bucket, by their verdict for the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PeriodTrendLines {
    /// The bucket: 0 for the first of the window.
    pub bucket: i64,
    /// The verdict.
    pub verdict: String,
    /// Lines.
    #[sqlx(try_from = "i64")]
    pub lines: u64,
}

/// Raw reports received in one trend bucket from one collector, by state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PeriodReports {
    /// The bucket: 0 for the first of the window.
    pub bucket: i64,
    /// The collector's configured name.
    pub collector: String,
    /// `processed`, `quarantined` or `pending`.
    pub state: String,
    /// Reports.
    #[sqlx(try_from = "i64")]
    pub reports: u64,
}

/// Processed reports received in a window from one trace engine and agent
/// version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PeriodProbeReports {
    /// The trace engine.
    pub engine: String,
    /// The agent version.
    pub agent_version: String,
    /// Reports.
    #[sqlx(try_from = "i64")]
    pub reports: u64,
    /// Distinct installations among them.
    #[sqlx(try_from = "i64")]
    pub installs: u64,
}

/// Quarantined reports received in a window that carry one reason code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PeriodQuarantineReason {
    /// The reason code (`incomplete`, `not_json`…).
    pub code: String,
    /// Reports carrying it (a report counts once per code).
    #[sqlx(try_from = "i64")]
    pub reports: u64,
}

/// Everything the database says about one window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeriodRows {
    /// Lines observed, grouped.
    pub line_groups: Vec<PeriodLineGroup>,
    /// The lines whose verdict is one of those asked for, by line key.
    pub lines: Vec<PeriodLine>,
    /// Lines per trend bucket and verdict (read with `detail`).
    pub trend_lines: Vec<PeriodTrendLines>,
    /// Reports per trend bucket, collector and state.
    pub reports: Vec<PeriodReports>,
    /// Processed reports per engine and agent version (read with
    /// `detail`).
    pub probes: Vec<PeriodProbeReports>,
    /// Quarantined reports per reason code.
    pub quarantine_reasons: Vec<PeriodQuarantineReason>,
    /// Distinct installations that sent a report received in the window
    /// (processed, or quarantined with a readable install id).
    pub installs: u64,
}

/// What [`Store::period_rows`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodQuery<'a> {
    /// The window.
    pub window: PeriodWindow,
    /// List the lines whose verdict for the window is one of these.
    pub list_verdicts: &'a [&'a str],
    /// Read the lines per trend bucket and the probe activity too.
    pub detail: bool,
}

/// The raw reports received in the window (`$1`, `$2`); `r` is the row.
/// The expression is the one migrations 0002 and 0006 index.
macro_rules! in_window {
    () => {
        "COALESCE(r.received_at, r.pulled_at) >= $1 AND COALESCE(r.received_at, r.pulled_at) < $2"
    };
}

/// The verdict of observation `x.observation_id` at time `$end`: the one
/// decided for its newest report received before it (receive time, then
/// id: an older report applied late is written later but is not newer),
/// else its first.
macro_rules! verdict_at {
    ($end:literal) => {
        concat!(
            "COALESCE((SELECT v2.id FROM verdicts v2 WHERE v2.observation_id = x.observation_id \
             AND v2.observed_at < ",
            $end,
            " ORDER BY v2.observed_at DESC, v2.id DESC LIMIT 1), \
             (SELECT MIN(v3.id) FROM verdicts v3 WHERE v3.observation_id = x.observation_id))"
        )
    };
}

/// `pl`: one row per line observed in the window — its last report's
/// observation, the verdict for the window, its report count and last
/// receive time. The reports are first folded per observation (far fewer
/// rows to rank than reports); the line's last observation is the one with
/// the latest receive time, a tie (the same millisecond) going to the one
/// with the report stored last.
macro_rules! period_lines {
    () => {
        concat!(
            "WITH po AS (SELECT r.observation_id, COUNT(*) AS reports, \
             MAX(COALESCE(r.received_at, r.pulled_at)) AS t, MAX(r.id) AS last_id \
             FROM raw_outcomes r WHERE ",
            in_window!(),
            " AND r.state = 'processed' GROUP BY r.observation_id), \
             ranked AS (SELECT o.line_key, po.observation_id, po.t, \
             ROW_NUMBER() OVER (PARTITION BY o.line_key ORDER BY po.t DESC, po.last_id DESC) AS rn, \
             CAST(SUM(po.reports) OVER (PARTITION BY o.line_key) AS BIGINT) AS reports \
             FROM po JOIN observations o ON o.id = po.observation_id), \
             pl AS (SELECT x.line_key, x.observation_id, x.t AS last_report, x.reports, ",
            verdict_at!("$2"),
            " AS verdict_id FROM ranked x WHERE x.rn = 1) "
        )
    };
}

const LINE_GROUPS: &str = concat!(
    period_lines!(),
    "SELECT o.declared_province, o.declared_city, o.declared_carrier, v.actual_carrier, \
     v.verdict, COUNT(*) AS lines, CAST(SUM(pl.reports) AS BIGINT) AS reports \
     FROM pl JOIN observations o ON o.id = pl.observation_id \
     JOIN verdicts v ON v.id = pl.verdict_id \
     GROUP BY o.declared_province, o.declared_city, o.declared_carrier, v.actual_carrier, \
     v.verdict"
);

/// The columns of a [`PeriodLine`], from `pl`, `o` and `v`.
macro_rules! line_columns {
    () => {
        "SELECT pl.line_key, o.account, o.install_id, o.declared_province, o.declared_city, \
         o.declared_carrier, v.actual_province, v.actual_city, v.actual_carrier, o.egress_ip, \
         v.egress_carrier, o.first_hop_ip, v.first_hop_carrier, v.verdict, v.id AS verdict_id, \
         v.reasons AS reasons_json, pl.reports, pl.last_report AS last_report_ms, v.low_trust \
         FROM pl JOIN observations o ON o.id = pl.observation_id \
         JOIN verdicts v ON v.id = pl.verdict_id "
    };
}

/// `$3`: a JSON array of the verdicts to list.
const LINES_SQLITE: &str = concat!(
    period_lines!(),
    line_columns!(),
    "WHERE v.verdict IN (SELECT value FROM json_each($3))"
);

/// `$3`: a text array of the verdicts to list.
const LINES_POSTGRES: &str = concat!(
    period_lines!(),
    line_columns!(),
    "WHERE v.verdict = ANY($3)"
);

/// `$3`: the bucket length. Each bucket is a window of its own: a line's
/// verdict for the bucket is its last report's in the bucket.
const TREND_LINES: &str = concat!(
    "WITH po AS (SELECT (COALESCE(r.received_at, r.pulled_at) - $1) / $3 AS bucket, \
     r.observation_id, MAX(COALESCE(r.received_at, r.pulled_at)) AS t, MAX(r.id) AS last_id \
     FROM raw_outcomes r WHERE ",
    in_window!(),
    " AND r.state = 'processed' \
     GROUP BY (COALESCE(r.received_at, r.pulled_at) - $1) / $3, r.observation_id), \
     ranked AS (SELECT po.bucket, o.line_key, po.observation_id, \
     ROW_NUMBER() OVER (PARTITION BY po.bucket, o.line_key ORDER BY po.t DESC, po.last_id DESC) \
     AS rn FROM po JOIN observations o ON o.id = po.observation_id), \
     pb AS (SELECT x.bucket, ",
    verdict_at!("$1 + (x.bucket + 1) * $3"),
    " AS verdict_id FROM ranked x WHERE x.rn = 1) \
     SELECT pb.bucket, v.verdict, COUNT(*) AS lines FROM pb JOIN verdicts v ON v.id = pb.verdict_id \
     GROUP BY pb.bucket, v.verdict"
);

/// `$3`: the bucket length. Pending reports have no outcome yet: they are
/// read from the pending list (short: what the pipeline has not reached)
/// with their reports. A duplicate is a copy of a report counted from
/// another collector, not a report of its own: it is left out.
const REPORTS: &str = concat!(
    "SELECT (COALESCE(r.received_at, r.pulled_at) - $1) / $3 AS bucket, r.collector, r.state, \
     COUNT(*) AS reports FROM (SELECT o.received_at, o.pulled_at, o.collector, o.state \
     FROM raw_outcomes o WHERE o.state <> 'duplicate' UNION ALL SELECT w.received_at, w.pulled_at, w.collector, 'pending' \
     FROM raw_pending p JOIN raw_reports w ON w.id = p.raw_id) AS r WHERE ",
    in_window!(),
    " GROUP BY (COALESCE(r.received_at, r.pulled_at) - $1) / $3, r.collector, r.state"
);

const PROBES: &str = concat!(
    "WITH po AS (SELECT r.observation_id, COUNT(*) AS reports FROM raw_outcomes r WHERE ",
    in_window!(),
    " AND r.state = 'processed' GROUP BY r.observation_id) \
     SELECT o.engine, o.agent_version, CAST(SUM(po.reports) AS BIGINT) AS reports, \
     COUNT(DISTINCT o.install_id) AS installs \
     FROM po JOIN observations o ON o.id = po.observation_id \
     GROUP BY o.engine, o.agent_version"
);

const INSTALLS: &str = concat!(
    "SELECT COUNT(*) FROM (SELECT o.install_id FROM (SELECT DISTINCT r.observation_id \
     FROM raw_outcomes r WHERE ",
    in_window!(),
    " AND r.state = 'processed') AS po JOIN observations o ON o.id = po.observation_id \
     UNION SELECT q.install_id FROM raw_outcomes r JOIN quarantine q ON q.raw_id = r.id WHERE ",
    in_window!(),
    " AND r.state = 'quarantined' AND q.install_id IS NOT NULL) AS i"
);

/// The reasons are the pipeline's JSON array of objects; anything else
/// counts as no reason rather than failing the report.
const QUARANTINE_SQLITE: &str = concat!(
    "SELECT COALESCE(CASE WHEN j.type = 'object' THEN json_extract(j.value, '$.code') END, \
     'unknown') AS code, COUNT(DISTINCT r.id) AS reports \
     FROM raw_outcomes r JOIN quarantine q ON q.raw_id = r.id, \
     json_each(CASE WHEN json_valid(q.reasons) THEN CASE WHEN json_type(q.reasons) = 'array' \
     THEN q.reasons ELSE '[]' END ELSE '[]' END) AS j WHERE ",
    in_window!(),
    " AND r.state = 'quarantined' GROUP BY 1"
);

const QUARANTINE_POSTGRES: &str = concat!(
    "SELECT COALESCE(j.value ->> 'code', 'unknown') AS code, COUNT(DISTINCT r.id) AS reports \
     FROM raw_outcomes r JOIN quarantine q ON q.raw_id = r.id \
     CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(q.reasons::jsonb) = 'array' \
     THEN q.reasons::jsonb ELSE '[]'::jsonb END) AS j(value) WHERE ",
    in_window!(),
    " AND r.state = 'quarantined' GROUP BY 1"
);

impl Store {
    /// Reads everything a batch report needs about one window, in one read
    /// transaction (a consistent snapshot on both backends). Every list
    /// comes back in a stable order, so the same data gives the same rows.
    pub async fn period_rows(&self, query: &PeriodQuery<'_>) -> Result<PeriodRows, Error> {
        let w = query.window;
        if w.from_ms >= w.until_ms || w.bucket_ms <= 0 {
            return Err(Error::StoreInput(format!(
                "cannot read the window {}..{} (buckets of {} ms): it must start before it ends \
                 and have buckets of at least 1 ms",
                w.from_ms, w.until_ms, w.bucket_ms
            )));
        }
        let context = || {
            format!(
                "cannot read the report figures of {}..{}",
                w.from_ms, w.until_ms
            )
        };
        let mut rows = match &self.backend {
            Backend::Sqlite(p) => read_sqlite(&p.readers, query).await,
            Backend::Postgres(p) => read_postgres(p, query).await,
        }
        .map_err(self.db(context))?;
        sort_rows(&mut rows);
        Ok(rows)
    }
}

/// The reads both backends share; `$lines` and `$quarantine` are the
/// statements that differ (JSON and array functions).
macro_rules! read_all {
    ($tx:expr, $query:expr, $lines:expr, $list:expr, $quarantine:expr) => {{
        let w = $query.window;
        let mut rows = PeriodRows::default();
        rows.line_groups = sqlx::query_as(LINE_GROUPS)
            .bind(w.from_ms)
            .bind(w.until_ms)
            .fetch_all(&mut *$tx)
            .await?;
        if !$query.list_verdicts.is_empty() {
            rows.lines = sqlx::query_as($lines)
                .bind(w.from_ms)
                .bind(w.until_ms)
                .bind($list)
                .fetch_all(&mut *$tx)
                .await?;
        }
        rows.reports = sqlx::query_as(REPORTS)
            .bind(w.from_ms)
            .bind(w.until_ms)
            .bind(w.bucket_ms)
            .fetch_all(&mut *$tx)
            .await?;
        if $query.detail {
            rows.trend_lines = sqlx::query_as(TREND_LINES)
                .bind(w.from_ms)
                .bind(w.until_ms)
                .bind(w.bucket_ms)
                .fetch_all(&mut *$tx)
                .await?;
            rows.probes = sqlx::query_as(PROBES)
                .bind(w.from_ms)
                .bind(w.until_ms)
                .fetch_all(&mut *$tx)
                .await?;
        }
        rows.quarantine_reasons = sqlx::query_as($quarantine)
            .bind(w.from_ms)
            .bind(w.until_ms)
            .fetch_all(&mut *$tx)
            .await?;
        let installs: i64 = sqlx::query_scalar(INSTALLS)
            .bind(w.from_ms)
            .bind(w.until_ms)
            .fetch_one(&mut *$tx)
            .await?;
        rows.installs = u64::try_from(installs).unwrap_or(0);
        rows
    }};
}

async fn read_sqlite(
    readers: &SqlitePool,
    query: &PeriodQuery<'_>,
) -> Result<PeriodRows, sqlx::Error> {
    // A read transaction: in WAL mode every statement sees the same
    // snapshot until it ends.
    let mut tx: Transaction<'static, Sqlite> = readers.begin().await?;
    let list = serde_json::to_string(query.list_verdicts).unwrap_or_else(|_| "[]".to_owned());
    let rows = read_all!(tx, query, LINES_SQLITE, list, QUARANTINE_SQLITE);
    tx.rollback().await?;
    Ok(rows)
}

async fn read_postgres(pool: &PgPool, query: &PeriodQuery<'_>) -> Result<PeriodRows, sqlx::Error> {
    let mut tx: Transaction<'static, Postgres> = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let list: Vec<&str> = query.list_verdicts.to_vec();
    let rows = read_all!(tx, query, LINES_POSTGRES, list, QUARANTINE_POSTGRES);
    tx.rollback().await?;
    Ok(rows)
}

/// Puts every list in one order, the same on both backends (byte order of
/// the texts, `None` first), whatever order the database returned.
fn sort_rows(rows: &mut PeriodRows) {
    rows.line_groups.sort_by(|a, b| {
        (
            &a.declared_province,
            &a.declared_city,
            &a.declared_carrier,
            &a.actual_carrier,
            &a.verdict,
        )
            .cmp(&(
                &b.declared_province,
                &b.declared_city,
                &b.declared_carrier,
                &b.actual_carrier,
                &b.verdict,
            ))
    });
    rows.lines.sort_by(|a, b| a.line_key.cmp(&b.line_key));
    rows.trend_lines
        .sort_by(|a, b| (a.bucket, &a.verdict).cmp(&(b.bucket, &b.verdict)));
    rows.reports.sort_by(|a, b| {
        (a.bucket, &a.collector, &a.state).cmp(&(b.bucket, &b.collector, &b.state))
    });
    rows.probes
        .sort_by(|a, b| (&a.engine, &a.agent_version).cmp(&(&b.engine, &b.agent_version)));
    rows.quarantine_reasons.sort_by(|a, b| a.code.cmp(&b.code));
}
