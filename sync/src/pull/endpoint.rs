//! How to reach one collector (`[[collector]]` in the sync configuration)
//! and how often to pull, validated in one place.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::Error;

/// Default per-request timeout, in seconds.
const DEFAULT_TIMEOUT_S: u64 = 30;
/// Default reports asked for per page.
const DEFAULT_BATCH: usize = 1000;
/// Default cap on one page's body.
const DEFAULT_MAX_PAGE_BYTES: u64 = 64 * 1024 * 1024;
/// The smallest page cap: one report of the largest size the schema allows,
/// with room for the collector's envelope. Below it a single large report
/// could never be pulled.
const MIN_MAX_PAGE_BYTES: u64 = 2 * 1024 * 1024;
/// The largest page cap: a page is held in memory until it is committed.
const MAX_MAX_PAGE_BYTES: u64 = 1024 * 1024 * 1024;
/// The collector never returns more than this many reports per page.
const MAX_BATCH: usize = 10_000;

/// The export token presented to a collector. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ExportSecret(String);

impl ExportSecret {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, to put in the `Authorization` header.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ExportSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportSecret(<redacted>)")
    }
}

/// One collector to pull from: an entry of `[[collector]]`.
///
/// Check it with [`CollectorEndpoint::validate`]; files (`ca_file`,
/// `client_cert`, `client_key`) and `token_env` are read when the
/// [`CollectorClient`](crate::CollectorClient) is built.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorEndpoint {
    /// A unique name for this collector: the key of its pull cursor. A
    /// replaced collector (a new node id) must get a new name.
    pub name: String,
    /// Base URL of the collector's export listener, e.g.
    /// `https://collector-1.dmz.example:9443`; `/export` is appended.
    pub url: String,
    /// Allow an `http://` URL (local testing only: the token would cross
    /// the network in clear text).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// The collector's export token (its `export.token`). Prefer `token_env`.
    #[serde(default)]
    pub token: Option<ExportSecret>,
    /// The environment variable holding the export token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// PEM file of the certificate(s) to trust for this collector: its
    /// self-signed certificate or the CA that signed it. When set it is the
    /// only trust anchor; without it the public web PKI roots are used.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for collectors that require one
    /// (their `export.client_ca`); with `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Time allowed for one request (connect, answer and whole body), in
    /// seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Reports asked for per page (the collector may cap it lower).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Largest page body accepted, in bytes. A larger page is asked for
    /// again with half the batch.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: u64,
    /// Pull from this collector.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_timeout_s() -> u64 {
    DEFAULT_TIMEOUT_S
}

fn default_batch() -> usize {
    DEFAULT_BATCH
}

fn default_max_page_bytes() -> u64 {
    DEFAULT_MAX_PAGE_BYTES
}

fn default_enabled() -> bool {
    true
}

impl CollectorEndpoint {
    /// An endpoint named `name` at `url` with token `token` and every other
    /// key at its default.
    pub fn new(name: impl Into<String>, url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            allow_plain_http: false,
            token: Some(ExportSecret::new(token)),
            token_env: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            timeout_s: DEFAULT_TIMEOUT_S,
            batch: DEFAULT_BATCH,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
            enabled: true,
        }
    }

    /// Checks every rule the types cannot express (no file is read here).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |message: String| {
            Err(Error::CollectorConfig {
                name: self.name.clone(),
                message,
            })
        };
        if !valid_name(&self.name) {
            return bad(
                "`name` must be 1 to 64 letters, digits, '-', '_' or '.' (it keys the pull \
                 cursor)"
                    .to_owned(),
            );
        }
        let url = match self.base_url() {
            Ok(url) => url,
            Err(message) => return bad(message),
        };
        let https = url.scheme() == "https";
        if !https && !self.allow_plain_http {
            return bad(format!(
                "`url` {} is plain HTTP: use https://, or set allow_plain_http = true for \
                 local testing only (the token would travel in clear text)",
                self.url
            ));
        }
        if !https && (self.ca_file.is_some() || self.client_cert.is_some()) {
            return bad(
                "`ca_file`, `client_cert` and `client_key` apply to https:// only: use an \
                 https:// url or remove them"
                    .to_owned(),
            );
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return bad(
                "set both `client_cert` and `client_key` (PEM files) for a client \
                 certificate, or neither"
                    .to_owned(),
            );
        }
        match (&self.token, &self.token_env) {
            (Some(_), Some(_)) => {
                return bad(
                    "set one of `token` and `token_env`, not both (prefer token_env, so the \
                     secret stays out of the file)"
                        .to_owned(),
                );
            }
            (None, None) => {
                return bad(
                    "set `token_env` to the environment variable holding the collector's \
                     export token (or `token`)"
                        .to_owned(),
                );
            }
            (Some(token), None) => {
                if let Err(message) = check_token(token.expose()) {
                    return bad(format!("`token` {message}"));
                }
            }
            (None, Some(var)) => {
                if var.is_empty() || var.contains('=') || var.contains('\0') {
                    return bad("`token_env` must name an environment variable".to_owned());
                }
            }
        }
        if !(1..=3600).contains(&self.timeout_s) {
            return bad(format!(
                "`timeout_s` = {} is out of range: use 1 to 3600 seconds",
                self.timeout_s
            ));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return bad(format!(
                "`batch` = {} is out of range: use 1 to {MAX_BATCH}",
                self.batch
            ));
        }
        if !(MIN_MAX_PAGE_BYTES..=MAX_MAX_PAGE_BYTES).contains(&self.max_page_bytes) {
            return bad(format!(
                "`max_page_bytes` = {} is out of range: use {MIN_MAX_PAGE_BYTES} to \
                 {MAX_MAX_PAGE_BYTES}",
                self.max_page_bytes
            ));
        }
        Ok(())
    }

    /// The token: `token`, or the value of the `token_env` variable looked
    /// up with `lookup`.
    pub(crate) fn resolve_token(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ExportSecret, Error> {
        if let Some(token) = &self.token {
            return Ok(token.clone());
        }
        let var = self.token_env.as_deref().unwrap_or_default();
        let value = lookup(var).unwrap_or_default();
        let value = value.trim();
        if value.is_empty() {
            return Err(Error::CollectorConfig {
                name: self.name.clone(),
                message: format!(
                    "the environment variable {var} (token_env) is not set or empty: set it \
                     to the collector's export token"
                ),
            });
        }
        check_token(value).map_err(|message| Error::CollectorConfig {
            name: self.name.clone(),
            message: format!("the token in {var} {message}"),
        })?;
        Ok(ExportSecret::new(value))
    }

    /// The parsed base URL, or why it is not one.
    pub(crate) fn base_url(&self) -> Result<Url, String> {
        let url = Url::parse(&self.url).map_err(|e| {
            format!(
                "`url` {:?} is not a URL ({e}): write e.g. https://collector.example:9443",
                self.url
            )
        })?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(format!(
                "`url` {} must start with https:// (or http:// for local testing)",
                self.url
            ));
        }
        if url.host().is_none() {
            return Err(format!("`url` {} names no host", self.url));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("`url` must not carry credentials: put the token in token_env".to_owned());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`url` {} must be the listener's base URL, without ?query or #fragment",
                self.url
            ));
        }
        Ok(url)
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }
}

/// A token must be usable as an HTTP header value.
fn check_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() {
        return Err("is empty: use the collector's export.token");
    }
    if token
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || !c.is_ascii())
    {
        return Err("holds spaces, control or non-ASCII characters: copy it exactly");
    }
    Ok(())
}

/// Collector names key the cursors: short and plain.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Validates every entry and that names are unique.
pub fn validate_collectors(endpoints: &[CollectorEndpoint]) -> Result<(), Error> {
    let mut names = HashSet::new();
    for endpoint in endpoints {
        endpoint.validate()?;
        if !names.insert(endpoint.name.as_str()) {
            return Err(Error::CollectorConfig {
                name: endpoint.name.clone(),
                message: "two [[collector]] entries have this name: give each a unique name \
                          (it keys the pull cursor)"
                    .to_owned(),
            });
        }
    }
    Ok(())
}

/// How the puller paces itself (`[pull]` in the sync configuration).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullSettings {
    /// Seconds between rounds when every collector has caught up.
    pub interval_s: u64,
    /// Most pages pulled from one collector in one round; a collector with
    /// more waiting is pulled again at once in the next round.
    pub max_pages_per_round: u32,
}

impl Default for PullSettings {
    fn default() -> Self {
        Self {
            interval_s: 60,
            max_pages_per_round: 100,
        }
    }
}

impl PullSettings {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |message: String| {
            Err(Error::CollectorConfig {
                name: "[pull]".to_owned(),
                message,
            })
        };
        if !(1..=86_400).contains(&self.interval_s) {
            return bad(format!(
                "`interval_s` = {} is out of range: use 1 to 86400 seconds",
                self.interval_s
            ));
        }
        if !(1..=100_000).contains(&self.max_pages_per_round) {
            return bad(format!(
                "`max_pages_per_round` = {} is out of range: use 1 to 100000",
                self.max_pages_per_round
            ));
        }
        Ok(())
    }

    /// The pause between rounds.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_s)
    }
}
