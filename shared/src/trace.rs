//! The hop model: what a trace found at each TTL.
//!
//! The same model is produced by the agent's engines, by the trace-text
//! parsers and is carried in the report, so every later stage (first public
//! hop, resolution, compliance) reads one shape whatever tool made the trace.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One TTL of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hop {
    /// The probe TTL (hop limit), from 1.
    pub ttl: u8,
    /// Distinct addresses that answered at this TTL, sorted by their text
    /// form. Empty when nothing answered. The order is canonical rather than
    /// the order of replies so that the same set of routers always gives the
    /// same hop, whichever replied first: de-duplication of observations and
    /// comparisons between traces depend on it.
    #[serde(default)]
    pub addrs: Vec<IpAddr>,
    /// Reverse-DNS names the tool printed for the addresses, in order of first
    /// appearance, without duplicates. Empty when the tool ran with `-n`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Round-trip times in milliseconds of the probes that were answered, in
    /// the order printed. A Windows `<1 ms` is recorded as 0.5.
    #[serde(default)]
    pub rtt_ms: Vec<f64>,
    /// Probes sent at this TTL (0 when the tool does not say).
    #[serde(default)]
    pub sent: u16,
    /// Probes answered at this TTL.
    #[serde(default)]
    pub received: u16,
    /// Marks the tool printed beside the replies, verbatim: `!H`, `!N`, `!P`,
    /// `!X`, `!A`, `!S`, `!F-<mtu>`, `!<code>`, `AS4134`, `pmtu 1492`,
    /// `reached`, `asymm 3`…
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
}

impl Hop {
    /// A hop at `ttl` with nothing recorded yet.
    pub fn new(ttl: u8) -> Self {
        Self {
            ttl,
            addrs: Vec::new(),
            names: Vec::new(),
            rtt_ms: Vec::new(),
            sent: 0,
            received: 0,
            annotations: Vec::new(),
        }
    }

    /// True when nothing answered at this TTL.
    pub fn is_silent(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Adds an address unless it is already listed, keeping the canonical
    /// order (see [`Hop::addrs`]).
    pub fn push_addr(&mut self, addr: IpAddr) {
        if self.addrs.contains(&addr) {
            return;
        }
        let text = addr.to_string();
        let at = self.addrs.partition_point(|a| a.to_string() < text);
        self.addrs.insert(at, addr);
    }

    /// Adds a name unless it is already listed or is just the address again.
    pub fn push_name(&mut self, name: &str) {
        let name = name.trim();
        if name.is_empty() || name.parse::<IpAddr>().is_ok() {
            return;
        }
        if !self.names.iter().any(|n| n == name) {
            self.names.push(name.to_owned());
        }
    }
}
