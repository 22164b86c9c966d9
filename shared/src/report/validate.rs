//! Decoding a report and the one validation routine behind
//! [`Report::validate_submitted`], [`Report::validate_stored`] and
//! [`Report::violations`].

use std::collections::HashSet;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::error::Category;

use super::identity::quoted;
use super::{
    AttemptOutcome, DeclaredLine, DeviceFacts, EndpointAttempt, ReceiverEnvelope, Report,
    ReportLimits, ReportTrace, SUPPORTED_REPORT_SCHEMA_VERSIONS, Stage, TraceEngine, TraceProtocol,
};
use crate::{Error, Hop, Violations};

/// The field name used for the document as a whole.
const DOCUMENT: &str = "(document)";

/// Violations listed before the rest are summarised: a hostile report with
/// thousands of bad hops must not produce a megabyte of error text.
const MAX_LISTED: usize = 100;

/// Decodes JSON into a [`Report`], mapping decoding errors to field paths.
pub(super) fn decode(bytes: &[u8]) -> Result<Report, Error> {
    let max = ReportLimits::MAX_REPORT_BYTES;
    if bytes.len() > max {
        return Err(one(
            DOCUMENT,
            format!("is {} bytes; at most {max} bytes are accepted", bytes.len()),
        ));
    }
    check_object(bytes)?;
    // Fast path: almost every report is well formed, and tracking field
    // paths and reading the version separately costs as much again as the
    // decode itself — on the collector's hot path. Only a document that
    // fails here is decoded again, slowly, to say exactly what is wrong.
    // The text is checked as UTF-8 once, in one pass, and decoded as `str`:
    // decoding bytes checks every string on its own, a fifth of the decode.
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Ok(report) = serde_json::from_str::<Report>(text)
        && SUPPORTED_REPORT_SCHEMA_VERSIONS.contains(&report.schema)
    {
        return Ok(report);
    }
    check_version(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let report: Report =
        serde_path_to_error::deserialize(&mut de).map_err(|e| path_error(e, bytes))?;
    de.end()?;
    Ok(report)
}

/// serde accepts a struct written as an array of its fields; a report is an
/// object, so anything else at the top is refused before serde sees it.
fn check_object(bytes: &[u8]) -> Result<(), Error> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let found = match first {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'0'..=b'9' | b'-') => "a number",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        // An object, or not JSON at all: serde says which.
        _ => return Ok(()),
    };
    Err(one(
        DOCUMENT,
        format!("is {found}; a report is a JSON object `{{\"schema\": 1, …}}`"),
    ))
}

/// Reads only `schema` first, so that a report of another version is
/// rejected for its version rather than for the first field this build does
/// not know.
fn check_version(bytes: &[u8]) -> Result<(), Error> {
    #[derive(Deserialize)]
    #[serde(rename = "Report")]
    struct Peek {
        schema: Option<serde_json::Value>,
    }

    let peek: Peek = serde_json::from_slice(bytes).map_err(|e| {
        if e.classify() == Category::Data {
            one(DOCUMENT, located(&e))
        } else {
            Error::Json(e)
        }
    })?;
    match peek.schema {
        None => Err(one(
            "schema",
            format!("is missing; add `\"schema\": 1` ({})", supported_versions()),
        )),
        Some(v) => {
            let known = v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .is_some_and(|n| SUPPORTED_REPORT_SCHEMA_VERSIONS.contains(&n));
            if known {
                Ok(())
            } else {
                Err(one(
                    "schema",
                    format!("version {v} is not supported; {}", supported_versions()),
                ))
            }
        }
    }
}

fn supported_versions() -> String {
    let list: Vec<String> = SUPPORTED_REPORT_SCHEMA_VERSIONS
        .iter()
        .map(u32::to_string)
        .collect();
    format!(
        "this build reads report schema versions {}",
        list.join(", ")
    )
}

fn path_error(err: serde_path_to_error::Error<serde_json::Error>, bytes: &[u8]) -> Error {
    let path = field_path(err.path());
    if err.inner().classify() != Category::Data {
        // serde_json reports a value of the wrong type for a field that
        // takes one of a few names (`"protocol": null`) as a syntax error,
        // "expected value". The document is JSON all the same: say which
        // field is wrong instead of answering "invalid JSON".
        if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes)
            && !path.is_empty()
        {
            return one(path, wrong_kind_of_value(&doc, err.path()));
        }
        return Error::Json(err.into_inner());
    }
    let inner = err.into_inner();
    let reason = located(&inner);
    let parent = if path.is_empty() { None } else { Some(path) };
    // serde reports a missing or repeated field at its parent; name the
    // field itself.
    let missing = reason
        .strip_prefix("missing field `")
        .or_else(|| reason.strip_prefix("duplicate field `"))
        .and_then(|rest| rest.split('`').next());
    let field = match (parent, missing) {
        (Some(parent), Some(name)) => format!("{parent}.{name}"),
        (None, Some(name)) => name.to_owned(),
        (Some(parent), None) => parent,
        (None, None) => DOCUMENT.to_owned(),
    };
    // chrono says what is wrong with a timestamp's text ("premature end of
    // input" for a missing offset) but not what a timestamp must look like.
    let name = field.rsplit('.').next().unwrap_or_default();
    let timestamp = (name == "at" || name.ends_with("_at"))
        && CHRONO_PARSE_ERRORS.iter().any(|m| reason.starts_with(m));
    if timestamp {
        let (what, at) = reason
            .split_once(" (line ")
            .map_or((reason.as_str(), String::new()), |(what, at)| {
                (what, format!(" (line {at}"))
            });
        return one(
            field,
            format!(
                "is not an RFC 3339 date and time: {what}; write the date, `T`, the time with \
                 seconds and the UTC offset: `2025-06-03T21:14:09+08:00` or \
                 `2025-06-03T13:14:09Z`{at}"
            ),
        );
    }
    one(field, reason)
}

/// How chrono's `ParseError` reads, for [`path_error`].
const CHRONO_PARSE_ERRORS: &[&str] = &[
    "input is out of range",
    "no possible date and time matching input",
    "input is not enough for unique date and time",
    "input contains invalid characters",
    "premature end of input",
    "trailing input",
    "bad or unsupported format string",
];

/// Why the value at `path` in `doc` was refused, for a field whose type
/// `serde_json` does not name in its error. The names the field accepts are
/// found by decoding once more with an empty string in that place: serde then
/// lists them: "expected one of `icmp`, `udp`, `tcp`".
fn wrong_kind_of_value(doc: &serde_json::Value, path: &serde_path_to_error::Path) -> String {
    use serde_json::Value;
    use serde_path_to_error::Segment;

    let pointer: String = path
        .iter()
        .map(|segment| match segment {
            Segment::Seq { index } => format!("/{index}"),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                format!("/{}", key.replace('~', "~0").replace('/', "~1"))
            }
            Segment::Unknown => "/?".to_owned(),
        })
        .collect();
    let found = match doc.pointer(&pointer) {
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "a list",
        Some(Value::Object(_)) => "an object",
        None => "not a value this field takes",
    };
    let expected = (|| {
        let mut probe = doc.clone();
        *probe.pointer_mut(&pointer)? = Value::String(String::new());
        let again = serde_path_to_error::deserialize::<_, Report>(&probe).err()?;
        if again.path().to_string() != path.to_string() {
            return None;
        }
        let message = again.into_inner().to_string();
        let (_, names) = message.split_once(", expected ")?;
        Some(names.to_owned())
    })();
    match expected {
        Some(names) => format!("is {found}; expected {names}"),
        None => format!("is {found}, which this field does not take"),
    }
}

/// Longest object key shown in a field path; a hostile key is cut.
const MAX_KEY_SHOWN: usize = 64;

/// A decoding error's location as a field path (`trace.hops[3].addrs`), or
/// empty at the top. Keys are whatever the sender wrote, including unknown
/// ones: a key that is not a plain name (empty, with dots, brackets, spaces
/// or control characters) is written quoted, `[""]` or `["a.b"]`, so the
/// path stays unambiguous and printable.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    use std::fmt::Write as _;

    let mut out = String::new();
    for segment in path {
        // Writing to a String cannot fail.
        let _ = match segment {
            Segment::Seq { index } => write!(out, "[{index}]"),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                let plain = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if plain && key.len() <= MAX_KEY_SHOWN {
                    let dot = if out.is_empty() { "" } else { "." };
                    write!(out, "{dot}{key}")
                } else {
                    out.push_str("[\"");
                    let mut shown = 0;
                    for ch in key.chars().take(MAX_KEY_SHOWN) {
                        shown += ch.len_utf8();
                        match ch {
                            '"' | '\\' => {
                                out.push('\\');
                                out.push(ch);
                            }
                            ch if ch.is_control() => {
                                let _ = write!(out, "\\u{:04x}", u32::from(ch));
                            }
                            ch => out.push(ch),
                        }
                    }
                    let more = if shown < key.len() { "…" } else { "" };
                    write!(out, "\"{more}]")
                }
            }
            Segment::Unknown => write!(out, "[?]"),
        };
    }
    out
}

/// The `serde_json` message with its position moved into parentheses.
fn located(err: &serde_json::Error) -> String {
    let message = err.to_string();
    let bare = message
        .rfind(" at line ")
        .and_then(|cut| message.get(..cut))
        .unwrap_or(&message);
    if err.line() == 0 {
        bare.to_owned()
    } else {
        format!("{bare} (line {}, column {})", err.line(), err.column())
    }
}

fn one(field: impl Into<String>, reason: impl Into<String>) -> Error {
    let mut found = Violations::default();
    found.push(field, reason);
    Error::InvalidReport(found)
}

/// Runs every rule over a decoded (or built) report.
pub(super) fn check_report(report: &Report, stage: Stage) -> Violations {
    let mut c = Checker::default();
    if !SUPPORTED_REPORT_SCHEMA_VERSIONS.contains(&report.schema) {
        c.push(
            "schema",
            format!(
                "version {} is not supported; {}",
                report.schema,
                supported_versions()
            ),
        );
    }
    check_account(&mut c, &report.account);
    check_declared(&mut c, &report.declared);
    check_device(&mut c, &report.device);
    if report.device.mac.is_some() && report.consent.is_none() {
        c.push(
            "device.mac",
            "is present without `consent`; the interface MAC may only be sent after the \
             subscriber accepted the consent text: add `consent` or leave `mac` out",
        );
    }
    if let Some(consent) = &report.consent {
        c.text(
            "consent.text_version",
            &consent.text_version,
            LINE.required(ReportLimits::MAX_SHORT_TEXT_LEN),
        );
    }
    check_trace(&mut c, &report.trace);
    check_attempts(&mut c, &report.endpoint_attempts);
    match (&report.envelope, stage) {
        (Some(_), Stage::Submitted) => c.push(
            "envelope",
            "is present; the receiver adds the envelope, a probe must not send it",
        ),
        (None, Stage::Stored) => c.push(
            "envelope",
            "is missing; a stored report carries the receiver's envelope",
        ),
        (Some(envelope), Stage::Any | Stage::Stored) => check_envelope(&mut c, envelope),
        (None, Stage::Any | Stage::Submitted) => {}
    }
    c.finish()
}

fn check_declared(c: &mut Checker, declared: &DeclaredLine) {
    if let Some(province) = &declared.province {
        let ok = province.len() == 5
            && province.starts_with("CN-")
            && province.bytes().skip(3).all(|b| b.is_ascii_uppercase());
        if !ok {
            c.push(
                "declared.province",
                format!(
                    "{} is not an ISO 3166-2:CN code; write `CN-` and two capital letters \
                     (`CN-GD`), or leave the field out",
                    quoted(province)
                ),
            );
        }
    }
    if let Some(city) = &declared.city {
        let ok = c.text(
            "declared.city",
            city,
            LINE.required(ReportLimits::MAX_CITY_LEN),
        );
        if ok && city.bytes().all(|b| b.is_ascii_digit()) && city.len() != 6 {
            c.push(
                "declared.city",
                format!(
                    "{} looks like a GB/T 2260 code but has {} digits; division codes have 6 \
                     (`440300`)",
                    quoted(city),
                    city.len()
                ),
            );
        }
    }
    if let Some(carrier) = &declared.carrier {
        let ok = c.text(
            "declared.carrier",
            carrier,
            TOKEN.required(ReportLimits::MAX_CARRIER_LEN),
        );
        let snake = carrier
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase())
            && carrier
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !carrier.ends_with('_')
            && !carrier.contains("__");
        if ok && !snake {
            c.push(
                "declared.carrier",
                format!(
                    "{} is not a carrier catalog id; use the snake_case id from the carrier \
                     catalog (`china_mobile`)",
                    quoted(carrier)
                ),
            );
        }
    }
    c.text(
        "declared.address",
        &declared.address,
        LINE.optional(ReportLimits::MAX_ADDRESS_LEN),
    );
    if let Some(location) = &declared.location {
        c.range(
            "declared.location.lat",
            location.lat,
            -90.0,
            90.0,
            "degrees of latitude",
        );
        c.range(
            "declared.location.lon",
            location.lon,
            -180.0,
            180.0,
            "degrees of longitude",
        );
        c.range(
            "declared.location.accuracy_m",
            location.accuracy_m,
            0.0,
            ReportLimits::MAX_LOCATION_ACCURACY_M,
            "metres",
        );
    }
}

fn check_device(c: &mut Checker, device: &DeviceFacts) {
    let short = LINE.required(ReportLimits::MAX_SHORT_TEXT_LEN);
    c.text("device.os", &device.os, short);
    c.text("device.os_version", &device.os_version, short);
    c.text("device.arch", &device.arch, short);
    c.text("device.agent_version", &device.agent_version, short);
    c.count(
        "device.local_addrs",
        device.local_addrs.len(),
        ReportLimits::MAX_LOCAL_ADDRS,
        "addresses",
    );
    if let Some(details) = &device.proxy.details {
        c.text(
            "device.proxy.details",
            details,
            LINE.optional(ReportLimits::MAX_DETAIL_LEN),
        );
    }
}

fn check_trace(c: &mut Checker, trace: &ReportTrace) {
    c.text(
        "trace.target",
        &trace.target,
        TOKEN.required(ReportLimits::MAX_HOSTNAME_LEN),
    );
    if let (Ok(literal), Some(addr)) = (trace.target.parse::<IpAddr>(), trace.target_addr)
        && literal != addr
    {
        c.push(
            "trace.target_addr",
            format!("is {addr} but the target is the address {literal}; they must match"),
        );
    }
    if trace.engine == TraceEngine::WindowsIcmp && trace.protocol != TraceProtocol::Icmp {
        c.push(
            "trace.protocol",
            format!(
                "is {} but the windows-icmp engine only sends ICMP; use `icmp`",
                trace.protocol
            ),
        );
    }
    c.count(
        "trace.engine_fallbacks",
        trace.engine_fallbacks.len(),
        ReportLimits::MAX_ENGINE_FALLBACKS,
        "entries",
    );
    for (i, fallback) in trace.engine_fallbacks.iter().enumerate() {
        if fallback.engine == trace.engine {
            c.push(
                format!("trace.engine_fallbacks[{i}].engine"),
                format!(
                    "is `{}`, the engine that ran the trace; list only engines that were \
                     not used",
                    fallback.engine
                ),
            );
        }
        c.text(
            || format!("trace.engine_fallbacks[{i}].reason"),
            &fallback.reason,
            PARAGRAPH.required(ReportLimits::MAX_DETAIL_LEN),
        );
    }
    let max_ms = ReportLimits::MAX_TRACE_DURATION_MS;
    if trace.duration_ms > max_ms {
        c.push(
            "trace.duration_ms",
            format!(
                "is {} ms; at most {max_ms} ms (one hour) is accepted",
                trace.duration_ms
            ),
        );
    }
    c.count(
        "trace.hops",
        trace.hops.len(),
        ReportLimits::MAX_HOPS,
        "hops",
    );
    let mut previous_ttl = None;
    for (i, hop) in trace.hops.iter().enumerate() {
        check_hop(
            c,
            Item {
                list: "trace.hops",
                index: i,
            },
            hop,
            previous_ttl,
        );
        previous_ttl = Some(hop.ttl);
    }
    check_raw(c, trace);
}

/// The hop rules. They live here, not on [`Hop`], because the limits are the
/// report's: a parser may read a longer trace than a report may carry.
fn check_hop(c: &mut Checker, at: Item<'_>, hop: &Hop, previous_ttl: Option<u8>) {
    match previous_ttl {
        _ if hop.ttl == 0 => c.push(format!("{at}.ttl"), "is 0; TTLs start at 1"),
        Some(previous) if hop.ttl <= previous => c.push(
            format!("{at}.ttl"),
            format!(
                "is {} after {previous}; TTLs must strictly increase from hop to hop",
                hop.ttl
            ),
        ),
        _ => {}
    }
    c.count(
        || format!("{at}.addrs"),
        hop.addrs.len(),
        ReportLimits::MAX_ADDRS_PER_HOP,
        "addresses",
    );
    // A handful of addresses per hop: comparing with the earlier ones beats
    // hashing them; past the limit (already a violation) a set keeps a
    // hostile hop linear.
    let mut seen = HashSet::new();
    for (j, addr) in hop.addrs.iter().enumerate() {
        let repeated = if hop.addrs.len() <= ReportLimits::MAX_ADDRS_PER_HOP {
            hop.addrs
                .get(..j)
                .is_some_and(|earlier| earlier.contains(addr))
        } else {
            !seen.insert(addr)
        };
        if repeated {
            c.push(
                format!("{at}.addrs[{j}]"),
                format!("repeats {addr}; list each address once"),
            );
        }
    }
    c.count(
        || format!("{at}.names"),
        hop.names.len(),
        ReportLimits::MAX_NAMES_PER_HOP,
        "names",
    );
    for (j, name) in hop.names.iter().enumerate() {
        c.text(
            || format!("{at}.names[{j}]"),
            name,
            TOKEN.required(ReportLimits::MAX_HOSTNAME_LEN),
        );
    }
    c.count(
        || format!("{at}.rtt_ms"),
        hop.rtt_ms.len(),
        ReportLimits::MAX_RTTS_PER_HOP,
        "round-trip times",
    );
    for (j, &rtt) in hop.rtt_ms.iter().enumerate() {
        c.range(
            || format!("{at}.rtt_ms[{j}]"),
            rtt,
            0.0,
            ReportLimits::MAX_RTT_MS,
            "milliseconds",
        );
    }
    // `sent` is 0 when the tool does not say how many probes it sent.
    if hop.sent > 0 && hop.received > hop.sent {
        c.push(
            format!("{at}.received"),
            format!(
                "is {} but sent is {}; a hop cannot answer more probes than were sent",
                hop.received, hop.sent
            ),
        );
    }
    c.count(
        || format!("{at}.annotations"),
        hop.annotations.len(),
        ReportLimits::MAX_ANNOTATIONS_PER_HOP,
        "annotations",
    );
    for (j, annotation) in hop.annotations.iter().enumerate() {
        c.text(
            || format!("{at}.annotations[{j}]"),
            annotation,
            LINE.required(ReportLimits::MAX_ANNOTATION_LEN),
        );
    }
}

fn check_raw(c: &mut Checker, trace: &ReportTrace) {
    match (&trace.raw_text, trace.engine.is_system()) {
        (Some(_), false) => c.push(
            "trace.raw_text",
            format!(
                "is present but the engine is `{}`; only `system:<command>` engines send \
                 the command's output",
                trace.engine
            ),
        ),
        (None, true) => c.push(
            "trace.raw_text",
            format!(
                "is missing; the `{}` engine must send the command's output",
                trace.engine
            ),
        ),
        _ => {}
    }
    if let Some(raw) = &trace.raw_text {
        let max = ReportLimits::MAX_RAW_TEXT_BYTES;
        if raw.len() > max {
            c.push(
                "trace.raw_text",
                format!(
                    "is {} bytes; at most {max} bytes of command output are accepted",
                    raw.len()
                ),
            );
        } else {
            c.text("trace.raw_text", raw, RAW.optional(max));
        }
    }
    if trace.raw_format.is_some() && trace.raw_text.is_none() {
        c.push(
            "trace.raw_format",
            "is present without `raw_text`; it names the format of that text",
        );
    }
}

fn check_attempts(c: &mut Checker, attempts: &[EndpointAttempt]) {
    c.count(
        "endpoint_attempts",
        attempts.len(),
        ReportLimits::MAX_ENDPOINT_ATTEMPTS,
        "entries",
    );
    for (i, attempt) in attempts.iter().enumerate() {
        let at = Item {
            list: "endpoint_attempts",
            index: i,
        };
        let ok = c.text(
            || format!("{at}.endpoint"),
            &attempt.endpoint,
            TOKEN.required(ReportLimits::MAX_ENDPOINT_LEN),
        );
        let http =
            attempt.endpoint.starts_with("https://") || attempt.endpoint.starts_with("http://");
        if ok && !http {
            c.push(
                format!("{at}.endpoint"),
                format!(
                    "{} is not an http(s) URL; give the endpoint as it was configured \
                     (`https://…`)",
                    quoted(&attempt.endpoint)
                ),
            );
        }
        let status_field = || format!("{at}.http_status");
        match (attempt.outcome, attempt.http_status) {
            (AttemptOutcome::HttpStatus, None) => c.push(
                status_field(),
                "is missing; outcome `http_status` needs the status that was received",
            ),
            (_, Some(status)) if !(100..=599).contains(&status) => c.push(
                status_field(),
                format!("is {status}; HTTP statuses are 100 to 599"),
            ),
            (AttemptOutcome::Ok, Some(status)) if !(200..=299).contains(&status) => c.push(
                status_field(),
                format!("is {status} but outcome is `ok`; an accepted report has a 2xx status"),
            ),
            (
                outcome @ (AttemptOutcome::Dns
                | AttemptOutcome::Connect
                | AttemptOutcome::Tls
                | AttemptOutcome::Timeout),
                Some(_),
            ) => c.push(
                status_field(),
                format!(
                    "is present but outcome is `{}`; only `http_status` and `ok` carry a status",
                    outcome.as_str()
                ),
            ),
            _ => {}
        }
        if let Some(detail) = &attempt.detail {
            c.text(
                || format!("{at}.detail"),
                detail,
                PARAGRAPH.optional(ReportLimits::MAX_DETAIL_LEN),
            );
        }
    }
}

/// Unicode format characters that show as nothing or turn the text's
/// direction (zero-width spaces and joiners, bidirectional marks, overrides
/// and isolates, the byte-order mark, the soft hyphen): two texts that
/// differ only in them look the same, and a direction override reorders
/// what a terminal or page shows after it.
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

fn check_account(c: &mut Checker, account: &str) {
    if c.text(
        "account",
        account,
        LINE.optional(ReportLimits::MAX_ACCOUNT_LEN),
    ) && let Some(hidden) = account.chars().find(|&ch| is_invisible_format(ch))
    {
        // The account is the line's identity: an invisible character makes
        // another line that looks the same in every list.
        c.push(
            "account",
            format!(
                "contains the invisible character U+{:04X}; retype the account without it",
                u32::from(hidden)
            ),
        );
    }
}

/// What the schema finds wrong with `account` as a report's `account`;
/// `None` when it passes. For a probe's settings, checked before any report
/// carries them.
pub fn account_problem(account: &str) -> Option<String> {
    let mut c = Checker::default();
    check_account(&mut c, account);
    first_reason(c)
}

/// What the schema finds wrong with `value` as a single-line field of at
/// most `max_chars` characters (`declared.address`, `consent.text_version`
/// and the like); `None` when it passes.
pub fn single_line_problem(value: &str, max_chars: usize) -> Option<String> {
    let mut c = Checker::default();
    c.text("", value, LINE.optional(max_chars));
    first_reason(c)
}

fn first_reason(c: Checker) -> Option<String> {
    c.finish().0.into_iter().next().map(|v| v.reason)
}

/// The stored schema's rules for the envelope alone.
pub(super) fn check_envelope_only(envelope: &ReceiverEnvelope) -> Violations {
    let mut c = Checker::default();
    check_envelope(&mut c, envelope);
    c.finish()
}

fn check_envelope(c: &mut Checker, envelope: &ReceiverEnvelope) {
    if let Some(key_id) = envelope.trust.as_ref().and_then(|t| t.key_id.as_deref()) {
        if !crate::is_key_id(key_id) {
            c.push(
                "envelope.trust.key_id",
                format!(
                    "{} is not a key id: 16 lowercase hex digits",
                    quoted(key_id)
                ),
            );
        } else if envelope
            .trust
            .as_ref()
            .is_some_and(|t| t.signature == crate::SignatureCheck::Unsigned)
        {
            c.push(
                "envelope.trust.key_id",
                "names a key, but the signature check says the report was unsigned",
            );
        }
    }
    if envelope.peer_ip.is_unspecified() {
        c.push(
            "envelope.peer_ip",
            format!("is {}, which no peer can have", envelope.peer_ip),
        );
    }
    if envelope.peer_port == Some(0) {
        c.push(
            "envelope.peer_port",
            "is 0; a TCP source port is 1 to 65535",
        );
    }
    let ok = c.text(
        "envelope.path",
        &envelope.path,
        TOKEN.required(ReportLimits::MAX_PATH_LEN),
    );
    if ok && !envelope.path.starts_with('/') {
        c.push(
            "envelope.path",
            format!("{} does not start with `/`", quoted(&envelope.path)),
        );
    }
    for (name, value) in envelope.headers.iter() {
        c.text(
            || format!("envelope.headers.{name}"),
            value,
            LINE.optional(ReportLimits::MAX_HEADER_VALUE_LEN),
        );
    }
    if let Some(tls) = &envelope.tls {
        c.text(
            "envelope.tls.version",
            &tls.version,
            LINE.required(ReportLimits::MAX_SHORT_TEXT_LEN),
        );
        if let Some(sni) = &tls.sni {
            c.text(
                "envelope.tls.sni",
                sni,
                TOKEN.required(ReportLimits::MAX_HOSTNAME_LEN),
            );
        }
    }
    let ok = c.text(
        "envelope.node_id",
        &envelope.node_id,
        TOKEN.required(ReportLimits::MAX_SHORT_TEXT_LEN),
    );
    let token = envelope
        .node_id
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && envelope
            .node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok && !token {
        c.push(
            "envelope.node_id",
            format!(
                "{} is not a node id; use ASCII letters, digits, `.`, `_` and `-`",
                quoted(&envelope.node_id)
            ),
        );
    }
}

/// Which characters a text field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One word: no whitespace or control characters (names, URLs, ids).
    Token,
    /// One line: no control characters.
    Line,
    /// Free text over several lines: newlines and tabs, no other control
    /// characters.
    Paragraph,
    /// A command's output, kept verbatim: anything but NUL.
    Raw,
}

/// How one text field is checked.
#[derive(Debug, Clone, Copy)]
struct TextRule {
    shape: Shape,
    required: bool,
    max_chars: usize,
}

const TOKEN: Shape = Shape::Token;
const LINE: Shape = Shape::Line;
const PARAGRAPH: Shape = Shape::Paragraph;
const RAW: Shape = Shape::Raw;

impl Shape {
    const fn required(self, max_chars: usize) -> TextRule {
        TextRule {
            shape: self,
            required: true,
            max_chars,
        }
    }

    const fn optional(self, max_chars: usize) -> TextRule {
        TextRule {
            shape: self,
            required: false,
            max_chars,
        }
    }
}

/// A violation's field path, written out only when a rule is broken.
///
/// Almost every report breaks none, and formatting the path of every hop,
/// address and name up front cost as much as the checks themselves (on the
/// receiver's hot path): paths built from indexes are closures.
trait FieldPath {
    fn path(self) -> String;
}

impl FieldPath for &str {
    fn path(self) -> String {
        self.to_owned()
    }
}

impl<F: FnOnce() -> String> FieldPath for F {
    fn path(self) -> String {
        self()
    }
}

/// `list[index]`, as the prefix of the paths inside one list item.
#[derive(Debug, Clone, Copy)]
struct Item<'a> {
    list: &'a str,
    index: usize,
}

impl std::fmt::Display for Item<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.list, self.index)
    }
}

/// Collects violations, listing at most [`MAX_LISTED`].
#[derive(Debug, Default)]
struct Checker {
    found: Violations,
    unlisted: usize,
}

impl Checker {
    fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        if self.found.0.len() < MAX_LISTED {
            self.found.push(field, reason);
        } else {
            self.unlisted += 1;
        }
    }

    fn finish(mut self) -> Violations {
        if self.unlisted > 0 {
            let more = self.unlisted;
            self.found.push(
                DOCUMENT,
                format!("{more} more violations were found and not listed"),
            );
        }
        self.found
    }

    /// Checks a list's length.
    fn count(&mut self, field: impl FieldPath, len: usize, max: usize, what: &str) {
        if len > max {
            self.push(
                field.path(),
                format!("has {len} {what}; at most {max} are accepted"),
            );
        }
    }

    /// Checks a finite number lies in `min..=max`.
    fn range(&mut self, field: impl FieldPath, value: f64, min: f64, max: f64, unit: &str) {
        if !value.is_finite() || value < min || value > max {
            self.push(
                field.path(),
                format!("is {value}; must be a finite number of {unit} from {min} to {max}"),
            );
        }
    }

    /// Checks a text field; true when it passed.
    fn text(&mut self, field: impl FieldPath, value: &str, rule: TextRule) -> bool {
        if rule.required && value.is_empty() {
            self.push(
                field.path(),
                "is empty; give a value or leave the field out if it is optional",
            );
            return false;
        }
        // No more bytes than the limit means no more characters either.
        let len = if value.len() <= rule.max_chars {
            0
        } else {
            value.chars().count()
        };
        if len > rule.max_chars {
            self.push(
                field.path(),
                format!(
                    "is {len} characters long; at most {} are accepted",
                    rule.max_chars
                ),
            );
            return false;
        }
        let bad = value.chars().enumerate().find(|&(_, ch)| match rule.shape {
            Shape::Token => ch.is_whitespace() || ch.is_control(),
            Shape::Line => ch.is_control(),
            Shape::Paragraph => ch.is_control() && !matches!(ch, '\n' | '\r' | '\t'),
            Shape::Raw => ch == '\0',
        });
        let Some((at, ch)) = bad else {
            return true;
        };
        let what = match (ch, rule.shape) {
            ('\0', _) => "NUL, which cannot be stored".to_owned(),
            (_, Shape::Token) if !ch.is_control() => "whitespace; send a single word".to_owned(),
            (_, Shape::Paragraph) => {
                "a control character; only newlines and tabs are accepted".to_owned()
            }
            _ => "a control character; send a single line of printable text".to_owned(),
        };
        self.push(
            field.path(),
            format!(
                "contains U+{:04X} at character {} ({what})",
                u32::from(ch),
                at + 1
            ),
        );
        false
    }
}
