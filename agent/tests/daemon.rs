//! `run`: probes on schedule, drains the spool, and stops promptly.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lineprobe_agent::{Agent, SpoolEntry};
use support::*;

/// Runs `agent`'s daemon until `ready` holds (checked every 20 ms, for at
/// most 20 s, failing with "the daemon did not {what}"), then asks it to
/// stop; gives how long it took to stop.
async fn run_until<F, Fut>(agent: &Agent, what: &str, ready: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = agent.run(async {
        let _ = stopped.await;
    });
    let control = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready().await {
            assert!(Instant::now() < deadline, "the daemon did not {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let asked = Instant::now();
        stop.send(()).expect("daemon alive");
        asked
    };
    let (result, asked) = tokio::join!(daemon, control);
    result.expect("daemon");
    asked.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_probes_and_stops_promptly_on_shutdown() {
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
    let (agent, traces) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");

    // The first probe runs at once.
    let took = run_until(&agent, "probe", || async {
        !stored(&running).await.is_empty()
    })
    .await;
    assert!(took < Duration::from_secs(2), "took {took:?} to stop");
    assert_eq!(
        traces.load(Ordering::SeqCst),
        1,
        "the next probe is an interval away"
    );
    let status = agent.status().expect("status");
    assert!(status.last_probe.is_some());
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_consent_the_daemon_only_waits_and_still_stops() {
    let state = tempfile::tempdir().expect("tempdir");
    let (agent, traces) = agent(state.path(), agent_config(&[dead_endpoint()], None), 3);
    let started = Instant::now();
    agent
        .run(tokio::time::sleep(Duration::from_millis(300)))
        .await
        .expect("daemon");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(traces.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_drains_the_spool_when_the_collector_comes_back() {
    let port = free_port();
    let col_dir = tempfile::tempdir().expect("tempdir");
    let first = start_collector(col_dir.path(), port, "").await;
    first.shutdown().await.expect("shutdown");
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(
        &[format!("https://127.0.0.1:{port}")],
        Some(&collector_cert(col_dir.path())),
    );
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    agent.probe_once().await.expect("spooled");
    assert_eq!(agent.spool().depth().expect("depth"), 1);
    let running = start_collector(col_dir.path(), port, "").await;

    // The spooled report plus the daemon's own first probe.
    run_until(&agent, "drain the spool", || async {
        stored(&running).await.len() >= 2 && agent.spool().depth().expect("depth") == 0
    })
    .await;
    assert_eq!(stored(&running).await.len(), 2);
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_while_sending_keeps_the_report_for_the_next_start() {
    // A collector that accepts connections and never answers: the report
    // is on its way when the daemon is told to stop.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hole_addr = hole.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let holding = {
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = hole.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(conn);
            }
        })
    };
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[format!("https://{hole_addr}")], None);
    let (probe, traces) = agent(state.path(), config, 3);
    probe.accept_consent().expect("consent");

    let took = run_until(&probe, "send", || async {
        accepted.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(took < Duration::from_secs(2), "took {took:?} to stop");
    holding.abort();
    assert_eq!(traces.load(Ordering::SeqCst), 1);

    // The report is spooled, due at once, and the status says why.
    let ids = probe.spool().ids().expect("ids");
    assert_eq!(ids.len(), 1, "the interrupted report is spooled");
    let entry = probe.spool().get(&ids[0]).expect("get").expect("entry");
    assert_eq!(entry.retries, 0);
    assert!(entry.next_attempt_at <= chrono::Utc::now());
    let last = probe
        .status()
        .expect("status")
        .last_probe
        .expect("recorded");
    assert_eq!(last.report_id, ids[0]);
    assert!(
        last.result.contains("interrupted by shutdown"),
        "{}",
        last.result
    );
    drop(probe);

    // The next start, now with a collector that answers, delivers it.
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
    let (next, _) = agent(state.path(), config, 3);
    let summary = next.drain_spool().await.expect("drain");
    assert_eq!(summary.delivered, 1, "{summary:?}");
    let stored = stored(&running).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].report_id, ids[0]);
    running.shutdown().await.expect("shutdown");
}

/// Spools `n` fresh reports of `agent`, all due at `due`.
async fn spool_reports(agent: &Agent, n: usize, due: chrono::DateTime<chrono::Utc>) {
    for _ in 0..n {
        let report = agent.make_report().await.expect("report");
        agent
            .spool()
            .put(&SpoolEntry {
                report,
                spooled_at: chrono::Utc::now(),
                retries: 0,
                next_attempt_at: due,
            })
            .expect("spool");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_reports_wait_with_the_one_that_found_no_endpoint() {
    // The collector is full and asks for ten minutes' patience: once one
    // report has been told so, the other overdue ones do not each ask
    // again a second apart.
    let canned = canned_https(
        503,
        &[("content-type", "application/json"), ("retry-after", "600")],
        r#"{"error":"staging_full","detail":"the receiver's store is full"}"#,
    )
    .await;
    let state = tempfile::tempdir().expect("tempdir");
    let pem = state.path().join("canned.pem");
    std::fs::write(&pem, &canned.cert_pem).expect("write");
    let mut config = agent_config(std::slice::from_ref(&canned.url), Some(&pem));
    config.schedule.retry_base_secs = 30;
    config.schedule.retry_max_secs = 600;
    let (agent, traces) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    spool_reports(&agent, 4, chrono::Utc::now()).await;

    agent
        .run(tokio::time::sleep(Duration::from_millis(3500)))
        .await
        .expect("daemon");
    // Four reports made for the spool, one by the daemon.
    assert_eq!(traces.load(Ordering::SeqCst), 5);
    let paths = canned.paths.lock().expect("paths").clone();
    // The fresh report's upload (after a key enrolment, when it asks for
    // one); none of the spooled ones.
    assert!(paths.len() <= 2, "{paths:?}");
    assert_eq!(agent.spool().depth().expect("depth"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_spooled_while_the_clock_ran_ahead_is_not_stranded() {
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    let mut config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
    config.schedule.retry_base_secs = 30;
    config.schedule.retry_max_secs = 600;
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    // Spooled with the device dated a month ahead; the clock is right now.
    spool_reports(&agent, 1, chrono::Utc::now() + chrono::Duration::days(30)).await;
    // A retry time further ahead than any backoff can reach is due now.
    let summary = agent.drain_spool().await.expect("drain");
    assert_eq!(summary.delivered, 1, "{summary:?}");
    assert_eq!(stored(&running).await.len(), 1);
    running.shutdown().await.expect("shutdown");
}

/// A collector that accepts connections and never answers, until `release`
/// is told: then it drops them (the sender sees the connection reset).
/// Gives its address, how many it accepted, and the release.
async fn hole() -> (
    std::net::SocketAddr,
    Arc<AtomicUsize>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        let mut released = std::pin::pin!(released);
        loop {
            tokio::select! {
                _ = &mut released => return,
                conn = listener.accept() => match conn {
                    Ok((conn, _)) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        held.push(conn);
                    }
                    Err(_) => return,
                },
            }
        }
    });
    (addr, accepted, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_on_its_way_is_in_the_spool_if_the_process_dies() {
    let (addr, accepted, _release) = hole().await;
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[format!("https://{addr}")], None);
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    // The probe is dropped mid-send, as far as the disk goes the same as
    // the process being killed there.
    // Cut once the send reached the collector that never answers (a slow
    // machine, or Wine, may take more than a second to trace first).
    let reached = async {
        while accepted.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        done = agent.probe_once() => panic!("the send should still be waiting: {done:?}"),
        () = reached => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => panic!("the probe never connected"),
    }
    let ids = agent.spool().ids().expect("ids");
    assert_eq!(ids.len(), 1, "the report on its way is not in the spool");
    let entry = agent.spool().get(&ids[0]).expect("get").expect("entry");
    assert!(entry.next_attempt_at <= chrono::Utc::now(), "due at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_withdrawn_while_sending_leaves_no_spool_behind() {
    let (addr, accepted, release) = hole().await;
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[format!("https://{addr}")], None);
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    let control = async {
        while accepted.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        agent.revoke_consent().expect("revoke");
        // Then the endpoint fails: the report would be spooled.
        release.send(()).expect("hole alive");
    };
    let (outcome, ()) = tokio::join!(agent.probe_once(), control);
    let err = outcome.expect_err("no consent any more");
    assert!(matches!(err, lineprobe_agent::Error::NoConsent), "{err}");
    assert!(agent.spool().ids().expect("ids").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_manifest_key_the_daemon_sleeps_between_probes() {
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    // No `manifest.public_key`: the default and the example config.
    let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
    assert!(config.manifest_key().expect("key").is_none());
    let (agent, traces) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    agent
        .run(tokio::time::sleep(Duration::from_secs(2)))
        .await
        .expect("daemon");
    assert_eq!(traces.load(Ordering::SeqCst), 1);
    assert_eq!(stored(&running).await.len(), 1);
    // One wake for the probe; the next is an interval away. A loop that
    // spins instead goes round thousands of times in two seconds.
    let wakeups = agent.daemon_wakeups();
    assert!(wakeups <= 3, "the daemon woke {wakeups} times in 2 s");
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_file_it_cannot_read_does_not_end_the_daemon() {
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
    let (agent, _) = agent(state.path(), config, 3);
    std::fs::write(state.path().join("consent.json"), b"{\"accepted_at\": ").expect("write");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = agent.run(async {
        let _ = stopped.await;
    });
    let control = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Put right (here by accepting again): the daemon carries on.
        agent.accept_consent().expect("consent");
        let deadline = Instant::now() + Duration::from_secs(20);
        while stored(&running).await.is_empty() {
            assert!(Instant::now() < deadline, "the daemon did not probe");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop.send(());
    };
    let (result, ()) = tokio::join!(daemon, control);
    result.expect("the daemon carries on");
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_retry_that_fails_waits_the_retry_base() {
    // No endpoint configured: every spool retry fails before sending.
    let state = tempfile::tempdir().expect("tempdir");
    let mut config = agent_config(&[], None);
    config.trace.target = "127.0.0.1".to_owned();
    config.schedule.retry_base_secs = 30;
    config.schedule.retry_max_secs = 600;
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    spool_reports(&agent, 1, chrono::Utc::now()).await;
    agent
        .run(tokio::time::sleep(Duration::from_millis(2500)))
        .await
        .expect("daemon");
    let wakeups = agent.daemon_wakeups();
    assert_eq!(wakeups, 1, "the failing retry was repeated");
    assert_eq!(agent.spool().depth().expect("depth"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_current_consent_a_waiting_spool_wakes_nobody() {
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[dead_endpoint()], None);
    let (earlier, _) = agent(state.path(), config.clone(), 3);
    earlier.accept_consent().expect("consent");
    spool_reports(&earlier, 2, chrono::Utc::now()).await;
    drop(earlier);
    // The consent text changed since: nothing is sent until it is accepted.
    let mut config = config;
    config.consent.text_version = "2".to_owned();
    let (agent, traces) = agent(state.path(), config, 3);
    agent
        .run(tokio::time::sleep(Duration::from_millis(2500)))
        .await
        .expect("daemon");
    assert_eq!(
        agent.daemon_wakeups(),
        1,
        "woke for a spool it may not send"
    );
    assert_eq!(traces.load(Ordering::SeqCst), 0);
    assert_eq!(agent.spool().depth().expect("depth"), 2);
}
