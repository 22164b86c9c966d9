//! A lookup service over HTTP or HTTPS as a source of the chain: the
//! address goes into a URL template, the JSON answer is read through a table
//! of JSON pointers (RFC 6901) and normalised to catalog ids like every other
//! source's.
//!
//! A service is slow, rate-limited and sometimes down, so the source
//!
//! - keeps every answer in memory for `cache_ttl_s` ("knows nothing" answers
//!   for `negative_ttl_s`), with [`AnswerCache::entries`] and
//!   [`AnswerCache::preload`] to carry the cache across restarts;
//! - sends at most one request per address at a time: concurrent lookups of
//!   the same address wait for the one in flight and share its answer;
//! - spends requests from one token bucket shared by all threads, waiting
//!   for a token at most `timeout_ms` (then the lookup fails rather than
//!   queueing without bound);
//! - takes a service that failed [`BREAKER_FAILURES`] requests in a row (no
//!   connection, no answer in time, a 5xx or 429) for down and leaves it alone for [`BREAKER_COOLDOWN`] (lookups fail at
//!   once, without a request), then lets requests try it again: a service
//!   that hangs must not cost every lookup its timeout;
//! - reports every failure as [`Error::Lookup`] naming the source, the
//!   address and what went wrong; [`Chain::resolve`](super::Chain::resolve)
//!   records it and goes on with the other sources. Failures are not cached:
//!   the next lookup asks again.
//!
//! What counts as "knows nothing" (cached as a negative answer): a `404`, an
//! answer that fails the `success` check, and an answer in which no mapped
//! attribute is present. An error status other than 404, a redirect, an
//! answer that is not JSON or is larger than 1 MiB, and a mapped value of the
//! wrong JSON type are failures.
//!
//! Lookups block the calling thread (on the network, on the rate limit, on a
//! request in flight): run them on a blocking thread
//! (`tokio::task::spawn_blocking`), never on an async runtime's worker;
//! `reqwest`'s blocking client refuses to run there in debug builds.
//! Creating the source is safe anywhere.
//!
//! The configuration is documented on [`ChainConfig`](super::ChainConfig).

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use lineprobe_shared::{Catalog, ProvinceCode};
use reqwest::blocking::{Client, Response};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    Anonymous, IpFacts, IpSource, IpType, asn_from_text, carrier_of, city_code, hosting_type,
    province_id,
};
use crate::Error;

/// The largest answer read; a per-address answer is a few hundred bytes.
const MAX_BODY: u64 = 1024 * 1024;

/// Requests in a row the service failed (no connection, no answer in
/// time, a 5xx or 429) after which it is taken for down.
pub const BREAKER_FAILURES: u32 = 5;

/// How long a service taken for down is left alone.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(30);

/// Whether the service is taken for down: after [`BREAKER_FAILURES`]
/// failed requests in a row, for [`BREAKER_COOLDOWN`]; then requests try it
/// again, and the next failure takes it for down once more.
#[derive(Debug)]
struct Breaker {
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    down_until: Option<Instant>,
}

impl Breaker {
    fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            state: Mutex::default(),
        }
    }

    /// How much longer the service is left alone, if it is.
    fn down_for(&self, now: Instant) -> Option<Duration> {
        let state = lock(&self.state);
        state
            .down_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    fn record(&self, ok: bool, now: Instant) {
        let mut state = lock(&self.state);
        if ok {
            *state = BreakerState::default();
        } else {
            state.failures = state.failures.saturating_add(1);
            if state.failures >= BREAKER_FAILURES {
                state.down_until = Some(now + self.cooldown);
            }
        }
    }
}
/// The longest cache lifetime accepted, so that expiry times stay in range.
const MAX_TTL: Duration = Duration::from_hours(366 * 24);
/// The longest request timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_mins(10);
/// The address the URL template is checked with.
const SAMPLE_IP: &str = "192.0.2.1";
/// An IPv6 address the URL template is also checked with.
const SAMPLE_IP6: &str = "2001:db8::1";

// ─────────────────────────────── JSON pointers ──────────────────────────────

/// A JSON pointer (RFC 6901) into a service's answer: `/data/isp`, `/0/asn`,
/// `/a~1b` for the key `a/b`, `/a~0b` for `a~b`; the empty pointer is the
/// whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JsonPointer(String);

impl JsonPointer {
    /// Checks the syntax: empty, or `/` followed by reference tokens in
    /// which `~` is only used as `~0` or `~1`.
    pub fn new(text: &str) -> Result<Self, String> {
        if !text.is_empty() && !text.starts_with('/') {
            return Err(format!(
                "`{text}` is not a JSON pointer (RFC 6901): start it with `/`, as in `/{text}`"
            ));
        }
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "`{text}` is not a JSON pointer (RFC 6901): `~` must be followed by 0 or 1 \
                     (write `~0` for a `~` and `~1` for a `/` inside a key)"
                ));
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value it points at in `doc`.
    pub fn get<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        doc.pointer(&self.0)
    }
}

impl TryFrom<String> for JsonPointer {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Self::new(&s)
    }
}

impl From<JsonPointer> for String {
    fn from(p: JsonPointer) -> Self {
        p.0
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One pointer, or several tried in order until one finds a value: in TOML
/// `"/isp"` or `["/isp", "/org"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointers(Vec<JsonPointer>);

impl Pointers {
    /// The pointers, tried in this order.
    pub fn new(pointers: Vec<JsonPointer>) -> Self {
        Self(pointers)
    }

    /// The pointers, in order.
    pub fn as_slice(&self) -> &[JsonPointer] {
        &self.0
    }
}

impl From<JsonPointer> for Pointers {
    fn from(p: JsonPointer) -> Self {
        Self(vec![p])
    }
}

impl<'de> Deserialize<'de> for Pointers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pointers;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON pointer such as \"/data/isp\", or a list of them")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Pointers, E> {
                JsonPointer::new(s).map(Pointers::from).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pointers, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(JsonPointer::new(&s).map_err(de::Error::custom)?);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "an empty list of pointers; give at least one, or remove the attribute",
                    ));
                }
                Ok(Pointers(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Which JSON pointer of an answer gives which attribute. Every attribute is
/// optional; at least one must be mapped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    /// The carrier: a catalog id, name or alias (`中国电信`, `CMCC`), or an
    /// organisation/ISP string (`Chinanet`, `China Mobile Guangdong`). When
    /// absent or unknown, the ASN and then `org` decide, as for databases.
    pub carrier: Option<Pointers>,
    /// The country (`CN`, `China`, `中国`, `HK`…). When mapped, province and
    /// city are read only for China, Hong Kong, Macau and Taiwan: a foreign
    /// region code could pass for a province's (`SC` is Sichuan and South
    /// Carolina). Map it for services that answer for the whole world.
    pub country: Option<Pointers>,
    /// The province: any name or code the catalog knows (`广东`, `GD`, `44`).
    pub province: Option<Pointers>,
    /// The city: a name or GB/T 2260 code, taken only within the province.
    pub city: Option<Pointers>,
    /// The AS number: `4134`, `"AS4134"` or `"AS4134 CHINANET-BACKBONE"`.
    pub asn: Option<Pointers>,
    /// The organisation or ISP name, kept as written.
    pub org: Option<Pointers>,
    /// The kind of network (see [`IpType::parse`]); a spelling it does not
    /// know counts as [`IpType::Unknown`].
    pub ip_type: Option<Pointers>,
    /// Flag: a public proxy.
    pub proxy: Option<Pointers>,
    /// Flag: an anonymous VPN.
    pub vpn: Option<Pointers>,
    /// Flag: a hosting or VPN provider.
    pub hosting: Option<Pointers>,
    /// Flag: a Tor exit node.
    pub tor: Option<Pointers>,
    /// Flag: a proxy on a residential line.
    pub residential_proxy: Option<Pointers>,
}

impl FieldMap {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A value the answer must hold for the service to know the address
/// (`{ pointer = "/status", equals = "success" }`); an answer without it is
/// a "knows nothing" answer (`{"status":"fail","message":"private range"}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessCheck {
    /// Where the value is.
    pub pointer: JsonPointer,
    /// The value, compared as JSON (`"success"`, `0`, `true`).
    pub equals: Value,
}

// ──────────────────────────────── settings ─────────────────────────────────

/// The settings of an [`HttpSource`]: what the TOML `http` source gives,
/// with defaults filled in. [`HttpSource::new`] validates them.
#[derive(Clone, PartialEq)]
pub struct HttpSettings {
    /// The name recorded with each attribute.
    pub name: String,
    /// The data version recorded with each attribute; default `http:<host>`.
    pub version: Option<String>,
    /// The URL template: `{ip}` is replaced by the address, `${NAME}` by the
    /// environment variable `NAME` when the source is created, percent-encoded
    /// for the part of the URL it stands in (one path segment, one query
    /// value, the user part; a host is taken as written but must be one).
    pub url: String,
    /// The field mapping.
    pub fields: FieldMap,
    /// The check that tells an answer from a "knows nothing" answer.
    pub success: Option<SuccessCheck>,
    /// The request timeout, also the longest wait for a rate slot.
    pub timeout: Duration,
    /// Requests per second, across all threads.
    pub rate_per_sec: f64,
    /// Requests that may go at once after a quiet spell.
    pub burst: u32,
    /// How long an answer is reused; zero turns the cache off.
    pub cache_ttl: Duration,
    /// How long a "knows nothing" answer is reused.
    pub negative_ttl: Duration,
    /// The most addresses kept in the cache.
    pub cache_max_entries: usize,
    /// Extra request headers; values may hold `${NAME}`.
    pub headers: BTreeMap<String, String>,
    /// An environment variable sent as `Authorization: Bearer <value>`.
    pub token_env: Option<String>,
    /// A PEM file of private CA certificates, trusted besides the public roots.
    pub ca_file: Option<PathBuf>,
}

// Header values may carry credentials: show their names only.
impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("url", &self.url)
            .field("fields", &self.fields)
            .field("success", &self.success)
            .field("timeout", &self.timeout)
            .field("rate_per_sec", &self.rate_per_sec)
            .field("burst", &self.burst)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("cache_max_entries", &self.cache_max_entries)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("token_env", &self.token_env)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl HttpSettings {
    /// Settings with the defaults: timeout 2 s, 10 requests per second,
    /// answers kept a day, "knows nothing" an hour, 100 000 addresses.
    pub fn new(name: impl Into<String>, url: impl Into<String>, fields: FieldMap) -> Self {
        Self {
            name: name.into(),
            version: None,
            url: url.into(),
            fields,
            success: None,
            timeout: Duration::from_secs(2),
            rate_per_sec: 10.0,
            burst: Self::default_burst(10.0),
            cache_ttl: Duration::from_hours(24),
            negative_ttl: Duration::from_hours(1),
            cache_max_entries: 100_000,
            headers: BTreeMap::new(),
            token_env: None,
            ca_file: None,
        }
    }

    /// The default bucket size for a rate: one second's worth, at least one.
    pub fn default_burst(rate_per_sec: f64) -> u32 {
        if rate_per_sec.is_finite() && rate_per_sec >= 1.0 {
            // In range: finite, at least 1, and capped below u32::MAX.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let burst = rate_per_sec.ceil().min(f64::from(u32::MAX)) as u32;
            burst
        } else {
            1
        }
    }

    /// Checks everything that can be checked without the environment or
    /// files; `what` names the source in the error.
    pub fn validate(&self, what: &str) -> Result<(), Error> {
        self.check().map_err(|message| Error::SourceData {
            what: what.to_owned(),
            message,
        })
    }

    fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("`name` is empty; give the source a name or leave it out".to_owned());
        }
        check_url_template(&self.url)?;
        if self.fields.is_empty() {
            return Err(
                "`fields` maps no attribute; map at least one to a JSON pointer, e.g. \
                 fields = { carrier = \"/isp\" }"
                    .to_owned(),
            );
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(format!(
                "`timeout_ms` must be between 1 and {} milliseconds",
                MAX_TIMEOUT.as_millis()
            ));
        }
        if !(self.rate_per_sec.is_finite() && self.rate_per_sec > 0.0) {
            return Err(format!(
                "`rate_per_sec` is {}; give a positive number of requests per second, e.g. 10 \
                 or 0.5",
                self.rate_per_sec
            ));
        }
        if self.burst == 0 {
            return Err("`burst` must be at least 1".to_owned());
        }
        if self.cache_ttl > MAX_TTL {
            return Err(format!(
                "`cache_ttl_s` is {} s; keep it within a year ({} s)",
                self.cache_ttl.as_secs(),
                MAX_TTL.as_secs()
            ));
        }
        if self.negative_ttl > self.cache_ttl {
            return Err(format!(
                "`negative_ttl_s` ({} s) is longer than `cache_ttl_s` ({} s); a \"knows nothing\" \
                 answer should not outlive a real one",
                self.negative_ttl.as_secs(),
                self.cache_ttl.as_secs()
            ));
        }
        if self.cache_max_entries == 0 {
            return Err(
                "`cache_max_entries` must be at least 1 (set cache_ttl_s = 0 to turn the \
                 cache off)"
                    .to_owned(),
            );
        }
        for (name, value) in &self.headers {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header name `{name}` is not a valid HTTP header name"))?;
            env_names(value).map_err(|m| format!("header `{name}`: {m}"))?;
            if self.token_env.is_some() && name.eq_ignore_ascii_case(AUTHORIZATION.as_str()) {
                return Err(
                    "both `token_env` and an `Authorization` header are set; keep one".to_owned(),
                );
            }
        }
        if let Some(var) = &self.token_env
            && !is_env_name(var)
        {
            return Err(format!(
                "`token_env` = `{var}` is not an environment variable name (letters, digits, `_`)"
            ));
        }
        Ok(())
    }
}

/// Checks a URL template: `{ip}` present, environment references well
/// formed, an http(s) URL with a host once filled in, and the address
/// going to that one host in the path or query.
fn check_url_template(template: &str) -> Result<(), String> {
    if !template.contains("{ip}") {
        return Err(format!(
            "`url` = `{template}` has no `{{ip}}`; put `{{ip}}` where the address goes, e.g. \
             https://lookup.example/json/{{ip}}"
        ));
    }
    let mut filled = template.to_owned();
    for name in env_names(template).map_err(|m| format!("`url`: {m}"))? {
        filled = filled.replace(&format!("${{{name}}}"), "x");
    }
    let parse = |ip: &str| {
        reqwest::Url::parse(&filled.replace("{ip}", ip))
            .map_err(|e| format!("`url` = `{template}` is not a valid URL ({e})"))
    };
    let url = parse(SAMPLE_IP)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`url` = `{template}` uses `{}`; only http:// and https:// are supported",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`url` = `{template}` has no host"));
    }
    // The addresses looked up come from reports, which are untrusted: in
    // the host they would choose the server asked (and be sent the
    // source's key and headers); in the user part or the fragment they
    // never reach the service, which would answer the same for all.
    let sent = |u: &reqwest::Url, ip: &str| {
        u.path().contains(ip) || u.query().is_some_and(|q| q.contains(ip))
    };
    // An IPv6 address that does not even parse in place (`http://{ip}/`)
    // is in the host too.
    let fits6 = parse(SAMPLE_IP6).is_ok_and(|u6| {
        (u6.host_str(), u6.port_or_known_default()) == (url.host_str(), url.port_or_known_default())
            && sent(&u6, SAMPLE_IP6)
    });
    if !fits6 || !sent(&url, SAMPLE_IP) {
        return Err(format!(
            "`url` = `{template}` must put `{{ip}}` in the path or query, after a fixed host, \
             e.g. https://lookup.example/json/{{ip}}: requests go only to the configured host"
        ));
    }
    Ok(())
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

/// The `${NAME}` references in `text`, or what is malformed.
fn env_names(text: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        let after = rest.get(at + 2..).unwrap_or("");
        let Some(end) = after.find('}') else {
            return Err("`${` without a closing `}`; write `${NAME}`".to_owned());
        };
        let name = after.get(..end).unwrap_or("");
        if !is_env_name(name) {
            return Err(format!(
                "`${{{name}}}` does not name an environment variable (letters, digits, `_`)"
            ));
        }
        names.push(name);
        rest = after.get(end + 1..).unwrap_or("");
    }
    Ok(names)
}

/// `text` with every `${NAME}` replaced by the variable's value; `what`
/// says where the text is used, for the error.
fn expand_env(text: &str, what: &str) -> Result<String, String> {
    let mut out = text.to_owned();
    for name in env_names(text)? {
        let value = std::env::var(name).map_err(|_| unset(name, what))?;
        out = out.replace(&format!("${{{name}}}"), &value);
    }
    Ok(out)
}

fn unset(name: &str, what: &str) -> String {
    format!("environment variable `{name}` (used in {what}) is not set; export it")
}

/// Where in a URL template a `${NAME}` reference stands, which decides how
/// its value is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlPart {
    /// Before `@` in the authority: the user name or password.
    UserInfo,
    /// The host and port: inserted as written, but a value that would end
    /// the host (`/`, `?`, `#`, `@`…) is refused.
    Host,
    /// The path, before any `?`: the value stays within one path segment.
    Path,
    /// The query or the fragment: the value stays within one parameter.
    Query,
}

/// The URL template with every `${NAME}` replaced by `var(NAME)`, each
/// value percent-encoded for the part of the URL it lands in, so that a key
/// holding `&`, `#`, `/`, `%`, `+` or a space cannot end its path segment or
/// query parameter, start a fragment or become another parameter. A value
/// is one opaque piece of text: a pre-escaped value (`a%2Fb`) is escaped
/// again. `{ip}` is left in place, as it was (and a value containing `{ip}`
/// can no longer be mistaken for it: braces are escaped). References in the
/// host are inserted as written (`https://${HOST}/v1/{ip}`) but must be a
/// host and optional port.
fn expand_url_env(template: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    // Every name is checked first, so a malformed reference is reported as
    // such rather than as an unset variable.
    env_names(template)?;
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let after = after.get(2..).unwrap_or("");
        let end = after.find('}').unwrap_or(after.len());
        let name = after.get(..end).unwrap_or("");
        let value = var(name).ok_or_else(|| unset(name, "`url`"))?;
        match url_part(template, template.len() - rest.len() + at) {
            UrlPart::UserInfo => percent_encode(&mut out, &value, is_userinfo_char),
            UrlPart::Path => percent_encode(&mut out, &value, is_segment_char),
            UrlPart::Query => percent_encode(&mut out, &value, is_unreserved),
            UrlPart::Host => {
                if let Some(bad) = value.chars().find(|c| {
                    !(c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '[' | ']'))
                }) {
                    return Err(format!(
                        "environment variable `{name}` (used in the host of `url`) holds {bad:?}; \
                         a host there may hold only a host name or address and a port"
                    ));
                }
                out.push_str(&value);
            }
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

/// The part of the URL a reference at byte `at` of `template` lands in.
fn url_part(template: &str, at: usize) -> UrlPart {
    let before = template.get(..at).unwrap_or("");
    if before.contains(['?', '#']) {
        return UrlPart::Query;
    }
    let Some(authority_start) = template.find("://").map(|i| i + 3) else {
        return UrlPart::Path;
    };
    let authority_end = template
        .get(authority_start..)
        .and_then(|a| a.find(['/', '?', '#']))
        .map_or(template.len(), |i| authority_start + i);
    if at >= authority_end {
        UrlPart::Path
    } else if template
        .get(at..authority_end)
        .is_some_and(|a| a.contains('@'))
    {
        UrlPart::UserInfo
    } else {
        UrlPart::Host
    }
}

/// RFC 3986 unreserved characters: never escaped anywhere.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters a path segment keeps as they are (RFC 3986 `pchar` less
/// `%`): sub-delimiters, `:` and `@` mean nothing special inside a segment.
fn is_segment_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

/// Characters the user part keeps (RFC 3986 `userinfo` less `:`, which
/// would split a user name from its password).
fn is_userinfo_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        )
}

/// Appends `value` to `out`, every byte `keep` refuses written `%XX`.
fn percent_encode(out: &mut String, value: &str, keep: fn(u8) -> bool) {
    for b in value.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

// ────────────────────────────────── cache ──────────────────────────────────

/// One cached answer, in the form it is persisted in (the database's
/// `resolver_cache`): `facts` is `null` for a "knows nothing" answer.
///
/// ```json
/// {"ip":"203.0.113.7","facts":{"carrier":"china_telecom","province":"CN-GD"},
///  "fetched_at":"2026-11-02T08:00:00Z","expires_at":"2026-11-03T08:00:00Z"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The address (IPv4-mapped IPv6 addresses are stored as IPv4).
    pub ip: IpAddr,
    /// The answer; `None` when the service knew nothing.
    pub facts: Option<IpFacts>,
    /// When the service gave it.
    pub fetched_at: DateTime<Utc>,
    /// When it stops being used.
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Stored {
    facts: Option<IpFacts>,
    fetched_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// The answers of a source, by address, each until it expires.
#[derive(Debug)]
pub struct AnswerCache {
    ttl: TimeDelta,
    negative_ttl: TimeDelta,
    max_entries: usize,
    fingerprint: String,
    map: Mutex<HashMap<IpAddr, Stored>>,
}

impl AnswerCache {
    fn new(ttl: Duration, negative_ttl: Duration, max_entries: usize, fingerprint: String) -> Self {
        Self {
            ttl: TimeDelta::from_std(ttl).unwrap_or(TimeDelta::MAX),
            negative_ttl: TimeDelta::from_std(negative_ttl).unwrap_or(TimeDelta::MAX),
            max_entries,
            fingerprint,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Identifies what the cached answers depend on (the URL template, the
    /// field mapping, the success check). Store it with persisted entries
    /// and preload them only into a source with the same fingerprint:
    /// answers read through another mapping would be wrong.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The number of addresses cached, expired ones included until swept.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answers that have not expired, for persisting.
    pub fn entries(&self) -> Vec<CacheEntry> {
        let now = Utc::now();
        let mut out: Vec<CacheEntry> = lock(&self.map)
            .iter()
            .filter(|(_, s)| s.expires_at > now)
            .map(|(ip, s)| CacheEntry {
                ip: *ip,
                facts: s.facts.clone(),
                fetched_at: s.fetched_at,
                expires_at: s.expires_at,
            })
            .collect();
        out.sort_unstable_by_key(|e| e.ip);
        out
    }

    /// Takes persisted answers in, returning how many were taken. An entry
    /// that has expired is skipped, one never outlives this source's TTL
    /// from when it was fetched, and an answer already held that was
    /// fetched later wins.
    pub fn preload(&self, entries: impl IntoIterator<Item = CacheEntry>) -> usize {
        let now = Utc::now();
        let mut map = lock(&self.map);
        let mut taken = 0;
        for e in entries {
            let ttl = if e.facts.is_some() {
                self.ttl
            } else {
                self.negative_ttl
            };
            let limit = e.fetched_at.checked_add_signed(ttl).unwrap_or(e.expires_at);
            let expires_at = e.expires_at.min(limit);
            if expires_at <= now {
                continue;
            }
            let ip = canonical(e.ip);
            if map.get(&ip).is_some_and(|s| s.fetched_at >= e.fetched_at) {
                continue;
            }
            if map.len() >= self.max_entries && !map.contains_key(&ip) {
                evict(&mut map, self.max_entries, now);
            }
            map.insert(
                ip,
                Stored {
                    facts: e.facts,
                    fetched_at: e.fetched_at,
                    expires_at,
                },
            );
            taken += 1;
        }
        taken
    }

    /// The unexpired answer for `ip`.
    fn get(&self, ip: IpAddr) -> Option<Stored> {
        let now = Utc::now();
        let map = lock(&self.map);
        map.get(&ip).filter(|s| s.expires_at > now).cloned()
    }

    /// Keeps a fresh answer, unless its TTL is zero.
    fn insert(&self, ip: IpAddr, facts: Option<IpFacts>) {
        let ttl = if facts.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        if ttl <= TimeDelta::zero() {
            return;
        }
        let now = Utc::now();
        let expires_at = now
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut map = lock(&self.map);
        if map.len() >= self.max_entries && !map.contains_key(&ip) {
            evict(&mut map, self.max_entries, now);
        }
        map.insert(
            ip,
            Stored {
                facts,
                fetched_at: now,
                expires_at,
            },
        );
    }
}

/// Makes room in a full cache: expired answers go first, then the tenth
/// that expires soonest (a tenth at once, so a full cache does not sweep on
/// every insert).
fn evict(map: &mut HashMap<IpAddr, Stored>, max: usize, now: DateTime<Utc>) {
    map.retain(|_, s| s.expires_at > now);
    if map.len() < max {
        return;
    }
    let mut expiries: Vec<DateTime<Utc>> = map.values().map(|s| s.expires_at).collect();
    let cut = (expiries.len() / 10)
        .max(1)
        .min(expiries.len().saturating_sub(1));
    let (_, &mut cutoff, _) = expiries.select_nth_unstable(cut);
    map.retain(|_, s| s.expires_at > cutoff);
}

// ───────────────────────────────── limits ──────────────────────────────────

/// A token bucket shared by all threads. A caller reserves its token at
/// once (the level may go below zero) and sleeps until it is due, so waiting
/// callers are served in order and none waits longer than it agreed to.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst),
            state: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    /// Takes a token, sleeping for it at most `limit`; else returns how long
    /// the wait would have been.
    fn take(&self, limit: Duration) -> Result<(), Duration> {
        let wait = {
            let mut state = lock(&self.state);
            let now = Instant::now();
            let refill = now.duration_since(state.1).as_secs_f64() * self.rate;
            let level = (state.0 + refill).min(self.burst) - 1.0;
            state.1 = now;
            if level >= 0.0 {
                state.0 = level;
                return Ok(());
            }
            let wait = Duration::from_secs_f64(-level / self.rate);
            if wait > limit {
                state.0 = level + 1.0;
                return Err(wait);
            }
            state.0 = level;
            wait
        };
        std::thread::sleep(wait);
        Ok(())
    }
}

/// The lookup of one address in flight, which concurrent lookups of the
/// same address wait for.
#[derive(Debug, Default)]
struct Flight {
    answer: Mutex<Option<Answer>>,
    done: Condvar,
}

/// A lookup's outcome, shareable between the threads waiting for it.
type Answer = Result<Option<IpFacts>, String>;

/// Publishes the leader's answer when dropped — also when the leader
/// panicked, so that no waiter waits for an answer that never comes.
struct Publish<'a> {
    source: &'a HttpSource,
    ip: IpAddr,
    flight: &'a Flight,
    answer: Option<Answer>,
}

impl Drop for Publish<'_> {
    fn drop(&mut self) {
        let answer = self
            .answer
            .take()
            .unwrap_or_else(|| Err("the lookup was abandoned (its thread panicked)".to_owned()));
        // The cache first, then out of the table: a lookup that finds no
        // flight for the address then finds the answer in the cache.
        if let Ok(facts) = &answer {
            self.source.cache.insert(self.ip, facts.clone());
        }
        lock(&self.source.inflight).remove(&self.ip);
        *lock(&self.flight.answer) = Some(answer);
        self.flight.done.notify_all();
    }
}

// ───────────────────────────────── source ──────────────────────────────────

/// An HTTP(S) lookup service as an [`IpSource`]; see the module docs.
pub struct HttpSource {
    name: String,
    version: String,
    /// The template as configured, for messages: the expanded URL may hold
    /// a key and is never shown.
    url_template: String,
    url: String,
    fields: FieldMap,
    success: Option<SuccessCheck>,
    timeout: Duration,
    rate_per_sec: f64,
    burst: u32,
    client: Client,
    bucket: Bucket,
    breaker: Breaker,
    cache: AnswerCache,
    inflight: Mutex<HashMap<IpAddr, Arc<Flight>>>,
    catalog: Arc<Catalog>,
    requests: AtomicU64,
}

impl fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSource")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("url", &self.url_template)
            .field("timeout", &self.timeout)
            .field("rate_per_sec", &self.rate_per_sec)
            .field("burst", &self.burst)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// Validates `settings`, expands the environment references, reads the
    /// CA file and prepares the HTTP client. Sends nothing.
    pub fn new(settings: HttpSettings, catalog: Arc<Catalog>) -> Result<Self, Error> {
        let what = format!("source `{}`", settings.name);
        settings.validate(&what)?;
        let err = |message: String| Error::SourceData {
            what: what.clone(),
            message,
        };
        let url = expand_url_env(&settings.url, &|name| std::env::var(name).ok()).map_err(err)?;
        let host = reqwest::Url::parse(&url.replace("{ip}", SAMPLE_IP))
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .ok_or_else(|| {
                err(format!(
                    "`url` = `{}` is not a valid URL once the environment is filled in",
                    settings.url
                ))
            })?;
        let headers = request_headers(&settings).map_err(err)?;
        let client = build_client(&settings, headers).map_err(err)?;
        let fingerprint = {
            let mut h = Sha256::new();
            h.update(settings.url.as_bytes());
            h.update(format!("{:?}{:?}", settings.fields, settings.success).as_bytes());
            // Answers are cached mapped to catalog ids (and "knows nothing"
            // when nothing mapped): another catalog must ask again, not
            // reuse a mapping it would not make.
            h.update(
                format!(
                    "{:?}{:?}{:?}",
                    catalog.carriers(),
                    catalog.provinces(),
                    catalog.cities()
                )
                .as_bytes(),
            );
            let digest = h.finalize();
            digest.iter().take(8).fold(String::new(), |mut s, b| {
                // Writing to a String cannot fail.
                let _ = write!(s, "{b:02x}");
                s
            })
        };
        Ok(Self {
            version: settings
                .version
                .clone()
                .unwrap_or_else(|| format!("http:{host}")),
            name: settings.name,
            url_template: settings.url,
            url,
            fields: settings.fields,
            success: settings.success,
            timeout: settings.timeout,
            rate_per_sec: settings.rate_per_sec,
            burst: settings.burst,
            client,
            bucket: Bucket::new(settings.rate_per_sec, settings.burst),
            breaker: Breaker::new(BREAKER_COOLDOWN),
            cache: AnswerCache::new(
                settings.cache_ttl,
                settings.negative_ttl,
                settings.cache_max_entries,
                fingerprint,
            ),
            inflight: Mutex::new(HashMap::new()),
            catalog,
            requests: AtomicU64::new(0),
        })
    }

    /// The cache of answers.
    pub fn cache(&self) -> &AnswerCache {
        &self.cache
    }

    /// The unexpired cached answers, for persisting.
    pub fn cache_entries(&self) -> Vec<CacheEntry> {
        self.cache.entries()
    }

    /// Takes persisted answers in; see [`AnswerCache::preload`].
    pub fn preload(&self, entries: impl IntoIterator<Item = CacheEntry>) -> usize {
        self.cache.preload(entries)
    }

    /// The number of requests sent since the source was created.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn error(&self, ip: IpAddr, message: String) -> Error {
        Error::Lookup {
            source_name: self.name.clone(),
            ip,
            message,
        }
    }

    /// Waits for the lookup another thread has in flight.
    fn wait_for(&self, flight: &Flight) -> Answer {
        // The leader is bounded by the rate wait and the request timeout;
        // the margin only guards against a leader that never returns.
        let deadline = Instant::now() + self.timeout * 3 + Duration::from_secs(1);
        let mut slot = lock(&flight.answer);
        loop {
            if let Some(answer) = slot.as_ref() {
                return answer.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "gave up after {} ms waiting for the same lookup on another thread",
                    (self.timeout * 3).as_millis()
                ));
            }
            slot = flight
                .done
                .wait_timeout(slot, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Asks the service about `ip`, unless it is taken for down.
    fn fetch(&self, ip: IpAddr) -> Answer {
        let ms = self.timeout.as_millis();
        if let Some(left) = self.breaker.down_for(Instant::now()) {
            return Err(format!(
                "the service failed {BREAKER_FAILURES} requests in a row; it is not asked again \
                 for {} s",
                left.as_secs().max(1)
            ));
        }
        self.bucket.take(self.timeout).map_err(|wait| {
            format!(
                "the rate limit ({} requests per second, burst {}) has no request slot within \
                 {ms} ms (timeout_ms; the next is {} ms away); raise rate_per_sec or burst if \
                 the service allows more",
                self.rate_per_sec,
                self.burst,
                wait.as_millis()
            )
        })?;
        let url = self.url.replace("{ip}", &ip.to_string());
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut unavailable = false;
        let answer = self.ask(ip, url, ms, &mut unavailable);
        self.breaker.record(!unavailable, Instant::now());
        answer
    }

    /// One request for `ip` at `url`, read and mapped. `unavailable` is set
    /// when the service itself failed (no connection, no answer in time, a
    /// 5xx or 429, an answer cut short), not when an answer was merely wrong.
    fn ask(&self, ip: IpAddr, url: String, ms: u128, unavailable: &mut bool) -> Answer {
        *unavailable = true;
        // The client's timeout bounds the wait for the head and then each
        // read of the body on its own: the body is read against this
        // deadline too, or a service trickling a byte a second would hold
        // the pipeline for as long as it liked.
        let deadline =
            Instant::now() + Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
        let response = self.client.get(url).send().map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {ms} ms (timeout_ms)")
            } else if e.is_connect() {
                let cause = error_chain(&e.without_url());
                let hint = if cause.contains("certificate") && self.url.starts_with("https") {
                    "; if the service's certificate comes from a private CA, set `ca_file` to \
                     that CA's PEM file"
                } else {
                    ""
                };
                format!("cannot connect to {}: {cause}{hint}", self.url_template)
            } else {
                format!("the request failed: {}", error_chain(&e.without_url()))
            }
        })?;
        let status = response.status();
        *unavailable = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status.is_redirection() {
            return Err(format!(
                "the service answered {status}, a redirect; redirects are not followed (they \
                 could carry the credentials elsewhere): put the final address in `url`"
            ));
        }
        if !status.is_success() {
            let body = read_body(response, 200, deadline, ms).unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            return Err(if text.is_empty() {
                format!("the service answered {status}")
            } else {
                format!("the service answered {status}: {text}")
            });
        }
        *unavailable = true;
        let body = read_body(response, MAX_BODY + 1, deadline, ms)?;
        *unavailable = false;
        if u64::try_from(body.len()).unwrap_or(u64::MAX) > MAX_BODY {
            return Err(format!(
                "the answer is larger than {} KiB; point `url` at a per-address endpoint",
                MAX_BODY / 1024
            ));
        }
        let doc: Value =
            serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON ({e})"))?;
        if let Some(check) = &self.success {
            let found = check.pointer.get(&doc);
            if found != Some(&check.equals) {
                tracing::debug!(
                    source = %self.name,
                    %ip,
                    pointer = %check.pointer,
                    found = %found.map_or_else(|| "nothing".to_owned(), shown),
                    "the service knows nothing about the address"
                );
                return Ok(None);
            }
        }
        let facts = self.map(&doc)?;
        Ok(Some(facts).filter(|f| !f.is_empty()))
    }

    /// Reads the attributes out of an answer and normalises them.
    fn map(&self, doc: &Value) -> Result<IpFacts, String> {
        let f = &self.fields;
        let cat = &*self.catalog;
        let region = text(doc, f.country.as_ref(), "country")?
            .map_or(Region::Anywhere, |c| Region::of(cat, &c));
        let mut province = match &region {
            Region::Abroad => None,
            Region::Province(p) => Some(p.clone()),
            Region::Anywhere | Region::China => {
                text(doc, f.province.as_ref(), "province")?.and_then(|t| province_id(cat, &t))
            }
        };
        let city = match region {
            Region::Abroad => None,
            _ => text(doc, f.city.as_ref(), "city")?
                .and_then(|t| city_code(cat, province.as_ref(), &t)),
        };
        if province.is_none() {
            province = city
                .as_ref()
                .and_then(|c| cat.city_by_code(c))
                .map(|c| c.province.clone());
        }
        let asn = asn(doc, f.asn.as_ref())?;
        let org = text(doc, f.org.as_ref(), "org")?;
        let named = text(doc, f.carrier.as_ref(), "carrier")?;
        let carrier = named
            .as_deref()
            .and_then(|n| cat.carrier(n).or_else(|| cat.carrier_by_org(n)))
            .map(|c| c.id.clone())
            .or_else(|| {
                let orgs: Vec<&str> = org.iter().chain(&named).map(String::as_str).collect();
                carrier_of(cat, asn, &orgs)
            });
        let ip_type = text(doc, f.ip_type.as_ref(), "ip_type")?
            .map(|t| IpType::parse(&t).unwrap_or(IpType::Unknown))
            .or_else(|| hosting_type(cat, asn, carrier.as_ref()));
        let anonymous = Anonymous {
            vpn: flag(doc, f.vpn.as_ref(), "vpn")?,
            proxy: flag(doc, f.proxy.as_ref(), "proxy")?,
            residential_proxy: flag(doc, f.residential_proxy.as_ref(), "residential_proxy")?,
            hosting: flag(doc, f.hosting.as_ref(), "hosting")?,
            tor: flag(doc, f.tor.as_ref(), "tor")?,
        };
        Ok(IpFacts {
            carrier,
            province,
            city,
            asn,
            org,
            ip_type,
            customer: None,
            // Like the Anonymous-IP database: only a raised flag says
            // something; all clear leaves the attribute to later sources.
            anonymous: (anonymous != Anonymous::default()).then_some(anonymous),
        })
    }
}

impl IpSource for HttpSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn data_version(&self) -> &str {
        &self.version
    }

    /// Answers from the cache, else asks the service, sharing a request in
    /// flight for the same address. Blocks: see the module docs.
    fn lookup(&self, ip: IpAddr) -> Result<Option<IpFacts>, Error> {
        let ip = canonical(ip);
        if let Some(hit) = self.cache.get(ip) {
            return Ok(hit.facts);
        }
        let (flight, leader) = {
            let mut inflight = lock(&self.inflight);
            if let Some(flight) = inflight.get(&ip) {
                (Arc::clone(flight), false)
            } else {
                // Checked again under the table's lock: a leader fills the
                // cache before it leaves the table.
                if let Some(hit) = self.cache.get(ip) {
                    return Ok(hit.facts);
                }
                let flight = Arc::new(Flight::default());
                inflight.insert(ip, Arc::clone(&flight));
                (flight, true)
            }
        };
        let answer = if leader {
            let mut publish = Publish {
                source: self,
                ip,
                flight: &flight,
                answer: None,
            };
            let answer = self.fetch(ip);
            publish.answer = Some(answer.clone());
            drop(publish);
            answer
        } else {
            self.wait_for(&flight)
        };
        answer.map_err(|message| self.error(ip, message))
    }

    fn answer_cache(&self) -> Option<&AnswerCache> {
        Some(&self.cache)
    }
}

/// The headers sent with every request, environment references expanded;
/// values are marked sensitive so that they stay out of logs.
fn request_headers(settings: &HttpSettings) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in &settings.headers {
        let value = expand_env(value, &format!("header `{name}`"))?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            format!("header `{name}`: the value holds characters HTTP headers cannot carry")
        })?;
        value.set_sensitive(true);
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name `{name}` is not valid"))?;
        headers.insert(name, value);
    }
    if let Some(var) = &settings.token_env {
        let token = std::env::var(var)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                format!(
                    "environment variable `{var}` (token_env) is not set or empty; export the \
                     service's API token in it"
                )
            })?;
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| format!("the token in `{var}` is not a valid header value"))?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(headers)
}

/// The blocking HTTP client: rustls with the built-in roots plus the
/// private CA, no redirects, the timeout on connecting and on the whole
/// request.
fn build_client(settings: &HttpSettings, headers: HeaderMap) -> Result<Client, String> {
    let mut builder = Client::builder()
        .use_rustls_tls()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        // A redirect could carry the key headers to another host; the
        // operator configures the final address instead.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lineprobe-sync/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers);
    if let Some(path) = &settings.ca_file {
        let shown = path.display();
        let pem = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read `ca_file` {shown}: {e}; give the PEM file of the CA that signed \
                 the service's certificate"
            )
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("`ca_file` {shown} is not PEM: {e}"))?;
        if certs.is_empty() {
            return Err(format!(
                "`ca_file` {shown} holds no certificate (expected -----BEGIN CERTIFICATE-----)"
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    // The blocking client refuses to be built on an async runtime's thread;
    // a thread of its own lets the source be created anywhere.
    std::thread::spawn(move || builder.build())
        .join()
        .map_err(|_| "preparing the HTTP client panicked".to_owned())?
        .map_err(|e| format!("cannot prepare the HTTP client: {}", error_chain(&e)))
}

// ──────────────────────────────── reading ──────────────────────────────────

/// Where an answer places the address, from its country.
enum Region {
    /// No country mapped: province and city are read as given.
    Anywhere,
    /// Mainland China: province and city are read.
    China,
    /// Hong Kong, Macau or Taiwan: a province to the catalog.
    Province(ProvinceCode),
    /// Elsewhere: no province or city.
    Abroad,
}

impl Region {
    fn of(catalog: &Catalog, country: &str) -> Self {
        let key: String = country
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        let special = match key.as_str() {
            "cn"
            | "chn"
            | "china"
            | "中国"
            | "中华人民共和国"
            | "peoplesrepublicofchina"
            | "prc"
            | "mainlandchina"
            | "中国大陆" => return Self::China,
            "hk" | "hkg" | "hongkong" | "香港" | "中国香港" => "HK",
            "mo" | "mac" | "macau" | "macao" | "澳门" | "中国澳门" | "澳門" => "MO",
            "tw" | "twn" | "taiwan" | "台湾" | "中国台湾" | "台灣" => "TW",
            _ => return Self::Abroad,
        };
        province_id(catalog, special).map_or(Self::Abroad, Self::Province)
    }
}

/// The first present, non-null, non-empty value the pointers find.
fn find<'a>(
    doc: &'a Value,
    pointers: Option<&'a Pointers>,
) -> Option<(&'a JsonPointer, &'a Value)> {
    pointers?.0.iter().find_map(|p| {
        let v = p.get(doc)?;
        match v {
            Value::Null => None,
            Value::String(s) if s.trim().is_empty() => None,
            _ => Some((p, v)),
        }
    })
}

/// A value for messages: compact JSON, cut short, with its JSON type.
fn shown(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let mut text = v.to_string();
    if text.chars().count() > 60 {
        text = text.chars().take(60).collect::<String>() + "…";
    }
    format!("{text} ({kind})")
}

fn wrong(pointer: &JsonPointer, what: &str, v: &Value, expected: &str) -> String {
    format!(
        "`{pointer}` ({what}) is {}; expected {expected} — fix the mapping in `fields`",
        shown(v)
    )
}

/// A text attribute: a string, or a number written out (a numeric code).
fn text(doc: &Value, pointers: Option<&Pointers>, what: &str) -> Result<Option<String>, String> {
    let Some((p, v)) = find(doc, pointers) else {
        return Ok(None);
    };
    match v {
        // A name, a code: an answer's text is kept in the cache, the
        // database's resolver cache and every verdict's evidence, so one
        // of a megabyte (a broken or hostile service) is a wrong answer,
        // not an attribute.
        Value::String(s) if s.trim().chars().count() > MAX_TEXT_CHARS => Err(wrong(
            p,
            what,
            v,
            &format!("text of at most {MAX_TEXT_CHARS} characters"),
        )),
        Value::String(s) => Ok(Some(s.trim().to_owned())),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(wrong(p, what, v, "text")),
    }
}

/// Longest text attribute taken from an answer.
const MAX_TEXT_CHARS: usize = 256;

/// An AS number: `4134`, `"4134"`, `"AS4134"`, `"AS4134 CHINANET-BACKBONE"`.
fn asn(doc: &Value, pointers: Option<&Pointers>) -> Result<Option<u32>, String> {
    let Some((p, v)) = find(doc, pointers) else {
        return Ok(None);
    };
    let expected = "an AS number like 4134 or \"AS4134\"";
    let parsed = match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => asn_from_text(s),
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| wrong(p, "asn", v, expected))
}

/// A flag: `true`/`false`, `1`/`0`, or those (and yes/no) as text; absent
/// is false.
fn flag(doc: &Value, pointers: Option<&Pointers>, what: &str) -> Result<bool, String> {
    let Some((p, v)) = find(doc, pointers) else {
        return Ok(false);
    };
    let value = match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "y" => Some(true),
            "false" | "no" | "0" | "n" => Some(false),
            _ => None,
        },
        _ => None,
    };
    value.ok_or_else(|| wrong(p, what, v, "true/false, 1/0 or \"yes\"/\"no\""))
}

/// Reads at most `limit` bytes of a body, all of it by `deadline` (a read
/// under way when it passes ends within the client's own timeout).
fn read_body(
    response: Response,
    limit: u64,
    deadline: Instant,
    timeout_ms: u128,
) -> Result<Vec<u8>, String> {
    let late = || format!("the answer did not arrive within {timeout_ms} ms (timeout_ms)");
    let mut body = Vec::new();
    let mut reader = response.take(limit);
    let mut chunk = [0_u8; 8192];
    loop {
        let read = match reader.read(&mut chunk) {
            Ok(0) => return Ok(body),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(late()),
            Err(e) => return Err(format!("reading the answer failed: {}", error_chain(&e))),
        };
        body.extend_from_slice(chunk.get(..read).unwrap_or_default());
        if Instant::now() > deadline {
            return Err(late());
        }
    }
}

/// An error and its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !out.contains(&next) {
            out.push_str(": ");
            out.push_str(&next);
        }
        source = s.source();
    }
    out
}

/// The address as cached and asked for: IPv4-mapped IPv6 as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Locks, carrying on after a panic elsewhere: every critical section here
/// leaves its data consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_breaker_takes_the_service_for_down_after_failures_in_a_row() {
        let breaker = super::Breaker::new(std::time::Duration::from_secs(30));
        let t0 = std::time::Instant::now();
        for _ in 1..super::BREAKER_FAILURES {
            breaker.record(false, t0);
        }
        assert_eq!(breaker.down_for(t0), None, "not yet");
        // A success in between starts the count again.
        breaker.record(true, t0);
        for _ in 0..super::BREAKER_FAILURES {
            breaker.record(false, t0);
        }
        let later = t0 + std::time::Duration::from_secs(10);
        assert_eq!(
            breaker.down_for(later),
            Some(std::time::Duration::from_secs(20))
        );
        // After the cooldown it is tried again; one more failure takes it
        // for down again, a success clears it.
        let after = t0 + std::time::Duration::from_secs(31);
        assert_eq!(breaker.down_for(after), None);
        breaker.record(false, after);
        assert!(breaker.down_for(after).is_some());
        breaker.record(true, after);
        assert_eq!(breaker.down_for(after), None);
        breaker.record(false, after);
        assert_eq!(breaker.down_for(after), None, "the count started again");
    }

    use super::*;

    fn ptrs(p: &str) -> Pointers {
        JsonPointer::new(p).unwrap().into()
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        let doc = serde_json::json!({"a/b": {"m~n": [10, 20]}, "": 1});
        assert_eq!(
            JsonPointer::new("/a~1b/m~0n/1").unwrap().get(&doc),
            Some(&serde_json::json!(20))
        );
        assert_eq!(JsonPointer::new("").unwrap().get(&doc), Some(&doc));
        assert_eq!(
            JsonPointer::new("/").unwrap().get(&doc),
            Some(&serde_json::json!(1))
        );
        assert!(JsonPointer::new("a").unwrap_err().contains("`/a`"));
        assert!(JsonPointer::new("/a~").is_err());
        assert!(JsonPointer::new("/a~2").is_err());
    }

    #[test]
    fn asn_spellings() {
        let read = |v: Value| asn(&serde_json::json!({ "x": v }), Some(&ptrs("/x")));
        assert_eq!(read(serde_json::json!(4134)), Ok(Some(4134)));
        assert_eq!(read(serde_json::json!("4134")), Ok(Some(4134)));
        assert_eq!(read(serde_json::json!("AS4134")), Ok(Some(4134)));
        assert_eq!(
            read(serde_json::json!(" as9808 China Mobile")),
            Ok(Some(9808))
        );
        assert_eq!(read(serde_json::json!("AS 4837")), Ok(Some(4837)));
        assert_eq!(read(serde_json::json!("")), Ok(None));
        assert_eq!(read(Value::Null), Ok(None));
        assert!(read(serde_json::json!("AS")).is_err());
        assert!(read(serde_json::json!("4134x")).is_err());
        assert!(read(serde_json::json!(-1)).is_err());
        assert!(read(serde_json::json!(5_000_000_000_u64)).is_err());
        assert!(read(serde_json::json!(true)).is_err());
    }

    #[test]
    fn environment_references() {
        assert_eq!(env_names("a${X}b${Y_1}"), Ok(vec!["X", "Y_1"]));
        assert_eq!(env_names("$X {ip} $"), Ok(vec![]));
        assert!(env_names("${1X}").is_err());
        assert!(env_names("${X").is_err());
        assert!(env_names("${}").is_err());
    }

    #[test]
    fn url_environment_values_are_escaped_for_where_they_land() {
        let key = "a&b=c#d e+f/%25{ip}";
        let seg = "x/y?z#w %{ip}:@";
        let vars = |name: &str| match name {
            "HOST" => Some("lookup.example:8443".to_owned()),
            "USER" => Some("me@home".to_owned()),
            "PASS" => Some("p:w/d?".to_owned()),
            "SEG" => Some(seg.to_owned()),
            "KEY" => Some(key.to_owned()),
            _ => None,
        };
        let url = expand_url_env(
            "https://${HOST}/v1/${SEG}/{ip}?key=${KEY}&lang=zh-CN#${KEY}",
            &vars,
        )
        .unwrap();
        assert_eq!(
            url,
            "https://lookup.example:8443/v1/x%2Fy%3Fz%23w%20%25%7Bip%7D:@/{ip}\
             ?key=a%26b%3Dc%23d%20e%2Bf%2F%2525%7Bip%7D&lang=zh-CN\
             #a%26b%3Dc%23d%20e%2Bf%2F%2525%7Bip%7D"
        );
        // The address placeholder still works, once, where it was.
        let sent = reqwest::Url::parse(&url.replace("{ip}", "2001:db8::1")).unwrap();
        assert_eq!(sent.host_str(), Some("lookup.example"));
        assert_eq!(sent.port(), Some(8443));
        let segments: Vec<&str> = sent.path_segments().unwrap().collect();
        assert_eq!(segments.len(), 3, "{segments:?}");
        assert_eq!(segments[2], "2001:db8::1");
        let pairs: Vec<(String, String)> = sent.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("key".to_owned(), key.to_owned()),
                ("lang".to_owned(), "zh-CN".to_owned())
            ]
        );
        assert_eq!(
            percent_decode(segments[1]),
            seg,
            "the value is one whole segment"
        );

        // The user part: `:` and `@` escaped, so the host stays the host.
        let url = expand_url_env("https://${USER}:${PASS}@lookup.example/{ip}", &vars).unwrap();
        let parsed = reqwest::Url::parse(&url).unwrap();
        assert_eq!(parsed.host_str(), Some("lookup.example"));
        assert_eq!(percent_decode(parsed.username()), "me@home");
        assert_eq!(parsed.password().map(percent_decode).unwrap(), "p:w/d?");

        // A host that is not one is refused, not spliced in.
        let bad = |name: &str| (name == "HOST").then(|| "evil.example/x?".to_owned());
        let e = expand_url_env("https://${HOST}/v1/{ip}", &bad).unwrap_err();
        assert!(e.contains("HOST") && e.contains("host"), "{e}");
        let e = expand_url_env("https://h/{ip}?k=${NOPE}", &vars).unwrap_err();
        assert!(e.contains("NOPE") && e.contains("not set"), "{e}");
        // Plain values come through unchanged.
        let plain = |_: &str| Some("Abc-123_x.y~z".to_owned());
        assert_eq!(
            expand_url_env("https://h/${A}/{ip}?k=${B}", &plain).unwrap(),
            "https://h/Abc-123_x.y~z/{ip}?k=Abc-123_x.y~z"
        );
    }

    fn percent_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_bucket_refuses_a_wait_longer_than_allowed_and_keeps_the_token() {
        let b = Bucket::new(1.0, 2);
        assert!(b.take(Duration::ZERO).is_ok());
        assert!(b.take(Duration::ZERO).is_ok());
        let wait = b.take(Duration::from_millis(100)).unwrap_err();
        assert!(wait > Duration::from_millis(800), "{wait:?}");
        // The refused caller did not spend a token: the next wait is no longer.
        let again = b.take(Duration::from_millis(100)).unwrap_err();
        assert!(again <= wait, "{again:?} > {wait:?}");
    }

    #[test]
    fn a_full_cache_evicts_what_expires_soonest() {
        let c = AnswerCache::new(
            Duration::from_mins(1),
            Duration::from_mins(1),
            10,
            String::new(),
        );
        for i in 0..25u8 {
            c.insert(IpAddr::from([192, 0, 2, i]), None);
        }
        assert!(c.len() <= 10, "{}", c.len());
        assert!(
            c.get(IpAddr::from([192, 0, 2, 24])).is_some(),
            "the newest stays"
        );
        assert!(
            c.get(IpAddr::from([192, 0, 2, 0])).is_none(),
            "the oldest went"
        );
    }
}
