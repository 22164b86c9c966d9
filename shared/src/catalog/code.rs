//! Identifier newtypes: a value of these types is always well-formed, so code
//! that holds one never re-checks it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Longest value echoed back in an [`Error::InvalidId`]: user input can be
/// arbitrarily long and error messages should stay readable.
const MAX_ECHO: usize = 64;

fn invalid(kind: &'static str, value: &str, expected: &'static str) -> Error {
    let value = if value.chars().count() > MAX_ECHO {
        let mut cut: String = value.chars().take(MAX_ECHO).collect();
        cut.push('…');
        cut
    } else {
        value.to_owned()
    };
    Error::InvalidId {
        kind,
        value,
        expected,
    }
}

/// Implements the string plumbing shared by the identifier newtypes.
macro_rules! string_id {
    ($name:ident, $kind:literal, $expected:literal, $pattern:literal, $doc:literal) => {
        impl $name {
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(s: String) -> Result<Self, Error> {
                if Self::is_valid(&s) {
                    Ok(Self(s))
                } else {
                    Err(invalid($kind, &s, $expected))
                }
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl $name {
            /// Checks `s` and wraps it.
            pub fn new(s: &str) -> Result<Self, Error> {
                if Self::is_valid(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(invalid($kind, s, $expected))
                }
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $doc,
                })
            }
        }
    };
}

/// An ISO 3166-2:CN province code such as `CN-GD`: `CN-` and two capital
/// letters. Only the form is checked here; [`crate::Catalog::province`] tells
/// whether the code names a province.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProvinceCode(String);

impl ProvinceCode {
    fn is_valid(s: &str) -> bool {
        s.strip_prefix("CN-")
            .is_some_and(|l| l.len() == 2 && l.bytes().all(|b| b.is_ascii_uppercase()))
    }

    /// The two letters after `CN-` (`GD`), as `GeoLite2` gives them.
    pub fn letters(&self) -> &str {
        self.0.get(3..).unwrap_or_default()
    }
}

string_id!(
    ProvinceCode,
    "province code",
    "an ISO 3166-2:CN code such as CN-GD",
    "^CN-[A-Z]{2}$",
    "ISO 3166-2:CN province code, e.g. CN-GD"
);

/// A GB/T 2260 administrative division code: six ASCII digits (`440100`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CityCode(String);

impl CityCode {
    fn is_valid(s: &str) -> bool {
        s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit())
    }

    /// The first two digits, which name the province (`44` for Guangdong).
    pub fn province_digits(&self) -> &str {
        self.0.get(..2).unwrap_or_default()
    }
}

string_id!(
    CityCode,
    "city code",
    "a six-digit GB/T 2260 code such as 440100",
    "^[0-9]{6}$",
    "GB/T 2260 administrative division code, e.g. 440100"
);

/// A carrier identifier from the carrier catalog: `snake_case` ASCII starting
/// with a letter, at most 64 characters (`china_mobile`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CarrierId(String);

impl CarrierId {
    fn is_valid(s: &str) -> bool {
        s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('_')
            && !s.contains("__")
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }
}

string_id!(
    CarrierId,
    "carrier id",
    "a snake_case carrier id such as china_mobile",
    "^[a-z][a-z0-9]*(_[a-z0-9]+)*$",
    "carrier id from the carrier catalog, e.g. china_mobile"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn province_code_form() {
        assert_eq!(ProvinceCode::new("CN-GD").unwrap().letters(), "GD");
        for bad in [
            "cn-gd", "CN-G", "CN-GDX", "GD", "CN_GD", "", "CN-G1", "CN-ÄB",
        ] {
            assert!(ProvinceCode::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn city_code_form() {
        assert_eq!(CityCode::new("440100").unwrap().province_digits(), "44");
        for bad in ["44010", "4401000", "44010a", "", "４４０１００"] {
            assert!(CityCode::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn carrier_id_form() {
        for good in ["china_mobile", "drpeng", "cernet", "a1_b2"] {
            assert!(CarrierId::new(good).is_ok(), "{good}");
        }
        for bad in ["China_Mobile", "_x", "x_", "a__b", "1abc", "", "a-b", "a b"] {
            assert!(CarrierId::new(bad).is_err(), "{bad}");
        }
        assert!(CarrierId::new(&"a".repeat(65)).is_err());
    }

    #[test]
    fn serde_rejects_bad_values_and_round_trips() {
        let id: ProvinceCode = serde_json::from_str("\"CN-JL\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"CN-JL\"");
        let err = serde_json::from_str::<ProvinceCode>("\"Jilin\"").unwrap_err();
        assert!(err.to_string().contains("CN-GD"), "{err}");
        assert!(serde_json::from_str::<CarrierId>("\"China Mobile\"").is_err());
    }

    #[test]
    fn long_values_are_cut_in_errors() {
        let err = CarrierId::new(&"X".repeat(1000)).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn schema_has_pattern() {
        let schema = schemars::schema_for!(ProvinceCode);
        let text = serde_json::to_string(&schema).unwrap();
        assert!(text.contains("^CN-[A-Z]{2}$"), "{text}");
    }
}
