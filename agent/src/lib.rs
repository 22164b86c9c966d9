//! The LineProbe probe agent: traces the route to the internet from a
//! subscriber's device and reports it with what the subscriber declared.
//!
//! A library first — the Android app and the Windows service embed it — with a
//! thin CLI for Linux and Windows. Modules in the order a probe run flows
//! through them: the trace engines, then the CLI.

mod cli;
mod engine;
mod error;

pub use cli::{Cli, Command, main_with_args, run};
pub use engine::{Engine, TraceOutcome, TraceRequest, UnprivilegedEngine};
pub use engine::{
    SystemEngine, SystemTool, TrippyEngine, engine_named, engines_for_platform, trace_auto,
    trace_auto_platform,
};
pub use error::Error;
