//! Catalogs of provinces, cities and carriers, and the normalisation that maps
//! the many spellings databases and users give them onto one entry.
//!
//! The catalogs are TOML files under `config/catalog/`; the same files are
//! compiled in, so every program works without them. A folder with the three
//! files replaces the embedded defaults ([`Catalog::load_dir`]). Everything is
//! checked when a catalog is loaded; lookups never fail, they answer `None`
//! when a spelling names nothing — or more than one thing.

mod build;
mod carrier;
mod city;
mod code;
mod normalize;
mod province;

use std::collections::HashMap;
use std::path::Path;

pub use carrier::{AsnRole, Carrier, CarrierAsn, CarrierKind};
pub use city::{City, CityKind};
pub use code::{CarrierId, CityCode, ProvinceCode};
pub use province::{Province, ProvinceKind};

use build::Source;
use normalize::{
    CARRIER_SUFFIXES, CITY_SUFFIXES, PROVINCE_NAME_SUFFIXES, PROVINCE_SUFFIXES, fold, narrow, peel,
    short_name,
};

use crate::Error;

const PROVINCES_FILE: &str = "provinces.toml";
const CITIES_FILE: &str = "cities.toml";
const CARRIERS_FILE: &str = "carriers.toml";

const EMBEDDED_PROVINCES: &str = include_str!("../../../config/catalog/provinces.toml");
const EMBEDDED_CITIES: &str = include_str!("../../../config/catalog/cities.toml");
const EMBEDDED_CARRIERS: &str = include_str!("../../../config/catalog/carriers.toml");

/// How a city spelling was obtained: listed in the catalog, or derived from
/// the official name by dropping its suffix. Listed spellings win over derived
/// ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Explicit,
    Derived,
}

/// Suffixes peeled off a query at most this many times ("中国移动通信集团有限公司").
const MAX_PEEL: usize = 4;

/// Leading words that say "China" before a name ("中国广东", "China Guangdong").
const COUNTRY_PREFIXES: &[&str] = &["中华人民共和国", "中国", "china"];

/// The province, city and carrier catalogs with their lookup indexes.
#[derive(Debug, Clone)]
pub struct Catalog {
    provinces: Vec<Province>,
    cities: Vec<City>,
    carriers: Vec<Carrier>,
    province_keys: HashMap<String, usize>,
    city_keys: HashMap<String, Vec<(usize, Tier)>>,
    /// GB/T 2260 code → city: the pipeline looks codes up several times per
    /// report.
    city_codes: HashMap<CityCode, usize>,
    carrier_keys: HashMap<String, usize>,
    asns: HashMap<u32, usize>,
    mncs: HashMap<String, usize>,
}

impl PartialEq for Catalog {
    /// Two catalogs are equal when their entries are; the indexes follow.
    fn eq(&self, other: &Self) -> bool {
        self.provinces == other.provinces
            && self.cities == other.cities
            && self.carriers == other.carriers
    }
}

impl Eq for Catalog {}

impl Catalog {
    /// The catalogs compiled into the program (`config/catalog/` at build
    /// time). Fails only if those files were broken at build time, which the
    /// test suite rules out.
    pub fn embedded() -> Result<Self, Error> {
        build::build(
            Source {
                name: "provinces.toml (embedded)",
                text: EMBEDDED_PROVINCES,
            },
            Source {
                name: "cities.toml (embedded)",
                text: EMBEDDED_CITIES,
            },
            Source {
                name: "carriers.toml (embedded)",
                text: EMBEDDED_CARRIERS,
            },
        )
    }

    /// Loads `provinces.toml`, `cities.toml` and `carriers.toml` from `dir`.
    ///
    /// A missing or unreadable file is [`Error::Io`]; a file that does not
    /// parse or is inconsistent is [`Error::Catalog`] naming the file and the
    /// entry.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|text| (path.display().to_string(), text))
                .map_err(|source| Error::Io {
                    path: path.display().to_string(),
                    source,
                })
        };
        let (p_name, p_text) = read(PROVINCES_FILE)?;
        let (c_name, c_text) = read(CITIES_FILE)?;
        let (k_name, k_text) = read(CARRIERS_FILE)?;
        build::build(
            Source {
                name: &p_name,
                text: &p_text,
            },
            Source {
                name: &c_name,
                text: &c_text,
            },
            Source {
                name: &k_name,
                text: &k_text,
            },
        )
    }

    // ───────────────────────────── provinces ─────────────────────────────

    /// All provinces, in catalog order.
    pub fn provinces(&self) -> &[Province] {
        &self.provinces
    }

    /// The province with this exact id.
    pub fn province_by_id(&self, id: &ProvinceCode) -> Option<&Province> {
        self.provinces.iter().find(|p| &p.id == id)
    }

    /// The province a name or code means, whatever the spelling: `广东`,
    /// `广东省`, `粤`, `Guangdong`, `Guangdong Sheng`, `Guangdong Province`,
    /// `GD`, `gd`, `CN-GD`, `44` (the legacy numeric code `MaxMind` uses),
    /// `CN-44` (ISO 3166-2:CN before 2017),
    /// `440000` (GB/T 2260), full-width forms and extra spaces included.
    pub fn province(&self, name_or_code: &str) -> Option<&Province> {
        self.province_index(&fold(name_or_code))
            .and_then(|i| self.provinces.get(i))
    }

    fn province_index(&self, key: &str) -> Option<usize> {
        let find = |k: &str| {
            peel(k, PROVINCE_SUFFIXES, MAX_PEEL, |k| {
                self.province_keys.get(k).copied()
            })
        };
        find(key).or_else(|| {
            COUNTRY_PREFIXES
                .iter()
                .filter_map(|p| key.strip_prefix(p))
                .find_map(find)
        })
    }

    /// The valid province ids, in catalog order.
    pub fn province_ids(&self) -> impl Iterator<Item = &ProvinceCode> {
        self.provinces.iter().map(|p| &p.id)
    }

    /// The valid province ids as one line for error messages:
    /// `CN-BJ (北京市), CN-TJ (天津市), …`.
    pub fn province_choices(&self) -> String {
        self.provinces
            .iter()
            .map(|p| format!("{} ({})", p.id, p.name_zh))
            .collect::<Vec<_>>()
            .join(", ")
    }

    // ─────────────────────────────── cities ──────────────────────────────

    /// All cities, grouped by province in catalog order.
    pub fn cities(&self) -> &[City] {
        &self.cities
    }

    /// The cities of one province.
    pub fn cities_in<'a>(&'a self, province: &'a ProvinceCode) -> impl Iterator<Item = &'a City> {
        self.cities.iter().filter(move |c| &c.province == province)
    }

    /// The city with this GB/T 2260 code.
    pub fn city_by_code(&self, code: &CityCode) -> Option<&City> {
        self.city_codes.get(code).and_then(|&i| self.cities.get(i))
    }

    /// The city a name or code means within `province`, or anywhere when
    /// `province` is `None` — then only if exactly one city has that
    /// spelling ("朝阳" is both a district of Beijing and a city of Liaoning).
    ///
    /// Accepts `广州`, `广州市`, `Guangzhou`, `Guangzhou Shi`, `Guangzhou City`,
    /// `440100`, and a name prefixed by its province (`广东省广州市`).
    pub fn city(&self, province: Option<&ProvinceCode>, name_or_code: &str) -> Option<&City> {
        let key = fold(name_or_code);
        if key.is_empty() {
            return None;
        }
        if let Some(i) = peel(&key, CITY_SUFFIXES, 2, |k| self.city_unique(province, k)) {
            return self.cities.get(i);
        }
        // "广东省广州市", "Guangdong Guangzhou": a province name in front.
        let mut found: Option<usize> = None;
        for p in &self.provinces {
            if province.is_some_and(|want| *want != p.id) {
                continue;
            }
            for prefix in Self::province_prefixes(p) {
                let Some(rest) = key.strip_prefix(prefix.as_str()) else {
                    continue;
                };
                if rest.is_empty() {
                    continue;
                }
                if let Some(i) = peel(rest, CITY_SUFFIXES, 2, |k| self.city_unique(Some(&p.id), k))
                {
                    if found.is_some_and(|f| f != i) {
                        return None;
                    }
                    found = Some(i);
                }
            }
        }
        found.and_then(|i| self.cities.get(i))
    }

    /// Folded spellings a province may be written with in front of a city.
    fn province_prefixes(p: &Province) -> Vec<String> {
        let mut out = vec![fold(&p.name_zh), fold(&p.name_en), fold(&p.iso_name)];
        if let Some(short) = short_name(&p.name_zh, PROVINCE_NAME_SUFFIXES) {
            out.push(fold(short));
        }
        out
    }

    /// The single city `key` names within `province` (or anywhere), listed
    /// spellings first, derived short names second.
    fn city_unique(&self, province: Option<&ProvinceCode>, key: &str) -> Option<usize> {
        let hits = self.city_keys.get(key)?;
        let in_scope = |i: usize| {
            province.is_none_or(|want| self.cities.get(i).is_some_and(|c| c.province == *want))
        };
        for tier in [Tier::Explicit, Tier::Derived] {
            let mut found: Option<usize> = None;
            for &(i, t) in hits {
                if t != tier || !in_scope(i) {
                    continue;
                }
                match found {
                    None => found = Some(i),
                    Some(f) if f == i => {}
                    Some(_) => return None,
                }
            }
            if found.is_some() {
                return found;
            }
        }
        None
    }

    // ────────────────────────────── carriers ─────────────────────────────

    /// All carriers (access, research and hosting), in catalog order.
    pub fn carriers(&self) -> &[Carrier] {
        &self.carriers
    }

    /// The carrier with this exact id.
    pub fn carrier_by_id(&self, id: &CarrierId) -> Option<&Carrier> {
        self.carriers.iter().find(|c| &c.id == id)
    }

    /// The carrier a name or alias means: `中国移动`, `移动`, `China Mobile`,
    /// `CMCC`, `铁通` (China Mobile), `CHINANET` (China Telecom), `长城宽带`
    /// (Dr.Peng), also with company suffixes (`中国移动通信集团有限公司`) or a
    /// province around it (`广东移动`, `China Telecom Guangdong`).
    pub fn carrier(&self, name_or_alias: &str) -> Option<&Carrier> {
        let key = fold(name_or_alias);
        if key.is_empty() {
            return None;
        }
        let find = |k: &str| {
            peel(k, CARRIER_SUFFIXES, MAX_PEEL, |k| {
                self.carrier_keys.get(k).copied()
            })
        };
        let hit = find(&key).or_else(|| {
            // A province name before or after the carrier's.
            self.provinces
                .iter()
                .flat_map(Self::province_prefixes)
                .find_map(|p| {
                    let rest = key
                        .strip_prefix(p.as_str())
                        .or_else(|| key.strip_suffix(p.as_str()))?;
                    if rest.is_empty() { None } else { find(rest) }
                })
        });
        hit.and_then(|i| self.carriers.get(i))
    }

    /// The carrier that owns this autonomous system (AS9394, Tietong, is China
    /// Mobile's).
    pub fn carrier_by_asn(&self, asn: u32) -> Option<&Carrier> {
        self.asns.get(&asn).and_then(|&i| self.carriers.get(i))
    }

    /// The carrier of an MCC 460 mobile network code (`"00"` → China Mobile).
    pub fn carrier_by_mnc(&self, mnc: &str) -> Option<&Carrier> {
        self.mncs
            .get(mnc.trim())
            .and_then(|&i| self.carriers.get(i))
    }

    /// The carrier an organisation, ISP or AS-organisation string from a
    /// MaxMind-format database names ("CNCGROUP China169 Backbone",
    /// "China Telecom FUJIAN", "Guangdong Mobile Communication Co.Ltd.").
    /// When several carriers' patterns match, the longest match wins
    /// ("北京电信通" is Dr.Peng, not China Telecom); on a tie the carrier
    /// listed first.
    pub fn carrier_by_org(&self, org: &str) -> Option<&Carrier> {
        let org = narrow(org);
        let mut best: Option<(usize, &Carrier)> = None;
        for c in &self.carriers {
            let longest = c.org_pattern.find_iter(&org).map(|m| m.len()).max();
            if let Some(len) = longest
                && best.is_none_or(|(b, _)| len > b)
            {
                best = Some((len, c));
            }
        }
        best.map(|(_, c)| c)
    }

    /// True when a line declared on `declared` normally leaves through
    /// `actual`: `actual` is one of `declared`'s expected upstreams (Dr.Peng
    /// or cable lines egressing through China Telecom or China Unicom). The
    /// same carrier on both sides is not an upstream relation; compare ids
    /// for that. Tietong needs no relation: it *is* `china_mobile`.
    pub fn is_expected_upstream(&self, declared: &CarrierId, actual: &CarrierId) -> bool {
        self.carrier_by_id(declared)
            .is_some_and(|c| c.expected_upstreams.contains(actual))
    }

    /// All carrier ids, hosting networks included, in catalog order.
    pub fn carrier_ids(&self) -> impl Iterator<Item = &CarrierId> {
        self.carriers.iter().map(|c| &c.id)
    }

    /// The carrier ids a subscriber may declare, as one line for error
    /// messages: `china_telecom (中国电信), china_unicom (中国联通), …`.
    pub fn carrier_choices(&self) -> String {
        self.carriers
            .iter()
            .filter(|c| c.is_declarable())
            .map(|c| format!("{} ({})", c.id, c.name_zh))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat() -> Catalog {
        Catalog::embedded().unwrap()
    }

    #[test]
    fn derived_short_names_are_ambiguous_when_shared() {
        let c = cat();
        let tw = ProvinceCode::new("CN-TW").unwrap();
        assert!(c.city(Some(&tw), "新竹").is_none());
        assert_eq!(c.city(Some(&tw), "新竹市").unwrap().name_en, "Hsinchu City");
        assert_eq!(
            c.city(Some(&tw), "新竹县").unwrap().name_en,
            "Hsinchu County"
        );
    }

    #[test]
    fn pre_2017_numeric_iso_codes_are_read() {
        let c = cat();
        for (code, id) in [("CN-44", "CN-GD"), ("cn-11", "CN-BJ"), ("CN-71", "CN-TW")] {
            assert_eq!(c.province(code).unwrap().id.as_str(), id, "{code}");
        }
        assert!(c.province("CN-99").is_none());
    }

    #[test]
    fn country_prefix_is_ignored() {
        let c = cat();
        assert_eq!(c.province("中国广东").unwrap().id.as_str(), "CN-GD");
        assert_eq!(c.province("China Guangdong").unwrap().id.as_str(), "CN-GD");
    }

    #[test]
    fn empty_and_junk_queries_answer_none() {
        let c = cat();
        for q in ["", "   ", "省", "市", "---", "中国", "Province"] {
            assert!(c.province(q).is_none(), "{q}");
            assert!(c.city(None, q).is_none(), "{q}");
            assert!(c.carrier(q).is_none(), "{q}");
        }
    }
}
