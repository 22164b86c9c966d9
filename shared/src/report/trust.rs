//! How far the receiver trusted a report's sources when it arrived.
//!
//! The receiver scores each probe installation and each source prefix from
//! their history (anomalies and rejected reports lower a score, clean traffic
//! raises it slowly) and checks the report's signature. The scores at arrival
//! travel with the report in its envelope, so the internal side can mark
//! verdicts from low-trust sources without hiding them.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A trust score from 0 (none) to 100 (full).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct TrustScore(u8);

impl JsonSchema for TrustScore {
    fn schema_name() -> Cow<'static, str> {
        "TrustScore".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": 0,
            "maximum": 100,
        })
    }
}

impl TrustScore {
    /// No trust at all.
    pub const NONE: Self = Self(0);
    /// Full trust.
    pub const FULL: Self = Self(100);

    /// A score, or `None` above 100.
    pub const fn new(value: u8) -> Option<Self> {
        if value <= 100 {
            Some(Self(value))
        } else {
            None
        }
    }

    /// A score from any number, clamped into 0–100 (rounded).
    pub fn saturating(value: f64) -> Self {
        if value.is_nan() {
            return Self::NONE;
        }
        // Clamped to 0..=100 first, so the cast cannot truncate or wrap.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Self(value.clamp(0.0, 100.0).round() as u8)
    }

    /// The score as a number.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for TrustScore {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Self::new(value).ok_or_else(|| format!("a trust score is 0 to 100, not {value}"))
    }
}

impl From<TrustScore> for u8 {
    fn from(score: TrustScore) -> Self {
        score.0
    }
}

impl fmt::Display for TrustScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The report's signature as the receiver checked it. Reports whose
/// signature fails are refused, so they never carry one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureCheck {
    /// Signed by the key enrolled for its `install_id`, fresh and not replayed.
    Verified,
    /// Not signed (an older probe); accepted with lower trust.
    Unsigned,
    /// Signed and verified, but by a key that replaced an earlier one for
    /// the same `install_id`.
    KeyChanged,
}

impl SignatureCheck {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Unsigned => "unsigned",
            Self::KeyChanged => "key_changed",
        }
    }
}

/// Why a score is below full.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TrustReason {
    /// A unit of the report (its source prefix, `install_id` or path) is in
    /// a traffic anomaly episode.
    AnomalyEpisode,
    /// The source recently sent reports the receiver rejected.
    RecentRejects,
    /// The report is not signed.
    Unsigned,
    /// The probe's key changed.
    KeyChanged,
    /// The receiver has little or no history of the source yet.
    NewSource,
}

impl TrustReason {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AnomalyEpisode => "anomaly_episode",
            Self::RecentRejects => "recent_rejects",
            Self::Unsigned => "unsigned",
            Self::KeyChanged => "key_changed",
            Self::NewSource => "new_source",
        }
    }
}

/// The trust of a report's sources when it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArrivalTrust {
    /// The report's trust: the lowest of the unit scores, capped for an
    /// unsigned report or a changed key.
    pub score: TrustScore,
    /// The `install_id`'s score.
    pub install: TrustScore,
    /// The source prefix's score (IPv4 /24, IPv6 /56).
    pub prefix: TrustScore,
    /// The signature check.
    pub signature: SignatureCheck,
    /// Why the score is below full, most important first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub reasons: Vec<TrustReason>,
    /// The id of the key the signature was verified with (16 lowercase
    /// hex digits), on a signed report. Each receiver node enrols keys on
    /// its own, so only the internal side, which sees every node's
    /// reports, can tell when two keys sign for one `install_id` at once.
    /// Absent from unsigned reports and from receivers that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{16}$"))]
    pub key_id: Option<String>,
}
