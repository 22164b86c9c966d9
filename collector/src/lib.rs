//! The LineProbe collector: the only internet-facing program. It accepts
//! reports from probes over HTTPS, keeps them durably until the internal side
//! has pulled and acknowledged them, and never opens a connection inward.

mod cli;
mod error;

pub use cli::{Cli, Command, main_with_args, run};
pub use error::Error;
