//! The public router driven without a socket, against a real staging store
//! in a temporary folder: what the internal side receives from what a
//! request says, readiness, and the manifest under the ingest paths.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, Method, Request, StatusCode, Uri, header};
use http_body_util::BodyExt as _;
use lineprobe_collector::{
    ConnInfo, IngestOutcome, IngestState, Metrics, Proxied, Staging, StagingOptions, SystemClock,
    TlsInfo, Traffic, UnitKey, ingest_router, manifest_routes,
};
use lineprobe_shared::Report;
use serde_json::Value;
use tower::ServiceExt as _;

/// A router over its own store, built as the server builds it.
struct Harness {
    _dir: tempfile::TempDir,
    staging: Staging,
    metrics: Arc<Metrics>,
    traffic: Arc<Traffic>,
    router: Router,
}

impl Harness {
    fn new(toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = support::config(dir.path(), toml);
        let metrics = Metrics::new();
        let staging = Staging::open(StagingOptions::from_config(
            config.staging_path(),
            config.node_id.clone(),
            &config.staging,
        ))
        .expect("open staging");
        let traffic = Arc::new(Traffic::new(
            &config,
            Arc::new(SystemClock),
            Some(Arc::clone(&metrics)),
        ));
        let state = IngestState::from_config(
            &config,
            staging.clone(),
            Arc::clone(&metrics),
            Arc::clone(&traffic),
        )
        .expect("ingest state");
        Self {
            _dir: dir,
            // As the server mounts it.
            router: ingest_router(state).merge(manifest_routes(staging.clone())),
            staging,
            metrics,
            traffic,
        }
    }

    /// Sends a `GET` of `uri` with `headers` from an ordinary peer.
    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
        let mut request = Request::get(uri).body(Body::empty()).expect("request");
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        self.respond(request, conn("203.0.113.5:40000", None)).await
    }

    /// Sends `request` as if it arrived on a connection from `peer`, with
    /// the PROXY header's source `proxied`.
    async fn send(
        &self,
        request: Request<Body>,
        peer: &str,
        proxied: Option<&str>,
    ) -> (StatusCode, Bytes) {
        self.send_on(request, conn(peer, proxied)).await
    }

    /// Sends `request` as if it arrived on the connection `conn`.
    async fn send_on(&self, request: Request<Body>, conn: ConnInfo) -> (StatusCode, Bytes) {
        let (status, _, body) = self.respond(request, conn).await;
        (status, body)
    }

    /// The router's whole answer to `request` on the connection `conn`.
    async fn respond(
        &self,
        mut request: Request<Body>,
        conn: ConnInfo,
    ) -> (StatusCode, HeaderMap, Bytes) {
        request.extensions_mut().insert(conn);
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, body)
    }

    /// Every stored report, as the export hands it to the internal side.
    async fn exported(&self) -> Vec<Vec<u8>> {
        self.staging
            .export_after(0, 1000)
            .await
            .expect("export")
            .into_iter()
            .map(|r| r.json)
            .collect()
    }
}

/// `POST` of a valid report to `uri`, which may hold any bytes the HTTP
/// parser lets through.
fn post_report(uri: &[u8]) -> Request<Body> {
    let body = serde_json::to_vec(&support::sample_report()).expect("json");
    Request::builder()
        .method(Method::POST)
        .uri(Uri::try_from(uri).expect("a URI the HTTP parser accepts"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request")
}

/// Either refused, or stored in a form the internal side's stored-stage
/// validation accepts: never a 2xx for a report that would be quarantined.
async fn acknowledged_only_if_storable(h: &Harness, status: StatusCode, body: &[u8]) -> Vec<Value> {
    let exported = h.exported().await;
    if !status.is_success() {
        assert!(exported.is_empty(), "refused, yet stored");
        return Vec::new();
    }
    assert_eq!(
        exported.len(),
        1,
        "{status} {}",
        String::from_utf8_lossy(body)
    );
    exported
        .iter()
        .map(|json| {
            Report::from_stored_json(json).unwrap_or_else(|e| {
                panic!(
                    "acknowledged with {status}, but the stored form is refused: {e}\n{}",
                    String::from_utf8_lossy(json)
                )
            });
            serde_json::from_slice(json).expect("json")
        })
        .collect()
}

#[tokio::test]
async fn a_path_with_raw_unicode_space_or_control_characters_is_stored_valid_or_refused() {
    // U+0085 (NEXT LINE, a control character) and U+00A0 (NO-BREAK SPACE)
    // as raw UTF-8 in a segment that `/api/v1/*/report` matches.
    for uri in [
        &b"/api/v1/\xC2\x85/report"[..],
        b"/api/v1/a\xC2\xA0b/report",
        b"/cdn/\xE2\x80\xA8/x/collect",
    ] {
        let h = Harness::new("");
        let (status, body) = h.send(post_report(uri), "203.0.113.5:40000", None).await;
        let stored = acknowledged_only_if_storable(&h, status, &body).await;
        if let Some(stored) = stored.first() {
            let path = stored["envelope"]["path"].as_str().expect("path");
            assert!(path.starts_with('/') && path.is_ascii(), "{path}");
        }
    }
    // Percent-encoded as a browser would send it: the same path either way.
    let h = Harness::new("");
    let (status, _) = h
        .send(
            post_report(b"/api/v1/\xC2\x85/report"),
            "203.0.113.5:40000",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let stored: Value = serde_json::from_slice(&h.exported().await[0]).expect("json");
    assert_eq!(stored["envelope"]["path"], "/api/v1/%C2%85/report");
}

#[tokio::test]
async fn a_long_path_is_cut_at_a_whole_escape_and_stays_valid() {
    let mut uri = b"/cdn".to_vec();
    for _ in 0..60 {
        uri.extend_from_slice(b"/\xC2\x85");
    }
    uri.extend_from_slice(b"/collect");
    let h = Harness::new("");
    let (status, body) = h.send(post_report(&uri), "203.0.113.5:40000", None).await;
    assert_eq!(status, StatusCode::CREATED);
    let stored = acknowledged_only_if_storable(&h, status, &body).await;
    let path = stored[0]["envelope"]["path"].as_str().expect("path");
    assert!(path.len() <= lineprobe_shared::ReportLimits::MAX_PATH_LEN);
    assert!(path.ends_with("%C2%85"), "{path}");
}

#[tokio::test]
async fn a_proxied_source_no_client_can_have_is_not_believed() {
    let trusted = "[public]\ntrusted_proxies = [\"10.0.0.0/8\"]\n";
    // Port 0: the address stands, the port is recorded as unknown.
    let h = Harness::new(trusted);
    let (status, body) = h
        .send(
            post_report(b"/api/v1/report"),
            "10.0.0.2:5555",
            Some("198.51.100.7:0"),
        )
        .await;
    let stored = acknowledged_only_if_storable(&h, status, &body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(stored[0]["envelope"]["peer_ip"], "198.51.100.7");
    assert!(stored[0]["envelope"].get("peer_port").is_none());

    // An unspecified address: the socket peer stands for the client.
    for proxied in ["0.0.0.0:40000", "[::]:40000", "0.0.0.0:0"] {
        let h = Harness::new(trusted);
        let (status, body) = h
            .send(
                post_report(b"/api/v1/report"),
                "10.0.0.2:5555",
                Some(proxied),
            )
            .await;
        let stored = acknowledged_only_if_storable(&h, status, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{proxied}");
        assert_eq!(stored[0]["envelope"]["peer_ip"], "10.0.0.2", "{proxied}");
        assert_eq!(stored[0]["envelope"]["peer_port"], 5555, "{proxied}");
    }
}

#[tokio::test]
async fn an_unspecified_forwarded_address_is_passed_over() {
    let h = Harness::new("[public]\ntrusted_proxies = [\"10.0.0.0/8\"]\n");
    let mut request = post_report(b"/api/v1/report");
    request.headers_mut().insert(
        "x-forwarded-for",
        "198.51.100.9, 0.0.0.0".parse().expect("header"),
    );
    let (status, body) = h.send(request, "10.0.0.2:5555", None).await;
    let stored = acknowledged_only_if_storable(&h, status, &body).await;
    assert_eq!(stored[0]["envelope"]["peer_ip"], "198.51.100.9");
    assert_eq!(h.metrics.ingest_count(IngestOutcome::Stored), 1);
}

#[tokio::test]
async fn a_report_whose_envelope_would_not_validate_is_never_acknowledged() {
    // No TLS stack gives a server name with a space; it stands for any
    // envelope field the receiver might one day fill wrongly.
    let h = Harness::new("");
    let conn = ConnInfo {
        tls: Some(TlsInfo {
            version: "TLSv1.3".to_owned(),
            sni: Some("bad host".to_owned()),
            client_certificate: false,
        }),
        ..conn("203.0.113.5:40000", None)
    };
    let (status, body) = h.send_on(post_report(b"/api/v1/report"), conn).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"], "internal");
    assert!(h.exported().await.is_empty());
    assert_eq!(h.metrics.ingest_count(IngestOutcome::Unrecordable), 1);
    assert_eq!(h.metrics.ingest_count(IngestOutcome::Stored), 0);
}

#[tokio::test]
async fn the_manifest_is_served_under_the_ingest_paths_as_at_slash_manifest() {
    let h = Harness::new("");
    let random_paths = [
        "/api/v1/report",
        "/api/v1/k3j9x/report",
        "/static/q/upload",
        "/cdn/a/b/collect",
    ];
    // None published: 404 as at /manifest, and the ordinary page any path
    // that is not served gets, so that the ingest paths do not stand out.
    assert_eq!(h.get("/manifest", &[]).await.0, StatusCode::NOT_FOUND);
    let (_, _, ordinary) = h.get("/no/such/page", &[]).await;
    for path in random_paths {
        let (status, _, body) = h.get(path, &[]).await;
        assert_eq!(
            (status, body),
            (StatusCode::NOT_FOUND, ordinary.clone()),
            "{path}"
        );
    }

    let signed = br#"{"manifest":"as published","signature":"sig"}"#.to_vec();
    h.staging
        .put_manifest(7, signed.clone())
        .await
        .expect("put");
    let (status, at_manifest, body) = h.get("/manifest", &[]).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &signed[..]));
    for path in random_paths {
        let (status, headers, body) = h.get(path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body, signed, "{path}");
        for name in [
            header::CONTENT_TYPE.as_str(),
            header::ETAG.as_str(),
            header::CACHE_CONTROL.as_str(),
            "x-lineprobe-manifest-serial",
        ] {
            assert_eq!(headers.get(name), at_manifest.get(name), "{path} {name}");
        }
        let (status, _, body) = h.get(path, &[("if-none-match", "\"7\"")]).await;
        assert_eq!(
            (status, body.len()),
            (StatusCode::NOT_MODIFIED, 0),
            "{path}"
        );
    }
    // Other paths stay an ordinary 404, and a GET is not an ingest request.
    let (status, _, body) = h.get("/api/v2/report", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("nginx"));
    assert_eq!(h.exported().await.len(), 0);
}

#[tokio::test]
async fn readyz_is_503_once_staging_is_full() {
    let h = Harness::new("[staging]\nmax_reports = 2\n");
    let (status, _, body) = h.get("/readyz", &[]).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ready\n"[..]));
    for ready_after in [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE] {
        let (status, _) = h
            .send(post_report(b"/api/v1/report"), "203.0.113.5:40000", None)
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(h.get("/readyz", &[]).await.0, ready_after);
    }
    // Ingest would now answer 503: so does readiness, in a few words.
    let (status, _, body) = h.get("/readyz", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(&body[..], b"not ready: staging is full\n");
    let (status, _) = h
        .send(post_report(b"/api/v1/report"), "203.0.113.5:40000", None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // Acknowledged by the puller: ready again.
    let highest = h.staging.stats().await.expect("stats").highest_seq;
    h.staging.ack("test-node", highest).await.expect("ack");
    assert_eq!(h.get("/readyz", &[]).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_manifest_and_readiness_requests_costs_next_to_no_store_reads() {
    let h = Arc::new(Harness::new(""));
    let signed = br#"{"manifest":"as published","signature":"sig"}"#.to_vec();
    h.staging
        .put_manifest(3, signed.clone())
        .await
        .expect("put");
    let before = h.staging.read_stats();
    let started = std::time::Instant::now();
    // What 2048 keep-alive connections looping on these paths send.
    let requests: Vec<_> = (0..2048)
        .map(|i| {
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                let uri = ["/readyz", "/manifest", "/api/v1/report"][i % 3];
                let (status, _, body) = h.get(uri, &[]).await;
                (uri, status, body)
            })
        })
        .collect();
    for request in requests {
        let (uri, status, body) = request.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{uri}");
        if uri == "/readyz" {
            assert_eq!(&body[..], b"ready\n");
        } else {
            assert_eq!(body, signed, "{uri}");
        }
    }
    let after = h.staging.read_stats();
    // The manifest is served from memory and readiness reads the store at
    // most once a second, whatever the number of requests.
    let seconds = started.elapsed().as_secs();
    assert!(
        after.reads - before.reads <= seconds + 1,
        "{before:?} -> {after:?} in {seconds} s"
    );
    assert!(
        after.connections_opened <= lineprobe_collector::MAX_READERS as u64,
        "{after:?}"
    );
    // None of it is ingest, nor accounted as such.
    assert_eq!(h.exported().await.len(), 0);
}

/// A plain connection from `peer`, with the PROXY header's source
/// `proxied`.
fn conn(peer: &str, proxied: Option<&str>) -> ConnInfo {
    ConnInfo {
        peer: peer.parse().expect("peer"),
        proxied: proxied.map(|p| Proxied::Client(p.parse::<SocketAddr>().expect("proxied"))),
        local: "127.0.0.1:8443".parse().expect("local"),
        tls: None,
    }
}

/// Traffic settings under which one busy source is soon in an anomaly
/// episode and over its budget (as in tests/traffic.rs).
const FLOOD_LIMITS: &str = "[traffic]
min_anomaly_requests_per_minute = 30
node_capacity_per_second = 200.0
anomalous_unit_share = 0.01
anomalous_total_share = 0.1
throttle_retry_after_secs = 7
throttle_delay_ms = 0
";

fn post_enrolment() -> Request<Body> {
    Request::post("/api/v1/enrol")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .expect("request")
}

#[tokio::test]
async fn enrolments_are_accounted_and_throttled_with_their_source() {
    let h = Harness::new(FLOOD_LIMITS);
    let flooder = "198.51.100.7:40000";
    let mut statuses = Vec::new();
    for _ in 0..200 {
        let (status, body) = h.send(post_enrolment(), flooder, None).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            let body: Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(body["error"], "throttled");
        } else {
            // An empty enrolment is refused for what it is.
            assert_eq!(status, StatusCode::BAD_REQUEST);
        }
        statuses.push(status);
    }
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        throttled >= 100,
        "only {throttled} of 200 enrolments throttled"
    );
    assert_eq!(
        h.metrics.signatures.enrolment_count("throttled"),
        u64::try_from(throttled).expect("count")
    );
    assert!(h.metrics.traffic_throttled_count("prefix") >= 100);

    // One accounting: the same source's reports are throttled too, while
    // another source's are stored.
    let (status, _) = h
        .send(post_report(b"/api/v1/report"), "198.51.100.8:40001", None)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = h
        .send(post_report(b"/api/v1/report"), "203.0.113.5:40000", None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_refused_enrolment_counts_against_its_source_as_a_refused_report_does() {
    let h = Harness::new("");
    let unit = |ip: &str| UnitKey::prefix_of(ip.parse().expect("ip"));
    let initial = h.traffic.trust_score(&unit("203.0.113.5"));
    for _ in 0..3 {
        let (status, _) = h.send(post_enrolment(), "198.51.100.7:40000", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    assert!(h.traffic.trust_score(&unit("198.51.100.7")) < initial);
    // Another source is untouched.
    assert!((h.traffic.trust_score(&unit("203.0.113.5")) - initial).abs() < 1e-9);
}

/// A probe's key, to enrol and sign with through the router.
struct SigningProbe {
    install_id: lineprobe_shared::InstallId,
    key: lineprobe_shared::ProbeSigningKey,
}

impl SigningProbe {
    fn new(install_id: &str) -> Self {
        Self {
            install_id: lineprobe_shared::InstallId::parse(install_id).expect("install id"),
            key: lineprobe_shared::ProbeSigningKey::generate(),
        }
    }

    /// The `LineProbe-Signature` of `body` for `purpose` with `nonce`.
    fn signature(
        &self,
        purpose: lineprobe_shared::SignedPurpose,
        nonce: &str,
        body: &[u8],
    ) -> String {
        let ts = chrono::Utc::now().timestamp();
        let message = lineprobe_shared::signed_message(
            purpose,
            &self.install_id,
            nonce,
            ts,
            &lineprobe_shared::body_sha256_hex(body),
        );
        lineprobe_shared::SignatureHeader {
            key_id: self.key.public_key().key_id(),
            ts,
            signature: self.key.sign(&message),
        }
        .to_string()
    }

    fn enrolment(&self) -> Request<Body> {
        let nonce = uuid::Uuid::now_v7().to_string();
        let body = serde_json::to_vec(&serde_json::json!({
            "install_id": self.install_id.as_str(),
            "public_key": self.key.public_key().to_base64(),
            "nonce": nonce,
        }))
        .expect("json");
        let signature = self.signature(lineprobe_shared::SignedPurpose::Enrol, &nonce, &body);
        Request::post("/api/v1/enrol")
            .header(header::CONTENT_TYPE, "application/json")
            .header(lineprobe_shared::SIGNATURE_HEADER, signature)
            .body(Body::from(body))
            .expect("request")
    }

    /// A report in this probe's name, as the JSON bytes sent.
    fn report_body(&self) -> (String, Vec<u8>) {
        let mut report = support::sample_report();
        report["install_id"] = Value::String(self.install_id.to_string());
        let id = report["report_id"].as_str().expect("id").to_owned();
        (id, serde_json::to_vec(&report).expect("json"))
    }

    /// A report in this probe's name, signed with `signer`'s key when
    /// there is one.
    fn report(&self, signer: Option<&Self>) -> Request<Body> {
        let (id, body) = self.report_body();
        let mut request =
            Request::post("/api/v1/report").header(header::CONTENT_TYPE, "application/json");
        if let Some(signer) = signer {
            let signature = signer.signature(lineprobe_shared::SignedPurpose::Report, &id, &body);
            request = request.header(lineprobe_shared::SIGNATURE_HEADER, signature);
        }
        request.body(Body::from(body)).expect("request")
    }
}

#[tokio::test]
async fn junk_naming_an_installation_neither_throttles_nor_taints_its_signed_reports() {
    let h = Harness::new(FLOOD_LIMITS);
    let victim = SigningProbe::new("victim-install-1");
    let home = "198.51.100.7:40000";
    let (status, body) = h.send(victim.enrolment(), home, None).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );

    // Junk in the victim's name, from addresses all over the internet (one
    // prefix each, so that no source prefix is throttled): a body that
    // breaks the schema, an unsigned report (refused: the installation
    // signs), and one signed by somebody else's key. Together far more
    // than the band allows the installation in a minute.
    let forger = SigningProbe::new("victim-install-1");
    for i in 0..60_u32 {
        let from = format!("192.0.{i}.1:40000");
        let (request, expected) = match i % 3 {
            0 => {
                let mut broken = support::sample_report();
                broken["install_id"] = Value::from("victim-install-1");
                broken["trace"] = Value::from(7);
                let request = Request::post("/api/v1/report")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&broken).expect("json")))
                    .expect("request");
                (request, StatusCode::UNPROCESSABLE_ENTITY)
            }
            1 => (victim.report(None), StatusCode::UNAUTHORIZED),
            _ => (victim.report(Some(&forger)), StatusCode::UNAUTHORIZED),
        };
        let (status, body) = h.send(request, &from, None).await;
        // Were the junk counted for the installation, this is where it
        // would be throttled (429) in the installation's name; what the
        // test is about is the victim's report below.
        assert!(
            status == expected || status == StatusCode::TOO_MANY_REQUESTS,
            "{i}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let install = UnitKey::Install("victim-install-1".to_owned());
    let initial = h
        .traffic
        .trust_score(&UnitKey::prefix_of("203.0.113.5".parse().expect("ip")));
    assert!((h.traffic.trust_score(&install) - initial).abs() < 1e-9);

    // The victim's own signed report is stored, and not taken for a
    // source with recent rejects or in an anomaly episode.
    let (status, body) = h.send(victim.report(Some(&victim)), home, None).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let stored: Value = serde_json::from_slice(&h.exported().await[0]).expect("json");
    let trust = &stored["envelope"]["trust"];
    assert_eq!(trust["signature"], "verified", "{trust}");
    let reasons = trust["reasons"].as_array().expect("reasons");
    assert!(!reasons.contains(&Value::from("recent_rejects")), "{trust}");
    assert!(
        !reasons.contains(&Value::from("anomaly_episode")),
        "{trust}"
    );
}

#[tokio::test]
async fn an_enrolment_whose_body_does_not_come_ends_at_the_request_timeout() {
    let h = Harness::new("[limits]\nrequest_timeout_ms = 200\n");
    let never = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
    let request = Request::post("/api/v1/enrol")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(never))
        .expect("request");
    let started = std::time::Instant::now();
    let (status, body) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        h.send(request, "198.51.100.7:40000", None),
    )
    .await
    .expect("answered within the configured request timeout");
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"], "timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test]
async fn an_enrolment_body_that_comes_too_slowly_is_no_reject_of_its_source() {
    // As for a report whose body comes too slowly: a slow line is not a
    // source sending what it should not.
    let h = Harness::new("[limits]\nrequest_timeout_ms = 100\n");
    let unit = UnitKey::prefix_of("198.51.100.7".parse().expect("ip"));
    let initial = h.traffic.trust_score(&unit);
    for _ in 0..3 {
        let never = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        let request = Request::post("/api/v1/enrol")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(never))
            .expect("request");
        let (status, _) = h.send(request, "198.51.100.7:40000", None).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    }
    assert_eq!(h.metrics.signatures.enrolment_count("timeout"), 3);
    assert_eq!(h.metrics.signatures.enrolment_count("invalid"), 0);
    assert!((h.traffic.trust_score(&unit) - initial).abs() < 1e-9);
}

#[tokio::test]
async fn a_body_that_breaks_off_is_no_reject_of_its_source() {
    // A dropped connection mid-upload (a phone changing networks) was
    // counted as an invalid report, and cost the source prefix trust.
    let h = Harness::new("");
    let unit = UnitKey::prefix_of("198.51.100.7".parse().expect("ip"));
    let initial = h.traffic.trust_score(&unit);
    let broken = || {
        Body::from_stream(futures_util::stream::iter([
            Ok(Bytes::from_static(b"{\"schema\":1,")),
            Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ]))
    };
    for path in ["/api/v1/report", "/api/v1/enrol"] {
        for _ in 0..3 {
            let request = Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(broken())
                .expect("request");
            let (status, body) = h.send(request, "198.51.100.7:40000", None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
            let body: Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(body["error"], "bad_body", "{path}");
        }
    }
    assert_eq!(h.metrics.ingest_count(IngestOutcome::Aborted), 3);
    assert_eq!(h.metrics.ingest_count(IngestOutcome::Invalid), 0);
    assert_eq!(h.metrics.signatures.enrolment_count("aborted"), 3);
    assert_eq!(h.metrics.signatures.enrolment_count("invalid"), 0);
    assert!((h.traffic.trust_score(&unit) - initial).abs() < 1e-9);
}

#[tokio::test]
async fn a_coded_enrolment_is_refused_as_such() {
    // It was read as JSON and refused as a malformed (invalid) enrolment.
    let h = Harness::new("");
    for coding in ["gzip", "identity, br"] {
        let request = Request::post("/api/v1/enrol")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_ENCODING, coding)
            .body(Body::from(&b"\x1f\x8b\x08\x00"[..]))
            .expect("request");
        let (status, body) = h.send(request, "198.51.100.7:40000", None).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{coding}");
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"], "unsupported_encoding", "{coding}");
    }
    assert_eq!(h.metrics.signatures.enrolment_count("unsupported"), 2);
    assert_eq!(h.metrics.signatures.enrolment_count("invalid"), 0);
}

#[tokio::test]
async fn a_store_that_cannot_read_enrolled_keys_counts_against_no_source() {
    let h = Harness::new("");
    let unit = |ip: &str| UnitKey::prefix_of(ip.parse().expect("ip"));
    let initial = h.traffic.trust_score(&unit("198.51.100.7"));
    // The enrolled keys cannot be read once the store is closed (as while
    // the node shuts down, or when its database fails).
    h.staging.close().await.expect("close");
    for _ in 0..3 {
        let (status, body) = h
            .send(post_report(b"/api/v1/report"), "198.51.100.7:40000", None)
            .await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"], "storage_unavailable");
    }
    // The receiver's own failure: neither a refusal of the source nor an
    // unknown key.
    assert_eq!(h.metrics.ingest_count(IngestOutcome::StorageError), 3);
    assert_eq!(h.metrics.ingest_count(IngestOutcome::SignatureRejected), 0);
    assert_eq!(
        h.metrics
            .signatures
            .check_count(lineprobe_collector::SignatureOutcome::UnknownKey),
        0
    );
    assert!((h.traffic.trust_score(&unit("198.51.100.7")) - initial).abs() < 1e-9);
}
