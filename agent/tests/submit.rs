//! Submission to a real collector started in this process: delivery over
//! TLS with a pinned CA, endpoint fallback, invalid reports not retried
//! elsewhere, the offline spool and exactly-once delivery, the spool bound.

mod support;

use std::sync::atomic::Ordering;

use lineprobe_agent::{Delivery, ProbeOutcome, SpoolEntry};
use lineprobe_collector::PathPattern;
use lineprobe_shared::{AttemptOutcome, TraceEngine};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_is_stored_by_a_real_collector_over_pinned_tls() {
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
    let (agent, traces) = agent(state.path(), config, 6);
    agent.accept_consent().expect("consent");

    let outcome = agent.probe_once().await.expect("probe");
    let ProbeOutcome::Delivered {
        report_id,
        delivery,
    } = outcome
    else {
        panic!("not delivered: {outcome:?}");
    };
    assert!(matches!(delivery, Delivery::Stored { .. }), "{delivery:?}");
    assert_eq!(traces.load(Ordering::SeqCst), 1);

    let reports = stored(&running).await;
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.report_id, report_id);
    assert_eq!(r.declared.province.as_deref(), Some("CN-GD"));
    assert_eq!(r.declared.city.as_deref(), Some("440300"));
    assert_eq!(r.declared.carrier.as_deref(), Some("china_mobile"));
    assert_eq!(r.account, "07551234567");
    assert_eq!(r.trace.engine, TraceEngine::Unprivileged);
    assert_eq!(r.trace.hops.len(), 6);
    assert_eq!(r.trace.engine_fallbacks.len(), 1);
    assert_eq!(r.trace.engine_fallbacks[0].engine, TraceEngine::TrippyCore);
    assert!(r.trace.engine_fallbacks[0].reason.contains("CAP_NET_RAW"));
    assert_eq!(
        r.install_id,
        agent.state().install_id().expect("install id")
    );
    assert!(r.consent.is_some());
    assert!(r.device.mac.is_none(), "MAC sent without send_mac");
    assert!(r.endpoint_attempts.is_empty());
    // Camouflage: a browser's User-Agent, a path drawn from the patterns.
    let envelope = r.envelope.as_ref().expect("envelope");
    assert!(
        envelope
            .headers
            .user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("Mozilla/5.0"))
    );
    let patterns: Vec<PathPattern> = lineprobe_agent::DEFAULT_PATH_PATTERNS
        .iter()
        .map(|p| PathPattern::parse(p).expect("pattern"))
        .collect();
    assert!(
        patterns.iter().any(|p| p.matches(&envelope.path)),
        "{}",
        envelope.path
    );

    // The same install id on the next report.
    agent.probe_once().await.expect("second probe");
    let reports = stored(&running).await;
    assert_eq!(reports[1].install_id, reports[0].install_id);
    assert_ne!(reports[1].report_id, reports[0].report_id);
    running.shutdown().await.expect("shutdown");
}

/// Probes once; the report must be delivered, stored once by `running`,
/// and carry exactly one failed attempt (the endpoint before `running`'s):
/// that attempt.
async fn delivered_after_one_failure(
    agent: &lineprobe_agent::Agent,
    running: &lineprobe_collector::RunningCollector,
) -> lineprobe_shared::EndpointAttempt {
    let outcome = agent.probe_once().await.expect("probe");
    assert!(
        matches!(outcome, ProbeOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    let reports = stored(running).await;
    assert_eq!(reports.len(), 1);
    let attempts = &reports[0].endpoint_attempts;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    attempts[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_falls_back_and_its_failure_travels_in_the_report() {
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    let dead = dead_endpoint();
    let config = agent_config(
        &[dead.clone(), endpoint(&running)],
        Some(&collector_cert(col_dir.path())),
    );
    let (agent, _) = agent(state.path(), config, 4);
    agent.accept_consent().expect("consent");

    let failed = delivered_after_one_failure(&agent, &running).await;
    assert_eq!(failed.endpoint, dead);
    assert_eq!(failed.outcome, AttemptOutcome::Connect, "{failed:?}");

    // Status remembers both endpoints' last results.
    let status = agent.status().expect("status");
    let outcomes: Vec<_> = status
        .last_endpoint_results
        .iter()
        .map(|a| (a.endpoint.clone(), a.outcome))
        .collect();
    assert!(
        outcomes.contains(&(dead, AttemptOutcome::Connect)),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&(endpoint(&running), AttemptOutcome::Ok)),
        "{outcomes:?}"
    );
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_tls_failure() {
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    // No pinned CA: the self-signed certificate is not trusted.
    let config = agent_config(&[endpoint(&running)], None);
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    let outcome = agent.probe_once().await.expect("probe");
    assert!(
        matches!(outcome, ProbeOutcome::Spooled { .. }),
        "{outcome:?}"
    );
    let status = agent.status().expect("status");
    assert_eq!(
        status.last_endpoint_results[0].outcome,
        AttemptOutcome::Tls,
        "{status}"
    );
    assert!(stored(&running).await.is_empty());
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_refused_as_invalid_is_not_sent_elsewhere_nor_spooled() {
    // The first collector takes bodies of at most 1 KiB: it refuses the
    // report (413, with its JSON verdict). The second would take it.
    let small_dir = tempfile::tempdir().expect("tempdir");
    let small = start_collector(small_dir.path(), 0, "[limits]\nmax_body_bytes = 1024\n").await;
    let good_dir = tempfile::tempdir().expect("tempdir");
    let good = start_collector(good_dir.path(), 0, "").await;
    // Both collectors generated their own certificate: pin both.
    let both = good_dir.path().join("both.pem");
    let mut pem = std::fs::read(collector_cert(small_dir.path())).expect("cert");
    pem.extend(std::fs::read(collector_cert(good_dir.path())).expect("cert"));
    std::fs::write(&both, pem).expect("write");
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[endpoint(&small), endpoint(&good)], Some(&both));
    let (agent, _) = agent(state.path(), config, 20);
    agent.accept_consent().expect("consent");
    assert!(
        agent
            .make_report()
            .await
            .expect("report")
            .to_json()
            .expect("json")
            .len()
            > 1024
    );

    let err = agent.probe_once().await.expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("413") && text.contains(&endpoint(&small)),
        "{text}"
    );
    assert!(
        stored(&good).await.is_empty(),
        "sent to the second endpoint"
    );
    assert!(stored(&small).await.is_empty());
    assert_eq!(
        agent.spool().depth().expect("depth"),
        0,
        "an invalid report was spooled"
    );
    small.shutdown().await.expect("shutdown");
    good.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_reports_are_delivered_exactly_once_when_the_collector_comes_back() {
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let col_dir = tempfile::tempdir().expect("tempdir");
    // Start once to generate the certificate the agent pins, then stop.
    let first = start_collector(col_dir.path(), port, "").await;
    first.shutdown().await.expect("shutdown");

    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(
        std::slice::from_ref(&url),
        Some(&collector_cert(col_dir.path())),
    );
    let (agent, _) = agent(state.path(), config, 4);
    agent.accept_consent().expect("consent");
    let outcome = agent.probe_once().await.expect("probe");
    let ProbeOutcome::Spooled {
        report_id,
        evicted: 0,
        ..
    } = outcome
    else {
        panic!("not spooled: {outcome:?}");
    };
    let entry = agent
        .spool()
        .get(&report_id)
        .expect("read")
        .expect("spooled");
    assert_eq!(entry.report.endpoint_attempts.len(), 1);
    assert_eq!(
        entry.report.endpoint_attempts[0].outcome,
        AttemptOutcome::Connect
    );
    assert!(entry.next_attempt_at > entry.spooled_at);

    // Still down: the retry fails and the backoff grows.
    agent.flush_spool().await.expect("retry");
    let again = agent
        .spool()
        .get(&report_id)
        .expect("read")
        .expect("still spooled");
    assert_eq!(again.retries, 1);
    assert_eq!(again.report.endpoint_attempts.len(), 2);

    let running = start_collector(col_dir.path(), port, "").await;
    let summary = agent.flush_spool().await.expect("drain");
    assert_eq!((summary.delivered, summary.waiting), (1, 0), "{summary:?}");
    let reports = stored(&running).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].report_id, report_id);
    assert_eq!(
        reports[0].endpoint_attempts.len(),
        2,
        "the failures travel with it"
    );

    // The answer was "lost": the same report comes back from the spool.
    agent.spool().put(&again).expect("respool");
    let summary = agent.flush_spool().await.expect("drain again");
    assert_eq!(summary.delivered, 1);
    let reports = stored(&running).await;
    assert_eq!(reports.len(), 1, "stored twice");
    let status = agent.status().expect("status");
    assert_eq!(status.spool_depth, 0);
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_is_bounded_and_the_evicted_count_travels_in_the_next_report() {
    let port = free_port();
    let col_dir = tempfile::tempdir().expect("tempdir");
    let first = start_collector(col_dir.path(), port, "").await;
    first.shutdown().await.expect("shutdown");

    let state = tempfile::tempdir().expect("tempdir");
    let mut config = agent_config(
        &[format!("https://127.0.0.1:{port}")],
        Some(&collector_cert(col_dir.path())),
    );
    config.spool.max_reports = 2;
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    let mut ids = Vec::new();
    let mut evicted = 0;
    for _ in 0..5 {
        match agent.probe_once().await.expect("probe") {
            ProbeOutcome::Spooled {
                report_id,
                evicted: e,
                ..
            } => {
                ids.push(report_id);
                evicted += e;
            }
            other @ ProbeOutcome::Delivered { .. } => panic!("{other:?}"),
        }
    }
    assert_eq!(evicted, 3);
    assert_eq!(
        agent.spool().ids().expect("ids"),
        ids[3..].to_vec(),
        "the oldest were evicted"
    );
    // Each report took the evictions untold when it was first sent: the
    // fourth and fifth one each (the second's and the first's), and the
    // third's waits for the next report.
    let carried: Vec<_> = ids[3..]
        .iter()
        .map(|id| {
            let entry = agent.spool().get(id).expect("read").expect("spooled");
            entry.report.spool_evicted
        })
        .collect();
    assert_eq!(carried, [Some(1), Some(1)]);
    assert_eq!(agent.spool().evicted().expect("evicted"), 1);
    assert_eq!(agent.status().expect("status").spool_evicted, 3, "untold");

    let running = start_collector(col_dir.path(), port, "").await;
    agent.flush_spool().await.expect("drain");
    let outcome = agent.probe_once().await.expect("probe");
    let ProbeOutcome::Delivered { report_id, .. } = outcome else {
        panic!("not delivered: {outcome:?}");
    };
    let reports = stored(&running).await;
    let got: Vec<_> = reports.iter().map(|r| r.report_id).collect();
    assert_eq!(got, [ids[3], ids[4], report_id]);
    let told: Vec<_> = reports.iter().map(|r| r.spool_evicted).collect();
    assert_eq!(told, [Some(1), Some(1), Some(1)], "each eviction told once");
    assert_eq!(agent.spool().evicted().expect("evicted"), 0);
    assert_eq!(agent.status().expect("status").spool_evicted, 0);
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_is_told_once_when_the_answer_to_the_report_telling_it_was_lost() {
    let port = free_port();
    let direct = format!("https://127.0.0.1:{port}");
    let col_dir = tempfile::tempdir().expect("tempdir");
    let first = start_collector(col_dir.path(), port, "").await;
    first.shutdown().await.expect("shutdown");
    let relay = answer_losing_relay(&direct, &collector_cert(col_dir.path())).await;

    let state = tempfile::tempdir().expect("tempdir");
    let pins = pin_both(state.path(), &relay, col_dir.path());
    let mut config = agent_config(std::slice::from_ref(&relay.url), Some(&pins));
    config.spool.max_reports = 2;
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    let spooled = |outcome: ProbeOutcome| match outcome {
        ProbeOutcome::Spooled {
            report_id, evicted, ..
        } => (report_id, evicted),
        other @ ProbeOutcome::Delivered { .. } => panic!("{other:?}"),
    };
    // The collector is down: three reports, the first evicted.
    let mut evictions = 0;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (id, evicted) = spooled(agent.probe_once().await.expect("probe"));
        ids.push(id);
        evictions += evicted;
    }
    assert_eq!(evictions, 1);

    // It is back, but the answer to the next report (which tells the
    // eviction) is lost on its way back: stored, and spooled all the same.
    let running = start_collector(col_dir.path(), port, "").await;
    let (lost, evicted) = spooled(agent.probe_once().await.expect("probe"));
    evictions += evicted;
    let reports = stored(&running).await;
    assert_eq!(reports.len(), 1, "the relay did not pass the report on");
    assert_eq!(reports[0].report_id, lost);
    assert_eq!(reports[0].spool_evicted, Some(1));
    let entry = agent.spool().get(&lost).expect("read").expect("spooled");
    assert_eq!(entry.report.spool_evicted, Some(1), "it keeps what it told");
    assert_eq!(
        agent.status().expect("status").spool_evicted,
        evictions,
        "untold: the lost report's and the later eviction"
    );
    drop(agent);

    // The answers get through again: the spool is delivered (the lost one
    // is a duplicate), then one more report.
    let config = {
        let mut c = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
        c.spool.max_reports = 2;
        c
    };
    let (agent, _) = self::agent(state.path(), config, 3);
    let summary = agent.flush_spool().await.expect("flush");
    assert_eq!((summary.delivered, summary.waiting), (2, 0), "{summary:?}");
    let outcome = agent.probe_once().await.expect("probe");
    assert!(
        matches!(outcome, ProbeOutcome::Delivered { .. }),
        "{outcome:?}"
    );

    let reports = stored(&running).await;
    assert_eq!(reports.len(), 3, "stored: {reports:?}");
    let told: u64 = reports.iter().filter_map(|r| r.spool_evicted).sum();
    assert_eq!(
        told,
        evictions,
        "each eviction told once: {:?}",
        reports
            .iter()
            .map(|r| (r.report_id, r.spool_evicted))
            .collect::<Vec<_>>()
    );
    let status = agent.status().expect("status");
    assert_eq!((status.spool_depth, status.spool_evicted), (0, 0));
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fronting_sends_another_server_name_and_host() {
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    // Connect to the IP literal, present `localhost` in TLS (the name the
    // certificate has) and another Host.
    let text = format!(
        "[endpoints]\nurls = [{{ url = \"{}\", sni = \"localhost\", host = \"collector.internal\" }}]\n\
         ca_file = {:?}\n",
        endpoint(&running),
        collector_cert(col_dir.path()).display().to_string()
    );
    let config = lineprobe_agent::AgentConfig::from_toml(&text, "fronting").expect("config");
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    let outcome = agent.probe_once().await.expect("probe");
    assert!(
        matches!(outcome, ProbeOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    let reports = stored(&running).await;
    let tls = reports[0]
        .envelope
        .as_ref()
        .and_then(|e| e.tls.clone())
        .expect("tls info");
    assert_eq!(tls.sni.as_deref(), Some("localhost"));
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_report_is_spooled_until_after_retry_after() {
    // Any second request a minute from one source is an anomaly here, and
    // its budget is one request: the third is throttled.
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(
        col_dir.path(),
        0,
        "[traffic]\nmin_anomaly_requests_per_minute = 1\nnode_capacity_per_second = 1.0\n\
         anomalous_unit_share = 0.001\nanomalous_total_share = 0.01\n\
         throttle_retry_after_secs = 600\n",
    )
    .await;
    let pem = std::fs::read(collector_cert(col_dir.path())).expect("cert");
    let flooder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        .build()
        .expect("client");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = flooder
            .post(format!("{}/api/v1/report", endpoint(&running)))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("answer");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, vec![422, 422, 429]);

    // The probe shares the source: it is answered 429 too, and keeps its
    // report, to retry no sooner than the collector asked.
    let state = tempfile::tempdir().expect("tempdir");
    let mut config = agent_config(&[endpoint(&running)], Some(&collector_cert(col_dir.path())));
    // Retry-After is honoured up to the longest retry wait.
    config.schedule.retry_max_secs = 3600;
    let (agent, _) = agent(state.path(), config, 3);
    agent.accept_consent().expect("consent");
    let before = chrono::Utc::now();
    let outcome = agent.probe_once().await.expect("probe");
    let ProbeOutcome::Spooled { report_id, .. } = outcome else {
        panic!("not spooled: {outcome:?}");
    };
    let entry = agent
        .spool()
        .get(&report_id)
        .expect("read")
        .expect("spooled");
    let attempt = &entry.report.endpoint_attempts[0];
    assert_eq!(attempt.outcome, AttemptOutcome::HttpStatus);
    assert_eq!(attempt.http_status, Some(429));
    assert!(
        entry.next_attempt_at >= before + chrono::Duration::seconds(600),
        "retry at {} despite Retry-After: 600",
        entry.next_attempt_at
    );
    assert!(stored(&running).await.is_empty());
    running.shutdown().await.expect("shutdown");
}

/// Pins the certificates of a canned server and a collector together.
fn pin_both(
    dir: &std::path::Path,
    canned: &CannedServer,
    collector_dir: &std::path::Path,
) -> std::path::PathBuf {
    let both = dir.join("both.pem");
    let mut pem = canned.cert_pem.clone().into_bytes();
    pem.extend(std::fs::read(collector_cert(collector_dir)).expect("cert"));
    std::fs::write(&both, pem).expect("write");
    both
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_inflates_without_end_is_cut_off_and_the_next_endpoint_gets_the_report() {
    use std::io::Write as _;
    // 64 MiB of zeros, gzip-compressed to some 64 KB: what whatever answers
    // in an endpoint's name could send to run a phone out of memory.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        bomb.write_all(&zeros).expect("gzip");
    }
    let bomb = bomb.finish().expect("gzip");
    assert!(bomb.len() < 1 << 20);
    let canned = canned_https(
        201,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        &bomb,
    )
    .await;
    let col_dir = tempfile::tempdir().expect("tempdir");
    let running = start_collector(col_dir.path(), 0, "").await;
    let state = tempfile::tempdir().expect("tempdir");
    let pins = pin_both(state.path(), &canned, col_dir.path());
    let mut config = agent_config(&[canned.url.clone(), endpoint(&running)], Some(&pins));
    config.manifest.public_key = lineprobe_shared::ManifestSigningKey::generate()
        .verifying_key()
        .to_base64();
    let (agent, _) = agent(state.path(), config, 4);
    agent.accept_consent().expect("consent");

    let failed = delivered_after_one_failure(&agent, &running).await;
    let detail = failed.detail.as_deref().unwrap_or_default();
    assert!(detail.contains("longer than 65536 bytes"), "{detail}");
    // The manifest check reads no more of it either, and says why.
    let err = agent.update_manifest().await.expect_err("no manifest");
    assert!(
        err.to_string().contains(&format!(
            "{}: HTTP 201: the answer is longer than",
            canned.url
        )),
        "{err}"
    );
    running.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_collectors_receipt_ends_the_round() {
    // What a captive portal, a web application firewall or a misrouted
    // proxy might answer in the first endpoint's name. None of it says the
    // report was stored, or that it is invalid: the next endpoint gets it.
    let answers: [(u16, &str, &str); 7] = [
        (200, "text/html", "<html>Welcome to the hotel Wi-Fi</html>"),
        (204, "text/plain", ""),
        (422, "text/html", "<html>Request blocked</html>"),
        // JSON errors that are not the collector's verdict on the report:
        // a front end's size limit, a firewall, the collector's own "the
        // body was cut off" (the report itself may be fine).
        (413, "application/json", r#"{"error":"Payload Too Large"}"#),
        (
            422,
            "application/json",
            r#"{"error":"blocked","detail":"request matched rule 942100"}"#,
        ),
        (
            400,
            "application/json",
            r#"{"error":"bad_body","detail":"the body could not be read"}"#,
        ),
        (
            201,
            "application/json",
            r#"{"status":"stored","report_id":"0190c0de-0000-7000-8000-000000000000"}"#,
        ),
    ];
    for (status, content_type, body) in answers {
        let canned = canned_https(status, &[("content-type", content_type)], body).await;
        let col_dir = tempfile::tempdir().expect("tempdir");
        let running = start_collector(col_dir.path(), 0, "").await;
        let state = tempfile::tempdir().expect("tempdir");
        let pins = pin_both(state.path(), &canned, col_dir.path());
        let config = agent_config(&[canned.url.clone(), endpoint(&running)], Some(&pins));
        let (agent, _) = agent(state.path(), config, 4);
        agent.accept_consent().expect("consent");

        let outcome = agent.probe_once().await.expect("probe");
        let ProbeOutcome::Delivered { delivery, .. } = outcome else {
            panic!("{status}: not delivered: {outcome:?}");
        };
        assert_eq!(
            delivery,
            Delivery::Stored {
                endpoint: endpoint(&running)
            },
            "{status}"
        );
        // (It may also have been asked to enrol the probe's key first.)
        assert!(canned.requests.load(Ordering::SeqCst) >= 1, "{status}");
        let reports = stored(&running).await;
        assert_eq!(reports.len(), 1, "{status}");
        let attempts = &reports[0].endpoint_attempts;
        assert_eq!(attempts.len(), 1, "{status}: {attempts:?}");
        assert_eq!(attempts[0].outcome, AttemptOutcome::HttpStatus, "{status}");
        assert_eq!(attempts[0].http_status, Some(status));
        running.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_200_alone_leaves_the_report_spooled() {
    let canned = canned_https(200, &[("content-type", "text/html")], "<html>Log in</html>").await;
    let state = tempfile::tempdir().expect("tempdir");
    let pem = state.path().join("canned.pem");
    std::fs::write(&pem, &canned.cert_pem).expect("write");
    let (agent, _) = agent(
        state.path(),
        agent_config(std::slice::from_ref(&canned.url), Some(&pem)),
        4,
    );
    agent.accept_consent().expect("consent");
    let outcome = agent.probe_once().await.expect("probe");
    let ProbeOutcome::Spooled { report_id, .. } = outcome else {
        panic!("not spooled: {outcome:?}");
    };
    assert!(agent.spool().get(&report_id).expect("read").is_some());
    // Its 200 to the key enrolment enrolled nothing either: the next probe
    // asks again.
    agent.probe_once().await.expect("probe");
    let enrolments = canned
        .paths
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|p| p.ends_with("/enrol"))
        .count();
    assert_eq!(enrolments, 2, "{:?}", canned.paths);
    assert_eq!(agent.spool().depth().expect("depth"), 2);
    // The daemon's drain keeps them too.
    let summary = agent.flush_spool().await.expect("flush");
    assert_eq!(summary.delivered, 0, "{summary:?}");
    assert_eq!(agent.spool().depth().expect("depth"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retry_after_is_cut_to_the_longest_retry_wait() {
    // Beyond what a date can hold: it once panicked the agent and lost
    // the report.
    for retry_after in ["31536000", "10000000000000", "18446744073709551615"] {
        let before = chrono::Utc::now();
        let entry = spooled_after_busy(retry_after, 3600).await;
        assert!(
            entry.next_attempt_at >= before + chrono::Duration::seconds(3600)
                && entry.next_attempt_at <= chrono::Utc::now() + chrono::Duration::seconds(3600),
            "{retry_after}: retry at {}",
            entry.next_attempt_at
        );
    }
}

/// A proxy or CDN in front of a collector may send `Retry-After` as an HTTP
/// date; it was ignored and the agent came back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_given_as_a_date_is_honoured() {
    let until = chrono::Utc::now() + chrono::Duration::hours(2);
    let date = until.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let entry = spooled_after_busy(&date, 86_400).await;
    // The date has whole seconds: up to one early, and no later than asked.
    let early = until - chrono::Duration::seconds(2);
    let late = until + chrono::Duration::seconds(60);
    assert!(
        entry.next_attempt_at >= early && entry.next_attempt_at <= late,
        "{date}: retry at {}",
        entry.next_attempt_at
    );
}

/// The spooled entry of a report an endpoint answered 503 with this
/// `Retry-After`, by an agent whose longest retry wait is `retry_max_secs`.
async fn spooled_after_busy(retry_after: &str, retry_max_secs: u64) -> SpoolEntry {
    let canned = canned_https(
        503,
        &[("content-type", "text/plain"), ("retry-after", retry_after)],
        "busy",
    )
    .await;
    let state = tempfile::tempdir().expect("tempdir");
    let pem = state.path().join("canned.pem");
    std::fs::write(&pem, &canned.cert_pem).expect("write");
    let mut config = agent_config(std::slice::from_ref(&canned.url), Some(&pem));
    config.schedule.retry_max_secs = retry_max_secs;
    let (agent, _) = agent(state.path(), config, 4);
    agent.accept_consent().expect("consent");
    let outcome = agent.probe_once().await.expect("probe");
    let ProbeOutcome::Spooled { report_id, .. } = outcome else {
        panic!("{retry_after}: not spooled: {outcome:?}");
    };
    agent
        .spool()
        .get(&report_id)
        .expect("read")
        .expect("spooled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_status_file_does_not_cost_the_report() {
    let state = tempfile::tempdir().expect("tempdir");
    let config = agent_config(&[dead_endpoint()], None);
    let (agent, _) = agent(state.path(), config, 4);
    agent.accept_consent().expect("consent");
    let status = state.path().join("status.json");
    // Not a status file: a folder in its place cannot be read or replaced.
    std::fs::create_dir_all(&status).expect("mkdir");
    let outcome = agent.probe_once().await;
    assert_eq!(
        agent.spool().depth().expect("depth"),
        1,
        "the report was lost: {outcome:?}"
    );
    // And the probe's outcome is what happened to the report, not the
    // status file's error.
    assert!(
        matches!(outcome, Ok(ProbeOutcome::Spooled { .. })),
        "{outcome:?}"
    );
}
