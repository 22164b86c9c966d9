//! The agent's TOML configuration, and the settings a probe actually runs
//! with once the signed manifest and the command line have had their say.
//!
//! Every key is optional; unknown keys are errors so that a typo is not
//! silently ignored on a subscriber's machine where nobody reads the logs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lineprobe_shared::{
    LocationSource, Manifest, ManifestVerifyingKey, ProbeSchedule, ReportLimits,
};
use rand::Rng;
use serde::Deserialize;

use crate::Error;

/// The report paths the default collector configuration accepts.
pub const DEFAULT_PATH_PATTERNS: [&str; 4] = [
    "/api/v1/report",
    "/api/v1/*/report",
    "/static/*/upload",
    "/cdn/**/collect",
];

/// The manifest public key this build was made with, if any
/// (`LINEPROBE_MANIFEST_PUBLIC_KEY` at compile time); the config's
/// `manifest.public_key` wins over it.
pub const BUILT_IN_MANIFEST_KEY: Option<&str> = option_env!("LINEPROBE_MANIFEST_PUBLIC_KEY");

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Folder for the install id, consent record, spool and status. Empty:
    /// `lineprobe-agent-state` in the working directory.
    pub state_dir: Option<PathBuf>,
    /// Where and how reports are sent.
    pub endpoints: EndpointsConfig,
    /// How often the daemon probes and retries its spool.
    pub schedule: ScheduleConfig,
    /// What to trace.
    pub trace: TraceConfig,
    /// What the subscriber declared.
    pub declared: DeclaredConfig,
    /// Device facts that need the subscriber's consent.
    pub device: DeviceConfig,
    /// The consent text shown to the subscriber.
    pub consent: ConsentConfig,
    /// The offline spool.
    pub spool: SpoolConfig,
    /// The province, city and carrier catalogs.
    pub catalog: CatalogConfig,
    /// The signed manifest.
    pub manifest: ManifestConfig,
    /// Signed uploads.
    pub signing: SigningConfig,
}

/// The longest `schedule.retry_max_secs`, seven days: a spooled report is
/// retried at least this often, whatever an endpoint's `Retry-After` says.
pub const MAX_RETRY_SECS: u64 = 7 * 24 * 3600;

/// The enrolment paths the default collector configuration accepts.
pub const DEFAULT_ENROL_PATTERNS: [&str; 2] = ["/api/v1/enrol", "/api/v1/*/enrol"];

/// `[signing]`: the probe's own key and signed uploads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Create a key pair, enrol it at each collector and sign every upload.
    /// Collectors that predate signing get unsigned reports either way.
    pub enabled: bool,
    /// Enrolment paths in the collector's syntax (its `signing.enrol_paths`);
    /// one is drawn at random per enrolment.
    pub enrol_patterns: Vec<String>,
}

impl Default for SigningConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            enrol_patterns: DEFAULT_ENROL_PATTERNS
                .iter()
                .map(|&p| p.to_owned())
                .collect(),
        }
    }
}

/// `[endpoints]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointsConfig {
    /// Collector base URLs tried in order: plain strings, or tables with
    /// `url`, `sni` and `host` for fronting.
    pub urls: Vec<EndpointSpec>,
    /// Report paths in the collector's syntax: `*` one segment, `**` any.
    pub path_patterns: Vec<String>,
    /// Time to establish TCP and TLS with one endpoint.
    pub connect_timeout_secs: u64,
    /// Time for one whole request to one endpoint.
    pub request_timeout_secs: u64,
    /// PEM CA certificate(s) trusted besides the public web roots, for
    /// private deployments with their own CA (or a self-signed collector).
    pub ca_file: Option<PathBuf>,
}

impl Default for EndpointsConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            path_patterns: DEFAULT_PATH_PATTERNS
                .iter()
                .map(|&p| p.to_owned())
                .collect(),
            connect_timeout_secs: 5,
            request_timeout_secs: 20,
            ca_file: None,
        }
    }
}

/// One configured endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSpec {
    /// `"https://collector.example.net"`.
    Url(String),
    /// `{ url = "https://203.0.113.7", sni = "cdn.example.com", host = "collector.example.net" }`.
    Fronted {
        /// Where to connect (a host name or an IP literal).
        url: String,
        /// The TLS server name to send instead of the URL's host; the
        /// certificate is checked against it.
        sni: Option<String>,
        /// The HTTP `Host` header to send instead of the URL's host.
        host: Option<String>,
    },
}

// Written by hand rather than `#[serde(untagged)]`: untagged enums answer
// every mistake with "data did not match any variant", while this names the
// unknown or missing key of a fronted endpoint.
impl<'de> Deserialize<'de> for EndpointSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fronted {
            url: String,
            #[serde(default)]
            sni: Option<String>,
            #[serde(default)]
            host: Option<String>,
        }

        struct SpecVisitor;

        impl<'de> serde::de::Visitor<'de> for SpecVisitor {
            type Value = EndpointSpec;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "an endpoint URL such as \"https://203.0.113.7\", or a table \
                     { url = \"…\", sni = \"…\", host = \"…\" }",
                )
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EndpointSpec, E> {
                Ok(EndpointSpec::Url(v.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<EndpointSpec, A::Error> {
                let f = Fronted::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(EndpointSpec::Fronted {
                    url: f.url,
                    sni: f.sni,
                    host: f.host,
                })
            }
        }

        deserializer.deserialize_any(SpecVisitor)
    }
}

/// `[schedule]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Seconds between probes.
    pub interval_secs: u64,
    /// Up to this many seconds added at random to each wait.
    pub jitter_secs: u64,
    /// First spool retry delay; doubles with every failed retry.
    pub retry_base_secs: u64,
    /// Longest spool retry delay.
    pub retry_max_secs: u64,
    /// How often the daemon fetches the manifest.
    pub manifest_check_secs: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            interval_secs: 6 * 3600,
            jitter_secs: 1800,
            retry_base_secs: 60,
            retry_max_secs: 6 * 3600,
            manifest_check_secs: 12 * 3600,
        }
    }
}

/// The longest `trace.deadline_secs`: an hour. A longer trace is a stuck
/// one, and a probe holds the schedule while it runs.
pub const MAX_TRACE_DEADLINE_SECS: u64 = 3600;

/// `[trace]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Host name or address to trace to. Empty: the first endpoint's host.
    pub target: String,
    /// `auto`, `trippy`, `unprivileged`, `windows-icmp` or `system`.
    pub engine: String,
    /// Highest TTL probed.
    pub max_ttl: u8,
    /// Probes per TTL.
    pub rounds: u8,
    /// Hard limit on the trace, seconds (1 to [`MAX_TRACE_DEADLINE_SECS`]).
    pub deadline_secs: u64,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            target: String::new(),
            engine: "auto".to_owned(),
            max_ttl: 30,
            rounds: 3,
            deadline_secs: 30,
        }
    }
}

/// `[declared]`: what the subscriber says the line is.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeclaredConfig {
    /// Province: a name or code from the province catalog (`广东`, `CN-GD`).
    pub province: Option<String>,
    /// City: a name or GB/T 2260 code from the city catalog (`深圳`, `440300`).
    pub city: Option<String>,
    /// Carrier: a catalog id or name (`china_mobile`, `中国移动`).
    pub carrier: Option<String>,
    /// The broadband account.
    pub account: String,
    /// Installation address, free text.
    pub address: String,
    /// A position the subscriber picked (source `user`).
    pub location: Option<LocationConfig>,
}

/// `[declared.location]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    /// Degrees, -90 to 90.
    pub latitude: f64,
    /// Degrees, -180 to 180.
    pub longitude: f64,
    /// Radius of uncertainty in metres.
    #[serde(default = "default_accuracy")]
    pub accuracy_m: f64,
    /// `user` (default) or `gps`.
    #[serde(default = "default_source")]
    pub source: LocationSource,
}

fn default_accuracy() -> f64 {
    1000.0
}

fn default_source() -> LocationSource {
    LocationSource::User
}

/// `[device]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Send the default-route interface's MAC (only once consent is given).
    pub send_mac: bool,
}

/// `[consent]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    /// The version of the consent text the subscriber is shown; recorded
    /// with the acceptance.
    pub text_version: String,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        Self {
            text_version: "1".to_owned(),
        }
    }
}

/// `[spool]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Most reports kept; the oldest is evicted to make room.
    pub max_reports: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self { max_reports: 200 }
    }
}

/// `[catalog]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Folder with `provinces.toml`, `cities.toml` and `carriers.toml`.
    /// Empty: the catalogs built into the agent.
    pub dir: Option<PathBuf>,
}

/// `[manifest]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManifestConfig {
    /// Ed25519 public key manifests must be signed with: base64 of the 32
    /// raw bytes, a PEM block, or `file:/path/key.pem`. Empty: the key built
    /// into the agent, if any; without a key no manifest is fetched.
    pub public_key: String,
}

/// What marks a consent version as covering the MAC address.
pub(crate) const MAC_CONSENT_SUFFIX: &str = "+mac";

/// The prefix of the agent's environment overrides.
pub const AGENT_ENV_PREFIX: &str = "LINEPROBE_AGENT__";

impl AgentConfig {
    /// Parses and checks TOML text; `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Self, Error> {
        Self::from_toml_with_env(text, source, std::iter::empty())
    }

    /// Like [`AgentConfig::from_toml`], with `LINEPROBE_AGENT__SECTION__KEY`
    /// variables among `env` setting `section.key` first (as the servers
    /// take theirs), so that a deployment (an installer, a service unit)
    /// can change one key without editing the file.
    pub fn from_toml_with_env(
        text: &str,
        source: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Error> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Config {
            key: source.to_owned(),
            reason: format!("not valid TOML: {}", e.message()),
        })?;
        for (name, value) in env {
            if let Some(path) = name.strip_prefix(AGENT_ENV_PREFIX) {
                let example = format!("{AGENT_ENV_PREFIX}SCHEDULE__INTERVAL_SECS");
                lineprobe_shared::apply_env_override(&mut table, &name, path, &value, &example)?;
            }
        }
        let config: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config {
                key: source.to_owned(),
                reason: format!(
                    "{} (see config/agent.example.toml for every key)",
                    e.message()
                ),
            })?;
        config.check()?;
        Ok(config)
    }

    /// Reads and checks a config file, with the environment's overrides.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("cannot read the configuration {}", path.display()),
            source,
        })?;
        Self::from_toml_with_env(&text, &path.display().to_string(), std::env::vars())
    }

    /// The built-in defaults with the environment's overrides: the config
    /// of an agent started without a file.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_toml_with_env("", "the built-in defaults", std::env::vars())
    }

    /// The consent version a subscriber must have accepted: the consent
    /// text's, marked `+mac` while the MAC address is sent, so that a
    /// consent given while it was not does not cover it (the subscriber is
    /// asked again).
    pub fn consent_version(&self) -> String {
        let text = self.consent.text_version.trim();
        if self.device.send_mac {
            format!("{text}{MAC_CONSENT_SUFFIX}")
        } else {
            text.to_owned()
        }
    }

    /// Every rule a config must follow; the first broken one is returned.
    pub fn check(&self) -> Result<(), Error> {
        for spec in &self.endpoints.urls {
            Endpoint::from_spec(spec)?;
        }
        for pattern in &self.endpoints.path_patterns {
            check_pattern(pattern)
                .map_err(|reason| config_error("endpoints.path_patterns", reason))?;
        }
        if self.endpoints.path_patterns.is_empty() {
            return Err(config_error(
                "endpoints.path_patterns",
                "is empty; list at least one path, e.g. \"/api/v1/report\"",
            ));
        }
        for (key, secs) in [
            (
                "endpoints.connect_timeout_secs",
                self.endpoints.connect_timeout_secs,
            ),
            (
                "endpoints.request_timeout_secs",
                self.endpoints.request_timeout_secs,
            ),
        ] {
            if secs == 0 {
                return Err(config_error(key, "must be at least 1 second"));
            }
        }
        self.schedule.check()?;
        if self.spool.max_reports == 0 {
            return Err(config_error("spool.max_reports", "must be at least 1"));
        }
        if self.trace.max_ttl == 0 {
            return Err(config_error("trace.max_ttl", "must be at least 1"));
        }
        if self.trace.rounds == 0 || usize::from(self.trace.rounds) > ReportLimits::MAX_RTTS_PER_HOP
        {
            return Err(config_error(
                "trace.rounds",
                format!(
                    "is {}; use 1 to {} (a report holds at most {} round-trip times a hop)",
                    self.trace.rounds,
                    ReportLimits::MAX_RTTS_PER_HOP,
                    ReportLimits::MAX_RTTS_PER_HOP
                ),
            ));
        }
        if !(1..=MAX_TRACE_DEADLINE_SECS).contains(&self.trace.deadline_secs) {
            return Err(config_error(
                "trace.deadline_secs",
                format!(
                    "is {}; use 1 to {MAX_TRACE_DEADLINE_SECS} seconds, e.g. 30 (the default)",
                    self.trace.deadline_secs
                ),
            ));
        }
        if self.consent.text_version.trim().is_empty() {
            return Err(config_error("consent.text_version", "must not be empty"));
        }
        // What goes into every report is held to the report's own rules
        // here: a value they refuse would make every probe fail, on a
        // machine where nobody reads the log.
        check_line(
            "consent.text_version",
            &self.consent_version(),
            ReportLimits::MAX_SHORT_TEXT_LEN,
        )?;
        self.declared.check()?;
        if self.signing.enabled && self.signing.enrol_patterns.is_empty() {
            return Err(config_error(
                "signing.enrol_patterns",
                "is empty; list at least one path, e.g. \"/api/v1/enrol\", or set \
                 signing.enabled = false",
            ));
        }
        for pattern in &self.signing.enrol_patterns {
            check_pattern(pattern)
                .map_err(|reason| config_error("signing.enrol_patterns", reason))?;
        }
        Ok(())
    }

    /// The manifest key from the config (or the build), if any.
    pub fn manifest_key(&self) -> Result<Option<ManifestVerifyingKey>, Error> {
        let text = self.manifest.public_key.trim();
        let text = if text.is_empty() {
            match BUILT_IN_MANIFEST_KEY {
                Some(built_in) if !built_in.trim().is_empty() => built_in.trim().to_owned(),
                _ => return Ok(None),
            }
        } else if let Some(path) = text.strip_prefix("file:") {
            std::fs::read_to_string(path).map_err(|source| Error::Io {
                what: format!("cannot read manifest.public_key file {path}"),
                source,
            })?
        } else {
            text.to_owned()
        };
        ManifestVerifyingKey::parse(&text)
            .map(Some)
            .map_err(|e| config_error("manifest.public_key", e.to_string()))
    }
}

impl DeclaredConfig {
    /// The rules of the report fields these values become (see
    /// [`AgentConfig::check`]); the catalog values are checked against the
    /// catalogs when the agent starts.
    fn check(&self) -> Result<(), Error> {
        if let Some(reason) = lineprobe_shared::account_problem(self.account.trim()) {
            return Err(config_error("declared.account", reason));
        }
        check_line(
            "declared.address",
            &self.address,
            ReportLimits::MAX_ADDRESS_LEN,
        )?;
        if let Some(location) = &self.location {
            for (key, value, low, high, unit) in [
                (
                    "declared.location.latitude",
                    location.latitude,
                    -90.0,
                    90.0,
                    "degrees",
                ),
                (
                    "declared.location.longitude",
                    location.longitude,
                    -180.0,
                    180.0,
                    "degrees",
                ),
                (
                    "declared.location.accuracy_m",
                    location.accuracy_m,
                    0.0,
                    ReportLimits::MAX_LOCATION_ACCURACY_M,
                    "metres",
                ),
            ] {
                // `contains` is false for NaN, which TOML can spell (`nan`).
                if !(low..=high).contains(&value) {
                    return Err(config_error(
                        key,
                        format!("is {value}; use a number of {unit} from {low} to {high}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A text that becomes a single-line report field of at most `max`
/// characters, as it is used (trimmed), held to the schema's rule.
fn check_line(key: &str, value: &str, max: usize) -> Result<(), Error> {
    match lineprobe_shared::single_line_problem(value.trim(), max) {
        Some(reason) => Err(config_error(key, reason)),
        None => Ok(()),
    }
}

impl ScheduleConfig {
    /// The schedule's rules (see [`AgentConfig::check`]).
    fn check(&self) -> Result<(), Error> {
        if self.interval_secs < 60 {
            return Err(config_error(
                "schedule.interval_secs",
                "must be at least 60: a probe is a traceroute over the subscriber's line",
            ));
        }
        // The same bounds as a manifest's schedule; far larger values would
        // also overflow the daemon's clock arithmetic.
        let (low, high) = (
            lineprobe_shared::MIN_INTERVAL_SECS,
            lineprobe_shared::MAX_INTERVAL_SECS,
        );
        if self.interval_secs > high {
            return Err(config_error(
                "schedule.interval_secs",
                format!("is {}; use at most {high} (30 days)", self.interval_secs),
            ));
        }
        if self.jitter_secs > self.interval_secs {
            return Err(config_error(
                "schedule.jitter_secs",
                format!(
                    "is {}; it may not exceed schedule.interval_secs ({})",
                    self.jitter_secs, self.interval_secs
                ),
            ));
        }
        if !(low..=high).contains(&self.manifest_check_secs) {
            return Err(config_error(
                "schedule.manifest_check_secs",
                format!(
                    "is {}; use {low} to {high} seconds (one minute to 30 days)",
                    self.manifest_check_secs
                ),
            ));
        }
        if self.retry_base_secs == 0 || self.retry_max_secs < self.retry_base_secs {
            return Err(config_error(
                "schedule.retry_base_secs",
                "must be at least 1 and not above schedule.retry_max_secs",
            ));
        }
        if self.retry_max_secs > MAX_RETRY_SECS {
            return Err(config_error(
                "schedule.retry_max_secs",
                format!(
                    "is {}; a spooled report must be retried at least every {MAX_RETRY_SECS} s \
                     (7 days)",
                    self.retry_max_secs
                ),
            ));
        }
        Ok(())
    }
}

fn config_error(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// The collector's path-pattern rules.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let Some(rest) = pattern.strip_prefix('/') else {
        return Err(format!("{pattern:?} must start with '/'"));
    };
    if pattern.len() > 200 {
        return Err(format!("{pattern:?} is longer than 200 characters"));
    }
    for segment in rest.split('/') {
        match segment {
            "" => return Err(format!("{pattern:?} has an empty segment")),
            "*" | "**" => {}
            s if s.contains('*') => {
                return Err(format!(
                    "{pattern:?}: '*' must be a whole segment, not part of {s:?}"
                ));
            }
            s if s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) => {}
            s => {
                return Err(format!(
                    "{pattern:?}: segment {s:?} may use only letters, digits and '-._~'"
                ));
            }
        }
    }
    if rest == "**" {
        return Err(format!(
            "{pattern:?} would match every path; add a literal segment"
        ));
    }
    Ok(())
}

/// Fills a path pattern with random lowercase tokens: `*` becomes one
/// segment, `**` one or two.
pub fn fill_pattern(pattern: &str, rng: &mut impl Rng) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    for segment in pattern.trim_start_matches('/').split('/') {
        match segment {
            "*" => {
                out.push('/');
                out.push_str(&token(rng));
            }
            "**" => {
                for _ in 0..rng.gen_range(1..=2) {
                    out.push('/');
                    out.push_str(&token(rng));
                }
            }
            literal => {
                out.push('/');
                out.push_str(literal);
            }
        }
    }
    out
}

fn token(rng: &mut impl Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let len = rng.gen_range(4..=12);
    (0..len)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// One endpoint ready to use: where to connect and what to claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The base URL as configured (also what reports name as the endpoint).
    pub url: reqwest::Url,
    /// TLS server name to send instead of the URL's host.
    pub sni: Option<String>,
    /// HTTP `Host` to send instead of the URL's host.
    pub host: Option<String>,
}

impl Endpoint {
    /// Checks a base URL: `https://`, a host name or IP literal, an optional
    /// port and base path, nothing else.
    pub fn parse(url: &str) -> Result<Self, Error> {
        Self::from_spec(&EndpointSpec::Url(url.to_owned()))
    }

    /// Checks a configured endpoint.
    pub fn from_spec(spec: &EndpointSpec) -> Result<Self, Error> {
        let (url, sni, host) = match spec {
            EndpointSpec::Url(url) => (url, None, None),
            EndpointSpec::Fronted { url, sni, host } => (url, sni.clone(), host.clone()),
        };
        let bad = |reason: String| config_error("endpoints.urls", format!("{url:?} {reason}"));
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("is not a URL: {e}")))?;
        if parsed.scheme() != "https" {
            return Err(bad(
                "must start with https:// (reports are only sent over TLS)".to_owned(),
            ));
        }
        if parsed.host().is_none() {
            return Err(bad("has no host".to_owned()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad("must not carry credentials".to_owned()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("must not have a query or fragment".to_owned()));
        }
        for (name, value) in [("sni", &sni), ("host", &host)] {
            if let Some(v) = value {
                let ok = !v.is_empty()
                    && v.len() <= 253
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
                if !ok {
                    return Err(bad(format!(
                        "has an invalid `{name}` {v:?}: give a host name"
                    )));
                }
            }
        }
        if sni
            .as_deref()
            .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok())
        {
            return Err(bad(
                "has an IP address as `sni`; TLS server names are host names".to_owned(),
            ));
        }
        Ok(Self {
            url: parsed,
            sni,
            host,
        })
    }

    /// The URL for `path` (which starts with `/`) under this endpoint's base.
    pub fn join(&self, path: &str) -> reqwest::Url {
        let mut url = self.url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url
    }

    /// The endpoint as reports and status name it.
    pub fn as_str(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }
}

/// What a probe runs with: the config, replaced by the manifest where it
/// says something, replaced by the command line where it says something.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Endpoints, in order.
    pub endpoints: Vec<Endpoint>,
    /// Report path patterns.
    pub path_patterns: Vec<String>,
    /// Seconds between probes.
    pub interval: Duration,
    /// Most random extra seconds per wait.
    pub jitter: Duration,
}

impl Settings {
    /// Combines the layers; `cli_endpoints` (non-empty) replaces the others.
    pub fn resolve(
        config: &AgentConfig,
        manifest: Option<&Manifest>,
        cli_endpoints: &[String],
    ) -> Result<Self, Error> {
        let mut endpoints = config
            .endpoints
            .urls
            .iter()
            .map(Endpoint::from_spec)
            .collect::<Result<Vec<_>, _>>()?;
        let mut path_patterns = config.endpoints.path_patterns.clone();
        let mut schedule = ProbeSchedule {
            interval_secs: config.schedule.interval_secs,
            jitter_secs: config.schedule.jitter_secs,
        };
        if let Some(m) = manifest {
            // A manifest endpoint that matches a configured one keeps that
            // entry's fronting settings. One this build cannot use is passed
            // over, not an error: failing here would stop every probe and
            // every manifest check, so a corrected manifest could never
            // arrive; with none usable the configured endpoints stay.
            let usable: Vec<Endpoint> = m
                .endpoints
                .iter()
                .filter_map(|url| match Endpoint::parse(url) {
                    Ok(fresh) => Some(
                        endpoints
                            .iter()
                            .find(|e| e.url == fresh.url)
                            .cloned()
                            .unwrap_or(fresh),
                    ),
                    Err(e) => {
                        tracing::warn!(serial = m.serial, error = %e, "manifest endpoint passed over");
                        None
                    }
                })
                .collect();
            if usable.is_empty() {
                tracing::warn!(
                    serial = m.serial,
                    "no endpoint of the manifest is usable; the configured endpoints stay"
                );
            } else {
                endpoints = usable;
            }
            path_patterns.clone_from(&m.path_patterns);
            schedule = m.schedule;
        }
        if !cli_endpoints.is_empty() {
            endpoints = cli_endpoints
                .iter()
                .map(|u| Endpoint::parse(u))
                .collect::<Result<_, _>>()?;
        }
        Ok(Self {
            endpoints,
            path_patterns,
            interval: Duration::from_secs(schedule.interval_secs),
            jitter: Duration::from_secs(schedule.jitter_secs),
        })
    }

    /// A random report path.
    pub fn random_path(&self, rng: &mut impl Rng) -> String {
        let index = rng.gen_range(0..self.path_patterns.len().max(1));
        self.path_patterns.get(index).map_or_else(
            || DEFAULT_PATH_PATTERNS[0].to_owned(),
            |p| fill_pattern(p, rng),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_patterns_have_no_wildcards() {
        let mut rng = rand::thread_rng();
        for pattern in DEFAULT_PATH_PATTERNS {
            for _ in 0..50 {
                let path = fill_pattern(pattern, &mut rng);
                assert!(!path.contains('*') && !path.contains("//"), "{path}");
                assert!(path.starts_with('/'), "{path}");
            }
        }
        assert_eq!(fill_pattern("/api/v1/report", &mut rng), "/api/v1/report");
    }

    /// A manifest endpoint this build cannot parse is passed over; with no
    /// usable one the configured endpoints stay (an error here would stop
    /// probes and manifest checks until the manifest expired).
    #[test]
    fn unusable_manifest_endpoints_are_passed_over() {
        let mut config = AgentConfig::default();
        config.endpoints.urls = vec![EndpointSpec::Url(
            "https://configured.example.net".to_owned(),
        )];
        let now = chrono::Utc::now();
        let mut manifest = lineprobe_shared::Manifest {
            serial: 7,
            issued_at: now,
            expires_at: now + chrono::Duration::days(1),
            endpoints: vec![
                "https://collector.example.net.8443".to_owned(),
                "https://good.example.net".to_owned(),
            ],
            path_patterns: vec!["/api/v1/report".to_owned()],
            schedule: lineprobe_shared::ProbeSchedule {
                interval_secs: 600,
                jitter_secs: 0,
            },
            catalog_versions: std::collections::BTreeMap::default(),
            latest_agent: None,
        };
        let urls = |m: &lineprobe_shared::Manifest| -> Vec<String> {
            Settings::resolve(&config, Some(m), &[])
                .expect("settings")
                .endpoints
                .iter()
                .map(|e| e.url.to_string())
                .collect()
        };
        assert_eq!(urls(&manifest), ["https://good.example.net/"]);
        manifest.endpoints.truncate(1);
        assert_eq!(urls(&manifest), ["https://configured.example.net/"]);
    }

    #[test]
    fn endpoint_rules() {
        assert!(Endpoint::parse("https://203.0.113.7:8443").is_ok());
        assert!(Endpoint::parse("https://[2001:db8::7]").is_ok());
        let base = Endpoint::parse("https://c.example.net/lp/").expect("base path");
        assert_eq!(
            base.join("/api/v1/report").as_str(),
            "https://c.example.net/lp/api/v1/report"
        );
        for bad in [
            "http://c.example.net",
            "https://u:p@c.example.net",
            "https://c.example.net/?q",
            "nope",
        ] {
            let err = Endpoint::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("endpoints.urls"), "{err}");
        }
    }

    #[test]
    fn signing_paths_are_checked() {
        let e = AgentConfig::from_toml("[signing]\nenrol_patterns = []\n", "t").expect_err("empty");
        assert!(e.to_string().contains("signing.enrol_patterns"), "{e}");
        let e = AgentConfig::from_toml("[signing]\nenrol_patterns = [\"enrol\"]\n", "t")
            .expect_err("relative");
        assert!(e.to_string().contains("must start with '/'"), "{e}");
        let e = AgentConfig::from_toml("[signing]\nenabeld = true\n", "t").expect_err("typo");
        assert!(e.to_string().contains("enabeld"), "{e}");
        AgentConfig::from_toml("[signing]\nenabled = false\nenrol_patterns = []\n", "t")
            .expect("signing off needs no paths");
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["api", "/a//b", "/a*/b", "/**", "/a b"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }
}
