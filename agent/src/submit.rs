//! Sending a report: the endpoints in order until one accepts, each attempt
//! bounded by a connect and a total timeout, every failure kept as evidence
//! (a carrier blocking the receiver shows up as DNS, connect, TLS or
//! timeout failures in the next report).
//!
//! Requests look like ordinary browser traffic: a path drawn from the
//! configured patterns, browser-like headers, and optionally a fronting TLS
//! server name and `Host`. The agent never goes through a configured proxy:
//! the report must leave through the line it describes.

use std::error::Error as _;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use lineprobe_shared::{AttemptOutcome, EndpointAttempt, InstallId, Report, ReportLimits};
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::config::{Endpoint, Settings, fill_pattern};
use crate::signing::{Mode, Signer};

/// A browser's `User-Agent`: a probe that announces itself is easy to block.
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

/// How the HTTPS clients are built.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Time to set up TCP and TLS.
    pub connect_timeout: Duration,
    /// Time for a whole request.
    pub request_timeout: Duration,
    /// CA certificates trusted besides the web roots.
    pub pinned_roots: Vec<reqwest::Certificate>,
    /// Lab use only: accept any certificate.
    pub insecure_skip_verify: bool,
}

impl TransportOptions {
    /// Reads the pinned CA file (PEM, one or more certificates).
    pub fn load_pinned(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, Error> {
        let pem = std::fs::read(path).map_err(|source| Error::Io {
            what: format!("cannot read endpoints.ca_file {}", path.display()),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Config {
            key: "endpoints.ca_file".to_owned(),
            reason: format!("{} is not PEM certificates: {e}", path.display()),
        })?;
        // A file with no certificate block at all (a key, or the wrong file)
        // would otherwise pin nothing, and every endpoint would then fail
        // its TLS check with a message that does not point here.
        if certs.is_empty() {
            return Err(Error::Config {
                key: "endpoints.ca_file".to_owned(),
                reason: format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA \
                     certificate the endpoints' certificates are signed with",
                    path.display()
                ),
            });
        }
        Ok(certs)
    }

    /// A client for `endpoint`; `front_addrs` pins the fronting name to
    /// the endpoint's own addresses.
    fn client(&self, front: Option<(&str, &[SocketAddr])>) -> Result<reqwest::Client, Error> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .default_headers(browser_headers());
        for root in &self.pinned_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        if self.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some((name, addrs)) = front {
            builder = builder.resolve_to_addrs(name, addrs);
        }
        builder.build().map_err(|e| Error::Config {
            key: "endpoints".to_owned(),
            reason: format!("cannot set up HTTPS: {e}"),
        })
    }
}

fn browser_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/plain, */*"),
    );
    headers.insert(
        header::ACCEPT_LANGUAGE,
        HeaderValue::from_static("zh-CN,zh;q=0.9,en;q=0.8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers
}

/// How a submission ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Delivery {
    /// Stored now (201).
    Stored {
        /// The endpoint that took it.
        endpoint: String,
    },
    /// The collector already had it (200 duplicate): stored once, earlier.
    Duplicate {
        /// The endpoint that said so.
        endpoint: String,
    },
}

impl Delivery {
    /// The endpoint that accepted the report.
    pub fn endpoint(&self) -> &str {
        match self {
            Self::Stored { endpoint } | Self::Duplicate { endpoint } => endpoint,
        }
    }
}

/// Why no endpoint took the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undelivered {
    /// An endpoint said the report is invalid; it is not sent elsewhere.
    Rejected {
        /// Who said so.
        endpoint: String,
        /// The status.
        status: u16,
        /// The collector's explanation.
        detail: String,
    },
    /// Every endpoint failed; worth retrying later.
    Unreachable {
        /// The longest `Retry-After` any endpoint asked for.
        retry_after: Option<Duration>,
    },
}

/// One submission: the result and every attempt made, this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// Delivered or not.
    pub result: Result<Delivery, Undelivered>,
    /// Each endpoint tried, in order, the last one included.
    pub attempts: Vec<EndpointAttempt>,
}

/// Sends reports to the endpoints of one [`Settings`].
#[derive(Debug, Clone)]
pub struct Submitter {
    settings: Settings,
    transport: TransportOptions,
    plain: reqwest::Client,
    signer: Option<Signer>,
}

impl Submitter {
    /// A submitter; fails only if TLS cannot be set up.
    pub fn new(settings: Settings, transport: TransportOptions) -> Result<Self, Error> {
        let plain = transport.client(None)?;
        Ok(Self {
            settings,
            transport,
            plain,
            signer: None,
        })
    }

    /// Signs uploads with `signer`, enrolling at each endpoint first.
    #[must_use]
    pub(crate) fn with_signer(mut self, signer: Option<Signer>) -> Self {
        self.signer = signer;
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The request to `endpoint` for `path`: the fronting name in the URL
    /// (so it is the TLS server name) pinned to the endpoint's addresses.
    async fn request(
        &self,
        method: reqwest::Method,
        endpoint: &Endpoint,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, EndpointAttempt> {
        let mut url = endpoint.join(path);
        let client = match &endpoint.sni {
            None => self.plain.clone(),
            Some(sni) => {
                let host = endpoint
                    .url
                    .host_str()
                    .unwrap_or_default()
                    .trim_matches(['[', ']']);
                let port = endpoint.url.port_or_known_default().unwrap_or(443);
                // reqwest bounds its own lookups by the connect timeout;
                // this one is ours to bound.
                let lookup = tokio::net::lookup_host((host, port));
                let addrs: Vec<SocketAddr> =
                    match tokio::time::timeout(self.transport.connect_timeout, lookup).await {
                        Ok(Ok(found)) => found.collect(),
                        Ok(Err(e)) => {
                            return Err(attempt(
                                endpoint,
                                AttemptOutcome::Dns,
                                None,
                                Some(e.to_string()),
                            ));
                        }
                        Err(_) => {
                            return Err(attempt(
                                endpoint,
                                AttemptOutcome::Dns,
                                None,
                                Some(format!(
                                    "no answer from the resolver within {} s",
                                    self.transport.connect_timeout.as_secs_f64()
                                )),
                            ));
                        }
                    };
                if url.set_host(Some(sni)).is_err() {
                    return Err(attempt(
                        endpoint,
                        AttemptOutcome::Dns,
                        None,
                        Some(format!("{sni:?} is not a usable server name")),
                    ));
                }
                self.transport.client(Some((sni, &addrs))).map_err(|e| {
                    attempt(endpoint, AttemptOutcome::Tls, None, Some(e.to_string()))
                })?
            }
        };
        let mut builder = client.request(method, url);
        if let Some(host) = endpoint.host.as_deref().or(endpoint.sni.as_deref()) {
            let authority = match endpoint.url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            };
            if let Ok(value) = HeaderValue::from_str(&authority) {
                builder = builder.header(header::HOST, value);
            }
        }
        Ok(builder)
    }

    /// Tries every endpoint in order until one accepts. Each failed attempt
    /// is appended to `report.endpoint_attempts` before the next endpoint is
    /// tried, so the endpoint that accepts learns how the others failed.
    pub async fn submit(&self, report: &mut Report) -> Submission {
        let mut attempts = Vec::new();
        let mut retry_after: Option<Duration> = None;
        for endpoint in &self.settings.endpoints {
            let path = self.settings.random_path(&mut rand::thread_rng());
            let body = match report.to_json() {
                Ok(body) => body,
                Err(e) => {
                    return Submission {
                        result: Err(Undelivered::Rejected {
                            endpoint: endpoint.as_str().to_owned(),
                            status: 0,
                            detail: format!("the report cannot be encoded: {e}"),
                        }),
                        attempts,
                    };
                }
            };
            let (outcome, answer) = self.send_report(endpoint, &path, body, report).await;
            attempts.push(outcome.clone());
            match answer {
                Answer::Accepted(delivery) => {
                    return Submission {
                        result: Ok(delivery),
                        attempts,
                    };
                }
                Answer::Invalid { status, detail } => {
                    return Submission {
                        result: Err(Undelivered::Rejected {
                            endpoint: endpoint.as_str().to_owned(),
                            status,
                            detail,
                        }),
                        attempts,
                    };
                }
                Answer::Failed {
                    retry_after: ra, ..
                } => {
                    retry_after = retry_after.max(ra);
                    push_attempt(report, outcome);
                }
            }
        }
        Submission {
            result: Err(Undelivered::Unreachable { retry_after }),
            attempts,
        }
    }

    /// Sends a report to one endpoint, signed when the agent signs and the
    /// endpoint knows enrolment; enrols first when needed, and once more
    /// (or corrects the clock) when the collector says so.
    async fn send_report(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: Vec<u8>,
        report: &Report,
    ) -> (EndpointAttempt, Answer) {
        let report_id = report.report_id.to_string();
        let Some(signer) = &self.signer else {
            return self.post(endpoint, path, body, &report_id, None).await;
        };
        let name = endpoint.as_str();
        let install_id = &report.install_id;
        if signer.mode(name) == Mode::Enrol {
            self.enrol(signer, endpoint, install_id).await;
        }
        let mut again = true;
        loop {
            let signature = match signer.mode(name) {
                Mode::Unsigned => None,
                Mode::Sign | Mode::Enrol => {
                    match signer.sign_report(name, install_id, &report_id, &body) {
                        Ok(header) => Some(header),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot sign the report; sending it unsigned");
                            None
                        }
                    }
                }
            };
            let (attempt, answer) = self
                .post(endpoint, path, body.clone(), &report_id, signature)
                .await;
            if let Answer::Failed {
                error: Some(code),
                server_time,
                ..
            } = &answer
                && again
            {
                again = false;
                match (code.as_str(), server_time) {
                    // `signature_required`: the collector knows this
                    // probe's key or takes only signed reports, so it knows
                    // enrolment whatever an earlier 404 to it said (a
                    // captive portal's page, a node restarting): unsigned,
                    // every report would be refused until the day-long
                    // recheck.
                    ("unknown_key" | "signature_required", _) => {
                        signer.forget(name);
                        self.enrol(signer, endpoint, install_id).await;
                        continue;
                    }
                    ("stale_timestamp", Some(t)) => {
                        signer.clock(name, *t);
                        continue;
                    }
                    _ => {}
                }
            }
            return (attempt, answer);
        }
    }

    /// Enrols the probe's key at `endpoint` and records what came of it.
    async fn enrol(&self, signer: &Signer, endpoint: &Endpoint, install_id: &InstallId) {
        let name = endpoint.as_str();
        for _ in 0..2 {
            let patterns = signer.enrol_patterns();
            let index = rand::Rng::gen_range(&mut rand::thread_rng(), 0..patterns.len().max(1));
            let Some(pattern) = patterns.get(index) else {
                return;
            };
            let path = fill_pattern(pattern, &mut rand::thread_rng());
            let (body, signature) = match signer.enrolment(name, install_id) {
                Ok(made) => made,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot make the key enrolment; reports go unsigned");
                    signer.unsupported(name);
                    return;
                }
            };
            let Ok(builder) = self.request(reqwest::Method::POST, endpoint, &path).await else {
                return;
            };
            let sent = builder
                .header(header::CONTENT_TYPE, "application/json")
                .header(lineprobe_shared::SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(endpoint = name, error = %e, "key enrolment failed");
                    return;
                }
            };
            let status = response.status();
            let text = match read_capped(response, MAX_ANSWER_BYTES).await {
                Ok(body) => String::from_utf8_lossy(&body).into_owned(),
                Err(fault) => {
                    tracing::info!(endpoint = name, error = %fault.describe().1, "key enrolment failed");
                    return;
                }
            };
            let answer: Option<CollectorAnswer> = serde_json::from_str(&text).ok();
            let server_time = answer.as_ref().and_then(|a| a.server_time);
            // As with reports, only the collector's own receipt counts: a
            // gateway's 200 page enrols nothing, and the next report asks
            // again.
            if status.is_success() {
                let receipt = answer.as_ref().and_then(|a| a.status.as_deref());
                if matches!(
                    receipt,
                    Some("enrolled" | "already_enrolled" | "key_changed")
                ) {
                    tracing::info!(endpoint = name, "probe key enrolled");
                    signer.enrolled(name, server_time);
                    return;
                }
                tracing::warn!(
                    endpoint = name,
                    status = status.as_u16(),
                    answer = %snippet(&text),
                    "an answer to the key enrolment that is not a collector's receipt"
                );
                return;
            }
            if status == reqwest::StatusCode::NOT_FOUND {
                // A collector that predates signing: send unsigned.
                signer.unsupported(name);
                return;
            }
            let code = answer.as_ref().and_then(|a| a.error.as_deref());
            if let (Some("stale_timestamp"), Some(t)) = (code, server_time) {
                signer.clock(name, t);
                continue;
            }
            tracing::warn!(
                endpoint = name,
                status = status.as_u16(),
                answer = %snippet(&text),
                "the collector refused the key enrolment"
            );
            return;
        }
    }

    async fn post(
        &self,
        endpoint: &Endpoint,
        path: &str,
        body: Vec<u8>,
        report_id: &str,
        signature: Option<String>,
    ) -> (EndpointAttempt, Answer) {
        let builder = match self.request(reqwest::Method::POST, endpoint, path).await {
            Ok(b) => b,
            Err(failed) => return (failed, Answer::failed(None)),
        };
        let mut builder = builder.header(header::CONTENT_TYPE, "application/json");
        if let Some(signature) = signature {
            builder = builder.header(lineprobe_shared::SIGNATURE_HEADER, signature);
        }
        let sent = builder.body(body).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let (outcome, detail) = classify(&e);
                return (
                    attempt(endpoint, outcome, None, Some(detail)),
                    Answer::failed(None),
                );
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, chrono::Utc::now()));
        let code = status.as_u16();
        let text = match read_capped(response, MAX_ANSWER_BYTES).await {
            Ok(body) => String::from_utf8_lossy(&body).into_owned(),
            Err(fault) => {
                let (outcome, detail) = fault.describe();
                return (
                    attempt(endpoint, outcome, Some(code), Some(detail)),
                    Answer::failed(retry_after),
                );
            }
        };
        judge(endpoint, code, &text, retry_after, report_id)
    }

    /// `GET /manifest` from every endpoint, in order: the bodies of the
    /// 200s with their endpoints, and the failures. Every endpoint is asked:
    /// one that keeps serving an old manifest (stale, or compromised and
    /// replaying it) must not hide a newer one elsewhere.
    pub async fn fetch_manifests(&self) -> (Vec<(String, Vec<u8>)>, Vec<EndpointAttempt>) {
        let mut served = Vec::new();
        let mut failures = Vec::new();
        for endpoint in &self.settings.endpoints {
            let builder = match self
                .request(reqwest::Method::GET, endpoint, "/manifest")
                .await
            {
                Ok(b) => b,
                Err(failed) => {
                    failures.push(failed);
                    continue;
                }
            };
            match builder.send().await {
                Ok(r) if r.status().is_success() => {
                    let code = r.status().as_u16();
                    match read_capped(r, lineprobe_shared::MAX_SIGNED_MANIFEST_BYTES).await {
                        Ok(body) => served.push((endpoint.as_str().to_owned(), body)),
                        Err(fault) => {
                            let (outcome, detail) = fault.describe();
                            failures.push(attempt(endpoint, outcome, Some(code), Some(detail)));
                        }
                    }
                }
                Ok(r) => failures.push(attempt(
                    endpoint,
                    AttemptOutcome::HttpStatus,
                    Some(r.status().as_u16()),
                    None,
                )),
                Err(e) => {
                    let (outcome, detail) = classify(&e);
                    failures.push(attempt(endpoint, outcome, None, Some(detail)));
                }
            }
        }
        (served, failures)
    }
}

enum Answer {
    Accepted(Delivery),
    Invalid {
        status: u16,
        detail: String,
    },
    Failed {
        retry_after: Option<Duration>,
        /// The collector's error code, when it answered with one.
        error: Option<String>,
        /// The collector's clock, when it said.
        server_time: Option<i64>,
    },
}

impl Answer {
    fn failed(retry_after: Option<Duration>) -> Self {
        Self::Failed {
            retry_after,
            error: None,
            server_time: None,
        }
    }
}

/// The JSON the collector answers with.
#[derive(Debug, Deserialize)]
struct CollectorAnswer {
    status: Option<String>,
    report_id: Option<String>,
    error: Option<String>,
    detail: Option<String>,
    violations: Option<serde_json::Value>,
    server_time: Option<i64>,
}

impl CollectorAnswer {
    fn describe(&self) -> String {
        let mut out = [self.error.as_deref(), self.detail.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        if let Some(v) = &self.violations {
            let _ = write!(out, " {v}");
        }
        cut(&out)
    }
}

/// What a collector's answer (status `code`, body `text`) to the upload of
/// report `report_id` says: stored, refused for good, or failed this time.
/// A `Retry-After` value: delay seconds (what the collector sends) or an
/// HTTP date (what a proxy or CDN in front of it may send), read against
/// `now`; a date already past means no wait beyond the agent's own.
fn retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - now).to_std().ok()
}

fn judge(
    endpoint: &Endpoint,
    code: u16,
    text: &str,
    retry_after: Option<Duration>,
    report_id: &str,
) -> (EndpointAttempt, Answer) {
    let json: Option<CollectorAnswer> = serde_json::from_str(text).ok();
    if (200..300).contains(&code) {
        // Only the collector's own receipt for this report means it is
        // stored: a captive portal, a filtering gateway or a misrouted
        // proxy may answer 200 to anything, and believing it would
        // delete a report nobody kept.
        let receipt = json.as_ref().and_then(|j| {
            if j.report_id.as_deref() != Some(report_id) {
                return None;
            }
            match j.status.as_deref() {
                Some("stored") => Some(false),
                Some("duplicate") => Some(true),
                _ => None,
            }
        });
        let Some(duplicate) = receipt else {
            return (
                attempt(
                    endpoint,
                    AttemptOutcome::HttpStatus,
                    Some(code),
                    Some(cut(&format!(
                        "answered {code} without a collector's receipt for the report: {}",
                        snippet(text)
                    ))),
                ),
                Answer::failed(None),
            );
        };
        let name = endpoint.as_str().to_owned();
        let delivery = if duplicate {
            Delivery::Duplicate { endpoint: name }
        } else {
            Delivery::Stored { endpoint: name }
        };
        return (
            attempt(endpoint, AttemptOutcome::Ok, Some(code), None),
            Answer::Accepted(delivery),
        );
    }
    let detail = json
        .as_ref()
        .map_or_else(|| snippet(text), CollectorAnswer::describe);
    let failed = attempt(
        endpoint,
        AttemptOutcome::HttpStatus,
        Some(code),
        Some(detail.clone()),
    );
    // Only the collector's own verdict on the report ends the round: a
    // 404 from a gateway, a 403 from a filter, a 413 or 422 page from a
    // web application firewall (often JSON with an `error` of its own)
    // says nothing about it, and the report is deleted on that verdict.
    // So only the collector's codes for a report it will never take
    // count; anything else (a body cut off in transit, a refused
    // signature header: the agent's fault, not the report's) keeps the
    // report for the next endpoint and the next round.
    let says_invalid = json
        .as_ref()
        .and_then(|j| j.error.as_deref())
        .is_some_and(|error| refuses_the_report(code, error));
    if says_invalid {
        (
            failed,
            Answer::Invalid {
                status: code,
                detail,
            },
        )
    } else {
        (
            failed,
            Answer::Failed {
                retry_after,
                error: json.as_ref().and_then(|j| j.error.clone()),
                server_time: json.as_ref().and_then(|j| j.server_time),
            },
        )
    }
}

/// Largest answer read to a report upload or an enrolment: the collector's
/// receipts and refusals are a few hundred bytes, a refusal listing
/// violations a few KB.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why an answer's body was not read.
enum BodyFault {
    /// The connection failed while reading it.
    Transport(reqwest::Error),
    /// It was longer than the limit (counted after decompression: whatever
    /// answers in the endpoint's name may send a gzip bomb).
    TooLarge(usize),
}

impl BodyFault {
    /// The attempt's outcome and detail.
    fn describe(&self) -> (AttemptOutcome, String) {
        match self {
            Self::Transport(e) => classify(e),
            Self::TooLarge(limit) => (
                AttemptOutcome::HttpStatus,
                format!("the answer is longer than {limit} bytes; not read further"),
            ),
        }
    }
}

/// The body of `response`, at most `limit` bytes of it after decoding.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyFault> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyFault::Transport)? {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(BodyFault::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether a refusal with `status` and JSON `error` is the collector's own
/// verdict that it will never take the report (so sending it again, here
/// or elsewhere, is pointless): the schema's refusal, a body it cannot
/// read as a report, one too large, or one in a form it does not take.
fn refuses_the_report(status: u16, error: &str) -> bool {
    matches!(
        (status, error),
        (422, "invalid_report")
            | (400, "malformed_report" | "bad_gzip")
            | (413, "too_large")
            | (415, "unsupported_media_type" | "unsupported_encoding")
    )
}

fn snippet(text: &str) -> String {
    cut(text.trim())
}

fn cut(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ReportLimits::MAX_DETAIL_LEN)
        .collect()
}

fn attempt(
    endpoint: &Endpoint,
    outcome: AttemptOutcome,
    http_status: Option<u16>,
    detail: Option<String>,
) -> EndpointAttempt {
    let name: String = endpoint
        .as_str()
        .chars()
        .take(ReportLimits::MAX_ENDPOINT_LEN)
        .collect();
    EndpointAttempt {
        endpoint: name,
        at: Utc::now().fixed_offset(),
        outcome,
        http_status,
        detail: detail.map(|d| cut(&d)).filter(|d| !d.is_empty()),
    }
}

/// Adds an attempt to the report's evidence, dropping the oldest beyond the
/// schema's limit: the latest failures say most about the line now.
pub(crate) fn push_attempt(report: &mut Report, attempt: EndpointAttempt) {
    report.endpoint_attempts.push(attempt);
    let excess = report
        .endpoint_attempts
        .len()
        .saturating_sub(ReportLimits::MAX_ENDPOINT_ATTEMPTS);
    report.endpoint_attempts.drain(..excess);
}

/// How far a failed request got, from reqwest's error chain.
fn classify(err: &reqwest::Error) -> (AttemptOutcome, String) {
    // The top-level message names the URL, whose random path could contain
    // any word: classify on the causes only.
    let mut causes = Vec::new();
    let mut source = err.source();
    while let Some(inner) = source {
        causes.push(inner.to_string());
        source = inner.source();
    }
    let lower = causes.join(": ").to_ascii_lowercase();
    let outcome = if err.is_timeout() || lower.contains("timed out") {
        AttemptOutcome::Timeout
    } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
        AttemptOutcome::Dns
    } else if ["certificate", "tls", "handshake", "alert", "peer sent"]
        .iter()
        .any(|w| lower.contains(w))
    {
        AttemptOutcome::Tls
    } else {
        AttemptOutcome::Connect
    };
    let detail = if causes.is_empty() {
        {
            let text = err.to_string();
            text.split(" for url (").next().unwrap_or(&text).to_owned()
        }
    } else {
        causes.join(": ")
    };
    (outcome, detail)
}
