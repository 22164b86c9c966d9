//! A NUL in any text of a report — which a real collector refuses, but a
//! compromised or older one may pass on, and which PostgreSQL's text cannot
//! hold — is quarantined with a reason on both backends, and never stops
//! the pipeline: every string of every demo report, one at a time.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use chrono::Utc;
use lineprobe_shared::{Catalog, Classifier, ClassifierConfig, ReportId};
use lineprobe_sync::{Chain, Pipeline, PullBatch, PulledReport, demo_cases};
use serde_json::{Value, json};

/// The paths of every string in `value`, object keys and array indexes.
fn strings(value: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::String(_) => out.push(path.clone()),
        Value::Object(map) => {
            for (key, item) in map {
                path.push(key.clone());
                strings(item, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i.to_string());
                strings(item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(value: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(value, |v, part| match v {
        Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
        other => &mut other[part.as_str()],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_any_text_is_quarantined_and_never_stops_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let cases = demo_cases(now.fixed_offset()).unwrap();
    for db in support::backends("hostile_text", dir.path()).await {
        let label = db.label();
        let store = db.store().await;
        let pipeline = Pipeline::new(
            Arc::new(Catalog::embedded().unwrap()),
            Arc::new(Chain::new(Vec::new())),
            Classifier::new(&ClassifierConfig::default()).unwrap(),
        );
        let mut seq = 0;
        for case in &cases {
            let base: Value = serde_json::from_slice(&case.report.to_json().unwrap()).unwrap();
            let mut paths = Vec::new();
            strings(&base, &mut Vec::new(), &mut paths);
            let mut reports = Vec::new();
            for path in paths.iter().filter(|p| p[0] != "envelope") {
                let mut doc = base.clone();
                if path[0] != "report_id" {
                    doc["report_id"] = json!(ReportId::new_v7().to_string());
                }
                let text = at(&mut doc, path).as_str().unwrap().to_owned();
                *at(&mut doc, path) = json!(format!("{text}\u{0}x"));
                seq += 1;
                doc["envelope"] = json!({
                    "received_at": now.to_rfc3339(),
                    "peer_ip": "203.0.113.9",
                    "path": "/api/v1/report",
                    "node_id": "n1",
                    "seq": seq,
                });
                reports.push(PulledReport {
                    seq,
                    // As the pull's light pass reads it: a report id with a
                    // control character is not picked out.
                    report_id: doc["report_id"]
                        .as_str()
                        .filter(|s| !s.chars().any(char::is_control))
                        .map(str::to_owned),
                    received_at_ms: Some(now.timestamp_millis()),
                    body: serde_json::to_vec(&doc).unwrap(),
                });
            }
            store
                .commit_pull(&PullBatch {
                    collector: "c1",
                    node_id: "n1",
                    reports: &reports,
                    next_after: seq,
                    pulled_at_ms: now.timestamp_millis(),
                })
                .await
                .unwrap();
            let run = pipeline.run_pending(&store, 1000, |_| {}).await;
            assert!(run.is_ok(), "{label} {}: {run:?}", case.label);
        }
        let counts = store.counts().await.unwrap();
        assert_eq!(counts.pending, 0, "{label}");
        assert_eq!((counts.quarantined, counts.processed), (seq, 0), "{label}");
        let quarantined = store.quarantined(10_000, 0).await.unwrap();
        assert_eq!(quarantined.len() as u64, seq, "{label}");
        for row in &quarantined {
            assert!(
                row.reasons_json.contains("NUL character"),
                "{label}: {row:?}"
            );
        }
        store.close().await;
    }
}
