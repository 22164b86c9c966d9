//! Consent gating: nothing is traced or sent before the subscriber agreed;
//! revoking stops all sending and deletes the spool.

mod support;

use std::sync::atomic::Ordering;

use lineprobe_agent::{Error, ProbeOutcome};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_traced_or_sent_before_consent() {
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
    let (agent, traces) = agent(state.path(), config, 3);

    assert!(matches!(agent.probe_once().await, Err(Error::NoConsent)));
    assert!(matches!(agent.make_report().await, Err(Error::NoConsent)));
    assert!(matches!(
        agent.trace(Some("127.0.0.1"), None).await,
        Err(Error::NoConsent)
    ));
    assert!(matches!(agent.flush_spool().await, Err(Error::NoConsent)));
    let err = agent
        .probe_once()
        .await
        .expect_err("no consent")
        .to_string();
    assert!(err.contains("consent --accept"), "{err}");
    assert_eq!(traces.load(Ordering::SeqCst), 0, "traced before consent");
    assert!(stored(&running).await.is_empty(), "sent before consent");
    assert!(
        agent
            .status()
            .expect("status")
            .to_string()
            .contains("consent: not given")
    );

    let record = agent.accept_consent().expect("accept");
    assert_eq!(record.text_version, "1");
    let outcome = agent.probe_once().await.expect("probe");
    assert!(
        matches!(outcome, ProbeOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert_eq!(traces.load(Ordering::SeqCst), 1);
    let reports = stored(&running).await;
    assert_eq!(
        reports[0].consent.as_ref(),
        Some(&record),
        "the consent travels in the report"
    );
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_consent_deletes_the_spool_and_stops_sending() {
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[dead_endpoint()], None);
    let (agent, traces) = agent(state.path(), config, 3);
    agent.accept_consent().expect("accept");
    for _ in 0..2 {
        let outcome = agent.probe_once().await.expect("probe");
        assert!(
            matches!(outcome, ProbeOutcome::Spooled { .. }),
            "{outcome:?}"
        );
    }
    assert_eq!(agent.spool().depth().expect("depth"), 2);

    let deleted = agent.revoke_consent().expect("revoke");
    assert_eq!(deleted, 2);
    assert_eq!(agent.spool().depth().expect("depth"), 0);
    assert!(!agent.spool().dir().exists(), "the spool folder is left");
    assert!(agent.consent().expect("consent").is_none());
    assert!(matches!(agent.probe_once().await, Err(Error::NoConsent)));
    assert!(matches!(agent.flush_spool().await, Err(Error::NoConsent)));
    assert!(matches!(
        agent.update_manifest().await,
        Err(Error::NoConsent)
    ));
    assert_eq!(traces.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mac_is_sent_only_when_configured_and_consented() {
    let state = tempfile::tempdir().expect("tempdir");
    let mut config = agent_config(&[dead_endpoint()], None);
    config.device.send_mac = true;
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("accept");
    let report = agent.make_report().await.expect("report");
    // Whether this machine has a default route with a MAC is its business;
    // when the MAC is there, consent is too, and the report is valid.
    if report.device.mac.is_some() {
        assert!(report.consent.is_some());
    }
    report.validate_submitted().expect("valid report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gps_fix_from_the_host_replaces_the_typed_location() {
    let state = tempfile::tempdir().expect("tempdir");
    let (agent, _) = agent(state.path(), agent_config(&[dead_endpoint()], None), 3);
    agent.accept_consent().expect("accept");
    assert!(
        agent
            .make_report()
            .await
            .expect("report")
            .declared
            .location
            .is_none()
    );
    agent.set_gps_fix(Some((22.54, 114.05, 15.0))).expect("fix");
    let location = agent
        .make_report()
        .await
        .expect("report")
        .declared
        .location
        .expect("location");
    assert_eq!(location.source, lineprobe_shared::LocationSource::Gps);
    assert!((location.lat - 22.54).abs() < 1e-9 && (location.accuracy_m - 15.0).abs() < 1e-9);
    let err = agent
        .set_gps_fix(Some((95.0, 0.0, 1.0)))
        .expect_err("not a position")
        .to_string();
    assert!(err.contains("latitude"), "{err}");
    agent.set_gps_fix(None).expect("forget");
    assert!(
        agent
            .make_report()
            .await
            .expect("report")
            .declared
            .location
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_to_an_earlier_text_no_longer_counts() {
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
    let (agent, _) = agent(state.path(), config.clone(), 3);
    agent.accept_consent().expect("accept version 1");

    // The consent text changes (it now asks for more): the same state under
    // the new config traces and sends nothing until it is accepted again.
    let mut newer = config;
    newer.consent.text_version = "2".to_owned();
    let (agent, traces) = support::agent(state.path(), newer, 3);
    let err = agent.probe_once().await.expect_err("outdated consent");
    assert!(
        matches!(&err, Error::ConsentOutdated { accepted, current } if accepted == "1" && current == "2"),
        "{err}"
    );
    assert!(err.to_string().contains("consent --accept"), "{err}");
    assert!(matches!(
        agent.make_report().await,
        Err(Error::ConsentOutdated { .. })
    ));
    assert_eq!(traces.load(Ordering::SeqCst), 0, "traced under old consent");
    assert!(stored(&running).await.is_empty(), "sent under old consent");
    let status = agent.status().expect("status").to_string();
    assert!(status.contains("the text is now version 2"), "{status}");

    // The daemon only waits for it.
    let ran = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        agent.run(std::future::pending()),
    )
    .await;
    assert!(ran.is_err(), "the daemon ended: {ran:?}");
    assert_eq!(traces.load(Ordering::SeqCst), 0, "the daemon probed");

    agent.accept_consent().expect("accept version 2");
    let outcome = agent.probe_once().await.expect("probe");
    assert!(
        matches!(outcome, ProbeOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    running.shutdown().await.expect("shutdown");
}

/// Traces only once `release` has been told (or dropped), and says when it
/// has started through `started`.
#[derive(Debug)]
struct GatedEngine {
    started: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    inner: FixedEngine,
}

impl lineprobe_agent::Engine for GatedEngine {
    fn kind(&self) -> lineprobe_shared::TraceEngine {
        self.inner.kind.clone()
    }

    fn check_available(&self) -> Result<(), String> {
        Ok(())
    }

    fn trace(
        &self,
        request: &lineprobe_agent::TraceRequest,
    ) -> Result<lineprobe_agent::TraceOutcome, Error> {
        let _ = self.started.send(());
        let _ = self
            .release
            .lock()
            .expect("lock")
            .recv_timeout(std::time::Duration::from_secs(20));
        self.inner.trace(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_withdrawn_during_the_trace_leaves_nothing_sent_or_kept() {
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
    let (started_tx, started) = std::sync::mpsc::sync_channel(1);
    let (release, release_rx) = std::sync::mpsc::channel();
    let traces = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let engine = GatedEngine {
        started: started_tx,
        release: std::sync::Mutex::new(release_rx),
        inner: FixedEngine {
            kind: lineprobe_shared::TraceEngine::Unprivileged,
            hops: 3,
            traces: std::sync::Arc::clone(&traces),
        },
    };
    let options = lineprobe_agent::AgentOptions {
        config,
        state_dir: Some(state.path().to_path_buf()),
        ..lineprobe_agent::AgentOptions::default()
    };
    let agent =
        lineprobe_agent::Agent::with_engines(options, vec![Box::new(engine)]).expect("agent");
    agent.accept_consent().expect("consent");

    let control = async {
        tokio::task::spawn_blocking(move || started.recv().expect("the trace starts"))
            .await
            .expect("join");
        agent.revoke_consent().expect("revoke");
        release.send(()).expect("engine waiting");
    };
    let (outcome, ()) = tokio::join!(agent.probe_once(), control);
    let err = outcome.expect_err("consent withdrawn during the trace");
    assert!(matches!(err, Error::NoConsent), "{err}");
    assert_eq!(traces.load(Ordering::SeqCst), 1);
    assert!(stored(&running).await.is_empty(), "sent after withdrawal");
    assert!(
        agent.spool().ids().expect("ids").is_empty(),
        "kept in the spool"
    );
    assert!(agent.status().expect("status").last_probe.is_none());
    running.shutdown().await.expect("shutdown");
}
