//! The shared layer of LineProbe: every other crate stands on it.
//!
//! Modules are listed in the order a report's data flows through them: the
//! wire schema a probe sends, the trace model inside it, the text parsers that
//! turn traceroute output into that model, address classification and the
//! first public hop, the catalogs that name provinces, cities and carriers, and
//! the signed manifest that tells probes what to do, and the signatures
//! probes put on their uploads.
//! Modules are private; their public items are re-exported flat here.

mod addrclass;
mod catalog;
mod durable;
mod envoverride;
mod error;
mod firsthop;
mod logcolour;
mod manifest;
mod report;
mod signing;
mod trace;
mod tracetext;

pub use addrclass::*;
pub use catalog::*;
pub use durable::*;
pub use envoverride::*;
pub use error::*;
pub use firsthop::*;
pub use logcolour::*;
pub use manifest::*;
pub use report::*;
pub use signing::*;
pub use trace::*;
pub use tracetext::*;
