//! `mtr --report` / `--report-wide` and `mtr --json`.
//!
//! mtr keeps statistics per TTL rather than per probe, so a hop from mtr has
//! `sent` = `Snt`, `received` from `Rcv`, `Drop` or `Loss%` (whichever was
//! printed, in that order of preference), and `rtt_ms` = `[Avg]` when
//! anything was received (empty otherwise): the mean is the one figure that
//! stands for all the replies, where `Last`, `Best` and `Wrst` each describe
//! a single probe. Several responders at one TTL (mtr's multipath lines) all
//! go into `addrs`.

use std::collections::HashMap;

use serde_json::Value;

use super::unix::{
    finish_hops, is_host_name, paren_inner, parse_addr, parse_ttl, push_annotation,
    target_from_command_echo,
};
use super::{ParsedTrace, TraceFormat};
use crate::{Error, Hop};

/// The report's columns when its `HOST:` header line is missing.
const DEFAULT_COLUMNS: [&str; 7] = ["Loss%", "Snt", "Last", "Avg", "Best", "Wrst", "StDev"];

/// Where the fields of one hop are in a JSON document.
#[derive(Debug)]
struct JsonKeys {
    count: &'static str,
    addr: Option<&'static str>,
    host: &'static str,
    asn: &'static str,
    /// JSON key, and the report column title it stands for.
    stats: [(&'static str, &'static str); 6],
}

/// `mtr --json`: `{"report": {"mtr": {…}, "hubs": [{"count": 1, "host": …}]}}`.
const HUB_KEYS: JsonKeys = JsonKeys {
    count: "count",
    addr: None,
    host: "host",
    asn: "ASN",
    stats: [
        ("Loss%", "Loss%"),
        ("Snt", "Snt"),
        ("Rcv", "Rcv"),
        ("Drop", "Drop"),
        ("Avg", "Avg"),
        ("Last", "Last"),
    ],
};

/// The flat variant: `{"dst": …, "hops": [{"hop": 1, "ipaddr": …, "sent": …}]}`.
const FLAT_KEYS: JsonKeys = JsonKeys {
    count: "hop",
    addr: Some("ipaddr"),
    host: "host",
    asn: "asn",
    stats: [
        ("losspercent", "Loss%"),
        ("sent", "Snt"),
        ("received", "Rcv"),
        ("drop", "Drop"),
        ("avg", "Avg"),
        ("last", "Last"),
    ],
};

/// True for `mtr --json`: a JSON object with mtr's `hubs` (or the flat
/// `hops` list with `ipaddr`).
pub(super) fn looks_like_json(text: &str) -> bool {
    json_start(text).is_some_and(|json| {
        json.contains("\"hubs\"") || (json.contains("\"hops\"") && json.contains("\"ipaddr\""))
    })
}

/// True for `mtr --report`: the `HOST: … Loss%` header or `N.|--` hop lines.
pub(super) fn looks_like_report(text: &str) -> bool {
    text.lines().any(|line| {
        let body = line.trim_start();
        header_titles(body).is_some() || split_hop_number(line).is_some_and(|(_, marked, _)| marked)
    })
}

/// Parses `mtr --json` output.
pub(super) fn parse_json(text: &str) -> Result<ParsedTrace, Error> {
    let json = json_start(text).ok_or_else(|| Error::UnrecognizedTrace {
        expected: super::EXPECTED_FORMATS,
        detail: "no JSON object was found".to_owned(),
    })?;
    // Only the first value: a shell prompt may follow it.
    let value: Value = serde_json::Deserializer::from_str(json)
        .into_iter::<Value>()
        .next()
        .ok_or_else(|| json_error(0, "the JSON document is empty".to_owned()))?
        .map_err(|e| json_error(e.line(), format!("not valid JSON: {e}")))?;

    let report = value.get("report").unwrap_or(&value);
    // mtr writes `report.hubs`; some builds and wrappers write a flat
    // `hops` list with lower-case keys. The keys of each are mapped onto
    // the report's column titles.
    let (list, keys) = if let Some(hubs) = report.get("hubs").and_then(Value::as_array) {
        (hubs, &HUB_KEYS)
    } else if let Some(hops) = report.get("hops").and_then(Value::as_array) {
        (hops, &FLAT_KEYS)
    } else {
        return Err(json_error(
            0,
            "expected `report.hubs`, a list of hops".to_owned(),
        ));
    };
    let target = report
        .get("mtr")
        .unwrap_or(report)
        .get("dst")
        .and_then(Value::as_str)
        .map(str::to_owned);

    let mut hops = Vec::with_capacity(list.len());
    for (i, hub) in list.iter().enumerate() {
        let count = hub.get(keys.count).and_then(number).ok_or_else(|| {
            json_error(
                0,
                format!("hop {i} has no `{}` (its hop number)", keys.count),
            )
        })?;
        let ttl = ttl_from(count).ok_or_else(|| {
            json_error(
                0,
                format!(
                    "hop {i} has `{}` {count}, not a hop number between 1 and 255",
                    keys.count
                ),
            )
        })?;
        let mut hop = Hop::new(ttl);
        if let Some(addr) = keys.addr.and_then(|k| hub.get(k)).and_then(Value::as_str) {
            read_host(&mut hop, &[addr]);
        }
        if let Some(host) = hub.get(keys.host).and_then(Value::as_str)
            && host != "unresolved"
        {
            read_host(&mut hop, &host.split_whitespace().collect::<Vec<_>>());
        }
        if let Some(asn) = hub.get(keys.asn).and_then(Value::as_str) {
            push_asn(&mut hop, asn.trim());
        }
        let stats: HashMap<&str, f64> = keys
            .stats
            .iter()
            .filter_map(|(key, title)| hub.get(*key).and_then(number).map(|v| (*title, v)))
            .collect();
        apply_stats(&mut hop, &stats);
        hops.push(hop);
    }

    Ok(ParsedTrace {
        format: TraceFormat::MtrJson,
        target_addr: target.as_deref().and_then(parse_addr),
        target,
        max_hops: None,
        locale: None,
        hops: finish_hops(hops),
    })
}

/// Parses `mtr --report` (and `--report-wide`) output.
pub(super) fn parse_report(text: &str) -> Result<ParsedTrace, Error> {
    let mut columns: Vec<String> = DEFAULT_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    let mut hops: Vec<Hop> = Vec::new();
    let mut current: Option<usize> = None;

    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim_end();
        let body = line.trim_start();
        if let Some(titles) = header_titles(body) {
            columns = titles;
            current = None;
            continue;
        }
        if let Some((ttl_text, _, rest)) = split_hop_number(line) {
            let ttl = parse_ttl(ttl_text).ok_or_else(|| {
                report_error(
                    line_no,
                    format!("the hop number {ttl_text:?} is not between 1 and 255"),
                )
            })?;
            let hop = read_report_line(ttl, rest, &columns)
                .map_err(|reason| report_error(line_no, reason))?;
            hops.push(hop);
            current = Some(hops.len() - 1);
            continue;
        }
        if line.starts_with(char::is_whitespace)
            && let Some(hop) = current.and_then(|at| hops.get_mut(at))
        {
            read_multipath_line(hop, body);
        }
        // Otherwise `Start: …`, the prompt and command, blank lines.
    }

    if hops.is_empty() && !looks_like_report(text) {
        return Err(Error::UnrecognizedTrace {
            expected: super::EXPECTED_FORMATS,
            detail: "no mtr report lines (`  1.|-- host  0.0%  10 …`) were found".to_owned(),
        });
    }
    let target = target_from_command_echo(text, &["mtr"]);
    Ok(ParsedTrace {
        format: TraceFormat::MtrReport,
        target_addr: target.as_deref().and_then(parse_addr),
        target,
        max_hops: None,
        locale: None,
        hops: finish_hops(hops),
    })
}

/// The column titles of a report header, `HOST: <local name>  Loss%  Snt …`,
/// or of the interactive screen's ` Host  Loss%  Snt …` when one was pasted.
/// The titles give the column order (`mtr -o` can change it).
fn header_titles(body: &str) -> Option<Vec<String>> {
    let titles: Vec<String> = if let Some(rest) = body.strip_prefix("HOST:") {
        rest.split_whitespace().skip(1).map(str::to_owned).collect()
    } else if let Some(rest) = body.strip_prefix("Host ") {
        rest.split_whitespace().map(str::to_owned).collect()
    } else {
        return None;
    };
    titles
        .iter()
        .any(|t| matches!(t.as_str(), "Loss%" | "Snt" | "Rcv" | "Drop" | "Avg"))
        .then_some(titles)
}

fn json_error(line: usize, reason: String) -> Error {
    Error::MalformedTrace {
        format: TraceFormat::MtrJson,
        line,
        reason,
    }
}

fn report_error(line: usize, reason: String) -> Error {
    Error::MalformedTrace {
        format: TraceFormat::MtrReport,
        line,
        reason,
    }
}

/// The text from the first line that opens a JSON object.
fn json_start(text: &str) -> Option<&str> {
    let mut offset = 0usize;
    for line in text.split_inclusive('\n') {
        let body = line.trim_start();
        if body.starts_with('{') {
            let at = offset + (line.len() - body.len());
            return text.get(at..);
        }
        offset += line.len();
    }
    None
}

/// A JSON number, or a string holding one (older mtr wrote `"count": "1"`).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_end_matches('%').parse().ok(),
        _ => None,
    }
    .filter(|v: &f64| v.is_finite())
}

fn ttl_from(count: f64) -> Option<u8> {
    if count.fract() != 0.0 || !(1.0..=255.0).contains(&count) {
        return None;
    }
    // Checked above: integral and within 1..=255.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(count as u8)
}

/// A count of probes from a statistic; out-of-range values saturate.
fn probe_count(value: f64) -> u16 {
    // Clamped to u16's range first, so the cast cannot wrap.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let count = value.round().clamp(0.0, f64::from(u16::MAX)) as u16;
    count
}

/// Fills sent, received and the time from mtr's statistics.
fn apply_stats(hop: &mut Hop, stats: &HashMap<&str, f64>) {
    let sent = stats.get("Snt").copied().map_or(0, probe_count);
    hop.sent = sent;
    hop.received = if let Some(rcv) = stats.get("Rcv") {
        probe_count(*rcv)
    } else if let Some(drop) = stats.get("Drop") {
        sent.saturating_sub(probe_count(*drop))
    } else if let Some(loss) = stats.get("Loss%") {
        probe_count(f64::from(sent) * (100.0 - loss.clamp(0.0, 100.0)) / 100.0)
    } else {
        0
    };
    if sent > 0 {
        hop.received = hop.received.min(sent);
    }
    if hop.addrs.is_empty() && hop.names.is_empty() {
        // `???`: mtr prints zeros for a hop that never answered.
        hop.received = 0;
    }
    if hop.received > 0
        && let Some(ms) = stats.get("Avg").or_else(|| stats.get("Last"))
        && *ms >= 0.0
    {
        hop.rtt_ms.push(*ms);
    }
}

/// Reads a hop line after `N.|--`: the host, then one value per column.
fn read_report_line(ttl: u8, rest: &str, columns: &[String]) -> Result<Hop, String> {
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    if tokens.len() <= columns.len()
        && !tokens
            .iter()
            .any(|t| t.trim_end_matches('%').parse::<f64>().is_ok())
    {
        // The interactive screen prints `???` and `(waiting for reply)`
        // without statistics.
        let mut hop = Hop::new(ttl);
        read_host(&mut hop, &tokens);
        return Ok(hop);
    }
    let split = tokens.len().checked_sub(columns.len()).ok_or_else(|| {
        format!(
            "expected a host and {} columns ({}), found {} fields",
            columns.len(),
            columns.join(" "),
            tokens.len()
        )
    })?;
    let (host, values) = tokens.split_at(split);
    let mut stats: HashMap<&str, f64> = HashMap::new();
    for (column, value) in columns.iter().zip(values) {
        let parsed: f64 = value
            .trim_end_matches('%')
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("the {column} column holds {value:?}, not a number"))?;
        stats.insert(column.as_str(), parsed);
    }
    let mut hop = Hop::new(ttl);
    read_host(&mut hop, host);
    apply_stats(&mut hop, &stats);
    Ok(hop)
}

/// A multipath or detail line under a hop (``|  `|-- 10.0.0.2``, an indented
/// name, `AS1234 name`); MPLS label lines are skipped.
fn read_multipath_line(hop: &mut Hop, body: &str) {
    let text =
        body.trim_start_matches(|c: char| matches!(c, '|' | '`' | '+' | '-') || c.is_whitespace());
    if text.is_empty() || text.starts_with("[MPLS") {
        return;
    }
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let before = (hop.addrs.len(), hop.names.len());
    let mut probe = hop.clone();
    read_host(&mut probe, &tokens);
    // Only take lines that really name a responder; anything else is noise.
    if (probe.addrs.len(), probe.names.len()) != before {
        *hop = probe;
    }
}

/// The host column: optional `-z` AS/ipinfo fields, then `addr`, `name`,
/// `name (addr)`, `???` or an error such as `(no route to host)`.
fn read_host(hop: &mut Hop, tokens: &[&str]) {
    let mut rest = tokens;
    while let Some((first, tail)) = rest.split_first() {
        if is_asn(first) {
            push_asn(hop, first);
            rest = tail;
        } else {
            break;
        }
    }
    match rest {
        [] | ["???"] => {}
        [one] => {
            if let Some(addr) = parse_addr(one) {
                hop.push_addr(addr);
            } else if let Some(addr) = paren_inner(one).and_then(parse_addr) {
                hop.push_addr(addr);
            } else if is_host_name(one) {
                hop.push_name(one);
            } else if let Some(note) = paren_inner(one) {
                push_annotation(hop, note);
            }
        }
        [first, ..] if first.starts_with('(') => {
            // `(no route to host)`, `(waiting for reply)`.
            let note = rest.join(" ");
            push_annotation(hop, note.trim_start_matches('(').trim_end_matches(')'));
        }
        [.., name, last] => {
            // `name (addr)`, possibly after other ipinfo fields (-y).
            match paren_inner(last).and_then(parse_addr) {
                Some(addr) => {
                    hop.push_addr(addr);
                    if is_host_name(name) {
                        hop.push_name(name);
                    }
                }
                None => match parse_addr(last) {
                    Some(addr) => hop.push_addr(addr),
                    // `name (addr` cut off by the non-wide report.
                    None if is_host_name(name) => hop.push_name(name),
                    None => {}
                },
            }
        }
    }
}

fn is_asn(token: &str) -> bool {
    token
        .strip_prefix("AS")
        .is_some_and(|n| n == "???" || (!n.is_empty() && n.chars().all(|c| c.is_ascii_digit())))
}

/// Records `AS4134`; `AS???` (not known) says nothing.
fn push_asn(hop: &mut Hop, asn: &str) {
    if is_asn(asn) && asn != "AS???" {
        push_annotation(hop, asn);
    }
}

/// Splits `  3.|-- rest` (also `  3. rest` from old mtr and ``3.`-- ``) into
/// the hop number, whether the `|--` mark was there, and the rest.
fn split_hop_number(line: &str) -> Option<(&str, bool, &str)> {
    let (ttl, after) = super::leading_number(line)?;
    let after = after.strip_prefix('.')?;
    let rest = after.trim_start_matches(['|', '`', '-']);
    let marked = rest.len() < after.len();
    super::stands_apart(rest).then_some((ttl, marked, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_number_forms() {
        assert_eq!(
            split_hop_number("  1.|-- 10.0.0.1  0.0%"),
            Some(("1", true, " 10.0.0.1  0.0%"))
        );
        assert_eq!(
            split_hop_number("  9.`-- 10.0.0.9"),
            Some(("9", true, " 10.0.0.9"))
        );
        assert_eq!(
            split_hop_number("  2. AS???  10.0.0.2"),
            Some(("2", false, " AS???  10.0.0.2"))
        );
        assert_eq!(split_hop_number(" 1.5 ms"), None);
        assert_eq!(split_hop_number(" 1  10.0.0.1"), None);
    }

    #[test]
    fn received_from_loss() {
        let mut hop = Hop::new(1);
        hop.push_addr("192.0.2.1".parse().expect("ip"));
        let stats = HashMap::from([("Snt", 10.0), ("Loss%", 30.0), ("Avg", 1.5)]);
        apply_stats(&mut hop, &stats);
        assert_eq!((hop.sent, hop.received), (10, 7));
        assert_eq!(hop.rtt_ms, vec![1.5]);
    }
}
