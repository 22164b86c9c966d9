//! Parsing and validation of the three catalog files, and the lookup indexes
//! built from them. This is the only place a catalog is checked: whatever
//! passes here is consistent, so lookups never meet a dangling reference.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use regex::Regex;
use serde::Deserialize;

use super::carrier::{Carrier, CarrierEntry};
use super::city::{City, CityKind};
use super::code::{CarrierId, CityCode, ProvinceCode};
use super::normalize::{CITY_NAME_SUFFIXES, PROVINCE_NAME_SUFFIXES, fold, short_name};
use super::province::Province;
use super::{Catalog, Tier};
use crate::Error;

/// The text of one catalog file and the name to blame in errors.
#[derive(Debug, Clone, Copy)]
pub(super) struct Source<'a> {
    pub(super) name: &'a str,
    pub(super) text: &'a str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvincesFile {
    #[serde(default)]
    province: Vec<Province>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CitiesFile {
    #[serde(default)]
    province: Vec<CityGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CityGroup {
    id: ProvinceCode,
    #[serde(default)]
    cities: Vec<CityEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CityEntry {
    #[serde(default)]
    code: Option<CityCode>,
    name_zh: String,
    name_en: String,
    kind: CityKind,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CarriersFile {
    #[serde(default)]
    carrier: Vec<CarrierEntry>,
}

fn fail(file: &str, reason: impl Into<String>) -> Error {
    Error::Catalog {
        file: file.to_owned(),
        reason: reason.into(),
    }
}

fn parse<'de, T: Deserialize<'de>>(src: Source<'de>) -> Result<T, Error> {
    toml::from_str(src.text).map_err(|e| fail(src.name, e.to_string().trim_end().to_owned()))
}

/// How spellings are compared, for error messages.
const FOLD_RULE: &str =
    "spellings are compared ignoring case, spaces, punctuation and full-width forms";

/// Parses and checks the three files and builds the indexes.
pub(super) fn build(
    provinces_src: Source<'_>,
    cities_src: Source<'_>,
    carriers_src: Source<'_>,
) -> Result<Catalog, Error> {
    let provinces: ProvincesFile = parse(provinces_src)?;
    let cities: CitiesFile = parse(cities_src)?;
    let carriers: CarriersFile = parse(carriers_src)?;

    let (provinces, province_keys) = check_provinces(provinces_src.name, provinces.province)?;
    let (cities, city_keys) = check_cities(cities_src.name, &cities.province, &provinces)?;
    let (carriers, index) = check_carriers(carriers_src.name, &carriers.carrier)?;

    // The first city with each code, as a scan in catalog order finds it.
    let mut city_codes = HashMap::with_capacity(cities.len());
    for (i, city) in cities.iter().enumerate() {
        if let Some(code) = &city.code {
            city_codes.entry(code.clone()).or_insert(i);
        }
    }
    Ok(Catalog {
        provinces,
        cities,
        carriers,
        province_keys,
        city_keys,
        city_codes,
        carrier_keys: index.keys,
        asns: index.asns,
        mncs: index.mncs,
    })
}

/// A spelling's lookup key, or an error when nothing of it survives folding.
fn key_of(file: &str, owner: &str, spelling: &str) -> Result<String, Error> {
    let key = fold(spelling);
    if key.is_empty() {
        return Err(fail(
            file,
            format!("{owner}: spelling `{spelling}` has no letters or digits; remove it"),
        ));
    }
    Ok(key)
}

fn check_provinces(
    file: &str,
    provinces: Vec<Province>,
) -> Result<(Vec<Province>, HashMap<String, usize>), Error> {
    if provinces.is_empty() {
        return Err(fail(
            file,
            "no [[province]] entries; the catalog needs at least one",
        ));
    }
    let mut keys: HashMap<String, usize> = HashMap::new();
    let mut legacy: HashMap<u8, usize> = HashMap::new();
    for (i, p) in provinces.iter().enumerate() {
        let owner = format!("province {}", p.id);
        if p.gb_code.len() != 6
            || !p.gb_code.bytes().all(|b| b.is_ascii_digit())
            || !p.gb_code.ends_with("0000")
        {
            return Err(fail(
                file,
                format!(
                    "{owner}: gb_code `{}` must be six digits ending in 0000, such as 440000",
                    p.gb_code
                ),
            ));
        }
        if p.short_zh.chars().count() != 1 {
            return Err(fail(
                file,
                format!(
                    "{owner}: short_zh `{}` must be one character, such as 粤",
                    p.short_zh
                ),
            ));
        }
        for (field, value) in [
            ("name_zh", &p.name_zh),
            ("name_en", &p.name_en),
            ("iso_name", &p.iso_name),
        ] {
            if value.trim().is_empty() {
                return Err(fail(file, format!("{owner}: {field} is empty")));
            }
        }
        if let Some(&j) = legacy.get(&p.legacy_code) {
            let other = provinces.get(j).map_or("?", |o| o.id.as_str());
            return Err(fail(
                file,
                format!(
                    "{owner}: legacy_code {} is already used by {other}; each code names one province",
                    p.legacy_code
                ),
            ));
        }
        legacy.insert(p.legacy_code, i);

        let mut spellings: Vec<String> = vec![
            p.id.to_string(),
            p.id.letters().to_owned(),
            p.legacy_code.to_string(),
            // ISO 3166-2:CN before its 2017 change (CN-44, now CN-GD), still
            // in older GeoIP exports and address plans.
            format!("CN-{}", p.legacy_code),
            p.gb_code.clone(),
            p.name_zh.clone(),
            p.short_zh.clone(),
            p.name_en.clone(),
            p.iso_name.clone(),
        ];
        if let Some(short) = short_name(&p.name_zh, PROVINCE_NAME_SUFFIXES) {
            spellings.push(short.to_owned());
        }
        spellings.extend(p.aliases.iter().cloned());
        for spelling in &spellings {
            let key = key_of(file, &owner, spelling)?;
            match keys.entry(key) {
                Entry::Vacant(v) => {
                    v.insert(i);
                }
                Entry::Occupied(o) if *o.get() == i => {}
                Entry::Occupied(o) => {
                    let other = provinces.get(*o.get()).map_or("?", |o| o.id.as_str());
                    return Err(fail(
                        file,
                        format!(
                            "{owner}: `{spelling}` would name both {other} and {}; \
                             remove it from one of them ({FOLD_RULE}; ids, codes and \
                             names count as spellings)",
                            p.id
                        ),
                    ));
                }
            }
        }
    }
    Ok((provinces, keys))
}

type CityKeys = HashMap<String, Vec<(usize, Tier)>>;

/// Cities checked so far, with their indexes.
struct CityBuilder<'f> {
    file: &'f str,
    cities: Vec<City>,
    keys: CityKeys,
    codes: HashMap<CityCode, usize>,
}

fn check_cities(
    file: &str,
    groups: &[CityGroup],
    provinces: &[Province],
) -> Result<(Vec<City>, CityKeys), Error> {
    let mut b = CityBuilder {
        file,
        cities: Vec::new(),
        keys: HashMap::new(),
        codes: HashMap::new(),
    };
    let mut seen_groups: Vec<&ProvinceCode> = Vec::new();
    for group in groups {
        let Some(province) = provinces.iter().find(|p| p.id == group.id) else {
            let choices: Vec<&str> = provinces.iter().map(|p| p.id.as_str()).collect();
            return Err(fail(
                file,
                format!(
                    "[[province]] id = \"{}\" is not a province of provinces.toml; use one of: {}",
                    group.id,
                    choices.join(", ")
                ),
            ));
        };
        if seen_groups.contains(&&group.id) {
            return Err(fail(
                file,
                format!(
                    "[[province]] id = \"{}\" appears twice; merge its cities into one table",
                    group.id
                ),
            ));
        }
        seen_groups.push(&group.id);
        // Explicit spellings of this province's cities so far: key -> city index.
        let mut explicit: HashMap<String, usize> = HashMap::new();
        for entry in &group.cities {
            b.add(province, entry, &mut explicit)?;
        }
    }
    Ok((b.cities, b.keys))
}

impl CityBuilder<'_> {
    fn add(
        &mut self,
        province: &Province,
        entry: &CityEntry,
        explicit: &mut HashMap<String, usize>,
    ) -> Result<(), Error> {
        let file = self.file;
        let i = self.cities.len();
        let owner = match &entry.code {
            Some(code) => format!("city {} ({code}) in {}", entry.name_zh, province.id),
            None => format!("city {} in {}", entry.name_zh, province.id),
        };
        if entry.name_zh.trim().is_empty() || entry.name_en.trim().is_empty() {
            return Err(fail(
                file,
                format!("{owner}: name_zh and name_en must not be empty"),
            ));
        }
        if let Some(code) = &entry.code {
            let prefix = province.gb_code.get(..2).unwrap_or_default();
            if code.province_digits() != prefix {
                return Err(fail(
                    file,
                    format!(
                        "{owner}: code {code} starts with {} but {} has GB/T 2260 code {}; \
                         list the city under the province its code names, or fix the code",
                        code.province_digits(),
                        province.id,
                        province.gb_code
                    ),
                ));
            }
            if let Some(&j) = self.codes.get(code) {
                let other = self.cities.get(j).map_or("?", |c| c.name_zh.as_str());
                return Err(fail(
                    file,
                    format!(
                        "{owner}: code {code} is already used by {other}; codes must be unique"
                    ),
                ));
            }
            self.codes.insert(code.clone(), i);
        }

        let mut spellings: Vec<&str> = vec![&entry.name_zh, &entry.name_en];
        if let Some(code) = &entry.code {
            spellings.push(code.as_str());
        }
        spellings.extend(entry.aliases.iter().map(String::as_str));
        let mut own: Vec<String> = Vec::new();
        for spelling in spellings {
            let key = key_of(file, &owner, spelling)?;
            if let Some(&j) = explicit.get(&key).filter(|&&j| j != i) {
                let other = self.cities.get(j).map_or("?", |c| c.name_zh.as_str());
                return Err(fail(
                    file,
                    format!(
                        "{owner}: `{spelling}` would name both {other} and {} in {}; \
                         remove it from one of them ({FOLD_RULE})",
                        entry.name_zh, province.id
                    ),
                ));
            }
            explicit.insert(key.clone(), i);
            if !own.contains(&key) {
                own.push(key);
            }
        }
        for key in &own {
            self.keys
                .entry(key.clone())
                .or_default()
                .push((i, Tier::Explicit));
        }
        // The short form is derived, not declared: when two cities share it
        // (新竹市 / 新竹县) it is simply ambiguous, not an error.
        if let Some(short) = short_name(&entry.name_zh, CITY_NAME_SUFFIXES) {
            let key = fold(short);
            if !key.is_empty() && !own.contains(&key) {
                self.keys.entry(key).or_default().push((i, Tier::Derived));
            }
        }

        self.cities.push(City {
            code: entry.code.clone(),
            province: province.id.clone(),
            name_zh: entry.name_zh.clone(),
            name_en: entry.name_en.clone(),
            kind: entry.kind,
            aliases: entry.aliases.clone(),
        });
        Ok(())
    }
}

struct CarrierIndex {
    keys: HashMap<String, usize>,
    asns: HashMap<u32, usize>,
    mncs: HashMap<String, usize>,
}

fn check_carriers(
    file: &str,
    entries: &[CarrierEntry],
) -> Result<(Vec<Carrier>, CarrierIndex), Error> {
    if entries.is_empty() {
        return Err(fail(
            file,
            "no [[carrier]] entries; the catalog needs at least one",
        ));
    }
    let ids: Vec<&CarrierId> = entries.iter().map(|c| &c.id).collect();
    let mut index = CarrierIndex {
        keys: HashMap::new(),
        asns: HashMap::new(),
        mncs: HashMap::new(),
    };
    let mut carriers = Vec::with_capacity(entries.len());
    for (i, c) in entries.iter().enumerate() {
        let owner = format!("carrier {}", c.id);
        if ids.iter().take(i).any(|id| **id == c.id) {
            return Err(fail(
                file,
                format!("{owner}: the id appears twice; ids must be unique"),
            ));
        }
        let org_pattern = check_pattern(file, &owner, &c.org_pattern)?;
        check_upstreams(file, &owner, c, &ids)?;
        index.add_numbers(file, &owner, i, c, &ids)?;
        index.add_spellings(file, &owner, i, c, &ids)?;
        carriers.push(Carrier {
            id: c.id.clone(),
            kind: c.kind,
            name_zh: c.name_zh.clone(),
            name_en: c.name_en.clone(),
            aliases: c.aliases.clone(),
            org_pattern,
            mnc: c.mnc.clone(),
            expected_upstreams: c.expected_upstreams.clone(),
            asns: c.asns.clone(),
            note: c.note.clone(),
        });
    }
    Ok((carriers, index))
}

fn check_pattern(file: &str, owner: &str, pattern: &str) -> Result<Regex, Error> {
    let re = Regex::new(pattern).map_err(|e| {
        fail(
            file,
            format!(
                "{owner}: org_pattern is not a valid regular expression (Rust `regex` \
                 syntax; in TOML write it in single quotes so backslashes stay literal): {e}"
            ),
        )
    })?;
    if re.is_match("") {
        return Err(fail(
            file,
            format!(
                "{owner}: org_pattern `{pattern}` matches the empty string, so it would match \
                 every organisation; make every alternative non-empty"
            ),
        ));
    }
    Ok(re)
}

fn check_upstreams(
    file: &str,
    owner: &str,
    c: &CarrierEntry,
    ids: &[&CarrierId],
) -> Result<(), Error> {
    for up in &c.expected_upstreams {
        if *up == c.id {
            return Err(fail(
                file,
                format!("{owner}: expected_upstreams names the carrier itself; remove `{up}`"),
            ));
        }
        if !ids.contains(&up) {
            let choices: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
            return Err(fail(
                file,
                format!(
                    "{owner}: expected_upstreams names `{up}`, which is not a carrier in \
                     this catalog; use one of: {}",
                    choices.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

impl CarrierIndex {
    /// Indexes the carrier's MNCs and ASNs; each belongs to one carrier.
    fn add_numbers(
        &mut self,
        file: &str,
        owner: &str,
        i: usize,
        c: &CarrierEntry,
        ids: &[&CarrierId],
    ) -> Result<(), Error> {
        let name = |j: usize| ids.get(j).map_or("?", |id| id.as_str());
        for mnc in &c.mnc {
            if mnc.len() != 2 || !mnc.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail(
                    file,
                    format!("{owner}: mnc `{mnc}` must be two digits, such as \"00\""),
                ));
            }
            if let Some(&j) = self.mncs.get(mnc) {
                return Err(fail(
                    file,
                    format!(
                        "{owner}: MNC 460-{mnc} is already listed under {}; keep it in one carrier",
                        name(j)
                    ),
                ));
            }
            self.mncs.insert(mnc.clone(), i);
        }
        for asn in &c.asns {
            if asn.asn == 0 {
                return Err(fail(
                    file,
                    format!("{owner}: AS0 is reserved and cannot be a carrier's ASN"),
                ));
            }
            if let Some(&j) = self.asns.get(&asn.asn) {
                return Err(fail(
                    file,
                    format!(
                        "{owner}: AS{} is already listed under {}; an ASN belongs to one carrier",
                        asn.asn,
                        name(j)
                    ),
                ));
            }
            self.asns.insert(asn.asn, i);
        }
        Ok(())
    }

    /// Indexes the carrier's id, names and aliases; a spelling names one carrier.
    fn add_spellings(
        &mut self,
        file: &str,
        owner: &str,
        i: usize,
        c: &CarrierEntry,
        ids: &[&CarrierId],
    ) -> Result<(), Error> {
        let mut spellings: Vec<&str> = vec![c.id.as_str(), &c.name_zh, &c.name_en];
        spellings.extend(c.aliases.iter().map(String::as_str));
        for spelling in spellings {
            let key = key_of(file, owner, spelling)?;
            match self.keys.entry(key) {
                Entry::Vacant(v) => {
                    v.insert(i);
                }
                Entry::Occupied(o) if *o.get() == i => {}
                Entry::Occupied(o) => {
                    let other = ids.get(*o.get()).map_or("?", |id| id.as_str());
                    return Err(fail(
                        file,
                        format!(
                            "{owner}: alias `{spelling}` would name both {other} and {}; \
                             remove it from one of them ({FOLD_RULE})",
                            c.id
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
