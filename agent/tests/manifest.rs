//! The signed manifest: published to a real collector, fetched by the agent
//! from `/manifest`, verified and applied; forged, older and expired
//! manifests change nothing.

mod support;

use std::time::Duration;

use chrono::Utc;
use lineprobe_agent::{AgentConfig, ManifestCheck, ProbeOutcome, apply_signed};
use lineprobe_collector::{PathPattern, RunningCollector};
use lineprobe_shared::{AgentRelease, Manifest, ManifestSigningKey, ProbeSchedule, SignedManifest};
use support::*;

fn manifest(serial: u64, endpoints: Vec<String>) -> Manifest {
    let now = Utc::now();
    Manifest {
        serial,
        issued_at: now - chrono::Duration::hours(1),
        expires_at: now + chrono::Duration::days(30),
        endpoints,
        path_patterns: vec!["/static/*/upload".to_owned()],
        schedule: ProbeSchedule {
            interval_secs: 120,
            jitter_secs: 5,
        },
        catalog_versions: std::collections::BTreeMap::default(),
        latest_agent: Some(AgentRelease {
            version: "99.0.0".to_owned(),
            url: "https://downloads.example.net/lineprobe/99.0.0/agent.zip".to_owned(),
            sha256: "ab".repeat(32),
        }),
    }
}

/// A collector that accepts manifests signed by `key`.
async fn collector_for(dir: &std::path::Path, key: &ManifestSigningKey) -> RunningCollector {
    let extra = format!(
        "[manifest]\npublic_key = \"{}\"\n",
        key.verifying_key().to_base64()
    );
    start_collector(dir, 0, &extra).await
}

/// `PUT /export/manifest`, as the internal side publishes.
async fn publish(running: &RunningCollector, dir: &std::path::Path, signed: &SignedManifest) {
    let pem = std::fs::read(collector_cert(dir)).expect("cert");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let answer = client
        .put(format!(
            "https://localhost:{}/export/manifest",
            running.export_addr.port()
        ))
        .bearer_auth(export_token())
        .body(signed.to_json().expect("json"))
        .send()
        .await
        .expect("publish");
    assert_eq!(answer.status().as_u16(), 204, "{:?}", answer.text().await);
}

fn with_key(mut config: AgentConfig, key: &ManifestSigningKey) -> AgentConfig {
    config.manifest.public_key = key.verifying_key().to_base64();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_manifest_is_fetched_verified_and_applied() {
    let key = signing_key();
    let dir = tempfile::tempdir().expect("tempdir");
    let running = collector_for(dir.path(), &key).await;
    let state = tempfile::tempdir().expect("tempdir");
    let dead = dead_endpoint();
    // The agent knows a dead endpoint first and the collector second; the
    // manifest names only the collector and another path.
    let config = with_key(
        agent_config(
            &[dead.clone(), endpoint(&running)],
            Some(&collector_cert(dir.path())),
        ),
        &key,
    );
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    assert!(agent.applied_manifest().is_none());

    publish(
        &running,
        dir.path(),
        &SignedManifest::sign(&manifest(5, vec![endpoint(&running)]), &key).expect("sign"),
    )
    .await;
    let check = agent.update_manifest().await.expect("update");
    assert!(
        matches!(check, ManifestCheck::Applied { serial: 5, .. }),
        "{check:?}"
    );

    let settings = agent.settings().expect("settings");
    let urls: Vec<_> = settings
        .endpoints
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect();
    assert_eq!(urls, vec![endpoint(&running)]);
    assert_eq!(settings.path_patterns, vec!["/static/*/upload".to_owned()]);
    assert_eq!(settings.interval, Duration::from_mins(2));

    let status = agent.status().expect("status");
    assert_eq!(status.manifest_serial, Some(5));
    let release = status.update_available.clone().expect("update announced");
    assert_eq!(release.version, "99.0.0");
    let text = status.to_string();
    assert!(
        text.contains("update available: agent 99.0.0") && text.contains(&"ab".repeat(32)),
        "{text}"
    );

    // Fetching again: the same serial is current, nothing changes.
    let check = agent.update_manifest().await.expect("again");
    assert!(
        matches!(
            check,
            ManifestCheck::Current {
                serial: Some(5),
                ..
            }
        ),
        "{check:?}"
    );

    // The next probe uses the manifest's endpoint and path.
    let outcome = agent.probe_once().await.expect("probe");
    assert!(
        matches!(outcome, ProbeOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    let reports = stored(&running).await;
    assert!(
        reports[0].endpoint_attempts.is_empty(),
        "the dead endpoint was still tried"
    );
    let path = &reports[0].envelope.as_ref().expect("envelope").path;
    assert!(
        PathPattern::parse("/static/*/upload")
            .expect("pattern")
            .matches(path),
        "{path}"
    );
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_signed_with_another_key_changes_nothing() {
    let key = signing_key();
    let dir = tempfile::tempdir().expect("tempdir");
    let running = collector_for(dir.path(), &key).await;
    let state = tempfile::tempdir().expect("tempdir");
    let config = with_key(
        agent_config(&[endpoint(&running)], Some(&collector_cert(dir.path()))),
        &key,
    );
    let (agent, _) = agent(state.path(), config.clone(), 3);
    agent.accept_consent().expect("consent");
    publish(
        &running,
        dir.path(),
        &SignedManifest::sign(&manifest(5, vec![endpoint(&running)]), &key).expect("sign"),
    )
    .await;
    agent.update_manifest().await.expect("applied");
    let manifest_file = state.path().join("manifest.json");
    let before_bytes = std::fs::read(&manifest_file).expect("stored manifest");
    let before = agent.settings().expect("settings");

    let evil = "https://203.0.113.66".to_owned();
    let unchanged = |what: &str| {
        assert_eq!(
            std::fs::read(&manifest_file).expect("read"),
            before_bytes,
            "{what} changed the stored manifest"
        );
        assert_eq!(
            agent.settings().expect("settings"),
            before,
            "{what} changed the settings"
        );
        assert_eq!(
            agent.applied_manifest().map(|m| m.serial),
            Some(5),
            "{what}"
        );
    };

    // Served over the network by a collector that trusts another key: a
    // manifest signed by someone else.
    let other = signing_key();
    let evil_dir = tempfile::tempdir().expect("tempdir");
    let evil_collector = collector_for(evil_dir.path(), &other).await;
    publish(
        &evil_collector,
        evil_dir.path(),
        &SignedManifest::sign(&manifest(9, vec![evil.clone()]), &other).expect("sign"),
    )
    .await;
    // `--endpoint` points this agent (same state) at the other collector.
    let (engines, _) = engines(3);
    let evil_agent = lineprobe_agent::Agent::with_engines(
        lineprobe_agent::AgentOptions {
            config: with_key(
                agent_config(&[], Some(&collector_cert(evil_dir.path()))),
                &key,
            ),
            state_dir: Some(state.path().to_path_buf()),
            endpoints: vec![endpoint(&evil_collector)],
            insecure_skip_verify: false,
        },
        engines,
    )
    .expect("agent");
    let err = evil_agent.update_manifest().await.expect_err("foreign key");
    assert!(err.to_string().contains("manifest"), "{err}");
    unchanged("a manifest signed with another key");

    running.shutdown().await.expect("shutdown");
    evil_collector.shutdown().await.expect("shutdown");
}

/// Two agent processes on one state folder (the daemon and a scheduled
/// `probe`) each read the applied serial, fetch, and apply: the one that
/// applies last must not put back an older manifest than the other stored.
#[test]
fn a_manifest_older_than_the_one_stored_meanwhile_is_not_applied() {
    let key = signing_key();
    let state = tempfile::tempdir().expect("tempdir");
    let config = with_key(agent_config(&["https://192.0.2.1".to_owned()], None), &key);
    let (agent, _) = agent(state.path(), config, 3);
    let now = Utc::now();
    let signed = |serial| {
        SignedManifest::sign(
            &manifest(serial, vec!["https://192.0.2.5".to_owned()]),
            &key,
        )
        .expect("sign")
        .to_json()
        .expect("json")
    };
    let apply = |serial, read_before| {
        apply_signed(
            agent.state(),
            &key.verifying_key(),
            read_before,
            now,
            &signed(serial),
            "test",
        )
        .expect("verifies")
    };
    assert!(matches!(
        apply(5, None),
        ManifestCheck::Applied { serial: 5, .. }
    ));
    // Both read 5; one applies 7, then the other, slower, 6.
    assert!(matches!(
        apply(7, Some(5)),
        ManifestCheck::Applied { serial: 7, .. }
    ));
    let late = apply(6, Some(5));
    assert!(matches!(late, ManifestCheck::Current { .. }), "{late:?}");
    assert_eq!(agent.applied_manifest().map(|m| m.serial), Some(7));
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, one refusal after another
fn altered_unsigned_older_expired_and_tampered_manifests_change_nothing() {
    let key = signing_key();
    let other = signing_key();
    let state = tempfile::tempdir().expect("tempdir");
    let config = with_key(agent_config(&["https://192.0.2.1".to_owned()], None), &key);
    let (agent, _) = agent(state.path(), config, 3);
    let now = Utc::now();
    let current = SignedManifest::sign(&manifest(5, vec!["https://192.0.2.5".to_owned()]), &key)
        .expect("sign")
        .to_json()
        .expect("json");
    let check = apply_signed(
        agent.state(),
        &key.verifying_key(),
        None,
        now,
        &current,
        "test",
    )
    .expect("applied");
    assert!(
        matches!(check, ManifestCheck::Applied { serial: 5, .. }),
        "{check:?}"
    );
    let manifest_file = state.path().join("manifest.json");
    let before_bytes = std::fs::read(&manifest_file).expect("stored manifest");
    let before = agent.settings().expect("settings");
    let evil = "https://203.0.113.66".to_owned();
    let unchanged = |what: &str| {
        assert_eq!(
            std::fs::read(&manifest_file).expect("read"),
            before_bytes,
            "{what} changed the stored manifest"
        );
        assert_eq!(
            agent.settings().expect("settings"),
            before,
            "{what} changed the settings"
        );
        assert_eq!(
            agent.applied_manifest().map(|m| m.serial),
            Some(5),
            "{what}"
        );
    };

    // The right key id, an altered payload.
    let mut altered =
        SignedManifest::sign(&manifest(9, vec!["https://192.0.2.5".to_owned()]), &key)
            .expect("sign");
    let other_payload = SignedManifest::sign(&manifest(9, vec![evil.clone()]), &key).expect("sign");
    altered.payload = other_payload.payload;
    altered.signature = SignedManifest::sign(&manifest(10, vec![evil.clone()]), &key)
        .expect("sign")
        .signature;
    let body = altered.to_json().expect("json");
    let err = apply_signed(
        agent.state(),
        &key.verifying_key(),
        Some(5),
        now,
        &body,
        "test",
    )
    .expect_err("altered");
    assert!(err.to_string().contains("signature"), "{err}");
    unchanged("an altered manifest");

    // Unsigned: not a signed manifest document at all.
    let plain = manifest(9, vec![evil.clone()]).to_json().expect("json");
    apply_signed(
        agent.state(),
        &key.verifying_key(),
        Some(5),
        now,
        &plain,
        "test",
    )
    .expect_err("unsigned");
    unchanged("an unsigned manifest");

    // Correctly signed but older.
    let older = SignedManifest::sign(&manifest(3, vec![evil.clone()]), &key)
        .expect("sign")
        .to_json()
        .expect("json");
    let check = apply_signed(
        agent.state(),
        &key.verifying_key(),
        Some(5),
        now,
        &older,
        "test",
    )
    .expect("not an error");
    assert!(matches!(check, ManifestCheck::Current { .. }), "{check:?}");
    unchanged("an older manifest");

    // Correctly signed, newer, but expired.
    let mut expired = manifest(11, vec![evil.clone()]);
    expired.issued_at = now - chrono::Duration::days(40);
    expired.expires_at = now - chrono::Duration::days(1);
    let expired = SignedManifest::sign(&expired, &key)
        .expect("sign")
        .to_json()
        .expect("json");
    let err = apply_signed(
        agent.state(),
        &key.verifying_key(),
        Some(5),
        now,
        &expired,
        "test",
    )
    .expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");
    unchanged("an expired manifest");

    // Editing the stored file does not steer the agent either.
    let mut tampered: SignedManifest = serde_json::from_slice(&before_bytes).expect("json");
    tampered.payload = SignedManifest::sign(&manifest(12, vec![evil.clone()]), &other)
        .expect("sign")
        .payload;
    std::fs::write(&manifest_file, serde_json::to_vec(&tampered).expect("json")).expect("write");
    assert!(
        agent.applied_manifest().is_none(),
        "a tampered stored manifest was trusted"
    );
    let urls: Vec<_> = agent
        .settings()
        .expect("settings")
        .endpoints
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect();
    assert!(!urls.contains(&evil), "{urls:?}");
}

#[test]
fn an_applied_manifest_that_has_expired_is_no_longer_followed() {
    let key = signing_key();
    let state = tempfile::tempdir().expect("tempdir");
    let config = with_key(agent_config(&["https://192.0.2.1".to_owned()], None), &key);
    let (agent, _) = agent(state.path(), config, 3);
    // Applied while it was in force; it expired an hour ago.
    let mut old = manifest(5, vec!["https://192.0.2.5".to_owned()]);
    let now = Utc::now();
    old.issued_at = now - chrono::Duration::days(31);
    old.expires_at = now - chrono::Duration::hours(1);
    let signed = SignedManifest::sign(&old, &key)
        .expect("sign")
        .to_json()
        .expect("json");
    let when = now - chrono::Duration::days(30);
    apply_signed(
        agent.state(),
        &key.verifying_key(),
        None,
        when,
        &signed,
        "test",
    )
    .expect("applied then");

    let settings = agent.settings().expect("settings");
    let urls: Vec<_> = settings
        .endpoints
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect();
    assert_eq!(
        urls,
        vec!["https://192.0.2.1".to_owned()],
        "the configured endpoints"
    );
    let status = agent.status().expect("status");
    assert_eq!(status.manifest_serial, Some(5));
    assert!(status.update_available.is_none(), "{status}");
    assert!(status.to_string().contains("expired"), "{status}");
    // Its serial still refuses anything older.
    let older = SignedManifest::sign(&manifest(4, vec!["https://192.0.2.4".to_owned()]), &key)
        .expect("sign")
        .to_json()
        .expect("json");
    let check = apply_signed(
        agent.state(),
        &key.verifying_key(),
        Some(5),
        now,
        &older,
        "test",
    )
    .expect("checked");
    assert!(matches!(check, ManifestCheck::Current { .. }), "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_manifest_on_a_later_endpoint_is_found() {
    // The first endpoint keeps serving serial 5 (stale, or replaying it);
    // the second has serial 6.
    let key = signing_key();
    let first_dir = tempfile::tempdir().expect("tempdir");
    let first = collector_for(first_dir.path(), &key).await;
    let second_dir = tempfile::tempdir().expect("tempdir");
    let second = collector_for(second_dir.path(), &key).await;
    let both = first_dir.path().join("both.pem");
    let mut pem = std::fs::read(collector_cert(first_dir.path())).expect("cert");
    pem.extend(std::fs::read(collector_cert(second_dir.path())).expect("cert"));
    std::fs::write(&both, pem).expect("write");
    let endpoints = vec![endpoint(&first), endpoint(&second)];
    publish(
        &first,
        first_dir.path(),
        &SignedManifest::sign(&manifest(5, endpoints.clone()), &key).expect("sign"),
    )
    .await;
    publish(
        &second,
        second_dir.path(),
        &SignedManifest::sign(&manifest(6, endpoints.clone()), &key).expect("sign"),
    )
    .await;
    let state = tempfile::tempdir().expect("tempdir");
    let config = with_key(agent_config(&endpoints, Some(&both)), &key);
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    let check = agent.update_manifest().await.expect("update");
    assert!(
        matches!(check, ManifestCheck::Applied { serial: 6, ref from } if *from == endpoints[1]),
        "{check:?}"
    );
    assert_eq!(agent.applied_manifest().map(|m| m.serial), Some(6));
    // Again: both are now at most current.
    let check = agent.update_manifest().await.expect("again");
    assert!(
        matches!(
            check,
            ManifestCheck::Current {
                serial: Some(6),
                ..
            }
        ),
        "{check:?}"
    );
    first.shutdown().await.expect("shutdown");
    second.shutdown().await.expect("shutdown");
}
