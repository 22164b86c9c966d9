//! What the subscriber declared, checked against the catalogs: a value the
//! catalogs do not know is refused with the list of values they do know,
//! because a misspelt carrier would otherwise look like a non-compliant line.

use lineprobe_shared::{Catalog, DeclaredLine, DeclaredLocation, ProvinceCode};

use crate::Error;
use crate::config::DeclaredConfig;

/// The declared line and account, ready for a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    /// Province, city, carrier, address and location.
    pub line: DeclaredLine,
    /// The broadband account.
    pub account: String,
}

/// Checks the configured values against `catalog` and puts them in their
/// canonical form: the province's ISO code, the city's GB/T 2260 code (or
/// its Chinese name when the catalog has no code) and the carrier's id. A
/// GPS fix from the device wins over a location typed in the config.
pub fn resolve_declared(
    config: &DeclaredConfig,
    catalog: &Catalog,
    gps: Option<&DeclaredLocation>,
) -> Result<Declared, Error> {
    let province =
        match non_empty(config.province.as_deref()) {
            None => None,
            Some(given) => Some(catalog.province(given).map(|p| p.id.clone()).ok_or_else(
                || Error::Declared {
                    field: "province",
                    value: given.to_owned(),
                    choices: catalog.province_choices(),
                },
            )?),
        };
    let city = match non_empty(config.city.as_deref()) {
        None => None,
        Some(given) => {
            let found = catalog
                .city(province.as_ref(), given)
                .ok_or_else(|| Error::Declared {
                    field: "city",
                    value: given.to_owned(),
                    choices: city_choices(catalog, province.as_ref()),
                })?;
            Some(
                found
                    .code
                    .as_ref()
                    .map_or_else(|| found.name_zh.clone(), ToString::to_string),
            )
        }
    };
    let carrier = match non_empty(config.carrier.as_deref()) {
        None => None,
        Some(given) => Some(
            catalog
                .carrier(given)
                .filter(|c| c.is_declarable())
                .map(|c| c.id.to_string())
                .ok_or_else(|| Error::Declared {
                    field: "carrier",
                    value: given.to_owned(),
                    choices: catalog.carrier_choices(),
                })?,
        ),
    };
    let location = gps.cloned().or_else(|| {
        config.location.map(|l| DeclaredLocation {
            lat: l.latitude,
            lon: l.longitude,
            accuracy_m: l.accuracy_m,
            source: l.source,
        })
    });
    Ok(Declared {
        line: DeclaredLine {
            province: province.map(|p| p.to_string()),
            city,
            carrier,
            address: config.address.trim().to_owned(),
            location,
        },
        account: config.account.trim().to_owned(),
    })
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// The cities of the declared province, or a hint to declare one first:
/// the whole country's list would be thousands of names.
fn city_choices(catalog: &Catalog, province: Option<&ProvinceCode>) -> String {
    match province {
        Some(p) => catalog
            .cities_in(p)
            .map(|c| match &c.code {
                Some(code) => format!("{} ({code})", c.name_zh),
                None => c.name_zh.clone(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        None => "a city name or GB/T 2260 code from the city catalog; set `declared.province` \
                 to list that province's cities"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::embedded().expect("embedded catalog")
    }

    #[test]
    fn names_become_canonical_ids() {
        let config = DeclaredConfig {
            province: Some("广东".to_owned()),
            city: Some("深圳市".to_owned()),
            carrier: Some("中国移动".to_owned()),
            ..DeclaredConfig::default()
        };
        let declared = resolve_declared(&config, &catalog(), None).expect("valid");
        assert_eq!(declared.line.province.as_deref(), Some("CN-GD"));
        assert_eq!(declared.line.city.as_deref(), Some("440300"));
        assert_eq!(declared.line.carrier.as_deref(), Some("china_mobile"));
    }
}
