//! The signed probe manifest: what the internal side tells every probe to do
//! (where to report, on which paths, how often, which catalogs and agent
//! release are current), signed with Ed25519 so that neither the collector
//! that serves it nor anything on the way can change it.
//!
//! The wire form, [`SignedManifest`], carries the manifest as the exact JSON
//! bytes that were signed (base64 encoded). Verifying those bytes rather than
//! a re-serialised value means there is no canonical form to agree on: what
//! was signed is what is parsed.
//!
//! Who checks what:
//! - the collector verifies the signature against its configured public key
//!   and refuses a serial that is not newer than the one it holds;
//! - a probe does the same through [`accept_update`], and also refuses an
//!   expired manifest, so that a replayed old manifest changes nothing, and
//!   one issued more than [`MAX_ISSUED_AHEAD_SECS`] ahead of its clock, so
//!   that a future-dated manifest cannot stretch the validity limit.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Violations};

/// Largest manifest JSON (the signed payload) accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// Largest [`SignedManifest`] JSON document accepted, in bytes: the base64
/// payload (4/3 of [`MAX_MANIFEST_BYTES`]) plus signature and key id.
pub const MAX_SIGNED_MANIFEST_BYTES: usize = 96 * 1024;

/// Most endpoints one manifest may list.
pub const MAX_MANIFEST_ENDPOINTS: usize = 16;

/// Most path patterns one manifest may list.
pub const MAX_MANIFEST_PATH_PATTERNS: usize = 32;

/// Longest URL (endpoint or download) accepted, in characters.
const MAX_URL_LEN: usize = 2048;

/// Longest path pattern, in characters (the collector's own limit).
const MAX_PATTERN_LEN: usize = 200;

/// Most catalog entries in `catalog_versions`.
const MAX_CATALOGS: usize = 32;

/// Shortest and longest probe interval, in seconds: once a minute at most
/// (a probe run is a traceroute; more would be abuse of the subscriber's
/// line), once every 30 days at least.
pub const MIN_INTERVAL_SECS: u64 = 60;
/// See [`MIN_INTERVAL_SECS`].
pub const MAX_INTERVAL_SECS: u64 = 30 * 86_400;

/// Longest validity (`expires_at - issued_at`): a manifest that never
/// expires could be replayed forever to a probe that has lost its state.
const MAX_VALIDITY_DAYS: i64 = 400;

/// How far ahead of the checking clock a manifest's `issued_at` may be
/// (clock skew between the signer and a probe or collector): one day. A
/// manifest issued later than that is not valid yet; accepting it would let
/// `issued_at` in the future push `expires_at` past the longest validity
/// (400 days) from now, so that it could be replayed for years.
pub const MAX_ISSUED_AHEAD_SECS: i64 = 86_400;

/// What probes are told to do. Published signed, as a [`SignedManifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Strictly increasing with every published manifest; a manifest whose
    /// serial is not above the current one is refused. Starts at 1.
    pub serial: u64,
    /// When it was signed.
    pub issued_at: DateTime<Utc>,
    /// After this instant probes refuse it and keep what they have.
    pub expires_at: DateTime<Utc>,
    /// Collector base URLs, tried in order: `https://` only; host names or
    /// IP literals (`https://203.0.113.7:8443`, `https://[2001:db8::7]`).
    pub endpoints: Vec<String>,
    /// Report paths a probe picks from, in the collector's pattern syntax:
    /// literal segments, `*` for one segment, `**` for any number.
    pub path_patterns: Vec<String>,
    /// How often probes run.
    pub schedule: ProbeSchedule,
    /// Current version of each catalog, by catalog name (`carriers`, …).
    /// A name given twice is refused (JSON readers disagree on which wins).
    #[serde(default, deserialize_with = "unique_catalogs")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub catalog_versions: BTreeMap<String, String>,
    /// The newest agent release, when probes should update themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_agent: Option<AgentRelease>,
}

/// `catalog_versions` as an object whose names are all different: the
/// signed bytes must mean one thing to every reader, and JSON readers
/// differ on a repeated name (the first or the last wins, or it is an
/// error), as serde already refuses a repeated field of the manifest.
fn unique_catalogs<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Unique;

    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of catalog names and versions")
        }

        fn visit_map<A>(self, mut map: A) -> Result<Self::Value, A::Error>
        where
            A: serde::de::MapAccess<'de>,
        {
            let mut found = BTreeMap::new();
            while let Some((name, version)) = map.next_entry::<String, String>()? {
                if found.contains_key(&name) {
                    return Err(serde::de::Error::custom(format_args!(
                        "catalog {} is named twice",
                        shown(&name)
                    )));
                }
                found.insert(name, version);
            }
            Ok(found)
        }
    }

    deserializer.deserialize_map(Unique)
}

/// How often probes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeSchedule {
    /// Seconds between runs (60 to 2 592 000, i.e. 30 days).
    pub interval_secs: u64,
    /// Up to this many seconds are added at random to each wait, so that
    /// probes do not all run at once; at most `interval_secs`.
    pub jitter_secs: u64,
}

/// An agent release probes may update to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRelease {
    /// The release's version (`1.4.0`).
    pub version: String,
    /// Where to download it: `https://` only.
    pub url: String,
    /// SHA-256 of the download, 64 lowercase hex digits; probes refuse a
    /// download that does not match.
    pub sha256: String,
}

/// Why a manifest (or a manifest key) was refused, for callers that answer
/// differently to each: the collector maps them to HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ManifestFault {
    /// The signed envelope is not well-formed: not JSON, bad base64, wrong
    /// signature length, too large.
    Malformed,
    /// Its key id names another key than the configured one.
    UnknownKey,
    /// The signature does not verify: forged or altered.
    BadSignature,
    /// Correctly signed, but the payload is not a valid manifest.
    Invalid,
    /// Its serial is not newer than the current manifest's.
    NotNewer,
    /// It has expired.
    Expired,
    /// It was issued later than the checking clock allows
    /// ([`MAX_ISSUED_AHEAD_SECS`]): not valid yet.
    NotYetValid,
    /// A signing or public key could not be read.
    Key,
}

fn fault(fault: ManifestFault, reason: impl Into<String>) -> Error {
    Error::Manifest {
        fault,
        reason: reason.into(),
    }
}

impl Manifest {
    /// Decodes and validates manifest JSON (the signed payload).
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(fault(
                ManifestFault::Invalid,
                format!(
                    "the manifest is {} bytes; at most {MAX_MANIFEST_BYTES} bytes are accepted",
                    bytes.len()
                ),
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let manifest: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let at = if path == "." {
                String::new()
            } else {
                format!(" at `{path}`")
            };
            fault(
                ManifestFault::Invalid,
                format!("the payload is not a valid manifest{at}: {inner}"),
            )
        })?;
        de.end().map_err(|e| {
            fault(
                ManifestFault::Invalid,
                format!("the payload has data after the manifest object: {e}"),
            )
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The compact JSON that gets signed.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        Ok(serde_json::to_vec(self)?)
    }

    /// `Ok(())` when every rule holds, else all violations as
    /// [`Error::Manifest`] with [`ManifestFault::Invalid`].
    pub fn validate(&self) -> Result<(), Error> {
        let found = self.violations();
        if found.is_empty() {
            Ok(())
        } else {
            Err(fault(
                ManifestFault::Invalid,
                format!("the manifest breaks its rules: {found}"),
            ))
        }
    }

    /// True once `now` has reached `expires_at`.
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// True while `now` is more than [`MAX_ISSUED_AHEAD_SECS`] before
    /// `issued_at`: the manifest is not valid yet (or that clock is wrong).
    pub fn is_not_yet_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.issued_at - now > Duration::seconds(MAX_ISSUED_AHEAD_SECS)
    }

    /// Every rule the manifest breaks, in field order.
    pub fn violations(&self) -> Violations {
        let mut found = Violations::default();
        if self.serial == 0 {
            found.push("serial", "must be at least 1 (0 means \"no manifest yet\")");
        } else if i64::try_from(self.serial).is_err() {
            // Collectors and the internal database keep serials as signed
            // 64-bit integers: a larger one could be followed by probes but
            // never published or stored.
            found.push("serial", format!("must be at most {}", i64::MAX));
        }
        if self.expires_at <= self.issued_at {
            found.push("expires_at", "must be later than issued_at");
        } else if self.expires_at - self.issued_at > Duration::days(MAX_VALIDITY_DAYS) {
            found.push(
                "expires_at",
                format!(
                    "is more than {MAX_VALIDITY_DAYS} days after issued_at; publish a new \
                     manifest before then instead"
                ),
            );
        }
        check_endpoints(&self.endpoints, &mut found);
        check_patterns(&self.path_patterns, &mut found);
        check_schedule(self.schedule, &mut found);
        check_catalogs(&self.catalog_versions, &mut found);
        if let Some(release) = &self.latest_agent {
            check_release(release, &mut found);
        }
        found
    }
}

fn check_endpoints(endpoints: &[String], found: &mut Violations) {
    if endpoints.is_empty() {
        found.push(
            "endpoints",
            "list at least one collector URL, e.g. \"https://collector.example.net\"",
        );
    }
    if endpoints.len() > MAX_MANIFEST_ENDPOINTS {
        found.push(
            "endpoints",
            format!(
                "lists {}; at most {MAX_MANIFEST_ENDPOINTS} are accepted",
                endpoints.len()
            ),
        );
    }
    let mut seen = HashSet::new();
    for (i, url) in endpoints.iter().enumerate().take(MAX_MANIFEST_ENDPOINTS) {
        let field = format!("endpoints[{i}]");
        if let Some(problem) = https_url_problem(url, UrlUse::Endpoint) {
            found.push(field, problem);
        } else if !seen.insert(url.as_str()) {
            found.push(field, "is listed twice");
        }
    }
}

fn check_patterns(patterns: &[String], found: &mut Violations) {
    if patterns.is_empty() {
        found.push(
            "path_patterns",
            "list at least one path pattern, e.g. \"/api/v1/report\"",
        );
    }
    if patterns.len() > MAX_MANIFEST_PATH_PATTERNS {
        found.push(
            "path_patterns",
            format!(
                "lists {}; at most {MAX_MANIFEST_PATH_PATTERNS} are accepted",
                patterns.len()
            ),
        );
    }
    for (i, pattern) in patterns.iter().enumerate().take(MAX_MANIFEST_PATH_PATTERNS) {
        if let Some(problem) = pattern_problem(pattern) {
            found.push(format!("path_patterns[{i}]"), problem);
        }
    }
}

fn check_schedule(schedule: ProbeSchedule, found: &mut Violations) {
    if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&schedule.interval_secs) {
        found.push(
            "schedule.interval_secs",
            format!(
                "is {}; use {MIN_INTERVAL_SECS} to {MAX_INTERVAL_SECS} seconds (one minute to \
                 30 days)",
                schedule.interval_secs
            ),
        );
    }
    if schedule.jitter_secs > schedule.interval_secs {
        found.push(
            "schedule.jitter_secs",
            format!(
                "is {}; it may not exceed interval_secs ({})",
                schedule.jitter_secs, schedule.interval_secs
            ),
        );
    }
}

fn check_catalogs(catalogs: &BTreeMap<String, String>, found: &mut Violations) {
    if catalogs.len() > MAX_CATALOGS {
        found.push(
            "catalog_versions",
            format!(
                "names {} catalogs; at most {MAX_CATALOGS} are accepted",
                catalogs.len()
            ),
        );
        return;
    }
    for (name, version) in catalogs {
        let name_ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            found.push(
                format!("catalog_versions.{}", shown(name)),
                "catalog names are 1 to 64 characters of a-z, 0-9, '_' and '-' (\"carriers\")",
            );
        } else if !version_ok(version) {
            found.push(
                format!("catalog_versions.{name}"),
                "a version is 1 to 64 characters of letters, digits and '.+-_' (\"2025.06.1\")",
            );
        }
    }
}

fn check_release(release: &AgentRelease, found: &mut Violations) {
    if !version_ok(&release.version) {
        found.push(
            "latest_agent.version",
            "a version is 1 to 64 characters of letters, digits and '.+-_' (\"1.4.0\")",
        );
    }
    if let Some(problem) = https_url_problem(&release.url, UrlUse::Download) {
        found.push("latest_agent.url", problem);
    }
    let hex_ok = release.sha256.len() == 64
        && release
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex_ok {
        found.push(
            "latest_agent.sha256",
            "must be the SHA-256 of the download as 64 lowercase hex digits (`sha256sum` prints it)",
        );
    }
}

fn version_ok(version: &str) -> bool {
    (1..=64).contains(&version.len())
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+-_".contains(&b))
}

/// A value from the input, cut and quoted for a message.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(40).collect();
    if cut.len() < value.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum UrlUse {
    /// A collector base URL: no query, no fragment.
    Endpoint,
    /// A download: a query is allowed (signed CDN links), no fragment.
    Download,
}

/// What is wrong with `url` as an HTTPS URL, in words; `None` when fine.
fn https_url_problem(url: &str, used_as: UrlUse) -> Option<String> {
    if url.len() > MAX_URL_LEN {
        return Some(format!(
            "is {} characters; at most {MAX_URL_LEN} are accepted",
            url.len()
        ));
    }
    let Some(rest) = url.strip_prefix("https://") else {
        return Some(format!(
            "{} must start with `https://` (lowercase); plain HTTP and other schemes are refused",
            shown(url)
        ));
    };
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(
            "must be printable ASCII without spaces (write international names in punycode and \
             percent-encode the path)"
                .to_owned(),
        );
    }
    if url.contains('#') {
        return Some("must not carry a fragment (`#…`)".to_owned());
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if used_as == UrlUse::Endpoint && tail.contains('?') {
        return Some(
            "an endpoint is a base URL: it must not carry a query (`?…`); probes append the path"
                .to_owned(),
        );
    }
    if authority.contains('@') {
        return Some("must not carry user information (`user@host`)".to_owned());
    }
    if let Some(problem) = authority_problem(authority) {
        return Some(problem);
    }
    // Probes parse it with the WHATWG rules (the `url` crate), which refuse
    // more than the checks above: a host whose last label is a number is
    // read as an IPv4 address (`collector.example.net.8443`, a typo for
    // `:8443`), a malformed punycode label fails. A manifest probes cannot
    // use would leave them with no endpoint until it expires.
    // They also read a name-like host made of hex or dotted numbers
    // (`0x7f000001`, `0x7f.1`) as an IPv4 address: probes would connect to
    // 127.0.0.1, not to the name the checks above took it for.
    match url::Url::parse(url) {
        Ok(parsed) => match parsed.host() {
            Some(url::Host::Ipv4(addr))
                if authority
                    .rsplit_once(':')
                    .map_or(authority, |(host, _)| host)
                    != addr.to_string() =>
            {
                Some(format!(
                    "{} is read by probes as the IPv4 address {addr}; write {addr} if that is \
                     meant, else the collector's host name",
                    shown(url)
                ))
            }
            _ => None,
        },
        Err(e) => Some(format!("{} is not a URL probes can parse: {e}", shown(url))),
    }
}

fn authority_problem(authority: &str) -> Option<String> {
    if authority.is_empty() {
        return Some("has no host after `https://`".to_owned());
    }
    let port = if let Some(inner) = authority.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return Some("an IPv6 literal must be closed with `]`".to_owned());
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Some(format!("{} is not an IPv6 address", shown(addr)));
        }
        match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Some("only `:port` may follow an IPv6 literal".to_owned()),
            },
        }
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.contains(':') {
            return Some(
                "write an IPv6 address in brackets: `https://[2001:db8::1]:8443`".to_owned(),
            );
        }
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            if host.parse::<Ipv4Addr>().is_err() {
                return Some(format!("{} is not an IPv4 address", shown(host)));
            }
        } else if !dns_name_ok(host) {
            return Some(format!(
                "{} is not a host name: labels of letters, digits and '-', separated by dots",
                shown(host)
            ));
        }
        port
    };
    if let Some(port) = port {
        let valid = port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Some(format!("port {} must be 1 to 65535", shown(port)));
        }
    }
    None
}

fn dns_name_ok(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    (1..=253).contains(&host.len())
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The collector's path-pattern rules, checked here too so that a manifest
/// never tells probes to use a path the collector would refuse to serve.
fn pattern_problem(pattern: &str) -> Option<String> {
    let Some(rest) = pattern.strip_prefix('/') else {
        return Some(format!("{} must start with '/'", shown(pattern)));
    };
    if pattern.len() > MAX_PATTERN_LEN {
        return Some(format!("is longer than {MAX_PATTERN_LEN} characters"));
    }
    for segment in rest.split('/') {
        match segment {
            "" => {
                return Some(format!(
                    "{} has an empty segment ('//' or a trailing '/')",
                    shown(pattern)
                ));
            }
            "*" | "**" => {}
            s if s.contains('*') => {
                return Some(format!(
                    "'*' must be a whole segment (`/a/*/b`), not part of {}",
                    shown(s)
                ));
            }
            s if s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) => {}
            s => {
                return Some(format!(
                    "segment {} may use only letters, digits and '-._~'",
                    shown(s)
                ));
            }
        }
    }
    if rest == "**" {
        return Some("would match every path; add a literal segment".to_owned());
    }
    None
}

/// A manifest as published and served: the exact signed JSON bytes, the
/// signature over them and the id of the key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    /// Standard base64 (with padding) of the manifest JSON bytes.
    pub payload: String,
    /// Standard base64 of the 64-byte Ed25519 signature over those bytes.
    pub signature: String,
    /// The signing key's id: the first 8 bytes of the SHA-256 of the raw
    /// 32-byte public key, as 16 lowercase hex digits.
    pub key_id: String,
}

impl SignedManifest {
    /// Validates `manifest` and signs its JSON; an invalid manifest is not signed.
    pub fn sign(manifest: &Manifest, key: &ManifestSigningKey) -> Result<Self, Error> {
        manifest.validate()?;
        Ok(Self::sign_bytes(&manifest.to_json()?, key))
    }

    /// Signs `payload` exactly as given, valid manifest or not: for tools and
    /// tests. [`SignedManifest::verify`] still checks what the bytes say.
    pub fn sign_bytes(payload: &[u8], key: &ManifestSigningKey) -> Self {
        let signature = key.0.sign(payload);
        Self {
            payload: STANDARD.encode(payload),
            signature: STANDARD.encode(signature.to_bytes()),
            key_id: key.key_id(),
        }
    }

    /// Decodes the JSON wire form (not yet verified).
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_SIGNED_MANIFEST_BYTES {
            return Err(fault(
                ManifestFault::Malformed,
                format!(
                    "the signed manifest is {} bytes; at most {MAX_SIGNED_MANIFEST_BYTES} bytes \
                     are accepted",
                    bytes.len()
                ),
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| {
            fault(
                ManifestFault::Malformed,
                format!(
                    "not a signed manifest: {e}; send {{\"payload\": \"<base64 manifest JSON>\", \
                     \"signature\": \"<base64 Ed25519 signature>\", \"key_id\": \"<16 hex>\"}}"
                ),
            )
        })
    }

    /// The compact JSON wire form.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Checks the key id and the signature against `key`, then decodes and
    /// validates the signed manifest. It does not look at the clock or at
    /// serials: see [`accept_update`].
    pub fn verify(&self, key: &ManifestVerifyingKey) -> Result<Manifest, Error> {
        let expected = key.key_id();
        if self.key_id != expected {
            return Err(fault(
                ManifestFault::UnknownKey,
                format!(
                    "it was signed with key id {}, but the configured public key has id \
                     {expected}; sign with the matching key or configure its public key",
                    shown(&self.key_id)
                ),
            ));
        }
        let max_payload = base64::encoded_len(MAX_MANIFEST_BYTES, true).unwrap_or(usize::MAX);
        if self.payload.len() > max_payload {
            return Err(fault(
                ManifestFault::Malformed,
                format!("the payload is larger than {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        let payload = STANDARD.decode(&self.payload).map_err(|e| {
            fault(
                ManifestFault::Malformed,
                format!("`payload` is not standard base64: {e}"),
            )
        })?;
        let signature: [u8; 64] = STANDARD
            .decode(&self.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                fault(
                    ManifestFault::Malformed,
                    "`signature` is not standard base64 of 64 bytes (an Ed25519 signature)",
                )
            })?;
        key.0
            .verify_strict(&payload, &Signature::from_bytes(&signature))
            .map_err(|_| {
                fault(
                    ManifestFault::BadSignature,
                    format!(
                        "the signature does not verify against public key {expected}: the \
                         manifest was altered or not signed with the matching private key"
                    ),
                )
            })?;
        Manifest::from_json(&payload)
    }
}

/// What a probe does with a manifest it fetched: verifies it against `key`
/// and accepts it only when it is newer than the one it runs
/// (`current_serial`, `None` when it has none), not expired at `now`, and
/// not issued more than [`MAX_ISSUED_AHEAD_SECS`] after `now`.
/// On any error the probe keeps what it has: a forged, replayed or stale
/// manifest changes nothing.
pub fn accept_update(
    current_serial: Option<u64>,
    now: DateTime<Utc>,
    signed: &SignedManifest,
    key: &ManifestVerifyingKey,
) -> Result<Manifest, Error> {
    let manifest = signed.verify(key)?;
    if manifest.is_expired_at(now) {
        return Err(fault(
            ManifestFault::Expired,
            format!(
                "manifest {} expired at {}; the publisher must issue a new one",
                manifest.serial,
                manifest.expires_at.to_rfc3339()
            ),
        ));
    }
    if manifest.is_not_yet_valid_at(now) {
        return Err(fault(
            ManifestFault::NotYetValid,
            format!(
                "manifest {} is issued at {}, more than {} hours after this clock ({}): it is \
                 not valid yet; check this clock and the signer's",
                manifest.serial,
                manifest.issued_at.to_rfc3339(),
                MAX_ISSUED_AHEAD_SECS / 3600,
                now.to_rfc3339()
            ),
        ));
    }
    if let Some(current) = current_serial
        && manifest.serial <= current
    {
        return Err(fault(
            ManifestFault::NotNewer,
            format!(
                "serial {} is not newer than the current manifest's serial {current}; an \
                     older or replayed manifest changes nothing",
                manifest.serial
            ),
        ));
    }
    Ok(manifest)
}

/// The key id of a raw public key: first 8 bytes of its SHA-256, in hex.
fn key_id_of(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest
        .iter()
        .take(8)
        .fold(String::with_capacity(16), |mut s, b| {
            use fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn decode_32(text: &str, what: &str) -> Result<[u8; 32], Error> {
    STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            fault(
                ManifestFault::Key,
                format!(
                    "the {what} is neither standard base64 of 32 raw bytes nor a PEM block \
                     (`-----BEGIN …`)"
                ),
            )
        })
}

/// The Ed25519 key manifests are signed with. Its `Debug` shows only the
/// key id; the secret is wiped when it is dropped.
#[derive(Clone)]
pub struct ManifestSigningKey(SigningKey);

impl fmt::Debug for ManifestSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestSigningKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl ManifestSigningKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Reads standard base64 of the 32-byte secret seed.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        Ok(Self(SigningKey::from_bytes(&decode_32(
            text,
            "manifest signing key",
        )?)))
    }

    /// Reads a PKCS#8 PEM `PRIVATE KEY` block (`openssl genpkey -algorithm ed25519`).
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        SigningKey::from_pkcs8_pem(text.trim())
            .map(Self)
            .map_err(|e| {
                fault(
                    ManifestFault::Key,
                    format!(
                        "the manifest signing key is not a PKCS#8 PEM Ed25519 `PRIVATE KEY`: {e}"
                    ),
                )
            })
    }

    /// PEM when the text holds a PEM block, else base64.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.contains("-----BEGIN") {
            Self::from_pem(text)
        } else {
            Self::from_base64(text)
        }
    }

    /// Standard base64 of the 32-byte secret seed.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    /// PKCS#8 PEM `PRIVATE KEY`.
    pub fn to_pem(&self) -> Result<String, Error> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.as_str().to_owned())
            .map_err(|e| {
                fault(
                    ManifestFault::Key,
                    format!("cannot encode the key as PEM: {e}"),
                )
            })
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> ManifestVerifyingKey {
        ManifestVerifyingKey(self.0.verifying_key())
    }

    /// The id of the matching public key.
    pub fn key_id(&self) -> String {
        key_id_of(&self.0.verifying_key())
    }
}

/// The Ed25519 public key manifests must be signed with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ManifestVerifyingKey(VerifyingKey);

impl fmt::Debug for ManifestVerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManifestVerifyingKey")
            .field(&self.key_id())
            .finish()
    }
}

impl ManifestVerifyingKey {
    /// Reads standard base64 of the 32 raw public-key bytes.
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let bytes = decode_32(text, "manifest public key")?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| {
            fault(
                ManifestFault::Key,
                "the manifest public key is 32 bytes but not an Ed25519 public key",
            )
        })?;
        Self::checked(key)
    }

    /// Reads a PEM `PUBLIC KEY` block (`SubjectPublicKeyInfo`, as
    /// `openssl pkey -pubout` writes it).
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        if text.contains("PRIVATE KEY") {
            return Err(fault(
                ManifestFault::Key,
                "this is a private key; configure the PUBLIC KEY (`openssl pkey -in key.pem \
                 -pubout`) and keep the private key on the signing side",
            ));
        }
        let key = VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| {
            fault(
                ManifestFault::Key,
                format!("the manifest public key is not a PEM Ed25519 `PUBLIC KEY`: {e}"),
            )
        })?;
        Self::checked(key)
    }

    /// PEM when the text holds a PEM block, else base64.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.contains("-----BEGIN") {
            Self::from_pem(text)
        } else {
            Self::from_base64(text)
        }
    }

    /// A small-order ("weak") key would accept signatures anyone can make.
    fn checked(key: VerifyingKey) -> Result<Self, Error> {
        if key.is_weak() {
            return Err(fault(
                ManifestFault::Key,
                "the manifest public key is a weak (small-order) point; generate a real key pair",
            ));
        }
        Ok(Self(key))
    }

    /// Standard base64 of the 32 raw bytes.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }

    /// PEM `PUBLIC KEY` (`SubjectPublicKeyInfo`).
    pub fn to_pem(&self) -> Result<String, Error> {
        self.0.to_public_key_pem(LineEnding::LF).map_err(|e| {
            fault(
                ManifestFault::Key,
                format!("cannot encode the key as PEM: {e}"),
            )
        })
    }

    /// The key id carried by manifests it signed: first 8 bytes of the
    /// SHA-256 of the raw key, 16 lowercase hex digits.
    pub fn key_id(&self) -> String {
        key_id_of(&self.0)
    }
}

impl FromStr for ManifestVerifyingKey {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = [
            "https://collector.example.net",
            "https://collector.example.net/",
            "https://collector.example.net:8443/base",
            "https://203.0.113.7",
            "https://203.0.113.7:8443",
            "https://[2001:db8::7]",
            "https://[2001:db8::7]:443/x",
        ];
        for url in ok {
            assert_eq!(https_url_problem(url, UrlUse::Endpoint), None, "{url}");
        }
        let bad = [
            "http://collector.example.net",
            "HTTPS://collector.example.net",
            "https://",
            "https://user@collector.example.net",
            "https://collector.example.net:0",
            "https://collector.example.net:70000",
            "https://collector.example.net:",
            "https://2001:db8::7",
            "https://[2001:db8::7",
            "https://[2001:db8::zz]",
            "https://999.1.1.1",
            "https://-bad-.example",
            "https://a b.example",
            "https://collector.example.net/?q=1",
            "https://collector.example.net/#frag",
            "https://collector.example.net.8443",
            "https://collector.example.0x1f",
            "ftp://x",
        ];
        for url in bad {
            assert!(
                https_url_problem(url, UrlUse::Endpoint).is_some(),
                "{url} accepted"
            );
        }
        assert_eq!(
            https_url_problem("https://cdn.example.net/a.apk?sig=1", UrlUse::Download),
            None
        );
    }

    #[test]
    fn patterns() {
        for ok in ["/api/v1/report", "/a/*/b", "/x/**", "/r-1/~u/_.v"] {
            assert_eq!(pattern_problem(ok), None, "{ok}");
        }
        for bad in ["api", "/", "/a//b", "/a/", "/a*/b", "/**", "/a b", "/é"] {
            assert!(pattern_problem(bad).is_some(), "{bad} accepted");
        }
    }

    #[test]
    fn key_id_is_16_hex() {
        let key = ManifestSigningKey::generate();
        let id = key.key_id();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }
}
