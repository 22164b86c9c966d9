//! Evidence from earlier attempts to submit a report.
//!
//! A probe that could not reach one endpoint tries the next and keeps what
//! happened; interference on the path (DNS poisoning, resets, TLS
//! interception) shows up here.

use chrono::{DateTime, FixedOffset};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ReportLimits;

/// One earlier attempt to submit this report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointAttempt {
    /// The endpoint URL tried (`https://…`).
    #[schemars(length(min = 1, max = ReportLimits::MAX_ENDPOINT_LEN), regex(pattern = r"^https?://"))]
    pub endpoint: String,
    /// When, by the device clock.
    pub at: DateTime<FixedOffset>,
    /// How far the attempt got.
    pub outcome: AttemptOutcome,
    /// The HTTP status received: required when `outcome` is `http_status`,
    /// optional (and 2xx) when it is `ok`, absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub http_status: Option<u16>,
    /// The error as the probe saw it, for a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ReportLimits::MAX_DETAIL_LEN))]
    pub detail: Option<String>,
}

/// How far a submission attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The endpoint's name did not resolve.
    Dns,
    /// The TCP connection failed or was reset.
    Connect,
    /// The TLS handshake failed (often interception).
    Tls,
    /// The server answered with a status other than success.
    HttpStatus,
    /// No answer in time.
    Timeout,
    /// The report was accepted.
    Ok,
}

impl AttemptOutcome {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::HttpStatus => "http_status",
            Self::Timeout => "timeout",
            Self::Ok => "ok",
        }
    }
}
