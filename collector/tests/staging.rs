//! The staging store: durability, sequence numbers, duplicates, the bound,
//! acknowledgements, purging, the manifest, closing, and two fault tests
//! (a writer killed with SIGKILL, a full disk).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lineprobe_collector::{Error, StageOutcome, Staging, StagingOptions};
use lineprobe_shared::{EnvelopeHeaders, ReceiverEnvelope, Report, ReportId};
use rand::Rng;

const NODE: &str = "edge-test-1";

const MINIMAL: &str = include_str!("../../shared/tests/fixtures/report/minimal.json");

fn options(path: &Path) -> StagingOptions {
    StagingOptions {
        path: path.to_owned(),
        node_id: NODE.to_owned(),
        max_reports: 1_000_000,
        full_retry_after_secs: 17,
        retention: Duration::from_hours(1),
        group_commit_max: 256,
        group_commit_wait: Duration::from_micros(500),
        group_commit_gap: Duration::ZERO,
        on_commit: None,
        on_wal_restart: None,
    }
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("nested").join("staging.sqlite3")
}

fn report_with(id: ReportId, received_at: DateTime<Utc>) -> Report {
    let mut report = Report::from_json(MINIMAL.as_bytes()).expect("the fixture is a valid report");
    report.report_id = id;
    report.envelope = Some(ReceiverEnvelope {
        received_at,
        peer_ip: "203.0.113.9".parse().expect("address"),
        peer_port: Some(40_001),
        path: "/v1/reports".to_owned(),
        headers: EnvelopeHeaders::default(),
        tls: None,
        // Ingest's value; the store writes its own node id over it.
        node_id: "set-by-ingest".to_owned(),
        seq: 0,
        trust: None,
    });
    report
}

fn report() -> Report {
    report_with(ReportId::new_v7(), Utc::now())
}

fn stored_seq(outcome: StageOutcome) -> u64 {
    match outcome {
        StageOutcome::Stored { seq } => seq,
        StageOutcome::Duplicate { seq } => panic!("expected a new row, got a duplicate of {seq}"),
    }
}

/// Every exported report, decoded: `(seq, report)`.
async fn export_all(staging: &Staging) -> Vec<(u64, Report)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = staging.export_after(after, 500).await.expect("export");
        let Some(last) = page.last() else {
            return out;
        };
        after = last.seq;
        for exported in page {
            assert!(
                !exported.json.contains(&b'\n'),
                "exported JSON must be one line"
            );
            let report = Report::from_stored_json(&exported.json).expect("stored JSON is valid");
            out.push((exported.seq, report));
        }
    }
}

fn envelope(report: &Report) -> &ReceiverEnvelope {
    report
        .envelope
        .as_ref()
        .expect("stored reports have an envelope")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_export_ack_purge_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&db_path(&dir));
    opts.retention = Duration::ZERO;
    let staging = Staging::open(opts).unwrap();

    let empty = staging.stats().await.unwrap();
    assert_eq!(
        (empty.unacked, empty.highest_seq, empty.acked_up_to),
        (0, 0, 0)
    );
    assert_eq!(empty.oldest_unacked, None);

    let t0 = DateTime::parse_from_rfc3339("2025-06-03T10:00:00.123456Z")
        .unwrap()
        .to_utc();
    let sent: Vec<Report> = (0..3)
        .map(|i| report_with(ReportId::new_v7(), t0 + chrono::Duration::seconds(i)))
        .collect();
    for (i, r) in sent.iter().enumerate() {
        let seq = stored_seq(staging.stage(r.clone()).await.unwrap());
        assert_eq!(seq, i as u64 + 1, "seq starts at 1 and counts up");
    }

    let exported = export_all(&staging).await;
    assert_eq!(exported.len(), 3);
    for ((seq, got), want) in exported.iter().zip(&sent) {
        assert_eq!(got.report_id, want.report_id);
        assert_eq!(envelope(got).seq, *seq, "the JSON carries its own seq");
        assert_eq!(envelope(got).node_id, NODE, "the store names its node");
        assert_eq!(envelope(got).received_at, envelope(want).received_at);
        assert_eq!(got.trace, want.trace);
    }
    // Paging by cursor and limit.
    let page = staging.export_after(1, 1).await.unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
    assert!(staging.export_after(3, 10).await.unwrap().is_empty());
    assert!(staging.export_after(0, 0).await.unwrap().is_empty());
    // A page ends once its JSON reaches the byte budget (the page is built
    // in memory): one report over it still makes a page of one.
    let one = staging.export_after(0, 1).await.unwrap()[0].json.len();
    let page = staging.export_after_within(0, 10, one + 1).await.unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
    let page = staging.export_after_within(0, 10, 1).await.unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);
    // Even a budget of nothing: an empty page would tell the puller there
    // is nothing more to pull.
    let page = staging.export_after_within(0, 10, 0).await.unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);
    let page = staging
        .export_after_within(1, 10, usize::MAX)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);

    let stats = staging.stats().await.unwrap();
    assert_eq!(
        (stats.unacked, stats.highest_seq, stats.acked_up_to),
        (3, 3, 0)
    );
    assert_eq!(stats.oldest_unacked, Some(t0));

    let ack = staging.ack(NODE, 2).await.unwrap();
    assert_eq!((ack.acked_up_to, ack.newly_acked), (2, 2));
    let stats = staging.stats().await.unwrap();
    assert_eq!(
        (stats.unacked, stats.highest_seq, stats.acked_up_to),
        (1, 3, 2)
    );
    assert_eq!(
        stats.oldest_unacked,
        Some(t0 + chrono::Duration::seconds(2))
    );

    // Acknowledged reports can still be exported until purged.
    assert_eq!(staging.export_after(0, 10).await.unwrap().len(), 3);
    assert_eq!(
        staging.purge().await.unwrap(),
        2,
        "the two acknowledged ones"
    );
    let left = staging.export_after(0, 10).await.unwrap();
    assert_eq!(left.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
    // The unacknowledged one is never purged.
    assert_eq!(staging.purge().await.unwrap(), 0);
    assert_eq!(staging.export_after(0, 10).await.unwrap().len(), 1);

    staging.integrity_check().await.unwrap();
    staging.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_counts_from_the_ack_and_ids_outlive_the_purge() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&db_path(&dir));
    // Long enough that a loaded machine's pauses between the steps below
    // stay well within one retention.
    let retention = Duration::from_millis(1500);
    opts.retention = retention;
    let staging = Staging::open(opts).unwrap();
    let past_retention = retention + Duration::from_millis(200);

    let r = report();
    let seq = stored_seq(staging.stage(r.clone()).await.unwrap());
    staging.ack(NODE, seq).await.unwrap();
    assert_eq!(staging.purge().await.unwrap(), 0, "acknowledged just now");
    tokio::time::sleep(past_retention).await;
    assert_eq!(staging.purge().await.unwrap(), 1);
    assert!(staging.export_after(0, 10).await.unwrap().is_empty());

    // A late retry of the purged report is still a duplicate.
    assert_eq!(
        staging.stage(r.clone()).await.unwrap(),
        StageOutcome::Duplicate { seq }
    );
    // The id is remembered for another retention after the purge.
    assert_eq!(staging.purge().await.unwrap(), 0);
    assert_eq!(
        staging.stage(r.clone()).await.unwrap(),
        StageOutcome::Duplicate { seq }
    );
    tokio::time::sleep(past_retention).await;
    staging.purge().await.unwrap();
    // Forgotten now: stored again, under a new seq (never the old one).
    assert_eq!(
        staging.stage(r).await.unwrap(),
        StageOutcome::Stored { seq: seq + 1 }
    );
    staging.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_is_never_reused_across_reopen_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut opts = options(&path);
    opts.retention = Duration::ZERO;
    let staging = Staging::open(opts.clone()).unwrap();
    for want in 1..=5 {
        assert_eq!(stored_seq(staging.stage(report()).await.unwrap()), want);
    }
    staging.ack(NODE, 5).await.unwrap();
    assert_eq!(staging.purge().await.unwrap(), 5);
    staging.close().await.unwrap();

    let staging = Staging::open(opts.clone()).unwrap();
    let stats = staging.stats().await.unwrap();
    assert_eq!(
        (stats.unacked, stats.highest_seq, stats.acked_up_to),
        (0, 5, 5)
    );
    assert_eq!(stats.oldest_unacked, None);
    assert_eq!(stored_seq(staging.stage(report()).await.unwrap()), 6);
    // Dropped without close: the writer still finishes and lets go.
    drop(staging);

    let staging = Staging::open(opts).unwrap();
    assert_eq!(stored_seq(staging.stage(report()).await.unwrap()), 7);
    let seqs: Vec<u64> = export_all(&staging).await.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![6, 7]);
    staging.close().await.unwrap();
}

#[tokio::test]
async fn a_store_keeps_its_id_and_a_store_made_afresh_gets_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let staging = Staging::open(options(&path)).unwrap();
    let id = staging.store_id().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    staging.close().await.unwrap();
    let staging = Staging::open(options(&path)).unwrap();
    assert_eq!(staging.store_id(), id, "reopened");
    staging.close().await.unwrap();

    // The disk replaced: the same node, its store made again.
    let other = tempfile::tempdir().unwrap();
    let fresh = Staging::open(options(&db_path(&other))).unwrap();
    assert_ne!(fresh.store_id(), id);
    fresh.close().await.unwrap();
}

/// Options whose commits linger `wait` at most, ended by `gap` without a
/// report, counting commits.
fn lingering(
    dir: &tempfile::TempDir,
    wait: Duration,
    gap: Duration,
) -> (StagingOptions, Arc<AtomicUsize>) {
    let mut opts = options(&db_path(dir));
    opts.group_commit_wait = wait;
    opts.group_commit_gap = gap;
    let commits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&commits);
    opts.on_commit = Some(Arc::new(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    (opts, commits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_report_is_committed_after_the_gap_not_the_whole_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (opts, commits) = lingering(&dir, Duration::from_secs(20), Duration::from_millis(1));
    let staging = Staging::open(opts).unwrap();
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), staging.stage(report()))
        .await
        .expect("a lone report waited for the whole 20 s linger, not for the 1 ms gap");
    assert!(matches!(outcome.unwrap(), StageOutcome::Stored { .. }));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(commits.load(Ordering::SeqCst), 1);
    staging.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_too_long_for_the_clock_does_not_stop_the_writer() {
    // `StagingOptions` is public: a wait (or gap) past what an `Instant`
    // can hold must not panic the writer, which would leave every later
    // report refused until restart.
    for (wait, gap) in [
        (Duration::MAX, Duration::from_millis(1)),
        (Duration::from_millis(1), Duration::MAX),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (opts, commits) = lingering(&dir, wait, gap);
        let staging = Staging::open(opts).unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(10), staging.stage(report()))
            .await
            .expect("the report was answered");
        assert!(
            matches!(outcome, Ok(StageOutcome::Stored { .. })),
            "wait {wait:?}, gap {gap:?}: {outcome:?}"
        );
        assert_eq!(commits.load(Ordering::SeqCst), 1);
        staging.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_that_keep_coming_within_the_gap_share_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    // Reports 5 ms apart, a 300 ms gap: one commit, or two if the machine
    // stalls for longer than the gap once; without the linger each report
    // would be committed on its own.
    let (opts, commits) = lingering(&dir, Duration::from_secs(10), Duration::from_millis(300));
    let staging = Staging::open(opts).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let staging = staging.clone();
        tasks.push(tokio::spawn(async move { staging.stage(report()).await }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for task in tasks {
        assert!(matches!(
            task.await.unwrap().unwrap(),
            StageOutcome::Stored { .. }
        ));
    }
    let commits = commits.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&commits),
        "{commits} commits for 10 reports 5 ms apart"
    );
    assert_eq!(export_all(&staging).await.len(), 10);
    staging.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_in_one_batch_and_across_batches_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&db_path(&dir));
    // A long window so the concurrent retries below share one commit.
    opts.group_commit_wait = Duration::from_millis(100);
    let commits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&commits);
    opts.on_commit = Some(Arc::new(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
    }));
    let staging = Staging::open(opts).unwrap();

    let r = report();
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let staging = staging.clone();
            let r = r.clone();
            tokio::spawn(async move { staging.stage(r).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }
    let stored: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, StageOutcome::Stored { .. }))
        .collect();
    assert_eq!(stored.len(), 1, "exactly one retry stores: {outcomes:?}");
    let seq = stored_seq(*stored[0]);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, StageOutcome::Stored { seq: s } | StageOutcome::Duplicate { seq: s } if *s == seq))
    );
    assert!(
        commits.load(Ordering::SeqCst) < 12,
        "the retries were batched"
    );

    // A later batch: still a duplicate, with the original seq.
    assert_eq!(
        staging.stage(r.clone()).await.unwrap(),
        StageOutcome::Duplicate { seq }
    );
    let all = export_all(&staging).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1.report_id, r.report_id);
    staging.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_stagers_get_distinct_dense_seqs_in_group_commits() {
    const TASKS: usize = 50;
    const PER_TASK: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&db_path(&dir));
    opts.group_commit_max = 64;
    let batches = Arc::new(std::sync::Mutex::new(Vec::<usize>::new()));
    let seen = Arc::clone(&batches);
    opts.on_commit = Some(Arc::new(move |latency, n| {
        assert!(latency < Duration::from_secs(30));
        seen.lock().unwrap().push(n);
    }));
    let staging = Staging::open(opts).unwrap();

    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let staging = staging.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..PER_TASK {
                    let r = report();
                    let seq = stored_seq(staging.stage(r.clone()).await.unwrap());
                    mine.push((seq, r.report_id));
                }
                mine
            })
        })
        .collect();
    let mut by_seq = HashMap::new();
    for task in tasks {
        for (seq, id) in task.await.unwrap() {
            assert!(by_seq.insert(seq, id).is_none(), "seq {seq} given twice");
        }
    }
    let total = TASKS * PER_TASK;
    assert_eq!(by_seq.len(), total);
    assert_eq!(by_seq.keys().min(), Some(&1));
    assert_eq!(by_seq.keys().max(), Some(&(total as u64)), "seqs are dense");

    let batches = batches.lock().unwrap().clone();
    assert_eq!(
        batches.iter().sum::<usize>(),
        total,
        "every report was in a commit"
    );
    assert!(batches.iter().all(|n| *n <= 64), "group_commit_max holds");
    assert!(
        batches.len() < total / 2 && batches.iter().any(|n| *n > 1),
        "commits are shared: {} commits for {total} reports",
        batches.len()
    );

    let exported = export_all(&staging).await;
    assert_eq!(exported.len(), total);
    for (seq, r) in &exported {
        assert_eq!(envelope(r).seq, *seq);
        assert_eq!(by_seq.get(seq), Some(&r.report_id));
    }
    staging.integrity_check().await.unwrap();
    staging.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_refuses_new_reports_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&db_path(&dir));
    opts.max_reports = 3;
    let staging = Staging::open(opts).unwrap();
    let first = report();
    staging.stage(first.clone()).await.unwrap();
    staging.stage(report()).await.unwrap();
    staging.stage(report()).await.unwrap();

    let refused = report();
    match staging.stage(refused.clone()).await {
        Err(Error::StagingFull {
            max: 3,
            retry_after_secs: 17,
        }) => {}
        other => panic!("expected StagingFull, got {other:?}"),
    }
    // A retry of a stored report is still answered: it is stored.
    assert_eq!(
        staging.stage(first).await.unwrap(),
        StageOutcome::Duplicate { seq: 1 }
    );
    let stats = staging.stats().await.unwrap();
    assert_eq!(
        (stats.unacked, stats.highest_seq),
        (3, 3),
        "nothing more stored"
    );
    assert_eq!(export_all(&staging).await.len(), 3);

    // Acknowledging makes room; the refused report was never stored.
    staging.ack(NODE, 1).await.unwrap();
    assert_eq!(
        staging.stage(refused).await.unwrap(),
        StageOutcome::Stored { seq: 4 }
    );
    assert!(matches!(
        staging.stage(report()).await,
        Err(Error::StagingFull { .. })
    ));
    staging.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_acks_change_nothing_and_acks_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::open(options(&db_path(&dir))).unwrap();
    for _ in 0..4 {
        staging.stage(report()).await.unwrap();
    }
    let before = staging.stats().await.unwrap();

    match staging.ack(NODE, 5).await {
        Err(Error::BadAck(msg)) => assert!(msg.contains('4'), "names the highest seq: {msg}"),
        other => panic!("expected BadAck, got {other:?}"),
    }
    match staging.ack("edge-other", 2).await {
        Err(Error::BadAck(msg)) => assert!(msg.contains("edge-other"), "{msg}"),
        other => panic!("expected BadAck, got {other:?}"),
    }
    assert!(matches!(
        staging.ack(NODE, u64::MAX).await,
        Err(Error::BadAck(_))
    ));
    assert_eq!(staging.stats().await.unwrap(), before);

    let first = staging.ack(NODE, 2).await.unwrap();
    assert_eq!((first.acked_up_to, first.newly_acked), (2, 2));
    let again = staging.ack(NODE, 2).await.unwrap();
    assert_eq!((again.acked_up_to, again.newly_acked), (2, 0));
    let lower = staging.ack(NODE, 1).await.unwrap();
    assert_eq!(
        (lower.acked_up_to, lower.newly_acked),
        (2, 0),
        "the cursor never moves back"
    );
    let zero = staging.ack(NODE, 0).await.unwrap();
    assert_eq!(zero.acked_up_to, 2);
    let rest = staging.ack(NODE, 4).await.unwrap();
    assert_eq!((rest.acked_up_to, rest.newly_acked), (4, 2));
    assert_eq!(staging.stats().await.unwrap().unacked, 0);
    staging.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_serials_only_go_up_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let staging = Staging::open(options(&path)).unwrap();
    let published = |staging: &Staging| {
        staging
            .published_manifest()
            .map(|m| (m.serial, m.signed.to_vec()))
    };
    assert_eq!(staging.current_manifest().await.unwrap(), None);
    assert_eq!(published(&staging), None);
    staging.put_manifest(5, b"five".to_vec()).await.unwrap();
    assert_eq!(
        staging.current_manifest().await.unwrap(),
        Some((5, b"five".to_vec()))
    );
    assert_eq!(published(&staging), Some((5, b"five".to_vec())));
    for serial in [5, 4, 0] {
        match staging.put_manifest(serial, b"older".to_vec()).await {
            Err(Error::ManifestRefused(msg)) => {
                assert!(msg.contains("current serial 5"), "{msg}");
            }
            other => panic!("serial {serial}: expected ManifestRefused, got {other:?}"),
        }
    }
    assert_eq!(
        staging.current_manifest().await.unwrap(),
        Some((5, b"five".to_vec()))
    );
    assert_eq!(published(&staging), Some((5, b"five".to_vec())));
    staging.put_manifest(6, b"six".to_vec()).await.unwrap();
    assert_eq!(published(&staging), Some((6, b"six".to_vec())));
    staging.close().await.unwrap();

    let staging = Staging::open(options(&path)).unwrap();
    assert_eq!(published(&staging), Some((6, b"six".to_vec())));
    assert_eq!(
        staging.current_manifest().await.unwrap(),
        Some((6, b"six".to_vec()))
    );
    assert!(matches!(
        staging.put_manifest(6, Vec::new()).await,
        Err(Error::ManifestRefused(_))
    ));
    staging.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_drains_the_queue_then_refuses_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut opts = options(&path);
    opts.group_commit_wait = Duration::from_millis(20);
    let staging = Staging::open(opts.clone()).unwrap();

    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let staging = staging.clone();
            tokio::spawn(async move {
                let r = report();
                (r.report_id, staging.stage(r).await)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    staging.close().await.unwrap();
    let mut stored = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            (id, Ok(StageOutcome::Stored { .. })) => {
                stored.insert(id);
            }
            (_, Err(Error::StagingClosed)) => {}
            (_, other) => panic!("expected stored or closed, got {other:?}"),
        }
    }

    assert!(matches!(
        staging.stage(report()).await,
        Err(Error::StagingClosed)
    ));
    assert!(matches!(
        staging.export_after(0, 1).await,
        Err(Error::StagingClosed)
    ));
    assert!(matches!(staging.stats().await, Err(Error::StagingClosed)));
    assert!(matches!(
        staging.ack(NODE, 0).await,
        Err(Error::StagingClosed)
    ));
    assert!(matches!(staging.purge().await, Err(Error::StagingClosed)));
    assert!(matches!(
        staging.current_manifest().await,
        Err(Error::StagingClosed)
    ));
    staging.close().await.unwrap();
    staging.clone().close().await.unwrap();

    // Every success is on disk.
    let staging = Staging::open(opts).unwrap();
    let exported: HashSet<ReportId> = export_all(&staging)
        .await
        .into_iter()
        .map(|(_, r)| r.report_id)
        .collect();
    assert_eq!(exported, stored);
    staging.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_belongs_to_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let staging = Staging::open(options(&path)).unwrap();
    staging.stage(report()).await.unwrap();
    staging.close().await.unwrap();

    let mut other = options(&path);
    other.node_id = "edge-renamed".to_owned();
    match Staging::open(other) {
        Err(Error::Config { key, reason }) => {
            assert_eq!(key, "node_id");
            assert!(reason.contains(NODE), "{reason}");
        }
        other => panic!("expected a node_id error, got {other:?}"),
    }
    let mut empty = options(&path);
    empty.node_id = String::new();
    assert!(Staging::open(empty).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_without_envelope_is_refused_and_takes_no_seq() {
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::open(options(&db_path(&dir))).unwrap();
    let mut bare = report();
    bare.envelope = None;
    assert!(matches!(staging.stage(bare).await, Err(Error::Staging(_))));
    assert_eq!(stored_seq(staging.stage(report()).await.unwrap()), 1);
    staging.close().await.unwrap();
}

/// A submission as a probe might send it: the minimal report with a fresh
/// id, compact, with `edit` applied to its JSON value first.
fn submission(edit: impl FnOnce(&mut serde_json::Value)) -> (ReportId, String) {
    let id = ReportId::new_v7();
    let mut value: serde_json::Value = serde_json::from_str(MINIMAL).expect("the fixture is JSON");
    value["report_id"] = serde_json::Value::String(id.to_string());
    edit(&mut value);
    (
        id,
        serde_json::to_string(&value).expect("a JSON value encodes"),
    )
}

/// Decodes `body` as ingest does and gives it the test envelope.
fn received(body: &str) -> Report {
    let mut report = Report::from_submitted_json(body.as_bytes()).expect("a valid submission");
    report.envelope = report_with(report.report_id, Utc::now()).envelope;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_reports_keep_the_probes_bytes_with_the_envelope_appended() {
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::open(options(&db_path(&dir))).unwrap();

    // Compact, as the agent sends it, with whitespace around: the stored
    // JSON is the probe's own bytes, then the envelope.
    let (id, compact) = submission(|_| {});
    let body = format!("  {compact}\t\r\n");
    let seq = stored_seq(
        staging
            .stage_received(received(&body), body.as_bytes())
            .await
            .unwrap(),
    );
    // Pretty-printed: re-encoded on one line instead.
    let (pretty_id, _) = submission(|_| {});
    let mut pretty_value: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    pretty_value["report_id"] = serde_json::Value::String(pretty_id.to_string());
    let pretty = serde_json::to_string_pretty(&pretty_value).unwrap();
    staging
        .stage_received(received(&pretty), pretty.as_bytes())
        .await
        .unwrap();
    // An envelope key the decoder reads as no envelope, plainly or escaped:
    // appending one would repeat the key, so these are re-encoded too.
    let mut tricky = Vec::new();
    let (null_id, with_null) = submission(|v| v["envelope"] = serde_json::Value::Null);
    if Report::from_submitted_json(with_null.as_bytes()).is_ok() {
        tricky.push((null_id, with_null));
    }
    let (escaped_id, plain) = submission(|_| {});
    let escaped = plain.replacen('{', r#"{"envel\u006fpe":null,"#, 1);
    if Report::from_submitted_json(escaped.as_bytes()).is_ok() {
        tricky.push((escaped_id, escaped));
    }
    for (_, body) in &tricky {
        staging
            .stage_received(received(body), body.as_bytes())
            .await
            .unwrap();
    }
    // The same id again is a duplicate, whichever way it is staged.
    assert_eq!(
        staging
            .stage_received(received(&compact), compact.as_bytes())
            .await
            .unwrap(),
        StageOutcome::Duplicate { seq }
    );

    let exported = staging.export_after(0, 100).await.unwrap();
    assert_eq!(exported.len(), 2 + tricky.len());
    for row in &exported {
        assert!(!row.json.contains(&b'\n'), "exported JSON must be one line");
        let report = Report::from_stored_json(&row.json).expect("stored JSON is valid");
        assert_eq!(envelope(&report).seq, row.seq);
        assert_eq!(envelope(&report).node_id, NODE);
    }
    let first = &exported[0];
    let open = compact.strip_suffix('}').unwrap();
    assert!(
        first.json.starts_with(open.as_bytes()),
        "the probe's bytes come first, unchanged"
    );
    assert!(
        first
            .json
            .ends_with(format!(r#""seq":{seq}}}}}"#).as_bytes())
    );
    let stored = Report::from_stored_json(&first.json).unwrap();
    assert_eq!(stored.report_id, id);
    let mut decoded = received(&compact);
    decoded.envelope = stored.envelope.clone();
    assert_eq!(
        stored, decoded,
        "the stored report decodes as the submission did"
    );
    let ids: Vec<ReportId> = exported
        .iter()
        .map(|row| Report::from_stored_json(&row.json).unwrap().report_id)
        .collect();
    assert_eq!(ids[1], pretty_id);
    for (i, (tricky_id, _)) in tricky.iter().enumerate() {
        assert_eq!(ids[2 + i], *tricky_id);
    }
    staging.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_file_is_reported_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("staging.sqlite3");
    std::fs::write(
        &path,
        b"this is not a database, just some text that is long enough",
    )
    .unwrap();
    match Staging::open(options(&path)) {
        Err(Error::Staging(msg)) => assert!(msg.contains("damaged"), "{msg}"),
        other => panic!("expected a staging error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Crash test: a child process stages as fast as it can and is killed.

const CHILD_ENV: &str = "LINEPROBE_STAGING_CRASH_CHILD";
const CHILD_TEST: &str = "crash_child";
const COMMITTED: &str = "COMMITTED ";

/// Not a test on its own: the body of the child process of
/// [`every_acknowledged_report_survives_sigkill`]. Does nothing unless the
/// parent set `LINEPROBE_STAGING_CRASH_CHILD` to a store path.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut opts = options(Path::new(&path));
        opts.group_commit_wait = Duration::from_micros(200);
        opts.group_commit_max = 32;
        let staging = Staging::open(opts).unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|task| {
                let staging = staging.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for i in 0_u64.. {
                        let r = report();
                        let id = r.report_id;
                        if let Ok(StageOutcome::Stored { .. }) = staging.stage(r.clone()).await {
                            // Only after the success reply: this line is the
                            // "2xx" the parent holds the store to.
                            let mut out = std::io::stdout().lock();
                            if writeln!(out, "{COMMITTED}{id}")
                                .and_then(|()| out.flush())
                                .is_err()
                            {
                                // The parent is gone.
                                std::process::exit(3);
                            }
                            mine.push(r);
                        }
                        // Retries of earlier reports and the puller's
                        // acknowledgements run beside the writes.
                        if i % 7 == 3
                            && let Some(old) = mine.get(mine.len() / 2)
                        {
                            let again = staging.stage(old.clone()).await.unwrap();
                            assert!(matches!(again, StageOutcome::Duplicate { .. }));
                        }
                        if task == 0 && i % 50 == 49 {
                            let stats = staging.stats().await.unwrap();
                            staging.ack(NODE, stats.highest_seq / 2).await.unwrap();
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// Kills the child if the parent fails before it meant to.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_report_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let exe = std::env::current_exe().unwrap();
    let mut promised: Vec<ReportId> = Vec::new();
    let mut rng = rand::thread_rng();
    for round in 0..4 {
        let mut child = Command::new(&exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut child = KillOnDrop(child);
        let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // A line cut by the kill is not a whole id and is skipped.
                if let Some(id) = line
                    .strip_prefix(COMMITTED)
                    .and_then(|s| ReportId::parse(s).ok())
                {
                    if ids.is_empty() {
                        let _ = first_tx.send(());
                    }
                    ids.push(id);
                }
            }
            ids
        });
        first_rx
            .recv_timeout(Duration::from_mins(1))
            .expect("the child commits something");
        let delay = rng.gen_range(20..400);
        std::thread::sleep(Duration::from_millis(delay));
        // `Child::kill` is SIGKILL on Unix: no destructor, no close.
        child.0.kill().unwrap();
        let status = child.0.wait().unwrap();
        assert!(!status.success(), "round {round}: the child was killed");
        let ids = reader.join().unwrap();
        assert!(!ids.is_empty());
        eprintln!(
            "round {round}: killed after {delay} ms, {} reports acknowledged",
            ids.len()
        );
        promised.extend(ids);
    }

    let staging = Staging::open(options(&path)).unwrap();
    staging.integrity_check().await.unwrap();
    let exported = export_all(&staging).await;
    let mut count: HashMap<ReportId, usize> = HashMap::new();
    for (i, (seq, r)) in exported.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "seqs are dense and ordered");
        assert_eq!(envelope(r).seq, *seq);
        *count.entry(r.report_id).or_default() += 1;
    }
    for id in &promised {
        assert_eq!(
            count.get(id),
            Some(&1),
            "acknowledged report {id} is stored once"
        );
    }
    let stats = staging.stats().await.unwrap();
    assert_eq!(stats.highest_seq, exported.len() as u64);
    assert!(stats.acked_up_to <= stats.highest_seq);
    // Retrying an acknowledged report after the crash is a duplicate.
    let sample = promised[promised.len() / 2];
    assert!(matches!(
        staging
            .stage(report_with(sample, Utc::now()))
            .await
            .unwrap(),
        StageOutcome::Duplicate { .. }
    ));
    staging.close().await.unwrap();
}

// ---------------------------------------------------------------------------
// Full disk: a small tmpfs, filled up, then freed.

/// Mounts a tmpfs and unmounts it when dropped, even after a failed assert.
struct TmpfsMount {
    dir: tempfile::TempDir,
}

impl TmpfsMount {
    fn new(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if status.success() {
            Ok(Self { dir })
        } else {
            Err(format!("mount -t tmpfs failed: {status}"))
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        // Lazy, so that a store still open after a failed assert cannot keep
        // the mount around.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn skip_or_fail(reason: &str) {
    assert!(
        std::env::var_os("LINEPROBE_REQUIRE_LAB").is_none(),
        "LINEPROBE_REQUIRE_LAB is set but the full-disk test cannot run: {reason}"
    );
    eprintln!("skipping the full-disk test: {reason}");
}

/// Fills the file system holding `dir` with one file, up to the last byte.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).expect("create the filler file");
    let chunk = vec![0xA5_u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected, got {e}");
                break;
            }
        }
    }
    let _ = file.sync_all();
    filler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_errors_not_corruption_and_recovers() {
    if !running_as_root() {
        skip_or_fail("mounting a small tmpfs needs root");
        return;
    }
    let mount = match TmpfsMount::new("8m") {
        Ok(mount) => mount,
        Err(reason) => {
            skip_or_fail(&reason);
            return;
        }
    };
    let path = mount.path().join("staging.sqlite3");
    let mut opts = options(&path);
    opts.group_commit_wait = Duration::ZERO;
    let staging = Staging::open(opts.clone()).unwrap();
    let mut stored: Vec<ReportId> = Vec::new();
    for _ in 0..10 {
        let r = report();
        stored_seq(staging.stage(r.clone()).await.unwrap());
        stored.push(r.report_id);
    }

    let filler = fill(mount.path());
    let mut refused: Vec<Report> = Vec::new();
    let started = Instant::now();
    while refused.len() < 5 {
        assert!(
            started.elapsed() < Duration::from_mins(1),
            "a full disk never made staging fail"
        );
        let r = report();
        match staging.stage(r.clone()).await {
            Ok(StageOutcome::Stored { .. }) => stored.push(r.report_id),
            Ok(StageOutcome::Duplicate { .. }) => panic!("a fresh id cannot be a duplicate"),
            Err(Error::Staging(msg)) => {
                assert!(
                    msg.contains("full"),
                    "the message says the disk is full: {msg}"
                );
                refused.push(r);
            }
            Err(other) => panic!("expected a staging error, got {other:?}"),
        }
    }
    // Reads still work while the disk is full.
    assert_eq!(export_all(&staging).await.len(), stored.len());

    std::fs::remove_file(&filler).unwrap();
    // The refused reports were never stored: retried now, they are new.
    for r in &refused {
        stored_seq(staging.stage(r.clone()).await.unwrap());
        stored.push(r.report_id);
    }
    for _ in 0..20 {
        let r = report();
        stored_seq(staging.stage(r.clone()).await.unwrap());
        stored.push(r.report_id);
    }
    staging.integrity_check().await.unwrap();
    staging.close().await.unwrap();

    let staging = Staging::open(opts).unwrap();
    staging.integrity_check().await.unwrap();
    let exported = export_all(&staging).await;
    let exported_ids: Vec<ReportId> = exported.iter().map(|(_, r)| r.report_id).collect();
    assert_eq!(
        exported_ids, stored,
        "every success is there once, in order"
    );
    for (i, (seq, _)) in exported.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "failed commits took no seq");
    }
    staging.close().await.unwrap();
    drop(mount);
}

/// The fault tests trust `integrity_check` to catch a damaged store; a
/// store damaged on purpose must fail it, with the way out in the message.
#[tokio::test]
async fn the_integrity_check_finds_a_damaged_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let staging = Staging::open(options(&path)).unwrap();
    for _ in 0..40 {
        stored_seq(staging.stage(report()).await.unwrap());
    }
    staging.integrity_check().await.unwrap();
    staging.close().await.unwrap();

    // Overwrite part of the cells of the report_id index's root page (40
    // ids fit one page): its keys no longer match the table's rows.
    let (page_size, root) = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let page_size: u64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let root: u64 = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master \
                 WHERE type = 'index' AND tbl_name = 'reports' AND sql IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (page_size, root)
    };
    let mut bytes = std::fs::read(&path).unwrap();
    let page_end = usize::try_from(root * page_size).unwrap();
    bytes[page_end - 400..page_end - 100].fill(b'Z');
    std::fs::write(&path, &bytes).unwrap();

    let staging = Staging::open(options(&path)).unwrap();
    let err = staging.integrity_check().await.unwrap_err().to_string();
    assert!(
        err.contains("failed its integrity check") && err.contains("move it aside"),
        "{err}"
    );
    staging.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_share_a_bounded_number_of_connections() {
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::open(options(&db_path(&dir))).unwrap();
    for _ in 0..20 {
        stored_seq(staging.stage(report()).await.unwrap());
    }
    let reads: Vec<_> = (0..400)
        .map(|i| {
            let staging = staging.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    staging.stats().await.map(|stats| stats.unacked)
                } else {
                    staging
                        .export_after(0, 100)
                        .await
                        .map(|page| page.len() as u64)
                }
            })
        })
        .collect();
    for read in reads {
        assert_eq!(read.await.unwrap().unwrap(), 20);
    }
    let stats = staging.read_stats();
    assert!(stats.reads >= 400, "{stats:?}");
    assert!(
        stats.connections_opened <= lineprobe_collector::MAX_READERS as u64,
        "{stats:?}"
    );
    staging.close().await.unwrap();
    // Reads after the close fail as such, not by opening a connection.
    assert!(matches!(staging.stats().await, Err(Error::StagingClosed)));
}

/// The stored trust scores are pruned and read back in the order the
/// traffic monitor forgets units in: a score's distance from the initial
/// one keeps it past fresher units, so a restart does not bring back a
/// penalty the book kept (or drop one it still holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_scores_are_pruned_and_restored_in_the_books_order() {
    use lineprobe_collector::{TrustRetention, TrustRow, UnitKey};
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::open(options(&db_path(&dir))).unwrap();
    let retention = TrustRetention {
        max_units: 3,
        initial: 50,
    };
    let row = |name: &str, score: f64, seen: u64| {
        TrustRow::new(
            UnitKey::Install(name.to_owned()),
            score,
            1,
            0,
            0,
            seen,
            None,
        )
    };
    // Penalised at minute 0 (kept until 0 + 30 × 60), trusted at minute 10
    // (until 10 + 40 × 60), and fresh units seen later but kept shorter.
    let rows = vec![
        row("penalised", 20.0, 0),
        row("trusted", 90.0, 10),
        row("fresh-a", 51.0, 500),
        row("fresh-b", 51.0, 600),
        row("fresh-c", 50.0, 1_000),
    ];
    for (at_once, rows) in [(false, rows.clone()), (true, rows)] {
        // Written at once, and written one by one (each save prunes).
        if at_once {
            staging.save_trust(rows, retention).await.unwrap();
        } else {
            for row in rows {
                staging.save_trust(vec![row], retention).await.unwrap();
            }
        }
        let kept: Vec<String> = staging
            .load_trust(retention)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.unit.name())
            .collect();
        assert_eq!(
            kept,
            ["trusted", "penalised", "fresh-c"],
            "at once: {at_once}"
        );
    }
    staging.close().await.unwrap();
}

/// A unit's band is stored with its trust score and forgotten with it: a
/// unit pruned from the table and scored again later has no band left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bands_are_kept_and_forgotten_with_their_scores() {
    use lineprobe_collector::{BandMemory, TrustRetention, TrustRow, UnitKey};
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::open(options(&db_path(&dir))).unwrap();
    let retention = TrustRetention {
        max_units: 2,
        initial: 50,
    };
    let band = BandMemory::new(600.0, 60.0, 60, 100).unwrap();
    let row = |name: &str, seen: u64| {
        TrustRow::new(UnitKey::Install(name.to_owned()), 50.0, 1, 0, 0, seen, None)
    };
    staging
        .save_trust(vec![row("old", 100).with_band(band)], retention)
        .await
        .unwrap();
    let rows = staging.load_trust(retention).await.unwrap();
    assert_eq!(rows[0].band, Some(band));
    // Two fresher units push it out.
    staging
        .save_trust(vec![row("a", 200), row("b", 300)], retention)
        .await
        .unwrap();
    staging
        .save_trust(vec![row("old", 400)], retention)
        .await
        .unwrap();
    let rows = staging.load_trust(retention).await.unwrap();
    let old = rows
        .iter()
        .find(|r| r.unit.name() == "old")
        .expect("scored again");
    assert_eq!(old.band, None, "the band went with its pruned row");
    staging.close().await.unwrap();
}
