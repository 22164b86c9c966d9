//! Dedupe: repeated identical observations of a line collapse into one,
//! whatever order a load-balanced hop's routers answered in; re-deciding a
//! report keeps it in the observation it counted in. On SQLite and, with
//! `LINEPROBE_TEST_PG`, PostgreSQL.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod support;

use std::sync::Arc;

use chrono::Utc;
use lineprobe_shared::{Catalog, Classifier, ClassifierConfig};
use lineprobe_sync::{Pipeline, PulledReport, demo_chain};
use serde_json::{Value, json};

/// The demo's Guangdong China Mobile report as pulled from node `n1`
/// (seq `seq`), with hop 3 answered by `third_hop` in that order.
fn pulled(template: &Value, seq: u8, third_hop: &[&str]) -> PulledReport {
    support::pulled_report(template, seq, "n1", "120.196.200.7", Utc::now(), |doc| {
        let hops = doc["trace"]["hops"].as_array_mut().unwrap();
        let hop = hops.iter_mut().find(|h| h["ttl"] == 3).unwrap();
        hop["addrs"] = json!(third_hop);
        hop["rtt_ms"] = json!(vec![5.0; third_hop.len()]);
        hop["received"] = json!(third_hop.len());
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balanced_hop_in_another_order_is_the_same_observation() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::embedded().unwrap());
    let pipeline = Pipeline::new(
        Arc::clone(&catalog),
        Arc::new(demo_chain(&catalog).unwrap()),
        Classifier::new(&ClassifierConfig::default()).unwrap(),
    );
    let case = support::demo_case("gd-mobile");
    let template: Value = serde_json::from_slice(&case.report.to_json().unwrap()).unwrap();
    let line_key = lineprobe_sync::line_key(&case.report.account, case.report.install_id.as_str());
    let reports = [
        pulled(&template, 1, &["120.196.10.1", "120.196.10.9"]),
        pulled(&template, 2, &["120.196.10.9", "120.196.10.1"]),
    ];
    for db in support::backends("dedupe_order", dir.path()).await {
        let store = db.store().await;
        let label = db.label();
        support::commit_pulled(&store, "c1", "n1", &reports).await;
        let run = pipeline.run_pending(&store, 100, |_| {}).await.unwrap();
        assert_eq!(run.applied.quarantined, 0, "{label}");
        assert_eq!(
            (
                run.applied.observations_new,
                run.applied.observations_repeated
            ),
            (1, 1),
            "{label}"
        );
        let observations = store.line_observations(&line_key).await.unwrap();
        assert_eq!(observations.len(), 1, "{label}");
        assert_eq!(observations[0].count, 2, "{label}");

        // An observation stored under a key computed otherwise (as before
        // hop addresses were put in order) keeps its reports when they are
        // re-decided: no second observation appears.
        db.execute("UPDATE observations SET obs_key = 'legacy-key'")
            .await;
        let run = pipeline.reprocess(&store, None, 100, |_| {}).await.unwrap();
        assert_eq!(run.read, 2, "{label}");
        assert_eq!(run.applied.observations_new, 0, "{label}: {run:?}");
        let observations = store.line_observations(&line_key).await.unwrap();
        assert_eq!(observations.len(), 1, "{label}");
        assert_eq!(observations[0].facts.obs_key, "legacy-key", "{label}");
        assert_eq!(observations[0].count, 2, "{label}");
        store.close().await;
    }
}
