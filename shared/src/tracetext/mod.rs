//! Parsers for the text that traceroute tools print.
//!
//! Users and older probes send raw text, and the agent's `system` engine runs
//! the platform's tool and keeps its output; both end up here. Every parser
//! produces the same [`ParsedTrace`], the format is detected automatically,
//! and no input, however broken, makes a parser panic.

mod decode;
mod mtr;
mod tracepath;
mod tracert;
mod unix;

use std::fmt;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Error, Hop};

pub use decode::{DecodedText, decode_console_bytes};

/// The tools whose output we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TraceFormat {
    /// Windows `tracert`, any display language.
    WindowsTracert,
    /// Linux (Debian/iputils/modern), BSD or macOS `traceroute`.
    Traceroute,
    /// BusyBox `traceroute` (routers, Android, embedded Linux).
    BusyboxTraceroute,
    /// iputils `tracepath` / `tracepath6`.
    Tracepath,
    /// `mtr --report` (also `--report-wide`).
    MtrReport,
    /// `mtr --json`.
    MtrJson,
}

impl TraceFormat {
    /// The name used on the wire and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WindowsTracert => "windows-tracert",
            Self::Traceroute => "traceroute",
            Self::BusyboxTraceroute => "busybox-traceroute",
            Self::Tracepath => "tracepath",
            Self::MtrReport => "mtr-report",
            Self::MtrJson => "mtr-json",
        }
    }
}

impl fmt::Display for TraceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A trace read from text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParsedTrace {
    /// Which tool printed it.
    pub format: TraceFormat,
    /// The destination as the tool named it (a hostname or an address), when
    /// the output says.
    pub target: Option<String>,
    /// The destination address, when the output shows it.
    pub target_addr: Option<IpAddr>,
    /// The hop limit the tool announced, when it did.
    pub max_hops: Option<u8>,
    /// For Windows `tracert`, the display language recognised from the
    /// header or timeout text (`zh-CN`, `en`, `ja`, `fr`…), when one was.
    pub locale: Option<String>,
    /// One entry per TTL printed, in TTL order.
    pub hops: Vec<Hop>,
}

/// What the format detector says it expected, in error messages.
pub const EXPECTED_FORMATS: &str = "the output of Windows tracert, traceroute (Linux, BSD, \
     macOS or BusyBox), tracepath, mtr --report or mtr --json";

/// Parses raw console bytes: decodes them (UTF-8, UTF-16, GBK, CP1252, CP850,
/// CP866…) and then parses the text with [`parse_trace_text`].
pub fn parse_trace_bytes(raw: &[u8]) -> Result<ParsedTrace, Error> {
    let decoded = decode_console_bytes(raw);
    parse_trace_text(&decoded.text)
}

/// Parses the text of any supported tool, detecting which one printed it.
pub fn parse_trace_text(text: &str) -> Result<ParsedTrace, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if mtr::looks_like_json(text) {
        return mtr::parse_json(text);
    }
    if mtr::looks_like_report(text) {
        return mtr::parse_report(text);
    }
    if tracert::looks_like(text) {
        return tracert::parse(text);
    }
    if tracepath::looks_like(text) {
        return tracepath::parse(text);
    }
    if unix::looks_like(text) {
        return unix::parse(text);
    }
    Err(Error::UnrecognizedTrace {
        expected: EXPECTED_FORMATS,
        detail: describe_unrecognized(text),
    })
}

/// Parses text printed by the tool behind `format`, without detection: for
/// a caller that ran the tool itself. Detection has to guess from the text,
/// and a tool's text can lack what tells it apart: BSD and macOS
/// `traceroute` print their header to standard error, and a headerless run
/// in which no hop answered looks like nothing at all. `Traceroute` and
/// `BusyboxTraceroute` share one parser, which tells them apart itself.
pub fn parse_trace_text_as(text: &str, format: TraceFormat) -> Result<ParsedTrace, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        TraceFormat::WindowsTracert => tracert::parse(text),
        TraceFormat::Traceroute | TraceFormat::BusyboxTraceroute => unix::parse(text),
        TraceFormat::Tracepath => tracepath::parse(text),
        TraceFormat::MtrReport => mtr::parse_report(text),
        TraceFormat::MtrJson => mtr::parse_json(text),
    }
}

/// Splits a line that starts (after indentation) with a hop number into the
/// number and what follows it; `None` when it starts with no digit.
fn leading_number(line: &str) -> Option<(&str, &str)> {
    let body = line.trim_start();
    let digits = body
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(body.len());
    (digits > 0).then(|| body.split_at(digits))
}

/// Whether what follows a hop number (and its marks) starts a hop line's
/// fields: nothing, or whitespace. `1.5 ms` or `10:00` start no hop line.
fn stands_apart(rest: &str) -> bool {
    rest.is_empty() || rest.starts_with(char::is_whitespace)
}

/// A short description of input that matched no format, for the error.
fn describe_unrecognized(text: &str) -> String {
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    match first {
        None => "the input is empty".to_owned(),
        Some(line) => {
            let shown: String = line.chars().take(60).collect();
            let more = if line.chars().count() > 60 { "…" } else { "" };
            format!("the first line is {shown:?}{more}, which no supported tool prints")
        }
    }
}
