//! The `[traffic]` and `[trust]` sections of the collector configuration.

use serde::{Deserialize, Serialize};

use crate::Error;

/// Traffic accounting, anomaly detection and budgets (`[traffic]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrafficConfig {
    /// Account traffic, detect anomalies and throttle anomalous units.
    /// Off: every request is served as before and reports carry no trust.
    pub enabled: bool,
    /// Most units tracked per kind (source prefixes, install ids, paths);
    /// beyond it, those with the least traffic in their history window are
    /// forgotten first (then the least recently active).
    pub max_units: usize,
    /// Minutes of per-minute history kept per unit, from which its expected
    /// band is learned.
    pub history_minutes: u32,
    /// Minutes of history a unit needs before its own band is used alone;
    /// younger units are also held to the node-wide norm of their kind.
    pub min_history_minutes: u32,
    /// How many (scaled) median absolute deviations above its median a
    /// minute's request count must be to be an anomaly.
    pub anomaly_mads: f64,
    /// A minute with at most this many requests from a unit is never an
    /// anomaly, whatever the unit's history (a quiet probe's burst of
    /// retries after an outage is not a flood).
    pub min_anomaly_requests_per_minute: u32,
    /// Anomalous minutes of a unit at most this many quiet minutes apart
    /// belong to one episode.
    pub episode_gap_minutes: u32,
    /// Consecutive anomalous minutes whose request counts differ by more
    /// than this factor start a new episode (the traffic changed character).
    pub alike_ratio: f64,
    /// The node's capacity in ingest requests per second.
    pub node_capacity_per_second: f64,
    /// Each unit in an anomaly episode gets this share of the capacity as its
    /// own budget; beyond it its requests are answered 429.
    pub anomalous_unit_share: f64,
    /// All units in anomaly episodes together get at most this share of the
    /// capacity, so that normal probes keep the rest.
    pub anomalous_total_share: f64,
    /// `Retry-After` seconds sent with 429.
    pub throttle_retry_after_secs: u64,
    /// How long a throttled request waits before its 429 is sent, in ms: a
    /// flooder's connection then costs a timer instead of a busy loop, and
    /// a closed-loop flooder slows to one request per connection per delay.
    /// It holds neither a request slot nor the body.
    pub throttle_delay_ms: u64,
    /// Closed anomaly episodes kept in memory for the export API.
    pub episodes_kept: usize,
}

/// Trust scores of install ids and source prefixes (`[trust]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// The score (0–100) a unit starts with.
    pub initial: u8,
    /// Units scoring below this are listed as low-trust.
    pub low_threshold: u8,
    /// The highest trust an unsigned report can have.
    pub unsigned_cap: u8,
    /// The highest trust a report signed by a changed key can have.
    pub key_changed_cap: u8,
    /// Points a unit gains for a minute in which it sent accepted reports
    /// and was in no anomaly episode (at most once per minute).
    pub raise_per_clean_minute: f64,
    /// Points a unit loses per rejected report.
    pub reject_penalty: f64,
    /// Points a unit loses when an anomaly episode of it opens.
    pub anomaly_penalty: f64,
    /// Points a unit loses for each further anomalous minute of an episode.
    pub anomaly_minute_penalty: f64,
    /// Rejects within this many minutes are named as a reason in a report's
    /// trust.
    pub recent_reject_minutes: u32,
    /// A unit with fewer accepted reports than this is a new source.
    pub new_source_reports: u32,
    /// Most scored units kept (in memory and in the staging database);
    /// beyond it, those kept shortest by [`TrustRetention`] are forgotten.
    ///
    /// [`TrustRetention`]: super::TrustRetention
    pub max_units: usize,
    /// How often changed scores are written to the staging database, in
    /// seconds (and once more at shutdown).
    pub flush_secs: u64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_units: 50_000,
            history_minutes: 60,
            min_history_minutes: 10,
            anomaly_mads: 6.0,
            min_anomaly_requests_per_minute: 120,
            episode_gap_minutes: 1,
            alike_ratio: 10.0,
            node_capacity_per_second: 500.0,
            anomalous_unit_share: 0.02,
            anomalous_total_share: 0.2,
            throttle_retry_after_secs: 60,
            throttle_delay_ms: 1_000,
            episodes_kept: 1_000,
        }
    }
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            initial: 50,
            low_threshold: 30,
            unsigned_cap: 60,
            key_changed_cap: 30,
            raise_per_clean_minute: 1.0,
            reject_penalty: 5.0,
            anomaly_penalty: 20.0,
            anomaly_minute_penalty: 5.0,
            recent_reject_minutes: 60,
            new_source_reports: 3,
            max_units: 200_000,
            flush_secs: 10,
        }
    }
}

fn bad(key: &str, reason: impl Into<String>) -> Result<(), Error> {
    Err(Error::Config {
        key: key.to_owned(),
        reason: reason.into(),
    })
}

impl TrafficConfig {
    /// The `[traffic]` rules; called from `CollectorConfig::validate`.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if !(16..=10_000_000).contains(&self.max_units) {
            return bad("traffic.max_units", "use 16 to 10000000");
        }
        if !(5..=1440).contains(&self.history_minutes) {
            return bad("traffic.history_minutes", "use 5 to 1440 minutes");
        }
        if self.min_history_minutes > self.history_minutes {
            return bad(
                "traffic.min_history_minutes",
                "use at most traffic.history_minutes",
            );
        }
        if !(self.anomaly_mads.is_finite() && (1.0..=100.0).contains(&self.anomaly_mads)) {
            return bad("traffic.anomaly_mads", "use 1.0 to 100.0");
        }
        if self.min_anomaly_requests_per_minute == 0 {
            return bad(
                "traffic.min_anomaly_requests_per_minute",
                "use at least 1: a single request is never a flood",
            );
        }
        if self.episode_gap_minutes > 60 {
            return bad("traffic.episode_gap_minutes", "use 0 to 60 minutes");
        }
        if !(self.alike_ratio.is_finite() && self.alike_ratio >= 1.0) {
            return bad("traffic.alike_ratio", "use 1.0 or more");
        }
        if !(self.node_capacity_per_second.is_finite() && self.node_capacity_per_second >= 1.0) {
            return bad(
                "traffic.node_capacity_per_second",
                "use at least 1 request per second",
            );
        }
        for (key, share) in [
            ("traffic.anomalous_unit_share", self.anomalous_unit_share),
            ("traffic.anomalous_total_share", self.anomalous_total_share),
        ] {
            if !(share.is_finite() && share > 0.0 && share <= 1.0) {
                return bad(key, "use a share above 0 and at most 1.0");
            }
        }
        if self.anomalous_unit_share > self.anomalous_total_share {
            return bad(
                "traffic.anomalous_unit_share",
                "one unit's share cannot exceed traffic.anomalous_total_share",
            );
        }
        if !(1..=3600).contains(&self.throttle_retry_after_secs) {
            return bad("traffic.throttle_retry_after_secs", "use 1 to 3600 seconds");
        }
        if self.throttle_delay_ms > 10_000 {
            return bad("traffic.throttle_delay_ms", "use 0 to 10000 ms");
        }
        if !(1..=1_000_000).contains(&self.episodes_kept) {
            return bad("traffic.episodes_kept", "use 1 to 1000000");
        }
        Ok(())
    }
}

impl TrustConfig {
    /// The `[trust]` rules; called from `CollectorConfig::validate`.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for (key, value) in [
            ("trust.initial", self.initial),
            ("trust.low_threshold", self.low_threshold),
            ("trust.unsigned_cap", self.unsigned_cap),
            ("trust.key_changed_cap", self.key_changed_cap),
        ] {
            if value > 100 {
                return bad(key, format!("{value} is not a score: use 0 to 100"));
            }
        }
        for (key, value) in [
            ("trust.raise_per_clean_minute", self.raise_per_clean_minute),
            ("trust.reject_penalty", self.reject_penalty),
            ("trust.anomaly_penalty", self.anomaly_penalty),
            ("trust.anomaly_minute_penalty", self.anomaly_minute_penalty),
        ] {
            if !(value.is_finite() && (0.0..=100.0).contains(&value)) {
                return bad(key, "use 0.0 to 100.0 points");
            }
        }
        if self.recent_reject_minutes == 0 || self.recent_reject_minutes > 10_080 {
            return bad("trust.recent_reject_minutes", "use 1 to 10080 minutes");
        }
        if !(16..=10_000_000).contains(&self.max_units) {
            return bad("trust.max_units", "use 16 to 10000000");
        }
        if !(1..=3600).contains(&self.flush_secs) {
            return bad("trust.flush_secs", "use 1 to 3600 seconds");
        }
        Ok(())
    }
}
