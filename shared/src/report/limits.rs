//! The size limits of report schema version 1, in one place.
//!
//! The collector reuses them (request body size, header truncation) and the
//! JSON Schema is generated with them, so a probe author, the receiver and the
//! internal side all agree on what a report may hold.

/// Limits of report schema version 1.
///
/// Text lengths count Unicode characters (scalar values), as JSON Schema's
/// `maxLength` does, except [`ReportLimits::MAX_RAW_TEXT_BYTES`], which counts
/// UTF-8 bytes. Lists count entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportLimits;

impl ReportLimits {
    /// Largest encoded report accepted by [`crate::Report::from_json`], in bytes.
    ///
    /// A report at every other limit stays below it: 64 hops of full names
    /// are about 180 KiB and the raw text at most 64 KiB before JSON escaping.
    pub const MAX_REPORT_BYTES: usize = 1024 * 1024;

    /// Hops in a trace: more than any real path (the usual hop limit is 30).
    pub const MAX_HOPS: usize = 64;
    /// Distinct addresses answering at one TTL (load-balanced paths).
    pub const MAX_ADDRS_PER_HOP: usize = 8;
    /// Reverse-DNS names at one TTL.
    pub const MAX_NAMES_PER_HOP: usize = 8;
    /// Round-trip times at one TTL (mtr-style repeated probes).
    pub const MAX_RTTS_PER_HOP: usize = 16;
    /// Tool annotations (`!H`, `AS4134`…) at one TTL.
    pub const MAX_ANNOTATIONS_PER_HOP: usize = 8;
    /// Characters in one annotation.
    pub const MAX_ANNOTATION_LEN: usize = 64;
    /// Largest round-trip time, in milliseconds: no tool waits longer.
    pub const MAX_RTT_MS: f64 = 60_000.0;
    /// Characters in a host name (a hop's reverse-DNS name, the trace target,
    /// the TLS server name): the DNS limit.
    pub const MAX_HOSTNAME_LEN: usize = 253;
    /// UTF-8 bytes of a system command's raw output.
    pub const MAX_RAW_TEXT_BYTES: usize = 64 * 1024;
    /// Longest trace, in milliseconds (one hour).
    pub const MAX_TRACE_DURATION_MS: u64 = 3_600_000;
    /// Engines listed as not used, with their reasons.
    pub const MAX_ENGINE_FALLBACKS: usize = 8;
    /// Characters in a system command's name (`system:<command>`).
    pub const MAX_COMMAND_LEN: usize = 32;

    /// Characters in the installation (terminal) ID.
    pub const MAX_INSTALL_ID_LEN: usize = 64;
    /// Characters in the broadband account.
    pub const MAX_ACCOUNT_LEN: usize = 64;
    /// Characters in the declared city (a name or a GB/T 2260 code).
    pub const MAX_CITY_LEN: usize = 64;
    /// Characters in a carrier catalog id.
    pub const MAX_CARRIER_LEN: usize = 32;
    /// Characters in the declared street address.
    pub const MAX_ADDRESS_LEN: usize = 256;
    /// Largest accuracy radius of a declared location, in metres.
    pub const MAX_LOCATION_ACCURACY_M: f64 = 1_000_000.0;

    /// Characters in short descriptive fields: OS, OS version, architecture,
    /// agent version, consent text version, TLS version, node id.
    pub const MAX_SHORT_TEXT_LEN: usize = 64;
    /// Characters in free-text explanations: proxy details, fallback
    /// reasons, attempt details.
    pub const MAX_DETAIL_LEN: usize = 512;
    /// Local interface addresses listed for the device.
    pub const MAX_LOCAL_ADDRS: usize = 32;

    /// Earlier submission attempts carried as evidence.
    pub const MAX_ENDPOINT_ATTEMPTS: usize = 32;
    /// Characters in an endpoint URL.
    pub const MAX_ENDPOINT_LEN: usize = 256;

    /// Characters in the request path recorded by the receiver.
    pub const MAX_PATH_LEN: usize = 256;
    /// Characters in one recorded request header value; the receiver
    /// truncates longer values (see [`crate::EnvelopeHeaders::insert`]).
    pub const MAX_HEADER_VALUE_LEN: usize = 512;
}
