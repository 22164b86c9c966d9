//! A report's tables, in no file format yet: the CSV form writes one file
//! per table ([`super::csvfiles`]), the Excel form one sheet per table
//! ([`super::xlsx`]). Each table has a header row and the period's label as
//! its first column (so that many periods' tables concatenate into one).
//!
//! | table | one row per |
//! | --- | --- |
//! | `by-carrier` | declared carrier |
//! | `by-province` | declared province |
//! | `by-city` | declared city (with its province) |
//! | `carrier-mismatches` | declared and actual carrier of non-compliant lines |
//! | `listed-lines` | proxy-suspected, non-compliant or violating-IP line, with its evidence |
//! | `low-trust-lines` | the same, for lines judged from a low-trust source |
//! | `quarantine` | quarantine reason code |
//! | `collectors` | collector |
//! | `probes` | trace engine and agent version |
//! | `trend` | hour (day reports) or day (week and month reports) |
//! | `summary` | figure of the period's totals, with the previous period's and the change |

use super::figures::{GroupFigures, ListedLine, Named, PeriodFigures, VERDICTS};
pub(super) use crate::spreadsheet::Cell;

/// One table: its name (the CSV file's suffix, the sheet's name), its
/// header and its rows, the period's label first in each.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Table {
    pub(super) name: &'static str,
    pub(super) header: Vec<&'static str>,
    pub(super) rows: Vec<Vec<Cell>>,
    period: String,
}

impl Table {
    fn new(f: &PeriodFigures, name: &'static str, header: &[&'static str]) -> Self {
        let mut full = vec!["period"];
        full.extend_from_slice(header);
        Self {
            name,
            header: full,
            rows: Vec::new(),
            period: f.period.label.clone(),
        }
    }

    /// A table of `rows` (each without the period) of the period
    /// 2026-11-21.
    #[cfg(test)]
    pub(super) fn for_test(
        name: &'static str,
        header: &[&'static str],
        rows: Vec<Vec<Cell>>,
    ) -> Self {
        let mut full = vec!["period"];
        full.extend_from_slice(header);
        let mut table = Self {
            name,
            header: full,
            rows: Vec::new(),
            period: "2026-11-21".to_owned(),
        };
        for row in rows {
            table.row(row);
        }
        table
    }

    fn row(&mut self, cells: Vec<Cell>) {
        let mut row = Vec::with_capacity(cells.len() + 1);
        row.push(Cell::Text(self.period.clone()));
        row.extend(cells);
        self.rows.push(row);
    }
}

/// The name of the table written last in the CSV form; its file's presence
/// marks that form of a period as written.
pub(super) const SUMMARY: &str = "summary";

/// Every table of a report, the summary last.
pub(super) fn tables(f: &PeriodFigures) -> Vec<Table> {
    vec![
        groups(f, "by-carrier", &f.by_carrier, false),
        groups(f, "by-province", &f.by_province, false),
        groups(f, "by-city", &f.by_city, true),
        carrier_mismatches(f),
        listed_lines(f, "listed-lines", &f.listed_lines),
        listed_lines(f, "low-trust-lines", &f.low_trust_lines),
        quarantine(f),
        collectors(f),
        probes(f),
        trend(f),
        summary(f),
    ]
}

fn id(n: &Named) -> Cell {
    Cell::Text(n.id.clone().unwrap_or_default())
}

fn text(s: &str) -> Cell {
    Cell::Text(s.to_owned())
}

fn summary(f: &PeriodFigures) -> Table {
    let mut t = Table::new(f, SUMMARY, &["metric", "value", "previous", "change"]);
    let (s, p) = (&f.summary, &f.previous);
    let count = |t: &mut Table, name: &str, now: u64, before: u64| {
        t.row(vec![
            text(name),
            Cell::count(now),
            Cell::count(before),
            Cell::Int(i128::from(now) - i128::from(before)),
        ]);
    };
    count(&mut t, "lines_observed", s.lines_observed, p.lines_observed);
    for v in VERDICTS {
        count(&mut t, v, s.verdicts.get(v), p.verdicts.get(v));
    }
    count(&mut t, "judged", s.judged, p.judged);
    t.row(vec![
        text("compliance_rate"),
        Cell::Rate(s.compliance_rate),
        Cell::Rate(p.compliance_rate),
        Cell::Rate(f.change.compliance_rate),
    ]);
    count(
        &mut t,
        "reports_received",
        s.reports_received,
        p.reports_received,
    );
    count(
        &mut t,
        "reports_processed",
        s.reports_processed,
        p.reports_processed,
    );
    count(
        &mut t,
        "reports_quarantined",
        s.reports_quarantined,
        p.reports_quarantined,
    );
    count(
        &mut t,
        "reports_pending",
        s.reports_pending,
        p.reports_pending,
    );
    count(&mut t, "installs", s.installs, p.installs);
    // Not a figure of the period's reports: how many collectors had not
    // been pulled past its end (their late reports may be missing).
    t.row(vec![
        text("collectors_behind"),
        Cell::count(f.collectors_behind.len() as u64),
        text(""),
        text(""),
    ]);
    t
}

fn groups(
    f: &PeriodFigures,
    name: &'static str,
    groups: &[GroupFigures],
    with_province: bool,
) -> Table {
    let mut header = vec!["id", "name_zh", "name_en"];
    if with_province {
        header.push("province");
    }
    header.push("lines_observed");
    header.extend(VERDICTS);
    header.extend([
        "judged",
        "compliance_rate",
        "previous_lines_observed",
        "previous_compliance_rate",
        "compliance_rate_change",
    ]);
    let mut t = Table::new(f, name, &header);
    for g in groups {
        let mut row = vec![id(&g.group), text(&g.group.name_zh), text(&g.group.name_en)];
        if with_province {
            row.push(text(g.province.as_deref().unwrap_or_default()));
        }
        row.push(Cell::count(g.lines_observed));
        row.extend(VERDICTS.iter().map(|v| Cell::count(g.verdicts.get(v))));
        row.extend([
            Cell::count(g.judged),
            Cell::Rate(g.compliance_rate),
            Cell::count(g.previous_lines_observed),
            Cell::Rate(g.previous_compliance_rate),
            Cell::Rate(g.compliance_rate_change),
        ]);
        t.row(row);
    }
    t
}

fn carrier_mismatches(f: &PeriodFigures) -> Table {
    let mut t = Table::new(
        f,
        "carrier-mismatches",
        &[
            "declared_carrier",
            "declared_name_zh",
            "declared_name_en",
            "actual_carrier",
            "actual_name_zh",
            "actual_name_en",
            "lines",
        ],
    );
    for p in &f.carrier_mismatches {
        t.row(vec![
            id(&p.declared),
            text(&p.declared.name_zh),
            text(&p.declared.name_en),
            id(&p.actual),
            text(&p.actual.name_zh),
            text(&p.actual.name_en),
            Cell::count(p.lines),
        ]);
    }
    t
}

fn listed_lines(f: &PeriodFigures, name: &'static str, lines: &[ListedLine]) -> Table {
    let mut t = Table::new(
        f,
        name,
        &[
            "line",
            "account",
            "install_id",
            "verdict",
            "declared_province",
            "declared_province_name",
            "declared_city",
            "declared_city_name",
            "declared_carrier",
            "declared_carrier_name",
            "actual_province",
            "actual_province_name",
            "actual_city",
            "actual_city_name",
            "actual_carrier",
            "actual_carrier_name",
            "egress_ip",
            "egress_carrier",
            "first_hop_ip",
            "first_hop_carrier",
            "reports",
            "last_report",
            "reason_codes",
            "reasons",
            "evidence",
        ],
    );
    for l in lines {
        let codes: Vec<&str> = l.reasons.iter().map(|r| r.code.as_str()).collect();
        let sentences: Vec<String> = l
            .reasons
            .iter()
            .map(|r| format!("{}: {}", r.code, r.message))
            .collect();
        let evidence: serde_json::Map<String, serde_json::Value> = l
            .reasons
            .iter()
            .map(|r| (r.code.clone(), r.evidence.clone()))
            .collect();
        let named = |n: &Named| [id(n), text(&n.name_zh)];
        let mut row = vec![
            text(&l.line),
            text(&l.account),
            text(&l.install_id),
            text(&l.verdict),
        ];
        for place in [&l.declared, &l.actual] {
            row.extend(named(&place.province));
            row.extend(named(&place.city));
            row.extend(named(&place.carrier));
        }
        row.extend([
            text(&l.egress_ip),
            id(&l.egress_carrier),
            text(l.first_hop_ip.as_deref().unwrap_or_default()),
            id(&l.first_hop_carrier),
            Cell::count(l.reports),
            text(&l.last_report),
            text(&codes.join(" ")),
            text(&sentences.join(" | ")),
            Cell::Text(serde_json::Value::Object(evidence).to_string()),
        ]);
        t.row(row);
    }
    t
}

fn quarantine(f: &PeriodFigures) -> Table {
    let mut t = Table::new(f, "quarantine", &["reason", "reports", "previous_reports"]);
    for r in &f.quarantine.by_reason {
        t.row(vec![
            text(&r.code),
            Cell::count(r.reports),
            Cell::count(r.previous_reports),
        ]);
    }
    t
}

fn collectors(f: &PeriodFigures) -> Table {
    let mut t = Table::new(
        f,
        "collectors",
        &[
            "collector",
            "reports",
            "processed",
            "quarantined",
            "pending",
            "previous_reports",
        ],
    );
    for c in &f.activity.by_collector {
        t.row(vec![
            text(&c.collector),
            Cell::count(c.reports),
            Cell::count(c.processed),
            Cell::count(c.quarantined),
            Cell::count(c.pending),
            Cell::count(c.previous_reports),
        ]);
    }
    t
}

fn probes(f: &PeriodFigures) -> Table {
    let mut t = Table::new(
        f,
        "probes",
        &["engine", "agent_version", "reports", "installs"],
    );
    for p in &f.activity.by_probe {
        t.row(vec![
            text(&p.engine),
            text(&p.agent_version),
            Cell::count(p.reports),
            Cell::count(p.installs),
        ]);
    }
    t
}

fn trend(f: &PeriodFigures) -> Table {
    let mut t = Table::new(
        f,
        "trend",
        &[
            "bucket_start",
            "label",
            "reports_received",
            "lines_observed",
            "judged",
            "compliant",
            "compliance_rate",
        ],
    );
    for p in &f.trend.points {
        t.row(vec![
            text(&p.start),
            text(&p.label),
            Cell::count(p.reports_received),
            Cell::count(p.lines_observed),
            Cell::count(p.judged),
            Cell::count(p.compliant),
            Cell::Rate(p.compliance_rate),
        ]);
    }
    t
}
