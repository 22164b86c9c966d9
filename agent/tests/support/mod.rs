//! Shared pieces of the agent's tests: a fixed trace engine (the real ones
//! need privileges and a network to trace), a real collector started in this
//! process on loopback, and agents pointed at it.
#![allow(dead_code)] // each test binary uses its own subset

#[path = "../../../testsupport/ports.rs"]
mod ports;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lineprobe_agent::{
    Agent, AgentConfig, AgentOptions, Engine, Error, SpoolEntry, TraceOutcome, TraceRequest,
};
use lineprobe_collector::{CollectorConfig, Overrides, RunningCollector};
use lineprobe_shared::{Hop, ManifestSigningKey, Report, ReportId, TraceEngine, TraceProtocol};

/// An engine that answers with a fixed path and counts its traces.
#[derive(Debug)]
pub(crate) struct FixedEngine {
    pub(crate) kind: TraceEngine,
    pub(crate) hops: u8,
    pub(crate) traces: Arc<AtomicUsize>,
}

impl Engine for FixedEngine {
    fn kind(&self) -> TraceEngine {
        self.kind.clone()
    }

    fn check_available(&self) -> Result<(), String> {
        Ok(())
    }

    fn trace(&self, request: &TraceRequest) -> Result<TraceOutcome, Error> {
        self.traces.fetch_add(1, Ordering::SeqCst);
        let mut hops = Vec::new();
        for ttl in 1..=self.hops {
            let mut hop = Hop::new(ttl);
            if ttl == self.hops {
                hop.push_addr(request.target);
            } else if ttl != 3 {
                hop.push_addr(IpAddr::from([10, 0, ttl, 1]));
            }
            hop.rtt_ms = if hop.is_silent() {
                vec![]
            } else {
                vec![1.5 * f64::from(ttl)]
            };
            hop.sent = 1;
            hop.received = u16::from(!hop.is_silent());
            hops.push(hop);
        }
        Ok(TraceOutcome {
            engine: self.kind.clone(),
            protocol: TraceProtocol::Icmp,
            hops,
            reached: true,
            duration: Duration::from_millis(42),
            raw_text: None,
            raw_format: None,
        })
    }
}

/// An engine that is never available here.
#[derive(Debug)]
pub(crate) struct UnavailableEngine;

impl Engine for UnavailableEngine {
    fn kind(&self) -> TraceEngine {
        TraceEngine::TrippyCore
    }

    fn check_available(&self) -> Result<(), String> {
        Err("raw sockets need CAP_NET_RAW or root".to_owned())
    }

    fn trace(&self, _: &TraceRequest) -> Result<TraceOutcome, Error> {
        panic!("an unavailable engine must not be asked to trace")
    }
}

/// The engines tests trace with, best first, and their trace counter.
pub(crate) fn engines(hops: u8) -> (Vec<Box<dyn Engine>>, Arc<AtomicUsize>) {
    let traces = Arc::new(AtomicUsize::new(0));
    let list: Vec<Box<dyn Engine>> = vec![
        Box::new(UnavailableEngine),
        Box::new(FixedEngine {
            kind: TraceEngine::Unprivileged,
            hops,
            traces: Arc::clone(&traces),
        }),
    ];
    (list, traces)
}

/// A collector on loopback (`port` 0: any) with its data in `dir` and
/// `extra` TOML appended to the test config.
pub(crate) async fn start_collector(dir: &Path, port: u16, extra: &str) -> RunningCollector {
    RunningCollector::start(&collector_config(dir, port, extra))
        .await
        .expect("collector starts")
}

pub(crate) fn collector_config(dir: &Path, port: u16, extra: &str) -> CollectorConfig {
    let overrides = Overrides {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        export_listen: Some("127.0.0.1:0".parse().expect("addr")),
        data_dir: Some(dir.to_path_buf()),
        plain_http: false,
    };
    let base = format!(
        "node_id = \"test-node\"\n[export]\ntoken = \"{}\"\n{extra}",
        export_token()
    );
    CollectorConfig::from_toml_with_env(&base, "test", Vec::new(), &overrides)
        .expect("valid collector config")
}

pub(crate) fn export_token() -> String {
    "test-export-token-0123456789abcdef".to_owned()
}

/// The collector's generated certificate: what the agent pins.
pub(crate) fn collector_cert(dir: &Path) -> PathBuf {
    dir.join("tls/cert.pem")
}

/// `https://127.0.0.1:PORT`.
pub(crate) fn endpoint(running: &RunningCollector) -> String {
    format!("https://127.0.0.1:{}", running.public_addr.port())
}

/// A loopback URL where nothing listens.
pub(crate) fn dead_endpoint() -> String {
    format!("https://127.0.0.1:{}", free_port())
}

/// A loopback port nothing listens on (see `ports`: outside the range an
/// outgoing connection could take it from).
pub(crate) fn free_port() -> u16 {
    ports::unused_loopback_addr().port()
}

/// An agent config: the example declared line, the pinned collector CA,
/// short timeouts and retries.
pub(crate) fn agent_config(endpoints: &[String], ca: Option<&Path>) -> AgentConfig {
    let urls = endpoints
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let ca = ca
        .map(|p| format!("ca_file = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    let text = format!(
        "[endpoints]\nurls = [{urls}]\nconnect_timeout_secs = 2\nrequest_timeout_secs = 5\n{ca}\
         [schedule]\ninterval_secs = 60\njitter_secs = 0\nretry_base_secs = 1\nretry_max_secs = 1\n\
         [declared]\nprovince = \"广东\"\ncity = \"深圳\"\ncarrier = \"中国移动\"\n\
         account = \"07551234567\"\naddress = \"南山区桃源街道某村 3 巷 7 号\"\n"
    );
    AgentConfig::from_toml(&text, "test config").expect("valid agent config")
}

/// An agent over `state` with `config`, tracing `hops` fixed hops.
pub(crate) fn agent(state: &Path, config: AgentConfig, hops: u8) -> (Agent, Arc<AtomicUsize>) {
    let (list, traces) = engines(hops);
    let options = AgentOptions {
        config,
        state_dir: Some(state.to_path_buf()),
        endpoints: Vec::new(),
        insecure_skip_verify: false,
    };
    (Agent::with_engines(options, list).expect("agent"), traces)
}

/// Every report the collector has stored, in order.
pub(crate) async fn stored(running: &RunningCollector) -> Vec<Report> {
    running
        .staging
        .export_after(0, 10_000)
        .await
        .expect("export")
        .into_iter()
        .map(|r| Report::from_stored_json(&r.json).expect("stored report"))
        .collect()
}

/// A fresh manifest signing key.
pub(crate) fn signing_key() -> ManifestSigningKey {
    ManifestSigningKey::generate()
}

/// An HTTPS server on loopback that answers every request with `status`,
/// `headers` and `body`, whatever was asked: a captive portal, a
/// filtering gateway or a misrouted proxy in front of the endpoint.
pub(crate) struct CannedServer {
    pub(crate) url: String,
    /// Its self-signed certificate, for the agent to pin.
    pub(crate) cert_pem: String,
    /// Requests answered so far.
    pub(crate) requests: Arc<AtomicUsize>,
    /// Their paths, in order.
    pub(crate) paths: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CannedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn canned_https(
    status: u16,
    headers: &[(&str, &str)],
    body: impl AsRef<[u8]>,
) -> CannedServer {
    use std::fmt::Write as _;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (acceptor, listener, url, cert_pem) = tls_listener().await;
    let headers: String = headers
        .iter()
        .fold(String::new(), |mut out, (name, value)| {
            let _ = write!(out, "{name}: {value}\r\n");
            out
        });
    let body = body.as_ref();
    let mut response = format!(
        "HTTP/1.1 {status} Canned\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    let response = Arc::new(response);
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    let paths: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen_paths = Arc::clone(&paths);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let response = Arc::clone(&response);
            let counter = Arc::clone(&counter);
            let seen_paths = Arc::clone(&seen_paths);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // The head, then as much body as it announces.
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while seen.len() < head_end + length {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                if let Some(path) = head.split_whitespace().nth(1) {
                    seen_paths
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(path.to_owned());
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = tls.write_all(&response).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    CannedServer {
        url,
        cert_pem,
        requests,
        paths,
        task,
    }
}

/// The project's example report (`config/report.example.json`) under a
/// fresh report id.
pub(crate) fn example_report() -> Report {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/report.example.json");
    let mut report =
        Report::from_json(&std::fs::read(path).expect("example")).expect("valid example");
    report.report_id = ReportId::new_v7();
    report
}

/// A spool entry of a fresh [`example_report`], due now.
pub(crate) fn spool_entry() -> SpoolEntry {
    SpoolEntry {
        report: example_report(),
        spooled_at: chrono::Utc::now(),
        retries: 0,
        next_attempt_at: chrono::Utc::now(),
    }
}

/// A TLS acceptor with a fresh self-signed certificate for `localhost` and
/// `127.0.0.1`, a listener on a free loopback port, its `https://` URL, and
/// the certificate (PEM) for clients to trust.
async fn tls_listener() -> (
    tokio_rustls::TlsAcceptor,
    tokio::net::TcpListener,
    String,
    String,
) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![generated.cert.der().clone()], key.into())
    .expect("TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    (acceptor, listener, url, generated.cert.pem())
}

/// An HTTPS relay on loopback in front of `upstream` (a collector whose
/// certificate is `upstream_ca`) that loses the answers to reports: each
/// request goes on to the collector, whose answer to a report (a `POST`
/// other than a key enrolment) is dropped and replaced by a `502`. The
/// collector stores the report; the agent never hears so. Other answers
/// (enrolments, the manifest) come back as the collector gave them.
pub(crate) async fn answer_losing_relay(upstream: &str, upstream_ca: &Path) -> CannedServer {
    let (acceptor, listener, url, cert_pem) = tls_listener().await;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(upstream_ca).expect("upstream CA"))
                .expect("upstream CA"),
        )
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let upstream = upstream.trim_end_matches('/').to_owned();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    let paths: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen_paths = Arc::clone(&paths);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let client = client.clone();
            let upstream = upstream.clone();
            let counter = Arc::clone(&counter);
            let seen_paths = Arc::clone(&seen_paths);
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Some(request) = read_request(&mut tls).await else {
                    return;
                };
                seen_paths
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(request.path.clone());
                counter.fetch_add(1, Ordering::SeqCst);
                let response = relay_losing_reports(&client, &upstream, request).await;
                let _ = tls.write_all(&response).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    CannedServer {
        url,
        cert_pem,
        requests,
        paths,
        task,
    }
}

/// One HTTP/1.1 request as read off the wire.
struct RawRequest {
    method: String,
    path: String,
    /// Names in lower case, values as sent.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The head, then as much body as it announces.
async fn read_request(tls: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<RawRequest> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while seen.len() < head_end + length {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    Some(RawRequest {
        method,
        path,
        headers,
        body: seen[head_end..head_end + length].to_vec(),
    })
}

/// Passes `request` on to `upstream`; the raw answer for the client: a
/// `502` in place of the collector's answer to a report.
async fn relay_losing_reports(
    client: &reqwest::Client,
    upstream: &str,
    request: RawRequest,
) -> Vec<u8> {
    const BAD_GATEWAY: &[u8] =
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let Ok(method) = reqwest::Method::from_bytes(request.method.as_bytes()) else {
        return BAD_GATEWAY.to_vec();
    };
    let mut forward = client.request(method, format!("{upstream}{}", request.path));
    for (name, value) in &request.headers {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            forward = forward.header(name, value);
        }
    }
    let Ok(answer) = forward.body(request.body).send().await else {
        return BAD_GATEWAY.to_vec();
    };
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let body = answer.bytes().await.unwrap_or_default();
    if request.method == "POST" && !request.path.ends_with("/enrol") {
        // The report is in; its answer is lost on the way back.
        return BAD_GATEWAY.to_vec();
    }
    let mut out = format!(
        "HTTP/1.1 {status} Relayed\r\ncontent-type: {content_type}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}
