//! The real binary under faults: `kill -9` and SIGTERM while a load generator
//! is sending. Afterwards every report that received a 2xx is present exactly
//! once and the store passes an integrity check.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lineprobe_collector::{Staging, StagingOptions};
use support::sample_report;
use tokio_util::sync::CancellationToken;

/// A collector process and the addresses it printed.
struct Collector {
    child: Child,
    public: SocketAddr,
}

impl Drop for Collector {
    fn drop(&mut self) {
        // Never leave a server behind, whatever the test did.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path) -> Collector {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lineprobe-collector"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--export-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .env("LINEPROBE_EXPORT_TOKEN", support::export_token())
        .env("RUST_LOG", "warn")
        .env("LINEPROBE_COLLECTOR__NODE_ID", "fault-node")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start lineprobe-collector");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the address line");
    // "lineprobe-collector: public https://127.0.0.1:P export https://127.0.0.1:Q"
    let public = line
        .split_whitespace()
        .nth(2)
        .and_then(|u| u.strip_prefix("https://"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    Collector { child, public }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} failed");
}

/// Sends distinct reports from `conns` tasks until `stop`, recording the ids
/// that were answered 2xx (and with which status).
async fn load(
    dir: &Path,
    public: SocketAddr,
    conns: usize,
    stop: CancellationToken,
    progress: Arc<AtomicUsize>,
) -> (HashMap<String, u16>, usize) {
    let client = support::client(dir);
    let acked: Arc<Mutex<HashMap<String, u16>>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let client = client.clone();
        let acked = Arc::clone(&acked);
        let errors = Arc::clone(&errors);
        let progress = Arc::clone(&progress);
        let stop = stop.clone();
        let url = format!("https://localhost:{}/api/v1/report", public.port());
        tasks.push(tokio::spawn(async move {
            loop {
                let report = sample_report();
                let id = report["report_id"].as_str().expect("id").to_owned();
                let send = client.post(&url).json(&report).send();
                let outcome = tokio::select! {
                    r = send => r,
                    () = stop.cancelled() => return,
                };
                match outcome {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().expect("lock").insert(id, r.status().as_u16());
                        progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(_) | Err(_) => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // The server is gone or refusing: slow down a little.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("load task");
    }
    let map = acked.lock().expect("lock").clone();
    (map, errors.load(std::sync::atomic::Ordering::Relaxed))
}

/// Opens the store file directly and returns how often each report id is
/// stored, after checking its integrity.
async fn stored_ids(dir: &Path) -> HashMap<String, usize> {
    let options = StagingOptions::from_config(
        dir.join("staging.sqlite3"),
        "fault-node".to_owned(),
        &lineprobe_collector::StagingConfig::default(),
    );
    let staging = Staging::open(options).expect("store opens after the crash");
    staging
        .integrity_check()
        .await
        .expect("integrity check passes");
    let mut counts = HashMap::new();
    let mut after = 0;
    loop {
        let batch = staging.export_after(after, 1000).await.expect("export");
        let Some(last) = batch.last() else { break };
        after = last.seq;
        for r in &batch {
            let v: serde_json::Value = serde_json::from_slice(&r.json).expect("stored json");
            *counts
                .entry(v["report_id"].as_str().expect("id").to_owned())
                .or_insert(0) += 1;
        }
    }
    staging.close().await.expect("close");
    counts
}

fn check_every_acked_report_stored_once(
    acked: &HashMap<String, u16>,
    stored: &HashMap<String, usize>,
) {
    let missing: Vec<&String> = acked
        .keys()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged reports are missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    let doubled: Vec<(&String, &usize)> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "reports stored more than once: {doubled:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all_acked = HashMap::new();
    for round in 0..3u64 {
        let collector = spawn(dir.path());
        let stop = CancellationToken::new();
        let public = collector.public;
        let progress = Arc::new(AtomicUsize::new(0));
        let generator = tokio::spawn({
            let dir = dir.path().to_path_buf();
            let stop = stop.clone();
            let progress = Arc::clone(&progress);
            async move { load(&dir, public, 16, stop, progress).await }
        });
        // Kill under load: once reports are being acknowledged (a fixed
        // sleep found none yet on a machine busy with other builds), at a
        // different moment each round.
        let deadline = Instant::now() + Duration::from_mins(1);
        while progress.load(std::sync::atomic::Ordering::Relaxed) < 20 {
            assert!(
                Instant::now() < deadline,
                "round {round}: no report acknowledged within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200 + round * 350)).await;
        signal(&collector.child, "-KILL");
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
        let (acked, _errors) = generator.await.expect("generator");
        assert!(
            !acked.is_empty(),
            "round {round}: nothing was acknowledged before the kill"
        );
        drop(collector);
        all_acked.extend(acked);
        let stored = stored_ids(dir.path()).await;
        check_every_acked_report_stored_once(&all_acked, &stored);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_ends_every_request_as_durable_2xx_or_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut collector = spawn(dir.path());
    let stop = CancellationToken::new();
    let public = collector.public;
    let generator = tokio::spawn({
        let dir = dir.path().to_path_buf();
        let stop = stop.clone();
        async move { load(&dir, public, 16, stop, Arc::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent_at = Instant::now();
    signal(&collector.child, "-TERM");
    // The process exits by itself, cleanly, within the grace period.
    let status = loop {
        if let Some(status) = collector.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            sent_at.elapsed() < Duration::from_secs(15),
            "collector did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "collector exited with {status}");
    stop.cancel();
    let (acked, errors) = generator.await.expect("generator");
    assert!(!acked.is_empty());
    eprintln!(
        "{} acknowledged, {errors} errors around the shutdown",
        acked.len()
    );
    drop(collector);
    let stored = stored_ids(dir.path()).await;
    check_every_acked_report_stored_once(&acked, &stored);
}
