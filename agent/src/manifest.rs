//! Applying the signed manifest: fetched from `/manifest` on the endpoints,
//! verified against the agent's public key, refused when unsigned, forged,
//! older than (or as old as) the applied one, or expired. A refused
//! manifest changes nothing.
//!
//! The accepted manifest is kept in the state folder exactly as it was
//! signed and verified again whenever it is loaded, so editing the file
//! cannot steer the agent either.

use chrono::{DateTime, Utc};
use lineprobe_shared::{
    Manifest, ManifestFault, ManifestVerifyingKey, SignedManifest, accept_update,
};

use crate::Error;
use crate::state::{MANIFEST_FILE, StateDir, remove_if_present};
use crate::submit::Submitter;

/// What a manifest check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestCheck {
    /// A newer manifest was verified and applied.
    Applied {
        /// Its serial.
        serial: u64,
        /// The endpoint it came from.
        from: String,
    },
    /// The endpoint served the manifest already applied (or an older one).
    Current {
        /// The applied serial.
        serial: Option<u64>,
        /// What the endpoint served.
        served: String,
    },
}

/// The applied manifest, verified again; `None` without one (or without a
/// key to verify it with, or when the stored file no longer verifies).
pub fn load_applied(state: &StateDir, key: Option<&ManifestVerifyingKey>) -> Option<Manifest> {
    let key = key?;
    let signed: SignedManifest = match state.read_json(MANIFEST_FILE) {
        Ok(found) => found?,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the stored manifest");
            return None;
        }
    };
    match signed.verify(key) {
        Ok(manifest) => Some(manifest),
        Err(e) => {
            tracing::warn!(error = %e, "the stored manifest does not verify; ignoring it");
            None
        }
    }
}

/// Fetches the manifest from every endpoint and applies, in endpoint order,
/// each one that verifies and is newer than what is applied by then — so
/// the newest served anywhere ends up applied. A manifest that is refused
/// changes nothing; the check fails only when no endpoint served one that
/// verifies (the first refusal, or why none could be fetched).
pub async fn update_manifest(
    state: &StateDir,
    key: &ManifestVerifyingKey,
    submitter: &Submitter,
    now: DateTime<Utc>,
) -> Result<ManifestCheck, Error> {
    let mut current = load_applied(state, Some(key)).map(|m| m.serial);
    let (served, failures) = submitter.fetch_manifests().await;
    let mut outcome: Result<ManifestCheck, Error> = Err(Error::Unreachable {
        summary: failures
            .iter()
            .map(|a| match (a.http_status, a.detail.as_deref()) {
                // The collector answers 404 until a manifest is published.
                (Some(404), _) => format!("{}: no manifest published there (404)", a.endpoint),
                (Some(status), Some(detail)) => format!("{}: HTTP {status}: {detail}", a.endpoint),
                (Some(status), None) => format!("{}: HTTP {status}", a.endpoint),
                (None, Some(detail)) => {
                    format!("{}: {} ({detail})", a.endpoint, a.outcome.as_str())
                }
                (None, None) => format!("{}: {}", a.endpoint, a.outcome.as_str()),
            })
            .collect::<Vec<_>>()
            .join("; "),
    });
    // What the check says, best first: applied, then unchanged, then the
    // first refusal, then why nothing could be fetched.
    let mut refused = false;
    for (from, body) in served {
        match apply_signed(state, key, current, now, &body, &from) {
            Ok(check @ ManifestCheck::Applied { serial, .. }) => {
                current = Some(serial);
                outcome = Ok(check);
            }
            Ok(check @ ManifestCheck::Current { .. }) => {
                if outcome.is_err() {
                    outcome = Ok(check);
                }
            }
            Err(e) => {
                tracing::warn!(endpoint = %from, error = %e, "refused the manifest an endpoint served");
                if outcome.is_err() && !refused {
                    outcome = Err(e);
                }
                refused = true;
            }
        }
    }
    outcome
}

/// The applied manifest when it is still in force at `now`: an expired one
/// is not followed (its endpoints and schedule may be what someone wants the
/// probe frozen on), and the configured settings apply until a newer one is
/// fetched. Its serial still guards against older manifests.
pub(crate) fn in_force(manifest: Option<Manifest>, now: DateTime<Utc>) -> Option<Manifest> {
    let manifest = manifest?;
    if manifest.is_expired_at(now) {
        tracing::warn!(
            serial = manifest.serial,
            expired = %manifest.expires_at.to_rfc3339(),
            "the applied manifest has expired; using the configured settings until a newer one \
             is fetched"
        );
        return None;
    }
    // Saved by an older agent that did not check the issue date.
    if manifest.is_not_yet_valid_at(now) {
        tracing::warn!(
            serial = manifest.serial,
            issued = %manifest.issued_at.to_rfc3339(),
            "the applied manifest is issued more than a day ahead of this clock; using the \
             configured settings until a valid one is fetched"
        );
        return None;
    }
    Some(manifest)
}

/// Verifies `body` (a [`SignedManifest`] document) and stores it when it is
/// newer than `current` and than the one stored by then.
///
/// `current` is the serial the caller read before fetching, which another
/// agent process on the same state folder (or a fetch that took a while)
/// may have overtaken: the stored manifest is read again under the state
/// folder's manifest lock, so an older manifest never replaces a newer one.
pub fn apply_signed(
    state: &StateDir,
    key: &ManifestVerifyingKey,
    current: Option<u64>,
    now: DateTime<Utc>,
    body: &[u8],
    from: &str,
) -> Result<ManifestCheck, Error> {
    let signed = SignedManifest::from_json(body)?;
    let _lock = state.lock(MANIFEST_FILE)?;
    let current = current.max(load_applied(state, Some(key)).map(|m| m.serial));
    match accept_update(current, now, &signed, key) {
        Ok(manifest) => {
            state.write_json(MANIFEST_FILE, &signed)?;
            tracing::info!(serial = manifest.serial, from, "applied a new manifest");
            Ok(ManifestCheck::Applied {
                serial: manifest.serial,
                from: from.to_owned(),
            })
        }
        Err(lineprobe_shared::Error::Manifest {
            fault: ManifestFault::NotNewer,
            reason,
        }) => Ok(ManifestCheck::Current {
            serial: current,
            served: reason,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Forgets the applied manifest (for tests and resets).
pub fn forget_manifest(state: &StateDir) -> Result<(), Error> {
    remove_if_present(&state.path(MANIFEST_FILE))
}

#[cfg(test)]
mod tests {
    use lineprobe_shared::ProbeSchedule;

    use super::*;

    fn manifest(issued_at: DateTime<Utc>) -> Manifest {
        Manifest {
            serial: 3,
            issued_at,
            expires_at: issued_at + chrono::Duration::days(30),
            endpoints: vec!["https://collector.example.net".to_owned()],
            path_patterns: vec!["/static/*/upload".to_owned()],
            schedule: ProbeSchedule {
                interval_secs: 3600,
                jitter_secs: 60,
            },
            catalog_versions: std::collections::BTreeMap::default(),
            latest_agent: None,
        }
    }

    #[test]
    fn a_saved_manifest_issued_far_ahead_of_the_clock_is_not_followed() {
        // An older agent saved it without checking the issue date.
        let now = Utc::now();
        let ahead = manifest(now + chrono::Duration::days(3 * 365));
        assert!(in_force(Some(ahead), now).is_none());
        // A signer's clock a few hours ahead is only skew.
        let skewed = manifest(now + chrono::Duration::hours(8));
        assert!(in_force(Some(skewed), now).is_some());
        let current = manifest(now - chrono::Duration::hours(1));
        assert!(in_force(Some(current), now).is_some());
    }
}
