//! Skeleton: filled in by the parser work.

use super::ParsedTrace;
use crate::Error;

pub(super) fn looks_like(_text: &str) -> bool {
    false
}

pub(super) fn parse(_text: &str) -> Result<ParsedTrace, Error> {
    Err(Error::UnrecognizedTrace {
        expected: super::EXPECTED_FORMATS,
        detail: "not implemented yet".to_owned(),
    })
}
