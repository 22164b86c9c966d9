//! The internal side of LineProbe: pulls reports one way from the collectors
//! into the internal database, validates and de-duplicates them, resolves
//! the actual carrier and region of the egress IP and of the first public
//! hop, and judges each line's compliance with every reason kept.
//!
//! Modules in the order data flows through them: configuration, the
//! one-way pull and the database it lands in, extraction and validation,
//! address resolution, the compliance verdict, the pipeline that runs them,
//! the verdict listings, the batch reports and the compliance back office,
//! then the demo and the CLI.

mod backoffice;
mod batchreport;
mod cli;
mod compliance;
mod config;
mod demo;
mod error;
mod evidence;
mod intake;
mod pipeline;
mod pull;
mod resolve;
mod resolvercache;
mod spreadsheet;
mod store;
mod trace;
mod trust;
mod validate;
mod verdicts;

pub use backoffice::{
    AuditEntry, AuditRow, BackofficeState, BreakdownRow, LineCursor, LineLead, ManifestForm,
    ManifestRow, NewSession, ProbeRow, PublicationRow, PublishOutcome, Role, SessionUser,
    ThrottlePolicy, ThrottleState, TrendRow, UserCommand, UserRow, check_password, hash_password,
    load_manifest_key, router as backoffice_router, run_user_command, serve as serve_backoffice,
    serve_on as serve_backoffice_on, throttle_after_failure,
};
pub use batchreport::*;
pub use cli::{Cli, Command, Format, TraceCommand, main_with_args, run};
pub use compliance::*;
pub use config::*;
pub use demo::*;
pub use error::Error;
pub use evidence::{EVIDENCE_VERSION, expand_evidence, read_evidence};
pub use pipeline::*;
pub use pull::*;
pub use resolve::*;
pub use resolvercache::{load_resolver_cache, save_resolver_cache};
pub use store::*;
pub use trust::{
    KEY_SEEN_RESOLUTION_MS, KeyContest, KeySpan, TrustMark, TrustPolicy, contest_changes,
    key_contest,
};
pub use validate::*;
pub use verdicts::*;
