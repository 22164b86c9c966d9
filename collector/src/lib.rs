//! The LineProbe collector: the only internet-facing program. It accepts
//! reports from probes over HTTPS, keeps them durably until the internal side
//! has pulled and acknowledged them, and never opens a connection inward.
//!
//! Modules in the order a report flows through them: configuration, TLS
//! material and the listeners that accept connections (with the PROXY
//! protocol in front), the ingest router and its paths, the staging store,
//! the export router the internal side pulls from, metrics, and the server
//! that wires them together.

mod certs;
mod cli;
mod config;
mod enrol;
mod error;
mod export;
mod ingest;
mod listener;
mod metrics;
mod paths;
mod proxyproto;
mod server;
mod signature;
mod staging;
mod traffic;

pub use certs::{CertStore, GENERATED_TLS_DIR};
pub use cli::{Cli, Command, main_with_args, run};
pub use config::*;
pub use enrol::MAX_ENROL_BODY_BYTES;
pub use error::Error;
pub use export::*;
pub use ingest::{IngestLimits, IngestState, egress_address, ingest_router, not_found};
pub use listener::{
    ConnInfo, ListenerEvent, ListenerObserver, ListenerOptions, Proxied, TlsInfo, bind, serve,
};
pub use metrics::{IngestOutcome, ListenerName, Metrics};
pub use paths::{PathPattern, PathSet};
pub use proxyproto::{
    MAX_HEADER_BYTES as MAX_PROXY_HEADER_BYTES, ProxyAddresses, ProxyHeader, parse_proxy_header,
};
pub use server::RunningCollector;
pub use signature::{
    CheckedSignature, SignatureMetrics, SignatureOutcome, SignatureRejection, SignatureVerifier,
    SigningConfig, signature_only_trust,
};
pub use staging::*;
pub use traffic::{
    Admission, Band, BandMemory, BandRules, Clock, Episode, LowTrustUnit, ManualClock, PathBand,
    SystemClock, Ticket, Traffic, TrafficConfig, TrustConfig, TrustEntry, TrustRetention, TrustRow,
    UnitKey, UnitKind, source_prefix, traffic_routes,
};
