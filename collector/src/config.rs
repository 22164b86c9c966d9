//! The collector's configuration: TOML, overridden by environment variables
//! and then by command-line flags, validated in one place.
//!
//! Every key has a default, so `serve` runs with no file at all. Unknown keys
//! are errors (a typo must not silently fall back to a default on an
//! internet-facing server), and every message names the key and what to write.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Prefix of the environment variables that override configuration keys:
/// `LINEPROBE_COLLECTOR__PUBLIC__LISTEN=0.0.0.0:443` sets `public.listen`.
pub const ENV_PREFIX: &str = "LINEPROBE_COLLECTOR__";

/// The export token may also come from this variable (it wins over the file),
/// so that it need not be written into a config file.
pub const EXPORT_TOKEN_ENV: &str = "LINEPROBE_EXPORT_TOKEN";

/// Room kept under the schema's report size for what the receiver adds.
///
/// The staging store refuses a report whose stored form — the probe's JSON
/// with the envelope appended — is above `ReportLimits::MAX_REPORT_BYTES`
/// (413 `too_large`, which a probe takes as final). The envelope is at most
/// about 16 KiB: six recorded headers of at most 512 characters each (at
/// most 2 KiB each as JSON, control characters having become spaces), a
/// path of at most 256 characters, the TLS server name, the node id and
/// the trust at arrival. A body that cannot be extended in place is
/// encoded again, which can grow it a little (`1` becomes `1.0`). 64 KiB
/// covers both with room to spare.
pub const ENVELOPE_ALLOWANCE_BYTES: usize = 64 * 1024;

/// Largest `limits.max_decompressed_bytes`: every report ingest lets
/// through then fits the store with its envelope.
pub const MAX_DECOMPRESSED_BYTES: usize =
    lineprobe_shared::ReportLimits::MAX_REPORT_BYTES - ENVELOPE_ALLOWANCE_BYTES;

/// Largest `limits.max_connections` and `limits.max_concurrent_requests`:
/// far beyond what one node serves, and far below what the semaphores
/// that count them can hold (`tokio::sync::Semaphore::new` panics above
/// `usize::MAX >> 3`).
pub const MAX_CONCURRENCY: usize = 1_000_000;

/// Largest `tls.reload_check_secs`: a day. A longer period only delays a
/// rotated certificate (SIGHUP reloads at once anyway), and one near the
/// integer limit is past any deadline a timer can hold (`Instant`
/// arithmetic overflows; Tokio 1.54's interval quietly cuts the period to
/// about 30 years): the files would silently never be checked again.
pub const MAX_RELOAD_CHECK_SECS: u64 = 86_400;

/// Largest `shutdown.grace_secs`: an hour. A longer grace period has no use
/// (requests are bounded by `limits.request_timeout_ms`), and one beyond
/// what a timer deadline can hold would never cut a stuck connection.
pub const MAX_SHUTDOWN_GRACE_SECS: u64 = 3_600;

/// Largest `staging.full_retry_after_secs`: a day.
pub const MAX_RETRY_AFTER_SECS: u64 = 86_400;

/// Smallest `limits.max_header_bytes`. hyper's read buffer never goes
/// below its own minimum of 8192 bytes (`http1::Builder::max_buf_size`
/// panics under it, so the listener lifts the buffer to it); a smaller
/// limit is enforced on the parsed head, with 431.
pub const MIN_HEADER_BYTES: usize = 1024;

/// Largest `limits.max_header_bytes`: the value is also hyper's per-connection
/// buffer limit, so a typo must not let every connection buffer megabytes.
/// A probe's request head is well under 4 KiB; this leaves room for what
/// proxies add.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The whole collector configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// This node's name, written into every report's envelope (`node_id`) and
    /// checked on acknowledgements. Empty: the host name.
    pub node_id: String,
    /// Folder for the staging database, the generated certificate and state.
    pub data_dir: PathBuf,
    /// The public listener, for probes.
    pub public: PublicConfig,
    /// The export listener, for the internal puller.
    pub export: ExportConfig,
    /// The server certificate shared by both listeners.
    pub tls: TlsConfig,
    /// Size limits, timeouts and concurrency.
    pub limits: LimitsConfig,
    /// The staging store.
    pub staging: StagingConfig,
    /// The signed probe manifest.
    pub manifest: ManifestConfig,
    /// Signed probes: enrolment and signature checks.
    pub signing: crate::SigningConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Logging.
    pub log: LogConfig,
    /// Traffic accounting, anomalies and budgets.
    pub traffic: crate::TrafficConfig,
    /// Trust scores.
    pub trust: crate::TrustConfig,
    /// Set by `--plain-http` (local testing): it stands in for the reverse
    /// proxy, so `public.trusted_proxies` may stay empty. Never read from a
    /// file.
    #[serde(skip)]
    pub local_testing: bool,
}

/// The public listener: where probes send reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublicConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Serve plain HTTP instead of HTTPS. Allowed only together with
    /// `behind_proxy = true` (a TLS-terminating reverse proxy in front), or
    /// with `--plain-http` for local testing.
    pub plain_http: bool,
    /// A trusted reverse proxy terminates TLS in front of this listener.
    pub behind_proxy: bool,
    /// Path patterns on which reports are accepted (`POST`). `*` matches one
    /// path segment, `**` any number of segments. Probes pick among them at
    /// random so that a meddling gateway does not see one fixed URL.
    pub paths: Vec<String>,
    /// Socket peers whose PROXY protocol header or `X-Forwarded-For` /
    /// `X-Real-IP` headers are believed. From anyone else these headers are
    /// recorded but never used for the egress address.
    pub trusted_proxies: Vec<IpNet>,
    /// Expect a PROXY protocol (v1 or v2) header on connections from
    /// `trusted_proxies`.
    pub proxy_protocol: bool,
}

/// The export listener: where the internal side pulls and acknowledges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// Address and port to listen on; bind it to an interface the internet
    /// cannot reach.
    pub listen: SocketAddr,
    /// Serve plain HTTP (local testing only).
    pub plain_http: bool,
    /// Bearer token the puller must present; also `LINEPROBE_EXPORT_TOKEN`.
    /// At least 32 characters. Empty disables the export API (every request
    /// answers 401), which is the safe default.
    pub token: String,
    /// PEM file of CA certificates: when set, the export listener requires a
    /// client certificate signed by one of them, in addition to the token.
    pub client_ca: Option<PathBuf>,
    /// Most reports one `GET /export` returns.
    pub max_batch: usize,
}

/// The server certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain. With `key`; without both, a self-signed
    /// certificate is generated into `data_dir/tls/` on first start.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Host names (and addresses) for the generated self-signed certificate.
    pub self_signed_names: Vec<String>,
    /// How often the files are checked for changes, in seconds, 1 to
    /// [`MAX_RELOAD_CHECK_SECS`] (they are also reloaded on SIGHUP).
    pub reload_check_secs: u64,
}

/// Limits: sizes, timeouts and concurrency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted, as sent (possibly gzip), in bytes.
    pub max_body_bytes: usize,
    /// Largest report after gzip decompression, in bytes.
    pub max_decompressed_bytes: usize,
    /// Largest total size of the request head (line and headers), in bytes,
    /// [`MIN_HEADER_BYTES`] to [`MAX_HEADER_BYTES`]; also what hyper may
    /// buffer per connection (at least its own minimum, 8192).
    pub max_header_bytes: usize,
    /// Time allowed to receive the whole request head, in milliseconds: a
    /// slowloris client is cut off after it.
    pub header_read_timeout_ms: u64,
    /// Time allowed for a whole request, body and storage included, in ms.
    pub request_timeout_ms: u64,
    /// Time allowed for the TLS handshake, in milliseconds.
    pub tls_handshake_timeout_ms: u64,
    /// Time an idle keep-alive connection is kept, in milliseconds.
    pub idle_timeout_ms: u64,
    /// Most open connections per listener; more are refused at accept.
    pub max_connections: usize,
    /// Most open connections per listener from one source prefix (IPv4
    /// /24, IPv6 /56; behind a PROXY-protocol proxy, the client's): one
    /// source cannot take every connection (above `max_connections` it
    /// adds nothing).
    pub max_connections_per_prefix: usize,
    /// Most requests handled at once on the public listener; beyond it
    /// requests are shed with 503 and `Retry-After` rather than queued.
    pub max_concurrent_requests: usize,
}

/// The staging store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StagingConfig {
    /// Most reports kept unacknowledged; beyond it ingest answers 503 with
    /// `Retry-After` until the puller catches up.
    pub max_reports: u64,
    /// Acknowledged reports are deleted after this many hours (at least 1:
    /// their ids are remembered for one more period, so that a late retry
    /// is answered `duplicate`).
    pub retention_hours: u64,
    /// Most reports committed in one transaction (group commit).
    pub group_commit_max: usize,
    /// The longest a commit is held back for more reports to join it, in
    /// microseconds from its first report; 0 commits whatever is queued
    /// once the previous commit is on disk.
    pub group_commit_wait_us: u64,
    /// The wait ends earlier once no report has arrived for this many
    /// microseconds; 0 makes every commit wait the whole
    /// `group_commit_wait_us`.
    pub group_commit_gap_us: u64,
    /// `Retry-After` seconds sent with 503 when staging is full, 1 to
    /// [`MAX_RETRY_AFTER_SECS`].
    pub full_retry_after_secs: u64,
}

/// The signed probe manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManifestConfig {
    /// Ed25519 public key (base64 of the 32 raw bytes, or a PEM file path
    /// prefixed with `file:`) that published manifests must be signed with.
    /// Empty: publishing is refused.
    pub public_key: String,
}

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Time in-flight requests get to finish after SIGTERM, in seconds, 0 to
    /// [`MAX_SHUTDOWN_GRACE_SECS`].
    pub grace_secs: u64,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `lineprobe_collector=debug`; the
    /// `RUST_LOG` variable wins when set.
    pub filter: String,
    /// Write logs as JSON lines instead of text.
    pub json: bool,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            data_dir: PathBuf::from("lineprobe-collector-data"),
            public: PublicConfig::default(),
            export: ExportConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            staging: StagingConfig::default(),
            manifest: ManifestConfig::default(),
            signing: crate::SigningConfig::default(),
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
            traffic: crate::TrafficConfig::default(),
            trust: crate::TrustConfig::default(),
            local_testing: false,
        }
    }
}

impl Default for PublicConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            plain_http: false,
            behind_proxy: false,
            paths: vec![
                "/api/v1/report".to_owned(),
                "/api/v1/*/report".to_owned(),
                "/static/*/upload".to_owned(),
                "/cdn/**/collect".to_owned(),
            ],
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
        }
    }
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9443)),
            plain_http: false,
            token: String::new(),
            client_ca: None,
            max_batch: 1000,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            self_signed_names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            reload_check_secs: 10,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_decompressed_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            header_read_timeout_ms: 5_000,
            request_timeout_ms: 15_000,
            tls_handshake_timeout_ms: 5_000,
            idle_timeout_ms: 30_000,
            max_connections: 2_048,
            max_connections_per_prefix: 256,
            max_concurrent_requests: 512,
        }
    }
}

impl Default for StagingConfig {
    fn default() -> Self {
        Self {
            max_reports: 1_000_000,
            retention_hours: 72,
            group_commit_max: 512,
            // A commit lingers while reports keep coming (gaps under 150 µs),
            // for at most 1 ms: under load that halves the commits and syncs
            // and their CPU; a lone report waits 150 µs more at most. A
            // fixed wait instead held a small closed group of clients idle
            // and cut their rate by 40 % in the ingest benchmark.
            group_commit_wait_us: 1000,
            group_commit_gap_us: 150,
            full_retry_after_secs: 60,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_secs: 10 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            json: false,
        }
    }
}

/// Command-line flags that override the configuration (`serve`'s options).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--export-listen`.
    pub export_listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--plain-http`: both listeners without TLS, for local testing.
    pub plain_http: bool,
}

impl CollectorConfig {
    /// Reads `path` (or starts from the defaults when `None`), applies
    /// `LINEPROBE_COLLECTOR__…` and `LINEPROBE_EXPORT_TOKEN` from `env`, then
    /// the command-line `overrides`, and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, Error> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| Error::ConfigFile {
                path: p.display().to_string(),
                source,
            })?,
            None => String::new(),
        };
        let origin = path.map_or_else(
            || "embedded defaults".to_owned(),
            |p| p.display().to_string(),
        );
        Self::from_toml_with_env(&text, &origin, env, overrides)
    }

    /// Like [`CollectorConfig::load`] from TOML text; `origin` names it in
    /// error messages.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, Error> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Config {
            key: origin.to_owned(),
            reason: format!("not valid TOML: {}", e.message()),
        })?;
        let mut token_from_env = None;
        for (name, value) in env {
            if name == EXPORT_TOKEN_ENV {
                token_from_env = Some(value);
            } else if let Some(path) = name.strip_prefix(ENV_PREFIX) {
                let example = format!("{ENV_PREFIX}PUBLIC__LISTEN");
                lineprobe_shared::apply_env_override(&mut table, &name, path, &value, &example)?;
            }
        }
        let mut config: Self =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| Error::Config {
                    key: origin.to_owned(),
                    reason: format!(
                        "{} (see config/collector.example.toml for every key)",
                        e.message()
                    ),
                })?;
        if let Some(token) = token_from_env {
            config.export.token = token;
        }
        if let Some(listen) = overrides.listen {
            config.public.listen = listen;
        }
        if let Some(listen) = overrides.export_listen {
            config.export.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir.clone_from(dir);
        }
        if overrides.plain_http {
            config.public.plain_http = true;
            config.export.plain_http = true;
            // --plain-http is the explicit local-testing switch; it stands in
            // for the reverse proxy the file would otherwise have to name.
            config.public.behind_proxy = true;
            config.local_testing = true;
        }
        if config.node_id.is_empty() {
            config.node_id = default_node_id();
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule that types alone cannot, in one place.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, reason: String| {
            Err(Error::Config {
                key: key.to_owned(),
                reason,
            })
        };
        if !valid_node_id(&self.node_id) {
            return bad(
                "node_id",
                format!(
                    "{:?} is not a node name: use 1 to 64 letters, digits, '-', '_' or '.'",
                    self.node_id
                ),
            );
        }
        if self.public.plain_http && !self.public.behind_proxy {
            return bad(
                "public.plain_http",
                "plain HTTP on the public listener is allowed only behind a TLS-terminating \
                 reverse proxy: set public.behind_proxy = true (and list it in \
                 public.trusted_proxies), or remove public.plain_http"
                    .to_owned(),
            );
        }
        if self.public.behind_proxy && self.public.trusted_proxies.is_empty() && !self.local_testing
        {
            return bad(
                "public.trusted_proxies",
                "public.behind_proxy = true, but no proxy is listed: every connection comes \
                 from the proxy, so every report would record the proxy's address as its \
                 egress. List the proxy's address (e.g. [\"10.0.0.5/32\"]) so that its \
                 X-Forwarded-For or PROXY header is believed, or use --plain-http for local \
                 testing"
                    .to_owned(),
            );
        }
        // Port 0 asks the system for a free port, so two of them never clash.
        if self.public.listen == self.export.listen && self.public.listen.port() != 0 {
            return bad(
                "export.listen",
                format!(
                    "the export listener must not share the public listener's address {}; \
                     bind it to an internal interface such as 127.0.0.1:9443",
                    self.public.listen
                ),
            );
        }
        if self.public.paths.is_empty() {
            return bad(
                "public.paths",
                "list at least one path pattern, e.g. \"/api/v1/report\"".to_owned(),
            );
        }
        for (i, p) in self.public.paths.iter().enumerate() {
            if let Err(reason) = crate::PathPattern::parse(p) {
                return bad(&format!("public.paths[{i}]"), reason);
            }
        }
        let report_paths =
            crate::PathSet::parse(&self.public.paths).map_err(|reason| Error::Config {
                key: "public.paths".to_owned(),
                reason,
            })?;
        self.signing.validate(&report_paths)?;
        if self.public.proxy_protocol && self.public.trusted_proxies.is_empty() {
            return bad(
                "public.proxy_protocol",
                "the PROXY protocol is only read from trusted proxies: list them in \
                 public.trusted_proxies"
                    .to_owned(),
            );
        }
        if !self.export.token.is_empty() && self.export.token.chars().count() < 32 {
            return bad(
                "export.token",
                "the export token must be at least 32 characters (e.g. `openssl rand -hex 32`)"
                    .to_owned(),
            );
        }
        if self.export.max_batch == 0 || self.export.max_batch > 10_000 {
            return bad("export.max_batch", "use a value from 1 to 10000".to_owned());
        }
        // Read here, not only when the export API starts, so that
        // check-config refuses the key that serve would refuse.
        crate::load_manifest_key(&self.manifest)?;
        self.validate_tls_and_limits()?;
        self.traffic.validate()?;
        self.trust.validate()
    }

    /// The TLS, limits, staging and shutdown half of
    /// [`CollectorConfig::validate`] (the last two in
    /// [`CollectorConfig::validate_staging_and_shutdown`]).
    fn validate_tls_and_limits(&self) -> Result<(), Error> {
        let bad = |key: &str, reason: String| {
            Err(Error::Config {
                key: key.to_owned(),
                reason,
            })
        };
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad(
                "tls.cert",
                "set both tls.cert and tls.key (PEM files), or neither to use a generated \
                 self-signed certificate"
                    .to_owned(),
            );
        }
        if !(1..=MAX_RELOAD_CHECK_SECS).contains(&self.tls.reload_check_secs) {
            return bad(
                "tls.reload_check_secs",
                format!(
                    "{} s is out of range: use 1 to {MAX_RELOAD_CHECK_SECS} (a day); the \
                     files are also reloaded at once on SIGHUP, so a rotated certificate \
                     need not wait for the check (10, the default, is a good start)",
                    self.tls.reload_check_secs
                ),
            );
        }
        let l = &self.limits;
        for (key, value, min) in [
            ("limits.max_body_bytes", l.max_body_bytes, 1024),
            (
                "limits.max_decompressed_bytes",
                l.max_decompressed_bytes,
                1024,
            ),
            ("limits.max_connections", l.max_connections, 1),
            (
                "limits.max_connections_per_prefix",
                l.max_connections_per_prefix,
                1,
            ),
            (
                "limits.max_concurrent_requests",
                l.max_concurrent_requests,
                1,
            ),
        ] {
            if value < min {
                return bad(key, format!("{value} is too small: use at least {min}"));
            }
        }
        l.check_upper_bounds()?;
        for (key, value) in [
            ("limits.header_read_timeout_ms", l.header_read_timeout_ms),
            ("limits.request_timeout_ms", l.request_timeout_ms),
            (
                "limits.tls_handshake_timeout_ms",
                l.tls_handshake_timeout_ms,
            ),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
        ] {
            if !(10..=600_000).contains(&value) {
                return bad(key, format!("{value} ms is out of range: use 10 to 600000"));
            }
        }
        self.validate_staging_and_shutdown()
    }

    /// The staging and shutdown part of [`CollectorConfig::validate`].
    fn validate_staging_and_shutdown(&self) -> Result<(), Error> {
        let bad = |key: &str, reason: String| {
            Err(Error::Config {
                key: key.to_owned(),
                reason,
            })
        };
        if self.staging.max_reports == 0 {
            return bad("staging.max_reports", "use at least 1".to_owned());
        }
        if self.staging.group_commit_max == 0 {
            return bad("staging.group_commit_max", "use at least 1".to_owned());
        }
        if self.staging.retention_hours == 0 {
            return bad(
                "staging.retention_hours",
                "use at least 1 (72, the default, is a good start): an acknowledged report's \
                 id is remembered for one more retention period so that a probe's late retry \
                 is answered `duplicate`; with 0 it is forgotten within minutes and the \
                 retry is stored and exported a second time"
                    .to_owned(),
            );
        }
        if !(1..=MAX_RETRY_AFTER_SECS).contains(&self.staging.full_retry_after_secs) {
            return bad(
                "staging.full_retry_after_secs",
                format!(
                    "{} s is out of range: use 1 to {MAX_RETRY_AFTER_SECS} (a day); 0 would \
                     tell probes to retry a full store at once (60, the default, is a good \
                     start)",
                    self.staging.full_retry_after_secs
                ),
            );
        }
        if self.staging.group_commit_wait_us > 100_000 {
            return bad(
                "staging.group_commit_wait_us",
                "waiting more than 100000 µs for a commit only adds latency".to_owned(),
            );
        }
        if self.staging.group_commit_gap_us > 100_000 {
            return bad(
                "staging.group_commit_gap_us",
                "use at most 100000 µs, or 0 to always wait group_commit_wait_us".to_owned(),
            );
        }
        if self.shutdown.grace_secs > MAX_SHUTDOWN_GRACE_SECS {
            return bad(
                "shutdown.grace_secs",
                format!(
                    "{} s is out of range: use 0 to {MAX_SHUTDOWN_GRACE_SECS} (an hour); \
                     in-flight requests are bounded by limits.request_timeout_ms anyway, \
                     and a grace period beyond what a timer can hold would never cut a \
                     stuck connection, so the shutdown would never end",
                    self.shutdown.grace_secs
                ),
            );
        }
        Ok(())
    }

    /// Time allowed to receive a request head.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.header_read_timeout_ms)
    }

    /// Time allowed for a whole request.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.request_timeout_ms)
    }

    /// Time allowed for a TLS handshake.
    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.tls_handshake_timeout_ms)
    }

    /// Time an idle connection is kept.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.idle_timeout_ms)
    }

    /// Grace period for in-flight work at shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown.grace_secs)
    }

    /// The staging database file.
    pub fn staging_path(&self) -> PathBuf {
        self.data_dir.join("staging.sqlite3")
    }
}

impl LimitsConfig {
    /// The upper bounds of the limits, checked by [`CollectorConfig::validate`].
    fn check_upper_bounds(&self) -> Result<(), Error> {
        let bad = |key: &str, reason: String| {
            Err(Error::Config {
                key: key.to_owned(),
                reason,
            })
        };
        let l = self;
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&l.max_header_bytes) {
            return bad(
                "limits.max_header_bytes",
                format!(
                    "{} bytes is out of range: use {MIN_HEADER_BYTES} to {MAX_HEADER_BYTES}; \
                     it bounds the request line and headers, and what each connection may \
                     buffer for them (a probe's request head is well under 4096 bytes; \
                     16384, the default, leaves room for what proxies add)",
                    l.max_header_bytes
                ),
            );
        }
        let most = lineprobe_shared::ReportLimits::MAX_REPORT_BYTES;
        if l.max_body_bytes > most {
            return bad(
                "limits.max_body_bytes",
                format!(
                    "{} bytes is above the largest report the schema allows: use at most {most}",
                    l.max_body_bytes
                ),
            );
        }
        if l.max_decompressed_bytes > MAX_DECOMPRESSED_BYTES {
            return bad(
                "limits.max_decompressed_bytes",
                format!(
                    "{} bytes is above the largest report that can be stored: the receiver's \
                     envelope needs room under the schema's {most}-byte limit, and a report \
                     that leaves none would be refused as too large after being read (the \
                     probe then drops it); use at most {MAX_DECOMPRESSED_BYTES}",
                    l.max_decompressed_bytes
                ),
            );
        }
        for (key, value) in [
            ("limits.max_connections", l.max_connections),
            (
                "limits.max_connections_per_prefix",
                l.max_connections_per_prefix,
            ),
            ("limits.max_concurrent_requests", l.max_concurrent_requests),
        ] {
            if value > MAX_CONCURRENCY {
                return bad(
                    key,
                    format!(
                        "{value} is out of range: use 1 to {MAX_CONCURRENCY} (no machine \
                         serves more at once; the default is a good start)"
                    ),
                );
            }
        }
        Ok(())
    }
}

fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The host name, cleaned into a valid node id, or `collector`.
fn default_node_id() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "collector".to_owned()
    } else {
        cleaned
    }
}
