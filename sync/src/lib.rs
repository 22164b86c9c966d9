//! The internal side of LineProbe: pulls reports one way from the collectors,
//! validates and de-duplicates them, resolves the actual carrier and region of
//! the egress IP and of the first public hop, and judges each line's
//! compliance. Today it offers the trace tools of the shared layer.

mod cli;
mod error;
mod resolve;
mod trace;

pub use cli::{Cli, Command, TraceCommand, main_with_args, run};
pub use error::Error;
pub use resolve::*;
