//! The chain's configuration, as a TOML table:
//!
//! ```toml
//! [[source]]
//! kind = "ipplan"
//! path = "ipplan.csv"
//!
//! [[source]]
//! kind = "mmdb"
//! name = "geolite2-city"
//! paths = ["GeoLite2-City.mmdb"]
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lineprobe_shared::Catalog;
use serde::Deserialize;

use super::{Chain, IpPlanSource, IpSource, MmdbSource, RangesSource};
use crate::Error;

/// The kind of a configured source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The carrier's address plan (CSV).
    Ipplan,
    /// A `start,end,asn,org` table (CSV).
    Ranges,
    /// One or more MaxMind-format databases.
    Mmdb,
}

/// One configured source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The kind of source.
    pub kind: SourceKind,
    /// The name recorded with each attribute; defaults to the kind.
    #[serde(default)]
    pub name: Option<String>,
    /// The data version recorded with each attribute; defaults to the file
    /// date (CSV) or database type and build date (MMDB).
    #[serde(default)]
    pub version: Option<String>,
    /// The file (CSV sources, or a single MMDB file).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Several MMDB files answering together (an IPv4 and an IPv6 file).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
}

/// The ordered sources of a chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// The sources, asked in this order.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
}

impl ChainConfig {
    /// Parses a TOML configuration; `what` names it in error messages.
    pub fn from_toml(what: &str, text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::SourceData {
            what: what.to_owned(),
            message: e.to_string(),
        })
    }

    /// Opens every source; relative paths are taken from `base`.
    pub fn build(&self, base: &Path, catalog: &Arc<Catalog>) -> Result<Chain, Error> {
        let mut chain = Chain::default();
        for (i, s) in self.sources.iter().enumerate() {
            let name = s.name.clone().unwrap_or_else(|| {
                match s.kind {
                    SourceKind::Ipplan => "ipplan",
                    SourceKind::Ranges => "ranges",
                    SourceKind::Mmdb => "mmdb",
                }
                .to_owned()
            });
            let mut paths: Vec<PathBuf> = s
                .path
                .iter()
                .chain(&s.paths)
                .map(|p| base.join(p))
                .collect();
            let missing = || Error::SourceData {
                what: format!("source #{} ({name})", i + 1),
                message: "needs a `path` (or `paths` for mmdb)".to_owned(),
            };
            let source: Box<dyn IpSource> = match s.kind {
                SourceKind::Ipplan | SourceKind::Ranges => {
                    if paths.len() != 1 {
                        return Err(missing());
                    }
                    let path = paths.remove(0);
                    if s.kind == SourceKind::Ipplan {
                        Box::new(IpPlanSource::open(name, s.version.clone(), &path, catalog)?)
                    } else {
                        Box::new(RangesSource::open(name, s.version.clone(), &path, catalog)?)
                    }
                }
                SourceKind::Mmdb => {
                    if paths.is_empty() {
                        return Err(missing());
                    }
                    Box::new(MmdbSource::open(
                        name,
                        s.version.clone(),
                        &paths,
                        Arc::clone(catalog),
                    )?)
                }
            };
            chain.push(source);
        }
        Ok(chain)
    }
}
