//! An address source that fails: the report waits for it (pending, judged
//! again on later runs) within the retry window, is judged with the other
//! sources after it, and a reprocess never replaces a verdict with one made
//! while a source failed. On SQLite and, with `LINEPROBE_TEST_PG`,
//! PostgreSQL.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use lineprobe_shared::{Catalog, Classifier, ClassifierConfig};
use lineprobe_sync::{
    Chain, Error, IpFacts, IpSource, Pipeline, PullBatch, PulledReport, Store, demo_cases,
};
use serde_json::{Value, json};

/// Knows every address as China Mobile in Guangdong, or fails like a lookup
/// service that is down.
#[derive(Debug)]
struct Flaky {
    down: Arc<AtomicBool>,
    facts: IpFacts,
}

impl IpSource for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }

    fn data_version(&self) -> &'static str {
        "test"
    }

    fn lookup(&self, ip: IpAddr) -> Result<Option<IpFacts>, Error> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Lookup {
                source_name: "flaky".to_owned(),
                ip,
                message: "cannot connect".to_owned(),
            });
        }
        Ok(Some(self.facts.clone()))
    }
}

fn pipeline(down: &Arc<AtomicBool>, retry: Duration) -> Pipeline {
    let catalog = Arc::new(Catalog::embedded().unwrap());
    let facts = IpFacts {
        carrier: Some(catalog.carrier("china_mobile").unwrap().id.clone()),
        province: Some(catalog.province("CN-GD").unwrap().id.clone()),
        ..IpFacts::default()
    };
    let chain = Chain::new(vec![Box::new(Flaky {
        down: Arc::clone(down),
        facts,
    })]);
    Pipeline::new(
        catalog,
        Arc::new(chain),
        Classifier::new(&ClassifierConfig::default()).unwrap(),
    )
    .with_workers(2)
    .with_source_retry(retry)
}

/// The demo's Guangdong China Mobile line as pulled from node `n1` at
/// `seq`, received and pulled `age` ago, with a fresh report id and
/// `account`.
async fn pull(store: &Store, seq: u64, account: &str, age: Duration) {
    let case = demo_cases(Utc::now().fixed_offset())
        .unwrap()
        .into_iter()
        .find(|c| c.label == "gd-mobile")
        .unwrap();
    let mut doc: Value = serde_json::from_slice(&case.report.to_json().unwrap()).unwrap();
    doc["report_id"] = json!(lineprobe_shared::ReportId::new_v7().to_string());
    doc["account"] = json!(account);
    let at = Utc::now() - chrono::Duration::from_std(age).unwrap();
    doc["envelope"] = json!({
        "received_at": at.to_rfc3339(),
        "peer_ip": case.egress.unwrap().to_string(),
        "path": "/api/v1/report",
        "node_id": "n1",
        "seq": seq,
    });
    let reports = [PulledReport {
        seq,
        report_id: doc["report_id"].as_str().map(str::to_owned),
        received_at_ms: Some(at.timestamp_millis()),
        body: serde_json::to_vec(&doc).unwrap(),
    }];
    store
        .commit_pull(&PullBatch {
            collector: "c1",
            node_id: "n1",
            reports: &reports,
            next_after: seq,
            pulled_at_ms: at.timestamp_millis(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_waits_for_a_failing_source_then_is_judged_without_it() {
    let dir = tempfile::tempdir().unwrap();
    for db in support::backends("source_failure", dir.path()).await {
        let store = db.store().await;
        let label = db.label();
        let down = Arc::new(AtomicBool::new(true));
        let waiting = pipeline(&down, Duration::from_hours(1));

        // Down: the fresh report stays pending, run after run.
        pull(&store, 1, "07551110001", Duration::ZERO).await;
        for _ in 0..2 {
            let run = waiting.run_pending(&store, 100, |_| {}).await.unwrap();
            assert_eq!((run.read, run.deferred), (1, 1), "{label}: {run:?}");
            assert_eq!(run.applied.verdicts_new, 0, "{label}");
        }
        assert_eq!(store.counts().await.unwrap().pending, 1, "{label}");
        assert!(store.line("account:07551110001").await.unwrap().is_none());

        // Back: judged with it.
        down.store(false, Ordering::SeqCst);
        let run = waiting.run_pending(&store, 100, |_| {}).await.unwrap();
        assert_eq!((run.read, run.deferred), (1, 0), "{label}: {run:?}");
        let line = store.line("account:07551110001").await.unwrap().unwrap();
        assert_eq!(line.verdict, "compliant", "{label}");
        assert_eq!(line.actual_carrier.as_deref(), Some("china_mobile"));

        // Down during a reprocess: the verdict made with the source stays.
        down.store(true, Ordering::SeqCst);
        let run = waiting.reprocess(&store, None, 100, |_| {}).await.unwrap();
        assert_eq!(run.deferred, 1, "{label}: {run:?}");
        let again = store.line("account:07551110001").await.unwrap().unwrap();
        assert_eq!(again.verdict_id, line.verdict_id, "{label}");

        // A report older than the retry window is judged without the
        // source, and says so in its evidence.
        pull(&store, 2, "07551110002", Duration::from_mins(61)).await;
        let run = waiting.run_pending(&store, 100, |_| {}).await.unwrap();
        assert_eq!((run.read, run.deferred), (1, 0), "{label}: {run:?}");
        let late = store.line("account:07551110002").await.unwrap().unwrap();
        assert_eq!(late.verdict, "indeterminate", "{label}");
        let verdicts = store.line_verdicts("account:07551110002").await.unwrap();
        assert_eq!(verdicts.len(), 1, "{label}");
        assert!(
            verdicts[0].record.evidence_json.contains("cannot connect"),
            "{label}: the failure is not in the evidence"
        );

        // A zero window judges at once.
        pull(&store, 3, "07551110003", Duration::ZERO).await;
        let at_once = pipeline(&down, Duration::ZERO);
        let run = at_once.run_pending(&store, 100, |_| {}).await.unwrap();
        assert_eq!((run.read, run.deferred), (1, 0), "{label}: {run:?}");
        assert_eq!(store.counts().await.unwrap().pending, 0, "{label}");
        store.close().await;
    }
}
