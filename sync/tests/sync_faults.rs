//! The internal side under faults, through the real `lineprobe-sync` binary:
//! `kill -9` of the puller mid-batch, acknowledgements lost on the way (a
//! proxy in front of the export API drops them or their answers, and cuts
//! pages off), collectors that are down, hang, or are killed mid-pull, and
//! the daemon (`run`) judging one collector's reports while others are slow
//! or hang.
//! Afterwards every report a collector holds is in the internal database
//! exactly once, every report the collector considers acknowledged is in it,
//! and the database passes its integrity check. Each scenario is one test on
//! SQLite and one on PostgreSQL (skipped with a printed reason unless
//! `LINEPROBE_TEST_PG` names a server, or failing without one when
//! `LINEPROBE_REQUIRE_LAB=1`), so that the two run side by side.
// A failed unwrap is a failed test; a scenario reads best top to bottom.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lineprobe_sync::{LineFilter, Store};
use rand::Rng;
use support::{
    AckFault, Backend, CollectorProc, FaultProxy, Lab, SyncCli, TestDb, assert_exactly_once,
    backend, black_hole, bounded, bulk_reports, collector_binary, collector_toml, cursor_of,
    demo_data_dir, demo_sources_toml, prefill_staging, stage_all, staging_stats_of, unused_addr,
};

// Generous: the machines running the tests may be busy; the bound only
// catches a test that hangs.
const TEST_BOUND: Duration = Duration::from_mins(5);

/// A sync configuration at `dir/name` with these collectors and the demo
/// address data; one pull round takes every page there is.
fn write_config(dir: &Path, name: &str, collectors: &str) -> PathBuf {
    let text = format!(
        "data_dir = {data}\n\n[pull]\ninterval_s = 1\nmax_pages_per_round = 100000\n\n\
         [pipeline]\nbatch = 500\n{collectors}{sources}",
        data = support::qp(&dir.join("data")),
        sources = demo_sources_toml(&demo_data_dir().join("ipplan.csv"), "demo-v1"),
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The committed cursor of `collector` (0 before its first commit).
async fn cursor(store: &Store, collector: &str) -> u64 {
    store
        .cursor(collector)
        .await
        .unwrap()
        .map_or(0, |c| c.after_seq)
}

/// Checks, after whatever happened, that the database holds exactly the
/// committed prefix of `node` (seqs 1..=cursor, once each, nothing beyond)
/// and everything the collector considers acknowledged.
async fn check_consistent(db: &TestDb, store: &Store, collector: &str, node: &str, acked: u64) {
    let upto = cursor(store, collector).await;
    let rows = db.raw_rows().await;
    assert_exactly_once(&rows, node, upto, &format!("{} {collector}", db.label()));
    assert!(
        acked <= upto,
        "{}: the collector considers {acked} acknowledged but only {upto} are committed",
        db.label()
    );
    db.integrity_check().await;
}

// --- 3. kill -9 of the puller mid-batch -------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_puller_mid_batch_loses_and_doubles_nothing_on_sqlite() {
    kill_9_of_the_puller_mid_batch_loses_and_doubles_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_puller_mid_batch_loses_and_doubles_nothing_on_postgresql() {
    kill_9_of_the_puller_mid_batch_loses_and_doubles_nothing(Backend::Postgres).await;
}

async fn kill_9_of_the_puller_mid_batch_loses_and_doubles_nothing(kind: Backend) {
    const REPORTS: usize = 20_000;
    const LINES: usize = 40;
    bounded(TEST_BOUND, "kill -9 of the puller", async {
        let total = REPORTS as u64;
        let root = tempfile::tempdir().unwrap();
        if let Some(db) = backend(kind, "kill9_puller", root.path()).await {
            let backend = db.label();
            // A fresh collector per backend: acknowledgements are its state.
            let mut lab = Lab::start("kill-node", false, 200).await;
            let t = Instant::now();
            let reports = bulk_reports(REPORTS, LINES, "KILL");
            let made = t.elapsed();
            let ids: BTreeSet<String> = stage_all(lab.staging(), reports)
                .await
                .into_iter()
                .collect();
            eprintln!(
                "{backend}: made {REPORTS} reports in {made:?}, staged in {:?}",
                t.elapsed().saturating_sub(made)
            );
            let dir = tempfile::tempdir().unwrap();
            let config = write_config(dir.path(), "sync.toml", &lab.collector_toml("dmz-k", ""));
            let cli = SyncCli::new(&config, &db.url, &dir.path().join("logs"));
            // The schema exists before the first puller starts, so that
            // this process can watch the cursor while the puller runs.
            let store = db.store().await;
            let mut rng = rand::thread_rng();
            let mut killed_mid_pull = 0;
            let mut killed_mid_pipeline = false;
            for round in 0..5 {
                let before = cursor(&store, "dmz-k").await;
                let pipeline_round = round == 4;
                let mut puller = if round % 2 == 0 && !pipeline_round {
                    cli.spawn(&["pull", "--once", "--no-process"])
                } else {
                    cli.spawn(&["pull", "--once"])
                };
                // Let it commit a few pages (or, in the last round, start
                // the pipeline), then kill it at a random moment.
                let target = before + rng.gen_range(200..3_000);
                let started = Instant::now();
                loop {
                    if !puller.running() || started.elapsed() > Duration::from_secs(40) {
                        break;
                    }
                    if pipeline_round {
                        let counts = store.counts().await.unwrap();
                        if counts.processed > 0 && counts.pending > 0 {
                            break;
                        }
                    } else if cursor(&store, "dmz-k").await >= target.min(total - 1) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
                let was_running = puller.kill9();
                let after = cursor(&store, "dmz-k").await;
                let counts = store.counts().await.unwrap();
                eprintln!(
                    "{backend} round {round}: killed={was_running} cursor {before} -> {after}, \
                     processed {} pending {}",
                    counts.processed, counts.pending
                );
                if was_running && after < total {
                    killed_mid_pull += 1;
                }
                if was_running && pipeline_round && counts.pending > 0 {
                    killed_mid_pipeline = true;
                }
                check_consistent(
                    &db,
                    &store,
                    "dmz-k",
                    &lab.node,
                    lab.stats().await.acked_up_to,
                )
                .await;
            }
            assert!(
                killed_mid_pull >= 3,
                "{backend}: only {killed_mid_pull} kills landed while pulling"
            );
            if !killed_mid_pipeline {
                eprintln!("{backend}: the pipeline finished before the kill");
            }

            // One run to the end.
            let t = Instant::now();
            cli.ok(&["pull", "--once"]).await;
            eprintln!("{backend}: the last run took {:?}", t.elapsed());
            let rows = db.raw_rows().await;
            assert_exactly_once(&rows, &lab.node, total, backend);
            let stored: BTreeSet<String> =
                rows.iter().filter_map(|r| r.report_id.clone()).collect();
            assert_eq!(
                stored, ids,
                "{backend}: the stored reports are the staged ones"
            );
            assert_eq!(cursor(&store, "dmz-k").await, total);
            let stats = lab.stats().await;
            assert_eq!(
                stats.acked_up_to, total,
                "{backend}: everything acknowledged"
            );
            let counts = store.counts().await.unwrap();
            assert_eq!(
                (
                    counts.raw,
                    counts.processed,
                    counts.pending,
                    counts.quarantined
                ),
                (total, total, 0, 0),
                "{backend}"
            );
            // The pipeline counted every report once, whatever the kills.
            let lines = store
                .lines(&LineFilter {
                    limit: 1000,
                    ..LineFilter::default()
                })
                .await
                .unwrap();
            assert_eq!(lines.len(), LINES, "{backend}");
            assert_eq!(
                lines.iter().map(|l| l.reports).sum::<u64>(),
                total,
                "{backend}"
            );
            assert!(lines.iter().all(|l| l.verdict == "compliant"), "{backend}");
            store.close().await;
            db.integrity_check().await;
            lab.stop().await;
        }
    })
    .await;
}

// --- 4. lost acknowledgements -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_and_cut_pages_never_duplicate_and_the_acks_land_later_on_sqlite() {
    lost_acks_and_cut_pages_never_duplicate_and_the_acks_land_later(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_and_cut_pages_never_duplicate_and_the_acks_land_later_on_postgresql() {
    lost_acks_and_cut_pages_never_duplicate_and_the_acks_land_later(Backend::Postgres).await;
}

async fn lost_acks_and_cut_pages_never_duplicate_and_the_acks_land_later(kind: Backend) {
    const REPORTS: usize = 1_000;
    bounded(TEST_BOUND, "lost acks", async {
        let root = tempfile::tempdir().unwrap();
        if let Some(db) = backend(kind, "lost_acks", root.path()).await {
            let backend = db.label();
            // A fresh collector per backend: acknowledgements are the
            // collector's state.
            let mut lab = Lab::start("ack-node", false, 100).await;
            stage_all(lab.staging(), bulk_reports(REPORTS, 10, "ACK")).await;
            let total = REPORTS as u64;
            let proxy = FaultProxy::start(lab.export_addr()).await;
            let dir = tempfile::tempdir().unwrap();
            let through_proxy = write_config(
                dir.path(),
                "proxied.toml",
                &collector_toml("dmz-ack", &proxy.url(), None, "timeout_s = 5"),
            );
            let direct = write_config(
                dir.path(),
                "direct.toml",
                &lab.collector_toml("dmz-ack", ""),
            );
            let logs = dir.path().join("logs");
            let proxied = SyncCli::new(&through_proxy, &db.url, &logs);
            let store = db.store().await;

            // Pages cut off halfway: the round stops at the first cut page,
            // nothing of it is stored, and the exit code says so.
            proxy.set_cut_pages(true);
            let out = proxied.run(&["pull", "--once", "--no-process"]).await;
            assert_eq!(out.code(), Some(1), "{backend}: {out:?}");
            assert!(out.stderr.contains("dmz-ack"), "{out:?}");
            let (_, cut, _, _) = proxy.counters();
            assert!(cut >= 1, "no page was cut");
            let partial = cursor(&store, "dmz-ack").await;
            assert!(partial < total, "{backend}: {partial}");
            check_consistent(
                &db,
                &store,
                "dmz-ack",
                &lab.node,
                lab.stats().await.acked_up_to,
            )
            .await;
            proxy.set_cut_pages(false);

            // Every ack dropped on the way: everything is stored, the
            // collector has acknowledged nothing new.
            let acked_before = lab.stats().await.acked_up_to;
            assert!(acked_before <= partial);
            proxy.set_ack_fault(AckFault::DropRequest);
            let out = proxied.run(&["pull", "--once", "--no-process"]).await;
            assert_eq!(
                out.code(),
                Some(0),
                "a lost ack is not a failed pull: {out:?}"
            );
            assert_eq!(cursor(&store, "dmz-ack").await, total);
            assert_eq!(lab.stats().await.acked_up_to, acked_before, "{backend}");
            let (_, _, acks, lost) = proxy.counters();
            assert!(
                lost >= 1 && lost <= acks,
                "{backend}: {acks} acks, {lost} lost"
            );
            let status = proxied.status().await;
            let row = cursor_of(&status, "dmz-ack");
            assert_eq!(row["acked_seq"], acked_before, "{row:#}");
            assert!(
                row["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("acknowledgement")),
                "{row:#}"
            );
            check_consistent(&db, &store, "dmz-ack", &lab.node, acked_before).await;

            // The ack lands but its answer is lost: the next run repeats it
            // (nothing new to pull), and stores nothing twice.
            proxy.set_ack_fault(AckFault::DropAnswer);
            proxied.ok(&["pull", "--once"]).await;
            assert_eq!(
                lab.stats().await.acked_up_to,
                total,
                "{backend}: the ack landed"
            );
            assert_eq!(
                cursor_of(&proxied.status().await, "dmz-ack")["acked_seq"],
                acked_before
            );
            check_consistent(&db, &store, "dmz-ack", &lab.node, total).await;

            // Directly: the ack is repeated once more and confirmed.
            let direct = SyncCli::new(&direct, &db.url, &logs);
            direct.ok(&["pull", "--once"]).await;
            let status = direct.status().await;
            let row = cursor_of(&status, "dmz-ack");
            assert_eq!(
                (row["after_seq"].as_u64(), row["acked_seq"].as_u64()),
                (Some(total), Some(total))
            );
            assert!(row["last_error"].is_null(), "{row:#}");
            assert_eq!(row["pulled_total"], total);

            // Pulled again from the start (a cursor restored from an older
            // backup): every report comes again, none is stored twice.
            db.execute("UPDATE pull_cursors SET after_seq = 0 WHERE collector = 'dmz-ack'")
                .await;
            assert_eq!(cursor(&store, "dmz-ack").await, 0);
            direct.ok(&["pull", "--once"]).await;
            let status = direct.status().await;
            let row = cursor_of(&status, "dmz-ack");
            assert_eq!(row["after_seq"], total, "{row:#}");
            assert_eq!(
                row["pulled_total"], total,
                "{backend}: duplicates are not stored"
            );
            let counts = &status["counts"];
            assert_eq!(
                (counts["raw"].as_u64(), counts["processed"].as_u64()),
                (Some(total), Some(total))
            );
            check_consistent(&db, &store, "dmz-ack", &lab.node, total).await;
            let lines: u64 = store
                .lines(&LineFilter::default())
                .await
                .unwrap()
                .iter()
                .map(|l| l.reports)
                .sum();
            assert_eq!(lines, total, "{backend}: every report counted once");
            store.close().await;
            drop(proxy);
            lab.stop().await;
        }
    })
    .await;
}

// --- 5. a collector down, hanging, or killed during a pull -------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_hanging_or_killed_holds_up_no_other_and_is_pulled_after_restart_on_sqlite()
 {
    a_collector_down_hanging_or_killed_holds_up_no_other_and_is_pulled_after_restart(
        Backend::Sqlite,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_hanging_or_killed_holds_up_no_other_and_is_pulled_after_restart_on_postgresql()
 {
    a_collector_down_hanging_or_killed_holds_up_no_other_and_is_pulled_after_restart(
        Backend::Postgres,
    )
    .await;
}

async fn a_collector_down_hanging_or_killed_holds_up_no_other_and_is_pulled_after_restart(
    kind: Backend,
) {
    const A_REPORTS: usize = 600;
    const B_REPORTS: usize = 3_000;
    bounded(TEST_BOUND, "collectors down", async {
        let binary = tokio::task::spawn_blocking(collector_binary).await.unwrap();
        let root = tempfile::tempdir().unwrap();
        if let Some(db) = backend(kind, "collector_down", root.path()).await {
            let backend = db.label();
            let dir = tempfile::tempdir().unwrap();
            let logs = dir.path().join("logs");
            // A: healthy, in this process.
            let mut lab = Lab::start("node-a", false, 200).await;
            stage_all(lab.staging(), bulk_reports(A_REPORTS, 10, "A")).await;
            // B: the collector binary with a backlog, started once to learn
            // its port, then killed: down.
            let b_dir = dir.path().join("collector-b");
            prefill_staging(&b_dir, "node-b", bulk_reports(B_REPORTS, 10, "B")).await;
            // An address outside the ephemeral ports: B comes back on it.
            let mut b =
                CollectorProc::start(&binary, &b_dir, "node-b", unused_addr(), 30, &logs).await;
            let b_addr = b.export;
            b.proc.kill9();
            // C: accepts connections and never answers.
            let (c_addr, c_task) = black_hole().await;

            let a_table = lab.collector_toml("dmz-a", "");
            let b_table =
                collector_toml("dmz-b", &format!("http://{b_addr}"), None, "timeout_s = 5");
            let c_url = format!("http://{c_addr}");
            let config = write_config(
                dir.path(),
                "sync.toml",
                &format!(
                    "{a_table}{b_table}{}",
                    collector_toml("dmz-c", &c_url, None, "timeout_s = 5")
                ),
            );
            let cli = SyncCli::new(&config, &db.url, &logs);
            let store = db.store().await;

            // B down, C hanging: A is pulled and processed in full, the
            // exit code and message name both failed collectors.
            let started = Instant::now();
            let out = cli.run(&["pull", "--once"]).await;
            let took = started.elapsed();
            assert_eq!(out.code(), Some(1), "{backend}: {out:?}");
            for name in ["dmz-b", "dmz-c"] {
                assert!(
                    out.stderr.contains(name),
                    "{backend}: {name} not named: {out:?}"
                );
            }
            assert!(took < Duration::from_mins(1), "{backend}: took {took:?}");
            let status = cli.status().await;
            let a = cursor_of(&status, "dmz-a");
            assert_eq!(a["after_seq"], A_REPORTS, "{a:#}");
            assert_eq!(a["acked_seq"], A_REPORTS, "{a:#}");
            assert!(a["last_error"].is_null());
            let c = cursor_of(&status, "dmz-c");
            assert!(
                c["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("timed out")),
                "{c:#}"
            );
            // A was done well before C gave up.
            let a_done = a["last_ok_at_ms"].as_i64().unwrap();
            let c_failed = c["last_error_at_ms"].as_i64().unwrap();
            assert!(
                a_done + 1_000 < c_failed,
                "{backend}: A finished at {a_done}, C failed at {c_failed}"
            );
            assert!(cursor_of(&status, "dmz-b")["last_error"].as_str().is_some());
            assert_eq!(status["counts"]["pending"], 0, "A was processed");
            assert_eq!(lab.stats().await.acked_up_to, A_REPORTS as u64);
            let rows = db.raw_rows().await;
            assert_exactly_once(&rows, &lab.node, A_REPORTS as u64, backend);
            assert!(rows.iter().all(|r| r.node == lab.node));

            // B back up, then killed mid-pull: what was committed stays.
            let mut b = CollectorProc::start(&binary, &b_dir, "node-b", b_addr, 30, &logs).await;
            assert_eq!(b.export, b_addr);
            let mut puller = cli.spawn(&["pull", "--once", "--no-process"]);
            let waited = Instant::now();
            while cursor(&store, "dmz-b").await == 0 {
                assert!(puller.running(), "the puller ended before B's first page");
                assert!(waited.elapsed() < Duration::from_mins(1));
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            assert!(b.proc.kill9());
            let out = puller.wait(Duration::from_mins(1)).await;
            assert_eq!(out.code(), Some(1), "{out:?}");
            assert!(out.stderr.contains("dmz-b"), "{out:?}");
            let b_partial = cursor(&store, "dmz-b").await;
            assert!(
                b_partial > 0 && b_partial < B_REPORTS as u64,
                "{backend}: B's kill came too late ({b_partial})"
            );
            let b_acked = staging_stats_of(&b_dir, "node-b").await.acked_up_to;
            check_consistent(&db, &store, "dmz-b", "node-b", b_acked).await;

            // B back again, C switched off: the rest of B, exactly once.
            c_task.abort();
            let config = write_config(
                dir.path(),
                "sync-2.toml",
                &format!(
                    "{a_table}{b_table}{}",
                    collector_toml("dmz-c", &c_url, None, "enabled = false")
                ),
            );
            let cli = SyncCli { config, ..cli };
            let mut b = CollectorProc::start(&binary, &b_dir, "node-b", b_addr, 30, &logs).await;
            cli.ok(&["pull", "--once", "--no-process"]).await;
            let status = cli.status().await;
            let b_row = cursor_of(&status, "dmz-b");
            assert_eq!(b_row["after_seq"], B_REPORTS, "{b_row:#}");
            assert!(b_row["last_error"].is_null(), "{b_row:#}");
            let rows = db.raw_rows().await;
            assert_exactly_once(&rows, "node-b", B_REPORTS as u64, backend);
            assert_exactly_once(&rows, &lab.node, A_REPORTS as u64, backend);
            assert_eq!(status["counts"]["raw"], A_REPORTS + B_REPORTS);
            assert_eq!(status["counts"]["pending"], B_REPORTS);
            b.proc.signal("-TERM");
            let out = b.proc.wait(Duration::from_secs(20)).await;
            assert!(out.status.success(), "{out:?}");
            let b_stats = staging_stats_of(&b_dir, "node-b").await;
            assert_eq!(b_stats.acked_up_to, B_REPORTS as u64, "{backend}");
            store.close().await;
            db.integrity_check().await;
            lab.stop().await;
        }
    })
    .await;
}

// --- 6. the daemon with a slow and a hanging collector ------------------------

/// A proxy on loopback in front of `upstream` that holds every chunk a
/// client sends for `delay` before passing it on: a collector that answers
/// each request slowly, yet within the puller's timeout. Its connections
/// belong to its task, so dropping the proxy closes them all.
struct SlowProxy {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SlowProxy {
    async fn start(upstream: std::net::SocketAddr, delay: Duration) -> SlowProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(slow_connection(client, upstream, delay));
                while connections.try_join_next().is_some() {}
            }
        });
        SlowProxy { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn slow_connection(
    client: tokio::net::TcpStream,
    upstream: std::net::SocketAddr,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(upstream) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let requests = async {
        let mut buf = vec![0_u8; 64 * 1024];
        while let Ok(n @ 1..) = client_read.read(&mut buf).await {
            tokio::time::sleep(delay).await;
            if upstream_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let answers = tokio::io::copy(&mut upstream_read, &mut client_write);
    tokio::select! {
        () = requests => {}
        _ = answers => {}
    }
}

/// One report of a line of its own: installation `tag`, broadband account
/// `account`.
fn report_of_line(tag: &str, account: &str) -> Vec<lineprobe_shared::Report> {
    let mut reports = bulk_reports(1, 1, tag);
    account.clone_into(&mut reports[0].account);
    reports
}

/// The current verdict of the line of broadband account `account`, once it
/// has one.
async fn verdict_of(store: &Store, account: &str) -> Option<String> {
    store
        .lines(&LineFilter {
            limit: 10_000,
            ..LineFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.account == account)
        .map(|l| l.verdict)
}

/// Waits until the line of `account` has a verdict; fails the test after
/// `limit`, saying what the daemon logged.
async fn wait_for_verdict(
    store: &Store,
    account: &str,
    limit: Duration,
    daemon: &support::Proc,
) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(verdict) = verdict_of(store, account).await {
            assert_eq!(verdict, "compliant", "{account}");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "line {account} has no verdict after {limit:?}: the daemon waits for the slow \
             collectors\n--- daemon stderr\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_judges_a_fast_collectors_reports_while_others_are_slow_or_hang_on_sqlite() {
    the_daemon_judges_a_fast_collectors_reports_while_others_are_slow_or_hang(Backend::Sqlite)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_judges_a_fast_collectors_reports_while_others_are_slow_or_hang_on_postgresql() {
    the_daemon_judges_a_fast_collectors_reports_while_others_are_slow_or_hang(Backend::Postgres)
        .await;
}

/// `run` with three collectors: A answers at once; B has a backlog of many
/// pages and answers every request 2 s late (its round takes a minute or
/// more); C accepts connections and never answers (60 s timeout). A's
/// reports, one there at start and one posted while the daemon runs, get
/// their verdicts within seconds, and B's committed pages are judged while
/// B's round is still under way. SIGTERM then stops the daemon promptly
/// with B mid-round and C hanging.
async fn the_daemon_judges_a_fast_collectors_reports_while_others_are_slow_or_hang(kind: Backend) {
    const B_REPORTS: usize = 1_200;
    const B_BATCH: u64 = 50;
    const DELAY: Duration = Duration::from_secs(2);
    // Far below what B's round (24 pages, 2 s each at least) or C's
    // timeout take, and generous for a busy machine.
    const QUICK: Duration = Duration::from_secs(15);
    const BOUND: Duration = Duration::from_mins(2);
    bounded(BOUND, "daemon with slow collectors", async {
        let root = tempfile::tempdir().unwrap();
        if let Some(db) = backend(kind, "daemon_slow_collectors", root.path()).await {
            let backend = db.label();
            let dir = tempfile::tempdir().unwrap();
            let logs = dir.path().join("logs");
            let mut a = Lab::start("node-fast", false, 100).await;
            stage_all(a.staging(), report_of_line("EARLY", "075599990001")).await;
            let mut b = Lab::start("node-slow", false, 100).await;
            stage_all(b.staging(), bulk_reports(B_REPORTS, 10, "SLOW")).await;
            let slow = SlowProxy::start(b.export_addr(), DELAY).await;
            let (c_addr, c_task) = black_hole().await;
            let config = write_config(
                dir.path(),
                "sync.toml",
                &format!(
                    "{}{}{}",
                    a.collector_toml("dmz-a", ""),
                    collector_toml(
                        "dmz-b",
                        &slow.url(),
                        None,
                        &format!("timeout_s = 10\nbatch = {B_BATCH}")
                    ),
                    collector_toml("dmz-c", &format!("http://{c_addr}"), None, "timeout_s = 60"),
                ),
            );
            let cli = SyncCli::new(&config, &db.url, &logs);
            // The schema exists before the daemon starts, so that this
            // process can watch it.
            let store = db.store().await;
            let mut daemon = cli.spawn(&["run"]);

            // The report waiting at A when the daemon starts.
            let took = wait_for_verdict(&store, "075599990001", QUICK, &daemon).await;
            eprintln!("{backend}: A's first report judged {took:?} after the start");

            // One posted while the daemon runs (B and C still busy).
            stage_all(a.staging(), report_of_line("LATE", "075599990002")).await;
            let took = wait_for_verdict(&store, "075599990002", QUICK, &daemon).await;
            eprintln!("{backend}: A's report posted later judged after {took:?}");

            // B's committed pages are judged before B's round ends.
            let waited = Instant::now();
            let b_total = B_REPORTS as u64;
            loop {
                let rows = db.raw_rows().await;
                let judged = rows
                    .iter()
                    .filter(|r| r.node == b.node && r.state != "pending")
                    .count();
                let b_cursor = cursor(&store, "dmz-b").await;
                assert!(
                    b_cursor < b_total,
                    "{backend}: B was pulled in full ({b_cursor}) before any of it was judged"
                );
                if judged > 0 {
                    eprintln!(
                        "{backend}: {judged} of B's reports judged with B's cursor at \
                         {b_cursor} of {b_total}"
                    );
                    break;
                }
                assert!(
                    waited.elapsed() < QUICK,
                    "{backend}: none of B's committed reports judged\n--- daemon stderr\n{}",
                    daemon.stderr()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(daemon.running(), "the daemon ended early");

            // SIGTERM with B mid-round and C hanging: the daemon stops
            // without waiting for either.
            let stopping = Instant::now();
            daemon.signal("-TERM");
            let out = daemon.wait(Duration::from_secs(30)).await;
            assert!(out.status.success(), "{backend}: {out:?}");
            let took = stopping.elapsed();
            assert!(took < QUICK, "{backend}: stopping took {took:?}");
            assert!(out.stderr.contains("lineprobe-sync stopped"), "{out:?}");

            check_consistent(&db, &store, "dmz-a", &a.node, a.stats().await.acked_up_to).await;
            assert_eq!(cursor(&store, "dmz-a").await, 2, "{backend}");
            let b_cursor = cursor(&store, "dmz-b").await;
            assert!(
                b_cursor >= B_BATCH && b_cursor < b_total,
                "{backend}: {b_cursor}"
            );
            check_consistent(&db, &store, "dmz-b", &b.node, b.stats().await.acked_up_to).await;
            store.close().await;
            c_task.abort();
            drop(slow);
            a.stop().await;
            b.stop().await;
        }
    })
    .await;
}
