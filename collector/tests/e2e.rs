//! The real `lineprobe-collector serve` binary end to end over HTTPS on
//! loopback: a probe posts, the internal side pulls with its token and
//! acknowledges, publishes a signed manifest that probes then fetch, and
//! the process stops cleanly on SIGTERM.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use lineprobe_shared::{Manifest, ManifestSigningKey, ProbeSchedule, SignedManifest};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario, told step by step
async fn serve_ingest_export_ack_manifest_and_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ManifestSigningKey::generate();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lineprobe-collector"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--export-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("LINEPROBE_EXPORT_TOKEN", support::export_token())
        .env("LINEPROBE_COLLECTOR__NODE_ID", "e2e-node")
        .env(
            "LINEPROBE_COLLECTOR__MANIFEST__PUBLIC_KEY",
            key.verifying_key().to_base64(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the collector");
    // The log goes to stderr; read it on the side so the pipe never fills.
    let mut stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let words: Vec<&str> = line.split_whitespace().collect();
    let public = words[2].replace("127.0.0.1", "localhost");
    let export = words[4].replace("127.0.0.1", "localhost");
    let client = support::client(dir.path());
    let auth = format!("Bearer {}", support::export_token());

    // A probe posts a report.
    let report = support::sample_report();
    let r = client
        .post(format!("{public}/cdn/a/b/collect"))
        .json(&report)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);

    // The export API is not on the public listener, and wants the token.
    let r = client
        .get(format!("{public}/export?after=0"))
        .header("authorization", &auth)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = client
        .get(format!("{export}/export?after=0"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The internal side pulls it, then acknowledges.
    let r = client
        .get(format!("{export}/export?after=0&limit=10"))
        .header("authorization", &auth)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let body = r.text().await.expect("body");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson line"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["report_id"], report["report_id"]);
    let seq = lines[0]["envelope"]["seq"].as_u64().expect("seq");
    let r = client
        .post(format!("{export}/export/ack"))
        .header("authorization", &auth)
        .json(&json!({"node_id": "e2e-node", "up_to": seq}))
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .post(format!("{export}/export/ack"))
        .header("authorization", &auth)
        .json(&json!({"node_id": "e2e-node", "up_to": seq + 5}))
        .send()
        .await
        .expect("bogus ack");
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // The internal side publishes a signed manifest; probes fetch it.
    assert_eq!(
        client
            .get(format!("{public}/manifest"))
            .send()
            .await
            .expect("get")
            .status(),
        StatusCode::NOT_FOUND
    );
    let now = Utc::now();
    let manifest = Manifest {
        serial: 7,
        issued_at: now,
        expires_at: now + chrono::Duration::days(30),
        endpoints: vec!["https://198.51.100.10/".to_owned()],
        path_patterns: vec!["/api/v1/report".to_owned()],
        schedule: ProbeSchedule {
            interval_secs: 3600,
            jitter_secs: 600,
        },
        catalog_versions: std::collections::BTreeMap::new(),
        latest_agent: None,
    };
    let signed = SignedManifest::sign(&manifest, &key).expect("sign");
    let r = client
        .put(format!("{export}/export/manifest"))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(signed.to_json().expect("json"))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = client
        .get(format!("{public}/manifest"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let fetched =
        SignedManifest::from_json(&r.bytes().await.expect("bytes")).expect("signed manifest");
    assert_eq!(
        fetched
            .verify(&key.verifying_key())
            .expect("verifies")
            .serial,
        7
    );

    // Metrics and OpenAPI on the export listener.
    let metrics = client
        .get(format!("{export}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("lineprobe_collector_ingest_requests_total{outcome=\"Stored\"} 1"),
        "{metrics}"
    );
    let openapi = client
        .get(format!("{export}/export/openapi.json"))
        .send()
        .await
        .expect("openapi");
    assert_eq!(openapi.status(), StatusCode::OK);

    // SIGTERM: a clean exit within the grace period.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("the collector did not stop after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit}");
    // A log that is not a terminal (a file, a journal) gets no colour codes.
    let log = log.join().expect("log reader");
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a piped log: {log:?}"
    );
}
