//! Pipeline steps 1 and 2, **extract** and **validate**: a pulled report is
//! decoded once, checked again from scratch (the collector is untrusted), its
//! declared line is checked against the catalogs, and a system command's raw
//! trace text is parsed into hops. A report that fails goes to quarantine
//! with every reason found, each a stable machine-readable code.
//!
//! # What quarantines a report
//!
//! | code | when |
//! | --- | --- |
//! | `too_large` | the body is larger than [`ReportLimits::MAX_REPORT_BYTES`] |
//! | `not_utf8` | the body is not UTF-8 |
//! | `not_json` | the body is UTF-8 but not JSON (or truncated JSON) |
//! | `not_object` | the body is JSON but not an object |
//! | `unsupported_schema` | `schema` is missing or names a version this build does not read |
//! | `schema_violation` | a field breaks the schema; `field` is its path (`trace.hops[3].addrs`) |
//! | `missing_envelope` | the receiver's envelope is absent |
//! | `bad_envelope` | the envelope itself breaks the schema |
//! | `envelope_node_mismatch` | `envelope.node_id` is not the node the report was pulled from |
//! | `received_in_future` | `envelope.received_at` is more than 10 minutes after the report was pulled |
//! | `unknown_province` | `declared.province` names no catalog province |
//! | `city_not_in_province` | `declared.city` names a city (or a GB/T 2260 code) of another province |
//! | `unknown_carrier` | `declared.carrier` names no catalog carrier |
//! | `carrier_not_declarable` | `declared.carrier` is a hosting network, which sells no lines |
//! | `unparseable_trace` | the raw trace text matches no known tool, or gives hops that break the schema |
//! | `incomplete` | a part needed to judge the line is missing (below) |
//!
//! `incomplete` rule. In `DeclaredLine` the province, city and carrier are
//! all optional, because the internal side fills missing ones. But the
//! verdict needs *something* declared to compare: the carrier (for the
//! carrier check) or the province (for the address check). So a report
//! declaring neither a carrier nor a province is incomplete (a city alone is
//! not enough: without a province and a carrier there is no declaration to
//! hold the line to). The trace is needed for the first public hop: a
//! report whose trace has no hop that answered — no hops at all, only
//! silent hops, or a raw text that parses to only silent hops — is
//! incomplete too. One `incomplete` reason is given per missing part, with
//! the part as its `field` (`declared`, `trace.hops`).
//!
//! # What only warns
//!
//! Warnings keep the report and travel with it in [`Extracted::warnings`]:
//!
//! | code | when |
//! | --- | --- |
//! | `clock_skew` | `created_at` is more than a day after the receiver's `received_at` |
//! | `unknown_city` | `declared.city` names no catalog city (nor one in another province) |
//! | `raw_format_mismatch` | the probe's `raw_format` is not the format the parser recognised |
//! | `impossible_hop_address` | a hop lists an address no router answers from: unspecified (`0.0.0.0`, `::`), multicast, or the limited broadcast `255.255.255.255` |
//!
//! `clock_skew` warns rather than quarantines: the device clock belongs to the
//! subscriber and is often wrong (a flat CMOS battery, a hand-set clock),
//! while everything the verdict rests on — the trace and the egress address
//! the receiver saw — is unaffected, and `received_at` (the server clock) is
//! the observation's time. An old `created_at` is not checked: the probe's
//! offline spool legitimately delivers reports days late.
//!
//! `unknown_city` warns because the city catalog stops at prefecture level
//! and subscribers write districts and towns; such a city simply cannot be
//! compared.
//!
//! `impossible_hop_address` warns: such an address is never a router's (a
//! trace tool's parser or a probe got it wrong, or the report was made up),
//! and the classifier already passes it by as not public, so the verdict
//! rests on the other hops; the warning tells the operator the trace was
//! not what a tool saw. (The collector accepts it, as the schema does: a
//! probe drops a report its collector refuses, and the line's other
//! evidence is still worth having.)

use std::fmt;
use std::net::IpAddr;

use chrono::{TimeDelta, Utc};
use lineprobe_shared::{
    CarrierId, Catalog, City, CityCode, CityKind, Error as SharedError, InstallId, ProvinceCode,
    Report, ReportId, ReportLimits, TraceFormat, Violation, parse_trace_text,
};
use serde::{Deserialize, Serialize};

/// How far `created_at` may run ahead of `received_at` before the device
/// clock is called skewed.
const CLOCK_SKEW_TOLERANCE: TimeDelta = TimeDelta::days(1);

/// How far a collector's `received_at` may run ahead of the internal
/// side's clock at the pull (two servers' clocks, both kept by NTP).
const RECEIVED_AHEAD_TOLERANCE: TimeDelta = TimeDelta::minutes(10);

/// The field name the shared layer uses for the document as a whole.
const DOCUMENT: &str = "(document)";

/// Longest value echoed in a reason's message.
const MAX_ECHO: usize = 80;

/// Why a report was quarantined, or what a kept report is warned about. The
/// codes are stable: stores, metrics and the back office key on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReasonCode {
    /// The body exceeds the largest report accepted.
    TooLarge,
    /// The body is not UTF-8.
    NotUtf8,
    /// The body is not JSON.
    NotJson,
    /// The body is JSON but not an object.
    NotObject,
    /// The schema version is missing or not supported.
    UnsupportedSchema,
    /// A field breaks the schema.
    SchemaViolation,
    /// The receiver's envelope is absent.
    MissingEnvelope,
    /// The envelope breaks the schema.
    BadEnvelope,
    /// The envelope names another node than the one the report came from.
    EnvelopeNodeMismatch,
    /// The collector's `received_at` is later than the pull that brought it.
    ReceivedInFuture,
    /// The declared province is not in the catalog.
    UnknownProvince,
    /// The declared city lies in another province than the declared one.
    CityNotInProvince,
    /// The declared carrier is not in the catalog.
    UnknownCarrier,
    /// The declared carrier is a hosting network.
    CarrierNotDeclarable,
    /// The raw trace text could not be turned into hops.
    UnparseableTrace,
    /// A part needed for the verdict is missing.
    Incomplete,
    /// Warning: the device clock runs far ahead of the server's.
    ClockSkew,
    /// Warning: the declared city is not in the catalog.
    UnknownCity,
    /// Warning: the raw text is not in the format the probe said.
    RawFormatMismatch,
    /// Warning: a hop lists an address no router answers from.
    ImpossibleHopAddress,
}

impl ReasonCode {
    /// The stable `snake_case` code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::NotUtf8 => "not_utf8",
            Self::NotJson => "not_json",
            Self::NotObject => "not_object",
            Self::UnsupportedSchema => "unsupported_schema",
            Self::SchemaViolation => "schema_violation",
            Self::MissingEnvelope => "missing_envelope",
            Self::BadEnvelope => "bad_envelope",
            Self::EnvelopeNodeMismatch => "envelope_node_mismatch",
            Self::ReceivedInFuture => "received_in_future",
            Self::UnknownProvince => "unknown_province",
            Self::CityNotInProvince => "city_not_in_province",
            Self::UnknownCarrier => "unknown_carrier",
            Self::CarrierNotDeclarable => "carrier_not_declarable",
            Self::UnparseableTrace => "unparseable_trace",
            Self::Incomplete => "incomplete",
            Self::ClockSkew => "clock_skew",
            Self::UnknownCity => "unknown_city",
            Self::RawFormatMismatch => "raw_format_mismatch",
            Self::ImpossibleHopAddress => "impossible_hop_address",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem with a report: a quarantine reason or a warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// The stable code.
    pub code: ReasonCode,
    /// The field at fault as a dotted path (`declared.province`), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong and what would be accepted, in English.
    pub message: String,
}

impl Reason {
    fn new(code: ReasonCode, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            code,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A report that cannot enter the pipeline, with every reason found and the
/// ids that could be read from it, so the record can name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantine {
    /// Every reason, in the order found.
    pub reasons: Vec<Reason>,
    /// The report's id, when one could be read and is a well-formed `UUIDv7`.
    pub report_id: Option<String>,
    /// The installation's id, when one could be read and is well formed.
    pub install_id: Option<String>,
}

impl Quarantine {
    /// One English sentence listing the reasons:
    /// `2 problems: declared.province: unknown province "CN-XX" (…); envelope: is missing…`.
    pub fn summary(&self) -> String {
        let count = match self.reasons.len() {
            0 => return "no problems recorded".to_owned(),
            1 => "1 problem".to_owned(),
            n => format!("{n} problems"),
        };
        let listed: Vec<String> = self.reasons.iter().map(Reason::to_string).collect();
        format!("{count}: {}", listed.join("; "))
    }

    /// True when some reason has this code.
    pub fn has(&self, code: ReasonCode) -> bool {
        self.reasons.iter().any(|r| r.code == code)
    }
}

impl fmt::Display for Quarantine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// The declared line checked against the catalogs: only values the catalogs
/// know are kept, as catalog ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeclaredFacts {
    /// The declared province, a catalog province.
    pub province: Option<ProvinceCode>,
    /// The declared city as the subscriber wrote it.
    pub city: Option<String>,
    /// The GB/T 2260 code of the declared city, when it names one: a catalog
    /// city, or a code of the declared province below the catalog's level
    /// (a county), which compares with its prefecture.
    pub city_code: Option<CityCode>,
    /// The declared carrier, a declarable catalog carrier.
    pub carrier: Option<CarrierId>,
}

/// A report that passed: ready for dedupe, resolution and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The report, with `trace.hops` parsed from the raw text when the probe
    /// sent only the text (and `trace.target_addr` taken from it when the
    /// probe gave none).
    pub report: Report,
    /// The declared line as catalog ids.
    pub declared: DeclaredFacts,
    /// True when the hops were parsed here from `trace.raw_text`.
    pub hops_from_raw: bool,
    /// The format the raw text was parsed as, when it was parsed.
    pub parsed_format: Option<TraceFormat>,
    /// Problems that do not quarantine the report.
    pub warnings: Vec<Reason>,
}

/// Decodes a pulled report, validates it again and against the catalogs,
/// and parses a raw trace text into hops.
///
/// `expected_node` is the collector node the report was pulled from: the
/// envelope must name it. Never panics, whatever `body` holds.
pub fn extract(
    body: &[u8],
    expected_node: &str,
    catalog: &Catalog,
) -> Result<Extracted, Quarantine> {
    let max = ReportLimits::MAX_REPORT_BYTES;
    if body.len() > max {
        let reason = Reason::new(
            ReasonCode::TooLarge,
            None,
            format!(
                "the report is {} bytes; at most {max} bytes are accepted",
                body.len()
            ),
        );
        return Err(salvaged(body, vec![reason]));
    }
    // PostgreSQL's text holds no NUL: one written into the database from a
    // report fails the whole batch it is in, and every later one, as the
    // report stays pending. No probe writes one, so a report with a NUL in
    // any text is quarantined, read with each NUL as U+FFFD so that what
    // the quarantine keeps of it (ids, reasons) can be stored.
    let cleaned = without_nul(body);
    let body = cleaned.as_deref().unwrap_or(body);
    let nul = || {
        Reason::new(
            ReasonCode::SchemaViolation,
            None,
            "a text of the report holds a NUL character (\\u0000), which no probe writes: \
             the report is damaged or forged (each NUL is shown as U+FFFD)",
        )
    };
    // `from_json` checks every rule but leaves the envelope optional, so a
    // missing envelope gets its own code below instead of a generic one.
    // It decodes once; only a failing body is looked at again.
    let mut report = match Report::from_json(body) {
        Ok(report) => report,
        Err(err) => {
            let mut quarantine = undecodable(body, expected_node, err);
            if cleaned.is_some() {
                quarantine.reasons.push(nul());
            }
            return Err(quarantine);
        }
    };
    let mut problems = Vec::new();
    if cleaned.is_some() {
        problems.push(nul());
    }
    let mut warnings = Vec::new();
    check_envelope(&report, expected_node, &mut problems, &mut warnings);
    let declared = check_declared(&report, catalog, &mut problems, &mut warnings);
    let parsed = parse_raw_trace(&mut report, &mut problems, &mut warnings);
    check_complete(&report, parsed.failed, &mut problems);
    check_hop_addresses(&report, &mut warnings);
    if problems.is_empty() {
        Ok(Extracted {
            report,
            declared,
            hops_from_raw: parsed.format.is_some(),
            parsed_format: parsed.format,
            warnings,
        })
    } else {
        Err(Quarantine {
            reasons: problems,
            report_id: Some(report.report_id.to_string()),
            install_id: Some(report.install_id.as_str().to_owned()),
        })
    }
}

/// `body` with every NUL in its strings (and keys) made U+FFFD, when it is
/// JSON holding one; `None` otherwise (no NUL in it, or not JSON at all:
/// then nothing is read from it as text). JSON can only write a NUL as
/// `\u0000`, so only a body with that text is decoded here.
fn without_nul(body: &[u8]) -> Option<Vec<u8>> {
    /// Swaps the NULs under `value`; true when there were any.
    fn clean(value: &mut serde_json::Value) -> bool {
        use serde_json::Value;
        let swap = |s: &str| s.replace('\0', "\u{fffd}");
        match value {
            Value::String(s) if s.contains('\0') => {
                *s = swap(s);
                true
            }
            Value::Array(items) => items.iter_mut().fold(false, |found, i| clean(i) | found),
            Value::Object(map) => {
                let mut found = false;
                for (key, mut item) in std::mem::take(map) {
                    found |= clean(&mut item);
                    let key = if key.contains('\0') {
                        found = true;
                        swap(&key)
                    } else {
                        key
                    };
                    map.insert(key, item);
                }
                found
            }
            _ => false,
        }
    }
    memchr::memmem::find(body, b"\\u0000")?;
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    clean(&mut value).then(|| serde_json::to_vec(&value).ok())?
}

fn check_envelope(
    report: &Report,
    expected_node: &str,
    problems: &mut Vec<Reason>,
    warnings: &mut Vec<Reason>,
) {
    let Some(envelope) = &report.envelope else {
        problems.push(missing_envelope());
        return;
    };
    if envelope.node_id != expected_node {
        problems.push(node_mismatch(&envelope.node_id, expected_node));
    }
    let created = report.created_at.with_timezone(&Utc);
    let ahead = created - envelope.received_at;
    if ahead > CLOCK_SKEW_TOLERANCE {
        warnings.push(Reason::new(
            ReasonCode::ClockSkew,
            Some("created_at"),
            format!(
                "the device clock says {}, {} hours after the receiver got the report at {}; \
                 the device clock is wrong, received_at is used as the observation time",
                report.created_at.to_rfc3339(),
                ahead.num_hours(),
                envelope.received_at.to_rfc3339()
            ),
        ));
    }
}

fn missing_envelope() -> Reason {
    Reason::new(
        ReasonCode::MissingEnvelope,
        Some("envelope"),
        "is missing; a report pulled from a collector carries the receiver's envelope \
         (the collector must add it when it stores the report)",
    )
}

/// Quarantines `extracted` when its collector says it received it after
/// the pull that brought it (`pulled_at_ms`, the internal side's clock):
/// `received_at` is the observation's time, and one far in the future
/// would stay the line's newest observation, its verdict current, until
/// that time came (a collector's clock that jumped, or a compromised
/// collector pinning a line's verdict).
pub(crate) fn received_in_time(
    extracted: Extracted,
    pulled_at_ms: i64,
) -> Result<Extracted, Quarantine> {
    let Some(envelope) = &extracted.report.envelope else {
        return Ok(extracted);
    };
    let ahead = envelope
        .received_at
        .timestamp_millis()
        .saturating_sub(pulled_at_ms);
    if ahead <= RECEIVED_AHEAD_TOLERANCE.num_milliseconds() {
        return Ok(extracted);
    }
    let pulled = chrono::DateTime::from_timestamp_millis(pulled_at_ms)
        .map_or_else(|| pulled_at_ms.to_string(), |t| t.to_rfc3339());
    let reason = Reason::new(
        ReasonCode::ReceivedInFuture,
        Some("envelope.received_at"),
        format!(
            "is {}, {} minutes after the report was pulled at {pulled}: the collector's clock \
             is wrong (or the collector is not to be trusted), so its time cannot be the \
             observation's; set the collector's clock right (the report is kept here)",
            envelope.received_at.to_rfc3339(),
            ahead / 60_000
        ),
    );
    Err(Quarantine {
        reasons: vec![reason],
        report_id: Some(extracted.report.report_id.to_string()),
        install_id: Some(extracted.report.install_id.as_str().to_owned()),
    })
}

fn node_mismatch(found: &str, expected: &str) -> Reason {
    Reason::new(
        ReasonCode::EnvelopeNodeMismatch,
        Some("envelope.node_id"),
        format!(
            "is {} but the report was pulled from node {}; a node exports only what it \
             received itself",
            quote(found),
            quote(expected)
        ),
    )
}

fn check_declared(
    report: &Report,
    catalog: &Catalog,
    problems: &mut Vec<Reason>,
    warnings: &mut Vec<Reason>,
) -> DeclaredFacts {
    let declared = &report.declared;
    let mut facts = DeclaredFacts::default();
    if let Some(text) = &declared.province {
        let province = ProvinceCode::new(text)
            .ok()
            .filter(|code| catalog.province_by_id(code).is_some());
        if province.is_none() {
            problems.push(Reason::new(
                ReasonCode::UnknownProvince,
                Some("declared.province"),
                format!(
                    "unknown province {} (use an ISO 3166-2:CN code such as CN-GD)",
                    quote(text)
                ),
            ));
        }
        facts.province = province;
    }
    if let Some(text) = &declared.city {
        facts.city = Some(text.clone());
        match city_in(catalog, facts.province.as_ref(), text) {
            CityLookup::Found(code) => facts.city_code = code,
            CityLookup::Elsewhere(message) => problems.push(Reason::new(
                ReasonCode::CityNotInProvince,
                Some("declared.city"),
                message,
            )),
            CityLookup::Unknown => {
                warnings.push(Reason::new(
                    ReasonCode::UnknownCity,
                    Some("declared.city"),
                    format!(
                        "{} names no city the catalog can place (it lists prefecture-level \
                         divisions and the municipalities' districts; a district or county of \
                         the same name elsewhere is not taken for it); it cannot be compared \
                         with the resolved city",
                        quote(text)
                    ),
                ));
            }
        }
    }
    if let Some(text) = &declared.carrier {
        let carrier = CarrierId::new(text)
            .ok()
            .and_then(|id| catalog.carrier_by_id(&id));
        match carrier {
            None => problems.push(Reason::new(
                ReasonCode::UnknownCarrier,
                Some("declared.carrier"),
                format!(
                    "unknown carrier {} (use a carrier catalog id: {})",
                    quote(text),
                    catalog.carrier_choices()
                ),
            )),
            Some(c) if !c.is_declarable() => problems.push(Reason::new(
                ReasonCode::CarrierNotDeclarable,
                Some("declared.carrier"),
                format!(
                    "{} ({}) is a hosting network, which sells no subscriber lines; declare \
                     the line's access carrier ({})",
                    quote(text),
                    c.name_zh,
                    catalog.carrier_choices()
                ),
            )),
            Some(c) => facts.carrier = Some(c.id.clone()),
        }
    }
    facts
}

/// Where a declared city was found.
enum CityLookup {
    /// In the declared province (or anywhere, when none was declared), with
    /// its code when it has one.
    Found(Option<CityCode>),
    /// Only in another province; the message says which.
    Elsewhere(String),
    /// Nowhere. A GB/T 2260 code whose prefecture the catalog does not
    /// list either (a division merged away, `371202` of the former Laiwu)
    /// keeps no code: compared with the resolved city it would fail against
    /// the very place it now belongs to.
    Unknown,
}

fn city_in(catalog: &Catalog, province: Option<&ProvinceCode>, text: &str) -> CityLookup {
    if let Some(city) = catalog.city(province, text) {
        // Without a declared province, a county-level name is only this
        // catalog entry when the text names its province too (`北京市海淀区`).
        if province.is_none() && county_level(city, text) && !names_province_of(catalog, city, text)
        {
            return CityLookup::Unknown;
        }
        return CityLookup::Found(city.code.clone());
    }
    // A county-level code below the catalog compares with its prefecture.
    let below_catalog = |code: CityCode| {
        let known = prefecture_of(&code).is_some_and(|p| catalog.city_by_code(&p).is_some());
        if known {
            CityLookup::Found(Some(code))
        } else {
            CityLookup::Unknown
        }
    };
    let Some(province) = province.and_then(|p| catalog.province_by_id(p)) else {
        return match CityCode::new(text) {
            Ok(code) => below_catalog(code),
            Err(_) => CityLookup::Unknown,
        };
    };
    let province_name = format!("{} ({})", province.name_zh, province.id);
    // A division code carries its province in its first two digits.
    if let Ok(code) = CityCode::new(text) {
        if province.gb_code.get(..2) == Some(code.province_digits()) {
            return below_catalog(code);
        }
        let owner = catalog
            .provinces()
            .iter()
            .find(|p| p.gb_code.get(..2) == Some(code.province_digits()));
        return CityLookup::Elsewhere(match owner {
            Some(owner) => format!(
                "the division code {text} belongs to {} ({}), not to the declared province \
                 {province_name}",
                owner.name_zh, owner.id
            ),
            None => format!(
                "the division code {text} belongs to no province (its first two digits name \
                 none), so not to the declared province {province_name}"
            ),
        });
    }
    match catalog.city(None, text) {
        // Another province's district of the same name, or a city whose
        // name is the district's without its suffix, is no sign that the
        // line is elsewhere.
        Some(city) if county_level(city, text) => CityLookup::Unknown,
        Some(city) => {
            let owner = catalog.province_by_id(&city.province).map_or_else(
                || city.province.to_string(),
                |p| format!("{} ({})", p.name_zh, p.id),
            );
            CityLookup::Elsewhere(format!(
                "{} is {} in {owner}, not in the declared province {province_name}",
                quote(text),
                city.name_zh
            ))
        }
        None => CityLookup::Unknown,
    }
}

/// True when the declared city names a county-level division: found as
/// one (a municipality's district, a county, a Macao parish), or written
/// with a county-level suffix (`区` other than `地区`, `县`, `district`,
/// `county`).
///
/// County-level names repeat from province to province (江北区 is in
/// Chongqing and in Ningbo, 和平区 in Tianjin and Shenyang, 通州区 in
/// Beijing and Nantong) and the catalog lists only the municipalities'
/// districts; the lookup also peels a suffix, so Dalian's 中山区 finds
/// Guangdong's 中山市. Such a name matched outside the declared province,
/// or with no province declared, says nothing of where the line is: it
/// cannot be compared (`unknown_city`), and must neither quarantine the
/// report (`city_not_in_province`) nor place the line in the province of
/// the catalog entry.
fn county_level(city: &City, text: &str) -> bool {
    let kind = matches!(
        city.kind,
        CityKind::District | CityKind::County | CityKind::AutonomousCounty | CityKind::Parish
    );
    let written = text.trim();
    let lower = written.to_ascii_lowercase();
    let suffix = (written.ends_with('区') && !written.ends_with("地区"))
        || written.ends_with('县')
        || lower.ends_with("district")
        || lower.ends_with("county");
    kind || suffix
}

/// True when `text` begins with a name of `city`'s province (`北京市海淀区`,
/// `Beijing Haidian District`).
fn names_province_of(catalog: &Catalog, city: &City, text: &str) -> bool {
    text.char_indices().skip(1).any(|(end, _)| {
        text.get(..end)
            .and_then(|head| catalog.province(head))
            .is_some_and(|p| p.id == city.province)
    })
}

/// The prefecture-level code above a county-level one (`440305` → `440300`).
pub(crate) fn prefecture_of(code: &CityCode) -> Option<CityCode> {
    let head = code.as_str().get(..4)?;
    CityCode::new(&format!("{head}00")).ok()
}

/// What parsing the raw trace text gave.
struct RawParse {
    /// The format, when the hops were taken from the raw text.
    format: Option<TraceFormat>,
    /// True when the raw text could not be used (a reason was recorded).
    failed: bool,
}

fn parse_raw_trace(
    report: &mut Report,
    problems: &mut Vec<Reason>,
    warnings: &mut Vec<Reason>,
) -> RawParse {
    let untouched = RawParse {
        format: None,
        failed: false,
    };
    if !report.trace.engine.is_system() || !report.trace.hops.is_empty() {
        return untouched;
    }
    let Some(raw) = &report.trace.raw_text else {
        return untouched;
    };
    let parsed = match parse_trace_text(raw) {
        Ok(parsed) => parsed,
        Err(err) => {
            problems.push(Reason::new(
                ReasonCode::UnparseableTrace,
                Some("trace.raw_text"),
                err.to_string(),
            ));
            return RawParse {
                format: None,
                failed: true,
            };
        }
    };
    if let Some(said) = report.trace.raw_format
        && said != parsed.format
    {
        warnings.push(Reason::new(
            ReasonCode::RawFormatMismatch,
            Some("trace.raw_format"),
            format!(
                "is {said} but the text reads as {}; the text's format was used",
                parsed.format
            ),
        ));
    }
    report.trace.hops = parsed.hops;
    if report.trace.target_addr.is_none() {
        // A target written as an address must agree with target_addr.
        let literal = report.trace.target.parse().ok();
        if literal.is_none() || literal == parsed.target_addr {
            report.trace.target_addr = parsed.target_addr;
        }
    }
    // The parsers read longer or odder traces than a report may carry; the
    // parsed hops must obey the same rules as hops a probe sends.
    let broken = report.violations();
    if broken.is_empty() {
        return RawParse {
            format: Some(parsed.format),
            failed: false,
        };
    }
    for v in broken.0 {
        problems.push(Reason::new(
            ReasonCode::UnparseableTrace,
            Some(&v.field),
            format!(
                "the raw text read as {} gives hops the schema refuses: {}",
                parsed.format, v.reason
            ),
        ));
    }
    RawParse {
        format: None,
        failed: true,
    }
}

/// Warns of every hop address no router answers from (see the module
/// documentation), at most one warning per hop.
fn check_hop_addresses(report: &Report, warnings: &mut Vec<Reason>) {
    for (i, hop) in report.trace.hops.iter().enumerate() {
        let found = hop.addrs.iter().enumerate().find_map(|(j, addr)| {
            let what = match addr {
                IpAddr::V4(a) if a.is_unspecified() => "the unspecified address",
                IpAddr::V6(a) if a.is_unspecified() => "the unspecified address",
                IpAddr::V4(a) if a.is_broadcast() => "the limited broadcast address",
                a if a.is_multicast() => "a multicast address",
                _ => return None,
            };
            Some((j, addr, what))
        });
        if let Some((j, addr, what)) = found {
            warnings.push(Reason::new(
                ReasonCode::ImpossibleHopAddress,
                Some(&format!("trace.hops[{i}].addrs[{j}]")),
                format!(
                    "TTL {} lists {addr}, {what}, which no router answers from: the trace is \
                     not what a trace tool saw (a parser or the probe got it wrong); the hop's \
                     address is not used",
                    hop.ttl
                ),
            ));
        }
    }
}

fn check_complete(report: &Report, trace_failed: bool, problems: &mut Vec<Reason>) {
    let declared = &report.declared;
    if declared.carrier.is_none() && declared.province.is_none() {
        problems.push(Reason::new(
            ReasonCode::Incomplete,
            Some("declared"),
            "declares neither a carrier nor a province, so there is nothing to check the line \
             against; the probe must ask the subscriber for at least one",
        ));
    }
    if !trace_failed && report.trace.hops.iter().all(|h| h.addrs.is_empty()) {
        let what = if report.trace.hops.is_empty() {
            "has no hops"
        } else {
            "has no hop that answered"
        };
        problems.push(Reason::new(
            ReasonCode::Incomplete,
            Some("trace.hops"),
            format!(
                "{what}{}, so the line's first public hop cannot be found; the probe must send \
                 a trace that got replies",
                if report.trace.raw_text.is_some() {
                    " (also after parsing the raw text)"
                } else {
                    ""
                }
            ),
        ));
    }
}

/// The quarantine of a body the shared layer refused.
fn undecodable(body: &[u8], expected_node: &str, err: SharedError) -> Quarantine {
    match err {
        SharedError::Json(e) => {
            let reason = match std::str::from_utf8(body) {
                Err(utf8) => Reason::new(
                    ReasonCode::NotUtf8,
                    None,
                    format!(
                        "the body is not UTF-8 (invalid byte sequence at byte {}); a report is \
                         UTF-8 JSON",
                        utf8.valid_up_to()
                    ),
                ),
                Ok(_) => Reason::new(
                    ReasonCode::NotJson,
                    None,
                    format!("the body is not JSON: {e}"),
                ),
            };
            salvaged(body, vec![reason])
        }
        SharedError::InvalidReport(violations) => {
            let mut reasons: Vec<Reason> = violations
                .0
                .into_iter()
                .map(|v| violation_reason(body, v))
                .collect();
            // serde reads a struct from an array too; only an object is peeked.
            let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            let ids = if object { salvage_decoded(body) } else { None };
            let mut quarantine = match ids {
                Some(ids) => {
                    if !ids.has_envelope
                        && !reasons
                            .iter()
                            .any(|r| r.code == ReasonCode::MissingEnvelope)
                    {
                        reasons.push(missing_envelope());
                    }
                    if let Some(node) = ids.node_id.filter(|n| n != expected_node) {
                        reasons.push(node_mismatch(&node, expected_node));
                    }
                    Quarantine {
                        reasons,
                        report_id: ids.report_id,
                        install_id: ids.install_id,
                    }
                }
                None => Quarantine {
                    reasons,
                    report_id: None,
                    install_id: None,
                },
            };
            if quarantine.report_id.is_none() || quarantine.install_id.is_none() {
                let scanned = scan_ids(body);
                quarantine.report_id = quarantine.report_id.or(scanned.0);
                quarantine.install_id = quarantine.install_id.or(scanned.1);
            }
            quarantine
        }
        other => salvaged(
            body,
            vec![Reason::new(
                ReasonCode::SchemaViolation,
                None,
                other.to_string(),
            )],
        ),
    }
}

/// The reason code of one shared schema violation, by the field it names.
fn violation_reason(body: &[u8], v: Violation) -> Reason {
    let code = if v.field == DOCUMENT {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'{') {
            ReasonCode::SchemaViolation
        } else {
            ReasonCode::NotObject
        }
    } else if v.field == "schema" {
        ReasonCode::UnsupportedSchema
    } else if v.field == "envelope" || v.field.starts_with("envelope.") {
        ReasonCode::BadEnvelope
    } else {
        ReasonCode::SchemaViolation
    };
    Reason {
        code,
        field: Some(v.field),
        message: v.reason,
    }
}

/// A quarantine whose ids are salvaged by scanning the raw bytes.
fn salvaged(body: &[u8], reasons: Vec<Reason>) -> Quarantine {
    let (report_id, install_id) = scan_ids(body);
    Quarantine {
        reasons,
        report_id,
        install_id,
    }
}

/// What a JSON body that broke the schema still says about itself.
struct SalvagedIds {
    report_id: Option<String>,
    install_id: Option<String>,
    has_envelope: bool,
    node_id: Option<String>,
}

/// Reads the ids (and the envelope's presence and node) from a JSON object
/// that broke the schema; `None` when even that fails.
fn salvage_decoded(body: &[u8]) -> Option<SalvagedIds> {
    /// Only the top-level fields needed; everything else is ignored.
    #[derive(Deserialize)]
    struct Peek {
        report_id: Option<serde_json::Value>,
        install_id: Option<serde_json::Value>,
        envelope: Option<serde_json::Value>,
    }
    let peek: Peek = serde_json::from_slice(body).ok()?;
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    let node_id = peek
        .envelope
        .as_ref()
        .and_then(|e| e.get("node_id"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    Some(SalvagedIds {
        report_id: text(peek.report_id).filter(|s| ReportId::parse(s).is_ok()),
        install_id: text(peek.install_id).filter(|s| InstallId::parse(s).is_ok()),
        has_envelope: peek.envelope.is_some(),
        node_id,
    })
}

/// Finds `"report_id": "…"` and `"install_id": "…"` in bytes that need not be
/// JSON (truncated, not UTF-8 elsewhere). Only well-formed ids are kept: the
/// bytes are an attacker's, and the record must not carry their garbage.
fn scan_ids(body: &[u8]) -> (Option<String>, Option<String>) {
    let report_id = scan_string(body, b"\"report_id\"").filter(|s| ReportId::parse(s).is_ok());
    let install_id = scan_string(body, b"\"install_id\"").filter(|s| InstallId::parse(s).is_ok());
    (report_id, install_id)
}

/// The string value after the first occurrence of `key` that is followed by
/// `:` and a short plain (escape-free) string.
fn scan_string(body: &[u8], key: &[u8]) -> Option<String> {
    /// Longer than any id worth salvaging.
    const MAX_VALUE: usize = 64;
    let mut from = 0;
    while let Some(found) = body
        .get(from..)
        .and_then(|rest| rest.windows(key.len()).position(|w| w == key))
    {
        let after = from + found + key.len();
        from = after;
        let rest = body.get(after..).unwrap_or_default();
        let rest = skip_ws(rest);
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let Some(rest) = skip_ws(rest).strip_prefix(b"\"") else {
            continue;
        };
        let Some(end) = rest.iter().take(MAX_VALUE + 1).position(|&b| b == b'"') else {
            continue;
        };
        let value = rest.get(..end).unwrap_or_default();
        if value.contains(&b'\\') {
            continue;
        }
        if let Ok(text) = std::str::from_utf8(value) {
            return Some(text.to_owned());
        }
    }
    None
}

fn skip_ws(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// A value quoted for a message: double quotes, escapes, at most
/// [`MAX_ECHO`] characters.
pub(crate) fn quote(s: &str) -> String {
    if s.chars().count() > MAX_ECHO {
        let cut: String = s.chars().take(MAX_ECHO).collect();
        format!("{cut:?}…")
    } else {
        format!("{s:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_nul_makes_a_body_cleaned() {
        // A backslash followed by the text u0000 is no NUL.
        assert_eq!(without_nul(br#"{"a":"\\u0000"}"#), None);
        assert_eq!(without_nul(br#"{"a":"plain"}"#), None);
        // Not JSON: nothing is read from it as text.
        assert_eq!(without_nul(br#"{"a":"\u0000"#), None);
        let cleaned = without_nul(br#"{"a":["x\u0000y"],"k\u0000":1}"#).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&cleaned).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"a": ["x\u{fffd}y"], "k\u{fffd}": 1})
        );
    }

    #[test]
    fn scan_finds_ids_in_broken_json() {
        let body = br#"{"schema":1, "report_id" : "01970a3c-5e2f-7b41-9c3d-2f6a8e1b4d70","install_id":"GD-1","trace":{"#;
        let (report_id, install_id) = scan_ids(body);
        assert_eq!(
            report_id.as_deref(),
            Some("01970a3c-5e2f-7b41-9c3d-2f6a8e1b4d70")
        );
        assert_eq!(install_id.as_deref(), Some("GD-1"));
    }

    #[test]
    fn scan_skips_malformed_and_escaped_values() {
        let body = br#"{"report_id": 7, "install_id": "a\"b", "report_id": "not-a-uuid", "install_id": "ok-2"}"#;
        let (report_id, install_id) = scan_ids(body);
        assert_eq!(report_id, None);
        assert_eq!(install_id.as_deref(), Some("ok-2"));
        assert_eq!(scan_ids(b""), (None, None));
        assert_eq!(scan_ids(b"\"report_id\""), (None, None));
        assert_eq!(scan_ids(b"\"report_id\": \"unterminated"), (None, None));
    }

    #[test]
    fn prefecture_of_a_county() {
        let code = CityCode::new("440305").unwrap();
        assert_eq!(prefecture_of(&code).unwrap().as_str(), "440300");
    }

    #[test]
    fn quote_escapes_and_cuts() {
        assert_eq!(quote("CN-XX"), "\"CN-XX\"");
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        assert!(quote(&"x".repeat(200)).ends_with("\"…"));
    }

    #[test]
    fn summary_counts_and_joins() {
        let q = Quarantine {
            reasons: vec![
                Reason::new(ReasonCode::NotJson, None, "bad"),
                Reason::new(ReasonCode::Incomplete, Some("declared"), "empty"),
            ],
            report_id: None,
            install_id: None,
        };
        assert_eq!(q.summary(), "2 problems: bad; declared: empty");
        assert!(q.has(ReasonCode::Incomplete));
        assert!(!q.has(ReasonCode::TooLarge));
    }
}
