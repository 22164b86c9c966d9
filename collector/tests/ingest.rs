//! Ingest over real HTTPS on loopback: a 2xx only after the commit, one row
//! per report id, clear 4xx errors, ordinary 404s, limits and shedding.

mod support;

use std::io::Write;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{public_url, sample_report, start};

/// How many reports the collector's store holds (up to 10, as these tests
/// send few).
async fn stored_count(running: &lineprobe_collector::RunningCollector) -> usize {
    running
        .staging
        .export_after(0, 10)
        .await
        .expect("export")
        .len()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

#[tokio::test]
async fn stored_then_duplicate_then_exported_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(dir.path(), "").await;
    let report = sample_report();
    let url = public_url(&running, "/api/v1/report");

    let r = client.post(&url).json(&report).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "stored");
    let seq = body["seq"].as_u64().expect("seq");

    // The same report again, on another configured path: one row.
    let r = client
        .post(public_url(&running, "/api/v1/abc123/report"))
        .json(&report)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "duplicate");
    assert_eq!(body["seq"].as_u64(), Some(seq));

    let exported = running.staging.export_after(0, 100).await.expect("export");
    assert_eq!(exported.len(), 1);
    let stored: Value = serde_json::from_slice(&exported[0].json).expect("stored json");
    let env = &stored["envelope"];
    assert_eq!(env["peer_ip"], "127.0.0.1");
    assert!(env["peer_port"].as_u64().is_some_and(|p| p > 0));
    assert_eq!(env["node_id"], "test-node");
    assert_eq!(env["seq"].as_u64(), Some(seq));
    assert_eq!(env["path"], "/api/v1/report");
    assert_eq!(env["tls"]["sni"], "localhost");
    assert!(
        env["tls"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLS"))
    );
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn headers_are_recorded_but_not_believed_from_untrusted_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(dir.path(), "").await;
    let r = client
        .post(public_url(&running, "/static/x/upload"))
        .header("X-Forwarded-For", "198.51.100.77")
        .header("User-Agent", "Mozilla/5.0 (lineprobe test)")
        .header("Accept-Language", "zh-CN,zh;q=0.9")
        .json(&sample_report())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::CREATED);
    let exported = running.staging.export_after(0, 10).await.expect("export");
    let stored: Value = serde_json::from_slice(&exported[0].json).expect("json");
    assert_eq!(stored["envelope"]["peer_ip"], "127.0.0.1");
    assert_eq!(
        stored["envelope"]["headers"]["x-forwarded-for"],
        "198.51.100.77"
    );
    assert_eq!(
        stored["envelope"]["headers"]["accept-language"],
        "zh-CN,zh;q=0.9"
    );
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn trusted_proxy_forwarded_address_is_believed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(
        dir.path(),
        "[public]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
    )
    .await;
    let r = client
        .post(public_url(&running, "/api/v1/report"))
        .header("X-Forwarded-For", "192.0.2.1, 198.51.100.77")
        .json(&sample_report())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::CREATED);
    let exported = running.staging.export_after(0, 10).await.expect("export");
    let stored: Value = serde_json::from_slice(&exported[0].json).expect("json");
    assert_eq!(stored["envelope"]["peer_ip"], "198.51.100.77");
    assert!(stored["envelope"].get("peer_port").is_none());
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn invalid_reports_get_4xx_naming_the_field_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(dir.path(), "").await;
    let url = public_url(&running, "/api/v1/report");

    let mut bad = sample_report();
    bad["trace"]["hops"][0]["ttl"] = json!(0);
    let r = client.post(&url).json(&bad).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "invalid_report");
    let fields: Vec<&str> = body["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter_map(|v| v["field"].as_str())
        .collect();
    assert!(
        fields.iter().any(|f| f.starts_with("trace.hops[0]")),
        "{body}"
    );

    let mut unknown = sample_report();
    unknown["surprise"] = json!(1);
    let r = client.post(&url).json(&unknown).send().await.expect("send");
    assert!(r.status().is_client_error());
    let text = r.text().await.expect("text");
    assert!(text.contains("surprise"), "{text}");

    let mut with_envelope = sample_report();
    with_envelope["envelope"] = json!({"received_at": "2025-01-01T00:00:00Z", "peer_ip": "192.0.2.1",
        "path": "/x", "node_id": "n", "seq": 1});
    let r = client
        .post(&url)
        .json(&with_envelope)
        .send()
        .await
        .expect("send");
    assert!(r.status().is_client_error());

    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "malformed_report");

    let r = client
        .post(&url)
        .header("content-type", "text/html")
        .body("<html>")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_eq!(stored_count(&running).await, 0);
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn other_paths_and_methods_get_an_ordinary_404() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(dir.path(), "").await;
    for (method, path) in [
        (reqwest::Method::POST, "/api/v2/report"),
        (reqwest::Method::GET, "/api/v1/report"),
        (reqwest::Method::GET, "/"),
        (reqwest::Method::POST, "/export"),
        (reqwest::Method::GET, "/metrics"),
    ] {
        let r = client
            .request(method.clone(), public_url(&running, path))
            .json(&sample_report())
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        let text = r.text().await.expect("text");
        assert!(
            text.contains("404 Not Found") && !text.contains("lineprobe"),
            "{text}"
        );
    }
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn gzip_bodies_and_their_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(
        dir.path(),
        "[limits]\nmax_body_bytes = 4096\nmax_decompressed_bytes = 16384\n",
    )
    .await;
    let url = public_url(&running, "/api/v1/report");

    let body = serde_json::to_vec(&sample_report()).expect("json");
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::CREATED);

    // A gzip bomb: tiny on the wire, huge inflated.
    let bomb = gzip(&vec![b' '; 2 * 1024 * 1024]);
    assert!(bomb.len() < 4096);
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Over the body limit as sent.
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b' '; 8192])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_largest_report_ingest_takes_is_stored_with_the_largest_envelope() {
    // `limits.max_decompressed_bytes` at its highest leaves room for the
    // receiver's envelope under the schema's limit: every report ingest
    // lets through can be stored, whatever headers came with it.
    let most = lineprobe_collector::MAX_DECOMPRESSED_BYTES;
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(
        dir.path(),
        &format!("[limits]\nmax_decompressed_bytes = {most}\n"),
    )
    .await;
    let url = public_url(&running, "/api/v1/report");
    let limit = lineprobe_shared::ReportLimits::MAX_REPORT_BYTES;
    // Every recorded header at its longest, in 4-byte characters.
    let long = reqwest::header::HeaderValue::from_bytes("\u{1F600}".repeat(600).as_bytes())
        .expect("header");
    let send = |body: Vec<u8>| {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip");
        for name in lineprobe_shared::EnvelopeHeaders::SELECTED {
            request = request.header(name, long.clone());
        }
        request.body(gzip(&body)).send()
    };

    let r = send(padded_report(most)).await.expect("send");
    assert_eq!(r.status(), StatusCode::CREATED);
    let exported = running.staging.export_after(0, 10).await.expect("export");
    assert_eq!(exported.len(), 1);
    assert!(exported[0].json.len() <= limit);

    // One byte more is refused by ingest, before anything is stored.
    let r = send(padded_report(most + 1)).await.expect("send");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "too_large", "{body}");
    assert_eq!(stored_count(&running).await, 1);
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_report_that_the_envelope_takes_past_the_schema_limit_is_refused_not_stored() {
    // Ingest no longer lets such a report through (see above); the store
    // still refuses one rather than keep what could never be pulled.
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, _client) = start(dir.path(), "").await;
    let limit = lineprobe_shared::ReportLimits::MAX_REPORT_BYTES;
    let body = padded_report(limit - 16);
    let mut report = lineprobe_shared::Report::from_submitted_json(&body).expect("report");
    report.envelope = Some(lineprobe_shared::ReceiverEnvelope {
        received_at: chrono::Utc::now(),
        peer_ip: "203.0.113.9".parse().expect("ip"),
        peer_port: Some(40_000),
        path: "/api/v1/report".to_owned(),
        headers: lineprobe_shared::EnvelopeHeaders::default(),
        tls: None,
        node_id: "test-node".to_owned(),
        trust: None,
        seq: 0,
    });
    let e = running
        .staging
        .stage_received(report, &body)
        .await
        .expect_err("too large");
    assert!(
        e.to_string().contains("with the receiver's envelope"),
        "{e}"
    );
    assert_eq!(stored_count(&running).await, 0);
    running.shutdown().await.expect("shutdown");
}

/// A valid report with a fresh id, padded with whitespace inside its
/// object to `size` bytes.
fn padded_report(size: usize) -> Vec<u8> {
    let mut report = sample_report();
    report["report_id"] = json!(uuid::Uuid::now_v7().to_string());
    let json = serde_json::to_vec(&report).expect("json");
    let mut body = b"{".to_vec();
    body.resize(size - json.len() + 1, b' ');
    body.extend_from_slice(&json[1..]);
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn staging_full_answers_503_with_retry_after_and_stores_nothing_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(
        dir.path(),
        "[staging]\nmax_reports = 2\nfull_retry_after_secs = 42\n",
    )
    .await;
    let url = public_url(&running, "/api/v1/report");
    for _ in 0..2 {
        let r = client
            .post(&url)
            .json(&sample_report())
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = client
        .post(&url)
        .json(&sample_report())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "42");
    assert_eq!(stored_count(&running).await, 2);
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn concurrency_limit_sheds_with_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One request at a time, and a commit wait long enough that requests overlap.
    let (running, client) = start(
        dir.path(),
        "[limits]\nmax_concurrent_requests = 1\n[staging]\ngroup_commit_wait_us = 100000\ngroup_commit_gap_us = 0\n",
    )
    .await;
    let url = public_url(&running, "/api/v1/report");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(&url)
                .json(&sample_report())
                .send()
                .await
                .expect("send")
                .status()
        }));
    }
    let mut shed = 0u64;
    let mut stored = 0usize;
    for t in tasks {
        match t.await.expect("task") {
            StatusCode::CREATED => stored += 1,
            StatusCode::SERVICE_UNAVAILABLE => shed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(stored >= 1 && shed >= 1, "stored {stored}, shed {shed}");
    assert_eq!(
        running
            .staging
            .export_after(0, 100)
            .await
            .expect("export")
            .len(),
        stored
    );
    assert_eq!(
        running
            .metrics
            .ingest_count(lineprobe_collector::IngestOutcome::Shed),
        shed
    );
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn health_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(dir.path(), "").await;
    let r = client
        .post(public_url(&running, "/api/v1/report"))
        .json(&sample_report())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::CREATED);
    for url in [
        public_url(&running, "/healthz"),
        public_url(&running, "/readyz"),
    ] {
        assert_eq!(
            client.get(&url).send().await.expect("send").status(),
            StatusCode::OK
        );
    }
    let text = support::metrics_text(&client, &running).await;
    for needle in [
        "lineprobe_collector_ingest_requests_total{outcome=\"Stored\"} 1",
        "lineprobe_collector_staging_unacked_reports 1",
        "lineprobe_collector_staging_oldest_unacked_age_seconds",
        "lineprobe_collector_staging_commit_seconds_bucket",
        "lineprobe_collector_staging_wal_restart_seconds_count 0",
        "lineprobe_collector_connection_events_total",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn concurrent_retries_of_one_report_store_one_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(dir.path(), "").await;
    let url = public_url(&running, "/api/v1/report");
    let report = sample_report();
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (client, url, report) = (client.clone(), url.clone(), report.clone());
        tasks.push(tokio::spawn(async move {
            let r = client.post(&url).json(&report).send().await.expect("send");
            let status = r.status();
            let body: Value = r.json().await.expect("json");
            (
                status,
                body["status"].as_str().map(str::to_owned),
                body["seq"].as_u64(),
            )
        }));
    }
    let mut created = 0;
    let mut seqs = std::collections::HashSet::new();
    for t in tasks {
        let (status, word, seq) = t.await.expect("task");
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => assert_eq!(word.as_deref(), Some("duplicate")),
            other => panic!("unexpected {other}"),
        }
        seqs.insert(seq.expect("seq"));
    }
    assert_eq!(created, 1, "exactly one request stores the report");
    assert_eq!(seqs.len(), 1, "every answer names the one stored copy");
    assert_eq!(
        running
            .staging
            .export_after(0, 100)
            .await
            .expect("export")
            .len(),
        1
    );
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_body_that_trickles_in_past_the_request_timeout_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    // Plain HTTP behind a (pretend) proxy so that the test can write raw bytes.
    let (running, _client) = start(
        dir.path(),
        "[public]\nplain_http = true\nbehind_proxy = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n[limits]\nrequest_timeout_ms = 300\n",
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(running.public_addr)
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /api/v1/report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"schema\":",
        )
        .await
        .expect("write head");
    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 5 s");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(stored_count(&running).await, 0);
    running.shutdown().await.expect("shutdown");
}

/// A client trickling its body holds no request slot: with one slot, a
/// report sent meanwhile is stored, and the trickler still gets its 408.
#[tokio::test]
async fn a_trickling_body_holds_no_request_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, _client) = start(
        dir.path(),
        "[public]\nplain_http = true\nbehind_proxy = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [limits]\nrequest_timeout_ms = 1500\nmax_concurrent_requests = 1\n",
    )
    .await;
    let mut slow = tokio::net::TcpStream::connect(running.public_addr)
        .await
        .expect("connect");
    slow.write_all(
        b"POST /api/v1/report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"schema\":",
    )
    .await
    .expect("write head");
    // Let the server start reading the trickler's body.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let answer = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/api/v1/report",
            running.public_addr.port()
        ))
        .json(&sample_report())
        .send()
        .await
        .expect("send");
    assert_eq!(
        answer.status(),
        StatusCode::CREATED,
        "{:?}",
        answer.text().await
    );

    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = slow.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to the trickler within 5 s");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    running.shutdown().await.expect("shutdown");
}

/// Every `Content-Encoding` header and list element counts, in the order
/// applied (RFC 9110): identity is no coding, gzip may be stacked twice
/// (each layer held to the decompressed limit), anything else is 415 naming
/// the coding.
#[tokio::test]
async fn every_content_encoding_header_and_element_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(
        dir.path(),
        "[limits]\nmax_body_bytes = 4096\nmax_decompressed_bytes = 16384\n",
    )
    .await;
    let url = public_url(&running, "/api/v1/report");
    let post = |encodings: &[&str], body: Vec<u8>| {
        let mut request = client.post(&url).header("content-type", "application/json");
        for e in encodings {
            request = request.header("content-encoding", *e);
        }
        request.body(body).send()
    };
    let report = || serde_json::to_vec(&sample_report()).expect("json");

    let mut stored = 0;
    for (encodings, layers) in [
        // A second header, as a proxy that appends one writes it.
        (&["identity", "gzip"][..], 1),
        (&["gzip", "identity"][..], 1),
        (&["identity, gzip"][..], 1),
        (&["Identity , , GZIP"][..], 1),
        (&[""][..], 0),
        (&["identity", "identity"][..], 0),
        // Gzipped twice, in one list or in two headers.
        (&["gzip", "gzip"][..], 2),
        (&["gzip, x-gzip"][..], 2),
        (&["gzip", "identity, gzip"][..], 2),
    ] {
        let mut body = report();
        for _ in 0..layers {
            body = gzip(&body);
        }
        let r = post(encodings, body).await.expect("send");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::CREATED, "{encodings:?}: {text}");
        stored += 1;
    }
    assert_eq!(stored_count(&running).await, stored);

    // Declared twice, gzipped once: the second layer is not gzip.
    let r = post(&["gzip", "gzip"], gzip(&report()))
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "bad_gzip", "{body}");

    // The inner layer is held to the decompressed limit too.
    let mut padded = report();
    padded.resize(40_000, b' ');
    let inner = gzip(&padded);
    assert!(inner.len() < 16384);
    let r = post(&["gzip", "gzip"], gzip(&inner)).await.expect("send");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    for (encodings, names) in [
        (&["gzip", "br"][..], "\"br\""),
        (&["identity", "deflate"][..], "\"deflate\""),
        (&["gzip", "identity, zstd"][..], "\"zstd\""),
        (
            &["gzip", "gzip", "gzip"][..],
            "\"gzip\" is applied more than 2 times",
        ),
        (
            &["gzip, gzip, gzip"][..],
            "\"gzip\" is applied more than 2 times",
        ),
    ] {
        let mut body = report();
        for _ in 0..3 {
            body = gzip(&body);
        }
        let r = post(encodings, body).await.expect("send");
        assert_eq!(
            r.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{encodings:?}"
        );
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"], "unsupported_encoding", "{body}");
        let detail = body["detail"].as_str().expect("detail");
        assert!(detail.contains(names), "{encodings:?}: {detail}");
        assert!(detail.contains("Content-Encoding: gzip"), "{detail}");
    }
    assert_eq!(stored_count(&running).await, stored);
    running.shutdown().await.expect("shutdown");
}
