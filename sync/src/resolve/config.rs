//! The chain's configuration, as a TOML table. Sources are asked in the
//! order they are listed; put the most trusted first (the carrier's own plan)
//! and a paid or rate-limited lookup service last, so that it is only asked
//! for what the local data lacks.
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
//!
//! # An HTTP(S) lookup service (see `HttpSource`): `{ip}` is replaced by the
//! # address, `${NAME}` by the environment variable NAME.
//! [[source]]
//! kind = "http"
//! name = "ip-api"
//! url = "https://pro.ip-api.com/json/{ip}?key=${IPAPI_KEY}&lang=zh-CN&fields=66846719"
//! # version = "ip-api pro"        # recorded with each attribute; default "http:<host>"
//! # timeout_ms = 2000             # per request, and the longest wait for a rate slot
//! # rate_per_sec = 10             # token bucket shared by all threads
//! # burst = 10                    # bucket size; default: rate_per_sec rounded up
//! # cache_ttl_s = 86400           # how long an answer is reused
//! # negative_ttl_s = 3600         # how long "knows nothing" is reused (≤ cache_ttl_s)
//! # cache_max_entries = 100000
//! # ca_file = "private-ca.pem"    # PEM bundle of a private CA, added to the public roots
//! # headers = { "X-Api-Key" = "${LOOKUP_KEY}" }
//! # token_env = "LOOKUP_TOKEN"    # sent as `Authorization: Bearer <value>`
//! success = { pointer = "/status", equals = "success" }   # else: knows nothing
//!
//! [source.fields]                  # attribute = JSON pointer, or a list tried in order
//! country = "/countryCode"         # outside China, province and city are not read
//! province = "/regionName"         # name or code: 广东, Guangdong, GD, 44, 440000
//! city = "/city"
//! carrier = ["/isp", "/org"]       # carrier id, name, alias or organisation string
//! asn = "/as"                      # 4134, "AS4134" or "AS4134 CHINANET-BACKBONE"
//! org = "/org"
//! # ip_type = "/connection/type"  # residential, idc, mobile… (else "unknown")
//! proxy = "/proxy"                 # flags: true/false, 1/0, "yes"/"no"
//! hosting = "/hosting"
//! # vpn = "/security/vpn"
//! # tor = "/security/tor"
//! # residential_proxy = "/security/residential_proxy"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lineprobe_shared::Catalog;
use serde::Deserialize;

use super::http::{FieldMap, HttpSettings, HttpSource, SuccessCheck};
use super::{Chain, IpPlanSource, IpSource, MmdbSource, RangesSource, SOURCE_SETTLE};
use crate::Error;

/// The longest settling time `resolve.reload_settle_s` may ask for.
const MAX_RELOAD_SETTLE_S: u64 = 3_600;

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
    /// A lookup service over HTTP or HTTPS answering JSON.
    Http,
}

impl SourceKind {
    /// The kind as written in the configuration, also the default name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipplan => "ipplan",
            Self::Ranges => "ranges",
            Self::Mmdb => "mmdb",
            Self::Http => "http",
        }
    }
}

/// A rate in events per second; any finite number, checked positive when
/// the configuration is validated.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(transparent)]
pub struct Rate(pub f64);

// Compared bit for bit, so that equality is total (a NaN equals itself) and
// the configuration structs can stay `Eq`.
impl PartialEq for Rate {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Rate {}

/// One configured source. File sources use `path`/`paths`; the `http`
/// source uses `url`, `fields` and the options after it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The kind of source.
    pub kind: SourceKind,
    /// The name recorded with each attribute; defaults to the kind.
    #[serde(default)]
    pub name: Option<String>,
    /// The data version recorded with each attribute; defaults to the file
    /// date (CSV), database type and build date (MMDB), or `http:<host>`.
    #[serde(default)]
    pub version: Option<String>,
    /// The file (CSV sources, or a single MMDB file).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Several MMDB files answering together (an IPv4 and an IPv6 file).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// `http`: the lookup address, with `{ip}` where the address goes (in
    /// the path or query; the host is fixed) and `${NAME}` for environment
    /// variables (an API key in the query).
    #[serde(default)]
    pub url: Option<String>,
    /// `http`: which JSON pointer of the answer gives which attribute.
    #[serde(default)]
    pub fields: Option<FieldMap>,
    /// `http`: a value the answer must hold to count; otherwise the service
    /// knows nothing about the address.
    #[serde(default)]
    pub success: Option<SuccessCheck>,
    /// `http`: the request timeout, and the longest wait for a rate slot, in
    /// milliseconds (default 2000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `http`: requests per second, across all threads (default 10).
    #[serde(default)]
    pub rate_per_sec: Option<Rate>,
    /// `http`: requests that may go at once after a quiet spell (default:
    /// `rate_per_sec` rounded up).
    #[serde(default)]
    pub burst: Option<u32>,
    /// `http`: how long an answer is reused, in seconds (default 86400).
    #[serde(default)]
    pub cache_ttl_s: Option<u64>,
    /// `http`: how long a "knows nothing" answer is reused, in seconds
    /// (default 3600, at most `cache_ttl_s`).
    #[serde(default)]
    pub negative_ttl_s: Option<u64>,
    /// `http`: the most addresses kept in the cache (default 100000).
    #[serde(default)]
    pub cache_max_entries: Option<usize>,
    /// `http`: extra request headers; values may hold `${NAME}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `http`: an environment variable whose value is sent as
    /// `Authorization: Bearer <value>`.
    #[serde(default)]
    pub token_env: Option<String>,
    /// `http`: a PEM file of private CA certificates trusted in addition to
    /// the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl SourceConfig {
    /// The source's name: as configured, else its kind.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.kind.as_str().to_owned())
    }

    /// The options that only the `http` kind takes, by their keys, when set.
    fn http_keys_set(&self) -> Vec<&'static str> {
        [
            ("url", self.url.is_some()),
            ("fields", self.fields.is_some()),
            ("success", self.success.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
            ("rate_per_sec", self.rate_per_sec.is_some()),
            ("burst", self.burst.is_some()),
            ("cache_ttl_s", self.cache_ttl_s.is_some()),
            ("negative_ttl_s", self.negative_ttl_s.is_some()),
            ("cache_max_entries", self.cache_max_entries.is_some()),
            ("headers", !self.headers.is_empty()),
            ("token_env", self.token_env.is_some()),
            ("ca_file", self.ca_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }

    /// The settings of an `http` source, with defaults filled in and
    /// `ca_file` taken from `base`; not yet validated.
    fn http_settings(&self, base: &Path) -> HttpSettings {
        let mut s = HttpSettings::new(
            self.display_name(),
            self.url.clone().unwrap_or_default(),
            self.fields.clone().unwrap_or_default(),
        );
        s.version.clone_from(&self.version);
        s.success.clone_from(&self.success);
        if let Some(ms) = self.timeout_ms {
            s.timeout = Duration::from_millis(ms);
        }
        if let Some(Rate(rate)) = self.rate_per_sec {
            s.rate_per_sec = rate;
            s.burst = HttpSettings::default_burst(rate);
        }
        if let Some(burst) = self.burst {
            s.burst = burst;
        }
        if let Some(ttl) = self.cache_ttl_s {
            s.cache_ttl = Duration::from_secs(ttl);
            s.negative_ttl = s.negative_ttl.min(s.cache_ttl);
        }
        if let Some(ttl) = self.negative_ttl_s {
            s.negative_ttl = Duration::from_secs(ttl);
        }
        if let Some(max) = self.cache_max_entries {
            s.cache_max_entries = max;
        }
        s.headers.clone_from(&self.headers);
        s.token_env.clone_from(&self.token_env);
        s.ca_file = self.ca_file.as_ref().map(|p| base.join(p));
        s
    }

    /// Checks that the options fit the kind; `what` names the source.
    fn validate(&self, what: &str) -> Result<(), Error> {
        let err = |message: String| Error::SourceData {
            what: what.to_owned(),
            message,
        };
        let kind = self.kind.as_str();
        if self.kind == SourceKind::Http {
            if self.path.is_some() || !self.paths.is_empty() {
                return Err(err(
                    "`path`/`paths` do not apply to kind = \"http\"; give the service's \
                     `url` instead"
                        .to_owned(),
                ));
            }
            if self.url.is_none() {
                return Err(err(
                    "kind = \"http\" needs a `url` with `{ip}` where the address goes, \
                     e.g. url = \"https://lookup.example/json/{ip}\""
                        .to_owned(),
                ));
            }
            if self.fields.is_none() {
                return Err(err(
                    "kind = \"http\" needs a `[source.fields]` table mapping attributes to \
                     JSON pointers, e.g. fields = { carrier = \"/isp\", province = \"/region\" }"
                        .to_owned(),
                ));
            }
            // Validated with `base` unknown: the CA file's place does not
            // matter to any check.
            return self.http_settings(Path::new("")).validate(what);
        }
        let http_only = self.http_keys_set();
        if !http_only.is_empty() {
            return Err(err(format!(
                "{} only apply to kind = \"http\"; remove them from this {kind} source",
                http_only
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let files = usize::from(self.path.is_some()) + self.paths.len();
        let fits = match self.kind {
            SourceKind::Mmdb => files > 0,
            _ => files == 1 && self.paths.is_empty(),
        };
        if !fits {
            return Err(err(if self.kind == SourceKind::Mmdb {
                "needs a `path` (or `paths` for mmdb)".to_owned()
            } else {
                format!("needs one `path` to its CSV file (`paths` is for mmdb); kind = \"{kind}\"")
            }));
        }
        Ok(())
    }
}

/// The ordered sources of a chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// The sources, asked in this order.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    /// Seconds the sources' changed data files must stay as they are
    /// before `lineprobe-sync run` opens them again (so that a file still
    /// being copied is not read half-written); [`SOURCE_SETTLE`] when not
    /// given.
    #[serde(default)]
    pub reload_settle_s: Option<u64>,
}

impl ChainConfig {
    /// Parses a TOML configuration; `what` names it in error messages.
    /// Unknown keys and malformed JSON pointers are rejected here; call
    /// [`validate`](Self::validate) (or [`build`](Self::build), which does)
    /// for the rest.
    pub fn from_toml(what: &str, text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::SourceData {
            what: what.to_owned(),
            message: e.to_string(),
        })
    }

    /// Checks every source's options without opening anything: the files a
    /// kind needs, options given to a kind they do not apply to, and an
    /// `http` source's address, mapping and limits.
    pub fn validate(&self) -> Result<(), Error> {
        if self
            .reload_settle_s
            .is_some_and(|s| s > MAX_RELOAD_SETTLE_S)
        {
            return Err(Error::SourceData {
                what: "resolve.reload_settle_s".to_owned(),
                message: format!(
                    "at most {MAX_RELOAD_SETTLE_S} seconds (an hour); the default is {}",
                    SOURCE_SETTLE.as_secs()
                ),
            });
        }
        for (i, s) in self.sources.iter().enumerate() {
            s.validate(&Self::what(i, s))?;
            // Every attribute, and a verdict's record of the data versions
            // it read, names its source by this name alone: two sources
            // under one name could not be told apart, and one's version
            // would go unrecorded.
            let name = s.display_name();
            if let Some(first) = self
                .sources
                .iter()
                .take(i)
                .position(|o| o.display_name() == name)
            {
                return Err(Error::SourceData {
                    what: Self::what(i, s),
                    message: format!(
                        "source #{} is already named `{name}`; give each source its own `name`",
                        first + 1
                    ),
                });
            }
        }
        Ok(())
    }

    fn what(i: usize, s: &SourceConfig) -> String {
        format!("source #{} ({})", i + 1, s.display_name())
    }

    /// How long changed data files must stay as they are before they are
    /// opened again.
    pub fn reload_settle(&self) -> Duration {
        self.reload_settle_s
            .map_or(SOURCE_SETTLE, Duration::from_secs)
    }

    /// Every data file the sources read (relative paths taken from
    /// `base`), for noticing when they change.
    pub fn data_files(&self, base: &Path) -> Vec<PathBuf> {
        self.sources
            .iter()
            .flat_map(|s| s.path.iter().chain(&s.paths))
            .map(|p| base.join(p))
            .collect()
    }

    /// Validates, then opens every source; relative paths are taken from
    /// `base`.
    pub fn build(&self, base: &Path, catalog: &Arc<Catalog>) -> Result<Chain, Error> {
        self.validate()?;
        let mut chain = Chain::default();
        for (i, s) in self.sources.iter().enumerate() {
            let name = s.display_name();
            let paths: Vec<PathBuf> = s
                .path
                .iter()
                .chain(&s.paths)
                .map(|p| base.join(p))
                .collect();
            // `validate` made sure a CSV source has its one path.
            let csv_path = || {
                paths.first().cloned().ok_or_else(|| Error::SourceData {
                    what: Self::what(i, s),
                    message: "needs a `path`".to_owned(),
                })
            };
            let source: Box<dyn IpSource> = match s.kind {
                SourceKind::Ipplan => Box::new(IpPlanSource::open(
                    name,
                    s.version.clone(),
                    &csv_path()?,
                    catalog,
                )?),
                SourceKind::Ranges => Box::new(RangesSource::open(
                    name,
                    s.version.clone(),
                    &csv_path()?,
                    catalog,
                )?),
                SourceKind::Mmdb => Box::new(MmdbSource::open(
                    name,
                    s.version.clone(),
                    &paths,
                    Arc::clone(catalog),
                )?),
                SourceKind::Http => Box::new(
                    HttpSource::new(s.http_settings(base), Arc::clone(catalog)).map_err(|e| {
                        // Name the source by its place in the file.
                        match e {
                            Error::SourceData { message, .. } => Error::SourceData {
                                what: Self::what(i, s),
                                message,
                            },
                            other => other,
                        }
                    })?,
                ),
            };
            chain.push(source);
        }
        Ok(chain)
    }
}
