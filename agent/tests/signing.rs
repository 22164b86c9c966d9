//! Signed probes end to end with a real collector on loopback: the agent
//! creates its key, enrols it, signs every upload (spool retries included),
//! re-enrols where a collector lost it, uses a key store the embedding app
//! supplies, and sends unsigned reports to collectors that predate signing.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lineprobe_agent::{Delivery, KEY_FILE, KeyStore, ProbeOutcome};
use lineprobe_collector::{IngestOutcome, RunningCollector, SignatureOutcome};
use lineprobe_shared::{ProbePublicKey, ProbeSigningKey, SignatureCheck};
use support::*;

/// Every test is bounded in time.
const LIMIT: Duration = Duration::from_mins(1);

fn signature_of(report: &lineprobe_shared::Report) -> Option<SignatureCheck> {
    report
        .envelope
        .as_ref()
        .and_then(|e| e.trust.as_ref())
        .map(|t| t.signature)
}

async fn enrolled_keys(running: &RunningCollector, agent: &lineprobe_agent::Agent) -> Vec<String> {
    running
        .staging
        .install_keys(&agent.state().install_id().expect("install id"))
        .await
        .expect("read keys")
        .map(|k| k.keys.into_iter().map(|k| k.key_id).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_enrols_its_key_and_signs_every_report() {
    tokio::time::timeout(LIMIT, async {
        let col_dir = tempfile::tempdir().expect("tempdir");
        // Unsigned reports refused: only a signing agent gets through.
        let running = start_collector(col_dir.path(), 0, "[signing]\nrequire = true\n").await;
        let state = tempfile::tempdir().expect("tempdir");
        let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
        let (agent, _) = agent(state.path(), config, 5);
        agent.accept_consent().expect("consent");
        // Nothing is created before the first contact.
        assert!(!state.path().join(KEY_FILE).exists());

        for _ in 0..2 {
            let outcome = agent.probe_once().await.expect("probe");
            assert!(
                matches!(outcome, ProbeOutcome::Delivered { .. }),
                "{outcome:?}"
            );
        }
        let reports = stored(&running).await;
        assert_eq!(reports.len(), 2);
        for r in &reports {
            assert_eq!(signature_of(r), Some(SignatureCheck::Verified));
        }
        // The key file holds the enrolled key, readable by its owner only.
        let key_path = state.path().join(KEY_FILE);
        let text = std::fs::read_to_string(&key_path).expect("key file");
        let key = ProbeSigningKey::from_base64(&text).expect("key");
        assert_eq!(
            enrolled_keys(&running, &agent).await,
            vec![key.public_key().key_id()]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key_path)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        // Enrolled once for both reports.
        let m = &running.metrics.signatures;
        assert_eq!(m.enrolment_count("enrolled"), 1);
        assert_eq!(m.enrolment_count("already_enrolled"), 0);
        assert_eq!(m.check_count(SignatureOutcome::Verified), 2);
        running.shutdown().await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_retries_are_signed_again_and_never_look_replayed() {
    tokio::time::timeout(LIMIT, async {
        let col_dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let state = tempfile::tempdir().expect("tempdir");
        // The collector's certificate does not exist until it starts: start
        // it once to make it, then stop it so that the probe spools.
        let running = start_collector(col_dir.path(), port, "").await;
        running.shutdown().await.expect("shutdown");
        let config = agent_config(&[url], Some(&collector_cert(col_dir.path())));
        let (agent, _) = agent(state.path(), config, 4);
        agent.accept_consent().expect("consent");
        let outcome = agent.probe_once().await.expect("probe");
        assert!(
            matches!(outcome, ProbeOutcome::Spooled { .. }),
            "{outcome:?}"
        );
        let entry = agent
            .spool()
            .ids()
            .expect("ids")
            .first()
            .copied()
            .expect("spooled");

        let running = start_collector(col_dir.path(), port, "").await;
        let summary = agent.flush_spool().await.expect("drain");
        assert_eq!(summary.delivered, 1, "{summary:?}");
        // The answer was "lost": the very same report is sent again at once.
        // It is signed again (a later timestamp), so the collector answers
        // `duplicate` rather than refusing it as a replay.
        let report = stored(&running).await.remove(0);
        assert_eq!(report.report_id, entry);
        assert_eq!(signature_of(&report), Some(SignatureCheck::Verified));
        let mut again = report.clone();
        again.envelope = None;
        let entry_again = lineprobe_agent::SpoolEntry {
            report: again,
            spooled_at: chrono::Utc::now(),
            retries: 1,
            next_attempt_at: chrono::Utc::now(),
        };
        agent.spool().put(&entry_again).expect("respool");
        let summary = agent.flush_spool().await.expect("drain again");
        assert_eq!(summary.delivered, 1, "{summary:?}");
        assert_eq!(running.metrics.ingest_count(IngestOutcome::Duplicate), 1);
        let m = &running.metrics.signatures;
        assert_eq!(m.check_count(SignatureOutcome::Replayed), 0);
        assert_eq!(m.check_count(SignatureOutcome::Verified), 2);
        assert_eq!(stored(&running).await.len(), 1);
        running.shutdown().await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_lost_the_enrolment_gets_it_again() {
    tokio::time::timeout(LIMIT, async {
        let col_dir = tempfile::tempdir().expect("tempdir");
        let running = start_collector(col_dir.path(), 0, "").await;
        let port = running.public_addr.port();
        let state = tempfile::tempdir().expect("tempdir");
        let cert = std::fs::read(collector_cert(col_dir.path())).expect("cert");
        let pinned = state.path().join("ca.pem");
        std::fs::write(&pinned, cert).expect("pin");
        let config = agent_config(&[endpoint(&running)], Some(&pinned));
        let (agent, _) = agent(state.path(), config, 4);
        agent.accept_consent().expect("consent");
        agent.probe_once().await.expect("probe");
        running.shutdown().await.expect("shutdown");

        // A new store behind the same address (same certificate): it does
        // not know the key. The agent hears `unknown_key`, enrols, resends.
        let fresh = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(fresh.path().join("tls")).expect("tls dir");
        for name in ["cert.pem", "key.pem"] {
            std::fs::copy(
                col_dir.path().join("tls").join(name),
                fresh.path().join("tls").join(name),
            )
            .expect("copy tls");
        }
        let running = start_collector(fresh.path(), port, "").await;
        let outcome = agent.probe_once().await.expect("probe");
        assert!(
            matches!(
                outcome,
                ProbeOutcome::Delivered {
                    delivery: Delivery::Stored { .. },
                    ..
                }
            ),
            "{outcome:?}"
        );
        let m = &running.metrics.signatures;
        assert_eq!(m.check_count(SignatureOutcome::UnknownKey), 1);
        assert_eq!(m.enrolment_count("enrolled"), 1);
        let reports = stored(&running).await;
        assert_eq!(signature_of(&reports[0]), Some(SignatureCheck::Verified));
        running.shutdown().await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}

/// A key store as an embedding app would supply (an Android Keystore or a
/// CNG key): here in memory, counting signatures.
#[derive(Debug)]
struct AppKeyStore {
    key: ProbeSigningKey,
    signed: Mutex<usize>,
}

impl KeyStore for AppKeyStore {
    fn public_key(&self) -> Result<ProbePublicKey, lineprobe_agent::Error> {
        Ok(self.key.public_key())
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], lineprobe_agent::Error> {
        *self.signed.lock().expect("lock") += 1;
        Ok(self.key.sign(message))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_app_supplies_its_own_key_store() {
    tokio::time::timeout(LIMIT, async {
        let col_dir = tempfile::tempdir().expect("tempdir");
        let running = start_collector(col_dir.path(), 0, "").await;
        let state = tempfile::tempdir().expect("tempdir");
        let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
        let store = Arc::new(AppKeyStore {
            key: ProbeSigningKey::generate(),
            signed: Mutex::new(0),
        });
        let (agent, _) = agent(state.path(), config, 4);
        let agent = agent.with_key_store(Arc::clone(&store) as Arc<dyn KeyStore>);
        agent.accept_consent().expect("consent");
        agent.probe_once().await.expect("probe");
        assert_eq!(
            enrolled_keys(&running, &agent).await,
            vec![store.key.public_key().key_id()]
        );
        // The enrolment and the report.
        assert_eq!(*store.signed.lock().expect("lock"), 2);
        assert!(!state.path().join(KEY_FILE).exists());
        let reports = stored(&running).await;
        assert_eq!(signature_of(&reports[0]), Some(SignatureCheck::Verified));
        running.shutdown().await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_without_enrolment_gets_unsigned_reports() {
    tokio::time::timeout(LIMIT, async {
        let col_dir = tempfile::tempdir().expect("tempdir");
        // The collector enrols elsewhere than the agent asks: to the agent
        // this is a collector that predates signing (404 on enrolment).
        let running = start_collector(
            col_dir.path(),
            0,
            "[signing]\nenrol_paths = [\"/elsewhere/enrol\"]\n",
        )
        .await;
        let state = tempfile::tempdir().expect("tempdir");
        let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
        let (agent, _) = agent(state.path(), config, 4);
        agent.accept_consent().expect("consent");
        for _ in 0..2 {
            let outcome = agent.probe_once().await.expect("probe");
            assert!(
                matches!(outcome, ProbeOutcome::Delivered { .. }),
                "{outcome:?}"
            );
        }
        let reports = stored(&running).await;
        assert_eq!(reports.len(), 2);
        for r in &reports {
            assert_eq!(signature_of(r), Some(SignatureCheck::Unsigned));
        }
        assert!(reports[0].endpoint_attempts.is_empty());
        running.shutdown().await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}
