//! What the subscriber says the line is.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ReportLimits;

/// The line as the subscriber declared it.
///
/// Province, city and carrier may be left out when the subscriber did not
/// say; the internal side fills them from the resolved egress address when the
/// address check passes, recording where each value came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclaredLine {
    /// The province as an ISO 3166-2:CN code, `CN-XX` (`CN-BJ`, `CN-GD`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^CN-[A-Z]{2}$"))]
    pub province: Option<String>,
    /// The city: a name as the subscriber wrote it, or a six-digit GB/T 2260
    /// division code (`440300`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = ReportLimits::MAX_CITY_LEN))]
    pub city: Option<String>,
    /// The carrier, as a catalog id in `snake_case` (`china_mobile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = ReportLimits::MAX_CARRIER_LEN), regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub carrier: Option<String>,
    /// The installation address, free text; may be empty.
    #[schemars(length(max = ReportLimits::MAX_ADDRESS_LEN))]
    pub address: String,
    /// Where the subscriber is, when the device or the subscriber gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<DeclaredLocation>,
}

/// A declared position (WGS 84).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclaredLocation {
    /// Latitude in degrees, -90 to 90.
    #[schemars(range(min = -90.0, max = 90.0))]
    pub lat: f64,
    /// Longitude in degrees, -180 to 180.
    #[schemars(range(min = -180.0, max = 180.0))]
    pub lon: f64,
    /// Radius of uncertainty in metres.
    #[schemars(range(min = 0.0, max = ReportLimits::MAX_LOCATION_ACCURACY_M))]
    pub accuracy_m: f64,
    /// Who gave the position.
    pub source: LocationSource,
}

/// Who gave a declared position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LocationSource {
    /// The device's positioning (GNSS or network location).
    Gps,
    /// The subscriber, picking a point or typing it.
    User,
}
