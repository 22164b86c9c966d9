//! The internal side's configuration: TOML, overridden by environment
//! variables (`LINEPROBE_SYNC__DATABASE__URL=…` sets `database.url`) and then
//! by command-line flags, validated in one place.
//!
//! Every key has a default, so the programs run with no file at all: an
//! embedded SQLite database in the data folder, no collectors, the embedded
//! catalogs and no address data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use lineprobe_shared::{Catalog, Classifier, ClassifierConfig};
use serde::Deserialize;

use crate::{Chain, ChainConfig, CollectorEndpoint, Error, ReportConfig, TrustPolicy};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "LINEPROBE_SYNC__";

/// The whole configuration of `lineprobe-sync`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Folder for the embedded database and state.
    pub data_dir: PathBuf,
    /// The internal database.
    pub database: DatabaseConfig,
    /// Pulling from the collectors.
    pub pull: PullConfig,
    /// The collectors to pull from, each with its own credentials.
    #[serde(rename = "collector")]
    pub collectors: Vec<CollectorEndpoint>,
    /// The processing pipeline.
    pub pipeline: PipelineConfig,
    /// The ordered address sources (`[[resolve.source]]`).
    pub resolve: ChainConfig,
    /// Folder of catalog files (`provinces.toml`, `cities.toml`,
    /// `carriers.toml`) replacing the embedded catalogs.
    pub catalog_dir: Option<PathBuf>,
    /// Logging.
    pub log: LogConfig,
    /// The batch compliance reports (`[report]`).
    pub report: ReportConfig,
    /// The compliance back office (`lineprobe-sync serve`).
    pub backoffice: BackofficeConfig,
    /// Where relative paths in the file are taken from: the file's folder
    /// (not a key; set when loading).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("lineprobe-sync-data"),
            database: DatabaseConfig::default(),
            pull: PullConfig::default(),
            collectors: Vec::new(),
            pipeline: PipelineConfig::default(),
            resolve: ChainConfig::default(),
            catalog_dir: None,
            log: LogConfig::default(),
            report: ReportConfig::default(),
            backoffice: BackofficeConfig::default(),
            base_dir: PathBuf::from("."),
        }
    }
}

/// The internal database.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`. Empty: an SQLite file
    /// `sync.sqlite3` in `data_dir`.
    pub url: String,
}

/// Pulling from the collectors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullConfig {
    /// Seconds between pull rounds in `lineprobe-sync run`.
    pub interval_s: u64,
    /// Most pages fetched from one collector in one round, so that a
    /// collector with a large backlog yields to the pipeline now and then.
    pub max_pages_per_round: u32,
}

impl Default for PullConfig {
    fn default() -> Self {
        Self {
            interval_s: 60,
            max_pages_per_round: 100,
        }
    }
}

/// The processing pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Reports processed and written per database transaction.
    pub batch: u32,
    /// Address blocks treated as public although the IANA registries call
    /// them special-purpose: only for labs built on documentation ranges.
    pub public_cidrs: Vec<IpNet>,
    /// The NAT64 network-specific prefixes this network's translators use
    /// inside the local-use block `64:ff9b:1::/48` (RFC 8215), each with
    /// its length (/48, /56, /64 or /96): their addresses are read as the
    /// IPv4 address they carry, by RFC 6052's layout for that length. The
    /// well-known `64:ff9b::/96` needs no entry.
    pub nat64_prefixes: Vec<ipnet::Ipv6Net>,
    /// Verdicts from reports whose trust score at arrival is below this
    /// (0–100) are marked low-trust and listed apart; 0 marks none by
    /// score.
    pub low_trust_below: u8,
    /// Verdicts from a probe whose signing key changed are marked
    /// low-trust whatever the score.
    pub key_changed_is_low_trust: bool,
    /// Days an installation's reports stay marked after a change of its
    /// signing key seen across the receiver nodes, or after the older key
    /// last signed when two keys sign at once (1 to 3650).
    pub key_change_flag_days: u32,
    /// Minutes a report an address source failed for stays pending, judged
    /// again on each run until the source answers; past that it is judged
    /// with the other sources (the failure recorded). 0 judges at once.
    pub source_retry_minutes: u32,
}

/// The longest `pipeline.source_retry_minutes`: a week.
const MAX_SOURCE_RETRY_MINUTES: u32 = 7 * 24 * 60;

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch: 2000,
            public_cidrs: Vec::new(),
            nat64_prefixes: Vec::new(),
            low_trust_below: TrustPolicy::default().low_below,
            key_changed_is_low_trust: TrustPolicy::default().key_changed_is_low,
            key_change_flag_days: TrustPolicy::default().key_change_flag_days,
            source_retry_minutes: 60,
        }
    }
}

impl PipelineConfig {
    /// `source_retry_minutes` as a duration.
    pub fn source_retry(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.source_retry_minutes) * 60)
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter (`info`, `lineprobe_sync=debug`…); `RUST_LOG` wins.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: "text".to_owned(),
        }
    }
}

impl SyncConfig {
    /// Reads `path` (or the embedded defaults when `None`), applies the
    /// `LINEPROBE_SYNC__…` variables from `env` and the `--database`
    /// override, and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        database: Option<&str>,
    ) -> Result<Self, Error> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| Error::Input {
                what: p.display().to_string(),
                source,
            })?,
            None => String::new(),
        };
        let origin = path.map_or_else(
            || "embedded defaults".to_owned(),
            |p| p.display().to_string(),
        );
        let mut config = Self::from_toml_with_env(&text, &origin, env)?;
        if let Some(dir) = path.and_then(Path::parent) {
            config.base_dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir.to_path_buf()
            };
        }
        if let Some(url) = database {
            url.clone_into(&mut config.database.url);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text and applies environment overrides; `origin` names
    /// the text in error messages. Call [`SyncConfig::validate`] afterwards.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Error> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Config {
            key: origin.to_owned(),
            reason: format!("not valid TOML: {}", e.message()),
        })?;
        for (name, value) in env {
            if let Some(path) = name.strip_prefix(ENV_PREFIX) {
                let example = format!("{ENV_PREFIX}DATABASE__URL");
                lineprobe_shared::apply_env_override(&mut table, &name, path, &value, &example)?;
            }
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config {
                key: origin.to_owned(),
                reason: format!(
                    "{} (see config/sync.example.toml for every key)",
                    e.message()
                ),
            })
    }

    /// Checks every rule that types alone cannot, in one place.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, reason: String| {
            Err(Error::Config {
                key: key.to_owned(),
                reason,
            })
        };
        let url = &self.database.url;
        if !url.is_empty()
            && !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|p| url.starts_with(p))
        {
            return bad(
                "database.url",
                format!(
                    "{} is not a database URL: write sqlite://PATH or \
                     postgres://USER@HOST:PORT/DATABASE",
                    described(url)
                ),
            );
        }
        if self.pipeline.source_retry_minutes > MAX_SOURCE_RETRY_MINUTES {
            return bad(
                "pipeline.source_retry_minutes",
                format!(
                    "{} is too long: a report should not wait more than a week \
                     ({MAX_SOURCE_RETRY_MINUTES} minutes) for a source",
                    self.pipeline.source_retry_minutes
                ),
            );
        }
        if self.pipeline.low_trust_below > 100 {
            return bad(
                "pipeline.low_trust_below",
                format!(
                    "{} is out of range: trust scores are 0 to 100",
                    self.pipeline.low_trust_below
                ),
            );
        }
        // The lab-public blocks and NAT64 prefixes, checked as the
        // pipeline will take them.
        self.classifier()?;
        if !(1..=3650).contains(&self.pipeline.key_change_flag_days) {
            return bad(
                "pipeline.key_change_flag_days",
                format!(
                    "{} is out of range: use 1 to 3650 days",
                    self.pipeline.key_change_flag_days
                ),
            );
        }
        if self.pull.interval_s == 0 {
            return bad("pull.interval_s", "must be at least 1 second".to_owned());
        }
        if self.pull.max_pages_per_round == 0 {
            return bad("pull.max_pages_per_round", "must be at least 1".to_owned());
        }
        if !(1..=50_000).contains(&self.pipeline.batch) {
            return bad(
                "pipeline.batch",
                format!("{} is out of range: use 1 to 50000", self.pipeline.batch),
            );
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return bad(
                "log.format",
                format!("{:?}: write \"text\" or \"json\"", self.log.format),
            );
        }
        self.report.validate()?;
        self.backoffice.validate()?;
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.collectors.iter().enumerate() {
            c.validate().map_err(|e| Error::Config {
                key: format!("collector[{i}]"),
                reason: e.to_string(),
            })?;
            if !names.insert(c.name.clone()) {
                return bad(
                    &format!("collector[{i}].name"),
                    format!(
                        "{:?} is used by two collectors: the name keys the pull cursor, \
                         give each collector its own",
                        c.name
                    ),
                );
            }
        }
        Ok(())
    }

    /// The database URL to open: the configured one, or the embedded SQLite
    /// file in the data folder.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}",
                self.resolve_path(&self.data_dir)
                    .join("sync.sqlite3")
                    .display()
            )
        } else {
            self.database.url.clone()
        }
    }

    /// `path` taken relative to the configuration file's folder.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The catalogs: the configured folder, or the embedded ones.
    pub fn catalog(&self) -> Result<Arc<Catalog>, Error> {
        let catalog = match &self.catalog_dir {
            Some(dir) => Catalog::load_dir(self.resolve_path(dir))?,
            None => Catalog::embedded()?,
        };
        Ok(Arc::new(catalog))
    }

    /// Opens the configured address sources, in order.
    pub fn chain(&self, catalog: &Arc<Catalog>) -> Result<Chain, Error> {
        self.resolve.build(&self.base_dir, catalog)
    }

    /// How verdicts are marked by their reports' trust at arrival.
    pub fn trust_policy(&self) -> TrustPolicy {
        TrustPolicy {
            low_below: self.pipeline.low_trust_below,
            key_changed_is_low: self.pipeline.key_changed_is_low_trust,
            key_change_flag_days: self.pipeline.key_change_flag_days,
        }
    }

    /// The address classifier, with the configured lab-public blocks.
    pub fn classifier(&self) -> Result<Classifier, Error> {
        let config = ClassifierConfig {
            extra_public: self.pipeline.public_cidrs.clone(),
        };
        Classifier::with_nat64_prefixes(&config, &self.pipeline.nat64_prefixes).map_err(|e| {
            match e {
                // The classifier names its own settings; here they are
                // the pipeline's.
                lineprobe_shared::Error::Config { key, reason } => Error::Config {
                    key: format!(
                        "pipeline.{}",
                        key.replacen("extra_public", "public_cidrs", 1)
                    ),
                    reason,
                },
                other => other.into(),
            }
        })
    }
}

/// The compliance back office: where it listens, how it protects its
/// sessions, and the key it signs probe manifests with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackofficeConfig {
    /// Also serve the back office inside `lineprobe-sync run`.
    pub enabled: bool,
    /// Address and port to listen on.
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain for HTTPS, with `tls_key`. Without both (and
    /// without `behind_proxy` or `allow_plain_http`) a self-signed
    /// certificate is generated into `data_dir/backoffice/tls/`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Host names and addresses the generated certificate names.
    pub self_signed_names: Vec<String>,
    /// Serve plain HTTP to a reverse proxy that terminates HTTPS: cookies
    /// stay `Secure`, and the client address is read from
    /// `X-Forwarded-For` when the connection comes from `trusted_proxies`.
    pub behind_proxy: bool,
    /// Proxies whose `X-Forwarded-For` is believed (with `behind_proxy`).
    pub trusted_proxies: Vec<IpNet>,
    /// Serve plain HTTP with cookies that are not `Secure`: for local
    /// testing only, and only on a loopback address.
    pub allow_plain_http: bool,
    /// A session ends this many seconds after sign-in.
    pub session_ttl_s: u64,
    /// A session unused for this many seconds ends.
    pub session_idle_s: u64,
    /// Failed sign-ins (per user name and per address) allowed before the
    /// backoff starts.
    pub login_free_failures: u32,
    /// The first backoff, in seconds; it doubles with every further failure.
    pub login_backoff_s: u64,
    /// The longest backoff, in seconds.
    pub login_backoff_max_s: u64,
    /// Failures older than this many seconds are forgotten.
    pub login_failure_window_s: u64,
    /// The Ed25519 private key probe manifests are signed with (PEM
    /// `PRIVATE KEY` or base64 of the 32-byte seed); without it the probe
    /// configuration page cannot publish.
    pub manifest_key: Option<PathBuf>,
    /// How long a published manifest stays valid, in days.
    pub manifest_validity_days: u32,
    /// Lines per page.
    pub page_size: u32,
    /// Most lines one CSV export writes.
    pub export_max_rows: u32,
    /// The dashboard's figures are recomputed when older than this many
    /// seconds (in the background; the page never waits for a refresh once
    /// it has figures).
    pub dashboard_max_age_s: u64,
    /// Each collector's traffic view is shown for this many seconds before
    /// the collector is asked again (every viewer shares the one answer).
    pub traffic_max_age_s: u64,
    /// Times are shown, and date filters and the daily trend are taken, at
    /// this offset from UTC in minutes (480: China Standard Time).
    pub utc_offset_minutes: i32,
}

impl Default for BackofficeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8450)),
            tls_cert: None,
            tls_key: None,
            self_signed_names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            behind_proxy: false,
            trusted_proxies: vec![
                IpNet::from(std::net::IpAddr::from([127, 0, 0, 1])),
                IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            allow_plain_http: false,
            session_ttl_s: 8 * 3600,
            session_idle_s: 3600,
            login_free_failures: 3,
            login_backoff_s: 2,
            login_backoff_max_s: 900,
            login_failure_window_s: 3600,
            manifest_key: None,
            manifest_validity_days: 90,
            page_size: 50,
            export_max_rows: 1_000_000,
            dashboard_max_age_s: 30,
            traffic_max_age_s: 15,
            utc_offset_minutes: 480,
        }
    }
}

impl BackofficeConfig {
    /// Checks the section; called by [`SyncConfig::validate`].
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, reason: String| {
            Err(Error::Config {
                key: format!("backoffice.{key}"),
                reason,
            })
        };
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad(
                "tls_cert",
                "give tls_cert and tls_key together (or neither, for a generated \
                 self-signed certificate)"
                    .to_owned(),
            );
        }
        let plain = self.behind_proxy || self.allow_plain_http;
        if plain && self.tls_cert.is_some() {
            return bad(
                "tls_cert",
                "behind_proxy and allow_plain_http serve plain HTTP; remove tls_cert and \
                 tls_key, or the plain HTTP setting"
                    .to_owned(),
            );
        }
        if self.behind_proxy && self.allow_plain_http {
            return bad(
                "allow_plain_http",
                "choose one: behind_proxy (HTTPS at the proxy, Secure cookies) or \
                 allow_plain_http (local testing)"
                    .to_owned(),
            );
        }
        if self.allow_plain_http && !self.listen.ip().is_loopback() {
            return bad(
                "allow_plain_http",
                format!(
                    "plain HTTP with cookies that are not Secure is for local testing only: \
                     listen on a loopback address (not {}), or serve HTTPS (tls_cert/tls_key) \
                     or behind a proxy (behind_proxy = true)",
                    self.listen
                ),
            );
        }
        self.validate_limits()
    }

    /// The numeric keys' ranges.
    fn validate_limits(&self) -> Result<(), Error> {
        let bad = |key: &str, reason: String| {
            Err(Error::Config {
                key: format!("backoffice.{key}"),
                reason,
            })
        };
        if !(60..=7 * 86_400).contains(&self.session_ttl_s) {
            return bad(
                "session_ttl_s",
                format!(
                    "{} is out of range: use 60 to 604800 (one minute to 7 days)",
                    self.session_ttl_s
                ),
            );
        }
        if !(60..=self.session_ttl_s).contains(&self.session_idle_s) {
            return bad(
                "session_idle_s",
                format!(
                    "{} is out of range: use 60 to session_ttl_s ({})",
                    self.session_idle_s, self.session_ttl_s
                ),
            );
        }
        if self.login_free_failures > 20 {
            return bad(
                "login_free_failures",
                format!("{} is too many: use 0 to 20", self.login_free_failures),
            );
        }
        if self.login_backoff_s == 0 || self.login_backoff_s > self.login_backoff_max_s {
            return bad(
                "login_backoff_s",
                "must be at least 1 and at most login_backoff_max_s".to_owned(),
            );
        }
        if self.login_backoff_max_s > 86_400 {
            return bad(
                "login_backoff_max_s",
                "use at most 86400 (one day)".to_owned(),
            );
        }
        if self.login_failure_window_s < 60 {
            return bad(
                "login_failure_window_s",
                "use at least 60 seconds".to_owned(),
            );
        }
        if !(1..=400).contains(&self.manifest_validity_days) {
            return bad(
                "manifest_validity_days",
                format!(
                    "{} is out of range: use 1 to 400 (probes refuse longer validity)",
                    self.manifest_validity_days
                ),
            );
        }
        if !(10..=500).contains(&self.page_size) {
            return bad(
                "page_size",
                format!("{} is out of range: use 10 to 500", self.page_size),
            );
        }
        if self.export_max_rows == 0 {
            return bad("export_max_rows", "must be at least 1".to_owned());
        }
        if !(1..=3600).contains(&self.dashboard_max_age_s) {
            return bad(
                "dashboard_max_age_s",
                format!(
                    "{} is out of range: use 1 to 3600",
                    self.dashboard_max_age_s
                ),
            );
        }
        if !(1..=600).contains(&self.traffic_max_age_s) {
            return bad(
                "traffic_max_age_s",
                format!("{} is out of range: use 1 to 600", self.traffic_max_age_s),
            );
        }
        if !(-720..=840).contains(&self.utc_offset_minutes) {
            return bad(
                "utc_offset_minutes",
                format!(
                    "{} is out of range: use -720 to 840",
                    self.utc_offset_minutes
                ),
            );
        }
        Ok(())
    }
}

/// A database URL this program cannot use, for a message: its scheme
/// (`"mysql:…"`), never the rest. What follows may hold a password in a
/// form no redaction can know: `postgres:/u:pw@h` (a slash short),
/// `host=h password=pw` (libpq's key=value form), `?password=pw`.
fn described(url: &str) -> String {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme).filter(|s| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    match scheme {
        Some(scheme) => format!("{:?}", format!("{scheme}:…")),
        None => "the value given".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat64_prefixes_reach_the_classifier_and_bad_ones_are_named() {
        let load = |text: &str| {
            SyncConfig::from_toml_with_env(text, "test", std::iter::empty::<(String, String)>())
                .unwrap()
        };
        let config = load("[pipeline]\nnat64_prefixes = [\"64:ff9b:1:abcd::/96\"]\n");
        config.validate().unwrap();
        let classifier = config.classifier().unwrap();
        let wrapped: std::net::IpAddr = "64:ff9b:1:abcd::c000:221".parse().unwrap();
        assert_eq!(
            classifier.classify(wrapped).effective_addr(),
            "192.0.2.33".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(
            load("")
                .classifier()
                .unwrap()
                .classify(wrapped)
                .effective_addr(),
            wrapped,
            "not unwrapped unless configured"
        );
        for (text, key) in [
            (
                "[pipeline]\nnat64_prefixes = [\"2001:db8::/96\"]\n",
                "pipeline.nat64_prefixes[0]",
            ),
            (
                "[pipeline]\npublic_cidrs = [\"0.0.0.0/0\"]\n",
                "pipeline.public_cidrs",
            ),
        ] {
            let err = load(text).validate().unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn the_key_change_flag_period_is_bounded_and_reaches_the_policy() {
        let load = |text: &str| {
            SyncConfig::from_toml_with_env(text, "test", std::iter::empty::<(String, String)>())
                .unwrap()
        };
        for days in [0, 3651] {
            let config = load(&format!("[pipeline]\nkey_change_flag_days = {days}\n"));
            let err = config.validate().unwrap_err().to_string();
            assert!(
                err.contains("pipeline.key_change_flag_days") && err.contains("1 to 3650"),
                "{err}"
            );
        }
        let config = load("[pipeline]\nkey_change_flag_days = 7\n");
        config.validate().unwrap();
        assert_eq!(config.trust_policy().key_change_flag_days, 7);
        assert_eq!(load("").trust_policy().key_change_flag_days, 30);
    }

    #[test]
    fn a_bad_database_url_is_named_without_its_password() {
        for (url, shown) in [
            ("mysql://lp:s3cret@db:5432/lp", "\"mysql:…\""),
            ("postgres:/lp:s3cret@db/lp", "\"postgres:…\""),
            ("mysql://db/lp?user=lp&password=s3cret", "\"mysql:…\""),
            (
                "host=db user=lp password=s3cret dbname=lp",
                "the value given",
            ),
            ("//lp:s3cret@db/lp", "the value given"),
        ] {
            let config = SyncConfig::from_toml_with_env(
                "",
                "test",
                [(
                    "LINEPROBE_SYNC__DATABASE__URL".to_owned(),
                    format!("{url:?}"),
                )],
            )
            .unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "{url}: {err}");
            assert!(
                err.contains("database.url") && err.contains(shown) && err.contains("sqlite://"),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn env_overrides_reach_nested_keys() {
        let config = SyncConfig::from_toml_with_env(
            "[pull]\ninterval_s = 5\n",
            "test",
            [
                (
                    "LINEPROBE_SYNC__DATABASE__URL".to_owned(),
                    "postgres://x@h/db".to_owned(),
                ),
                (
                    "LINEPROBE_SYNC__PIPELINE__BATCH".to_owned(),
                    "17".to_owned(),
                ),
                ("OTHER".to_owned(), "ignored".to_owned()),
            ],
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.database.url, "postgres://x@h/db");
        assert_eq!(config.pipeline.batch, 17);
        assert_eq!(config.pull.interval_s, 5);
    }

    #[test]
    fn a_malformed_env_key_is_a_configuration_error_naming_it() {
        let name = "LINEPROBE_SYNC__PULL____INTERVAL_S";
        let err = SyncConfig::from_toml_with_env("", "test", [(name.to_owned(), "5".to_owned())])
            .unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert_eq!(err.exit_code(), 2, "{err}");
        let err = err.to_string();
        assert!(
            err.contains(name) && err.contains("LINEPROBE_SYNC__DATABASE__URL"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_say_what_to_fix() {
        let err = SyncConfig::from_toml_with_env("[pull]\nintervall_s = 5\n", "f.toml", [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("intervall_s"), "{err}");
        let config =
            SyncConfig::from_toml_with_env("[database]\nurl = \"mysql://x\"\n", "f", []).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("database.url") && err.contains("sqlite://"),
            "{err}"
        );
    }
}
