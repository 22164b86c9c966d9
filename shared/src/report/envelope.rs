//! What the receiver adds to a report: only it can know these.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ArrivalTrust, ReportLimits};

/// The receiver's record of how a report arrived. A probe never sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiverEnvelope {
    /// When the receiver got the report, by the server clock.
    pub received_at: DateTime<Utc>,
    /// The egress public address as the receiver (or a trusted proxy in front
    /// of it) saw it.
    pub peer_ip: IpAddr,
    /// The egress TCP source port (1–65535), as seen with `peer_ip`. Absent
    /// when the address came from a trusted proxy's `X-Forwarded-For` or
    /// `X-Real-IP`, which do not carry the client's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub peer_port: Option<u16>,
    /// The request path the report arrived on (`/v1/reports`), without the
    /// query string.
    #[schemars(length(min = 1, max = ReportLimits::MAX_PATH_LEN), regex(pattern = "^/"))]
    pub path: String,
    /// Selected request headers.
    #[serde(default)]
    pub headers: EnvelopeHeaders,
    /// The TLS session, when the receiver terminated TLS itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EnvelopeTls>,
    /// The receiving node's id.
    #[schemars(length(min = 1, max = ReportLimits::MAX_SHORT_TEXT_LEN), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"))]
    pub node_id: String,
    /// How far the receiver trusted the report's sources when it arrived.
    /// Absent from receivers that predate trust scoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<ArrivalTrust>,
    /// The node's sequence number for this report: strictly increasing per
    /// node, so the puller can resume after the last one it committed.
    /// Kept the last field: the staging store writes the number into the
    /// encoded JSON's tail.
    pub seq: u64,
}

/// The request headers a receiver records; no others are kept.
///
/// Repeated headers are joined with `, ` (RFC 9110 field combination).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeHeaders {
    /// `User-Agent`.
    #[serde(
        rename = "user-agent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = ReportLimits::MAX_HEADER_VALUE_LEN))]
    pub user_agent: Option<String>,
    /// `Accept-Language`.
    #[serde(
        rename = "accept-language",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = ReportLimits::MAX_HEADER_VALUE_LEN))]
    pub accept_language: Option<String>,
    /// `Via`: proxies on the way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ReportLimits::MAX_HEADER_VALUE_LEN))]
    pub via: Option<String>,
    /// `X-Forwarded-For`: proxies on the way, and the addresses they saw.
    #[serde(
        rename = "x-forwarded-for",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = ReportLimits::MAX_HEADER_VALUE_LEN))]
    pub x_forwarded_for: Option<String>,
    /// `X-Real-IP`.
    #[serde(rename = "x-real-ip", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ReportLimits::MAX_HEADER_VALUE_LEN))]
    pub x_real_ip: Option<String>,
    /// `Forwarded` (RFC 7239).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ReportLimits::MAX_HEADER_VALUE_LEN))]
    pub forwarded: Option<String>,
}

impl EnvelopeHeaders {
    /// The header names recorded, lowercase, as they appear on the wire.
    pub const SELECTED: [&'static str; 6] = [
        "user-agent",
        "accept-language",
        "via",
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
    ];

    /// Records a request header if it is one of [`Self::SELECTED`] (compared
    /// case-insensitively) and says whether it was.
    ///
    /// A repeated header is appended after `, `. Control characters become
    /// spaces and the value is cut at [`ReportLimits::MAX_HEADER_VALUE_LEN`]
    /// characters, so what is recorded always validates: a receiver must not
    /// lose a report over a header it did not choose.
    pub fn insert(&mut self, name: &str, value: &str) -> bool {
        let Some(slot) = self.slot_mut(name) else {
            return false;
        };
        let mut joined = slot.take().unwrap_or_default();
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.extend(value.chars().map(|c| if c.is_control() { ' ' } else { c }));
        if let Some((cut, _)) = joined
            .char_indices()
            .nth(ReportLimits::MAX_HEADER_VALUE_LEN)
        {
            joined.truncate(cut);
        }
        *slot = Some(joined);
        true
    }

    /// The recorded value of a selected header (name compared
    /// case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        let lower = name.to_ascii_lowercase();
        let value = match lower.as_str() {
            "user-agent" => &self.user_agent,
            "accept-language" => &self.accept_language,
            "via" => &self.via,
            "x-forwarded-for" => &self.x_forwarded_for,
            "x-real-ip" => &self.x_real_ip,
            "forwarded" => &self.forwarded,
            _ => return None,
        };
        value.as_deref()
    }

    /// The recorded headers as `(name, value)` pairs, in [`Self::SELECTED`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            &self.user_agent,
            &self.accept_language,
            &self.via,
            &self.x_forwarded_for,
            &self.x_real_ip,
            &self.forwarded,
        ]
        .into_iter()
        .zip(Self::SELECTED)
        .filter_map(|(value, name)| value.as_deref().map(|v| (name, v)))
    }

    fn slot_mut(&mut self, name: &str) -> Option<&mut Option<String>> {
        let lower = name.to_ascii_lowercase();
        Some(match lower.as_str() {
            "user-agent" => &mut self.user_agent,
            "accept-language" => &mut self.accept_language,
            "via" => &mut self.via,
            "x-forwarded-for" => &mut self.x_forwarded_for,
            "x-real-ip" => &mut self.x_real_ip,
            "forwarded" => &mut self.forwarded,
            _ => return None,
        })
    }
}

/// The TLS session a report arrived over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeTls {
    /// The negotiated protocol version (`TLSv1.3`).
    #[schemars(length(min = 1, max = ReportLimits::MAX_SHORT_TEXT_LEN))]
    pub version: String,
    /// The server name the client asked for, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = ReportLimits::MAX_HOSTNAME_LEN))]
    pub sni: Option<String>,
}
