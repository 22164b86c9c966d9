//! The figures of one period, worked out from what the store reads for the
//! period and for the one before it. Pure: the same rows give the same
//! figures, in the same order, so a report written twice is byte-identical.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use lineprobe_shared::{CarrierId, Catalog, CityCode, ProvinceCode};
use serde::Serialize;
use serde_json::Value;

use super::period::Period;
use crate::{Error, PeriodLine, PeriodQuery, PeriodRows, Store};

/// Every verdict, in the order reports show them.
pub const VERDICTS: [&str; 5] = [
    "compliant",
    "non_compliant",
    "violating_ip",
    "proxy_suspected",
    "indeterminate",
];

/// The verdicts whose lines a report lists one by one, in the order listed.
pub const LISTED_VERDICTS: [&str; 3] = ["proxy_suspected", "non_compliant", "violating_ip"];

/// The identifier written in every JSON report.
pub const REPORT_KIND: &str = "lineprobe-compliance-report";

/// The version of the figures' layout (JSON keys, CSV columns).
pub const REPORT_FORMAT: u32 = 1;

/// The definitions a report's numbers follow, written into the JSON and the
/// HTML so that a reader need not look them up.
pub const DEFINITIONS: [(&str, &str); 8] = [
    (
        "period",
        "Periods are calendar days, ISO weeks (Monday to Sunday) and calendar months in the \
         report's UTC offset. A report belongs to the period in which the receiver got it (its \
         received_at, by the receiver's clock; the pull time when that cannot be read).",
    ),
    (
        "lines_observed",
        "Lines with at least one report received in the period that the pipeline accepted \
         (quarantined and still pending reports observe no line).",
    ),
    (
        "period_verdict",
        "A line's verdict for the period is the verdict its last report in the period was \
         judged with: the newest verdict of that report's observation decided for a report \
         received before the period's end.",
    ),
    (
        "compliance_rate",
        "compliant / judged, where judged = lines observed whose verdict for the period is not \
         indeterminate (compliant, non_compliant, violating_ip or proxy_suspected); null when no \
         line was judged. Rates are fractions rounded to 4 decimals; a change is the difference \
         of the rounded rates.",
    ),
    (
        "groups",
        "Lines are grouped by what their last report in the period declared: province, city and \
         carrier (what the subscriber left out is not declared here, even where a verdict \
         filled it from the actual values).",
    ),
    (
        "quarantine",
        "Reports received in the period that failed validation, counted once under each reason \
         code they carry (a report with two codes counts under both).",
    ),
    (
        "activity",
        "Every report received in the period, by collector and state; accepted reports by trace \
         engine and agent version; installs = distinct installations among accepted reports and \
         quarantined reports whose install id could be read.",
    ),
    (
        "collectors_behind",
        "Configured collectors not yet pulled to the end of their export since a minute after \
         the period's end when the report was written: reports they received late in the period \
         may be missing from it (its counts can only grow). Empty: every report received in the \
         period had been pulled. pulled_through is when the last round that pulled a collector \
         to its end started.",
    ),
];

/// How long after a period's end a collector must have been pulled to its
/// end for the period's reports from it to count as all pulled: a report
/// is stamped `received_at` by the collector's clock when its request
/// arrives and exported once committed a moment later, and the round's
/// start is taken by this host's clock.
pub const PULLED_PAST_END_MARGIN_MS: i64 = 60_000;

/// Verdict counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VerdictCounts {
    /// Compliant lines.
    pub compliant: u64,
    /// Lines whose actual carrier is not the declared one.
    pub non_compliant: u64,
    /// Lines used somewhere other than declared.
    pub violating_ip: u64,
    /// Lines whose traffic seems to leave through a proxy.
    pub proxy_suspected: u64,
    /// Lines nothing could be resolved for.
    pub indeterminate: u64,
}

impl VerdictCounts {
    fn add(&mut self, verdict: &str, n: u64) {
        let slot = match verdict {
            "compliant" => &mut self.compliant,
            "non_compliant" => &mut self.non_compliant,
            "violating_ip" => &mut self.violating_ip,
            "proxy_suspected" => &mut self.proxy_suspected,
            // The store holds no other verdict; anything new is not a
            // judgement the rate can count.
            _ => &mut self.indeterminate,
        };
        *slot += n;
    }

    /// The count of one verdict (one of [`VERDICTS`]).
    pub fn get(&self, verdict: &str) -> u64 {
        match verdict {
            "compliant" => self.compliant,
            "non_compliant" => self.non_compliant,
            "violating_ip" => self.violating_ip,
            "proxy_suspected" => self.proxy_suspected,
            "indeterminate" => self.indeterminate,
            _ => 0,
        }
    }

    /// All lines.
    pub fn total(&self) -> u64 {
        self.judged() + self.indeterminate
    }

    /// Lines with a verdict other than indeterminate.
    pub fn judged(&self) -> u64 {
        self.compliant + self.non_compliant + self.violating_ip + self.proxy_suspected
    }

    /// compliant / judged, rounded to 4 decimals; `None` when none was
    /// judged.
    pub fn compliance_rate(&self) -> Option<f64> {
        rate(self.compliant, self.judged())
    }
}

/// A catalog entry (or a value the catalog does not know) with its names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Named {
    /// The catalog id or code (`china_mobile`, `CN-GD`, `440300`), or the
    /// text as stored; `None` when there is none.
    pub id: Option<String>,
    /// The Chinese name (`中国移动`, `广东省`, `深圳市`).
    pub name_zh: String,
    /// The English name.
    pub name_en: String,
}

/// What one period's report says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodFigures {
    /// Always [`REPORT_KIND`].
    pub report: &'static str,
    /// Always [`REPORT_FORMAT`].
    pub format: u32,
    /// The period.
    pub period: PeriodInfo,
    /// What the numbers mean.
    pub definitions: BTreeMap<&'static str, &'static str>,
    /// The period's totals.
    pub summary: Summary,
    /// The previous period's totals.
    pub previous: Summary,
    /// This period's totals minus the previous period's.
    pub change: Change,
    /// Lines by declared carrier, most lines first.
    pub by_carrier: Vec<GroupFigures>,
    /// Lines by declared province, most lines first.
    pub by_province: Vec<GroupFigures>,
    /// Lines by declared city, most lines first.
    pub by_city: Vec<GroupFigures>,
    /// Non-compliant lines by declared and actual carrier, most first.
    pub carrier_mismatches: Vec<CarrierPair>,
    /// The proxy-suspected, non-compliant and violating-IP lines, with
    /// their evidence.
    pub listed_lines: Vec<ListedLine>,
    /// The same lines whose verdict came from a low-trust source (the
    /// collector saw anomalous traffic, rejected reports, no signature or a
    /// changed key): listed apart, not hidden and not counted out.
    pub low_trust_lines: Vec<ListedLine>,
    /// Quarantined reports.
    pub quarantine: QuarantineFigures,
    /// Probe activity.
    pub activity: Activity,
    /// The period bucket by bucket (hours of a day, days of a week or month).
    pub trend: Trend,
    /// Configured collectors not yet pulled past the period's end when the
    /// report was written (see the definition `collectors_behind`).
    pub collectors_behind: Vec<CollectorBehind>,
}

/// A collector not yet pulled past the end of a report's period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectorBehind {
    /// The collector's configured name.
    pub collector: String,
    /// When the last round that pulled it to its end started (RFC 3339, in
    /// the report's offset); `None` when none ever did.
    pub pulled_through: Option<String>,
}

/// Which period a report covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeriodInfo {
    /// `day`, `week` or `month`.
    pub kind: &'static str,
    /// `2026-11-21`, `2026-W47`, `2026-11`.
    pub label: String,
    /// Its first instant (RFC 3339, in the offset).
    pub start: String,
    /// The first instant after it.
    pub end: String,
    /// The offset the period is taken in (`+08:00`).
    pub utc_offset: String,
    /// Its days.
    pub days: u32,
    /// The label of the period before it.
    pub previous_label: String,
}

/// A period's totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The period's label.
    pub period: String,
    /// Lines observed.
    pub lines_observed: u64,
    /// Their verdicts for the period.
    pub verdicts: VerdictCounts,
    /// Lines judged (verdict other than indeterminate).
    pub judged: u64,
    /// compliant / judged.
    pub compliance_rate: Option<f64>,
    /// Reports received, in every state.
    pub reports_received: u64,
    /// Reports accepted by the pipeline.
    pub reports_processed: u64,
    /// Reports quarantined.
    pub reports_quarantined: u64,
    /// Reports not processed yet (a report written while some are pending
    /// changes once they are).
    pub reports_pending: u64,
    /// Distinct installations.
    pub installs: u64,
}

/// This period's totals minus the previous period's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Lines observed.
    pub lines_observed: i64,
    /// Each verdict's count.
    pub verdicts: BTreeMap<&'static str, i64>,
    /// Lines judged.
    pub judged: i64,
    /// The difference of the rounded rates; `None` when either is.
    pub compliance_rate: Option<f64>,
    /// Reports received.
    pub reports_received: i64,
    /// Reports quarantined.
    pub reports_quarantined: i64,
    /// Distinct installations.
    pub installs: i64,
}

/// The lines of one group (a carrier, a province, a city).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupFigures {
    /// The group.
    #[serde(flatten)]
    pub group: Named,
    /// For a city: its province's code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub province: Option<String>,
    /// Lines observed.
    pub lines_observed: u64,
    /// Their verdicts.
    pub verdicts: VerdictCounts,
    /// Lines judged.
    pub judged: u64,
    /// compliant / judged.
    pub compliance_rate: Option<f64>,
    /// Lines observed in the previous period.
    pub previous_lines_observed: u64,
    /// The previous period's rate.
    pub previous_compliance_rate: Option<f64>,
    /// The difference of the rates.
    pub compliance_rate_change: Option<f64>,
}

/// Non-compliant lines sold as one carrier and running over another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CarrierPair {
    /// The declared carrier.
    pub declared: Named,
    /// The actual carrier.
    pub actual: Named,
    /// Lines.
    pub lines: u64,
}

/// Declared or actual province, city and carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    /// The province.
    pub province: Named,
    /// The city.
    pub city: Named,
    /// The carrier.
    pub carrier: Named,
}

/// One listed line with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListedLine {
    /// `account:…` or `install:…`.
    pub line: String,
    /// The broadband account.
    pub account: String,
    /// The installation of its last report.
    pub install_id: String,
    /// Its verdict for the period.
    pub verdict: String,
    /// What was declared.
    pub declared: Place,
    /// What was found.
    pub actual: Place,
    /// The egress address.
    pub egress_ip: String,
    /// Its carrier.
    pub egress_carrier: Named,
    /// The first public hop.
    pub first_hop_ip: Option<String>,
    /// Its carrier.
    pub first_hop_carrier: Named,
    /// Its reports received in the period.
    pub reports: u64,
    /// When the last of them was received (RFC 3339, in the offset).
    pub last_report: String,
    /// The findings that decided the verdict (failed checks, raised proxy
    /// signals), each with its evidence.
    pub reasons: Vec<ListedReason>,
    /// Whether the verdict came from a low-trust source.
    pub low_trust: bool,
}

/// One finding of a listed line's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListedReason {
    /// Its code (`carrier_mismatch`, `egress_hosting`…).
    pub code: String,
    /// `fail` or `signal`.
    pub outcome: String,
    /// Its sentence.
    pub message: String,
    /// The values compared.
    pub evidence: Value,
}

/// Quarantined reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineFigures {
    /// Reports quarantined in the period.
    pub reports: u64,
    /// In the previous period.
    pub previous_reports: u64,
    /// The difference.
    pub change: i64,
    /// By reason code, most reports first.
    pub by_reason: Vec<ReasonCount>,
}

/// Quarantined reports carrying one reason code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    /// The code.
    pub code: String,
    /// Reports in the period.
    pub reports: u64,
    /// Reports in the previous period.
    pub previous_reports: u64,
}

/// Probe activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// Reports by collector.
    pub by_collector: Vec<CollectorActivity>,
    /// Accepted reports by trace engine and agent version.
    pub by_probe: Vec<ProbeActivity>,
}

/// Reports received through one collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectorActivity {
    /// The collector's configured name.
    pub collector: String,
    /// Reports received.
    pub reports: u64,
    /// Accepted.
    pub processed: u64,
    /// Quarantined.
    pub quarantined: u64,
    /// Not processed yet.
    pub pending: u64,
    /// Reports received in the previous period.
    pub previous_reports: u64,
}

/// Accepted reports from one trace engine and agent version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeActivity {
    /// The trace engine (`trippy-core`, `system:tracert`…).
    pub engine: String,
    /// The agent version.
    pub agent_version: String,
    /// Reports.
    pub reports: u64,
    /// Distinct installations.
    pub installs: u64,
}

/// The period bucket by bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trend {
    /// `hour` or `day`.
    pub bucket: &'static str,
    /// One point per bucket, in time order.
    pub points: Vec<TrendPoint>,
}

/// One trend bucket. Lines are counted as for a period of their own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendPoint {
    /// Its first instant (RFC 3339, in the offset).
    pub start: String,
    /// A short label (`08:00`, `11-21`).
    pub label: String,
    /// Reports received.
    pub reports_received: u64,
    /// Lines observed in the bucket.
    pub lines_observed: u64,
    /// Those judged.
    pub judged: u64,
    /// Those compliant.
    pub compliant: u64,
    /// compliant / judged.
    pub compliance_rate: Option<f64>,
}

/// Reads the rows of `period` and of the one before it and works out the
/// figures.
pub async fn period_figures(
    store: &Store,
    catalog: &Catalog,
    period: Period,
    offset: FixedOffset,
) -> Result<PeriodFigures, Error> {
    let current = store
        .period_rows(&PeriodQuery {
            window: period.window(offset),
            list_verdicts: &LISTED_VERDICTS,
            detail: true,
        })
        .await?;
    let previous = store
        .period_rows(&PeriodQuery {
            window: period.previous().window(offset),
            list_verdicts: &[],
            detail: false,
        })
        .await?;
    Ok(build_figures(period, offset, catalog, &current, &previous))
}

/// Works out the figures of `period` from its rows and the previous
/// period's.
pub fn build_figures(
    period: Period,
    offset: FixedOffset,
    catalog: &Catalog,
    current: &PeriodRows,
    previous: &PeriodRows,
) -> PeriodFigures {
    let names = Names(catalog);
    let summary = summary_of(&period.label(), current);
    let previous_summary = summary_of(&period.previous().label(), previous);
    let change = change(&summary, &previous_summary);
    let (low_trust_lines, listed_lines): (Vec<ListedLine>, Vec<ListedLine>) =
        listed_lines(&names, offset, &current.lines)
            .into_iter()
            .partition(|l| l.low_trust);
    PeriodFigures {
        report: REPORT_KIND,
        format: REPORT_FORMAT,
        period: PeriodInfo {
            kind: period.kind().as_str(),
            label: period.label(),
            start: rfc3339(period.starts_at(offset)),
            end: rfc3339(period.ends_at(offset)),
            utc_offset: offset.to_string(),
            days: period.days(),
            previous_label: period.previous().label(),
        },
        definitions: DEFINITIONS.into_iter().collect(),
        summary,
        previous: previous_summary,
        change,
        by_carrier: groups(current, previous, |g| {
            (
                names.carrier(g.declared_carrier.as_deref(), Missing::Undeclared),
                None,
            )
        }),
        by_province: groups(current, previous, |g| {
            (
                names.province(g.declared_province.as_deref(), Missing::Undeclared),
                None,
            )
        }),
        by_city: groups(current, previous, |g| {
            (
                names.city(g.declared_city.as_deref(), Missing::Undeclared),
                g.declared_province.clone(),
            )
        }),
        carrier_mismatches: carrier_mismatches(&names, current),
        listed_lines,
        low_trust_lines,
        quarantine: quarantine(current, previous),
        activity: activity(current, previous),
        trend: trend(period, offset, current),
        collectors_behind: Vec::new(),
    }
}

/// The collectors of `configured` whose cursor in `cursors` was not pulled
/// to its end since [`PULLED_PAST_END_MARGIN_MS`] after `period` ended.
pub fn collectors_behind(
    period: Period,
    offset: FixedOffset,
    configured: &[String],
    cursors: &[crate::PullCursor],
) -> Vec<CollectorBehind> {
    let due = period.ends_at(offset).timestamp_millis() + PULLED_PAST_END_MARGIN_MS;
    configured
        .iter()
        .filter_map(|name| {
            let through = cursors
                .iter()
                .find(|c| c.collector == *name)
                .and_then(|c| c.caught_up_at_ms);
            (through < Some(due)).then(|| CollectorBehind {
                collector: name.clone(),
                pulled_through: through
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| rfc3339(t.with_timezone(&offset))),
            })
        })
        .collect()
}

fn summary_of(label: &str, rows: &PeriodRows) -> Summary {
    let mut verdicts = VerdictCounts::default();
    for g in &rows.line_groups {
        verdicts.add(&g.verdict, g.lines);
    }
    let state = |s: &str| -> u64 {
        rows.reports
            .iter()
            .filter(|c| c.state == s)
            .map(|c| c.reports)
            .sum()
    };
    Summary {
        period: label.to_owned(),
        lines_observed: verdicts.total(),
        verdicts,
        judged: verdicts.judged(),
        compliance_rate: verdicts.compliance_rate(),
        reports_received: rows.reports.iter().map(|c| c.reports).sum(),
        reports_processed: state("processed"),
        reports_quarantined: state("quarantined"),
        reports_pending: state("pending"),
        installs: rows.installs,
    }
}

fn change(now: &Summary, before: &Summary) -> Change {
    Change {
        lines_observed: diff(now.lines_observed, before.lines_observed),
        verdicts: VERDICTS
            .into_iter()
            .map(|v| (v, diff(now.verdicts.get(v), before.verdicts.get(v))))
            .collect(),
        judged: diff(now.judged, before.judged),
        compliance_rate: rate_change(now.compliance_rate, before.compliance_rate),
        reports_received: diff(now.reports_received, before.reports_received),
        reports_quarantined: diff(now.reports_quarantined, before.reports_quarantined),
        installs: diff(now.installs, before.installs),
    }
}

/// Groups the lines of both periods by `key` (the group's names, and a
/// city's province), most lines first.
fn groups<F>(current: &PeriodRows, previous: &PeriodRows, key: F) -> Vec<GroupFigures>
where
    F: Fn(&crate::PeriodLineGroup) -> (Named, Option<String>),
{
    let mut by: BTreeMap<(Named, Option<String>), (VerdictCounts, VerdictCounts)> = BTreeMap::new();
    for g in &current.line_groups {
        by.entry(key(g)).or_default().0.add(&g.verdict, g.lines);
    }
    for g in &previous.line_groups {
        by.entry(key(g)).or_default().1.add(&g.verdict, g.lines);
    }
    let mut out: Vec<GroupFigures> = by
        .into_iter()
        .map(|((group, province), (now, before))| GroupFigures {
            group,
            province,
            lines_observed: now.total(),
            verdicts: now,
            judged: now.judged(),
            compliance_rate: now.compliance_rate(),
            previous_lines_observed: before.total(),
            previous_compliance_rate: before.compliance_rate(),
            compliance_rate_change: rate_change(now.compliance_rate(), before.compliance_rate()),
        })
        .collect();
    // Most lines first; the not-declared group after the named ones of the
    // same size; then by id (the map's order, kept by the stable sort).
    out.sort_by_key(|g| (Reverse(g.lines_observed), g.group.id.is_none()));
    out
}

fn carrier_mismatches(names: &Names<'_>, rows: &PeriodRows) -> Vec<CarrierPair> {
    let mut by: BTreeMap<(Named, Named), u64> = BTreeMap::new();
    for g in rows
        .line_groups
        .iter()
        .filter(|g| g.verdict == "non_compliant")
    {
        let declared = names.carrier(g.declared_carrier.as_deref(), Missing::Undeclared);
        let actual = names.carrier(g.actual_carrier.as_deref(), Missing::Unknown);
        *by.entry((declared, actual)).or_default() += g.lines;
    }
    let mut out: Vec<CarrierPair> = by
        .into_iter()
        .map(|((declared, actual), lines)| CarrierPair {
            declared,
            actual,
            lines,
        })
        .collect();
    out.sort_by_key(|p| Reverse(p.lines));
    out
}

fn listed_lines(names: &Names<'_>, offset: FixedOffset, lines: &[PeriodLine]) -> Vec<ListedLine> {
    let mut out: Vec<ListedLine> = lines
        .iter()
        .map(|l| ListedLine {
            line: l.line_key.clone(),
            account: l.account.clone(),
            install_id: l.install_id.clone(),
            verdict: l.verdict.clone(),
            declared: Place {
                province: names.province(l.declared_province.as_deref(), Missing::Undeclared),
                city: names.city(l.declared_city.as_deref(), Missing::Undeclared),
                carrier: names.carrier(l.declared_carrier.as_deref(), Missing::Undeclared),
            },
            actual: Place {
                province: names.province(l.actual_province.as_deref(), Missing::Unknown),
                city: names.city(l.actual_city.as_deref(), Missing::Unknown),
                carrier: names.carrier(l.actual_carrier.as_deref(), Missing::Unknown),
            },
            egress_ip: l.egress_ip.clone(),
            egress_carrier: names.carrier(l.egress_carrier.as_deref(), Missing::Unknown),
            first_hop_ip: l.first_hop_ip.clone(),
            first_hop_carrier: names.carrier(l.first_hop_carrier.as_deref(), Missing::Unknown),
            reports: l.reports,
            last_report: DateTime::from_timestamp_millis(l.last_report_ms)
                .map(|t| rfc3339(t.with_timezone(&offset)))
                .unwrap_or_default(),
            reasons: deciding_reasons(&l.verdict, &l.reasons_json),
            low_trust: l.low_trust,
        })
        .collect();
    let rank = |v: &str| LISTED_VERDICTS.iter().position(|x| *x == v);
    out.sort_by(|a, b| {
        (rank(&a.verdict), &a.declared.province.id, &a.line).cmp(&(
            rank(&b.verdict),
            &b.declared.province.id,
            &b.line,
        ))
    });
    out
}

/// The findings that decided a verdict, from its stored reasons (the
/// `verdicts` command's rule, [`crate::verdicts::deciding`]).
fn deciding_reasons(verdict: &str, reasons_json: &str) -> Vec<ListedReason> {
    let findings: Vec<Value> = serde_json::from_str(reasons_json).unwrap_or_default();
    let text = |f: &Value, key: &str| f.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let all: Vec<ListedReason> = findings
        .iter()
        .map(|f| ListedReason {
            code: text(f, "code"),
            outcome: text(f, "outcome"),
            message: text(f, "message"),
            evidence: f.get("evidence").cloned().unwrap_or(Value::Null),
        })
        .collect();
    crate::verdicts::deciding(verdict, &all, |r| (&r.code, &r.outcome))
        .into_iter()
        .cloned()
        .collect()
}

fn quarantine(current: &PeriodRows, previous: &PeriodRows) -> QuarantineFigures {
    let quarantined = |rows: &PeriodRows| -> u64 {
        rows.reports
            .iter()
            .filter(|c| c.state == "quarantined")
            .map(|c| c.reports)
            .sum()
    };
    let mut by: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in &current.quarantine_reasons {
        by.entry(&r.code).or_default().0 += r.reports;
    }
    for r in &previous.quarantine_reasons {
        by.entry(&r.code).or_default().1 += r.reports;
    }
    let mut by_reason: Vec<ReasonCount> = by
        .into_iter()
        .map(|(code, (reports, previous_reports))| ReasonCount {
            code: code.to_owned(),
            reports,
            previous_reports,
        })
        .collect();
    by_reason.sort_by_key(|r| Reverse(r.reports));
    let (now, before) = (quarantined(current), quarantined(previous));
    QuarantineFigures {
        reports: now,
        previous_reports: before,
        change: diff(now, before),
        by_reason,
    }
}

fn activity(current: &PeriodRows, previous: &PeriodRows) -> Activity {
    let mut by: BTreeMap<String, CollectorActivity> = BTreeMap::new();
    for c in &current.reports {
        let a = collector_entry(&mut by, &c.collector);
        a.reports += c.reports;
        match c.state.as_str() {
            "processed" => a.processed += c.reports,
            "quarantined" => a.quarantined += c.reports,
            _ => a.pending += c.reports,
        }
    }
    for c in &previous.reports {
        collector_entry(&mut by, &c.collector).previous_reports += c.reports;
    }
    let mut probes: Vec<ProbeActivity> = current
        .probes
        .iter()
        .map(|p| ProbeActivity {
            engine: p.engine.clone(),
            agent_version: p.agent_version.clone(),
            reports: p.reports,
            installs: p.installs,
        })
        .collect();
    probes.sort_by_key(|p| Reverse(p.reports));
    Activity {
        by_collector: by.into_values().collect(),
        by_probe: probes,
    }
}

fn collector_entry<'m>(
    by: &'m mut BTreeMap<String, CollectorActivity>,
    name: &str,
) -> &'m mut CollectorActivity {
    by.entry(name.to_owned())
        .or_insert_with(|| CollectorActivity {
            collector: name.to_owned(),
            reports: 0,
            processed: 0,
            quarantined: 0,
            pending: 0,
            previous_reports: 0,
        })
}

fn trend(period: Period, offset: FixedOffset, rows: &PeriodRows) -> Trend {
    let buckets = period.buckets();
    let start = period.starts_at(offset);
    let hourly = period.bucket_ms() < 86_400_000;
    let points = (0..buckets)
        .map(|i| {
            let bucket = i64::from(i);
            let mut verdicts = VerdictCounts::default();
            for t in rows.trend_lines.iter().filter(|t| t.bucket == bucket) {
                verdicts.add(&t.verdict, t.lines);
            }
            let at = start + chrono::Duration::milliseconds(bucket * period.bucket_ms());
            TrendPoint {
                start: rfc3339(at),
                label: if hourly {
                    at.format("%H:00").to_string()
                } else {
                    at.format("%m-%d").to_string()
                },
                reports_received: rows
                    .reports
                    .iter()
                    .filter(|t| t.bucket == bucket)
                    .map(|t| t.reports)
                    .sum(),
                lines_observed: verdicts.total(),
                judged: verdicts.judged(),
                compliant: verdicts.compliant,
                compliance_rate: verdicts.compliance_rate(),
            }
        })
        .collect();
    Trend {
        bucket: if hourly { "hour" } else { "day" },
        points,
    }
}

/// What an absent value means where it is shown.
#[derive(Debug, Clone, Copy)]
enum Missing {
    /// Nothing was declared.
    Undeclared,
    /// Nothing could be found out.
    Unknown,
}

impl Missing {
    fn named(self) -> Named {
        let (zh, en) = match self {
            Self::Undeclared => ("未申报", "not declared"),
            Self::Unknown => ("未知", "unknown"),
        };
        Named {
            id: None,
            name_zh: zh.to_owned(),
            name_en: en.to_owned(),
        }
    }
}

/// Catalog names of carriers, provinces and cities.
struct Names<'a>(&'a Catalog);

impl Names<'_> {
    fn carrier(&self, id: Option<&str>, missing: Missing) -> Named {
        let Some(id) = id else {
            return missing.named();
        };
        let found = CarrierId::new(id)
            .ok()
            .and_then(|c| self.0.carrier_by_id(&c))
            .map(|c| (c.name_zh.clone(), c.name_en.clone()));
        known(id, found)
    }

    fn province(&self, code: Option<&str>, missing: Missing) -> Named {
        let Some(code) = code else {
            return missing.named();
        };
        let found = ProvinceCode::new(code)
            .ok()
            .and_then(|p| self.0.province_by_id(&p))
            .map(|p| (p.name_zh.clone(), p.name_en.clone()));
        known(code, found)
    }

    fn city(&self, city: Option<&str>, missing: Missing) -> Named {
        let Some(city) = city else {
            return missing.named();
        };
        let found = CityCode::new(city)
            .ok()
            .and_then(|c| self.0.city_by_code(&c))
            .map(|c| (c.name_zh.clone(), c.name_en.clone()));
        known(city, found)
    }
}

/// A value with its catalog names, or itself as both names when the
/// catalog does not know it (a city written as free text).
fn known(id: &str, names: Option<(String, String)>) -> Named {
    let (name_zh, name_en) = names.unwrap_or_else(|| (id.to_owned(), id.to_owned()));
    Named {
        id: Some(id.to_owned()),
        name_zh,
        name_en,
    }
}

fn rfc3339(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// `part / whole`, rounded to 4 decimals.
#[allow(
    clippy::cast_precision_loss,
    reason = "line counts stay far below 2^52, where f64 is exact"
)]
fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| round4(part as f64 / whole as f64))
}

fn rate_change(now: Option<f64>, before: Option<f64>) -> Option<f64> {
    Some(round4(now? - before?))
}

fn round4(x: f64) -> f64 {
    let r = (x * 10_000.0).round() / 10_000.0;
    // No "-0.0" in the files.
    if r == 0.0 { 0.0 } else { r }
}

fn diff(now: u64, before: u64) -> i64 {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let before = i64::try_from(before).unwrap_or(i64::MAX);
    now.saturating_sub(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_line_shows_what_decided_its_verdict_only() {
        let json = r#"[{"code":"device_proxy","outcome":"signal","message":"a proxy is set"},
            {"code":"carrier_mismatch","outcome":"fail","message":"Telecom, not Mobile"},
            {"code":"province_match","outcome":"pass","message":"same province"}]"#;
        let codes = |verdict: &str| -> Vec<String> {
            deciding_reasons(verdict, json)
                .into_iter()
                .map(|r| r.code)
                .collect()
        };
        // The weak signal the verdict overruled is no reason of it.
        assert_eq!(codes("non_compliant"), ["carrier_mismatch"]);
        assert_eq!(
            codes("proxy_suspected"),
            ["device_proxy", "carrier_mismatch"]
        );
        let held = r#"[{"code":"carrier_match","outcome":"pass"},{"code":"device_proxy","outcome":"signal"}]"#;
        let reasons = deciding_reasons("compliant", held);
        assert_eq!(reasons.len(), 1);
        assert_eq!(reasons[0].code, "carrier_match");
        assert!(deciding_reasons("non_compliant", "not json").is_empty());
    }
}
