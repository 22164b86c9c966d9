/// The error type of `lineprobe-collector`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read the configuration {path}: {source}")]
    ConfigFile {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A configuration value is wrong; the reason says what to write instead.
    #[error("configuration `{key}`: {reason}")]
    Config {
        /// The key (or file) at fault.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// Certificates or keys could not be loaded or generated.
    #[error("TLS: {0}")]
    Tls(String),

    /// A listener could not be bound or failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The staging store has reached its bound: the report was not stored.
    #[error("staging is full ({max} unacknowledged reports); retry after {retry_after_secs} s")]
    StagingFull {
        /// The configured bound.
        max: u64,
        /// Seconds the client should wait.
        retry_after_secs: u64,
    },

    /// The report with the receiver's envelope is larger than the schema
    /// lets a stored report be: it was not stored, and never will be.
    #[error(
        "the report with the receiver's envelope is {bytes} bytes; at most {limit} are stored: \
         send a smaller report"
    )]
    ReportTooLarge {
        /// Its stored size.
        bytes: usize,
        /// The schema's limit.
        limit: usize,
    },

    /// An enrolment refused: the node keeps as many enrolled installations
    /// as `signing.max_enrolled_installs` allows, and every one is
    /// contested (a key changed within `signing.key_change_flag_days`), so
    /// none may be forgotten to make room.
    #[error(
        "the receiver keeps {max} enrolled installations (signing.max_enrolled_installs) and \
         every one's key changed within signing.key_change_flag_days; raise the bound"
    )]
    EnrolmentsFull {
        /// The bound.
        max: u64,
    },

    /// The staging store failed (disk full, I/O error, corruption).
    #[error("staging store: {0}")]
    Staging(String),

    /// The staging store is shutting down and takes no more writes.
    #[error("staging store is shutting down")]
    StagingClosed,

    /// An acknowledgement that cannot be right was refused; nothing changed.
    #[error("acknowledgement refused: {0}")]
    BadAck(String),

    /// A published manifest was refused; nothing changed.
    #[error("manifest refused: {0}")]
    ManifestRefused(String),

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
}

impl From<lineprobe_shared::EnvOverrideError> for Error {
    fn from(e: lineprobe_shared::EnvOverrideError) -> Self {
        Self::Config {
            key: e.key,
            reason: e.reason,
        }
    }
}
