//! The report wire schema, version 1: what a probe sends once per run, and
//! the envelope the receiver adds.
//!
//! Field names are the contract between probes, the receiver and the internal
//! side. Unknown fields are rejected everywhere, so a typo or a field from a
//! newer schema fails loudly instead of being dropped. Parsing and validation
//! collect every violation with its field path (`trace.hops[3].addrs`) so a
//! probe author can fix them all at once.

mod attempts;
mod declared;
mod device;
mod envelope;
mod identity;
mod limits;
mod schema;
mod tracerun;
mod trust;
mod validate;

use chrono::{DateTime, FixedOffset};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Error, Violations};

pub use attempts::{AttemptOutcome, EndpointAttempt};
pub use declared::{DeclaredLine, DeclaredLocation, LocationSource};
pub use device::{ConsentRecord, DeviceFacts, MacAddress, ProxyFacts};
pub use envelope::{EnvelopeHeaders, EnvelopeTls, ReceiverEnvelope};
pub use identity::{InstallId, ReportId};
pub use limits::ReportLimits;
pub use schema::report_json_schema;
pub use tracerun::{EngineFallback, ReportTrace, TraceEngine, TraceProtocol};
pub use trust::{ArrivalTrust, SignatureCheck, TrustReason, TrustScore};
pub use validate::{account_problem, is_invisible_format, single_line_problem};

/// The schema version this build writes.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// The schema versions this build reads.
pub const SUPPORTED_REPORT_SCHEMA_VERSIONS: &[u32] = &[REPORT_SCHEMA_VERSION];

/// A probe's report, schema version 1.
///
/// One probe run: who sent it, what the subscriber declared, the device, the
/// trace, evidence from earlier submission attempts and, once stored, the
/// receiver's envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The schema version: 1.
    #[schemars(extend("const" = 1))]
    pub schema: u32,
    /// The report's id (UUIDv7): the idempotency key of its submission.
    pub report_id: ReportId,
    /// The installation's stable id: the terminal ID.
    pub install_id: InstallId,
    /// The broadband account; empty when the subscriber did not give it.
    #[schemars(length(max = ReportLimits::MAX_ACCOUNT_LEN))]
    pub account: String,
    /// When the probe made the report, by the device clock (RFC 3339).
    pub created_at: DateTime<FixedOffset>,
    /// What the subscriber says the line is.
    pub declared: DeclaredLine,
    /// The device that ran the probe.
    pub device: DeviceFacts,
    /// The subscriber's consent; required when `device.mac` is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentRecord>,
    /// The trace.
    pub trace: ReportTrace,
    /// Earlier attempts to submit this report, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = ReportLimits::MAX_ENDPOINT_ATTEMPTS))]
    pub endpoint_attempts: Vec<EndpointAttempt>,
    /// Reports the probe's offline spool dropped (oldest first) to make room
    /// before this one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_evicted: Option<u64>,
    /// Added by the receiver; a probe must not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<ReceiverEnvelope>,
}

/// Which side of the receiver a report is checked on: this decides the one
/// rule that differs, whether the envelope may be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Either; the envelope is checked when present.
    Any,
    /// As a probe sends it: no envelope.
    Submitted,
    /// As the receiver stored it: with an envelope.
    Stored,
}

impl Report {
    /// Decodes a report and validates it, envelope or not.
    ///
    /// Prefer [`Report::from_submitted_json`] on the receiver and
    /// [`Report::from_stored_json`] on the internal side: they also enforce
    /// the envelope rule.
    ///
    /// Errors: [`Error::Json`] when the bytes are not JSON at all;
    /// [`Error::InvalidReport`] for anything else, each violation naming its
    /// field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_json_at(bytes, Stage::Any)
    }

    /// Decodes a report as a probe sends it: an envelope is rejected.
    pub fn from_submitted_json(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_json_at(bytes, Stage::Submitted)
    }

    /// Decodes a report as the receiver stored it: the envelope is required.
    pub fn from_stored_json(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_json_at(bytes, Stage::Stored)
    }

    /// Encodes the report as compact JSON. Decoding the result with
    /// [`Report::from_json`] gives back an equal report when it was valid.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Encodes the report as indented JSON, for people and fixtures.
    pub fn to_json_pretty(&self) -> Result<String, Error> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Checks the report as a probe must send it: every rule, and no
    /// `envelope`. A probe runs this before sending; the receiver after
    /// decoding.
    pub fn validate_submitted(&self) -> Result<(), Error> {
        self.violations_at(Stage::Submitted).into_result()
    }

    /// Checks the report as the receiver stores it: every rule, and an
    /// `envelope` that is itself valid.
    pub fn validate_stored(&self) -> Result<(), Error> {
        self.violations_at(Stage::Stored).into_result()
    }

    /// Checks `envelope` by the stored schema's rules alone. A report that
    /// passed [`Report::validate_submitted`] passes
    /// [`Report::validate_stored`] with this envelope set exactly when this
    /// passes, with the same violations: the receiver checks what it added
    /// without checking the probe's part a second time.
    pub fn validate_envelope(envelope: &ReceiverEnvelope) -> Result<(), Error> {
        validate::check_envelope_only(envelope).into_result()
    }

    /// Every rule the report breaks, checking the envelope only when present.
    pub fn violations(&self) -> Violations {
        self.violations_at(Stage::Any)
    }

    fn violations_at(&self, stage: Stage) -> Violations {
        validate::check_report(self, stage)
    }

    fn from_json_at(bytes: &[u8], stage: Stage) -> Result<Self, Error> {
        let report = validate::decode(bytes)?;
        report.violations_at(stage).into_result()?;
        Ok(report)
    }
}
