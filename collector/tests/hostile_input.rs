//! Hostile input against the whole collector on loopback: over-size bodies,
//! malformed JSON, broken gzip, wrong media types and slow (slowloris)
//! clients. Each gets a prompt, clean answer — a JSON error that says what is
//! wrong, or a closed connection — nothing is stored, the collector keeps
//! serving ordinary probes meanwhile and afterwards, and no handler panics (a
//! panicking handler would drop its connection instead of answering).

mod support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lineprobe_collector::{IngestOutcome, ListenerEvent, ListenerName, RunningCollector};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use support::{public_url, sample_report, start};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longest any one test may take.
const BOUND: Duration = Duration::from_mins(1);

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// A clean rejection: the status, and a JSON body `{"error", "detail"}` (or
/// `violations` for 422) whose text is returned for the caller to check.
async fn rejection(r: reqwest::Response, status: StatusCode, code: &str) -> (String, Value) {
    let got = r.status();
    let ct = r
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = r.text().await.expect("the answer has a body");
    assert_eq!(got, status, "{text}");
    assert!(
        ct.starts_with("application/json"),
        "content-type {ct:?}: {text}"
    );
    let body: Value = serde_json::from_str(&text).expect("the error is JSON");
    assert_eq!(body["error"], code, "{text}");
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        let violations = body["violations"].as_array().expect("violations listed");
        assert!(!violations.is_empty(), "{text}");
        for v in violations {
            assert!(v["field"].as_str().is_some_and(|f| !f.is_empty()), "{text}");
            assert!(
                v["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{text}"
            );
        }
    } else {
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{text}"
        );
    }
    (text, body)
}

async fn stored_count(running: &RunningCollector) -> usize {
    running
        .staging
        .export_after(0, 1000)
        .await
        .expect("export")
        .len()
}

/// An ordinary probe's report is still stored.
async fn probe_still_served(client: &reqwest::Client, url: &str) {
    let r = client
        .post(url)
        .json(&sample_report())
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap_or_default()
    );
}

fn json_post(client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    client.post(url).header(CONTENT_TYPE, "application/json")
}

#[tokio::test]
async fn over_size_bodies_get_413_with_a_json_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(
        dir.path(),
        "[limits]\nmax_body_bytes = 4096\nmax_decompressed_bytes = 8192\n",
    )
    .await;
    let url = public_url(&running, "/api/v1/report");
    timeout(BOUND, async {
        // Declared too long: refused before the body is read.
        let r = json_post(&client, &url)
            .body(vec![b' '; 5000])
            .send()
            .await
            .expect("send");
        let (text, _) = rejection(r, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
        assert!(text.contains("4096"), "{text}");

        // No length declared (chunked): cut off at the limit as it streams.
        let chunks = (0..64).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024]));
        let r = json_post(&client, &url)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .expect("send");
        rejection(r, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;

        // Small on the wire, over the limit inflated: a valid report padded
        // with whitespace, so only its size is wrong.
        let mut padded = serde_json::to_vec(&sample_report()).expect("json");
        padded.resize(9000, b' ');
        let packed = gzip(&padded);
        assert!(packed.len() < 4096);
        let r = json_post(&client, &url)
            .header(CONTENT_ENCODING, "gzip")
            .body(packed)
            .send()
            .await
            .expect("send");
        let (text, _) = rejection(r, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
        assert!(text.contains("8192"), "{text}");

        assert_eq!(stored_count(&running).await, 0);
        assert_eq!(running.metrics.ingest_count(IngestOutcome::TooLarge), 3);
        probe_still_served(&client, &url).await;
        assert_eq!(stored_count(&running).await, 1);
    })
    .await
    .expect("bounded");
    running.shutdown().await.expect("shutdown");
}

/// A malformed body: what it is, the body, and the answer it must get: the
/// status, the error code and a fragment of the answer's text.
type Malformed = (&'static str, Vec<u8>, StatusCode, &'static str, String);

fn malformed_bodies() -> Vec<Malformed> {
    let valid = serde_json::to_vec(&sample_report()).expect("json");
    let mut cases: Vec<Malformed> = vec![
        (
            "not JSON",
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_report",
            "line 1".into(),
        ),
        (
            "empty",
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "malformed_report",
            "EOF".into(),
        ),
        (
            "cut short",
            valid[..valid.len() / 2].to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_report",
            "EOF".into(),
        ),
        (
            "trailing data",
            [valid.as_slice(), b" {}"].concat(),
            StatusCode::BAD_REQUEST,
            "malformed_report",
            "trailing".into(),
        ),
        (
            "NaN",
            b"{\"schema\": NaN}".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_report",
            "line 1".into(),
        ),
        (
            "not UTF-8",
            b"{\"schema\": 1, \"account\": \"\xff\xfe\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_report",
            "line 1".into(),
        ),
        (
            "an array",
            b"[1, 2]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_report",
            "(document)".into(),
        ),
    ];
    let mut null_protocol = sample_report();
    null_protocol["trace"]["protocol"] = Value::Null;
    cases.push((
        "a wrong type where a name belongs",
        serde_json::to_vec(&null_protocol).expect("json"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_report",
        "trace.protocol".into(),
    ));
    let mut empty_key = sample_report();
    empty_key["device"][""] = json!(1);
    cases.push((
        "an empty key",
        serde_json::to_vec(&empty_key).expect("json"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_report",
        r#"device[\"\"]"#.into(),
    ));
    let text = String::from_utf8(valid.clone()).expect("UTF-8");
    let duplicated = text.replacen('{', "{\"account\": \"x\", ", 1);
    cases.push((
        "a key given twice",
        duplicated.into_bytes(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_report",
        r#"{"field":"account","reason":"duplicate field"#.into(),
    ));
    let mut deep = b"{\"schema\": 1, \"declared\": ".to_vec();
    deep.extend(std::iter::repeat_n(b'[', 5000));
    deep.extend(std::iter::repeat_n(b']', 5000));
    deep.push(b'}');
    cases.push((
        "nested 5000 deep",
        deep,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_report",
        "declared".into(),
    ));

    cases
}

#[tokio::test]
async fn malformed_json_gets_a_4xx_saying_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(dir.path(), "").await;
    let url = public_url(&running, "/api/v1/report");
    let cases = malformed_bodies();

    timeout(BOUND, async {
        for (what, body, status, code, fragment) in cases {
            let r = json_post(&client, &url)
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
            let (text, _) = rejection(r, status, code).await;
            assert!(
                text.contains(&fragment),
                "{what}: {fragment:?} not in {text}"
            );
        }
        assert_eq!(stored_count(&running).await, 0);
        probe_still_served(&client, &url).await;
    })
    .await
    .expect("bounded");
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn truncated_or_corrupt_gzip_gets_400() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(dir.path(), "").await;
    let url = public_url(&running, "/api/v1/report");
    let packed = gzip(&serde_json::to_vec(&sample_report()).expect("json"));

    let truncated = packed[..packed.len() / 2].to_vec();
    // The trailer holds the CRC-32 of the inflated data, then its length.
    let mut bad_crc = packed.clone();
    let crc_at = bad_crc.len() - 8;
    bad_crc[crc_at] ^= 0xff;
    let mut bad_length = packed.clone();
    let len_at = bad_length.len() - 4;
    bad_length[len_at] ^= 0x01;
    let mut bad_stream = packed.clone();
    bad_stream[12] ^= 0xff;
    bad_stream[13] ^= 0xff;
    let cases = [
        ("cut in half", truncated, "bad_gzip"),
        ("wrong CRC", bad_crc, "bad_gzip"),
        ("wrong length", bad_length, "bad_gzip"),
        ("corrupt deflate stream", bad_stream, "bad_gzip"),
        ("not gzip at all", b"{\"schema\": 1}".to_vec(), "bad_gzip"),
        (
            "gzip of broken JSON",
            gzip(b"{not json"),
            "malformed_report",
        ),
    ];
    timeout(BOUND, async {
        for (what, body, code) in cases {
            let r = json_post(&client, &url)
                .header(CONTENT_ENCODING, "gzip")
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
            let (text, _) = rejection(r, StatusCode::BAD_REQUEST, code).await;
            if code == "bad_gzip" {
                assert!(text.contains("gzip"), "{what}: {text}");
            }
        }
        assert_eq!(stored_count(&running).await, 0);
        probe_still_served(&client, &url).await;
    })
    .await
    .expect("bounded");
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn every_gzip_member_is_read_and_bytes_after_the_last_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(dir.path(), "").await;
    let url = public_url(&running, "/api/v1/report");
    let report = sample_report();
    let json = serde_json::to_vec(&report).expect("json");
    timeout(BOUND, async {
        // One report in two members (as `cat a.gz b.gz` makes): the whole
        // report is read, not its first half.
        let (head, tail) = json.split_at(json.len() / 2);
        let two_members = [gzip(head), gzip(tail)].concat();
        let r = json_post(&client, &url)
            .header(CONTENT_ENCODING, "gzip")
            .body(two_members)
            .send()
            .await
            .expect("send");
        let status = r.status();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap_or_default()
        );
        let stored = running.staging.export_after(0, 10).await.expect("export");
        assert_eq!(stored.len(), 1);
        let stored: Value = serde_json::from_slice(&stored[0].json).expect("json");
        assert_eq!(stored["report_id"], report["report_id"]);

        // Bytes after the gzip data that are no gzip member are not passed
        // over unseen.
        let mut other = sample_report();
        other["account"] = json!("appended");
        for (what, trailer) in [
            ("garbage", b"garbage after the gzip trailer".to_vec()),
            ("a JSON document", serde_json::to_vec(&other).expect("json")),
            ("zero padding", vec![0; 16]),
        ] {
            let body = [
                gzip(&serde_json::to_vec(&sample_report()).expect("json")),
                trailer,
            ]
            .concat();
            let r = json_post(&client, &url)
                .header(CONTENT_ENCODING, "gzip")
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
            let (text, _) = rejection(r, StatusCode::BAD_REQUEST, "bad_gzip").await;
            assert!(text.contains("gzip"), "{what}: {text}");
        }
        assert_eq!(stored_count(&running).await, 1);
    })
    .await
    .expect("bounded");
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn wrong_media_types_and_encodings_get_415() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(dir.path(), "").await;
    let url = public_url(&running, "/api/v1/report");
    let body = || serde_json::to_vec(&sample_report()).expect("json");
    timeout(BOUND, async {
        let types = [
            HeaderValue::from_static("text/plain"),
            HeaderValue::from_static("text/html; charset=utf-8"),
            // What `curl -d` sends.
            HeaderValue::from_static("application/x-www-form-urlencoded"),
            HeaderValue::from_static("multipart/form-data; boundary=x"),
            HeaderValue::from_static("application/xml"),
            HeaderValue::from_bytes(b"application/\xffjson").expect("opaque header bytes"),
        ];
        for ct in types {
            let r = client
                .post(&url)
                .header(CONTENT_TYPE, ct.clone())
                .body(body())
                .send()
                .await
                .expect("send");
            let (text, _) = rejection(
                r,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
            .await;
            assert!(text.contains("application/json"), "{ct:?}: {text}");
        }
        for encoding in ["deflate", "br", "compress", "gzip, br", "zstd"] {
            let r = json_post(&client, &url)
                .header(CONTENT_ENCODING, encoding)
                .body(body())
                .send()
                .await
                .expect("send");
            let (text, _) = rejection(
                r,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
            )
            .await;
            assert!(text.contains("gzip"), "{encoding}: {text}");
        }
        assert_eq!(stored_count(&running).await, 0);
        assert_eq!(
            running
                .metrics
                .ingest_count(IngestOutcome::UnsupportedMedia),
            11
        );
        // JSON by any of its spellings is accepted.
        for ct in [
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.lineprobe.report+json",
        ] {
            let r = client
                .post(&url)
                .header(CONTENT_TYPE, ct)
                .body(body())
                .send()
                .await
                .expect("send");
            assert_eq!(r.status(), StatusCode::CREATED, "{ct}");
        }
        assert_eq!(stored_count(&running).await, 3);
    })
    .await
    .expect("bounded");
    running.shutdown().await.expect("shutdown");
}

/// Reads until the peer closes (or errors), for at most `within`; returns
/// what arrived and whether it closed in time.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let closed = timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (out, closed)
}

/// A slowloris client: sends a partial request head, then one more header
/// line every 100 ms, until the collector closes the connection.
async fn slowloris(addr: SocketAddr) -> (Duration, String) {
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let trickle = tokio::spawn(async move {
        let head = b"POST /api/v1/report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
        if wr.write_all(head).await.is_err() {
            return;
        }
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if wr
                .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut out = Vec::new();
    let _ = timeout(Duration::from_secs(8), rd.read_to_end(&mut out))
        .await
        .expect("the slowloris connection was not closed within 8 s");
    let took = started.elapsed();
    trickle.abort();
    (took, String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn slowloris_clients_are_cut_off_while_probes_keep_being_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Plain HTTP behind a (pretend) proxy, so the test can write raw bytes.
    let (running, _) = start(
        dir.path(),
        "[public]\nplain_http = true\nbehind_proxy = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [limits]\nheader_read_timeout_ms = 600\nrequest_timeout_ms = 1000\n",
    )
    .await;
    let addr = running.public_addr;
    let url = format!("http://127.0.0.1:{}/api/v1/report", addr.port());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    timeout(BOUND, async {
        // Slow heads.
        let slow: Vec<_> = (0..8).map(|_| tokio::spawn(slowloris(addr))).collect();
        // Probes are served while the slow clients hang on.
        for _ in 0..5 {
            probe_still_served(&client, &url).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for handle in slow {
            let (took, answer) = handle.await.expect("slowloris task");
            assert!(
                took >= Duration::from_millis(500),
                "cut off too early: {took:?}"
            );
            assert!(took < Duration::from_secs(4), "cut off too late: {took:?}");
            assert!(
                !answer.contains(" 201 ") && !answer.contains(" 200 "),
                "{answer}"
            );
        }
        let timed_out = running
            .metrics
            .connection_events(ListenerName::Public, ListenerEvent::HeaderReadTimedOut);
        assert!(timed_out >= 8, "{timed_out} header read timeouts counted");

        // A slow body: a complete head, then the body a byte at a time,
        // always moving but never finishing within the request timeout.
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(
                b"POST /api/v1/report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 4000\r\n\r\n",
            )
            .await
            .expect("head");
        let (mut rd, mut wr) = stream.into_split();
        let dribble = tokio::spawn(async move {
            for _ in 0..4000 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if wr.write_all(b" ").await.is_err() {
                    return;
                }
            }
        });
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        timeout(Duration::from_secs(8), async {
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
                if out.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        })
        .await
        .expect("no answer to a dribbling body within 8 s");
        dribble.abort();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );

        assert_eq!(stored_count(&running).await, 5);
        probe_still_served(&client, &url).await;
    })
    .await
    .expect("bounded");
    running.shutdown().await.expect("shutdown");
}

/// Enrolments share the request slots with reports: when every slot is
/// taken they are shed with the same prompt 503, not queued. A slot is held
/// by a report being stored (a client still sending its body holds none):
/// here the store's write lock is held from outside, so the report waits.
#[tokio::test]
async fn enrolments_are_shed_when_every_request_slot_is_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, _) = start(
        dir.path(),
        "[public]\nplain_http = true\nbehind_proxy = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
         [limits]\nmax_concurrent_requests = 1\nrequest_timeout_ms = 20000\n",
    )
    .await;
    let addr = running.public_addr;
    let enrol_url = format!("http://127.0.0.1:{}/api/v1/enrol", addr.port());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let enrol = || async {
        let r = client
            .post(&enrol_url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("enrol");
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (status, body)
    };

    timeout(BOUND, async {
        let blocker = rusqlite::Connection::open(dir.path().join("staging.sqlite3")).expect("open");
        blocker
            .execute_batch("BEGIN IMMEDIATE")
            .expect("write lock");
        // A report that holds the only slot while it waits for the store.
        let report = tokio::spawn({
            let client = client.clone();
            let url = format!("http://127.0.0.1:{}/api/v1/report", addr.port());
            async move {
                client
                    .post(url)
                    .json(&sample_report())
                    .send()
                    .await
                    .expect("report")
                    .status()
            }
        });
        // Until the server has taken that report's slot, an enrolment
        // still gets one (and is refused for its empty body).
        let (status, body) = loop {
            let (status, body) = enrol().await;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                break (status, body);
            }
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "overloaded", "{body}");

        // The slot comes back when the report is stored.
        blocker.execute_batch("COMMIT").expect("release");
        assert_eq!(report.await.expect("report task"), StatusCode::CREATED);
        let (status, body) = enrol().await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "invalid_enrolment", "{body}");
    })
    .await
    .expect("bounded");
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn stalled_tls_handshakes_are_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, client) = start(dir.path(), "[limits]\ntls_handshake_timeout_ms = 500\n").await;
    let addr = running.public_addr;
    timeout(BOUND, async {
        // Silent after connecting; and a ClientHello record header promising
        // bytes that never come.
        for first in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
            let started = Instant::now();
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(first).await.expect("write");
            let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
            let took = started.elapsed();
            assert!(closed, "a stalled handshake was not closed within 5 s");
            assert!(took >= Duration::from_millis(400), "{took:?}");
            assert!(took < Duration::from_secs(3), "{took:?}");
        }
        // Garbage instead of TLS is refused at once.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        assert!(closed, "plain HTTP on the TLS port was not closed");

        let timed_out = running
            .metrics
            .connection_events(ListenerName::Public, ListenerEvent::TlsHandshakeTimedOut);
        assert_eq!(timed_out, 2);
        probe_still_served(&client, &public_url(&running, "/api/v1/report")).await;
    })
    .await
    .expect("bounded");
    running.shutdown().await.expect("shutdown");
}

/// `limits.max_header_bytes` at either bound: the collector starts (hyper's
/// buffer is lifted to its own 8192-byte minimum below it, where hyper
/// would panic), serves probes, and answers a head over the limit 431.
#[tokio::test]
async fn request_heads_are_held_to_the_header_limit_at_either_bound() {
    for (limit, over, within) in [(1024, 1500, 512), (65_536, 70_000, 60_000)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (running, client) = start(
            dir.path(),
            &format!("[limits]\nmax_header_bytes = {limit}\n"),
        )
        .await;
        let url = public_url(&running, "/api/v1/report");
        timeout(BOUND, async {
            probe_still_served(&client, &url).await;
            let pad = |n: usize| HeaderValue::from_str(&"a".repeat(n)).expect("header");
            let r = client
                .post(&url)
                .header("X-Pad", pad(within))
                .json(&sample_report())
                .send()
                .await
                .expect("send");
            assert_eq!(r.status(), StatusCode::CREATED, "{limit}");
            let stored = stored_count(&running).await;
            match client
                .post(&url)
                .header("X-Pad", pad(over))
                .json(&sample_report())
                .send()
                .await
            {
                Ok(r) => assert_eq!(
                    r.status(),
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "{limit}"
                ),
                // Over hyper's buffer the connection is closed instead.
                Err(e) => assert!(limit > 8192, "{limit}: {e}"),
            }
            assert_eq!(stored_count(&running).await, stored, "{limit}");
            probe_still_served(&client, &url).await;
        })
        .await
        .expect("bounded");
        running.shutdown().await.expect("shutdown");
    }
}
