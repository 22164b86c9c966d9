//! The export API, driven through the router without a socket, against a
//! real staging store in a temporary folder.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use http_body_util::BodyExt as _;
use lineprobe_collector::{
    ExportState, ExportToken, ManifestConfig, Metrics, Staging, StagingOptions,
    export_openapi_json, export_router, load_manifest_key, manifest_routes,
};
use lineprobe_shared::{
    Manifest, ManifestSigningKey, ProbeSchedule, ReceiverEnvelope, Report, ReportId, SignedManifest,
};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const TOKEN: &str = "0123456789abcdef0123456789abcdef-test";
const NODE: &str = "node-a";

struct Harness {
    _dir: tempfile::TempDir,
    staging: Staging,
    key: ManifestSigningKey,
    metrics: Arc<Metrics>,
}

/// The store's options in these tests: commits not held back.
fn staging_options(path: std::path::PathBuf, max_reports: u64) -> StagingOptions {
    StagingOptions {
        path,
        node_id: NODE.to_owned(),
        max_reports,
        full_retry_after_secs: 5,
        retention: Duration::from_hours(1),
        group_commit_max: 64,
        group_commit_wait: Duration::ZERO,
        group_commit_gap: Duration::ZERO,
        on_commit: None,
        on_wal_restart: None,
    }
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = Staging::open(staging_options(dir.path().join("staging.sqlite"), 10_000))
            .expect("open staging");
        Self {
            _dir: dir,
            staging,
            key: ManifestSigningKey::generate(),
            metrics: Metrics::new(),
        }
    }

    fn state(&self, max_batch: usize) -> ExportState {
        ExportState {
            staging: self.staging.clone(),
            token: ExportToken::new(TOKEN),
            node_id: NODE.into(),
            max_batch,
            manifest_key: Some(self.key.verifying_key()),
            metrics: Some(Arc::clone(&self.metrics)),
        }
    }

    fn router(&self) -> Router {
        export_router(self.state(100))
    }

    /// Stages `n` reports; returns their ids in staging order.
    async fn stage(&self, n: usize) -> Vec<ReportId> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let report = report();
            ids.push(report.report_id);
            self.staging.stage(report).await.expect("stage");
        }
        ids
    }

    async fn unacked(&self) -> (u64, u64) {
        let stats = self.staging.stats().await.expect("stats");
        (stats.unacked, stats.acked_up_to)
    }
}

fn report() -> Report {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/report.example.json");
    let text = std::fs::read(path).expect("config/report.example.json");
    let mut report = Report::from_json(&text).expect("example report");
    report.report_id = ReportId::new_v7();
    report.envelope = Some(ReceiverEnvelope {
        received_at: Utc::now(),
        peer_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
        peer_port: Some(40_123),
        path: "/api/v1/report".to_owned(),
        headers: lineprobe_shared::EnvelopeHeaders::default(),
        tls: None,
        node_id: NODE.to_owned(),
        seq: 0,
        trust: None,
    });
    report
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {:?}", String::from_utf8_lossy(&self.body));
        })
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .expect("ascii header")
    }

    fn lines(&self) -> Vec<Value> {
        std::str::from_utf8(&self.body)
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    }
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

fn request(method: Method, uri: &str, token: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("request")
}

fn get(uri: &str) -> Request<Body> {
    request(Method::GET, uri, Some(TOKEN), Body::empty())
}

fn ack(node: &str, up_to: u64) -> Request<Body> {
    let body = json!({"node_id": node, "up_to": up_to}).to_string();
    request(Method::POST, "/export/ack", Some(TOKEN), body)
}

fn put_manifest(body: Vec<u8>) -> Request<Body> {
    request(Method::PUT, "/export/manifest", Some(TOKEN), body)
}

fn manifest(serial: u64) -> Manifest {
    let now = Utc::now();
    Manifest {
        serial,
        issued_at: now - chrono::Duration::hours(1),
        expires_at: now + chrono::Duration::days(30),
        endpoints: vec!["https://collector.example.net".to_owned()],
        path_patterns: vec!["/api/v1/report".to_owned()],
        schedule: ProbeSchedule {
            interval_secs: 3600,
            jitter_secs: 60,
        },
        catalog_versions: std::collections::BTreeMap::new(),
        latest_agent: None,
    }
}

fn signed(serial: u64, key: &ManifestSigningKey) -> Vec<u8> {
    SignedManifest::sign(&manifest(serial), key)
        .expect("sign")
        .to_json()
        .expect("json")
}

// --- authentication -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_401_everywhere() {
    let h = Harness::new();
    h.stage(2).await;
    let router = h.router();
    let guarded = [
        (Method::GET, "/export?after=0"),
        (Method::POST, "/export/ack"),
        (Method::PUT, "/export/manifest"),
        (Method::GET, "/export/manifest"),
    ];
    for (method, uri) in guarded {
        for token in [None, Some("wrong"), Some(&TOKEN[1..]), Some("")] {
            let body = json!({"node_id": NODE, "up_to": 2}).to_string();
            let answer = send(&router, request(method.clone(), uri, token, body)).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {token:?}"
            );
            assert_eq!(answer.json()["error"], "unauthorized");
            assert!(answer.headers.contains_key(header::WWW_AUTHENTICATE));
        }
        // Another scheme with the right secret is still refused.
        let basic = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Basic {TOKEN}"))
            .body(Body::empty())
            .expect("request");
        assert_eq!(send(&router, basic).await.status, StatusCode::UNAUTHORIZED);
    }
    // Nothing was acknowledged by the refused requests.
    assert_eq!(h.unacked().await, (2, 0));
    // The scheme name is case-insensitive.
    let lower = Request::builder()
        .uri("/export")
        .header(header::AUTHORIZATION, format!("bearer {TOKEN}"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&router, lower).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_configured_token_disables_the_api() {
    let h = Harness::new();
    h.stage(1).await;
    let mut state = h.state(100);
    state.token = ExportToken::new("");
    assert!(state.token.is_disabled());
    assert!(!format!("{:?}", h.state(1).token).contains(TOKEN));
    let router = export_router(state);
    for token in [None, Some(""), Some(TOKEN)] {
        let answer = send(
            &router,
            request(Method::GET, "/export", token, Body::empty()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert!(
            answer.json()["detail"]
                .as_str()
                .is_some_and(|d| d.contains("export.token")),
            "{}",
            answer.json()
        );
    }
    let answer = send(&router, ack(NODE, 1)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.unacked().await, (1, 0));
}

// --- export ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_pages_through_reports_in_seq_order() {
    let h = Harness::new();
    let ids = h.stage(5).await;
    let router = h.router();

    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let answer = send(&router, get(&format!("/export?after={after}&limit=2"))).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("content-type"), "application/x-ndjson");
        assert_eq!(answer.header("x-lineprobe-node"), NODE);
        let lines = answer.lines();
        assert!(lines.len() <= 2);
        assert_eq!(answer.header("x-lineprobe-count"), lines.len().to_string());
        // Every page says how far the export reaches: all five are durable.
        assert_eq!(answer.header("x-lineprobe-durable-seq"), "5");
        let next: u64 = answer
            .header("x-lineprobe-next-after")
            .parse()
            .expect("number");
        if lines.is_empty() {
            assert_eq!(next, after, "an empty page repeats `after`");
            assert!(answer.body.is_empty());
            break;
        }
        assert!(answer.body.ends_with(b"\n"));
        for line in &lines {
            let seq = line["envelope"]["seq"].as_u64().expect("seq");
            assert!(seq > after);
            // Each line is a whole stored report.
            let report =
                Report::from_stored_json(line.to_string().as_bytes()).expect("stored report");
            seen.push((seq, report.report_id));
        }
        assert_eq!(next, seen.last().map(|(seq, _)| *seq).expect("a page"));
        after = next;
    }
    let seqs: Vec<u64> = seen.iter().map(|(seq, _)| *seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let exported: Vec<ReportId> = seen.into_iter().map(|(_, id)| id).collect();
    assert_eq!(exported, ids);

    // `after` beyond everything is an empty page, not an error.
    let answer = send(&router, get("/export?after=1000")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-lineprobe-next-after"), "1000");
    assert!(answer.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_reports_are_counted_in_the_metrics() {
    let h = Harness::new();
    h.stage(5).await;
    let router = h.router();
    let exported_total = |text: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix("lineprobe_collector_exported_reports_total "))
            .and_then(|v| v.trim().parse().ok())
    };
    let text = h.metrics.render(&h.staging).await.expect("render");
    assert_eq!(exported_total(&text), Some(0), "{text}");

    assert_eq!(send(&router, get("/export?limit=2")).await.lines().len(), 2);
    assert_eq!(send(&router, get("/export?after=2")).await.lines().len(), 3);
    // An empty page, a bad query and a refused token count nothing.
    assert!(
        send(&router, get("/export?after=5"))
            .await
            .lines()
            .is_empty()
    );
    assert_eq!(
        send(&router, get("/export?limit=0")).await.status,
        StatusCode::BAD_REQUEST
    );
    let refused = request(Method::GET, "/export", Some("wrong"), Body::empty());
    assert_eq!(
        send(&router, refused).await.status,
        StatusCode::UNAUTHORIZED
    );

    let text = h.metrics.render(&h.staging).await.expect("render");
    assert_eq!(exported_total(&text), Some(5), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_defaults_to_and_is_capped_by_max_batch() {
    let h = Harness::new();
    h.stage(7).await;
    let router = export_router(h.state(3));
    for uri in [
        "/export",
        "/export?after=0",
        "/export?limit=100",
        "/export?limit=3",
    ] {
        let answer = send(&router, get(uri)).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        assert_eq!(answer.lines().len(), 3, "{uri}");
    }
    let answer = send(&router, get("/export?after=1&limit=2")).await;
    let seqs: Vec<u64> = answer
        .lines()
        .iter()
        .map(|l| l["envelope"]["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs.len(), 2);
    assert!(seqs.iter().all(|s| *s > 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_query_is_400_json() {
    let h = Harness::new();
    let router = h.router();
    for uri in [
        "/export?after=-1",
        "/export?after=abc",
        "/export?limit=0",
        "/export?limit=x",
        "/export?after=1&surprise=1",
        "/export?after=99999999999999999999999",
    ] {
        let answer = send(&router, get(uri)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        let body = answer.json();
        assert_eq!(body["error"], "bad_query", "{uri}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

// --- acknowledgements -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_marks_reports_and_is_idempotent() {
    let h = Harness::new();
    h.stage(3).await;
    let router = h.router();

    let answer = send(&router, ack(NODE, 2)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json());
    assert_eq!(
        answer.json(),
        json!({"node_id": NODE, "acked_up_to": 2, "newly_acked": 2})
    );
    assert_eq!(h.unacked().await, (1, 2));

    let again = send(&router, ack(NODE, 2)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.json(),
        json!({"node_id": NODE, "acked_up_to": 2, "newly_acked": 0})
    );
    assert_eq!(h.unacked().await, (1, 2));

    let rest = send(&router, ack(NODE, 3)).await;
    assert_eq!(rest.json()["newly_acked"], 1);
    assert_eq!(h.unacked().await, (0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_acks_are_refused_and_change_nothing() {
    let h = Harness::new();
    h.stage(3).await;
    let router = h.router();
    send(&router, ack(NODE, 1)).await;
    let before = h.unacked().await;
    assert_eq!(before, (2, 1));

    let beyond = send(&router, ack(NODE, 4)).await;
    assert_eq!(beyond.status, StatusCode::CONFLICT);
    assert_eq!(beyond.json()["error"], "bad_ack");
    assert_eq!(h.unacked().await, before);

    let other_node = send(&router, ack("node-b", 2)).await;
    assert_eq!(other_node.status, StatusCode::CONFLICT);
    assert_eq!(other_node.json()["error"], "bad_ack");
    assert!(
        other_node.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("node-b") && d.contains(NODE))
    );
    assert_eq!(h.unacked().await, before);

    for body in [
        "not json".to_owned(),
        json!({"node_id": NODE}).to_string(),
        json!({"node_id": NODE, "up_to": -1}).to_string(),
        json!({"node_id": NODE, "up_to": 2, "extra": true}).to_string(),
    ] {
        let answer = send(
            &router,
            request(Method::POST, "/export/ack", Some(TOKEN), body.clone()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.json()["error"], "bad_request");
    }
    assert_eq!(h.unacked().await, before);

    // Pulled from another store under the same node id (this node's store
    // was made afresh, its seqs started over): refused, nothing marked.
    let elsewhere = "0123456789abcdef0123456789abcdef";
    assert_ne!(h.staging.store_id(), elsewhere);
    let body = json!({"node_id": NODE, "up_to": 2, "store": elsewhere}).to_string();
    let stale = send(
        &router,
        request(Method::POST, "/export/ack", Some(TOKEN), body),
    )
    .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.json()["error"], "bad_ack");
    assert!(
        stale.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains(elsewhere) && d.contains(h.staging.store_id())),
        "{}",
        stale.json()
    );
    assert_eq!(h.unacked().await, before);
    // This store's own id: acknowledged.
    let body = json!({"node_id": NODE, "up_to": 2, "store": h.staging.store_id()}).to_string();
    let own = send(
        &router,
        request(Method::POST, "/export/ack", Some(TOKEN), body),
    )
    .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.json());
    assert_eq!(h.unacked().await, (1, 2));
}

/// An over-size body is refused like every other mistake: a JSON
/// `error`/`detail`, not axum's plain-text rejection, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_size_bodies_are_413_json_and_change_nothing() {
    let h = Harness::new();
    h.stage(3).await;
    let router = h.router();
    send(&router, put_manifest(signed(5, &h.key))).await;
    let stored = h.staging.current_manifest().await.expect("current");
    let before = h.unacked().await;

    // Valid JSON, padded past the limit with insignificant whitespace.
    let padded = |json: String| {
        let mut body = json.into_bytes();
        body.splice(1..1, std::iter::repeat_n(b' ', 200 * 1024));
        body
    };
    let ack_body = padded(json!({"node_id": NODE, "up_to": 3}).to_string());
    let manifest_body = padded(String::from_utf8(signed(6, &h.key)).expect("utf-8"));
    for request in [
        request(Method::POST, "/export/ack", Some(TOKEN), ack_body),
        put_manifest(manifest_body),
    ] {
        let what = format!("{} {}", request.method(), request.uri());
        let answer = send(&router, request).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{what}");
        assert_eq!(
            answer.header("content-type"),
            "application/json",
            "{what}: {:?}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.json()["error"], "too_large", "{what}");
    }
    assert_eq!(h.unacked().await, before);
    assert_eq!(h.staging.current_manifest().await.expect("current"), stored);
}

// --- the manifest ---------------------------------------------------------

async fn current_serial(h: &Harness) -> Option<u64> {
    h.staging
        .current_manifest()
        .await
        .expect("current manifest")
        .map(|(serial, _)| serial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_manifest_is_accepted_and_served() {
    let h = Harness::new();
    let router = h.router();
    let public = manifest_routes(h.staging.clone());

    let none = send(
        &public,
        Request::get("/manifest").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert!(
        !none
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"))
    );

    let body = signed(5, &h.key);
    let answer = send(&router, put_manifest(body.clone())).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);
    assert_eq!(current_serial(&h).await, Some(5));

    let served = send(
        &public,
        Request::get("/manifest").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.header("content-type"), "application/json");
    assert_eq!(served.header("x-lineprobe-manifest-serial"), "5");
    // What probes get verifies with the publisher's key.
    let got = SignedManifest::from_json(&served.body).expect("signed manifest");
    assert_eq!(got, SignedManifest::from_json(&body).expect("sent"));
    assert_eq!(
        got.verify(&h.key.verifying_key()).expect("verifies").serial,
        5
    );

    // A probe that has it already gets 304.
    let etag = served.header("etag").to_owned();
    let cached = send(
        &public,
        Request::get("/manifest")
            .header(header::IF_NONE_MATCH, etag)
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(cached.body.is_empty());

    // The puller can read it back too.
    let back = send(&router, get("/export/manifest")).await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(back.body, served.body);

    // A newer one replaces it.
    let answer = send(&router, put_manifest(signed(6, &h.key))).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(current_serial(&h).await, Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_manifest_is_served_at_once_without_a_store_read() {
    let h = Harness::new();
    let router = h.router();
    let public = manifest_routes(h.staging.clone());
    let fetch = |if_none_match: Option<&str>| {
        let mut request = Request::get("/manifest");
        if let Some(etag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        send(&public, request.body(Body::empty()).expect("req"))
    };

    for serial in [5, 6] {
        let body = signed(serial, &h.key);
        let answer = send(&router, put_manifest(body.clone())).await;
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
        // Right after the publisher heard 204, and from memory.
        let reads = h.staging.read_stats().reads;
        let served = fetch(None).await;
        assert_eq!(served.status, StatusCode::OK);
        assert_eq!(served.body, body);
        assert_eq!(
            served.header("x-lineprobe-manifest-serial"),
            serial.to_string()
        );
        assert_eq!(served.header("etag"), format!("\"{serial}\""));
        assert_eq!(served.header("cache-control"), "no-cache");
        assert_eq!(served.header("content-type"), "application/json");
        assert_eq!(served.header("content-length"), body.len().to_string());
        let cached = fetch(Some(served.header("etag"))).await;
        assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
        assert!(cached.body.is_empty());
        assert_eq!(h.staging.read_stats().reads, reads, "serial {serial}");

        // What the public side serves is what the store holds.
        let back = send(&router, get("/export/manifest")).await;
        assert_eq!(back.body, served.body);
        for name in [
            "etag",
            "cache-control",
            "content-type",
            "x-lineprobe-manifest-serial",
        ] {
            assert_eq!(back.headers.get(name), served.headers.get(name), "{name}");
        }
    }

    // A refused one changes nothing that is served.
    let answer = send(&router, put_manifest(signed(4, &h.key))).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(fetch(None).await.header("x-lineprobe-manifest-serial"), "6");

    // After a restart the stored one is served, loaded when the store opens.
    let path = h.staging.path().to_owned();
    h.staging.close().await.expect("close");
    let reopened = Staging::open(staging_options(path, 10)).expect("reopen");
    let served = send(
        &manifest_routes(reopened.clone()),
        Request::get("/manifest").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.body, signed_body_of(&reopened).await);
    assert_eq!(served.header("x-lineprobe-manifest-serial"), "6");
    assert_eq!(reopened.read_stats().reads, 1, "only signed_body_of read");
    reopened.close().await.expect("close");
}

/// The signed manifest as the store holds it.
async fn signed_body_of(staging: &Staging) -> Vec<u8> {
    staging
        .current_manifest()
        .await
        .expect("current")
        .expect("a manifest")
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_manifests_are_refused_and_change_nothing() {
    let h = Harness::new();
    let router = h.router();
    let original = signed(5, &h.key);
    assert_eq!(
        send(&router, put_manifest(original.clone())).await.status,
        StatusCode::NO_CONTENT
    );
    let stored = h.staging.current_manifest().await.expect("current");

    // A flipped byte in the signed payload.
    let mut forged = SignedManifest::from_json(&original).expect("parse");
    let mut payload = STANDARD.decode(&forged.payload).expect("b64");
    let i = payload.len() / 2;
    payload[i] ^= 0x20;
    forged.payload = STANDARD.encode(&payload);
    let answer = send(&router, put_manifest(forged.to_json().expect("json"))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json()["error"], "manifest_signature");

    // A newer serial signed with another key.
    let other = ManifestSigningKey::generate();
    let answer = send(&router, put_manifest(signed(9, &other))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(
        answer.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&h.key.key_id()))
    );

    // Another key that claims ours.
    let mut claimed = SignedManifest::sign(&manifest(9), &other).expect("sign");
    claimed.key_id = h.key.key_id();
    let answer = send(&router, put_manifest(claimed.to_json().expect("json"))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    // Not a signed manifest at all, and a correctly signed invalid one.
    for body in [
        b"{}".to_vec(),
        b"garbage".to_vec(),
        serde_json::to_vec(&manifest(10)).expect("json"),
        SignedManifest::sign_bytes(br#"{"serial": 11}"#, &h.key)
            .to_json()
            .expect("json"),
    ] {
        let answer = send(&router, put_manifest(body)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["error"], "invalid_manifest");
    }

    // An expired one, correctly signed.
    let mut expired = manifest(12);
    expired.issued_at = Utc::now() - chrono::Duration::days(10);
    expired.expires_at = Utc::now() - chrono::Duration::days(1);
    let body = SignedManifest::sign(&expired, &h.key)
        .expect("sign")
        .to_json()
        .expect("json");
    let answer = send(&router, put_manifest(body)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired"))
    );

    // One issued years ahead, correctly signed: probes refuse it, and its
    // serial would shut out every manifest signed after it.
    let mut ahead = manifest(13);
    ahead.issued_at = Utc::now() + chrono::Duration::days(2 * 365);
    ahead.expires_at = ahead.issued_at + chrono::Duration::days(90);
    let body = SignedManifest::sign(&ahead, &h.key)
        .expect("sign")
        .to_json()
        .expect("json");
    let answer = send(&router, put_manifest(body)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("ahead of this collector's clock")),
        "{}",
        answer.json()
    );

    assert_eq!(h.staging.current_manifest().await.expect("current"), stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_or_equal_serials_are_409() {
    let h = Harness::new();
    let router = h.router();
    assert_eq!(
        send(&router, put_manifest(signed(5, &h.key))).await.status,
        StatusCode::NO_CONTENT
    );
    let stored = h.staging.current_manifest().await.expect("current");
    for serial in [5, 4, 1] {
        let answer = send(&router, put_manifest(signed(serial, &h.key))).await;
        assert_eq!(answer.status, StatusCode::CONFLICT, "serial {serial}");
        let body = answer.json();
        assert_eq!(body["error"], "manifest_not_newer");
        assert_eq!(body["current_serial"], 5);
        assert!(body["detail"].as_str().is_some_and(|d| d.contains('5')));
    }
    assert_eq!(h.staging.current_manifest().await.expect("current"), stored);

    // Beyond what the store can hold: refused as such, not as older. The
    // shared rules no longer let such a manifest be signed, so the payload
    // is written by hand, as a hostile signer would.
    let mut payload = serde_json::to_value(manifest(1)).expect("json");
    payload["serial"] = json!(u64::MAX);
    let body = SignedManifest::sign_bytes(payload.to_string().as_bytes(), &h.key)
        .to_json()
        .expect("json");
    let answer = send(&router, put_manifest(body)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let body = answer.json();
    assert_eq!(body["error"], "invalid_manifest");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("serial") && d.contains(&i64::MAX.to_string())),
        "{body}"
    );
    assert_eq!(h.staging.current_manifest().await.expect("current"), stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_without_a_configured_key_is_503() {
    let h = Harness::new();
    let mut state = h.state(100);
    state.manifest_key = None;
    let router = export_router(state);
    let answer = send(&router, put_manifest(signed(1, &h.key))).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = answer.json();
    assert_eq!(body["error"], "manifest_key_not_configured");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("manifest.public_key"))
    );
    assert_eq!(current_serial(&h).await, None);
}

#[test]
fn the_manifest_key_is_read_from_the_configuration() {
    let key = ManifestSigningKey::generate();
    let vk = key.verifying_key();
    let config = |value: String| ManifestConfig { public_key: value };

    assert_eq!(
        load_manifest_key(&config(String::new())).expect("empty"),
        None
    );
    assert_eq!(
        load_manifest_key(&config(vk.to_base64())).expect("base64"),
        Some(vk)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("manifest.pub.pem");
    std::fs::write(&path, vk.to_pem().expect("pem")).expect("write");
    let from_file = load_manifest_key(&config(format!("file:{}", path.display())));
    assert_eq!(from_file.expect("file"), Some(vk));

    for bad in [
        "not-a-key".to_owned(),
        format!("file:{}", dir.path().join("missing.pem").display()),
    ] {
        let err = load_manifest_key(&config(bad.clone())).expect_err("refused");
        assert!(
            err.to_string().contains("manifest.public_key"),
            "{bad}: {err}"
        );
    }
}

// --- the OpenAPI document -------------------------------------------------

#[test]
fn committed_openapi_matches_generated() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi/export-v1.json");
    let generated = export_openapi_json().expect("generate");
    if std::env::var_os("LINEPROBE_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("openapi dir")).expect("create dir");
        std::fs::write(&path, &generated).expect("write openapi");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} differs from the OpenAPI document generated from the export handlers; if the API \
         change is intended, rerun with LINEPROBE_BLESS=1 to rewrite it and commit the result",
        path.display()
    );
}

#[test]
fn openapi_documents_every_route_and_the_shared_manifest_shape() {
    let doc: Value = serde_json::from_str(&export_openapi_json().expect("generate")).expect("JSON");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/export", "get"),
        ("/export/ack", "post"),
        ("/export/manifest", "put"),
        ("/export/manifest", "get"),
        ("/export/openapi.json", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // The doc-only schema has exactly the fields the shared wire type has.
    let key = ManifestSigningKey::generate();
    let wire: Value = serde_json::from_slice(
        &SignedManifest::sign(&manifest(1), &key)
            .expect("sign")
            .to_json()
            .expect("json"),
    )
    .expect("JSON");
    let mut wire_fields: Vec<&String> = wire.as_object().expect("object").keys().collect();
    let schema = &doc["components"]["schemas"]["SignedManifest"]["properties"];
    let mut doc_fields: Vec<&String> = schema.as_object().expect("properties").keys().collect();
    wire_fields.sort();
    doc_fields.sort();
    assert_eq!(wire_fields, doc_fields);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_is_served_without_a_token_and_unknown_paths_are_404() {
    let h = Harness::new();
    let router = h.router();
    let answer = send(
        &router,
        request(Method::GET, "/export/openapi.json", None, Body::empty()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "application/json");
    assert_eq!(
        answer.body,
        export_openapi_json().expect("generate").into_bytes()
    );
    let missing = send(&router, get("/export/nothing-here")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"], "not_found");
}
