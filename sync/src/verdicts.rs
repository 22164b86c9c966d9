//! The current verdict of each line, for people (a table), spreadsheets (CSV)
//! and programs (JSON): declared vs actual attributes, the first public hop,
//! the egress address and the reasons.

use std::io::{self, Write};

use lineprobe_shared::{CarrierId, Catalog, CityCode, ProvinceCode};
use serde::{Deserialize, Serialize};

use crate::spreadsheet::text;
use crate::{Error, Filled, LineFilter, Store};

/// One line's current verdict, ready to print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictLine {
    /// `account:…` or `install:…`.
    pub line: String,
    /// The installation that reported last.
    pub install_id: String,
    /// The verdict.
    pub verdict: String,
    /// Declared province, city and carrier (catalog ids or as written).
    pub declared_province: Option<String>,
    /// Declared city.
    pub declared_city: Option<String>,
    /// Declared carrier.
    pub declared_carrier: Option<String>,
    /// The declared attributes the subscriber left out and the checks
    /// filled from the actual values (`province`, `city`, `carrier`).
    pub filled: Vec<String>,
    /// Actual carrier, province and city.
    pub actual_carrier: Option<String>,
    /// Actual province.
    pub actual_province: Option<String>,
    /// Actual city.
    pub actual_city: Option<String>,
    /// The first public hop.
    pub first_hop_ip: Option<String>,
    /// The egress address.
    pub egress_ip: String,
    /// Reports seen for the line.
    pub reports: u64,
    /// Last seen (RFC 3339).
    pub last_seen: String,
    /// The findings that decided: failed checks and, on a suspected proxy,
    /// the raised proxy signals (`carrier_mismatch`, `egress_hosting`…), or
    /// the passed checks of a compliant line.
    pub reasons: Vec<String>,
    /// Every finding with its sentence.
    pub findings: Vec<FindingText>,
    /// Whether the verdict came from a low-trust source (listed apart).
    pub low_trust: bool,
    /// The report's trust score at arrival, when its receiver scored it.
    pub trust_score: Option<u8>,
}

/// A finding as stored with the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingText {
    /// Its code.
    pub code: String,
    /// pass, fail, unknown or signal.
    pub outcome: String,
    /// Its sentence.
    pub message: String,
}

/// The current verdicts of the lines `filter` selects, newest first.
pub async fn verdict_rows(
    store: &Store,
    catalog: &Catalog,
    filter: &LineFilter,
) -> Result<Vec<VerdictLine>, Error> {
    let lines = store.lines(filter).await?;
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let verdicts = store.line_verdicts(&line.line_key).await?;
        let current = verdicts
            .iter()
            .find(|v| v.id == line.verdict_id)
            .or_else(|| verdicts.first());
        let findings: Vec<FindingText> = current
            .and_then(|v| serde_json::from_str(&v.record.reasons_json).ok())
            .unwrap_or_default();
        let filled = current
            .map(|v| Filled::attributes_in(&v.record.filled_json))
            .unwrap_or_default();
        let reasons = deciding_reasons(&line.verdict, &findings);
        out.push(VerdictLine {
            line: line.line_key.clone(),
            install_id: line.install_id.clone(),
            verdict: line.verdict.clone(),
            declared_province: line.declared_province.clone(),
            declared_city: line.declared_city.as_deref().map(|c| city_name(catalog, c)),
            declared_carrier: line.declared_carrier.clone(),
            filled,
            actual_carrier: line.actual_carrier.clone(),
            actual_province: line.actual_province.clone(),
            actual_city: line.actual_city.as_deref().map(|c| city_name(catalog, c)),
            first_hop_ip: line.first_hop_ip.clone(),
            egress_ip: line.egress_ip.clone(),
            reports: line.reports,
            last_seen: ms_to_rfc3339(line.last_seen_ms),
            reasons,
            findings,
            low_trust: line.low_trust,
            trust_score: current
                .and_then(|v| v.record.trust_score)
                .and_then(|s| u8::try_from(s).ok()),
        });
    }
    Ok(out)
}

/// The codes of the findings that decided `verdict` (see [`deciding`]).
fn deciding_reasons(verdict: &str, findings: &[FindingText]) -> Vec<String> {
    deciding(verdict, findings, |f| (&f.code, &f.outcome))
        .into_iter()
        .map(|f| f.code.clone())
        .collect()
}

/// The findings that decided `verdict`, whatever form they are read in
/// (`code_outcome` gives a finding's code and outcome): its failed checks
/// and, for a `proxy_suspected` verdict, the raised proxy signals; when
/// nothing failed, the checks that held (a compliant line) or what could
/// not be known (an indeterminate one). A signal raised on any other
/// verdict decided nothing (too weak alone: a device proxy the egress
/// contradicts). The one rule of the `verdicts` command, the back office
/// and the batch reports.
pub(crate) fn deciding<'a, T>(
    verdict: &str,
    findings: &'a [T],
    code_outcome: impl Fn(&T) -> (&str, &str),
) -> Vec<&'a T> {
    let proxy = verdict == "proxy_suspected";
    let deciding: Vec<&T> = findings
        .iter()
        .filter(|f| {
            let (_, outcome) = code_outcome(f);
            outcome == "fail" || (proxy && outcome == "signal")
        })
        .collect();
    if !deciding.is_empty() {
        return deciding;
    }
    let indeterminate = verdict == "indeterminate";
    findings
        .iter()
        .filter(|f| {
            let (code, outcome) = code_outcome(f);
            if indeterminate {
                // The proxy checks that could not run say nothing more
                // than these.
                outcome == "unknown"
                    && [
                        "carrier_unknown",
                        "region_unknown",
                        "no_public_hop",
                        "egress_not_public",
                    ]
                    .contains(&code)
            } else {
                outcome == "pass"
                    && (code.ends_with("_match") || code.ends_with("_expected_upstream"))
            }
        })
        .collect()
}

/// A city code as its name (`440300` → `深圳`); other text as it is.
fn city_name(catalog: &Catalog, city: &str) -> String {
    CityCode::new(city)
        .ok()
        .and_then(|code| catalog.city_by_code(&code))
        .map_or_else(|| city.to_owned(), |c| c.name_zh.clone())
}

/// A carrier id with its Chinese name (`china_mobile` → `中国移动`).
pub fn carrier_name(catalog: &Catalog, id: &str) -> String {
    CarrierId::new(id)
        .ok()
        .and_then(|c| catalog.carrier_by_id(&c).map(|c| c.name_zh.clone()))
        .unwrap_or_else(|| id.to_owned())
}

/// A province code with its Chinese name (`CN-GD` → `广东省`).
pub fn province_name(catalog: &Catalog, code: &str) -> String {
    ProvinceCode::new(code)
        .ok()
        .and_then(|p| catalog.province_by_id(&p).map(|p| p.name_zh.clone()))
        .unwrap_or_else(|| code.to_owned())
}

fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Prints the verdicts as an aligned table.
pub fn print_verdict_table(
    out: &mut dyn Write,
    catalog: &Catalog,
    rows: &[VerdictLine],
) -> io::Result<()> {
    let header = [
        "line",
        "verdict",
        "declared",
        "actual",
        "first hop",
        "egress",
        "reasons",
    ];
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "?".to_owned());
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            // A value filled from the actual one, not declared, is marked.
            let mark = |attribute: &str, text: String| {
                if r.filled.iter().any(|f| f == attribute) {
                    format!("{text}*")
                } else {
                    text
                }
            };
            let declared = format!(
                "{} {} {}",
                mark(
                    "carrier",
                    r.declared_carrier
                        .as_deref()
                        .map_or_else(|| "?".to_owned(), |c| carrier_name(catalog, c))
                ),
                mark(
                    "province",
                    r.declared_province
                        .as_deref()
                        .map_or_else(|| "?".to_owned(), |p| province_name(catalog, p))
                ),
                mark("city", opt(&r.declared_city)),
            );
            let actual = format!(
                "{} {} {}",
                r.actual_carrier
                    .as_deref()
                    .map_or_else(|| "?".to_owned(), |c| carrier_name(catalog, c)),
                r.actual_province
                    .as_deref()
                    .map_or_else(|| "?".to_owned(), |p| province_name(catalog, p)),
                opt(&r.actual_city),
            );
            [
                r.line.clone(),
                if r.low_trust {
                    format!("{} (low trust)", r.verdict)
                } else {
                    r.verdict.clone()
                },
                declared,
                actual,
                r.first_hop_ip.clone().unwrap_or_else(|| "-".to_owned()),
                r.egress_ip.clone(),
                r.reasons.join(", "),
            ]
        })
        .map(|row: [String; 7]| row.map(visible))
        .collect();
    let mut widths = header.map(width);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }
    let line = |out: &mut dyn Write, row: &[String]| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            text.push_str(cell);
            if i + 1 < row.len() {
                text.push_str(&" ".repeat(w - width(cell) + 2));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &header.map(str::to_owned))?;
    line(out, &widths.map(|w| "-".repeat(w)))?;
    for row in &cells {
        line(out, row)?;
    }
    if rows.iter().any(|r| !r.filled.is_empty()) {
        writeln!(
            out,
            "* not declared: filled from the actual value (the IP check passed)"
        )?;
    }
    Ok(())
}

/// Prints the verdicts as CSV with a header row.
pub fn write_verdicts_csv(out: &mut dyn Write, rows: &[VerdictLine]) -> Result<(), Error> {
    let mut w = csv::Writer::from_writer(out);
    let csv_err = |e: csv::Error| Error::Output(io::Error::other(e));
    w.write_record([
        "line",
        "install_id",
        "verdict",
        "declared_province",
        "declared_city",
        "declared_carrier",
        "actual_carrier",
        "actual_province",
        "actual_city",
        "first_hop_ip",
        "egress_ip",
        "reports",
        "last_seen",
        "reasons",
        "low_trust",
        "trust_score",
        "filled",
    ])
    .map_err(csv_err)?;
    for r in rows {
        let o = |s: &Option<String>| s.as_deref().map(text).unwrap_or_default();
        w.write_record([
            text(&r.line),
            text(&r.install_id),
            r.verdict.clone(),
            o(&r.declared_province),
            o(&r.declared_city),
            o(&r.declared_carrier),
            o(&r.actual_carrier),
            o(&r.actual_province),
            o(&r.actual_city),
            o(&r.first_hop_ip),
            text(&r.egress_ip),
            r.reports.to_string(),
            r.last_seen.clone(),
            r.reasons.join(" "),
            r.low_trust.to_string(),
            r.trust_score.map(|s| s.to_string()).unwrap_or_default(),
            r.filled.join(" "),
        ])
        .map_err(csv_err)?;
    }
    w.flush().map_err(Error::Output)
}

/// `text` for a terminal: control characters and invisible format
/// characters (a direction override reorders the rest of the row, a
/// zero-width space hides a difference) written as `\u{…}`. Reports that
/// reach the table passed the schema, which keeps control characters out;
/// the rest of the data it shows comes from collectors and networks.
fn visible(text: String) -> String {
    use std::fmt::Write as _;
    let hidden = |c: char| c.is_control() || lineprobe_shared::is_invisible_format(c);
    if !text.chars().any(hidden) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Terminal columns a text takes: CJK and full-width characters take two.
fn width(s: &str) -> usize {
    s.chars()
        .map(|c| {
            let c = c as u32;
            let wide = (0x1100..=0x115F).contains(&c)
                || (0x2E80..=0xA4CF).contains(&c)
                || (0xAC00..=0xD7A3).contains(&c)
                || (0xF900..=0xFAFF).contains(&c)
                || (0xFE30..=0xFE4F).contains(&c)
                || (0xFF00..=0xFF60).contains(&c)
                || (0xFFE0..=0xFFE6).contains(&c);
            if wide { 2 } else { 1 }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(code: &str, outcome: &str) -> FindingText {
        FindingText {
            code: code.to_owned(),
            outcome: outcome.to_owned(),
            message: String::new(),
        }
    }

    #[test]
    fn a_signal_that_decided_nothing_is_not_a_reason() {
        // A compliant line with a system proxy the egress contradicts: the
        // checks that held decided, not the proxy setting.
        let compliant = [
            finding("egress_carrier_differs_from_first_hop", "pass"),
            finding("device_proxy", "signal"),
            finding("carrier_match", "pass"),
            finding("province_match", "pass"),
            finding("city_match", "pass"),
        ];
        assert_eq!(
            deciding_reasons("compliant", &compliant),
            ["carrier_match", "province_match", "city_match"]
        );
        // A non-compliant one: the mismatch, without the proxy setting.
        let mismatch = [
            finding("device_proxy", "signal"),
            finding("carrier_mismatch", "fail"),
            finding("province_match", "pass"),
        ];
        assert_eq!(
            deciding_reasons("non_compliant", &mismatch),
            ["carrier_mismatch"]
        );
        // An indeterminate one: what could not be known.
        let unknown = [
            finding("egress_not_public", "unknown"),
            finding("device_proxy", "signal"),
            finding("carrier_unknown", "unknown"),
        ];
        assert_eq!(
            deciding_reasons("indeterminate", &unknown),
            ["egress_not_public", "carrier_unknown"]
        );
        // On a suspected proxy every raised signal and failed check counts.
        let proxy = [
            finding("egress_hosting", "signal"),
            finding("device_proxy", "signal"),
            finding("carrier_mismatch", "fail"),
        ];
        assert_eq!(
            deciding_reasons("proxy_suspected", &proxy),
            ["egress_hosting", "device_proxy", "carrier_mismatch"]
        );
    }

    #[test]
    fn chinese_takes_two_columns() {
        assert_eq!(width("深圳"), 4);
        assert_eq!(width("CN-GD"), 5);
        assert_eq!(width("中国移动 广东"), 13);
    }

    #[test]
    fn invisible_and_control_characters_are_shown_escaped() {
        assert_eq!(visible("深圳 0755".to_owned()), "深圳 0755");
        assert_eq!(visible("a\u{202E}b".to_owned()), "a\\u{202e}b");
        assert_eq!(visible("0755\u{200B}1".to_owned()), "0755\\u{200b}1");
        assert_eq!(visible("x\u{1b}[31m".to_owned()), "x\\u{001b}[31m");
    }
}
