/// The error type of `lineprobe-sync`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A subcommand that is part of the plan but not built yet.
    #[error("`lineprobe-sync {command}` is planned but not built yet (see issue #{issue})")]
    NotBuiltYet {
        /// The subcommand.
        command: &'static str,
        /// The issue that tracks it.
        issue: u32,
    },
    /// Reading the input failed.
    #[error("cannot read {what}: {source}")]
    Input {
        /// The file, or "standard input".
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    /// An error from the shared layer: an unrecognized trace, a bad catalog…
    #[error(transparent)]
    Shared(#[from] lineprobe_shared::Error),
    /// An address data source (address plan, range table, configuration)
    /// holds something that cannot be used; `what` names the file and line.
    #[error("{what}: {message}")]
    SourceData {
        /// The file, with `:line` when one line is at fault.
        what: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A MaxMind-format database cannot be opened or read.
    #[error("MaxMind-format database {what}: {source}")]
    Mmdb {
        /// The file.
        what: String,
        /// The underlying error.
        #[source]
        source: maxminddb::MaxMindDbError,
    },
}

impl Error {
    /// The process exit code for this error: 2 for bad input or usage (the
    /// caller can fix it), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotBuiltYet { .. }
            | Self::Input { .. }
            | Self::Shared(_)
            | Self::SourceData { .. }
            | Self::Mmdb { .. } => 2,
            Self::Output(_) => 1,
        }
    }
}
