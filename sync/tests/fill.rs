//! Fill: where the IP check passes, the declared attributes the subscriber
//! left out are filled from the actual ones — the line carries them from
//! then on (its lists, filters and the batch reports' groups), and
//! `verdicts` marks them as filled. On SQLite and, with
//! `LINEPROBE_TEST_PG`, PostgreSQL.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod support;

use chrono::Utc;
use lineprobe_sync::{
    LineFilter, PulledReport, print_verdict_table, verdict_rows, write_verdicts_csv,
};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filled_attributes_become_the_lines_and_are_marked_as_filled() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, pipeline) = support::shenzhen_pipeline();
    let case = support::demo_case("gd-mobile");
    let mut doc: Value = serde_json::from_slice(&case.report.to_json().unwrap()).unwrap();
    // The subscriber gave the carrier (and the street address) only.
    let address = doc["declared"]["address"].clone();
    doc["declared"] = json!({ "carrier": "china_mobile", "address": address });
    doc["account"] = json!("07559990001");
    let now = Utc::now();
    doc["envelope"] = json!({
        "received_at": now.to_rfc3339(),
        "peer_ip": case.egress.unwrap().to_string(),
        "path": "/api/v1/report",
        "node_id": "n1",
        "seq": 1,
    });
    let reports = [PulledReport {
        seq: 1,
        report_id: doc["report_id"].as_str().map(str::to_owned),
        received_at_ms: Some(now.timestamp_millis()),
        body: serde_json::to_vec(&doc).unwrap(),
    }];
    for db in support::backends("fill", dir.path()).await {
        let store = db.store().await;
        let label = db.label();
        support::commit_pulled(&store, "c1", "n1", &reports).await;
        pipeline.run_pending(&store, 100, |_| {}).await.unwrap();
        let line = store.line("account:07559990001").await.unwrap().unwrap();
        assert_eq!(line.verdict, "compliant", "{label}");
        assert_eq!(line.declared_province.as_deref(), Some("CN-GD"), "{label}");
        assert_eq!(line.declared_city.as_deref(), Some("440300"), "{label}");
        assert_eq!(line.declared_carrier.as_deref(), Some("china_mobile"));

        // Found by the province it was filled with.
        let filter = LineFilter {
            province: Some("CN-GD".to_owned()),
            ..LineFilter::default()
        };
        let rows = verdict_rows(&store, &catalog, &filter).await.unwrap();
        assert_eq!(rows.len(), 1, "{label}");
        let mut filled = rows[0].filled.clone();
        filled.sort();
        assert_eq!(
            filled,
            ["city", "province"],
            "{label}: the carrier was declared"
        );

        let mut table = Vec::new();
        print_verdict_table(&mut table, &catalog, &rows).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(
            table.contains("中国移动 广东省* 深圳市*") && table.contains("* not declared"),
            "{label}: {table}"
        );
        let mut csv = Vec::new();
        write_verdicts_csv(&mut csv, &rows).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        assert!(
            csv.lines().next().unwrap().ends_with(",filled"),
            "{label}: {csv}"
        );
        assert!(
            csv.contains("province city") || csv.contains("city province"),
            "{csv}"
        );
        store.close().await;
    }
}
