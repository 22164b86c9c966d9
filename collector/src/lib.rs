//! The LineProbe collector: the only internet-facing program. It accepts
//! reports from probes over HTTPS, keeps them durably until the internal side
//! has pulled and acknowledged them, and never opens a connection inward.
//!
//! Modules in the order a report flows through them: configuration, TLS
//! material and the listeners that accept connections, the ingest router,
//! the staging store, and the export router the internal side pulls from.

mod cli;
mod config;
mod error;
mod export;
mod ingest;
mod listener;
mod metrics;
mod paths;
mod server;
mod staging;

pub use cli::{Cli, Command, main_with_args, run};
pub use config::*;
pub use error::Error;
pub use export::*;
pub use ingest::{IngestLimits, IngestState, egress_address, ingest_router, not_found};
pub use listener::*;
pub use metrics::{ConnectionEvent, IngestOutcome, ListenerName, Metrics};
pub use paths::{PathPattern, PathSet};
pub use staging::*;
