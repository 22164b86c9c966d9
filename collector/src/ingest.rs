//! The public listener's router: reports posted by probes.
//!
//! A report is answered 2xx only after staging has committed it. Anything
//! that is not a report on one of the configured paths gets the kind of 404
//! any web server gives, so that the endpoint does not stand out to a
//! meddling gateway that probes it. A `GET` on one of those paths serves
//! the signed manifest, as `GET /manifest` does.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use http_body_util::{BodyExt, Limited};
use ipnet::IpNet;
use lineprobe_shared::{EnvelopeHeaders, EnvelopeTls, ReceiverEnvelope, Report};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::metrics::{IngestOutcome, ListenerName, Metrics};
use crate::{
    Admission, CollectorConfig, ConnInfo, Error, PathSet, Proxied, SignatureVerifier, StageOutcome,
    Staging, Ticket, Traffic,
};

/// A request refused before staging: how to count it and what to answer.
type Rejected = Box<(IngestOutcome, Response)>;

/// Size and time limits of one ingest request.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest body as sent.
    pub max_body_bytes: usize,
    /// Largest report after decompression.
    pub max_decompressed_bytes: usize,
    /// Whole request, body and commit included.
    pub request_timeout: Duration,
}

/// Everything the ingest handlers share.
#[derive(Debug, Clone)]
pub struct IngestState {
    /// Where reports are committed.
    pub staging: Staging,
    /// The configured ingest paths.
    pub paths: Arc<PathSet>,
    /// This node's id, written into every envelope.
    pub node_id: Arc<str>,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Arc<[IpNet]>,
    /// Size and time limits.
    pub limits: IngestLimits,
    /// Requests handled at once; beyond it requests are shed.
    pub concurrency: Arc<Semaphore>,
    /// `Retry-After` seconds when staging is full.
    pub full_retry_after_secs: u64,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Signed probes: signature checks, and the enrolment paths.
    pub signatures: Arc<SignatureVerifier>,
    /// The enrolment path patterns (`signing.enrol_paths`).
    pub enrol_paths: Arc<PathSet>,
    /// Traffic accounting, budgets and trust.
    pub traffic: Arc<Traffic>,
}

impl IngestState {
    /// The state for `config`, over `staging`, counting into `metrics`,
    /// with `traffic` accounting: what the server serves (and the tests and
    /// the benchmark drive, so that they run what production runs).
    pub fn from_config(
        config: &CollectorConfig,
        staging: Staging,
        metrics: Arc<Metrics>,
        traffic: Arc<Traffic>,
    ) -> Result<Self, Error> {
        let paths = |key: &str, patterns: &[String]| {
            PathSet::parse(patterns).map_err(|reason| Error::Config {
                key: key.to_owned(),
                reason,
            })
        };
        Ok(Self {
            paths: Arc::new(paths("public.paths", &config.public.paths)?),
            enrol_paths: Arc::new(paths("signing.enrol_paths", &config.signing.enrol_paths)?),
            node_id: Arc::from(config.node_id.as_str()),
            trusted_proxies: Arc::from(config.public.trusted_proxies.clone()),
            limits: IngestLimits {
                max_body_bytes: config.limits.max_body_bytes,
                max_decompressed_bytes: config.limits.max_decompressed_bytes,
                request_timeout: config.request_timeout(),
            },
            concurrency: Arc::new(Semaphore::new(config.limits.max_concurrent_requests)),
            full_retry_after_secs: config.staging.full_retry_after_secs,
            signatures: SignatureVerifier::new(
                config.signing.clone(),
                staging.clone(),
                metrics.signatures.clone(),
            ),
            staging,
            metrics,
            traffic,
        })
    }
}

/// The public router: ingest on the configured paths (`POST`; `GET` there
/// serves the signed manifest), health checks, and an ordinary 404 for
/// everything else. The `/manifest` route is merged in by the server.
pub fn ingest_router(state: IngestState) -> Router {
    // One shared allocation: axum clones the state for every request, and
    // one reference count is cheaper than the dozen behind the fields.
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(ingest_or_not_found)
        .with_state(Arc::new(state))
}

/// Liveness: the process answers.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: staging would store a report now — it answers, is below its
/// bound and still takes changes. Anyone may ask, as often as they like:
/// the store answers from memory, reading the database at most once a
/// second for all of them ([`Staging::check_accepting`]).
async fn readyz(State(state): State<Arc<IngestState>>) -> Response {
    readiness(&state.staging, ListenerName::Public).await
}

/// Shared with the export listener's `/readyz`, where a full store is
/// ready: the puller is what empties it, and a load balancer that took the
/// export listener out of service for it would keep it full.
///
/// The answer says why in a few words only: the store's own messages name
/// files, and the public `/readyz` is on the internet. The details go to
/// the log.
pub(crate) async fn readiness(staging: &Staging, listener: ListenerName) -> Response {
    let reason = match staging.check_accepting().await {
        Ok(()) => return (StatusCode::OK, "ready\n").into_response(),
        Err(Error::StagingFull { .. }) if listener == ListenerName::Export => {
            return (StatusCode::OK, "ready\n").into_response();
        }
        Err(Error::StagingFull { .. }) => "staging is full",
        Err(Error::StagingClosed) => "shutting down",
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the staging store does not take reports");
            "staging is unavailable"
        }
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {reason}\n"),
    )
        .into_response()
}

/// The 404 a stock web server would give.
pub fn not_found() -> Response {
    const PAGE: &str = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
        <center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/html"))],
        PAGE,
    )
        .into_response()
}

async fn ingest_or_not_found(State(state): State<Arc<IngestState>>, request: Request) -> Response {
    if request.method() == Method::POST && state.enrol_paths.matches(request.uri().path()) {
        return enrol(&state, request).await;
    }
    let method = request.method();
    if (method == Method::GET || method == Method::HEAD)
        && state.paths.matches(request.uri().path())
    {
        // The manifest is served under the random paths as at /manifest;
        // while none is published the path gives the ordinary 404, like
        // any path that is not served, so that it does not stand out.
        return crate::export::serve_manifest(&state.staging, request.headers(), not_found);
    }
    if request.method() != Method::POST || !state.paths.matches(request.uri().path()) {
        state.metrics.ingest(IngestOutcome::NotFound);
        return not_found();
    }
    let mut ticket = match admit(&state, &request) {
        Ok(ticket) => ticket,
        Err(retry_after_secs) => {
            state.metrics.ingest(IngestOutcome::Throttled);
            return tarpit(&state, retry_after_secs).await;
        }
    };
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    // The body is read before a request slot is taken. The slots bound the
    // work of decoding, checking and storing; a client trickling its body
    // would otherwise hold one for the whole request timeout, and a few
    // dozen such clients a second would shed every probe. Reading is
    // bounded by the connection cap, the body limit and the timeout.
    let read = read_body(&state, &parts.headers, body).await;
    let (outcome, response) = match read {
        Err(rejected) => *rejected,
        // Shed instead of queueing: a queue only turns overload into
        // timeouts for everyone, while a prompt 503 lets the probe spool
        // and retry.
        Ok(bytes) => match Arc::clone(&state.concurrency).try_acquire_owned() {
            Ok(_permit) => ingest(&state, parts, bytes, started, ticket.as_mut()).await,
            Err(_) => (IngestOutcome::Shed, overloaded()),
        },
    };
    state.metrics.ingest(outcome);
    if let Some(ticket) = ticket {
        state.traffic.finish(&ticket, outcome);
    }
    response
}

/// A key enrolment: admitted like a report, then served by [`crate::enrol`].
async fn enrol(state: &IngestState, request: Request) -> Response {
    // The public listener's traffic limits are what bound how fast anyone
    // can enrol: an enrolment counts for its source with the source's
    // reports, and is throttled with them.
    let ticket = match admit(state, &request) {
        Ok(ticket) => ticket,
        Err(retry_after_secs) => {
            state.signatures.metrics().enrolment("throttled");
            return tarpit(state, retry_after_secs).await;
        }
    };
    let (response, outcome) = crate::enrol::enrol(
        &state.signatures,
        &state.trusted_proxies,
        state.limits.request_timeout,
        &state.concurrency,
        request,
    )
    .await;
    if let (Some(ticket), Some(outcome)) = (ticket, outcome) {
        state.traffic.finish(&ticket, outcome);
    }
    response
}

/// Accounts a request to its source before anything of the body is read:
/// `Err` with the `Retry-After` seconds when the source is in an anomaly
/// episode and over its budget. No ticket when the connection is unknown.
fn admit(state: &IngestState, request: &Request) -> Result<Option<Ticket>, u64> {
    let peer = request
        .extensions()
        .get::<ConnInfo>()
        .map(|conn| egress_address(conn, request.headers(), &state.trusted_proxies).0);
    match peer.map(|ip| state.traffic.admit(ip, request.uri().path())) {
        Some(Admission::Throttled { retry_after_secs }) => Err(retry_after_secs),
        Some(Admission::Proceed(ticket)) => Ok(Some(ticket)),
        None => Ok(None),
    }
}

/// The answer to a throttled request, after the tarpit's delay: a timer,
/// no request slot, the body left unread.
async fn tarpit(state: &IngestState, retry_after_secs: u64) -> Response {
    tokio::time::sleep(state.traffic.throttle_delay()).await;
    throttled(retry_after_secs)
}

/// 429: the source is flooding; the probe spools and retries later.
fn throttled(retry_after_secs: u64) -> Response {
    rejection(
        StatusCode::TOO_MANY_REQUESTS,
        "throttled",
        "too many requests from this source; retry later",
        Some(retry_after_secs),
    )
}

/// A report whose body has been read, from `started`: decoded, checked
/// and staged.
async fn ingest(
    state: &IngestState,
    parts: axum::http::request::Parts,
    bytes: Bytes,
    started: Instant,
    mut ticket: Option<&mut Ticket>,
) -> (IngestOutcome, Response) {
    let conn = parts.extensions.get::<ConnInfo>().cloned();
    let path = parts.uri.path().to_owned();

    if let Some(t) = ticket.as_deref_mut() {
        t.bytes = bytes.len() as u64;
    }
    // A body that is no report counts against its source alone, whatever
    // `install_id` it names: anyone can name any installation.
    let report = match Report::from_submitted_json(&bytes) {
        Ok(r) => r,
        Err(lineprobe_shared::Error::InvalidReport(violations)) => {
            let body = json!({
                "error": "invalid_report",
                "detail": "the report breaks the schema; fix the fields listed",
                "violations": violations,
            });
            return (
                IngestOutcome::Invalid,
                (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response(),
            );
        }
        Err(e) => {
            return (
                IngestOutcome::Invalid,
                rejection(
                    StatusCode::BAD_REQUEST,
                    "malformed_report",
                    &e.to_string(),
                    None,
                ),
            );
        }
    };

    let Some(conn) = conn else {
        // Every connection is served through the listener, which always
        // attaches ConnInfo; without it the egress address is unknown and
        // the report would be worthless to the pipeline.
        return (
            IngestOutcome::StorageError,
            rejection(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "no connection info",
                None,
            ),
        );
    };
    let signature = match state
        .signatures
        .check_report(&parts.headers, &bytes, &report)
        .await
    {
        Ok(checked) => checked,
        Err(rejected) => {
            // The receiver failing to read enrolled keys is its own fault:
            // counted as a storage error, never as a refusal of the source.
            let outcome = if rejected.outcome == crate::SignatureOutcome::StorageError {
                IngestOutcome::StorageError
            } else {
                IngestOutcome::SignatureRejected
            };
            return (outcome, rejected.into_response());
        }
    };
    // The installation is counted (and may be throttled) only now that the
    // report passed its signature check: unverified traffic naming it must
    // not throttle or discredit its own reports (see `Traffic::identify`).
    if let Some(t) = ticket.as_deref_mut()
        && let Err(secs) = state
            .traffic
            .identify(t, report.install_id.as_str(), signature.check)
    {
        // Not stored: the probe sends the same signed request again after
        // `Retry-After`, which the replay check must then let through.
        state.signatures.release(&signature);
        return (IngestOutcome::Throttled, throttled(secs));
    }
    let mut report = report;
    let mut envelope = envelope(state, &conn, &parts.headers, &path);
    // The report's trust at arrival: its units' scores and the signature
    // check (the signature alone when traffic accounting is off).
    let mut trust = ticket
        .as_deref()
        .and_then(|t| state.traffic.arrival_trust(t, signature.check))
        .unwrap_or_else(|| crate::signature_only_trust(signature.check));
    // The key that verified it: each node enrols keys on its own, so only
    // the internal side, seeing every node's reports, can tell two keys
    // signing for one installation at once (a cloned install_id).
    trust.key_id.clone_from(&signature.key_id);
    envelope.trust = Some(trust);
    // The internal side quarantines a stored report that breaks the schema,
    // and a 2xx tells the probe to forget it: the envelope added here (from
    // the request line, the connection and a proxy's word) is checked by
    // the same rules before the report can be acknowledged. The rest of the
    // report passed them on arrival and is unchanged, so the envelope alone
    // is checked (what the whole stored report's check would say).
    let recordable = Report::validate_envelope(&envelope);
    report.envelope = Some(envelope);
    let report_id = report.report_id.to_string();
    if let Err(e) = recordable {
        state.signatures.release(&signature);
        tracing::error!(%report_id, error = %e, "the receiver's envelope breaks the stored schema; not staged");
        return (
            IngestOutcome::Unrecordable,
            rejection(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the receiver could not record how the report arrived; retry later",
                Some(30),
            ),
        );
    }

    let remaining = state
        .limits
        .request_timeout
        .saturating_sub(started.elapsed());
    let staged =
        tokio::time::timeout(remaining, state.staging.stage_received(report, &bytes)).await;
    if !matches!(staged, Ok(Ok(_))) {
        // Not stored: the probe will send the same signed request again.
        state.signatures.release(&signature);
    }
    stage_response(state, &report_id, staged)
}

/// The body of a 2xx: written straight from borrowed fields, as every
/// stored report is answered with one.
#[derive(serde::Serialize)]
struct Staged<'a> {
    status: &'static str,
    report_id: &'a str,
    node_id: &'a str,
    seq: u64,
}

/// The answer to a staging attempt: 2xx only for a committed report.
fn stage_response(
    state: &IngestState,
    report_id: &str,
    staged: Result<Result<StageOutcome, Error>, tokio::time::error::Elapsed>,
) -> (IngestOutcome, Response) {
    match staged {
        Ok(Ok(StageOutcome::Stored { seq })) => (
            IngestOutcome::Stored,
            (
                StatusCode::CREATED,
                axum::Json(Staged {
                    status: "stored",
                    report_id,
                    node_id: &state.node_id,
                    seq,
                }),
            )
                .into_response(),
        ),
        Ok(Ok(StageOutcome::Duplicate { seq })) => (
            IngestOutcome::Duplicate,
            (
                StatusCode::OK,
                axum::Json(Staged {
                    status: "duplicate",
                    report_id,
                    node_id: &state.node_id,
                    seq,
                }),
            )
                .into_response(),
        ),
        Ok(Err(Error::StagingFull {
            retry_after_secs, ..
        })) => (
            IngestOutcome::StagingFull,
            rejection(
                StatusCode::SERVICE_UNAVAILABLE,
                "staging_full",
                "the receiver's store is full until the internal side catches up; retry later",
                Some(retry_after_secs.max(state.full_retry_after_secs)),
            ),
        ),
        Ok(Err(e @ Error::ReportTooLarge { .. })) => (
            IngestOutcome::TooLarge,
            rejection(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &e.to_string(),
                None,
            ),
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "staging failed; answering 503");
            (
                IngestOutcome::StorageError,
                rejection(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the report was not stored; retry later",
                    Some(30),
                ),
            )
        }
        // The commit may still land after this; the probe's retry then gets
        // `duplicate`, so the report is stored once either way.
        Err(_) => (
            IngestOutcome::Timeout,
            rejection(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the report was not confirmed stored in time; retry later",
                Some(5),
            ),
        ),
    }
}

/// Reads the body within the limits, decompressing gzip.
async fn read_body(
    state: &IngestState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, Rejected> {
    let limits = state.limits;
    let gzip_layers = gzip_layers(headers)?;
    check_content_type(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(too_large("body", limits.max_body_bytes));
    }
    let read = tokio::time::timeout(
        limits.request_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    let raw = match read {
        Err(_) => {
            return Err(Box::new((
                IngestOutcome::Timeout,
                rejection(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the body did not arrive in time",
                    None,
                ),
            )));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(too_large("body", limits.max_body_bytes));
        }
        Ok(Err(e)) => {
            return Err(Box::new((
                IngestOutcome::Aborted,
                rejection(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    &format!("cannot read the body: {e}"),
                    None,
                ),
            )));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    if gzip_layers == 0 {
        if raw.len() > limits.max_decompressed_bytes {
            return Err(too_large("report", limits.max_decompressed_bytes));
        }
        return Ok(raw);
    }
    // Every layer, the inner ones too, is held to the decompressed limit.
    let mut decoded = gunzip(&raw, limits.max_decompressed_bytes)?;
    for _ in 1..gzip_layers {
        decoded = gunzip(&decoded, limits.max_decompressed_bytes)?;
    }
    Ok(Bytes::from(decoded))
}

/// Most times gzip may have been applied to one body: a probe's own and one
/// more by something on the way. Each layer costs a decompression of up to
/// `limits.max_decompressed_bytes`, so the count must be small (a gzip
/// stream can even decompress to itself).
const MAX_GZIP_LAYERS: usize = 2;

/// How many times gzip was applied to the body, from every
/// `Content-Encoding` header and every element of their comma lists (RFC
/// 9110 §8.4: the codings in the order they were applied, repeated headers
/// being one list). `identity` is no coding; anything else, or gzip more
/// than [`MAX_GZIP_LAYERS`] times, is 415 naming it.
pub(crate) fn gzip_layers(headers: &HeaderMap) -> Result<usize, Rejected> {
    const HOW: &str = "send the report as JSON, optionally with Content-Encoding: gzip";
    let unsupported = |detail: String| -> Rejected {
        Box::new((
            IngestOutcome::UnsupportedMedia,
            rejection(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                &detail,
                None,
            ),
        ))
    };
    let mut layers = 0;
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let Ok(list) = value.to_str() else {
            return Err(unsupported(format!(
                "the Content-Encoding header is not plain ASCII: {HOW}"
            )));
        };
        for coding in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                layers += 1;
                if layers > MAX_GZIP_LAYERS {
                    return Err(unsupported(format!(
                        "the content coding \"gzip\" is applied more than \
                         {MAX_GZIP_LAYERS} times: {HOW}"
                    )));
                }
            } else if !coding.eq_ignore_ascii_case("identity") {
                let shown: String = coding.chars().take(64).collect();
                return Err(unsupported(format!(
                    "the content coding {shown:?} is not supported: {HOW}"
                )));
            }
        }
    }
    Ok(layers)
}

/// Checks `Content-Type`: JSON, when given.
fn check_content_type(headers: &HeaderMap) -> Result<(), Rejected> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        if !(ct.starts_with("application/json") || ct.contains("+json")) {
            return Err(Box::new((
                IngestOutcome::UnsupportedMedia,
                rejection(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the report with Content-Type: application/json",
                    None,
                ),
            )));
        }
    }
    Ok(())
}

/// Decompresses gzip within `limit` bytes: a gzip bomb stops at the limit
/// plus one byte.
///
/// Every member is decoded (RFC 1952 allows several, one after another, as
/// `cat a.gz b.gz` makes), and bytes after the last member that are not
/// another member are an error: a decoder that stopped after the first
/// member would take part of a report for all of it, and pass over
/// whatever was appended unseen.
fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, Rejected> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit + 1));
    let mut decoder = flate2::bufread::MultiGzDecoder::new(raw).take(limit as u64 + 1);
    if let Err(e) = decoder.read_to_end(&mut out) {
        return Err(Box::new((
            IngestOutcome::Invalid,
            rejection(
                StatusCode::BAD_REQUEST,
                "bad_gzip",
                &format!("the body is not valid gzip: {e}"),
                None,
            ),
        )));
    }
    if out.len() > limit {
        return Err(too_large("decompressed report", limit));
    }
    Ok(out)
}

fn too_large(what: &str, limit: usize) -> Rejected {
    Box::new((
        IngestOutcome::TooLarge,
        rejection(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("the {what} is larger than {limit} bytes"),
            None,
        ),
    ))
}

/// What the receiver adds to a report.
fn envelope(
    state: &IngestState,
    conn: &ConnInfo,
    headers: &HeaderMap,
    path: &str,
) -> ReceiverEnvelope {
    let mut recorded = EnvelopeHeaders::default();
    for name in EnvelopeHeaders::SELECTED {
        for value in headers.get_all(name) {
            recorded.insert(name, &String::from_utf8_lossy(value.as_bytes()));
        }
    }
    let (peer_ip, peer_port) = egress_address(conn, headers, &state.trusted_proxies);
    ReceiverEnvelope {
        received_at: Utc::now(),
        peer_ip,
        peer_port,
        path: recorded_path(path),
        headers: recorded,
        tls: conn.tls.as_ref().map(|t| EnvelopeTls {
            version: t.version.clone(),
            sni: t.sni.clone(),
        }),
        node_id: state.node_id.to_string(),
        seq: 0,
        trust: None,
    }
}

/// The request path as the envelope records it.
///
/// The stored schema takes the path as one token: no whitespace, no control
/// characters. The HTTP parser lets every byte from 0x80 up through, so a
/// path such as `/api/v1/\u{85}/report` (U+0085 as raw UTF-8) matches `*`
/// and would be stored as a report the internal side refuses. Such
/// characters are written percent-encoded, as a browser would send them;
/// everything else is kept as it came. The result is cut to
/// `MAX_PATH_LEN` characters at a whole character or escape.
fn recorded_path(path: &str) -> String {
    use std::fmt::Write as _;
    let max = lineprobe_shared::ReportLimits::MAX_PATH_LEN;
    let mut out = String::with_capacity(path.len().min(max));
    let mut chars = 0;
    for ch in path.chars() {
        if ch.is_whitespace() || ch.is_control() {
            let mut utf8 = [0; 4];
            let bytes = ch.encode_utf8(&mut utf8).as_bytes();
            if chars + 3 * bytes.len() > max {
                break;
            }
            for b in bytes {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{b:02X}");
            }
            chars += 3 * bytes.len();
        } else {
            if chars == max {
                break;
            }
            out.push(ch);
            chars += 1;
        }
    }
    out
}

/// The subscriber's egress address.
///
/// The socket peer, unless that peer is a trusted proxy: then the PROXY
/// protocol header it sent (already checked by the listener), else the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy,
/// else — only when no `X-Forwarded-For` was sent at all — `X-Real-IP`.
/// Headers from anyone else are recorded but never believed — a probe
/// behind a meddling gateway must not be able to claim another address.
///
/// On a connection that began with a PROXY header the forwarding headers
/// are never read, even when the header named no client (`LOCAL`,
/// `UNKNOWN`, no address family): the proxy works at layer 4 and passes
/// the client's HTTP headers on untouched, so they are the client's word.
/// The socket peer stands for the client then.
///
/// A trusted proxy's word is not believed where no client could be: an
/// unspecified address (`0.0.0.0`, `::`) from the PROXY header is taken as
/// no address, one in the forwarding headers is passed over as if absent,
/// and a port 0 is recorded as no port. The stored schema refuses both, so
/// believing them would get an acknowledged report quarantined inside.
pub fn egress_address(
    conn: &ConnInfo,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> (IpAddr, Option<u16>) {
    let port = |addr: SocketAddr| (addr.port() != 0).then_some(addr.port());
    let socket = (conn.peer.ip(), port(conn.peer));
    match conn.proxied {
        Some(Proxied::Client(p)) if !canonical(p.ip()).is_unspecified() => {
            return (p.ip(), port(p));
        }
        Some(_) => return socket,
        None => {}
    }
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&canonical(ip)));
    if !is_trusted(conn.peer.ip()) {
        return socket;
    }
    // Each element on its own, from the raw bytes: a client can put any
    // byte into the header it sends, and a proxy appending its peer with
    // `$proxy_add_x_forwarded_for` keeps it in the same header, so one bad
    // element must not cost the address the proxy appended after it.
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|element| std::str::from_utf8(element).ok())
        .filter_map(parse_forwarded_addr)
        .collect();
    if let Some(ip) = forwarded.iter().rev().find(|ip| !is_trusted(**ip)) {
        return (*ip, None);
    }
    if let Some(ip) = forwarded.first() {
        // Every hop was a trusted proxy: the left-most is the origin.
        return (*ip, None);
    }
    if headers.contains_key("x-forwarded-for") {
        // The proxy forwards with X-Forwarded-For, so an X-Real-IP is the
        // client's own word, passed on untouched.
        return socket;
    }
    if let Some(ip) = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_forwarded_addr)
    {
        return (ip, None);
    }
    socket
}

/// One `X-Forwarded-For` element: an address, possibly `[v6]:port` or
/// `v4:port`; `None` for anything else, and for an unspecified address,
/// which no client has.
fn parse_forwarded_addr(raw: &str) -> Option<IpAddr> {
    let s = raw.trim_ascii().trim_matches('"');
    let ip = if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else if let Ok(sa) = s.parse::<SocketAddr>() {
        sa.ip()
    } else {
        let inner = s.strip_prefix('[').and_then(|r| r.split(']').next())?;
        inner.parse::<IpAddr>().ok()?
    };
    Some(canonical(ip)).filter(|ip| !ip.is_unspecified())
}

/// IPv4-mapped IPv6 (from dual-stack sockets) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// 503: every request slot is taken (reports and enrolments alike).
pub(crate) fn overloaded() -> Response {
    rejection(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "the receiver is busy; retry later",
        Some(1),
    )
}

/// A JSON error: `{"error": code, "detail": sentence}`, with `Retry-After`.
fn rejection(status: StatusCode, code: &str, detail: &str, retry_after: Option<u64>) -> Response {
    let mut response =
        (status, axum::Json(json!({"error": code, "detail": detail}))).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(peer: &str, proxied: Option<&str>) -> ConnInfo {
        ConnInfo {
            peer: peer.parse().unwrap(),
            proxied: proxied.map(|p| Proxied::Client(p.parse().unwrap())),
            local: "127.0.0.1:8443".parse().unwrap(),
            tls: None,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn untrusted_peers_headers_are_not_believed() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-real-ip", "198.51.100.8"),
        ]);
        let (ip, port) = egress_address(&conn("203.0.113.5:40000", None), &h, &trusted);
        assert_eq!(ip.to_string(), "203.0.113.5");
        assert_eq!(port, Some(40000));
    }

    #[test]
    fn trusted_proxy_gives_rightmost_untrusted_forwarded_address() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "192.0.2.1, 198.51.100.7, 10.1.1.1")]);
        let (ip, port) = egress_address(&conn("10.0.0.2:5555", None), &h, &trusted);
        assert_eq!(ip.to_string(), "198.51.100.7");
        assert_eq!(port, None);
        // Repeated headers are one list.
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-for", "[2001:db8::9]:443"),
        ]);
        let (ip, _) = egress_address(&conn("10.0.0.2:5555", None), &h, &trusted);
        assert_eq!(ip.to_string(), "2001:db8::9");
    }

    #[test]
    fn trusted_proxy_falls_back_to_real_ip_then_socket() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-real-ip", "198.51.100.8")]);
        assert_eq!(
            egress_address(&conn("10.0.0.2:5555", None), &h, &trusted)
                .0
                .to_string(),
            "198.51.100.8"
        );
        let h = headers(&[("x-forwarded-for", "not an address")]);
        assert_eq!(
            egress_address(&conn("10.0.0.2:5555", None), &h, &trusted),
            ("10.0.0.2".parse().unwrap(), Some(5555))
        );
    }

    #[test]
    fn a_bad_forwarded_element_costs_only_itself_and_never_lets_real_ip_in() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // A client's `X-Forwarded-For: \xff` as nginx's
        // `$proxy_add_x_forwarded_for` passes it on: one header, the bad
        // element then the client's real address.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff, 203.0.113.9").unwrap(),
        );
        h.append("x-real-ip", HeaderValue::from_static("198.51.100.66"));
        let peer = conn("10.0.0.2:5555", None);
        assert_eq!(
            egress_address(&peer, &h, &trusted),
            ("203.0.113.9".parse().unwrap(), None)
        );
        // Elements that are not addresses are skipped, wherever they are.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"192.0.2.1,\t 198.51.100.7 ,caf\xc3\xa9, 10.1.1.1").unwrap(),
        );
        assert_eq!(
            egress_address(&peer, &h, &trusted).0.to_string(),
            "198.51.100.7"
        );
        // Nothing usable in X-Forwarded-For: the socket peer, not the
        // client-supplied X-Real-IP.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_bytes(b"\xff").unwrap());
        h.append("x-real-ip", HeaderValue::from_static("198.51.100.66"));
        assert_eq!(
            egress_address(&peer, &h, &trusted),
            ("10.0.0.2".parse().unwrap(), Some(5555))
        );
    }

    #[test]
    fn proxy_protocol_address_wins() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "192.0.2.1")]);
        let (ip, port) = egress_address(
            &conn("10.0.0.2:5555", Some("198.51.100.9:61000")),
            &h,
            &trusted,
        );
        assert_eq!(
            (ip.to_string(), port),
            ("198.51.100.9".to_owned(), Some(61000))
        );
    }

    #[test]
    fn behind_a_proxy_header_without_an_address_forwarding_headers_are_not_believed() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // A layer 4 proxy passes these on from the client untouched.
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-real-ip", "198.51.100.8"),
        ]);
        let local = ConnInfo {
            proxied: Some(Proxied::NoAddress),
            ..conn("10.0.0.2:5555", None)
        };
        assert_eq!(
            egress_address(&local, &h, &trusted),
            ("10.0.0.2".parse().unwrap(), Some(5555))
        );
        let h = headers(&[("x-real-ip", "198.51.100.8")]);
        assert_eq!(
            egress_address(&local, &h, &trusted),
            ("10.0.0.2".parse().unwrap(), Some(5555))
        );
        // A named source no client can have is passed over the same way.
        let unspecified = conn("10.0.0.2:5555", Some("0.0.0.0:40000"));
        assert_eq!(
            egress_address(&unspecified, &h, &trusted),
            ("10.0.0.2".parse().unwrap(), Some(5555))
        );
        // Without a PROXY header the same peer's headers are believed.
        assert_eq!(
            egress_address(&conn("10.0.0.2:5555", None), &h, &trusted)
                .0
                .to_string(),
            "198.51.100.8"
        );
    }

    async fn status_and_text(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let body = BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// A store in `dir` that is full with one report.
    fn staging_of_one(dir: &std::path::Path) -> Staging {
        let options = crate::StagingOptions::from_config(
            dir.join("staging.sqlite3"),
            "node-a".to_owned(),
            &crate::StagingConfig {
                max_reports: 1,
                ..crate::StagingConfig::default()
            },
        );
        Staging::open(options).expect("open")
    }

    #[tokio::test]
    async fn readiness_is_503_without_file_paths_once_the_store_stops_taking_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = staging_of_one(dir.path());
        for listener in [ListenerName::Public, ListenerName::Export] {
            let (status, _) = status_and_text(readiness(&staging, listener).await).await;
            assert_eq!(status, StatusCode::OK);
        }
        // After a failed sync ingest answers 503 until restart: so does
        // readiness, on both listeners, without the store's message.
        staging.fail_sync_for_test();
        for listener in [ListenerName::Public, ListenerName::Export] {
            let (status, text) = status_and_text(readiness(&staging, listener).await).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{listener:?}");
            assert_eq!(text, "not ready: staging is unavailable\n", "{listener:?}");
        }
        staging.close().await.expect("close");
        let (status, text) = status_and_text(readiness(&staging, ListenerName::Public).await).await;
        assert_eq!(
            (status, text.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: shutting down\n"
            )
        );
    }

    #[tokio::test]
    async fn a_full_store_is_ready_for_the_puller_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = staging_of_one(dir.path());
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../config/report.example.json");
        let mut report = Report::from_json(&std::fs::read(path).expect("read")).expect("report");
        report.envelope = Some(ReceiverEnvelope {
            received_at: Utc::now(),
            peer_ip: "203.0.113.9".parse().expect("ip"),
            peer_port: Some(40_000),
            path: "/api/v1/report".to_owned(),
            headers: EnvelopeHeaders::default(),
            tls: None,
            node_id: "node-a".to_owned(),
            trust: None,
            seq: 0,
        });
        staging.stage(report).await.expect("stage");
        let (status, text) = status_and_text(readiness(&staging, ListenerName::Public).await).await;
        assert_eq!(
            (status, text.as_str()),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: staging is full\n"
            )
        );
        let (status, _) = status_and_text(readiness(&staging, ListenerName::Export).await).await;
        assert_eq!(status, StatusCode::OK);
        staging.close().await.expect("close");
    }

    #[test]
    fn mapped_v4_peer_matches_v4_trusted_range() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        let (ip, _) = egress_address(&conn("[::ffff:10.0.0.2]:5555", None), &h, &trusted);
        assert_eq!(ip.to_string(), "198.51.100.7");
    }
}
