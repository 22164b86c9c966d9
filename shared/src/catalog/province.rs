//! Provincial-level divisions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::code::ProvinceCode;

/// One of China's 34 provincial-level divisions, as listed in
/// `config/catalog/provinces.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Province {
    /// ISO 3166-2:CN code (`CN-GD`): the province's identifier everywhere.
    pub id: ProvinceCode,
    /// Former ISO 3166-2:CN numeric code (`44`); `MaxMind`'s test data still
    /// uses it (`"22"` for Jilin).
    pub legacy_code: u8,
    /// GB/T 2260 six-digit code (`440000`).
    pub gb_code: String,
    /// Full Chinese name (`广东省`).
    pub name_zh: String,
    /// One-character abbreviation (`粤`).
    pub short_zh: String,
    /// Common English name (`Guangdong`).
    pub name_en: String,
    /// ISO 3166-2 official romanised name (`Guangdong Sheng`).
    pub iso_name: String,
    /// What kind of division it is.
    pub kind: ProvinceKind,
    /// Seat of government, in Chinese.
    pub capital_zh: String,
    /// Seat of government, in English.
    pub capital_en: String,
    /// Other spellings that name this province.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// The kinds of provincial-level division.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProvinceKind {
    /// 直辖市: Beijing, Tianjin, Shanghai, Chongqing.
    Municipality,
    /// 省.
    Province,
    /// 自治区.
    AutonomousRegion,
    /// 特别行政区: Hong Kong, Macao.
    SpecialAdministrativeRegion,
}
