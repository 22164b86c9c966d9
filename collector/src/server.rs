//! Wiring: opens the staging store, binds both listeners and runs until
//! SIGTERM/SIGINT, then shuts down gracefully. SKELETON: filled in by the lead.

use crate::{CollectorConfig, Error};

/// Serves until SIGTERM or SIGINT.
pub(crate) fn run_until_signal(config: CollectorConfig) -> Result<(), Error> {
    let _ = config;
    Err(Error::Config {
        key: "serve".to_owned(),
        reason: "not built yet".to_owned(),
    })
}
