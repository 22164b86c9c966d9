//! The internal database, tested the same way on both backends: every test
//! runs against a fresh SQLite file and, when `LINEPROBE_TEST_PG` names a
//! PostgreSQL server, against a fresh PostgreSQL database created for the
//! test and dropped after it. Without `LINEPROBE_TEST_PG` the PostgreSQL run
//! is skipped with a printed reason, unless `LINEPROBE_REQUIRE_LAB=1`, which
//! makes a missing or unreachable PostgreSQL a failure.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use lineprobe_shared::{
    Catalog, Classifier, ClassifierConfig, EnvelopeHeaders, ReceiverEnvelope, Report,
};
use lineprobe_sync::{
    ApplySummary, CachedAnswer, Error, LineFilter, ObservationFacts, ObservationRecord, Pipeline,
    Processed, PullBatch, PulledReport, QuarantineRecord, Store, VerdictRecord,
};

mod pgscratch;
use pgscratch::ScratchPg;
use sqlx::Connection as _;

/// What a test body gets: the store and the URL it was opened with.
#[derive(Clone)]
struct Ctx {
    store: Store,
    url: String,
}

/// Runs `body` against a fresh SQLite database and a fresh PostgreSQL one.
async fn on_each_backend<F, Fut>(test: &str, body: F)
where
    F: Fn(Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite:{}",
        dir.path().join("nested/dir/store.db").display()
    );
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.backend_name(), "sqlite");
    run_isolated(body(Ctx {
        store: store.clone(),
        url,
    }))
    .await
    .inspect_err(|_| eprintln!("{test} failed on SQLite"))
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    store.close().await;

    let Some(pg) = ScratchPg::create(test, "store").await else {
        return;
    };
    let store = Store::open(&pg.url).await.unwrap();
    assert_eq!(store.backend_name(), "postgres");
    let outcome = run_isolated(body(Ctx {
        store: store.clone(),
        url: pg.url.clone(),
    }))
    .await;
    store.close().await;
    pg.drop_database().await.unwrap();
    if let Err(panic) = outcome {
        eprintln!("{test} failed on PostgreSQL");
        std::panic::resume_unwind(panic);
    }
}

/// Runs `body` against a fresh PostgreSQL database of its own (nothing
/// opened in it yet), dropping the database afterwards whatever happens.
async fn on_scratch_postgres<F, Fut>(test: &str, body: F)
where
    F: FnOnce(ScratchPg) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(pg) = ScratchPg::create(test, "store").await else {
        return;
    };
    let outcome = run_isolated(body(pg.clone())).await;
    pg.drop_database().await.unwrap();
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

/// Runs a test body on its own task, so a failing assertion comes back as a
/// value and the database can be cleaned up before the test fails.
async fn run_isolated(
    body: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::any::Any + Send>> {
    match tokio::time::timeout(Duration::from_mins(2), tokio::spawn(body)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(join)) => Err(join
            .try_into_panic()
            .unwrap_or_else(|e| Box::new(e.to_string()))),
        Err(_) => Err(Box::new("the test body took more than 120 s".to_owned())),
    }
}

// ---- record builders -------------------------------------------------------

fn report(seq: u64, body: &[u8]) -> PulledReport {
    PulledReport {
        seq,
        report_id: Some(format!("r-{seq}")),
        received_at_ms: i64::try_from(seq).ok().map(|s| s.saturating_add(1_000)),
        body: body.to_vec(),
    }
}

fn pull<'a>(node: &'a str, reports: &'a [PulledReport], next_after: u64) -> PullBatch<'a> {
    PullBatch {
        collector: "dmz-1",
        node_id: node,
        reports,
        next_after,
        pulled_at_ms: 5_000,
    }
}

/// Stores `n` pending raw reports from collector `dmz-1`; returns their ids.
async fn stored_raws(store: &Store, first_seq: u64, n: u64) -> Vec<i64> {
    let reports: Vec<PulledReport> = (first_seq..first_seq + n)
        .map(|s| report(s, format!("{{\"seq\":{s}}}").as_bytes()))
        .collect();
    let commit = store
        .commit_pull(&pull("node-a", &reports, first_seq + n - 1))
        .await
        .unwrap();
    assert_eq!(commit.inserted, n);
    let pending = store.pending_raw(0, 100_000).await.unwrap();
    pending
        .iter()
        .filter(|r| (first_seq..first_seq + n).contains(&r.seq))
        .map(|r| r.id)
        .collect()
}

fn verdict(key: &str, verdict: &str, actual_carrier: &str, decided_at_ms: i64) -> VerdictRecord {
    VerdictRecord {
        verdict_key: key.to_owned(),
        verdict: verdict.to_owned(),
        reasons_json: format!("[\"{verdict}\"]"),
        evidence_json: "{}".to_owned(),
        actual_carrier: Some(actual_carrier.to_owned()),
        actual_province: Some("CN-GD".to_owned()),
        actual_city: Some("4401".to_owned()),
        egress_carrier: Some(actual_carrier.to_owned()),
        first_hop_carrier: Some(actual_carrier.to_owned()),
        filled_json: "{}".to_owned(),
        fills: lineprobe_sync::DeclaredFills::default(),
        data_versions_json: "{\"ipplan\":\"2025-01\"}".to_owned(),
        decided_at_ms,
        trust_score: None,
        low_trust: false,
    }
}

/// An observation of `line` seen at `at` with verdict `v`.
fn observation(raw_id: i64, obs: &str, line: &str, at: i64, v: VerdictRecord) -> Processed {
    Processed::Observation(Box::new(ObservationRecord {
        raw_id,
        reprocess: false,
        facts: ObservationFacts {
            obs_key: obs.to_owned(),
            line_key: line.to_owned(),
            install_id: format!("inst-{line}"),
            account: format!("acct-{line}"),
            declared_province: Some("CN-GD".to_owned()),
            declared_city: Some("4401".to_owned()),
            declared_carrier: Some("cmcc".to_owned()),
            egress_ip: format!("203.0.113.{}", obs.len()),
            first_hop_ip: Some("198.51.100.1".to_owned()),
            path_json: format!("[\"{obs}\"]"),
            engine: "trippy-core".to_owned(),
            agent_version: "0.1.0".to_owned(),
            os: "windows".to_owned(),
        },
        report_id: format!("rep-{raw_id}"),
        observed_at_ms: at,
        verdict: v,
    }))
}

fn reprocessed(record: Processed) -> Processed {
    match record {
        Processed::Observation(mut o) => {
            o.reprocess = true;
            Processed::Observation(o)
        }
        Processed::Quarantine(mut q) => {
            q.reprocess = true;
            Processed::Quarantine(q)
        }
    }
}

fn quarantine(raw_id: i64, reasons_json: &str, summary: &str) -> Processed {
    Processed::Quarantine(QuarantineRecord {
        raw_id,
        reprocess: false,
        report_id: Some(format!("rep-{raw_id}")),
        install_id: None,
        reasons_json: reasons_json.to_owned(),
        summary: summary.to_owned(),
        at_ms: 7_000,
    })
}

// ---- opening ---------------------------------------------------------------

#[tokio::test]
async fn opening_twice_migrates_once_and_keeps_the_data() {
    on_each_backend("opening_twice", |ctx| async move {
        let ids = stored_raws(&ctx.store, 1, 2).await;
        assert_eq!(ids.len(), 2);
        let again = Store::open(&ctx.url).await.unwrap();
        assert_eq!(again.backend_name(), ctx.store.backend_name());
        assert_eq!(again.counts().await.unwrap().raw, 2);
        assert_eq!(again.counts().await.unwrap().pending, 2);
        again.close().await;
        // The first store still works beside the second one's close.
        assert_eq!(ctx.store.counts().await.unwrap().raw, 2);
    })
    .await;
}

#[tokio::test]
async fn a_bad_url_says_which_forms_work() {
    for url in [
        "mysql://u:secret@db/lp",
        "reports.txt",
        "",
        "sqlite::memory:",
    ] {
        let error = Store::open(url).await.unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, Error::BadDatabaseUrl { .. }),
            "{url}: {message}"
        );
        assert_eq!(error.exit_code(), 2, "{message}");
        assert!(message.contains("sqlite:PATH"), "{message}");
        assert!(message.contains("postgres://"), "{message}");
        assert!(!message.contains("secret"), "a password leaked: {message}");
    }
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_database_error() {
    // Port 1 on loopback: nothing listens there, the connection is refused.
    let started = Instant::now();
    let error = Store::open("postgres://lp:secret@127.0.0.1:1/lp")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Database { .. }), "{message}");
    assert_eq!(error.exit_code(), 1);
    assert!(message.contains("127.0.0.1:1/lp"), "{message}");
    assert!(!message.contains("secret"), "{message}");
    // The cause, not only that a pool gave up waiting.
    assert!(message.contains("Connection refused"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_missing_postgres_database_is_named_in_the_servers_words() {
    let Some(pg) = ScratchPg::create("missing_database", "store").await else {
        return;
    };
    pg.drop_database().await.unwrap();
    let error = Store::open(&pg.url).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Database { .. }), "{message}");
    assert!(
        message.contains(&format!(
            "the database answered: database \"{}\" does not exist",
            pg.name
        )),
        "{message}"
    );
    // Not the line of PostgreSQL's C source that raised it.
    assert!(!message.contains(" at line "), "{message}");
}

#[tokio::test]
async fn a_failing_postgres_migration_is_told_in_the_servers_words() {
    on_scratch_postgres("migration_fails", |pg| async move {
        // A table of the schema's name that is not the schema's.
        let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
        sqlx::query("CREATE TABLE raw_reports (x INT)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let error = Store::open(&pg.url).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::Migrate { .. }), "{message}");
        assert!(
            message.contains("the database answered: relation \"raw_reports\" already exists"),
            "{message}"
        );
        assert!(!message.contains(" at line "), "{message}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_carries_on_after_postgresql_drops_its_connections() {
    // What a restart of the server (or a failover) does to a running
    // daemon: every connection of its pool is gone at once.
    on_scratch_postgres("connections_dropped", |pg| async move {
        let store = Store::open(&pg.url).await.unwrap();
        assert_eq!(store.counts().await.unwrap().raw, 0);
        let mut admin = sqlx::PgConnection::connect(&pg.admin_url).await.unwrap();
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
        )
        .bind(&pg.name)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert!(!ended.is_empty() && ended.iter().all(|&e| e), "{ended:?}");
        admin.close().await.unwrap();
        // Pooled connections are checked before use, so no caller sees
        // the dead ones: reads and a pull's commit work at once.
        assert_eq!(store.counts().await.unwrap().raw, 0);
        assert_eq!(stored_raws(&store, 1, 3).await.len(), 3);
        assert_eq!(store.counts().await.unwrap().raw, 3);
        store.close().await;
    })
    .await;
}

#[tokio::test]
async fn an_sqlite_file_in_an_unwritable_place_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let url = format!("sqlite:{}", file.join("sync.db").display());
    let error = Store::open(&url).await.unwrap_err();
    assert!(matches!(error, Error::DatabaseDir { .. }), "{error}");
    assert_eq!(error.exit_code(), 1);
    let not_sqlite = dir.path().join("garbage.db");
    std::fs::write(&not_sqlite, vec![b'x'; 4096]).unwrap();
    let error = Store::open(not_sqlite.to_str().unwrap()).await.unwrap_err();
    assert!(
        matches!(error, Error::Database { .. } | Error::Migrate { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("garbage.db"), "{error}");
}

// ---- pulling ---------------------------------------------------------------

#[tokio::test]
async fn a_repeated_pull_stores_nothing_twice_and_the_cursor_only_moves_forward() {
    on_each_backend("repeated_pull", |ctx| async move {
        let s = &ctx.store;
        assert!(s.cursor("dmz-1").await.unwrap().is_none());
        let first = [report(1, b"a"), report(2, b"b"), report(3, b"c")];
        let c = s.commit_pull(&pull("node-a", &first, 3)).await.unwrap();
        assert_eq!((c.inserted, c.duplicates, c.after_seq), (3, 0, 3));

        // The collector did not see our ack and sends 2 and 3 again, with 4.
        let again = [report(2, b"b"), report(3, b"c"), report(4, b"d")];
        let c = s.commit_pull(&pull("node-a", &again, 4)).await.unwrap();
        assert_eq!((c.inserted, c.duplicates, c.after_seq), (1, 2, 4));

        // A stale export (next_after behind the cursor) never moves it back;
        // one report twice in one batch is one row.
        let stale = [report(5, b"e"), report(5, b"e")];
        let c = s.commit_pull(&pull("node-a", &stale, 2)).await.unwrap();
        assert_eq!((c.inserted, c.duplicates, c.after_seq), (1, 1, 4));

        // An empty pull still records a successful pull.
        let c = s.commit_pull(&pull("node-a", &[], 4)).await.unwrap();
        assert_eq!((c.inserted, c.duplicates, c.after_seq), (0, 0, 4));

        let counts = s.counts().await.unwrap();
        assert_eq!((counts.raw, counts.pending), (5, 5));
        let cursor = s.cursor("dmz-1").await.unwrap().unwrap();
        assert_eq!(cursor.node_id, "node-a");
        assert_eq!(cursor.after_seq, 4);
        assert_eq!(cursor.pulled_total, 5);
        assert_eq!(cursor.last_pull_at_ms, Some(5_000));
        assert_eq!(cursor.last_ok_at_ms, Some(5_000));
        assert_eq!(cursor.last_error, None);

        let raws = s.pending_raw(0, 100).await.unwrap();
        let seqs: Vec<u64> = raws.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(raws[3].body, b"d");
        assert_eq!(raws[3].collector, "dmz-1");
        assert_eq!(raws[3].node_id, "node-a");
        assert_eq!(raws[3].pulled_at_ms, 5_000);

        // Acks only move forward too.
        s.record_ack("dmz-1", 3).await.unwrap();
        s.record_ack("dmz-1", 2).await.unwrap();
        assert_eq!(s.cursor("dmz-1").await.unwrap().unwrap().acked_seq, 3);
        let error = s.record_ack("dmz-9", 1).await.unwrap_err();
        assert!(error.to_string().contains("dmz-9"), "{error}");
    })
    .await;
}

/// A report body of about 2 KB that names its sequence number.
fn sized_body(seq: u64) -> Vec<u8> {
    let mut body = format!("{{\"seq\":{seq},\"pad\":\"").into_bytes();
    body.resize(2_000, b'a' + u8::try_from(seq % 26).unwrap());
    body.extend_from_slice(b"\"}");
    body
}

#[tokio::test]
async fn pages_larger_than_a_copy_chunk_are_stored_whole_and_repeats_once() {
    on_each_backend("large_pages", |ctx| async move {
        let s = &ctx.store;
        let page = |seqs: &mut dyn Iterator<Item = u64>| -> Vec<PulledReport> {
            seqs.map(|seq| report(seq, &sized_body(seq))).collect()
        };
        // 300 reports of 2 KB: PostgreSQL's COPY sends them in several
        // chunks.
        let first = page(&mut (1..=300));
        let c = s.commit_pull(&pull("node-a", &first, 300)).await.unwrap();
        assert_eq!((c.inserted, c.duplicates), (300, 0));
        // Repeats first (the server refuses the COPY at its first row) and
        // last (after several chunks went out): the page is stored again
        // without its repeats, whole or not at all.
        let repeats_first = page(&mut (251..=550));
        let c = s
            .commit_pull(&pull("node-a", &repeats_first, 550))
            .await
            .unwrap();
        assert_eq!((c.inserted, c.duplicates), (250, 50));
        let repeats_last = page(&mut (551..=850).chain(290..=299));
        let c = s
            .commit_pull(&pull("node-a", &repeats_last, 850))
            .await
            .unwrap();
        assert_eq!((c.inserted, c.duplicates, c.after_seq), (300, 10, 850));

        let counts = s.counts().await.unwrap();
        assert_eq!((counts.raw, counts.pending), (850, 850));
        let mut stored = Vec::new();
        let mut after = 0;
        loop {
            let rows = s.pending_raw(after, 200).await.unwrap();
            let Some(last) = rows.last() else { break };
            after = last.id;
            stored.extend(rows);
        }
        let seqs: Vec<u64> = stored.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=850).collect::<Vec<_>>());
        for raw in &stored {
            assert_eq!(raw.body, sized_body(raw.seq), "seq {}", raw.seq);
        }
    })
    .await;
}

#[tokio::test]
async fn a_replaced_collector_is_refused_and_nothing_is_written() {
    on_each_backend("replaced_collector", |ctx| async move {
        let s = &ctx.store;
        s.commit_pull(&pull("node-a", &[report(1, b"a")], 1))
            .await
            .unwrap();
        let fresh = [report(1, b"new node, new numbering"), report(2, b"x")];
        let error = s.commit_pull(&pull("node-b", &fresh, 2)).await.unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, Error::CollectorReplaced { .. }),
            "{message}"
        );
        assert!(
            message.contains("node-a") && message.contains("node-b"),
            "{message}"
        );
        assert!(message.contains("new collector name"), "{message}");
        assert_eq!(error.exit_code(), 2);
        assert_eq!(s.counts().await.unwrap().raw, 1);
        let cursor = s.cursor("dmz-1").await.unwrap().unwrap();
        assert_eq!((cursor.node_id.as_str(), cursor.after_seq), ("node-a", 1));
        assert_eq!(cursor.pulled_total, 1);
    })
    .await;
}

#[tokio::test]
async fn two_collectors_answering_as_one_node_are_refused_and_nothing_is_written() {
    on_each_backend("shared_node", |ctx| async move {
        let s = &ctx.store;
        s.commit_pull(&pull("node-a", &[report(1, b"a1"), report(2, b"a2")], 2))
            .await
            .unwrap();
        // Another collector configured with the same node id numbers its
        // own reports 1, 2, 3: taken for node-a's, the first two would be
        // "duplicates", acknowledged, and gone.
        let theirs = [report(1, b"b1"), report(2, b"b2"), report(3, b"b3")];
        let batch = PullBatch {
            collector: "dmz-2",
            ..pull("node-a", &theirs, 3)
        };
        let error = s.commit_pull(&batch).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::NodeShared { .. }), "{message}");
        assert!(
            message.contains("`dmz-2`")
                && message.contains("`dmz-1`")
                && message.contains("node_id"),
            "{message}"
        );
        assert_eq!(error.exit_code(), 2);
        assert_eq!(s.counts().await.unwrap().raw, 2);
        assert!(s.cursor("dmz-2").await.unwrap().is_none());
        // The first collector goes on as before.
        let c = s
            .commit_pull(&pull("node-a", &[report(3, b"a3")], 3))
            .await
            .unwrap();
        assert_eq!((c.inserted, c.after_seq), (1, 3));
    })
    .await;
}

#[tokio::test]
async fn a_cursor_keeps_the_first_staging_store_it_was_bound_to() {
    on_each_backend("cursor_store", |ctx| async move {
        let s = &ctx.store;
        assert_eq!(s.cursor_store("dmz-1").await.unwrap(), None);
        // Bound before the first commit; the commit keeps it.
        s.bind_cursor_store("dmz-1", "aaaa").await.unwrap();
        s.commit_pull(&pull("node-a", &[report(1, b"a")], 1))
            .await
            .unwrap();
        s.bind_cursor_store("dmz-1", "bbbb").await.unwrap();
        assert_eq!(
            s.cursor_store("dmz-1").await.unwrap().as_deref(),
            Some("aaaa")
        );
        let cursor = s.cursor("dmz-1").await.unwrap().unwrap();
        assert_eq!((cursor.node_id.as_str(), cursor.after_seq), ("node-a", 1));
        // A cursor that only knows a failed round gets its store too.
        s.record_pull_error("dmz-2", 1_000, "refused")
            .await
            .unwrap();
        s.bind_cursor_store("dmz-2", "cccc").await.unwrap();
        assert_eq!(
            s.cursor_store("dmz-2").await.unwrap().as_deref(),
            Some("cccc")
        );
    })
    .await;
}

#[tokio::test]
async fn rounds_pulled_to_the_end_are_recorded_and_never_move_back() {
    on_each_backend("caught_up", |ctx| async move {
        let s = &ctx.store;
        // A collector with nothing to pull yet gets a cursor saying so.
        s.record_caught_up("dmz-1", 5_000).await.unwrap();
        let cursor = s.cursor("dmz-1").await.unwrap().unwrap();
        assert_eq!((cursor.node_id.as_str(), cursor.after_seq), ("", 0));
        assert_eq!(cursor.caught_up_at_ms, Some(5_000));
        // A round that started earlier (a slower process) does not move it
        // back; a later one moves it on; a commit leaves it alone.
        s.record_caught_up("dmz-1", 4_000).await.unwrap();
        assert_eq!(
            s.cursor("dmz-1").await.unwrap().unwrap().caught_up_at_ms,
            Some(5_000)
        );
        s.commit_pull(&pull("node-a", &[report(1, b"a")], 1))
            .await
            .unwrap();
        s.record_caught_up("dmz-1", 7_000).await.unwrap();
        let cursors = s.cursors().await.unwrap();
        assert_eq!(cursors[0].caught_up_at_ms, Some(7_000));
        assert_eq!(
            (cursors[0].node_id.as_str(), cursors[0].after_seq),
            ("node-a", 1)
        );
    })
    .await;
}

#[tokio::test]
async fn pull_errors_are_recorded_and_cleared_by_the_next_good_pull() {
    on_each_backend("pull_errors", |ctx| async move {
        let s = &ctx.store;
        s.record_pull_error("dmz-1", 1_000, "connection refused")
            .await
            .unwrap();
        let cursor = s.cursor("dmz-1").await.unwrap().unwrap();
        assert_eq!(cursor.node_id, "");
        assert_eq!(cursor.after_seq, 0);
        assert_eq!(cursor.last_error.as_deref(), Some("connection refused"));
        assert_eq!(cursor.last_error_at_ms, Some(1_000));
        assert_eq!(cursor.last_pull_at_ms, Some(1_000));
        assert_eq!(cursor.last_ok_at_ms, None);

        // The first good pull names the node.
        s.commit_pull(&pull("node-a", &[report(1, b"a")], 1))
            .await
            .unwrap();
        let cursor = s.cursor("dmz-1").await.unwrap().unwrap();
        assert_eq!(cursor.node_id, "node-a");
        assert_eq!((cursor.last_error, cursor.last_error_at_ms), (None, None));

        s.record_pull_error("dmz-1", 9_000, "TLS: 证书已过期")
            .await
            .unwrap();
        let cursor = s.cursor("dmz-1").await.unwrap().unwrap();
        assert_eq!(cursor.last_error.as_deref(), Some("TLS: 证书已过期"));
        assert_eq!(cursor.last_ok_at_ms, Some(5_000));
        assert_eq!((cursor.node_id.as_str(), cursor.after_seq), ("node-a", 1));

        s.record_pull_error("dmz-2", 9_500, "timeout")
            .await
            .unwrap();
        let names: Vec<String> = s
            .cursors()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.collector)
            .collect();
        assert_eq!(names, ["dmz-1", "dmz-2"]);
    })
    .await;
}

/// The cursors are listed by collector name in the same order on both
/// backends, whatever the PostgreSQL database's default collation: a
/// database created with an `en_US` locale gives `pull_cursors.collector`
/// that collation (put on the column here, the test server's databases
/// being C), which sorts `alpha` before `Zeta` where SQLite puts `Zeta`
/// first.
#[tokio::test]
async fn cursors_are_listed_in_one_order_on_both_backends() {
    on_each_backend("cursor_order", |ctx| async move {
        let s = &ctx.store;
        if s.backend_name() == "postgres" {
            let mut conn = sqlx::PgConnection::connect(&ctx.url).await.unwrap();
            sqlx::raw_sql(
                "ALTER TABLE pull_cursors ALTER COLUMN collector \
                 TYPE TEXT COLLATE \"en-US-x-icu\"",
            )
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
        }
        for name in ["alpha", "Zeta", "dmz-2", "dmz_1", "dmz10"] {
            s.record_pull_error(name, 1_000, "down").await.unwrap();
        }
        let names: Vec<String> = s
            .cursors()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.collector)
            .collect();
        assert_eq!(names, ["Zeta", "alpha", "dmz-2", "dmz10", "dmz_1"]);
    })
    .await;
}

#[tokio::test]
async fn sequence_numbers_beyond_the_database_range_are_refused() {
    on_each_backend("huge_seq", |ctx| async move {
        let s = &ctx.store;
        let huge = [report(u64::MAX, b"x")];
        let error = s.commit_pull(&pull("node-a", &huge, 1)).await.unwrap_err();
        assert!(matches!(error, Error::StoreInput(_)), "{error}");
        assert!(error.to_string().contains(&u64::MAX.to_string()), "{error}");
        let error = s
            .commit_pull(&pull("node-a", &[], u64::MAX))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::StoreInput(_)), "{error}");
        assert!(s.cursor("dmz-1").await.unwrap().is_none());
        let max = [report(i64::MAX.unsigned_abs(), b"x")];
        let c = s.commit_pull(&pull("node-a", &max, 9)).await.unwrap();
        assert_eq!(c.inserted, 1);
        let raws = s.pending_raw(0, 10).await.unwrap();
        assert_eq!(raws[0].seq, i64::MAX.unsigned_abs());
    })
    .await;
}

#[tokio::test]
async fn a_body_that_is_not_utf8_round_trips_byte_exact() {
    on_each_backend("binary_body", |ctx| async move {
        let body: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, 0x00, 0xc3, 0x28]).collect();
        assert!(std::str::from_utf8(&body).is_err());
        let reports = [PulledReport {
            seq: 7,
            report_id: None,
            received_at_ms: None,
            body: body.clone(),
        }];
        ctx.store
            .commit_pull(&pull("node-a", &reports, 7))
            .await
            .unwrap();
        let raws = ctx.store.pending_raw(0, 10).await.unwrap();
        assert_eq!(raws.len(), 1);
        assert_eq!(raws[0].body, body);
    })
    .await;
}

// ---- listing raw reports ---------------------------------------------------

#[tokio::test]
async fn pending_and_processed_reports_are_listed_in_id_order() {
    on_each_backend("raw_listing", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 5).await;
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let page: Vec<i64> = s
            .pending_raw(ids[1], 2)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(page, ids[2..4]);

        let v = || verdict("k1", "compliant", "cmcc", 9_000);
        let batch = [
            observation(ids[0], "o1", "l1", 100, v()),
            quarantine(ids[1], "[\"bad\"]", "bad report"),
            observation(ids[2], "o1", "l1", 200, v()),
        ];
        s.apply(&batch).await.unwrap();
        let pending: Vec<i64> = s
            .pending_raw(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(pending, ids[3..]);
        let processed: Vec<i64> = s
            .processed_raw(None, 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(processed, [ids[0], ids[2]]);
        let after: Vec<i64> = s
            .processed_raw(None, ids[0], 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(after, [ids[2]]);
        // received_at of seq n is 1000 + n: seq 3 was received at 1003.
        let since: Vec<u64> = s
            .processed_raw(Some(1_002), 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(since, [3]);
        assert!(
            s.processed_raw(Some(1_004), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let limited = s.processed_raw(None, 0, 1).await.unwrap();
        assert_eq!(limited.len(), 1);

        let counts = s.counts().await.unwrap();
        assert_eq!(
            (
                counts.raw,
                counts.pending,
                counts.processed,
                counts.quarantined
            ),
            (5, 2, 2, 1)
        );
    })
    .await;
}

#[tokio::test]
async fn processed_reports_without_a_receive_time_go_by_their_pull_time() {
    on_each_backend("processed_pull_time", |ctx| async move {
        let s = &ctx.store;
        let reports = [PulledReport {
            seq: 1,
            report_id: None,
            received_at_ms: None,
            body: b"{}".to_vec(),
        }];
        s.commit_pull(&pull("node-a", &reports, 1)).await.unwrap();
        let id = s.pending_raw(0, 1).await.unwrap()[0].id;
        s.apply(&[observation(
            id,
            "o",
            "l",
            1,
            verdict("k", "compliant", "cmcc", 2),
        )])
        .await
        .unwrap();
        // Pulled at 5000.
        assert_eq!(s.processed_raw(Some(5_000), 0, 9).await.unwrap().len(), 1);
        assert!(s.processed_raw(Some(5_001), 0, 9).await.unwrap().is_empty());
    })
    .await;
}

// ---- apply -----------------------------------------------------------------

#[tokio::test]
async fn trust_at_arrival_marks_the_verdict_and_follows_the_current_line() {
    on_each_backend("trust_marks", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 3).await;
        let low = VerdictRecord {
            trust_score: Some(12),
            low_trust: true,
            ..verdict("k-low", "non_compliant", "ctcc", 1_000)
        };
        s.apply(&[observation(ids[0], "o1", "l1", 100, low)])
            .await
            .unwrap();
        let line = s.line("l1").await.unwrap().unwrap();
        assert!(line.low_trust, "the line follows its low-trust verdict");
        let v = &s.line_verdicts("l1").await.unwrap()[0];
        assert_eq!((v.record.trust_score, v.record.low_trust), (Some(12), true));

        // A later, trusted observation replaces it: the line is no longer
        // marked; the earlier verdict keeps its mark.
        let trusted = VerdictRecord {
            trust_score: Some(90),
            ..verdict("k-ok", "non_compliant", "ctcc", 2_000)
        };
        s.apply(&[observation(ids[1], "o2", "l1", 200, trusted)])
            .await
            .unwrap();
        let line = s.line("l1").await.unwrap().unwrap();
        assert!(!line.low_trust);
        let verdicts = s.line_verdicts("l1").await.unwrap();
        let marks: Vec<_> = verdicts
            .iter()
            .map(|v| {
                (
                    v.record.verdict_key.as_str(),
                    v.record.trust_score,
                    v.record.low_trust,
                )
            })
            .collect();
        assert_eq!(
            marks,
            [("k-ok", Some(90), false), ("k-low", Some(12), true)]
        );

        // An older observation from a low-trust source does not become
        // current, so it does not mark the line.
        let stale = VerdictRecord {
            trust_score: Some(5),
            low_trust: true,
            ..verdict("k-stale", "compliant", "cmcc", 3_000)
        };
        s.apply(&[observation(ids[2], "o3", "l1", 50, stale)])
            .await
            .unwrap();
        assert!(!s.line("l1").await.unwrap().unwrap().low_trust);
        let filter = LineFilter {
            low_trust: Some(true),
            limit: 10,
            ..LineFilter::default()
        };
        assert!(s.lines(&filter).await.unwrap().is_empty());
        let filter = LineFilter {
            low_trust: Some(false),
            limit: 10,
            ..LineFilter::default()
        };
        assert_eq!(s.lines(&filter).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn identical_observations_collapse_with_counts_and_seen_times() {
    on_each_backend("dedupe", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 4).await;
        let v = || verdict("k1", "compliant", "cmcc", 9_000);
        // Three reports of one observation in one batch, out of time order,
        // then a fourth in the next batch.
        let summary = s
            .apply(&[
                observation(ids[0], "o1", "l1", 200, v()),
                observation(ids[1], "o1", "l1", 100, v()),
                observation(ids[2], "o1", "l1", 300, v()),
            ])
            .await
            .unwrap();
        assert_eq!(summary.observations_new, 1);
        assert_eq!(summary.observations_repeated, 2);
        assert_eq!(summary.verdicts_new, 1);
        assert_eq!(summary.lines_changed, 1);
        assert_eq!(summary.skipped, 0);
        let o = s.observation("o1").await.unwrap().unwrap();
        assert_eq!(o.count, 3);
        assert_eq!((o.first_seen_ms, o.last_seen_ms), (100, 300));
        assert_eq!(o.first_report_id, format!("rep-{}", ids[1]));
        assert_eq!(o.last_report_id, format!("rep-{}", ids[2]));
        assert_eq!(o.latest_verdict_key.as_deref(), Some("k1"));

        let summary = s
            .apply(&[observation(ids[3], "o1", "l1", 250, v())])
            .await
            .unwrap();
        assert_eq!(
            (summary.observations_new, summary.observations_repeated),
            (0, 1)
        );
        assert_eq!((summary.verdicts_new, summary.lines_changed), (0, 0));
        let o = s.observation("o1").await.unwrap().unwrap();
        assert_eq!(o.count, 4);
        assert_eq!((o.first_seen_ms, o.last_seen_ms), (100, 300));
        assert_eq!(o.last_report_id, format!("rep-{}", ids[2]));

        let line = s.line("l1").await.unwrap().unwrap();
        assert_eq!(line.reports, 4);
        assert_eq!((line.first_seen_ms, line.last_seen_ms), (100, 300));
        assert_eq!(line.observation_id, o.id);
        assert_eq!(Some(line.verdict_id), o.latest_verdict_id);
        assert_eq!(line.verdict, "compliant");
        assert_eq!(line.account, "acct-l1");
        assert_eq!(line.install_id, "inst-l1");
        assert_eq!(line.declared_carrier.as_deref(), Some("cmcc"));
        assert_eq!(line.egress_ip, o.facts.egress_ip);

        // Identical verdicts collapse: one verdict row, no history.
        assert_eq!(s.line_verdicts("l1").await.unwrap().len(), 1);
        assert!(s.line_history("l1").await.unwrap().is_empty());
        let counts = s.counts().await.unwrap();
        assert_eq!(
            (
                counts.observations,
                counts.verdicts,
                counts.lines,
                counts.processed
            ),
            (1, 1, 1, 4)
        );
    })
    .await;
}

#[tokio::test]
async fn a_changed_verdict_replaces_the_current_one_and_goes_to_history() {
    on_each_backend("verdict_change", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 3).await;
        s.apply(&[observation(
            ids[0],
            "o1",
            "l1",
            100,
            verdict("k1", "compliant", "cmcc", 1_000),
        )])
        .await
        .unwrap();
        let first = s.line("l1").await.unwrap().unwrap();
        assert_eq!(first.current_from_ms, 1_000);

        // New address data: the same observation is now judged otherwise.
        let summary = s
            .apply(&[observation(
                ids[1],
                "o1",
                "l1",
                200,
                verdict("k2", "non_compliant", "chinanet", 2_000),
            )])
            .await
            .unwrap();
        assert_eq!((summary.verdicts_new, summary.lines_changed), (1, 1));
        let line = s.line("l1").await.unwrap().unwrap();
        assert_eq!(line.verdict, "non_compliant");
        assert_eq!(line.actual_carrier.as_deref(), Some("chinanet"));
        assert_ne!(line.verdict_id, first.verdict_id);
        assert_eq!((line.current_from_ms, line.updated_at_ms), (2_000, 2_000));
        assert_eq!(line.reports, 2);

        let history = s.line_history("l1").await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].verdict_id, first.verdict_id);
        assert_eq!(history[0].verdict, "compliant");
        assert_eq!(history[0].actual_carrier.as_deref(), Some("cmcc"));
        assert_eq!(
            (history[0].current_from_ms, history[0].replaced_at_ms),
            (1_000, 2_000)
        );

        let verdicts = s.line_verdicts("l1").await.unwrap();
        let keys: Vec<&str> = verdicts
            .iter()
            .map(|v| v.record.verdict_key.as_str())
            .collect();
        assert_eq!(keys, ["k2", "k1"], "newest first");
        assert_eq!(verdicts[0].report_id, format!("rep-{}", ids[1]));
        assert_eq!(verdicts[0].observed_at_ms, 200);
        assert_eq!(
            verdicts[0].record.data_versions_json,
            "{\"ipplan\":\"2025-01\"}"
        );

        // Back to the first verdict: a new verdict row again (it differs
        // from the latest), and another history row.
        s.apply(&[observation(
            ids[2],
            "o1",
            "l1",
            300,
            verdict("k1", "compliant", "cmcc", 3_000),
        )])
        .await
        .unwrap();
        assert_eq!(s.line_verdicts("l1").await.unwrap().len(), 3);
        let history = s.line_history("l1").await.unwrap();
        let replaced: Vec<&str> = history.iter().map(|h| h.verdict.as_str()).collect();
        assert_eq!(replaced, ["non_compliant", "compliant"], "newest first");
        assert_eq!(s.observation("o1").await.unwrap().unwrap().count, 3);
    })
    .await;
}

#[tokio::test]
async fn an_older_observation_never_becomes_current() {
    on_each_backend("out_of_order", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 4).await;
        s.apply(&[observation(
            ids[0],
            "new-path",
            "l1",
            1_000,
            verdict("kx", "compliant", "cmcc", 10),
        )])
        .await
        .unwrap();
        let current = s.line("l1").await.unwrap().unwrap();

        // A second collector delivers an older report of another path late.
        let summary = s
            .apply(&[observation(
                ids[1],
                "old-path-x",
                "l1",
                500,
                verdict("ky", "proxy_suspected", "chinanet", 20),
            )])
            .await
            .unwrap();
        assert_eq!((summary.observations_new, summary.verdicts_new), (1, 1));
        assert_eq!(summary.lines_changed, 0);
        let line = s.line("l1").await.unwrap().unwrap();
        assert_eq!(line.observation_id, current.observation_id);
        assert_eq!(line.verdict_id, current.verdict_id);
        assert_eq!(line.verdict, "compliant");
        assert_eq!(line.reports, 2);
        assert_eq!((line.first_seen_ms, line.last_seen_ms), (500, 1_000));
        assert!(s.line_history("l1").await.unwrap().is_empty());
        assert_eq!(s.line_observations("l1").await.unwrap().len(), 2);

        // Within one batch too: the older one does not win because it is
        // applied later; a tie goes to the one applied later.
        s.apply(&[
            observation(
                ids[2],
                "old-path-x",
                "l1",
                800,
                verdict("ky", "proxy_suspected", "chinanet", 30),
            ),
            observation(
                ids[3],
                "old-path-x",
                "l1",
                1_000,
                verdict("ky", "proxy_suspected", "chinanet", 40),
            ),
        ])
        .await
        .unwrap();
        let line = s.line("l1").await.unwrap().unwrap();
        let old = s.observation("old-path-x").await.unwrap().unwrap();
        assert_eq!(
            line.observation_id, old.id,
            "the tie went to the later report"
        );
        assert_eq!(line.verdict, "proxy_suspected");
        assert_eq!(line.egress_ip, old.facts.egress_ip);
        assert_eq!(line.reports, 4);
        let history = s.line_history("l1").await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].verdict_id, current.verdict_id);
        assert_eq!(history[0].replaced_at_ms, 40);
    })
    .await;
}

#[tokio::test]
async fn a_newer_observation_in_the_same_batch_takes_over_the_line() {
    on_each_backend("same_batch_takeover", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 3).await;
        let summary = s
            .apply(&[
                observation(
                    ids[0],
                    "a",
                    "l1",
                    100,
                    verdict("ka", "compliant", "cmcc", 1),
                ),
                observation(
                    ids[1],
                    "b",
                    "l1",
                    200,
                    verdict("kb", "non_compliant", "cucc", 2),
                ),
                observation(
                    ids[2],
                    "a",
                    "l1",
                    150,
                    verdict("ka", "compliant", "cmcc", 3),
                ),
            ])
            .await
            .unwrap();
        assert_eq!(summary.observations_new, 2);
        assert_eq!(summary.verdicts_new, 2);
        let line = s.line("l1").await.unwrap().unwrap();
        let b = s.observation("b").await.unwrap().unwrap();
        assert_eq!(line.observation_id, b.id);
        assert_eq!(line.verdict, "non_compliant");
        assert_eq!(line.reports, 3);
        // "a" was current first, then replaced by "b" in the same batch.
        let history = s.line_history("l1").await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].verdict, "compliant");
        let a = s.observation("a").await.unwrap().unwrap();
        assert_eq!(Some(history[0].verdict_id), a.latest_verdict_id);
        assert_eq!(a.count, 2);
    })
    .await;
}

#[tokio::test]
async fn reprocessing_replaces_the_verdict_without_touching_counts() {
    on_each_backend("reprocess", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 2).await;
        let record = |raw, at, v| observation(raw, "o1", "l1", at, v);
        s.apply(&[
            record(ids[0], 100, verdict("k1", "compliant", "cmcc", 1_000)),
            record(ids[1], 200, verdict("k1", "compliant", "cmcc", 1_000)),
        ])
        .await
        .unwrap();
        let before_obs = s.observation("o1").await.unwrap().unwrap();
        let before_line = s.line("l1").await.unwrap().unwrap();

        // Without `reprocess` the same report is skipped.
        let summary = s
            .apply(&[record(
                ids[1],
                200,
                verdict("k2", "violating_ip", "cmcc", 2_000),
            )])
            .await
            .unwrap();
        assert_eq!(summary.skipped, 1);
        assert_eq!(s.line("l1").await.unwrap().unwrap(), before_line);

        // With it, the verdict is decided again.
        let summary = s
            .apply(&[reprocessed(record(
                ids[1],
                200,
                verdict("k2", "violating_ip", "cmcc", 2_000),
            ))])
            .await
            .unwrap();
        assert_eq!(summary.skipped, 0);
        assert_eq!((summary.verdicts_new, summary.lines_changed), (1, 1));
        let obs = s.observation("o1").await.unwrap().unwrap();
        assert_eq!(obs.count, before_obs.count);
        assert_eq!(
            (obs.first_seen_ms, obs.last_seen_ms),
            (before_obs.first_seen_ms, before_obs.last_seen_ms)
        );
        assert_eq!(obs.latest_verdict_key.as_deref(), Some("k2"));
        let line = s.line("l1").await.unwrap().unwrap();
        assert_eq!(line.verdict, "violating_ip");
        assert_eq!(line.reports, before_line.reports);
        assert_eq!(
            (line.first_seen_ms, line.last_seen_ms),
            (before_line.first_seen_ms, before_line.last_seen_ms)
        );
        let history = s.line_history("l1").await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].verdict_id, before_line.verdict_id);

        // Reprocessing with an unchanged verdict changes nothing.
        let summary = s
            .apply(&[reprocessed(record(
                ids[0],
                100,
                verdict("k2", "violating_ip", "cmcc", 3_000),
            ))])
            .await
            .unwrap();
        assert_eq!((summary.verdicts_new, summary.lines_changed), (0, 0));
        assert_eq!(s.line_history("l1").await.unwrap().len(), 1);
        assert_eq!(s.observation("o1").await.unwrap().unwrap().count, 2);
        let counts = s.counts().await.unwrap();
        assert_eq!((counts.processed, counts.verdicts), (2, 2));
    })
    .await;
}

#[tokio::test]
async fn applying_the_same_batch_twice_changes_nothing() {
    on_each_backend("apply_twice", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 4).await;
        let batch = [
            observation(
                ids[0],
                "o1",
                "l1",
                100,
                verdict("k1", "compliant", "cmcc", 1),
            ),
            observation(
                ids[1],
                "o2",
                "l2",
                100,
                verdict("k2", "compliant", "cmcc", 1),
            ),
            quarantine(ids[2], "[\"schema\"]", "unknown field"),
            observation(
                ids[3],
                "o1",
                "l1",
                300,
                verdict("k3", "non_compliant", "cucc", 2),
            ),
        ];
        let first = s.apply(&batch).await.unwrap();
        assert_eq!(first.skipped, 0);
        assert_eq!(first.quarantined, 1);
        let counts = s.counts().await.unwrap();
        let lines = s.lines(&LineFilter::default()).await.unwrap();
        let history = s.line_history("l1").await.unwrap();

        let second = s.apply(&batch).await.unwrap();
        assert_eq!(second.skipped, 4);
        assert_eq!(
            (
                second.quarantined,
                second.observations_new,
                second.verdicts_new,
                second.lines_changed
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(s.counts().await.unwrap(), counts);
        assert_eq!(s.lines(&LineFilter::default()).await.unwrap(), lines);
        assert_eq!(s.line_history("l1").await.unwrap(), history);

        // One report twice in one batch applies once.
        let more = stored_raws(s, 10, 1).await;
        let twice = [
            observation(
                more[0],
                "o1",
                "l1",
                400,
                verdict("k3", "non_compliant", "cucc", 3),
            ),
            observation(
                more[0],
                "o1",
                "l1",
                400,
                verdict("k3", "non_compliant", "cucc", 3),
            ),
        ];
        let summary = s.apply(&twice).await.unwrap();
        assert_eq!((summary.observations_repeated, summary.skipped), (1, 1));
        assert_eq!(s.observation("o1").await.unwrap().unwrap().count, 3);
    })
    .await;
}

#[tokio::test]
async fn concurrent_applies_do_not_lose_counts() {
    on_each_backend("concurrent_apply", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 40).await;
        let v = || verdict("k1", "compliant", "cmcc", 1);
        // Four applies at once, each folding ten reports into the same
        // observation and line.
        let tasks: Vec<_> = ids
            .chunks(10)
            .map(|chunk| {
                let store = s.clone();
                let batch: Vec<Processed> = chunk
                    .iter()
                    .map(|&id| observation(id, "o1", "l1", id, v()))
                    .collect();
                tokio::spawn(async move { store.apply(&batch).await.unwrap() })
            })
            .collect();
        let mut new = 0;
        for task in tasks {
            new += task.await.unwrap().observations_new;
        }
        assert_eq!(new, 1, "exactly one apply created the observation");
        assert_eq!(s.observation("o1").await.unwrap().unwrap().count, 40);
        assert_eq!(s.line("l1").await.unwrap().unwrap().reports, 40);
        assert_eq!(s.line_verdicts("l1").await.unwrap().len(), 1);
    })
    .await;
}

#[test]
fn the_store_can_be_shared_between_tasks() {
    fn shareable<T: Clone + std::fmt::Debug + Send + Sync + 'static>() {}
    shareable::<Store>();
}

#[tokio::test]
async fn results_for_unknown_reports_are_refused_and_nothing_is_written() {
    on_each_backend("unknown_raw", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 1).await;
        let error = s
            .apply(&[
                observation(
                    ids[0],
                    "o1",
                    "l1",
                    100,
                    verdict("k1", "compliant", "cmcc", 1),
                ),
                observation(
                    999_999,
                    "o1",
                    "l1",
                    100,
                    verdict("k1", "compliant", "cmcc", 1),
                ),
            ])
            .await
            .unwrap_err();
        assert!(matches!(error, Error::StoreInput(_)), "{error}");
        assert!(error.to_string().contains("999999"), "{error}");
        let counts = s.counts().await.unwrap();
        assert_eq!(
            (counts.pending, counts.observations, counts.lines),
            (1, 0, 0)
        );
        assert_eq!(s.apply(&[]).await.unwrap(), ApplySummary::default());
    })
    .await;
}

#[tokio::test]
async fn quarantined_reports_keep_their_reasons() {
    on_each_backend("quarantine", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 3).await;
        let summary = s
            .apply(&[
                quarantine(
                    ids[0],
                    "[\"missing install_id\"]",
                    "the report names no installation",
                ),
                quarantine(ids[1], "[\"bad ip\"]", "the egress address is not public"),
            ])
            .await
            .unwrap();
        assert_eq!(summary.quarantined, 2);
        let rows = s.quarantined(10, 0).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].raw_id, ids[1], "newest first");
        assert_eq!(rows[1].reasons_json, "[\"missing install_id\"]");
        assert_eq!(rows[1].summary, "the report names no installation");
        assert_eq!(rows[1].report_id, Some(format!("rep-{}", ids[0])));
        assert_eq!(rows[1].install_id, None);
        assert_eq!(
            (rows[1].collector.as_str(), rows[1].node_id.as_str()),
            ("dmz-1", "node-a")
        );
        assert_eq!(rows[1].seq, 1);
        assert_eq!(rows[1].quarantined_at_ms, 7_000);
        let page = s.quarantined(1, 1).await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].raw_id, ids[0]);

        // Re-applied without reprocess: skipped; with it: reasons replaced.
        let summary = s
            .apply(&[quarantine(ids[0], "[\"x\"]", "x")])
            .await
            .unwrap();
        assert_eq!(summary.skipped, 1);
        s.apply(&[reprocessed(quarantine(
            ids[0],
            "[\"stricter rule\"]",
            "new rule",
        ))])
        .await
        .unwrap();
        let rows = s.quarantined(10, 0).await.unwrap();
        assert_eq!(rows.len(), 2);
        let row = rows.iter().find(|r| r.raw_id == ids[0]).unwrap();
        assert_eq!(
            (row.reasons_json.as_str(), row.summary.as_str()),
            ("[\"stricter rule\"]", "new rule")
        );

        let highest_id = rows.iter().map(|r| r.id).max().unwrap();

        // A quarantined report that passes on reprocess leaves quarantine
        // and counts as an observation for the first time.
        let summary = s
            .apply(&[reprocessed(observation(
                ids[1],
                "o1",
                "l1",
                100,
                verdict("k1", "compliant", "cmcc", 1),
            ))])
            .await
            .unwrap();
        assert_eq!(summary.observations_new, 1);
        let rows = s.quarantined(10, 0).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(s.line("l1").await.unwrap().unwrap().reports, 1);
        let counts = s.counts().await.unwrap();
        assert_eq!(
            (counts.pending, counts.processed, counts.quarantined),
            (1, 1, 1)
        );

        // A processed report that fails on reprocess goes to quarantine.
        s.apply(&[reprocessed(quarantine(
            ids[1],
            "[\"now invalid\"]",
            "invalid",
        ))])
        .await
        .unwrap();
        let counts = s.counts().await.unwrap();
        assert_eq!((counts.processed, counts.quarantined), (0, 2));
        assert!(s.processed_raw(None, 0, 10).await.unwrap().is_empty());
        // Its quarantine entry is a new one: an id once given is never
        // given again (pages and links name entries by it), even when the
        // entry that had it, the newest, has gone.
        let rows = s.quarantined(10, 0).await.unwrap();
        let back = rows.iter().find(|r| r.raw_id == ids[1]).unwrap();
        assert!(back.id > highest_id, "{} reused", back.id);
    })
    .await;
}

/// Five lines: (line, province, city, declared carrier, actual carrier,
/// verdict, last seen).
const LINE_SPECS: [(&str, &str, &str, &str, &str, &str, i64); 5] = [
    ("l1", "CN-GD", "4401", "cmcc", "cmcc", "compliant", 100),
    (
        "l2",
        "CN-GD",
        "4403",
        "cmcc",
        "chinanet",
        "non_compliant",
        200,
    ),
    ("l3", "CN-BJ", "1101", "cucc", "cucc", "compliant", 300),
    (
        "l4",
        "CN-GD",
        "4401",
        "cucc",
        "chinanet",
        "non_compliant",
        400,
    ),
    (
        "l5",
        "CN-SH",
        "3101",
        "cmcc",
        "cmcc",
        "proxy_suspected",
        500,
    ),
];

/// Filters over [`LINE_SPECS`] and the lines each must return, in order.
fn line_filter_cases() -> Vec<(LineFilter, Vec<&'static str>)> {
    let all = LineFilter::default;
    let text = |s: &str| Some(s.to_owned());
    vec![
        (all(), vec!["l5", "l4", "l3", "l2", "l1"]),
        (
            LineFilter {
                province: text("CN-GD"),
                ..all()
            },
            vec!["l4", "l2", "l1"],
        ),
        (
            LineFilter {
                province: text("CN-GD"),
                city: text("4401"),
                ..all()
            },
            vec!["l4", "l1"],
        ),
        (
            LineFilter {
                declared_carrier: text("cmcc"),
                ..all()
            },
            vec!["l5", "l2", "l1"],
        ),
        (
            LineFilter {
                actual_carrier: text("chinanet"),
                ..all()
            },
            vec!["l4", "l2"],
        ),
        (
            LineFilter {
                verdict: text("non_compliant"),
                declared_carrier: text("cmcc"),
                ..all()
            },
            vec!["l2"],
        ),
        (
            LineFilter {
                seen_since_ms: Some(200),
                seen_until_ms: Some(400),
                ..all()
            },
            vec!["l4", "l3", "l2"],
        ),
        (
            LineFilter {
                limit: 2,
                offset: 1,
                ..all()
            },
            vec!["l4", "l3"],
        ),
        (
            LineFilter {
                limit: 2,
                offset: 4,
                ..all()
            },
            vec!["l1"],
        ),
        (
            LineFilter {
                verdict: text("indeterminate"),
                ..all()
            },
            vec![],
        ),
    ]
}

/// Stores the lines of [`LINE_SPECS`].
async fn store_spec_lines(s: &Store) {
    let ids = stored_raws(s, 1, 5).await;
    let batch: Vec<Processed> = LINE_SPECS
        .iter()
        .zip(&ids)
        .map(|(&(line, province, city, declared, actual, v, at), &raw)| {
            let mut record = observation(raw, line, line, at, verdict(line, v, actual, at));
            if let Processed::Observation(o) = &mut record {
                o.facts.declared_province = Some(province.to_owned());
                o.facts.declared_city = Some(city.to_owned());
                o.facts.declared_carrier = Some(declared.to_owned());
            }
            record
        })
        .collect();
    s.apply(&batch).await.unwrap();
}

/// Every case of [`line_filter_cases`] returns its lines in order.
async fn assert_line_filters(s: &Store) {
    for (filter, expected) in line_filter_cases() {
        let got: Vec<String> = s
            .lines(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.line_key)
            .collect();
        assert_eq!(got, expected, "{filter:?}");
    }
}

#[tokio::test]
async fn lines_are_filtered_and_paged_newest_first() {
    on_each_backend("line_filters", |ctx| async move {
        let s = &ctx.store;
        store_spec_lines(s).await;
        assert_line_filters(s).await;
        assert!(s.line("nope").await.unwrap().is_none());
    })
    .await;
}

/// The migrations' versions, in order, from the files the binary embeds
/// (the numbering may have a gap while a migration is being written).
fn migration_versions() -> Vec<i64> {
    let mut versions: Vec<i64> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                name.split_once('_')?.0.parse::<i64>().ok()
            })
            .collect();
    versions.sort_unstable();
    versions
}

/// How to read, and to take back to schema 7, one backend's database.
struct SchemaSql {
    /// The lines table's indexes, by name.
    indexes: &'static str,
    /// How many of PostgreSQL's pair statistics exist (0 on SQLite).
    statistics: &'static str,
    /// Undoes migrations 0013, 0012, 0010, 0009 and 0008 on a database with data,
    /// so that it is what a store of schema 7 was: collector names and
    /// cached addresses in the database's collation, no counted report ids
    /// and only two outcome states, PostgreSQL's two carrier indexes back in
    /// place of the merged one and no pair statistics. On SQLite 0013, 0009 and
    /// 0008 are no-ops, and the outcomes table 0010 built again keeps its
    /// third state (0010 builds it again, whatever its states); the
    /// cursors lose 0011's store column and 0016's caught-up time, and
    /// 0012's table of installations' keys and 0014's of the back office's
    /// secrets go. SQLite's quarantine table stays as 0015 built it (0015
    /// builds it again, whatever it was).
    back_to_7: &'static str,
}

const PG_SCHEMA: SchemaSql = SchemaSql {
    indexes: "SELECT indexname::text FROM pg_indexes WHERE tablename = 'lines' ORDER BY indexname",
    statistics: "SELECT count(*) FROM pg_statistic_ext WHERE stxname = 'lines_verdict_actual'",
    back_to_7: "
        ALTER TABLE pull_cursors ALTER COLUMN collector TYPE TEXT COLLATE \"default\";
        ALTER TABLE raw_reports ALTER COLUMN collector TYPE TEXT COLLATE \"default\";
        ALTER TABLE raw_outcomes ALTER COLUMN collector TYPE TEXT COLLATE \"default\";
        ALTER TABLE resolver_cache ALTER COLUMN ip TYPE TEXT COLLATE \"default\";
        ALTER TABLE pull_cursors DROP COLUMN store_id;
        ALTER TABLE pull_cursors DROP COLUMN caught_up_at;
        DROP TABLE install_keys;
        DROP TABLE contest_rejudge;
        DROP TABLE backoffice_secrets;
        DROP TABLE counted_reports;
        ALTER TABLE raw_outcomes DROP CONSTRAINT raw_outcomes_state_check;
        ALTER TABLE raw_outcomes ADD CONSTRAINT raw_outcomes_state_check
            CHECK (state IN ('processed', 'quarantined'));
        DROP STATISTICS lines_verdict_actual;
        CREATE INDEX lines_actual_carrier_seen ON lines (actual_carrier, last_seen, line_key);
        CREATE INDEX lines_carriers_seen
            ON lines (declared_carrier, actual_carrier, last_seen, line_key);
        DROP INDEX lines_actual_carriers_seen;
        DELETE FROM _sqlx_migrations WHERE version > 7;",
};

const SQLITE_SCHEMA: SchemaSql = SchemaSql {
    indexes: "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'lines' \
              ORDER BY name",
    statistics: "SELECT 0",
    back_to_7: "ALTER TABLE pull_cursors DROP COLUMN store_id; \
                ALTER TABLE pull_cursors DROP COLUMN caught_up_at; DROP TABLE install_keys; \
                DROP TABLE contest_rejudge; DROP TABLE backoffice_secrets; DROP TABLE counted_reports; DELETE FROM _sqlx_migrations WHERE version > 7;",
};

/// Applied migrations, the lines table's indexes and the statistics count,
/// read over a connection of its own; with `back_to_7`, first takes the
/// database back to schema 7.
async fn schema_of<C>(url: &str, sql: &SchemaSql, back_to_7: bool) -> (Vec<i64>, Vec<String>, i64)
where
    C: sqlx::Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    i64: sqlx::Type<C::Database> + for<'r> sqlx::Decode<'r, C::Database>,
    String: sqlx::Type<C::Database> + for<'r> sqlx::Decode<'r, C::Database>,
    <C::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<C::Database>,
    (i64,): for<'r> sqlx::FromRow<'r, <C::Database as sqlx::Database>::Row>,
    (String,): for<'r> sqlx::FromRow<'r, <C::Database as sqlx::Database>::Row>,
{
    let mut conn = C::connect(url).await.unwrap();
    if back_to_7 {
        sqlx::raw_sql(sql.back_to_7)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let versions =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let indexes = sqlx::query_scalar(sql.indexes)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let statistics = sqlx::query_scalar(sql.statistics)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    (versions, indexes, statistics)
}

#[tokio::test]
async fn a_store_of_an_older_schema_is_migrated_with_its_data() {
    on_each_backend("older_schema", |ctx| async move {
        store_spec_lines(&ctx.store).await;
        let postgres = ctx.store.backend_name() == "postgres";
        let schema = async |back_to_7: bool| {
            if postgres {
                schema_of::<sqlx::PgConnection>(&ctx.url, &PG_SCHEMA, back_to_7).await
            } else {
                schema_of::<sqlx::SqliteConnection>(&ctx.url, &SQLITE_SCHEMA, back_to_7).await
            }
        };
        let (versions, indexes, stats) = schema(false).await;
        assert_eq!(versions, migration_versions());

        // Back to schema 7, data and all, by another connection.
        let (old_versions, old_indexes, old_stats) = schema(true).await;
        assert_eq!(old_versions, (1..=7).collect::<Vec<_>>());
        assert_eq!(old_stats, 0);
        if postgres {
            assert!(old_indexes.iter().any(|i| i == "lines_carriers_seen"));
            assert_ne!(old_indexes, indexes);
        }

        // Opening it, as the binary does, brings it to the newest schema:
        // the same versions, indexes and statistics as a new store's, and
        // every line still found by every filter.
        let upgraded = Store::open(&ctx.url).await.unwrap();
        assert_eq!(schema(false).await, (versions, indexes, stats));
        if postgres {
            assert_eq!(stats, 1);
        }
        assert_line_filters(&upgraded).await;
        assert_eq!(upgraded.counts().await.unwrap().raw, 5);
        // The reports counted before the upgrade count once after it: each
        // report id (as the puller read it) is claimed by its raw report,
        // and a copy of one pulled from another collector is a duplicate.
        let copy = stored_from(&upgraded, "dmz-2", "node-b", 1, b"{}").await;
        let summary = upgraded
            .apply(&[copy_of(
                "r-1",
                copy,
                "l1",
                "l1",
                900,
                verdict("x", "compliant", "cmcc", 9),
            )])
            .await
            .unwrap();
        assert_eq!((summary.duplicates, summary.observations_repeated), (1, 0));
        assert_eq!(upgraded.line("l1").await.unwrap().unwrap().reports, 1);
        upgraded.close().await;
    })
    .await;
}

#[tokio::test]
async fn cached_answers_expire() {
    on_each_backend("resolver_cache", |ctx| async move {
        let s = &ctx.store;
        let entry = |ip: &str, facts: Option<&str>, expires: i64| CachedAnswer {
            source: "ipapi".into(),
            ip: ip.into(),
            facts_json: facts.map(str::to_owned),
            fetched_at_ms: 1_000,
            expires_at_ms: expires,
        };
        s.cache_put(&[
            entry("198.51.100.1", Some("{\"carrier\":\"cmcc\"}"), 5_000),
            entry("198.51.100.2", None, 9_000),
            entry("198.51.100.3", Some("{}"), 2_000),
            CachedAnswer {
                source: "other".into(),
                ..entry("198.51.100.1", None, 9_000)
            },
        ])
        .await
        .unwrap();
        let ips = |at| {
            let s = s.clone();
            async move {
                s.cache_load("ipapi", at)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.ip)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            ips(1_500).await,
            ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        );
        assert_eq!(ips(2_000).await, ["198.51.100.1", "198.51.100.2"]);
        assert_eq!(ips(5_000).await, ["198.51.100.2"]);
        let loaded = s.cache_load("ipapi", 0).await.unwrap();
        assert_eq!(
            loaded[0],
            entry("198.51.100.1", Some("{\"carrier\":\"cmcc\"}"), 5_000)
        );
        assert_eq!(loaded[1].facts_json, None, "knows nothing is kept as such");

        // Upsert: a fresh answer replaces the old one; twice in one call,
        // the later wins.
        s.cache_put(&[
            entry("198.51.100.1", Some("{\"v\":1}"), 20_000),
            entry("198.51.100.1", Some("{\"v\":2}"), 30_000),
        ])
        .await
        .unwrap();
        let loaded = s.cache_load("ipapi", 10_000).await.unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].facts_json.as_deref(), Some("{\"v\":2}"));
        assert_eq!(loaded[0].expires_at_ms, 30_000);
        assert_eq!(s.cache_load("other", 0).await.unwrap().len(), 1);
        s.cache_put(&[]).await.unwrap();

        // Expired answers are deleted, whatever their source.
        assert_eq!(s.cache_purge_expired(9_000).await.unwrap(), 3);
        assert!(s.cache_load("other", 0).await.unwrap().is_empty());
        assert_eq!(s.cache_load("ipapi", 0).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn chinese_text_round_trips() {
    on_each_backend("unicode", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 2).await;
        let mut v = verdict("键-1", "不合规", "中国电信", 1);
        v.reasons_json = "[\"申报移动，实际电信（城中村）\"]".into();
        v.actual_city = Some("广州市".into());
        let mut record = observation(ids[0], "观测-1", "线路-广州-001", 100, v);
        if let Processed::Observation(o) = &mut record {
            o.facts.account = "宽带账号-张三".into();
            o.facts.declared_city = Some("广州市".into());
            o.facts.declared_carrier = Some("中国移动".into());
        }
        s.apply(&[
            record,
            quarantine(ids[1], "[\"缺少安装标识\"]", "报告缺少安装标识，无法处理"),
        ])
        .await
        .unwrap();
        let line = s.line("线路-广州-001").await.unwrap().unwrap();
        assert_eq!(line.account, "宽带账号-张三");
        assert_eq!(line.declared_city.as_deref(), Some("广州市"));
        assert_eq!(line.actual_carrier.as_deref(), Some("中国电信"));
        assert_eq!(line.verdict, "不合规");
        let filtered = s
            .lines(&LineFilter {
                declared_carrier: Some("中国移动".into()),
                ..LineFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(filtered.len(), 1);
        let verdicts = s.line_verdicts("线路-广州-001").await.unwrap();
        assert_eq!(
            verdicts[0].record.reasons_json,
            "[\"申报移动，实际电信（城中村）\"]"
        );
        assert_eq!(verdicts[0].record.verdict_key, "键-1");
        assert!(s.observation("观测-1").await.unwrap().is_some());
        let q = s.quarantined(10, 0).await.unwrap();
        assert_eq!(q[0].summary, "报告缺少安装标识，无法处理");
        assert_eq!(q[0].reasons_json, "[\"缺少安装标识\"]");
    })
    .await;
}

#[tokio::test]
async fn row_structs_serialize_for_the_command_line() {
    on_each_backend("serialize", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 1).await;
        s.apply(&[observation(
            ids[0],
            "o1",
            "l1",
            100,
            verdict("k1", "compliant", "cmcc", 1),
        )])
        .await
        .unwrap();
        let line = s.line("l1").await.unwrap().unwrap();
        let json = serde_json::to_value(&line).unwrap();
        assert_eq!(json["line_key"], "l1");
        assert_eq!(json["reports"], 1);
        let counts = serde_json::to_value(s.counts().await.unwrap()).unwrap();
        assert_eq!(counts["lines"], 1);
    })
    .await;
}

// ---- one report, one count -------------------------------------------------

/// `observation` with the report id `report_id`.
fn copy_of(
    report_id: &str,
    raw_id: i64,
    obs: &str,
    line: &str,
    at: i64,
    v: VerdictRecord,
) -> Processed {
    let mut record = observation(raw_id, obs, line, at, v);
    if let Processed::Observation(o) = &mut record {
        report_id.clone_into(&mut o.report_id);
    }
    record
}

/// Collector names and cached addresses come back in byte order on
/// PostgreSQL whatever the database's collation (migration 0013), as they
/// do on SQLite: the collector named when another one already pulls a node
/// (`NODE_TAKEN`) and the resolver cache as loaded (`CACHE_LOAD`). The
/// database is made with a linguistic (ICU root) collation, under which "a"
/// sorts before "B" and `1::1` before `10::1`, the other way round in
/// bytes. (The cursors list is put in byte order in Rust already.)
#[tokio::test]
async fn collectors_and_cached_addresses_are_in_byte_order_under_any_collation() {
    let body = |store: Store| async move {
        let s = &store;
        for (i, collector) in ["a", "_x", "B"].into_iter().enumerate() {
            stored_from(s, collector, &format!("node-{i}"), 1, b"{}").await;
        }
        let cursors: Vec<String> = s
            .cursors()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.collector)
            .collect();
        assert_eq!(cursors, ["B", "_x", "a"]);

        let entry = |ip: &str| CachedAnswer {
            source: "ipapi".into(),
            ip: ip.into(),
            facts_json: None,
            fetched_at_ms: 1_000,
            expires_at_ms: 9_000,
        };
        s.cache_put(&[entry("1::1"), entry("10::1"), entry("2001:db8::a")])
            .await
            .unwrap();
        let ips: Vec<String> = s
            .cache_load("ipapi", 2_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.ip)
            .collect();
        assert_eq!(ips, ["10::1", "1::1", "2001:db8::a"]);
        s.close().await;
    };

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("store.db").display());
    run_isolated(body(Store::open(&url).await.unwrap()))
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));

    on_scratch_postgres("byte_order", |pg| async move {
        // The scratch database again, in a linguistic collation.
        let mut admin = sqlx::PgConnection::connect(&pg.admin_url).await.unwrap();
        for sql in [
            format!("DROP DATABASE {}", pg.name),
            format!(
                "CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und'",
                pg.name
            ),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        admin.close().await.unwrap();
        let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
        let linguistic: bool = sqlx::query_scalar("SELECT 'a' < 'B' AND '1::1' < '10::1'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        assert!(
            linguistic,
            "the database's collation is not a linguistic one"
        );

        body(Store::open(&pg.url).await.unwrap()).await;

        // A collector pulling a node two others already answer as is told
        // the first of them in byte order.
        let store = Store::open(&pg.url).await.unwrap();
        let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
        sqlx::query("UPDATE pull_cursors SET node_id = 'shared' WHERE collector IN ('a', 'B')")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let reports = [report(1, b"{}")];
        let e = store
            .commit_pull(&PullBatch {
                collector: "c",
                node_id: "shared",
                reports: &reports,
                next_after: 1,
                pulled_at_ms: 1_000,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::NodeShared { other, .. } if other == "B"),
            "{e:?}"
        );
        store.close().await;
    })
    .await;
}

/// Stores one raw report pulled from collector `collector` (node `node`,
/// sequence number `seq`); returns its id.
async fn stored_from(s: &Store, collector: &str, node: &str, seq: u64, body: &[u8]) -> i64 {
    let reports = [report(seq, body)];
    let commit = s
        .commit_pull(&PullBatch {
            collector,
            node_id: node,
            reports: &reports,
            next_after: seq,
            pulled_at_ms: Utc::now().timestamp_millis(),
        })
        .await
        .unwrap();
    assert_eq!(commit.inserted, 1);
    s.pending_raw(0, 100_000)
        .await
        .unwrap()
        .iter()
        .find(|r| r.node_id == node && r.seq == seq)
        .unwrap()
        .id
}

/// Every raw report as (collector, node, state), in id order, read over a
/// connection of its own.
async fn raw_states(url: &str) -> Vec<(String, String, String)> {
    const SQL: &str = "SELECT r.collector, r.node_id, COALESCE(o.state, 'pending') \
         FROM raw_reports r LEFT JOIN raw_outcomes o ON o.id = r.id ORDER BY r.id";
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let rows = sqlx::query_as(SQL).fetch_all(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        rows
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        let rows = sqlx::query_as(SQL).fetch_all(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        rows
    }
}

/// The state of every raw report, in id order.
async fn state_names(url: &str) -> Vec<String> {
    let states = raw_states(url).await;
    states.into_iter().map(|(_, _, state)| state).collect()
}

/// The pipeline over the demo's catalogs and address data, on one thread.
fn demo_pipeline() -> Pipeline {
    let catalog = Arc::new(Catalog::embedded().unwrap());
    let chain = Arc::new(lineprobe_sync::demo_chain(&catalog).unwrap());
    let classifier = Classifier::new(&ClassifierConfig::default()).unwrap();
    Pipeline::new(catalog, chain, classifier).with_workers(1)
}

/// A demo report as the receiver `node` stored it: its envelope (number
/// `seq`, received at `at`) added to the same report the probe sent.
fn as_received(
    report: &Report,
    egress: IpAddr,
    node: &str,
    seq: u64,
    at: DateTime<Utc>,
) -> Vec<u8> {
    let mut report = report.clone();
    report.envelope = Some(ReceiverEnvelope {
        received_at: at,
        peer_ip: egress,
        peer_port: Some(40_000),
        path: "/v1/reports".to_owned(),
        headers: EnvelopeHeaders::default(),
        tls: None,
        node_id: node.to_owned(),
        seq,
        trust: None,
    });
    report.to_json().unwrap()
}

/// Two of the demo's compliant lines (with their egress), made at `now`.
fn two_compliant_cases(now: DateTime<Utc>) -> Vec<lineprobe_sync::DemoCase> {
    let cases: Vec<_> = lineprobe_sync::demo_cases(now.fixed_offset())
        .unwrap()
        .into_iter()
        .filter(|c| c.expect == "compliant" && c.egress.is_some())
        .take(2)
        .collect();
    assert_eq!(cases.len(), 2);
    cases
}

/// A collector whose clock runs ahead (or that lies) says it received a
/// report after the pull that brought it: quarantined, with the reason, so
/// that it cannot stay its line's newest observation until that time
/// comes. A few minutes' difference between two servers' clocks is not.
#[tokio::test]
async fn a_report_received_after_its_pull_is_quarantined() {
    on_each_backend("received_in_future", |ctx| async move {
        let s = &ctx.store;
        let pipeline = demo_pipeline();
        let now = Utc::now();
        let cases = two_compliant_cases(now);
        let ahead = |case: &lineprobe_sync::DemoCase, seq, by| {
            as_received(&case.report, case.egress.unwrap(), "n1", seq, now + by)
        };
        stored_from(s, "c1", "n1", 1, &ahead(&cases[0], 1, TimeDelta::days(400))).await;
        stored_from(
            s,
            "c1",
            "n1",
            2,
            &ahead(&cases[1], 2, TimeDelta::minutes(5)),
        )
        .await;
        let run = pipeline.run_pending(s, 100, |_| {}).await.unwrap();
        assert_eq!(
            (run.applied.quarantined, run.applied.observations_new),
            (1, 1),
            "{run:?}"
        );
        let quarantined = s.quarantined(10, 0).await.unwrap();
        assert_eq!(quarantined.len(), 1);
        let q = &quarantined[0];
        assert_eq!(
            q.report_id.as_deref(),
            Some(cases[0].report.report_id.to_string().as_str())
        );
        assert!(
            q.reasons_json.contains("\"received_in_future\""),
            "{}",
            q.reasons_json
        );
        assert!(q.summary.contains("envelope.received_at"), "{}", q.summary);
    })
    .await;
}

/// The probe timed out on collector node A, which had stored the report,
/// and sent it again to node B: both stored it, and the puller pulled it
/// from both. Both raw reports are kept as received, but the report counts
/// once — one observation count, one line report, one verdict — and the
/// second copy is marked a duplicate; in one batch and in two.
#[tokio::test]
async fn a_report_through_two_collectors_counts_once() {
    on_each_backend("report_twice", |ctx| async move {
        let s = &ctx.store;
        let pipeline = demo_pipeline();
        let now = Utc::now();
        let cases = two_compliant_cases(now);
        // The first case's copies are applied in one batch, the second's
        // in two (a batch of one report).
        for (i, (case, batch)) in cases.iter().zip([100, 1]).enumerate() {
            let seq = u64::try_from(i).unwrap() + 1;
            let egress = case.egress.unwrap();
            let first = as_received(&case.report, egress, "n1", seq, now);
            let again = as_received(
                &case.report,
                egress,
                "n2",
                seq,
                now + chrono::Duration::seconds(20),
            );
            let a = stored_from(s, "c1", "n1", seq, &first).await;
            let b = stored_from(s, "c2", "n2", seq, &again).await;
            assert!(a < b);
            let run = pipeline.run_pending(s, batch, |_| {}).await.unwrap();
            assert_eq!(run.read, 2, "batch of {batch}");
            assert_eq!(run.applied.observations_new, 1, "batch of {batch}");
            assert_eq!(run.applied.observations_repeated, 0, "batch of {batch}");
            assert_eq!(run.applied.duplicates, 1, "batch of {batch}");
            assert_eq!(run.applied.verdicts_new, 1, "batch of {batch}");

            let account = case.report.account.trim();
            let line_key = lineprobe_sync::line_key(account, case.report.install_id.as_str());
            let line = s.line(&line_key).await.unwrap().unwrap();
            assert_eq!(line.reports, 1, "batch of {batch}");
            assert_eq!(line.verdict, "compliant");
            let observations = s.line_observations(&line_key).await.unwrap();
            assert_eq!(observations.len(), 1, "batch of {batch}");
            let o = &observations[0];
            assert_eq!(o.count, 1, "batch of {batch}");
            assert_eq!(o.first_seen_ms, now.timestamp_millis());
            assert_eq!(o.last_seen_ms, now.timestamp_millis());
            assert_eq!(o.first_report_id, case.report.report_id.to_string());
            assert_eq!(s.line_verdicts(&line_key).await.unwrap().len(), 1);
            assert!(s.line_history(&line_key).await.unwrap().is_empty());
        }
        // Nothing is lost: every copy is stored as received; the second of
        // each is decided as a duplicate of the first.
        let states = raw_states(&ctx.url).await;
        let expected = |c: &str, n: &str, st: &str| (c.to_owned(), n.to_owned(), st.to_owned());
        assert_eq!(
            states,
            [
                expected("c1", "n1", "processed"),
                expected("c2", "n2", "duplicate"),
                expected("c1", "n1", "processed"),
                expected("c2", "n2", "duplicate"),
            ]
        );
        let counts = s.counts().await.unwrap();
        assert_eq!((counts.raw, counts.pending, counts.processed), (4, 0, 2));
        assert_eq!((counts.duplicates, counts.quarantined), (2, 0));
        assert_eq!(
            (counts.observations, counts.verdicts, counts.lines),
            (2, 2, 2)
        );

        // Reprocessing re-decides the originals only; it counts nothing again.
        let truth = async || {
            let lines = s.lines(&LineFilter::default()).await.unwrap();
            lines
                .into_iter()
                .map(|l| (l.line_key, l.reports, l.observation_id, l.verdict_id))
                .collect::<Vec<_>>()
        };
        let lines = truth().await;
        let run = pipeline.reprocess(s, None, 100, |_| {}).await.unwrap();
        assert_eq!(run.read, 2);
        assert_eq!(run.applied.skipped, 0);
        assert_eq!(truth().await, lines);
        assert_eq!(raw_states(&ctx.url).await, states);
        assert_eq!(s.counts().await.unwrap(), counts);
    })
    .await;
}

/// The store's rule behind the pipeline's: an observation record of a
/// report id already counted from another raw report is a duplicate,
/// whether the first copy was applied in the same batch or an earlier one;
/// and re-deciding the copy that counted is not blocked by the duplicate.
#[tokio::test]
async fn a_report_id_counts_once_in_one_batch_and_across_batches() {
    on_each_backend("report_id_once", |ctx| async move {
        let s = &ctx.store;
        let raw = |collector, node, seq| {
            let body = format!("{{\"copy\":\"{collector}\",\"seq\":{seq}}}");
            async move { stored_from(s, collector, node, seq, body.as_bytes()).await }
        };
        let (a1, b1) = (raw("c1", "n1", 1).await, raw("c2", "n2", 1).await);
        let (a2, b2) = (raw("c1", "n1", 2).await, raw("c2", "n2", 2).await);
        let v = |key: &str, at| verdict(key, "compliant", "cmcc", at);

        // Both copies of report R1 in one batch; the second was received
        // later by its node, with a verdict of its own.
        let summary = s
            .apply(&[
                copy_of("R1", a1, "o1", "l1", 100, v("k1", 1_000)),
                copy_of("R1", b1, "o1", "l1", 130, v("k1-b", 1_000)),
            ])
            .await
            .unwrap();
        assert_eq!(
            (summary.observations_new, summary.observations_repeated),
            (1, 0)
        );
        assert_eq!(
            (summary.duplicates, summary.verdicts_new, summary.skipped),
            (1, 1, 0)
        );
        // Report R2 of the same line: its first copy in one batch, its
        // second copy in the next.
        s.apply(&[copy_of("R2", a2, "o1", "l1", 200, v("k1", 2_000))])
            .await
            .unwrap();
        let summary = s
            .apply(&[copy_of("R2", b2, "o1", "l1", 230, v("k2", 2_000))])
            .await
            .unwrap();
        assert_eq!(
            (
                summary.observations_new,
                summary.observations_repeated,
                summary.duplicates,
                summary.verdicts_new,
                summary.lines_changed
            ),
            (0, 0, 1, 0, 0)
        );

        let o = s.observation("o1").await.unwrap().unwrap();
        assert_eq!(o.count, 2);
        assert_eq!((o.first_seen_ms, o.last_seen_ms), (100, 200));
        assert_eq!(
            (o.first_report_id.as_str(), o.last_report_id.as_str()),
            ("R1", "R2")
        );
        assert_eq!(o.latest_verdict_key.as_deref(), Some("k1"));
        let line = s.line("l1").await.unwrap().unwrap();
        assert_eq!(line.reports, 2);
        assert_eq!((line.first_seen_ms, line.last_seen_ms), (100, 200));
        assert_eq!(line.verdict_id, o.latest_verdict_id.unwrap());
        assert_eq!(s.line_verdicts("l1").await.unwrap().len(), 1);
        let states = state_names(&ctx.url).await;
        assert_eq!(states, ["processed", "duplicate", "processed", "duplicate"]);
        let counts = s.counts().await.unwrap();
        assert_eq!(
            (counts.processed, counts.duplicates, counts.pending),
            (2, 2, 0)
        );

        // Applying a duplicate again is skipped like any decided report.
        let summary = s
            .apply(&[copy_of("R2", b2, "o1", "l1", 230, v("k2", 3_000))])
            .await
            .unwrap();
        assert_eq!(summary.skipped, 1);
        // Reprocessing lists the copies that counted, and re-deciding them
        // changes their verdict without counting them again.
        let listed: Vec<i64> = s
            .processed_raw(None, 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, [a1, a2]);
        let summary = s
            .apply(&[
                reprocessed(copy_of("R1", a1, "o1", "l1", 100, v("k3", 4_000))),
                reprocessed(copy_of("R2", a2, "o1", "l1", 200, v("k3", 4_000))),
            ])
            .await
            .unwrap();
        // The older report's new verdict is history; the newest report's is
        // stored as its own, as in two batches (see
        // a_late_and_a_newer_report_in_one_batch_make_the_newer_ones_verdict_current).
        assert_eq!(
            (summary.verdicts_new, summary.lines_changed, summary.skipped),
            (2, 1, 0)
        );
        let o = s.observation("o1").await.unwrap().unwrap();
        assert_eq!((o.count, o.latest_verdict_key.as_deref()), (2, Some("k3")));
        let line = s.line("l1").await.unwrap().unwrap();
        assert_eq!(
            (line.reports, line.verdict_id),
            (2, o.latest_verdict_id.unwrap())
        );
        assert_eq!(state_names(&ctx.url).await, states);
    })
    .await;
}

// ---- the newest report is current ------------------------------------------

/// A report the probe spooled while offline arrives after a newer report
/// of the same observation (the same line, path and declarations; its
/// verdict differs only in what the observation key leaves out, such as
/// the source's trust). Its verdict is kept, as history; the line keeps the
/// newer report's verdict — in a later batch and in the same one.
#[tokio::test]
async fn an_older_report_of_the_current_observation_does_not_replace_its_verdict() {
    on_each_backend("older_report", |ctx| async move {
        let s = &ctx.store;
        let ids = stored_raws(s, 1, 6).await;
        let k1 = || verdict("K1", "compliant", "cmcc", 1_000);
        let k2 = || VerdictRecord {
            trust_score: Some(10),
            low_trust: true,
            ..verdict("K2", "compliant", "cmcc", 2_000)
        };
        let low = LineFilter {
            low_trust: Some(true),
            ..LineFilter::default()
        };
        for (line, batches) in [("l1", vec![vec![0], vec![1]]), ("l2", vec![vec![2, 3]])] {
            let records = [
                observation(ids[0], "o1", "l1", 100, k1()),
                observation(ids[1], "o1", "l1", 50, k2()),
                observation(ids[2], "o2", "l2", 100, k1()),
                observation(ids[3], "o2", "l2", 50, k2()),
            ];
            let mut first = None;
            for batch in batches {
                let batch: Vec<Processed> = batch.iter().map(|&i| records[i].clone()).collect();
                s.apply(&batch).await.unwrap();
                first.get_or_insert(s.line(line).await.unwrap().unwrap());
            }
            let first = first.unwrap();
            let now = s.line(line).await.unwrap().unwrap();
            assert_eq!(now.verdict_id, first.verdict_id, "{line}");
            assert_eq!(now.current_from_ms, first.current_from_ms, "{line}");
            assert!(!now.low_trust, "{line}");
            assert_eq!(now.reports, 2, "{line}");
            assert_eq!((now.first_seen_ms, now.last_seen_ms), (50, 100), "{line}");
            let verdicts = s.line_verdicts(line).await.unwrap();
            let current = verdicts.iter().find(|v| v.id == now.verdict_id).unwrap();
            assert_eq!(current.record.verdict_key, "K1", "{line}");
            // The older report's verdict is kept, with its own time and mark.
            let kept: Vec<(&str, i64, bool)> = verdicts
                .iter()
                .map(|v| {
                    (
                        v.record.verdict_key.as_str(),
                        v.observed_at_ms,
                        v.record.low_trust,
                    )
                })
                .collect();
            assert_eq!(kept, [("K2", 50, true), ("K1", 100, false)], "{line}");
            // It was never current, so the line did not replace anything.
            assert!(s.line_history(line).await.unwrap().is_empty(), "{line}");
            let o = &s.line_observations(line).await.unwrap()[0];
            assert_eq!(o.count, 2);
            assert_eq!(o.latest_verdict_key.as_deref(), Some("K1"), "{line}");
            assert_eq!(o.latest_verdict_id, Some(now.verdict_id), "{line}");
        }
        assert!(s.lines(&low).await.unwrap().is_empty());

        // A newer report with the low-trust verdict does replace it.
        s.apply(&[observation(ids[4], "o1", "l1", 150, k2())])
            .await
            .unwrap();
        let line = s.line("l1").await.unwrap().unwrap();
        assert!(line.low_trust);
        let history = s.line_history("l1").await.unwrap();
        assert_eq!(history.len(), 1);
        let o = s.observation("o1").await.unwrap().unwrap();
        assert_eq!(o.latest_verdict_id, Some(line.verdict_id));
        assert_eq!(o.latest_verdict_key.as_deref(), Some("K2"));
        assert_eq!(s.lines(&low).await.unwrap().len(), 1);
    })
    .await;
}

/// A report from a probe's offline spool and a newer report of the same
/// observation come in one batch, judged alike and unlike the current
/// verdict (say, a proxy set on the device, which the observation key leaves
/// out). The newer report's verdict becomes current as the verdict decided
/// for that report — its report id and time — just as when the two come in
/// two batches: the batch reports take an observation's verdict for a
/// window by that time, and took the older report's (so the window showed
/// the verdict the line had before).
#[tokio::test]
async fn a_late_and_a_newer_report_in_one_batch_make_the_newer_ones_verdict_current() {
    on_each_backend("late_and_newer", |ctx| async move {
        let s = &ctx.store;
        let reports: Vec<PulledReport> = [(1, 100), (2, 50), (3, 200)]
            .into_iter()
            .map(|(seq, at)| PulledReport {
                received_at_ms: Some(at),
                ..report(seq, format!("{{\"seq\":{seq}}}").as_bytes())
            })
            .collect();
        s.commit_pull(&pull("node-a", &reports, 3)).await.unwrap();
        let ids: Vec<i64> = s
            .pending_raw(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        let k1 = verdict("K1", "compliant", "cmcc", 1_000);
        let k2 = || verdict("K2", "non_compliant", "ctcc", 2_000);
        s.apply(&[observation(ids[0], "o1", "l1", 100, k1)])
            .await
            .unwrap();
        s.apply(&[
            observation(ids[1], "o1", "l1", 50, k2()),
            observation(ids[2], "o1", "l1", 200, k2()),
        ])
        .await
        .unwrap();

        let line = s.line("l1").await.unwrap().unwrap();
        assert_eq!(line.verdict, "non_compliant");
        let verdicts = s.line_verdicts("l1").await.unwrap();
        let current = verdicts.iter().find(|v| v.id == line.verdict_id).unwrap();
        let newer = format!("rep-{}", ids[2]);
        assert_eq!(
            (current.report_id.as_str(), current.observed_at_ms),
            (newer.as_str(), 200),
            "the current verdict is the late report's: {verdicts:#?}"
        );
        let kept: Vec<(&str, i64)> = verdicts
            .iter()
            .map(|v| (v.record.verdict_key.as_str(), v.observed_at_ms))
            .collect();
        assert_eq!(kept, [("K2", 200), ("K2", 50), ("K1", 100)]);

        // The window holding all three reports: the line's last report was
        // judged non-compliant.
        let rows = s
            .period_rows(&lineprobe_sync::PeriodQuery {
                window: lineprobe_sync::PeriodWindow {
                    from_ms: 0,
                    until_ms: 300,
                    bucket_ms: 300,
                },
                list_verdicts: &[],
                detail: false,
            })
            .await
            .unwrap();
        let groups: Vec<(&str, u64)> = rows
            .line_groups
            .iter()
            .map(|g| (g.verdict.as_str(), g.reports))
            .collect();
        assert_eq!(groups, [("non_compliant", 3)]);
    })
    .await;
}

/// One event of a random history of a few lines.
#[derive(Debug, Clone, Copy)]
enum Event {
    /// A report (`report`, of observation `obs` of line `line`) arrives,
    /// received at `at`: the first copy of that report or a later one.
    Report {
        report: usize,
        obs: usize,
        line: usize,
        at: i64,
        key: usize,
    },
    /// A report that fails validation.
    Invalid,
    /// The report of event `of` is decided again with verdict `key`.
    Redecide { of: usize, key: usize },
}

/// A random history in batches: reports out of receive order, repeated
/// observations, copies of a report from another collector, invalid
/// reports, re-decided reports.
fn random_history(seed: u64, batches: usize) -> Vec<Vec<Event>> {
    let mut state = seed;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(state >> 33).unwrap() % n
    };
    let mut reports: Vec<(usize, usize, i64)> = Vec::new();
    let mut originals: Vec<usize> = Vec::new();
    let mut history = Vec::new();
    let mut events = 0;
    for _ in 0..batches {
        let mut batch = Vec::new();
        let decided = events;
        for _ in 0..=next(10) {
            let event = match next(10) {
                0 if decided > 0 && !originals.is_empty() => {
                    let of = originals[next(originals.len())];
                    if of >= decided {
                        Event::Invalid
                    } else {
                        Event::Redecide { of, key: next(3) }
                    }
                }
                1 => Event::Invalid,
                2 | 3 if !reports.is_empty() => {
                    let report = next(reports.len());
                    let (obs, line, at) = reports[report];
                    let at = at + i64::try_from(next(30)).unwrap();
                    Event::Report {
                        report,
                        obs,
                        line,
                        at,
                        key: next(3),
                    }
                }
                _ => {
                    let (obs, line) = (next(2), next(3));
                    let at = i64::try_from(next(1_000)).unwrap();
                    reports.push((obs, line, at));
                    originals.push(events);
                    Event::Report {
                        report: reports.len() - 1,
                        obs,
                        line,
                        at,
                        key: next(3),
                    }
                }
            };
            batch.push(event);
            events += 1;
        }
        history.push(batch);
    }
    history
}

/// Applies `history` under the key prefix `p` (its own collector and node),
/// in its batches or one event at a time.
async fn apply_history(s: &Store, p: &str, history: &[Vec<Event>], one_by_one: bool) {
    let events: Vec<Event> = history.iter().flatten().copied().collect();
    let reports: Vec<PulledReport> = (1..=events.len() as u64)
        .map(|seq| report(seq, format!("{{\"{p}\":{seq}}}").as_bytes()))
        .collect();
    let (collector, node) = (format!("c-{p}"), format!("n-{p}"));
    s.commit_pull(&PullBatch {
        collector: &collector,
        node_id: &node,
        reports: &reports,
        next_after: events.len() as u64,
        pulled_at_ms: 5_000,
    })
    .await
    .unwrap();
    let mut raw_ids = Vec::new();
    for r in s.pending_raw(0, 100_000).await.unwrap() {
        if r.node_id == node {
            raw_ids.push(r.id);
        }
    }
    assert_eq!(raw_ids.len(), events.len());
    let record = |i: usize| -> Processed {
        match events[i] {
            Event::Report {
                report,
                obs,
                line,
                at,
                key,
            } => copy_of(
                &format!("{p}:R{report}"),
                raw_ids[i],
                &format!("{p}:o{line}.{obs}"),
                &format!("{p}:l{line}"),
                at,
                verdict(&format!("K{key}"), &format!("v{key}"), "cmcc", 1_000),
            ),
            Event::Invalid => quarantine(raw_ids[i], "[]", "invalid"),
            Event::Redecide { of, key } => {
                let Event::Report {
                    report,
                    obs,
                    line,
                    at,
                    ..
                } = events[of]
                else {
                    unreachable!("only reports are decided again")
                };
                reprocessed(copy_of(
                    &format!("{p}:R{report}"),
                    raw_ids[of],
                    &format!("{p}:o{line}.{obs}"),
                    &format!("{p}:l{line}"),
                    at,
                    verdict(&format!("K{key}"), &format!("v{key}"), "cmcc", 2_000),
                ))
            }
        }
    };
    let mut i = 0;
    for batch in history {
        let records: Vec<Processed> = (i..i + batch.len()).map(record).collect();
        i += batch.len();
        if one_by_one {
            for r in records {
                s.apply(&[r]).await.unwrap();
            }
        } else {
            s.apply(&records).await.unwrap();
        }
    }
}

/// What the history under prefix `p` left, with the prefix taken off.
async fn history_outcome(s: &Store, url: &str, p: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in 0..3 {
        let key = format!("{p}:l{line}");
        let Some(l) = s.line(&key).await.unwrap() else {
            continue;
        };
        let verdicts = s.line_verdicts(&key).await.unwrap();
        let current = verdicts.iter().find(|v| v.id == l.verdict_id).unwrap();
        let observations = s.line_observations(&key).await.unwrap();
        let shown = observations
            .iter()
            .find(|o| o.id == l.observation_id)
            .unwrap();
        out.push(format!(
            "line {line}: reports {} seen {}..{} verdict {} ({} for {} at {}) current {}",
            l.reports,
            l.first_seen_ms,
            l.last_seen_ms,
            l.verdict,
            current.record.verdict_key,
            current.report_id,
            current.observed_at_ms,
            shown.facts.obs_key
        ));
        for o in &observations {
            let latest = verdicts
                .iter()
                .find(|v| Some(v.id) == o.latest_verdict_id)
                .unwrap();
            out.push(format!(
                "  obs {}: count {} seen {}..{} reports {}..{} latest {:?} ({} at {})",
                o.facts.obs_key,
                o.count,
                o.first_seen_ms,
                o.last_seen_ms,
                o.first_report_id,
                o.last_report_id,
                o.latest_verdict_key,
                latest.report_id,
                latest.observed_at_ms
            ));
        }
    }
    let node = format!("n-{p}");
    for (_, n, state) in raw_states(url).await {
        if n == node {
            out.push(state);
        }
    }
    out.into_iter()
        .map(|line| line.replace(&format!("{p}:"), ""))
        .collect()
}

/// The same random history — reports out of order, copies from two
/// collectors, invalid and re-decided reports — ends the same applied in
/// its batches (which PostgreSQL splits into parts written over separate
/// connections) and one report at a time: the counts, seen times, current
/// observations and verdicts, and what each raw report was decided as.
#[tokio::test]
async fn a_history_ends_the_same_in_batches_and_one_report_at_a_time() {
    on_each_backend("history_batches", |ctx| async move {
        let s = &ctx.store;
        for seed in [7_u64, 1_234, 99_991] {
            let history = random_history(seed, 40);
            let (a, b) = (format!("a{seed}"), format!("b{seed}"));
            apply_history(s, &a, &history, false).await;
            apply_history(s, &b, &history, true).await;
            let batched = history_outcome(s, &ctx.url, &a).await;
            let single = history_outcome(s, &ctx.url, &b).await;
            assert!(batched.len() > 30, "seed {seed}: too little: {batched:#?}");
            assert_eq!(batched, single, "seed {seed}");
        }
    })
    .await;
}

// ---- throughput (by hand) --------------------------------------------------

/// A report body of about 2 KB that compresses like real JSON.
fn json_body(seq: u64) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut body = format!(
        "{{\"schema\":1,\"report_id\":\"0192{seq:028x}\",\"install_id\":\"inst-{}\",\"hops\":[",
        seq % 5_000
    );
    let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for ttl in 1..=14 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let octets = state.to_le_bytes();
        let _ = write!(
            body,
            "{{\"ttl\":{ttl},\"addrs\":[\"{}.{}.{}.{}\"],\"rtt_ms\":[{}.{},{}.{}],\
             \"sent\":3,\"received\":3}},",
            octets[0],
            octets[1],
            octets[2],
            octets[3],
            octets[4] % 90,
            octets[5] % 10,
            octets[6] % 90,
            octets[7] % 10,
        );
    }
    body.push_str("{\"ttl\":15,\"addrs\":[],\"rtt_ms\":[],\"sent\":3,\"received\":0}]}");
    body.into_bytes()
}

/// Pulls and applies `total` reports in batches of `batch` and prints
/// reports per second. `record` makes the pipeline's result for a report.
async fn measure(
    s: &Store,
    scenario: &str,
    first_seq: u64,
    total: u64,
    batch: u64,
    record: impl Fn(&lineprobe_sync::RawReport) -> Processed,
) {
    let mut pull_time = Duration::ZERO;
    let mut apply_time = Duration::ZERO;
    let mut after_id = s
        .pending_raw(0, 1)
        .await
        .unwrap()
        .first()
        .map_or(0, |r| r.id - 1);
    for start in (first_seq..first_seq + total).step_by(usize::try_from(batch).unwrap()) {
        let reports: Vec<PulledReport> = (start..start + batch)
            .map(|seq| report(seq, &json_body(seq)))
            .collect();
        let t = Instant::now();
        s.commit_pull(&pull("node-a", &reports, start + batch - 1))
            .await
            .unwrap();
        pull_time += t.elapsed();
        let raws = s
            .pending_raw(after_id, u32::try_from(batch).unwrap())
            .await
            .unwrap();
        after_id = raws.last().unwrap().id;
        let results: Vec<Processed> = raws.iter().map(&record).collect();
        let t = Instant::now();
        s.apply(&results).await.unwrap();
        apply_time += t.elapsed();
    }
    let n = f64::from(u32::try_from(total).unwrap());
    eprintln!(
        "{} {scenario}: commit_pull {:.0} reports/s, apply {:.0} reports/s, \
         both in turn {:.0} reports/s",
        s.backend_name(),
        n / pull_time.as_secs_f64(),
        n / apply_time.as_secs_f64(),
        n / (pull_time + apply_time).as_secs_f64(),
    );
}

/// Pulls and applies 20 000 reports (~2 KB JSON bodies, batches of 2 000)
/// in two scenarios and prints reports per second for each backend:
/// "steady", 5 000 lines whose observation repeats with the same verdict
/// (the common case), and "churn", where every report brings another
/// observation of its line, with a new verdict and a history row. Not a
/// timed assertion; run by hand:
///
/// ```text
/// LINEPROBE_TEST_PG=postgres://postgres@127.0.0.1:5432/test \
///   cargo test -p lineprobe-sync --release --test store -- --ignored --nocapture throughput
/// ```
#[tokio::test]
#[ignore = "a measurement to run by hand, not a test"]
async fn throughput() {
    on_each_backend("throughput", |ctx| async move {
        let s = &ctx.store;
        let at = |raw: &lineprobe_sync::RawReport| i64::try_from(raw.seq).unwrap();
        measure(s, "steady", 1, 20_000, 2_000, |raw| {
            let line = format!("steady-{}", raw.seq % 5_000);
            let v = verdict("k", "compliant", "cmcc", at(raw));
            observation(raw.id, &line, &line, at(raw), v)
        })
        .await;
        measure(s, "churn", 100_001, 20_000, 2_000, |raw| {
            let line = format!("churn-{}", raw.seq % 5_000);
            let obs = format!("churn-obs-{}", raw.seq % 15_000);
            let key = format!("k{}", raw.seq % 3);
            observation(
                raw.id,
                &obs,
                &line,
                at(raw),
                verdict(&key, "compliant", "cmcc", at(raw)),
            )
        })
        .await;
        let counts = s.counts().await.unwrap();
        assert_eq!((counts.processed, counts.pending), (40_000, 0));
    })
    .await;
}
