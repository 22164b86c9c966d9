//! Facts about the device that ran the probe, and the consent that gates some
//! of them.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ReportLimits;
use super::identity::{field_error, quoted};
use crate::Error;

/// The device that ran the probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceFacts {
    /// Operating system family (`windows`, `android`, `linux`, `macos`).
    #[schemars(length(min = 1, max = ReportLimits::MAX_SHORT_TEXT_LEN))]
    pub os: String,
    /// Operating system version as the OS reports it.
    #[schemars(length(min = 1, max = ReportLimits::MAX_SHORT_TEXT_LEN))]
    pub os_version: String,
    /// CPU architecture (`x86_64`, `aarch64`…).
    #[schemars(length(min = 1, max = ReportLimits::MAX_SHORT_TEXT_LEN))]
    pub arch: String,
    /// Version of the probe that made the report.
    #[schemars(length(min = 1, max = ReportLimits::MAX_SHORT_TEXT_LEN))]
    pub agent_version: String,
    /// MAC address of the interface the trace left through. Sent only after
    /// the subscriber accepted the consent text, so it requires `consent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddress>,
    /// Addresses of the device's own interfaces.
    #[serde(default)]
    #[schemars(length(max = ReportLimits::MAX_LOCAL_ADDRS))]
    pub local_addrs: Vec<IpAddr>,
    /// Whether traffic may leave through a proxy configured on the device.
    pub proxy: ProxyFacts,
}

/// Proxy settings found on the device: evidence for proxy suspicion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyFacts {
    /// A system-wide proxy is configured (Windows Internet settings, Android
    /// global proxy, macOS network settings).
    pub system_configured: bool,
    /// A proxy is set in the probe's environment (`HTTPS_PROXY`, `ALL_PROXY`…).
    pub env_configured: bool,
    /// What was found, for a human: proxy host and port or PAC URL, without
    /// credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ReportLimits::MAX_DETAIL_LEN))]
    pub details: Option<String>,
}

/// The subscriber's acceptance of the consent text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRecord {
    /// When the subscriber accepted, by the device clock.
    pub accepted_at: DateTime<FixedOffset>,
    /// Which version of the consent text was shown.
    #[schemars(length(min = 1, max = ReportLimits::MAX_SHORT_TEXT_LEN))]
    pub text_version: String,
}

/// An EUI-48 interface address, sent as `aa:bb:cc:dd:ee:ff`.
///
/// Parsing also accepts the Windows spelling `AA-BB-CC-DD-EE-FF`; the wire
/// form is always lowercase with colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddress([u8; 6]);

impl MacAddress {
    /// The address from its six octets.
    pub fn from_octets(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Reads `aa:bb:cc:dd:ee:ff` or `AA-BB-CC-DD-EE-FF`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        Self::check_str(s).map_err(|reason| field_error("device.mac", reason))
    }

    fn check_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{} is not a MAC address; write six hex octets separated by `:` \
                 (aa:bb:cc:dd:ee:ff)",
                quoted(s)
            )
        };
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut octets = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if octets == [0; 6] || octets == [0xff; 6] {
            return Err(format!(
                "{} is not an interface address; omit `mac` when the interface has none",
                quoted(s)
            ));
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, octet) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{octet:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for MacAddress {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for MacAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        Self::check_str(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for MacAddress {
    fn schema_name() -> Cow<'static, str> {
        "MacAddress".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An EUI-48 interface address: six hex octets separated by `:` (or `-`), not all zero or all ones.",
            "type": "string",
            "pattern": "^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$"
        })
    }
}
