//! The LineProbe probe agent: traces the route to the internet from a
//! subscriber's device and reports it with what the subscriber declared.
//!
//! A library first — the Android app and the Windows service embed it
//! through [`Agent`] — with a thin CLI for Linux and Windows. Modules in the
//! order a probe run flows through them: configuration and state, consent,
//! the declared line, device facts, the trace engines and the probe that
//! builds the report, submission and the spool, the manifest, status, the
//! agent that ties them together, then the CLI.

mod agent;
mod cli;
mod config;
mod consent;
mod declared;
mod engine;
mod error;
mod facts;
mod manifest;
mod probe;
mod service;
mod signing;
mod spool;
mod state;
mod status;
mod submit;

pub use agent::{Agent, AgentOptions, DEFAULT_STATE_DIR, DrainSummary, ProbeOutcome};
pub use cli::{Cli, Command, ServiceAction, main_with_args, run, run_with};
pub use config::*;
pub use consent::{accept_consent, read_consent, revoke_consent};
pub use declared::{Declared, resolve_declared};
pub use engine::{Engine, TraceOutcome, TraceRequest, UnprivilegedEngine, WindowsIcmpEngine};
pub use engine::{
    SystemEngine, SystemTool, TrippyEngine, engine_named, engines_for_platform, trace_auto,
    trace_auto_platform,
};
pub use error::Error;
pub use facts::{
    Platform, SystemPlatform, collect_facts, default_route_interface, default_route6_interface,
};
pub use manifest::{ManifestCheck, apply_signed, forget_manifest, load_applied, update_manifest};
pub use probe::{RAW_TEXT_BUDGET, SharedTracer, Tracer, report_trace, resolve_target, trace_with};
pub use service::{
    SERVICE_DESCRIPTION, SERVICE_DISPLAY_NAME, SERVICE_LOG_FILE, SERVICE_LOG_MAX_BYTES,
    SERVICE_NAME, ServicePlan, default_service_state_dir, open_service_log,
};
pub use signing::{FileKeyStore, KEY_FILE, KeyStore, UNSUPPORTED_RECHECK};
pub use spool::{Spool, SpoolEntry, backoff};
pub use state::{StateDir, write_atomic};
pub use status::{AgentStatus, ManifestCheckRecord, ProbeRecord, StatusRecord, is_newer_version};
pub use submit::{Delivery, Submission, Submitter, TransportOptions, Undelivered};
