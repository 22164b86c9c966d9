//! The HTTP client of one collector's export API: `GET /export` pages and
//! `POST /export/ack`. The collector is outside the trust boundary, so every
//! answer is bounded and checked before anything of it is handed on.

use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Certificate, Identity, StatusCode, Url, redirect};
use serde::Deserialize;

use super::endpoint::{CollectorEndpoint, ExportSecret};
use super::ndjson::{PulledLine, read_line};
use crate::Error;

/// The collector's node id, on every export answer.
const NODE_HEADER: &str = "x-lineprobe-node";
/// The `after` of the next page.
const NEXT_AFTER_HEADER: &str = "x-lineprobe-next-after";
/// How many reports the page holds.
const COUNT_HEADER: &str = "x-lineprobe-count";
/// The collector's staging store (absent from collectors before it).
const STORE_HEADER: &str = "x-lineprobe-store";
/// The highest seq durable when the page was asked for (absent from
/// collectors before it).
const DURABLE_SEQ_HEADER: &str = "x-lineprobe-durable-seq";
/// The NDJSON media type of export pages.
const NDJSON: &str = "application/x-ndjson";
/// Most bytes read of an error answer or an ack answer.
const SMALL_BODY_LIMIT: u64 = 16 * 1024;
/// Most characters of collector-supplied text quoted in a message.
const QUOTE_CHARS: usize = 300;
/// Connecting never gets more than this, whatever the request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One page of reports from `GET /export`, checked for consistency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The node that answered (`X-LineProbe-Node`).
    pub node_id: String,
    /// The staging store the page came from (`X-LineProbe-Store`), when the
    /// collector says: its sequence numbers are unique only within it.
    pub store_id: Option<String>,
    /// The `after` of the next page: the last `seq` of this one, or the
    /// `after` asked for when the page is empty (caught up).
    pub next_after: u64,
    /// The reports, in strictly increasing `seq` order.
    pub reports: Vec<PulledLine>,
    /// The highest `seq` the collector had durably stored when it was asked
    /// (`X-LineProbe-Durable-Seq`), when it says: once `next_after` reaches
    /// it, every report it had received by then is pulled.
    pub durable_seq: Option<u64>,
}

impl Page {
    /// Whether this page reaches the end of the export as it was when the
    /// page was asked for (an empty page always does).
    pub fn reaches_the_end(&self) -> bool {
        self.reports.is_empty() || self.durable_seq.is_some_and(|d| self.next_after >= d)
    }
}

/// The collector's answer to an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckReceipt {
    /// Everything up to this `seq` is acknowledged on the collector.
    pub acked_up_to: u64,
    /// How many reports this request newly acknowledged (0 when repeated).
    pub newly_acked: u64,
}

/// A collector's answer to a published manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestAnswer {
    /// The HTTP status.
    pub status: u16,
    /// Whether the collector stored the manifest.
    pub accepted: bool,
    /// On a refusal as not newer: the serial the collector holds.
    pub current_serial: Option<u64>,
    /// What the collector said, in words.
    pub message: String,
}

/// Why a page was refused, split so that an oversized page can be asked
/// for again with a smaller batch.
#[derive(Debug)]
pub(crate) enum PageFault {
    /// The body exceeded `max_page_bytes`.
    TooLarge(String),
    /// Anything else.
    Other(String),
}

impl PageFault {
    pub(crate) fn message(&self) -> &str {
        match self {
            Self::TooLarge(m) | Self::Other(m) => m,
        }
    }
}

/// A client of one collector's export API.
#[derive(Debug, Clone)]
pub struct CollectorClient {
    endpoint: CollectorEndpoint,
    base: Url,
    pub(super) token: ExportSecret,
    pub(super) http: reqwest::Client,
}

impl CollectorClient {
    /// Validates `endpoint`, reads its token (from `token_env` in this
    /// process's environment when so configured), its CA file and client
    /// certificate, and builds the client.
    pub fn new(endpoint: &CollectorEndpoint) -> Result<Self, Error> {
        Self::with_env(endpoint, &|name| std::env::var(name).ok())
    }

    /// Like [`CollectorClient::new`], looking environment variables up with
    /// `lookup`.
    pub fn with_env(
        endpoint: &CollectorEndpoint,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        endpoint.validate()?;
        let config_error = |message: String| Error::CollectorConfig {
            name: endpoint.name.clone(),
            message,
        };
        let token = endpoint.resolve_token(lookup)?;
        let base = endpoint.base_url().map_err(config_error)?;
        let https = base.scheme() == "https";
        let timeout = endpoint.timeout();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            // A configured CA is the only one trusted (a private or pinned
            // certificate); without one, the public web PKI roots are.
            .tls_built_in_root_certs(endpoint.ca_file.is_none())
            .https_only(https)
            // A collector must not send the puller anywhere else (least of
            // all inward): redirects are answers like any other error.
            .redirect(redirect::Policy::none())
            .no_proxy()
            .no_gzip()
            .timeout(timeout)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .user_agent(concat!("lineprobe-sync/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &endpoint.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                config_error(format!("cannot read ca_file {}: {e}", path.display()))
            })?;
            let certs = Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| {
                    config_error(format!(
                        "ca_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                        path.display()
                    ))
                })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert_path), Some(key_path)) = (&endpoint.client_cert, &endpoint.client_key) {
            let read = |path: &std::path::Path, what: &str| {
                std::fs::read(path).map_err(|e| {
                    config_error(format!("cannot read {what} {}: {e}", path.display()))
                })
            };
            let mut pem = read(cert_path, "client_cert")?;
            pem.push(b'\n');
            pem.extend(read(key_path, "client_key")?);
            let identity = Identity::from_pem(&pem).map_err(|e| {
                config_error(format!(
                    "client_cert {} and client_key {} are not a PEM certificate and its \
                     private key (PKCS#8, RSA or SEC1): {e}",
                    cert_path.display(),
                    key_path.display()
                ))
            })?;
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| {
            config_error(format!(
                "cannot set up the HTTPS client (check ca_file, client_cert and \
                 client_key): {}",
                error_chain(&e)
            ))
        })?;
        Ok(Self {
            endpoint: endpoint.clone(),
            base,
            token,
            http,
        })
    }

    /// The collector's configured name.
    pub fn name(&self) -> &str {
        &self.endpoint.name
    }

    /// The configuration this client was built from.
    pub fn endpoint(&self) -> &CollectorEndpoint {
        &self.endpoint
    }

    /// Fetches the reports with `seq > after`, at most `limit`, and checks
    /// the page: an inconsistent page is an error and nothing of it is
    /// returned.
    pub async fn fetch_page(&self, after: u64, limit: usize) -> Result<Page, Error> {
        self.fetch(after, limit)
            .await
            .map_err(|fault| self.error(fault.message().to_owned()))
    }

    /// Acknowledges every report up to `up_to` from `node_id`, pulled from
    /// staging store `store` when the collector named one (a collector whose
    /// store was made afresh since then refuses it rather than marking
    /// reports never pulled).
    pub async fn ack(
        &self,
        node_id: &str,
        up_to: u64,
        store: Option<&str>,
    ) -> Result<AckReceipt, Error> {
        self.send_ack(node_id, up_to, store)
            .await
            .map_err(|message| self.error(message))
    }

    /// Publishes a signed probe manifest (`PUT /export/manifest`, the
    /// `SignedManifest` JSON as `body`) and says how the collector answered.
    /// Only a transport failure is an error: a refusal is an answer.
    pub async fn publish_manifest(&self, body: Vec<u8>) -> Result<ManifestAnswer, Error> {
        let request = self
            .http
            .put(self.url(&["export", "manifest"]))
            .bearer_auth(self.token.expose())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = send(request)
            .await
            .map_err(|e| self.error(self.transport_error("PUT /export/manifest", &e)))?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT || status == StatusCode::OK {
            return Ok(ManifestAnswer {
                status: status.as_u16(),
                accepted: true,
                current_serial: None,
                message: "accepted".to_owned(),
            });
        }
        let body = read_small(response).await.unwrap_or_default();
        let json = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let current_serial = json
            .as_ref()
            .and_then(|v| v.get("current_serial"))
            .and_then(serde_json::Value::as_u64);
        let detail = json
            .as_ref()
            .and_then(|v| v.get("detail"))
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| quote(&String::from_utf8_lossy(&body)), quote);
        let hint = match status {
            StatusCode::UNAUTHORIZED => "the collector refused the export token",
            StatusCode::FORBIDDEN => {
                "the collector's manifest.public_key does not match the back office's \
                 manifest_key"
            }
            StatusCode::CONFLICT => "the collector holds a manifest with a serial as high",
            StatusCode::SERVICE_UNAVAILABLE => {
                "the collector has no manifest.public_key, or is shutting down"
            }
            s if s.is_redirection() => "the collector answered with a redirect (not followed)",
            _ => "the collector refused the manifest",
        };
        Ok(ManifestAnswer {
            status: status.as_u16(),
            accepted: false,
            current_serial,
            message: if detail.is_empty() {
                format!("{status}: {hint}")
            } else {
                format!("{status}: {hint} (collector said: {detail:?})")
            },
        })
    }

    /// The signed manifest the collector holds now (`GET
    /// /export/manifest`), as it serves it; `None` when it holds none.
    pub async fn held_manifest(&self) -> Result<Option<Vec<u8>>, Error> {
        let request = self
            .http
            .get(self.url(&["export", "manifest"]))
            .bearer_auth(self.token.expose());
        let response = send(request)
            .await
            .map_err(|e| self.error(self.transport_error("GET /export/manifest", &e)))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status != StatusCode::OK {
            return Err(self.error(format!("GET /export/manifest answered {status}")));
        }
        let most = lineprobe_shared::MAX_SIGNED_MANIFEST_BYTES;
        let body = read_at_most(response, most + 1)
            .await
            .map_err(|e| self.error(self.transport_error("GET /export/manifest", &e)))?;
        if body.len() > most {
            return Err(self.error(format!(
                "GET /export/manifest answered more than {most} bytes"
            )));
        }
        Ok(Some(body))
    }

    pub(super) fn error(&self, message: String) -> Error {
        Error::Collector {
            name: self.endpoint.name.clone(),
            message,
        }
    }

    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `base_url` has checked that the URL has a host, so it can be a base.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// The page, or why it was refused.
    pub(crate) async fn fetch(&self, after: u64, limit: usize) -> Result<Page, PageFault> {
        let mut url = self.url(&["export"]);
        url.query_pairs_mut()
            .append_pair("after", &after.to_string())
            .append_pair("limit", &limit.to_string());
        let request = self
            .http
            .get(url)
            .bearer_auth(self.token.expose())
            .header(header::ACCEPT, NDJSON);
        let response = send(request)
            .await
            .map_err(|e| PageFault::Other(self.transport_error("GET /export", &e)))?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(PageFault::Other(
                self.status_error("GET /export", response).await,
            ));
        }
        let headers = response.headers().clone();
        let node_id = node_header(&headers).map_err(PageFault::Other)?;
        let store_id = store_header(&headers).map_err(PageFault::Other)?;
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(NDJSON))
        {
            return Err(PageFault::Other(format!(
                "GET /export answered with Content-Type {:?}, not {NDJSON}: is `url` the \
                 collector's export listener?",
                quote(content_type)
            )));
        }
        let count = number_header(&headers, COUNT_HEADER).map_err(PageFault::Other)?;
        let next_after = number_header(&headers, NEXT_AFTER_HEADER).map_err(PageFault::Other)?;
        let durable_seq = headers
            .contains_key(DURABLE_SEQ_HEADER)
            .then(|| number_header(&headers, DURABLE_SEQ_HEADER))
            .transpose()
            .map_err(PageFault::Other)?;
        let body = self.read_capped(response).await?;
        let page = check_page(&body, after, limit, count, next_after).map_err(PageFault::Other)?;
        Ok(Page {
            node_id,
            store_id,
            next_after,
            reports: page,
            durable_seq,
        })
    }

    /// Reads the body with a running limit of `max_page_bytes`.
    async fn read_capped(&self, mut response: reqwest::Response) -> Result<Vec<u8>, PageFault> {
        let cap = self.endpoint.max_page_bytes;
        let too_large = || {
            PageFault::TooLarge(format!(
                "the page is larger than max_page_bytes ({cap} bytes); raise max_page_bytes \
                 or lower batch"
            ))
        };
        if response.content_length().is_some_and(|n| n > cap) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            // The collector answered, so it is up: the page itself came too
            // slowly for the time allowed (a slow link, a large batch).
            PageFault::Other(if e.is_timeout() {
                format!(
                    "the page did not arrive within timeout_s ({} s): the collector answered \
                     but sent only {} bytes of it in time; raise timeout_s or lower batch \
                     ({})",
                    self.endpoint.timeout_s,
                    body.len(),
                    error_chain(&e)
                )
            } else {
                self.transport_error("reading the page", &e)
            })
        })? {
            if (body.len() as u64).saturating_add(chunk.len() as u64) > cap {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn send_ack(
        &self,
        node_id: &str,
        up_to: u64,
        store: Option<&str>,
    ) -> Result<AckReceipt, String> {
        #[derive(Deserialize)]
        struct Answer {
            node_id: String,
            acked_up_to: u64,
            newly_acked: u64,
        }
        let mut body = serde_json::json!({ "node_id": node_id, "up_to": up_to });
        if let Some(store) = store {
            body["store"] = store.into();
        }
        let request = self
            .http
            .post(self.url(&["export", "ack"]))
            .bearer_auth(self.token.expose())
            .json(&body);
        let response = send(request)
            .await
            .map_err(|e| self.transport_error("POST /export/ack", &e))?;
        if response.status() != StatusCode::OK {
            return Err(self.status_error("POST /export/ack", response).await);
        }
        let text = read_small(response)
            .await
            .map_err(|e| self.transport_error("reading the ack answer", &e))?;
        let answer: Answer = serde_json::from_slice(&text).map_err(|e| {
            format!(
                "POST /export/ack answered 200 with an unreadable body ({e}): {:?}",
                quote(&String::from_utf8_lossy(&text))
            )
        })?;
        if answer.node_id != node_id {
            return Err(format!(
                "POST /export/ack was answered by node {:?}, not {node_id:?}",
                quote(&answer.node_id)
            ));
        }
        Ok(AckReceipt {
            acked_up_to: answer.acked_up_to,
            newly_acked: answer.newly_acked,
        })
    }

    /// A message for a failed request: timeouts and TLS named as such.
    pub(super) fn transport_error(&self, what: &str, e: &reqwest::Error) -> String {
        let chain = error_chain(e);
        if let Some(hint) = tls_hint(&chain) {
            return format!("{what} failed: {chain}; {hint}");
        }
        if never_sent(e) && self.base.scheme() == "https" {
            // Twice closed before the request went out (see `send`): the
            // alert that says why never reached the request, so say what
            // such a close after a finished handshake almost always is.
            let hint = if self.endpoint.client_cert.is_some() {
                "the collector most likely refused the client certificate: use one signed \
                 by a CA in its export.client_ca"
            } else {
                "the collector most likely requires a client certificate: set client_cert \
                 and client_key to one signed by a CA in its export.client_ca"
            };
            return format!(
                "{what} failed: {chain}; the connection closed right after the TLS \
                 handshake, before the request was sent: {hint}"
            );
        }
        if e.is_timeout() {
            format!(
                "{what} timed out after {} s (timeout_s): is the collector at {} up and \
                 reachable? ({chain})",
                self.endpoint.timeout_s, self.base
            )
        } else if e.is_connect() {
            format!(
                "{what}: cannot connect to {} ({chain}); check `url` and that the \
                 collector's export listener is running{}",
                self.base,
                if self.base.scheme() == "https" {
                    ", and for TLS errors that ca_file holds its certificate (and \
                     client_cert/client_key when it requires one)"
                } else {
                    ""
                }
            )
        } else {
            format!("{what} failed: {chain}")
        }
    }

    /// A message for a non-200 answer, quoting the collector's `detail`.
    pub(super) async fn status_error(&self, what: &str, response: reqwest::Response) -> String {
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(quote);
        let detail = match read_small(response).await {
            Ok(body) => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(quote))
                .unwrap_or_else(|| quote(&String::from_utf8_lossy(&body))),
            Err(_) => String::new(),
        };
        let hint = match status {
            StatusCode::UNAUTHORIZED => format!(
                "the collector refused the export token: check `token`/`token_env` against \
                 the collector's export.token (LINEPROBE_EXPORT_TOKEN) for {}",
                self.endpoint.name
            ),
            StatusCode::NOT_FOUND => {
                "no export API at this URL: point `url` at the collector's export listener"
                    .to_owned()
            }
            StatusCode::CONFLICT => "the collector refused the acknowledgement".to_owned(),
            s if s.is_redirection() => format!(
                "the collector answered with a redirect{}; redirects are not followed: set \
                 `url` to the export listener itself",
                location.map(|l| format!(" to {l:?}")).unwrap_or_default()
            ),
            s if s.is_server_error() => {
                "the collector failed or is shutting down; retried next round".to_owned()
            }
            _ => "unexpected answer".to_owned(),
        };
        if detail.is_empty() {
            format!("{what}: {status}: {hint}")
        } else {
            format!("{what}: {status}: {hint} (collector said: {detail:?})")
        }
    }
}

/// Sends `request`, and once more when the connection closed before the
/// request went out. Under TLS 1.3 a collector checks a client certificate
/// only after the handshake, so its refusal can close the connection before
/// the request is written: that first attempt fails without the TLS alert
/// saying why, and a second one, on a new connection, reads the alert. A
/// request that was never sent is safe to send again, and every export
/// request is idempotent anyway.
async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, reqwest::Error> {
    let again = request.try_clone();
    match request.send().await {
        Err(e) if never_sent(&e) => match again {
            Some(again) => again.send().await,
            None => Err(e),
        },
        answer => answer,
    }
}

/// Whether the request failed before any of it was sent (hyper cancels a
/// request whose connection closed before it was dispatched).
fn never_sent(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// What to do about a TLS failure, recognised from its text (rustls names
/// the alert or the certificate error; reqwest offers no finer kind).
fn tls_hint(chain: &str) -> Option<&'static str> {
    if chain.contains("CertificateRequired") {
        Some(
            "the collector requires a client certificate: set client_cert and client_key to \
             one signed by a CA in its export.client_ca",
        )
    } else if chain.contains("fatal alert: UnknownCA")
        || chain.contains("fatal alert: BadCertificate")
        || chain.contains("fatal alert: CertificateUnknown")
    {
        Some(
            "the collector refused the client certificate: use one signed by a CA in its \
             export.client_ca",
        )
    } else if chain.contains("invalid peer certificate") {
        Some(
            "the collector's certificate is not trusted: set ca_file to its certificate (a \
             generated one is its data_dir/tls/cert.pem) or to the CA that signed it, and \
             use a host name or address the certificate names",
        )
    } else if chain.contains("invalid HTTP version parsed") {
        Some("the listener did not answer HTTP: if it serves HTTPS, use an https:// url")
    } else {
        None
    }
}

/// Reads at most [`SMALL_BODY_LIMIT`] bytes of a body.
async fn read_small(response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    read_at_most(
        response,
        usize::try_from(SMALL_BODY_LIMIT).unwrap_or(usize::MAX),
    )
    .await
}

/// Reads at most `limit` bytes of a body (the rest is left unread).
async fn read_at_most(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(body)
}

/// The node header: present and a plain node id.
fn node_header(headers: &HeaderMap) -> Result<String, String> {
    let value = headers.get(NODE_HEADER).ok_or_else(|| {
        "the page has no X-LineProbe-Node header: is `url` a LineProbe collector's export \
         listener?"
            .to_owned()
    })?;
    let text = value.to_str().unwrap_or_default();
    let valid = (1..=64).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "X-LineProbe-Node {:?} is not a node id (1 to 64 letters, digits, '-', '_', '.')",
            quote(&String::from_utf8_lossy(value.as_bytes()))
        ))
    }
}

/// The store header, when present: 32 hexadecimal digits.
fn store_header(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get(STORE_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(Some(text.to_ascii_lowercase()))
    } else {
        Err(format!(
            "X-LineProbe-Store {:?} is not a store id (32 hexadecimal digits)",
            quote(&String::from_utf8_lossy(value.as_bytes()))
        ))
    }
}

/// A required whole-number header.
fn number_header(headers: &HeaderMap, name: &str) -> Result<u64, String> {
    let value: Option<&HeaderValue> = headers.get(name);
    let Some(value) = value else {
        return Err(format!(
            "the page has no {name} header: the collector does not follow the export contract"
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            format!(
                "the {name} header {:?} is not a whole number",
                quote(&String::from_utf8_lossy(value.as_bytes()))
            )
        })
}

/// Splits and reads the lines, and checks them against the request and the
/// headers.
fn check_page(
    body: &[u8],
    after: u64,
    limit: usize,
    count: u64,
    next_after: u64,
) -> Result<Vec<PulledLine>, String> {
    // The collector ends every line with a line break. A page whose last
    // line has none was cut short on the way (a connection closed early,
    // with no length to tell): were the cut line's seq still readable, it
    // would be stored as a damaged report and acknowledged, and the
    // collector would drop the whole one.
    if let Some(tail) = body.rsplit(|b| *b == b'\n').next()
        && !tail.iter().all(u8::is_ascii_whitespace)
    {
        return Err(
            "the page ends inside a line (its last report has no line break): the answer \
             was cut short on the way; it is pulled again next round"
                .to_owned(),
        );
    }
    let mut reports: Vec<PulledLine> = Vec::new();
    for (index, raw) in body.split(|b| *b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let number = index + 1;
        if reports.len() >= limit {
            return Err(format!(
                "the page holds more than the {limit} reports asked for"
            ));
        }
        let (pulled, well_formed) =
            read_line(line).map_err(|e| format!("line {number} of the page: {}", e.0))?;
        if pulled.seq <= after {
            return Err(format!(
                "line {number} has seq {} but only seqs after {after} were asked for",
                pulled.seq
            ));
        }
        if let Some(last) = reports.last()
            && pulled.seq <= last.seq
        {
            return Err(format!(
                "line {number} has seq {} after seq {}: seqs are not strictly increasing",
                pulled.seq, last.seq
            ));
        }
        if !well_formed {
            tracing::warn!(
                seq = pulled.seq,
                "a pulled line is not well-formed JSON; kept as raw bytes for the pipeline"
            );
        }
        reports.push(pulled);
    }
    if reports.len() as u64 != count {
        return Err(format!(
            "X-LineProbe-Count says {count} reports but the page holds {}",
            reports.len()
        ));
    }
    let expected = reports.last().map_or(after, |r| r.seq);
    if next_after != expected {
        return Err(format!(
            "X-LineProbe-Next-After is {next_after} but the page ends at seq {expected}"
        ));
    }
    Ok(reports)
}

/// Collector-supplied text, cut short and without control characters, fit
/// to quote in a log line.
fn quote(text: &str) -> String {
    text.chars()
        .take(QUOTE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// An error and its causes, `: `-joined (reqwest hides the useful part in
/// the sources).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
