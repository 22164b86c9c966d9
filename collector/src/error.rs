/// The error type of `lineprobe-collector`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A subcommand that is part of the collector's plan but not built yet.
    #[error("`lineprobe-collector {command}` is planned but not built yet (see issue #{issue})")]
    NotBuiltYet {
        /// The subcommand.
        command: &'static str,
        /// The issue that tracks it.
        issue: u32,
    },
    /// An error from the shared layer.
    #[error(transparent)]
    Shared(#[from] lineprobe_shared::Error),
}
