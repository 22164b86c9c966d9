//! The trace a probe ran, as carried in a report.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ReportLimits;
use super::identity::{field_error, quoted};
use crate::{Error, Hop, TraceFormat};

/// One trace run: what was traced, how, and what each TTL found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportTrace {
    /// The destination as the probe was told it: a host name or an address.
    #[schemars(length(min = 1, max = ReportLimits::MAX_HOSTNAME_LEN))]
    pub target: String,
    /// The address the target resolved to, when it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_addr: Option<IpAddr>,
    /// The probe packets' protocol.
    pub protocol: TraceProtocol,
    /// The engine that ran the trace.
    pub engine: TraceEngine,
    /// Other engines tried or passed over, and why (no raw-socket privilege,
    /// blocked by a firewall, no probe answered…), best first: better ones
    /// not used, and when no engine got an answer, the other silent ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = ReportLimits::MAX_ENGINE_FALLBACKS))]
    pub engine_fallbacks: Vec<EngineFallback>,
    /// When the trace started, by the device clock.
    pub started_at: DateTime<FixedOffset>,
    /// How long the trace took, in milliseconds.
    #[schemars(range(max = ReportLimits::MAX_TRACE_DURATION_MS))]
    pub duration_ms: u64,
    /// One entry per TTL, in increasing TTL order. With a system command
    /// engine the hops may be empty: the receiver's side parses `raw_text`.
    #[serde(default)]
    #[schemars(length(max = ReportLimits::MAX_HOPS))]
    pub hops: Vec<Hop>,
    /// The command's console output, decoded to text. Present exactly when the
    /// engine is a system command; at most 64 KiB of UTF-8 (the schema's
    /// `maxLength` counts characters, so it is the weaker bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ReportLimits::MAX_RAW_TEXT_BYTES))]
    pub raw_text: Option<String>,
    /// The output format the probe recognised in `raw_text`, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_format: Option<TraceFormat>,
}

/// The protocol of the probe packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TraceProtocol {
    /// ICMP echo requests.
    Icmp,
    /// UDP datagrams to high ports.
    Udp,
    /// TCP SYNs.
    Tcp,
}

impl TraceProtocol {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Icmp => "icmp",
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

impl fmt::Display for TraceProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The engine that ran a trace, written `trippy-core`, `unprivileged`,
/// `windows-icmp` or `system:<command>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TraceEngine {
    /// The trippy-core library with raw sockets.
    TrippyCore,
    /// Unprivileged datagram ICMP sockets (Linux `ping_group_range`, macOS).
    Unprivileged,
    /// The Windows ICMP helper API (`IcmpSendEcho2`), which needs no privilege.
    WindowsIcmp,
    /// A system command (`tracert`, `traceroute`, `tracepath`, `mtr`…) whose
    /// output is carried as `raw_text`. Holds the command's name: lowercase
    /// ASCII letters, digits, `.`, `_`, `+` or `-`, without a path or arguments.
    System(String),
}

impl TraceEngine {
    /// Reads an engine name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        Self::check_str(s).map_err(|reason| field_error("trace.engine", reason))
    }

    /// True for `system:<command>`.
    pub fn is_system(&self) -> bool {
        matches!(self, Self::System(_))
    }

    fn check_str(s: &str) -> Result<Self, String> {
        match s {
            "trippy-core" => Ok(Self::TrippyCore),
            "unprivileged" => Ok(Self::Unprivileged),
            "windows-icmp" => Ok(Self::WindowsIcmp),
            _ => match s.strip_prefix("system:") {
                Some(command) => check_command(command).map(|()| Self::System(command.to_owned())),
                None => Err(format!(
                    "{} is not an engine; expected `trippy-core`, `unprivileged`, \
                     `windows-icmp` or `system:<command>`",
                    quoted(s)
                )),
            },
        }
    }
}

fn check_command(command: &str) -> Result<(), String> {
    let max = ReportLimits::MAX_COMMAND_LEN;
    let len = command.chars().count();
    if len == 0 || len > max {
        return Err(format!(
            "the command name in `system:<command>` is {len} characters long; \
             1 to {max} are accepted"
        ));
    }
    let first_ok = command
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = command.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'+' | b'-')
    });
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "the command name {} in `system:<command>` must be a bare program name: \
             lowercase ASCII letters, digits, `.`, `_`, `+` or `-`, no path or arguments",
            quoted(command)
        ))
    }
}

impl fmt::Display for TraceEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TrippyCore => f.write_str("trippy-core"),
            Self::Unprivileged => f.write_str("unprivileged"),
            Self::WindowsIcmp => f.write_str("windows-icmp"),
            Self::System(command) => write!(f, "system:{command}"),
        }
    }
}

impl FromStr for TraceEngine {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for TraceEngine {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceEngine {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        Self::check_str(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for TraceEngine {
    fn schema_name() -> Cow<'static, str> {
        "TraceEngine".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The engine that ran a trace: `trippy-core`, `unprivileged`, `windows-icmp` or `system:<command>` (a bare program name).",
            "type": "string",
            "pattern": "^(trippy-core|unprivileged|windows-icmp|system:[a-z0-9][a-z0-9._+-]{0,31})$"
        })
    }
}

/// An engine the probe did not use, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EngineFallback {
    /// The engine that was passed over.
    pub engine: TraceEngine,
    /// Why, for a human (`raw sockets need administrator rights`).
    #[schemars(length(min = 1, max = ReportLimits::MAX_DETAIL_LEN))]
    pub reason: String,
}
