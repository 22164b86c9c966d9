//! Shared pieces of the collector's end-to-end tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

use lineprobe_collector::{CollectorConfig, Overrides, RunningCollector};
use lineprobe_shared::ReportId;
use serde_json::Value;

/// A valid submitted report (the repository's example) with a fresh id.
pub(crate) fn sample_report() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/report.example.json");
    let mut v: Value =
        serde_json::from_slice(&std::fs::read(path).expect("read example report")).expect("json");
    v["report_id"] = Value::String(ReportId::new_v7().to_string());
    v
}

/// A configuration on loopback, port 0, in `dir`, with `toml` applied.
pub(crate) fn config(dir: &Path, toml: &str) -> CollectorConfig {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        export_listen: Some("127.0.0.1:0".parse().expect("addr")),
        data_dir: Some(dir.to_path_buf()),
        plain_http: false,
    };
    let base = format!(
        "node_id = \"test-node\"\n[export]\ntoken = \"{}\"\n{toml}",
        export_token()
    );
    // Sections in `toml` may repeat [export]; merge by letting the caller
    // pass complete keys only for other sections.
    CollectorConfig::from_toml_with_env(&base, "test", Vec::new(), &overrides)
        .expect("valid config")
}

/// The export token the test configs use.
pub(crate) fn export_token() -> String {
    "test-export-token-0123456789abcdef".to_owned()
}

/// An HTTPS client that trusts the collector's generated certificate.
pub(crate) fn client(dir: &Path) -> reqwest::Client {
    let pem = std::fs::read(dir.join("tls/cert.pem")).expect("generated certificate");
    let cert = reqwest::Certificate::from_pem(&pem).expect("PEM certificate");
    reqwest::Client::builder()
        .add_root_certificate(cert)
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Starts a collector in this process.
pub(crate) async fn start(dir: &Path, toml: &str) -> (RunningCollector, reqwest::Client) {
    let running = RunningCollector::start(&config(dir, toml))
        .await
        .expect("collector starts");
    let client = client(dir);
    (running, client)
}

/// `https://localhost:PORT/path` on the public listener.
pub(crate) fn public_url(running: &RunningCollector, path: &str) -> String {
    format!("https://localhost:{}{path}", running.public_addr.port())
}

/// `https://localhost:PORT/path` on the export listener.
pub(crate) fn export_url(running: &RunningCollector, path: &str) -> String {
    format!("https://localhost:{}{path}", running.export_addr.port())
}

/// The collector's metrics, as the export listener serves them.
pub(crate) async fn metrics_text(client: &reqwest::Client, running: &RunningCollector) -> String {
    client
        .get(export_url(running, "/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}
