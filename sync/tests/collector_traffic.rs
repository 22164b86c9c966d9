//! The internal side reads a real collector's traffic defences: a flood
//! from one source becomes an anomaly episode and a low-trust source in
//! `CollectorClient::traffic` (what the back office's traffic page shows).
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use lineprobe_collector::{CollectorConfig, Overrides, RunningCollector};
use lineprobe_sync::{CollectorClient, CollectorEndpoint, demo_cases};

const TOKEN: &str = "traffic-test-export-token-0123456789abcdef";

async fn collector(dir: &Path) -> RunningCollector {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        export_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(dir.to_path_buf()),
        plain_http: false,
    };
    // A small node, so that a short flood is one: see the collector's own
    // traffic tests for what each knob does.
    let toml = format!(
        "node_id = \"node-t\"\n[export]\ntoken = \"{TOKEN}\"\n[shutdown]\ngrace_secs = 1\n\
         [traffic]\nmin_anomaly_requests_per_minute = 30\nnode_capacity_per_second = 200.0\n\
         anomalous_unit_share = 0.01\nanomalous_total_share = 0.1\nthrottle_delay_ms = 0\n\
         [trust]\ninitial = 40\nflush_secs = 1\n"
    );
    let config =
        CollectorConfig::from_toml_with_env(&toml, "test", Vec::new(), &overrides).unwrap();
    RunningCollector::start(&config).await.unwrap()
}

fn client_from(dir: &Path, local: &str) -> reqwest::Client {
    let pem = std::fs::read(dir.join("tls/cert.pem")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .local_address(local.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_shows_as_an_episode_and_a_low_trust_source() {
    tokio::time::timeout(Duration::from_mins(2), scenario())
        .await
        .expect("the scenario finishes within two minutes");
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let running = collector(dir.path()).await;
    let target = format!(
        "https://127.0.0.1:{}/api/v1/report",
        running.public_addr.port()
    );
    let report = demo_cases(chrono::Utc::now().fixed_offset())
        .unwrap()
        .into_iter()
        .find(|c| c.expect == "compliant")
        .unwrap()
        .report;
    // 200 reports from one source as fast as 8 connections go.
    let flooder = client_from(dir.path(), "127.0.1.9");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, target, mut report) = (flooder.clone(), target.clone(), report.clone());
        tasks.push(tokio::spawn(async move {
            let mut throttled = 0;
            for _ in 0..25 {
                report.report_id = lineprobe_shared::ReportId::new_v7();
                let response = client
                    .post(&target)
                    .header("content-type", "application/json")
                    .body(report.to_json().unwrap())
                    .send()
                    .await
                    .unwrap();
                if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    throttled += 1;
                }
            }
            throttled
        }));
    }
    let mut throttled = 0;
    for task in tasks {
        throttled += task.await.unwrap();
    }
    assert!(throttled > 0, "the flooder was throttled");

    let mut endpoint =
        CollectorEndpoint::new("t", format!("https://{}", running.export_addr), TOKEN);
    endpoint.ca_file = Some(dir.path().join("tls/cert.pem"));
    endpoint.timeout_s = 5;
    let client = CollectorClient::new(&endpoint).unwrap();
    let view = client.traffic(50).await.unwrap();
    let episode = view
        .episodes
        .iter()
        .find(|e| e.kind == "prefix" && e.unit == "127.0.1.0/24")
        .unwrap_or_else(|| panic!("no episode for the flooder's /24 in {view:#?}"));
    assert!(episode.ongoing);
    assert!(episode.throttled > 0);
    assert!(view.open >= 1);
    assert!(
        view.low_trust
            .iter()
            .any(|u| u.kind == "prefix" && u.unit == "127.0.1.0/24"),
        "the flooder's /24 is a low-trust source: {view:#?}"
    );

    // A wrong token is an error that says so, not an empty view.
    let mut wrong = endpoint.clone();
    wrong.token = Some(lineprobe_sync::ExportSecret::new(
        "not-the-token-0123456789abcdefghijkl",
    ));
    let err = CollectorClient::new(&wrong)
        .unwrap()
        .traffic(10)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401"), "{err}");
    running.shutdown().await.unwrap();
}
