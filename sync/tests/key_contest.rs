//! Key contests across receiver nodes: each node enrols probe keys on its
//! own, so a key enrolled for a victim's `install_id` at a node the victim
//! never used is "verified" there. The envelope names the key that
//! verified each report; the pipeline keeps which keys signed for each
//! installation and when, and marks the installation's verdicts low-trust
//! around a change of key, and for as long as two keys sign at once. On
//! SQLite and, with `LINEPROBE_TEST_PG`, PostgreSQL.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod support;

use chrono::{DateTime, Duration, Utc};
use lineprobe_sync::{
    ContestChange, KeySpan, Pipeline, PulledReport, Store, TrustPolicy, read_evidence,
};
use serde_json::{Value, json};

const KEY_A: &str = "aaaaaaaaaaaaaaa1";
const KEY_B: &str = "bbbbbbbbbbbbbbb2";

/// One pulled report of `install` with account `account`, received at
/// `at` by `node` and verified there with `key` (none: unsigned); each
/// from its own egress address, so each is an observation with its own
/// verdict row.
fn report(
    template: &Value,
    n: u8,
    install: &str,
    account: &str,
    at: DateTime<Utc>,
    node: &str,
    key: Option<&str>,
) -> PulledReport {
    support::pulled_report(template, n, node, &format!("120.230.1.{n}"), at, |doc| {
        doc["install_id"] = json!(install);
        doc["account"] = json!(account);
        doc["created_at"] = json!(at.to_rfc3339());
        let mut trust = json!({
            "score": 100, "install": 100, "prefix": 100,
            "signature": if key.is_some() { "verified" } else { "unsigned" },
        });
        if let Some(key) = key {
            trust["key_id"] = json!(key);
        }
        doc["envelope"]["trust"] = trust;
    })
}

/// Each report's verdicts of `line_key`, by report id and newest first
/// within a report (a stable sort of the store's newest-first list): (report
/// id, low trust, the key contest in its evidence).
async fn marks(store: &Store, line_key: &str) -> Vec<(String, bool, Value)> {
    let mut rows: Vec<(String, bool, Value)> = store
        .line_verdicts(line_key)
        .await
        .unwrap()
        .into_iter()
        .map(|v| {
            let evidence = read_evidence(&v.record.evidence_json).unwrap();
            (
                v.report_id,
                v.record.low_trust,
                evidence["trust"]["key_contest"].clone(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// The newest of `rows` (from [`marks`]) for report `r`.
fn mark_of(rows: &[(String, bool, Value)], r: &PulledReport, label: &str) -> (bool, Value) {
    let id = r.report_id.as_deref().unwrap();
    let (_, low, contest) = rows
        .iter()
        .find(|(report, _, _)| report == id)
        .unwrap_or_else(|| panic!("{label}: no verdict of report {id}"));
    (*low, contest.clone())
}

/// A pipeline that knows every address as China Mobile in Shenzhen, with
/// a ten-day key contest period, and a report of a line there to copy.
fn pipeline_and_template() -> (Pipeline, Value) {
    let (_, pipeline) = support::shenzhen_pipeline();
    let pipeline = pipeline.with_trust_policy(TrustPolicy {
        key_change_flag_days: 10,
        ..TrustPolicy::default()
    });
    let case = support::demo_case("gd-mobile");
    let template: Value = serde_json::from_slice(&case.report.to_json().unwrap()).unwrap();
    (pipeline, template)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keys_for_one_install_across_nodes_mark_its_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let (pipeline, template) = pipeline_and_template();
    let now = Utc::now();
    let day = |d: i64| now - Duration::days(60) + Duration::days(d);
    let t = &template;
    // The victim's probe signs with key A at node n1 from day 0; someone
    // enrols key B for the same install_id at node n2 on day 20 and sends
    // from there; the victim goes on with key A (day 25). Another
    // installation keeps one key throughout; an unsigned one has none.
    let first = [
        report(t, 1, "GD-VICTIM", "0755001", day(0), "n1", Some(KEY_A)),
        report(t, 2, "GD-VICTIM", "0755001", day(10), "n1", Some(KEY_A)),
        report(t, 3, "GD-OTHER", "0755002", day(0), "n1", Some(KEY_A)),
        report(t, 4, "GD-UNSIGNED", "0755003", day(20), "n1", None),
    ];
    let second = [
        report(t, 5, "GD-VICTIM", "0755001", day(20), "n2", Some(KEY_B)),
        report(t, 6, "GD-OTHER", "0755002", day(21), "n2", Some(KEY_A)),
    ];
    let third = [
        report(t, 7, "GD-VICTIM", "0755001", day(25), "n1", Some(KEY_A)),
        // Pulled late: from before the contest, so not marked.
        report(t, 8, "GD-VICTIM", "0755001", day(15), "n1", Some(KEY_A)),
    ];
    let fourth = [
        report(t, 9, "GD-VICTIM", "0755001", day(34), "n2", Some(KEY_B)),
        // Ten days after key A last signed (day 25) the mark ends.
        report(t, 10, "GD-VICTIM", "0755001", day(36), "n2", Some(KEY_B)),
    ];
    for db in support::backends("key_contest", dir.path()).await {
        let store = db.store().await;
        let label = db.label();
        // A pull and a pipeline run each, so the store's record of keys
        // carries the contest from one run to the next.
        let pulls = [
            ("n1", &first[..]),
            ("n2", &second[..]),
            ("n1", &third[..]),
            ("n2", &fourth[..]),
        ];
        for (pull, (node, reports)) in pulls.into_iter().enumerate() {
            support::commit_pulled(&store, &format!("c-{node}"), node, reports).await;
            let run = pipeline.run_pending(&store, 100, |_| {}).await.unwrap();
            assert_eq!(
                run.read,
                u64::try_from(reports.len()).unwrap(),
                "{label}: pull {pull}"
            );
            assert_eq!(run.applied.quarantined, 0, "{label}: pull {pull}");
        }

        let victim = marks(&store, "account:0755001").await;
        let mark = |r: &PulledReport| mark_of(&victim, r, label);
        for r in [&first[0], &first[1], &third[1], &fourth[1]] {
            let (low, contest) = mark(r);
            assert!(!low && contest.is_null(), "{label}: {} {contest}", r.seq);
        }
        // Key B's first report: a change of key, seen only here.
        let (low, contest) = mark(&second[0]);
        assert!(low, "{label}");
        assert_eq!(contest["other_key_id"], KEY_A, "{label}: {contest}");
        assert_eq!(contest["other_first_node"], "n1", "{label}");
        assert_eq!(contest["at_once"], false, "{label}: {contest}");
        // Key A signing again after key B appeared: two keys at once,
        // and both keys' reports are marked until the period has passed.
        let (low, contest) = mark(&third[0]);
        assert!(low, "{label}");
        assert_eq!(contest["other_key_id"], KEY_B, "{label}: {contest}");
        assert_eq!(contest["other_first_node"], "n2", "{label}");
        assert_eq!(contest["at_once"], true, "{label}: {contest}");
        let (low, contest) = mark(&fourth[0]);
        assert!(low && contest["at_once"] == true, "{label}: {contest}");

        for (line, n) in [("account:0755002", 2), ("account:0755003", 1)] {
            let rows = marks(&store, line).await;
            assert_eq!(rows.len(), n, "{label}: {line}");
            assert!(
                rows.iter().all(|(_, low, c)| !low && c.is_null()),
                "{label}: {line}: {rows:?}"
            );
        }

        assert_keys_recorded(&store, day, label).await;
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contest_that_a_later_pull_shows_reaches_the_verdicts_made_before() {
    let dir = tempfile::tempdir().unwrap();
    let (pipeline, template) = pipeline_and_template();
    let now = Utc::now();
    let day = |d: i64| now - Duration::days(60) + Duration::days(d);
    let t = &template;
    // Node n1 is pulled first: the victim's key A on days 0, 22 and 24,
    // judged while nobody knows of another key. Node n2, pulled later
    // (it was down), received a report signed by key B on day 20.
    let early = [
        report(t, 1, "GD-VICTIM", "0755001", day(0), "n1", Some(KEY_A)),
        report(t, 2, "GD-VICTIM", "0755001", day(22), "n1", Some(KEY_A)),
        report(t, 3, "GD-VICTIM", "0755001", day(24), "n1", Some(KEY_A)),
        // Another installation's report in the same days is left alone.
        report(t, 4, "GD-OTHER", "0755002", day(23), "n1", Some(KEY_A)),
    ];
    let late = [report(
        t,
        5,
        "GD-VICTIM",
        "0755001",
        day(20),
        "n2",
        Some(KEY_B),
    )];
    for db in support::backends("key_contest_late", dir.path()).await {
        let store = db.store().await;
        let label = db.label();
        support::commit_pulled(&store, "c-n1", "n1", &early).await;
        let run = pipeline.run_pending(&store, 100, |_| {}).await.unwrap();
        assert_eq!((run.read, run.rejudged), (4, 0), "{label}");
        let before = marks(&store, "account:0755001").await;
        assert!(
            before.iter().all(|(_, low, c)| !low && c.is_null()),
            "{label}: {before:?}"
        );

        support::commit_pulled(&store, "c-n2", "n2", &late).await;
        let run = pipeline.run_pending(&store, 100, |_| {}).await.unwrap();
        assert_eq!(run.read, 1, "{label}");
        // Key B on day 20 and key A after it (days 22 and 24) are in a
        // contest until ten days after key B's only report: the two
        // verdicts made before are judged again (and B's own report, which
        // comes out as it was judged).
        assert_eq!(run.rejudged, 3, "{label}: {run:?}");
        assert_eq!(run.applied.verdicts_new, 3, "{label}: {run:?}");
        let after = marks(&store, "account:0755001").await;
        let newest = |r: &PulledReport| mark_of(&after, r, label);
        let (low, contest) = newest(&early[0]);
        assert!(
            !low && contest.is_null(),
            "{label}: before key B: {contest}"
        );
        for r in [&early[1], &early[2]] {
            let (low, contest) = newest(r);
            assert!(low, "{label}: {}", r.seq);
            assert_eq!(contest["other_key_id"], KEY_B, "{label}: {contest}");
            assert_eq!(contest["other_first_node"], "n2", "{label}");
            assert_eq!(contest["at_once"], true, "{label}: {contest}");
        }
        let (low, contest) = newest(&late[0]);
        assert!(
            low && contest["other_key_id"] == KEY_A,
            "{label}: {contest}"
        );
        // The verdicts made before stay as history, and the line follows
        // its newest report's verdict, now marked.
        assert_eq!(after.len(), 6, "{label}: {after:?}");
        let line = store.line("account:0755001").await.unwrap().unwrap();
        assert!(line.low_trust, "{label}: {line:?}");
        let other = marks(&store, "account:0755002").await;
        assert_eq!(other.len(), 1, "{label}");
        assert!(!other[0].1 && other[0].2.is_null(), "{label}: {other:?}");

        // Running again finds nothing new to judge: the queue is empty.
        assert_eq!(store.queued_rejudges().await.unwrap(), [], "{label}");
        let run = pipeline.run_pending(&store, 100, |_| {}).await.unwrap();
        assert_eq!((run.read, run.rejudged), (0, 0), "{label}");

        // What a run stopped after recording the sightings leaves queued is
        // judged by the next one, reports or not; judged again, verdicts
        // that are right already stay as they are.
        let change = ContestChange {
            install_id: "GD-VICTIM".to_owned(),
            from_ms: day(20).timestamp_millis(),
            to_ms: day(30).timestamp_millis(),
        };
        store.record_install_keys(&[], &[change]).await.unwrap();
        let run = pipeline.run_pending(&store, 100, |_| {}).await.unwrap();
        assert_eq!((run.read, run.rejudged), (0, 3), "{label}");
        assert_eq!(run.applied.verdicts_new, 0, "{label}: {run:?}");
        assert_eq!(store.queued_rejudges().await.unwrap(), [], "{label}");
        assert_eq!(marks(&store, "account:0755001").await, after, "{label}");
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_keys_widens_their_spans_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let span = |key: &str, first: i64, last: i64, node: &str| KeySpan {
        install_id: "I1".to_owned(),
        key_id: key.to_owned(),
        first_seen_ms: first,
        last_seen_ms: last,
        first_node: node.to_owned(),
    };
    for db in support::backends("key_spans", dir.path()).await {
        let store = db.store().await;
        let label = db.label();
        assert!(store.install_keys_seen(&["I1"]).await.unwrap().is_empty());
        // Two sightings of one key in one call, and another key.
        store
            .record_install_keys(
                &[
                    span(KEY_A, 100, 200, "n1"),
                    span(KEY_A, 50, 80, "n2"),
                    span(KEY_B, 300, 300, "n3"),
                ],
                &[],
            )
            .await
            .unwrap();
        // Later calls widen, never narrow; the same call again changes
        // nothing.
        for _ in 0..2 {
            store
                .record_install_keys(
                    &[span(KEY_A, 70, 500, "n4"), span(KEY_B, 10, 20, "n5")],
                    &[],
                )
                .await
                .unwrap();
        }
        let mut keys = store.install_keys_seen(&["I1", "nobody"]).await.unwrap();
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        assert_eq!(
            keys,
            [span(KEY_A, 50, 500, "n2"), span(KEY_B, 10, 300, "n5")],
            "{label}"
        );
        store.close().await;
    }
}

/// The store's record: each key's first and last sighting, the node of
/// the first, and no unsigned installation.
async fn assert_keys_recorded(store: &Store, day: impl Fn(i64) -> DateTime<Utc>, label: &str) {
    let mut keys = store
        .install_keys_seen(&["GD-VICTIM", "GD-OTHER", "GD-UNSIGNED"])
        .await
        .unwrap();
    keys.sort_by(|a, b| (&a.install_id, &a.key_id).cmp(&(&b.install_id, &b.key_id)));
    let ms = |d: i64| day(d).timestamp_millis();
    let span = |install: &str, key: &str, first: i64, last: i64, node: &str| KeySpan {
        install_id: install.to_owned(),
        key_id: key.to_owned(),
        first_seen_ms: ms(first),
        last_seen_ms: ms(last),
        first_node: node.to_owned(),
    };
    assert_eq!(
        keys,
        [
            span("GD-OTHER", KEY_A, 0, 21, "n1"),
            span("GD-VICTIM", KEY_A, 0, 25, "n1"),
            span("GD-VICTIM", KEY_B, 20, 36, "n2"),
        ],
        "{label}"
    );
}
