//! The subscriber's consent: nothing is traced or sent before it is given;
//! revoking it stops all sending and deletes the spool.

use chrono::Utc;
use lineprobe_shared::ConsentRecord;

use crate::Error;
use crate::spool::Spool;
use crate::state::{CONSENT_FILE, StateDir, remove_if_present};

/// The recorded consent, if any.
pub fn read_consent(state: &StateDir) -> Result<Option<ConsentRecord>, Error> {
    state.read_json(CONSENT_FILE)
}

/// Records that the subscriber accepted consent text `text_version` now.
pub fn accept_consent(state: &StateDir, text_version: &str) -> Result<ConsentRecord, Error> {
    let record = ConsentRecord {
        accepted_at: Utc::now().fixed_offset(),
        text_version: text_version.trim().to_owned(),
    };
    state.write_json(CONSENT_FILE, &record)?;
    Ok(record)
}

/// Withdraws consent and deletes every spooled report; returns how many
/// were deleted.
pub fn revoke_consent(state: &StateDir, spool: &Spool) -> Result<usize, Error> {
    // Consent first: should the spool deletion fail half-way, nothing is
    // sent from what is left.
    remove_if_present(&state.path(CONSENT_FILE))?;
    spool.purge()
}
