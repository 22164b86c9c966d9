/// The error type of `lineprobe-agent`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A trace engine cannot run here; the reason says what would make it work.
    #[error("trace engine {engine} is not available: {reason}")]
    EngineUnavailable {
        /// The engine.
        engine: String,
        /// Why not.
        reason: String,
    },
    /// A trace engine failed while tracing.
    #[error("trace engine {engine} failed: {reason}")]
    TraceFailed {
        /// The engine.
        engine: String,
        /// What went wrong.
        reason: String,
    },
    /// The target could not be resolved or is not allowed.
    #[error("cannot trace to {target}: {reason}")]
    Target {
        /// The target as given.
        target: String,
        /// Why.
        reason: String,
    },
    /// A configuration value is wrong; the reason says what to write instead.
    #[error("configuration `{key}`: {reason}")]
    Config {
        /// The key (or file) at fault.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Other I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error from the shared layer.
    #[error(transparent)]
    Shared(#[from] lineprobe_shared::Error),
    /// The user has not agreed (or has revoked consent): nothing is traced or sent.
    #[error(
        "the user has not agreed to tracing and sending: run `lineprobe-agent consent --accept` \
         (or accept in the app) first"
    )]
    NoConsent,
    /// Consent was given to an earlier version of the consent text.
    #[error(
        "consent was given to version {accepted:?} of the consent text, and the text is now \
         version {current:?}: nothing is traced or sent until the user has seen it and run \
         `lineprobe-agent consent --accept` (or accepted in the app) again"
    )]
    ConsentOutdated {
        /// The version accepted.
        accepted: String,
        /// The version configured now.
        current: String,
    },
    /// A declared value is not in the catalog; the message lists the valid choices.
    #[error("declared {field} {value:?} is not known; valid choices: {choices}")]
    Declared {
        /// `province`, `city` or `carrier`.
        field: &'static str,
        /// The value as configured.
        value: String,
        /// The values that would be accepted.
        choices: String,
    },
    /// An endpoint said the report itself is invalid (4xx): it is not sent
    /// elsewhere, since every collector would say the same.
    #[error("{endpoint} refused the report as invalid (HTTP {status}): {detail}")]
    Rejected {
        /// The endpoint that answered.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The collector's explanation (violations included).
        detail: String,
    },
    /// No endpoint accepted the request; each one's failure is listed.
    #[error("no endpoint could be reached: {summary}")]
    Unreachable {
        /// One `endpoint: outcome (detail)` per attempt.
        summary: String,
    },
    /// A state file in the state folder is unreadable or corrupt.
    #[error("state file {path}: {reason}")]
    State {
        /// The file.
        path: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

impl From<lineprobe_shared::EnvOverrideError> for Error {
    fn from(e: lineprobe_shared::EnvOverrideError) -> Self {
        Self::Config {
            key: e.key,
            reason: e.reason,
        }
    }
}
