//! Who sent a report: the report's own id and the installation's.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::{Uuid, Variant, Version};

use super::ReportLimits;
use crate::{Error, Violations};

/// A report's id: a version 7 UUID, written in lowercase hyphenated form.
///
/// It is the idempotency key of a submission: a probe that resends a spooled
/// report sends the same id, and the receiver stores it once. Version 7 keeps
/// ids ordered by creation time, which keeps indexes on them compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReportId(Uuid);

impl ReportId {
    /// A fresh id for a report created now.
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }

    /// Reads an id, rejecting anything but a lowercase hyphenated version 7 UUID.
    pub fn parse(s: &str) -> Result<Self, Error> {
        Self::check_str(s).map_err(|reason| field_error("report_id", reason))
    }

    /// Accepts an already-parsed UUID if it is a version 7 UUID.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, Error> {
        Self::check_uuid(uuid).map_err(|reason| field_error("report_id", reason))
    }

    /// The UUID inside.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    fn check_str(s: &str) -> Result<Self, String> {
        // Only the canonical spelling: the id is compared as text by stores
        // and logs, so `{…}`, `urn:uuid:` and uppercase forms would split one
        // report into several.
        let canonical = s.len() == 36
            && s.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        if !canonical {
            return Err(format!(
                "{} is not a UUID in lowercase hyphenated form \
                 (xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx); send a fresh UUIDv7",
                quoted(s)
            ));
        }
        let uuid = Uuid::parse_str(s).map_err(|e| format!("`{s}` is not a UUID: {e}"))?;
        Self::check_uuid(uuid)
    }

    fn check_uuid(uuid: Uuid) -> Result<Self, String> {
        if uuid.get_variant() != Variant::RFC4122 {
            return Err(format!(
                "`{uuid}` is not an RFC 9562 UUID (variant {:?}); send a fresh UUIDv7",
                uuid.get_variant()
            ));
        }
        match uuid.get_version() {
            Some(Version::SortRand) => Ok(Self(uuid)),
            _ => Err(format!(
                "`{uuid}` is a version {} UUID; report ids must be UUIDv7 (time-ordered)",
                uuid.get_version_num()
            )),
        }
    }
}

impl fmt::Display for ReportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for ReportId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ReportId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReportId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        Self::check_str(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ReportId {
    fn schema_name() -> Cow<'static, str> {
        "ReportId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The report's id and idempotency key: a UUIDv7 in lowercase hyphenated form.",
            "type": "string",
            "format": "uuid",
            "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
        })
    }
}

/// The installation's stable id: the terminal ID.
///
/// 1 to [`ReportLimits::MAX_INSTALL_ID_LEN`] ASCII letters, digits, `.`, `_`,
/// `:` or `-`, starting with a letter or digit. Carriers print terminal IDs on
/// labels and in their systems, so it stays a plain token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstallId(String);

impl InstallId {
    /// Reads an installation id, rejecting empty, overlong or odd tokens.
    pub fn parse(s: &str) -> Result<Self, Error> {
        Self::check_str(s).map_err(|reason| field_error("install_id", reason))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn check_str(s: &str) -> Result<Self, String> {
        let max = ReportLimits::MAX_INSTALL_ID_LEN;
        if s.is_empty() {
            return Err("is empty; send the installation's terminal ID".to_owned());
        }
        let len = s.chars().count();
        if len > max {
            return Err(format!(
                "is {len} characters long; at most {max} are accepted"
            ));
        }
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok =
            chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
        if !(first_ok && rest_ok) {
            return Err(format!(
                "{} is not a terminal ID: use ASCII letters, digits, `.`, `_`, `:` and `-`, \
                 starting with a letter or digit",
                quoted(s)
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for InstallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for InstallId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for InstallId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for InstallId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        Self::check_str(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for InstallId {
    fn schema_name() -> Cow<'static, str> {
        "InstallId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The installation's stable id (the terminal ID).",
            "type": "string",
            "minLength": 1,
            "maxLength": ReportLimits::MAX_INSTALL_ID_LEN,
            "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]*$"
        })
    }
}

/// One violation as an error, for the `parse` constructors.
pub(super) fn field_error(field: &str, reason: String) -> Error {
    let mut found = Violations::default();
    found.push(field, reason);
    Error::InvalidReport(found)
}

/// Quotes at most 80 characters of a rejected value, in backticks, with
/// control characters escaped: enough to recognise it, not enough to flood a
/// log with an attacker's megabyte or to forge log lines.
pub(super) fn quoted(s: &str) -> String {
    const MAX: usize = 80;
    let mut out = String::with_capacity(s.len().min(MAX) + 3);
    out.push('`');
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('`');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_escapes_controls_and_truncates() {
        assert_eq!(quoted("a\nb"), "`a\\nb`");
        let long = "x".repeat(200);
        let q = quoted(&long);
        assert_eq!(q.chars().count(), 80 + 3);
        assert!(q.ends_with("…`"));
    }

    #[test]
    fn install_id_length_counts_characters() {
        // 64 two-byte characters are too odd for a terminal ID, not too long.
        let err = InstallId::parse(&"é".repeat(64)).expect_err("non-ASCII");
        assert!(err.to_string().contains("not a terminal ID"), "{err}");
        assert!(InstallId::parse(&"a".repeat(64)).is_ok());
    }
}
