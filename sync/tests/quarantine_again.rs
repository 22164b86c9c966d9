//! `reprocess --quarantined`: quarantined reports are validated and judged
//! again after the catalogs changed; one that passes now leaves quarantine
//! and counts, one that still fails keeps its quarantine row. On SQLite and,
//! with `LINEPROBE_TEST_PG`, PostgreSQL.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use chrono::Utc;
use lineprobe_shared::Catalog;
use lineprobe_sync::PulledReport;
use serde_json::{Value, json};

/// The repository's catalogs without the carrier CSTNET.
fn catalog_without_cstnet(dir: &std::path::Path) -> Catalog {
    let source = support::repo_config_dir().join("catalog");
    for file in ["provinces.toml", "cities.toml"] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    let carriers = std::fs::read_to_string(source.join("carriers.toml")).unwrap();
    let blocks: Vec<&str> = carriers.split("[[carrier]]").collect();
    let kept: Vec<&str> = blocks
        .iter()
        .copied()
        .filter(|b| !b.trim_start().starts_with("id = \"cstnet\""))
        .collect();
    assert_eq!(kept.len() + 1, blocks.len(), "one carrier block removed");
    // Nor named as another carrier's upstream.
    let kept = kept
        .join("[[carrier]]")
        .replace(", \"cstnet\"", "")
        .replace("\"cstnet\", ", "");
    std::fs::write(dir.join("carriers.toml"), kept).unwrap();
    Catalog::load_dir(dir).unwrap()
}

fn pulled(template: &Value, seq: u8, carrier: &str, account: &str) -> PulledReport {
    support::pulled_report(template, seq, "n1", "120.196.200.7", Utc::now(), |doc| {
        doc["declared"]["carrier"] = json!(carrier);
        doc["account"] = json!(account);
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_reports_that_pass_now_leave_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let catalogs = tempfile::tempdir().unwrap();
    let older = support::shenzhen_pipeline_on(Arc::new(catalog_without_cstnet(catalogs.path())));
    let (_, newer) = support::shenzhen_pipeline();
    let template: Value =
        serde_json::from_slice(&support::demo_case("gd-mobile").report.to_json().unwrap()).unwrap();
    let reports = [
        pulled(&template, 1, "cstnet", "0100000001"),
        pulled(&template, 2, "no_such_carrier", "0100000002"),
        pulled(&template, 3, "china_mobile", "0100000003"),
    ];
    for db in support::backends("quarantine_again", dir.path()).await {
        let store = db.store().await;
        let label = db.label();
        support::commit_pulled(&store, "c1", "n1", &reports).await;
        let run = older.run_pending(&store, 100, |_| {}).await.unwrap();
        assert_eq!(run.applied.quarantined, 2, "{label}");
        assert_eq!(store.counts().await.unwrap().quarantined, 2, "{label}");

        // Re-deciding the processed reports leaves quarantine alone.
        let run = newer.reprocess(&store, None, 100, |_| {}).await.unwrap();
        assert_eq!(run.read, 1, "{label}");
        assert_eq!(store.counts().await.unwrap().quarantined, 2, "{label}");

        // With catalogs that know CSTNET, its report passes and counts.
        let run = newer
            .reprocess_quarantined(&store, None, 100, |_| {})
            .await
            .unwrap();
        assert_eq!(run.read, 2, "{label}");
        assert_eq!(run.applied.quarantined, 1, "{label}");
        assert_eq!(run.applied.observations_new, 1, "{label}");
        let counts = store.counts().await.unwrap();
        assert_eq!((counts.quarantined, counts.lines), (1, 2), "{label}");
        let line = store.line("account:0100000001").await.unwrap().unwrap();
        assert_eq!(line.reports, 1, "{label}");
        assert_eq!(line.declared_carrier.as_deref(), Some("cstnet"), "{label}");
        let left = store.quarantined(10, 0).await.unwrap();
        assert_eq!(left.len(), 1, "{label}");
        assert!(
            left[0].summary.contains("no_such_carrier"),
            "{label}: {left:?}"
        );

        // Again: nothing changes.
        let run = newer
            .reprocess_quarantined(&store, None, 100, |_| {})
            .await
            .unwrap();
        assert_eq!((run.read, run.applied.observations_new), (1, 0), "{label}");
        assert_eq!(store.counts().await.unwrap(), counts, "{label}");
        store.close().await;
    }
}
