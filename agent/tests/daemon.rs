//! `run`: probes on schedule, drains the spool, and stops promptly.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_probes_and_stops_promptly_on_shutdown() {
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
    let (agent, traces) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = async {
        agent
            .run(async {
                let _ = stopped.await;
            })
            .await
    };
    let control = async {
        // The first probe runs at once.
        let deadline = Instant::now() + Duration::from_secs(20);
        while stored(&running).await.is_empty() {
            assert!(Instant::now() < deadline, "the daemon did not probe");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let asked = Instant::now();
        stop.send(()).expect("daemon alive");
        asked
    };
    let (result, asked) = tokio::join!(daemon, control);
    result.expect("daemon");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?} to stop",
        asked.elapsed()
    );
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

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = agent.run(async {
        let _ = stopped.await;
    });
    let control = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        // The spooled report plus the daemon's own first probe.
        while stored(&running).await.len() < 2 || agent.spool().depth().expect("depth") > 0 {
            assert!(Instant::now() < deadline, "the spool was not drained");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.send(()).expect("daemon alive");
    };
    let (result, ()) = tokio::join!(daemon, control);
    result.expect("daemon");
    assert_eq!(stored(&running).await.len(), 2);
    running.shutdown().await.expect("shutdown");
}
