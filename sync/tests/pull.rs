//! The one-way puller against real collectors running in this process on
//! loopback (plain HTTP, HTTPS with their generated certificate, and mTLS),
//! and against fake export servers that misbehave. Reports reach the real
//! collectors over their public listener, as a probe sends them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failed unwrap is a failed test

#[path = "../../testsupport/ports.rs"]
mod ports;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use lineprobe_collector::{CollectorConfig, Overrides, RunningCollector};
use lineprobe_shared::ReportId;
use lineprobe_sync::{
    CollectorClient, CollectorEndpoint, CollectorRound, Error, PullSettings, PullSink, PulledLine,
    Puller, validate_collectors,
};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "pull-test-export-token-0123456789abcdef";
/// Every test finishes well within this.
const BOUND: Duration = Duration::from_mins(1);

// --- an in-memory sink ------------------------------------------------------

#[derive(Debug, Default)]
struct SinkState {
    rows: BTreeMap<(String, u64), PulledLine>,
    cursors: BTreeMap<String, (String, u64)>,
    stores: BTreeMap<String, String>,
    acked: BTreeMap<String, u64>,
    failures: Vec<(String, String)>,
    /// When each collector's last round caught up started.
    caught_up: BTreeMap<String, i64>,
    fail_commits: bool,
    commits: usize,
    /// When each collector's last commit landed.
    committed_at: BTreeMap<String, Instant>,
}

/// Rows and cursors in a map; `commit` changes both under one lock, or
/// neither when told to fail.
#[derive(Debug, Default)]
struct MemSink(Mutex<SinkState>);

impl MemSink {
    fn state(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.0.lock().unwrap()
    }

    fn seqs(&self, node: &str) -> Vec<u64> {
        self.state()
            .rows
            .keys()
            .filter(|(n, _)| n == node)
            .map(|(_, s)| *s)
            .collect()
    }

    fn report_ids(&self) -> Vec<String> {
        self.state()
            .rows
            .values()
            .map(|r| r.report_id.clone().unwrap())
            .collect()
    }
}

impl PullSink for MemSink {
    async fn cursor(&self, collector: &str) -> Result<Option<(String, u64)>, Error> {
        Ok(self.state().cursors.get(collector).cloned())
    }

    async fn commit(
        &self,
        collector: &str,
        node_id: &str,
        reports: &[PulledLine],
        next_after: u64,
    ) -> Result<u64, Error> {
        let mut state = self.state();
        if state.fail_commits {
            return Err(Error::Output(std::io::Error::other(
                "the test sink refuses to commit",
            )));
        }
        let mut inserted = 0;
        for report in reports {
            if let std::collections::btree_map::Entry::Vacant(slot) =
                state.rows.entry((node_id.to_owned(), report.seq))
            {
                slot.insert(report.clone());
                inserted += 1;
            }
        }
        state
            .cursors
            .insert(collector.to_owned(), (node_id.to_owned(), next_after));
        state.commits += 1;
        state
            .committed_at
            .insert(collector.to_owned(), Instant::now());
        Ok(inserted)
    }

    async fn store(&self, collector: &str) -> Result<Option<String>, Error> {
        Ok(self.state().stores.get(collector).cloned())
    }

    async fn bind_store(&self, collector: &str, store_id: &str) -> Result<(), Error> {
        self.state()
            .stores
            .entry(collector.to_owned())
            .or_insert_with(|| store_id.to_owned());
        Ok(())
    }

    async fn acked(&self, collector: &str, up_to: u64) -> Result<(), Error> {
        self.state().acked.insert(collector.to_owned(), up_to);
        Ok(())
    }

    async fn caught_up(&self, collector: &str, round_started_ms: i64) -> Result<(), Error> {
        self.state()
            .caught_up
            .insert(collector.to_owned(), round_started_ms);
        Ok(())
    }

    async fn failed(&self, collector: &str, message: &str) -> Result<(), Error> {
        self.state()
            .failures
            .push((collector.to_owned(), message.to_owned()));
        Ok(())
    }
}

// --- real collectors --------------------------------------------------------

/// A collector running in this process, on loopback.
struct Lab {
    dir: tempfile::TempDir,
    running: RunningCollector,
    tls: bool,
}

impl Lab {
    /// A collector named `node`; `export_toml` is added to its `[export]`.
    async fn start(node: &str, tls: bool, max_batch: usize, export_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            export_listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(dir.path().to_path_buf()),
            plain_http: !tls,
        };
        let toml = format!(
            "node_id = \"{node}\"\n[export]\ntoken = \"{TOKEN}\"\nmax_batch = \
             {max_batch}\n{export_toml}\n[shutdown]\ngrace_secs = 1\n"
        );
        let config = CollectorConfig::from_toml_with_env(&toml, "test", Vec::new(), &overrides)
            .expect("valid collector config");
        let running = RunningCollector::start(&config)
            .await
            .expect("collector starts");
        Self { dir, running, tls }
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// The collector's generated certificate.
    fn cert_file(&self) -> PathBuf {
        self.dir.path().join("tls/cert.pem")
    }

    /// An endpoint for this collector's export listener.
    fn endpoint(&self, name: &str) -> CollectorEndpoint {
        let mut endpoint = CollectorEndpoint::new(
            name,
            format!("{}://{}", self.scheme(), self.running.export_addr),
            TOKEN,
        );
        endpoint.timeout_s = 10;
        if self.tls {
            endpoint.ca_file = Some(self.cert_file());
        } else {
            endpoint.allow_plain_http = true;
        }
        endpoint
    }

    /// Posts `n` fresh reports to the public listener, as a probe does;
    /// returns their ids in the order sent.
    async fn ingest(&self, n: usize) -> Vec<String> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20));
        if self.tls {
            let pem = std::fs::read(self.cert_file()).unwrap();
            builder = builder
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        let client = builder.build().unwrap();
        let url = format!(
            "{}://{}/api/v1/report",
            self.scheme(),
            self.running.public_addr
        );
        let mut ids = Vec::new();
        for _ in 0..n {
            let report = sample_report();
            let response = client.post(&url).json(&report).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED, "ingest");
            ids.push(report["report_id"].as_str().unwrap().to_owned());
        }
        ids
    }

    /// (unacknowledged, acknowledged up to) on the collector.
    async fn unacked(&self) -> (u64, u64) {
        let stats = self.running.staging.stats().await.unwrap();
        (stats.unacked, stats.acked_up_to)
    }

    async fn stop(self) {
        self.running.shutdown().await.unwrap();
    }
}

/// The repository's example report with a fresh `UUIDv7` `report_id`.
fn sample_report() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/report.example.json");
    let mut report: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    report["report_id"] = Value::String(ReportId::new_v7().to_string());
    report
}

fn settings(max_pages_per_round: u32) -> PullSettings {
    PullSettings {
        interval_s: 1,
        max_pages_per_round,
    }
}

fn puller(endpoints: &[CollectorEndpoint], max_pages: u32) -> Puller {
    Puller::new(endpoints, settings(max_pages)).expect("valid puller")
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .expect("the test finishes in time")
}

fn error_of(round: &CollectorRound) -> &str {
    round
        .error
        .as_deref()
        .unwrap_or_else(|| panic!("the round should have failed: {round:?}"))
}

// --- pulling from real collectors --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_every_page_in_order_commits_then_acknowledges() {
    bounded(async {
        let lab = Lab::start("node-a", false, 3, "").await;
        let ids = lab.ingest(7).await;
        let mut endpoint = lab.endpoint("a");
        endpoint.batch = 2;
        let sink = MemSink::default();
        let rounds = puller(&[endpoint], 100).pull_once(&sink).await;

        assert_eq!(rounds.len(), 1);
        let round = &rounds[0];
        assert_eq!(round.error, None, "{round:?}");
        assert_eq!(round.collector, "a");
        assert_eq!(round.node_id.as_deref(), Some("node-a"));
        assert_eq!(
            (round.pages, round.pulled, round.inserted, round.duplicates),
            (4, 7, 7, 0)
        );
        assert_eq!(round.cursor, 7);
        assert_eq!(round.acked_up_to, Some(7));
        assert!(round.caught_up);
        assert_eq!(round.ack_error, None);

        assert_eq!(sink.seqs("node-a"), (1..=7).collect::<Vec<_>>());
        assert_eq!(sink.report_ids(), ids, "stored in the order sent");
        {
            let state = sink.state();
            assert_eq!(state.commits, 4, "one commit per page");
            assert_eq!(state.cursors["a"], ("node-a".to_owned(), 7));
            assert_eq!(state.acked["a"], 7);
            // Pulled to the end: everything received before the round
            // started is stored.
            assert_eq!(state.caught_up["a"], round.started_at_ms);
            for (seq, row) in state.rows.values().enumerate() {
                let stored: Value = serde_json::from_slice(&row.body).unwrap();
                assert_eq!(stored["envelope"]["seq"], seq as u64 + 1);
                assert_eq!(stored["envelope"]["node_id"], "node-a");
                assert!(row.received_at_ms.unwrap() > 1_700_000_000_000);
            }
        }
        assert_eq!(lab.unacked().await, (0, 7));

        // Nothing new: an empty page, no commit, no new ack needed.
        let again = puller(&[lab.endpoint("a")], 100).pull_once(&sink).await;
        assert_eq!(again[0].error, None);
        assert_eq!((again[0].pages, again[0].pulled), (0, 0));
        assert!(again[0].caught_up);
        assert_eq!(sink.state().commits, 4);
        assert_eq!(sink.state().caught_up["a"], again[0].started_at_ms);
        lab.stop().await;
    })
    .await;
}

/// A page that reaches what the collector had durably stored when it was
/// asked for brings the puller to its end, though the round stops before
/// an empty page: under steady traffic the page after it is seldom empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reaching_the_durable_end_is_caught_up_without_an_empty_page() {
    bounded(async {
        let lab = Lab::start("node-d", false, 1000, "").await;
        lab.ingest(5).await;
        let mut endpoint = lab.endpoint("d");
        endpoint.batch = 10;
        let sink = MemSink::default();
        let round = puller(&[endpoint], 1).pull_once(&sink).await.remove(0);
        assert_eq!(round.error, None);
        assert_eq!((round.pages, round.pulled), (1, 5));
        assert!(!round.caught_up, "no empty page was asked for");
        assert_eq!(sink.state().caught_up["d"], round.started_at_ms);
        lab.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_resumes_after_a_restart_and_rounds_are_bounded() {
    bounded(async {
        let lab = Lab::start("node-b", false, 1000, "").await;
        lab.ingest(5).await;
        let mut endpoint = lab.endpoint("b");
        endpoint.batch = 2;
        let sink = MemSink::default();

        // At most one page per round: the round says it is not caught up.
        let first = puller(std::slice::from_ref(&endpoint), 1);
        let round = first.pull_once(&sink).await.remove(0);
        assert_eq!(round.error, None);
        assert_eq!((round.pages, round.pulled, round.cursor), (1, 2, 2));
        assert!(!round.caught_up);
        assert!(sink.state().caught_up.is_empty(), "not pulled to its end");
        assert_eq!(lab.unacked().await, (3, 2));
        drop(first);

        // A new puller (a restarted process) with the same sink resumes
        // after seq 2; nothing is pulled twice.
        lab.ingest(2).await;
        let second = puller(&[endpoint], 100);
        let round = second.pull_once(&sink).await.remove(0);
        assert_eq!(round.error, None);
        assert_eq!(
            (round.pages, round.pulled, round.inserted, round.duplicates),
            (3, 5, 5, 0)
        );
        assert_eq!(round.cursor, 7);
        assert!(round.caught_up);
        assert_eq!(sink.seqs("node-b"), (1..=7).collect::<Vec<_>>());
        assert_eq!(lab.unacked().await, (0, 7));
        lab.stop().await;
    })
    .await;
}

/// The collector's data disk is replaced: same node id, its staging store
/// made afresh, numbering from 1 again. Pulling on would take its new
/// reports 1..N for the ones already pulled and acknowledge them away; the
/// puller refuses the collector instead, storing and acknowledging nothing,
/// whether the new store has fewer reports than the cursor or more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_whose_store_was_made_afresh_is_refused() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("sync.sqlite3").display());
        let store = lineprobe_sync::Store::open(&url).await.unwrap();
        let old = Lab::start("node-r", false, 1000, "").await;
        old.ingest(3).await;
        let round = puller(&[old.endpoint("r")], 100)
            .pull_once(&store)
            .await
            .remove(0);
        assert_eq!((round.error, round.cursor), (None, 3));
        old.stop().await;

        for more in [1, 5] {
            let fresh = Lab::start("node-r", false, 1000, "").await;
            fresh.ingest(more).await;
            let round = puller(&[fresh.endpoint("r")], 100)
                .pull_once(&store)
                .await
                .remove(0);
            let error = error_of(&round);
            assert!(
                error.contains("another staging store") && error.contains("new node_id"),
                "{error}"
            );
            // Nothing stored, the cursor where it was, nothing acknowledged.
            assert_eq!(store.counts().await.unwrap().raw, 3);
            assert_eq!(store.cursor("r").await.unwrap().unwrap().after_seq, 3);
            assert_eq!(fresh.unacked().await, (u64::try_from(more).unwrap(), 0));
            fresh.stop().await;
        }
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_before_it_is_committed() {
    bounded(async {
        let lab = Lab::start("node-c", false, 1000, "").await;
        lab.ingest(3).await;
        let sink = MemSink::default();
        sink.state().fail_commits = true;
        let puller = puller(&[lab.endpoint("c")], 100);

        let round = puller.pull_once(&sink).await.remove(0);
        assert!(error_of(&round).contains("refuses to commit"), "{round:?}");
        assert_eq!(round.acked_up_to, None);
        assert_eq!((round.pages, round.pulled, round.cursor), (0, 0, 0));
        // The collector still holds all three unacknowledged.
        assert_eq!(lab.unacked().await, (3, 0));
        {
            let state = sink.state();
            assert!(state.rows.is_empty() && state.cursors.is_empty());
            assert_eq!(state.failures.len(), 1);
            assert!(state.failures[0].1.contains("refuses to commit"));
        }

        // Once the sink commits again, the same reports are pulled and acked.
        sink.state().fail_commits = false;
        let round = puller.pull_once(&sink).await.remove(0);
        assert_eq!(round.error, None);
        assert_eq!(
            (round.pulled, round.inserted, round.acked_up_to),
            (3, 3, Some(3))
        );
        assert_eq!(lab.unacked().await, (0, 3));
        lab.stop().await;
    })
    .await;
}

/// A proxy in front of a collector's export listener that can lose acks.
struct AckDropper {
    addr: SocketAddr,
    drop_acks: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
    /// Drops the collector's `X-LineProbe-Store` header from its answers.
    strip_store: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    drop_acks: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
    strip_store: Arc<AtomicBool>,
}

async fn proxy(State(state): State<ProxyState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    if parts.method == Method::POST
        && parts.uri.path() == "/export/ack"
        && state.drop_acks.load(Ordering::SeqCst)
    {
        // Lost on the way: the collector never hears of it.
        state.dropped.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::BAD_GATEWAY, "upstream connection lost").into_response();
    }
    let url = format!("{}{}", state.upstream, parts.uri);
    let mut forwarded = state.client.request(parts.method, url).body(body);
    for name in ["authorization", "content-type", "accept"] {
        if let Some(value) = parts.headers.get(name) {
            forwarded = forwarded.header(name, value);
        }
    }
    let answer = forwarded.send().await.unwrap();
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name.as_str() == "x-lineprobe-store" && state.strip_store.load(Ordering::SeqCst) {
            continue;
        }
        if name.as_str().starts_with("x-lineprobe") || name.as_str() == "content-type" {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}

impl AckDropper {
    async fn start(upstream: SocketAddr) -> Self {
        let drop_acks = Arc::new(AtomicBool::new(true));
        let dropped = Arc::new(AtomicUsize::new(0));
        let strip_store = Arc::new(AtomicBool::new(false));
        let state = ProxyState {
            upstream: format!("http://{upstream}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            drop_acks: Arc::clone(&drop_acks),
            dropped: Arc::clone(&dropped),
            strip_store: Arc::clone(&strip_store),
        };
        let router = Router::new().fallback(proxy).with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            addr,
            drop_acks,
            dropped,
            strip_store,
            task,
        }
    }
}

/// A collector that named its store and then answers without naming one
/// (an older build put in its place, a proxy that drops the header) could
/// have a store made afresh: nothing is stored or acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_stops_naming_its_store_is_refused() {
    bounded(async {
        let lab = Lab::start("node-s", false, 1000, "").await;
        lab.ingest(2).await;
        let proxy = AckDropper::start(lab.running.export_addr).await;
        proxy.drop_acks.store(false, Ordering::SeqCst);
        let mut endpoint = lab.endpoint("s");
        endpoint.url = format!("http://{}", proxy.addr);
        let sink = MemSink::default();
        let puller = puller(std::slice::from_ref(&endpoint), 100);

        let round = puller.pull_once(&sink).await.remove(0);
        assert_eq!(round.error, None, "{round:?}");
        assert_eq!((round.pulled, round.acked_up_to), (2, Some(2)));

        proxy.strip_store.store(true, Ordering::SeqCst);
        lab.ingest(3).await;
        let round = puller.pull_once(&sink).await.remove(0);
        let error = error_of(&round);
        assert!(error.contains("X-LineProbe-Store"), "{error}");
        assert_eq!((round.pulled, round.acked_up_to), (0, None));
        assert_eq!(sink.seqs("node-s"), vec![1, 2]);
        assert_eq!(lab.unacked().await, (3, 2));

        // Named again, as the same store: pulled as before.
        proxy.strip_store.store(false, Ordering::SeqCst);
        let round = puller.pull_once(&sink).await.remove(0);
        assert_eq!(round.error, None, "{round:?}");
        assert_eq!((round.pulled, round.acked_up_to), (3, Some(5)));
        proxy.task.abort();
        lab.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ack_is_repeated_and_nothing_is_stored_twice() {
    bounded(async {
        let lab = Lab::start("node-d", false, 1000, "").await;
        lab.ingest(4).await;
        let proxy = AckDropper::start(lab.running.export_addr).await;
        let mut endpoint = lab.endpoint("d");
        endpoint.url = format!("http://{}", proxy.addr);
        let sink = MemSink::default();
        let puller = puller(std::slice::from_ref(&endpoint), 100);

        // The page is committed but its ack is lost: recorded, not fatal.
        let round = puller.pull_once(&sink).await.remove(0);
        assert_eq!(round.error, None, "{round:?}");
        assert_eq!((round.pulled, round.inserted, round.cursor), (4, 4, 4));
        assert_eq!(round.acked_up_to, None);
        assert!(
            round.ack_error.as_deref().unwrap().contains("502"),
            "{round:?}"
        );
        assert_eq!(proxy.dropped.load(Ordering::SeqCst), 1);
        assert_eq!(lab.unacked().await, (4, 0));
        assert!(
            sink.state()
                .failures
                .iter()
                .any(|(c, m)| c == "d" && m.contains("acknowledgement up to seq 4"))
        );

        // Next round: nothing new, so the ack is repeated on its own.
        proxy.drop_acks.store(false, Ordering::SeqCst);
        let round = puller.pull_once(&sink).await.remove(0);
        assert_eq!(round.error, None);
        assert_eq!((round.pulled, round.acked_up_to), (0, Some(4)));
        assert_eq!(round.ack_error, None);
        assert_eq!(lab.unacked().await, (0, 4));
        assert_eq!(sink.state().acked["d"], 4);

        // A lost ack followed by new reports: the next page's ack covers it.
        proxy.drop_acks.store(true, Ordering::SeqCst);
        lab.ingest(2).await;
        let round = puller.pull_once(&sink).await.remove(0);
        assert_eq!((round.pulled, round.acked_up_to), (2, None));
        assert_eq!(lab.unacked().await, (2, 4));
        proxy.drop_acks.store(false, Ordering::SeqCst);
        lab.ingest(1).await;
        let round = puller.pull_once(&sink).await.remove(0);
        assert_eq!((round.pulled, round.acked_up_to), (1, Some(7)));
        assert_eq!(lab.unacked().await, (0, 7));

        // A restarted puller acknowledges its stored cursor once.
        proxy.drop_acks.store(true, Ordering::SeqCst);
        let dropped_before = proxy.dropped.load(Ordering::SeqCst);
        let restarted = Puller::new(&[endpoint], settings(100)).unwrap();
        let round = restarted.pull_once(&sink).await.remove(0);
        assert_eq!(round.pulled, 0);
        assert_eq!(proxy.dropped.load(Ordering::SeqCst), dropped_before + 1);

        // Reports pulled again (a cursor lost inside) never make a second row.
        sink.state().cursors.clear();
        proxy.drop_acks.store(false, Ordering::SeqCst);
        let round = puller.pull_once(&sink).await.remove(0);
        assert_eq!(round.error, None);
        assert_eq!((round.pulled, round.inserted, round.duplicates), (7, 0, 7));
        assert_eq!(sink.seqs("node-d"), (1..=7).collect::<Vec<_>>());
        proxy.task.abort();
        lab.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_does_not_stop_the_others() {
    bounded(async {
        let lab = Lab::start("node-e", false, 1000, "").await;
        lab.ingest(3).await;
        // A port nobody listens on any more.
        let closed = ports::unused_loopback_addr();
        let mut down = CollectorEndpoint::new("down", format!("http://{closed}"), TOKEN);
        down.allow_plain_http = true;
        down.timeout_s = 5;
        let sink = MemSink::default();
        let rounds = puller(&[down, lab.endpoint("up")], 100)
            .pull_once(&sink)
            .await;

        assert_eq!(rounds[0].collector, "down");
        assert!(
            error_of(&rounds[0]).contains("cannot connect"),
            "{:?}",
            rounds[0]
        );
        assert_eq!(rounds[1].collector, "up");
        assert_eq!(rounds[1].error, None);
        assert_eq!((rounds[1].pulled, rounds[1].acked_up_to), (3, Some(3)));
        assert_eq!(sink.seqs("node-e"), vec![1, 2, 3]);
        assert!(sink.state().failures.iter().any(|(c, _)| c == "down"));
        assert!(sink.state().failures.iter().all(|(c, _)| c != "up"));
        lab.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_collector_costs_only_its_own_timeout() {
    bounded(async {
        let lab = Lab::start("node-f", false, 2, "").await;
        lab.ingest(5).await;
        // Accepts connections and never answers.
        let blackhole = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = blackhole.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = blackhole.accept().await {
                held.push(socket);
            }
        });
        let mut silent = CollectorEndpoint::new("silent", format!("http://{silent_addr}"), TOKEN);
        silent.allow_plain_http = true;
        silent.timeout_s = 3;
        let sink = MemSink::default();

        let started = Instant::now();
        let rounds = puller(&[silent, lab.endpoint("healthy")], 100)
            .pull_once(&sink)
            .await;
        let took = started.elapsed();

        assert!(
            error_of(&rounds[0]).contains("timed out"),
            "{:?}",
            rounds[0]
        );
        assert!(took >= Duration::from_secs(3), "{took:?}");
        assert!(
            took < Duration::from_secs(10),
            "bounded by the timeout: {took:?}"
        );
        let healthy = &rounds[1];
        assert_eq!(healthy.error, None);
        assert_eq!((healthy.pages, healthy.pulled), (3, 5));
        // Its reports were stored (and its round ended) long before the
        // silent collector's timeout.
        let stored_after = sink.state().committed_at["healthy"] - started;
        assert!(
            stored_after < Duration::from_secs(2) && healthy.elapsed < Duration::from_secs(2),
            "the healthy collector waited on the silent one: {stored_after:?} {healthy:?}"
        );
        assert_eq!(lab.unacked().await, (0, 5));
        holder.abort();
        lab.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_a_clear_error() {
    bounded(async {
        let lab = Lab::start("node-g", false, 1000, "").await;
        lab.ingest(1).await;
        let mut endpoint = lab.endpoint("g");
        endpoint.token = Some(lineprobe_sync::ExportSecret::new(
            "not-the-token-0123456789abcdef0123456789",
        ));
        let sink = MemSink::default();
        let round = puller(&[endpoint], 100).pull_once(&sink).await.remove(0);
        let error = error_of(&round);
        assert!(error.contains("401"), "{error}");
        assert!(error.contains("refused the export token"), "{error}");
        assert!(error.contains("token_env"), "{error}");
        assert!(sink.state().rows.is_empty());
        assert_eq!(lab.unacked().await, (1, 0));
        lab.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_collectors_generated_certificate() {
    bounded(async {
        let lab = Lab::start("node-h", true, 1000, "").await;
        lab.ingest(3).await;
        let sink = MemSink::default();
        let round = puller(&[lab.endpoint("h")], 100)
            .pull_once(&sink)
            .await
            .remove(0);
        assert_eq!(round.error, None, "{round:?}");
        assert_eq!((round.pulled, round.acked_up_to), (3, Some(3)));

        // Another certificate in ca_file: the collector is not trusted.
        let other = tempfile::tempdir().unwrap();
        let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let stranger_file = other.path().join("stranger.pem");
        std::fs::write(&stranger_file, stranger.cert.pem()).unwrap();
        let mut untrusted = lab.endpoint("h2");
        untrusted.ca_file = Some(stranger_file);
        let round = puller(&[untrusted], 100)
            .pull_once(&MemSink::default())
            .await
            .remove(0);
        let error = error_of(&round);
        assert!(error.contains("invalid peer certificate"), "{error}");
        assert!(error.contains("set ca_file to its certificate"), "{error}");

        // Plain HTTP to the TLS listener is no answer either.
        let mut plain = lab.endpoint("h3");
        plain.url = format!("http://{}", lab.running.export_addr);
        plain.ca_file = None;
        plain.allow_plain_http = true;
        plain.timeout_s = 5;
        let round = puller(&[plain], 100)
            .pull_once(&MemSink::default())
            .await
            .remove(0);
        assert!(
            error_of(&round).contains("use an https:// url"),
            "{round:?}"
        );
        lab.stop().await;
    })
    .await;
}

/// A client CA, a client certificate it signed, and one it did not.
struct ClientPki {
    ca_file: PathBuf,
    member: (PathBuf, PathBuf),
    stranger: (PathBuf, PathBuf),
}

fn client_pki(dir: &Path) -> ClientPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        (cert, Issuer::new(params, key))
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>, stem: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["puller.internal".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, issuer).unwrap();
        let cert_file = dir.join(format!("{stem}.crt"));
        let key_file = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    };
    let (ca_cert, ca_issuer) = ca("lineprobe test puller CA");
    let (_, other_issuer) = ca("someone else's CA");
    let ca_file = dir.join("client-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    ClientPki {
        ca_file,
        member: leaf(&ca_issuer, "member"),
        stranger: leaf(&other_issuer, "stranger"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    bounded(async {
        let pki_dir = tempfile::tempdir().unwrap();
        let pki = client_pki(pki_dir.path());
        let lab = Lab::start(
            "node-m",
            true,
            1000,
            &format!("client_ca = {:?}", pki.ca_file.display().to_string()),
        )
        .await;
        lab.ingest(2).await;

        let with = |name: &str, pair: Option<&(PathBuf, PathBuf)>| {
            let mut endpoint = lab.endpoint(name);
            endpoint.timeout_s = 5;
            if let Some((cert, key)) = pair {
                endpoint.client_cert = Some(cert.clone());
                endpoint.client_key = Some(key.clone());
            }
            endpoint
        };
        let sink = MemSink::default();
        let rounds = puller(
            &[
                with("anonymous", None),
                with("stranger", Some(&pki.stranger)),
                with("member", Some(&pki.member)),
            ],
            100,
        )
        .pull_once(&sink)
        .await;
        assert!(
            error_of(&rounds[0]).contains("requires a client certificate"),
            "{:?}",
            rounds[0]
        );
        assert!(
            error_of(&rounds[1]).contains("refused the client certificate"),
            "{:?}",
            rounds[1]
        );
        assert_eq!(rounds[2].error, None, "{:?}", rounds[2]);
        assert_eq!((rounds[2].pulled, rounds[2].acked_up_to), (2, Some(2)));
        assert_eq!(sink.state().cursors.len(), 1);
        assert_eq!(lab.unacked().await, (0, 2));

        // A key that does not go with the certificate is a config error.
        let mut mismatched = with("mismatched", Some(&pki.member));
        mismatched.client_key = Some(pki.stranger.1.clone());
        let error = CollectorClient::new(&mismatched).unwrap_err();
        assert!(matches!(error, Error::CollectorConfig { .. }), "{error:?}");
        assert!(error.to_string().contains("client_key"), "{error}");
        assert_eq!(error.exit_code(), 2);
        lab.stop().await;
    })
    .await;
}

// --- a fake export server: the collector is not trusted ----------------------

/// What the fake answers to `GET /export`.
#[derive(Clone)]
struct FakeAnswer {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: FakeBody,
}

#[derive(Clone)]
enum FakeBody {
    Bytes(Vec<u8>),
    /// Sent in chunks, without a Content-Length.
    Streamed {
        chunk: usize,
        total: usize,
    },
}

/// A page with correct headers for `lines`.
fn page(node: Option<&str>, after: u64, lines: &[&str]) -> FakeAnswer {
    let seqs: Vec<u64> = lines
        .iter()
        .filter_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["envelope"]["seq"].as_u64())
        })
        .collect();
    let mut headers = vec![
        ("content-type", "application/x-ndjson".to_owned()),
        ("x-lineprobe-count", lines.len().to_string()),
        (
            "x-lineprobe-next-after",
            seqs.last().copied().unwrap_or(after).to_string(),
        ),
    ];
    if let Some(node) = node {
        headers.push(("x-lineprobe-node", node.to_owned()));
    }
    let mut body = String::new();
    for line in lines {
        body.push_str(line);
        body.push('\n');
    }
    FakeAnswer {
        status: StatusCode::OK,
        headers,
        body: FakeBody::Bytes(body.into_bytes()),
    }
}

fn line(seq: u64) -> String {
    format!(
        r#"{{"schema":1,"report_id":"{}","envelope":{{"received_at":"2026-01-02T03:04:05Z","node_id":"fake-node","seq":{seq}}}}}"#,
        ReportId::new_v7()
    )
}

fn set_header(answer: &mut FakeAnswer, name: &'static str, value: &str) {
    answer.headers.retain(|(n, _)| *n != name);
    answer.headers.push((name, value.to_owned()));
}

#[derive(Default)]
struct FakeLog {
    /// (after, limit) of every `GET /export`.
    gets: Vec<(u64, usize)>,
    acks: Vec<Value>,
    others: Vec<String>,
    /// How far below the sent `up_to` the fake confirms an ack.
    ack_shortfall: u64,
}

#[derive(Clone)]
struct Fake {
    answer: Arc<dyn Fn(u64, usize) -> FakeAnswer + Send + Sync>,
    log: Arc<Mutex<FakeLog>>,
}

async fn fake_handler(State(fake): State<Fake>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    match (parts.method.clone(), parts.uri.path()) {
        (Method::GET, "/export") => {
            let query: BTreeMap<String, String> = parts
                .uri
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let after = query["after"].parse().unwrap();
            let limit = query["limit"].parse().unwrap();
            fake.log.lock().unwrap().gets.push((after, limit));
            let answer = (fake.answer)(after, limit);
            let mut headers = HeaderMap::new();
            for (name, value) in &answer.headers {
                headers.insert(*name, value.parse().unwrap());
            }
            let body = match answer.body {
                FakeBody::Bytes(bytes) => Body::from(bytes),
                FakeBody::Streamed { chunk, total } => {
                    let chunks = (0..total.div_ceil(chunk)).map(move |i| {
                        let n = chunk.min(total - i * chunk);
                        Ok::<_, std::convert::Infallible>(Bytes::from(vec![b' '; n]))
                    });
                    Body::from_stream(futures_util::stream::iter(chunks))
                }
            };
            (answer.status, headers, body).into_response()
        }
        (Method::POST, "/export/ack") => {
            let ack: Value = serde_json::from_slice(&body).unwrap();
            let up_to = ack["up_to"].as_u64().unwrap();
            let mut log = fake.log.lock().unwrap();
            log.acks.push(ack);
            let confirmed = up_to.saturating_sub(log.ack_shortfall);
            axum::Json(serde_json::json!({
                "node_id": "fake-node", "acked_up_to": confirmed, "newly_acked": 1
            }))
            .into_response()
        }
        _ => {
            fake.log.lock().unwrap().others.push(parts.uri.to_string());
            (StatusCode::NOT_FOUND, "no").into_response()
        }
    }
}

/// Starts a fake export server; returns its address, its log and the task.
async fn fake_server(
    answer: impl Fn(u64, usize) -> FakeAnswer + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<FakeLog>>, JoinHandle<()>) {
    let fake = Fake {
        answer: Arc::new(answer),
        log: Arc::new(Mutex::new(FakeLog::default())),
    };
    let log = Arc::clone(&fake.log);
    let router = Router::new().fallback(fake_handler).with_state(fake);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (addr, log, task)
}

fn fake_endpoint(addr: SocketAddr) -> CollectorEndpoint {
    let mut endpoint = CollectorEndpoint::new("fake", format!("http://{addr}"), TOKEN);
    endpoint.allow_plain_http = true;
    endpoint.timeout_s = 10;
    endpoint.batch = 8;
    endpoint
}

/// Pulls once from a fake answering `answer`, with the sink's cursor at
/// `cursor`; asserts that the page was refused with an error containing
/// `expected` and that nothing was committed or acknowledged. Returns the
/// fake's log.
async fn refused(
    what: &str,
    cursor: Option<(&str, u64)>,
    tweak: impl FnOnce(&mut CollectorEndpoint),
    answer: impl Fn(u64, usize) -> FakeAnswer + Send + Sync + 'static,
    expected: &str,
) -> FakeLog {
    let (addr, log, task) = fake_server(answer).await;
    let sink = MemSink::default();
    if let Some((node, after)) = cursor {
        sink.state()
            .cursors
            .insert("fake".to_owned(), (node.to_owned(), after));
    }
    let mut endpoint = fake_endpoint(addr);
    tweak(&mut endpoint);
    let round = puller(&[endpoint], 100).pull_once(&sink).await.remove(0);
    let error = round
        .error
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: the page should be refused: {round:?}"));
    assert!(error.contains(expected), "{what}: {error}");
    {
        let state = sink.state();
        assert!(state.rows.is_empty(), "{what}: nothing is stored");
        assert_eq!(state.commits, 0, "{what}");
        assert_eq!(
            state.cursors.get("fake").map(|(n, a)| (n.as_str(), *a)),
            cursor,
            "{what}: the cursor stays"
        );
        assert_eq!(state.failures.len(), 1, "{what}");
    }
    task.abort();
    let mut log = log.lock().unwrap();
    assert!(log.acks.is_empty(), "{what}: nothing is acknowledged");
    std::mem::take(&mut *log)
}

/// An acknowledgement names the staging store its pages came from, so that
/// a collector whose store was made afresh since (same node id, seqs
/// started over) refuses it instead of marking reports nobody pulled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_name_the_store_the_pages_came_from() {
    bounded(async {
        const STORE: &str = "0123456789abcdef0123456789abcdef";
        let (l1, l2) = (line(1), line(2));
        let (addr, log, task) = fake_server(move |after, _| {
            let mut answer = if after == 0 {
                page(Some("fake-node"), after, &[&l1, &l2])
            } else {
                page(Some("fake-node"), after, &[])
            };
            set_header(&mut answer, "x-lineprobe-store", STORE);
            answer
        })
        .await;
        let sink = MemSink::default();
        let round = puller(&[fake_endpoint(addr)], 100)
            .pull_once(&sink)
            .await
            .remove(0);
        assert_eq!((round.error.as_deref(), round.cursor), (None, 2));
        let acks = std::mem::take(&mut log.lock().unwrap().acks);
        assert_eq!(
            acks,
            [serde_json::json!({"node_id": "fake-node", "up_to": 2, "store": STORE})]
        );
        assert_eq!(round.acked_up_to, Some(2));

        // A collector that confirms less than was sent: the lower figure is
        // recorded (it was shown as sent) and the ack repeated next round.
        let sink = MemSink::default();
        log.lock().unwrap().ack_shortfall = 1;
        let puller = puller(&[fake_endpoint(addr)], 100);
        let round = puller.pull_once(&sink).await.remove(0);
        assert_eq!(round.acked_up_to, Some(1));
        log.lock().unwrap().ack_shortfall = 0;
        let again = puller.pull_once(&sink).await.remove(0);
        assert_eq!(again.acked_up_to, Some(2), "{again:?}");
        task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // one table of misbehaviours, told case by case
async fn inconsistent_pages_are_refused_whole() {
    bounded(async {
        let node = Some("fake-node");
        let (l1, l2, l3) = (line(1), line(2), line(3));

        let (a, b, c) = (l1.clone(), l3.clone(), l2.clone());
        refused(
            "seqs going back",
            None,
            |_| {},
            move |after, _| page(node, after, &[&a, &b, &c]),
            "not strictly increasing",
        )
        .await;

        let (a, b) = (l2.clone(), l2.clone());
        refused(
            "a repeated seq",
            None,
            |_| {},
            move |after, _| page(node, after, &[&a, &b]),
            "not strictly increasing",
        )
        .await;

        let (a, b) = (line(11), line(9));
        let log = refused(
            "a seq not after `after`",
            Some(("fake-node", 10)),
            |_| {},
            move |after, _| page(node, after, &[&a, &b]),
            "line 2 has seq 9 but only seqs after 10",
        )
        .await;
        assert_eq!(log.gets, vec![(10, 8)], "asked from the stored cursor");

        let (a, b) = (line(10), line(11));
        refused(
            "a seq equal to `after`",
            Some(("fake-node", 10)),
            |_| {},
            move |after, _| page(node, after, &[&a, &b]),
            "line 1 has seq 10 but only seqs after 10",
        )
        .await;

        let a = l1.clone();
        refused(
            "a line without seq",
            None,
            |_| {},
            move |after, _| page(node, after, &[&a, r#"{"report_id":"x","envelope":{}}"#]),
            "line 2 of the page: it has no envelope.seq",
        )
        .await;

        let a = l1.clone();
        refused(
            "a line that is not JSON at all",
            None,
            |_| {},
            move |after, _| page(node, after, &[&a, "<html>oops</html>"]),
            "line 2 of the page: it is not JSON",
        )
        .await;

        let (a, b) = (l1.clone(), l2.clone());
        refused(
            "a count that does not match",
            None,
            |_| {},
            move |after, _| {
                let mut answer = page(node, after, &[&a, &b]);
                set_header(&mut answer, "x-lineprobe-count", "3");
                answer
            },
            "X-LineProbe-Count says 3 reports but the page holds 2",
        )
        .await;

        let (a, b) = (l1.clone(), l2.clone());
        refused(
            "no count header",
            None,
            |_| {},
            move |after, _| {
                let mut answer = page(node, after, &[&a, &b]);
                answer.headers.retain(|(n, _)| *n != "x-lineprobe-count");
                answer
            },
            "no x-lineprobe-count header",
        )
        .await;

        let (a, b) = (l1.clone(), l2.clone());
        refused(
            "a next-after that does not match",
            None,
            |_| {},
            move |after, _| {
                let mut answer = page(node, after, &[&a, &b]);
                set_header(&mut answer, "x-lineprobe-next-after", "5");
                answer
            },
            "X-LineProbe-Next-After is 5 but the page ends at seq 2",
        )
        .await;

        let a = l1.clone();
        refused(
            "no node header",
            None,
            |_| {},
            move |after, _| page(None, after, &[&a]),
            "no X-LineProbe-Node header",
        )
        .await;

        let a = l1.clone();
        refused(
            "a node header that is no node id",
            None,
            |_| {},
            move |after, _| page(Some("bad node/../x"), after, &[&a]),
            "is not a node id",
        )
        .await;

        let a = line(6);
        refused(
            "another node than the cursor's",
            Some(("old-node", 5)),
            |_| {},
            move |after, _| page(node, after, &[&a]),
            "answers as node \"fake-node\" but the cursor of \"fake\" was committed for node \
             \"old-node\"",
        )
        .await;

        let (a, b, c) = (l1.clone(), l2.clone(), l3.clone());
        refused(
            "more lines than asked for",
            None,
            |e| e.batch = 2,
            move |after, _| page(node, after, &[&a, &b, &c]),
            "more than the 2 reports asked for",
        )
        .await;

        let a = l1.clone();
        refused(
            "not NDJSON",
            None,
            |_| {},
            move |after, _| {
                let mut answer = page(node, after, &[&a]);
                set_header(&mut answer, "content-type", "text/html");
                answer
            },
            "Content-Type \"text/html\"",
        )
        .await;

        refused(
            "a server error",
            None,
            |_| {},
            |_, _| FakeAnswer {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers: vec![("content-type", "application/json".to_owned())],
                body: FakeBody::Bytes(
                    br#"{"error":"staging_failed","detail":"disk on fire\u001b[2J"}"#.to_vec(),
                ),
            },
            "500 Internal Server Error: the collector failed or is shutting down; retried \
             next round (collector said: \"disk on fire [2J\")",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_pages_are_cut_off_and_asked_for_smaller() {
    bounded(async {
        const MIB: usize = 1024 * 1024;
        let node = Some("fake-node");
        for (what, body) in [
            (
                "with a Content-Length",
                FakeBody::Bytes(vec![b' '; 3 * MIB]),
            ),
            (
                "streamed without a length",
                FakeBody::Streamed {
                    chunk: 64 * 1024,
                    total: 3 * MIB,
                },
            ),
        ] {
            let log = refused(
                what,
                None,
                |e| e.max_page_bytes = 2 * MIB as u64,
                move |after, _| FakeAnswer {
                    body: body.clone(),
                    ..page(node, after, &[])
                },
                "larger than max_page_bytes (2097152 bytes)",
            )
            .await;
            assert_eq!(
                log.gets,
                vec![(0, 8), (0, 4), (0, 2), (0, 1)],
                "{what}: the batch is halved down to one report"
            );
        }

        // A collector whose big page fits once the batch is smaller.
        let (addr, log, task) = fake_server(move |after, limit| {
            let lines: Vec<String> = (after + 1..=after + limit as u64).map(line).collect();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let mut answer = page(node, after, &refs);
            if limit > 2 && after == 0 {
                answer.body = FakeBody::Bytes(vec![b' '; 3 * MIB]);
            }
            if after >= 6 {
                answer = page(node, after, &[]);
            }
            answer
        })
        .await;
        let mut endpoint = fake_endpoint(addr);
        endpoint.max_page_bytes = 2 * MIB as u64;
        let sink = MemSink::default();
        let round = puller(&[endpoint], 100).pull_once(&sink).await.remove(0);
        assert_eq!(round.error, None, "{round:?}");
        assert_eq!(sink.seqs("fake-node"), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(
            log.lock().unwrap().gets,
            vec![(0, 8), (0, 4), (0, 2), (2, 2), (4, 2), (6, 2)]
        );
        task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_line_with_a_readable_seq_is_stored_raw() {
    bounded(async {
        let good = line(1);
        let damaged = r#"{"envelope":{"seq":2,"received_at":"yesterday"},"report_id":7,"trace":{"#;
        let (addr, log, task) = fake_server(move |after, _| {
            if after == 0 {
                let mut answer = page(Some("fake-node"), after, &[&good, damaged]);
                set_header(&mut answer, "x-lineprobe-next-after", "2");
                answer
            } else {
                page(Some("fake-node"), after, &[])
            }
        })
        .await;
        let sink = MemSink::default();
        let round = puller(&[fake_endpoint(addr)], 100)
            .pull_once(&sink)
            .await
            .remove(0);
        assert_eq!(round.error, None, "{round:?}");
        assert_eq!((round.pulled, round.acked_up_to), (2, Some(2)));
        {
            let state = sink.state();
            let kept = &state.rows[&("fake-node".to_owned(), 2)];
            assert_eq!(kept.body, damaged.as_bytes());
            assert_eq!(
                (kept.report_id.as_deref(), kept.received_at_ms),
                (None, None)
            );
            let first = &state.rows[&("fake-node".to_owned(), 1)];
            assert_eq!(first.received_at_ms, Some(1_767_323_045_000));
        }
        let log = log.lock().unwrap();
        assert_eq!(
            log.acks,
            vec![serde_json::json!({"node_id": "fake-node", "up_to": 2})]
        );
        task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    bounded(async {
        let (addr, log, task) = fake_server(|_, _| FakeAnswer {
            status: StatusCode::FOUND,
            headers: vec![("location", "/elsewhere".to_owned())],
            body: FakeBody::Bytes(Vec::new()),
        })
        .await;
        let sink = MemSink::default();
        let round = puller(&[fake_endpoint(addr)], 100)
            .pull_once(&sink)
            .await
            .remove(0);
        let error = error_of(&round);
        assert!(error.contains("302"), "{error}");
        assert!(error.contains("redirects are not followed"), "{error}");
        assert!(log.lock().unwrap().others.is_empty(), "not followed");
        task.abort();
    })
    .await;
}

// --- run, configuration ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_pulls_new_reports_every_interval_until_shutdown() {
    bounded(async {
        let lab = Lab::start("node-r", false, 1000, "").await;
        lab.ingest(2).await;
        let sink = MemSink::default();
        let mut endpoint = lab.endpoint("r");
        endpoint.batch = 1;
        // One page per round: the backlog is pulled in back-to-back rounds.
        let puller = puller(&[endpoint], 1);
        let shutdown = CancellationToken::new();
        let run = puller.run(&sink, Duration::from_millis(200), shutdown.clone());
        let drive = async {
            wait_for(|| sink.seqs("node-r").len() == 2).await;
            lab.ingest(1).await;
            wait_for(|| sink.seqs("node-r").len() == 3).await;
            wait_for(|| sink.state().acked.get("r") == Some(&3)).await;
            shutdown.cancel();
        };
        let ((), ()) = tokio::join!(run, drive);
        assert_eq!(lab.unacked().await, (0, 3));
        lab.stop().await;
    })
    .await;
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn endpoints_are_validated_with_helpful_messages() {
    let parse = |toml: &str| -> CollectorEndpoint { toml::from_str(toml).unwrap() };
    let base = "name = \"dmz-1\"\nurl = \"https://collector.dmz:9443\"\nca_file = \
                \"/etc/lineprobe/collector.pem\"\ntoken_env = \"LP_TOKEN\"\n";
    let ok = parse(base);
    ok.validate().unwrap();
    assert_eq!(ok.timeout_s, 30);
    assert_eq!(ok.batch, 1000);
    assert!(ok.enabled);

    assert!(
        toml::from_str::<CollectorEndpoint>(&format!("{base}tokn = \"x\"\n"))
            .unwrap_err()
            .to_string()
            .contains("unknown field")
    );
    let message = |toml: &str| parse(toml).validate().unwrap_err().to_string();
    for (toml, expected) in [
        (
            base.replace("https://collector.dmz:9443", "http://collector.dmz:9443"),
            "allow_plain_http",
        ),
        (base.replace("dmz-1", "dmz 1"), "`name` must be"),
        (
            base.replace("https://collector.dmz:9443", "collector.dmz"),
            "is not a URL",
        ),
        (
            base.replace("https://collector.dmz:9443", "https://u:p@collector.dmz"),
            "credentials",
        ),
        (
            base.replace("https://collector.dmz:9443", "ftp://collector.dmz"),
            "must start with https://",
        ),
        (
            base.replace("token_env = \"LP_TOKEN\"\n", ""),
            "set `token_env`",
        ),
        (format!("{base}token = \"abc\"\n"), "not both"),
        (
            format!("{base}client_cert = \"/c.pem\"\n"),
            "set both `client_cert` and `client_key`",
        ),
        (format!("{base}timeout_s = 0\n"), "`timeout_s` = 0"),
        (format!("{base}batch = 20000\n"), "`batch` = 20000"),
        (
            format!("{base}max_page_bytes = 1000\n"),
            "`max_page_bytes` = 1000",
        ),
    ] {
        let got = message(&toml);
        assert!(got.contains(expected), "{toml}: {got}");
        assert!(got.starts_with("collector \""), "{got}");
    }

    let a = parse(base);
    let dup = validate_collectors(&[a.clone(), a]).unwrap_err();
    assert!(dup.to_string().contains("unique"), "{dup}");
    assert_eq!(dup.exit_code(), 2);

    let settings: PullSettings = toml::from_str("interval_s = 0").unwrap();
    assert!(
        settings
            .validate()
            .unwrap_err()
            .to_string()
            .contains("interval_s")
    );
    assert_eq!(PullSettings::default().interval_s, 60);
}

#[test]
fn tokens_come_from_the_environment_and_never_show() {
    let mut endpoint = CollectorEndpoint::new("env", "http://127.0.0.1:9", TOKEN);
    endpoint.allow_plain_http = true;
    assert!(
        !format!("{endpoint:?}").contains(TOKEN),
        "Debug redacts the token"
    );
    endpoint.token = None;
    endpoint.token_env = Some("LP_PULL_TEST_TOKEN".to_owned());
    let missing = CollectorClient::with_env(&endpoint, &|_| None).unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("LP_PULL_TEST_TOKEN (token_env) is not set"),
        "{missing}"
    );
    let client = CollectorClient::with_env(&endpoint, &|name| {
        (name == "LP_PULL_TEST_TOKEN").then(|| TOKEN.to_owned())
    })
    .unwrap();
    assert_eq!(client.name(), "env");
    assert!(!format!("{client:?}").contains(TOKEN));
}

// --- answers written by hand over TCP ----------------------------------------

/// A raw HTTP/1.1 server: each request gets the pieces `answer` gives for
/// its request line, written `pause` apart, and then the connection is
/// closed (so a body without a length ends where the connection does).
/// Returns its address, the request lines it saw, and its task.
async fn raw_server(
    answer: impl Fn(&str) -> Vec<Vec<u8>> + Send + Sync + 'static,
    pause: Duration,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let answer = Arc::new(answer);
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = Arc::clone(&answer);
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0_u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let request_line = head.lines().next().unwrap_or_default().to_owned();
                log.lock().unwrap().push(request_line.clone());
                for piece in answer(&request_line) {
                    if socket.write_all(&piece).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(pause).await;
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, seen, task)
}

/// The head of an export page of `count` reports ending at `next_after`;
/// `length` is its Content-Length, if it has one.
fn page_head(count: usize, next_after: u64, length: Option<usize>) -> Vec<u8> {
    let length = length.map_or(String::new(), |n| format!("content-length: {n}\r\n"));
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
         x-lineprobe-node: fake-node\r\nx-lineprobe-count: {count}\r\n\
         x-lineprobe-next-after: {next_after}\r\n{length}connection: close\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_cut_short_inside_its_last_line_is_refused() {
    bounded(async {
        // The connection closes two bytes before the end of the page (the
        // last `}` and the line break): an answer without a length gives
        // nothing else away. The cut line still shows its seq, as the
        // collector writes it last, so it would pass for a damaged report,
        // be acknowledged, and the collector would drop the whole one.
        let (l1, l2) = (line(1), line(2));
        let cut = format!("{l1}\n{}", &l2[..l2.len() - 1]);
        let (addr, seen, task) = raw_server(
            move |request| {
                if request.starts_with("GET /export?") {
                    vec![page_head(2, 2, None), cut.clone().into_bytes()]
                } else {
                    Vec::new()
                }
            },
            Duration::ZERO,
        )
        .await;
        let sink = MemSink::default();
        let round = puller(&[fake_endpoint(addr)], 100)
            .pull_once(&sink)
            .await
            .remove(0);
        assert!(error_of(&round).contains("cut short"), "{round:?}");
        assert!(sink.state().rows.is_empty(), "nothing is stored");
        assert_eq!(sink.state().commits, 0);
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["GET /export?after=0&limit=8 HTTP/1.1"],
            "nothing is acknowledged"
        );
        task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_sent_too_slowly_is_cut_off_at_the_timeout_and_says_what_to_change() {
    bounded(async {
        // The head at once, then the page a few bytes at a time: the
        // collector is up and answering, only too slowly for timeout_s.
        let body = format!("{}\n", line(1));
        let (addr, _seen, task) = raw_server(
            move |_| {
                let mut pieces = vec![page_head(1, 1, Some(body.len()))];
                pieces.extend(body.as_bytes().chunks(4).map(<[u8]>::to_vec));
                pieces
            },
            Duration::from_millis(200),
        )
        .await;
        let sink = MemSink::default();
        let mut endpoint = fake_endpoint(addr);
        endpoint.timeout_s = 2;
        let started = Instant::now();
        let round = puller(&[endpoint], 100).pull_once(&sink).await.remove(0);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "bounded by timeout_s: {took:?}"
        );
        let error = error_of(&round);
        assert!(
            error.contains("raise timeout_s") && error.contains("lower batch"),
            "{error}"
        );
        assert!(!error.contains("up and reachable"), "{error}");
        assert!(sink.state().rows.is_empty());
        task.abort();
    })
    .await;
}
