//! The CSV form of a report: one file per table, each with a header row and
//! the period's label as its first column (so that many periods' files
//! concatenate into one table), UTF-8 without a byte-order mark.
//!
//! | file suffix | one row per |
//! | --- | --- |
//! | `-by-carrier.csv` | declared carrier |
//! | `-by-province.csv` | declared province |
//! | `-by-city.csv` | declared city (with its province) |
//! | `-carrier-mismatches.csv` | declared and actual carrier of non-compliant lines |
//! | `-listed-lines.csv` | proxy-suspected, non-compliant or violating-IP line, with its evidence |
//! | `-quarantine.csv` | quarantine reason code |
//! | `-collectors.csv` | collector |
//! | `-probes.csv` | trace engine and agent version |
//! | `-trend.csv` | hour (day reports) or day (week and month reports) |
//! | `-summary.csv` | figure of the period's totals, with the previous period's and the change |
//!
//! `-summary.csv` is written last: when it is there, so are the others.

use super::figures::{GroupFigures, ListedLine, Named, PeriodFigures, VERDICTS};
use crate::Error;
use crate::spreadsheet::text;

/// The suffix of the CSV file written last; its presence marks the CSV form
/// of a period as written.
pub const CSV_MARKER: &str = "summary";

/// Every CSV table of a report: (file suffix without `.csv`, contents), the
/// marker table last.
pub fn csv_tables(f: &PeriodFigures) -> Result<Vec<(&'static str, Vec<u8>)>, Error> {
    Ok(vec![
        ("by-carrier", groups(f, &f.by_carrier, false)?),
        ("by-province", groups(f, &f.by_province, false)?),
        ("by-city", groups(f, &f.by_city, true)?),
        ("carrier-mismatches", carrier_mismatches(f)?),
        ("listed-lines", listed_lines(f, &f.listed_lines)?),
        ("low-trust-lines", listed_lines(f, &f.low_trust_lines)?),
        ("quarantine", quarantine(f)?),
        ("collectors", collectors(f)?),
        ("probes", probes(f)?),
        ("trend", trend(f)?),
        (CSV_MARKER, summary(f)?),
    ])
}

/// A CSV table being written.
struct Table {
    writer: csv::Writer<Vec<u8>>,
    period: String,
}

impl Table {
    fn new(f: &PeriodFigures, header: &[&str]) -> Result<Self, Error> {
        let mut table = Self {
            writer: csv::Writer::from_writer(Vec::new()),
            period: f.period.label.clone(),
        };
        let mut row = vec!["period"];
        row.extend_from_slice(header);
        table.writer.write_record(&row).map_err(csv_error)?;
        Ok(table)
    }

    fn row(&mut self, cells: Vec<String>) -> Result<(), Error> {
        let mut row = Vec::with_capacity(cells.len() + 1);
        row.push(self.period.clone());
        row.extend(cells);
        self.writer.write_record(&row).map_err(csv_error)
    }

    fn finish(self) -> Result<Vec<u8>, Error> {
        self.writer
            .into_inner()
            .map_err(|e| Error::Output(std::io::Error::other(e.to_string())))
    }
}

fn csv_error(e: csv::Error) -> Error {
    Error::Output(std::io::Error::other(e))
}

fn opt_num<T: ToString>(x: Option<T>) -> String {
    x.map(|x| x.to_string()).unwrap_or_default()
}

fn id(n: &Named) -> String {
    n.id.as_deref().map(text).unwrap_or_default()
}

fn summary(f: &PeriodFigures) -> Result<Vec<u8>, Error> {
    let mut t = Table::new(f, &["metric", "value", "previous", "change"])?;
    let (s, p) = (&f.summary, &f.previous);
    let count = |t: &mut Table, name: &str, now: u64, before: u64| {
        t.row(vec![
            name.to_owned(),
            now.to_string(),
            before.to_string(),
            (i128::from(now) - i128::from(before)).to_string(),
        ])
    };
    count(&mut t, "lines_observed", s.lines_observed, p.lines_observed)?;
    for v in VERDICTS {
        count(&mut t, v, s.verdicts.get(v), p.verdicts.get(v))?;
    }
    count(&mut t, "judged", s.judged, p.judged)?;
    t.row(vec![
        "compliance_rate".to_owned(),
        opt_num(s.compliance_rate),
        opt_num(p.compliance_rate),
        opt_num(f.change.compliance_rate),
    ])?;
    count(
        &mut t,
        "reports_received",
        s.reports_received,
        p.reports_received,
    )?;
    count(
        &mut t,
        "reports_processed",
        s.reports_processed,
        p.reports_processed,
    )?;
    count(
        &mut t,
        "reports_quarantined",
        s.reports_quarantined,
        p.reports_quarantined,
    )?;
    count(
        &mut t,
        "reports_pending",
        s.reports_pending,
        p.reports_pending,
    )?;
    count(&mut t, "installs", s.installs, p.installs)?;
    t.finish()
}

fn groups(
    f: &PeriodFigures,
    groups: &[GroupFigures],
    with_province: bool,
) -> Result<Vec<u8>, Error> {
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
    let mut t = Table::new(f, &header)?;
    for g in groups {
        let mut row = vec![id(&g.group), text(&g.group.name_zh), text(&g.group.name_en)];
        if with_province {
            row.push(g.province.as_deref().map(text).unwrap_or_default());
        }
        row.push(g.lines_observed.to_string());
        row.extend(VERDICTS.iter().map(|v| g.verdicts.get(v).to_string()));
        row.extend([
            g.judged.to_string(),
            opt_num(g.compliance_rate),
            g.previous_lines_observed.to_string(),
            opt_num(g.previous_compliance_rate),
            opt_num(g.compliance_rate_change),
        ]);
        t.row(row)?;
    }
    t.finish()
}

fn carrier_mismatches(f: &PeriodFigures) -> Result<Vec<u8>, Error> {
    let mut t = Table::new(
        f,
        &[
            "declared_carrier",
            "declared_name_zh",
            "declared_name_en",
            "actual_carrier",
            "actual_name_zh",
            "actual_name_en",
            "lines",
        ],
    )?;
    for p in &f.carrier_mismatches {
        t.row(vec![
            id(&p.declared),
            text(&p.declared.name_zh),
            text(&p.declared.name_en),
            id(&p.actual),
            text(&p.actual.name_zh),
            text(&p.actual.name_en),
            p.lines.to_string(),
        ])?;
    }
    t.finish()
}

fn listed_lines(f: &PeriodFigures, lines: &[ListedLine]) -> Result<Vec<u8>, Error> {
    let mut t = Table::new(
        f,
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
    )?;
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
            l.verdict.clone(),
        ];
        for place in [&l.declared, &l.actual] {
            row.extend(named(&place.province));
            row.extend(named(&place.city));
            row.extend(named(&place.carrier));
        }
        row.extend([
            text(&l.egress_ip),
            id(&l.egress_carrier),
            l.first_hop_ip.as_deref().map(text).unwrap_or_default(),
            id(&l.first_hop_carrier),
            l.reports.to_string(),
            l.last_report.clone(),
            codes.join(" "),
            text(&sentences.join(" | ")),
            serde_json::Value::Object(evidence).to_string(),
        ]);
        t.row(row)?;
    }
    t.finish()
}

fn quarantine(f: &PeriodFigures) -> Result<Vec<u8>, Error> {
    let mut t = Table::new(f, &["reason", "reports", "previous_reports"])?;
    for r in &f.quarantine.by_reason {
        t.row(vec![
            r.code.clone(),
            r.reports.to_string(),
            r.previous_reports.to_string(),
        ])?;
    }
    t.finish()
}

fn collectors(f: &PeriodFigures) -> Result<Vec<u8>, Error> {
    let mut t = Table::new(
        f,
        &[
            "collector",
            "reports",
            "processed",
            "quarantined",
            "pending",
            "previous_reports",
        ],
    )?;
    for c in &f.activity.by_collector {
        t.row(vec![
            text(&c.collector),
            c.reports.to_string(),
            c.processed.to_string(),
            c.quarantined.to_string(),
            c.pending.to_string(),
            c.previous_reports.to_string(),
        ])?;
    }
    t.finish()
}

fn probes(f: &PeriodFigures) -> Result<Vec<u8>, Error> {
    let mut t = Table::new(f, &["engine", "agent_version", "reports", "installs"])?;
    for p in &f.activity.by_probe {
        t.row(vec![
            text(&p.engine),
            text(&p.agent_version),
            p.reports.to_string(),
            p.installs.to_string(),
        ])?;
    }
    t.finish()
}

fn trend(f: &PeriodFigures) -> Result<Vec<u8>, Error> {
    let mut t = Table::new(
        f,
        &[
            "bucket_start",
            "label",
            "reports_received",
            "lines_observed",
            "judged",
            "compliant",
            "compliance_rate",
        ],
    )?;
    for p in &f.trend.points {
        t.row(vec![
            p.start.clone(),
            p.label.clone(),
            p.reports_received.to_string(),
            p.lines_observed.to_string(),
            p.judged.to_string(),
            p.compliant.to_string(),
            opt_num(p.compliance_rate),
        ])?;
    }
    t.finish()
}
