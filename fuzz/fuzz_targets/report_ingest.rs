//! The report ingest parser: the bytes of an uploaded body, as the collector
//! hands them to `Report::from_submitted_json` once the body is read and
//! decompressed, and as the internal side reads a stored report.
//!
//! Beyond "never panics", every answer must be one the collector can turn into
//! a clean response: a report that validates and survives a round trip, a
//! list of violations each naming its field (422), or a JSON syntax error for
//! bytes that are not JSON (400).

#![no_main]

use libfuzzer_sys::fuzz_target;
use lineprobe_shared::{Error, Report, ReportLimits};

/// Listed violations plus the one line that summarises the rest.
const MAX_VIOLATIONS: usize = 101;

#[derive(Clone, Copy, PartialEq)]
enum Stage {
    Any,
    Submitted,
    Stored,
}

fn decode(data: &[u8], stage: Stage) -> Result<Report, Error> {
    match stage {
        Stage::Any => Report::from_json(data),
        Stage::Submitted => Report::from_submitted_json(data),
        Stage::Stored => Report::from_stored_json(data),
    }
}

fn check(data: &[u8], stage: Stage) {
    match decode(data, stage) {
        Ok(report) => {
            assert!(data.len() <= ReportLimits::MAX_REPORT_BYTES);
            match stage {
                Stage::Submitted => assert!(report.envelope.is_none()),
                Stage::Stored => assert!(report.envelope.is_some()),
                Stage::Any => {}
            }
            assert!(
                report.violations().is_empty(),
                "an accepted report breaks its own rules: {}",
                report.violations()
            );
            let encoded = report.to_json().expect("an accepted report encodes");
            let again = decode(&encoded, stage).expect("an accepted report re-decodes");
            assert_eq!(again, report, "the round trip changed the report");
        }
        Err(Error::InvalidReport(violations)) => {
            assert!(!violations.is_empty(), "rejected with no violation listed");
            assert!(
                violations.0.len() <= MAX_VIOLATIONS,
                "{} violations listed; a flood must be summarised",
                violations.0.len()
            );
            for v in &violations.0 {
                assert!(!v.field.is_empty(), "a violation without a field: {v:?}");
                assert!(!v.reason.is_empty(), "a violation without a reason: {v:?}");
                assert!(
                    !v.field.chars().any(char::is_control),
                    "a field path with control characters: {v:?}"
                );
            }
            let _ = violations.to_string();
        }
        Err(Error::Json(e)) => {
            // Only for bytes that are not JSON at all: anything that parses
            // as JSON must get violations with field paths instead.
            let parses = serde_json::from_slice::<serde_json::Value>(data).is_ok();
            assert!(
                !parses,
                "valid JSON answered with a bare JSON error instead of violations: {e}"
            );
            let _ = e.to_string();
        }
        Err(other) => panic!("unexpected error kind from the report parser: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, Stage::Submitted);
    check(data, Stage::Stored);
    check(data, Stage::Any);
});
