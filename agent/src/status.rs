//! What `lineprobe-agent status` shows: consent, the last probe, the spool,
//! the last endpoint results and the manifest (with a newer agent release,
//! when the manifest names one).

use std::fmt;

use chrono::{DateTime, Utc};
use lineprobe_shared::{AgentRelease, ConsentRecord, EndpointAttempt, InstallId, ReportId};
use serde::{Deserialize, Serialize};

/// The status file kept in the state folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The last probe run.
    #[serde(default)]
    pub last_probe: Option<ProbeRecord>,
    /// Each endpoint's result the last time it was tried.
    #[serde(default)]
    pub last_endpoint_results: Vec<EndpointAttempt>,
    /// The last manifest check.
    #[serde(default)]
    pub last_manifest_check: Option<ManifestCheckRecord>,
}

impl StatusRecord {
    /// Replaces each endpoint's last result with the newer ones.
    pub fn record_attempts(&mut self, attempts: &[EndpointAttempt]) {
        for attempt in attempts {
            self.last_endpoint_results
                .retain(|known| known.endpoint != attempt.endpoint);
            self.last_endpoint_results.push(attempt.clone());
        }
        let excess = self.last_endpoint_results.len().saturating_sub(32);
        self.last_endpoint_results.drain(..excess);
    }
}

/// One probe run, as remembered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// When it ran.
    pub at: DateTime<Utc>,
    /// The report it made.
    pub report_id: ReportId,
    /// `stored at …`, `spooled`, `refused by …`.
    pub result: String,
}

/// One manifest check, as remembered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestCheckRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// What happened, for a human.
    pub result: String,
}

/// Everything `status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentStatus {
    /// The terminal ID.
    pub install_id: InstallId,
    /// The consent, when given.
    pub consent: Option<ConsentRecord>,
    /// The version of the consent text configured now; a consent given to
    /// another version no longer counts.
    pub consent_text_version: String,
    /// The last probe run.
    pub last_probe: Option<ProbeRecord>,
    /// Reports waiting in the spool.
    pub spool_depth: usize,
    /// Reports evicted from the spool and not yet told to a collector
    /// (those the spooled reports carry included).
    pub spool_evicted: u64,
    /// Spooled reports written by a newer agent version (after a
    /// downgrade): kept for it, not sent by this one; among `spool_depth`.
    pub spool_newer: usize,
    /// Each endpoint's last result.
    pub last_endpoint_results: Vec<EndpointAttempt>,
    /// The applied manifest's serial.
    pub manifest_serial: Option<u64>,
    /// When it expires.
    pub manifest_expires_at: Option<DateTime<Utc>>,
    /// The last manifest check.
    pub last_manifest_check: Option<ManifestCheckRecord>,
    /// A newer agent release named by the manifest.
    pub update_available: Option<AgentRelease>,
    /// The endpoints in use, in order.
    pub endpoints: Vec<String>,
}

impl fmt::Display for AgentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "install id: {}", self.install_id)?;
        let covered = |c: &ConsentRecord| {
            crate::agent::consent_covers(&c.text_version, &self.consent_text_version)
        };
        match &self.consent {
            Some(c) if !covered(c) => writeln!(
                f,
                "consent: given at {} to text version {}, but the text is now version {} — \
                 nothing is traced or sent until it is accepted (lineprobe-agent consent --accept)",
                c.accepted_at.to_rfc3339(),
                c.text_version,
                self.consent_text_version
            )?,
            Some(c) => writeln!(
                f,
                "consent: accepted at {} (text version {})",
                c.accepted_at.to_rfc3339(),
                c.text_version
            )?,
            None => writeln!(
                f,
                "consent: not given — nothing is traced or sent (lineprobe-agent consent --accept)"
            )?,
        }
        match &self.last_probe {
            Some(p) => writeln!(
                f,
                "last probe: {} report {}: {}",
                p.at.to_rfc3339(),
                p.report_id,
                p.result
            )?,
            None => writeln!(f, "last probe: never")?,
        }
        write!(
            f,
            "spool: {} report(s) waiting, {} evicted not yet reported",
            self.spool_depth, self.spool_evicted
        )?;
        if self.spool_newer > 0 {
            write!(
                f,
                " ({} of them written by a newer agent version: kept for it, not sent by this one)",
                self.spool_newer
            )?;
        }
        writeln!(f)?;
        writeln!(f, "endpoints: {}", list_or_none(&self.endpoints))?;
        match (self.manifest_serial, self.manifest_expires_at) {
            (Some(serial), Some(expires)) if expires <= Utc::now() => writeln!(
                f,
                "manifest: serial {serial}, expired {} (not followed: the configured endpoints \
                 are used until a newer one is fetched)",
                expires.to_rfc3339()
            )?,
            (Some(serial), Some(expires)) => writeln!(
                f,
                "manifest: serial {serial}, expires {}",
                expires.to_rfc3339()
            )?,
            _ => writeln!(f, "manifest: none applied")?,
        }
        if let Some(check) = &self.last_manifest_check {
            writeln!(
                f,
                "last manifest check: {} {}",
                check.at.to_rfc3339(),
                check.result
            )?;
        }
        if let Some(release) = &self.update_available {
            writeln!(
                f,
                "update available: agent {} at {} (sha256 {})",
                release.version, release.url, release.sha256
            )?;
        }
        writeln!(f, "last endpoint results:")?;
        if self.last_endpoint_results.is_empty() {
            writeln!(f, "  none yet")?;
        }
        for a in &self.last_endpoint_results {
            write!(
                f,
                "  {} {} {}",
                a.at.to_rfc3339(),
                a.endpoint,
                a.outcome.as_str()
            )?;
            if let Some(status) = a.http_status {
                write!(f, " {status}")?;
            }
            if let Some(detail) = &a.detail {
                write!(f, " ({detail})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none configured".to_owned()
    } else {
        items.join(", ")
    }
}

/// True when `candidate` is a higher dotted version than `current`
/// (`1.10.0` > `1.9.3`; a pre-release suffix is ignored).
pub fn is_newer_version(candidate: &str, current: &str) -> bool {
    fn parts(v: &str) -> Vec<u64> {
        v.trim_start_matches('v')
            .split(['-', '+'])
            .next()
            .unwrap_or_default()
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    }
    let (a, b) = (parts(candidate), parts(current));
    let len = a.len().max(b.len());
    let pad = |mut v: Vec<u64>| {
        v.resize(len, 0);
        v
    };
    pad(a) > pad(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(is_newer_version("1.10.0", "1.9.3"));
        assert!(is_newer_version("0.2", "0.1.9"));
        assert!(!is_newer_version("0.1.0", "0.1.0"));
        assert!(!is_newer_version("0.0.9", "0.1.0"));
    }
}
