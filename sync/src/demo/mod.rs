//! `lineprobe-sync demo`: the whole system on one machine, with nothing
//! installed and no network. A collector runs in-process on loopback with
//! its embedded staging store and a self-signed certificate; built-in
//! reports and one live probe from this machine reach it over real HTTPS;
//! the internal side pulls them one way into an embedded SQLite database,
//! runs the pipeline over the demo IP data shipped in `config/demo/`, and
//! prints the verdict table with its reasons.

mod cases;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lineprobe_collector::{CollectorConfig, RunningCollector};
use lineprobe_shared::{Catalog, Classifier, ClassifierConfig};

pub use cases::{DemoCase, demo_cases};

use crate::{
    Chain, CollectorEndpoint, Error, IpPlanSource, Pipeline, PullSettings, Puller, RangesSource,
    Store, VerdictLine, print_verdict_table, verdict_rows,
};

/// The demo's address data, compiled in so the demo runs from any folder.
const DEMO_IPPLAN: &str = include_str!("../../../config/demo/ipplan.csv");
const DEMO_REGIONS: &str = include_str!("../../../config/demo/regions.csv");
const DEMO_RANGES: &str = include_str!("../../../config/demo/asn-ranges.csv");
/// The data version recorded with every demo attribute.
const DEMO_DATA_VERSION: &str = "demo-2026.11";
/// The demo collector's node name.
const DEMO_NODE: &str = "demo-dmz-1";

/// How to run the demo.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Folder for the collector's staging, the certificate and the internal
    /// database; a fresh temporary folder (removed afterwards) when `None`.
    pub data_dir: Option<PathBuf>,
    /// Skip the live probe from this machine.
    pub no_live_probe: bool,
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// The built-in cases, with the verdict each should reach.
    pub cases: Vec<(String, String, String)>,
    /// The verdict table, one row per line.
    pub rows: Vec<VerdictLine>,
    /// Quarantined reports: (install id, summary).
    pub quarantined: Vec<(Option<String>, String)>,
    /// The live probe's result: its install id, or why it did not run.
    pub live_probe: Result<String, String>,
}

/// The address sources of the demo, from the data in `config/demo/`.
pub fn demo_chain(catalog: &Catalog) -> Result<Chain, Error> {
    Ok(Chain::new(vec![
        Box::new(IpPlanSource::from_reader(
            "cmcc-plan",
            DEMO_DATA_VERSION,
            "config/demo/ipplan.csv",
            DEMO_IPPLAN.as_bytes(),
            catalog,
        )?),
        Box::new(IpPlanSource::from_reader(
            "regions",
            DEMO_DATA_VERSION,
            "config/demo/regions.csv",
            DEMO_REGIONS.as_bytes(),
            catalog,
        )?),
        Box::new(RangesSource::from_reader(
            "asn-ranges",
            DEMO_DATA_VERSION,
            "config/demo/asn-ranges.csv",
            DEMO_RANGES.as_bytes(),
            catalog,
        )?),
    ]))
}

/// Runs the demo, printing progress to `progress` and the verdict table to
/// `out`.
pub async fn run_demo(
    options: &DemoOptions,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<DemoOutcome, Error> {
    let (dir, temporary) = match &options.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (fresh_temp_dir()?, true),
    };
    let result = demo_in(&dir, options, out, progress).await;
    if temporary {
        // Best effort: a leftover temporary folder is harmless.
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn demo_in(
    dir: &Path,
    options: &DemoOptions,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<DemoOutcome, Error> {
    let mut step = |text: String| {
        let _ = writeln!(progress, "demo: {text}");
    };
    let token = random_token();
    let collector_dir = dir.join("collector");
    let mut config = CollectorConfig {
        node_id: DEMO_NODE.to_owned(),
        data_dir: collector_dir.clone(),
        ..CollectorConfig::default()
    };
    config.public.listen = "127.0.0.1:0".parse().map_err(internal)?;
    // The demo plays a TLS-terminating load balancer on loopback that tells
    // the collector each subscriber's egress address (X-Forwarded-For).
    config.public.trusted_proxies = vec![
        "127.0.0.0/8".parse().map_err(internal)?,
        "::1/128".parse().map_err(internal)?,
    ];
    config.export.listen = "127.0.0.1:0".parse().map_err(internal)?;
    config.export.token.clone_from(&token);
    step(format!(
        "starting a collector (node {DEMO_NODE}) on loopback with a self-signed certificate in {}",
        collector_dir.display()
    ));
    let collector = RunningCollector::start(&config)
        .await
        .map_err(|e| Error::Demo(format!("the demo collector did not start: {e}")))?;
    let result = demo_with_collector(&collector, dir, &token, options, out, &mut step).await;
    let _ = collector.shutdown().await;
    result
}

async fn demo_with_collector(
    collector: &RunningCollector,
    dir: &Path,
    token: &str,
    options: &DemoOptions,
    out: &mut dyn Write,
    step: &mut dyn FnMut(String),
) -> Result<DemoOutcome, Error> {
    let cert = dir
        .join("collector")
        .join(lineprobe_collector::GENERATED_TLS_DIR)
        .join("cert.pem");
    let public = format!("https://127.0.0.1:{}", collector.public_addr.port());
    step(format!(
        "collector public listener {public}, export listener https://{}",
        collector.export_addr
    ));

    let now = chrono::Utc::now().fixed_offset();
    let cases = demo_cases(now)?;
    step(format!("sending {} built-in reports", cases.len()));
    send_cases(&cases, &public, &cert).await?;

    // One live probe from this machine, traced to the collector itself.
    let live_probe = if options.no_live_probe {
        step("live probe skipped (--no-live-probe)".to_owned());
        Err("skipped: --no-live-probe".to_owned())
    } else {
        step(
            "running one live probe from this machine (trace to 127.0.0.1, then submit)".to_owned(),
        );
        let outcome = live_probe(dir, &public, &cert).await;
        match &outcome {
            Ok(id) => step(format!("live probe {id} delivered")),
            Err(why) => step(format!("live probe not delivered: {why}")),
        }
        outcome
    };

    // The internal side: pull one way, then the pipeline.
    let db = dir.join("sync.sqlite3");
    let store = Store::open(&format!("sqlite://{}", db.display())).await?;
    let mut endpoint = CollectorEndpoint::new(
        DEMO_NODE,
        format!("https://{}", collector.export_addr),
        token,
    );
    endpoint.ca_file = Some(cert.clone());
    let puller = Puller::new(&[endpoint], PullSettings::default())?;
    step(format!("pulling one way into {}", db.display()));
    for round in puller.pull_once(&store).await {
        if let Some(error) = round.error {
            return Err(Error::Demo(format!(
                "pulling from {}: {error}",
                round.collector
            )));
        }
        step(format!(
            "pulled {} reports from {} ({} new), acknowledged up to {}",
            round.pulled,
            round.collector,
            round.inserted,
            round.acked_up_to.unwrap_or(0)
        ));
    }
    let catalog = Arc::new(Catalog::embedded()?);
    let chain = Arc::new(demo_chain(&catalog)?);
    let classifier = Classifier::new(&ClassifierConfig::default())?;
    let pipeline = Pipeline::new(Arc::clone(&catalog), chain, classifier);
    step("validating, de-duplicating, resolving, judging".to_owned());
    let run = pipeline.run_pending(&store, 500, |_| {}).await?;
    step(format!(
        "{} reports: {} observations, {} quarantined, {} verdicts",
        run.read, run.applied.observations_new, run.applied.quarantined, run.applied.verdicts_new
    ));

    let rows = verdict_rows(&store, &catalog, &crate::LineFilter::default()).await?;
    let quarantined = store
        .quarantined(100, 0)
        .await?
        .into_iter()
        .map(|q| (q.install_id, q.summary))
        .collect::<Vec<_>>();
    print_verdict_table(out, &catalog, &rows).map_err(Error::Output)?;
    if !quarantined.is_empty() {
        writeln!(out, "\nQuarantined ({}):", quarantined.len()).map_err(Error::Output)?;
        for (install, summary) in &quarantined {
            writeln!(
                out,
                "  {}: {summary}",
                install.as_deref().unwrap_or("(unknown install)")
            )
            .map_err(Error::Output)?;
        }
    }
    store.close().await;
    Ok(DemoOutcome {
        cases: cases
            .iter()
            .map(|c| {
                (
                    c.label.to_owned(),
                    c.report.install_id.as_str().to_owned(),
                    c.expect.to_owned(),
                )
            })
            .collect(),
        rows,
        quarantined,
        live_probe,
    })
}

/// Sends the built-in reports over HTTPS, each with its subscriber's egress
/// as a trusted proxy in front of the collector would report it.
async fn send_cases(cases: &[DemoCase], public: &str, cert: &Path) -> Result<(), Error> {
    let client = https_client(cert)?;
    for (i, case) in cases.iter().enumerate() {
        let path = ["/api/v1/report", "/api/v1/cn/report", "/static/a1/upload"][i % 3];
        let mut request = client
            .post(format!("{public}{path}"))
            .header("content-type", "application/json")
            .header(
                "user-agent",
                format!("lineprobe-agent/{}", env!("CARGO_PKG_VERSION")),
            )
            .body(case.report.to_json()?);
        if let Some(egress) = case.egress {
            request = request.header("x-forwarded-for", egress.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::Demo(format!("sending {}: {e}", case.label)))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(Error::Demo(format!(
                "the collector refused {}: {status} {body}",
                case.label
            )));
        }
    }

    Ok(())
}

/// Probes from this machine with the real agent: a trace to the collector
/// on loopback, a report, a submission over HTTPS pinned to its certificate.
async fn live_probe(dir: &Path, public: &str, cert: &Path) -> Result<String, String> {
    let toml = format!(
        r#"
[endpoints]
urls = ["{public}"]
ca_file = "{cert}"
connect_timeout_secs = 3
request_timeout_secs = 10

[trace]
target = "127.0.0.1"
max_ttl = 4
rounds = 1
deadline_secs = 8

[declared]
province = "广东"
city = "深圳"
carrier = "china_mobile"
address = "this machine (live probe)"
"#,
        cert = cert.display().to_string().replace('\\', "/"),
    );
    let config = lineprobe_agent::AgentConfig::from_toml(&toml, "demo agent config")
        .map_err(|e| e.to_string())?;
    let agent = lineprobe_agent::Agent::with_engines(
        lineprobe_agent::AgentOptions {
            config,
            state_dir: Some(dir.join("agent")),
            endpoints: Vec::new(),
            insecure_skip_verify: false,
        },
        lineprobe_agent::engines_for_platform(),
    )
    .map_err(|e| e.to_string())?;
    agent.accept_consent().map_err(|e| e.to_string())?;
    let outcome = tokio::time::timeout(Duration::from_secs(30), agent.probe_once())
        .await
        .map_err(|_| "the probe took longer than 30 s".to_owned())?
        .map_err(|e| e.to_string())?;
    match outcome {
        lineprobe_agent::ProbeOutcome::Delivered { report_id, .. } => Ok(report_id.to_string()),
        other @ lineprobe_agent::ProbeOutcome::Spooled { .. } => Err(other.to_string()),
    }
}

fn https_client(cert: &Path) -> Result<reqwest::Client, Error> {
    let pem = std::fs::read(cert).map_err(|source| Error::Input {
        what: cert.display().to_string(),
        source,
    })?;
    let root = reqwest::Certificate::from_pem(&pem)
        .map_err(|e| Error::Demo(format!("the collector's certificate: {e}")))?;
    reqwest::Client::builder()
        .add_root_certificate(root)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Demo(format!("HTTPS client: {e}")))
}

fn fresh_temp_dir() -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!(
        "lineprobe-demo-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    ));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Input {
        what: dir.display().to_string(),
        source,
    })?;
    Ok(dir)
}

fn random_token() -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(48)
        .map(char::from)
        .collect()
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}
