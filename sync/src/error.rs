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
}

impl Error {
    /// The process exit code for this error: 2 for bad input or usage (the
    /// caller can fix it), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotBuiltYet { .. } | Self::Input { .. } | Self::Shared(_) => 2,
            Self::Output(_) => 1,
        }
    }
}
