//! The export API: the only door the internal side uses, and it is the one
//! that knocks. On the export listener, behind a bearer token (and, at the
//! TLS layer, an optional client certificate), the puller pages through
//! committed reports in `seq` order, acknowledges what it has stored, and
//! publishes the signed probe manifest. The public listener only serves that
//! manifest back to probes ([`manifest_routes`]).
//!
//! The `OpenAPI` document of this API is generated from the handlers below
//! ([`export_openapi_json`]), committed as `collector/openapi/export-v1.json`
//! and served at `GET /export/openapi.json` without a token: it describes
//! the contract and holds nothing secret, and a client should be able to read
//! the contract before it has been given the credential.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use lineprobe_shared::{
    MAX_SIGNED_MANIFEST_BYTES, ManifestFault, ManifestVerifyingKey, SignedManifest,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::{CollectorConfig, Error, ExportedReport, ManifestConfig, Metrics, Staging};

/// Response header: the node that answered.
pub const NODE_HEADER: &str = "x-lineprobe-node";
/// Response header on `GET /export`: pass it as `after` to get the next page.
pub const NEXT_AFTER_HEADER: &str = "x-lineprobe-next-after";
/// Response header on `GET /export`: how many reports the page holds.
pub const COUNT_HEADER: &str = "x-lineprobe-count";
/// The staging store's id (see [`crate::Staging::store_id`]).
pub const STORE_HEADER: &str = "x-lineprobe-store";
/// Response header on `GET /export`: the highest `seq` durably stored when
/// the request arrived. A page whose next `after` reaches it has brought
/// the puller to the end of the export as of then.
pub const DURABLE_SEQ_HEADER: &str = "x-lineprobe-durable-seq";
/// Response header carrying the serial of the manifest served.
pub const MANIFEST_SERIAL_HEADER: &str = "x-lineprobe-manifest-serial";
/// The NDJSON media type of `GET /export`.
pub const NDJSON: &str = "application/x-ndjson";

/// Largest request body on the export listener: acks are tiny and a signed
/// manifest has its own bound.
const BODY_LIMIT: usize = MAX_SIGNED_MANIFEST_BYTES + 4096;

/// The bearer token of the export API. Compared in constant time; its
/// `Debug` never shows it. Empty means the API is disabled.
#[derive(Clone)]
pub struct ExportToken(Arc<str>);

impl std::fmt::Debug for ExportToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_disabled() {
            f.write_str("ExportToken(disabled)")
        } else {
            f.write_str("ExportToken(<redacted>)")
        }
    }
}

impl ExportToken {
    /// Wraps the configured token (`export.token` / `LINEPROBE_EXPORT_TOKEN`).
    pub fn new(token: impl Into<String>) -> Self {
        Self(Arc::from(token.into()))
    }

    /// True when no token is configured: every request is refused.
    pub fn is_disabled(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks the `Authorization: Bearer …` header; the error says why not.
    fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        if self.is_disabled() {
            return Err(
                "the export API is disabled on this collector: set export.token (or \
                        LINEPROBE_EXPORT_TOKEN) to enable it",
            );
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err("send `Authorization: Bearer <export token>`");
        };
        let presented = value
            .as_bytes()
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .and_then(|_| value.as_bytes().get(7..))
            .ok_or("use the Bearer scheme: `Authorization: Bearer <export token>`")?;
        // Constant time over the content; only the length can leak, and the
        // configured token is at least 32 random characters.
        if bool::from(presented.ct_eq(self.0.as_bytes())) {
            Ok(())
        } else {
            Err("the bearer token is not the configured export token")
        }
    }
}

/// What the export router needs (cheap to clone).
#[derive(Debug, Clone)]
pub struct ExportState {
    /// The staging store reports are exported from.
    pub staging: Staging,
    /// The bearer token; empty disables the API.
    pub token: ExportToken,
    /// This node's id: named in responses, required in acknowledgements.
    pub node_id: Arc<str>,
    /// Most reports one page returns (also the default page size).
    pub max_batch: usize,
    /// The key published manifests must be signed with; `None` refuses
    /// publishing with 503.
    pub manifest_key: Option<ManifestVerifyingKey>,
    /// Where exported reports are counted; `None`: not counted.
    pub metrics: Option<Arc<Metrics>>,
}

impl ExportState {
    /// The state for `config` (its manifest key read per
    /// [`load_manifest_key`]), counting into `metrics`.
    pub fn from_config(
        config: &CollectorConfig,
        staging: Staging,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, Error> {
        Ok(Self {
            staging,
            token: ExportToken::new(config.export.token.clone()),
            node_id: Arc::from(config.node_id.as_str()),
            max_batch: config.export.max_batch,
            manifest_key: load_manifest_key(&config.manifest)?,
            metrics,
        })
    }
}

/// Reads `manifest.public_key`: empty gives `None`; `file:PATH` reads a PEM
/// (or base64) file; anything else is base64 of the 32 raw bytes or PEM text.
pub fn load_manifest_key(config: &ManifestConfig) -> Result<Option<ManifestVerifyingKey>, Error> {
    const KEY: &str = "manifest.public_key";
    let value = config.public_key.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let text = if let Some(path) = value.strip_prefix("file:") {
        std::fs::read_to_string(Path::new(path)).map_err(|e| Error::Config {
            key: KEY.to_owned(),
            reason: format!("cannot read the public key file {path}: {e}"),
        })?
    } else {
        value.to_owned()
    };
    ManifestVerifyingKey::parse(&text)
        .map(Some)
        .map_err(|e| Error::Config {
            key: KEY.to_owned(),
            reason: format!(
                "{e}; write base64 of the 32 raw Ed25519 public-key bytes, or `file:` and the \
                 path of a PEM `PUBLIC KEY` file"
            ),
        })
}

/// The export API, to serve on the export listener only.
pub fn export_router(state: ExportState) -> Router {
    let authenticated = Router::new()
        .route("/export", get(list_reports))
        .route("/export/ack", post(ack_reports))
        .route(
            "/export/manifest",
            get(export_current_manifest).put(publish_manifest),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(authenticated)
        .route("/export/openapi.json", get(openapi_json))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Puts `routes` (served on the export listener) behind the export token.
pub(crate) fn with_token(routes: Router, state: &ExportState) -> Router {
    routes.route_layer(middleware::from_fn_with_state(state.clone(), require_token))
}

/// `GET /manifest` for probes, to mount on the public listener: the current
/// signed manifest as published, or 404 when none has been. The ingest
/// router serves the same on `GET` of its own paths.
pub fn manifest_routes(staging: Staging) -> Router {
    Router::new()
        .route("/manifest", get(public_manifest))
        .with_state(staging)
}

async fn require_token(State(state): State<ExportState>, request: Request, next: Next) -> Response {
    match state.token.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(detail) => {
            let mut response = api_error(StatusCode::UNAUTHORIZED, "unauthorized", detail);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lineprobe-export\""),
            );
            response
        }
    }
}

/// The JSON body of every error answer of the export API.
#[derive(Debug, Serialize, ToSchema)]
struct ApiError {
    /// A stable code: `unauthorized`, `bad_query`, `bad_request`, `bad_ack`,
    /// `invalid_manifest`, `manifest_signature`, `manifest_not_newer`,
    /// `manifest_key_not_configured`, `not_found`, `shutting_down`, `staging_failed`.
    error: String,
    /// What was wrong and what to do about it.
    detail: String,
    /// On `manifest_not_newer`: the serial of the manifest the collector holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    current_serial: Option<u64>,
}

fn api_error(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    let body = ApiError {
        error: code.to_owned(),
        detail: detail.into(),
        current_serial: None,
    };
    (status, axum::Json(body)).into_response()
}

/// Maps a staging failure to an answer; the puller retries 5xx later.
fn staging_error(err: &Error) -> Response {
    match err {
        Error::BadAck(detail) => api_error(StatusCode::CONFLICT, "bad_ack", detail.clone()),
        Error::StagingClosed => {
            let mut response = api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the collector is shutting down; retry shortly",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
        other => {
            tracing::error!(error = %other, "export: staging failed");
            api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "staging_failed",
                other.to_string(),
            )
        }
    }
}

/// The answer to a body that could not be read: axum's own rejection (413
/// past [`BODY_LIMIT`]) is plain text, and a client reads every error of this
/// API as `{"error", "detail"}`.
fn body_refused(rejection: &BytesRejection, expected: &str) -> Response {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        api_error(
            status,
            "too_large",
            format!("the body is over the {BODY_LIMIT} bytes this API reads; send {expected}"),
        )
    } else {
        api_error(status, "bad_request", rejection.body_text())
    }
}

async fn not_found() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such export endpoint; see GET /export/openapi.json",
    )
}

/// The query of `GET /export`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    /// Return reports with a `seq` above this one (0, the default: from the
    /// first report still kept).
    #[serde(default)]
    after: u64,
    /// Most reports to return, from 1; defaults to and is capped by the
    /// collector's `export.max_batch`.
    #[param(minimum = 1)]
    limit: Option<usize>,
}

/// Committed reports after a sequence number, in `seq` order.
#[utoipa::path(
    get,
    path = "/export",
    tag = "export",
    params(ExportQuery),
    responses(
        (status = 200,
         description = "Committed reports with `seq` above `after`, in `seq` order, one stored \
                        report JSON document (envelope included) per line. An empty body means \
                        the puller has caught up.",
         content_type = "application/x-ndjson", body = String,
         headers(
             ("X-LineProbe-Node" = String, description = "The node that answered"),
             ("X-LineProbe-Next-After" = u64,
              description = "The last `seq` returned (or `after` when none): the `after` of the \
                             next page"),
             ("X-LineProbe-Count" = u64, description = "How many reports the page holds"),
             ("X-LineProbe-Durable-Seq" = u64,
              description = "The highest `seq` durably stored when the request arrived: once \
                             `X-LineProbe-Next-After` reaches it, the puller holds every report \
                             the collector had received by then (a page is cut by `limit` and \
                             by size, so a short page does not say so by itself)"),
             ("X-LineProbe-Store" = String,
              description = "The staging store's id, drawn at random when the store was made: \
                             sequence numbers are only unique within one store, so a puller \
                             that sees it change knows the collector numbers its reports \
                             afresh"),
         )),
        (status = 400, description = "The query is not `after=SEQ&limit=N`", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token, or the API is disabled",
         body = ApiError),
        (status = 500, description = "The staging store failed", body = ApiError),
        (status = 503, description = "The collector is shutting down", body = ApiError),
    )
)]
async fn list_reports(
    State(state): State<ExportState>,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!(
                    "{}; use ?after=SEQ&limit=N with whole numbers",
                    rejection.body_text()
                ),
            );
        }
    };
    let max = state.max_batch.max(1);
    let limit = match query.limit {
        Some(0) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("limit must be at least 1 (at most {max} are returned)"),
            );
        }
        Some(limit) => limit.min(max),
        None => max,
    };
    // Read before the page: the page then holds every report up to it that
    // its limits allow.
    let durable_seq = state.staging.durable_seq();
    match state.staging.export_after(query.after, limit).await {
        Ok(reports) => {
            if let Some(metrics) = &state.metrics {
                metrics.exported(u64::try_from(reports.len()).unwrap_or(u64::MAX));
            }
            let mut page = ndjson_page(
                &state.node_id,
                state.staging.store_id(),
                query.after,
                reports,
            );
            page.headers_mut().insert(
                HeaderName::from_static(DURABLE_SEQ_HEADER),
                HeaderValue::from(durable_seq),
            );
            page
        }
        Err(err) => staging_error(&err),
    }
}

/// The size from which a page's body frame is sent: a few TLS records.
const FRAME_BYTES: usize = 64 * 1024;

fn ndjson_page(
    node_id: &str,
    store_id: &str,
    after: u64,
    reports: Vec<ExportedReport>,
) -> Response {
    let next_after = reports.last().map_or(after, |r| r.seq);
    let count = reports.len();
    let mut reports = reports.into_iter();
    // Reports go out gathered into frames of FRAME_BYTES or more: two frames
    // a report (the document, its line break) made the server write, and
    // the puller wake, every couple of reports, which cost more CPU on both
    // sides than the reports' own handling.
    let frames = std::iter::from_fn(move || {
        let mut frame = Vec::with_capacity(FRAME_BYTES + FRAME_BYTES / 4);
        for report in reports.by_ref() {
            // One document per line is the framing: raw line breaks can
            // only be insignificant whitespace in JSON, so dropping them is
            // safe.
            let line_break = |b: &u8| *b == b'\n' || *b == b'\r';
            if report.json.iter().any(line_break) {
                frame.extend(report.json.iter().filter(|b| !line_break(b)));
            } else {
                frame.extend_from_slice(&report.json);
            }
            frame.push(b'\n');
            if frame.len() >= FRAME_BYTES {
                break;
            }
        }
        (!frame.is_empty()).then(|| Bytes::from(frame))
    });
    let body = Body::from_stream(futures_util::stream::iter(
        frames.map(Ok::<Bytes, Infallible>),
    ));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    insert_node(headers, node_id);
    headers.insert(
        HeaderName::from_static(NEXT_AFTER_HEADER),
        HeaderValue::from(next_after),
    );
    headers.insert(
        HeaderName::from_static(COUNT_HEADER),
        HeaderValue::from(count),
    );
    if let Ok(value) = HeaderValue::from_str(store_id) {
        headers.insert(HeaderName::from_static(STORE_HEADER), value);
    }
    response
}

fn insert_node(headers: &mut HeaderMap, node_id: &str) {
    // The configuration only admits header-safe node ids; anything else is
    // left out rather than answered with an error.
    if let Ok(value) = HeaderValue::from_str(node_id) {
        headers.insert(HeaderName::from_static(NODE_HEADER), value);
    }
}

/// An acknowledgement: everything up to `up_to` is safely stored inside.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    /// The node the reports came from (`X-LineProbe-Node`).
    node_id: String,
    /// The highest `seq` the puller has committed; at most the highest `seq`
    /// this node has assigned.
    up_to: u64,
    /// The staging store the reports were pulled from (`X-LineProbe-Store`
    /// of the pages). When given, an acknowledgement reaching a store made
    /// afresh under the same node id (whose seqs started over) is refused
    /// instead of marking reports nobody pulled.
    #[serde(default)]
    store: Option<String>,
}

/// An acknowledgement as the error answers describe it.
const ACK_SHAPE: &str =
    "{\"node_id\": \"<node>\", \"up_to\": <seq>, \"store\": \"<X-LineProbe-Store>\"}";

/// What an acknowledgement did.
#[derive(Debug, Serialize, ToSchema)]
struct AckResponse {
    /// This node.
    node_id: String,
    /// Everything up to this `seq` is now acknowledged.
    acked_up_to: u64,
    /// How many reports this request newly acknowledged (0 when repeated).
    newly_acked: u64,
}

/// Acknowledges reports up to a sequence number.
#[utoipa::path(
    post,
    path = "/export/ack",
    tag = "export",
    request_body(content = AckRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Acknowledged (repeating an ack is harmless)",
         body = AckResponse),
        (status = 400, description = "The body is not `{\"node_id\", \"up_to\"}`",
         body = ApiError),
        (status = 401, description = "Missing or wrong bearer token, or the API is disabled",
         body = ApiError),
        (status = 409, description = "A bogus ack (another node, or beyond the highest `seq` \
                                      on disk, the last an export can have returned): refused, \
                                      nothing changed", body = ApiError),
        (status = 413, description = "The body is over the size limit (`too_large`)",
         body = ApiError),
        (status = 500, description = "The staging store failed", body = ApiError),
        (status = 503, description = "The collector is shutting down", body = ApiError),
    )
)]
async fn ack_reports(
    State(state): State<ExportState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_refused(&rejection, ACK_SHAPE),
    };
    let request: AckRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{err}; send {ACK_SHAPE}"),
            );
        }
    };
    if request.node_id != *state.node_id {
        return api_error(
            StatusCode::CONFLICT,
            "bad_ack",
            format!(
                "this collector is node {:?}, not {:?}; acknowledge reports to the node they \
                 were pulled from",
                &*state.node_id,
                request.node_id.chars().take(64).collect::<String>()
            ),
        );
    }
    if let Some(store) = &request.store
        && store != state.staging.store_id()
    {
        return api_error(
            StatusCode::CONFLICT,
            "bad_ack",
            format!(
                "the reports were pulled from store {:?}, but this node's store is now {:?}                  (it was made afresh and its seqs started over): nothing acknowledged; pull                  this node again from the start",
                store.chars().take(64).collect::<String>(),
                state.staging.store_id()
            ),
        );
    }
    match state.staging.ack(&request.node_id, request.up_to).await {
        Ok(outcome) => {
            let mut response = axum::Json(AckResponse {
                node_id: request.node_id,
                acked_up_to: outcome.acked_up_to,
                newly_acked: outcome.newly_acked,
            })
            .into_response();
            insert_node(response.headers_mut(), &state.node_id);
            response
        }
        Err(err) => staging_error(&err),
    }
}

/// The signed manifest wire form (`lineprobe_shared::SignedManifest`).
#[derive(Debug, ToSchema)]
#[schema(as = SignedManifest)]
#[allow(
    dead_code,
    reason = "only documents the shared type's shape in the OpenAPI document"
)]
struct SignedManifestDoc {
    /// Standard base64 (with padding) of the exact manifest JSON bytes signed.
    payload: String,
    /// Standard base64 of the 64-byte Ed25519 signature over those bytes.
    signature: String,
    /// The first 8 bytes of the SHA-256 of the raw 32-byte public key, as 16
    /// lowercase hex digits.
    key_id: String,
}

/// Publishes a signed probe manifest.
#[utoipa::path(
    put,
    path = "/export/manifest",
    tag = "manifest",
    request_body(content = SignedManifestDoc, content_type = "application/json"),
    responses(
        (status = 204, description = "Verified and stored: probes get it from `GET /manifest` \
                                      on the public listener"),
        (status = 400, description = "Not a signed manifest, or the signed manifest is \
                                      invalid or expired", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token, or the API is disabled",
         body = ApiError),
        (status = 403, description = "Signed with another key, or the signature does not \
                                      verify against `manifest.public_key`", body = ApiError),
        (status = 409, description = "Its serial is not newer than the stored manifest's \
                                      (`current_serial`)", body = ApiError),
        (status = 413, description = "The body is over the size limit (`too_large`)",
         body = ApiError),
        (status = 500, description = "The staging store failed", body = ApiError),
        (status = 503, description = "No `manifest.public_key` is configured, or the \
                                      collector is shutting down", body = ApiError),
    )
)]
async fn publish_manifest(
    State(state): State<ExportState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_refused(&rejection, "one signed manifest"),
    };
    let Some(key) = state.manifest_key else {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "manifest_key_not_configured",
            "this collector has no manifest public key: set manifest.public_key in its \
             configuration to accept published manifests",
        );
    };
    let verified = SignedManifest::from_json(&body).and_then(|signed| {
        let manifest = signed.verify(&key)?;
        Ok((signed, manifest))
    });
    let (signed, manifest) = match verified {
        Ok(pair) => pair,
        Err(lineprobe_shared::Error::Manifest { fault, reason }) => {
            let (status, code) = match fault {
                ManifestFault::UnknownKey | ManifestFault::BadSignature => {
                    (StatusCode::FORBIDDEN, "manifest_signature")
                }
                _ => (StatusCode::BAD_REQUEST, "invalid_manifest"),
            };
            tracing::warn!(%reason, "refused a published manifest");
            return api_error(status, code, reason);
        }
        Err(other) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_manifest",
                other.to_string(),
            );
        }
    };
    if manifest.is_expired_at(Utc::now()) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_manifest",
            format!(
                "manifest {} expired at {}; sign one with a later expires_at",
                manifest.serial,
                manifest.expires_at.to_rfc3339()
            ),
        );
    }
    // Probes refuse it too; stored, its serial would also shut out every
    // honest manifest signed after it.
    if manifest.is_not_yet_valid_at(Utc::now()) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_manifest",
            format!(
                "manifest {} is issued at {}, more than a day ahead of this collector's \
                 clock; sign it with the current time as issued_at (or set the clocks right)",
                manifest.serial,
                manifest.issued_at.to_rfc3339()
            ),
        );
    }
    // The store keeps serials as SQLite integers; a larger one could never
    // be stored, and is no "older" serial either.
    if i64::try_from(manifest.serial).is_err() {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_manifest",
            format!(
                "serial {} is too large; use a serial up to {}",
                manifest.serial,
                i64::MAX
            ),
        );
    }
    match state.staging.current_manifest().await {
        Ok(Some((current, _))) if manifest.serial <= current => {
            return not_newer(manifest.serial, current);
        }
        Ok(_) => {}
        Err(err) => return staging_error(&err),
    }
    let stored = match signed.to_json() {
        Ok(bytes) => bytes,
        Err(err) => return api_error(StatusCode::BAD_REQUEST, "invalid_manifest", err.to_string()),
    };
    match state.staging.put_manifest(manifest.serial, stored).await {
        Ok(()) => {
            tracing::info!(serial = manifest.serial, "accepted a published manifest");
            StatusCode::NO_CONTENT.into_response()
        }
        // Another publisher won the race between the check and the write.
        Err(Error::ManifestRefused(_)) => match state.staging.current_manifest().await {
            Ok(current) => not_newer(manifest.serial, current.map_or(0, |(serial, _)| serial)),
            Err(err) => staging_error(&err),
        },
        Err(err) => staging_error(&err),
    }
}

fn not_newer(serial: u64, current: u64) -> Response {
    let body = ApiError {
        error: "manifest_not_newer".to_owned(),
        detail: format!(
            "serial {serial} is not newer than the stored manifest's serial {current}; publish \
             with a higher serial"
        ),
        current_serial: Some(current),
    };
    (StatusCode::CONFLICT, axum::Json(body)).into_response()
}

/// The stored signed manifest, as probes get it.
#[utoipa::path(
    get,
    path = "/export/manifest",
    tag = "manifest",
    responses(
        (status = 200, description = "The current signed manifest", body = SignedManifestDoc,
         headers(("X-LineProbe-Manifest-Serial" = u64, description = "Its serial"))),
        (status = 401, description = "Missing or wrong bearer token, or the API is disabled",
         body = ApiError),
        (status = 404, description = "No manifest has been published", body = ApiError),
    )
)]
async fn export_current_manifest(State(state): State<ExportState>) -> Response {
    match state.staging.current_manifest().await {
        Ok(Some((serial, bytes))) => manifest_response(serial, bytes),
        Ok(None) => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no manifest has been published yet",
        ),
        Err(err) => staging_error(&err),
    }
}

fn manifest_response(serial: u64, bytes: impl Into<Body>) -> Response {
    let mut response = Response::new(bytes.into());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static(MANIFEST_SERIAL_HEADER),
        HeaderValue::from(serial),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{serial}\"")) {
        headers.insert(header::ETAG, etag);
    }
    response
}

async fn public_manifest(State(staging): State<Staging>, headers: HeaderMap) -> Response {
    serve_manifest(&staging, &headers, || {
        (StatusCode::NOT_FOUND, "no manifest has been published\n").into_response()
    })
}

/// The public answer to a manifest request: `GET /manifest`, and `GET` on
/// any ingest path (probes fetch it on their random paths too, so that a
/// meddling gateway sees no fixed URL for it either). `not_published` is
/// the 404 to give while no manifest has been published.
///
/// Served from the store's copy in memory: anyone may ask for it as often
/// as they like, and no request here may cost a database read.
pub(crate) fn serve_manifest(
    staging: &Staging,
    headers: &HeaderMap,
    not_published: fn() -> Response,
) -> Response {
    let Some(manifest) = staging.published_manifest() else {
        return not_published();
    };
    let serial = manifest.serial;
    let etag = format!("\"{serial}\"");
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    if unchanged {
        let mut response = manifest_response(serial, Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response.headers_mut().remove(header::CONTENT_TYPE);
        return response;
    }
    // A clone of `Bytes` shares the stored copy.
    manifest_response(serial, manifest.signed.clone())
}

/// The `OpenAPI` document (this handler needs no token).
#[utoipa::path(
    get,
    path = "/export/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This document", content_type = "application/json",
               body = Object)),
)]
async fn openapi_json() -> Response {
    match &*OPENAPI_JSON {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text.clone()).into_response(),
        Err(detail) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "openapi", detail.clone()),
    }
}

static OPENAPI_JSON: LazyLock<Result<String, String>> =
    LazyLock::new(|| export_openapi_json().map_err(|e| e.to_string()));

#[derive(OpenApi)]
#[openapi(
    info(
        title = "LineProbe collector export API",
        version = "1",
        description = "The internal side pulls committed reports from a LineProbe collector, \
                       acknowledges what it has stored, and publishes the signed probe manifest. \
                       Served on the export listener only; every operation except this \
                       document needs `Authorization: Bearer <export token>` (and, when \
                       configured, a client certificate).",
    ),
    paths(
        list_reports,
        ack_reports,
        publish_manifest,
        export_current_manifest,
        crate::traffic::api::list_episodes,
        crate::traffic::api::list_low_trust,
        openapi_json
    ),
    components(schemas(
        ApiError,
        AckRequest,
        AckResponse,
        SignedManifestDoc,
        crate::traffic::api::EpisodeList,
        crate::traffic::api::LowTrustList,
        crate::traffic::Episode,
        crate::traffic::LowTrustUnit,
        crate::traffic::UnitKind
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "export", description = "Pulling and acknowledging reports"),
        (name = "manifest", description = "The signed probe manifest"),
        (name = "traffic", description = "Traffic anomaly episodes and low-trust units"),
        (name = "meta", description = "This document"),
    ),
)]
struct ExportApi;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The collector's export token (`export.token` or \
                         LINEPROBE_EXPORT_TOKEN)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The export API's `OpenAPI` document, generated from the handlers.
pub fn export_openapi() -> utoipa::openapi::OpenApi {
    ExportApi::openapi()
}

/// The `OpenAPI` document as pretty JSON with a final newline, as committed in
/// `collector/openapi/export-v1.json`.
pub fn export_openapi_json() -> Result<String, Error> {
    let mut text = export_openapi()
        .to_pretty_json()
        .map_err(lineprobe_shared::Error::from)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    /// A page goes out in frames of at least `FRAME_BYTES` (the last one
    /// excepted), one report a line, a report's raw line breaks dropped.
    #[tokio::test]
    async fn a_page_is_sent_in_large_frames_of_whole_lines() {
        let filler = "x".repeat(1900);
        let reports: Vec<ExportedReport> = (1..=100_u64)
            .map(|seq| {
                // Every tenth report holds insignificant line breaks, as a
                // pretty-printed document would.
                let json = if seq % 10 == 0 {
                    format!("{{\n  \"seq\": {seq},\r\n  \"pad\": \"{filler}\"\n}}")
                } else {
                    format!("{{\"seq\":{seq},\"pad\":\"{filler}\"}}")
                };
                ExportedReport {
                    seq,
                    json: json.into_bytes(),
                }
            })
            .collect();
        let mut body = ndjson_page("node-1", "store-1", 0, reports).into_body();
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert!(frames.len() >= 2, "{} frames", frames.len());
        let (last, full) = frames.split_last().unwrap();
        assert!(full.iter().all(|f| f.len() >= FRAME_BYTES));
        assert!(last.ends_with(b"\n"));
        let text: Vec<u8> = frames.concat();
        let lines: Vec<&[u8]> = text
            .strip_suffix(b"\n")
            .unwrap()
            .split(|b| *b == b'\n')
            .collect();
        assert_eq!(lines.len(), 100);
        for (seq, line) in (1_u64..).zip(lines) {
            assert!(!line.contains(&b'\r'));
            let doc: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert_eq!(doc["seq"], seq);
        }
    }
}
