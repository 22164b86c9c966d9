//! Reading an export page: NDJSON from a collector, which is not trusted.
//!
//! Each line is read with a light pass that only picks out `envelope.seq`,
//! `report_id` and `envelope.received_at`; the pipeline validates the whole
//! report later. What is picked out before a syntax error is kept, so a
//! damaged line whose `seq` is readable is still stored (as raw bytes, for
//! the pipeline to quarantine) instead of blocking every later report.

use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

/// `report_id`s longer than this are not picked out (a UUID has 36
/// characters; the pipeline judges the line).
const MAX_REPORT_ID_LEN: usize = 128;

/// One report line of an export page, as pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledLine {
    /// The collector's sequence number (`envelope.seq`): strictly
    /// increasing within a page and above the `after` asked for.
    pub seq: u64,
    /// `report_id` as read, when it is a string (not validated).
    pub report_id: Option<String>,
    /// `envelope.received_at` in milliseconds since the Unix epoch, when it
    /// is an RFC 3339 time.
    pub received_at_ms: Option<i64>,
    /// The line exactly as received (without its line break).
    pub body: Vec<u8>,
}

/// What the light pass read from one line.
#[derive(Debug, Default)]
struct LineFacts {
    seq: Option<u64>,
    /// `seq` appeared with different values, or not as a whole number.
    seq_unusable: Option<&'static str>,
    report_id: Option<String>,
    report_id_seen: bool,
    received_at_ms: Option<i64>,
}

/// Why a line could not be taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LineError(pub(crate) String);

/// Reads one line. `Ok` holds the line (and whether it was well-formed
/// JSON); `Err` says why its `seq` cannot be read.
pub(crate) fn read_line(line: &[u8]) -> Result<(PulledLine, bool), LineError> {
    let mut facts = LineFacts::default();
    let mut de = serde_json::Deserializer::from_slice(line);
    let parsed = TopSeed(&mut facts)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Some(why) = facts.seq_unusable {
        return Err(LineError(why.to_owned()));
    }
    let Some(seq) = facts.seq else {
        let detail = match parsed {
            Ok(()) => "it has no envelope.seq".to_owned(),
            Err(e) => format!("it is not JSON with an envelope.seq ({e})"),
        };
        return Err(LineError(detail));
    };
    if i64::try_from(seq).is_err() {
        return Err(LineError(format!(
            "its envelope.seq {seq} is beyond the largest sequence number"
        )));
    }
    Ok((
        PulledLine {
            seq,
            report_id: facts.report_id,
            received_at_ms: facts.received_at_ms,
            body: line.to_vec(),
        },
        parsed.is_ok(),
    ))
}

struct TopSeed<'a>(&'a mut LineFacts);

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(TopVisitor(self.0))
    }
}

struct TopVisitor<'a>(&'a mut LineFacts);

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a stored report object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "report_id" => {
                    let value: Value = map.next_value()?;
                    // A repeated key is ambiguous: pick out nothing.
                    self.0.report_id = if self.0.report_id_seen {
                        None
                    } else {
                        // A control character (NUL above all, which a
                        // PostgreSQL text column refuses, failing the whole
                        // page on every round) is no report id either: the
                        // report is stored without one and quarantined.
                        value
                            .as_str()
                            .filter(|s| s.len() <= MAX_REPORT_ID_LEN)
                            .filter(|s| !s.chars().any(char::is_control))
                            .map(str::to_owned)
                    };
                    self.0.report_id_seen = true;
                }
                "envelope" => map.next_value_seed(EnvelopeSeed(&mut *self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct EnvelopeSeed<'a>(&'a mut LineFacts);

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(EnvelopeVisitor(self.0))
    }
}

struct EnvelopeVisitor<'a>(&'a mut LineFacts);

impl<'de> Visitor<'de> for EnvelopeVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an envelope object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "seq" => {
                    let value: Value = map.next_value()?;
                    match value.as_u64() {
                        None => {
                            self.0.seq_unusable = Some("its envelope.seq is not a whole number");
                        }
                        Some(seq) => match self.0.seq {
                            Some(earlier) if earlier != seq => {
                                self.0.seq_unusable =
                                    Some("it holds envelope.seq twice with different values");
                            }
                            _ => self.0.seq = Some(seq),
                        },
                    }
                }
                "received_at" => {
                    let value: Value = map.next_value()?;
                    self.0.received_at_ms = value
                        .as_str()
                        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                        .map(|t| t.timestamp_millis());
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_out_the_envelope_fields() {
        let line = br#"{"schema":1,"report_id":"01970b10-2c4e-7a9d-8f31-6b7c8d9e0f12","envelope":{"received_at":"2025-06-04T12:31:06.5Z","node_id":"n","seq":42}}"#;
        let (pulled, well_formed) = read_line(line).unwrap();
        assert!(well_formed);
        assert_eq!(pulled.seq, 42);
        assert_eq!(
            pulled.report_id.as_deref(),
            Some("01970b10-2c4e-7a9d-8f31-6b7c8d9e0f12")
        );
        assert_eq!(pulled.received_at_ms, Some(1_749_040_266_500));
        assert_eq!(pulled.body, line.to_vec());
    }

    #[test]
    fn a_damaged_line_with_a_readable_seq_is_kept_raw() {
        let line = br#"{"envelope":{"seq":7,"received_at":12},"report_id":5,"trace":{"#;
        let (pulled, well_formed) = read_line(line).unwrap();
        assert!(!well_formed);
        assert_eq!(pulled.seq, 7);
        assert_eq!(pulled.report_id, None);
        assert_eq!(pulled.received_at_ms, None);
    }

    #[test]
    fn a_line_without_a_usable_seq_is_refused() {
        for line in [
            &br#"{"report_id":"x"}"#[..],
            br#"{"report_id":"x","envelope":{"seq":"7"}}"#,
            br#"{"envelope":{"seq":-1}}"#,
            br#"{"envelope":{"seq":1.5}}"#,
            br#"{"envelope":{"seq":3},"envelope":{"seq":4}}"#,
            br#"{"envelope":{"seq":18446744073709551615}}"#,
            br#"{"envelope":"seq 7"}"#,
            b"[1,2,3]",
            b"not json",
            br#"{"trace":{"hops":[],"envelope":{"seq":3}}}"#,
        ] {
            assert!(
                read_line(line).is_err(),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn a_report_id_with_control_characters_is_none() {
        for line in [
            &br#"{"report_id":"a\u0000b","envelope":{"seq":5}}"#[..],
            br#"{"report_id":"a\nb","envelope":{"seq":5}}"#,
        ] {
            let (pulled, _) = read_line(line).unwrap();
            assert_eq!(pulled.seq, 5);
            assert_eq!(pulled.report_id, None);
        }
    }

    #[test]
    fn a_repeated_report_id_is_ambiguous() {
        let line = br#"{"report_id":"a","report_id":"b","envelope":{"seq":1}}"#;
        let (pulled, _) = read_line(line).unwrap();
        assert_eq!(pulled.report_id, None);
    }
}
