//! A flood from one source prefix (client sockets bound to 127.0.1.9) while
//! normal probes (127.0.2.x, other /24s) keep sending: the flooder gets 429
//! with `Retry-After` and is flagged (an ongoing episode and a low-trust
//! unit on the export API, kept across a restart), and every normal report
//! is stored, carrying its trust at arrival.

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lineprobe_collector::RunningCollector;
use reqwest::StatusCode;
use serde_json::Value;
use support::*;

const TRAFFIC: &str = "[traffic]
min_anomaly_requests_per_minute = 30
node_capacity_per_second = 200.0
anomalous_unit_share = 0.01
anomalous_total_share = 0.1
throttle_retry_after_secs = 7
throttle_delay_ms = 0
[trust]
initial = 40
flush_secs = 1
";

/// A client whose connections come from `local`.
fn client_from(dir: &Path, local: &str) -> reqwest::Client {
    let pem = std::fs::read(dir.join("tls/cert.pem")).expect("generated certificate");
    let cert = reqwest::Certificate::from_pem(&pem).expect("PEM certificate");
    reqwest::Client::builder()
        .add_root_certificate(cert)
        .local_address(local.parse::<IpAddr>().expect("address"))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

fn url(running: &RunningCollector) -> String {
    format!(
        "https://127.0.0.1:{}/api/v1/report",
        running.public_addr.port()
    )
}

async fn export_get(client: &reqwest::Client, running: &RunningCollector, path: &str) -> Value {
    let response = client
        .get(export_url(running, path))
        .bearer_auth(export_token())
        .send()
        .await
        .expect("export answers");
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_is_throttled_and_flagged_while_normal_probes_all_succeed() {
    tokio::time::timeout(Duration::from_secs(90), scenario())
        .await
        .expect("the scenario finishes in time");
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, admin) = start(dir.path(), TRAFFIC).await;
    let (normal_ids, stored, throttled) = send_traffic(dir.path(), &running).await;
    assert!(throttled >= 300, "throttled {throttled}, stored {stored}");
    assert_eq!(throttled + stored, 400);
    check_flagged(&admin, &running).await;
    check_stored(&admin, &running, &normal_ids, stored).await;
    check_metrics(&admin, &running).await;
    // A restart keeps the scores (written at shutdown at the latest).
    running.shutdown().await.expect("shutdown");
    let (running, admin) = start(dir.path(), TRAFFIC).await;
    let low = export_get(&admin, &running, "/export/traffic/low-trust").await;
    assert!(
        low["units"]
            .as_array()
            .expect("units")
            .iter()
            .any(|u| u["unit"] == "127.0.1.0/24" && u["in_episode"] == false),
        "{low:#}"
    );
    running.shutdown().await.expect("shutdown");
}

/// The flood and the normal probes at once: the normal probes' report ids,
/// and how many of the flooder's reports were stored and throttled.
async fn send_traffic(dir: &Path, running: &RunningCollector) -> (Vec<String>, u64, u64) {
    let target = url(running);
    // The flood: 8 connections from 127.0.1.9, 400 reports in all.
    let flooder = client_from(dir, "127.0.1.9");
    let throttled = Arc::new(AtomicU64::new(0));
    let stored = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for _ in 0..8 {
        let (client, target) = (flooder.clone(), target.clone());
        let (throttled, stored) = (Arc::clone(&throttled), Arc::clone(&stored));
        flood.push(tokio::spawn(async move {
            for _ in 0..50 {
                let mut report = sample_report();
                report["install_id"] = Value::from("flooder-1");
                let response = client
                    .post(&target)
                    .json(&report)
                    .send()
                    .await
                    .expect("the collector answers the flooder");
                match response.status() {
                    StatusCode::TOO_MANY_REQUESTS => {
                        let retry = response.headers().get("retry-after").cloned();
                        assert_eq!(
                            retry.as_ref().map(reqwest::header::HeaderValue::as_bytes),
                            Some(&b"7"[..])
                        );
                        let body: Value = response.json().await.expect("JSON");
                        assert_eq!(body["error"], "throttled");
                        throttled.fetch_add(1, Ordering::Relaxed);
                    }
                    StatusCode::CREATED => {
                        stored.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("flooder got {other}"),
                }
            }
        }));
    }

    // Meanwhile three normal probes, each from its own /24.
    let mut normal = Vec::new();
    for i in 1..=3 {
        let client = client_from(dir, &format!("127.0.{}.1", i + 1));
        let target = target.clone();
        normal.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..10 {
                let mut report = sample_report();
                report["install_id"] = Value::from(format!("probe-{i}"));
                let response = client
                    .post(&target)
                    .json(&report)
                    .send()
                    .await
                    .expect("the collector answers a probe");
                assert_eq!(response.status(), StatusCode::CREATED, "a normal probe");
                ids.push(report["report_id"].as_str().expect("id").to_owned());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids
        }));
    }
    let mut normal_ids = Vec::new();
    for task in normal {
        normal_ids.extend(task.await.expect("normal probe"));
    }
    for task in flood {
        task.await.expect("flooder");
    }
    (
        normal_ids,
        stored.load(Ordering::Relaxed),
        throttled.load(Ordering::Relaxed),
    )
}

async fn check_flagged(admin: &reqwest::Client, running: &RunningCollector) {
    // Flagged: an ongoing episode of the flooder's /24, and nobody else's
    // source prefix.
    let episodes = export_get(admin, running, "/export/traffic/episodes?ongoing=true").await;
    let prefixes: Vec<&Value> = episodes["episodes"]
        .as_array()
        .expect("episodes")
        .iter()
        .filter(|e| e["kind"] == "prefix")
        .collect();
    assert_eq!(prefixes.len(), 1, "{episodes:#}");
    let e = prefixes[0];
    assert_eq!(e["unit"], "127.0.1.0/24");
    assert_eq!(e["ongoing"], true);
    assert!(e["throttled"].as_u64().expect("throttled") >= 300, "{e:#}");
    assert!(e["peak_degree"].as_f64().expect("degree") > 6.0, "{e:#}");
    assert!(episodes["open"].as_u64().expect("open") >= 1);

    // The flooder's trust is low now.
    let low = export_get(admin, running, "/export/traffic/low-trust").await;
    let units = low["units"].as_array().expect("units");
    assert!(
        units.iter().any(|u| u["unit"] == "127.0.1.0/24"
            && u["kind"] == "prefix"
            && u["in_episode"] == true),
        "{low:#}"
    );
    assert!(
        units
            .iter()
            .all(|u| !u["unit"].as_str().unwrap_or("").starts_with("127.0.2.")),
        "{low:#}"
    );
    // Both listings need the token.
    let anonymous = admin
        .get(export_url(running, "/export/traffic/episodes"))
        .send()
        .await
        .expect("answer");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

async fn check_stored(
    admin: &reqwest::Client,
    running: &RunningCollector,
    normal_ids: &[String],
    stored: u64,
) {
    // Every normal report is stored, with its trust at arrival; the
    // flooder's stored reports name the episode.
    let page = admin
        .get(export_url(running, "/export?limit=10000"))
        .bearer_auth(export_token())
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("body");
    let reports: Vec<Value> = page
        .lines()
        .map(|l| serde_json::from_str(l).expect("report JSON"))
        .collect();
    assert_eq!(reports.len() as u64, 30 + stored);
    for id in normal_ids {
        let r = reports
            .iter()
            .find(|r| r["report_id"] == id.as_str())
            .expect("normal report stored");
        let trust = &r["envelope"]["trust"];
        assert_eq!(trust["signature"], "unsigned", "{trust:#}");
        assert!(trust["score"].as_u64().expect("score") >= 40, "{trust:#}");
        let reasons = trust["reasons"].as_array().expect("reasons");
        assert!(!reasons.iter().any(|r| r == "anomaly_episode"), "{trust:#}");
    }
    assert!(
        reports
            .iter()
            .any(|r| r["envelope"]["peer_ip"] == "127.0.1.9"
                && r["envelope"]["trust"]["reasons"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "anomaly_episode"))),
        "no flooder report names the episode"
    );
}

async fn check_metrics(admin: &reqwest::Client, running: &RunningCollector) {
    // Metrics.
    let metrics = metrics_text(admin, running).await;
    assert!(
        metrics.contains("lineprobe_collector_traffic_throttled_requests_total{kind=\"prefix\"}"),
        "{metrics}"
    );
    // The prefix, the flooder's install id and the path: three episodes.
    let opened = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lineprobe_collector_traffic_anomaly_episodes_total "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert_eq!(opened, Some(3), "{metrics}");
    assert!(metrics.contains("outcome=\"Throttled\""), "{metrics}");
}

/// The restart of a traffic monitor over one staging store, on a manual
/// clock: a unit's band is remembered with its trust score, so a unit
/// busier than the floor is judged against its own usual rate after a
/// restart, not the floor.
mod restart {
    use std::sync::Arc;
    use std::time::Duration;

    use lineprobe_collector::{
        Admission, CollectorConfig, IngestOutcome, ManualClock, Staging, StagingOptions, Traffic,
        UnitKey, UnitKind,
    };
    use tokio_util::sync::CancellationToken;

    /// 2026-11-22 00:00:00 UTC, a minute boundary.
    const T0: u64 = 1_795_305_600_000;
    const BUSY: &str = "198.51.100.7";

    fn config() -> CollectorConfig {
        let mut c = CollectorConfig {
            node_id: "test".to_owned(),
            ..CollectorConfig::default()
        };
        c.public.paths = vec!["/api/v1/report".to_owned()];
        // The defaults' floor (120 requests a minute) and budgets.
        c.trust.initial = 40;
        c.validate().expect("valid");
        c
    }

    fn staging(dir: &tempfile::TempDir) -> Staging {
        let c = config();
        Staging::open(StagingOptions::from_config(
            dir.path().join("staging.sqlite3"),
            c.node_id.clone(),
            &c.staging,
        ))
        .expect("staging store")
    }

    /// A monitor's background task (sweeps and trust writes).
    struct Running {
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        /// Stops it, with the last write of its scores a shutdown makes.
        async fn stop(self) {
            self.shutdown.cancel();
            self.task.await.expect("the background task ends");
        }
    }

    /// A monitor started over `staging`, its stored scores and bands
    /// loaded.
    async fn start(clock: &Arc<ManualClock>, staging: &Staging) -> (Arc<Traffic>, Running) {
        let t = Arc::new(Traffic::new(&config(), clock.clone(), None));
        let shutdown = CancellationToken::new();
        let task = t
            .start(staging.clone(), Duration::from_hours(1), shutdown.clone())
            .await
            .expect("started");
        (t, Running { shutdown, task })
    }

    /// `n` requests from `from` in the current minute; how many passed.
    fn send(t: &Traffic, from: &str, n: u32) -> u32 {
        let mut passed = 0;
        for _ in 0..n {
            if let Admission::Proceed(ticket) =
                t.admit(from.parse().expect("address"), "/api/v1/report")
            {
                t.finish(&ticket, IngestOutcome::Stored);
                passed += 1;
            }
        }
        passed
    }

    fn minute_passes(clock: &ManualClock, t: &Traffic) {
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }

    fn prefix_episodes(t: &Traffic, unit: &str) -> usize {
        t.episodes(false, 1_000)
            .iter()
            .filter(|e| e.kind == UnitKind::Prefix && e.unit == unit)
            .count()
    }

    /// A busy NAT'd /24 grows to 600 requests a minute (slowly enough
    /// never to leave its band) and stays there for a history window.
    fn grow_busy(clock: &ManualClock, t: &Traffic) {
        for k in 0..=24 {
            let rate = 120 + 20 * k;
            assert_eq!(send(t, BUSY, rate), rate, "minute {k}");
            minute_passes(clock, t);
        }
        for _ in 0..60 {
            assert_eq!(send(t, BUSY, 600), 600);
            minute_passes(clock, t);
        }
        assert_eq!(prefix_episodes(t, "198.51.100.0/24"), 0);
    }

    #[tokio::test]
    async fn a_busy_unit_keeps_its_band_and_trust_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = staging(&dir);
        let clock = ManualClock::at(T0);
        let (t, running) = start(&clock, &staging).await;
        grow_busy(&clock, &t);
        let busy = UnitKey::prefix_of(BUSY.parse().expect("address"));
        let before = t.trust_score(&busy);
        running.stop().await;

        // Down for five minutes, then back at its usual rate for three
        // minutes (too few for a band of its own)…
        clock.advance(Duration::from_mins(5));
        let (t, running) = start(&clock, &staging).await;
        assert!((t.trust_score(&busy) - before).abs() < 1e-9);
        for minute in 0..3 {
            assert_eq!(send(&t, BUSY, 600), 600, "throttled in minute {minute}");
            minute_passes(&clock, &t);
        }
        assert_eq!(
            prefix_episodes(&t, "198.51.100.0/24"),
            0,
            "{:#?}",
            t.episodes(false, 10)
        );
        // …and restarted again: the band it was seeded with was written
        // back with its score, not lost.
        running.stop().await;
        let (t, running) = start(&clock, &staging).await;
        for minute in 0..15 {
            assert_eq!(send(&t, BUSY, 600), 600, "throttled in minute {minute}");
            minute_passes(&clock, &t);
        }
        assert_eq!(
            prefix_episodes(&t, "198.51.100.0/24"),
            0,
            "{:#?}",
            t.episodes(false, 10)
        );
        assert!(t.trust_score(&busy) >= before, "{}", t.trust_score(&busy));
        running.stop().await;
        staging.close().await.expect("close");
    }

    fn path_episodes(t: &Traffic) -> usize {
        t.episodes(false, 1_000)
            .iter()
            .filter(|e| e.kind == UnitKind::Path)
            .count()
    }

    /// A path pattern has no trust score, so its band is kept on its own
    /// (`path_bands`): after a restart the busy path is judged against it,
    /// not the floor, under the same rules as the other units' bands.
    #[tokio::test]
    async fn a_busy_path_keeps_its_band_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = staging(&dir);
        let clock = ManualClock::at(T0);
        let (t, running) = start(&clock, &staging).await;
        grow_busy(&clock, &t);
        assert_eq!(path_episodes(&t), 0, "{:#?}", t.episodes(false, 10));
        running.stop().await;
        let stored = staging.load_path_bands().await.expect("path bands");
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert_eq!(stored[0].pattern, "/api/v1/report");
        assert!((stored[0].band.median - 600.0).abs() < 1.0, "{stored:?}");

        // Back after five minutes at the usual rate, and restarted again
        // (the band it was seeded with is still stored).
        for _ in 0..2 {
            clock.advance(Duration::from_mins(5));
            let (t, running) = start(&clock, &staging).await;
            for _ in 0..3 {
                send(&t, BUSY, 600);
                minute_passes(&clock, &t);
            }
            assert_eq!(path_episodes(&t), 0, "{:#?}", t.episodes(false, 10));
            running.stop().await;
        }

        // Far above its band (600 ± 60, up to 960), it is an anomaly.
        let (t, running) = start(&clock, &staging).await;
        send(&t, BUSY, 1_000);
        assert_eq!(path_episodes(&t), 1, "{:#?}", t.episodes(false, 10));
        running.stop().await;

        // Back after more than a day: the band is too old to count.
        clock.advance(Duration::from_hours(25));
        let (t, running) = start(&clock, &staging).await;
        send(&t, BUSY, 600);
        assert_eq!(path_episodes(&t), 1, "{:#?}", t.episodes(false, 10));
        running.stop().await;
        staging.close().await.expect("close");
    }

    #[tokio::test]
    async fn a_unit_far_above_its_remembered_band_is_still_an_anomaly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = staging(&dir);
        let clock = ManualClock::at(T0);
        let (t, running) = start(&clock, &staging).await;
        grow_busy(&clock, &t);
        running.stop().await;

        clock.advance(Duration::from_mins(5));
        let (t, running) = start(&clock, &staging).await;
        // Its band (600 ± 60 a minute) ends at 960: 5000 is a flood.
        // Up to it, it passes (the floor alone would stop it at 120).
        let passed = send(&t, BUSY, 5_000);
        assert!((960..1_100).contains(&passed), "passed {passed}");
        assert_eq!(prefix_episodes(&t, "198.51.100.0/24"), 1);
        running.stop().await;
        staging.close().await.expect("close");
    }

    #[tokio::test]
    async fn units_without_a_usable_band_are_judged_as_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = staging(&dir);
        let clock = ManualClock::at(T0);
        let (t, running) = start(&clock, &staging).await;
        grow_busy(&clock, &t);
        running.stop().await;

        // A unit never seen, at the busy unit's rate: above the floor.
        let (t, running) = start(&clock, &staging).await;
        send(&t, "203.0.113.5", 600);
        assert_eq!(prefix_episodes(&t, "203.0.113.0/24"), 1);
        running.stop().await;

        // The busy unit back after more than a day: its band is too old
        // to stand in for its history.
        clock.advance(Duration::from_hours(25));
        let (t, running) = start(&clock, &staging).await;
        send(&t, BUSY, 600);
        assert_eq!(prefix_episodes(&t, "198.51.100.0/24"), 1);
        running.stop().await;
        staging.close().await.expect("close");
    }
}
