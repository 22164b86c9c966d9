//! Carriers: access networks a line can be sold on, research networks, and
//! hosting networks where an egress means a datacenter.

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::code::CarrierId;

/// A carrier or network operator, as listed in `config/catalog/carriers.toml`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Carrier {
    /// Identifier used in reports (`china_mobile`).
    pub id: CarrierId,
    /// Access, research or hosting network.
    pub kind: CarrierKind,
    /// Chinese name (`中国移动`).
    pub name_zh: String,
    /// English name (`China Mobile`).
    pub name_en: String,
    /// Other names users and databases give it (`CMCC`, `铁通`…).
    pub aliases: Vec<String>,
    /// Matcher for MaxMind-style organisation / ISP strings, compiled once.
    pub org_pattern: Regex,
    /// MCC 460 mobile network codes (`"00"`, `"02"`…).
    pub mnc: Vec<String>,
    /// Carriers whose networks normally carry this carrier's lines out: an
    /// egress there is expected, not a mismatch (Dr.Peng → Telecom/Unicom).
    pub expected_upstreams: Vec<CarrierId>,
    /// Its autonomous systems.
    pub asns: Vec<CarrierAsn>,
    /// Free-text remarks from the catalog.
    pub note: String,
}

impl PartialEq for Carrier {
    fn eq(&self, other: &Self) -> bool {
        // `Regex` has no equality; the same source text compiles the same.
        self.id == other.id
            && self.kind == other.kind
            && self.name_zh == other.name_zh
            && self.name_en == other.name_en
            && self.aliases == other.aliases
            && self.org_pattern.as_str() == other.org_pattern.as_str()
            && self.mnc == other.mnc
            && self.expected_upstreams == other.expected_upstreams
            && self.asns == other.asns
            && self.note == other.note
    }
}

impl Eq for Carrier {}

impl Carrier {
    /// True when a subscriber can declare this carrier for a line (access
    /// and research networks; not hosting).
    pub fn is_declarable(&self) -> bool {
        self.kind != CarrierKind::Hosting
    }

    /// True for cloud and datacenter networks.
    pub fn is_hosting(&self) -> bool {
        self.kind == CarrierKind::Hosting
    }
}

/// What a carrier's network is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CarrierKind {
    /// Sells subscriber lines.
    Access,
    /// Research and education network (CERNET, CSTNET).
    Research,
    /// Cloud or datacenter network: an egress there is a server, a VPS or a
    /// proxy, never a subscriber line.
    Hosting,
}

/// One autonomous system of a carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CarrierAsn {
    /// AS number.
    pub asn: u32,
    /// What the AS does for the carrier.
    pub role: AsnRole,
    /// Registry organisation name.
    pub name: String,
    /// Free-text remark.
    #[serde(default)]
    pub note: String,
}

/// What an autonomous system does for its carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AsnRole {
    /// National backbone (AS4134, AS4837, AS9808).
    Backbone,
    /// Premium backbone (CN2 AS4809, AS9929).
    PremiumBackbone,
    /// International or overseas network.
    International,
    /// Provincial or metropolitan network.
    Regional,
    /// Access network of a smaller operator (cable companies, Dr.Peng).
    Access,
    /// The carrier's own data centers.
    Datacenter,
    /// Internet exchange.
    Exchange,
    /// A merged or subsidiary company's network (Tietong).
    Subsidiary,
    /// Cloud provider network.
    Cloud,
}

/// A carrier entry as written in the catalog file, before its pattern is
/// compiled and its references checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CarrierEntry {
    pub(super) id: CarrierId,
    pub(super) kind: CarrierKind,
    pub(super) name_zh: String,
    pub(super) name_en: String,
    #[serde(default)]
    pub(super) aliases: Vec<String>,
    pub(super) org_pattern: String,
    #[serde(default)]
    pub(super) mnc: Vec<String>,
    #[serde(default)]
    pub(super) expected_upstreams: Vec<CarrierId>,
    #[serde(default)]
    pub(super) note: String,
    #[serde(default)]
    pub(super) asns: Vec<CarrierAsn>,
}
