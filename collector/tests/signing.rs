//! Signed probes end to end over HTTPS on loopback: enrolment, signed
//! reports accepted, replayed / forged / expired ones refused, a key change
//! flagged, unsigned reports accepted or refused by configuration.

mod support;

use std::time::Duration;

use chrono::Utc;
use lineprobe_collector::{RunningCollector, SignatureOutcome};
use lineprobe_shared::{
    InstallId, ProbeSigningKey, SIGNATURE_HEADER, SignatureHeader, SignedPurpose, body_sha256_hex,
    signed_message,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ENROL: &str = "/api/v1/enrol";
const REPORT: &str = "/api/v1/report";

/// Every test is bounded in time.
const LIMIT: Duration = Duration::from_mins(1);

struct Probe {
    install_id: InstallId,
    key: ProbeSigningKey,
}

impl Probe {
    fn new(install_id: &str) -> Self {
        Self {
            install_id: InstallId::parse(install_id).expect("install id"),
            key: ProbeSigningKey::generate(),
        }
    }

    fn header(&self, purpose: SignedPurpose, nonce: &str, ts: i64, body: &[u8]) -> String {
        let message = signed_message(purpose, &self.install_id, nonce, ts, &body_sha256_hex(body));
        SignatureHeader {
            key_id: self.key.public_key().key_id(),
            ts,
            signature: self.key.sign(&message),
        }
        .to_string()
    }

    /// A fresh report of this probe, as the JSON bytes sent.
    fn report(&self) -> (String, Vec<u8>) {
        let mut report = support::sample_report();
        report["install_id"] = Value::String(self.install_id.to_string());
        let id = report["report_id"].as_str().expect("id").to_owned();
        (id, serde_json::to_vec(&report).expect("encode"))
    }
}

async fn enrol(
    client: &reqwest::Client,
    running: &RunningCollector,
    probe: &Probe,
) -> (StatusCode, Value) {
    let nonce = uuid::Uuid::now_v7().to_string();
    let body = serde_json::to_vec(&json!({
        "install_id": probe.install_id.as_str(),
        "public_key": probe.key.public_key().to_base64(),
        "nonce": nonce,
    }))
    .expect("encode");
    let header = probe.header(SignedPurpose::Enrol, &nonce, Utc::now().timestamp(), &body);
    send(client, running, ENROL, body, Some(header)).await
}

async fn send(
    client: &reqwest::Client,
    running: &RunningCollector,
    path: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> (StatusCode, Value) {
    let mut request = client
        .post(support::public_url(running, path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(sig) = signature {
        request = request.header(SIGNATURE_HEADER, sig);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let json = response.json().await.unwrap_or(Value::Null);
    (status, json)
}

async fn send_signed(
    client: &reqwest::Client,
    running: &RunningCollector,
    probe: &Probe,
    ts: i64,
) -> (StatusCode, Value, (String, Vec<u8>, String)) {
    let (id, body) = probe.report();
    let header = probe.header(SignedPurpose::Report, &id, ts, &body);
    let (status, json) = send(client, running, REPORT, body.clone(), Some(header.clone())).await;
    (status, json, (id, body, header))
}

/// The signature check stored with each report, by `report_id`.
async fn stored_checks(running: &RunningCollector) -> Vec<(String, String)> {
    running
        .staging
        .export_after(0, 1000)
        .await
        .expect("export")
        .into_iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.json).expect("json");
            (
                v["report_id"].as_str().expect("id").to_owned(),
                v["envelope"]["trust"]["signature"]
                    .as_str()
                    .unwrap_or("none")
                    .to_owned(),
            )
        })
        .collect()
}

fn check_of(checks: &[(String, String)], id: &str) -> String {
    checks
        .iter()
        .find(|(i, _)| i == id)
        .map_or_else(|| "not stored".to_owned(), |(_, c)| c.clone())
}

#[tokio::test]
async fn enrolled_probe_signed_reports_are_verified_and_attacks_refused() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (running, client) = support::start(dir.path(), "").await;
        let probe = Probe::new("probe-signed-1");

        let (status, answer) = enrol(&client, &running, &probe).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["status"], "enrolled");
        assert_eq!(answer["key_id"], probe.key.public_key().key_id());
        assert!(answer["server_time"].as_i64().is_some());
        // Enrolling the same key again changes nothing.
        let (status, answer) = enrol(&client, &running, &probe).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["status"], "already_enrolled");

        // A signed report is stored and verified.
        let now = Utc::now().timestamp();
        let (status, answer, (id, body, header)) =
            send_signed(&client, &running, &probe, now).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(check_of(&stored_checks(&running).await, &id), "verified");

        // The very same request again: replayed.
        let (status, answer) = send(
            &client,
            &running,
            REPORT,
            body.clone(),
            Some(header.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(answer["error"], "replayed");
        // A good-faith retry is signed again with a fresh timestamp: it is
        // not a replay, and the store answers `duplicate`.
        let retry = probe.header(SignedPurpose::Report, &id, now + 1, &body);
        let (status, answer) = send(&client, &running, REPORT, body.clone(), Some(retry)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["status"], "duplicate");

        // Body altered after signing: forged.
        let (id2, body2) = probe.report();
        let header2 = probe.header(SignedPurpose::Report, &id2, now, &body2);
        let mut altered: Value = serde_json::from_slice(&body2).expect("json");
        altered["declared"]["address"] = json!("somewhere else");
        let (status, answer) = send(
            &client,
            &running,
            REPORT,
            serde_json::to_vec(&altered).expect("encode"),
            Some(header2),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["error"], "bad_signature");

        // Signed by another key under the enrolled key's id: forged.
        let impostor = Probe {
            install_id: probe.install_id.clone(),
            key: ProbeSigningKey::generate(),
        };
        let (id3, body3) = probe.report();
        let mut forged =
            SignatureHeader::parse(&impostor.header(SignedPurpose::Report, &id3, now, &body3))
                .expect("header");
        forged.key_id = probe.key.public_key().key_id();
        let (status, answer) =
            send(&client, &running, REPORT, body3, Some(forged.to_string())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["error"], "bad_signature");
        // A key that is not enrolled at all: unknown.
        let (status, answer, _) = send_signed(&client, &running, &impostor, now).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["error"], "unknown_key");

        // Expired (and far-future) timestamps.
        let (status, answer, _) = send_signed(&client, &running, &probe, now - 3600).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["error"], "stale_timestamp");
        assert!(
            answer["detail"].as_str().unwrap_or("").contains("expired"),
            "{answer}"
        );
        let (status, answer, _) = send_signed(&client, &running, &probe, now + 3600).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert!(answer["server_time"].as_i64().is_some(), "{answer}");

        // An enrolled probe's reports must be signed: no downgrade.
        let (_, unsigned) = probe.report();
        let (status, answer) = send(&client, &running, REPORT, unsigned, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["error"], "signature_required");

        // A malformed header says what is wrong.
        let (id4, body4) = probe.report();
        let _ = id4;
        let (status, answer) = send(
            &client,
            &running,
            REPORT,
            body4,
            Some("v1; key=zz; ts=1; sig=AA==".to_owned()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"], "bad_signature_header");
        assert!(
            answer["detail"].as_str().unwrap_or("").contains("key id"),
            "{answer}"
        );

        assert_counted(&running).await;
        // Only the one verified report was stored.
        assert_eq!(stored_checks(&running).await.len(), 1);
        running.shutdown().await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}

/// Every check of the first test is counted by its result.
async fn assert_counted(running: &RunningCollector) {
    let m = &running.metrics.signatures;
    assert_eq!(m.check_count(SignatureOutcome::Verified), 2);
    assert_eq!(m.check_count(SignatureOutcome::Replayed), 1);
    assert_eq!(m.check_count(SignatureOutcome::Forged), 2);
    assert_eq!(m.check_count(SignatureOutcome::UnknownKey), 1);
    assert_eq!(m.check_count(SignatureOutcome::Stale), 2);
    assert_eq!(m.check_count(SignatureOutcome::UnsignedRefused), 1);
    assert_eq!(m.check_count(SignatureOutcome::Malformed), 1);
    assert_eq!(m.enrolment_count("enrolled"), 1);
    assert_eq!(m.enrolment_count("already_enrolled"), 1);
    let text = running
        .metrics
        .render(&running.staging)
        .await
        .expect("metrics");
    assert!(
        text.contains("lineprobe_collector_signature_checks_total{result=\"replayed\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_changed_key_is_accepted_but_flagged() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (running, client) = support::start(dir.path(), "").await;
        let original = Probe::new("probe-contested");
        let (status, _) = enrol(&client, &running, &original).await;
        assert_eq!(status, StatusCode::CREATED);
        let now = Utc::now().timestamp();
        let (status, _, (before, _, _)) = send_signed(&client, &running, &original, now).await;
        assert_eq!(status, StatusCode::CREATED);

        // Someone enrols another key for the same install_id.
        let other = Probe {
            install_id: original.install_id.clone(),
            key: ProbeSigningKey::generate(),
        };
        let (status, answer) = enrol(&client, &running, &other).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["status"], "key_changed");
        let (status, answer, (by_new, _, _)) = send_signed(&client, &running, &other, now).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        // The original key still works (a hijacker cannot lock the real
        // probe out) but its reports are flagged too.
        let (status, answer, (by_old, _, _)) = send_signed(&client, &running, &original, now).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");

        let checks = stored_checks(&running).await;
        assert_eq!(check_of(&checks, &before), "verified");
        assert_eq!(check_of(&checks, &by_new), "key_changed");
        assert_eq!(check_of(&checks, &by_old), "key_changed");
        let exported: Vec<Value> = running
            .staging
            .export_after(0, 10)
            .await
            .expect("export")
            .iter()
            .map(|r| serde_json::from_slice(&r.json).expect("json"))
            .collect();
        let stored = exported.last().expect("one");
        // The traffic monitor may add its own reasons (a new source);
        // the changed key comes first and caps the score.
        let trust = &stored["envelope"]["trust"];
        assert_eq!(trust["reasons"][0], "key_changed", "{trust}");
        assert_eq!(trust["signature"], "key_changed", "{trust}");
        assert!(trust["score"].as_u64().expect("score") <= 30, "{trust}");
        // Each report names the key that verified it, for the internal
        // side to see two keys at once across nodes.
        assert_eq!(trust["key_id"], original.key.public_key().key_id());
        let key_of = |id: &str| {
            exported
                .iter()
                .find(|v| v["report_id"] == id)
                .map(|v| v["envelope"]["trust"]["key_id"].clone())
        };
        assert_eq!(
            key_of(&by_new),
            Some(json!(other.key.public_key().key_id()))
        );
        assert_eq!(
            key_of(&before),
            Some(json!(original.key.public_key().key_id()))
        );

        // The history is durable and complete.
        let keys = running
            .staging
            .install_keys(&original.install_id)
            .await
            .expect("read")
            .expect("enrolled");
        assert_eq!(keys.keys.len(), 2);
        assert_eq!(keys.current_key_id, other.key.public_key().key_id());
        assert!(keys.key_changed_at.is_some());
        running.shutdown().await.expect("shutdown");

        // After a restart the enrolment is still there.
        let (running, client) = support::start(dir.path(), "").await;
        let (status, answer, _) = send_signed(&client, &running, &other, now).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        running.shutdown().await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}

/// An installation keeps at most `max_keys_per_install` keys: one more
/// retires the one enrolled least recently. So whoever fills an install
/// id's keys before its probe enrols at a node (an install id is no
/// secret) cannot lock the probe out there: its enrolment retires one of
/// theirs, and a probe whose key was retired enrols again.
#[tokio::test]
async fn key_history_is_bounded_and_cannot_lock_a_probe_out() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (running, client) =
            support::start(dir.path(), "[signing]\nmax_keys_per_install = 2\n").await;
        // Two throwaway keys for the victim's install id, then the probe.
        let squatters = [Probe::new("probe-many-keys"), Probe::new("probe-many-keys")];
        for squatter in &squatters {
            let (status, answer) = enrol(&client, &running, squatter).await;
            assert_eq!(status, StatusCode::CREATED, "{answer}");
        }
        let probe = Probe::new("probe-many-keys");
        let (status, answer) = enrol(&client, &running, &probe).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["status"], "key_changed");
        let now = Utc::now().timestamp();
        let (status, answer, _) = send_signed(&client, &running, &probe, now).await;
        assert_eq!(status, StatusCode::CREATED, "the probe's report: {answer}");
        // The key enrolled least recently was retired; the other still
        // verifies (flagged, as every report of a contested install id).
        let (status, answer, _) = send_signed(&client, &running, &squatters[0], now).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["error"], "unknown_key");
        let (status, answer, _) = send_signed(&client, &running, &squatters[1], now).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        // More throwaway keys retire the probe's in turn; it enrols again
        // (as the agent does on `unknown_key`) and is heard again.
        for _ in 0..2 {
            let (status, _) = enrol(&client, &running, &Probe::new("probe-many-keys")).await;
            assert_eq!(status, StatusCode::CREATED);
        }
        let (status, answer, _) = send_signed(&client, &running, &probe, now).await;
        assert_eq!(answer["error"], "unknown_key", "{status}");
        let (status, answer) = enrol(&client, &running, &probe).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        let (status, answer, _) = send_signed(&client, &running, &probe, now).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        running.shutdown().await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}

/// A node keeps at most `max_enrolled_installs` installations: one more
/// forgets the one heard from least recently, whose probe is then
/// answered `unknown_key` and enrols again (as new, not as a key change);
/// until it does, its install id is taken unsigned like any other.
#[tokio::test]
async fn enrolled_installations_are_bounded_and_a_forgotten_probe_enrols_again() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (running, client) =
            support::start(dir.path(), "[signing]\nmax_enrolled_installs = 2\n").await;
        let probes = [
            Probe::new("probe-bound-1"),
            Probe::new("probe-bound-2"),
            Probe::new("probe-bound-3"),
        ];
        for probe in &probes[..2] {
            let (status, answer) = enrol(&client, &running, probe).await;
            assert_eq!(status, StatusCode::CREATED, "{answer}");
        }
        let now = Utc::now().timestamp();
        let (status, answer, _) = send_signed(&client, &running, &probes[0], now).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        let (status, answer) = enrol(&client, &running, &probes[2]).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["status"], "enrolled");
        assert_eq!(running.staging.enrolled_installs(), 2);

        // The first enrolled least recently (its report the same day does
        // not count again): forgotten.
        let (status, answer, _) = send_signed(&client, &running, &probes[0], now).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["error"], "unknown_key");
        let (_, unsigned) = probes[0].report();
        let (status, answer) = send(&client, &running, REPORT, unsigned, None).await;
        assert_eq!(status, StatusCode::CREATED, "taken unsigned: {answer}");
        let (status, answer) = enrol(&client, &running, &probes[0]).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["status"], "enrolled", "a new installation again");
        let (status, answer, (id, _, _)) = send_signed(&client, &running, &probes[0], now).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(check_of(&stored_checks(&running).await, &id), "verified");
        // Its enrolment forgot the second.
        let (status, answer, _) = send_signed(&client, &running, &probes[1], now).await;
        assert_eq!(answer["error"], "unknown_key", "{status}");
        assert_eq!(running.staging.enrolled_installs(), 2);
        let metrics = support::metrics_text(&client, &running).await;
        assert!(
            metrics.contains("lineprobe_collector_enrolled_installations 2"),
            "{metrics}"
        );
        running.shutdown().await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn enrolment_must_be_signed_by_the_enrolled_key() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (running, client) = support::start(dir.path(), "").await;
        let probe = Probe::new("probe-enrol-proof");
        let thief = Probe::new("probe-enrol-proof");
        let nonce = uuid::Uuid::now_v7().to_string();
        // The probe's public key, signed by someone else's key.
        let body = serde_json::to_vec(&json!({
            "install_id": probe.install_id.as_str(),
            "public_key": probe.key.public_key().to_base64(),
            "nonce": nonce,
        }))
        .expect("encode");
        let header = thief.header(SignedPurpose::Enrol, &nonce, Utc::now().timestamp(), &body);
        let (status, answer) = send(&client, &running, ENROL, body.clone(), Some(header)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["error"], "bad_signature");
        // Unsigned.
        let (status, answer) = send(&client, &running, ENROL, body, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["error"], "signature_required");
        // Not an enrolment.
        let (status, answer) = send(&client, &running, ENROL, b"{}".to_vec(), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"], "invalid_enrolment");
        // A key that is not one, a nonce that is not fresh-looking, a body
        // too large: each refused before any signature work, saying what
        // to fix.
        let mistakes = [
            (
                json!({"install_id": probe.install_id.as_str(), "public_key": "not-a-key",
                    "nonce": nonce}),
                "public_key",
            ),
            (
                json!({"install_id": probe.install_id.as_str(),
                    "public_key": probe.key.public_key().to_base64(), "nonce": "1234"}),
                "nonce",
            ),
            (
                json!({"install_id": probe.install_id.as_str(),
                    "public_key": probe.key.public_key().to_base64(), "nonce": "../../etc/passwd"}),
                "nonce",
            ),
        ];
        for (doc, field) in mistakes {
            let body = serde_json::to_vec(&doc).expect("encode");
            let header = probe.header(SignedPurpose::Enrol, &nonce, Utc::now().timestamp(), &body);
            let (status, answer) = send(&client, &running, ENROL, body, Some(header)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{doc}: {answer}");
            assert_eq!(answer["error"], "invalid_enrolment", "{doc}");
            assert!(
                answer["detail"]
                    .as_str()
                    .expect("detail")
                    .starts_with(field),
                "{doc}: {answer}"
            );
        }
        let (status, answer) = send(&client, &running, ENROL, vec![b' '; 5000], None).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
        assert_eq!(answer["error"], "too_large");
        // A report signature cannot pass for an enrolment's.
        let body = serde_json::to_vec(&json!({
            "install_id": probe.install_id.as_str(),
            "public_key": probe.key.public_key().to_base64(),
            "nonce": nonce,
        }))
        .expect("encode");
        let header = probe.header(SignedPurpose::Report, &nonce, Utc::now().timestamp(), &body);
        let (status, _) = send(&client, &running, ENROL, body, Some(header)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // GET on the enrolment path is an ordinary 404.
        let response = client
            .get(support::public_url(&running, ENROL))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        running.shutdown().await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn unsigned_reports_are_accepted_unless_required() {
    tokio::time::timeout(LIMIT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (running, client) = support::start(dir.path(), "").await;
        let old_probe = Probe::new("probe-old");
        let (id, body) = old_probe.report();
        let (status, answer) = send(&client, &running, REPORT, body, None).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(check_of(&stored_checks(&running).await, &id), "unsigned");
        assert_eq!(
            running
                .metrics
                .signatures
                .check_count(SignatureOutcome::Unsigned),
            1
        );
        running.shutdown().await.expect("shutdown");

        let dir = tempfile::tempdir().expect("tempdir");
        let (running, client) = support::start(dir.path(), "[signing]\nrequire = true\n").await;
        let (_, body) = old_probe.report();
        let (status, answer) = send(&client, &running, REPORT, body, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
        assert_eq!(answer["error"], "signature_required");
        assert!(
            answer["detail"]
                .as_str()
                .unwrap_or("")
                .contains("only signed reports"),
            "{answer}"
        );
        // A signed one is still welcome.
        let (status, _) = enrol(&client, &running, &old_probe).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, answer, _) =
            send_signed(&client, &running, &old_probe, Utc::now().timestamp()).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        running.shutdown().await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}
