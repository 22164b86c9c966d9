//! Divisions below the provincial level.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::code::{CityCode, ProvinceCode};

/// A city or other division below the provincial level, as listed in
/// `config/catalog/cities.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct City {
    /// GB/T 2260 code (`440100`); `None` for Hong Kong's districts, Macao's
    /// parishes and Taiwan's cities and counties, which the standard does
    /// not subdivide.
    pub code: Option<CityCode>,
    /// The province it belongs to.
    pub province: ProvinceCode,
    /// Full Chinese name (`广州市`).
    pub name_zh: String,
    /// English or pinyin name (`Guangzhou`).
    pub name_en: String,
    /// What kind of division it is.
    pub kind: CityKind,
    /// Other spellings: short name, romanisations, traditional characters.
    pub aliases: Vec<String>,
}

/// The kinds of division in the city catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CityKind {
    /// A municipality or SAR as a whole (`北京市`, code `110000`), so that a
    /// city given as "Beijing" resolves.
    Municipality,
    /// 地级市, prefecture-level city.
    PrefectureCity,
    /// 地区, prefecture.
    Prefecture,
    /// 自治州, autonomous prefecture.
    AutonomousPrefecture,
    /// 盟, league (Inner Mongolia).
    League,
    /// 区: a district of a municipality, or one of Hong Kong's 18 districts.
    District,
    /// 县 (Taiwan: 縣).
    County,
    /// 自治县, autonomous county.
    AutonomousCounty,
    /// 县级市 directly under a province (Hainan, Hubei, Henan, Xinjiang).
    CountyCity,
    /// 林区, forestry district (Shennongjia).
    ForestryArea,
    /// 堂区, a parish of Macao (and Cotai).
    Parish,
    /// A city of Taiwan (市).
    City,
}
